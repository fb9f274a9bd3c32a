#!/usr/bin/env bash
# `make test`: format check, clippy and the test suite against private
# PostgreSQL / Redis / NATS JetStream servers (instance `test`, see
# scripts/services.sh). The servers are stopped on exit, on failure too;
# set OMNISTOCK_KEEP_SERVICES=1 to leave them running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
SERVICES="$ROOT/scripts/services.sh"
cd "$ROOT"

# With the seconds since the start, so a slow CI run says which step grew.
say() { printf '==> [+%ss] %s\n' "$SECONDS" "$*"; }

# cargo may be installed by rustup without being on PATH.
if ! command -v cargo >/dev/null 2>&1; then
    cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
    [[ -x "$cargo_bin/cargo" ]] && PATH="$cargo_bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || { echo "test.sh: cargo not found" >&2; exit 1; }

# fmt and clippy are rustup components a minimal toolchain lacks: add them when missing.
for pair in fmt:rustfmt clippy:clippy; do
    subcommand="${pair%%:*}" component="${pair##*:}"
    if ! cargo "$subcommand" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 \
            || { echo "test.sh: cargo $subcommand is missing and rustup is not there to add it" >&2; exit 1; }
        say "installing the $component component"
        rustup component add "$component"
    fi
done

# shellcheck disable=SC2317 # invoked by trap
stop_services() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ "${OMNISTOCK_KEEP_SERVICES:-0}" == 1 ]]; then
        say "leaving services of instance test running (OMNISTOCK_KEEP_SERVICES=1)"
    elif ! out="$("$SERVICES" stop test 2>&1)"; then
        printf '%s\n' "$out" >&2
    fi
    exit "$rc"
}
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting services (instance test)"
"$SERVICES" start test
eval "$("$SERVICES" env test)"
OMNISTOCK_TEST_REDIS_SERVER="$(command -v redis-server)"
export OMNISTOCK_TEST_REDIS_SERVER
say "DATABASE_URL=$DATABASE_URL REDIS_URL=$REDIS_URL NATS_URL=$NATS_URL"

# Every test makes its own database (t_<uuid>) and leaves it for a post-mortem; the instance's
# data directory outlives the run, so drop what earlier runs left before it fills the disk.
stale="$(psql "$DATABASE_URL" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 't\_%'")"
if [[ -n "$stale" ]]; then
    say "dropping $(wc -l <<<"$stale") test databases left by earlier runs"
    while read -r db; do
        psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
    done <<<"$stale"
fi

failed=()
# The test runner's own summary scrolls away under the steps after it: keep its log, and repeat
# the failing tests in the last lines of the run (which is all a CI report may show).
TEST_LOG="$(mktemp "${TMPDIR:-/tmp}/omnistock-tests.XXXXXX")"

say "browser test prerequisites (chromium, node, tests/browser npm packages)"
bash "$ROOT/scripts/browser-deps.sh" || failed+=(browser-deps)

say "cargo fmt --check"
cargo fmt --check || failed+=(fmt)

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings || failed+=(clippy)

if cargo nextest --version >/dev/null 2>&1; then
    say "cargo nextest run --no-fail-fast"
    cargo nextest run --no-fail-fast 2>&1 | tee "$TEST_LOG" || failed+=(tests)
else
    say "cargo test --no-fail-fast (cargo-nextest not installed)"
    cargo test --no-fail-fast 2>&1 | tee "$TEST_LOG" || failed+=(tests)
fi

# The deploy files, without Docker or a cluster: the Dockerfile's steps run or checked (the
# runtime stage and its HEALTHCHECK run with the debug binary the tests built), systemd, kustomize.
say "deploy files (scripts/deploy-check.sh)"
bash "$ROOT/scripts/deploy-check.sh" || failed+=(deploy-check)

# The short fuzz run: 20 s of libFuzzer on the movement decoder where nightly and cargo-fuzz
# are installed, otherwise the replay of its corpus on stable (`make fuzz` is the long form).
say "fuzz: movement decoder (short)"
bash "$ROOT/scripts/fuzz.sh" short || failed+=(fuzz)

if ((${#failed[@]})); then
    if [[ " ${failed[*]} " == *" tests "* ]]; then
        # Why each failed: the panic line and the few lines after it (a broken promise's list).
        echo "test.sh: why:" >&2
        grep -A6 -E "^ *thread '.*' .*panicked at" "$TEST_LOG" | cut -c1-300 | tail -n 60 >&2 || true
        echo "test.sh: failing tests:" >&2
        grep -E '^ *(FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|LEAK-FAIL) \[|^test .* FAILED$|^error: ' "$TEST_LOG" \
            | sort -u | tail -n 40 >&2 || true
    fi
    echo "test.sh: failed steps: ${failed[*]}" >&2
    exit 1
fi
rm -f "$TEST_LOG"
say "all steps passed"
