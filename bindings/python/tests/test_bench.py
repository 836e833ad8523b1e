"""The Python benchmark (``benchmarks/bench.py``) runs every workload of every transport
and checks every message (``--smoke``: a few hundred messages, no figure that means
anything), and places its processes on the cores it says it does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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


@pytest.mark.parametrize("after", [0.0, 0.3])
def test_a_terminated_run_leaves_no_queue_behind(after: float) -> None:
    # SIGTERM as the run's first queues appear, or a moment into its workloads: the run's
    # queues are unlinked on the way out.
    bench = subprocess.Popen([sys.executable, str(BENCH), "--quick", "--only", "shmq put/get"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    prefix = f"shmq.pybench{bench.pid}_"
    try:
        deadline = time.monotonic() + 60
        while not any(n.startswith(prefix) for n in os.listdir("/dev/shm")):
            assert bench.poll() is None, f"the bench ended before it made a queue: {bench.stderr}"
            assert time.monotonic() < deadline, "no queue of the bench's after 60 s"
            time.sleep(0.01)
        time.sleep(after)
        bench.send_signal(signal.SIGTERM)
        try:
            status = bench.wait(timeout=60)
        except subprocess.TimeoutExpired:
            status = "still running 60 s after SIGTERM"
        # What the bench printed, for a failure's message (it went to a pipe).
        said = bench.stderr.read() if bench.poll() is not None else ""
        assert status == 128 + signal.SIGTERM, f"status {status}: {said}"
        assert [n for n in os.listdir("/dev/shm") if n.startswith(prefix)] == [], said
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        for n in os.listdir("/dev/shm"):
            if n.startswith(prefix):
                os.unlink(os.path.join("/dev/shm", n))
