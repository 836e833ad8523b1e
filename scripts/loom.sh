#!/usr/bin/env bash
# Model-checks the ring (src/ring.rs) with loom: tests/loom_ring.rs explores every interleaving
# of a few threads, and the weak-memory outcomes of their atomics, on rings of one and two
# slots, bounded by LOOM_MAX_PREEMPTIONS preemptions per execution.
#
#   scripts/loom.sh [test name filter]          LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh
#
# Under `--cfg loom` the ring's atomics are loom's (src/sync.rs); the code checked is the
# production ring. A failure prints the assertion; rerun with LOOM_LOG=info LOOM_LOCATION=1
# (and LOOM_CHECKPOINT_FILE to replay the failing path) to see the interleaving. The build
# uses its own target directory: `--cfg loom` rebuilds every dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/loom"
exec cargo test --release --test loom_ring -- "$@"
