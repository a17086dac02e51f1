"""Listener-level work (TLS termination, protocol detection, filter-chain selection): not built yet.
Today a listener is bound and accepted in `pyproxy.server.ListenerRuntime`, with one HTTP filter chain."""
