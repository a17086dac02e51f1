"""meshConfig `accessLogFile` / `accessLogEncoding` / `accessLogFormat` -> an Envoy file access log.

istiod (pilot/pkg/networking/core/accesslog.go, model/telemetry_logging.go): when `accessLogFile` is set, every
listener's tcp_proxy and HTTP connection manager gets `envoy.access_loggers.file` with that `path`; TEXT logs
use `accessLogFormat` (a newline added when missing) or Istio's `EnvoyTextLogFormat`, JSON logs the keys of
`accessLogFormat` (a JSON object) or Istio's default labels. Here only tcp_proxy filters get it (this issue's
L4 traffic); the connection managers' logs come with the telemetry issue (their note says so).
"""
from __future__ import annotations

import json

from control.translate.common import Proxy

FILE_ACCESS_LOG = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"

ISTIO_TEXT_FORMAT = (  # EnvoyTextLogFormat
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    '%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "%UPSTREAM_TRANSPORT_FAILURE_REASON%" '
    '%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" '
    '"%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% '
    '%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% '
    '%ROUTE_NAME%\n')

ISTIO_JSON_LABELS = {  # EnvoyJSONLogFormatIstio
    "start_time": "%START_TIME%", "method": "%REQ(:METHOD)%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%", "response_code": "%RESPONSE_CODE%", "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    "bytes_received": "%BYTES_RECEIVED%", "bytes_sent": "%BYTES_SENT%", "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%", "request_id": "%REQ(X-REQUEST-ID)%", "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%", "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%", "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%", "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "route_name": "%ROUTE_NAME%",
}


def log_format(encoding: str, fmt: str) -> dict:
    """The file logger's `log_format` for meshConfig's encoding and format (istiod fileAccessLogFormat)."""
    if encoding.upper() == "JSON":
        labels = ISTIO_JSON_LABELS
        if fmt:
            try:
                parsed = json.loads(fmt)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):  # istiod falls back to its labels when the format is not an object
                labels = {str(k): str(v) for k, v in parsed.items()}
        return {"json_format": dict(labels)}
    text = fmt if fmt else ISTIO_TEXT_FORMAT
    if not text.endswith("\n"):
        text += "\n"
    return {"text_format_source": {"inline_string": text}}


def mesh_access_logs(proxy: Proxy) -> list[dict]:
    """`access_log` entries for a tcp_proxy from meshConfig ([] when `accessLogFile` is empty)."""
    config = proxy.mesh.config
    if not config.access_log_file:
        return []
    return [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": FILE_ACCESS_LOG, "path": config.access_log_file,
        "log_format": log_format(config.access_log_encoding, config.access_log_format)}}]
