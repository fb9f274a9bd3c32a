#!/usr/bin/env bash
# Hot-SKU holds through the HTTP API, and Postgres's own one-row hot UPDATE, in the same run.
# Needs a running daemon (release build, a durable PostgreSQL: fsync and synchronous_commit on,
# the per-key rate limit raised) and its DATABASE_URL for pgbench. Creates location BENCH-HOT
# with SKU HOT of 100,000,000 units (enough that no hold is refused), then:
#   1. pgbench: `UPDATE stock_levels SET reserved = reserved + 1` on one row, C clients;
#   2. wrk: POST /v1/reservations of 1 unit of HOT, a fresh id each, C connections.
# Usage: scripts/bench-holds.sh [connections] [seconds]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
conns="${1:-64}"
secs="${2:-20}"
url="${OMNISTOCK_BENCH_URL:-http://127.0.0.1:8080}"
: "${DATABASE_URL:?the daemon's DATABASE_URL, for pgbench}"
export OMNISTOCK_BENCH_KEY="${OMNISTOCK_BENCH_KEY:-demo-admin-key}"
export OMNISTOCK_BENCH_LOCATION=BENCH-HOT OMNISTOCK_BENCH_SKU=HOT
auth=(-H "Authorization: Bearer $OMNISTOCK_BENCH_KEY" -H "Content-Type: application/json")
curl -sf -X PUT "${auth[@]}" "$url/v1/locations/BENCH-HOT" \
  -d '{"name":"bench hot","kind":"warehouse","lat":25.0,"lon":121.5}' >/dev/null
curl -sf -X POST "${auth[@]}" "$url/v1/movements" \
  -d "{\"event_id\":\"bench-hot-$(date +%s%N)\",\"location_id\":\"BENCH-HOT\",\"sku\":\"HOT\",\"kind\":\"receipt\",\"quantity\":100000000,\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"source\":\"bench\"}" >/dev/null
sleep 1
echo "fsync=$(psql "$DATABASE_URL" -Atc 'SHOW fsync') synchronous_commit=$(psql "$DATABASE_URL" -Atc 'SHOW synchronous_commit')"
sql="$(mktemp)"
trap 'rm -f "$sql"' EXIT
echo "UPDATE stock_levels SET version = version + 1 WHERE location_id = 'BENCH-HOT' AND sku = 'HOT';" >"$sql"
echo "== ceiling: pgbench, one-row UPDATE, $conns clients, ${secs}s"
pgbench -n -c "$conns" -j 2 -T "$secs" -f "$sql" "$DATABASE_URL" 2>&1 | grep -E "^(tps|latency|number of (failed|transactions))"
threads=$(( conns < 2 ? 1 : 2 ))
answers() { curl -s "$url/metrics" | awk '/^omnistock_http_requests_total/ { s += $2 } END { print s + 0 }'; }
created() { curl -s "$url/metrics" | awk -F' ' '/^omnistock_http_requests_total\{status="201"\}/ { print $2 + 0 }'; }
total_before=$(answers); ok_before=$(created)
echo "== omnistock: POST /v1/reservations on one hot SKU, $conns connections, ${secs}s"
wrk -t"$threads" -c"$conns" -d"${secs}s" --latency -s "$ROOT/benches/holds.lua" "$url"
total=$(( $(answers) - total_before )); held=$(( $(created) - ok_before ))
echo "answers: $total, of which 201 (held): $held"
[[ $total -eq $held ]] || echo "WARNING: not every request was held: these figures do not count" >&2
