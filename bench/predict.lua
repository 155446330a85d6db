-- wrk script of bench/serving.py: POST JSON customers with Content-Type and X-API-Key headers.
-- The bodies are the lines of the file named by WRK_BODY_FILE, sent in turn; the key is read from
-- WRK_API_KEY. At the end it prints one line "WRK_RESULT {...}" (JSON) with the counts and latency
-- percentiles in microseconds.

local body_file = assert(os.getenv("WRK_BODY_FILE"), "set WRK_BODY_FILE to the request body file")
local bodies = {}
for line in io.lines(body_file) do
  if line:match("%S") then bodies[#bodies + 1] = line end
end
assert(#bodies > 0, "no request body in " .. body_file)

wrk.method = "POST"
wrk.body = bodies[1]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("WRK_API_KEY") or ""

if #bodies > 1 then  -- one body: wrk sends its one prepared request, the cheapest way
  local turn = 0
  function request()
    turn = turn % #bodies + 1
    return wrk.format(nil, nil, nil, bodies[turn])
  end
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, '
      .. '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max
  ))
end
