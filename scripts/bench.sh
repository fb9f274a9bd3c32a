#!/usr/bin/env bash
# `make bench`: measure omnistock and this machine's ceilings in ONE run, on the durable
# services instance `bench` (fsync and synchronous_commit on, JetStream sync_interval always),
# then write docs/performance.md (+ docs/performance.svg) from the results JSON.
#
#   BENCH_SCALES   data sets after the demo data ("none": the demo only): "1m" (200 locations x 5,000 SKUs) and/or
#                  "10m" (200 x 50,000). Default "1m 10m".
#   BENCH_QUICK=1  small data (20 x 500) and short runs: proves the harness, figures not to quote.
#   BENCH_SECONDS  seconds per wrk / pgbench run (default 15; quick 3).
#   BENCH_MOVEMENTS movements per ingest run (default 100000; quick 10000).
#   BENCH_NOTE     a sentence for the top of docs/performance.md.
#   BENCH_OUT      where docs/performance.md and .svg go (default docs/).
#   BENCH_KEEP=1   leave the services and the generated data in place at the end.
#   BENCH_TIMEOUT  seconds the whole run may take (default 10800); each step has its own bound.
#
# Results: target/bench/results.json (every figure with its exact command), logs in
# target/bench/work/. The ceilings are taken first, then each data set on a fresh instance.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
SERVICES="$ROOT/scripts/services.sh"
QUICK="${BENCH_QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
    SCALES="${BENCH_SCALES:-quick}"
    SECS="${BENCH_SECONDS:-3}"
    MOVEMENTS="${BENCH_MOVEMENTS:-10000}"
    PROBES=20
else
    SCALES="${BENCH_SCALES:-1m 10m}"
    SECS="${BENCH_SECONDS:-15}"
    MOVEMENTS="${BENCH_MOVEMENTS:-100000}"
    PROBES=200
fi
# "none": the demo data only.
[[ "$SCALES" == none ]] && SCALES=""
OUT_DIR="${BENCH_OUT:-$ROOT/docs}"
BENCH_DIR="$ROOT/target/bench"
WORK="$BENCH_DIR/work"
FIGS="$BENCH_DIR/figures.jsonl"
RESULTS="$BENCH_DIR/results.json"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="$TARGET_DIR/release/omnistock"
HTTP1=127.0.0.1:58080
HTTP2=127.0.0.1:58081
CEIL=127.0.0.1:58090
export OMNISTOCK_BENCH_KEY=bench-admin-key
HOT_SKU=BENCH-HOT
START_EPOCH=$(date +%s)
DEADLINE=$((START_EPOCH + ${BENCH_TIMEOUT:-10800}))

say() { printf '\n==> [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# Bound every step by its own limit and by what is left of the whole run.
bounded() {
    local limit=$1 left
    shift
    left=$((DEADLINE - $(date +%s)))
    ((left > 0)) || die "BENCH_TIMEOUT reached"
    ((limit < left)) || limit=$left
    timeout --kill-after=10 "$limit" "$@"
}

# record ID SCALE VALUE UNIT COMMAND [p50 p99 connections errors note]
record() {
    local id=$1 scale=$2 value=$3 unit=$4 cmd=$5 p50=${6:-null} p99=${7:-null} conns=${8:-null} errs=${9:-null} note=${10:-}
    jq -cn --arg id "$id" --arg scale "$scale" --argjson value "$value" --arg unit "$unit" \
        --arg command "$cmd" --argjson p50 "$p50" --argjson p99 "$p99" --argjson c "$conns" \
        --argjson e "$errs" --arg note "$note" \
        '{id: $id, scale: $scale, value: $value, unit: $unit, command: $command, p50_ms: $p50,
          p99_ms: $p99, connections: $c, errors: $e, note: $note}' >>"$FIGS"
    printf '    %-18s %-6s %s %s\n' "$id" "$scale" "$value" "$unit" >&2
}

# --------------------------------------------------------------------------
# tools

install_tools() {
    local missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v redis-benchmark >/dev/null 2>&1 || missing+=(redis-tools)
    command -v jq >/dev/null 2>&1 || missing+=(jq)
    [[ -x /usr/bin/time ]] || missing+=(time)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if ((${#missing[@]})); then
        say "installing ${missing[*]}"
        apt_get install "${missing[@]}"
    fi
}

apt_get() {
    local sudo=()
    [[ $EUID -eq 0 ]] || sudo=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null || die "apt-get update failed"
    "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 "$1" -y -qq --no-install-recommends "${@:2}" >/dev/null \
        || die "apt-get $* failed"
}

# pgbench ships with the server package on Debian 12 (postgresql-15) and in the client package
# from Debian 13 on; look in the versioned bin folders before installing anything.
find_pgbench() {
    command -v pgbench >/dev/null 2>&1 && { command -v pgbench; return 0; }
    find /usr/lib/postgresql -path '*/bin/pgbench' 2>/dev/null | sort -V | tail -n1 | grep . && return 0
    return 1
}

ensure_pgbench() {
    PGBENCH="$(find_pgbench)" && return 0
    say "installing pgbench (postgresql-client, postgresql-contrib)"
    apt_get install postgresql-client postgresql-contrib
    PGBENCH="$(find_pgbench)" || die "pgbench not found after installing postgresql-client and postgresql-contrib"
}

# --------------------------------------------------------------------------
# processes we start; stopped by pid at the end

PIDS=()
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${PIDS[@]}"; do
        if kill -0 "$p" 2>/dev/null; then
            kill -TERM "$p" 2>/dev/null || true
            for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        say "BENCH_KEEP=1: services of instance bench left running, data in $WORK"
    else
        "$SERVICES" clean bench >/dev/null 2>&1 || true
        rm -rf "$WORK/data"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

stop_pid() {
    local p=$1
    kill -TERM "$p" 2>/dev/null || return 0
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
}

wait_http() {
    local url=$1 secs=$2 i
    for ((i = 0; i < secs * 5; i++)); do
        curl -sf -o /dev/null --max-time 2 "$url" && return 0
        sleep 0.2
    done
    die "$url did not answer within ${secs}s"
}

fresh_services() {
    "$SERVICES" clean bench >/dev/null 2>&1 || true
    bounded 300 "$SERVICES" start bench
    eval "$("$SERVICES" env bench)"
    PG_PORT="${DATABASE_URL##*:}"; PG_PORT="${PG_PORT%%/*}"
    REDIS_PORT="${REDIS_URL##*:}"; REDIS_PORT="${REDIS_PORT%%/*}"
}

psql_bench() { bounded 600 psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" "$@"; }

# --------------------------------------------------------------------------
# wrk: run_wrk ID SCALE CONNS SCRIPT URL [note] [-- args]; env BENCH_MODE etc. set by the caller

run_wrk() {
    local id=$1 scale=$2 conns=$3 script=$4 url=$5 note=${6:-} secs=${WRK_SECS:-$SECS}
    shift 6
    if [[ "${1:-}" == -- ]]; then shift; fi
    local threads=2 out json
    if ((conns < 2)); then threads=1; fi
    local cmd=(wrk -t"$threads" -c"$conns" -d"${secs}s" --timeout 10s --latency -s "benches/$script" "$url")
    if (($#)); then cmd+=(-- "$@"); fi
    out="$(bounded $((secs + 60)) "${cmd[@]}" 2>&1)" || die "wrk failed: $out"
    printf '%s\n' "$out" >>"$WORK/wrk.log"
    json="$(grep -o 'BENCHJSON .*' <<<"$out" | head -n1 | cut -d' ' -f2-)"
    [[ -n "$json" ]] || die "wrk printed no BENCHJSON line: $out"
    local env_desc="" v
    for v in BENCH_MODE BENCH_QUERY BENCH_BATCH BENCH_LINES BENCH_HOT_SKU BENCH_HOT_LOCATION; do
        [[ -n "${!v:-}" ]] && env_desc+="$v=${!v} "
    done
    local shown="${cmd[*]:0:9}"
    if (($#)); then shown+=" -- <$# SKUs>"; fi
    record "$id" "$scale" "$(jq .rps <<<"$json")" "req/s" "${env_desc}${shown}" \
        "$(jq .p50_ms <<<"$json")" "$(jq .p99_ms <<<"$json")" "$conns" \
        "$(jq '.non2xx + .socket_errors' <<<"$json")" "$note"
}

# --------------------------------------------------------------------------
# machine

machine() {
    local cpu mem pg redis nats pgset
    cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || echo unknown)"
    mem="$(free -h | awk '/^Mem:/ { print $2 }')"
    pg="$(psql -X -At "$DATABASE_URL" -c 'SELECT version()' | cut -d, -f1)"
    redis="$(redis-server --version | awk '{ print $3 }')"
    nats="$("$(dirname "$(command -v nats-server)")/nats-server" --version 2>/dev/null || echo '?')"
    # As the server runs, not as the file says.
    pgset="$(psql -X -At "$DATABASE_URL" -c "SELECT string_agg(name || '=' || current_setting(name), ', ' ORDER BY name) FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'shared_buffers', 'max_wal_size', 'checkpoint_timeout', 'wal_compression')")"
    jq -n --arg cpu "$cpu" --argjson cores "$(nproc)" --arg memory "$mem" \
        --arg kernel "$(uname -r)" --arg os "$(. /etc/os-release && echo "$PRETTY_NAME")" \
        --arg postgres "$pg" --arg redis "Redis $redis" --arg nats "$nats" \
        --arg services "instance bench: PostgreSQL $pgset (deploy/postgres/omnistock.conf); Redis without persistence; JetStream sync_interval always" \
        --arg load "$(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min load average at the start)" \
        '{cpu: $cpu, cores: $cores, memory: $memory, kernel: $kernel, os: $os, postgres: $postgres,
          redis: $redis, nats: $nats, services: $services, load: $load}' >"$BENCH_DIR/machine.json"
}

# --------------------------------------------------------------------------
# ceilings

pgbench_tps() { grep -Eo 'tps = [0-9.]+' | head -n1 | awk '{ print $3 }'; }

ceilings() {
    say "ceilings: PostgreSQL batched ledger writes, one-row hot UPDATE"
    local db="${DATABASE_URL%/*}/ceiling" out tps
    psql -X -q "${DATABASE_URL%/*}/postgres" -c 'CREATE DATABASE ceiling' >/dev/null
    DATABASE_URL="$db" bounded 120 "$BIN" migrate >/dev/null
    # 4 locations (one per client) x 5,000 SKUs: the shape of what ingest writes.
    bounded 300 psql -X -q -v ON_ERROR_STOP=1 "$db" <<'SQL'
INSERT INTO locations (location_id, name, kind, lat, lon)
    SELECT 'C' || c, 'ceiling ' || c, 'store', 25, 121 FROM generate_series(0, 4) c;
INSERT INTO skus (sku) SELECT 'S' || lpad(s::text, 5, '0') FROM generate_series(0, 4999) s;
INSERT INTO stock_levels (location_id, sku, on_hand)
    SELECT 'C' || c, 'S' || lpad(s::text, 5, '0'), 1000 FROM generate_series(0, 4) c, generate_series(0, 4999) s;
VACUUM ANALYZE;
SQL
    # One transaction = 500 ledger rows + 500 level updates of the client's own location.
    cat >"$WORK/batch.sql" <<'SQL'
\set off random(0, 4499)
BEGIN;
INSERT INTO movements (event_id, location_id, sku, kind, quantity, signed_quantity, effect, outcome,
                       on_hand_after, occurred_at, source)
    SELECT 'pgb-' || :client_id || '-' || txid_current() || '-' || g, 'C' || :client_id,
           'S' || lpad((:off + g)::text, 5, '0'), 'receipt', 1, 1, 1, 'applied', 1001, now(), 'pgbench'
    FROM generate_series(1, 500) g;
UPDATE stock_levels SET on_hand = on_hand + 1, version = version + 1, last_movement_at = now(), updated_at = now()
    WHERE location_id = 'C' || :client_id
      AND sku IN (SELECT 'S' || lpad((:off + g)::text, 5, '0') FROM generate_series(1, 500) g);
COMMIT;
SQL
    local cmd=("$PGBENCH" -n -c 4 -j 2 -T "$SECS" -f "$WORK/batch.sql" "$db")
    out="$(bounded $((SECS + 120)) "${cmd[@]}" 2>&1)" || die "pgbench failed: $out"
    tps="$(pgbench_tps <<<"$out")"
    record ceiling.pg_batch - "$(awk -v t="$tps" 'BEGIN { printf "%.1f", t * 500 }')" "rows/s" \
        "pgbench -n -c 4 -j 2 -T $SECS -f batch.sql (500 ledger inserts + 500 level updates a transaction, see scripts/bench.sh)" \
        null null 4 0 "$tps transactions/s"

    printf "UPDATE stock_levels SET reserved = reserved + 1, version = version + 1, updated_at = now() WHERE location_id = 'C4' AND sku = 'S00000';\n" >"$WORK/hot.sql"
    cmd=("$PGBENCH" -n -c 64 -j 2 -T "$SECS" -f "$WORK/hot.sql" "$db")
    out="$(bounded $((SECS + 120)) "${cmd[@]}" 2>&1)" || die "pgbench failed: $out"
    tps="$(pgbench_tps <<<"$out")"
    record ceiling.pg_hot - "$tps" "updates/s" \
        "pgbench -n -c 64 -j 2 -T $SECS -f hot.sql ($(cat "$WORK/hot.sql"))" null null 64 0
    psql -X -q "${DATABASE_URL%/*}/postgres" -c 'DROP DATABASE ceiling' >/dev/null

    say "ceiling: bare axum /healthz"
    "$BIN" bench ceiling --addr "$CEIL" >>"$WORK/ceiling.log" 2>&1 &
    local cpid=$!
    PIDS+=("$cpid")
    wait_http "http://$CEIL/healthz" 30
    BENCH_MODE=healthz run_wrk ceiling.axum - 50 api.lua "http://$CEIL" "omnistock bench ceiling"
    stop_pid "$cpid"

    say "ceiling: Redis GET"
    redis-cli -p "$REDIS_PORT" set key:__rand_int__ "$(head -c 100 /dev/zero | tr '\0' x)" >/dev/null
    local n=$((QUICK == 1 ? 100000 : 1000000))
    cmd=(redis-benchmark -p "$REDIS_PORT" -t get -n "$n" -c 50 -d 100 --csv)
    out="$(bounded 300 "${cmd[@]}" 2>/dev/null)" || die "redis-benchmark failed"
    # "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    local line
    line="$(grep '^"GET"' <<<"$out" | tr -d '"')"
    record ceiling.redis_get - "$(cut -d, -f2 <<<"$line")" "req/s" "${cmd[*]}" \
        "$(cut -d, -f5 <<<"$line")" "$(cut -d, -f7 <<<"$line")" 50 0
    redis-cli -p "$REDIS_PORT" flushall >/dev/null

    say "ceiling: JetStream publish (as the outbox relay publishes change events)"
    cmd=("$BIN" bench jetstream --messages "$((QUICK == 1 ? 5000 : 20000))")
    out="$(bounded 300 "${cmd[@]}" 2>&1)" || die "omnistock bench jetstream failed: $out"
    record ceiling.js_publish - "$(jq .rate <<<"$out")" "messages/s" \
        "${cmd[*]:1} (Nats-Msg-Id on each, 1,000 acks in flight, 250 B)" null null 1 0
}

# --------------------------------------------------------------------------
# data sets

# gen_data DIR LOCATIONS SKUS: a network of stores and warehouses over Taiwan, every location
# carrying every SKU (LOCATIONS x SKUS opening counts).
gen_data() {
    local dir=$1 nl=$2 ns=$3
    mkdir -p "$dir"
    awk -v n="$nl" 'BEGIN {
        print "location_id,name,kind,lat,lon,pickup,ship_from,safety_stock,daily_order_capacity,timezone"
        for (i = 0; i < n; i++) {
            kind = (i % 20 == 0) ? "warehouse" : "store"
            printf "B%03d,Bench %s %d,%s,%.5f,%.5f,true,true,0,,Asia/Taipei\n", i, kind, i, kind,
                22.6 + (i * 37 % 250) / 100, 120.2 + (i * 53 % 140) / 100
        }
    }' >"$dir/locations.csv"
    awk -v nl="$nl" -v ns="$ns" 'BEGIN {
        print "location_id,sku,on_hand,counted_at"
        for (l = 0; l < nl; l++)
            for (s = 0; s < ns; s++)
                printf "B%03d,SKU-%06d,%d,2026-11-01T00:00:00Z\n", l, s, 20 + (l * 7 + s * 13) % 480
    }' >"$dir/stock.csv"
}

dataset() {
    local scale=$1
    DATA="$WORK/data/$scale"
    case "$scale" in
        demo)
            # The demo network with its daily order capacities raised 100x: routes at this
            # machine's rate would use a day's capacity (5,000 at the warehouse) up in seconds,
            # and the rest of the run would be fast 409s.
            mkdir -p "$DATA"
            cp "$ROOT"/deploy/demo/*.csv "$DATA/"
            awk -F, -v OFS=, 'NR > 1 && $9 != "" { $9 = $9 * 100 } { print }' \
                "$ROOT/deploy/demo/locations.csv" >"$DATA/locations.csv"
            ;;
        quick) gen_data "$DATA" 20 500 ;;
        1m) gen_data "$DATA" 200 5000 ;;
        10m) gen_data "$DATA" 200 50000 ;;
        *) die "unknown scale $scale (demo, quick, 1m, 10m)" ;;
    esac
}

# SKUs the reads and routes pick from: for the demo those the warehouse carries in depth (as
# scripts/bench-route.sh), else a spread of the generated ones.
pick_skus() {
    if [[ "$1" == demo ]]; then
        awk -F, '$1 == "WH-TPE" && $3 >= 200 { print $2 }' "$DATA/stock.csv" | grep -v ' ' | head -200
    else
        awk -F, 'NR > 1 && $1 == "B000" { print $2 }' "$DATA/stock.csv" | awk 'NR % 7 == 1' | head -2000
    fi
}

# --------------------------------------------------------------------------
# omnistock

DAEMONS=()
start_daemon() {
    local addr=$1 log=$2 pid
    OMNISTOCK_HTTP_ADDR="$addr" OMNISTOCK_API_KEYS="$OMNISTOCK_BENCH_KEY=*" \
        OMNISTOCK_RATE_LIMIT_PER_SECOND=100000000 OMNISTOCK_CACHE_REBUILD_ON_START=false \
        RUST_LOG="${BENCH_RUST_LOG:-warn}" "$BIN" serve >>"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    DAEMONS+=("$pid")
    wait_http "http://$addr/readyz" 120
}

stop_daemons() {
    local p
    for p in "${DAEMONS[@]}"; do stop_pid "$p"; done
    DAEMONS=()
}

memory_and_disk() {
    local scale=$1 levels used pss pgsize
    levels="$(psql -X -At "$DATABASE_URL" -c 'SELECT count(*) FROM stock_levels')"
    pgsize="$(psql -X -At "$DATABASE_URL" -c 'SELECT pg_database_size(current_database())')"
    used="$(redis-cli -p "$REDIS_PORT" info memory | tr -d '\r' | awk -F: '$1 == "used_memory" { print $2 }')"
    local pgpid
    pgpid="$(head -n1 "$(psql -X -At "$DATABASE_URL" -c 'SHOW data_directory')/postmaster.pid" 2>/dev/null || true)"
    pss=0
    if [[ -n "$pgpid" ]]; then
        # proportional set size of the postmaster and all its backends (shared buffers counted once)
        pss="$(for p in $pgpid $(pgrep -P "$pgpid"); do awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null; done | awk '{ s += $1 } END { printf "%.1f", s / 1024 }')"
    fi
    record disk.pg_database "$scale" "$(awk -v b="$pgsize" 'BEGIN { printf "%.1f", b / 1048576 }')" MB "SELECT pg_database_size(current_database())"
    record mem.postgres_pss "$scale" "$pss" MB "sum of Pss in /proc/<pid>/smaps_rollup of the postmaster and its children"
    record mem.redis_used "$scale" "$(awk -v b="$used" 'BEGIN { printf "%.1f", b / 1048576 }')" MB "redis-cli info memory (used_memory)"
    record mem.redis_per_level "$scale" "$(awk -v b="$used" -v n="$levels" 'BEGIN { printf "%.1f", (n > 0 ? b / n : 0) }')" "bytes/level" \
        "used_memory / SELECT count(*) FROM stock_levels ($levels levels)"
}

measure() {
    local scale=$1 t0 t1 out rows secs kb
    say "data set $scale: fresh services, import"
    fresh_services
    dataset "$scale"
    bounded 120 "$BIN" migrate >/dev/null
    bounded 600 "$BIN" import locations "$DATA/locations.csv" >/dev/null
    rows=$(($(wc -l <"$DATA/stock.csv") - 1))
    out="$(bounded 7200 /usr/bin/time -f 'BENCHTIME %e %M' "$BIN" import stock "$DATA/stock.csv" 2>&1)" \
        || die "import failed: $(tail -n 5 <<<"$out")"
    read -r secs kb < <(grep -o 'BENCHTIME .*' <<<"$out" | cut -d' ' -f2-)
    record import.stock "$scale" "$(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.1f", r / s }')" "rows/s" \
        "omnistock import stock $(basename "$DATA")/stock.csv ($rows rows)" null null null null "${secs} s"
    record import.peak_rss "$scale" "$(awk -v k="$kb" 'BEGIN { printf "%.1f", k / 1024 }')" MB \
        "/usr/bin/time -f %M omnistock import stock $(basename "$DATA")/stock.csv"

    # The \copy ceiling of issue 13: the same file into a table with the same primary key.
    psql_bench -c 'CREATE TABLE copy_keyed (location_id text, sku text, on_hand bigint, counted_at timestamptz, PRIMARY KEY (location_id, sku))'
    t0=$(date +%s.%N)
    psql_bench -c "\\copy copy_keyed FROM '$DATA/stock.csv' CSV HEADER"
    t1=$(date +%s.%N)
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    record ceiling.copy_keyed "$scale" "$(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.1f", r / s }')" "rows/s" \
        "psql -c \"\\copy copy_keyed FROM 'stock.csv' CSV HEADER\" (PRIMARY KEY (location_id, sku))" null null null null "${secs} s"
    psql_bench -c 'DROP TABLE copy_keyed'

    say "data set $scale: cache rebuild"
    t0=$(date +%s.%N)
    bounded 3600 "$BIN" cache rebuild >/dev/null
    t1=$(date +%s.%N)
    secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')"
    record cache.rebuild "$scale" "$(awk -v r="$rows" -v s="$secs" 'BEGIN { printf "%.1f", r / s }')" "levels/s" \
        "omnistock cache rebuild" null null null null "${secs} s"
    memory_and_disk "$scale"

    say "data set $scale: daemon, reads"
    start_daemon "$HTTP1" "$WORK/daemon-$scale.log"
    # After an import every SKU is queued for the channel feed (50,000 at 10M: 54 s of
    # background work on 2026-12-03, about 2 minutes before the feed read the kept totals).
    # Measured during that catch-up, 10M totals-only reads ran at 5,157/s, and 9,117/s after
    # it: wait, so the reads measure reads.
    local dirty i
    for ((i = 0; i < 600; i++)); do
        dirty="$(psql -X -At "$DATABASE_URL" -c 'SELECT count(*) FROM channel_dirty')"
        [[ "$dirty" == 0 ]] && break
        sleep 1
    done
    say "channel feed caught up after ${i} s (${dirty} SKUs still queued)"
    local url="http://$HTTP1"
    mapfile -t skus < <(pick_skus "$scale")
    ((${#skus[@]})) || die "no SKUs picked for $scale"
    BENCH_MODE=read run_wrk reads.single "$scale" 50 api.lua "$url" "" -- "${skus[@]}"
    BENCH_MODE=read BENCH_QUERY='?locations=false' run_wrk reads.totals "$scale" 50 api.lua "$url" \
        "" -- "${skus[@]}"
    BENCH_MODE=batch BENCH_BATCH=100 run_wrk reads.batch "$scale" 50 api.lua "$url" "" -- "${skus[@]}"
    local c
    for c in 1 4 16 64; do
        BENCH_MODE=read WRK_SECS=$(((SECS + 2) / 3)) run_wrk curve.reads "$scale" "$c" api.lua "$url" "curve" -- "${skus[@]}"
    done

    say "data set $scale: hot-SKU holds"
    local hot_loc
    hot_loc="$(psql -X -At "$DATABASE_URL" -c "SELECT location_id FROM locations WHERE kind <> 'online' ORDER BY 1 LIMIT 1")"
    bounded 60 "$BIN" publish --location "$hot_loc" --sku "$HOT_SKU" --kind receipt --quantity 1000000000 >/dev/null
    wait_level "$hot_loc" "$HOT_SKU" 1000000000
    BENCH_MODE=hold BENCH_HOT_SKU="$HOT_SKU" BENCH_HOT_LOCATION="$hot_loc" \
        run_wrk holds.hot "$scale" 64 api.lua "$url" ""
    local over
    over="$(psql -X -At "$DATABASE_URL" -c "SELECT GREATEST(reserved - on_hand, 0) FROM stock_levels WHERE location_id = '$hot_loc' AND sku = '$HOT_SKU'")"
    record holds.oversold "$scale" "$over" units \
        "SELECT GREATEST(reserved - on_hand, 0) FROM stock_levels WHERE location_id = '$hot_loc' AND sku = '$HOT_SKU'"

    say "data set $scale: route + hold"
    # A new day for every run, so that the second starts with the same capacities as the first.
    psql_bench -c 'TRUNCATE daily_order_counts'
    BENCH_LINES=1 run_wrk route.1 "$scale" 16 route.lua "$url" "" -- "${skus[@]}"
    psql_bench -c 'TRUNCATE daily_order_counts'
    BENCH_LINES=5 run_wrk route.5 "$scale" 16 route.lua "$url" "" -- "${skus[@]}"

    say "data set $scale: publish -> visible"
    local rate
    for rate in 1000 5000; do
        local cmd=("$BIN" bench visible --http "$HTTP1" --rate "$rate" --samples "$PROBES" --interval-ms 20)
        if ! out="$(bounded 600 "${cmd[@]}" 2>"$WORK/visible.err")"; then
            # a probe that never shows is a result (the daemon is behind), not a harness failure
            record "visible.$rate" "$scale" 0 "movements/s background" "${cmd[*]:1}" null null null 1 \
                "failed: $(tail -n1 "$WORK/visible.err")"
            continue
        fi
        record "visible.$rate" "$scale" "$(jq .background_rate <<<"$out")" "movements/s background" \
            "omnistock bench visible --rate $rate --samples $PROBES --interval-ms 20 (HTTP poll of GET /v1/availability/BENCH-PROBE after each JetStream ack)" \
            "$(jq .p50_ms <<<"$out")" "$(jq .p99_ms <<<"$out")" null null \
            "max $(jq .max_ms <<<"$out") ms$(jq -r 'if .behind then "; fell behind: " + .behind else "" end' <<<"$out")"
    done
    wait_idle

    say "data set $scale: ingest, 1 daemon"
    ingest ingest.1d "$scale"
    say "data set $scale: ingest, 2 daemons"
    start_daemon "$HTTP2" "$WORK/daemon2-$scale.log"
    ingest ingest.2d "$scale"
    stop_daemons

    out="$(bounded 1800 "$BIN" check 2>&1)" && over=1 || over=0
    record check.ok "$scale" "$over" "1 = clean" "omnistock check" null null null null "$(tail -n1 <<<"$out")"
    memory_and_disk "$scale-after"
}

# Ledger up to date: nothing pending in the stream (everything published has been committed).
wait_idle() {
    local i last="" n
    for ((i = 0; i < 600; i++)); do
        n="$(psql -X -At "$DATABASE_URL" -c 'SELECT count(*) FROM movements')"
        [[ "$n" == "$last" ]] && return 0
        last=$n
        sleep 1
    done
}

wait_level() {
    local loc=$1 sku=$2 want=$3 i v
    for ((i = 0; i < 300; i++)); do
        v="$(psql -X -At "$DATABASE_URL" -c "SELECT on_hand FROM stock_levels WHERE location_id = '$loc' AND sku = '$sku'")"
        [[ -n "$v" && "$v" -ge "$want" ]] && return 0
        sleep 0.2
    done
    die "$loc/$sku did not reach on_hand $want within 60 s"
}

# The outbox relay has published every change event up to outbox id $1 (no gap left below
# it); polls every 0.1 s, $2 × 10 times.
relay_past() {
    local last=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ "$(psql -X -At "$DATABASE_URL" -c "SELECT seen_to >= $last AND cardinality(gap_lo) = 0
                                              FROM outbox_cursors WHERE name = 'relay'")" == t ]] && return 0
        sleep 0.1
    done
    return 1
}

outbox_max() { psql -X -At "$DATABASE_URL" -c 'SELECT coalesce(max(id), 0) FROM outbox'; }

ingest() {
    local id=$1 scale=$2 out rate t0 first last
    local cmd=("$BIN" load --movements "$MOVEMENTS" --per-message 500 --latency-samples 0)
    # Events of the runs before (publish -> visible) must not be counted as this run's.
    first="$(outbox_max)"
    relay_past "$first" 600 || say "the relay is still behind the runs before; ingest.events includes their events"
    t0=$(date +%s.%N)
    out="$(bounded 1800 "${cmd[@]}" 2>&1)" || die "omnistock load failed: $out"
    printf '%s\n' "$out" >>"$WORK/load.log"
    rate="$(grep 'all committed after' <<<"$out" | grep -Eo '\(([0-9.]+) movements/s' | grep -Eo '[0-9.]+')"
    record "$id" "$scale" "$rate" "movements/s" "omnistock load --movements $MOVEMENTS --per-message 500 --latency-samples 0" \
        null null null null "$(grep 'all committed after' <<<"$out" | sed 's/  */ /g')"
    [[ "$id" == ingest.1d ]] || return 0
    # The same run until its change events are in JetStream too.
    last="$(outbox_max)"
    local ok=0 secs events
    relay_past "$last" 600 && ok=1
    secs="$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
    events=$((last - first))
    local what="omnistock load (as ingest.1d), until the relay has published every change event it caused"
    if ((ok)); then
        record ingest.events "$scale" "$(awk -v n="$MOVEMENTS" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')" \
            "movements/s" "$what" null null null null \
            "$events change events in $secs s: $(awk -v n="$events" -v s="$secs" 'BEGIN { printf "%.0f", n / s }') events/s"
    else
        record ingest.events "$scale" 0 "movements/s" "$what" null null null 1 \
            "the relay had not published the run's $events change events after $secs s"
    fi
}

# --------------------------------------------------------------------------

main() {
    mkdir -p "$WORK"
    rm -f "$FIGS" "$WORK/wrk.log" "$WORK/load.log"
    install_tools
    bounded 600 "$SERVICES" install
    ensure_pgbench

    say "cargo build --release"
    bounded 3600 cargo build --release --quiet

    fresh_services
    machine
    ceilings

    local scale
    for scale in demo $SCALES; do
        measure "$scale"
    done

    local end
    end=$(date +%s)
    jq -s --slurpfile m "$BENCH_DIR/machine.json" \
        --arg started "$(date -u -d "@$START_EPOCH" +%Y-%m-%dT%H:%M:%SZ)" \
        --argjson dur "$((end - START_EPOCH))" --argjson quick "$([[ "$QUICK" == 1 ]] && echo true || echo false)" \
        --arg note "${BENCH_NOTE:-}" --arg git "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
        '{started_at: $started, duration_s: $dur, quick: $quick, note: $note, git: $git,
          machine: $m[0], figures: .}' "$FIGS" >"$RESULTS"
    mkdir -p "$OUT_DIR"
    "$BIN" bench report "$RESULTS" --out "$OUT_DIR/performance.md" --svg "$OUT_DIR/performance.svg"
    say "done in $((end - START_EPOCH)) s: $RESULTS, $OUT_DIR/performance.md"
}

main "$@"
