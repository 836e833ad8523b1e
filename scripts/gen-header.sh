#!/bin/sh
# Regenerates include/shmq.h from src/ffi.rs with the pinned cbindgen (a dev-dependency),
# configured by cbindgen.toml. Run it after changing the C ABI, then commit the header.
# `cargo test --test header` fails while the committed header differs from this output.
# Nothing else writes the header (build.rs only probes the compiler).
set -eu
cd "$(dirname "$0")/.."
SHMQ_UPDATE_HEADER=1 cargo test --quiet --test header committed_header_is_current
cargo test --quiet --test header
echo "include/shmq.h regenerated; review it with 'git diff include/shmq.h' and commit it."
