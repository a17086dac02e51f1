"""The demo's lessons: `make demo SCENARIO=<name>` (`python -m pyproxy.demo_mesh --scenario NAME`).

Each scenario changes one thing in the running demo mesh the way a user would (edits the Istio YAML in the
demo's config directory; the control plane pushes it), drives traffic, and prints what the sidecars did,
which Envoy mechanism did it (the stat that moved, the response flag, the config field) and where in this
repository it is implemented. Every claim it prints is checked: a scenario returns its `Check`s, the demo
prints ✔ or ✘ for each, and tests/e2e/test_demo_scenarios.py fails on any ✘. Each scenario puts the config
back as it found it, so they can run one after another in one mesh.
"""
from __future__ import annotations

import collections
import http.client
import json
import os
import pathlib
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Callable

import yaml

FQDN = "{}.default.svc.cluster.local"
EFFECT_DEADLINE = 15.0  # seconds a pushed change may take to show (the control plane debounces 100 ms)


@dataclass(frozen=True)
class Check:
    claim: str
    ok: bool
    seen: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    run: Callable[[Any, Callable[[str], None]], list[Check]]  # (mesh, say) -> checks
    lesson: str


# ---------------------------------------------------------------- talking to the mesh

def request(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0,
            context: Any = None) -> tuple[int, dict, bytes]:
    """(status, lower-cased response headers, body); never raises on an HTTP error status."""
    from .demo_mesh import http_full

    return http_full(url, headers, timeout, context)


def page(mesh: Any, user: str = "") -> dict:
    """productpage's JSON through the ingress gateway."""
    status, _, body = request(f"{mesh.gateway_url}/api/v1/products/0" + (f"?u={user}" if user else ""),
                              context=mesh.ssl)
    return json.loads(body) if status == 200 else {"error": f"HTTP {status}"}


def burst(port: int, host: str, path: str, n: int) -> list[tuple[int, dict]]:
    """n requests truly at once: n connections, each request written before any response is read, so they are
    all in the proxy's socket buffers together (threads of urllib would mostly take turns)."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(n)]
    try:
        for c in conns:
            c.request("GET", path, headers={"Host": host})
        out = []
        for c in conns:
            r = c.getresponse()
            r.read()
            out.append((r.status, {k.lower(): v for k, v in r.getheaders()}))
        return out
    finally:
        for c in conns:
            c.close()


def stats(admin_port: int) -> dict[str, int]:
    _, _, body = request(f"http://127.0.0.1:{admin_port}/stats")
    out = {}
    for line in body.decode().splitlines():
        name, sep, value = line.rpartition(": ")
        if sep and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out


def stat(admin_port: int, name: str) -> int:
    """One counter; 0 when the proxy has not created it yet (nothing happened)."""
    return stats(admin_port).get(name, 0)


def active_cluster(admin_port: int, name: str) -> dict:
    """One cluster as the proxy runs it (admin /config_dump), or {}."""
    _, _, body = request(f"http://127.0.0.1:{admin_port}/config_dump")
    for section in json.loads(body).get("configs", []):
        for c in section.get("dynamic_active_clusters", []):
            if c.get("cluster", {}).get("name") == name:
                return c["cluster"]
    return {}


def wait_for(what: str, probe: Callable[[], Any], deadline: float = EFFECT_DEADLINE) -> Any:
    end = time.monotonic() + deadline
    while True:
        try:
            got = probe()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


class ConfigEdit:
    """Edits to the demo's config directory, undone on exit (files written whole, by rename: the control
    plane's watcher never reads half a file)."""

    def __init__(self, mesh: Any):
        self.dir = pathlib.Path(mesh.config_dir)
        self.saved: dict[pathlib.Path, str | None] = {}

    def _remember(self, path: pathlib.Path) -> None:
        if path not in self.saved:
            self.saved[path] = path.read_text() if path.exists() else None

    def write(self, name: str, docs: list[dict]) -> None:
        path = self.dir / name
        self._remember(path)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        os.replace(tmp, path)

    def docs(self, name: str) -> list[dict]:
        return [d for d in yaml.safe_load_all((self.dir / name).read_text()) if d]

    def edit(self, name: str, kind: str, resource: str, change: Callable[[dict], None]) -> None:
        docs = self.docs(name)
        for d in docs:
            if d.get("kind") == kind and d["metadata"]["name"] == resource:
                change(d)
        self.write(name, docs)

    def __enter__(self) -> "ConfigEdit":
        return self

    def __exit__(self, *exc: Any) -> None:
        for path, text in self.saved.items():
            if text is None:
                path.unlink(missing_ok=True)
            else:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(text)
                os.replace(tmp, path)


def reviews_version(p: dict) -> str:
    r = p.get("reviews") or {}
    return r.get("version") or f"error {r.get('status', p.get('error'))}"


# ---------------------------------------------------------------- the scenarios

def canary(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    with ConfigEdit(mesh) as cfg:
        say("edit traffic.yaml: VirtualService reviews, default route weights v1 80 / v3 20 -> v1 0 / v3 100")

        def all_v3(vs: dict) -> None:
            for rule in vs["spec"]["http"]:
                if "match" not in rule:
                    for dest in rule["route"]:
                        dest["weight"] = 100 if dest["destination"]["subset"] == "v3" else 0
        cfg.edit("traffic.yaml", "VirtualService", "reviews", all_v3)
        wait_for("the new weights to reach productpage's sidecar",
                 lambda: all(reviews_version(page(mesh)) == "v3" for _ in range(5)))
        seen = collections.Counter(reviews_version(page(mesh)) for _ in range(20))
        say(f"20 pages -> reviews {dict(seen)}")
    back = wait_for("the old weights back", lambda: any(reviews_version(page(mesh)) == "v1" for _ in range(20)))
    return [Check("after the edit every page's reviews come from v3", seen == {"v3": 20}, str(dict(seen))),
            Check("putting the file back brings v1 back", bool(back))]


def fault(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    admin = mesh.sidecars["productpage-v1"]["admin"]
    before = stats(admin)
    with ConfigEdit(mesh) as cfg:
        say("add a VirtualService for details with fault.abort: 100% httpStatus 500 (faults.yaml)")
        cfg.write("faults.yaml", [{
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "details"},
            "spec": {"hosts": ["details"], "http": [{
                "fault": {"abort": {"percentage": {"value": 100}, "httpStatus": 500}},
                "route": [{"destination": {"host": "details", "subset": "v1"}}]}]}}])
        wait_for("the fault to reach productpage's sidecar",
                 lambda: (page(mesh).get("details") or {}).get("status") == 500)
        pages = [page(mesh) for _ in range(10)]
        details = collections.Counter(str((p.get("details") or {}).get("status", "ok")) for p in pages)
        say(f"10 pages -> details status {dict(details)}; reviews still answered: "
            f"{sum('error' not in (p.get('reviews') or {'error': 1}) for p in pages)}/10")
    wait_for("details to answer again", lambda: "error" not in page(mesh).get("details", {"error": 1}))
    after = stats(admin)
    aborts = sum(v - before.get(k, 0) for k, v in after.items() if k.endswith(".fault.aborts_injected"))
    return [Check("every page shows details' error with the injected 500", details == {"500": 10}, str(dict(details))),
            Check("the other calls of the page are untouched (the fault is per route)",
                  all("error" not in (p.get("reviews") or {"error": 1}) for p in pages)),
            Check("productpage's sidecar counted the aborts (http.<prefix>.fault.aborts_injected)", aborts >= 10,
                  f"+{aborts}")]


def circuit_breaker(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    pp = mesh.sidecars["productpage-v1"]
    cluster = f"cluster.outbound|9080||{FQDN.format('details')}"
    before = stat(pp["admin"], f"{cluster}.upstream_rq_pending_overflow")
    with ConfigEdit(mesh) as cfg:
        say("edit traffic.yaml: DestinationRule details gets connectionPool tcp.maxConnections 1, "
            "http.http1MaxPendingRequests 1")
        cfg.edit("traffic.yaml", "DestinationRule", "details", lambda dr: dr["spec"].__setitem__("trafficPolicy", {
            "connectionPool": {"tcp": {"maxConnections": 1}, "http": {"http1MaxPendingRequests": 1}}}))

        def limited() -> bool:
            thresholds = (active_cluster(pp["admin"], cluster[len("cluster."):]).get("circuit_breakers") or {}).get(
                "thresholds") or [{}]
            return thresholds[0].get("max_pending_requests") == 1
        wait_for("the circuit breaker thresholds in productpage's sidecar", limited)
        say("30 requests at once to http://details:9080/details/0 through productpage's sidecar (30 connections, "
            "every request sent before any answer is read)")
        answers = burst(pp["outbound"], "details:9080", "/details/0", 30)
        codes = collections.Counter(status for status, _ in answers)
        overloaded = sum(1 for status, h in answers if status == 503 and h.get("x-envoy-overloaded") == "true")
        say(f"-> status {dict(codes)}; {overloaded} of the 503s carry x-envoy-overloaded: true")
    overflow = stat(pp["admin"], f"{cluster}.upstream_rq_pending_overflow") - before
    return [Check("some requests were served and some refused at once with 503",
                  codes.get(200, 0) >= 1 and codes.get(503, 0) >= 1, str(dict(codes))),
            Check("every 503 is the circuit breaker's (x-envoy-overloaded: true, flag UO)",
                  overloaded == codes.get(503, 0), f"{overloaded}/{codes.get(503, 0)}"),
            Check("the cluster counted them (upstream_rq_pending_overflow)", overflow == codes.get(503, 0),
                  f"+{overflow}")]


def _stop_app(mesh: Any, name: str) -> list[str]:
    """Stop one workload's app (its sidecar stays up and answers 503 for it, as a crashed container's would);
    the command line that restarts it."""
    for proc_name, p in mesh.procs:
        if proc_name == f"{name}-app":
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
            return list(p.args)
    raise RuntimeError(f"no app process for {name}")


def _restart_app(mesh: Any, name: str, args: list[str]) -> None:
    log = open(pathlib.Path(mesh.workdir) / f"{name}-app.log", "a")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "POD_NAME": name})
    mesh.procs[:] = [(n, q) for n, q in mesh.procs if n != f"{name}-app"] + [(f"{name}-app", p)]
    port = mesh.sidecars[name]["app"]
    wait_for(f"{name}'s app to answer again", lambda: request(f"http://127.0.0.1:{port}/health")[0] == 200)


def _all_reviews(cfg: ConfigEdit, retries: bool, outlier: bool) -> None:
    """reviews routed to every version (no subset), with or without retries and outlier detection."""
    def route(vs: dict) -> None:
        rule = {"route": [{"destination": {"host": "reviews"}}]}
        rule["retries"] = ({"attempts": 2, "perTryTimeout": "2s", "retryOn": "5xx"} if retries else {"attempts": 0})
        vs["spec"]["http"] = [rule]

    def policy(dr: dict) -> None:
        tp = {"loadBalancer": {"simple": "ROUND_ROBIN"}}
        if outlier:
            tp["outlierDetection"] = {"consecutive5xxErrors": 2, "interval": "1s", "baseEjectionTime": "60s",
                                      "maxEjectionPercent": 50}
        dr["spec"]["trafficPolicy"] = tp
    cfg.edit("traffic.yaml", "VirtualService", "reviews", route)
    cfg.edit("traffic.yaml", "DestinationRule", "reviews", policy)


def _reviews_cluster_ready(mesh: Any, retries: int) -> bool:
    """productpage's sidecar routes reviews to the subset-less cluster with `retries` retries (the edited route
    reached it: the outlier and retries scenarios both route there, so the retry count tells them apart)."""
    _, _, body = request(f"http://127.0.0.1:{mesh.sidecars['productpage-v1']['admin']}/config_dump")
    for section in json.loads(body).get("configs", []):
        for rc in section.get("dynamic_route_configs", []):
            for vh in rc.get("route_config", {}).get("virtual_hosts", []):
                if vh.get("name", "").startswith("reviews.default.svc.cluster.local:"):
                    return any(r.get("route", {}).get("cluster") == f"outbound|9080||{FQDN.format('reviews')}"
                               and (r["route"].get("retry_policy") or {}).get("num_retries", 0) == retries
                               for r in vh.get("routes", []))
    return False


REVIEWS_CLUSTER = f"cluster.outbound|9080||{FQDN.format('reviews')}"


def _one_reviews_down(mesh: Any, say: Callable[[str], None], version: str, *, retries: bool,
                      measure: Callable[[], Any]) -> tuple[Any, int, int]:
    """Route reviews to all three versions (retries, or outlier detection), stop one version's app, run
    `measure`, start the app again, put the config back. (measure's result, counter before, counter after) for
    the counter the lesson is about: retries, or ejections."""
    admin = mesh.sidecars["productpage-v1"]["admin"]
    counter = f"{REVIEWS_CLUSTER}." + ("upstream_rq_retry" if retries else "outlier_detection.ejections_enforced_total")
    with ConfigEdit(mesh) as cfg:
        what = ("retries attempts 2 on 5xx (no outlier detection)" if retries else
                "no retries, outlierDetection consecutive5xxErrors 2, interval 1s, maxEjectionPercent 50")
        say(f"edit traffic.yaml: reviews to all three versions (no subset), {what}; then stop reviews-{version}'s app")
        _all_reviews(cfg, retries=retries, outlier=not retries)
        wait_for("the edited reviews route", lambda: _reviews_cluster_ready(mesh, 2 if retries else 0))
        before = stat(admin, counter)
        args = _stop_app(mesh, f"reviews-{version}")
        try:
            result = measure()
        finally:
            _restart_app(mesh, f"reviews-{version}", args)
    return result, before, stat(admin, counter)


def outlier(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    admin = mesh.sidecars["productpage-v1"]["admin"]
    ejections = f"{REVIEWS_CLUSTER}.outlier_detection.ejections_enforced_total"

    def measure() -> tuple[list[str], list[str]]:
        before = stat(admin, ejections)
        first = [reviews_version(page(mesh)) for _ in range(15)]
        wait_for("reviews-v1 to be ejected", lambda: stat(admin, ejections) > before)
        return first, [reviews_version(page(mesh)) for _ in range(15)]
    (first, later), before, after = _one_reviews_down(mesh, say, "v1", retries=False, measure=measure)
    say(f"15 pages while v1 fails -> {dict(collections.Counter(first))}")
    say(f"15 pages after the ejection -> {dict(collections.Counter(later))}")
    return [Check("while reviews-v1 is down, pages that land on it show the reviews error", any(
        v.startswith("error") for v in first), str(dict(collections.Counter(first)))),
            Check("productpage's sidecar ejected it (outlier_detection.ejections_enforced_total)", after > before,
                  f"+{after - before}"),
            Check("after the ejection every page is served by v2 or v3", all(v in ("v2", "v3") for v in later),
                  str(dict(collections.Counter(later))))]


def retries(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    seen, before, after = _one_reviews_down(
        mesh, say, "v2", retries=True, measure=lambda: [reviews_version(page(mesh)) for _ in range(20)])
    say(f"20 pages while v2 fails -> {dict(collections.Counter(seen))}")
    return [Check("every page still has its reviews (a failed try went to another host)",
                  all(v in ("v1", "v3") for v in seen), str(dict(collections.Counter(seen)))),
            Check("productpage's sidecar retried (upstream_rq_retry)", after > before, f"+{after - before}")]


def _plaintext(port: int) -> str:
    try:
        return str(request(f"http://127.0.0.1:{port}/reviews/0", {"Host": "reviews:9080"})[0])
    except OSError as e:  # the STRICT listener closes a plaintext connection
        return f"refused ({type(e).__name__})"


def mtls(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    port = mesh.sidecars["reviews-v1"]["inbound"]
    strict = _plaintext(port)
    say(f"plaintext to reviews-v1's sidecar under STRICT -> {strict}")
    with ConfigEdit(mesh) as cfg:
        say("add PeerAuthentication default/reviews-permissive: selector app=reviews, mtls.mode PERMISSIVE")
        cfg.write("mtls-scenario.yaml", [{
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "reviews-permissive", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "reviews"}}, "mtls": {"mode": "PERMISSIVE"}}}])
        permissive = wait_for("PERMISSIVE on reviews-v1's sidecar", lambda: _plaintext(port) == "200" and "200")
        say(f"plaintext under PERMISSIVE -> {permissive}; the mesh's own calls stay mTLS: "
            f"{reviews_version(page(mesh, 'jason'))} answered through the gateway")
    back = wait_for("STRICT again", lambda: _plaintext(port).startswith("refused") and _plaintext(port))
    return [Check("STRICT refuses a client without a mesh certificate", strict.startswith("refused"), strict),
            Check("PERMISSIVE serves plaintext on the same port (tls_inspector picks the chain)",
                  permissive == "200", permissive),
            Check("removing the policy makes it STRICT again", back.startswith("refused"), back)]


def authz(mesh: Any, say: Callable[[str], None]) -> list[Check]:
    reviews_out = mesh.sidecars["reviews-v1"]["outbound"]

    def from_reviews() -> tuple[int, bytes]:
        status, _, body = request(f"http://127.0.0.1:{reviews_out}/details/0", {"Host": "details:9080"})
        return status, body
    before = from_reviews()[0]
    with ConfigEdit(mesh) as cfg:
        say("add AuthorizationPolicy default/details-viewer: selector app=details, ALLOW from principal "
            "cluster.local/ns/default/sa/bookinfo-productpage")
        cfg.write("authz-scenario.yaml", [{
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "details-viewer", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "details"}}, "action": "ALLOW", "rules": [
                {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/bookinfo-productpage"]}}]}]}}])
        denied = wait_for("the policy on details' sidecar", lambda: from_reviews()[0] == 403 and from_reviews())
        allowed = page(mesh)
        say(f"reviews-v1 -> details: {denied[0]} {denied[1].decode(errors='replace')!r}; "
            f"productpage -> details: {'OK' if 'error' not in allowed.get('details', {'error': 1}) else 'error'}")
    restored = wait_for("the policy removed", lambda: from_reviews()[0] == 200 and 200)
    return [Check("before the policy anyone in the mesh may call details", before == 200, str(before)),
            Check("another service account gets 403 'RBAC: access denied' (the rbac filter on details' inbound)",
                  denied == (403, b"RBAC: access denied"), f"{denied[0]} {denied[1]!r}"),
            Check("productpage, the allowed principal, still gets details",
                  "error" not in allowed.get("details", {"error": 1})),
            Check("removing the policy allows everyone again", restored == 200, str(restored))]


SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario("canary", "shift traffic between versions by weight", canary,
             "The control plane turned the VirtualService's weights into the route's `weighted_clusters` "
             "(control/translate/routes.py, _route_action) and pushed RDS; productpage's sidecar draws a cluster "
             "per request in proportion to the weights (pyproxy/routing/table.py, choose_weighted_cluster)."),
    Scenario("fault", "inject an HTTP abort on one service", fault,
             "VirtualService `fault.abort` became the route's `typed_per_filter_config` for "
             "envoy.filters.http.fault (control/translate/routes.py, fault_config). The client's sidecar answers "
             "500 itself, never calling details, with response flag FI (pyproxy/filters/fault_logic.py, "
             "FaultConfig.decide)."),
    Scenario("circuit-breaker", "limit connections and pending requests", circuit_breaker,
             "DestinationRule connectionPool became the cluster's `circuit_breakers.thresholds` "
             "(control/translate/clusters.py, _apply_connection_pool). When the one connection is busy and the one "
             "pending slot is taken, the router answers 503 at once with x-envoy-overloaded: true and flag UO "
             "(pyproxy/upstream/circuit_breaker.py; pyproxy/filters/router.py, _overflow)."),
    Scenario("outlier", "eject a failing endpoint", outlier,
             "DestinationRule outlierDetection became the cluster's `outlier_detection` "
             "(control/translate/clusters.py, _apply_outlier_detection). After 2 consecutive 5xx from one host "
             "the client's sidecar ejects it for baseEjectionTime, never more than maxEjectionPercent of the hosts "
             "(pyproxy/upstream/outlier.py, OutlierDetector._consecutive and _eject)."),
    Scenario("retries", "retry a failed request on another host", retries,
             "VirtualService retries became the route's `retry_policy` (retry_on 5xx, num_retries 2, and Istio's "
             "previous_hosts predicate); the router retries a 5xx on another host and the client never sees the "
             "failure (pyproxy/routing/retry.py, RetryState.decide)."),
    Scenario("mtls", "STRICT and PERMISSIVE mutual TLS", mtls,
             "PeerAuthentication became the inbound listener's filter chains: under STRICT only a chain that "
             "requires a client certificate; under PERMISSIVE also a plaintext chain, chosen by the "
             "tls_inspector from the first bytes (control/translate/authn.py; pyproxy/listener/chain_match.py, "
             "select_chain)."),
    Scenario("authz", "allow one caller, deny the rest", authz,
             "AuthorizationPolicy became an envoy.filters.http.rbac filter on details' inbound chain "
             "(control/translate/authz.py, build_filters); the caller's principal is the URI SAN of its mTLS "
             "certificate, and no matching ALLOW policy means 403 'RBAC: access denied' "
             "(pyproxy/filters/rbac_logic.py, RbacEngine.decide)."),
)}


def run(name: str, mesh: Any, say: Callable[[str], None] = print) -> list[Check]:
    """Run one scenario and print its checks and its lesson; the checks are returned for tests."""
    scenario = SCENARIOS[name]
    say(f"\n[scenario {name}] {scenario.title}")
    checks = scenario.run(mesh, lambda text: say(f"  {text}"))
    for c in checks:
        say(f"  {'✔' if c.ok else '✘'} {c.claim}" + (f" ({c.seen})" if c.seen else ""))
    say(f"  how: {scenario.lesson}")
    return checks
