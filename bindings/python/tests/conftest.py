"""Shared fixtures: unique self-cleaning queue names, and the Rust/C/Python programs the
cross-language tests run.

Environment (set by ``bindings/python/run-tests.sh``; each has a fallback):

- ``SHMQ_RUST_EXAMPLES``: directory of the release-built Rust examples (``worker``,
  ``producer``, ``pipeline_source``). Fallback: ``$CARGO_TARGET_DIR`` or the repository's
  ``target``, ``release/examples``, built with cargo if missing.
- The C programs (``examples-c/*.c`` and ``tests/c/*.c``) are always compiled here, with the
  project's strict flags, against ``include/shmq.h`` and the very library this ``shmq``
  package loaded, into a temporary directory.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Iterator

import pytest

import shmq

REPO = Path(__file__).resolve().parents[3]
PY_EXAMPLES = REPO / "bindings" / "python" / "examples"
HEADER = REPO / "include" / "shmq.h"

_counter = itertools.count()


def unique_name(tag: str) -> str:
    """A queue name unique to this process and call."""
    return f"py{os.getpid()}_{tag}_{next(_counter)}"


@pytest.fixture
def qname(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique queue name, unlinked after the test whatever happened."""
    tag = "".join(c for c in request.node.name if c.isalnum())[:40]
    name = unique_name(tag)
    yield name
    shmq.unlink(name, missing_ok=True)


def run_python(code: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` (dedented) in a child Python with ``args`` as ``sys.argv[1:]`` and the
    environment of :func:`child_env` plus ``env``; output captured as text, 60 s at most."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=child_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


def child_env(**extra: str) -> dict[str, str]:
    """Environment for Python children: they import the same ``shmq`` as this process."""
    env = dict(os.environ)
    package_parent = str(Path(shmq.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_parent, env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def rust_examples() -> Path:
    """Directory holding the release-built Rust examples."""
    wanted = ("worker", "producer", "pipeline_source")
    given = os.environ.get("SHMQ_RUST_EXAMPLES")
    if given:
        path = Path(given)
    else:
        target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
        path = target / "release" / "examples"
    if not all((path / w).is_file() for w in wanted):
        if given:
            pytest.fail(f"SHMQ_RUST_EXAMPLES={given} lacks one of {wanted}")
        subprocess.run(
            ["cargo", "build", "--release", "--examples", "--manifest-path", str(REPO / "Cargo.toml")],
            check=True,
        )
    return path


@pytest.fixture(scope="session")
def c_programs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples-c/*.c and tests/c/*.c compiled against this package's library."""
    cc = os.environ.get("CC", "cc")
    if shutil.which(cc) is None:
        pytest.fail(f"no C compiler ({cc})")
    out = tmp_path_factory.mktemp("cbin")
    libdir = Path(shmq.library_path).resolve().parent
    sources = sorted((REPO / "examples-c").glob("*.c")) + sorted(
        (Path(__file__).parent / "c").glob("*.c")
    )
    for src in sources:
        subprocess.run(
            [
                cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1",
                f"-I{REPO / 'include'}", str(src), "-o", str(out / src.stem),
                f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-lshmq",
            ],
            check=True,
        )
    return out


class Procs:
    """Child processes that are killed (and reaped) if a test ends early."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen[str]] = []

    def start(self, args: list[str], **kwargs: object) -> "subprocess.Popen[str]":
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("env", child_env())
        proc = subprocess.Popen([str(a) for a in args], text=True, **kwargs)  # type: ignore[call-overload]
        self.children.append(proc)
        return proc

    def python(self, script: str, *args: object, **kwargs: object) -> "subprocess.Popen[str]":
        return self.start([sys.executable, script, *map(str, args)], **kwargs)

    def finish(self, proc: "subprocess.Popen[str]", timeout: float = 60) -> str:
        """Waits for ``proc`` (generous bound) and returns its stdout; fails if it failed."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"{proc.args} did not finish within {timeout} s\n{out}\n{err}")
        assert proc.returncode == 0, f"{proc.args} exited {proc.returncode}\n{out}\n{err}"
        return out

    def kill_all(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    yield p
    p.kill_all()


# A child that blocks in `call` on queue argv[1] and reports how a SIGINT ended it. It
# installs Python's own SIGINT handler, as an interactive interpreter has: one started from
# a background job of a shell without job control inherits SIGINT ignored (and Python then
# leaves it so), which would make the signal do nothing whatever the library does.
BLOCKED_CALL = """
import signal, sys, time, shmq
signal.signal(signal.SIGINT, signal.default_int_handler)
q = shmq.Queue.connect(sys.argv[1])
print("ready", flush=True)
started = time.monotonic()
try:
    {call}
except KeyboardInterrupt:
    print("interrupted after %.3f s" % (time.monotonic() - started), flush=True)
    sys.exit(42)
print("call returned", flush=True)
"""


def interrupt_blocked_call(queue_name: str, call: str) -> float:
    """Runs `call` blocked in a child process, sends it SIGINT, asserts that it raised
    KeyboardInterrupt; returns the seconds from the signal to the child's exit."""
    child = subprocess.Popen(
        [sys.executable, "-c", BLOCKED_CALL.format(call=call), queue_name],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it block inside the library
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 42, (out, err)
    assert "interrupted" in out
    return elapsed
