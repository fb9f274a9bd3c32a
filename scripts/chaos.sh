#!/usr/bin/env bash
# `make chaos`: the long form of the fault-injection tests (tests/faults). CI runs the short
# form inside `make test` (5 kill -9 rounds during 50,000 movements). Each fault test starts
# and kills its own PostgreSQL, Redis and NATS; this script only makes sure they are installed
# and tells the tests where the binaries are. Override the size with OMNISTOCK_CHAOS_ROUNDS,
# OMNISTOCK_CHAOS_MOVEMENTS; replay a run with the OMNISTOCK_CHAOS_SEED it printed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"
bash scripts/services.sh install
eval "$(bash scripts/services.sh env test)"
export OMNISTOCK_CHAOS_ROUNDS="${OMNISTOCK_CHAOS_ROUNDS:-20}"
export OMNISTOCK_CHAOS_MOVEMENTS="${OMNISTOCK_CHAOS_MOVEMENTS:-100000}"
# the 3-node cluster test's long form: 50,000 movements
export OMNISTOCK_LONG="${OMNISTOCK_LONG:-1}"
if cargo nextest --version >/dev/null 2>&1; then
    exec cargo nextest run --test faults --no-fail-fast --no-capture
fi
exec cargo test --test faults -- --nocapture
