"""A TCP echo app for the live mesh (`python -m tests.support.tcp_echo_app --port P --name NAME [--cert F --key F]`).
With `--cert`/`--key` it speaks TLS itself (an app that terminates its own TLS, behind a sidecar that passes it
through), and prints the SNI each connection asked for (`SNI <name>`).

Every byte is echoed back. When the client half-closes (FIN) it answers `<name>:bye:<bytes received>` and then
closes, so a client that half-closed and still reads that line proves its FIN crossed the mesh while the
other direction kept flowing (tests/support/tcp.py's EchoServer, as a process behind a sidecar)."""
from __future__ import annotations

import argparse
import asyncio
import ssl

from .tcp import EchoServer


async def serve(port: int, name: str, cert: str | None, key: str | None) -> None:
    ctx = None
    if cert and key:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
    server = EchoServer(name, ssl=ctx)
    await server.start(port)
    if ctx is not None:
        remember = ctx.sni_callback

        def announce(sslobj, sni, context):
            print(f"SNI {sni}", flush=True)
            return remember(sslobj, sni, context) if remember else None
        ctx.sni_callback = announce
    print(f"TCP_ECHO_PORT {port}", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m tests.support.tcp_echo_app")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--name", default="echo")
    ap.add_argument("--cert", help="serve TLS with this certificate chain (PEM)")
    ap.add_argument("--key", help="... and this key")
    args = ap.parse_args()
    asyncio.run(serve(args.port, args.name, args.cert, args.key))


if __name__ == "__main__":
    main()
