"""benchmarks/request_path_bench.py measures the real request path: the bytes it sends both ways are checked."""
from __future__ import annotations

import re

from benchmarks import request_path_bench as bench


async def test_the_in_process_bench_proxies_each_request_upstream_and_answers_the_client():
    per_request, sent, answered = await bench.measure(50, runs=2, warmup=10, freeze=False)
    assert len(per_request) == 2 and all(t > 0 for t in per_request)
    head = sent.decode("latin-1").split("\r\n")
    assert head[0] == "GET / HTTP/1.1"
    assert "host: 127.0.0.1:8000" in head and "x-forwarded-proto: http" in head
    assert "x-envoy-expected-rq-timeout-ms: 15000" in head
    rid = [line for line in head if line.startswith("x-request-id: ")]
    assert len(rid) == 1 and re.fullmatch(r"x-request-id: [0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                                          rid[0])
    response = answered.decode("latin-1")
    assert response.startswith("HTTP/1.1 200 OK\r\nserver: pyproxy\r\n")
    assert "content-length: 12\r\n" in response and "x-envoy-upstream-service-time: " in response
    assert "connection" not in response.lower()  # the origin's keep-alive is hop-by-hop: stripped
    assert response.endswith("\r\n\r\nhello world\n")
