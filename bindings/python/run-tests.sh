#!/usr/bin/env bash
# Tests of the Python binding, run by the project's test command.
#
# Builds the Rust library and examples, installs the package with pip exactly as a user
# would (`pip install ./bindings/python`, which runs cargo and bundles libshmq.so) but into
# a scratch directory instead of the user's environment, and runs pytest against that
# installed copy. The C programs are compiled by the tests themselves (tests/conftest.py).
# Extra arguments go to pytest (e.g. `-k crosslang -x`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
target="${CARGO_TARGET_DIR:-$root/target}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

if ! "$python" -c "import pytest" 2>/dev/null; then
    echo "== installing pytest"
    "$python" -m pip install --quiet pytest
fi

echo "== cargo build --release --lib --examples"
cargo build --quiet --release --lib --examples --manifest-path "$root/Cargo.toml"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
echo "== pip install ./bindings/python (into a scratch directory)"
"$python" -m pip install --quiet --no-deps --target "$scratch/site" "$here"

echo "== pytest bindings/python/tests"
# Run from the install directory so `import shmq` can only find the installed copy.
cd "$scratch/site"
env -u SHMQ_LIBRARY \
    SHMQ_EXPECT_BUNDLED=1 \
    SHMQ_RUST_EXAMPLES="$target/release/examples" \
    PYTHONPATH="$scratch/site" \
    "$python" -m pytest -p no:cacheprovider -c "$here/pyproject.toml" --rootdir "$here" \
    "$here/tests" "$@"
