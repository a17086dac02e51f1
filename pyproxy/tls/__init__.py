"""mTLS contexts and SPIFFE peer identity: not built yet. pyproxy rejects configs asking for TLS
(`pyproxy.server.validate_snapshot`) rather than serving them in plaintext."""
