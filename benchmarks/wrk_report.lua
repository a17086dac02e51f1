-- wrk script: after the run, print one machine-readable line that benchmarks/run.py parses.
-- Latencies are in microseconds (wrk's unit); percentiles are wrk's own (nearest rank over its histogram).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\"requests\": %d, \"duration_us\": %d, \"bytes\": %d, " ..
    "\"errors\": {\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, \"timeout\": %d}, " ..
    "\"latency_us\": {\"mean\": %.1f, \"p50\": %d, \"p90\": %d, \"p99\": %d, \"max\": %d}}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
