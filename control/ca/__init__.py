"""Citadel (the certificate authority: CSR signing into SPIFFE certificates, rotation): not built yet."""
