"""The Python benchmark (``benchmarks/bench.py``) runs every workload of every transport
and checks every message (``--smoke``: a few hundred messages, no figure that means
anything), and places its processes on the cores it says it does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"


def run_python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
def test_children_are_pinned_to_the_core_asked_for() -> None:
    # A process that pinned itself forks children whose own affinity is that one core: the
    # bench must pin them from the cores it had at start (it once ran every "two-core"
    # figure after the first with both processes on core 0).
    out = run_python(f"""
import os, runpy
bench = runpy.run_path({str(BENCH)!r})
bench["pin"](0)
parent = os.sched_getaffinity(0)
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    bench["pin"](1)
    os.write(w, repr(sorted(os.sched_getaffinity(0))).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(sorted(parent), os.read(r, 100).decode())
""")
    cores = sorted(os.sched_getaffinity(0))
    assert out.split() == [f"[{cores[0]}]", f"[{cores[1]}]"]


def test_every_workload_runs() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--smoke"], capture_output=True,
                         text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line for line in out.stdout.splitlines() if line.startswith("| shmq")]
    assert len(rows) == 6, out.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 7, row
        # Every shmq form has both throughput figures, the one-core and the 2P+2C figure;
        # round trips for the forms of one message per call.
        assert all(cells[i] != "–" for i in (1, 2, 5, 6)), row
        assert ("(32)" in cells[0]) == (cells[3] == "–"), row
    assert "| multiprocessing.Pipe |" in out.stdout
