#!/usr/bin/env bash
# Route+hold latency through the HTTP API, measured with wrk against a running daemon loaded
# with the demo data (`OMNISTOCK_KEEP_SERVICES=1 make run`, or a release build serving against
# the `run` instance). Usage: scripts/bench-route.sh [connections] [seconds]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
conns="${1:-16}"
secs="${2:-20}"
url="${OMNISTOCK_BENCH_URL:-http://127.0.0.1:8080}"
export OMNISTOCK_BENCH_KEY="${OMNISTOCK_BENCH_KEY:-demo-admin-key}"
command -v wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; }
# SKUs the warehouse carries in depth, so most orders can be served.
mapfile -t skus < <(awk -F, '$1 == "WH-TPE" && $3 >= 200 { print $2 }' "$ROOT/deploy/demo/stock.csv" | grep -v ' ' | head -200)
threads=$(( conns < 2 ? 1 : 2 ))
echo "wrk: $conns connections, $threads threads, ${secs}s, ${#skus[@]} SKUs, POST $url/v1/orders/route"
# Count answers by status from the daemon's own metrics: a 409 (stock or daily capacity used
# up) is fast and would flatter the latency figures, so the run must be all 200s to count.
answers() { curl -s "$url/metrics" | awk '/^omnistock_http_requests_total/ { s += $2 } END { print s + 0 }'; }
ok() { curl -s "$url/metrics" | awk -F' ' '/^omnistock_http_requests_total\{status="200"\}/ { print $2 + 0 }'; }
total_before=$(answers); ok_before=$(ok)
wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$ROOT/benches/route.lua" "$url" -- "${skus[@]}"
total=$(( $(answers) - total_before )); routed=$(( $(ok) - ok_before ))
echo "answers: $total, of which 200 (routed and held): $routed"
[[ $total -eq $routed ]] || echo "WARNING: not every request was routed (stock or daily capacity used up?): these figures do not count" >&2
