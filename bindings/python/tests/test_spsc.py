"""Single-producer/single-consumer queues from Python: the ``create`` keyword and the
property, messages moved exactly once between processes (a Python sender and a Python, C
or Rust receiver), and :class:`shmq.RoleTaken` for a second sender or receiver, in this
process and in another."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import shmq
from conftest import PY_EXAMPLES, Procs, run_python
from test_crosslang import TASK_LINE

# Sends ids FIRST .. FIRST+COUNT-1 as "spsc <id>" (one sender: they arrive in this order).
PY_SENDER = """
import sys, shmq
q = shmq.Queue.connect(sys.argv[1])
assert q.single_producer_single_consumer
first, count = int(sys.argv[2]), int(sys.argv[3])
for i in range(first, first + count):
    q.put_message(i, b"spsc %d" % i)
print("[py sender] sent", count)
"""

# Takes the sending role, says so, and keeps it until its stdin closes (or it is killed).
PY_HOLDER = """
import sys, shmq
q = shmq.Queue.connect(sys.argv[1])
q.put(b"held")
print("holding", q.name, flush=True)
sys.stdin.read()
q.close()
print("released", flush=True)
"""

# Tries to send (waiting up to 5 s) and reports how that ended.
PY_SECOND_SENDER = """
import sys, shmq
q = shmq.Queue.connect(sys.argv[1])
try:
    q.put(b"second", timeout=5)
    print("sent")
except shmq.RoleTaken as e:
    print("RoleTaken", e.status.name, "|", e.message)
"""


def test_create_keyword_and_property(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16, single_producer_single_consumer=True) as q:
        assert q.single_producer_single_consumer is True
        with shmq.Queue.connect(qname) as other:
            assert other.single_producer_single_consumer is True
        # exist_ok connects only to a queue of the same kind.
        with pytest.raises(shmq.InvalidArgument, match="single-producer/single-consumer"):
            shmq.Queue.create(qname, capacity=4, message_size=16, exist_ok=True)
        with shmq.Queue.create(
            qname, capacity=4, message_size=16, exist_ok=True, single_producer_single_consumer=True
        ) as same:
            assert same.single_producer_single_consumer
        # One handle may both send and receive.
        for i in range(4):
            q.put_message(i, b"m%d" % i)
        with pytest.raises(shmq.Full):
            q.put_nowait(b"x")
        assert [q.get_message().id for _ in range(4)] == [0, 1, 2, 3]
        with pytest.raises(shmq.Empty):
            q.get(timeout=0.01)
    with shmq.Queue.create(qname, capacity=4, message_size=16, replace=True) as plain:
        assert plain.single_producer_single_consumer is False


def test_a_second_handle_gets_role_taken_until_the_holder_closes(qname: str) -> None:
    q = shmq.Queue.create(qname, capacity=8, message_size=32, single_producer_single_consumer=True)
    other = shmq.Queue.connect(qname)
    try:
        q.put(b"a")
        q.put(b"b")
        # Sending: refused at once, however long the call may wait, and nothing is sent.
        for attempt in (
            lambda: other.put(b"x"),
            lambda: other.put(b"x", timeout=10),
            lambda: other.put_nowait(b"x"),
            lambda: other.put_message(9, b"x"),
            lambda: other.put_in_place(lambda view: 0),
        ):
            with pytest.raises(shmq.RoleTaken) as e:
                attempt()
            assert e.value.status == shmq.Status.ERR_ROLE_TAKEN
            assert qname in e.value.message and "sending role" in e.value.message
        assert other.qsize() == 2
        # Receiving: `other` takes the role, so `q` may not receive.
        assert other.get_nowait() == b"a"
        for attempt in (
            lambda: q.get(timeout=10),
            lambda: q.get_nowait(),
            lambda: q.get_into(bytearray(32)),
            lambda: q.get_in_place(lambda view, info: None),
        ):
            with pytest.raises(shmq.RoleTaken, match="receiving role"):
                attempt()
        assert q.qsize() == 1
        # Closing the holder frees the sending role.
        q.close()
        other.put(b"c")
        assert [other.get_nowait(), other.get_nowait()] == [b"b", b"c"]
        with pytest.raises(shmq.Empty):
            other.get_nowait()
    finally:
        q.close()
        other.close()


@pytest.mark.parametrize("receiver", ["python", "c", "rust"])
def test_python_sender_process_to_one_receiver_process_exactly_once_in_order(
    qname: str, procs: Procs, receiver: str, request: pytest.FixtureRequest
) -> None:
    count = 300
    with shmq.Queue.create(qname, capacity=8, message_size=64, single_producer_single_consumer=True) as q:
        if receiver == "python":
            worker = procs.python(str(PY_EXAMPLES / "worker.py"), "w", "--queue", qname, "--work-ms", "0")
        else:
            programs: Path = request.getfixturevalue("c_programs" if receiver == "c" else "rust_examples")
            worker = procs.start([programs / "worker", "w", "--queue", qname, "--work-ms", "0"])
        sender = procs.start([sys.executable, "-c", PY_SENDER, qname, 1, count])
        assert f"[py sender] sent {count}" in procs.finish(sender)
        q.shutdown()  # this handle never sent or received: it holds no role
        out = procs.finish(worker)
        stats = q.stats()
    ids = [int(m["id"]) for m in TASK_LINE.finditer(out)]
    assert ids == list(range(1, count + 1)), f"{len(ids)} ids: {ids[:5]}...{ids[-5:]}"
    assert all(m["text"] == f"spsc {m['id']}" for m in TASK_LINE.finditer(out))
    assert f"[w] queue shut down and drained; processed {count} tasks" in out
    assert (stats.messages_sent, stats.messages_received, stats.depth) == (count, count, 0)


def _second_sender(qname: str) -> str:
    out = run_python(PY_SECOND_SENDER, qname)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("holder_ends", ["closes", "is killed"])
def test_a_second_sender_process_gets_role_taken(qname: str, procs: Procs, holder_ends: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=32, single_producer_single_consumer=True) as q:
        holder = procs.start([sys.executable, "-c", PY_HOLDER, qname], stdin=subprocess.PIPE)
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == f"holding {qname}"
        # Another process, and this one, are refused while the holder lives.
        out = _second_sender(qname)
        assert out.startswith("RoleTaken ERR_ROLE_TAKEN | ") and qname in out and "sending role" in out, out
        with pytest.raises(shmq.RoleTaken):
            q.put_nowait(b"mine")
        if holder_ends == "closes":
            out, err = holder.communicate(input="", timeout=60)  # closes its stdin
            assert holder.returncode == 0 and "released" in out, err
        else:
            holder.kill()
            holder.wait(timeout=10)
        # The role is free (or taken over from the dead holder): the next sender gets it.
        assert _second_sender(qname).strip() == "sent"
        assert [q.get_nowait(), q.get_nowait()] == [b"held", b"second"]
        assert q.qsize() == 0


def test_role_taken_is_exported_and_maps_from_its_status() -> None:
    assert shmq.RoleTaken is shmq.errors.RoleTaken and "RoleTaken" in shmq.__all__
    assert issubclass(shmq.RoleTaken, shmq.Error)
    exc = shmq.errors.error_for(16, "taken")
    assert type(exc) is shmq.RoleTaken and exc.status == shmq.Status.ERR_ROLE_TAKEN
    assert shmq.status_str(shmq.Status.ERR_ROLE_TAKEN) == "role taken"


def test_a_pickled_spsc_queue_reconnects_with_its_mode(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8, single_producer_single_consumer=True) as q:
        with pickle.loads(pickle.dumps(q)) as again:
            assert again.single_producer_single_consumer
