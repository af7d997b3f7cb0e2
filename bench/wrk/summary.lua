-- Prints one machine-readable line after the run: requests, errors and
-- latency percentiles in microseconds (wrk's --latency has no p99.9).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50=%d p99=%d p999=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
