"""`python -m pyproxy.demo`: one pyproxy in front of a small demo backend, a request shown going through.

What it does, in order (everything on 127.0.0.1):
1. starts the demo backend (`pyproxy.demo_app`, an aiohttp "httpbin"-like app) in its own process;
2. writes an Envoy v3 bootstrap (examples/static/front-proxy.yaml with the ports filled in) and starts
   `pyproxy run -c <that file>` as a real subprocess;
3. sends one request through the proxy and prints what the backend saw (note the headers the proxy added:
   x-request-id, x-forwarded-proto, x-envoy-expected-rq-timeout-ms) and the proxy's access-log line;
4. prints commands to try, and keeps running until Ctrl-C (`--once` stops right after step 3).
The mesh demo (control plane + sidecars) replaces this when it exists.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml

from .demo_mesh import free_port, http, wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "static" / "front-proxy.yaml"


def _port(preferred: int) -> int:
    """The preferred port when free, else any free port (the demo must not collide with anything)."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
        return s.getsockname()[1]


def _wait_http(url: str) -> None:
    wait_until(lambda: http(url)[0] == 200, url)


def build_bootstrap(listener_port: int, admin_port: int, backend_port: int, access_log: str) -> dict:
    """The example bootstrap with this run's ports and a file access log."""
    cfg = yaml.safe_load(EXAMPLE.read_text())
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    lis = cfg["static_resources"]["listeners"][0]
    lis["address"]["socket_address"]["port_value"] = listener_port
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
                         "path": access_log},
    }]
    cluster = cfg["static_resources"]["clusters"][0]
    sa = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    sa["port_value"] = backend_port
    return cfg


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pyproxy.demo", description=__doc__.splitlines()[0])
    ap.add_argument("--once", action="store_true", help="show one request going through, then stop")
    ap.add_argument("--free-ports", action="store_true", help="use any free ports, not 8080/10000/9901")
    args = ap.parse_args(argv)
    # Ctrl-C stops it even when started with SIGINT ignored (`cmd &` in a script: see pyproxy/demo_mesh.py)
    signal.signal(signal.SIGINT, signal.default_int_handler)

    workdir = pathlib.Path(tempfile.mkdtemp(prefix="pyproxy-demo-"))
    if args.free_ports:
        backend_port, listener_port, admin_port = free_port(), free_port(), free_port()
    else:
        backend_port, listener_port, admin_port = _port(8080), _port(10000), _port(9901)
    access_log = workdir / "access.log"
    bootstrap = workdir / "front-proxy.yaml"
    bootstrap.write_text(yaml.safe_dump(build_bootstrap(listener_port, admin_port, backend_port, str(access_log)),
                                        sort_keys=False))
    procs: list[subprocess.Popen] = []

    def stop_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        print(f"[demo] starting the demo backend on 127.0.0.1:{backend_port}")
        procs.append(subprocess.Popen([sys.executable, "-m", "pyproxy.demo_app", "--port", str(backend_port)]))
        _wait_http(f"http://127.0.0.1:{backend_port}/healthz")
        print(f"[demo] starting pyproxy: pyproxy run -c {bootstrap}")
        procs.append(subprocess.Popen([sys.executable, "-m", "pyproxy", "run", "-c", str(bootstrap)]))
        _wait_http(f"http://127.0.0.1:{admin_port}/ready")

        url = f"http://127.0.0.1:{listener_port}/anything/hello?from=demo"
        print(f"\n[demo] GET {url}")
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
            print(f"[demo] <- HTTP {resp.status}; response headers added by the proxy: "
                  f"server={resp.headers.get('server')}, "
                  f"x-envoy-upstream-service-time={resp.headers.get('x-envoy-upstream-service-time')}")
        print("[demo] what the backend received (through the proxy):")
        print(json.dumps(body, indent=2))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (access_log.exists() and access_log.read_text().strip()):
            time.sleep(0.1)
        if access_log.exists():
            print(f"[demo] the proxy's access log ({access_log}):")
            print("  " + access_log.read_text().strip().replace("\n", "\n  "))
        print(f"""
[demo] try it yourself:
  curl -sv http://127.0.0.1:{listener_port}/anything
  curl -s  http://127.0.0.1:{listener_port}/status/503 -o /dev/null -w '%{{http_code}}\\n'
  curl -s  http://127.0.0.1:{admin_port}/config_dump | head -40     # what the proxy runs, as Envoy v3 JSON
  curl -s  http://127.0.0.1:{admin_port}/clusters                   # endpoints and their counters
  curl -s  http://127.0.0.1:{admin_port}/stats | grep -E 'downstream_rq|upstream_rq_total'
  tail -f {access_log}""")
        if args.once:
            return 0
        print("\n[demo] running; Ctrl-C to stop")
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        print("[demo] a process exited; stopping", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, OSError) as e:
        print(f"[demo] error: {e}", file=sys.stderr)
        return 1
    finally:
        stop_all()
        os.environ.get("PYPROXY_DEMO_KEEP") or _cleanup(workdir)


def _cleanup(workdir: pathlib.Path) -> None:
    for p in workdir.iterdir():
        p.unlink()
    workdir.rmdir()


if __name__ == "__main__":
    sys.exit(main())
