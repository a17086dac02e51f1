"""Sidecar injection for docker-compose files: the compose counterpart of `istioctl kube-inject`.

Pure: a parsed compose document in, a new document out (`inject(doc, options)`); no files, no Docker. The CLI
(`meshctl inject`, control/cli/inject.py) reads, diffs and writes.

What Istio's injector does to a pod, done to a compose service S (a pod is one network namespace; compose gives
that with `network_mode: service:S`):

  S-sidecar   a `pyproxy sidecar` container in S's network namespace: it reaches the app on 127.0.0.1:<port>,
              listens on Istio's ports (15006 inbound, 15001 outbound, 15000 admin on loopback, 15090
              Prometheus), registers with the address the compose network gave the container, and follows the
              control plane's secure port (istiod:15012) with a certificate for
              spiffe://cluster.local/ns/<namespace>/sa/<service account>
  istio-token-<ns>-<sa>
              a volume per service account holding its token and the mesh root (Kubernetes mounts a projected
              token and the istio-ca-root-cert ConfigMap), mounted read-only into that account's sidecars only
  istio-tokens
              a one-shot service that writes every account's token (`meshctl token create`) once the control
              plane is healthy; sidecars start after it completed
  istiod      the control plane with its CA (state in the `istiod-ca` volume), the mesh's Istio YAML mounted
              from --mesh-config; added only when the file has no service of that name

Identity comes from the service's labels (Istio's `app`/`version`, and `mesh.pyproxy.io/namespace`,
`mesh.pyproxy.io/service-account`, `mesh.pyproxy.io/app-port`), else from the options, else defaults
(namespace `default`, service account = the service's name, app port = the first of `expose`/`ports`).
A service labelled `mesh.pyproxy.io/inject: "false"` is left alone (sidecar.istio.io/inject), as are the services
injection itself made. Injecting an injected file changes nothing.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

LABEL_PREFIX = "mesh.pyproxy.io/"
INJECT_LABEL = LABEL_PREFIX + "inject"
NAMESPACE_LABEL = LABEL_PREFIX + "namespace"
SERVICE_ACCOUNT_LABEL = LABEL_PREFIX + "service-account"
APP_PORT_LABEL = LABEL_PREFIX + "app-port"
SIDECAR_FOR_LABEL = LABEL_PREFIX + "sidecar-for"   # on an injected sidecar: the service whose namespace it shares
ROLE_LABEL = LABEL_PREFIX + "role"                  # on the services injection adds: control-plane, tokens

CONTROL_PLANE = "istiod"          # the serving certificate's name (control/ca/server.py SERVING_HOSTS)
TOKENS = "istio-tokens"
CA_VOLUME = "istiod-ca"
SECRETS = "/var/run/secrets/pyproxy"   # where a sidecar finds its token and root-cert.pem
CA_DIR = "/var/lib/istiod"
TOKEN_ROOT = "/var/run/tokens"         # in istio-tokens: <ns>/<sa>/ per account
# Istio's sidecar ports (docs/ops/deployment/application-requirements)
INBOUND, OUTBOUND, ADMIN, PROMETHEUS = 15006, 15001, 15000, 15090
SECURE_XDS, XDS, CONTROL_METRICS = 15012, 15010, 15014

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")  # a DNS-1123 label: namespaces and service accounts


class InjectError(ValueError):
    """Bad input, worded to name the service and the field."""


@dataclass(frozen=True, slots=True)
class InjectOptions:
    namespace: str = "default"
    service_account: str | None = None     # None: the service's own name
    image: str = "${PYPROXY_IMAGE:-pyproxy-mesh:local}"
    mesh_config: str = "./mesh"             # the Istio/Kubernetes YAML directory istiod watches


@dataclass(frozen=True, slots=True)
class Identity:
    service: str
    namespace: str
    service_account: str
    app: str
    version: str
    app_port: int

    @property
    def token_volume(self) -> str:
        return f"istio-token-{self.namespace}-{self.service_account}"

    @property
    def labels(self) -> str:
        return f"app={self.app},version={self.version}"


def _labels(name: str, service: dict[str, Any]) -> dict[str, str]:
    """Compose allows a map or a list of `k=v`; both become a dict of strings."""
    raw = service.get("labels") or {}
    if isinstance(raw, dict):
        return {str(k): "" if v is None else str(v) for k, v in raw.items()}
    if isinstance(raw, list):
        out = {}
        for item in raw:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    raise InjectError(f"service {name!r}: field 'labels' must be a map or a list, not {type(raw).__name__}")


def _port_number(name: str, field: str, value: Any) -> int:
    """`9080`, `"9080"`, `"8080:9080"`, `"127.0.0.1:8080:9080/tcp"`, `{target: 9080}` -> the container port."""
    if isinstance(value, dict):
        value = value.get("target")
    text = str(value).split("/")[0].rsplit(":", 1)[-1]
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise InjectError(f"service {name!r}: field {field!r}: {value!r} is not a port")
    return int(text)


def identity(name: str, service: dict[str, Any], options: InjectOptions) -> Identity:
    """Who the sidecar of service `name` is, from its labels, the options and the defaults."""
    labels = _labels(name, service)
    if APP_PORT_LABEL in labels:
        port = _port_number(name, f"labels.{APP_PORT_LABEL}", labels[APP_PORT_LABEL])
    else:
        candidates = list(service.get("expose") or []) + list(service.get("ports") or [])
        if not candidates:
            raise InjectError(f"service {name!r}: no app port: set field 'expose' (or 'ports', or label "
                              f"{APP_PORT_LABEL})")
        field = "expose" if service.get("expose") else "ports"
        port = _port_number(name, field, candidates[0])
    ident = Identity(service=name,
                     namespace=labels.get(NAMESPACE_LABEL) or options.namespace,
                     service_account=labels.get(SERVICE_ACCOUNT_LABEL) or options.service_account or name,
                     app=labels.get("app") or name, version=labels.get("version") or "v1", app_port=port)
    for field, value in (("namespace", ident.namespace), ("service account", ident.service_account)):
        if not _NAME.match(value):
            raise InjectError(f"service {name!r}: {field} {value!r} is not a DNS-1123 label "
                              f"(lowercase letters, digits, '-')")
    return ident


def sidecar(ident: Identity, options: InjectOptions) -> dict[str, Any]:
    """The sidecar service of one workload."""
    # `$$` is a literal `$` for compose: the shell asks for the container's own address at start.
    command = (f"exec pyproxy sidecar --control https://{CONTROL_PLANE}:{SECURE_XDS} "
               f"--ca-root {SECRETS}/root-cert.pem --token-file {SECRETS}/token "
               f"--name {ident.service} --namespace {ident.namespace} --service-account {ident.service_account} "
               f"--labels {ident.labels} --app-port {ident.app_port} --inbound-port {INBOUND} "
               f"--outbound-port {OUTBOUND} --admin-port {ADMIN} --prometheus-port {PROMETHEUS} "
               f"--ip \"$$(hostname -i | cut -d' ' -f1)\"")
    return {
        "image": options.image,
        "init": True,
        "network_mode": f"service:{ident.service}",
        "depends_on": {ident.service: {"condition": "service_started"},
                       CONTROL_PLANE: {"condition": "service_healthy"},
                       TOKENS: {"condition": "service_completed_successfully"}},
        "labels": {SIDECAR_FOR_LABEL: ident.service},
        "volumes": [f"{ident.token_volume}:{SECRETS}:ro"],
        "command": ["sh", "-c", command],
        "healthcheck": _ready_check(ADMIN, "/ready"),
    }


def _ready_check(port: int, path: str) -> dict[str, Any]:
    return {"test": ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen("
                                            f"'http://127.0.0.1:{port}{path}', timeout=2)"],
            "interval": "2s", "timeout": "3s", "retries": 60}


def control_plane(options: InjectOptions) -> dict[str, Any]:
    """istiod: xDS (plaintext read-only for meshctl, secure for proxies), its CA, the mesh YAML it watches."""
    return {
        "image": options.image,
        "init": True,
        "labels": {ROLE_LABEL: "control-plane"},
        "command": ["pyproxy-control", "serve", "--config-dir", "/etc/pyproxy/mesh", "--host", "0.0.0.0",
                    "--xds-port", str(XDS), "--secure-port", str(SECURE_XDS), "--ca-dir", CA_DIR,
                    "--plaintext-xds", "read-only", "--metrics-port", str(CONTROL_METRICS), "--grace", "5"],
        "volumes": [f"{CA_VOLUME}:{CA_DIR}", f"{options.mesh_config}:/etc/pyproxy/mesh:ro"],
        # the metrics port is bound last: once it answers, the CA has written root-cert.pem
        "healthcheck": _ready_check(CONTROL_METRICS, "/ready"),
    }


# Every /var/run/tokens/<ns>/<sa> directory gets that account's token and the mesh root.
_TOKENS_SCRIPT = (f"set -e; for d in {TOKEN_ROOT}/*/*; do ns=$$(basename $$(dirname $$d)); sa=$$(basename $$d); "
                  f"meshctl token create -n $$ns --service-account $$sa --ca-dir {CA_DIR} -o $$d/token; "
                  f"cp {CA_DIR}/root-cert.pem $$d/root-cert.pem; done")


def token_mount(namespace: str, service_account: str) -> str:
    return f"istio-token-{namespace}-{service_account}:{TOKEN_ROOT}/{namespace}/{service_account}"


def tokens(options: InjectOptions, mounts: list[str]) -> dict[str, Any]:
    return {
        "image": options.image,
        "labels": {ROLE_LABEL: "tokens"},
        "depends_on": {CONTROL_PLANE: {"condition": "service_healthy"}},
        "command": ["sh", "-c", _TOKENS_SCRIPT],
        "volumes": [f"{CA_VOLUME}:{CA_DIR}:ro", *mounts],
    }


def _networks(apps: list[dict[str, Any]]) -> list[str]:
    """Every network the apps join (compose allows a list or a map), in first-seen order."""
    out: list[str] = []
    for app in apps:
        for net in app.get("networks") or []:
            if net not in out:
                out.append(net)
    return out


def _is_generated(service: dict[str, Any]) -> bool:
    labels = service.get("labels")
    return isinstance(labels, dict) and (SIDECAR_FOR_LABEL in labels or ROLE_LABEL in labels)


def inject(doc: Any, options: InjectOptions = InjectOptions()) -> dict[str, Any]:
    """A new compose document with a sidecar for every service that should have one (the input is not changed)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict) or not doc["services"]:
        raise InjectError("not a compose file: no 'services' map")
    out = copy.deepcopy(doc)
    services: dict[str, Any] = out["services"]
    identities = []
    for name, service in doc["services"].items():
        if not isinstance(service, dict):
            raise InjectError(f"service {name!r}: must be a map, not {type(service).__name__}")
        if _is_generated(service) or name in (CONTROL_PLANE, TOKENS):
            continue
        if _labels(name, service).get(INJECT_LABEL, "true").lower() == "false":
            continue
        if "network_mode" in service:
            raise InjectError(f"service {name!r}: field 'network_mode' is set ({service['network_mode']!r}): a "
                              f"sidecar needs the service's own network namespace (label {INJECT_LABEL}: "
                              f"\"false\" skips it)")
        sidecar_name = f"{name}-sidecar"
        existing = doc["services"].get(sidecar_name)
        if existing is not None and not _is_generated(existing):
            raise InjectError(f"service {name!r}: its sidecar's name {sidecar_name!r} is taken by another service")
        identities.append(identity(name, service, options))
    for ident in identities:
        services[f"{ident.service}-sidecar"] = sidecar(ident, options)
    if CONTROL_PLANE not in services:
        services[CONTROL_PLANE] = control_plane(options)
        networks = _networks([doc["services"][i.service] for i in identities])
        if networks:  # the apps' own networks, so their sidecars reach it (none: compose's default network)
            services[CONTROL_PLANE]["networks"] = networks
    have = list((services.get(TOKENS) or {}).get("volumes") or [])
    mounts = [m for m in have if str(m).startswith("istio-token-")]  # `istio-token-<ns>-<sa>:<dir>`
    for ident in identities:
        mount = token_mount(ident.namespace, ident.service_account)
        if mount not in mounts:
            mounts.append(mount)
    if TOKENS in services:
        services[TOKENS] = {**services[TOKENS], "volumes": [*(m for m in have if m not in mounts), *mounts]}
    else:
        services[TOKENS] = tokens(options, mounts)
    volumes = out.get("volumes") or {}
    for volume in [CA_VOLUME, *(m.split(":", 1)[0] for m in mounts)]:
        volumes.setdefault(volume, {})
    out["volumes"] = volumes
    return out
