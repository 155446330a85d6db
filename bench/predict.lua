-- wrk script of bench/serving.py: POST one JSON customer with Content-Type and X-API-Key headers.
-- The body is read from the file named by WRK_BODY_FILE, the key from WRK_API_KEY. At the end it
-- prints one line "WRK_RESULT {...}" (JSON) with the counts and latency percentiles in microseconds.

local body_file = assert(os.getenv("WRK_BODY_FILE"), "set WRK_BODY_FILE to the request body file")
local file = assert(io.open(body_file, "rb"))
local body = file:read("*a")
file:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = os.getenv("WRK_API_KEY") or ""

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
