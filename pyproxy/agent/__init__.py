"""`pyproxy agent` pieces (istio-agent / pilot-agent analogue) for real Envoy sidecars: the bootstrap so far."""
