"""Listener-level work between accept() and the HTTP connection manager: filter-chain selection
(`chain_match`, pure), tls_inspector / http_inspector (`client_hello`, pure) and the accept path that runs
them and terminates TLS (`accept`). A listener with one plaintext chain skips all of it
(`pyproxy.server.ListenerRuntime`). See docs/tls.md."""
