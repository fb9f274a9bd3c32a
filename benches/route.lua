-- wrk script: POST /v1/orders/route with a fresh order id per request (so every request routes
-- and holds, none is an idempotent replay). Used by scripts/bench-route.sh and scripts/bench.sh.
-- BENCH_LINES (default 1) distinct random SKUs per order.
local counter = 0
-- Not `thread_id`: a local of that name would shadow the global each thread gets from
-- `thread:set`, and every thread would make the same ids (replays, not new requests).
local threads = 0
local all_threads = {}
local skus = {}
local lines = tonumber(os.getenv("BENCH_LINES") or "1")

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
  all_threads[#all_threads + 1] = thread
end

function init(args)
  for i = 1, #args do skus[i] = args[i] end
  math.randomseed(os.time() + thread_id)
end

function request()
  counter = counter + 1
  local picked, seen = {}, {}
  while #picked < math.min(lines, #skus) do
    local sku = skus[math.random(#skus)]
    if not seen[sku] then
      seen[sku] = true
      picked[#picked + 1] = string.format('{"sku":"%s","quantity":1}', sku)
    end
  end
  -- Customers scattered over western Taiwan.
  local lat = 22.6 + math.random() * 2.5
  local lon = 120.2 + math.random() * 1.4
  local body = string.format(
    '{"order_id":"bench-%d-%d-%d","lines":[%s],' ..
    '"fulfilment":"delivery","customer":{"lat":%.5f,"lon":%.5f},"allow_split":true,"ttl_seconds":60}',
    os.time(), thread_id, counter, table.concat(picked, ","), lat, lon)
  return wrk.format("POST", "/v1/orders/route", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("OMNISTOCK_BENCH_KEY")}, body)
end

-- Only a 200 is a route taken and held. A 409 (no location can serve the order: the picked
-- SKUs' stock or the stores' daily capacity used up) is answered faster than a route, so a rate
-- counting it would rise as the data set runs out: the figure counts 200s only.
routed = 0
function response(status, headers, body)
  if status == 200 then routed = routed + 1 end
end

function done(summary, latency, requests)
  io.write(string.format("p50 %.1f ms, p90 %.1f ms, p99 %.1f ms over %d requests\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, summary.requests))
  local e = summary.errors
  local ok = 0
  for _, t in ipairs(all_threads) do ok = ok + (t:get("routed") or 0) end
  io.write(string.format("routed (200): %d of %d answers\n", ok, summary.requests))
  io.write(string.format(
    'BENCHJSON {"requests":%d,"routed":%d,"duration_us":%d,"rps":%.2f,"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"non2xx":%d,"socket_errors":%d}\n',
    summary.requests, ok, summary.duration, ok / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    e.status, e.connect + e.read + e.write + e.timeout))
end
