#!/usr/bin/env bash
# Checks the deploy files where there is no Docker engine and no cluster, by running what can
# run here:
#   1. Dockerfile: every step is extracted and run or checked. The build context the COPY
#      steps would send is assembled (each source must exist and not be in .dockerignore);
#      the builder's `cargo build --release --locked` is checked with `cargo fetch --locked`
#      on that context (lock file current, every target present) and, with --full-build, run
#      for real; the runtime stage is laid out in a temporary root (COPY --from, mode 0755),
#      its ENTRYPOINT + CMD run with its ENV as its USER (non-root), against fresh databases on
#      the running servers, and its HEALTHCHECK command must pass while the daemon runs and
#      fail after it stopped (which it must do cleanly on SIGTERM).
#   2. deploy/omnistock.service: `systemd-analyze verify` (no warning allowed).
#   3. deploy/k8s: `kubectl kustomize` renders the base (when kubectl is installed).
#
# usage: scripts/deploy-check.sh [--full-build]
#   Without --full-build the runtime stage runs the debug binary
#   ($CARGO_TARGET_DIR/debug/omnistock, built by `cargo build` or the tests) in place of the
#   release one: the steps are the same, no release build is needed (CI).
#   --full-build runs the builder stage's RUN (a release build: minutes, about 1.5 GB in a
#   temporary directory that is deleted afterwards) and uses its binary.
# Needs DATABASE_URL, REDIS_URL, NATS_URL of running servers:
#   eval "$(scripts/services.sh env test)"
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
FULL=0
case "${1:-}" in
    --full-build) FULL=1 ;;
    "") ;;
    *) echo "usage: scripts/deploy-check.sh [--full-build]" >&2; exit 2 ;;
esac
: "${DATABASE_URL:?run with the services env: eval \"\$(scripts/services.sh env test)\"}"
: "${REDIS_URL:?}" "${NATS_URL:?}"
for tool in jq psql cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "deploy-check: $tool is needed" >&2; exit 1; }
done
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
DEBUG_BIN="$TARGET/debug/omnistock"

say() { printf 'deploy-check: %s\n' "$*"; }
fail() { printf 'deploy-check: FAILED: %s\n' "$*" >&2; exit 1; }

TMP="$(mktemp -d /tmp/omnistock-deploy-check.XXXXXX)"
chmod 0755 "$TMP"
TAG="dc$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')"
DB_NAME="${TAG}_db"
DB_URL="${DATABASE_URL%/*}/$DB_NAME"
DAEMON_PID=""
cleanup() {
    local rc=$?
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$DB_NAME\" WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT

# ---- 1. Dockerfile ---------------------------------------------------------------------
# One instruction per line: continuations joined, comment lines dropped.
mapfile -t STEPS < <(awk '
    !cont && /^[[:space:]]*#/ { next }
    {
        line = $0; sub(/[[:space:]]+$/, "", line)
        if (line ~ /\\$/) { sub(/\\$/, "", line); buf = buf line " "; cont = 1; next }
        buf = buf line
        if (buf ~ /[^[:space:]]/) print buf
        buf = ""; cont = 0
    }' Dockerfile)
((${#STEPS[@]} > 0)) || fail "no instructions in Dockerfile"

mapfile -t IGNORED < <(grep -v '^[[:space:]]*\(#\|$\)' .dockerignore | sed 's#/*$##')
declare -A ARGS=() STAGE_ROOT=()
ENV_VARS=()
STAGE="" WORKDIR="/" USER_SPEC="" HEALTH_OPTS="" STAGES=0
HEALTH=() ENTRYPOINT=() CMD=()

expand_args() { # ${NAME} of ARG defaults
    local s="$1" k
    for k in "${!ARGS[@]}"; do s="${s//\$\{$k\}/${ARGS[$k]}}"; done
    printf '%s' "$s"
}
json_array() { # exec form only: distroless has no shell to run a string
    jq -e -r 'if type == "array" and all(type == "string") then .[] else error("not an exec-form array") end' <<<"$1" \
        || fail "$2 must be an exec-form JSON array of strings: $1"
}
in_root() { printf '%s%s' "${STAGE_ROOT[$STAGE]}" "$1"; }
abs() { [[ "$1" == /* ]] && printf '%s' "$1" || printf '%s/%s' "${WORKDIR%/}" "$1"; }

for step in "${STEPS[@]}"; do
    instr="${step%%[[:space:]]*}"
    rest="$(sed -E 's/^[^[:space:]]+[[:space:]]+//' <<<"$step")"
    case "${instr^^}" in
    ARG)
        name="${rest%%=*}"
        [[ "$rest" == *=* ]] && ARGS[$name]="${rest#*=}"
        say "ARG $rest: recorded" ;;
    FROM)
        image="$(expand_args "$(awk '{print $1}' <<<"$rest")")"
        STAGE="$(awk 'toupper($2) == "AS" {print $3}' <<<"$rest")"
        [[ -n "$STAGE" ]] || fail "FROM $rest: name every stage (AS <name>)"
        [[ "$image" == *:* && "$image" != *:latest ]] || fail "FROM $image: pin a tag"
        STAGES=$((STAGES + 1))
        STAGE_ROOT[$STAGE]="$TMP/$STAGE"
        mkdir -p "${STAGE_ROOT[$STAGE]}"
        chmod 0755 "${STAGE_ROOT[$STAGE]}"
        WORKDIR="/" ENV_VARS=() USER_SPEC=""
        say "FROM $image AS $STAGE: checked (pinned tag); its root is a temporary directory" ;;
    WORKDIR)
        WORKDIR="$rest"
        mkdir -p "$(in_root "$WORKDIR")"
        say "WORKDIR $rest: run" ;;
    COPY)
        read -r -a words <<<"$rest"
        from=""
        if [[ "${words[0]}" == --from=* ]]; then from="${words[0]#--from=}"; words=("${words[@]:1}"); fi
        dest="$(abs "${words[-1]}")"
        unset 'words[-1]'
        for src in "${words[@]}"; do
            if [[ -n "$from" ]]; then
                [[ -n "${STAGE_ROOT[$from]:-}" ]] || fail "COPY --from=$from: no such stage"
                from_path="${STAGE_ROOT[$from]}$src"
                [[ -e "$from_path" ]] || fail "COPY --from=$from $src: the stage did not produce it"
                target="$(in_root "$dest")"
                mkdir -p "$(dirname "$target")"
                cp -a "$from_path" "$target"
                # Every directory on the way must be usable by the non-root user.
                d="$(dirname "$target")"
                while [[ "$d" != "$TMP" && "$d" != / ]]; do chmod 0755 "$d"; d="$(dirname "$d")"; done
            else
                src="${src%/}"
                [[ -e "$src" ]] || fail "COPY $src: not in the build context"
                for pat in "${IGNORED[@]}"; do
                    [[ "$src" == "$pat" || "$src" == "$pat"/* || "$src" == . ]] \
                        && fail "COPY $src: excluded by .dockerignore ($pat)"
                done
                if [[ "$dest" == */ ]]; then target="$(in_root "$dest")$(basename "$src")"; else target="$(in_root "$dest")"; fi
                mkdir -p "$(dirname "$target")"
                cp -a "$src" "$target"
            fi
        done
        say "COPY $rest: run" ;;
    RUN)
        command="$(sed -E 's/--mount=[^[:space:]]+[[:space:]]+//g' <<<"$rest")"
        root="${STAGE_ROOT[$STAGE]}"
        # Container paths of the command point into the stage's temporary root.
        local_cmd="$(sed -E "s#(^|[[:space:]])/(out|src)([/[:space:]]|$)#\1$root/\2\3#g" <<<"$command")"
        grep -q -- '--locked' <<<"$command" || fail "RUN $command: build with --locked"
        if ((FULL)); then
            say "RUN $command: running for real (release build)"
            (cd "$(in_root "$WORKDIR")" && env -u CARGO_TARGET_DIR bash -euo pipefail -c "$local_cmd") \
                || fail "RUN $command"
            say "RUN: done"
        else
            # `cargo fetch` parses the manifest as the build does (every target it names must be
            # there) and, with --locked, fails when Cargo.lock is not current.
            ctx="$(in_root "$WORKDIR")"
            (cd "$ctx" && env -u CARGO_TARGET_DIR cargo fetch --locked --offline \
                --target "$(rustc -vV | sed -n "s/^host: //p")" >/dev/null) \
                || fail "RUN $command: cargo fetch --locked fails on the COPYed context"
            # The migrations that sqlx::migrate! embeds must have been copied too.
            while read -r dir; do
                [[ -d "$ctx/$dir" ]] || fail "RUN $command: $dir (sqlx::migrate!) was not copied"
            done < <(grep -rhoE 'migrate!\("[^"]+"\)' "$ctx/src" | sed -E 's/.*"\.?\/?([^"]+)".*/\1/' | sort -u)
            [[ -x "$DEBUG_BIN" ]] || fail "no $DEBUG_BIN: cargo build first"
            install -D -m 0755 "$DEBUG_BIN" "$root/out/omnistock"
            say "RUN $command: checked (cargo fetch --locked on the copied context); the debug binary stands in for target/release/omnistock"
        fi ;;
    ENV)
        # KEY=VALUE pairs (values without spaces).
        for pair in $rest; do ENV_VARS+=("$pair"); done
        say "ENV $rest: recorded" ;;
    USER)
        USER_SPEC="$rest"
        [[ "${USER_SPEC%%:*}" =~ ^[0-9]+$ && "${USER_SPEC%%:*}" != 0 ]] \
            || fail "USER $rest: a numeric non-root uid (runAsNonRoot can check only numbers)"
        say "USER $rest: checked (numeric, non-root)" ;;
    EXPOSE) say "EXPOSE $rest: recorded" ;;
    HEALTHCHECK)
        HEALTH_OPTS="${rest%%CMD*}"
        mapfile -t HEALTH < <(json_array "$(sed -E 's/^.*CMD[[:space:]]+//' <<<"$rest")" HEALTHCHECK)
        say "HEALTHCHECK: recorded, run below" ;;
    ENTRYPOINT) mapfile -t ENTRYPOINT < <(json_array "$rest" ENTRYPOINT); say "ENTRYPOINT $rest: recorded, run below" ;;
    CMD) mapfile -t CMD < <(json_array "$rest" CMD); say "CMD $rest: recorded, run below" ;;
    *) fail "instruction $instr is not handled by this check: extend scripts/deploy-check.sh" ;;
    esac
done
((STAGES >= 2)) || fail "expected a multi-stage build"
[[ -n "$USER_SPEC" ]] || fail "the runtime stage must set USER"
((${#HEALTH[@]} > 0 && ${#ENTRYPOINT[@]} > 0)) || fail "HEALTHCHECK and ENTRYPOINT are required"

RUNTIME_ROOT="${STAGE_ROOT[$STAGE]}"
to_local() { # an absolute program path of the image, in the temporary root
    local a
    for a in "$@"; do
        if [[ "$a" == /* && -e "$RUNTIME_ROOT$a" ]]; then printf '%s\n' "$RUNTIME_ROOT$a"; else printf '%s\n' "$a"; fi
    done
}
mapfile -t RUN_ARGV < <(to_local "${ENTRYPOINT[@]}" "${CMD[@]}")
mapfile -t HEALTH_ARGV < <(to_local "${HEALTH[@]}")
opt() { sed -nE "s/.*--$1=([0-9]+)s.*/\1/p" <<<"$HEALTH_OPTS"; }
START_PERIOD="$(opt start-period)" INTERVAL="$(opt interval)" RETRIES="$(sed -nE 's/.*--retries=([0-9]+).*/\1/p' <<<"$HEALTH_OPTS")"

# The image's environment, with the port moved to a free one (the Dockerfile's may be taken
# here) and the connections of this check's own database, NATS subjects and Redis keys.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
PORT=0
for _ in $(seq 1 50); do
    candidate=$((20000 + RANDOM % 30000))
    if port_free "$candidate"; then PORT=$candidate; break; fi
done
((PORT)) || fail "no free port found"
CONTAINER_ENV=(PATH=/usr/bin:/bin)
for pair in "${ENV_VARS[@]}"; do
    if [[ "$pair" == OMNISTOCK_HTTP_ADDR=* ]]; then
        addr="${pair#*=}"
        pair="OMNISTOCK_HTTP_ADDR=${addr%:*}:$PORT"
    fi
    CONTAINER_ENV+=("$pair")
done
CONTAINER_ENV+=("DATABASE_URL=$DB_URL" "REDIS_URL=$REDIS_URL" "NATS_URL=$NATS_URL"
    "OMNISTOCK_SUBJECT_PREFIX=$TAG.inventory" "OMNISTOCK_REDIS_PREFIX=$TAG"
    "OMNISTOCK_API_KEYS=$TAG-admin-key=*")
AS_USER=()
if ((EUID == 0)); then
    AS_USER=(setpriv --reuid="${USER_SPEC%%:*}" --regid="${USER_SPEC##*:}" --clear-groups)
elif [[ "$(id -u)" != "${USER_SPEC%%:*}" ]]; then
    say "not root: running as $(id -u) instead of $USER_SPEC"
fi
in_container() { (cd "$RUNTIME_ROOT" && exec env -i "${CONTAINER_ENV[@]}" "${AS_USER[@]}" "$@"); }

psql "$DATABASE_URL" -qc "CREATE DATABASE \"$DB_NAME\"" >/dev/null
LOG="$TMP/daemon.log"
: >"$LOG" && chmod 0666 "$LOG"
# Not through in_container: $! must be the daemon itself (exec all the way), for SIGTERM.
(cd "$RUNTIME_ROOT" && exec env -i "${CONTAINER_ENV[@]}" "${AS_USER[@]}" "${RUN_ARGV[@]}") >"$LOG" 2>&1 &
DAEMON_PID=$!
say "ENTRYPOINT + CMD: running as ${USER_SPEC} on port $PORT (pid $DAEMON_PID)"

deadline=$((SECONDS + ${START_PERIOD:-30} + ${INTERVAL:-10} * ${RETRIES:-3}))
healthy=0
while ((SECONDS < deadline)); do
    kill -0 "$DAEMON_PID" 2>/dev/null || { tail -n 30 "$LOG" >&2; fail "the daemon exited"; }
    if in_container "${HEALTH_ARGV[@]}" >/dev/null 2>&1; then healthy=1; break; fi
    sleep 1
done
((healthy)) || { tail -n 30 "$LOG" >&2; fail "HEALTHCHECK never passed"; }
say "HEALTHCHECK ${HEALTH[*]}: run, exit 0 against the running daemon"

kill -TERM "$DAEMON_PID"
rc=0
wait "$DAEMON_PID" || rc=$?
DAEMON_PID=""
((rc == 0)) || { tail -n 30 "$LOG" >&2; fail "the daemon exited $rc on SIGTERM"; }
say "SIGTERM: the daemon drained and exited 0"
if in_container "${HEALTH_ARGV[@]}" >/dev/null 2>&1; then fail "HEALTHCHECK passed with no daemon"; fi
say "HEALTHCHECK: run, exit 1 with the daemon stopped"

# ---- 2. systemd unit -------------------------------------------------------------------
if command -v systemd-analyze >/dev/null 2>&1; then
    unit="$TMP/omnistock.service"
    [[ -x "$DEBUG_BIN" ]] || fail "no $DEBUG_BIN: cargo build first"
    sed -e "s#/usr/local/bin/omnistock#$DEBUG_BIN#g" \
        -e "s#^EnvironmentFile=.*#EnvironmentFile=$ROOT/deploy/omnistock.env.example#" \
        deploy/omnistock.service >"$unit"
    out="$(systemd-analyze verify "$unit" 2>&1)" || fail "systemd-analyze verify: $out"
    [[ -z "$out" ]] || fail "systemd-analyze verify warns: $out"
    say "deploy/omnistock.service: systemd-analyze verify clean"
else
    say "deploy/omnistock.service: systemd-analyze not installed, skipped"
fi

# ---- 3. kustomize ----------------------------------------------------------------------
if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize deploy/k8s >"$TMP/k8s.yaml" || fail "kubectl kustomize deploy/k8s"
    say "deploy/k8s: kubectl kustomize renders $(grep -c '^kind:' "$TMP/k8s.yaml") objects"
else
    say "deploy/k8s: kubectl not installed, render skipped (tests/deploy.rs still checks the files)"
fi
say "all checks passed"
