"""`pyproxy agent` (the istio-agent analogue) for real Envoy sidecars: bootstrap, SDS server, status server."""
