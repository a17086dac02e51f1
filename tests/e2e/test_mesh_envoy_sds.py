"""Real Envoy and pyproxy sidecars in one STRICT mTLS mesh: `pyproxy agent` gets the workload certificate from the
control plane's CA and serves it to its Envoy over SDS (unix socket, `default` / `ROOTCA`), Envoy takes its config
over gRPC ADS on the secure gRPC port, and the clusters / listeners istiod-style TLS contexts name the secrets via
`sds-grpc` (docs/security.md "Envoy sidecars: SDS from pyproxy agent").

Real processes on 127.0.0.1: the control plane (secure: CA, secure gRPC ADS), demo apps, a pyproxy sidecar for
reviews-v1, `pyproxy agent` + Envoy 1.40 for productpage-v1. What is checked is what the apps and the proxies'
admin see: the `x-forwarded-client-cert` each server app receives (the URI its sidecar verified on the client
certificate), Envoy's `/certs`, `/stats`, and pyproxy's `/stats`.
"""
from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest

from tests.support.envoy import require_envoy
from tests.support.mesh import (NAMESPACE, DemoApp, Mesh, client_session, destination_rule, fqdn, free_ports, get,
                                labels, outbound_cluster, service)
from tests.support.process import Process, poll, pyproxy_command

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

TD = "spiffe://cluster.local/ns/default/sa/"
STRICT_MESH = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}


class EnvoyAgent(Process):
    """`pyproxy agent` for one workload: its Envoy on the secure gRPC port, SDS from the CA, a demo app behind it."""

    def __init__(self, mesh: Mesh, name: str, app: str, *, token_sa: str = "", extra: tuple[str, ...] = ()):
        cp = mesh.cp
        assert cp is not None and cp.secure_grpc_port
        self.workload = name
        self.service_account = f"bookinfo-{app}"
        (self.app_port, self.inbound_port, self.outbound_port, self.admin_port, self.status_port, self.health_port,
         self.stats_port) = free_ports(7)
        token = cp.token(NAMESPACE, token_sa or self.service_account)
        super().__init__(f"agent-{name}", [
            *pyproxy_command(), "agent", "--control-grpc", f"127.0.0.1:{cp.secure_grpc_port}",
            "--ca-address", cp.secure_url, "--ca-root", str(cp.root_cert), "--token-file", str(token),
            "--name", name, "--labels", ",".join(f"{k}={v}" for k, v in labels(app).items()),
            "--service-account", self.service_account, "--app-port", str(self.app_port),
            "--inbound-port", str(self.inbound_port), "--outbound-port", str(self.outbound_port),
            "--admin-port", str(self.admin_port), "--status-port", str(self.status_port),
            "--health-port", str(self.health_port), "--stats-port", str(self.stats_port),
            "--envoy", str(require_envoy()), "--work-dir", str(mesh.workdir / f"agent-{name}"), *extra],
            mesh.workdir)
        self.app = DemoApp(mesh.workdir, name, self.app_port, outbound_port=self.outbound_port)
        mesh._track(self.app)
        mesh._track(self)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.inbound_port}"

    def start(self) -> "EnvoyAgent":
        self.app.start()
        super().start()
        return self

    async def envoy_admin(self, path: str) -> tuple[int, str]:
        try:
            return await get(f"http://127.0.0.1:{self.admin_port}{path}")
        except (aiohttp.ClientError, OSError) as err:
            return 0, str(err)

    async def ready(self) -> "EnvoyAgent":
        """The agent's own readiness (Envoy LIVE with its config), through Envoy's 15021 listener."""
        await self.app.ready()

        async def probe() -> bool:
            self.check_running()
            try:
                return (await get(f"http://127.0.0.1:{self.health_port}/healthz/ready"))[0] == 200
            except (aiohttp.ClientError, OSError):
                return False
        await poll(f"{self.workload}'s Envoy ready (/healthz/ready)", probe, detail=self.output)
        return self

    async def stats(self) -> dict[str, int]:
        status, text = await self.envoy_admin("/stats")
        assert status == 200, text
        out = {}
        for line in text.splitlines():
            name, _, value = line.partition(": ")
            if value.strip().isdigit():
                out[name] = int(value)
        return out

    async def certs(self) -> list[dict]:
        """Envoy's /certs: the certificate its `default` secret holds (serial, SANs, days until expiration)."""
        status, text = await self.envoy_admin("/certs")
        assert status == 200, text
        return [c for entry in json.loads(text).get("certificates", []) for c in entry.get("cert_chain", [])]

    def installed(self) -> int:
        return self.output(None).count("workload certificate for ")


class Seen:
    """One answer: status, the serving app, the URI in the XFCC element the server's sidecar appended."""

    def __init__(self, status: int, body: str):
        self.status = status
        doc = json.loads(body) if status == 200 and body[:1] == "{" else {}
        headers = {k.lower(): v for k, v in doc.get("headers", {}).items()}
        self.served_by = doc.get("served_by", "")
        self.xfcc = headers.get("x-forwarded-client-cert", "")
        self.text = body[:300] if status != 200 else ""

    def field(self, key: str) -> str:
        last = self.xfcc.split(",")[-1]
        return next((p[len(key) + 1:] for p in last.split(";") if p.startswith(key + "=")), "")

    def __repr__(self) -> str:
        return f"Seen({self.status} {self.served_by!r} {self.text!r} xfcc={self.xfcc[:120]!r})"


async def through(session: aiohttp.ClientSession, port: int, host: str) -> Seen:
    try:
        async with session.get(f"http://127.0.0.1:{port}/anything", headers={"Host": host}) as r:
            return Seen(r.status, (await r.read()).decode(errors="replace"))
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        return Seen(0, f"{type(err).__name__}: {err}")


async def once(port: int, host: str) -> Seen:
    async with client_session() as s:
        return await through(s, port, host)


def allow_only(app: str, caller_sa: str) -> dict:
    """AuthorizationPolicy: `app`'s sidecar serves only the caller whose verified certificate is `caller_sa`."""
    return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": f"{app}-callers", "namespace": NAMESPACE},
            "spec": {"selector": {"matchLabels": {"app": app}}, "action": "ALLOW", "rules": [
                {"from": [{"source": {"principals": [f"cluster.local/ns/default/sa/{caller_sa}"]}}]}]}}


async def direct_mtls(mesh: Mesh, port: int, host: str) -> tuple[int, str]:
    """A request straight to a sidecar's inbound port over mTLS with a valid mesh certificate for another
    service account (`probe`)."""
    from pyproxy.tls.contexts import client_context
    from tests.support.mesh import probe_secret

    secret = await probe_secret(mesh)
    ctx = client_context(secret.root_bundle_pem, secret.cert_chain_pem, secret.private_key_pem)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s:
        async with s.get(f"https://127.0.0.1:{port}/anything", headers={"Host": host}, ssl=ctx) as r:
            return r.status, (await r.read()).decode(errors="replace")


def mesh_config(extra: list[dict] = ()) -> list[dict]:
    return [STRICT_MESH, service("productpage"), service("reviews"), destination_rule("reviews", ("v1",)),
            *extra]


def impostor(name: str, port: int) -> list[dict]:
    """A service `name` whose one endpoint is the given sidecar's inbound port, but whose WorkloadEntry says the
    workload runs as `bookinfo-ratings`: clients of `name` expect that SPIFFE id (auto-mTLS SANs) and get another."""
    return [{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
             "metadata": {"name": name, "namespace": NAMESPACE},
             "spec": {"hosts": [fqdn(name)], "location": "MESH_INTERNAL", "resolution": "STATIC",
                      "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                      "workloadSelector": {"labels": {"app": name}}}},
            {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
             "metadata": {"name": f"{name}-we", "namespace": NAMESPACE},
             "spec": {"address": "127.0.0.1", "ports": {"http": port}, "serviceAccount": "bookinfo-ratings",
                      "labels": {"app": name, "security.istio.io/tlsMode": "istio"}}}]


async def start_mixed(mesh: Mesh, cp_args: tuple[str, ...] = (), sidecar_args: tuple[str, ...] = (),
                      agent_args: tuple[str, ...] = ()):
    await mesh.control_plane(secure=True, extra_args=["--secure-grpc-port", "0", *cp_args])
    envoy = EnvoyAgent(mesh, "productpage-v1", "productpage", extra=agent_args).start()
    reviews = mesh.start_workload("reviews-v1", labels("reviews"), extra_args=sidecar_args)
    await reviews.app.ready()
    await reviews.sidecar.ready()
    await envoy.ready()
    await mesh.wait_hosts(reviews.sidecar, outbound_cluster("productpage"), lambda h: h == {envoy.endpoint},
                          "has productpage-v1 (Envoy)")
    return envoy, reviews


async def test_envoy_and_pyproxy_sidecars_talk_strict_mtls_both_ways_and_refuse_a_wrong_identity(mesh: Mesh):
    """STRICT everywhere. Envoy (productpage) -> pyproxy (reviews) and pyproxy -> Envoy both succeed over mTLS, the
    server app seeing the client's SPIFFE id in XFCC (the server sidecar verified the client certificate); the
    certificate Envoy got over SDS is the CA's, for its service account. A service whose endpoint is the other
    sidecar but whose identity is `bookinfo-ratings` is refused by each client (SAN check), and plaintext
    straight to Envoy's STRICT inbound port is refused."""
    mesh.write("services.yaml", mesh_config())
    envoy, reviews = await start_mixed(mesh)

    # SDS: Envoy holds the CA's certificate for its own identity, as the secrets `default` and `ROOTCA`
    certs = await envoy.certs()
    uris = {san.get("uri") for c in certs for san in c.get("subject_alt_names", [])}
    assert f"{TD}bookinfo-productpage" in uris, certs
    assert "SDS_SOCKET " in envoy.output(None)
    status, dump = await envoy.envoy_admin("/config_dump?resource=dynamic_active_secrets")
    assert status == 200 and {s["name"] for s in json.loads(dump)["configs"]} == {"default", "ROOTCA"}, dump[:500]

    # Envoy -> pyproxy: reviews' app sees productpage's SPIFFE id (pyproxy verified Envoy's client certificate)
    seen = await once(envoy.outbound_port, "reviews:9080")
    assert seen.status == 200 and seen.served_by == "reviews-v1", seen
    assert seen.field("URI") == f"{TD}bookinfo-productpage", seen
    # pyproxy -> Envoy: productpage's app sees reviews' SPIFFE id (Envoy verified pyproxy's client certificate)
    seen = await once(reviews.sidecar.outbound_port, "productpage:9080")
    assert seen.status == 200 and seen.served_by == "productpage-v1", seen
    assert seen.field("URI") == f"{TD}bookinfo-reviews", seen
    stats = await envoy.stats()
    inbound_ssl = {k: v for k, v in stats.items() if k.startswith("listener.") and k.endswith(".ssl.handshake")}
    assert sum(inbound_ssl.values()) >= 1, inbound_ssl
    assert stats[f"cluster.{outbound_cluster('reviews', subset='')}.ssl.handshake"] >= 1 or \
        any(k.endswith(".ssl.handshake") and "reviews" in k and v for k, v in stats.items()), stats

    # what upstream Envoy lacks: no istio_requests_total of its own (istio.stats is istio-proxy's), and no peer
    # metadata exchange, so the pyproxy server reports the Envoy caller by principal only
    status, prom = await get(f"http://127.0.0.1:{envoy.stats_port}/stats/prometheus")
    assert status == 200 and "envoy_server_state" in prom
    assert not [line for line in prom.splitlines() if line.startswith("istio_")], "istio_* from upstream Envoy?"
    status, prom = await get(f"http://127.0.0.1:{reviews.sidecar.admin_port}/stats/prometheus")
    inbound = [line for line in prom.splitlines() if line.startswith("istio_requests_total{") and
               'reporter="destination"' in line and f'source_principal="{TD}bookinfo-productpage"' in line]
    assert inbound and all('source_workload="unknown"' in line for line in inbound), inbound

    # plaintext straight to Envoy's STRICT inbound port: refused
    seen = await once(envoy.inbound_port, "productpage:9080")
    assert seen.status != 200, seen

    # the servers check the client's SPIFFE id too: a mesh certificate of another service account is served
    # until each admits only the other's service account
    assert (await direct_mtls(mesh, envoy.inbound_port, "productpage:9080"))[0] == 200
    assert (await direct_mtls(mesh, reviews.sidecar.inbound_port, "reviews:9080"))[0] == 200
    mesh.write("services.yaml", mesh_config([allow_only("productpage", "bookinfo-reviews"),
                                             allow_only("reviews", "bookinfo-productpage")]))

    async def denied(port: int, host: str) -> tuple[int, str] | None:
        got = await direct_mtls(mesh, port, host)
        return got if got[0] == 403 else None
    assert "RBAC: access denied" in (await poll("Envoy denies the probe identity", lambda: denied(
        envoy.inbound_port, "productpage:9080"), detail=envoy.output))[1]
    assert "RBAC: access denied" in (await poll("pyproxy denies the probe identity", lambda: denied(
        reviews.sidecar.inbound_port, "reviews:9080")))[1]
    assert (await once(envoy.outbound_port, "reviews:9080")).status == 200
    assert (await once(reviews.sidecar.outbound_port, "productpage:9080")).status == 200

    # wrong identity: each client refuses a server whose certificate is not the SPIFFE id the cluster expects
    mesh.write("services.yaml", mesh_config([*impostor("fake-p", reviews.sidecar.inbound_port),
                                             *impostor("fake-e", envoy.inbound_port)]))
    await mesh.wait_hosts(reviews.sidecar, outbound_cluster("fake-e"), lambda h: h == {envoy.endpoint}, "has fake-e")

    async def envoy_knows_fake_p() -> bool:
        status, text = await envoy.envoy_admin("/clusters")
        return f"{outbound_cluster('fake-p')}::127.0.0.1:{reviews.sidecar.inbound_port}::" in text
    await poll("Envoy has fake-p's endpoint", envoy_knows_fake_p, detail=envoy.output)

    before = await envoy.stats()
    fake_p = f"cluster.{outbound_cluster('fake-p')}.ssl"
    seen = await once(envoy.outbound_port, "fake-p:9080")
    assert seen.status == 503, seen
    after = await envoy.stats()
    assert after.get(f"{fake_p}.fail_verify_san", 0) > before.get(f"{fake_p}.fail_verify_san", 0), \
        {k: v for k, v in after.items() if k.startswith(fake_p)}
    assert after.get(f"{fake_p}.handshake", 0) == before.get(f"{fake_p}.handshake", 0)

    before = await reviews.sidecar.stats()
    fake_e = f"cluster.{outbound_cluster('fake-e')}.ssl"
    seen = await once(reviews.sidecar.outbound_port, "fake-e:9080")
    assert seen.status == 503, seen
    after = await reviews.sidecar.stats()
    assert after.get(f"{fake_e}.fail_verify_san", 0) > before.get(f"{fake_e}.fail_verify_san", 0), \
        {k: v for k, v in after.items() if k.startswith(fake_e)}

    # and the right identities still work after all that
    assert (await once(envoy.outbound_port, "reviews:9080")).status == 200
    assert (await once(reviews.sidecar.outbound_port, "productpage:9080")).status == 200


def fresh_twin(name: str, app: str) -> list[dict]:
    """`name`: the same pods as `app` behind a DestinationRule with maxRequestsPerConnection 1, so every request
    through it opens a new mTLS connection between the sidecars (a handshake with the current certificates)."""
    return [{**service(name), "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 9080}]}},
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": name, "namespace": NAMESPACE},
             "spec": {"host": name, "trafficPolicy": {"connectionPool": {"http": {"maxRequestsPerConnection": 1}}}}}]


async def test_envoy_certificates_rotate_through_the_agents_sds_under_load_without_a_failed_request(mesh: Mesh):
    """STRICT; the CA signs at most 6 s. The agent asks for 4 s certificates and renews at half their lifetime
    (`--secret-grace-ratio 0.5`), pushing each one to Envoy on its open SDS stream; the pyproxy sidecar asks for
    6 s. Four paced traffic loops between them, both directions, over keep-alive connections and a new mTLS
    connection per request (maxRequestsPerConnection 1), until the agent has installed its fourth certificate
    (bounded: 30 s, 20 000 requests). Not one request fails; Envoy's /certs serial changes; the reviews app sees
    at least three distinct Envoy client certificates (XFCC Hash), never going back to an older one; Envoy's SDS
    stream took every update (`sds.default.update_success`) without reconnecting, and `ROOTCA` (the same roots)
    was sent once."""
    mesh.write("services.yaml", mesh_config([*fresh_twin("reviews-fresh", "reviews"),
                                             *fresh_twin("productpage-fresh", "productpage")]))
    envoy, reviews = await start_mixed(mesh, cp_args=("--max-cert-ttl", "6s"), sidecar_args=("--secret-ttl", "6s"),
                                       agent_args=("--secret-ttl", "4s", "--secret-grace-ratio", "0.5"))
    await mesh.wait_hosts(reviews.sidecar, outbound_cluster("productpage-fresh"), lambda h: h == {envoy.endpoint},
                          "has productpage-fresh (Envoy)")

    async def envoy_has(cluster: str) -> bool:
        return f"{outbound_cluster(cluster)}::{reviews.sidecar.endpoint}::" in (await envoy.envoy_admin("/clusters"))[1]
    await poll("Envoy has reviews-fresh", lambda: envoy_has("reviews-fresh"), detail=envoy.output)
    first_serial = {c["serial_number"] for c in await envoy.certs()}
    installed_at_start = envoy.installed()
    serials = set(first_serial)
    seen: dict[str, list[tuple[float, Seen]]] = {}
    deadline = time.monotonic() + 30
    stop = asyncio.Event()

    async def loop(name: str, port: int, host: str) -> None:
        async with client_session() as session:
            while not stop.is_set() and time.monotonic() < deadline and len(seen.get(name, ())) < 5000:
                seen.setdefault(name, []).append((time.monotonic(), await through(session, port, host)))
                await asyncio.sleep(0.005)  # pacing of the load loop, not synchronisation

    async def watch() -> None:
        while time.monotonic() < deadline and envoy.installed() < installed_at_start + 3:
            serials.update(c["serial_number"] for c in await envoy.certs())
            await asyncio.sleep(0.2)  # the poll interval of a bounded wait on the certificate count
        counts = {name: len(requests) for name, requests in seen.items()}
        while time.monotonic() < deadline and any(len(seen[n]) < min(c + 20, 5000) for n, c in counts.items()):
            await asyncio.sleep(0.01)  # a little traffic on the last certificate too: 20 more requests per loop
        stop.set()

    await asyncio.gather(watch(), loop("envoy->reviews", envoy.outbound_port, "reviews:9080"),
                         loop("envoy->reviews-fresh", envoy.outbound_port, "reviews-fresh:9080"),
                         loop("pyproxy->productpage", reviews.sidecar.outbound_port, "productpage:9080"),
                         loop("pyproxy->productpage-fresh", reviews.sidecar.outbound_port, "productpage-fresh:9080"))
    counts = {name: len(answers) for name, answers in seen.items()}
    failed = {name: [s for _, s in answers if s.status != 200][:3] for name, answers in seen.items()}
    assert envoy.installed() >= installed_at_start + 3, (counts, envoy.output())
    assert not any(failed.values()), (counts, failed)
    assert all(n >= 20 for n in counts.values()), counts
    assert len(serials) >= 3 and serials - first_serial, serials

    # every new connection from Envoy presented its current certificate: the hashes only move forward
    hashes = [s.field("Hash") for _, s in seen["envoy->reviews-fresh"]]
    distinct = list(dict.fromkeys(hashes))
    assert len(distinct) >= 3, distinct
    assert [h for i, h in enumerate(hashes) if i == 0 or h != hashes[i - 1]] == distinct, "went back to an old cert"
    assert all(s.field("URI") == f"{TD}bookinfo-productpage" for _, s in seen["envoy->reviews-fresh"])
    assert all(s.field("URI") == f"{TD}bookinfo-reviews" for _, s in seen["pyproxy->productpage-fresh"])

    stats = await envoy.stats()
    # a renewal changes `default` only: the ROOTCA stream got its bundle once
    assert stats.get("sds.default.update_success", 0) >= 4 and stats.get("sds.ROOTCA.update_success", 0) == 1, \
        {k: v for k, v in stats.items() if k.startswith("sds.")}
    streams = envoy.output(None).count("SDS stream opened")
    assert streams <= 2, envoy.output()  # one per secret name (Envoy's SdsApi), no reconnects
    # the agent forks only to exec Envoy: grpcio's fork handlers are off (pyproxy/agent/__init__.py); with them on,
    # they logged this line at that fork, and once left the agent on a closed epoll fd (exit 250)
    assert "skipping fork() handlers" not in envoy.output(None), envoy.output()
    print(f"rotation under load: {counts}, {len(serials)} Envoy serials, {len(distinct)} client certs seen, "
          f"{stats['sds.default.update_success']} SDS default updates on {streams} streams")


async def test_the_agents_readiness_is_503_until_envoy_has_its_config_and_15090_serves_envoys_prometheus(mesh: Mesh):
    """Istio's probe: the agent's status port says 503 with the reason while Envoy has no config (the control
    plane is not up yet; Envoy's own 15021 listener does not accept before Envoy's initialization ends, as in
    Istio), then 200 there and through Envoy's 15021 once Envoy is LIVE with its clusters and listeners; Envoy's
    15090 listener serves its admin /stats/prometheus (and nothing else of the admin API)."""
    binary = require_envoy()
    grpc_port, inbound, outbound, admin, app, status, health, stats = free_ports(8)
    mesh.write("services.yaml", [service("productpage"), {
        "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "DISABLE"}}}])
    agent = mesh._track(Process("agent-productpage", [
        *pyproxy_command(), "agent", "--control-grpc", f"127.0.0.1:{grpc_port}", "--name", "productpage-v1",
        "--labels", "app=productpage,version=v1", "--app-port", str(app), "--inbound-port", str(inbound),
        "--outbound-port", str(outbound), "--admin-port", str(admin), "--status-port", str(status),
        "--health-port", str(health), "--stats-port", str(stats), "--envoy", str(binary),
        "--work-dir", str(mesh.workdir / "agent")], mesh.workdir))
    agent.start()

    async def answer(port: int, path: str) -> tuple[int, str] | None:
        agent.check_running()
        try:
            return await get(f"http://127.0.0.1:{port}{path}")
        except (aiohttp.ClientError, OSError):
            return None
    async def config_missing() -> tuple[int, str] | None:
        got = await answer(status, "/healthz/ready")  # first "Envoy admin ... not reachable", until Envoy is up
        return got if got and "config not received" in got[1] else None
    not_ready = await poll("the agent's status port says why it is not ready", config_missing, detail=agent.output)
    assert not_ready[0] == 503 and "config not received" in not_ready[1], not_ready
    assert "cds updates: 0 successful, 0 rejected; lds updates: 0 successful" in not_ready[1], not_ready

    await mesh.control_plane(extra_args=["--grpc-port", str(grpc_port)])

    async def ready() -> tuple[int, str] | None:
        got = await answer(health, "/healthz/ready")
        return got if got and got[0] == 200 else None
    await poll("ready once the config came", ready, detail=agent.output)
    assert (await answer(status, "/healthz/ready"))[0] == 200

    prom = await answer(stats, "/stats/prometheus")
    assert prom is not None and prom[0] == 200 and "# TYPE envoy_server_state gauge" in prom[1], prom
    assert "envoy_cluster_manager_cds_update_success" in prom[1]
    other = await answer(stats, "/config_dump")
    assert other is not None and other[0] == 404, other  # only /stats/prometheus is routed
