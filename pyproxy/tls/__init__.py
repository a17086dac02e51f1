"""Workload identity on the sidecar side: SPIFFE ids from peer certificates (identity.py), mTLS contexts
(contexts.py) and the certificate agent that gets and renews the workload certificate from the CA (agent.py).
The listeners do not terminate or originate TLS yet: pyproxy still rejects configs asking for TLS
(`pyproxy.server.validate_snapshot`) rather than serving them in plaintext."""
