#!/usr/bin/env bash
# shmq's main demo: Rust, C, C++ and Python processes sharing queues in shared memory.
#
#   ./demo.sh                 # builds what it needs, runs both parts, exits non-zero on any loss
#   TASKS=40 RECORDS=100000 ./demo.sh
#
# 1. The design note's demo across languages: a Rust producer sends $TASKS tasks into
#    `task_queue`; a C worker, a C++ worker, a Python worker and a Rust worker take them
#    (300 ms of work each) and say who did what. Every task must be handled exactly once.
# 2. A pipeline: a Rust stage generates $RECORDS records into queue A, a C stage transforms
#    them into queue B, a Python stage aggregates them and proves every record went through
#    each stage exactly once.
#
# Needs: cargo, C and C++ compilers and make, python3. The Python package is used straight from the
# checkout (PYTHONPATH + SHMQ_LIBRARY pointing at the fresh build); `pip install
# ./bindings/python` installs it for good.
set -euo pipefail
set -m # each background job in its own process group, so cleanup can end it whole

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
python="${PYTHON:-python3}"
TASKS="${TASKS:-20}"
RECORDS="${RECORDS:-10000}"
WORK_MS="${WORK_MS:-300}"
task_queue="${TASK_QUEUE:-task_queue}"
run_id="demo$$"
pipe_a="${run_id}_records"
pipe_b="${run_id}_transformed"
logs="$(mktemp -d)"
jobs_started=()

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
say() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }

cleanup() {
    local status=$?
    set +m # no job-control notices for the jobs ended here
    for pgid in "${jobs_started[@]}"; do
        kill -- "-$pgid" 2>/dev/null || true
    done
    if [[ -n "${SHMQ_LIBRARY:-}" ]]; then
        "$python" - "$task_queue" "$pipe_a" "$pipe_b" <<'EOF' || true
import sys, shmq
for name in sys.argv[1:]:
    shmq.unlink(name, missing_ok=True)
EOF
    fi
    rm -rf "$logs"
    exit "$status"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# Runs "$@" in the background with its output shown and kept in $logs/$1.log; a hung
# process is ended after 120 s so the demo always ends by itself.
start() {
    local log="$logs/$1.log"
    shift
    ( timeout 120 "$@" 2>&1 | tee "$log" ) &
    jobs_started+=("$!")
}

# Waits for every job started so far; returns non-zero if any failed.
wait_all() {
    local failed=0
    for pid in "${jobs_started[@]}"; do
        wait "$pid" || failed=1
    done
    jobs_started=()
    return "$failed"
}

say "building (cargo build --release --lib --examples; make -C examples-c)"
cargo build --release --lib --examples
make -s -C examples-c
export PYTHONPATH="$root/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
export SHMQ_LIBRARY="$target/release/libshmq.so"
"$python" -c 'import shmq; print("python: shmq", shmq.__version__, "using", shmq.library_path)'

failures=0

# ----- 1. the design note's demo across languages ------------------------------------------
say "1. one Rust producer, four workers (C, C++, Python, Rust) on '$task_queue'"
# A queue left by an earlier run must not be joined by the workers before the producer
# replaces it.
"$python" -c 'import sys, shmq; shmq.unlink(sys.argv[1], missing_ok=True)' "$task_queue"
start c-worker examples-c/build/worker c-worker --queue "$task_queue" --work-ms "$WORK_MS"
start cpp-worker examples-c/build/worker_cpp cpp-worker --queue "$task_queue" \
    --work-ms "$WORK_MS"
start python-worker "$python" bindings/python/examples/worker.py python-worker \
    --queue "$task_queue" --work-ms "$WORK_MS"
start rust-worker "$target/release/examples/worker" rust-worker --queue "$task_queue" \
    --work-ms "$WORK_MS"
start producer "$target/release/examples/producer" --queue "$task_queue" --tasks "$TASKS"
demo1_ok=1
if ! wait_all; then
    echo "demo 1: a process failed" >&2
    demo1_ok=0
fi

handled="$(cat "$logs"/*-worker.log | sed -n 's/^\[[^]]*\] finished task \([0-9]*\) .*/\1/p' | sort -n)"
if [[ "$handled" == "$(seq 1 "$TASKS")" ]] && ((demo1_ok)); then
    summary=""
    for w in c-worker cpp-worker python-worker rust-worker; do
        summary+=" $w: $(grep -c "^\[$w\] finished task" "$logs/$w.log" || true),"
    done
    say "demo 1 OK: all $TASKS tasks handled exactly once (${summary%,} )"
else
    dups="$(uniq -d <<<"$handled" | tr '\n' ' ')"
    missing="$(comm -23 <(seq 1 "$TASKS" | sort) <(sort -u <<<"$handled") | sort -n | tr '\n' ' ')"
    say "demo 1 FAILED: missing tasks [${missing% }] duplicated tasks [${dups% }]"
    failures=$((failures + 1))
fi

# ----- 2. the pipeline ---------------------------------------------------------------------
say "2. pipeline: Rust source -> '$pipe_a' -> C transform -> '$pipe_b' -> Python sink ($RECORDS records)"
start sink "$python" bindings/python/examples/pipeline_sink.py --queue "$pipe_b" --records "$RECORDS"
start transform examples-c/build/pipeline_transform --in "$pipe_a" --out "$pipe_b"
start source "$target/release/examples/pipeline_source" --queue "$pipe_a" --records "$RECORDS"
if wait_all; then
    say "demo 2 OK: every record went through each stage exactly once"
else
    say "demo 2 FAILED (see above)"
    failures=$((failures + 1))
fi

if ((failures)); then
    say "demo FAILED: $failures part(s) lost or mishandled messages"
    exit 1
fi
say "demo OK: Rust, C, C++ and Python shared the queues; nothing lost, nothing handled twice"
