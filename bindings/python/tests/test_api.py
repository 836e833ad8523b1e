"""The queue.Queue-like API, in one process (other processes are in test_crosslang.py)."""

from __future__ import annotations

import array
import dataclasses
import importlib
import math
import os
import pickle
import queue
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import shmq
from conftest import run_python


def test_put_get_roundtrip_with_every_bytes_like(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=64) as q:
        q.put(b"bytes")
        q.put(bytearray(b"bytearray"))
        q.put(memoryview(b"readonly view"))
        q.put(memoryview(bytearray(b"xxwritable viewxx"))[2:-2])
        q.put(array.array("H", [1, 2]))
        q.put(memoryview(b"0123456789")[::2])  # not contiguous: copied
        q.put(b"")
        got = [q.get(timeout=5) for _ in range(7)]
    assert got == [
        b"bytes",
        b"bytearray",
        b"readonly view",
        b"writable view",
        array.array("H", [1, 2]).tobytes(),
        b"02468",
        b"",
    ]


def test_text_is_refused(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=16) as q:
        with pytest.raises(TypeError, match="encode"):
            q.put("text")  # type: ignore[arg-type]


def test_properties_and_sizes(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=3, message_size=100) as q:
        assert (q.name, q.capacity, q.message_size) == (qname, 3, 100)
        assert q.empty() and not q.full() and q.qsize() == 0
        q.put(b"a")
        assert q.qsize() == 1 and not q.empty()
        q.put(b"b")
        q.put(b"c")
        assert q.full() and q.qsize() == 3
        assert not q.is_shutdown()


def test_connect_sees_the_same_queue(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=32) as a, shmq.Queue.connect(qname) as b:
        assert (b.capacity, b.message_size) == (4, 32)
        a.put(b"from a")
        assert b.get(timeout=5) == b"from a"
        assert a.empty()


def test_nowait_and_timeouts_behave_like_queue_queue(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=8) as q:
        with pytest.raises(queue.Empty) as empty:
            q.get_nowait()
        assert isinstance(empty.value, shmq.Empty) and empty.value.status == shmq.Status.ERR_EMPTY
        with pytest.raises(shmq.Empty):
            q.get(block=False)
        started = time.monotonic()
        with pytest.raises(queue.Empty) as timed:
            q.get(timeout=0.25)
        assert time.monotonic() - started >= 0.24
        assert timed.value.status == shmq.Status.ERR_TIMEOUT
        with pytest.raises(shmq.Empty):
            q.get(timeout=0)

        q.put_nowait(b"x")
        with pytest.raises(queue.Full) as full:
            q.put_nowait(b"y")
        assert isinstance(full.value, shmq.Full) and full.value.status == shmq.Status.ERR_FULL
        with pytest.raises(shmq.Full) as timed_full:
            q.put(b"y", timeout=0.25)
        assert timed_full.value.status == shmq.Status.ERR_TIMEOUT
        with pytest.raises(ValueError, match="non-negative"):
            q.put(b"y", timeout=-1)
        assert q.get_nowait() == b"x"


def test_an_infinite_timeout_waits_without_limit_and_nan_is_refused(qname: str) -> None:
    inf = float("inf")
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        q.put(b"a", timeout=inf)  # used to raise OverflowError
        assert q.put_many([b"b"], timeout=inf) == 1
        assert q.get(timeout=inf) == b"a"
        assert q.get_many(timeout=inf) == [b"b"]
        q.put_in_place(lambda view: 0, timeout=inf)
        assert q.get_in_place(lambda view, info: bytes(view), timeout=inf) == b""
        for call in (lambda: q.get(timeout=float("nan")), lambda: q.put(b"x", timeout=-inf),
                     lambda: q.put_many([b"x"], timeout=float("nan"))):
            with pytest.raises(ValueError, match="non-negative"):
                call()


def test_a_timed_out_call_counts_once_in_the_statistics(qname: str) -> None:
    # Blocking calls wait in 100 ms slices; only the caller's real timeout may count.
    with shmq.Queue.create(qname, capacity=1, message_size=8) as q:
        with pytest.raises(shmq.Empty):
            q.get(timeout=0.35)
        stats = q.stats()
        assert stats.timeouts == 1
        # Each 100 ms slice is a call of its own to the library (up to 4 here), and slept.
        assert 1 <= stats.receiver_sleeps <= 4 and stats.sender_sleeps == 0
        received_slept = stats.receiver_sleeps
        q.put_nowait(b"x")
        with pytest.raises(shmq.Full):
            q.put(b"y", timeout=0.35)
        stats = q.stats()
        assert (stats.timeouts, stats.send_full) == (2, 1)
        assert 1 <= stats.sender_sleeps <= 4 and stats.receiver_sleeps == received_slept


def test_blocking_get_wakes_up_for_a_put_from_another_thread(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        timer = threading.Timer(0.2, q.put, args=(b"late",))
        timer.start()
        try:
            assert q.get(timeout=10) == b"late"  # waits across several slices
        finally:
            timer.join()


def test_blocking_put_waits_for_room(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=8) as q:
        q.put(b"first")
        timer = threading.Timer(0.2, q.get)
        timer.start()
        try:
            q.put(b"second", timeout=10)
        finally:
            timer.join()
        assert q.get_nowait() == b"second"


def test_messages_carry_id_and_timestamp(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=32) as q:
        before = time.time_ns()
        q.put_message(7, b"seven")
        q.put_message(2**64 - 1, b"max", timestamp_ns=123)
        q.put(b"plain")
        m = q.get_message(timeout=5)
        assert (m.id, m.data, m.redelivered) == (7, b"seven", False)
        # The library extrapolates stamps with the TSC (src/clock.rs): within 20 µs.
        assert before - 20_000 <= m.timestamp_ns <= time.time_ns() + 20_000
        assert abs(m.timestamp - m.timestamp_ns / 1e9) < 1e-6
        assert m.text() == "seven"
        got = q.get_message(timeout=5)
        # Built without the dataclass's __init__ (see `_received_message`): the same object.
        made = shmq.Message(id=2**64 - 1, data=b"max", timestamp_ns=123)
        assert got == made and hash(got) == hash(made) and repr(got) == repr(made)
        assert vars(got) == vars(made) and type(got) is shmq.Message
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.id = 1  # type: ignore[misc]
        plain = q.get_message(timeout=5)
        assert plain.data == b"plain" and plain.timestamp_ns > 0
        assert "seven" not in repr(plain) and "plain" in repr(plain)
        with pytest.raises(shmq.InvalidArgument):
            q.put_message(-1, b"x")
        with pytest.raises(shmq.InvalidArgument):
            q.put_message(2**64, b"x")


def test_get_into_fills_the_callers_buffer(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=32) as q:
        q.put(b"hello")
        q.put(b"0123456789")
        buf = bytearray(8)
        assert q.get_into(buf, timeout=5) == 5 and buf[:5] == b"hello"
        with pytest.raises(shmq.BufferTooSmall) as small:
            q.get_into(memoryview(buf)[:4])
        assert small.value.needed == 10 and isinstance(small.value, ValueError)
        assert q.qsize() == 1, "a too-small buffer never loses the message"
        big = bytearray(32)
        assert q.get_into(memoryview(big)[4:], block=False) == 10 and big[4:14] == b"0123456789"
        with pytest.raises(shmq.Empty):
            q.get_into(big, block=False)
        with pytest.raises(TypeError):
            q.get_into(b"immutable")
        # An empty buffer takes an empty message, and refuses a longer one.
        q.put(b"")
        q.put(b"x")
        assert q.get_into(bytearray(), block=False) == 0
        with pytest.raises(shmq.BufferTooSmall) as small:
            q.get_into(bytearray(), block=False)
        assert small.value.needed == 1
        # The export that keeps the buffer from being resized during the call ends with it.
        grown = bytearray(4)
        assert q.get_into(grown, block=False) == 1 and grown[:1] == b"x"
        grown.extend(b"more")


def test_shutdown_drains_then_closes(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=8) as q, shmq.Queue.connect(qname) as r:
        for i in range(3):
            q.put(bytes([i]))
        q.shutdown()
        q.shutdown()  # idempotent
        assert r.is_shutdown()
        with pytest.raises(shmq.Closed) as closed:
            q.put(b"late")
        assert closed.value.status == shmq.Status.ERR_CLOSED
        assert list(r) == [b"\x00", b"\x01", b"\x02"]  # iteration ends once drained
        with pytest.raises(shmq.Closed):
            r.get()
        with pytest.raises(shmq.Closed):
            r.get_nowait()
        assert list(r.messages()) == []


def test_iteration_yields_until_shutdown_from_another_thread(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=8) as q:

        def produce() -> None:
            for i in range(20):
                q.put(b"%d" % i)
            q.shutdown()

        t = threading.Thread(target=produce)
        t.start()
        got = [int(m) for m in q]
        t.join()
        assert got == list(range(20))


def test_close_is_idempotent_and_final(qname: str) -> None:
    q = shmq.Queue.create(qname, capacity=2, message_size=8)
    assert "0/2" in repr(q)
    q.close()
    q.close()
    assert q.closed and "closed" in repr(q)
    for op in (q.qsize, q.get_nowait, lambda: q.put(b"x"), q.shutdown, q.stats):
        with pytest.raises(ValueError, match="closed"):
            op()
    # Closing a handle does not remove the queue.
    with shmq.Queue.connect(qname) as again:
        assert again.capacity == 2


def test_close_from_another_thread_ends_a_blocked_get(qname: str) -> None:
    q = shmq.Queue.create(qname, capacity=2, message_size=8)
    errors: list[BaseException] = []

    def blocked() -> None:
        try:
            q.get()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.2)
    q.close()  # waits for the blocked call to leave the library, then frees the handle
    t.join(timeout=5)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ValueError)


@pytest.mark.parametrize("without_lock", [True, False], ids=["gil", "locked"])
def test_close_races_with_calls_in_flight_on_other_threads(
    qname: str, without_lock: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the GIL, every message's path takes and gives back its use of the handle
    without the lock (without the GIL, under it: both paths run here). close() from
    another thread must neither free the handle under a call nor wait for a use that was
    given back: each round ends with every worker refused (ValueError) and close()
    returned, whenever in the workers' loop it lands."""
    module = importlib.import_module("shmq.queue")
    monkeypatch.setattr(module, "_ONE_THREAD_AT_A_TIME", without_lock)
    # Switch threads as often as the interpreter can, so that close() lands between a
    # worker's steps (a worker otherwise gives the GIL up only inside the library's calls).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for round_ in range(60):
            # One worker too: with several, another's use ending would wake a close()
            # left waiting for a use given back without a word.
            _close_race(qname, round_, workers=1 + round_ % 2 * 3)
    finally:
        sys.setswitchinterval(interval)


def _close_race(qname: str, round_: int, workers: int) -> None:
    q = shmq.Queue.create(qname, capacity=4, message_size=8)
    outcomes: list[BaseException] = []
    started = threading.Barrier(workers + 1)

    def work() -> None:
        started.wait()
        try:
            while True:
                try:
                    q.put(b"x", block=False)
                except shmq.Full:
                    pass
                try:
                    q.get(block=False)
                except shmq.Empty:
                    pass
        except BaseException as exc:  # noqa: BLE001
            outcomes.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(0.001 * (round_ % 5))
    closer = threading.Thread(target=q.close, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), f"round {round_}: close() waits for a use nobody holds"
    for t in threads:
        t.join(timeout=10)
    assert not any(t.is_alive() for t in threads)
    assert len(outcomes) == workers
    assert all(type(e) is ValueError and "closed" in str(e) for e in outcomes), outcomes
    shmq.unlink(qname)


def test_a_use_given_back_as_close_begins_lets_close_finish(
    qname: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one interleaving the stress above rarely reaches, forced: a call takes its use,
    close() starts on another thread and waits for that use, and only then does the call
    look at the handle's state. It must give the use back *and* wake close(): with no
    other thread to end a use, close() would otherwise wait forever."""
    monkeypatch.setattr(importlib.import_module("shmq.queue"), "_ONE_THREAD_AT_A_TIME", True)
    q = shmq.Queue.create(qname, capacity=4, message_size=8)
    closer = threading.Thread(target=q.close, daemon=True)  # a failure must not hang exit

    class CloseAfterAppend(list):  # stands in for the handle's list of uses
        armed = True

        def append(self, item: object) -> None:
            super().append(item)
            if CloseAfterAppend.armed:
                CloseAfterAppend.armed = False
                closer.start()
                deadline = time.monotonic() + 5
                while not q._closing and time.monotonic() < deadline:
                    time.sleep(0.001)
                time.sleep(0.05)  # close() now counts this use and waits for it

    q._uses = CloseAfterAppend(q._uses)
    with pytest.raises(ValueError, match="closed"):
        q.put(b"x", block=False)
    closer.join(timeout=5)
    assert not closer.is_alive(), "close() still waits for the use given back"
    assert q.closed and q._handle is None


def test_direct_construction_is_refused() -> None:
    with pytest.raises(TypeError, match="create"):
        shmq.Queue()


def test_create_options(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8, mode=0o640, checksum=False) as q:
        assert stat.S_IMODE(os.stat(f"/dev/shm/shmq.{qname}").st_mode) == 0o640
        q.put(b"no crc")
        with pytest.raises(shmq.AlreadyExists) as exists:
            shmq.Queue.create(qname, capacity=2, message_size=8)
        assert isinstance(exists.value, FileExistsError) and qname in str(exists.value)
        with shmq.Queue.create(qname, capacity=2, message_size=8, exist_ok=True) as same:
            assert same.get_nowait() == b"no crc"
        with pytest.raises(shmq.InvalidArgument):  # exists with another geometry
            shmq.Queue.create(qname, capacity=3, message_size=8, exist_ok=True)
        q.put(b"old")
        with shmq.Queue.create(qname, capacity=5, message_size=8, replace=True) as fresh:
            assert fresh.capacity == 5 and fresh.empty()
        assert q.get_nowait() == b"old", "the replaced queue lives on for its users"
    with pytest.raises(ValueError):
        shmq.Queue.create(qname, exist_ok=True, replace=True)


def test_stats_are_typed_and_count(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        for i in range(3):
            q.put(b"abcd")
        q.get()
        s = q.stats()
        assert isinstance(s, shmq.Stats)
        assert (s.messages_sent, s.messages_received, s.depth, s.capacity) == (3, 1, 2, 4)
        assert s.peak_depth >= 2 and s.checksum_failures == 0
        with pytest.raises(Exception):
            s.depth = 0  # type: ignore[misc]  # frozen


def test_spin_limit_is_set_per_handle_and_checked(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=16) as q:
        assert q.spin_limit == 1e-05
        q.spin_limit = 0.00025
        assert q.spin_limit == 0.00025
        with shmq.Queue.connect(qname) as other:
            assert other.spin_limit == 1e-05  # another handle keeps its own
        q.spin_limit = math.inf  # never sleep
        assert q.spin_limit == math.inf
        for huge in (1e30, 10**400, 18446744073.709551):  # 2**64 ns and beyond: the same
            q.spin_limit = 0
            q.spin_limit = huge
            assert q.spin_limit == math.inf
        for bad in (-1, -1e-9, math.nan):
            with pytest.raises(ValueError, match="non-negative"):
                q.spin_limit = bad
        for wrong in ("1", None, True):
            with pytest.raises(TypeError, match="number of seconds"):
                q.spin_limit = wrong  # type: ignore[assignment]
        assert q.spin_limit == math.inf  # refused values changed nothing
        q.spin_limit = 0  # sleep after one look: still waits, and times out as asked
        assert q.spin_limit == 0.0
        with pytest.raises(shmq.Empty):
            q.get(timeout=0.02)
    with pytest.raises(ValueError):
        q.spin_limit  # a closed handle


def test_unlink(qname: str) -> None:
    shmq.Queue.create(qname, capacity=1, message_size=1).close()
    shmq.unlink(qname)
    with pytest.raises(shmq.NotFound):
        shmq.Queue.connect(qname)
    with pytest.raises(shmq.NotFound):
        shmq.unlink(qname)
    shmq.unlink(qname, missing_ok=True)


def test_pickling_reconnects_by_name(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        q.put(b"p")
        with pickle.loads(pickle.dumps(q)) as copy:
            assert copy.name == qname and copy.get_nowait() == b"p"
    err = pickle.loads(pickle.dumps(shmq.BufferTooSmall("m", needed=5)))
    assert (type(err), err.message, err.needed) == (shmq.BufferTooSmall, "m", 5)


def test_many_threads_share_one_handle_and_each_message_arrives_once(qname: str) -> None:
    producers, consumers, per_producer = 6, 6, 1500
    with shmq.Queue.create(qname, capacity=16, message_size=16) as q, shmq.Queue.connect(qname) as other:
        received: list[list[int]] = [[] for _ in range(consumers)]
        failures: list[BaseException] = []

        def produce(p: int) -> None:
            try:
                for i in range(per_producer):
                    q.put(b"%d" % (p * per_producer + i), timeout=30)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        def consume(c: int) -> None:
            handle = q if c % 2 else other  # two handles, many threads each
            try:
                for data in handle:
                    received[c].append(int(data))
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

        threads = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
        threads += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for t in threads:
            t.start()
        for t in threads[consumers:]:
            t.join(timeout=60)
        q.shutdown()
        for t in threads[:consumers]:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        assert not failures, failures
        everything = sorted(x for r in received for x in r)
        assert everything == list(range(producers * per_producer))
        assert sum(1 for r in received if r) >= 2, "the work was shared"


# ----- where the library comes from ------------------------------------------------------


def _library_of_child(**env: str) -> subprocess.CompletedProcess[str]:
    return run_python("import shmq; print(shmq.library_path)", **env)


def test_shmq_library_overrides_the_bundled_library(tmp_path: Path) -> None:
    copy = tmp_path / "libshmq-other.so"
    shutil.copyfile(shmq.library_path, copy)
    out = _library_of_child(SHMQ_LIBRARY=str(copy))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(copy)
    missing = _library_of_child(SHMQ_LIBRARY=str(tmp_path / "nope.so"))
    assert missing.returncode != 0 and "SHMQ_LIBRARY" in missing.stderr


def test_installed_package_loads_its_bundled_library() -> None:
    """run-tests.sh installs the package with pip and sets SHMQ_EXPECT_BUNDLED=1."""
    if os.environ.get("SHMQ_EXPECT_BUNDLED") != "1":
        pytest.skip("not running against a pip-installed package")
    out = _library_of_child(SHMQ_LIBRARY="")
    assert out.returncode == 0, out.stderr
    bundled = Path(shmq.__file__).resolve().parent / "libshmq.so"
    assert bundled.is_file(), "pip install did not bundle libshmq.so"
    assert Path(out.stdout.strip()).resolve() == bundled
    assert (Path(shmq.__file__).parent / "py.typed").is_file()
