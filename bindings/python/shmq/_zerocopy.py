"""Zero-copy sends and receives: a ``memoryview`` over the slot in shared memory, lent to a
Python callback for the duration of one C call (``shmq_send_in_place`` /
``shmq_receive_in_place``), or of each message of a batch (``shmq_send_batch_in_place`` /
``shmq_receive_batch_in_place``).

How it works. One module-level C callback of each kind (``FillFn``/``ReadFn``/
``BatchFillFn``/``BatchReadFn``) serves every call; the ``ctx`` pointer the library passes
back is a key into ``InPlaceCall._active``, where the Python call keeps its user function,
what it returned, the lent view's bookkeeping and any exception. No ctypes callback object is
made per message, and calls can nest (a callback may use another queue).

The lent view is released when the callback returns, so using it afterwards raises
``ValueError: operation forbidden on released memoryview object``. A *slice* of it, or an
object exporting its buffer (``numpy.frombuffer``), would outlive that release and still
point into shared memory; such an escape is detected (a leftover reference to the lent
memory) and reported as :class:`BufferError` after the call (a send is then cancelled).

Exceptions inside the callback never cross the C frames: the trampoline stores them, tells
the library to drop the message (a fill returns -1) or to end the batch (a batch read
returns 1), and the caller re-raises them once the C call has returned.
"""

from __future__ import annotations

import ctypes
import itertools
import operator
import sys
from typing import Any, Callable, NamedTuple, Optional

from ._lib import BatchFillFn, BatchReadFn, FillFn, QueueInfo, ReadFn
from ._status import MESSAGE_REDELIVERED
from .errors import InvalidArgument

__all__ = ["MessageInfo", "InPlaceCall", "FILL", "FILL_BATCH", "READ", "READ_BATCH"]

# sys.getrefcount is exact on CPython only; elsewhere the escape check is skipped (the view
# is still released).
_CHECK_ESCAPES = sys.implementation.name == "cpython"
_INT64_MAX = (1 << 63) - 1


class MessageInfo(NamedTuple):
    """Metadata of a message received in place (:meth:`shmq.Queue.get_in_place`).

    Attributes:
        id: the sender's id (``put_message``), or the message's position in the queue.
        timestamp_ns: the sender's timestamp, nanoseconds since the Unix epoch by default.
        length: the message's length in bytes (``len`` of the view).
        redelivered: the first receiver died while receiving it; it was delivered again.
    """

    id: int
    timestamp_ns: int
    length: int
    redelivered: bool


_array_types: dict[int, Any] = {}


def _array_at(address: int, size: int) -> Any:
    """A ctypes byte array over ``size`` bytes at ``address`` (array types are cached)."""
    kind = _array_types.get(size)
    if kind is None:
        kind = _array_types[size] = ctypes.c_ubyte * size
    return kind.from_address(address)


class InPlaceCall:
    """The state of one zero-copy call (``put_in_place``, ``get_in_place``, or a batch of
    either) while the C call runs. ``result`` is what ``fn`` returned (a list of what it
    returned for each message of a receive batch); ``first`` is the index in the caller's
    batch of the C call's message 0 (a send batch resumed by further C calls)."""

    __slots__ = ("fn", "message_size", "result", "error", "called", "key", "first", "scope")

    _keys = itertools.count(1)  # next() on a count is atomic under the GIL
    _active: dict[int, "InPlaceCall"] = {}

    def __init__(self, fn: Callable[..., Any], message_size: int, scope: Any) -> None:
        """``scope``: the queue handle's ``threading.local``, whose ``callbacks`` counts this
        thread's zero-copy calls in progress on that handle (see ``Queue.close``)."""
        if not callable(fn):
            raise TypeError(f"expected a callable, got {type(fn).__name__}")
        self.fn = fn
        self.message_size = message_size
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.called = False
        self.key = next(InPlaceCall._keys)
        self.first = 0
        self.scope = scope

    def __enter__(self) -> "InPlaceCall":
        InPlaceCall._active[self.key] = self
        self.scope.callbacks = getattr(self.scope, "callbacks", 0) + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.scope.callbacks -= 1
        InPlaceCall._active.pop(self.key, None)

    def lend(self, address: int, length: int, readonly: bool, *args: Any) -> Any:
        """Calls ``fn(view, *args)`` with a view of ``length`` bytes at ``address`` (inside a
        slot of ``message_size`` bytes), then releases the view. Returns what ``fn`` returns;
        raises what it raises, or BufferError if the view escaped."""
        self.called = True
        backing = _array_at(address, self.message_size)
        baseline = sys.getrefcount(backing)
        view = memoryview(backing).cast("B")
        if length != self.message_size:
            view = view[:length]
        if readonly:
            view = view.toreadonly()
        try:
            return self.fn(view, *args)
        finally:
            escaped = False
            try:
                view.release()
            except BufferError:  # something still exports the view's buffer
                escaped = True
            del view
            if _CHECK_ESCAPES and sys.getrefcount(backing) != baseline:
                escaped = True  # a slice (or another view) of it is still alive
            if escaped and self.error is None:
                self.error = BufferError(
                    "a view of the message memory outlived the zero-copy callback (a slice or "
                    "an exported buffer was kept); copy the bytes instead, e.g. bytes(view)"
                )


def _fill_slot(call: InPlaceCall, slot: int, capacity: int, *args: Any) -> int:
    """Lends the slot to ``call.fn(view, *args)``; the length to return to the library."""
    n = operator.index(call.lend(slot, capacity, False, *args))
    if call.error is not None:
        return -1
    # Out of range: the library refuses the length (MESSAGE_TOO_LARGE or
    # INVALID_ARGUMENT) and publishes the slot poisoned.
    if n < 0:
        call.error = InvalidArgument(
            f"fill returned {n}, a negative length; the message was cancelled (its slot goes "
            "through the queue poisoned: one receiver gets CorruptedData for it)"
        )
        return -1
    return n if n <= capacity else min(n, _INT64_MAX)


def _fill(ctx: int, slot: int, capacity: int) -> int:
    # Everything inside try: an exception escaping a ctypes callback is only printed, and
    # the library would then publish whatever the return slot holds.
    call = None
    try:
        call = InPlaceCall._active[ctx]
        return _fill_slot(call, slot, capacity)
    except BaseException as exc:  # noqa: B036 - re-raised by the caller after the C call
        if call is not None:
            call.error = exc  # the callback's own exception wins over an escape report
        return -1


def _fill_batch(ctx: int, index: int, slot: int, capacity: int) -> int:
    # As `_fill`; a refused message (-1) also ends the batch.
    call = None
    try:
        call = InPlaceCall._active[ctx]
        return _fill_slot(call, slot, capacity, call.first + index)
    except BaseException as exc:  # noqa: B036 - re-raised by the caller after the C call
        if call is not None:
            call.error = exc
        return -1


# MessageInfo's own constructor is a Python-level __new__ (about twice the cost of this C
# one); the fields are already ints (ctypes converts c_uint64 and c_size_t).
_new_tuple = tuple.__new__


def _lend_message(call: InPlaceCall, data: int, length: int, info: Any) -> Any:
    raw: QueueInfo = info.contents
    meta = _new_tuple(
        MessageInfo, (raw.id, raw.timestamp_ns, length, bool(raw.flags & MESSAGE_REDELIVERED))
    )
    return call.lend(data, length, True, meta)


def _read(ctx: int, data: int, length: int, info: Any) -> None:
    call = None
    try:
        call = InPlaceCall._active[ctx]
        call.result = _lend_message(call, data, length, info)
    except BaseException as exc:  # noqa: B036 - re-raised by the caller after the C call
        if call is not None:
            call.error = exc  # the callback's own exception wins over an escape report


def _read_batch(ctx: int, data: int, length: int, info: Any) -> int:
    # Returns 1 (end the batch) once anything went wrong, so that no further message is
    # taken from the queue for a caller that is about to get an exception instead.
    call = None
    try:
        call = InPlaceCall._active[ctx]
        call.result.append(_lend_message(call, data, length, info))
        return 0 if call.error is None else 1
    except BaseException as exc:  # noqa: B036 - re-raised by the caller after the C call
        if call is not None:
            call.error = exc
        return 1


#: The C callbacks; module-level so they live as long as the library may call them.
FILL = FillFn(_fill)
FILL_BATCH = BatchFillFn(_fill_batch)
READ = ReadFn(_read)
READ_BATCH = BatchReadFn(_read_batch)
