-- wrk script of `make bench` (scripts/bench.sh). BENCH_MODE chooses the request:
--   healthz  GET /healthz (the bare-axum ceiling and the daemon alike)
--   read     GET /v1/availability/<random SKU><BENCH_QUERY>
--   batch    POST /v1/availability with BENCH_BATCH (default 100) random SKUs
--   hold     POST /v1/reservations: 1 unit of BENCH_HOT_SKU at BENCH_HOT_LOCATION, a fresh
--            reservation_id per request (none is an idempotent replay)
-- SKUs come as script arguments (after --). Every mode builds its request in request(), so
-- wrk's own cost per request is the same for the ceiling and for the API.
-- done() prints one line `BENCHJSON {...}` that bench.sh records.
local mode = os.getenv("BENCH_MODE") or "healthz"
local key = os.getenv("OMNISTOCK_BENCH_KEY") or ""
local query = os.getenv("BENCH_QUERY") or ""
local batch = tonumber(os.getenv("BENCH_BATCH") or "100")
local hot_sku = os.getenv("BENCH_HOT_SKU") or ""
local hot_location = os.getenv("BENCH_HOT_LOCATION") or ""
local skus = {}
local counter = 0
-- Not `thread_id`: a local of that name would shadow the global each thread gets from
-- `thread:set`, and every thread would make the same ids (replays, not new requests).
local threads = 0
local auth = {["Authorization"] = "Bearer " .. key}
local post = {["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json"}

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function init(args)
  for i = 1, #args do skus[i] = args[i] end
  math.randomseed(os.time() * 1000 + thread_id)
end

function request()
  counter = counter + 1
  if mode == "read" then
    return wrk.format("GET", "/v1/availability/" .. skus[math.random(#skus)] .. query, auth)
  elseif mode == "batch" then
    local parts = {}
    for i = 1, batch do parts[i] = '"' .. skus[math.random(#skus)] .. '"' end
    return wrk.format("POST", "/v1/availability", post, '{"skus":[' .. table.concat(parts, ",") .. ']}')
  elseif mode == "hold" then
    local body = string.format(
      '{"reservation_id":"bench-%d-%d-%d","location_id":"%s","lines":[{"sku":"%s","quantity":1}],"ttl_seconds":3600}',
      os.time(), thread_id, counter, hot_location, hot_sku)
    return wrk.format("POST", "/v1/reservations", post, body)
  end
  return wrk.format("GET", "/healthz")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
