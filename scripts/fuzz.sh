#!/usr/bin/env bash
# Fuzzes the movement decoder and validator (fuzz/fuzz_targets/decode_message.rs).
#   bash scripts/fuzz.sh short   # CI: ~20 s of libFuzzer (plus the build), or the stable replay
#   bash scripts/fuzz.sh long    # 1 hour, all cores: FUZZ_SECONDS / FUZZ_JOBS override
# libFuzzer needs nightly Rust and cargo-fuzz; without them the short form falls back to the
# stable replay of the corpus (cargo test in fuzz/), so CI never depends on nightly.
# New inputs go to a scratch corpus: the seeds in fuzz/corpus stay as committed.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
mode="${1:-short}"
case "$mode" in
  short) seconds="${FUZZ_SECONDS:-20}"; jobs="${FUZZ_JOBS:-1}" ;;
  long)  seconds="${FUZZ_SECONDS:-3600}"; jobs="${FUZZ_JOBS:-$(nproc)}" ;;
  *) echo "usage: $0 short|long" >&2; exit 2 ;;
esac
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$PWD/target}"
if cargo +nightly --version >/dev/null 2>&1 && cargo fuzz --version >/dev/null 2>&1; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  # -rss_limit_mb and -max_len keep a loaded 2-core box responsive; a crash leaves its input in
  # fuzz/artifacts/decode_message/ (replay: cargo +nightly fuzz run decode_message <file>).
  cargo +nightly fuzz run decode_message "$scratch" corpus/decode_message -- \
    -max_total_time="$seconds" -jobs="$jobs" -workers="$jobs" -max_len=16384 -rss_limit_mb=1024 \
    -print_final_stats=1
else
  echo "fuzz: nightly or cargo-fuzz missing (cargo install cargo-fuzz); running the stable replay" >&2
  [ "$mode" = long ] && { echo "fuzz: the long run needs libFuzzer" >&2; exit 1; }
  cargo test --no-default-features
fi
