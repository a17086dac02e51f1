"""What TLS costs: pyproxy and nginx, plaintext against TLS, and new handshakes per second, in one run.

    .venv/bin/python benchmarks/tls_bench.py [--duration 5] [--rounds 3]

Rows (every one against the same nginx origin, closed loop with wrk, CPU pinned as benchmarks/run.py does):

| row | client → proxy | proxy → origin |
|---|---|---|
| `pyproxy-plain`  | HTTP, keep-alive                         | HTTP, pooled keep-alive |
| `pyproxy-mtls`   | HTTPS (ECDSA P-256 server certificate)   | mTLS: client certificate, origin requires it, URI SAN checked |
| `nginx-plain`    | HTTP                                     | HTTP, `upstream keepalive` |
| `nginx-tls`      | HTTPS (same certificate)                 | HTTP |
| `nginx-mtls`     | HTTPS                                    | mTLS (`proxy_ssl_certificate`, `proxy_ssl_verify on`) |
| `newconn-plain`  | HTTP, `Connection: close`: a new connection per request, no TLS (the handshake rows' baseline) | HTTP |
| `handshake-p256` | HTTPS, `Connection: close`: one new TLS handshake per request, ECDSA P-256 certificate | HTTP |
| `handshake-rsa2048` | the same with an RSA-2048 certificate | HTTP |
| `nginx-handshake-p256` | nginx-tls with `Connection: close` (reference) | HTTP |

The certificates come from the project's CA code: `control.ca.store.create_ca_set` (the `meshctl ca init` layout:
an ECDSA P-256 root and intermediate) and `CertificateAuthority.issue_server_certificate` for each leaf (the
RSA-2048 leaf is signed by the same P-256 intermediate: the handshake's private-key operation is the leaf's).
The origin's mTLS port answers only a client presenting a certificate of that CA.

Rounds are interleaved across rows (all rows, then all rows again) and the table shows the median round's
req/s and the median CPU/req of each row. CPU/req is the proxy's utime+stime (/proc, over its process tree)
during the wrk run divided by wrk's requests. Every process is stopped by PID at the end (benchmarks/procs.py);
only 127.0.0.1; each wrk run is bounded by `--duration` (+30 s timeout).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shlex
import signal
import ssl
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from benchmarks import configs, procs, report, run  # noqa: E402
from benchmarks.configs import TlsFiles  # noqa: E402

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "tls-latest.md"
TRUST_DOMAIN = "cluster.local"
ORIGIN_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/origin"
PROXY_ID = f"spiffe://{TRUST_DOMAIN}/ns/bench/sa/proxy"
LEAF_TTL = 24 * 3600.0


def log(message: str) -> None:
    print(f"[tls-bench] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ PKI


@dataclass(frozen=True, slots=True)
class Pki:
    root: str                 # the CA's root-cert.pem: what every side trusts
    server_p256: TlsFiles     # the proxies' serving certificate (downstream TLS)
    server_rsa: TlsFiles      # the same, RSA-2048 (handshake comparison)
    proxy_client: TlsFiles    # what the proxies present to the origin (with the root to verify it)
    origin: TlsFiles          # the origin's serving certificate (with the root: client certificates required)


def make_pki(directory: Path) -> Pki:
    """A CA in the cacerts layout and four leaves under its intermediate, as PEM files in `directory`."""
    from control.ca.store import create_ca_set, load_cacerts
    from pyproxy.tls.pki import KeyType, generate_key, private_key_pem

    cacerts = create_ca_set(directory / "ca", trust_domain=TRUST_DOMAIN, key_type=KeyType.EC_P256)
    authority = load_cacerts(cacerts)
    root = str(cacerts / "root-cert.pem")

    def leaf(name: str, kind: KeyType, uris: tuple[str, ...], trusted_ca: str | None) -> TlsFiles:
        key = generate_key(kind)
        response = authority.issue_server_certificate(key.public_key(), ["localhost", "127.0.0.1"], LEAF_TTL,
                                                      uris=uris)
        chain = "".join(response[: -len(authority.roots)])  # leaf + intermediate: the answer ends with the roots
        chain_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
        chain_path.write_text(chain)
        key_path.write_bytes(private_key_pem(key))
        key_path.chmod(0o600)
        return TlsFiles(str(chain_path), str(key_path), trusted_ca)

    return Pki(root=root,
               server_p256=leaf("server-p256", KeyType.EC_P256, (), None),
               server_rsa=leaf("server-rsa2048", KeyType.RSA_2048, (), None),
               proxy_client=leaf("proxy-client", KeyType.EC_P256, (PROXY_ID,), root),
               origin=leaf("origin", KeyType.EC_P256, (ORIGIN_ID,), root))


# ---------------------------------------------------------------------------------------------- rows


@dataclass
class Row:
    name: str
    setup: str
    port: int = 0
    https: bool = False
    close: bool = False                  # Connection: close → a new connection (and handshake) per request
    proxy: procs.ManagedProcess | None = None
    admin_port: int | None = None        # pyproxy's admin, to count its listener's handshakes
    error: str | None = None
    runs: list[report.Throughput] = field(default_factory=list)
    handshakes: list[int] = field(default_factory=list)  # listener ssl.handshake delta per run (pyproxy)

    @property
    def url(self) -> str:
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}/"

    def median(self, attr: str) -> float | None:
        values = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.median(values) if values else None


def start_pyproxy(pm, args, workdir: Path, name: str, backend_port: int, **tls) -> tuple[int, int, procs.ManagedProcess]:
    listen_port, admin_port = procs.free_ports(2)
    bootstrap = configs.pyproxy_bootstrap(listen_port=listen_port, admin_port=admin_port, backend_port=backend_port,
                                          **tls)
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    argv = [*run.pyproxy_command(args.pyproxy_cmd), "run", "-c", str(path), "--concurrency", "1"]
    log(f"starting {name}: {shlex.join(argv)}")
    proc = pm.start(name, argv, cpus=args.proxy_cpus)
    procs.wait_http_ok(proc, admin_port, "/ready", timeout=args.start_timeout)
    procs.wait_listening(proc, listen_port, timeout=args.start_timeout)
    return listen_port, admin_port, proc


def start_nginx_proxy(pm, args, nginx: str, workdir: Path, role: str, backend_port: int, **tls) -> tuple[int, procs.ManagedProcess]:
    (port,) = procs.free_ports(1)
    conf = configs.nginx_proxy_config(workdir=str(workdir), port=port, backend_port=backend_port, role=role, **tls)
    return port, run.start_nginx(pm, nginx, workdir, role, conf, port, args.proxy_cpus)


def listener_handshakes(row: Row) -> int:
    """pyproxy's `listener.127.0.0.1_<port>.ssl.handshake` counter now (0 when absent)."""
    _, body = procs.http_get(row.admin_port, "/stats")
    name = f"listener.127.0.0.1_{row.port}.ssl.handshake"
    for line in body.decode().splitlines():
        key, sep, value = line.rpartition(": ")
        if sep and key == name:
            return int(value)
    return 0


def sanity(row: Row, pki: Pki) -> None:
    ctx = ssl.create_default_context(cafile=pki.root) if row.https else None
    conn = (http.client.HTTPSConnection("127.0.0.1", row.port, timeout=5, context=ctx) if row.https
            else http.client.HTTPConnection("127.0.0.1", row.port, timeout=5))
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        status, body = response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise run.RowFailed(f"GET {row.url}: {exc}") from None
    finally:
        conn.close()
    if status != 200 or body != configs.BODY.encode():
        raise run.RowFailed(f"GET {row.url} answered {status} {body[:80]!r}")


def wrk_run(row: Row, args, wrk: str, duration: int) -> report.Throughput:
    headers = ["-H", "Connection: close"] if row.close else []
    argv = [wrk, "-t1", f"-c{args.connections}", f"-d{duration}s", "--timeout", "2s", *headers,
            "-s", str(run.WRK_SCRIPT), row.url]  # fmt: skip
    return report.parse_wrk(run._run_tool(argv, args.load_cpus, duration + 30))


def measure(row: Row, args, wrk: str, origin: procs.ManagedProcess) -> None:
    before, origin_before = procs.cpu_seconds(row.proxy.pid), procs.cpu_seconds(origin.pid)
    hs_before = listener_handshakes(row) if row.admin_port and row.https else None
    result = wrk_run(row, args, wrk, args.duration)
    cpu = (procs.cpu_seconds(row.proxy.pid) - before) / result.requests * 1e6 if result.requests else None
    origin_cpu = (procs.cpu_seconds(origin.pid) - origin_before) / result.requests * 1e6 if result.requests else None
    if hs_before is not None:
        row.handshakes.append(listener_handshakes(row) - hs_before)
    if not row.proxy.alive():
        raise run.RowFailed(f"{row.name} died during the run: {procs.exited_reason(row.proxy)}")
    row.runs.append(report.Throughput(result.tool, result.rps, result.requests, result.p50_us, result.p99_us,
                                      result.errors, proxy_cpu_us=cpu, backend_cpu_us=origin_cpu))
    log(f"{row.name}: {result.rps:,.0f} req/s, {cpu or 0:,.0f} µs CPU/req, errors {result.errors}")


def handshake_cpu_us(files: TlsFiles, count: int) -> float:
    """Server-side CPU µs of one full TLS handshake in this process, Python's `ssl` over memory BIOs (no
    sockets, no event loop): the crypto and OpenSSL cost alone, to set against a handshake row's CPU/req."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.cert_chain, files.private_key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname, client_ctx.verify_mode = False, ssl.CERT_NONE  # as wrk: no verification
    spent = 0.0
    for _ in range(count):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out)
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        client_done = server_done = False
        for _ in range(10):  # a TLS 1.3 handshake takes 2 flights each way; 10 is a bound, not a guess
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not server_done:
                started = time.process_time()
                try:
                    server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
                spent += time.process_time() - started
            c_in.write(s_out.read())
            if client_done and server_done:
                break
        else:
            raise RuntimeError("in-process handshake did not complete")
    return spent / count * 1e6


# ------------------------------------------------------------------------------------------- report


def ratio(rows: dict[str, Row], num: str, den: str) -> float | None:
    a, b = rows.get(num), rows.get(den)
    if a is None or b is None or a.error or b.error or not a.runs or not b.runs:
        return None
    return a.median("rps") / b.median("rps")


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def render(rows: list[Row], machine: dict[str, str], settings: dict[str, str],
           inprocess: dict[str, float]) -> str:
    lines = ["| row | setup | req/s (median) | req/s per round | proxy CPU/req | origin CPU/req | p50 | p99 | errors |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row.error or not row.runs:
            lines.append(f"| {row.name} | {row.setup} | {row.error or 'not measured'} | | | | | | |")
            continue
        rounds = ", ".join(f"{r.rps:,.0f}" for r in row.runs)
        hs = ""
        if row.close and row.handshakes:
            hs = f" ({sum(row.handshakes):,} listener handshakes / {sum(r.requests for r in row.runs):,} requests)"
        lines.append(f"| {row.name} | {row.setup}{hs} | {row.median('rps'):,.0f} | {rounds} | "
                     f"{row.median('proxy_cpu_us'):,.0f} µs | {row.median('backend_cpu_us'):,.0f} µs | "
                     f"{row.median('p50_us'):,.0f} µs | "
                     f"{row.median('p99_us'):,.0f} µs | {sum(r.errors for r in row.runs)} |")
    by = {r.name: r for r in rows}
    mtls_vs_nginx = ratio(by, "pyproxy-mtls", "nginx-tls")
    lines += ["", "| ratio | value | note |", "|---|---:|---|",
              f"| pyproxy-mtls / pyproxy-plain req/s | {_fmt_ratio(ratio(by, 'pyproxy-mtls', 'pyproxy-plain'))} | what TLS both ways costs pyproxy |",
              f"| pyproxy-mtls / nginx-tls req/s | {_fmt_ratio(mtls_vs_nginx)} | the issue's target: ≥ 0.6 "
              f"({'met' if mtls_vs_nginx is not None and mtls_vs_nginx >= 0.6 else 'NOT met'}); nginx-tls has a plaintext upstream |",
              f"| pyproxy-mtls / nginx-mtls req/s | {_fmt_ratio(ratio(by, 'pyproxy-mtls', 'nginx-mtls'))} | the like-for-like comparison (TLS both sides) |",
              f"| nginx-tls / nginx-plain req/s | {_fmt_ratio(ratio(by, 'nginx-tls', 'nginx-plain'))} | what TLS to the client costs nginx |",
              f"| handshakes/s P-256 / RSA-2048 (pyproxy) | {_fmt_ratio(ratio(by, 'handshake-p256', 'handshake-rsa2048'))} | new TLS connection per request |",
              f"| handshakes/s P-256 / new plaintext connections/s (pyproxy) | {_fmt_ratio(ratio(by, 'handshake-p256', 'newconn-plain'))} | what the handshake adds to a new connection |",
              f"| handshakes/s pyproxy / nginx (P-256) | {_fmt_ratio(ratio(by, 'handshake-p256', 'nginx-handshake-p256'))} | |",
              ""]  # fmt: skip
    if inprocess:
        lines += ["Server-side CPU of one full handshake in-process (Python `ssl`, memory BIOs, no proxy around it):",
                  "", "| certificate | CPU/handshake |", "|---|---:|"]
        lines += [f"| {name} | {value:,.0f} µs |" for name, value in inprocess.items()]
        lines.append("")
    lines += ["Machine and settings:", ""]
    lines += [f"- {k}: {v}" for k, v in {**machine, **settings}.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="pyproxy and nginx, plaintext vs TLS/mTLS, and TLS handshakes/s")
    p.add_argument("--duration", type=int, default=5, help="seconds of each wrk run (default 5)")
    p.add_argument("--rounds", type=int, default=3, help="wrk runs per row, interleaved across rows (default 3)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--rows", default="", help="comma list of rows to run (default all)")
    p.add_argument("--handshakes-inprocess", type=int, default=500,
                   help="in-process handshakes per certificate for the CPU/handshake table (0: skip; default 500)")
    p.add_argument("--pyproxy-cmd", default=None, help="command before `run -c FILE` (default .venv/bin/pyproxy)")
    p.add_argument("--start-timeout", type=float, default=20.0)
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and wrk to CPUs")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="markdown report (default results/tls-latest.md)")
    args = p.parse_args(argv)
    if args.duration < 1 or not 1 <= args.rounds <= 20 or not 0 <= args.handshakes_inprocess <= 100_000:
        p.error("--duration ≥ 1, 1 ≤ --rounds ≤ 20, 0 ≤ --handshakes-inprocess ≤ 100000")
    return args


def start_rows(pm, args, nginx: str, workdir: Path, pki: Pki, plain_port: int, mtls_port: int) -> list[Row]:
    rows: list[Row] = []

    def add(row: Row, start) -> None:
        try:
            start(row)
        except (procs.NotReady, run.RowFailed) as exc:
            row.error = f"failed to start: {exc}"
        rows.append(row)

    def pyproxy(row: Row, backend: int, **tls) -> None:
        row.port, row.admin_port, row.proxy = start_pyproxy(pm, args, workdir, row.name, backend, **tls)

    def nginx_row(row: Row, backend: int, **tls) -> None:
        row.port, row.proxy = start_nginx_proxy(pm, args, nginx, workdir, row.name, backend, **tls)

    mtls = {"upstream_tls": pki.proxy_client}
    add(Row("pyproxy-plain", "pyproxy, HTTP → HTTP"), lambda r: pyproxy(r, plain_port))
    add(Row("pyproxy-mtls", "pyproxy, HTTPS (P-256) → mTLS origin", https=True),
        lambda r: pyproxy(r, mtls_port, downstream_tls=pki.server_p256, upstream_peer_uri=ORIGIN_ID, **mtls))
    add(Row("nginx-plain", "nginx, HTTP → HTTP"), lambda r: nginx_row(r, plain_port))
    add(Row("nginx-tls", "nginx, HTTPS (P-256) → HTTP", https=True),
        lambda r: nginx_row(r, plain_port, downstream_tls=pki.server_p256))
    add(Row("nginx-mtls", "nginx, HTTPS (P-256) → mTLS origin", https=True),
        lambda r: nginx_row(r, mtls_port, downstream_tls=pki.server_p256, **mtls))
    add(Row("newconn-plain", "pyproxy, new plaintext connection per request (no TLS)", close=True),
        lambda r: pyproxy(r, plain_port))
    add(Row("handshake-p256", "pyproxy, new TLS connection per request, ECDSA P-256", https=True, close=True),
        lambda r: pyproxy(r, plain_port, downstream_tls=pki.server_p256))
    add(Row("handshake-rsa2048", "pyproxy, new TLS connection per request, RSA-2048", https=True, close=True),
        lambda r: pyproxy(r, plain_port, downstream_tls=pki.server_rsa))
    add(Row("nginx-handshake-p256", "nginx, new TLS connection per request, ECDSA P-256", https=True, close=True),
        lambda r: nginx_row(r, plain_port, downstream_tls=pki.server_p256))
    wanted = [w.strip() for w in args.rows.split(",") if w.strip()]
    return [r for r in rows if not wanted or r.name in wanted]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, run._raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return measure_all(args)
    except KeyboardInterrupt:
        log("interrupted; every process started was stopped")
        return 130
    except procs.NotReady as exc:
        log(f"the origin did not start: {exc}")
        return 1


def measure_all(args: argparse.Namespace) -> int:
    wrk, nginx, notes = run.ensure_tools(install=False)
    if wrk is None or nginx is None:
        log(f"needs wrk and nginx ({'; '.join(notes)}); `make bench` installs them")
        return 2
    proxy_cpus, backend_cpus, load_cpus = (None, None, None) if args.no_pin else report.cpu_plan(os.sched_getaffinity(0))
    args.proxy_cpus, args.load_cpus = proxy_cpus, load_cpus
    machine = run.machine_facts(wrk, nginx)
    with tempfile.TemporaryDirectory(prefix="pyproxy-tls-bench-") as tmp, procs.Processes(Path(tmp)) as pm:
        workdir = Path(tmp)
        pki = make_pki(workdir / "pki")
        plain_port, mtls_port = procs.free_ports(2)
        origin = configs.nginx_origin_config(workdir=str(workdir), port=plain_port, mtls_port=mtls_port, mtls=pki.origin)
        backend = run.start_nginx(pm, nginx, workdir, "origin", origin, plain_port, backend_cpus)
        procs.wait_listening(backend, mtls_port)
        log(f"origin: nginx on 127.0.0.1:{plain_port} (HTTP) and :{mtls_port} (TLS, client certificate required)")
        rows = start_rows(pm, args, nginx, workdir, pki, plain_port, mtls_port)
        log(f"in-process handshakes: {args.handshakes_inprocess} per certificate")
        inprocess = {} if args.handshakes_inprocess == 0 else {
            name: handshake_cpu_us(files, args.handshakes_inprocess)
            for name, files in (("ECDSA P-256", pki.server_p256), ("RSA-2048", pki.server_rsa))}
        for row in rows:
            if row.error is None:
                try:
                    sanity(row, pki)
                    wrk_run(row, args, wrk, 1)  # warm-up: connections and pools
                except run.RowFailed as exc:
                    row.error = str(exc)
            if row.error:
                log(f"{row.name}: {row.error}")
        for round_no in range(1, args.rounds + 1):
            for row in rows:
                if row.error is None:
                    log(f"{row.name}: round {round_no}/{args.rounds}, wrk {args.duration} s")
                    try:
                        measure(row, args, wrk, backend)
                    except run.RowFailed as exc:
                        row.error = str(exc)
    settings = {
        "load": f"wrk -t1 -c{args.connections} -d{args.duration}s, {args.rounds} rounds interleaved across rows, "
                "median shown; keep-alive except the handshake rows (`-H 'Connection: close'`; wrk does not resume "
                "TLS sessions, so every request is a full handshake)",
        "origin": "nginx, 1 worker, 200 hello world; HTTP port, and a TLS port with `ssl_verify_client on`",
        "certificates": "control.ca.store.create_ca_set (ECDSA P-256 root + intermediate) and "
                        "CertificateAuthority.issue_server_certificate leaves (P-256; one RSA-2048)",
        "TLS versions": "wrk ↔ proxy TLS 1.3 (both proxies' defaults); pyproxy → origin TLS 1.2 (Envoy's client "
                        "default, kept), nginx → origin TLS 1.3 (nginx default)",
        "CPU pinning": report.describe_pinning(proxy_cpus, backend_cpus, load_cpus),
    }
    table = render(rows, machine, settings, inprocess)
    print()
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("# TLS benchmark\n\nProduced by `benchmarks/tls_bench.py`.\n\n" + table)
    log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
