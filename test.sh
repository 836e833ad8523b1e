#!/usr/bin/env bash
# Runs every test of shmq: Rust (unit, cross-process integration, crash and kill tests, the
# CLI), C and C++ (the C and C++ suites plain and under ASan/UBSan, header checks, C/Rust
# cross-process runs, all driven by `cargo test`), and Python (pytest against the
# pip-installed package, including Python/C/Rust cross-process runs).
#
#   ./test.sh            # everything
#   ./test.sh rust       # only the cargo part;  ./test.sh python  # only the Python part
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

part="${1:-all}"

if [[ "$part" == all || "$part" == rust ]]; then
    echo "== cargo test --features crash-points (Rust and C suites)"
    # crash-points compiles in the test-only hooks the crash tests stop processes at; they do
    # nothing unless SHMQ_CRASH_AT names a point.
    cargo test --no-fail-fast --features crash-points
fi

if [[ "$part" == all || "$part" == python ]]; then
    echo "== Python binding"
    bindings/python/run-tests.sh
fi
