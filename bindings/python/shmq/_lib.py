"""Loading ``libshmq.so`` and declaring the C functions it exports (see ``include/shmq.h``).

Where the library comes from, first match wins:

1. ``SHMQ_LIBRARY`` (environment): an explicit path to another build.
2. The copy bundled inside this package (``shmq/libshmq.so``, put there by ``pip install``).
3. A build in the source tree this package sits in (``target/release`` or ``target/debug``
   of the repository, or of ``CARGO_TARGET_DIR``), for running from a checkout.
4. The system's search path (``ctypes.util.find_library("shmq")``), e.g. after
   ``make install`` of the C library.

Every function gets ``argtypes``/``restype``, so ctypes converts and checks arguments and
never truncates a pointer. (The queue handle is a ``c_void_p`` subclass, which ctypes passes
without a type check, for speed: only this package passes handles.) ``ctypes.CDLL`` releases the GIL around each call, so blocking
calls do not stop other Python threads.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from pathlib import Path

__all__ = [
    "lib",
    "lib_by_address",
    "library_path",
    "QueueInfo",
    "StatsStruct",
    "LIBRARY_ENV",
    "FillFn",
    "BatchFillFn",
    "ReadFn",
    "BatchReadFn",
]

#: Environment variable naming the shared library to load instead of the bundled one.
LIBRARY_ENV = "SHMQ_LIBRARY"

_LIBNAME = "libshmq.so"
_PACKAGE_DIR = Path(__file__).resolve().parent


class QueuePtr(ctypes.c_void_p):
    """A ``shmq_queue *``, opaque. A ``c_void_p`` of its own type rather than a pointer to
    an opaque structure: ctypes passes an instance of an argument's own simple type as it
    is, where checking a ``POINTER`` type costs about half a microsecond per call on the
    project's VM (every message pays it). Only this package's code passes handles."""


class QueueInfo(ctypes.Structure):
    """``shmq_message_info``: what ``shmq_receive_message`` reports about a message."""

    _fields_ = [
        ("id", ctypes.c_uint64),
        ("timestamp_ns", ctypes.c_uint64),
        ("len", ctypes.c_size_t),
        ("flags", ctypes.c_uint32),
    ]


class StatsStruct(ctypes.Structure):
    """``shmq_queue_stats``: ``struct_size`` must be set before the call."""

    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("messages_sent", ctypes.c_uint64),
        ("messages_received", ctypes.c_uint64),
        ("bytes_sent", ctypes.c_uint64),
        ("bytes_received", ctypes.c_uint64),
        ("send_full", ctypes.c_uint64),
        ("timeouts", ctypes.c_uint64),
        ("checksum_failures", ctypes.c_uint64),
        ("abandoned", ctypes.c_uint64),
        ("redelivered", ctypes.c_uint64),
        ("corrupted", ctypes.c_uint64),
        ("peak_depth", ctypes.c_uint64),
        ("depth", ctypes.c_uint64),
        ("capacity", ctypes.c_uint64),
        ("sender_sleeps", ctypes.c_uint64),
        ("receiver_sleeps", ctypes.c_uint64),
    ]


# Callbacks of the zero-copy calls (shmq_fill_fn / shmq_read_fn / shmq_batch_read_fn).
# Pointers arrive as ints (c_void_p) so that the Python side builds exactly the view it
# lends, nothing more.
FillFn = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
BatchFillFn = ctypes.CFUNCTYPE(
    ctypes.c_int64, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t
)
ReadFn = ctypes.CFUNCTYPE(
    None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(QueueInfo)
)
BatchReadFn = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(QueueInfo)
)


def _candidates() -> list[Path]:
    found: list[Path] = [_PACKAGE_DIR / _LIBNAME]
    # Running from a checkout: bindings/python/shmq -> repository root.
    root = _PACKAGE_DIR.parent.parent.parent
    if (root / "Cargo.toml").is_file():
        targets = []
        if os.environ.get("CARGO_TARGET_DIR"):
            targets.append(Path(os.environ["CARGO_TARGET_DIR"]))
        targets.append(root / "target")
        for target in targets:
            found += [target / "release" / _LIBNAME, target / "debug" / _LIBNAME]
    return found


def _locate() -> str:
    explicit = os.environ.get(LIBRARY_ENV)
    if explicit:
        if not Path(explicit).is_file():
            raise ImportError(f"{LIBRARY_ENV}={explicit!r} does not name a file")
        return explicit
    for candidate in _candidates():
        if candidate.is_file():
            return str(candidate)
    system = ctypes.util.find_library("shmq")
    if system:
        return system
    raise ImportError(
        f"cannot find {_LIBNAME}: reinstall the package (pip install ./bindings/python builds "
        f"it), build it with `cargo build --release --lib`, or set {LIBRARY_ENV} to its path"
    )


def _declare(cdll: ctypes.CDLL) -> None:
    c_int, c_uint32, c_size_t, c_uint64 = (
        ctypes.c_int,
        ctypes.c_uint32,
        ctypes.c_size_t,
        ctypes.c_uint64,
    )
    c_char_p, c_void_p = ctypes.c_char_p, ctypes.c_void_p
    protos: dict[str, tuple[object, list[object]]] = {
        "shmq_create": (c_int, [c_char_p, c_uint32, c_uint32, ctypes.POINTER(QueuePtr)]),
        "shmq_create_with": (
            c_int,
            [c_char_p, c_uint32, c_uint32, c_uint32, c_uint32, ctypes.POINTER(QueuePtr)],
        ),
        "shmq_connect": (c_int, [c_char_p, ctypes.POINTER(QueuePtr)]),
        "shmq_reopen": (c_int, [QueuePtr, ctypes.POINTER(QueuePtr)]),
        "shmq_send": (c_int, [QueuePtr, c_void_p, c_size_t, c_int]),
        "shmq_send_message": (c_int, [QueuePtr, c_uint64, c_uint64, c_void_p, c_size_t, c_int]),
        "shmq_receive": (
            c_int,
            [QueuePtr, c_void_p, c_size_t, ctypes.POINTER(c_size_t), c_int],
        ),
        "shmq_receive_message": (
            c_int,
            [QueuePtr, c_void_p, c_size_t, ctypes.POINTER(QueueInfo), c_int],
        ),
        # The *_ex forms take SHMQ_WAIT_SLICE: Python waits in slices (see queue.Queue._wait).
        "shmq_send_ex": (c_int, [QueuePtr, c_void_p, c_size_t, c_int, c_uint32]),
        "shmq_send_message_ex": (
            c_int,
            [QueuePtr, c_uint64, c_uint64, c_void_p, c_size_t, c_int, c_uint32],
        ),
        "shmq_receive_ex": (
            c_int,
            [QueuePtr, c_void_p, c_size_t, ctypes.POINTER(c_size_t), c_int, c_uint32],
        ),
        "shmq_receive_message_ex": (
            c_int,
            [QueuePtr, c_void_p, c_size_t, ctypes.POINTER(QueueInfo), c_int, c_uint32],
        ),
        # Gather send (Queue.put_parts).
        # The arrays as `void *`: Queue.put_parts passes its ctypes arrays as they are, as a
        # cast to the pointer types cost more than the rest of the call.
        "shmq_send_parts": (c_int, [QueuePtr, c_void_p, c_void_p, c_size_t, c_int, c_uint32]),
        # Batches (Queue.put_many / Queue.get_many).
        # The arrays as `void *`, as for shmq_send_parts: Queue.put_many passes the
        # addresses of the elements it resumes from as integers, without a cast.
        "shmq_send_batch": (
            c_int,
            [QueuePtr, c_void_p, c_void_p, c_size_t, ctypes.POINTER(c_size_t), c_int, c_uint32],
        ),
        "shmq_receive_batch": (
            c_int,
            [
                QueuePtr,
                c_void_p,
                c_size_t,
                ctypes.POINTER(QueueInfo),
                c_size_t,
                ctypes.POINTER(c_size_t),
                c_int,
                c_uint32,
            ],
        ),
        # Zero-copy: the library calls back into Python (see shmq/_zerocopy.py).
        "shmq_send_in_place": (c_int, [QueuePtr, FillFn, c_void_p, c_int, c_uint32]),
        "shmq_receive_in_place": (c_int, [QueuePtr, ReadFn, c_void_p, c_int, c_uint32]),
        "shmq_send_batch_in_place": (
            c_int,
            [QueuePtr, BatchFillFn, c_void_p, c_size_t, ctypes.POINTER(c_size_t), c_int, c_uint32],
        ),
        "shmq_receive_batch_in_place": (
            c_int,
            [QueuePtr, BatchReadFn, c_void_p, c_size_t, ctypes.POINTER(c_size_t), c_int, c_uint32],
        ),
        "shmq_shutdown": (c_int, [QueuePtr]),
        "shmq_close": (None, [QueuePtr]),
        "shmq_unlink": (c_int, [c_char_p]),
        "shmq_len": (c_size_t, [QueuePtr]),
        "shmq_capacity": (c_uint32, [QueuePtr]),
        "shmq_message_size": (c_uint32, [QueuePtr]),
        "shmq_is_shutdown": (c_int, [QueuePtr]),
        "shmq_is_single_producer_single_consumer": (c_int, [QueuePtr]),
        "shmq_uses_real_fences": (c_int, [QueuePtr]),
        "shmq_stats": (c_int, [QueuePtr, ctypes.POINTER(StatsStruct)]),
        "shmq_set_spin_limit": (c_int, [QueuePtr, c_uint64]),
        "shmq_spin_limit": (c_int, [QueuePtr, ctypes.POINTER(c_uint64)]),
        # Returned strings are static or thread-local inside the library: read, never freed.
        "shmq_status_str": (c_char_p, [c_int]),
        "shmq_last_error": (c_char_p, []),
        "shmq_version": (c_char_p, []),
        "shmq_checksum_implementation": (c_char_p, []),
    }
    for name, (restype, argtypes) in protos.items():
        try:
            fn = getattr(cdll, name)
        except AttributeError as exc:
            raise ImportError(
                f"{cdll._name} does not export {name}: it is not a compatible libshmq"
            ) from exc
        fn.restype = restype
        fn.argtypes = argtypes


def _declare_by_address(cdll: ctypes.CDLL) -> None:
    """The receives of one message again, with their buffer and out-parameter as addresses
    (``c_void_p`` taking an int): ctypes passes an int as it is, where converting an array
    or a ``byref`` costs about a microsecond per call on the project's VM. For the
    per-message paths, with addresses of memory the caller keeps alive over the call."""
    void_p = ctypes.c_void_p
    for name in ("shmq_receive_ex", "shmq_receive_message_ex"):
        fn = getattr(cdll, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [QueuePtr, void_p, ctypes.c_size_t, void_p, ctypes.c_int, ctypes.c_uint32]


library_path: str = _locate()
lib: ctypes.CDLL = ctypes.CDLL(library_path)
_declare(lib)
#: The same library (one more reference to the one mapping), with the signatures of
#: :func:`_declare_by_address`.
lib_by_address: ctypes.CDLL = ctypes.CDLL(library_path)
_declare_by_address(lib_by_address)
