"""The :class:`Queue` handle, :class:`Message` and :class:`Stats`, over the C ABI."""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar, Union

from . import _lib, _zerocopy
from ._zerocopy import MessageInfo
from ._lib import QueueInfo, QueuePtr, StatsStruct, lib, lib_by_address
from ._status import (
    CREATE_NO_CHECKSUM,
    CREATE_OPEN_EXISTING,
    CREATE_REPLACE,
    CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER,
    MESSAGE_REDELIVERED,
    WAIT_SLICE,
    Status,
)
from .errors import BufferTooSmall, Closed, Empty, Error, Full, InvalidArgument, error_for

__all__ = [
    "Queue",
    "Message",
    "MessageInfo",
    "Stats",
    "unlink",
    "status_str",
    "library_version",
    "BytesLike",
    "RECEIVE_BATCH_MAX",
]

#: Anything that exposes a contiguous buffer: ``bytes``, ``bytearray``, ``memoryview``,
#: ``array.array``, a NumPy array, ...
BytesLike = Union[bytes, bytearray, memoryview, Any]

#: Longest single wait inside the C library. Blocking calls wait in slices this long so that
#: Python gets control back regularly: Ctrl-C (KeyboardInterrupt) and ``close()`` from another
#: thread take effect within one slice.
WAIT_SLICE_MS = 100

_U64_MAX = (1 << 64) - 1

# The statuses every message's path compares with, as plain ints: comparing with an
# `IntEnum` member costs ~0.2 µs on the project's VM, an int ~0.03.
_OK = int(Status.OK)
_ERR_TIMEOUT = int(Status.ERR_TIMEOUT)

# Whether the interpreter runs Python code one thread at a time (every CPython but a
# free-threaded build with the GIL off; that one can only turn it on later, not off).
# `Queue._wait` takes a use of the handle without the lock only then: see there.
_ONE_THREAD_AT_A_TIME = getattr(sys, "_is_gil_enabled", lambda: True)()

#: Most messages one call into the library takes in :meth:`Queue.get_many`
#: (``SHMQ_RECEIVE_BATCH_MAX``); ``get_many`` makes several calls for more.
RECEIVE_BATCH_MAX = 64

# Largest per-thread receive buffer of get_many: fewer messages per call for large ones.
_BATCH_BUFFER_BYTES = 1 << 20

# `QueueInfo` seen as 64-bit words, when its length field is one (a 64-bit `size_t`):
# words per info and the length's index, for `Queue.get_many`. 0: read the fields.
_INFO_WORDS = (
    ctypes.sizeof(QueueInfo) // 8
    if ctypes.sizeof(ctypes.c_size_t) == 8
    and QueueInfo.len.offset % 8 == 0
    and ctypes.sizeof(QueueInfo) % 8 == 0
    else 0
)
_INFO_LEN_WORD = QueueInfo.len.offset // 8

T = TypeVar("T")


# ----- helpers around the C calls ------------------------------------------------------------


def _text(raw: Optional[bytes]) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def status_str(status: int) -> str:
    """The library's short static description of a status code."""
    return _text(lib.shmq_status_str(int(status)))


def library_version() -> str:
    """Version of the loaded ``libshmq`` (``shmq_version()``)."""
    return _text(lib.shmq_version())


def checksum_implementation() -> str:
    """Which implementation computes message checksums in this process
    (``shmq_checksum_implementation()``): the fastest CRC32C this CPU runs. All compute the
    same CRC32C; only the speed differs, which can explain two machines' figures."""
    return _text(lib.shmq_checksum_implementation())


def _error(status: int, fallback: str = "") -> Error:
    """The exception for ``status``, carrying this thread's last-error message.

    Must run on the thread that made the failing call (the message is thread-local in the
    library) and before any other call into it.
    """
    message = _text(lib.shmq_last_error()) or fallback or status_str(status)
    return error_for(status, message)


def _encode_name(name: str) -> bytes:
    if not isinstance(name, str):
        raise TypeError(f"queue name must be a str, not {type(name).__name__}")
    if "\0" in name:
        # ctypes would silently cut the name at the NUL.
        raise InvalidArgument(f"queue name {name!r} contains a NUL character")
    return name.encode("utf-8")


def _readable(data: BytesLike) -> tuple[Any, int]:
    """A ctypes-passable pointer to ``data``'s bytes and their length (copy only if needed)."""
    if isinstance(data, bytes):
        return data, len(data)
    if isinstance(data, str):
        raise TypeError("messages are bytes: encode text first, e.g. text.encode()")
    view = memoryview(data)
    if view.readonly or not view.c_contiguous:
        copy = view.tobytes()
        return copy, len(copy)
    view = view.cast("B")
    return (ctypes.c_char * view.nbytes).from_buffer(view), view.nbytes


# Queue.put_parts joins parts of up to this many bytes in all before sending. Two parts,
# 16 bytes and the rest, each message sent and received in one process (`get_into`), per
# message: at 64 B, put of the joined bytes 3.1 us against 4.5-5.1 through the library's
# gather (the arrays it needs); at 64 KiB 6.0-6.2 against 6.7-6.8; at 128 KiB 11.0-12.0
# against 9.0-9.2; at 1 MiB 57-67 against 46-47 (docs/PERFORMANCE.md, twenty-fourth
# session).
_JOIN_PARTS = 64 * 1024


def _pointer_arrays(items: Sequence[BytesLike]) -> tuple[Any, Any]:
    """ctypes arrays of the addresses and lengths of ``items``' bytes, for the C calls that
    take several buffers (``shmq_send_batch``, ``shmq_send_parts``). The arrays keep what
    they point into referenced: keep them over the call."""
    count = len(items)
    if all(type(item) is bytes for item in items):
        # The common case, in C: a c_char_p array points into each bytes object and keeps it
        # referenced, with no buffer export per item.
        return (ctypes.c_char_p * count)(*items), (ctypes.c_size_t * count)(*map(len, items))
    readable = [_readable(item) for item in items]
    # Still a c_char_p array: it takes a `bytes` object as it is (and keeps it referenced,
    # where a cast to find its address cost 0.8 us) and any other buffer by its address.
    pointers = (ctypes.c_char_p * count)(
        *(obj if type(obj) is bytes else ctypes.addressof(obj) for obj, _ in readable)
    )
    # The exports behind those addresses stay referenced by the pointer array's `_keep`
    # attribute until it is dropped.
    pointers._keep = readable  # type: ignore[attr-defined]
    return pointers, (ctypes.c_size_t * count)(*(length for _, length in readable))


def _writable(buffer: BytesLike) -> tuple[Any, int, int]:
    """A ctypes object holding an export of ``buffer`` (which cannot be resized or freed
    while that object lives: keep it over the call), the address of the first byte, and
    the length."""
    if isinstance(buffer, (bytes, str)):
        raise TypeError(f"buffer must be writable (bytearray, memoryview, ...), not {type(buffer).__name__}")
    view = memoryview(buffer)
    if view.readonly:
        raise TypeError("buffer must be writable")
    if not view.c_contiguous:
        raise BufferError("buffer must be C-contiguous")
    view = view.cast("B")
    size = view.nbytes
    # One `c_char` over the first byte, not an array of them all: half the cost, and the
    # address is all the call takes.
    held = ctypes.c_char.from_buffer(view) if size else (ctypes.c_char * 0).from_buffer(view)
    return held, ctypes.addressof(held), size


def _check_count(name: str, value: object, least: int) -> None:
    """``value`` must be an int (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if value < least:
        raise ValueError(f"{name} must be at least {least}")


def _check_timeout(timeout: Optional[float]) -> Optional[float]:
    """The timeout to wait with: None (no limit) for None or infinity; ValueError for a
    negative number or NaN."""
    if timeout is None:
        return None
    if not timeout >= 0:  # also NaN
        raise ValueError(f"'timeout' must be a non-negative number, not {timeout!r}")
    return None if math.isinf(timeout) else timeout


def unlink(name: str, *, missing_ok: bool = False) -> None:
    """Removes the queue ``name``. Processes still attached keep using it until they close.

    Raises :class:`NotFound` if there is no such queue, unless ``missing_ok``.
    """
    status = lib.shmq_unlink(_encode_name(name))
    if status == Status.ERR_NOT_FOUND and missing_ok:
        return
    if status != Status.OK:
        raise _error(status)


# ----- value types ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A received message with the id and timestamp that travel with it in the slot.

    Attributes:
        id: the sender's id (``put_message``), or the message's position in the queue for a
            plain ``put``.
        data: the payload.
        timestamp_ns: the sender's timestamp, nanoseconds since the Unix epoch by default
            (within about a microsecond of :func:`time.time_ns`, either side).
        redelivered: the first receiver died while receiving it; it was delivered again.
    """

    id: int
    data: bytes
    timestamp_ns: int = 0
    redelivered: bool = False

    @property
    def timestamp(self) -> float:
        """``timestamp_ns`` in seconds, comparable with :func:`time.time`."""
        return self.timestamp_ns / 1e9

    def text(self, encoding: str = "utf-8", errors: str = "replace") -> str:
        """The payload decoded as text."""
        return self.data.decode(encoding, errors)

    def __repr__(self) -> str:
        shown = self.data if len(self.data) <= 40 else self.data[:40] + b"..."
        extra = ", redelivered=True" if self.redelivered else ""
        return (
            f"Message(id={self.id}, data={shown!r} ({len(self.data)} bytes), "
            f"timestamp_ns={self.timestamp_ns}{extra})"
        )


_new_object = object.__new__


def _received_message(id: int, data: bytes, timestamp_ns: int, redelivered: bool) -> Message:
    """A :class:`Message` built without its generated ``__init__``, which sets each field
    through ``object.__setattr__`` (the class is frozen): 0.7 against 2-2.7 µs on the
    project's VM, paid by every :meth:`Queue.get_message`. The same object: a frozen
    dataclass keeps its fields in the instance ``__dict__`` (``tests/test_api.py`` compares
    the two)."""
    message = _new_object(Message)
    fields = message.__dict__
    fields["id"] = id
    fields["data"] = data
    fields["timestamp_ns"] = timestamp_ns
    fields["redelivered"] = redelivered
    return message


@dataclass(frozen=True)
class Stats:
    """A snapshot of a queue's statistics, shared by every process that uses it.

    Message counts are exact once no operation is in flight; byte counts are flushed by
    each handle periodically. A timed-out call counts once in ``timeouts`` (and, for sends,
    in ``send_full``), however many wait slices it took. ``sender_sleeps`` and
    ``receiver_sleeps`` count blocking calls that polled for their spin limit and then slept
    on the queue's futex (a Python call once per wait slice in which it slept).
    """

    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    send_full: int
    timeouts: int
    checksum_failures: int
    abandoned: int
    redelivered: int
    corrupted: int
    peak_depth: int
    depth: int
    capacity: int
    sender_sleeps: int
    receiver_sleeps: int


# ----- the queue --------------------------------------------------------------------------------

_PRIVATE = object()


class Queue:
    """A handle on a named cross-process queue (``queue.Queue``-like).

    Make one with :meth:`create` or :meth:`connect`. One handle may be used by many threads
    at once; blocking calls release the GIL and wake up every ``WAIT_SLICE_MS`` to let
    signals (Ctrl-C) through. Messages are ``bytes``; each is received by exactly one
    receiver, whatever process or language it is in.

    ``close()`` (or leaving a ``with`` block) releases the handle; the queue itself lives on
    until :func:`unlink`. A queue pickles as its name: unpickling connects to it again (so a
    ``Queue`` can be handed to a ``multiprocessing`` child). A ``Queue`` inherited through
    ``fork()`` (``multiprocessing``'s default start method on Linux) reopens the same queue
    right after the fork in the child (also if its name was unlinked since), so that each
    process is a participant of its own: a child that dies holding a message has it delivered
    again, as any other process, and a child that never uses the queue does not keep a dead
    parent looking alive.
    """

    def __init__(self, _token: object = None, *, _handle: Any = None, _name: str = "") -> None:
        if _token is not _PRIVATE:
            raise TypeError("use shmq.Queue.create(...) or shmq.Queue.connect(...)")
        self._name = _name
        self._handle: Any = _handle
        self._capacity = int(lib.shmq_capacity(_handle))
        self._message_size = int(lib.shmq_message_size(_handle))
        self._spsc = lib.shmq_is_single_producer_single_consumer(_handle) == 1
        # Handle lifetime: every call holds a "use"; close() refuses new uses and waits for
        # the current ones (at most one wait slice) before freeing the C handle. A use is an
        # entry in `_uses`, whose `append` and `pop` are atomic, so that with the GIL every
        # message's path takes one without the lock (see `_wait`); the lock orders close(),
        # fork and the rest, and the condition close() waits on.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._uses: list[None] = []
        self._closing = False
        self._free_when_unused = False  # close() was called from inside a callback
        self._local = threading.local()
        self._inherited = False  # in a forked child: the handle is the parent's (see _adopt)
        self._adopt_error: Exception | None = None  # why the child could not reopen it
        _live_queues.add(self)

    # ----- opening -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        capacity: int = 100,
        message_size: int = 1024,
        *,
        mode: int = 0o600,
        checksum: bool = True,
        exist_ok: bool = False,
        replace: bool = False,
        single_producer_single_consumer: bool = False,
    ) -> "Queue":
        """Creates the queue ``name`` with ``capacity`` slots of ``message_size`` bytes.

        Args:
            mode: permission bits of the segment (owner-only by default; ``0o660`` shares
                with the group).
            checksum: protect each message with a CRC32C (on by default).
            exist_ok: connect to an existing queue of that name instead of failing (its
                geometry must match).
            replace: remove an existing queue of that name and create a fresh one
                (processes attached to the old one keep it).
            single_producer_single_consumer: one sender and one receiver at a time (off by
                default: any number of each). The first handle that puts takes the queue's
                sending role and keeps it until it is closed; likewise for getting. Another
                handle that tries, in any process, gets :class:`RoleTaken` until the holder
                closes or dies. In exchange the queue is several times faster between two
                processes. Threads sharing the holding handle may all use it. With
                ``exist_ok``, the existing queue must be of the same kind.

        Raises:
            AlreadyExists: the name is taken and neither ``exist_ok`` nor ``replace``.
            InvalidArgument: bad name or sizes, or ``exist_ok`` found a queue of another
                geometry or kind.
        """
        if exist_ok and replace:
            raise ValueError("exist_ok and replace cannot both be set")
        for label, value in (("capacity", capacity), ("message_size", message_size)):
            if not isinstance(value, int) or not 0 < value <= 0xFFFFFFFF:
                raise InvalidArgument(f"{label} must be a positive 32-bit integer, got {value!r}")
        if not isinstance(mode, int) or not 0 <= mode <= 0o7777:
            raise InvalidArgument(f"mode must be permission bits like 0o600, got {mode!r}")
        flags = (
            (0 if checksum else CREATE_NO_CHECKSUM)
            | (CREATE_OPEN_EXISTING if exist_ok else 0)
            | (CREATE_REPLACE if replace else 0)
            | (CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER if single_producer_single_consumer else 0)
        )
        handle = QueuePtr()
        status = lib.shmq_create_with(
            _encode_name(name), capacity, message_size, mode, flags, ctypes.byref(handle)
        )
        if status != Status.OK:
            raise _error(status)
        return cls(_PRIVATE, _handle=handle, _name=name)

    @classmethod
    def connect(cls, name: str) -> "Queue":
        """Connects to the existing queue ``name``.

        Raises:
            NotFound: there is no such queue.
            PermissionDenied: its mode forbids this process.
            IncompatibleVersion: it was made by an incompatible shmq.
        """
        handle = QueuePtr()
        status = lib.shmq_connect(_encode_name(name), ctypes.byref(handle))
        if status != Status.OK:
            raise _error(status)
        return cls(_PRIVATE, _handle=handle, _name=name)

    # ----- handle lifetime -----------------------------------------------------------------

    def _acquire(self) -> Any:
        with self._lock:
            if self._closing:
                # `_wait` comes here after giving back a use it took as close() began: that
                # may have been the use close() waits for, or the last one it deferred to.
                self._use_ended_while_closing()
                raise self._closed_error()
            if self._inherited:
                self._adopt()
            self._uses.append(None)
            return self._handle

    def _after_fork_in_child(self) -> None:
        """Runs in a child forked while this handle was open. The parent's other threads may
        have held the lock at the fork (they do not exist here), and the C handle carries the
        parent's identity: this process connects its own (:meth:`_adopt`) at once, so that
        the inherited descriptor, which shares the parent's liveness lock, is closed even if
        the child never uses the queue (else a dead parent's slots would wait for the child)."""
        # The forking thread's own zero-copy calls in progress on this handle (a fork from a
        # callback) still hold their uses, which their ends will give back. (Its thread-local
        # data, which counts them, lives on in the child: that thread is the child's.)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._uses = [None] * getattr(self._local, "callbacks", 0)
        self._inherited = not self._closing
        if self._inherited and not self._uses:
            # Not while a call of this thread is in progress on the handle (a fork from a
            # callback): the copy of that call returns into the library with it. The first
            # use after that call adopts instead.
            try:
                self._adopt()
            except Exception as e:  # noqa: BLE001 - raised by every use (the handle is closed)
                self._adopt_error = e

    def _closed_error(self) -> Exception:
        """What a call on a closed handle raises: why the reopen after ``fork()`` failed, if
        that is what closed it."""
        if self._adopt_error is not None:
            return self._adopt_error
        return ValueError(f"operation on closed queue handle {self._name!r}")

    def _adopt(self) -> None:
        """Replaces the handle inherited through ``fork()`` by one of this process's own on
        the same queue (``shmq_reopen``: the same shared memory, even if the name was
        unlinked or reused since), called with the lock held. The library refuses the
        inherited one (it would act as the parent) and closing it leaves the parent's state
        alone."""
        self._inherited = False
        inherited, self._handle = self._handle, None
        handle = QueuePtr()
        status = lib.shmq_reopen(inherited, ctypes.byref(handle))
        lib.shmq_close(inherited)
        if status != Status.OK:
            self._closing = True
            raise _error(status)
        self._handle = handle

    def _release(self) -> None:
        with self._lock:
            self._uses.pop()
            if self._closing:
                self._use_ended_while_closing()

    def _call(self, fn: Callable[..., int], *args: Any) -> Any:
        handle = self._acquire()
        try:
            return fn(handle, *args)
        finally:
            self._release()

    def close(self) -> None:
        """Releases this handle (idempotent). Other threads blocked in this handle's calls
        get ``ValueError`` within one wait slice. The queue itself stays until unlinked.

        Called from inside a zero-copy callback of this handle (``fill`` or ``read``), it
        refuses new calls at once and frees the handle when that call returns."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            # The uses of this thread's own zero-copy calls (it is inside their callbacks)
            # end only after this returns: wait for the other threads' uses alone.
            own = getattr(self._local, "callbacks", 0)
            while len(self._uses) > own:
                self._cond.wait()
            if self._uses:
                self._free_when_unused = True
                return
            handle, self._handle = self._handle, None
        lib.shmq_close(handle)

    def _use_ended_while_closing(self) -> None:
        """With the lock held, a use just ended on a closing handle: wakes close() (which
        may be waiting for the other threads' uses only, see :meth:`close`), and frees a
        handle whose close() was deferred once no use is left."""
        self._cond.notify_all()
        if not self._uses and self._free_when_unused:
            self._free_when_unused = False
            handle, self._handle = self._handle, None
            lib.shmq_close(handle)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called on this handle."""
        return self._closing

    def __enter__(self) -> "Queue":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # No other reference exists, so no call can be in flight.
        handle = getattr(self, "_handle", None)
        if handle is not None and not getattr(self, "_closing", True):
            try:
                self._handle = None
                lib.shmq_close(handle)
            except Exception:  # interpreter shutdown: the library may be gone already
                pass

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (Queue.connect, (self._name,))

    # ----- properties ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def capacity(self) -> int:
        """Number of slots: at most this many messages wait in the queue."""
        return self._capacity

    @property
    def message_size(self) -> int:
        """Largest message, in bytes."""
        return self._message_size

    @property
    def single_producer_single_consumer(self) -> bool:
        """Whether the queue allows one sender and one receiver at a time (it was created
        with ``single_producer_single_consumer=True``, by whichever process)."""
        return self._spsc

    @property
    def spin_limit(self) -> float:
        """How long this handle's blocking calls poll for the other side before they sleep
        in the kernel, in seconds: 10 µs (``1e-05``) unless set. Left at the default, a
        handle whose waits keep ending after long sleeps (200 µs or more, eight in a row,
        as an idle worker's do) stops polling until an answer comes while it polls (it
        tries every sixteenth wait); a value that was set is used as given.

        Set it longer (say ``0.0001`` to ``0.005``) when the other side usually answers
        within that time, as in request/reply with a peer that works for tens of
        microseconds per message: each answer is then seen at polling speed and neither
        side pays a wake-up (tens of microseconds on a VM), for up to this much of a core
        per wait. ``0`` sleeps after one look (no CPU spent waiting); ``math.inf`` never
        sleeps. Polling still yields the core to a peer that shares it. This handle only
        (a handle inherited through ``fork()`` keeps its setting).
        """
        value = ctypes.c_uint64()
        status = self._call(lib.shmq_spin_limit, ctypes.byref(value))
        if status != Status.OK:
            raise _error(status)
        return math.inf if value.value == _U64_MAX else value.value / 1e9

    @spin_limit.setter
    def spin_limit(self, seconds: float) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"spin_limit must be a number of seconds, not {type(seconds).__name__}")
        if not seconds >= 0:  # also NaN
            raise ValueError(f"spin_limit must be a non-negative number, not {seconds!r}")
        # Compared before multiplying: a huge int would not convert to a float.
        ns = _U64_MAX if seconds >= _U64_MAX / 1e9 else min(round(seconds * 1e9), _U64_MAX)
        status = self._call(lib.shmq_set_spin_limit, ns)
        if status != Status.OK:
            raise _error(status)

    def qsize(self) -> int:
        """Messages in the queue now (a snapshot: other processes change it)."""
        return int(self._call(lib.shmq_len))

    def empty(self) -> bool:
        """Whether the queue holds no message now (a snapshot)."""
        return self.qsize() == 0

    def full(self) -> bool:
        """Whether every slot is taken now (a snapshot)."""
        return self.qsize() >= self._capacity

    def is_shutdown(self) -> bool:
        """Whether anyone called :meth:`shutdown` on this queue."""
        return bool(self._call(lib.shmq_is_shutdown))

    def uses_real_fences(self) -> bool:
        """Whether every send and receive on this queue issues a real memory fence, because
        a process that cannot call ``membarrier`` (an old kernel, a seccomp filter) has
        joined it: correct, and slower (``shmq info`` shows it as ``fences real``). Once
        true, it stays true for the queue's life."""
        return self._call(lib.shmq_uses_real_fences) == 1

    def stats(self) -> Stats:
        """A snapshot of the queue's shared statistics."""
        raw = StatsStruct()
        raw.struct_size = ctypes.sizeof(StatsStruct)
        status = self._call(lib.shmq_stats, ctypes.byref(raw))
        if status != Status.OK:
            raise _error(status)
        return Stats(**{name: int(getattr(raw, name)) for name in Stats.__dataclass_fields__})

    def __repr__(self) -> str:
        if self._closing:
            return f"<shmq.Queue {self._name!r} (closed handle)>"
        try:
            depth = self.qsize()
            state = ", shut down" if self.is_shutdown() else ""
        except ValueError:  # closed meanwhile
            return f"<shmq.Queue {self._name!r} (closed handle)>"
        return (
            f"<shmq.Queue {self._name!r} {depth}/{self._capacity} messages "
            f"of up to {self._message_size} bytes{state}>"
        )

    # ----- waiting -------------------------------------------------------------------------

    def _wait(
        self, fn: Callable[..., int], args: tuple, block: bool, timeout: Optional[float]
    ) -> int:
        """Runs ``fn(handle, *args, timeout_ms, flags)`` until it stops timing out or time is
        up, holding a use of the handle during each call (see :meth:`_call`, inlined here:
        this is every message's path, where each Python frame costs).

        Waits in slices of at most ``WAIT_SLICE_MS`` so that Python handles signals between
        them. Every slice but the one that ends the caller's wait passes ``SHMQ_WAIT_SLICE``,
        so the queue's statistics count one timeout per timed-out call, not one per slice.
        Returns the last status.
        """
        deadline = None
        if block and timeout is not None:
            timeout = _check_timeout(timeout)
            if timeout is not None:
                deadline = time.monotonic() + timeout
        while True:
            # The lock is looked up at each use, not kept: a fork() inside this call's
            # callback gives the child a new one (see `_after_fork_in_child`).
            if not block:
                slice_ms, flags = 0, 0
            elif deadline is None:
                slice_ms, flags = WAIT_SLICE_MS, WAIT_SLICE
            else:
                left_ms = math.ceil((deadline - time.monotonic()) * 1000)
                if left_ms <= WAIT_SLICE_MS:
                    slice_ms, flags = max(1, left_ms), 0  # the last slice: its expiry counts
                else:
                    slice_ms, flags = WAIT_SLICE_MS, WAIT_SLICE
            # With the GIL, a use without the lock (two `with lock` cost 1 µs per message
            # on the project's VM): taken first, then the state checked, in that order.
            # close() sets `_closing` and then counts the uses: either it counts this one
            # (and waits for it), or this check sees `_closing` (and gives it back). A use
            # that finds the handle closing or inherited is given back and taken again
            # under the lock. Without the GIL nothing orders the store and load of each
            # side (both could read the other's old value), so every use takes the lock.
            if _ONE_THREAD_AT_A_TIME:
                uses = self._uses
                uses.append(None)
                if self._closing or self._inherited:
                    uses.pop()
                    self._acquire()
            else:
                self._acquire()
            try:
                # close() frees the handle only once the uses are back to zero.
                status = fn(self._handle, *args, slice_ms, flags)
            finally:
                if _ONE_THREAD_AT_A_TIME:
                    # Looked up again: a child forked inside the call has a list of its own.
                    self._uses.pop()
                    if self._closing:
                        with self._lock:
                            self._use_ended_while_closing()
                else:
                    self._release()
            if status != _ERR_TIMEOUT or flags == 0:
                return status

    def _raise_send(self, status: int, block: bool, timeout: Optional[float]) -> None:
        if status in (Status.ERR_FULL, Status.ERR_TIMEOUT):
            fallback = f"queue {self._name!r} is full" + (
                f": no room within {timeout} s" if block else ""
            )
            raise Full(_text(lib.shmq_last_error()) or fallback, Status(status))
        raise _error(status)

    def _raise_receive(self, status: int, block: bool, timeout: Optional[float]) -> None:
        if status in (Status.ERR_EMPTY, Status.ERR_TIMEOUT):
            fallback = f"queue {self._name!r} is empty" + (
                f": no message within {timeout} s" if block else ""
            )
            raise Empty(_text(lib.shmq_last_error()) or fallback, Status(status))
        raise _error(status)

    # ----- sending -------------------------------------------------------------------------

    def put(self, data: BytesLike, block: bool = True, timeout: Optional[float] = None) -> None:
        """Sends ``data`` (any bytes-like object).

        With ``block`` (the default) waits for room: without limit if ``timeout`` is
        ``None``, else at most ``timeout`` seconds. Raises :class:`Full` if there is no room
        in time (at once when ``block`` is false), :class:`Closed` after :meth:`shutdown`,
        :class:`MessageTooLarge` if ``data`` is longer than :attr:`message_size`.
        """
        pointer, length = _readable(data)
        status = self._wait(lib.shmq_send_ex, (pointer, length), block, timeout)
        if status != _OK:
            self._raise_send(status, block, timeout)

    def put_nowait(self, data: BytesLike) -> None:
        """``put(data, block=False)``: raises :class:`Full` at once if there is no room."""
        self.put(data, block=False)

    def put_parts(
        self, parts: Iterable[BytesLike], block: bool = True, timeout: Optional[float] = None
    ) -> None:
        """Sends one message made of ``parts`` joined (bytes-like objects, in order):
        ``q.put_parts([header, payload])`` sends what ``q.put(header + payload)`` sends. An
        empty list sends an empty message.

        Parts of up to 64 KiB in all are joined here and sent as one (``put``): the copy
        costs less than the arrays a call with several buffers needs. Larger ones go to the
        library as they are (``shmq_send_parts``, a gather send), which copies each into
        the queue without the joined copy: for a large payload (a NumPy array's buffer,
        say) a copy saved.

        Waits and raises like :meth:`put`; :class:`MessageTooLarge` if the parts add up to
        more than :attr:`message_size` (nothing is sent).
        """
        if not isinstance(parts, (list, tuple)):
            parts = list(parts)  # an iterator would be used up by the checks below
        if all(type(part) is bytes for part in parts):
            total = sum(map(len, parts))
        else:
            # A str raises TypeError here, as it does in put.
            total = sum(memoryview(part).nbytes for part in parts)
        if total <= _JOIN_PARTS:
            self.put(b"".join(parts), block, timeout)
            return
        count = len(parts)
        # The objects behind the pointers stay referenced here until the call is done.
        pointers, lengths = _pointer_arrays(parts)
        status = self._wait(lib.shmq_send_parts, (pointers, lengths, count), block, timeout)
        if status != _OK:
            self._raise_send(status, block, timeout)

    def put_message(
        self,
        id: int,
        data: BytesLike,
        *,
        timestamp_ns: Optional[int] = None,
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> None:
        """Sends ``data`` with the message id ``id`` (and ``timestamp_ns``, now by default),
        which every receiver sees (:meth:`get_message`). Waits like :meth:`put`."""
        if timestamp_ns is None:
            timestamp_ns = time.time_ns()
        if not (
            type(id) is int
            and 0 <= id <= _U64_MAX
            and type(timestamp_ns) is int
            and 0 <= timestamp_ns <= _U64_MAX
        ):  # the common case above, in a few comparisons; the rest checked one by one
            for label, value in (("id", id), ("timestamp_ns", timestamp_ns)):
                if not isinstance(value, int) or not 0 <= value <= _U64_MAX:
                    raise InvalidArgument(
                        f"{label} must be an unsigned 64-bit integer, got {value!r}"
                    )
        pointer, length = _readable(data)
        status = self._wait(
            lib.shmq_send_message_ex, (id, timestamp_ns, pointer, length), block, timeout
        )
        if status != _OK:
            self._raise_send(status, block, timeout)

    # ----- receiving -----------------------------------------------------------------------

    def _scratch(self) -> tuple[memoryview, int, int, Any, int]:
        """This thread's receive buffer (one allocation per thread, not per message): a view
        of it, its address and size, and a ``size_t`` for the length received with its
        address. Slicing the view copies a message out 2.7-3.7x faster than
        ctypes.string_at (4 KiB-64 B); the addresses spare ctypes a conversion per call
        (see ``lib_by_address``)."""
        scratch = getattr(self._local, "buf", None)
        if scratch is None:
            buf = ctypes.create_string_buffer(max(1, self._message_size))
            got = ctypes.c_size_t()
            # The view keeps `buf` alive, and the tuple `got`: as long as the thread-local.
            scratch = self._local.buf = (
                memoryview(buf).cast("B"),
                ctypes.addressof(buf),
                ctypes.sizeof(buf),
                got,
                ctypes.addressof(got),
            )
        return scratch

    def _out(self, name: str, ctype: Any) -> tuple[Any, int]:
        """This thread's ``ctype`` out-parameter called ``name``, and its address: the
        ``size_t`` for the length :meth:`get_into` reports (``"length"``; :meth:`_scratch`
        has its own, beside the buffer), the ``shmq_message_info`` of :meth:`get_message`
        (``"info"``)."""
        out = getattr(self._local, name, None)
        if out is None:
            value = ctype()
            out = (value, ctypes.addressof(value))
            setattr(self._local, name, out)
        return out

    def get(self, block: bool = True, timeout: Optional[float] = None) -> bytes:
        """Receives the next message's bytes.

        With ``block`` (the default) waits for one: without limit if ``timeout`` is
        ``None``, else at most ``timeout`` seconds. Raises :class:`Empty` if none came in
        time (at once when ``block`` is false) and :class:`Closed` once the queue is shut
        down and drained.

        Ctrl-C raises ``KeyboardInterrupt`` within one wait slice. As with ``queue.Queue``,
        an interrupt that lands just as a message arrives can surface after the message
        was taken, so a program that must not drop one on Ctrl-C should stop by
        :meth:`shutdown` instead.
        """
        view, address, size, got, got_address = self._scratch()
        status = self._wait(
            lib_by_address.shmq_receive_ex, (address, size, got_address), block, timeout
        )
        if status != _OK:
            self._raise_receive(status, block, timeout)
        return view[: got.value].tobytes()

    def get_nowait(self) -> bytes:
        """``get(block=False)``: raises :class:`Empty` at once if there is no message."""
        return self.get(block=False)

    def get_message(self, block: bool = True, timeout: Optional[float] = None) -> Message:
        """Like :meth:`get`, but returns a :class:`Message` with its id and timestamp."""
        view, address, size, _, _ = self._scratch()
        info, info_address = self._out("info", QueueInfo)
        status = self._wait(
            lib_by_address.shmq_receive_message_ex,
            (address, size, info_address),
            block,
            timeout,
        )
        if status != _OK:
            self._raise_receive(status, block, timeout)
        return _received_message(
            info.id,
            view[: info.len].tobytes(),
            info.timestamp_ns,
            bool(info.flags & MESSAGE_REDELIVERED),
        )

    def get_into(
        self, buffer: BytesLike, block: bool = True, timeout: Optional[float] = None
    ) -> int:
        """Receives the next message into ``buffer`` (a writable bytes-like object, e.g. a
        ``bytearray`` or ``memoryview``) without allocating; returns its length.

        Raises :class:`BufferTooSmall` (with ``needed``) if the next message does not fit;
        the message then stays in the queue. Otherwise waits and fails like :meth:`get`.
        """
        held, address, size = _writable(buffer)
        got, got_address = self._out("length", ctypes.c_size_t)
        status = self._wait(
            lib_by_address.shmq_receive_ex, (address, size, got_address), block, timeout
        )
        del held  # the export of `buffer` ends here, not before the call
        if status == Status.ERR_BUFFER_TOO_SMALL:
            message = _text(lib.shmq_last_error()) or (
                f"buffer of {size} bytes is too small for the next message of {got.value} bytes"
            )
            raise BufferTooSmall(message, Status.ERR_BUFFER_TOO_SMALL, needed=got.value or None)
        if status != _OK:
            self._raise_receive(status, block, timeout)
        return got.value

    # ----- batches ------------------------------------------------------------------------

    def put_many(
        self, items: Sequence[BytesLike], block: bool = True, timeout: Optional[float] = None
    ) -> int:
        """Sends the messages of ``items`` in order, many per call into the library (one
        wait, one wake-up check and one timestamp for each call; ``shmq_send_batch``).

        With ``block`` (the default) waits for room as :meth:`put` does: until all are sent
        if ``timeout`` is ``None``, else for at most ``timeout`` seconds in all. Without
        ``block``, sends what fits at once. Returns how many were sent, in order:
        ``len(items)`` unless room (or time) ran out, or the queue was shut down, after the
        first. Raises like :meth:`put` when not even the first could be sent
        (:class:`Full`, :class:`Closed`), and :class:`MessageTooLarge` before sending
        anything if any item is longer than :attr:`message_size`.
        """
        count = len(items)
        if count == 0:
            return 0
        timeout = _check_timeout(timeout)
        # The objects behind the pointers stay referenced here until the calls are done.
        pointers, lengths = _pointer_arrays(items)
        out = ctypes.c_size_t()

        # The addresses of both arrays' elements (the arrays stay referenced above).
        ptrs, lens = ctypes.addressof(pointers), ctypes.addressof(lengths)
        pointer_size, length_size = ctypes.sizeof(ctypes.c_void_p), ctypes.sizeof(ctypes.c_size_t)

        def send(sent: int, time_left: Optional[float]) -> int:
            # Elements `sent..` of both arrays: addresses as integers, which the `void *`
            # parameters take as they are (a ctypes.cast cost 0.8 us each).
            return self._wait(
                lib.shmq_send_batch,
                (ptrs + sent * pointer_size, lens + sent * length_size, count - sent, ctypes.byref(out)),
                block,
                time_left,
            )

        return self._send_in_calls(count, block, timeout, send, out)

    def _send_in_calls(
        self,
        count: int,
        block: bool,
        timeout: Optional[float],
        send: Callable[[int, Optional[float]], int],
        out: Any,
    ) -> int:
        """The waiting of :meth:`put_many` and :meth:`put_many_in_place`: ``send(sent,
        time_left)`` makes one call into the library for messages ``sent`` to ``count - 1``
        (which writes how many it sent to ``out``), waiting per ``block`` and the time left
        of ``timeout``; calls follow while ``block`` and messages are left. Returns how many
        were sent."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sent = 0
        while sent < count:
            status = send(sent, None if deadline is None else max(0.0, deadline - time.monotonic()))
            if status != Status.OK:
                # A refused length (only an in-place fill can return one after the first
                # message) raises even after earlier messages went: that message was lost,
                # not left for later like one that found no room.
                if sent == 0 or status == Status.ERR_MESSAGE_TOO_LARGE:
                    self._raise_send(status, block, timeout)
                break
            sent += out.value
            if not block:
                break
        return sent

    def _batch_scratch(self) -> tuple[Any, Any, memoryview, int]:
        """This thread's buffers for :meth:`get_many`: payloads, infos, the infos as 64-bit
        words (see ``_INFO_LEN_WORD``), messages per call."""
        scratch = getattr(self._local, "batch", None)
        if scratch is None:
            size = max(1, self._message_size)
            per_call = max(1, min(RECEIVE_BATCH_MAX, _BATCH_BUFFER_BYTES // size))
            infos = (QueueInfo * per_call)()
            scratch = self._local.batch = (
                ctypes.create_string_buffer(per_call * size),
                infos,
                memoryview(infos).cast("B").cast("Q"),
                per_call,
            )
        return scratch

    def get_many(
        self,
        max_messages: int = RECEIVE_BATCH_MAX,
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> list[bytes]:
        """Receives up to ``max_messages`` messages: waits for the first as :meth:`get`
        does, then takes those already queued behind it, many per call into the library
        (``shmq_receive_batch``). Returns at least one.

        Raises :class:`Empty` and :class:`Closed` as :meth:`get` does when there is none. A
        message that fails verification is dropped and raises :class:`CorruptedData`, whose
        ``received`` attribute holds the other messages taken (they are not lost: those
        before it, and those the same call into the library had already claimed after it).
        The messages of one call into the library are released together once all are copied, so
        a process killed inside it leaves them to be delivered again.
        """
        _check_count("max_messages", max_messages, 1)
        buf, infos, info_words, per_call = self._batch_scratch()
        size = max(1, self._message_size)
        got = ctypes.c_size_t()
        received: list[bytes] = []
        while len(received) < max_messages:
            want = min(per_call, max_messages - len(received))
            first = not received
            status = self._wait(
                lib.shmq_receive_batch,
                (buf, want * size, infos, want, ctypes.byref(got)),
                block if first else False,
                timeout if first else None,
            )
            if status in (Status.OK, Status.ERR_CORRUPTED_DATA):
                count = got.value
                # The lengths in one slice of the infos' words: reading a ctypes field
                # costs 0.25 µs a message on the project's VM, a word 0.08 µs.
                if _INFO_WORDS:
                    lengths = info_words[_INFO_LEN_WORD : count * _INFO_WORDS : _INFO_WORDS]
                    lengths = lengths.tolist()
                else:
                    lengths = [infos[i].len for i in range(count)]
                # Slices of a memoryview: 2.3x faster per message than ctypes.string_at.
                with memoryview(buf) as view:
                    received += [
                        view[i * size : i * size + length].tobytes()
                        for i, length in enumerate(lengths)
                    ]
            if status == Status.ERR_CORRUPTED_DATA:
                error = _error(status)
                error.received = received  # type: ignore[attr-defined]
                raise error
            if status != Status.OK:
                if first:
                    self._raise_receive(status, block, timeout)
                break  # nothing more queued right now (or shut down: the next get says so)
            if got.value < want:
                break
        return received

    # ----- zero-copy ---------------------------------------------------------------------

    def put_in_place(
        self,
        fill: Callable[[memoryview], int],
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> None:
        """Zero-copy send: claims a slot and calls ``fill(view)`` once with a writable
        ``memoryview`` of :attr:`message_size` bytes *in shared memory*; ``fill`` writes the
        message at the start of it and returns its length, and the message is published.

        The slot may hold an older message's bytes: write every byte you count. The view is
        released when ``fill`` returns: do not keep it or a slice of it (a kept slice is
        detected: :class:`BufferError`, and the message is cancelled).

        If ``fill`` raises, the exception propagates from ``put_in_place`` and the message is
        cancelled; so is it if ``fill`` returns a negative length (:class:`InvalidArgument`)
        or one above :attr:`message_size` (:class:`MessageTooLarge`). A cancelled slot still
        passes through the queue as a poisoned message: the receiver that takes it gets
        :class:`CorruptedData` once, and later receives go on normally.

        ``fill`` is not called when no slot is claimed; waits and fails like :meth:`put`
        (Ctrl-C within one wait slice).
        """
        with _zerocopy.InPlaceCall(fill, self._message_size, self._local) as call:
            key = call.key
            status = self._wait(
                lib.shmq_send_in_place, (_zerocopy.FILL, key), block, timeout
            )
        if call.error is not None:
            raise call.error
        if status != Status.OK:
            self._raise_send(status, block, timeout)

    def put_many_in_place(
        self,
        fill: Callable[[memoryview, int], int],
        count: int,
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> int:
        """Zero-copy batch send: writes messages ``0 .. count - 1`` in order, each by
        ``fill(view, index)`` in a claimed slot as :meth:`put_in_place` does, many per call
        into the library (``shmq_send_batch_in_place``: one wait, one wake-up check and one
        timestamp for each call).

        Waits for room as :meth:`put_many` does (with ``block``, until all are sent or
        ``timeout`` seconds have passed in all; without, sends what fits at once) and returns
        how many were sent: ``fill`` was called exactly that many times, never for a message
        that found no room. Raises like :meth:`put` when not even the first could be sent.
        The views follow the rules of :meth:`put_in_place`. If ``fill`` raises, returns a
        negative length (:class:`InvalidArgument`) or one above :attr:`message_size`
        (:class:`MessageTooLarge`), the exception propagates, the messages before that index
        stay sent, and that message is cancelled (its slot passes through the queue
        poisoned). On a multi-producer queue the positions the batch had claimed after it
        are given up: receivers skip them (``stats().abandoned`` counts them).
        """
        _check_count("count", count, 0)
        if count == 0:
            return 0
        timeout = _check_timeout(timeout)
        out = ctypes.c_size_t()
        with _zerocopy.InPlaceCall(fill, self._message_size, self._local) as call:

            def send(sent: int, time_left: Optional[float]) -> int:
                call.first = sent
                status = self._wait(
                    lib.shmq_send_batch_in_place,
                    (_zerocopy.FILL_BATCH, call.key, min(count - sent, 1 << 63), ctypes.byref(out)),
                    block,
                    time_left,
                )
                if call.error is not None:
                    raise call.error
                return status

            return self._send_in_calls(count, block, timeout, send, out)

    def get_in_place(
        self,
        read: Callable[[memoryview, "MessageInfo"], T],
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> T:
        """Zero-copy receive: takes the next message and calls ``read(view, info)`` once
        with a read-only ``memoryview`` of its bytes *where they lie in shared memory* and a
        :class:`MessageInfo` (id, timestamp_ns, length, redelivered); returns what ``read``
        returns. The slot is freed when ``read`` returns, so ``read`` should be short.

        The view is released when ``read`` returns: copy what you keep (``bytes(view)``);
        a kept slice is detected (:class:`BufferError`). If ``read`` raises, the exception
        propagates from ``get_in_place`` and the message counts as received (it is not
        delivered again). The bytes were verified (checksum) before ``read`` runs, but they
        are shared memory that a hostile process mapping the segment could change: use
        :meth:`get` when peers are untrusted.

        Waits and fails like :meth:`get` (:class:`Empty`, :class:`Closed`; Ctrl-C within one
        wait slice).
        """
        with _zerocopy.InPlaceCall(read, self._message_size, self._local) as call:
            key = call.key
            status = self._wait(
                lib.shmq_receive_in_place, (_zerocopy.READ, key), block, timeout
            )
        if call.error is not None:
            raise call.error
        if status != Status.OK:
            self._raise_receive(status, block, timeout)
        return call.result  # type: ignore[no-any-return]

    def get_many_in_place(
        self,
        read: Callable[[memoryview, "MessageInfo"], T],
        max_messages: int = RECEIVE_BATCH_MAX,
        block: bool = True,
        timeout: Optional[float] = None,
    ) -> list[T]:
        """Zero-copy batch receive: waits for the first message as :meth:`get_in_place`
        does, then takes up to ``max_messages`` in all without waiting again, calling
        ``read(view, info)`` for each, in order, with its bytes where they lie in shared
        memory (``shmq_receive_batch_in_place``: one call into the library for the batch).
        Returns what ``read`` returned for each (at least one).

        Each slot is freed when its ``read`` returns, so a process killed inside ``read``
        leaves only that message to be delivered again. The views follow the rules of
        :meth:`get_in_place` (read-only, released when ``read`` returns, a kept slice is
        :class:`BufferError`). If ``read`` raises, the batch ends there and the exception
        propagates: that message and those before it count as received. A message that
        fails verification is dropped and raises :class:`CorruptedData`, whose
        ``received`` attribute holds what ``read`` returned for the messages before it.

        Raises :class:`Empty` and :class:`Closed` as :meth:`get` does when there is none.
        """
        _check_count("max_messages", max_messages, 1)
        got = ctypes.c_size_t()  # the C call's count; len(results) says the same
        results: list[T] = []  # what read returned, appended by the trampoline
        with _zerocopy.InPlaceCall(read, self._message_size, self._local) as call:
            call.result = results
            key = call.key
            status = self._wait(
                lib.shmq_receive_batch_in_place,
                (_zerocopy.READ_BATCH, key, min(max_messages, 1 << 63), ctypes.byref(got)),
                block,
                timeout,
            )
        if call.error is not None:
            raise call.error
        if status == Status.ERR_CORRUPTED_DATA:
            error = _error(status)
            error.received = results  # type: ignore[attr-defined]
            raise error
        if status != Status.OK:
            self._raise_receive(status, block, timeout)
        return results

    def __iter__(self) -> Iterator[bytes]:
        """Yields messages' bytes, waiting for each, until the queue is shut down and drained."""
        while True:
            try:
                yield self.get()
            except Closed:
                return

    def messages(self) -> Iterator[Message]:
        """Like iterating the queue, but yields :class:`Message` objects."""
        while True:
            try:
                yield self.get_message()
            except Closed:
                return

    # ----- shutting down -------------------------------------------------------------------

    def shutdown(self) -> None:
        """Closes the queue for sending, for every process: further puts raise
        :class:`Closed`; receivers get the messages left, then :class:`Closed` (iteration
        ends). Idempotent."""
        status = self._call(lib.shmq_shutdown)
        if status != Status.OK:
            raise _error(status)


# Re-exported for ``shmq.library_path``.
library_path = _lib.library_path


# Every open handle, for the at-fork hook (weakly: a handle no one references is not kept).
_live_queues: "weakref.WeakSet[Queue]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for queue in list(_live_queues):
        queue._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)
