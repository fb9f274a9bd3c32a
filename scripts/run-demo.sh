#!/usr/bin/env bash
# `make run`: start private services (instance `run`), build omnistock, migrate,
# load the demo data from deploy/demo/ and run `omnistock serve` in the
# foreground. When the daemon exits (Ctrl-C, SIGTERM, or on its own) the
# services of instance `run` are stopped again; set OMNISTOCK_KEEP_SERVICES=1
# to leave them running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SERVICES="$ROOT/scripts/services.sh"
BIN="$ROOT/target/debug/omnistock"
DEMO="$ROOT/deploy/demo"
cd "$ROOT"

say() { printf '==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
    cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    [[ -x "$cargo_bin/cargo" ]] && PATH="$cargo_bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "run-demo.sh: cargo not found" >&2; exit 1; }

child=""
# shellcheck disable=SC2317 # invoked by trap
stop_all() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n "$child" ]] && kill -0 "$child" 2>/dev/null; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    if [[ "${OMNISTOCK_KEEP_SERVICES:-0}" == 1 ]]; then
        say "leaving services of instance run running (OMNISTOCK_KEEP_SERVICES=1)"
    else
        say "stopping services (instance run)"
        "$SERVICES" stop run || true
    fi
    exit "$rc"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting services (instance run)"
"$SERVICES" start run
eval "$("$SERVICES" env run)"

# Every scope; read only (the page disables hold and order); a TW001 tablet (read, reserve there).
export OMNISTOCK_API_KEYS="${OMNISTOCK_API_KEYS:-demo-admin-key=*,demo-read-key=read,demo-tw001-key=read|reserve@TW001}"
export OMNISTOCK_HTTP_ADDR="${OMNISTOCK_HTTP_ADDR:-127.0.0.1:8080}"

say "cargo build"
cargo build

say "omnistock migrate"
"$BIN" migrate
say "omnistock import locations $DEMO/locations.csv"
"$BIN" import locations "$DEMO/locations.csv"
say "omnistock import stock $DEMO/stock.csv"
"$BIN" import stock "$DEMO/stock.csv"

# One real SKU for the examples: column 2 of the first data row of stock.csv.
sku="$(sed -n 2p "$DEMO/stock.csv" | cut -d, -f2 | tr -d '"\r' | sed 's/^[[:space:]]*//;s/[[:space:]]*$//')"
[[ -n "$sku" ]] || sku="SOME-SKU"
url="http://$OMNISTOCK_HTTP_ADDR"

cat <<EOF

  omnistock demo
  --------------
  Staff page    $url/   (open it in a browser)
  HTTP API      $url
  API keys      demo-admin-key   (all scopes)
                demo-read-key    (read only)
                demo-tw001-key   (read and reserve, bound to TW001)
  PostgreSQL    $DATABASE_URL
  Redis         $REDIS_URL
  NATS          $NATS_URL   (monitor $OMNISTOCK_NATS_MONITOR_URL)
  Logs          $ROOT/.omnistock/run/logs/

  Try (more in README.md):
    K='Authorization: Bearer demo-admin-key'
    curl -H "\$K" $url/v1/availability/$sku
    curl -H "\$K" '$url/v1/availability/$sku/nearby?lat=25.0330&lon=121.5654&radius_km=30'
    curl -H "\$K" -X POST $url/v1/orders/route -d '{"order_id": "demo-1", "fulfilment": "delivery",
         "customer": {"lat": 25.0330, "lon": 121.5654}, "lines": [{"sku": "$sku", "quantity": 1}]}'
    curl -N -H "\$K" '$url/v1/stream?sku=$sku'      # live changes (another terminal)
    eval "\$(scripts/services.sh env run)"; target/debug/omnistock publish --location TW001 --sku $sku --kind sale --quantity 1

  Ctrl-C stops the daemon and the services.

EOF

say "omnistock serve"
# Run in the background and wait, so that SIGINT/SIGTERM reach this script at
# once and are passed on to the daemon as SIGTERM (its graceful shutdown).
"$BIN" serve &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
rc=0
while true; do
    wait "$child" && rc=0 || rc=$?
    # wait returns >128 when a trapped signal interrupted it; keep waiting
    # until the daemon itself has exited.
    kill -0 "$child" 2>/dev/null || break
done
child=""
say "omnistock serve exited with status $rc"
# SIGTERM sent by us (143) counts as a clean stop.
[[ $rc -eq 143 ]] && rc=0
exit "$rc"
