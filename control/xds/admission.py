"""Who may register as an endpoint: the decision for one DiscoveryRequest's node, given who the caller proved to be.

A proxy that sends DiscoveryRequests gets config; a proxy that *registers* also joins the EDS of every
service whose selector its labels match, so it receives that service's traffic. Registration therefore
needs an identity: istiod rejects an xDS connection whose authenticated identity (the SPIFFE URI of its
client certificate or token, `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`) does not match the namespace and
service account its node metadata claims (`checkConnectionIdentity` in istio/istio pilot/pkg/xds/ads.go).

* Authenticated callers (the TLS xDS port, once it exists): a node registers only as the identity it
  authenticated as: `node.namespace` and `node.metadata.SERVICE_ACCOUNT` must equal the identity's. A node
  that leaves SERVICE_ACCOUNT empty is refused too (it would be filled from the file workload of its name,
  i.e. a service account it never proved).
* Unauthenticated callers (the plaintext xDS port): whether they may register at all is the port's policy,
  `--plaintext-xds` (`PlaintextXds`): `on` (today's demo behaviour: anyone on the host can register),
  `read-only` (config is served, nobody registers), `off` (the port is not bound).

`admit` is pure: facts in, an `Admission` out; the xDS server (control.xds.server) asks it per request and
control.serve keeps a read-only proxy out of every service's endpoints.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from control.xds.node import ProxyNode


class PlaintextXds(enum.Enum):
    """The plaintext xDS port's policy (`pyproxy-control serve --plaintext-xds`)."""

    ON = "on"  # served; any caller may register (the demo; no identity exists yet)
    READ_ONLY = "read-only"  # served; no caller registers (config only, no endpoints)
    OFF = "off"  # not bound

    @property
    def anonymous_may_register(self) -> bool:
        return self is PlaintextXds.ON


class Identity(Protocol):
    """An authenticated workload identity (a SPIFFE id's parts), e.g. the CA's peer identity."""

    trust_domain: str
    namespace: str
    service_account: str


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a request's node joins the endpoints of the services it matches; `reason` says why not."""

    register: bool
    reason: str = ""


def admit(node: ProxyNode, identity: Identity | None, *, anonymous_may_register: bool,
          trust_domain: str | None = None) -> Admission:
    """May `node` register, the caller having authenticated as `identity` (None: not authenticated)?"""
    if identity is None:
        if anonymous_may_register:
            return Admission(True)
        return Admission(False, "unauthenticated (plaintext xDS is read-only): config is served, "
                                "the proxy is not registered as an endpoint")
    claimed = f"{node.namespace}/{node.service_account or '<none>'}"
    proved = f"{identity.namespace}/{identity.service_account}"
    if trust_domain is not None and identity.trust_domain != trust_domain:
        return Admission(False, f"identity trust domain {identity.trust_domain!r} is not the mesh's "
                                f"{trust_domain!r}")
    if node.namespace != identity.namespace or node.service_account != identity.service_account:
        return Admission(False, f"node claims namespace/service account {claimed} but authenticated as {proved} "
                                "(node.metadata.NAMESPACE and SERVICE_ACCOUNT must match the identity)")
    return Admission(True)
