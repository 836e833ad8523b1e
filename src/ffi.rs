//! The C ABI: what `include/shmq.h` declares (the header is generated from this file by
//! cbindgen, see `scripts/gen-header.sh`; `tests/header.rs` fails when it is stale).
//!
//! Conventions (also in `docs/C_API.md`):
//! - Every function that can fail returns a [`shmq_status`]; `SHMQ_OK` is 0. The code is
//!   machine-readable and stable; [`shmq_last_error`] gives this thread's detail (function,
//!   queue name, errno, reason).
//! - Inputs come first, outputs last; an output is written only on success (the one
//!   exception: the needed size on `SHMQ_ERR_BUFFER_TOO_SMALL`).
//! - Every pointer argument is checked, in release builds too: NULL gives
//!   `SHMQ_ERR_INVALID_ARGUMENT` with a message naming the argument. A data pointer may be
//!   NULL only when its length is 0.
//! - No panic crosses the boundary: each export runs inside `boundary`, which turns a
//!   panic into `SHMQ_ERR_INTERNAL` (or the function's neutral value) and a message.
//! - Status codes coming *from* C are taken as plain integers, never as the Rust enum.
#![allow(non_camel_case_types)]

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::{CrossProcessQueue, Error, OpenMode, QueueOptions, DEFAULT_MODE};

/// Major version of the library this header belongs to (see also `shmq_version()`).
pub const SHMQ_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const SHMQ_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const SHMQ_VERSION_PATCH: u32 = 0;
// The header's SHMQ_VERSION string macro is written by the header generator from
// CARGO_PKG_VERSION (cbindgen cannot emit string constants).

// The literals above must be literals for cbindgen; these checks keep them equal to
// Cargo.toml's version (the build fails after a version bump until they are updated, and
// tests/header.rs then fails until the header is regenerated).
const _: () = assert!(SHMQ_VERSION_MAJOR == parse_u32(env!("CARGO_PKG_VERSION_MAJOR")));
const _: () = assert!(SHMQ_VERSION_MINOR == parse_u32(env!("CARGO_PKG_VERSION_MINOR")));
const _: () = assert!(SHMQ_VERSION_PATCH == parse_u32(env!("CARGO_PKG_VERSION_PATCH")));

// Used only by the const assertions above, which rustc before 1.86 or so does not count as
// uses (it warns that the function is never used).
#[allow(dead_code)]
const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        assert!(b[i].is_ascii_digit());
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// `shmq_create_with` flag: messages carry no CRC32C (receivers do not verify them).
pub const SHMQ_CREATE_NO_CHECKSUM: u32 = 1u32;
/// `shmq_create_with` flag: if the queue exists, connect to it instead (its capacity and
/// message size must equal the ones given, else `SHMQ_ERR_INVALID_ARGUMENT`; it keeps its
/// own checksum setting, whatever `SHMQ_CREATE_NO_CHECKSUM` says).
pub const SHMQ_CREATE_OPEN_EXISTING: u32 = 2u32;
/// `shmq_create_with` flag: unlink an existing queue of that name first and create a fresh
/// one (processes still attached to the old one keep using it, unseen by new ones).
pub const SHMQ_CREATE_REPLACE: u32 = 4u32;
/// `shmq_create_with` flag: a single-producer/single-consumer queue. The first handle that
/// sends takes the queue's sending role and keeps it until `shmq_close`; likewise for
/// receiving. Another handle that tries gets `SHMQ_ERR_ROLE_TAKEN` until the holder closes
/// its handle or dies (its role is then taken over and what it left half-done repaired).
/// In exchange, sends and receives use no atomic read-modify-write and no fence: several
/// times the throughput between two processes. Threads sharing one handle take turns.
/// With `SHMQ_CREATE_OPEN_EXISTING`, the existing queue must be of the same kind.
pub const SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER: u32 = 8u32;
const KNOWN_CREATE_FLAGS: u32 = SHMQ_CREATE_NO_CHECKSUM
    | SHMQ_CREATE_OPEN_EXISTING
    | SHMQ_CREATE_REPLACE
    | SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER;

/// Flag for `shmq_send_message_ex` / `shmq_receive_message_ex`: this call is one slice of a
/// longer wait (a binding that waits in short slices to stay interruptible, as the Python
/// package does); if it ends without success it is not counted in the queue's `timeouts` or
/// `send_full` statistics. The caller makes its last slice without the flag.
pub const SHMQ_WAIT_SLICE: u32 = 1u32;

/// Runs `f`, leaving its expiry out of the statistics if `flags` has `SHMQ_WAIT_SLICE` (and
/// counting it if not, also inside a callback of a call that had the flag).
fn with_wait_flags<R>(
    function: &str,
    flags: u32,
    f: impl FnOnce() -> FfiResult<R>,
) -> FfiResult<R> {
    if flags & !SHMQ_WAIT_SLICE != 0 {
        return Err(invalid(function, format_args!("unknown flags {flags:#x}")));
    }
    crate::uncounted_expiry(flags & SHMQ_WAIT_SLICE != 0, f)
}

/// Most messages one `shmq_receive_batch` takes: it holds their slots until all are copied
/// (so that a receiver dying inside the call leaves every one of them to be delivered again).
pub const SHMQ_RECEIVE_BATCH_MAX: u32 = 64u32;
const _: () = assert!(SHMQ_RECEIVE_BATCH_MAX as usize == crate::RECV_BATCH_MAX);

/// `shmq_message_info.flags` bit: the message had been handed to a receiver that died
/// before finishing with it, and is delivered again (it may have been partly processed).
pub const SHMQ_MESSAGE_REDELIVERED: u32 = 1u32;

/// Status of a call. The numbers are stable: they are never changed or reused.
///
/// Functions that take a status (`shmq_status_str`) accept any integer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum shmq_status {
    /// Success.
    SHMQ_OK = 0,
    /// The queue is full and the call was not allowed to wait (`timeout_ms == 0`).
    SHMQ_ERR_FULL = 1,
    /// The queue is empty and the call was not allowed to wait (`timeout_ms == 0`).
    SHMQ_ERR_EMPTY = 2,
    /// The call waited `timeout_ms` milliseconds without success.
    SHMQ_ERR_TIMEOUT = 3,
    /// The queue was shut down: sends always fail; receives fail once it is drained.
    SHMQ_ERR_CLOSED = 4,
    /// An argument was NULL, out of range or malformed (the last error names it).
    SHMQ_ERR_INVALID_ARGUMENT = 5,
    /// `shmq_create`: a queue of that name already exists.
    SHMQ_ERR_ALREADY_EXISTS = 6,
    /// No queue of that name exists.
    SHMQ_ERR_NOT_FOUND = 7,
    /// The queue's permission bits forbid this process to open or remove it.
    SHMQ_ERR_PERMISSION_DENIED = 8,
    /// A system call failed while creating the queue (the last error has the errno).
    SHMQ_ERR_CREATION_FAILED = 9,
    /// A system call failed while opening or mapping the queue (errno in the last error).
    SHMQ_ERR_ACCESS_FAILED = 10,
    /// The message is longer than the queue's message size.
    SHMQ_ERR_MESSAGE_TOO_LARGE = 11,
    /// The receive buffer cannot hold the next message. Nothing was dequeued; the size
    /// needed was written to `*out_len` (or `info->len`).
    SHMQ_ERR_BUFFER_TOO_SMALL = 12,
    /// The segment or a message failed an integrity check (a corrupted message is dropped).
    SHMQ_ERR_CORRUPTED_DATA = 13,
    /// The segment was made by an incompatible version of shmq (different layout version).
    SHMQ_ERR_INCOMPATIBLE_VERSION = 14,
    /// A bug in shmq (a caught panic); the last error has the detail.
    SHMQ_ERR_INTERNAL = 15,
    /// A single-producer/single-consumer queue's sending or receiving role is held by another
    /// live handle (the last error names it).
    SHMQ_ERR_ROLE_TAKEN = 16,
}

use shmq_status::*;

/// A status code as C passes it in: any integer (an out-of-range value coming from C must
/// never become a Rust enum). The header shows it as `shmq_status` (cbindgen.toml renames
/// it and does not emit this alias).
pub type shmq_status_int = c_int;

/// An open queue (opaque). Create one with `shmq_create`, `shmq_create_with` or
/// `shmq_connect`, release it exactly once with `shmq_close`.
///
/// Thread safety: one handle may be used by any number of threads at once (every function
/// taking a `shmq_queue *` is safe to call concurrently on it), except `shmq_close`, which
/// must be the last call on the handle by any thread. Handles do not survive `fork()`: in
/// a child, an inherited handle refuses to send or receive (`SHMQ_ERR_INVALID_ARGUMENT`; it
/// carries the parent's identity) and `shmq_close` on it leaves the parent's state alone;
/// the child connects its own, or `shmq_reopen`s the inherited one.
pub struct shmq_queue {
    inner: CrossProcessQueue,
}

/// Metadata of a received message, filled by `shmq_receive_message`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct shmq_message_info {
    /// The id given by the sender (`shmq_send` uses the message's position in the queue).
    pub id: u64,
    /// The sender's timestamp (`shmq_send` uses nanoseconds since the Unix epoch: the
    /// kernel's `CLOCK_REALTIME` extrapolated with the CPU's time-stamp counter, within
    /// about a microsecond of it, so it may lead a clock read made right after the
    /// receive; take delays as a signed difference).
    pub timestamp_ns: u64,
    /// Length of the message in bytes (on `SHMQ_ERR_BUFFER_TOO_SMALL`: the size needed).
    pub len: usize,
    /// `SHMQ_MESSAGE_REDELIVERED` or 0.
    pub flags: u32,
}

/// A snapshot of a queue's statistics, shared by every process using the queue.
///
/// Versioned by size: set `struct_size = sizeof(shmq_queue_stats)` before calling
/// `shmq_stats`; the library fills the fields that fit in both its and your version and
/// sets `struct_size` to the number of bytes it filled. New fields are only ever appended.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct shmq_queue_stats {
    /// In: `sizeof(shmq_queue_stats)` as the caller knows it. Out: bytes filled.
    pub struct_size: u32,
    /// Always 0.
    pub reserved: u32,
    /// Messages sent successfully (by every process).
    pub messages_sent: u64,
    /// Messages received (by every process).
    pub messages_received: u64,
    /// Payload bytes sent (each handle flushes its count every 64 messages and when idle).
    pub bytes_sent: u64,
    /// Payload bytes received (flushed like `bytes_sent`).
    pub bytes_received: u64,
    /// Sends refused or timed out because the queue was full.
    pub send_full: u64,
    /// Blocking calls that reached their deadline.
    pub timeouts: u64,
    /// Messages dropped because their CRC32C did not match.
    pub checksum_failures: u64,
    /// Positions claimed by senders that died before publishing (skipped).
    pub abandoned: u64,
    /// Messages handed to another receiver because theirs died mid-receive.
    pub redelivered: u64,
    /// Messages or slots dropped because their header was invalid.
    pub corrupted: u64,
    /// Highest number of messages seen in the queue.
    pub peak_depth: u64,
    /// Messages in the queue at the time of the snapshot.
    pub depth: u64,
    /// Number of slots.
    pub capacity: u64,
    /// Blocking sends that polled past their spin limit and slept on the futex, once per
    /// call (per slice with `SHMQ_WAIT_SLICE`), by every process. Appended after
    /// `capacity`: a caller built against an older header passes a smaller `struct_size`
    /// and does not get it.
    pub sender_sleeps: u64,
    /// The same for blocking receives.
    pub receiver_sleeps: u64,
}

// ----- the boundary: panics, last error, argument checks --------------------------------------

thread_local! {
    /// This thread's last failure message, NUL-terminated; reused, so a failure in a hot
    /// loop (full, empty) allocates nothing once it has grown.
    static LAST_ERROR: RefCell<Vec<u8>> = RefCell::new(b"\0".to_vec());
}

/// Replaces this thread's last error with `args` (interior NULs become '?').
fn set_last_error(args: std::fmt::Arguments<'_>) {
    struct Sink<'a>(&'a mut Vec<u8>);
    impl std::fmt::Write for Sink<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0
                .extend(s.bytes().map(|b| if b == 0 { b'?' } else { b }));
            Ok(())
        }
    }
    // try_with: the thread-local may already be destroyed at thread exit; try_borrow_mut:
    // never panic here, this runs on the panic path too.
    let _ = LAST_ERROR.try_with(|cell| {
        if let Ok(mut buf) = cell.try_borrow_mut() {
            buf.clear();
            let _ = Sink(&mut buf).write_fmt(args);
            buf.push(0);
        }
    });
}

/// Runs an export's body, turning a panic into `on_panic` and a last-error message.
fn boundary<T>(function: &'static str, on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("unknown panic");
            set_last_error(format_args!(
                "{function}: internal error (panic: {what}); please report this as a bug"
            ));
            on_panic
        }
    }
}

/// The status for a Rust error.
fn status_of(e: &Error) -> shmq_status {
    match e {
        Error::CreationFailed { .. } => SHMQ_ERR_CREATION_FAILED,
        Error::AccessFailed { .. } => SHMQ_ERR_ACCESS_FAILED,
        Error::QueueFull => SHMQ_ERR_FULL,
        Error::QueueEmpty => SHMQ_ERR_EMPTY,
        // Not reachable through the C ABI (no typed messages); the nearest meanings.
        Error::SerializationFailed(_) => SHMQ_ERR_INVALID_ARGUMENT,
        Error::DeserializationFailed(_) => SHMQ_ERR_CORRUPTED_DATA,
        Error::CorruptedData(_) => SHMQ_ERR_CORRUPTED_DATA,
        Error::Timeout => SHMQ_ERR_TIMEOUT,
        Error::Closed => SHMQ_ERR_CLOSED,
        Error::MessageTooLarge { .. } => SHMQ_ERR_MESSAGE_TOO_LARGE,
        Error::BufferTooSmall { .. } => SHMQ_ERR_BUFFER_TOO_SMALL,
        Error::AlreadyExists { .. } => SHMQ_ERR_ALREADY_EXISTS,
        Error::NotFound { .. } => SHMQ_ERR_NOT_FOUND,
        Error::PermissionDenied { .. } => SHMQ_ERR_PERMISSION_DENIED,
        Error::InvalidArgument(_) => SHMQ_ERR_INVALID_ARGUMENT,
        Error::IncompatibleVersion { .. } => SHMQ_ERR_INCOMPATIBLE_VERSION,
        Error::RoleTaken { .. } => SHMQ_ERR_ROLE_TAKEN,
    }
}

/// A failure: its status and this thread's last-error message.
struct Fail(shmq_status);

type FfiResult<T> = std::result::Result<T, Fail>;

fn invalid(function: &str, args: std::fmt::Arguments<'_>) -> Fail {
    set_last_error(format_args!("{function}: invalid argument: {args}"));
    Fail(SHMQ_ERR_INVALID_ARGUMENT)
}

fn null(function: &str, arg: &str) -> Fail {
    invalid(function, format_args!("'{arg}' is NULL"))
}

/// Records `e` (with the queue it concerns, if the error does not name one) as last error.
fn fail(function: &str, queue: Option<&str>, e: Error) -> Fail {
    let names_queue = matches!(
        e,
        Error::CreationFailed { .. }
            | Error::AccessFailed { .. }
            | Error::AlreadyExists { .. }
            | Error::NotFound { .. }
            | Error::PermissionDenied { .. }
            | Error::CorruptedData(_)
            | Error::RoleTaken { .. }
    );
    match queue {
        Some(q) if !names_queue => set_last_error(format_args!("{function}: queue '{q}': {e}")),
        _ => set_last_error(format_args!("{function}: {e}")),
    }
    Fail(status_of(&e))
}

fn done(r: FfiResult<()>) -> shmq_status {
    match r {
        Ok(()) => SHMQ_OK,
        Err(Fail(s)) => s,
    }
}

/// The handle behind `q`, or an INVALID_ARGUMENT failure naming `arg`.
///
/// # Safety
/// `q` is NULL or a live handle from this library (the C contract).
unsafe fn handle<'a>(function: &str, q: *const shmq_queue) -> FfiResult<&'a CrossProcessQueue> {
    // SAFETY: by the contract above, a non-NULL `q` points to a live shmq_queue made by
    // Box::into_raw in `publish`, shared (&) use only; it outlives the call.
    match unsafe { q.as_ref() } {
        Some(h) => Ok(&h.inner),
        None => Err(null(function, "q")),
    }
}

/// A queue name from C: non-NULL, UTF-8 (validity as a queue name is checked by the core).
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
unsafe fn name_arg<'a>(function: &str, name: *const c_char) -> FfiResult<&'a str> {
    if name.is_null() {
        return Err(null(function, "name"));
    }
    // SAFETY: non-NULL and NUL-terminated by the contract; only read during the call.
    let bytes = unsafe { CStr::from_ptr(name) };
    bytes.to_str().map_err(|_| {
        invalid(
            function,
            format_args!("queue name {bytes:?} is not valid UTF-8"),
        )
    })
}

/// `timeout_ms` from C: 0 = do not wait, -1 = without limit, > 0 = at most that long.
fn timeout_arg(function: &str, timeout_ms: c_int) -> FfiResult<Option<Duration>> {
    match timeout_ms {
        -1 => Ok(None),
        t if t >= 0 => Ok(Some(Duration::from_millis(t as u64))),
        t => Err(invalid(
            function,
            format_args!("timeout_ms {t} (use 0 = do not wait, -1 = no limit, > 0 = ms)"),
        )),
    }
}

/// Stores a new handle in `*out`.
///
/// # Safety
/// `out` is non-NULL and valid for writing a pointer.
unsafe fn publish(out: *mut *mut shmq_queue, queue: CrossProcessQueue) {
    let raw = Box::into_raw(Box::new(shmq_queue { inner: queue }));
    // SAFETY: checked non-NULL by the caller; writable by the C contract.
    unsafe { out.write(raw) };
}

/// The bytes `data[..len]` from C.
///
/// # Safety
/// `data` is NULL or valid for reading `len` bytes; `len <= isize::MAX` checked by caller.
unsafe fn bytes_arg<'a>(function: &str, data: *const u8, len: usize) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if data.is_null() {
        return Err(null(function, "data"));
    }
    // SAFETY: non-NULL, readable for `len` bytes by the contract, len <= isize::MAX; the
    // slice only lives for the call.
    Ok(unsafe { std::slice::from_raw_parts(data, len) })
}

// ----- queues -----------------------------------------------------------------------------------

fn create_impl(
    function: &'static str,
    name: *const c_char,
    capacity: u32,
    message_size: u32,
    mode: u32,
    flags: u32,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    boundary(function, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `name` is NULL or NUL-terminated (C contract).
            let name = unsafe { name_arg(function, name) }?;
            if out.is_null() {
                return Err(null(function, "out"));
            }
            if flags & !KNOWN_CREATE_FLAGS != 0 {
                return Err(invalid(
                    function,
                    format_args!("unknown flags {:#x}", flags & !KNOWN_CREATE_FLAGS),
                ));
            }
            let open_mode = match (
                flags & SHMQ_CREATE_OPEN_EXISTING != 0,
                flags & SHMQ_CREATE_REPLACE != 0,
            ) {
                (false, false) => OpenMode::CreateNew,
                (true, false) => OpenMode::OpenOrCreate,
                (false, true) => OpenMode::Replace,
                (true, true) => {
                    return Err(invalid(
                        function,
                        format_args!(
                            "SHMQ_CREATE_OPEN_EXISTING and SHMQ_CREATE_REPLACE exclude each other"
                        ),
                    ))
                }
            };
            let options = QueueOptions::default()
                .mode(if mode == 0 { DEFAULT_MODE } else { mode })
                .checksum(flags & SHMQ_CREATE_NO_CHECKSUM == 0)
                .single_producer_single_consumer(
                    flags & SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER != 0,
                )
                .open_mode(open_mode);
            let queue = options
                .create(name, capacity as usize, message_size as usize)
                .map_err(|e| fail(function, Some(name), e))?;
            // SAFETY: `out` checked non-NULL above; writable by the C contract.
            unsafe { publish(out, queue) };
            Ok(())
        })())
    })
}

/// Creates a new queue of `capacity` slots of `message_size` bytes each, with mode 0600 and
/// checksums on, and stores a handle in `*out`.
///
/// `name`: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with '.'; the queue
/// lives in `/dev/shm/shmq.<name>` until `shmq_unlink`. Fails with
/// `SHMQ_ERR_ALREADY_EXISTS` if the name is taken. `*out` is written only on success; the
/// handle is the caller's, to release with `shmq_close`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_create(
    name: *const c_char,
    capacity: u32,
    message_size: u32,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    create_impl("shmq_create", name, capacity, message_size, 0, 0, out)
}

/// `shmq_create` with options. `mode`: permission bits of the segment (0 = default 0600;
/// the umask does not apply; bits outside 0777 are refused). `flags`: 0 or a combination of
/// `SHMQ_CREATE_NO_CHECKSUM`, `SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER` and one of
/// `SHMQ_CREATE_OPEN_EXISTING` / `SHMQ_CREATE_REPLACE`.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_create_with(
    name: *const c_char,
    capacity: u32,
    message_size: u32,
    mode: u32,
    flags: u32,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    create_impl(
        "shmq_create_with",
        name,
        capacity,
        message_size,
        mode,
        flags,
        out,
    )
}

/// Connects to an existing queue and stores a handle in `*out` (written only on success;
/// release it with `shmq_close`). Fails with `SHMQ_ERR_NOT_FOUND` if there is no such
/// queue, `SHMQ_ERR_INCOMPATIBLE_VERSION` if another version of shmq made it, and
/// `SHMQ_ERR_CORRUPTED_DATA` if its header is invalid.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_connect(
    name: *const c_char,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    const F: &str = "shmq_connect";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `name` is NULL or NUL-terminated (C contract).
            let name = unsafe { name_arg(F, name) }?;
            if out.is_null() {
                return Err(null(F, "out"));
            }
            let queue = CrossProcessQueue::connect(name).map_err(|e| fail(F, Some(name), e))?;
            // SAFETY: `out` checked non-NULL above; writable by the C contract.
            unsafe { publish(out, queue) };
            Ok(())
        })())
    })
}

/// Opens another handle on the queue of `q` and stores it in `*out` (written only on
/// success; release it with `shmq_close`): the same shared memory, even if its name was
/// unlinked or now names another queue, as a participant of its own. For a child process
/// after `fork()`: the handle it inherited carries the parent's identity and refuses to
/// send or receive, but can be reopened (then `shmq_close` it). Linux: the segment is
/// opened again through `/proc/self/fd` (`SHMQ_ERR_ACCESS_FAILED` without `/proc`).
///
/// # Safety
/// `q` is NULL or a live (or inherited) handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_reopen(
    q: *const shmq_queue,
    out: *mut *mut shmq_queue,
) -> shmq_status {
    const F: &str = "shmq_reopen";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            if out.is_null() {
                return Err(null(F, "out"));
            }
            let again = queue.reopen().map_err(|e| fail(F, Some(queue.name()), e))?;
            // SAFETY: `out` checked non-NULL above; writable by the C contract.
            unsafe { publish(out, again) };
            Ok(())
        })())
    })
}

/// Releases a handle (NULL is a no-op). The queue itself stays until `shmq_unlink`.
/// No other thread may be using the handle, and it may not be used afterwards.
///
/// # Safety
/// `q` is NULL or a handle from this library not yet closed.
#[no_mangle]
pub unsafe extern "C" fn shmq_close(q: *mut shmq_queue) {
    boundary("shmq_close", (), || {
        if !q.is_null() {
            // SAFETY: a live handle made by Box::into_raw in `publish`, released exactly
            // once (the C contract), with no other user left.
            drop(unsafe { Box::from_raw(q) });
        }
    })
}

/// Removes the queue's name: new `shmq_connect`s fail with `SHMQ_ERR_NOT_FOUND`; processes
/// that have it open keep using it. `SHMQ_ERR_NOT_FOUND` if there is no such queue.
///
/// # Safety
/// `name` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn shmq_unlink(name: *const c_char) -> shmq_status {
    const F: &str = "shmq_unlink";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `name` is NULL or NUL-terminated (C contract).
            let name = unsafe { name_arg(F, name) }?;
            CrossProcessQueue::unlink(name).map_err(|e| fail(F, Some(name), e))
        })())
    })
}

/// Closes the queue for sending, for every process: sends fail with `SHMQ_ERR_CLOSED`;
/// receivers get the messages left, then `SHMQ_ERR_CLOSED`. Idempotent.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_shutdown(q: *mut shmq_queue) -> shmq_status {
    const F: &str = "shmq_shutdown";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            queue.shutdown().map_err(|e| fail(F, Some(queue.name()), e))
        })())
    })
}

/// 1 if the queue was shut down (by any process), 0 if not, -1 if `q` is NULL.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_is_shutdown(q: *const shmq_queue) -> c_int {
    const F: &str = "shmq_is_shutdown";
    boundary(F, -1, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        match unsafe { handle(F, q) } {
            Ok(queue) => c_int::from(queue.is_shutdown()),
            Err(_) => -1,
        }
    })
}

/// 1 if the queue is single-producer/single-consumer (created with
/// `SHMQ_CREATE_SINGLE_PRODUCER_SINGLE_CONSUMER`, by any process), 0 if not, -1 if `q` is
/// NULL.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_is_single_producer_single_consumer(q: *const shmq_queue) -> c_int {
    const F: &str = "shmq_is_single_producer_single_consumer";
    boundary(F, -1, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        match unsafe { handle(F, q) } {
            Ok(queue) => c_int::from(queue.is_single_producer_single_consumer()),
            Err(_) => -1,
        }
    })
}

/// 1 if every send and receive on the queue issues a real memory fence, because a process
/// that cannot call `membarrier` (an old kernel, a seccomp filter) joined it: correct, and
/// slower (`shmq info` shows it as `fences real`). 0 if not, -1 if `q` is NULL. Once 1, it
/// stays 1 for the queue's life.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_uses_real_fences(q: *const shmq_queue) -> c_int {
    const F: &str = "shmq_uses_real_fences";
    boundary(F, -1, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        match unsafe { handle(F, q) } {
            Ok(queue) => c_int::from(queue.real_fences()),
            Err(_) => -1,
        }
    })
}

/// Messages in the queue now (including ones being written or read); 0 if `q` is NULL.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_len(q: *const shmq_queue) -> usize {
    const F: &str = "shmq_len";
    boundary(F, 0, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        unsafe { handle(F, q) }.map_or(0, |queue| queue.len())
    })
}

/// Number of slots; 0 if `q` is NULL.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_capacity(q: *const shmq_queue) -> u32 {
    const F: &str = "shmq_capacity";
    boundary(F, 0, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        unsafe { handle(F, q) }.map_or(0, |queue| queue.capacity() as u32)
    })
}

/// Largest message in bytes; 0 if `q` is NULL.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_message_size(q: *const shmq_queue) -> u32 {
    const F: &str = "shmq_message_size";
    boundary(F, 0, || {
        // SAFETY: `q` is NULL or a live handle (C contract).
        unsafe { handle(F, q) }.map_or(0, |queue| queue.message_size() as u32)
    })
}

/// Sets how long blocking calls on this handle poll for the other side before they sleep
/// on the queue's futex, in nanoseconds: 10000 (10 µs) by default (a handle left at the
/// default stops polling while its waits keep ending after sleeps of 200 µs or more, eight
/// in a row, as an idle worker's do, and polls again once an answer comes while it polls:
/// it tries every sixteenth wait; and a thread that has just woken a sleeping peer on the
/// other side polls, in its next wait on the queue, until 100 µs after that wake-up, while
/// the peer comes back; a limit set here is used as given). Longer (say 100000 to a
/// few million) when the other side usually answers within that time, as in request/reply
/// with a peer that works for tens of microseconds per message: the answer is seen at
/// polling speed and neither side pays a wake-up, for up to this much of a core per wait.
/// 0 sleeps after one look (no CPU spent waiting); `UINT64_MAX` never sleeps (busy polling
/// within the call's timeout). Polling still yields the core to a peer that shares it
/// (every microsecond, then, past 10 µs and while nobody else wants the core, less often,
/// down to every 64 µs), and still repairs what dead peers left. Affects this handle only, in
/// every thread, from each call's next wait on; `shmq_reopen` copies it.
///
/// # Safety
/// `q` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn shmq_set_spin_limit(q: *mut shmq_queue, nanoseconds: u64) -> shmq_status {
    const F: &str = "shmq_set_spin_limit";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            queue.set_spin_limit(Duration::from_nanos(nanoseconds));
            Ok(())
        })())
    })
}

/// Stores this handle's spin limit (see `shmq_set_spin_limit`), in nanoseconds, in
/// `*nanoseconds`.
///
/// # Safety
/// `q` is NULL or a live handle; `nanoseconds` is NULL or points to a writable, aligned
/// `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn shmq_spin_limit(
    q: *const shmq_queue,
    nanoseconds: *mut u64,
) -> shmq_status {
    const F: &str = "shmq_spin_limit";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            if nanoseconds.is_null() {
                return Err(null(F, "nanoseconds"));
            }
            // SAFETY: non-NULL, aligned and writable by the contract.
            unsafe { nanoseconds.write(queue.spin_limit_ns()) };
            Ok(())
        })())
    })
}

/// Fills `*out` with a snapshot of the queue's statistics. Set `out->struct_size =
/// sizeof(shmq_queue_stats)` first (at least 8); see `shmq_queue_stats`.
///
/// # Safety
/// `q` is NULL or a live handle; `out` is NULL or points to a writable struct of
/// `out->struct_size` bytes, 8-byte aligned.
#[no_mangle]
pub unsafe extern "C" fn shmq_stats(
    q: *const shmq_queue,
    out: *mut shmq_queue_stats,
) -> shmq_status {
    const F: &str = "shmq_stats";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done((|| {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            if out.is_null() {
                return Err(null(F, "out"));
            }
            // SAFETY: non-NULL, aligned and at least 4 bytes readable by the contract.
            let given = unsafe { std::ptr::addr_of!((*out).struct_size).read() } as usize;
            if given < 8 {
                return Err(invalid(
                    F,
                    format_args!("out->struct_size is {given}; set it to sizeof(shmq_queue_stats)"),
                ));
            }
            let s = queue.stats();
            let ours = std::mem::size_of::<shmq_queue_stats>();
            // Whole fields only: the header (8 bytes) and then 8-byte counters.
            let filled = given.min(ours) / 8 * 8;
            let snapshot = shmq_queue_stats {
                struct_size: filled as u32,
                reserved: 0,
                messages_sent: s.messages_sent,
                messages_received: s.messages_received,
                bytes_sent: s.bytes_sent,
                bytes_received: s.bytes_received,
                send_full: s.send_full,
                timeouts: s.timeouts,
                checksum_failures: s.checksum_failures,
                abandoned: s.abandoned,
                redelivered: s.redelivered,
                corrupted: s.corrupted,
                peak_depth: s.peak_depth,
                depth: s.depth,
                capacity: s.capacity,
                sender_sleeps: s.sender_sleeps,
                receiver_sleeps: s.receiver_sleeps,
            };
            // SAFETY: `snapshot` is `ours` >= `filled` bytes; `out` is writable for
            // `given` >= `filled` bytes by the contract; they do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (&snapshot as *const shmq_queue_stats).cast::<u8>(),
                    out.cast::<u8>(),
                    filled,
                )
            };
            Ok(())
        })())
    })
}

// ----- messages ---------------------------------------------------------------------------------

fn send_impl(
    function: &'static str,
    q: *mut shmq_queue,
    id_and_timestamp: Option<(u64, u64)>,
    data: *const u8,
    len: usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    boundary(function, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(function, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(function, q) }?;
            let timeout = timeout_arg(function, timeout_ms)?;
            if len > queue.message_size() {
                // Refused before `data` is looked at, so no length can overflow a slice.
                return Err(fail(
                    function,
                    Some(queue.name()),
                    Error::MessageTooLarge {
                        len,
                        max: queue.message_size(),
                    },
                ));
            }
            // SAFETY: `data` is NULL or readable for `len` bytes (C contract); len is at
            // most the message size (<= 1 GiB), so within isize::MAX.
            let bytes = unsafe { bytes_arg(function, data.cast(), len) }?;
            let (id, timestamp) = match id_and_timestamp {
                Some((id, ts)) => (Some(id), ts),
                None => (None, crate::clock::realtime_ns()),
            };
            queue
                .send_with(id, timestamp, bytes, timeout)
                .map(drop)
                .map_err(|e| fail(function, Some(queue.name()), e))
        }))
    })
}

/// The arrays of a gather or batch send, `count` elements each: `pointers` (named
/// `pointers_name` in errors) and `lens`. Empty when `count` is 0, whatever the pointers.
///
/// # Safety
/// When `count > 0`, each array is NULL or readable for `count` elements, and not written
/// during the call.
unsafe fn pointer_arrays<'a>(
    function: &'static str,
    pointers: *const *const std::ffi::c_void,
    pointers_name: &'static str,
    lens: *const usize,
    count: usize,
) -> FfiResult<(&'a [*const std::ffi::c_void], &'a [usize])> {
    if count == 0 {
        return Ok((&[], &[]));
    }
    if pointers.is_null() {
        return Err(null(function, pointers_name));
    }
    if lens.is_null() {
        return Err(null(function, "lens"));
    }
    if count > isize::MAX as usize / std::mem::size_of::<usize>() {
        return Err(invalid(
            function,
            format_args!("count {count} exceeds the largest array"),
        ));
    }
    // SAFETY: both non-NULL (checked) and readable for `count` elements (our contract);
    // `count` elements fit in isize::MAX bytes (checked); the caller's slices only live for
    // its call.
    unsafe {
        Ok((
            std::slice::from_raw_parts(pointers, count),
            std::slice::from_raw_parts(lens, count),
        ))
    }
}

/// Element `i` of a caller's pointer and length arrays as a slice, read again after the
/// caller's checks of them. The contract says the arrays do not change during the call, but a
/// racing caller's must not make a NULL or an oversized slice: a NULL pointer reads as empty
/// and the length is capped at `cap`.
///
/// # Safety
/// `pointers[i]` is NULL or readable for `lens[i]` bytes, and `cap` is at most `isize::MAX`.
unsafe fn reread<'a>(
    pointers: &[*const std::ffi::c_void],
    lens: &[usize],
    i: usize,
    cap: usize,
) -> &'a [u8] {
    let (data, len) = (pointers[i], lens[i].min(cap));
    if data.is_null() || len == 0 {
        return &[];
    }
    // SAFETY: non-NULL (checked); readable for lens[i] >= len bytes (our contract); len <=
    // cap <= isize::MAX (our contract); the caller keeps the slice for its call only.
    unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) }
}

/// Sends `len` bytes from `data` (NULL allowed when `len` is 0). The message id is its
/// position in the queue and the timestamp is now (ns since the Unix epoch).
///
/// `timeout_ms`: 0 = do not wait (`SHMQ_ERR_FULL` if there is no room), -1 = wait without
/// limit, > 0 = wait at most that long (`SHMQ_ERR_TIMEOUT`); other values are invalid.
/// `SHMQ_ERR_MESSAGE_TOO_LARGE` if `len` exceeds the message size, `SHMQ_ERR_CLOSED` after
/// shutdown. The bytes are copied; `data` is only read during the call.
///
/// # Safety
/// `q` is NULL or a live handle; `data` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn shmq_send(
    q: *mut shmq_queue,
    data: *const std::ffi::c_void,
    len: usize,
    timeout_ms: c_int,
) -> shmq_status {
    send_impl("shmq_send", q, None, data.cast(), len, timeout_ms, 0)
}

/// `shmq_send` with `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// # Safety
/// `q` is NULL or a live handle; `data` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn shmq_send_ex(
    q: *mut shmq_queue,
    data: *const std::ffi::c_void,
    len: usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    send_impl("shmq_send_ex", q, None, data.cast(), len, timeout_ms, flags)
}

/// `shmq_send` with the id and timestamp chosen by the caller (they travel with the
/// message and come back in `shmq_message_info`).
///
/// # Safety
/// `q` is NULL or a live handle; `data` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn shmq_send_message(
    q: *mut shmq_queue,
    id: u64,
    timestamp_ns: u64,
    data: *const std::ffi::c_void,
    len: usize,
    timeout_ms: c_int,
) -> shmq_status {
    send_impl(
        "shmq_send_message",
        q,
        Some((id, timestamp_ns)),
        data.cast(),
        len,
        timeout_ms,
        0,
    )
}

/// `shmq_send_message` with `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// # Safety
/// `q` is NULL or a live handle; `data` is NULL or readable for `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn shmq_send_message_ex(
    q: *mut shmq_queue,
    id: u64,
    timestamp_ns: u64,
    data: *const std::ffi::c_void,
    len: usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    send_impl(
        "shmq_send_message_ex",
        q,
        Some((id, timestamp_ns)),
        data.cast(),
        len,
        timeout_ms,
        flags,
    )
}

/// Receives into `buf` (capacity `buf_len`); on success returns the message's metadata.
/// On `SHMQ_ERR_BUFFER_TOO_SMALL` the message stays queued and `Err(Some(needed))` tells
/// the size needed.
fn receive_impl(
    function: &'static str,
    q: *mut shmq_queue,
    buf: *mut u8,
    buf_len: usize,
    timeout_ms: c_int,
    needed: &mut dyn FnMut(usize),
) -> FfiResult<crate::Received> {
    // SAFETY: `q` is NULL or a live handle (C contract).
    let queue = unsafe { handle(function, q) }?;
    let timeout = timeout_arg(function, timeout_ms)?;
    if buf_len > isize::MAX as usize {
        return Err(invalid(
            function,
            format_args!("buf_len {buf_len} exceeds the largest object size"),
        ));
    }
    if buf.is_null() && buf_len != 0 {
        return Err(null(function, "buf"));
    }
    // No message is longer than the message size: never make a slice over more of the
    // caller's memory than can be written.
    let usable = buf_len.min(queue.message_size());
    let slice: &mut [u8] = if usable == 0 {
        &mut []
    } else {
        // SAFETY: non-NULL (checked), writable for buf_len >= usable bytes by the contract,
        // usable <= isize::MAX; the slice only lives for the call and aliases nothing of ours.
        unsafe { std::slice::from_raw_parts_mut(buf, usable) }
    };
    queue.recv_with(slice, timeout).map_err(|e| {
        if let Error::BufferTooSmall { needed: n, .. } = e {
            needed(n);
        }
        fail(function, Some(queue.name()), e)
    })
}

/// Receives the next message into `buf` (capacity `buf_len`; NULL allowed when `buf_len`
/// is 0) and stores its length in `*out_len`.
///
/// `timeout_ms` as for `shmq_send` (`SHMQ_ERR_EMPTY` when 0 and the queue is empty). After
/// `shmq_shutdown`, the remaining messages are delivered, then `SHMQ_ERR_CLOSED`.
/// If the next message is longer than `buf_len`: `SHMQ_ERR_BUFFER_TOO_SMALL`, nothing is
/// dequeued and `*out_len` is set to the size needed (a buffer of `shmq_message_size(q)`
/// bytes always suffices). Otherwise `*out_len` is written only on success; after
/// `SHMQ_ERR_CORRUPTED_DATA` (the bad message is dropped) the contents of `buf` are
/// unspecified.
///
/// # Safety
/// `q` is NULL or a live handle; `buf` is NULL or writable for `buf_len` bytes; `out_len`
/// is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive(
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    out_len: *mut usize,
    timeout_ms: c_int,
) -> shmq_status {
    receive_len_impl("shmq_receive", q, buf, buf_len, out_len, timeout_ms, 0)
}

/// `shmq_receive` with `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// # Safety
/// As for `shmq_receive`.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_ex(
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    out_len: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    receive_len_impl(
        "shmq_receive_ex",
        q,
        buf,
        buf_len,
        out_len,
        timeout_ms,
        flags,
    )
}

fn receive_len_impl(
    function: &'static str,
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    out_len: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    boundary(function, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(function, flags, || {
            if out_len.is_null() {
                return Err(null(function, "out_len"));
            }
            let mut store = |n: usize| {
                // SAFETY: `out_len` checked non-NULL; writable by the contract.
                unsafe { out_len.write(n) }
            };
            let meta = receive_impl(function, q, buf.cast(), buf_len, timeout_ms, &mut store)?;
            store(meta.len);
            Ok(())
        }))
    })
}

/// Like `shmq_receive`, filling `*info` (id, timestamp, length, flags) on success.
/// `info` may not be NULL. On `SHMQ_ERR_BUFFER_TOO_SMALL` only `info->len` is written
/// (the size needed).
///
/// # Safety
/// `q` is NULL or a live handle; `buf` is NULL or writable for `buf_len` bytes; `info` is
/// NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_message(
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    info: *mut shmq_message_info,
    timeout_ms: c_int,
) -> shmq_status {
    receive_message_impl("shmq_receive_message", q, buf, buf_len, info, timeout_ms, 0)
}

/// `shmq_receive_message` with `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// # Safety
/// As for `shmq_receive_message`.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_message_ex(
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    info: *mut shmq_message_info,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    receive_message_impl(
        "shmq_receive_message_ex",
        q,
        buf,
        buf_len,
        info,
        timeout_ms,
        flags,
    )
}

fn receive_message_impl(
    function: &'static str,
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    info: *mut shmq_message_info,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    boundary(function, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(function, flags, || {
            if info.is_null() {
                return Err(null(function, "info"));
            }
            let mut store_needed = |n: usize| {
                // SAFETY: `info` checked non-NULL; writable and aligned by the contract.
                unsafe { std::ptr::addr_of_mut!((*info).len).write(n) }
            };
            let meta = receive_impl(
                function,
                q,
                buf.cast(),
                buf_len,
                timeout_ms,
                &mut store_needed,
            )?;
            let filled = message_info(&meta);
            // SAFETY: `info` checked non-NULL; writable and aligned by the contract.
            unsafe { info.write(filled) };
            Ok(())
        }))
    })
}

// ----- text -------------------------------------------------------------------------------------

/// Static text for a status code (any integer: out-of-range values give "unknown status").
/// Never NULL; the caller does not free it.
#[no_mangle]
pub extern "C" fn shmq_status_str(status: shmq_status_int) -> *const c_char {
    let text: &'static [u8] = match status {
        0 => b"ok\0",
        1 => b"queue full\0",
        2 => b"queue empty\0",
        3 => b"timed out\0",
        4 => b"queue closed\0",
        5 => b"invalid argument\0",
        6 => b"already exists\0",
        7 => b"not found\0",
        8 => b"permission denied\0",
        9 => b"creation failed\0",
        10 => b"access failed\0",
        11 => b"message too large\0",
        12 => b"buffer too small\0",
        13 => b"corrupted data\0",
        14 => b"incompatible version\0",
        15 => b"internal error\0",
        16 => b"role taken\0",
        _ => b"unknown status\0",
    };
    text.as_ptr().cast()
}

/// This thread's most recent failure, with detail (function, queue name, errno, reason);
/// "" if no call on this thread has failed. Never NULL. The text belongs to the library and
/// stays valid until the next shmq call on this thread; copy it to keep it. Successful calls
/// leave it unchanged.
#[no_mangle]
pub extern "C" fn shmq_last_error() -> *const c_char {
    const EMPTY: *const c_char = c"".as_ptr();
    boundary("shmq_last_error", EMPTY, || {
        LAST_ERROR
            .try_with(|cell| match cell.try_borrow() {
                // The buffer always ends with the NUL that set_last_error pushes; the
                // pointer stays valid until the buffer is next changed (a later failure).
                Ok(buf) => buf.as_ptr().cast::<c_char>(),
                Err(_) => EMPTY,
            })
            .unwrap_or(EMPTY)
    })
}

/// The library's version ("MAJOR.MINOR.PATCH", static text, never NULL).
#[no_mangle]
pub extern "C" fn shmq_version() -> *const c_char {
    const V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}

/// Which implementation computes message checksums in this process (static text, never
/// NULL), e.g. "CRC32C, 512-bit carry-less folding (AVX-512, VPCLMULQDQ)": the library picks
/// the fastest this CPU runs. All compute the same CRC32C, so processes on different CPUs
/// share queues; only the speed differs. For comparing machines' figures.
#[no_mangle]
pub extern "C" fn shmq_checksum_implementation() -> *const c_char {
    crate::checksum::MessageCrc::for_this_cpu()
        .c_name()
        .as_ptr()
}

// ----- batches ----------------------------------------------------------------------------------
//
// `CrossProcessQueue::send_batch` / `recv_batch` (src/zerocopy.rs): one wait, one wake-up
// check and one timestamp for many messages; on a single-producer/single-consumer queue one
// lock and one move of the tail or head as well.

/// Sends `count` messages in order, message `i` being `lens[i]` bytes at `msgs[i]` (NULL
/// allowed when `lens[i]` is 0), with one wait and one wake-up check. Waits per `timeout_ms`
/// (as `shmq_send`) only for room for the first message, then sends as many as fit without
/// waiting, and stores how many were sent in `*out_sent` (at least 1, or 0 when `count` is
/// 0). Ids are the messages' positions, all share one timestamp. `flags`: 0 or
/// `SHMQ_WAIT_SLICE`.
///
/// Fails before sending anything with `SHMQ_ERR_MESSAGE_TOO_LARGE` if any message exceeds
/// the message size, `SHMQ_ERR_INVALID_ARGUMENT` for a NULL `msgs[i]` of non-zero length, and
/// as `shmq_send` when there is no room for the first (`SHMQ_ERR_FULL`, `SHMQ_ERR_TIMEOUT`,
/// `SHMQ_ERR_CLOSED`); `*out_sent` is written only on success. Send the rest again (from
/// `msgs + *out_sent`) to send them all.
///
/// # Safety
/// `q` is NULL or a live handle; when `count > 0`, `msgs` and `lens` are NULL or readable
/// for `count` elements and each `msgs[i]` is NULL or readable for `lens[i]` bytes, none of
/// them changing during the call; `out_sent` is NULL or writable. (If they do change, no
/// message is sent longer than the message size, and a `msgs[i]` that became NULL is sent
/// empty.)
#[no_mangle]
pub unsafe extern "C" fn shmq_send_batch(
    q: *mut shmq_queue,
    msgs: *const *const std::ffi::c_void,
    lens: *const usize,
    count: usize,
    out_sent: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_send_batch";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            if out_sent.is_null() {
                return Err(null(F, "out_sent"));
            }
            let timeout = timeout_arg(F, timeout_ms)?;
            // SAFETY: NULL or readable for `count` elements each (C contract).
            let (msgs, lens) = unsafe { pointer_arrays(F, msgs, "msgs", lens, count) }?;
            // Every message checked before the first is sent: the batch fails whole.
            let size = queue.message_size();
            for (i, (&data, &len)) in msgs.iter().zip(lens).enumerate() {
                if len > size {
                    set_last_error(format_args!(
                        "{F}: queue '{}': message {i} is {len} bytes, the message size is \
                         {size}; nothing was sent",
                        queue.name()
                    ));
                    return Err(Fail(SHMQ_ERR_MESSAGE_TOO_LARGE));
                }
                if data.is_null() && len != 0 {
                    return Err(invalid(
                        F,
                        format_args!("msgs[{i}] is NULL, its length {len}"),
                    ));
                }
            }
            // SAFETY: each msgs[i] is readable for lens[i] bytes (C contract); `size`, the
            // message size, is at most 1 GiB.
            let message = |i: usize| unsafe { reread(msgs, lens, i, size) };
            let sent = queue
                .send_batch_with(count, message, timeout)
                .map_err(|e| fail(F, Some(queue.name()), e))?;
            // SAFETY: `out_sent` checked non-NULL; writable by the contract.
            unsafe { out_sent.write(sent) };
            Ok(())
        }))
    })
}

/// Sends one message given in `count` parts: `parts[i]` is `lens[i]` bytes (NULL allowed
/// when `lens[i]` is 0), and the message is the parts joined, copied into the queue one after
/// another (and checksummed as they are copied) without a buffer to assemble them in first,
/// as `writev` gathers for a file. A header and a body kept apart travel as one message.
/// The id is the message's position and the timestamp is now, as for `shmq_send`; `count`
/// 0 sends an empty message.
///
/// `timeout_ms` as for `shmq_send`; `flags`: 0 or `SHMQ_WAIT_SLICE`. Fails before sending
/// anything with `SHMQ_ERR_MESSAGE_TOO_LARGE` if the parts add up to more than the message
/// size, `SHMQ_ERR_INVALID_ARGUMENT` for a NULL `parts[i]` of non-zero length, and as
/// `shmq_send` otherwise.
///
/// # Safety
/// `q` is NULL or a live handle; when `count > 0`, `parts` and `lens` are NULL or readable
/// for `count` elements and each `parts[i]` is NULL or readable for `lens[i]` bytes; none of
/// them changes during the call. (If `lens` does, the queue still writes no more than the
/// length it summed first: a part that grew is cut there, and one that shrank leaves a
/// message that fails its checksum at the receiver, on a queue with checksums.)
#[no_mangle]
pub unsafe extern "C" fn shmq_send_parts(
    q: *mut shmq_queue,
    parts: *const *const std::ffi::c_void,
    lens: *const usize,
    count: usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_send_parts";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            let timeout = timeout_arg(F, timeout_ms)?;
            // SAFETY: NULL or readable for `count` elements each (C contract).
            let (parts, lens) = unsafe { pointer_arrays(F, parts, "parts", lens, count) }?;
            let size = queue.message_size();
            let mut total = 0usize;
            for (i, (&data, &len)) in parts.iter().zip(lens).enumerate() {
                if data.is_null() && len != 0 {
                    return Err(invalid(
                        F,
                        format_args!("parts[{i}] is NULL, its length {len}"),
                    ));
                }
                total = total.saturating_add(len);
                if total > size {
                    // Refused before any part is looked at as a slice, so no length can
                    // overflow one.
                    set_last_error(format_args!(
                        "{F}: queue '{}': the parts add up to more than the message size, \
                         {size} (at part {i}); nothing was sent",
                        queue.name()
                    ));
                    return Err(Fail(SHMQ_ERR_MESSAGE_TOO_LARGE));
                }
            }
            // The copy cuts the parts to the length summed above.
            // SAFETY: each parts[i] is readable for lens[i] bytes (C contract); `size`, the
            // message size, is at most 1 GiB.
            let part = |i: usize| unsafe { reread(parts, lens, i, size) };
            queue
                .send_gathered(None, crate::clock::realtime_ns(), (count, &part), timeout)
                .map(drop)
                .map_err(|e| fail(F, Some(queue.name()), e))
        }))
    })
}

/// Receives up to `max_messages` messages (at most `SHMQ_RECEIVE_BATCH_MAX`, and at most
/// `buf_len / shmq_message_size(q)`) with one wait and one wake-up check. Message `i` is
/// copied to `buf + i * shmq_message_size(q)` and its metadata to `infos[i]`;
/// `*out_count` is how many were received (at least 1). Waits per `timeout_ms` (as
/// `shmq_receive`: `SHMQ_ERR_EMPTY`, `SHMQ_ERR_TIMEOUT`, `SHMQ_ERR_CLOSED` once shut down and
/// drained) only for the first message. `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// The slots stay claimed until every message is copied, so a receiver dying inside the
/// call leaves all of them to be delivered again (flagged `SHMQ_MESSAGE_REDELIVERED`).
/// `SHMQ_ERR_BUFFER_TOO_SMALL` if `buf_len` is below the message size,
/// `SHMQ_ERR_INVALID_ARGUMENT` if `max_messages` is 0. A message that fails verification is
/// dropped and ends the batch with `SHMQ_ERR_CORRUPTED_DATA`: the messages received before
/// it, and those the call had already claimed after it (a multi-consumer queue claims
/// several at a time), are in `buf` and `infos`, and `*out_count` says how many (it is
/// written on success and on this error only; it may be 0).
///
/// # Safety
/// `q` is NULL or a live handle; `buf` is NULL or writable for `buf_len` bytes; `infos` is
/// NULL or writable for `max_messages` elements; `out_count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_batch(
    q: *mut shmq_queue,
    buf: *mut std::ffi::c_void,
    buf_len: usize,
    infos: *mut shmq_message_info,
    max_messages: usize,
    out_count: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_receive_batch";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            if out_count.is_null() {
                return Err(null(F, "out_count"));
            }
            if infos.is_null() {
                return Err(null(F, "infos"));
            }
            // NULL with length 0, as everywhere: then too small for any message, below.
            if buf.is_null() && buf_len != 0 {
                return Err(null(F, "buf"));
            }
            if max_messages == 0 {
                return Err(invalid(F, format_args!("max_messages is 0")));
            }
            let timeout = timeout_arg(F, timeout_ms)?;
            let size = queue.message_size();
            // Every message size is at least 1, so past this `buf` is not NULL.
            if buf_len < size {
                set_last_error(format_args!(
                    "{F}: queue '{}': buf_len {buf_len} is below the message size {size}",
                    queue.name()
                ));
                return Err(Fail(SHMQ_ERR_BUFFER_TOO_SMALL));
            }
            // No more of the caller's memory than the batch can fill.
            let max = max_messages
                .min(SHMQ_RECEIVE_BATCH_MAX as usize)
                .min(buf_len / size);
            // SAFETY: non-NULL (checked), writable for buf_len >= max * size bytes (C
            // contract); max * size <= 64 GiB fits in isize; the slice lives for the call and
            // aliases nothing of ours.
            let slice = unsafe { std::slice::from_raw_parts_mut(buf.cast::<u8>(), max * size) };
            let mut count = 0usize;
            let result = queue.recv_batch_with(slice, timeout, |meta| {
                // SAFETY: `count` < max <= max_messages, and `infos` is writable for
                // `max_messages` elements (C contract).
                unsafe { infos.add(count).write(message_info(&meta)) };
                count += 1;
            });
            // SAFETY: `out_count` checked non-NULL; writable by the contract.
            unsafe { finish_receive_batch(F, queue, result, count, out_count) }
        }))
    })
}

/// The end of a batch receive: `*out_count = count` on success and on `CorruptedData` (the
/// messages other than the bad ones were received), nothing stored on other errors.
///
/// # Safety
/// `out_count` is non-NULL and writable.
unsafe fn finish_receive_batch(
    function: &str,
    queue: &CrossProcessQueue,
    result: crate::Result<usize>,
    count: usize,
    out_count: *mut usize,
) -> FfiResult<()> {
    match result {
        Ok(_) => {
            // SAFETY: non-NULL and writable (this function's contract).
            unsafe { out_count.write(count) };
            Ok(())
        }
        Err(e @ Error::CorruptedData(_)) => {
            // SAFETY: as above.
            unsafe { out_count.write(count) };
            Err(fail(function, Some(queue.name()), e))
        }
        Err(e) => Err(fail(function, Some(queue.name()), e)),
    }
}

/// The C view of a received message's metadata.
fn message_info(meta: &crate::Received) -> shmq_message_info {
    shmq_message_info {
        id: meta.id,
        timestamp_ns: meta.timestamp_ns,
        len: meta.len,
        flags: if meta.redelivered {
            SHMQ_MESSAGE_REDELIVERED
        } else {
            0
        },
    }
}

// ----- zero-copy send and receive (callbacks) ---------------------------------------------------
//
// The slot is claimed and settled inside one call, so a C caller can never leak a claim:
// `shmq_send_in_place` lends the claimed slot's payload area to a fill callback and
// publishes what it wrote; `shmq_receive_in_place` lends a received message, where it lies in
// shared memory, to a read callback and releases the slot when the callback returns. Both map
// `CrossProcessQueue::send_in_place` / `recv_in_place` (src/zerocopy.rs) one to one.

/// Fill callback of `shmq_send_in_place`: writes the message into `slot` (`capacity` bytes
/// of shared memory, the queue's message size; it may hold an older message's bytes) and
/// returns its length. A negative length, or one above `capacity`, cancels the message.
pub type shmq_fill_fn =
    Option<unsafe extern "C" fn(ctx: *mut std::ffi::c_void, slot: *mut u8, capacity: usize) -> i64>;

/// Read callback of `shmq_receive_in_place`: `data` holds the message's `len` bytes in
/// shared memory (never NULL; valid only during the call, do not keep the pointer) and
/// `info` its metadata (valid only during the call).
pub type shmq_read_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut std::ffi::c_void,
        data: *const u8,
        len: usize,
        info: *const shmq_message_info,
    ),
>;

/// Zero-copy send: claims a slot (waiting per `timeout_ms`, as `shmq_send`), calls `fill`
/// once with `ctx` and a pointer to the slot's payload (`capacity` = the message size), then
/// publishes the `fill`'s returned number of bytes as the message (id = its position in the
/// queue, timestamp = now). `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// `fill` is not called when the claim fails (`SHMQ_ERR_FULL`, `SHMQ_ERR_TIMEOUT`,
/// `SHMQ_ERR_CLOSED`). If it returns more than `capacity` the call fails with
/// `SHMQ_ERR_MESSAGE_TOO_LARGE`; if it returns a negative value (a way to cancel), with
/// `SHMQ_ERR_INVALID_ARGUMENT`. The slot is then published as a *poisoned* message: the
/// receiver that takes that position drops it and gets `SHMQ_ERR_CORRUPTED_DATA` once (it
/// counts under `corrupted`), and later receives go on normally. `fill` must not keep the
/// pointer, and must not wait for this very message to be received (it is not published
/// until `fill` returns).
///
/// # Safety
/// `q` is NULL or a live handle; `fill` is NULL or a function that may be called with
/// `ctx` and writes at most `capacity` bytes from `slot`.
#[no_mangle]
pub unsafe extern "C" fn shmq_send_in_place(
    q: *mut shmq_queue,
    fill: shmq_fill_fn,
    ctx: *mut std::ffi::c_void,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_send_in_place";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            let Some(fill) = fill else {
                return Err(null(F, "fill"));
            };
            let timeout = timeout_arg(F, timeout_ms)?;
            // The out-of-range length `fill` returned, if it did.
            let mut refused: Option<i64> = None;
            let result = queue.send_in_place(timeout, |slot| {
                let capacity = slot.len();
                // SAFETY: `slot` is the claimed slot's payload area, `capacity` writable
                // bytes that stay claimed by this process until `send_in_place` publishes
                // them after this closure; `fill` may write them by the C contract.
                let n = unsafe { fill(ctx, slot.as_mut_ptr(), capacity) };
                fill_length(n, capacity, &mut refused)
            });
            match (result, refused) {
                (Ok(_id), _) => Ok(()),
                (Err(_), Some(n)) => Err(refused_fill(F, queue, n, "")),
                (Err(e), None) => Err(fail(F, Some(queue.name()), e)),
            }
        }))
    })
}

/// The length a fill callback returned, as the message length, or (out of range: negative,
/// or beyond `capacity`) recorded in `refused` and turned into a length beyond the message
/// size, which makes the Rust side publish the slot poisoned.
fn fill_length(n: i64, capacity: usize, refused: &mut Option<i64>) -> usize {
    match usize::try_from(n) {
        Ok(len) if len <= capacity => len,
        _ => {
            *refused = Some(n);
            usize::MAX
        }
    }
}

/// The failure for a fill callback's out-of-range return `n` (for the message `which`
/// names): `SHMQ_ERR_INVALID_ARGUMENT` for a negative one (a cancel), else
/// `SHMQ_ERR_MESSAGE_TOO_LARGE`. Its slot was published poisoned.
fn refused_fill(function: &str, queue: &CrossProcessQueue, n: i64, which: &str) -> Fail {
    let q = queue.name();
    let poisoned = "the slot was published as a poisoned message, which one receiver drops \
                    with SHMQ_ERR_CORRUPTED_DATA";
    if n < 0 {
        invalid(
            function,
            format_args!("queue '{q}': fill returned {n}{which} (cancelled); {poisoned}"),
        )
    } else {
        let max = queue.message_size();
        set_last_error(format_args!(
            "{function}: queue '{q}': fill returned length {n}{which}, beyond the message \
             size {max}; {poisoned}"
        ));
        Fail(SHMQ_ERR_MESSAGE_TOO_LARGE)
    }
}

/// Zero-copy receive: claims the next message (waiting per `timeout_ms`, as
/// `shmq_receive`: `SHMQ_ERR_EMPTY`, `SHMQ_ERR_TIMEOUT`, `SHMQ_ERR_CLOSED` once shut down and
/// drained), verifies its checksum where it lies, calls `read` once with `ctx`, the message's
/// bytes in shared memory and its metadata, and releases the slot when `read` returns (the
/// message then counts as received). `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// `read` is not called when no message is received; a message that fails verification is
/// dropped with `SHMQ_ERR_CORRUPTED_DATA`. The bytes are valid only during `read`: copy what
/// must outlive it. They are shared memory that a correct peer never writes while this call
/// holds the slot, but the checksum (checked before `read`) cannot protect them from a
/// hostile process mapping the segment: use `shmq_receive` when peers are untrusted.
///
/// # Safety
/// `q` is NULL or a live handle; `read` is NULL or a function that may be called with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_in_place(
    q: *mut shmq_queue,
    read: shmq_read_fn,
    ctx: *mut std::ffi::c_void,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_receive_in_place";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            let Some(read) = read else {
                return Err(null(F, "read"));
            };
            let timeout = timeout_arg(F, timeout_ms)?;
            queue
                .recv_in_place(timeout, |meta, bytes| {
                    let info = message_info(&meta);
                    // SAFETY: `bytes` points into the claimed slot's payload (never NULL,
                    // even when empty), readable for `bytes.len()` bytes until
                    // `recv_in_place` releases the slot after this closure; `info` lives
                    // on this stack frame for the call. `read` may be called by contract.
                    unsafe { read(ctx, bytes.as_ptr(), bytes.len(), &info) };
                })
                .map_err(|e| fail(F, Some(queue.name()), e))
        }))
    })
}

/// Read callback of `shmq_receive_batch_in_place`: as `shmq_read_fn` (the bytes and `info`
/// are valid only during the call), and returns 0 to go on with the batch or anything else to
/// end it after this message.
pub type shmq_batch_read_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut std::ffi::c_void,
        data: *const u8,
        len: usize,
        info: *const shmq_message_info,
    ) -> c_int,
>;

/// Zero-copy batch receive: waits for the first message per `timeout_ms` (as
/// `shmq_receive_in_place`: `SHMQ_ERR_EMPTY`, `SHMQ_ERR_TIMEOUT`, `SHMQ_ERR_CLOSED` once shut
/// down and drained), then takes up to `max_messages` in all without waiting again, calling
/// `read` once for each, in order, with `ctx`, its bytes where they lie in shared memory and
/// its metadata, and releasing each slot when its `read` returns. `read` returning non-zero
/// ends the batch after that message. `*out_count` is how many were read (at least 1).
/// One wake-up check for the whole batch. `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// A message that fails verification is dropped (`read` is not called for it) and ends the
/// batch with `SHMQ_ERR_CORRUPTED_DATA`; `*out_count` then says how many were read before it
/// (it is written on success and on this error only). A receiver that dies inside the call
/// leaves only the message being read to be delivered again (flagged
/// `SHMQ_MESSAGE_REDELIVERED`): the ones before it were released. The bytes are shared
/// memory, as for `shmq_receive_in_place`: use `shmq_receive_batch` when peers are untrusted.
///
/// # Safety
/// `q` is NULL or a live handle; `read` is NULL or a function that may be called with
/// `ctx`; `out_count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_receive_batch_in_place(
    q: *mut shmq_queue,
    read: shmq_batch_read_fn,
    ctx: *mut std::ffi::c_void,
    max_messages: usize,
    out_count: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_receive_batch_in_place";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            let Some(read) = read else {
                return Err(null(F, "read"));
            };
            if out_count.is_null() {
                return Err(null(F, "out_count"));
            }
            if max_messages == 0 {
                return Err(invalid(F, format_args!("max_messages is 0")));
            }
            let timeout = timeout_arg(F, timeout_ms)?;
            let mut count = 0usize;
            let result =
                queue.recv_batch_in_place_while(max_messages, timeout, true, |meta, bytes| {
                    count += 1;
                    let info = message_info(&meta);
                    // SAFETY: as in `shmq_receive_in_place`: `bytes` points into the claimed
                    // slot's payload (never NULL), readable for `bytes.len()` bytes until the
                    // slot is released after this closure; `info` lives on this stack frame for
                    // the call. `read` may be called by contract.
                    unsafe { read(ctx, bytes.as_ptr(), bytes.len(), &info) == 0 }
                });
            // SAFETY: `out_count` checked non-NULL; writable by the contract.
            unsafe { finish_receive_batch(F, queue, result, count, out_count) }
        }))
    })
}

/// Fill callback of `shmq_send_batch_in_place`: as `shmq_fill_fn`, for message `index` of
/// the batch (0, 1, ... in order).
pub type shmq_batch_fill_fn = Option<
    unsafe extern "C" fn(
        ctx: *mut std::ffi::c_void,
        index: usize,
        slot: *mut u8,
        capacity: usize,
    ) -> i64,
>;

/// Zero-copy batch send: waits for room for the first message per `timeout_ms` (as
/// `shmq_send_in_place`: `SHMQ_ERR_FULL`, `SHMQ_ERR_TIMEOUT`, `SHMQ_ERR_CLOSED`), then, for
/// `index` = 0, 1, ... up to `count - 1` while a slot is free, claims a slot, calls `fill`
/// with `ctx`, `index` and the slot's payload (`capacity` = the message size), and publishes
/// the message (ids = positions, one timestamp for the batch). `*out_count` is how many were
/// sent (at least 1, or 0 when `count` is 0): `fill` was called exactly that many times,
/// so send messages `*out_count` to `count - 1` again later. One wake-up check for the whole
/// batch. `flags`: 0 or `SHMQ_WAIT_SLICE`.
///
/// A `fill` that returns a negative value (`SHMQ_ERR_INVALID_ARGUMENT`) or more than
/// `capacity` (`SHMQ_ERR_MESSAGE_TOO_LARGE`) ends the batch: its slot is published poisoned
/// (as in `shmq_send_in_place`), and `*out_count` says how many were sent before it (it is
/// written on success and on these two errors only). On a multi-producer queue the batch
/// claims runs of free slots (one tail move per run); the positions it had claimed after
/// the refused one are given up: receivers skip them, counted under `abandoned`. A sender
/// that dies inside the call leaves the messages before the one being written sent.
///
/// # Safety
/// `q` is NULL or a live handle; `fill` is NULL or a function that may be called with `ctx`
/// and writes at most `capacity` bytes from `slot`; `out_count` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn shmq_send_batch_in_place(
    q: *mut shmq_queue,
    fill: shmq_batch_fill_fn,
    ctx: *mut std::ffi::c_void,
    count: usize,
    out_count: *mut usize,
    timeout_ms: c_int,
    flags: u32,
) -> shmq_status {
    const F: &str = "shmq_send_batch_in_place";
    boundary(F, SHMQ_ERR_INTERNAL, || {
        done(with_wait_flags(F, flags, || {
            // SAFETY: `q` is NULL or a live handle (C contract).
            let queue = unsafe { handle(F, q) }?;
            let Some(fill) = fill else {
                return Err(null(F, "fill"));
            };
            if out_count.is_null() {
                return Err(null(F, "out_count"));
            }
            let timeout = timeout_arg(F, timeout_ms)?;
            let mut refused: Option<i64> = None;
            let mut sent = 0usize;
            let result = queue.send_batch_in_place(count, timeout, |index, slot| {
                let capacity = slot.len();
                // SAFETY: as in `shmq_send_in_place`: `slot` is the claimed slot's payload
                // area, `capacity` writable bytes, claimed until published after this
                // closure; `fill` may write them by the C contract.
                let n = unsafe { fill(ctx, index, slot.as_mut_ptr(), capacity) };
                let len = fill_length(n, capacity, &mut refused);
                if refused.is_none() {
                    sent += 1;
                }
                len
            });
            match (result, refused) {
                (Ok(n), _) => {
                    // SAFETY: `out_count` checked non-NULL; writable by the contract.
                    unsafe { out_count.write(n) };
                    Ok(())
                }
                (Err(_), Some(n)) => {
                    // SAFETY: as above.
                    unsafe { out_count.write(sent) };
                    Err(refused_fill(F, queue, n, &format!(" for message {sent}")))
                }
                (Err(e), None) => Err(fail(F, Some(queue.name()), e)),
            }
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_stable() {
        assert_eq!(SHMQ_OK as i32, 0);
        assert_eq!(SHMQ_ERR_INTERNAL as i32, 15);
        assert_eq!(SHMQ_ERR_ROLE_TAKEN as i32, 16);
        for code in -3..20 {
            // SAFETY: shmq_status_str returns static NUL-terminated text.
            let text = unsafe { CStr::from_ptr(shmq_status_str(code)) };
            assert_eq!(
                text.to_str().unwrap() == "unknown status",
                !(0..=16).contains(&code)
            );
        }
    }

    #[test]
    fn panics_become_internal_errors() {
        let status = boundary("test_fn", SHMQ_ERR_INTERNAL, || -> shmq_status {
            panic!("boom")
        });
        assert_eq!(status, SHMQ_ERR_INTERNAL);
        // SAFETY: shmq_last_error returns a NUL-terminated thread-local string.
        let text = unsafe { CStr::from_ptr(shmq_last_error()) };
        assert!(text
            .to_str()
            .unwrap()
            .contains("test_fn: internal error (panic: boom)"));
    }
}
