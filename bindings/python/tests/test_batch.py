"""Batches: ``Queue.put_many`` / ``Queue.get_many`` / ``Queue.put_many_in_place`` /
``Queue.get_many_in_place`` (``shmq_send_batch`` / ``shmq_receive_batch`` /
``shmq_send_batch_in_place`` / ``shmq_receive_batch_in_place``: many messages per call into the
library)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

import shmq
from conftest import child_env


def pattern(seq: int) -> bytes:
    """Message ``seq``: its number, then bytes derived from it (lengths 8 to 71)."""
    return seq.to_bytes(8, "little") + bytes((seq * 31 + i) & 0xFF for i in range(seq % 64))


def test_round_trip_in_order_with_every_kind_of_bytes(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=16, message_size=64) as q:
        items = [b"", b"one", bytearray(b"two"), memoryview(b"three"), memoryview(b"xfourx")[1:-1]]
        assert q.put_many(items) == 5
        assert q.qsize() == 5
        assert q.get_many() == [b"", b"one", b"two", b"three", b"four"]
        assert q.put_many([]) == 0
        with pytest.raises(shmq.Empty):
            q.get_many(block=False)


def test_put_many_refuses_what_is_not_bytes_like_and_sends_nothing(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=16) as q:
        for bad in ([b"a", 5], [5, b"a"], [b"a", None], [b"a", "text"], [bytearray(b"a"), 5]):
            with pytest.raises(TypeError):
                q.put_many(bad)  # type: ignore[list-item]
        assert q.qsize() == 0
        # All bytes (the fast path) and mixed (the general one) send the same.
        assert q.put_many([b"", b"x" * 16, b"abc"]) == 3
        assert q.put_many([b"", bytearray(b"x" * 16), memoryview(b"abc")]) == 3
        assert q.get_many() == [b"", b"x" * 16, b"abc"] * 2


def test_get_many_takes_at_most_max_messages_and_only_what_is_queued(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=200, message_size=64) as q:
        assert q.put_many([pattern(i)[:64] for i in range(150)]) == 150
        first = q.get_many(10)
        assert first == [pattern(i)[:64] for i in range(10)]
        # More than one call's worth (64 a call): several calls, in order.
        rest = q.get_many(1000)
        assert rest == [pattern(i)[:64] for i in range(10, 150)]
        assert q.qsize() == 0
        with pytest.raises(ValueError):
            q.get_many(0)
        with pytest.raises(TypeError):
            q.get_many(True)


def test_large_messages_are_received_in_smaller_calls(qname: str) -> None:
    # 1 MiB of buffer per thread: 64 KiB messages come 16 per call.
    size = 64 * 1024
    with shmq.Queue.create(qname, capacity=40, message_size=size) as q:
        items = [bytes([i]) * size for i in range(40)]
        assert q.put_many(items) == 40
        assert q.get_many(40) == items


def test_put_many_sends_what_fits_without_blocking_and_all_when_blocking(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        assert q.put_many([b"a", b"b", b"c", b"d", b"e", b"f"], block=False) == 4
        with pytest.raises(shmq.Full):
            q.put_many([b"g"], block=False)
        with pytest.raises(shmq.Full):
            q.put_many([b"g"], timeout=0.05)
        # Blocking: the rest goes in as a reader makes room (here, on a timer).
        got: list[bytes] = []

        def drain() -> None:
            while len(got) < 8:
                got.extend(q.get_many(timeout=5))

        reader = threading.Thread(target=drain)
        reader.start()
        assert q.put_many([b"e", b"f", b"g", b"h"], timeout=5) == 4
        reader.join(timeout=10)
        assert got == [b"a", b"b", b"c", b"d", b"e", b"f", b"g", b"h"]


def test_put_many_returns_the_count_when_time_runs_out_after_the_first(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=3, message_size=16) as q:
        start = time.monotonic()
        assert q.put_many([b"1", b"2", b"3", b"4", b"5"], timeout=0.2) == 3
        assert time.monotonic() - start >= 0.15
        assert q.get_many() == [b"1", b"2", b"3"]


def test_errors_send_nothing(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=16) as q:
        with pytest.raises(shmq.MessageTooLarge):
            q.put_many([b"ok", b"x" * 17, b"ok"])
        assert q.qsize() == 0
        with pytest.raises(TypeError):
            q.put_many([b"ok", "text"])  # type: ignore[list-item]
        assert q.qsize() == 0
        with pytest.raises(ValueError):
            q.put_many([b"ok"], timeout=-1)
        q.put_many([b"a", b"b"])
        q.shutdown()
        with pytest.raises(shmq.Closed):
            q.put_many([b"late"])
        assert q.get_many() == [b"a", b"b"]
        with pytest.raises(shmq.Closed):
            q.get_many()


def test_stats_count_batches(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=64, message_size=32) as q:
        q.put_many([b"x" * 10] * 50)
        assert len(q.get_many(64)) == 50
        stats = q.stats()
        assert (stats.messages_sent, stats.messages_received) == (50, 50)
        assert (stats.bytes_sent, stats.bytes_received) == (500, 500)


def flip_first_payload_byte(qname: str, slot: int) -> None:
    """Flips the first payload byte of ``slot`` in shared memory (message size 64: 64 bytes of
    payload and a 64-byte slot header per slot after the 4 KiB queue header)."""
    offset = 4096 + slot * (64 + 64)
    with open(f"/dev/shm/shmq.{qname}", "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_corrupted_message_costs_only_itself(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=64) as q:
        q.put_many([b"first", b"second", b"third"])
        flip_first_payload_byte(qname, slot=1)
        with pytest.raises(shmq.CorruptedData) as caught:
            q.get_many()
        # The call had claimed "third" with "second" (one run): it is received too.
        assert caught.value.received == [b"first", b"third"]  # type: ignore[attr-defined]
        with pytest.raises(shmq.Empty):
            q.get_many(block=False)
        assert q.stats().checksum_failures == 1
        q.put_many([b"fourth", b"fifth"])
        assert q.get_many() == [b"fourth", b"fifth"]


PRODUCER = """
import sys, shmq
name, count = sys.argv[1], int(sys.argv[2])
def pattern(seq):
    return seq.to_bytes(8, "little") + bytes((seq * 31 + i) & 0xFF for i in range(seq % 64))
def write(first):
    def fill(view, index):
        data = pattern(first + index)
        view[: len(data)] = data
        return len(data)
    return fill
q = shmq.Queue.connect(name)
seq = 0
while seq < count:
    n = min(1 + seq % 9, count - seq)
    if sys.argv[3] == "in_place":
        seq += q.put_many_in_place(write(seq), n, timeout=30)
    else:
        seq += q.put_many([pattern(s) for s in range(seq, seq + n)], timeout=30)
q.close()
"""


@pytest.mark.parametrize(
    "send, in_place",
    [("copy", False), ("copy", True), ("in_place", False), ("in_place", True)],
    ids=["copy", "read_in_place", "write_in_place", "both_in_place"],
)
@pytest.mark.parametrize("spsc", [False, True])
def test_across_processes_in_order_every_byte(
    qname: str, spsc: bool, send: str, in_place: bool
) -> None:
    count = 3000
    with shmq.Queue.create(
        qname, capacity=8, message_size=72, single_producer_single_consumer=spsc
    ) as q:
        child = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, qname, str(count), send], env=child_env()
        )
        try:
            got: list[bytes] = []
            while len(got) < count:
                if in_place:
                    got.extend(q.get_many_in_place(lambda v, i: bytes(v), 16, timeout=30))
                else:
                    got.extend(q.get_many(16, timeout=30))
            assert got == [pattern(seq) for seq in range(count)]
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert q.qsize() == 0


# ----- zero-copy batches: get_many_in_place ----------------------------------------------------


class Boom(Exception):
    pass


def test_get_many_in_place_lends_each_message_in_order(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=16, message_size=72) as q:
        assert q.put_many([pattern(seq) for seq in range(12)]) == 12

        def read(view: memoryview, info: shmq.MessageInfo) -> tuple:
            return bytes(view), view.readonly, info

        before = q.stats().messages_received
        first = q.get_many_in_place(read, 5)
        assert [data for data, _, _ in first] == [pattern(seq) for seq in range(5)]
        assert all(readonly for _, readonly, _ in first)
        assert [info.id for _, _, info in first] == list(range(5))
        assert all(info.length == len(data) and not info.redelivered for data, _, info in first)
        assert q.qsize() == 7
        # No upper limit on max_messages (nothing is buffered): what is queued.
        rest = q.get_many_in_place(lambda v, i: bytes(v), 1 << 80, timeout=5)
        assert rest == [pattern(seq) for seq in range(5, 12)]
        assert q.stats().messages_received - before == 12
        never = lambda *a: pytest.fail("read called on an empty queue")  # noqa: E731
        with pytest.raises(shmq.Empty):
            q.get_many_in_place(never, block=False)
        started = time.monotonic()
        with pytest.raises(shmq.Empty):
            q.get_many_in_place(never, timeout=0.25)
        assert time.monotonic() - started >= 0.2


def test_get_many_in_place_arguments(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.put(b"kept")
        for bad, error in [(0, ValueError), (-1, ValueError), (True, TypeError), ("3", TypeError)]:
            with pytest.raises(error):
                q.get_many_in_place(lambda v, i: None, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.get_many_in_place(None)  # type: ignore[arg-type]
        assert q.qsize() == 1  # nothing taken by a refused call
        q.close()
        with pytest.raises(ValueError, match="closed"):
            q.get_many_in_place(lambda v, i: None)


def test_an_exception_in_read_ends_the_batch_there(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=72) as q:
        q.put_many([pattern(seq) for seq in range(5)])
        seen: list[bytes] = []

        def read(view: memoryview, info: shmq.MessageInfo) -> None:
            seen.append(bytes(view))
            if len(seen) == 2:
                raise Boom("from read")

        with pytest.raises(Boom, match="from read"):
            q.get_many_in_place(read)
        # The failing message counts as received; no message after it was taken.
        assert seen == [pattern(0), pattern(1)]
        assert q.qsize() == 3
        assert q.get_many_in_place(lambda v, i: bytes(v)) == [pattern(s) for s in (2, 3, 4)]


def test_a_kept_view_ends_the_batch_with_buffer_error(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=72) as q:
        q.put_many([pattern(seq) for seq in range(3)])
        kept = []
        with pytest.raises(BufferError, match="outlived"):
            q.get_many_in_place(lambda v, i: kept.append(v[:4]))
        assert q.qsize() == 2
        assert q.get_many_in_place(lambda v, i: bytes(v)) == [pattern(1), pattern(2)]


def test_get_many_in_place_keeps_what_was_read_before_a_corrupted_message(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=64) as q:
        q.put_many([b"first", b"second", b"third"])
        flip_first_payload_byte(qname, slot=1)
        with pytest.raises(shmq.CorruptedData) as caught:
            q.get_many_in_place(lambda v, i: bytes(v))
        assert caught.value.received == [b"first"]  # type: ignore[attr-defined]
        assert q.get_many_in_place(lambda v, i: bytes(v)) == [b"third"]
        assert q.stats().checksum_failures == 1


def test_get_many_in_place_drains_then_raises_closed(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.put_many([b"a", b"b"])
        q.shutdown()
        assert q.get_many_in_place(lambda v, i: bytes(v)) == [b"a", b"b"]
        with pytest.raises(shmq.Closed):
            q.get_many_in_place(lambda v, i: None)  # waits without limit, yet returns


def run_script(script: str, qname: str) -> int:
    """Runs ``script`` in another Python process with the queue name as its argument; returns
    its exit status."""
    return subprocess.run(
        [sys.executable, "-c", script, qname], env=child_env(), timeout=60
    ).returncode


DIES_INSIDE_READ = """
import os, sys, shmq
q = shmq.Queue.connect(sys.argv[1])
calls = []
def read(view, info):
    calls.append(info.id)
    if len(calls) == 3:
        os._exit(0 if calls == [0, 1, 2] else 31)
q.get_many_in_place(read, timeout=30)
os._exit(30)  # not reached: the third message ends the process
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_a_receiver_killed_inside_read_loses_nothing(qname: str, spsc: bool) -> None:
    with shmq.Queue.create(
        qname, capacity=16, message_size=72, single_producer_single_consumer=spsc
    ) as q:
        q.put_many([pattern(seq) for seq in range(6)])
        assert run_script(DIES_INSIDE_READ, qname) == 0
        # The two it finished were released; the one it died in comes again, flagged.
        got = {}
        for _ in range(4):
            message = q.get_message(timeout=5)
            assert message.id not in got
            got[message.id] = message
        assert sorted(got) == [2, 3, 4, 5]
        assert all(got[i].data == pattern(i) for i in got)
        assert [i for i in got if got[i].redelivered] == [2]
        assert q.qsize() == 0 and q.stats().redelivered == 1


# ----- zero-copy batches: put_many_in_place ----------------------------------------------------


def writes(first: int = 0, calls: list | None = None):  # type: ignore[no-untyped-def]
    """A fill for put_many_in_place writing message ``first + index`` of the pattern, and
    recording each index it is called with in ``calls``."""

    def fill(view: memoryview, index: int) -> int:
        if calls is not None:
            calls.append(index)
        data = pattern(first + index)
        view[: len(data)] = data
        return len(data)

    return fill


def test_put_many_in_place_writes_each_message_in_order(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=72) as q:
        calls: list[int] = []
        assert q.put_many_in_place(writes(0, calls), 0) == 0
        assert calls == []
        # Without block: what fits, fill called once per message sent.
        assert q.put_many_in_place(writes(0, calls), 12, block=False) == 8
        assert calls == list(range(8))
        never = lambda *a: pytest.fail("fill called without a free slot")  # noqa: E731
        with pytest.raises(shmq.Full):
            q.put_many_in_place(never, 3, block=False)
        with pytest.raises(shmq.Full):
            q.put_many_in_place(never, 3, timeout=0.05)
        assert q.get_many() == [pattern(seq) for seq in range(8)]
        # With block: all of them, over several calls into the library, resumed in order.
        calls.clear()
        got: list[bytes] = []

        def drain() -> None:
            while len(got) < 20:
                got.extend(q.get_many(timeout=5))

        reader = threading.Thread(target=drain)
        reader.start()
        assert q.put_many_in_place(writes(100, calls), 20, timeout=10) == 20
        reader.join(timeout=10)
        assert calls == list(range(20))
        assert got == [pattern(100 + i) for i in range(20)]
        stats = q.stats()
        assert stats.messages_sent == stats.messages_received == 28
        assert stats.corrupted == 0


def test_put_many_in_place_returns_the_count_when_time_runs_out_after_the_first(
    qname: str,
) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=72) as q:
        started = time.monotonic()
        assert q.put_many_in_place(writes(), 10, timeout=0.2) == 4
        assert time.monotonic() - started >= 0.15
        assert q.get_many() == [pattern(seq) for seq in range(4)]


def test_put_many_in_place_arguments(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        for bad, error in [(-1, ValueError), (True, TypeError), ("3", TypeError), (2.0, TypeError)]:
            with pytest.raises(error):
                q.put_many_in_place(lambda v, i: 0, bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.put_many_in_place(None, 2)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            q.put_many_in_place(lambda v, i: 0, 2, timeout=-1)
        assert q.qsize() == 0 and q.stats().corrupted == 0  # nothing claimed
        q.close()
        with pytest.raises(ValueError, match="closed"):
            q.put_many_in_place(lambda v, i: 0, 1)


@pytest.mark.parametrize(
    "failure, error",
    [("raise", Boom), ("too_long", shmq.MessageTooLarge), ("negative", shmq.InvalidArgument),
     ("keep", BufferError)],
)
def test_a_failing_fill_ends_the_batch_and_cancels_that_message(
    qname: str, failure: str, error: type
) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=72) as q:
        kept = []

        def fill(view: memoryview, index: int) -> int:
            if index < 2:
                return writes()(view, index)
            if failure == "raise":
                raise Boom("from fill")
            if failure == "keep":
                kept.append(view[:4])
                return 4
            return 73 if failure == "too_long" else -1

        with pytest.raises(error):
            q.put_many_in_place(fill, 5)
        # Messages 0 and 1 were sent, message 2's slot passes through poisoned, and the
        # positions of messages 3 and 4, claimed with it (one run, one tail move), are given
        # up: receivers skip them at once, counted as abandoned.
        assert q.qsize() == 5
        with pytest.raises(shmq.CorruptedData) as caught:
            q.get_many()
        assert caught.value.received == [pattern(0), pattern(1)]  # type: ignore[attr-defined]
        with pytest.raises(shmq.Empty):
            q.get(block=False)
        assert q.qsize() == 0
        assert q.stats().abandoned == 2
        assert q.put_many_in_place(writes(), 2) == 2
        assert q.get_many() == [pattern(0), pattern(1)]


def test_put_many_in_place_after_shutdown_raises_closed(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.shutdown()
        with pytest.raises(shmq.Closed):
            q.put_many_in_place(lambda v, i: pytest.fail("fill called after shutdown"), 2)


DIES_INSIDE_FILL = """
import os, sys, shmq
q = shmq.Queue.connect(sys.argv[1])
def fill(view, index):
    if index == 2:
        os._exit(0)
    view[:5] = b"msg %d" % index
    return 5
q.put_many_in_place(fill, 5, timeout=30)
os._exit(30)  # not reached: the third message ends the process
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_a_sender_killed_inside_fill_keeps_what_it_sent(qname: str, spsc: bool) -> None:
    with shmq.Queue.create(
        qname, capacity=16, message_size=72, single_producer_single_consumer=spsc
    ) as q:
        assert run_script(DIES_INSIDE_FILL, qname) == 0
        q.put(b"after", timeout=5)  # on an SPSC queue: takes the dead sender's role over
        # (A batch receive ends at the dead sender's position; the next one goes past it.)
        assert [q.get(timeout=5) for _ in range(3)] == [b"msg 0", b"msg 1", b"after"]
        assert q.qsize() == 0
        # Multi-producer: message 2's position and those of 3 and 4 (its run) are skipped.
        assert q.stats().abandoned == (0 if spsc else 3)
