"""The one custom build step: build libshmq with cargo and put it inside the package.

Everything else is declared in pyproject.toml. ``pip install ./bindings/python`` (from a
checkout of the repository) runs ``cargo build --release --lib`` on the crate two
directories up (honouring ``CARGO_TARGET_DIR`` and ``CARGO``), copies the resulting
``libshmq.so`` to ``shmq/libshmq.so`` in the wheel, and tags the wheel for this platform
(it holds native code, but no Python extension, so it suits every Python 3).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # setuptools < 70.1
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
MANIFEST = HERE.parent.parent / "Cargo.toml"
LIBNAME = "libshmq.so"


def build_library() -> Path:
    """Runs cargo and returns the path of the cdylib it produced."""
    if not MANIFEST.is_file():
        sys.exit(
            f"shmq: cannot find the Rust crate at {MANIFEST}; build this package from a "
            "checkout of the shmq repository (pip install ./bindings/python)"
        )
    cargo = os.environ.get("CARGO", "cargo")
    cmd = [
        cargo,
        "build",
        "--release",
        "--lib",
        "--manifest-path",
        str(MANIFEST),
        "--message-format=json-render-diagnostics",
    ]
    print("shmq: running", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    except FileNotFoundError:
        sys.exit("shmq: cargo not found; install Rust (https://rustup.rs) or set CARGO")
    if proc.returncode != 0:
        sys.exit(f"shmq: cargo build failed with exit code {proc.returncode}")
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact" or "cdylib" not in msg["target"]["kind"]:
            continue
        for name in msg.get("filenames", []):
            if Path(name).name == LIBNAME:
                return Path(name)
    sys.exit(f"shmq: cargo did not report building {LIBNAME}")


class BuildPyWithLibrary(build_py):
    """build_py that also builds and bundles libshmq.so."""

    def run(self) -> None:
        super().run()
        library = build_library()
        if self.editable_mode:
            # Editable installs import the package from the source tree.
            dest = HERE / "shmq" / LIBNAME
        else:
            dest = Path(self.build_lib) / "shmq" / LIBNAME
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(library, dest)
        print(f"shmq: bundled {library} as {dest}", flush=True)


class PlatformWheel(bdist_wheel):
    """A wheel for this platform (native library inside) but any Python 3 (no extension)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
