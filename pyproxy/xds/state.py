"""The proxy's side of xDS bookkeeping: what it holds per type, and what its next request says. No I/O.

Envoy's protocol: a DiscoveryRequest carries the `version_info` the proxy *holds* for the type and the
`response_nonce` of the response it is answering. Same nonce with no `error_detail` = ACK (applied);
with `error_detail` = NACK (rejected; `version_info` stays the last version applied). The first request
has neither. The control plane decides from this what to send next (control/xds/cache.py).

`XdsState` keeps, per type: the accepted resources (decoded model objects), the version held, the last
nonce seen, and a pending NACK message. `next_request(type)` builds the JSON body; `accepted`/`rejected`
record the outcome of applying a response.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
EDS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
LDS = "type.googleapis.com/envoy.config.listener.v3.Listener"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
# ADS order: the control plane answers in this order; the REST paths are /v3/discovery:<path>
TYPES = (("clusters", CDS), ("endpoints", EDS), ("listeners", LDS), ("routes", RDS))
SHORT = {CDS: "cds", EDS: "eds", LDS: "lds", RDS: "rds"}


@dataclass
class TypeState:
    version: str = ""  # the version applied (held)
    nonce: str = ""  # the nonce of the last response received
    error: str | None = None  # set after a NACK, sent with the next request, then cleared
    resources: dict[str, Any] = field(default_factory=dict)  # name -> decoded model object
    responses: int = 0
    rejects: int = 0


class XdsState:
    def __init__(self, node: dict[str, Any]):
        self.node = node
        self.types = {url: TypeState() for _, url in TYPES}

    def next_request(self, type_url: str, resource_names: list[str] | None = None) -> dict[str, Any]:
        st = self.types[type_url]
        body: dict[str, Any] = {"node": self.node, "type_url": type_url, "version_info": st.version,
                                "response_nonce": st.nonce, "resource_names": resource_names or []}
        if st.error is not None:
            body["error_detail"] = {"code": 3, "message": st.error}  # 3 = INVALID_ARGUMENT
        return body

    def received(self, type_url: str, nonce: str) -> None:
        st = self.types[type_url]
        st.nonce = nonce
        st.responses += 1

    def accepted(self, type_url: str, version: str, resources: dict[str, Any]) -> None:
        st = self.types[type_url]
        st.version = version
        st.resources = resources
        st.error = None

    def rejected(self, type_url: str, message: str) -> None:
        st = self.types[type_url]
        st.error = message
        st.rejects += 1

    def request_sent(self, type_url: str) -> None:
        """The NACK (if any) went out with the request: do not repeat it."""
        self.types[type_url].error = None

    def resources(self, type_url: str) -> dict[str, Any]:
        return self.types[type_url].resources

    def describe(self) -> dict[str, Any]:
        return {SHORT[url]: {"version": st.version, "nonce": st.nonce, "responses": st.responses,
                             "rejects": st.rejects} for url, st in self.types.items()}
