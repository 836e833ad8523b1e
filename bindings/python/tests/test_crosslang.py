"""Python, C and Rust processes on one queue: every message is received exactly once.

The programs are the project's own examples (their output is what is parsed here), plus a
small C producer (tests/c/xsend.c) and Python one-liners. Each test uses its own queue name.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

import shmq
from conftest import PY_EXAMPLES, Procs

TASK_LINE = re.compile(r"^\[(?P<worker>[^\]]+)\] processing task (?P<id>\d+): (?P<text>.*)$", re.M)

PY_SENDER = """
import sys, shmq
q = shmq.Queue.connect(sys.argv[1])
first, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    q.put_message(i, b"py %d" % i)
print("[py sender] sent", count)
"""


def _tasks(outputs: dict[str, str]) -> tuple[Counter[int], dict[int, str], Counter[str]]:
    """Ids seen, the text of each, and how many each worker took (from worker output)."""
    ids: Counter[int] = Counter()
    texts: dict[int, str] = {}
    per_worker: Counter[str] = Counter()
    for name, out in outputs.items():
        for m in TASK_LINE.finditer(out):
            assert m["worker"] == name, m.group(0)
            ids[int(m["id"])] += 1
            texts[int(m["id"])] = m["text"]
            per_worker[name] += 1
    return ids, texts, per_worker


def _assert_each_once(ids: Counter[int], expected: range) -> None:
    duplicated = sorted(i for i, n in ids.items() if n > 1)
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    assert not (duplicated or missing or extra), (
        f"duplicated {duplicated[:10]}, missing {missing[:10]}, unexpected {extra[:10]}"
    )


def test_producers_and_consumers_in_three_languages(
    qname: str, procs: Procs, rust_examples: Path, c_programs: Path
) -> None:
    """Rust, C and Python producers and Rust, C and Python consumers, all on one queue."""
    per = 400
    with shmq.Queue.create(qname, capacity=8, message_size=1024) as q:
        workers = {
            "rust-w": procs.start([rust_examples / "worker", "rust-w", "--queue", qname, "--work-ms", "0"]),
            "c-w": procs.start([c_programs / "worker", "c-w", "--queue", qname, "--work-ms", "0"]),
            "py-w": procs.python(str(PY_EXAMPLES / "worker.py"), "py-w", "--queue", qname, "--work-ms", "0"),
        }
        senders = [
            procs.start(
                [rust_examples / "pipeline_source", "--queue", qname, "--join", "--first-id", 1, "--records", per]
            ),
            procs.start([c_programs / "xsend", qname, per + 1, per]),
            procs.start([sys.executable, "-c", PY_SENDER, qname, 2 * per + 1, per]),
        ]
        for sender in senders:
            procs.finish(sender)
        q.shutdown()
        outputs = {name: procs.finish(proc) for name, proc in workers.items()}
    ids, texts, per_worker = _tasks(outputs)
    _assert_each_once(ids, range(1, 3 * per + 1))
    for i, text in texts.items():
        if i <= per:
            assert text.startswith(f"rec {i} "), text  # from Rust
        elif i <= 2 * per:
            assert text == f"c {i}", text
        else:
            assert text == f"py {i}", text
    for name, out in outputs.items():
        assert f"[{name}] queue shut down and drained; processed {per_worker[name]} tasks" in out


def test_rust_producer_feeds_c_python_and_rust_workers(
    qname: str, procs: Procs, rust_examples: Path, c_programs: Path
) -> None:
    """The design note's demo across languages (quickly: no simulated work)."""
    tasks = 60
    workers = {
        "c-worker": procs.start([c_programs / "worker", "c-worker", "--queue", qname, "--work-ms", "1"]),
        "python-worker": procs.python(
            str(PY_EXAMPLES / "worker.py"), "python-worker", "--queue", qname, "--work-ms", "1"
        ),
        "rust-worker": procs.start([rust_examples / "worker", "rust-worker", "--queue", qname, "--work-ms", "1"]),
    }
    producer = procs.start(
        [rust_examples / "producer", "--queue", qname, "--tasks", tasks, "--interval-ms", "0"]
    )
    out = procs.finish(producer)
    assert f"sent {tasks} tasks" in out
    outputs = {name: procs.finish(proc) for name, proc in workers.items()}
    ids, texts, _ = _tasks(outputs)
    _assert_each_once(ids, range(1, tasks + 1))
    assert all(text == f"Task {i} - Process this data" for i, text in texts.items())


def test_python_producer_feeds_rust_and_c_workers(
    qname: str, procs: Procs, rust_examples: Path, c_programs: Path
) -> None:
    """producer.py speaks the same message format as the Rust and C producers."""
    tasks = 60
    workers = {
        "rust-worker": procs.start([rust_examples / "worker", "rust-worker", "--queue", qname, "--work-ms", "1"]),
        "c-worker": procs.start([c_programs / "worker", "c-worker", "--queue", qname, "--work-ms", "1"]),
    }
    producer = procs.python(
        str(PY_EXAMPLES / "producer.py"), "--queue", qname, "--tasks", tasks, "--interval-ms", "0"
    )
    out = procs.finish(producer)
    assert f"[python producer] sent task {tasks}: Task {tasks} - Process this data" in out
    outputs = {name: procs.finish(proc) for name, proc in workers.items()}
    ids, texts, _ = _tasks(outputs)
    _assert_each_once(ids, range(1, tasks + 1))
    assert all(text == f"Task {i} - Process this data" for i, text in texts.items())


def test_pipeline_rust_to_c_to_python(qname: str, procs: Procs, rust_examples: Path, c_programs: Path) -> None:
    """The demo's pipeline: every record passes Rust -> C -> Python exactly once."""
    a, b, records = qname + "_a", qname + "_b", 2000
    try:
        sink = procs.python(str(PY_EXAMPLES / "pipeline_sink.py"), "--queue", b, "--records", records)
        transform = procs.start([c_programs / "pipeline_transform", "--in", a, "--out", b, "--capacity", "16"])
        source = procs.start(
            [rust_examples / "pipeline_source", "--queue", a, "--records", records, "--capacity", "16"]
        )
        assert f"sent {records} records" in procs.finish(source)
        assert f"transformed {records} records" in procs.finish(transform)
        out = procs.finish(sink)
        assert f"OK: all {records} records went rust -> c -> python" in out
    finally:
        shmq.unlink(a, missing_ok=True)
        shmq.unlink(b, missing_ok=True)


def test_pipeline_sink_reports_lost_duplicated_and_altered_records(qname: str, procs: Procs) -> None:
    """The demo's verdict can fail: feed the sink a damaged stream by hand."""
    n = 5

    def record(i: int, t_delta: int = 0) -> bytes:
        v = (i * 2654435761) % 1000003
        return b"rec %d %d %d rust>c" % (i, v, 3 * v + 7 + t_delta)

    with shmq.Queue.create(qname, capacity=16, message_size=128) as q:
        for i in (1, 2, 2, 4):  # 3 and 5 lost, 2 duplicated
            q.put_message(i, record(i))
        q.put_message(5, record(5, t_delta=1))  # 5 altered
        q.shutdown()
        sink = procs.python(str(PY_EXAMPLES / "pipeline_sink.py"), "--queue", qname, "--records", n)
        out, _ = sink.communicate(timeout=60)
    assert sink.returncode == 1, out
    assert "FAILED" in out and "2 missing: 3, 5" in out and "1 duplicated: 2" in out
    assert "record 5 altered" in out
