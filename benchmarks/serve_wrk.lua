-- wrk script of benchmarks/serve.py: POST the JSON bodies of a file (one per line) in turn to one path.
--
--   wrk -t1 -c32 -d60s --timeout 30s -s benchmarks/serve_wrk.lua http://127.0.0.1:PORT -- /search bodies.jsonl
--
-- Requests are formatted once, in init(); done() prints one line "WRK_JSON {...}" with the counts and the
-- latency percentiles (microseconds) that benchmarks/serve_load.py reads.

local formatted = {}
local at = 0

function init(args)
  local path, file = args[1], args[2]
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(file) do
    if #line > 0 then
      formatted[#formatted + 1] = wrk.format("POST", path, headers, line)
    end
  end
  if #formatted == 0 then
    error("no request bodies in " .. file)
  end
end

function request()
  at = at % #formatted + 1
  return formatted[at]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
