"""Clock and randomness sources. Today time and randomness are injected directly: `ProxyServer(rng=...)`,
`OutlierDetector(clock=...)`, the event loop's timers; this package is where a shared `Clock` will live."""
