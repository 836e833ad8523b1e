"""Gather sends (``Queue.put_parts``): one message from several bytes-like parts, copied into
the queue without joining them first (``shmq_send_parts``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import shmq
from conftest import child_env


@pytest.mark.parametrize("pad", [0, 70_000], ids=["joined_here", "gathered_by_the_library"])
def test_parts_of_every_kind_arrive_joined(qname: str, pad: int) -> None:
    # Up to 64 KiB in all the parts are joined in Python; above, the library gathers them.
    tail = bytes(range(256)) * (pad // 256) + bytes(pad % 256)
    with shmq.Queue.create(qname, capacity=8, message_size=64 + pad) as q:
        q.put_parts([b"head:", bytearray(b"body"), memoryview(b"xtailx")[1:-1], tail])
        q.put_parts([])  # an empty message
        q.put_parts([b"", b"", b"a", memoryview(tail)])
        q.put_parts((memoryview(bytearray(range(64))), bytearray(tail)))  # the message size
        assert q.get() == b"head:bodytail" + tail
        assert q.get() == b""
        assert q.get() == b"a" + tail
        assert q.get() == bytes(range(64)) + tail
        assert q.stats().messages_sent == 4


@pytest.mark.parametrize("pad", [0, 70_000], ids=["joined_here", "gathered_by_the_library"])
def test_any_iterable_of_parts(qname: str, pad: int) -> None:
    tail = bytes(pad)
    with shmq.Queue.create(qname, capacity=4, message_size=64 + pad) as q:
        q.put_parts(part for part in [b"gen", bytearray(b"erator"), tail])
        q.put_parts(iter([b"it", memoryview(b"er"), tail]))
        assert q.get() == b"generator" + tail
        assert q.get() == b"iter" + tail


def test_errors_send_nothing(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=16) as q:
        with pytest.raises(shmq.MessageTooLarge):
            q.put_parts([b"x" * 10, b"", b"y" * 7])
        with pytest.raises(shmq.MessageTooLarge):
            q.put_parts([b"x" * 10, memoryview(bytes(70_000))])  # through the library
        with pytest.raises(TypeError):
            q.put_parts([b"ok", "text"])  # type: ignore[list-item]
        assert q.qsize() == 0
        q.put_parts([b"x" * 10, b"y" * 6])
        with pytest.raises(shmq.Full):
            q.put_parts([b"z"], block=False)
        with pytest.raises(shmq.Full):
            q.put_parts([b"z"], timeout=0.02)
        assert q.get() == b"x" * 10 + b"y" * 6
        q.shutdown()
        with pytest.raises(shmq.Closed):
            q.put_parts([b"z"])


def length(seq: int) -> int:
    """Message ``seq``'s length: up to 4000 bytes, every fifth 65-165 KB (gathered by the
    library rather than joined in Python)."""
    return 65_000 + seq * 997 % 100_000 if seq % 5 == 4 else seq * 53 % 4001


def message(seq: int) -> bytes:
    return (bytes(range(256)) * (length(seq) // 256 + 2))[seq % 256 :][: length(seq)]


SENDER = """
import sys, shmq
name, count = sys.argv[1], int(sys.argv[2])
def length(seq):
    return 65_000 + seq * 997 % 100_000 if seq % 5 == 4 else seq * 53 % 4001
def message(seq):
    return (bytes(range(256)) * (length(seq) // 256 + 2))[seq % 256 :][: length(seq)]
q = shmq.Queue.connect(name)
for seq in range(count):
    whole = message(seq)
    cuts = sorted({0, len(whole)} | {(seq * k * 131) % (len(whole) + 1) for k in range(seq % 6)})
    parts = [whole[a:b] for a, b in zip(cuts, cuts[1:])]
    if seq % 2:
        parts = [memoryview(bytearray(p)) for p in parts]
    q.put_parts(parts, timeout=30)
q.close()
"""


@pytest.mark.parametrize("spsc", [False, True])
def test_across_processes_every_byte(qname: str, spsc: bool) -> None:
    count = 300
    with shmq.Queue.create(
        qname, capacity=8, message_size=165_000, single_producer_single_consumer=spsc
    ) as q:
        child = subprocess.Popen(
            [sys.executable, "-c", SENDER, qname, str(count)], env=child_env()
        )
        try:
            for seq in range(count):
                assert q.get(timeout=30) == message(seq), f"message {seq}"
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert q.stats().checksum_failures == 0


def test_the_arrays_hold_the_buffers_they_point_into() -> None:
    # The ctypes call releases the GIL, so while the arrays of put_many / put_parts live,
    # another thread must not be able to resize a buffer they point into (its export is
    # held); once they are gone, it may.
    from shmq.queue import _pointer_arrays

    buffer = bytearray(b"abc")
    arrays = _pointer_arrays([b"bytes", buffer, memoryview(b"read-only")])
    with pytest.raises(BufferError):
        buffer.extend(b"more")
    del arrays
    buffer.extend(b"more")
    assert buffer == b"abcmore"
