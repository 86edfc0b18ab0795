-- wrk script for the benchmark: `wrk ... -s bench/wrk.lua URL -- get|post [close] [auth=B64]`.
-- "post" sends POST with a JSON note; "close" asks for a new connection per request (what
-- nginx does towards Gunicorn); "auth=" sends HTTP Basic credentials (base64 of user:pass);
-- done() prints one machine-readable line.

function init(args)
  for i = 2, #args do
    if args[i] == "close" then
      wrk.headers["Connection"] = "close"
    elseif args[i]:sub(1, 5) == "auth=" then
      wrk.headers["Authorization"] = "Basic " .. args[i]:sub(6)
    end
  end
  if args[1] == "post" then
    wrk.method = "POST"
    wrk.body = '{"text": "bench"}'
    wrk.headers["Content-Type"] = "application/json"
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
