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

    # SDS: Envoy holds the CA's certificate for its own identity
    certs = await envoy.certs()
    uris = {san.get("uri") for c in certs for san in c.get("subject_alt_names", [])}
    assert f"{TD}bookinfo-productpage" in uris, certs
    assert "SDS_SOCKET " in envoy.output(None)

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

    # plaintext straight to Envoy's STRICT inbound port: refused
    seen = await once(envoy.inbound_port, "productpage:9080")
    assert seen.status != 200, seen

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
