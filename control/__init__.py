"""control: the control plane (≈ istiod: Galley + Pilot + Citadel).

Dependency rule: `control` may import `pyproxy.config` (the Envoy model both planes share); nothing in
`pyproxy` imports `control`.
"""
