"""Exceptions: one class per status code of the C ABI, all derived from :class:`Error`.

Where a standard exception means the same thing, the class derives from it too, so code
written for :mod:`queue` or for files keeps working: :class:`Full` is a ``queue.Full``,
:class:`Empty` a ``queue.Empty``, :class:`NotFound` a ``FileNotFoundError``, and so on.
"""

from __future__ import annotations

import queue as _queue
from typing import Optional

from ._status import Status

__all__ = [
    "Error",
    "Full",
    "Empty",
    "Timeout",
    "Closed",
    "InvalidArgument",
    "AlreadyExists",
    "NotFound",
    "PermissionDenied",
    "CreationFailed",
    "AccessFailed",
    "MessageTooLarge",
    "BufferTooSmall",
    "CorruptedData",
    "IncompatibleVersion",
    "InternalError",
    "RoleTaken",
    "error_for",
]


class Error(Exception):
    """Base of every shmq failure.

    Attributes:
        status: the C ABI's status code (a :class:`~shmq.Status`, or a plain ``int`` for a
            code this version of the binding does not know).
        message: the library's description of this failure (queue name, errno, reason).
    """

    #: The status code this class stands for (``None`` on the base class).
    STATUS: Optional[Status] = None

    def __init__(self, message: str, status: "Status | int | None" = None) -> None:
        if status is None:
            status = self.STATUS if self.STATUS is not None else Status.ERR_INTERNAL
        self.status: "Status | int" = status
        self.message: str = message
        # One argument, so every base (OSError included) renders it as the message.
        super().__init__(message)

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        status = self.status.name if isinstance(self.status, Status) else self.status
        return f"{type(self).__name__}({self.message!r}, status={status})"

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keep (message, status) when pickled, e.g. across multiprocessing.
        return (type(self), (self.message, self.status))


class Full(Error, _queue.Full):
    """The queue had no room (``put_nowait``, or ``put`` whose timeout elapsed)."""

    STATUS = Status.ERR_FULL


class Empty(Error, _queue.Empty):
    """The queue had no message (``get_nowait``, or ``get`` whose timeout elapsed)."""

    STATUS = Status.ERR_EMPTY


class Timeout(Error, TimeoutError):
    """A wait reached its deadline where neither :class:`Full` nor :class:`Empty` applies.

    ``Queue.put``/``Queue.get`` raise :class:`Full`/:class:`Empty` on a timeout instead, as
    ``queue.Queue`` does (their ``status`` is then ``ERR_TIMEOUT``).
    """

    STATUS = Status.ERR_TIMEOUT


class Closed(Error):
    """The queue was shut down: no more sends; receivers get this once it is drained."""

    STATUS = Status.ERR_CLOSED


class InvalidArgument(Error, ValueError):
    """An argument was malformed or out of range (e.g. an invalid queue name)."""

    STATUS = Status.ERR_INVALID_ARGUMENT


class AlreadyExists(Error, FileExistsError):
    """A queue of that name already exists (use ``exist_ok=True`` or ``replace=True``)."""

    STATUS = Status.ERR_ALREADY_EXISTS


class NotFound(Error, FileNotFoundError):
    """No queue of that name exists."""

    STATUS = Status.ERR_NOT_FOUND


class PermissionDenied(Error, PermissionError):
    """The segment's permission bits forbid this process to open it."""

    STATUS = Status.ERR_PERMISSION_DENIED


class CreationFailed(Error, OSError):
    """The shared-memory segment could not be created (a system call failed)."""

    STATUS = Status.ERR_CREATION_FAILED


class AccessFailed(Error, OSError):
    """The segment exists but could not be opened or mapped."""

    STATUS = Status.ERR_ACCESS_FAILED


class MessageTooLarge(Error, ValueError):
    """The message is longer than the queue's ``message_size``."""

    STATUS = Status.ERR_MESSAGE_TOO_LARGE


class BufferTooSmall(Error, ValueError):
    """The buffer cannot hold the next message; nothing was dequeued.

    Attributes:
        needed: the size the next message needs, when the library reported it.
    """

    STATUS = Status.ERR_BUFFER_TOO_SMALL

    def __init__(
        self, message: str, status: "Status | int | None" = None, needed: Optional[int] = None
    ) -> None:
        super().__init__(message, status)
        self.needed: Optional[int] = needed

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (type(self), (self.message, self.status, self.needed))


class CorruptedData(Error):
    """A message or the segment failed an integrity check (the message was dropped)."""

    STATUS = Status.ERR_CORRUPTED_DATA


class IncompatibleVersion(Error):
    """The segment was made by an incompatible version of shmq."""

    STATUS = Status.ERR_INCOMPATIBLE_VERSION


class InternalError(Error):
    """A bug in the library (it caught a panic) or a status this binding does not know."""

    STATUS = Status.ERR_INTERNAL


class RoleTaken(Error):
    """A single-producer/single-consumer queue's sending (or receiving) role is held by
    another live handle, in this process or another: close that handle first.

    Raised at once, whatever the timeout: waiting would not free the role.
    """

    STATUS = Status.ERR_ROLE_TAKEN


_BY_STATUS: dict[int, type[Error]] = {
    cls.STATUS: cls
    for cls in (
        Full,
        Empty,
        Timeout,
        Closed,
        InvalidArgument,
        AlreadyExists,
        NotFound,
        PermissionDenied,
        CreationFailed,
        AccessFailed,
        MessageTooLarge,
        BufferTooSmall,
        CorruptedData,
        IncompatibleVersion,
        InternalError,
        RoleTaken,
    )
    if cls.STATUS is not None
}


def error_for(status: int, message: str) -> Error:
    """The exception for a failed call's ``status`` (an :class:`Error` for unknown codes)."""
    try:
        known: "Status | int" = Status(status)
    except ValueError:
        known = status
    cls = _BY_STATUS.get(int(status), Error)
    return cls(message, known)
