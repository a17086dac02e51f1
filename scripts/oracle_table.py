"""Print the differential table of docs/oracle.md: every case of tests/oracle/test_http1_differential.py
played through the installed Envoy and through pyproxy (same bootstraps, same bytes), one markdown row
each: Envoy's responses, its access log %RESPONSE_CODE_DETAILS% / %RESPONSE_FLAGS%, what its upstream
received, and what pyproxy does today. Run from the repo root after `make envoy`:

    .venv/bin/python scripts/oracle_table.py [CASE_ID_SUBSTRING ...] > /tmp/table.md
"""
from __future__ import annotations

import asyncio
import pathlib
import re
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from tests.oracle.harness import difference  # noqa: E402
from tests.oracle.proxies import Oracle  # noqa: E402
from tests.oracle.test_http1_differential import CASES  # noqa: E402


def cell(text: str) -> str:
    text = re.sub(r"\S*bootstrap\.yaml: \S*typed_config\.", "", text)  # a refusal: keep the field and why
    return text.replace("|", "\\|").replace("\n", "; ")


async def main(filters: list[str]) -> None:
    with tempfile.TemporaryDirectory() as d:
        oracle = Oracle(pathlib.Path(d))
        print("| case | group | Envoy | details / flags | Envoy's upstream saw | pyproxy today |")
        print("|---|---|---|---|---|---|")
        try:
            for param in CASES:
                c = param.values[0]
                if filters and not any(f in c.id for f in filters):
                    continue
                envoy, pyproxy = await oracle.run(c)
                logs = ", ".join(f"{ln.get('details')} / {ln.get('flags')}" for ln in envoy.access_log) or "-"
                diff = difference(envoy, pyproxy)
                today = "same" if not diff else f"{pyproxy.summary()}; upstream {pyproxy.upstream_summary()}"
                print(f"| {c.id} | {c.group} | {cell(envoy.summary())} | {cell(logs)} | "
                      f"{cell(envoy.upstream_summary())} | {cell(today)} |", flush=True)
                if diff:
                    print(f"{c.id}: {diff}", file=sys.stderr)
        finally:
            await oracle.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
