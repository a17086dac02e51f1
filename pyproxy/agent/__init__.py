"""`pyproxy agent` (the istio-agent analogue) for real Envoy sidecars: bootstrap, SDS server, status server."""

import os as _os

# The agent forks once, to exec Envoy (pyproxy.agent.run), while its gRPC SDS server runs. grpcio's fork support
# (pthread_atfork handlers) is for children that keep using gRPC; ours exec at once, and with the handlers on, a
# fork while gRPC threads were busy once left the agent's poller on a closed epoll fd ("epoll_wait error: Bad file
# descriptor", exit 250). Off before grpc is first imported (gRPC's documented switch).
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

