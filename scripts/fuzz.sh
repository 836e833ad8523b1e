#!/usr/bin/env bash
# Coverage-guided fuzzing of the two targets in fuzz/ with cargo-fuzz (libFuzzer + ASan).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]      default 60; e.g. 3600 for an hour each
#
# Needs a nightly toolchain (`rustup toolchain list`) and `cargo install cargo-fuzz`.
# Without them, the same targets run on stable as a bounded random test:
#   SHMQ_FUZZ_ITERS=200000 cargo test --release --test fuzz_replay -- --nocapture
# Crashes are saved in fuzz/artifacts/<target>/; add minimized ones to fuzz/corpus/<target>/
# (`cargo +nightly fuzz tmin <target> <file>`), which tests/fuzz_replay.rs replays in CI.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    echo "no nightly toolchain: run the stable replay instead (see the header of this script)" >&2
    exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2
    exit 2
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
for target in connect receive; do
    # Fuzz into a scratch copy so the committed seed corpus stays small and reviewed.
    work="$(mktemp -d)"
    cp corpus/"$target"/* "$work"/
    echo "== fuzzing $target for ${secs}s"
    cargo +nightly fuzz run "$target" "$work" -- -max_total_time="$secs" -max_len=8192 \
        -timeout=10 -rss_limit_mb=2048
    echo "== $target: $(ls "$work" | wc -l) corpus entries (scratch: $work)"
done
