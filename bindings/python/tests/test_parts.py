"""Gather sends (``Queue.put_parts``): one message from several bytes-like parts, copied into
the queue without joining them first (``shmq_send_parts``)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import shmq
from conftest import child_env


def test_parts_of_every_kind_arrive_joined(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=64) as q:
        q.put_parts([b"head:", bytearray(b"body"), memoryview(b"xtailx")[1:-1]])
        q.put_parts([])  # an empty message
        q.put_parts([b"", b"", b"a"])
        q.put_parts((memoryview(bytearray(range(64))),))  # exactly the message size
        assert q.get() == b"head:bodytail"
        assert q.get() == b""
        assert q.get() == b"a"
        assert q.get() == bytes(range(64))
        assert q.stats().messages_sent == 4


def test_errors_send_nothing(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=16) as q:
        with pytest.raises(shmq.MessageTooLarge):
            q.put_parts([b"x" * 10, b"", b"y" * 7])
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


SENDER = """
import sys, shmq
name, count = sys.argv[1], int(sys.argv[2])
q = shmq.Queue.connect(name)
for seq in range(count):
    whole = bytes((seq * 7 + i) & 0xFF for i in range(seq * 53 % 4001))
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
        qname, capacity=8, message_size=4000, single_producer_single_consumer=spsc
    ) as q:
        child = subprocess.Popen(
            [sys.executable, "-c", SENDER, qname, str(count)], env=child_env()
        )
        try:
            for seq in range(count):
                assert q.get(timeout=30) == bytes(
                    (seq * 7 + i) & 0xFF for i in range(seq * 53 % 4001)
                ), f"message {seq}"
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
        assert q.stats().checksum_failures == 0
