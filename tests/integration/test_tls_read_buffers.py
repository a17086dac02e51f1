"""A `pyproxy run` process reads TLS records without touching fresh memory per request (pyproxy/runtime/malloc.py).

The TLS transport reads each record into a 256 KiB buffer. Left to glibc's defaults, that buffer is a fresh
mmap every time (mmap, mremap, munmap, and a page fault on first write: ~40 µs a request); with the proxy's
mallopt at start-up it is carved from the heap and reused. The test counts the proxy process's minor page
faults (/proc/PID/stat) over 400 keep-alive requests through an mTLS cluster: at least one per request without
the tuning (two, measured), a few dozen in all with it. A count, not a time."""
from __future__ import annotations

import pathlib

from pyproxy.runtime.malloc import keep_tls_reads_off_mmap
from tests.support.client import RawClient
from tests.support.pki import TestCA
from tests.support.proxy import bootstrap, cluster
from tests.support.tls import server_ctx, upstream_tls, uri_san

SERVER_ID = "spiffe://cluster.local/ns/server/sa/httpbin"
REQUESTS = 400


def minor_faults(pid: int) -> int:
    """minflt, field 10 of /proc/PID/stat (after the parenthesised command name, which may hold spaces)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[7])


def test_the_tuning_is_applied_on_this_libc():
    assert keep_tls_reads_off_mmap() is True  # glibc (Debian): mallopt exists and accepts both values


async def test_tls_reads_of_a_proxy_process_fault_no_fresh_pages_per_request(upstream_factory, pyproxy_process):
    ca = TestCA("mesh")
    up = await upstream_factory("tls", ssl=server_ctx(ca.issue(uris=[SERVER_ID]), ca.cert_pem))
    ts = upstream_tls(ca.issue(uris=["spiffe://cluster.local/ns/client/sa/sleep"]), ca.cert_pem,
                      sans=[uri_san(SERVER_ID)])
    proc = pyproxy_process(bootstrap([cluster("backend", [up.port], transport_socket=ts)]))
    (port,) = await proc.wait_listening(1)
    client = await RawClient.connect(port)
    try:
        for _ in range(50):  # the pooled TLS connection made, code paths and the heap warm
            assert (await client.request("GET", "/")).status == 200
        before = minor_faults(proc.pid)
        for _ in range(REQUESTS):
            assert (await client.request("GET", "/")).status == 200
        faults = minor_faults(proc.pid) - before
    finally:
        client.writer.close()
    assert up.connections == 1  # one pooled TLS connection carried every request
    assert faults < REQUESTS // 4, f"{faults} minor page faults over {REQUESTS} TLS requests"
