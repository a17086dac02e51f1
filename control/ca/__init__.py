"""Citadel, the mesh CA: signs workload CSRs into SPIFFE certificates for callers authenticated by a
service-account token or their current certificate (docs/security.md). authority.py, tokens.py and authn.py
are pure; store.py (files) and server.py (the CreateCertificate endpoint and 15012's TLS context) are the shell."""
