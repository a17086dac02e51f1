"""TCP proxying: the `envoy.filters.network.tcp_proxy` network filter.

`logic` holds the decisions (which cluster, whether to try another host, what a FIN or a close does to the
other side), `proxy` the asyncio shell that moves the bytes. The listener's `ChainAcceptor`
(`pyproxy.listener.accept`) hands a chain's connection here instead of to an HTTP connection manager: raw bytes
(plaintext, or TLS passed through unchanged when the chain has no DownstreamTlsContext), or the decrypted stream
of a TLS-terminating chain.
"""
