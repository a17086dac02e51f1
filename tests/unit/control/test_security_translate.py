"""Security translation, rule by rule: PeerAuthentication resolution (table), auto-mTLS decisions, Secrets
(credentialName) and the security analyzers (IST0161, IST0138, PYM0009), each with a positive and a negative
case. The goldens (tests/golden/mtls-*, auto-mtls, gateway-tls-credentials) show whole outputs."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from control.analyze import analyze
from control.istio.load import load_text
from control.mesh import build_mesh
from control.translate import authn, credentials
from control.translate.authn import MtlsMode

SECRETS = (Path(__file__).resolve().parents[2] / "fixtures" / "tls" / "secrets.yaml").read_text()

WORKLOAD = """
apiVersion: v1
kind: Service
metadata: {name: app, namespace: shop}
spec: {selector: {app: app}, ports: [{name: http, port: 8080}, {name: http-b, port: 9080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: app-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app, security.istio.io/tlsMode: istio}}
    spec: {containers: [{name: a, image: a}]}
"""


def pa(name: str, namespace: str, body: str) -> str:
    return (f"---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\n"
            f"metadata: {{name: {name}, namespace: {namespace}}}\nspec: {body}\n")


def mesh_of(text: str, strict: bool = False):
    result = load_text(textwrap.dedent(text), "mesh.yaml", strict=strict)
    assert [str(f) for f in result.findings if f.level.label == "Error"] == []
    return build_mesh(result.resources), result


MESH_STRICT = pa("default", "istio-system", "{mtls: {mode: STRICT}}")
NS_DISABLE = pa("default", "shop", "{mtls: {mode: DISABLE}}")
NS_UNSET = pa("default", "shop", "{mtls: {mode: UNSET}}")
WL_PERMISSIVE_9080_STRICT = pa("app", "shop", "{selector: {matchLabels: {app: app}}, mtls: {mode: PERMISSIVE}, "
                                             "portLevelMtls: {9080: {mode: STRICT}}}")
WL_PORT_UNSET = pa("app", "shop", "{selector: {matchLabels: {app: app}}, portLevelMtls: {9080: {mode: UNSET}}}")
WL_OTHER = pa("other", "shop", "{selector: {matchLabels: {app: other}}, mtls: {mode: STRICT}}")
ROOT_SELECTOR = pa("root-sel", "istio-system", "{selector: {matchLabels: {app: app}}, mtls: {mode: DISABLE}}")


@pytest.mark.parametrize("policies, port, expected", [
    ("", 8080, MtlsMode.PERMISSIVE),  # no policy: istiod's default
    (MESH_STRICT, 8080, MtlsMode.STRICT),  # mesh-wide (root namespace, no selector)
    (MESH_STRICT + NS_DISABLE, 8080, MtlsMode.DISABLE),  # namespace beats mesh
    (MESH_STRICT + NS_UNSET, 8080, MtlsMode.STRICT),  # UNSET inherits from the mesh
    (NS_DISABLE + WL_PERMISSIVE_9080_STRICT, 8080, MtlsMode.PERMISSIVE),  # workload beats namespace
    (NS_DISABLE + WL_PERMISSIVE_9080_STRICT, 9080, MtlsMode.STRICT),  # portLevelMtls beats workload
    (MESH_STRICT + WL_PORT_UNSET, 9080, MtlsMode.STRICT),  # UNSET port inherits the workload result
    (NS_DISABLE + WL_OTHER, 8080, MtlsMode.DISABLE),  # a selector for other workloads does not apply
    (MESH_STRICT + ROOT_SELECTOR, 8080, MtlsMode.STRICT),  # selector policies in the root namespace are ignored
])
def test_effective_mtls_precedence_mesh_namespace_workload_port(policies, port, expected):
    mesh, _ = mesh_of(WORKLOAD + policies)
    assert authn.effective_mtls(mesh, mesh.workload("app-v1"), port) == expected


@pytest.mark.parametrize("policies, expected", [
    ("", MtlsMode.PERMISSIVE), (MESH_STRICT, MtlsMode.STRICT), (MESH_STRICT + NS_DISABLE, MtlsMode.DISABLE),
    (WL_PERMISSIVE_9080_STRICT, MtlsMode.PERMISSIVE),  # workload policies are not looked at on the client side
])
def test_service_mtls_mode_is_istiods_best_effort_namespace_inference(policies, expected):
    mesh, _ = mesh_of(WORKLOAD + policies)
    assert authn.service_mtls_mode(mesh, mesh.service("app.shop.svc.cluster.local")) == expected


@pytest.mark.parametrize("policies, auto_mtls, expect_matches", [
    ("", True, True), (NS_DISABLE, True, False), (MESH_STRICT, True, True), ("", False, False)])
def test_auto_mtls_cluster_and_endpoint_metadata(policies, auto_mtls, expect_matches):
    from control.translate import render_sidecar
    operator = ("---\napiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\n"
                "spec: {meshConfig: {enableAutoMtls: false}}\n") if not auto_mtls else ""
    mesh, _ = mesh_of(WORKLOAD + policies + operator)
    rendered = render_sidecar(mesh, "app-v1")
    cluster = next(c for c in rendered.clusters if c["name"] == "outbound|8080||app.shop.svc.cluster.local")
    assert ("transport_socket_matches" in cluster) == expect_matches
    if expect_matches:
        assert [m["name"] for m in cluster["transport_socket_matches"]] == ["tlsMode-istio", "tlsMode-disabled"]
        assert cluster["transport_socket_matches"][0]["match"] == {"tlsMode": "istio"}
    (ep,) = [lb for e in rendered.endpoints if e["cluster_name"] == cluster["name"]
             for g in e["endpoints"] for lb in g["lb_endpoints"]]
    # the endpoint keeps its tlsMode unless PeerAuthentication DISABLEs mTLS on it (istiod's mtlsChecker)
    assert ep["metadata"]["filter_metadata"].get("envoy.transport_socket_match") == (
        None if policies == NS_DISABLE else {"tlsMode": "istio"})


@pytest.mark.parametrize("tls, metadata", [
    ("{mode: DISABLE}", None), ("{mode: SIMPLE}", None), ("{}", None),  # a DestinationRule tls says plaintext/own TLS
    ("{mode: ISTIO_MUTUAL}", {"tlsMode": "istio"}),
])
def test_a_destination_rules_tls_decides_the_endpoints_tls_mode(tls, metadata):
    """istiod's mtlsChecker: when the cluster's DestinationRule sets `tls`, its mode alone decides whether the
    endpoints carry `tlsMode: istio` (ISTIO_MUTUAL) or not (anything else), whatever PeerAuthentication says."""
    from control.translate import render_sidecar
    rule = ("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: app, namespace: shop}\n"
            f"spec: {{host: app.shop.svc.cluster.local, trafficPolicy: {{tls: {tls}}}}}\n")
    mesh, _ = mesh_of(WORKLOAD + MESH_STRICT + rule)
    rendered = render_sidecar(mesh, "app-v1")
    (ep,) = [lb for e in rendered.endpoints if e["cluster_name"] == "outbound|8080||app.shop.svc.cluster.local"
             for g in e["endpoints"] for lb in g["lb_endpoints"]]
    assert ep["metadata"]["filter_metadata"].get("envoy.transport_socket_match") == metadata


# --- Secrets -----------------------------------------------------------------------------------------------

def test_secret_is_loaded_and_never_printed():
    _, result = mesh_of(SECRETS)
    secret = next(r for r in result.resources if r.name == "shop-cert")
    assert "tls.key" in secret.spec["data"]
    assert "LS0t" not in repr(secret) and "<redacted>" in repr(secret)
    cred = credentials.credential(result.resources, "shop-cert", "istio-system", cert=True, ca=True)
    assert cred.cert.startswith(b"-----BEGIN CERTIFICATE-----") and b"PRIVATE KEY" in cred.key
    assert cred.ca.startswith(b"-----BEGIN CERTIFICATE-----")  # from shop-cert-cacert
    assert repr(cred) == "Credential('shop-cert', has=cert+key+ca)"


@pytest.mark.parametrize("name, namespace, error", [
    ("missing", "istio-system", "Secret istio-system/missing not found"),
    ("broken-cert", "istio-system", "didn't have expected keys (cert and key) or (tls.crt and tls.key); found: ca.crt"),
    ("shop-cert", "default", "Secret default/shop-cert not found"),  # looked up in the proxy's namespace only
])
def test_unusable_credentials_name_the_secret_and_its_keys_never_the_data(name, namespace, error):
    _, result = mesh_of(SECRETS)
    with pytest.raises(credentials.CredentialError) as err:
        credentials.credential(result.resources, name, namespace, cert=True, ca=False)
    assert error in str(err.value) and "LS0t" not in str(err.value)


# --- analyzers ----------------------------------------------------------------------------------------------

GATEWAY_WORKLOAD = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  template:
    metadata: {labels: {istio: ingressgateway}}
    spec: {containers: [{name: g, image: g}]}
"""


def gateway(name: str, credential: str, host: str = "shop.example.com") -> str:
    return (f"---\napiVersion: networking.istio.io/v1\nkind: Gateway\n"
            f"metadata: {{name: {name}, namespace: istio-system}}\n"
            f"spec:\n  selector: {{istio: ingressgateway}}\n  servers:\n"
            f"  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{host}]\n"
            f"    tls: {{mode: SIMPLE, credentialName: {credential}}}\n")


def findings(text: str):
    _, result = mesh_of(text, strict=True)
    return [(f.code, f.message) for f in analyze(result.resources) if f.code in ("IST0101", "IST0161", "IST0138",
                                                                                 "PYM0009")]


@pytest.mark.parametrize("credential, expected", [
    ("shop-cert", []),
    ("broken-cert", [("IST0161", "The credential referenced by the Gateway gw in namespace istio-system is "
                                "invalid, which can cause the traffic not to work as expected.")]),
    ("nowhere", [("IST0101", 'Referenced credentialName not found: "nowhere"')]),  # gateway/secret.go
])
def test_ist0161_invalid_gateway_credential(credential, expected):
    assert findings(GATEWAY_WORKLOAD + "---\n" + SECRETS + gateway("gw", credential)) == expected


@pytest.mark.parametrize("second, expected", [
    ("shop-cert", [("IST0138", "Duplicate certificate in multiple gateways [istio-system/a istio-system/b] may "
                               "cause 404s if clients re-use HTTP2 connections."),
                   ("IST0138", "Duplicate certificate in multiple gateways [istio-system/b istio-system/a] may "
                               "cause 404s if clients re-use HTTP2 connections.")]),
    ("other-cert", []),
])
def test_ist0138_gateway_duplicate_certificate(second, expected):
    text = (GATEWAY_WORKLOAD + "---\n" + SECRETS.replace("name: broken-cert", f"name: {second}-x")
            + gateway("a", "shop-cert") + gateway("b", second, "api.example.com"))
    found = [f for f in findings(text) if f[0] == "IST0138"]
    assert sorted(found) == sorted(expected)


def dr(mode: str) -> str:
    return ("---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: app, namespace: shop}\n"
            f"spec: {{host: app, trafficPolicy: {{tls: {{mode: {mode}}}}}}}\n")


@pytest.mark.parametrize("policies, mode, expected", [
    (MESH_STRICT, "DISABLE", ["PYM0009", "PYM0009"]),  # both service ports
    (WL_PERMISSIVE_9080_STRICT, "SIMPLE", ["PYM0009"]),  # only 9080 is STRICT
    (MESH_STRICT, "ISTIO_MUTUAL", []),
    (NS_DISABLE, "DISABLE", []),
])
def test_pym0009_plaintext_to_a_strict_workload(policies, mode, expected):
    found = findings(WORKLOAD + policies + dr(mode))
    assert [code for code, _ in found] == expected
    if expected:
        assert "DestinationRule shop/app sends" in found[0][1] and "is STRICT" in found[0][1]


def test_a_port_level_key_that_is_not_a_number_is_skipped_not_the_rest():
    from control.mesh import build_mesh as _build
    bad = pa("app", "shop", "{selector: {matchLabels: {app: app}}, portLevelMtls: {http: {mode: DISABLE}, "
                            "9080: {mode: STRICT}}}")
    result = load_text(textwrap.dedent(WORKLOAD) + bad, "mesh.yaml", keep_invalid=True)
    mesh = _build(result.resources)
    assert authn.effective_mtls(mesh, mesh.workload("app-v1"), 9080) == MtlsMode.STRICT
