"""pyproxy: the data plane (≈ the Envoy sidecar / gateway), configured with a subset of Envoy's v3 API."""

__version__ = "0.1.0"
