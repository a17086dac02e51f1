"""Mutual TLS between live sidecars, under the conditions operators worry about (docs/security.md "Proofs").

Real processes on 127.0.0.1 (tests/support/mesh.py, secure mode): the control plane with its CA on the secure
port, demo apps, `pyproxy sidecar`s that get their certificates from the CA and talk auto-mTLS to each other.
What is checked is what an operator sees: the app's view of `x-forwarded-client-cert` (its `Hash=` is the
SHA-256 of the client certificate the server side verified), each sidecar's admin /server_info (serial,
`sha256` fingerprint, rotations), admin /stats (`listener.<addr>.ssl.*`, `cluster.<name>.ssl.*`), and the
certificate a fresh TLS connection straight to an inbound port is shown.

* rotation under load: 6 s certificates (renewed at about 3 s) while keep-alive and new connections flow;
* root rotation (certs/README.md's steps) through two STRICT sidecars with traffic flowing;
* PeerAuthentication STRICT / PERMISSIVE / DISABLE and a portLevelMtls override, on the same mesh, live;
* bad peers: a sidecar of another mesh (another CA) refused by a STRICT sidecar (a SAN mismatch is proved
  at the pyproxy level, tests/integration/test_tls_origination.py: no live-mesh config can pin a wrong SAN).
"""
from __future__ import annotations

import asyncio
import json
import pathlib
import time

import aiohttp
import pytest
from cryptography import x509

from pyproxy.tls.contexts import client_context
from tests.support.mesh import (Mesh, NAMESPACE, client_session, destination_rule, fqdn, labels, outbound_cluster,
                                probe_secret, service)
from tests.support.process import poll

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

PRODUCTPAGE_ID = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage"
STRICT_MESH = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}


def peer_authentication(name: str, app: str, mode: str, port_level: dict[int, str] | None = None) -> dict:
    spec: dict = {"selector": {"matchLabels": {"app": app}}, "mtls": {"mode": mode}}
    if port_level:
        spec["portLevelMtls"] = {port: {"mode": m} for port, m in port_level.items()}
    return {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


class Seen:
    """One answer through the mesh: status, the serving app, the XFCC header the server app got."""

    def __init__(self, sent: float, status: int, body: bytes, error: str = ""):
        self.sent, self.status, self.error = sent, status, error
        doc = json.loads(body) if status == 200 and body[:1] == b"{" else {}
        headers = {k.lower(): v for k, v in doc.get("headers", {}).items()}
        self.served_by = doc.get("served_by", "")
        self.xfcc = headers.get("x-forwarded-client-cert", "")
        self.text = "" if status == 200 else body[:300].decode(errors="replace")

    @property
    def hash(self) -> str:
        """XFCC `Hash=` of the last element (the one the server sidecar appended)."""
        last = self.xfcc.split(",")[-1]
        return next((p[5:] for p in last.split(";") if p.startswith("Hash=")), "")

    def __repr__(self) -> str:
        return f"Seen({self.status} {self.served_by!r} {self.error or self.text!r} xfcc={self.xfcc[:80]!r})"


async def fetch(session: aiohttp.ClientSession, port: int, host: str, headers: dict | None = None) -> Seen:
    sent = time.monotonic()
    try:
        async with session.get(f"http://127.0.0.1:{port}/anything", headers={"Host": host, **(headers or {})}) as r:
            return Seen(sent, r.status, await r.read())
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
        return Seen(sent, 0, b"", f"{type(err).__name__}: {err}")


async def fresh(port: int, host: str) -> Seen:
    """One request on a new connection (the app opens a new connection to its sidecar)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5),
                                     connector=aiohttp.TCPConnector(force_close=True)) as s:
        return await fetch(s, port, host)


async def plaintext_direct(port: int, host: str) -> Seen:
    """A client without a certificate straight to a sidecar's inbound port."""
    return await fresh(port, host)


async def peer_certificate(port: int, secret) -> x509.Certificate:
    """The leaf a new TLS connection to `127.0.0.1:port` is shown (we present `secret` as client certificate)."""
    ctx = client_context(secret.root_bundle_pem, secret.cert_chain_pem, secret.private_key_pem)
    _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                               server_hostname="outbound_.9080_._.reviews"), 10)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    finally:
        writer.close()
    return x509.load_der_x509_certificate(der)


def strict_pair_with_fresh_connections() -> list[dict]:
    """STRICT, productpage and reviews, and `reviews-fresh`: the same reviews pods behind a DestinationRule with
    maxRequestsPerConnection 1, so every request through it opens a new mTLS connection between the sidecars."""
    return [STRICT_MESH, service("productpage"), service("reviews"),
            {**service("reviews-fresh"), "spec": {"selector": {"app": "reviews"},
                                                  "ports": [{"name": "http", "port": 9080}]}},
            destination_rule("reviews", ("v1",)),
            {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
             "metadata": {"name": "reviews-fresh", "namespace": NAMESPACE},
             "spec": {"host": "reviews-fresh", "trafficPolicy": {"connectionPool": {"http": {
                 "maxRequestsPerConnection": 1}}}}}]


async def start_pair_with_6s_certificates(mesh: Mesh):
    """productpage-v1 and reviews-v1 asking for 6 s certificates, ready, the client knowing the server."""
    ttl = ["--secret-ttl", "6s"]
    client = mesh.start_workload("productpage-v1", labels("productpage"), extra_args=ttl)
    server = mesh.start_workload("reviews-v1", labels("reviews"), extra_args=ttl)
    for w in (client, server):
        await w.app.ready()
        await w.sidecar.ready()
    await mesh.wait_hosts(client.sidecar, outbound_cluster("reviews-fresh"), lambda h: h == {server.sidecar.endpoint},
                          "has reviews-v1")
    return client, server


# --- 1. certificate rotation under load ------------------------------------------------------------------

async def test_certificates_rotate_under_load_without_a_failed_request(mesh: Mesh):
    """STRICT; certificates of 6 s (the CA's maximum, and what the sidecars ask for), renewed at ~3 s. Three
    kinds of traffic from the productpage app through its sidecar to reviews-v1's sidecar and app, for up to
    30 s and 20 000 requests: keep-alive app connections over a keep-alive sidecar-to-sidecar connection
    (`reviews`), keep-alive app connections where every request opens a NEW mTLS connection between the
    sidecars (`reviews-fresh`: DestinationRule maxRequestsPerConnection 1), and a new app connection per
    request. Not one request may fail while both sidecars rotate at least twice."""
    mesh.write("services.yaml", strict_pair_with_fresh_connections())
    await mesh.control_plane(secure=True, extra_args=["--max-cert-ttl", "6s"])
    client, server = await start_pair_with_6s_certificates(mesh)
    start = {w.name: await w.sidecar.server_info() for w in (client, server)}
    port = client.sidecar.outbound_port

    fingerprints: dict[str, str] = {}   # client certificate sha256 -> serial, as /server_info showed them
    serials = {w.name: set() for w in (client, server)}
    answers: dict[str, list[Seen]] = {"keep-alive": [], "new upstream connection": [], "new app connection": []}
    deadline = time.monotonic() + 30

    def enough() -> bool:
        return (sum(map(len, answers.values())) >= 20_000 or time.monotonic() > deadline or
                (all(len(s) >= 3 for s in serials.values()) and
                 len({a.hash for a in answers["new upstream connection"]}) >= 3))

    async def watch() -> None:
        while not enough():
            for w in (client, server):
                cert = (await w.sidecar.server_info())["workload_certificate"]
                serials[w.name].add(cert["serial_number"])
                if w is client:
                    fingerprints[cert["sha256"]] = cert["serial_number"]
            await asyncio.sleep(0.05)  # poll interval of the bounded watch (enough() has a deadline)

    async def keep_alive(kind: str, host: str) -> None:
        async with client_session() as session:
            while not enough():
                answers[kind].append(await fetch(session, port, host))

    async def new_connections() -> None:
        while not enough():
            answers["new app connection"].append(await fresh(port, "reviews:9080"))

    await asyncio.gather(watch(), keep_alive("keep-alive", "reviews:9080"),
                         keep_alive("new upstream connection", "reviews-fresh:9080"), new_connections())

    print("rotation under load:", {k: len(v) for k, v in answers.items()}, "serials:",
          {k: len(v) for k, v in serials.items()})
    failed = {kind: [a for a in seen if a.status != 200] for kind, seen in answers.items()}
    assert failed == {kind: [] for kind in answers}, mesh.logs()
    assert all(len(seen) > 0 for seen in answers.values()), {k: len(v) for k, v in answers.items()}
    for w in (client, server):
        info = await w.sidecar.server_info()
        assert info["certificate_rotations"] >= start[w.name]["certificate_rotations"] + 2, info
        assert info["certificate_failures"] == 0, info
        assert len(serials[w.name]) >= 3, serials
    # every request reached the server side over mTLS, and the certificate it verified was one the client
    # sidecar held (the XFCC Hash is a fingerprint /server_info showed): new connections present new certs
    every = [a for seen in answers.values() for a in seen]
    assert all(f"URI={PRODUCTPAGE_ID}" in a.xfcc for a in every)
    hashes = [a.hash for a in answers["new upstream connection"]]
    assert set(hashes) <= set(fingerprints), (set(hashes) - set(fingerprints), fingerprints)
    assert len(set(hashes)) >= 3, set(hashes)
    # one request at a time, in send order: once a newer certificate is presented, an older one never is again
    changes = sum(1 for a, b in zip(hashes, hashes[1:]) if a != b)
    assert changes == len(set(hashes)) - 1, hashes

    # right now: a new connection presents the certificate the client sidecar holds now (read before and
    # after the request; retried, boundedly, if a rotation fell in between)
    async def current_cert_on_a_new_connection() -> bool:
        async with client_session() as session:
            before = (await client.sidecar.server_info())["workload_certificate"]["sha256"]
            seen = await fetch(session, port, "reviews-fresh:9080")
            after = (await client.sidecar.server_info())["workload_certificate"]["sha256"]
        return before == after and seen.hash == after
    await poll("a new connection presents the client's current certificate", current_cert_on_a_new_connection)

    # the server side: a new TLS connection to its inbound port is shown its current certificate, not the first
    probe = await probe_secret(mesh, ttl=6)

    async def current_server_cert() -> bool:
        before = (await server.sidecar.server_info())["workload_certificate"]["serial_number"]
        leaf = await peer_certificate(server.sidecar.inbound_port, probe)
        after = (await server.sidecar.server_info())["workload_certificate"]["serial_number"]
        return before == after == format(leaf.serial_number, "x")
    await poll("a new connection to the server is shown its current certificate", current_server_cert)
    assert (await server.sidecar.server_info())["workload_certificate"]["serial_number"] != \
        start[server.name]["workload_certificate"]["serial_number"]
    stats = await server.sidecar.stats()
    handshakes = stats[f"listener.0.0.0.0_{server.sidecar.inbound_port}.ssl.handshake"]
    assert handshakes >= len(answers["new upstream connection"]), handshakes


# --- 2. root rotation through live sidecars --------------------------------------------------------------

def sha256_of_pem(pem: bytes) -> list[str]:
    import hashlib

    from cryptography.hazmat.primitives.serialization import Encoding
    return [hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest() for c in x509.load_pem_x509_certificates(pem)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("apply", ["restart", "reload"])
async def test_the_root_rotates_through_live_sidecars_without_a_failed_request(mesh: Mesh, tmp_path, apply):
    """certs/README.md's four steps, live: a plugged-in CA `old/` (`meshctl ca init`), STRICT, 6 s certificates,
    two sidecars (productpage -> reviews) and steady traffic through the pair all along: keep-alive, and a new
    mTLS connection between the sidecars per request (`reviews-fresh`). Step 2: the control plane on `old/`
    whose root-cert.pem holds old+new (it publishes the bundle as the sidecars' --ca-root; they renew and get
    both roots in ROOTCA). Step 3: on `new/` (new intermediate, same bundle). Step 4: `new/` with the new root
    alone. `restart`: each step restarts the control plane on that directory; `reload`: the control plane runs
    on one `cacerts` directory whose files each step overwrites, and reloads them itself (never restarted).
    Each step waits until both sidecars show the expected trust bundle and issuer on /server_info. Not one
    request may fail; at the end the server side trusts the new root only, and what it verified (XFCC Hash) is
    the client's certificate from the new intermediate."""
    import shutil
    import subprocess

    from pyproxy.tls.files import write_file_atomic
    from tests.support.mesh import console_script

    old, new = tmp_path / "old", tmp_path / "new"
    for out in (old, new):
        subprocess.run([*console_script("meshctl", "control.cli.meshctl"), "ca", "init", "--out", str(out),
                        "--key-type", "ec-p256"], check=True, capture_output=True)
    old_root, new_root = (old / "root-cert.pem").read_bytes(), (new / "root-cert.pem").read_bytes()
    old_issuer, new_issuer = (x509.load_pem_x509_certificate((d / "ca-cert.pem").read_bytes()).subject.rfc4514_string()
                              for d in (old, new))
    mesh.write("services.yaml", strict_pair_with_fresh_connections())
    ttl_args = ["--max-cert-ttl", "6s"]
    # grace 10 s (the control plane's default): a sidecar reconnecting after a restart keeps its endpoint meanwhile.
    # With the fixture's 1 s, one full-file run saw 503 "no healthy upstream" in step 4 (both kinds of traffic),
    # most likely a sidecar still backing off after the restart for longer than the grace (not proven: the log
    # was not kept; not seen again in 4 runs, 2 of them with grace 10 s)
    live = tmp_path / "live"  # `reload`: the one directory the control plane watches
    if apply == "reload":
        shutil.copytree(old, live)
        ttl_args += ["--cacerts-check-interval", "0.2"]
    cp = await mesh.control_plane(secure=True, grace=10.0,
                                  extra_args=[*ttl_args, "--cacerts", str(old if apply == "restart" else live)])
    assert cp.root_cert.read_bytes() == old_root
    client, server = await start_pair_with_6s_certificates(mesh)
    port = client.sidecar.outbound_port

    step = ["1 old root"]
    answers: list[tuple[str, str, Seen]] = []   # (step, kind, answer)
    done = asyncio.Event()
    deadline = time.monotonic() + 100           # bounds: 100 s, 40 000 requests

    def over() -> bool:
        return done.is_set() or time.monotonic() > deadline or len(answers) >= 40_000

    async def traffic(kind: str, host: str) -> None:
        async with client_session() as session:
            while not over():
                answers.append((step[0], kind, await fetch(session, port, host)))
                await asyncio.sleep(0.002)  # pacing (about 100-300 req/s per loop), not synchronisation

    async def sidecars_show(what: str, bundle: list[str], issuer: str) -> None:
        """Both sidecars hold a certificate from `issuer` and trust exactly `bundle` (renewed since the step)."""
        async def both() -> bool:
            for w in (client, server):
                info = await w.sidecar.server_info()
                if info["trust_bundle"] != bundle or info["workload_certificate"]["issuer"] != issuer:
                    return False
            return True
        await poll(what, both, timeout=40, detail=mesh.logs)

    async def renewed_once_more(what: str) -> None:
        """Both sidecars renew once more from now (traffic keeps flowing meanwhile)."""
        before = {w.name: (await w.sidecar.server_info())["certificate_rotations"] for w in (client, server)}

        async def both() -> bool:
            infos = [await w.sidecar.server_info() for w in (client, server)]
            return all(info["certificate_rotations"] > before[w.name] for info, w in zip(infos, (client, server)))
        await poll(what, both, timeout=20, detail=mesh.logs)

    async def restart_on(cacerts: pathlib.Path, name: str) -> None:
        step[0] = name
        if apply == "reload":  # the operator updates the files in place (as a cacerts Secret is updated)
            for f in ("root-cert.pem", "cert-chain.pem", "ca-cert.pem", "ca-key.pem"):
                write_file_atomic(live / f, (cacerts / f).read_bytes(), 0o600)
            return
        cp.stop()
        cp.extra_args = [*ttl_args, "--cacerts", str(cacerts)]
        await mesh.restart_control_plane()

    async def rotate() -> None:
        try:
            await sidecars_show("step 1: old root", sha256_of_pem(old_root), old_issuer)
            await renewed_once_more("step 1: a renewal under the old root")
            # 2. trust both, still signing with the old intermediate
            bundle = old_root + new_root
            (old / "root-cert.pem").write_bytes(bundle)
            (new / "root-cert.pem").write_bytes(bundle)
            await restart_on(old, "2 both roots, old intermediate")
            async def published() -> bool:  # the sidecars' --ca-root (at once after a restart; reload: polled)
                return cp.root_cert.read_bytes() == bundle
            await poll("the bundle is published", published, detail=mesh.logs)
            await sidecars_show("step 2: both roots", sha256_of_pem(bundle), old_issuer)
            # 3. sign with the new intermediate
            await restart_on(new, "3 both roots, new intermediate")
            await sidecars_show("step 3: new intermediate", sha256_of_pem(bundle), new_issuer)
            # 4. drop the old root
            (new / "root-cert.pem").write_bytes(new_root)
            await restart_on(new, "4 new root only")
            await sidecars_show("step 4: new root only", sha256_of_pem(new_root), new_issuer)
            await renewed_once_more("step 4: a renewal under the new root alone")
        finally:
            done.set()

    await asyncio.gather(rotate(), traffic("keep-alive", "reviews:9080"),
                         traffic("new upstream connection", "reviews-fresh:9080"))

    per_step: dict[str, int] = {}
    for name, kind, _ in answers:
        per_step[f"{name} / {kind}"] = per_step.get(f"{name} / {kind}", 0) + 1
    print("root rotation under traffic:", per_step)
    failed = [(name, kind, a) for name, kind, a in answers if a.status != 200]
    assert failed == [], (len(failed), {(n, k, a.status, a.text or a.error) for n, k, a in failed},
                          [round(a.sent - answers[0][2].sent, 2) for _, _, a in failed][:20], mesh.logs())
    assert len(per_step) == 8, per_step  # every step saw both kinds of traffic
    assert all(f"URI={PRODUCTPAGE_ID}" in a.xfcc for _, _, a in answers)

    # the end state: the server trusts the new root alone, and the client certificate it verified on the last
    # new connection is the client's current one, from the new intermediate
    server_info = await server.sidecar.server_info()
    assert server_info["trust_bundle"] == sha256_of_pem(new_root), server_info

    async def verified_current_client_cert() -> bool:
        async with client_session() as session:
            before = (await client.sidecar.server_info())["workload_certificate"]
            seen = await fetch(session, port, "reviews-fresh:9080")
            after = (await client.sidecar.server_info())["workload_certificate"]
        return seen.status == 200 and before == after and seen.hash == after["sha256"] and \
            after["issuer"] == new_issuer
    await poll("the server verified a client certificate from the new intermediate", verified_current_client_cert)
    # a client trusting the new root alone verifies the server's current certificate
    probe = await probe_secret(mesh, ttl=6)
    assert sha256_of_pem(probe.root_bundle_pem) == sha256_of_pem(new_root)
    leaf = await peer_certificate(server.sidecar.inbound_port, probe)
    assert leaf.issuer.rfc4514_string() == new_issuer
    assert cp.starts == (1 if apply == "reload" else 4)


# --- 3. PeerAuthentication, live ---------------------------------------------------------------------------

ACCESS_LOG = {"apiVersion": "install.istio.io/v1alpha1", "kind": "IstioOperator",
              "metadata": {"name": "mesh", "namespace": "istio-system"},
              "spec": {"meshConfig": {"accessLogFile": "/dev/stdout", "accessLogFormat":
                                      "ACCESS %RESPONSE_CODE% %RESPONSE_FLAGS% %UPSTREAM_TRANSPORT_FAILURE_REASON%\n"}}}


async def eventually(what: str, probe, want) -> Seen:
    """Poll `probe()` (bounded) until its answer satisfies `want`; config pushes take a moment to apply."""
    last: list[Seen] = []

    async def check() -> Seen | None:
        seen = await probe()
        last[:] = [seen]
        return seen if want(seen) else None
    return await poll(what, check, detail=lambda: repr(last))


def refused(seen: Seen) -> bool:
    return seen.status == 0


async def test_peer_authentication_modes_apply_to_live_sidecars(mesh: Mesh):
    """One mesh, one client (productpage) and three servers with their own PeerAuthentication: reviews STRICT,
    ratings PERMISSIVE, details DISABLE, then details STRICT with a portLevelMtls PERMISSIVE on its app port,
    then plain STRICT. Each server is reached through the client's sidecar (mTLS where the mode allows: the app
    sees XFCC with productpage's identity) and by a client without a certificate straight to its inbound port."""
    # details: every request a new connection between the sidecars (an established connection keeps the
    # transport it was made with; a new one picks it from the endpoint's current tlsMode)
    mesh.write("services.yaml", [*(service(s) for s in ("productpage", "reviews", "ratings", "details")),
                                 {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                                  "metadata": {"name": "details", "namespace": NAMESPACE},
                                  "spec": {"host": "details", "trafficPolicy": {"connectionPool": {"http": {
                                      "maxRequestsPerConnection": 1}}}}}])
    mesh.write("authn.yaml", [peer_authentication("reviews", "reviews", "STRICT"),
                              peer_authentication("ratings", "ratings", "PERMISSIVE"),
                              peer_authentication("details", "details", "DISABLE")])
    await mesh.control_plane(secure=True)
    client, reviews, ratings, details = await mesh.workloads(
        ("productpage-v1", labels("productpage")), ("reviews-v1", labels("reviews")),
        ("ratings-v1", labels("ratings")), ("details-v1", labels("details")))
    for w in (reviews, ratings, details):
        await mesh.wait_hosts(client.sidecar, outbound_cluster(w.name[:-3]), lambda h, w=w: h == {w.sidecar.endpoint},
                              "has its endpoint")
    out = client.sidecar.outbound_port

    async def via_mesh(host: str) -> Seen:
        async with client_session() as s:
            return await fetch(s, out, host)

    # STRICT: mTLS through the sidecars; plaintext straight to the inbound port is closed, never answered
    seen = await via_mesh("reviews:9080")
    assert (seen.status, seen.served_by) == (200, "reviews-v1") and f"URI={PRODUCTPAGE_ID}" in seen.xfcc, seen
    assert refused(await plaintext_direct(reviews.sidecar.inbound_port, "reviews:9080"))
    stats = await reviews.sidecar.stats()
    assert stats[f"listener.0.0.0.0_{reviews.sidecar.inbound_port}.no_filter_chain_match"] >= 1, stats
    # PERMISSIVE: the same inbound port serves mTLS (from the sidecar) and plaintext (a client without a cert)
    seen = await via_mesh("ratings:9080")
    assert (seen.status, seen.served_by) == (200, "ratings-v1") and f"URI={PRODUCTPAGE_ID}" in seen.xfcc, seen
    direct = await plaintext_direct(ratings.sidecar.inbound_port, "ratings:9080")
    assert (direct.status, direct.served_by, direct.xfcc) == (200, "ratings-v1", ""), direct
    # DISABLE: plaintext both ways; the client sidecar sends plaintext (no tlsMode on the endpoint), no XFCC
    seen = await via_mesh("details:9080")
    assert (seen.status, seen.served_by, seen.xfcc) == (200, "details-v1", ""), seen
    direct = await plaintext_direct(details.sidecar.inbound_port, "details:9080")
    assert (direct.status, direct.served_by) == (200, "details-v1"), direct

    # details STRICT, but PERMISSIVE on port 9080: portLevelMtls is keyed by the workload's port, the
    # Service's targetPort (here = its port, 9080), as in Istio; not by the sidecar's --app-port (the
    # demo app's real port on this shared host). Plaintext is served, and the client sidecar switches to mTLS
    app_port = 9080
    mesh.write("authn.yaml", [peer_authentication("reviews", "reviews", "STRICT"),
                              peer_authentication("ratings", "ratings", "PERMISSIVE"),
                              peer_authentication("details", "details", "STRICT", {app_port: "PERMISSIVE"})])
    # (the server side: PERMISSIVE on 9080 serves plaintext from a client without a certificate)
    direct = await eventually("details serves plaintext (port-level PERMISSIVE)",
                              lambda: plaintext_direct(details.sidecar.inbound_port, "details:9080"),
                              lambda s: s.status == 200)
    assert (direct.served_by, direct.xfcc) == ("details-v1", ""), direct
    assert (await via_mesh("details:9080")).status == 200
    # ... and without the port-level override, STRICT: plaintext refused, mTLS still served
    mesh.write("authn.yaml", [peer_authentication("reviews", "reviews", "STRICT"),
                              peer_authentication("ratings", "ratings", "PERMISSIVE"),
                              peer_authentication("details", "details", "STRICT")])
    await eventually("details refuses plaintext", lambda: plaintext_direct(details.sidecar.inbound_port,
                                                                           "details:9080"), refused)
    # the client side followed DISABLE -> STRICT: its EDS gave details tlsMode: istio again and its pool for that
    # host was replaced, so the call through the mesh is mTLS (XFCC) and succeeds
    seen = await eventually("the client sidecar talks mTLS to details again", lambda: via_mesh("details:9080"),
                            lambda s: s.status == 200 and f"URI={PRODUCTPAGE_ID}" in s.xfcc)
    assert seen.served_by == "details-v1"


# --- 4. bad peers -------------------------------------------------------------------------------------------

async def test_a_sidecar_of_another_ca_is_refused_by_a_strict_sidecar(mesh: Mesh, tmp_path):
    """A second mesh with its own plugged-in CA (`meshctl ca init --also-trust <our root>`: it trusts our
    root, so it accepts our server's certificate, but signs with its own) and a WorkloadEntry for reviews at
    our reviews sidecar's inbound port. Its productpage sidecar calls reviews over auto-mTLS: our STRICT
    sidecar refuses its certificate (listener ssl.fail_verify_error), and its app gets a 503."""
    mesh.write("services.yaml", [STRICT_MESH, service("productpage"), service("reviews")])
    await mesh.control_plane(secure=True)
    client, reviews = await mesh.workloads(("productpage-v1", labels("productpage")),
                                           ("reviews-v1", labels("reviews")))
    await mesh.wait_hosts(client.sidecar, outbound_cluster("reviews"), lambda h: h == {reviews.sidecar.endpoint},
                          "has reviews-v1")
    async with client_session() as s:
        assert (await fetch(s, client.sidecar.outbound_port, "reviews:9080")).status == 200

    other_ca = tmp_path / "other-cacerts"
    from tests.support.mesh import console_script
    import subprocess
    subprocess.run([*console_script("meshctl", "control.cli.meshctl"), "ca", "init", "--out", str(other_ca),
                    "--key-type", "ec-p256", "--also-trust", str(mesh.cp.root_cert)], check=True, capture_output=True)
    other = Mesh(tmp_path / "other")
    try:
        other.write("mesh.yaml", [ACCESS_LOG, STRICT_MESH, service("productpage"),
                                  {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
                                   "metadata": {"name": "reviews", "namespace": NAMESPACE},
                                   "spec": {"hosts": [fqdn("reviews")], "location": "MESH_INTERNAL",
                                            "resolution": "STATIC",
                                            "ports": [{"number": 9080, "name": "http", "protocol": "HTTP"}],
                                            "workloadSelector": {"labels": {"app": "reviews"}}}},
                                  {"apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
                                   "metadata": {"name": "reviews-elsewhere", "namespace": NAMESPACE},
                                   "spec": {"address": "127.0.0.1", "ports": {"http": reviews.sidecar.inbound_port},
                                            "serviceAccount": "bookinfo-reviews",
                                            "labels": {"app": "reviews", "security.istio.io/tlsMode": "istio"}}}])
        await other.control_plane(secure=True, extra_args=["--cacerts", str(other_ca)])
        (rogue,) = await other.workloads(("productpage-v1", labels("productpage")))
        cluster = outbound_cluster("reviews")
        await other.wait_hosts(rogue.sidecar, cluster, lambda h: h == {reviews.sidecar.endpoint}, "has reviews")
        listener = f"listener.0.0.0.0_{reviews.sidecar.inbound_port}.ssl"
        before = await reviews.sidecar.stats()
        async with client_session() as s:
            seen = await fetch(s, rogue.sidecar.outbound_port, "reviews:9080")
        # TLS 1.3: the client's handshake completes before the server refuses its certificate, so the client
        # sees the connection end (503 "connection termination", Envoy's UC), as with BoringSSL (docs/tls.md)
        assert seen.status == 503 and "upstream connect error" in seen.text, seen

        async def refused_counted() -> dict | None:
            stats = await reviews.sidecar.stats()
            return stats if stats[f"{listener}.fail_verify_error"] > before.get(f"{listener}.fail_verify_error", 0) \
                else None
        stats = await poll("reviews counts fail_verify_error", refused_counted)
        assert stats[f"{listener}.handshake"] == before[f"{listener}.handshake"]
        # the rogue verified OUR server (it trusts our root): its own side counts no verify failure
        rogue_stats = await rogue.sidecar.stats()
        assert rogue_stats.get(f"cluster.{cluster}.ssl.fail_verify_error", 0) == 0
        assert rogue_stats.get(f"cluster.{cluster}.ssl.fail_verify_san", 0) == 0
    finally:
        other.stop()
