-- wrk script: POST /v1/reservations of 1 unit of one hot SKU, a fresh reservation id per
-- request (so none is an idempotent replay). Used by scripts/bench-holds.sh.
-- Env: OMNISTOCK_BENCH_KEY, OMNISTOCK_BENCH_LOCATION, OMNISTOCK_BENCH_SKU.
local counter = 0
-- Not `thread_id`: a local of that name would shadow the global each thread gets from
-- `thread:set`, and every thread would make the same ids (replays, not new requests).
local threads = 0
local run = os.time()

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

function request()
  counter = counter + 1
  local body = string.format(
    '{"reservation_id":"bh-%d-%d-%d","location_id":"%s","lines":[{"sku":"%s","quantity":1}],"ttl_seconds":3600}',
    run, thread_id, counter, os.getenv("OMNISTOCK_BENCH_LOCATION"), os.getenv("OMNISTOCK_BENCH_SKU"))
  return wrk.format("POST", "/v1/reservations", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("OMNISTOCK_BENCH_KEY")}, body)
end

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms over %d requests\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.requests))
end
