"""Benchmark: load + translate a synthetic mesh (default 1,000 services, 100 workloads). Not a test.

    .venv/bin/python benchmarks/translate_bench.py [--services 1000] [--workloads 100] [--renders 5]

The mesh: services spread over 10 namespaces, each with an HTTP port 8080 (every 10th also a gRPC port),
backed by Deployments (2 replicas; each Deployment backs services/workloads of them); every 4th service has a
DestinationRule with two subsets (outlier detection, connection pool) and a VirtualService splitting 90/10
with a header match, retries and a timeout. Phases timed separately: YAML load + validation
(control.istio.load), indexing (control.mesh.build_mesh), one sidecar render (control.translate), and the
size of what it produced. Memory: tracemalloc peak per phase (a separate run) and the process's max RSS. Prints the machine
(nproc, CPU model, Python) first, because the figures mean nothing without it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control.istio.load import load_text  # noqa: E402
from control.mesh import build_mesh  # noqa: E402
from control.translate import render_sidecar  # noqa: E402


def synthetic_mesh(services: int, workloads: int) -> str:
    docs = []
    for w in range(workloads):
        ns = f"ns{w % 10}"
        docs.append(f"""apiVersion: apps/v1
kind: Deployment
metadata: {{name: app{w}, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: app{w}}}}}
  template:
    metadata: {{labels: {{app: app{w}, version: v{w % 2 + 1}, group: g{w % workloads}}}}}
    spec:
      serviceAccountName: sa{w}
      containers: [{{name: main, image: app, ports: [{{containerPort: 8080}}, {{containerPort: 9090}}]}}]""")
    for s in range(services):
        w = s % workloads
        ns = f"ns{w % 10}"
        ports = "[{name: http, port: 8080}" + (", {name: grpc, port: 9090}]" if s % 10 == 0 else "]")
        docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: svc{s}, namespace: {ns}}}
spec: {{selector: {{group: g{w}}}, ports: {ports}}}""")
        if s % 4 == 0:
            docs.append(f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc{s}, namespace: {ns}}}
spec:
  host: svc{s}
  trafficPolicy:
    connectionPool: {{http: {{http1MaxPendingRequests: 100, maxRequestsPerConnection: 10}}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s}}
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]""")
            docs.append(f"""apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc{s}, namespace: {ns}}}
spec:
  hosts: [svc{s}]
  http:
  - match: [{{headers: {{x-canary: {{exact: "1"}}}}}}]
    route: [{{destination: {{host: svc{s}, subset: v2}}}}]
  - route:
    - {{destination: {{host: svc{s}, subset: v1}}, weight: 90}}
    - {{destination: {{host: svc{s}, subset: v2}}, weight: 10}}
    timeout: 5s
    retries: {{attempts: 3, perTryTimeout: 2s, retryOn: "5xx,connect-failure"}}""")
    return "\n---\n".join(docs) + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(label: str, fn):
    """Time one untraced run, then run again under tracemalloc for the peak (tracing slows Python ~2x, so
    the two are never mixed)."""
    start = time.perf_counter()
    value = fn()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{label:<34} {elapsed * 1000:10.1f} ms   peak allocated {peak / 2**20:8.1f} MiB")
    return value, elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--workloads", type=int, default=100)
    parser.add_argument("--renders", type=int, default=5, help="sidecars rendered (first N workloads)")
    args = parser.parse_args()

    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()} "
          f"({platform.python_implementation()})")
    text = synthetic_mesh(args.services, args.workloads)
    print(f"input: {args.services} services, {args.workloads} Deployments x 2 replicas, "
          f"{len(text) / 2**20:.1f} MiB of YAML")
    result, _ = measure("load + validate (load_text)", lambda: load_text(text, "synthetic.yaml"))
    errors = [f for f in result.findings if f.level.label == "Error"]
    if errors:
        print(f"unexpected findings: {errors[:3]}")
        return 1
    mesh, _ = measure("index (build_mesh)", lambda: build_mesh(result.resources))
    print(f"  {mesh!r}")
    names = [w.owner for w in mesh.workloads if w.name.endswith("-0")][:args.renders]
    rendered, first = measure(f"render sidecar {names[0]}", lambda: render_sidecar(mesh, names[0]))
    sizes = {k: len(v) for k, v in rendered.as_dict().items()}
    size = len(json.dumps(rendered.as_dict()))
    print(f"  resources: {sizes}, {size / 2**20:.1f} MiB of JSON")
    if len(names) > 1:
        _, total = measure(f"render {len(names) - 1} more sidecars",
                           lambda: [render_sidecar(mesh, n) for n in names[1:]])
        print(f"  {total / (len(names) - 1) * 1000:.1f} ms per sidecar (warm endpoint cache)")
    print(f"max RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
