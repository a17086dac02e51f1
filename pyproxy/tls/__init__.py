"""TLS and workload identity: transport sockets (`transport_socket`: Envoy's UpstreamTlsContext /
DownstreamTlsContext -> ssl.SSLContext, with SDS secrets from `secrets`), what a handshake exposes (`session`:
peer identity, XFCC, SAN matchers), SPIFFE ids (`identity`), mTLS contexts for the CA (`contexts`) and the
certificate agent (`agent`). See docs/tls.md."""
