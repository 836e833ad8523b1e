"""A ``Queue`` inherited through ``fork()`` (``multiprocessing``'s default start method on
Linux) becomes a participant of the child's own right after the fork."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time

import pytest

import shmq


def wait_exit(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_child_that_dies_holding_a_message_has_it_delivered_again(qname: str) -> None:
    # With the parent's identity, the dead child's claim looked alive for as long as the
    # parent lived: the message was stuck and the parent's receive timed out.
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.put(b"m1")
        pid = os.fork()
        if pid == 0:
            try:
                q.get_in_place(lambda view, info: os._exit(7))  # dies holding m1
            finally:
                os._exit(1)  # never the test session's code in a forked child
        assert wait_exit(pid) == 7
        message = q.get_message(timeout=10)
        assert (message.data, message.redelivered) == (b"m1", True)


def consume(q: shmq.Queue, results: "mp.SimpleQueue[list[int]]") -> None:
    results.put([int(m) for m in q])  # until shut down and drained


def test_multiprocessing_children_use_the_queue_they_inherited(qname: str) -> None:
    ctx = mp.get_context("fork")
    with shmq.Queue.create(qname, capacity=8, message_size=16) as q:
        results: "mp.SimpleQueue[list[int]]" = ctx.SimpleQueue()
        children = [ctx.Process(target=consume, args=(q, results)) for _ in range(3)]
        for child in children:
            child.start()
        for i in range(600):
            q.put(str(i).encode(), timeout=30)
        q.shutdown()
        got = sorted(i for _ in children for i in results.get())
        for child in children:
            child.join(30)
            assert child.exitcode == 0
        assert got == list(range(600))
        assert q.stats().messages_received == 600


def test_a_forked_child_receives_while_the_parent_keeps_its_sending_role(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=8, message_size=16,
                           single_producer_single_consumer=True) as q:
        q.put(b"one")  # the parent takes the sending role
        pid = os.fork()
        if pid == 0:
            try:
                ok = q.get(timeout=10) == b"one"
                with pytest.raises(shmq.RoleTaken):
                    q.put_nowait(b"child")  # the role is the parent's, not this process's
                q.close()  # its own handle: the receiving role is free again
            except BaseException:  # noqa: BLE001 - reported through the exit status
                os._exit(2)
            os._exit(0 if ok else 1)
        assert wait_exit(pid) == 0
        q.put(b"two")  # still the sender
        with shmq.Queue.connect(qname) as other:
            with pytest.raises(shmq.RoleTaken):
                other.put_nowait(b"x")
            assert other.get(timeout=10) == b"two"


def test_a_fork_inside_a_callback_leaves_the_message_to_the_parent(qname: str) -> None:
    # The child returns into its copy of the call: that copy must fail rather than release
    # the parent's slot a second time, and the child's Queue then works (and closes) as its
    # own participant.
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.put(b"m1")
        forked: list[int] = []

        def read(view: memoryview, info: object) -> bytes:
            forked.append(os.fork())
            return bytes(view)

        try:
            got = q.get_in_place(read)
        except BaseException as e:  # noqa: BLE001 - the child reports through its status
            if forked == [0]:
                code = 1
                if isinstance(e, shmq.InvalidArgument) and "fork" in str(e):
                    q.put(b"from child")  # reopens the queue for this process
                    q.close()
                    code = 0 if q._handle is None else 3  # freed, not left for later
                os._exit(code)
            raise
        if forked == [0]:
            os._exit(2)  # the child's copy of the call succeeded: it released m1 again
        assert got == b"m1"
        assert wait_exit(forked[0]) == 0
        assert q.get(timeout=10) == b"from child"
        assert q.qsize() == 0


def test_a_child_reaches_the_queue_it_inherited_after_the_name_was_unlinked(qname: str) -> None:
    # "Create, unlink, fork the workers": the child reopens the queue it inherited, not
    # whatever the name names now.
    q = shmq.Queue.create(qname, capacity=4, message_size=16)
    q.put(b"m1")
    shmq.unlink(qname)
    with q, shmq.Queue.create(qname, capacity=4, message_size=16) as decoy:
        pid = os.fork()
        if pid == 0:
            try:
                ok = q.get(timeout=10) == b"m1"
                q.put(b"m2")
            except BaseException:  # noqa: BLE001 - reported through the exit status
                os._exit(2)
            os._exit(0 if ok else 1)
        assert wait_exit(pid) == 0
        assert q.get(timeout=10) == b"m2"
        assert decoy.qsize() == 0


def test_a_child_that_never_uses_the_queue_does_not_keep_a_dead_parent_alive(qname: str) -> None:
    # The descriptor a child inherits shares the parent's liveness lock. Kept by a child that
    # never touched the queue, it made a dead parent look alive: the message the parent died
    # holding stayed stuck for as long as the child lived.
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.put(b"m1")
        r, w = os.pipe()
        parent = os.fork()
        if parent == 0:
            try:
                q.qsize()  # a participant of its own from here on
                child = os.fork()
                if child == 0:
                    time.sleep(30)  # holds whatever it inherited; never uses the queue
                    os._exit(0)
                os.write(w, str(child).encode())
                q.get_in_place(lambda view, info: os.kill(os.getpid(), signal.SIGKILL))
            finally:
                os._exit(1)  # never the test session's code in a forked child
        os.close(w)
        child = int(os.read(r, 32) or b"0")
        os.close(r)
        try:
            assert os.waitstatus_to_exitcode(os.waitpid(parent, 0)[1]) == -signal.SIGKILL
            message = q.get_message(timeout=10)
            assert (message.data, message.redelivered) == (b"m1", True)
        finally:
            if child:
                os.kill(child, signal.SIGKILL)


def _send_range(name: str, count: int) -> None:
    with shmq.Queue.connect(name) as q:
        q.spin_limit = 0
        for i in range(count):
            q.put(i.to_bytes(8, "little"), timeout=30)


def test_handles_that_never_poll_hand_over_a_stream(qname: str) -> None:
    # Both sides sleep at once whenever they wait (a small queue makes the sender wait
    # too): every handover goes through the futex, and none may be missed.
    ctx = mp.get_context("fork")
    with shmq.Queue.create(qname, capacity=4, message_size=16) as q:
        q.spin_limit = 0
        child = ctx.Process(target=_send_range, args=(qname, 3000))
        child.start()
        got = [int.from_bytes(q.get(timeout=30), "little") for _ in range(3000)]
        child.join(30)
        assert child.exitcode == 0
        assert got == list(range(3000))


def test_an_inherited_handle_keeps_its_spin_limit(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=16) as q:
        q.spin_limit = 0.0005
        pid = os.fork()
        if pid == 0:
            try:
                os._exit(0 if q.spin_limit == 0.0005 else 3)  # the child's own handle now
            finally:
                os._exit(1)
        assert wait_exit(pid) == 0
