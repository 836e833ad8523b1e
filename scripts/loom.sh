#!/usr/bin/env bash
# Model-checks the ring with loom: tests/loom_ring.rs (the multi-producer ring, src/ring.rs)
# and tests/loom_spsc.rs (the single-producer/single-consumer protocol, src/spsc.rs, over the
# same ring) explore every interleaving of a few threads, and the weak-memory outcomes of
# their atomics, on rings of one and two slots, bounded by LOOM_MAX_PREEMPTIONS preemptions
# per execution.
#
#   scripts/loom.sh [test name filter]          LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh
#   SHMQ_LOOM_YIELD=1 scripts/loom.sh
#
# SHMQ_LOOM_YIELD=1 makes every crash point (src/crashpoint.rs) a place where the other
# threads run first: a second search, which finds races in the windows the crash points mark
# that the default search missed (docs/LIVENESS.md). Its bound defaults to one preemption on
# top of those switches (about four minutes for all models; with two, some models ran for
# more than half an hour).
#
# Under `--cfg loom` the ring's atomics are loom's (src/sync.rs) and the SPSC module is public
# (for its model only); the code checked is the production code. A failure prints the
# assertion; rerun with LOOM_LOG=info LOOM_LOCATION=1 (and LOOM_CHECKPOINT_FILE to replay the
# failing path) to see the interleaving. The build uses its own target directory: `--cfg
# loom` rebuilds every dependency. With the default bound of 2, on two busy cores, the ring's
# model takes about six minutes and the SPSC model under one (about eleven with a bound of 3).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${SHMQ_LOOM_YIELD:-}" ]]; then
    export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-1}"
else
    export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
fi
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/loom"
exec cargo test --release --test loom_ring --test loom_spsc -- "$@"
