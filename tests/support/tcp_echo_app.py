"""A TCP echo app for the live mesh (`python -m tests.support.tcp_echo_app --port P --name NAME`).

Every byte is echoed back. When the client half-closes (FIN) it answers `<name>:bye:<bytes received>` and then
closes, so a client that half-closed and still reads that line proves its FIN crossed the mesh while the
other direction kept flowing (tests/support/tcp.py's EchoServer, as a process behind a sidecar)."""
from __future__ import annotations

import argparse
import asyncio

from .tcp import EchoServer


async def serve(port: int, name: str) -> None:
    await EchoServer(name).start(port)
    print(f"TCP_ECHO_PORT {port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.support.tcp_echo_app")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="echo")
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.name))


if __name__ == "__main__":
    main()
