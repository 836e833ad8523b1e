"""Zero-copy sends and receives: ``Queue.put_in_place`` / ``Queue.get_in_place`` (memoryviews
over the slot in shared memory, lent to a callback for the duration of one C call)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from typing import Any

import pytest

import shmq
from conftest import child_env, interrupt_blocked_call


def pattern(seq: int, length: int) -> bytes:
    """The bytes of message ``seq`` (every byte differs between neighbouring messages)."""
    return bytes((seq * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(length))


def writer(data: bytes):  # type: ignore[no-untyped-def]
    def fill(view: memoryview) -> int:
        view[: len(data)] = data
        return len(data)

    return fill


def test_round_trip_in_place_and_against_the_copying_forms(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=256) as q:
        seen = []

        def fill(view: memoryview) -> int:
            seen.append((len(view), view.readonly, view.format))
            view[:100] = pattern(1, 100)
            return 100

        q.put_in_place(fill)
        assert seen == [(256, False, "B")]  # the whole slot, writable bytes

        def read(view: memoryview, info: shmq.MessageInfo) -> tuple:
            return bytes(view), len(view), view.readonly, info

        before = time.time_ns()
        data, length, readonly, info = q.get_in_place(read, timeout=5)
        assert (data, length, readonly) == (pattern(1, 100), 100, True)
        assert info.id == 0 and info.length == 100 and not info.redelivered
        # Stamps are extrapolated with the TSC (src/clock.rs): within 20 µs of the clock.
        assert 0 < info.timestamp_ns <= time.time_ns() + 20_000 and info.timestamp_ns > before - 60e9

        # Every length from empty to the full slot.
        for seq, length in enumerate([0, 1, 255, 256]):
            q.put_in_place(writer(pattern(seq, length)))
            assert q.get_in_place(lambda v, i: bytes(v)) == pattern(seq, length)

        # In place -> copy, and copy (with id and timestamp) -> in place.
        q.put_in_place(writer(pattern(7, 200)))
        assert q.get(timeout=5) == pattern(7, 200)
        q.put_message(4242, pattern(8, 150), timestamp_ns=99)
        got = q.get_in_place(lambda v, i: (bytes(v), i))
        assert got == (pattern(8, 150), shmq.MessageInfo(4242, 99, 150, False))
        stats = q.stats()
        assert stats.corrupted == 0 and stats.depth == 0


def test_views_are_released_when_the_callback_returns(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=16) as q:
        kept = []
        q.put_in_place(lambda v: (kept.append(v), 3)[1])
        got = q.get_in_place(lambda v, i: v)
        for view in (kept[0], got):
            with pytest.raises(ValueError, match="released"):
                view[0]
            with pytest.raises(ValueError, match="released"):
                bytes(view)


def test_a_kept_slice_is_detected(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        kept = []
        with pytest.raises(BufferError, match="outlived"):
            q.put_in_place(lambda v: (kept.append(v[:4]), 4)[1])
        kept.clear()
        # The send was cancelled: its slot reaches one receiver as a dropped message.
        with pytest.raises(shmq.CorruptedData):
            q.get(timeout=5)
        q.put(b"abcd")
        with pytest.raises(BufferError, match="outlived"):
            q.get_in_place(lambda v, i: kept.append(v[1:]))
        kept.clear()
        assert q.qsize() == 0  # the message was received (and counted) all the same
        q.put(b"next")
        assert q.get_in_place(lambda v, i: bytes(v)) == b"next"


class Boom(Exception):
    pass


def test_an_exception_in_fill_propagates_and_cancels_the_message(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=32) as q:
        error = Boom("from fill")

        def fill(view: memoryview) -> int:
            view[:4] = b"half"
            raise error

        with pytest.raises(Boom) as info:
            q.put_in_place(fill)
        assert info.value is error
        assert "fill" in "".join(str(f) for f in info.traceback)  # the callback's frame kept
        q.put(b"after")
        # The cancelled slot: exactly one CorruptedData, never the half-written bytes.
        with pytest.raises(shmq.CorruptedData):
            q.get_in_place(lambda v, i: pytest.fail("read called for a cancelled message"))
        assert q.get(timeout=5) == b"after"
        assert q.stats().corrupted == 1

        # KeyboardInterrupt (a BaseException) raised inside the callback propagates too.
        def interrupted(view: memoryview) -> int:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            q.put_in_place(interrupted)
        with pytest.raises(shmq.CorruptedData):
            q.get(timeout=5)


def test_an_exception_in_read_propagates_and_the_message_counts_as_received(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=32) as q:
        q.put(b"first")
        q.put(b"second")

        def read(view: memoryview, info: shmq.MessageInfo) -> None:
            assert bytes(view) == b"first"
            raise Boom("from read")

        with pytest.raises(Boom, match="from read"):
            q.get_in_place(read)
        assert q.qsize() == 1
        assert q.get_in_place(lambda v, i: bytes(v)) == b"second"
        stats = q.stats()
        assert stats.messages_received == 2 and stats.corrupted == 0


@pytest.mark.parametrize(
    "returned, error",
    [(33, shmq.MessageTooLarge), (1 << 80, shmq.MessageTooLarge), (-1, shmq.InvalidArgument),
     (-(1 << 80), shmq.InvalidArgument), ("3", TypeError), (2.0, TypeError), (None, TypeError)],
)
def test_fill_returning_a_bad_length_cancels_the_message(
    qname: str, returned: object, error: type
) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=32) as q:
        with pytest.raises(error):
            q.put_in_place(lambda v: returned)  # type: ignore[arg-type,return-value]
        with pytest.raises(shmq.CorruptedData):
            q.get(timeout=5)
        q.put_in_place(writer(b"fine"))
        assert q.get(timeout=5) == b"fine"


def test_not_a_callable(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=32) as q:
        with pytest.raises(TypeError):
            q.put_in_place(b"data")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.get_in_place(None)  # type: ignore[arg-type]
        assert q.qsize() == 0


def test_full_empty_timeouts_and_shutdown(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=8) as q:
        never = lambda *a: pytest.fail("callback called without a slot")  # noqa: E731
        with pytest.raises(shmq.Empty):
            q.get_in_place(never, block=False)
        started = time.monotonic()
        with pytest.raises(shmq.Empty):
            q.get_in_place(never, timeout=0.35)  # several 100 ms slices
        assert time.monotonic() - started >= 0.3
        q.put_in_place(writer(b"x"))
        with pytest.raises(shmq.Full):
            q.put_in_place(never, block=False)
        with pytest.raises(shmq.Full):
            q.put_in_place(never, timeout=0.35)
        stats = q.stats()
        # One timeout per timed-out call, not one per wait slice.
        assert stats.timeouts == 2 and stats.send_full == 2
        q.shutdown()
        with pytest.raises(shmq.Closed):
            q.put_in_place(never)
        assert q.get_in_place(lambda v, i: bytes(v)) == b"x"
        with pytest.raises(shmq.Closed):
            q.get_in_place(never)  # blocking without limit, yet returns: shut down and drained


def test_callbacks_may_nest(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q, shmq.Queue.create(
        qname + "_b", capacity=4, message_size=16
    ) as other:
        try:
            other.put(b"inner")

            def fill(view: memoryview) -> int:
                inner = other.get_in_place(lambda v, i: bytes(v))
                view[: len(inner)] = inner
                return len(inner)

            q.put_in_place(fill)
            assert q.get_in_place(lambda v, i: bytes(v)) == b"inner"
        finally:
            shmq.unlink(qname + "_b", missing_ok=True)


def get_in_place_in_a_thread(q: shmq.Queue, read: Any) -> list[bytes]:
    """``q.get_in_place(read)`` in a thread, so that a regression in which ``read`` never
    returns fails the test instead of hanging it; returns what it got."""
    got: list[bytes] = []
    caller = threading.Thread(target=lambda: got.append(q.get_in_place(read)), daemon=True)
    caller.start()
    caller.join(30)
    assert not caller.is_alive(), "close() inside the callback did not return"
    return got


@pytest.mark.parametrize("spsc", [False, True])
def test_close_from_inside_a_callback_frees_the_handle_when_the_call_returns(
    qname: str, spsc: bool
) -> None:
    q = shmq.Queue.create(qname, capacity=4, message_size=16,
                          single_producer_single_consumer=spsc)
    q.put(b"one")
    q.put(b"two")

    def read(view: memoryview, info: object) -> bytes:
        q.close()  # used to wait for ever for this very call to end
        assert q.closed
        with pytest.raises(ValueError, match="closed"):
            q.get_nowait()
        return bytes(view)

    assert get_in_place_in_a_thread(q, read) == [b"one"]
    with pytest.raises(ValueError, match="closed"):
        q.get()
    # The handle was freed: on a single-consumer queue its receiving role is free again.
    with shmq.Queue.connect(qname) as other:
        assert other.get_nowait() == b"two"


def test_close_from_a_callback_waits_for_the_other_threads_uses_only(qname: str) -> None:
    # Another thread is blocked in a put; close() inside this thread's callback must return
    # once that put's use ends (it used to wait for a wake-up sent only at zero uses).
    q = shmq.Queue.create(qname, capacity=1, message_size=8)
    q.put(b"x")
    outcome: list[str] = []

    def blocked_put() -> None:
        try:
            q.put(b"y", timeout=5)
            outcome.append("sent")
        except ValueError:
            outcome.append("closed")

    putter = threading.Thread(target=blocked_put, daemon=True)
    putter.start()
    time.sleep(0.2)  # the queue is full: the put waits

    def read(view: memoryview, info: object) -> bytes:
        q.close()
        return bytes(view)

    got = get_in_place_in_a_thread(q, read)
    putter.join(30)
    assert got == [b"x"] and outcome in (["sent"], ["closed"])
    assert q.closed


def test_a_call_on_the_side_a_single_producer_callback_holds_is_refused(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16,
                           single_producer_single_consumer=True) as q:
        q.put(b"m1")
        q.put(b"m2")

        def read(view: memoryview, info: object) -> bytes:
            with pytest.raises(shmq.InvalidArgument, match="inside a callback"):
                q.get_nowait()  # used to wait for ever, or return m1 a second time
            q.put(b"reply")  # the other side works
            return bytes(view)

        assert q.get_in_place(read) == b"m1"

        def fill(view: memoryview) -> int:
            with pytest.raises(shmq.InvalidArgument, match="inside a callback"):
                q.put_nowait(b"inner")  # used to be overwritten by the outer message
            view[:5] = b"outer"
            return 5

        q.put_in_place(fill)
        assert [q.get_nowait() for _ in range(3)] == [b"m2", b"reply", b"outer"]


def test_closed_handle(qname: str) -> None:
    q = shmq.Queue.create(qname, capacity=2, message_size=8)
    q.close()
    with pytest.raises(ValueError, match="closed"):
        q.put_in_place(writer(b"x"))
    with pytest.raises(ValueError, match="closed"):
        q.get_in_place(lambda v, i: None)


PRODUCER = """
import sys, shmq
q = shmq.Queue.connect(sys.argv[1])
count = int(sys.argv[2])
def pattern(seq, length):
    return bytes((seq * 131 + i * 7 + (i >> 8)) & 0xFF for i in range(length))
for seq in range(count):
    data = pattern(seq, seq * 37 % 4097)
    def fill(view, data=data):
        view[:len(data)] = data
        return len(data)
    q.put_in_place(fill, timeout=30)
q.close()
"""


def test_across_processes_every_byte(qname: str) -> None:
    count = 400
    with shmq.Queue.create(qname, capacity=4, message_size=4096) as q:
        child = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, qname, str(count)], env=child_env()
        )
        try:
            for seq in range(count):
                data, info = q.get_in_place(lambda v, i: (bytes(v), i), timeout=30)
                assert info.id == seq
                assert data == pattern(seq, seq * 37 % 4097), f"message {seq} differs"
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert q.qsize() == 0 and q.stats().corrupted == 0


@pytest.mark.parametrize(
    "call, fill",
    [
        ("q.get_in_place(lambda v, i: None)", 0),
        ("q.get_many_in_place(lambda v, i: None)", 0),
        ("q.put_in_place(lambda v: 1)", 2),
        ("q.put_many_in_place(lambda v, i: 1, 3)", 2),
    ],
)
def test_ctrl_c_interrupts_a_blocked_in_place_call(qname: str, call: str, fill: int) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        for _ in range(fill):
            q.put(b"full")
        interrupt_blocked_call(qname, call)
        assert q.qsize() == fill  # nothing taken or added
        assert q.stats().corrupted == 0
