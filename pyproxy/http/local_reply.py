"""Responses the proxy writes itself ("local replies"), with Envoy's bodies and details.

When Envoy cannot or will not forward a request it answers with a short text/plain body, sets
`response_code_details` (visible in the access log as %RESPONSE_CODE_DETAILS%) and a response flag. The
strings below are Envoy's, so scripts written against Envoy's errors work unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..observe.stream_info import ResponseFlag as F


@dataclass(frozen=True, slots=True)
class LocalReply:
    status: int
    body: str
    details: str  # Envoy's response_code_details
    flag: int = 0  # Envoy's response flag (a ResponseFlag bit)


RESET_PREFIX = "upstream connect error or disconnect/reset before headers. reset reason: "


def upstream_reset(reason: str, flag: int, details: str) -> LocalReply:
    return LocalReply(503, RESET_PREFIX + reason, details, flag)


def retried(reply: LocalReply) -> LocalReply:
    """The same reset after retries: Envoy 1.40 says `retried and the latest reset reason: <reason>`
    (tests/differential row retry-reset)."""
    reason = reply.body[len(RESET_PREFIX):]
    return LocalReply(reply.status, "upstream connect error or disconnect/reset before headers. retried and the "
                      f"latest reset reason: {reason}", reply.details, reply.flag)


NO_ROUTE = LocalReply(404, "", "route_not_found", F.NR)
NO_CLUSTER = LocalReply(503, "", "cluster_not_found", F.NC)
NO_HEALTHY_UPSTREAM = LocalReply(503, "no healthy upstream", "no_healthy_upstream", F.UH)
# details as Envoy 1.40 logs them (tests/differential access-log comparison)
UPSTREAM_TIMEOUT = LocalReply(504, "upstream request timeout", "response_timeout", F.UT)
PER_TRY_TIMEOUT = LocalReply(504, "upstream request timeout", "upstream_per_try_timeout", F.UT)
CONNECT_FAILURE = upstream_reset("connection failure", F.UF, "upstream_reset_before_response_started{connection_failure}")
CONNECT_TIMEOUT = upstream_reset("connection timeout", F.UF, "upstream_reset_before_response_started{connection_timeout}")


def tls_connect_failure(transport_failure_reason: str) -> LocalReply:
    """The upstream TLS handshake failed. Envoy 1.40 (checked in tests/oracle): body `... reset reason: remote
    connection failure` (the TLS text is not in the body), details `upstream_reset_before_response_started{
    remote_connection_failure|<reason, spaces as _>}`, flag UF."""
    reason = transport_failure_reason.replace(" ", "_")
    return upstream_reset("remote connection failure", F.UF,
                          f"upstream_reset_before_response_started{{remote_connection_failure|{reason}}}")


CONNECTION_TERMINATION = upstream_reset(
    "connection termination", F.UC, "upstream_reset_before_response_started{connection_termination}"
)
# Envoy 1.40 answers an upstream protocol error before the response with 502 (checked against Envoy: tests/oracle)
UPSTREAM_PROTOCOL_ERROR = LocalReply(
    502, "upstream connect error or disconnect/reset before headers. reset reason: protocol error",
    "upstream_reset_before_response_started{protocol_error}", F.UPE
)
OVERFLOW = LocalReply(503, "upstream connect error or disconnect/reset before headers. reset reason: overflow",
                      "upstream_reset_before_response_started{overflow}", F.UO)
# Codec-level rejections (flag DPE: downstream protocol error)
BAD_REQUEST = LocalReply(400, "Bad Request", "http1.codec_error", F.DPE)
HEADERS_TOO_LARGE = LocalReply(431, "Request Header Fields Too Large", "http1.headers_too_large", F.DPE)
TOO_MANY_HEADERS = LocalReply(431, "Request Header Fields Too Large", "http1.too_many_headers", F.DPE)
CONTENT_LENGTH_AND_CHUNKED = LocalReply(400, "Bad Request", "http1.content_length_and_chunked_not_allowed", F.DPE)
UNEXPECTED_UNDERSCORE = LocalReply(400, "Bad Request", "http1.unexpected_underscore", F.DPE)
ABSOLUTE_PATH_REJECTED = LocalReply(404, "", "absolute_path_rejected", 0)
HTTP10_DISABLED = LocalReply(426, "Upgrade Required", "low_version", F.DPE)
INVALID_TRANSFER_ENCODING = LocalReply(501, "Not Implemented", "http1.invalid_transfer_encoding", F.DPE)
PATH_NORMALIZATION_FAILED = LocalReply(400, "", "path_normalization_failed", 0)
PATH_REDIRECT = LocalReply(307, "", "path_normalization_failed", 0)  # sic: Envoy 1.40's details for the redirect
UPGRADE_FAILED = LocalReply(403, "", "upgrade_failed", 0)
MISSING_HOST = LocalReply(400, "", "missing_host_header", 0)  # Envoy: an empty body, no flag
