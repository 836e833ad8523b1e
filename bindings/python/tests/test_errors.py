"""Every exception class, each reached on purpose through the API where the library can
produce it, and Ctrl-C during blocking calls."""

from __future__ import annotations

import os
import queue

import pytest

import shmq
from conftest import interrupt_blocked_call, run_python

SEGMENT = "/dev/shm/shmq.{}"


def test_hierarchy() -> None:
    for cls in (
        shmq.Full, shmq.Empty, shmq.Timeout, shmq.Closed, shmq.InvalidArgument,
        shmq.AlreadyExists, shmq.NotFound, shmq.PermissionDenied, shmq.CreationFailed,
        shmq.AccessFailed, shmq.MessageTooLarge, shmq.BufferTooSmall, shmq.CorruptedData,
        shmq.IncompatibleVersion, shmq.InternalError, shmq.RoleTaken,
    ):
        assert issubclass(cls, shmq.Error)
    assert issubclass(shmq.Full, queue.Full) and issubclass(shmq.Empty, queue.Empty)
    assert issubclass(shmq.NotFound, FileNotFoundError)
    assert issubclass(shmq.AlreadyExists, FileExistsError)
    assert issubclass(shmq.PermissionDenied, PermissionError)
    assert issubclass(shmq.Timeout, TimeoutError)
    err = shmq.InternalError("boom")
    assert (err.status, err.message, str(err)) == (shmq.Status.ERR_INTERNAL, "boom", "boom")
    assert "ERR_INTERNAL" in repr(err)


def _check(exc: shmq.Error, cls: type, status: shmq.Status, *words: str) -> None:
    assert type(exc) is cls
    assert exc.status == status
    for word in words:
        assert word in exc.message, exc.message


def test_full_empty_timeout_closed(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=1, message_size=8) as q:
        with pytest.raises(shmq.Empty) as e:
            q.get_nowait()
        _check(e.value, shmq.Empty, shmq.Status.ERR_EMPTY, qname)
        with pytest.raises(shmq.Empty) as e:
            q.get(timeout=0.05)
        _check(e.value, shmq.Empty, shmq.Status.ERR_TIMEOUT, qname)
        q.put(b"x")
        with pytest.raises(shmq.Full) as e:
            q.put_nowait(b"y")
        _check(e.value, shmq.Full, shmq.Status.ERR_FULL, qname)
        with pytest.raises(shmq.Full) as e:
            q.put(b"y", timeout=0.05)
        _check(e.value, shmq.Full, shmq.Status.ERR_TIMEOUT, qname)
        q.shutdown()
        with pytest.raises(shmq.Closed) as e:
            q.put(b"y")
        _check(e.value, shmq.Closed, shmq.Status.ERR_CLOSED, qname)


def test_invalid_argument(qname: str) -> None:
    for bad_name in ("", "has/slash", "x" * 300):
        with pytest.raises(shmq.InvalidArgument) as e:
            shmq.Queue.create(bad_name, capacity=1, message_size=1)
        assert e.value.status == shmq.Status.ERR_INVALID_ARGUMENT
    with pytest.raises(shmq.InvalidArgument, match="NUL"):
        shmq.Queue.connect("a\0b")
    for capacity, size in ((0, 8), (8, 0)):
        with pytest.raises(shmq.InvalidArgument):
            shmq.Queue.create(qname, capacity=capacity, message_size=size)
    with pytest.raises(shmq.InvalidArgument) as e:
        shmq.Queue.create(qname, capacity=1, message_size=8, mode=0o7777)
    _check(e.value, shmq.InvalidArgument, shmq.Status.ERR_INVALID_ARGUMENT, "mode")


def test_already_exists_not_found_message_too_large_buffer_too_small(qname: str) -> None:
    with pytest.raises(shmq.NotFound) as e:
        shmq.Queue.connect(qname)
    _check(e.value, shmq.NotFound, shmq.Status.ERR_NOT_FOUND, qname)
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        with pytest.raises(shmq.AlreadyExists) as e:
            shmq.Queue.create(qname, capacity=2, message_size=8)
        _check(e.value, shmq.AlreadyExists, shmq.Status.ERR_ALREADY_EXISTS, qname)
        with pytest.raises(shmq.MessageTooLarge) as e:
            q.put(b"123456789")
        _check(e.value, shmq.MessageTooLarge, shmq.Status.ERR_MESSAGE_TOO_LARGE, "9 bytes")
        q.put(b"12345678")
        with pytest.raises(shmq.BufferTooSmall) as e:
            q.get_into(bytearray(2))
        _check(e.value, shmq.BufferTooSmall, shmq.Status.ERR_BUFFER_TOO_SMALL, "8 bytes")


def test_corrupted_data_from_a_flipped_payload_byte(qname: str) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=64) as q:
        q.put(b"payload-to-corrupt-0123456789")
        q.put(b"intact")
        with open(SEGMENT.format(qname), "r+b") as f:
            image = f.read()
            offset = image.find(b"payload-to-corrupt")
            assert offset > 0
            f.seek(offset)
            f.write(b"P")
        with pytest.raises(shmq.CorruptedData) as e:
            q.get_nowait()
        _check(e.value, shmq.CorruptedData, shmq.Status.ERR_CORRUPTED_DATA, "checksum")
        assert q.get_nowait() == b"intact", "the queue goes on after a dropped message"
        assert q.stats().checksum_failures == 1


def test_incompatible_version(qname: str) -> None:
    shmq.Queue.create(qname, capacity=1, message_size=8).close()
    with open(SEGMENT.format(qname), "r+b") as f:
        f.seek(8)  # shmq layout: the u32 layout_version follows the u64 magic
        f.write((999).to_bytes(4, "little"))
    with pytest.raises(shmq.IncompatibleVersion) as e:
        shmq.Queue.connect(qname)
    _check(e.value, shmq.IncompatibleVersion, shmq.Status.ERR_INCOMPATIBLE_VERSION, "999")


def test_access_failed(qname: str) -> None:
    path = SEGMENT.format(qname)
    os.mkdir(path)  # a name that exists but cannot be opened as a segment
    try:
        with pytest.raises(shmq.AccessFailed) as e:
            shmq.Queue.connect(qname)
        _check(e.value, shmq.AccessFailed, shmq.Status.ERR_ACCESS_FAILED, qname)
    finally:
        os.rmdir(path)


def test_creation_failed(qname: str) -> None:
    # A file-size limit makes sizing the new segment fail (EFBIG).
    out = run_python(
        f"""
        import resource, signal, shmq
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
        try:
            shmq.Queue.create({qname!r}, capacity=64, message_size=4096)
        except shmq.CreationFailed as e:
            print(e.status.name, "|", e.message)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR_CREATION_FAILED |") and qname in out.stdout
    assert not os.path.exists(SEGMENT.format(qname)), "a failed creation leaves nothing"


def test_permission_denied(qname: str) -> None:
    shmq.Queue.create(qname, capacity=1, message_size=8, mode=0o600).close()
    if os.geteuid() != 0:
        with pytest.raises(shmq.PermissionDenied):
            os.chmod(SEGMENT.format(qname), 0)
            shmq.Queue.connect(qname)
        return
    # Root may open anything: ask an unprivileged child.
    out = run_python(
        f"""
        import os, shmq  # imported (and the library loaded) while still privileged
        os.setgid(65534); os.setuid(65534)
        try:
            shmq.Queue.connect({qname!r})
        except shmq.PermissionDenied as e:
            print(e.status.name, "|", isinstance(e, PermissionError), "|", e.message)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ERR_PERMISSION_DENIED | True |") and qname in out.stdout


def test_internal_error_maps_from_its_status() -> None:
    # The library returns it only when it caught a bug; check the mapping.
    exc = shmq.errors.error_for(int(shmq.Status.ERR_INTERNAL), "panic caught")
    _check(exc, shmq.InternalError, shmq.Status.ERR_INTERNAL, "panic")
    timeout = shmq.errors.error_for(int(shmq.Status.ERR_TIMEOUT), "t")
    assert type(timeout) is shmq.Timeout


# ----- Ctrl-C ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "call, fill", [("q.get()", 0), ("q.put(b'x')", 2), ("next(iter(q))", 0), ("q.get_message()", 0)]
)
def test_ctrl_c_interrupts_a_blocking_call_promptly(qname: str, call: str, fill: int) -> None:
    with shmq.Queue.create(qname, capacity=2, message_size=8) as q:
        for _ in range(fill):
            q.put(b"full")
        elapsed = interrupt_blocked_call(qname, call)
        assert elapsed < 5, f"KeyboardInterrupt took {elapsed:.2f} s"
        # Nothing was taken or added by the interrupted call.
        assert q.qsize() == fill
