#!/usr/bin/env bash
# Runs the stress and fault tests under AddressSanitizer and ThreadSanitizer (nightly), or
# under valgrind memcheck where no nightly toolchain exists (no race checking then).
#
#   scripts/sanitize.sh [asan|tsan|valgrind|all]     (default: all that the toolchain allows)
#
# Notes
# * Sanitizers need nightly (`-Zsanitizer`). std is not rebuilt instrumented (that needs the
#   rust-src component and -Zbuild-std), hence `-Cunsafe-allow-abi-mismatch=sanitizer` and, for
#   TSan, scripts/tsan.supp for std's internals.
# * Most tests run several processes over shared memory. ASan checks every process (children
#   are the same instrumented test binary). TSan only sees threads within one process: the
#   in-process multi-threaded ring test (tests/ring.rs) is where it checks the algorithm's
#   orderings; the cross-process tests run under it for memory-safety of each process.
# * Leak checking is off: tests SIGKILL children on purpose.
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
target="$(rustc -vV | sed -n 's/^host: //p')"
base="${CARGO_TARGET_DIR:-$PWD/target}"
tests=(--test crash --test hostile --test fuzz_replay --test kill_storm --test ring --test queue)
export SHMQ_STORM_SECS="${SHMQ_STORM_SECS:-5}"

have_nightly() { rustup toolchain list 2>/dev/null | grep -q '^nightly'; }

run_asan() {
    echo "== AddressSanitizer"
    RUSTFLAGS="-Zsanitizer=address -Cunsafe-allow-abi-mismatch=sanitizer" \
    RUSTDOCFLAGS="-Zsanitizer=address" \
    ASAN_OPTIONS="detect_leaks=0:abort_on_error=1" \
    CARGO_TARGET_DIR="$base/asan" \
        cargo +nightly test --target "$target" --features crash-points "${tests[@]}"
}

run_tsan() {
    echo "== ThreadSanitizer"
    RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
    TSAN_OPTIONS="suppressions=$PWD/scripts/tsan.supp:halt_on_error=1:report_signal_unsafe=0" \
    CARGO_TARGET_DIR="$base/tsan" \
        cargo +nightly test --target "$target" --features crash-points "${tests[@]}"
}

run_valgrind() {
    command -v valgrind >/dev/null || { echo "valgrind not installed (apt-get install valgrind)" >&2; exit 2; }
    echo "== valgrind memcheck"
    export CARGO_TARGET_DIR="$base/valgrind"
    cargo test --no-run --features crash-points "${tests[@]}"
    # Memcheck on the single-process suites (children run uninstrumented: valgrind does not
    # follow them unless --trace-children=yes, which makes the timing tests too slow).
    for t in ring hostile fuzz_replay; do
        bin="$(cargo test --no-run --features crash-points --test "$t" --message-format=json 2>/dev/null \
            | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)"
        echo "-- memcheck $t"
        SHMQ_FUZZ_ITERS=200 valgrind -q --error-exitcode=99 --leak-check=no "$bin" --test-threads=2
    done
    # No helgrind: it does not model C11 atomics' happens-before, so every Release/Acquire
    # hand-over of a slot is reported as a race (tried: ~95 reports on tests/ring.rs, all in
    # correctly ordered atomic accesses). ThreadSanitizer is the race checker here.
}

case "$what" in
    asan) run_asan ;;
    tsan) run_tsan ;;
    valgrind) run_valgrind ;;
    all)
        if have_nightly; then run_asan; run_tsan; else
            echo "no nightly toolchain: sanitizers unavailable, using valgrind" >&2
            run_valgrind
        fi ;;
    *) echo "usage: $0 [asan|tsan|valgrind|all]" >&2; exit 2 ;;
esac
echo "sanitize: $what OK"
