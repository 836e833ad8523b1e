"""shmq: a cross-process message queue in named shared memory, for Python.

The same queue is usable from Rust, C and Python processes at once: this package calls the
project's C library (``libshmq.so``, bundled inside it) through :mod:`ctypes`.

    >>> import shmq
    >>> q = shmq.Queue.create("task_queue", capacity=100, message_size=1024)
    >>> q.put(b"hello")
    >>> with shmq.Queue.connect("task_queue") as worker:
    ...     worker.get()
    b'hello'
    >>> q.shutdown(); q.close(); shmq.unlink("task_queue")

The API follows :class:`queue.Queue`: ``put``/``get`` block (optionally with a timeout),
``put_nowait``/``get_nowait`` raise :class:`Full`/:class:`Empty` (which are also
``queue.Full``/``queue.Empty``). After :meth:`Queue.shutdown`, receivers drain what is left
and then get :class:`Closed`; iterating a queue stops there.
"""

from ._status import Status
from .errors import (
    AccessFailed,
    AlreadyExists,
    BufferTooSmall,
    Closed,
    CorruptedData,
    CreationFailed,
    Empty,
    Error,
    Full,
    IncompatibleVersion,
    InternalError,
    InvalidArgument,
    MessageTooLarge,
    NotFound,
    PermissionDenied,
    RoleTaken,
    Timeout,
)
from .queue import (
    RECEIVE_BATCH_MAX,
    WAIT_SLICE_MS,
    Message,
    MessageInfo,
    Queue,
    Stats,
    checksum_implementation,
    library_path,
    library_version,
    status_str,
    unlink,
)

__version__ = "0.1.0"

__all__ = [
    "Queue",
    "Message",
    "MessageInfo",
    "Stats",
    "Status",
    "unlink",
    "status_str",
    "library_version",
    "library_path",
    "checksum_implementation",
    "WAIT_SLICE_MS",
    "RECEIVE_BATCH_MAX",
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
    "__version__",
]
