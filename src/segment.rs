//! Platform layer: named shared memory (`shm_open` + `mmap`) and participant liveness locks.
//!
//! Everything here is Linux-specific; the ring never calls into this module.
//!
//! # Liveness
//! Each handle takes a participant id from a counter in the header and holds an open file
//! description (OFD) lock on byte `LIVENESS_LOCK_BASE + id` of the segment's file. The kernel
//! drops the lock when the process dies (or the handle is closed), whatever the pid
//! namespace, and a new process can never "inherit" a dead one's lock the way it can inherit
//! a recycled pid. A peer asks `F_OFD_GETLK` whether the byte is still locked. Ids are never
//! reused (until 2^31 connections wrap the counter), so a slot claimed by a dead participant
//! stays recognisably dead. See `docs/LIVENESS.md`.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::layout::MAX_OWNER;

/// Prefix of every queue's shared-memory object name (`/dev/shm/shmq.NAME`).
pub const SHM_PREFIX: &str = "shmq.";
/// Where Linux shows POSIX shared-memory objects.
pub const SHM_DIR: &str = "/dev/shm";
/// Longest queue name accepted.
pub const MAX_NAME_LEN: usize = 200;
/// Liveness locks live far beyond any data offset (they need no backing bytes).
const LIVENESS_LOCK_BASE: i64 = 1 << 40;

/// Checks a queue name: 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with `.`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidArgument("queue name is empty".into()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Error::InvalidArgument(format!(
            "queue name is {} bytes long; the limit is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if name.starts_with('.') {
        return Err(Error::InvalidArgument(format!(
            "queue name '{name}' may not start with '.'"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(Error::InvalidArgument(format!(
            "queue name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"
        )));
    }
    Ok(())
}

fn shm_name(name: &str) -> CString {
    CString::new(format!("/{SHM_PREFIX}{name}")).expect("validated names contain no NUL")
}

/// A mapped shared-memory segment and the descriptor that keeps its liveness lock.
pub struct Segment {
    fd: OwnedFd,
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access to it goes through atomics or the
// ring protocol, which is designed for concurrent use from many threads and processes.
unsafe impl Send for Segment {}
// SAFETY: as above.
unsafe impl Sync for Segment {}

impl Segment {
    /// Creates the named segment exclusively with `mode`, sized `size` bytes, backed by
    /// reserved memory (so a too-large queue fails here, not with SIGBUS later).
    pub fn create(name: &str, size: usize, mode: u32) -> Result<Segment> {
        let cname = shm_name(name);
        let creation_failed = |source: io::Error| Error::CreationFailed {
            name: name.to_string(),
            source,
        };
        // SAFETY: cname is a valid NUL-terminated string; the flags and mode are plain ints.
        let raw = unsafe {
            libc::shm_open(
                cname.as_ptr(),
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                mode as libc::mode_t,
            )
        };
        if raw < 0 {
            let err = io::Error::last_os_error();
            return Err(match err.raw_os_error() {
                Some(libc::EEXIST) => Error::AlreadyExists {
                    name: name.to_string(),
                },
                Some(libc::EACCES) => Error::PermissionDenied {
                    name: name.to_string(),
                    source: err,
                },
                _ => creation_failed(err),
            });
        }
        // SAFETY: shm_open returned a fresh descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let undo = |e: Error| {
            // SAFETY: as in `shm_open` above; removing our own half-built object.
            unsafe { libc::shm_unlink(cname.as_ptr()) };
            e
        };
        // The umask applies to shm_open's mode; set the requested mode exactly.
        // SAFETY: fd is a valid descriptor.
        if unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) } != 0 {
            return Err(undo(creation_failed(io::Error::last_os_error())));
        }
        // SAFETY: fd is valid; size was checked to fit in isize by the caller (segment_size).
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(undo(creation_failed(io::Error::last_os_error())));
        }
        // Reserve the memory now: tmpfs would otherwise allocate on first touch and answer
        // an exhausted /dev/shm with SIGBUS.
        // SAFETY: fd is valid; offsets are in range.
        let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, size as libc::off_t) };
        if rc != 0 && rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
            let err = io::Error::from_raw_os_error(rc);
            let hint = io::Error::new(
                err.kind(),
                format!("cannot reserve {size} bytes of shared memory: {err}"),
            );
            return Err(undo(creation_failed(hint)));
        }
        let base = map(&fd, size).map_err(|e| undo(creation_failed(e)))?;
        Ok(Segment {
            fd,
            base,
            len: size,
        })
    }

    /// Opens and maps an existing segment in full. The caller validates its contents.
    ///
    /// A creator may still be sizing the file; this waits up to `wait` for it to reach
    /// `min_size` bytes before giving up.
    pub fn open(name: &str, min_size: usize, wait: Duration) -> Result<Segment> {
        let cname = shm_name(name);
        // SAFETY: cname is a valid NUL-terminated string.
        let raw = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            return Err(open_error(name, io::Error::last_os_error()));
        }
        // SAFETY: shm_open returned a fresh descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Segment::map_opened(name, fd, min_size, wait)
    }

    /// Opens this very segment again, through `/proc/self/fd`: a new open file description
    /// (so a liveness lock of its own) on the same object, even if its name was unlinked or
    /// now names another queue. Queue `name` is for errors only.
    pub fn reopen(&self, name: &str) -> Result<Segment> {
        let path = CString::new(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .expect("no NUL in a formatted number");
        // SAFETY: path is a valid NUL-terminated string.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Err(open_error(name, io::Error::last_os_error()));
        }
        // SAFETY: open returned a fresh descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Segment::map_opened(name, fd, self.len, Duration::ZERO)
    }

    /// Maps an opened segment in full, once it has reached `min_size` bytes (waiting up to
    /// `wait` for a creator still sizing it).
    fn map_opened(name: &str, fd: OwnedFd, min_size: usize, wait: Duration) -> Result<Segment> {
        let deadline = Instant::now() + wait;
        let size = loop {
            let size = file_size(&fd).map_err(|source| Error::AccessFailed {
                name: name.to_string(),
                source,
            })?;
            if size >= min_size || Instant::now() >= deadline {
                break size;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if size < min_size {
            return Err(Error::CorruptedData(format!(
                "queue '{name}': segment is {size} bytes, smaller than a queue header \
                 (not an shmq queue, or its creator died while building it)"
            )));
        }
        let base = map(&fd, size).map_err(|source| Error::AccessFailed {
            name: name.to_string(),
            source,
        })?;
        Ok(Segment {
            fd,
            base,
            len: size,
        })
    }

    /// Opens a segment read-only and maps its first `map_len` bytes, without joining it: for
    /// inspection by anyone with read permission. Writing through [`Segment::base`] of such
    /// a segment faults; only atomic loads and lock tests are allowed.
    pub fn open_read_only(name: &str, map_len: usize) -> Result<Segment> {
        let cname = shm_name(name);
        // SAFETY: cname is a valid NUL-terminated string.
        let raw = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            return Err(open_error(name, io::Error::last_os_error()));
        }
        // SAFETY: shm_open returned a fresh descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = file_size(&fd).map_err(|e| open_error(name, e))?;
        if size < map_len {
            return Err(Error::CorruptedData(format!(
                "queue '{name}': segment is {size} bytes, smaller than a queue header \
                 (not an shmq queue)"
            )));
        }
        let base = map_with(&fd, map_len, libc::PROT_READ).map_err(|e| open_error(name, e))?;
        Ok(Segment {
            fd,
            base,
            len: map_len,
        })
    }

    /// Whether the segment's name was removed (or replaced) since it was opened.
    pub fn is_unlinked(&self) -> bool {
        fstat(&self.fd).map(|st| st.st_nlink == 0).unwrap_or(false)
    }

    /// Current size of the file behind the mapping.
    pub fn file_size(&self) -> io::Result<usize> {
        file_size(&self.fd)
    }

    /// Tests for a lock conflicting with a write lock on `[start, start + len)`: the start
    /// of one such lock, `None` if there is none. Needs no write access to the file.
    fn lock_holder(&self, start: i64, len: i64) -> io::Result<Option<i64>> {
        // SAFETY: flock is a plain C struct for which all-zero is a valid value.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        fl.l_pid = 0; // required by OFD locks
                      // SAFETY: fd is valid and `fl` is a properly initialised flock.
        if unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((fl.l_type != libc::F_UNLCK as i16).then_some(fl.l_start))
    }

    /// Number of handles (any process but this descriptor's) holding a liveness lock, up
    /// to `limit`; `None` if the kernel would not say.
    pub fn live_participants(&self, limit: usize) -> Option<usize> {
        let end = LIVENESS_LOCK_BASE + MAX_OWNER as i64 + 1;
        let mut start = LIVENESS_LOCK_BASE + 1;
        let mut count = 0;
        while start < end && count < limit {
            match self.lock_holder(start, end - start).ok()? {
                Some(held) => {
                    count += 1;
                    start = held.max(start) + 1;
                }
                None => break,
            }
        }
        Some(count)
    }

    /// Base address of the mapping (page aligned).
    pub fn base(&self) -> *mut u8 {
        self.base.as_ptr()
    }

    /// Size of the mapping in bytes.
    pub fn size(&self) -> usize {
        self.len
    }

    /// Owner uid and permission bits of the segment.
    pub fn owner_and_mode(&self) -> io::Result<(u32, u32)> {
        let st = fstat(&self.fd)?;
        Ok((st.st_uid, st.st_mode & 0o7777))
    }

    /// Takes the liveness lock for a participant id drawn from `counter`; returns the id.
    pub fn register_participant(&self, counter: &crate::sync::AtomicU32) -> io::Result<u32> {
        for _ in 0..1024 {
            // Relaxed: the counter only hands out distinct numbers; the lock below is what
            // other processes synchronise with (through the kernel).
            let id = counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_add(1)
                & MAX_OWNER;
            if id == 0 {
                continue;
            }
            if self.lock_byte(id, libc::F_OFD_SETLK, libc::F_WRLCK as i16)? {
                return Ok(id);
            }
        }
        Err(io::Error::other("no free participant id"))
    }

    /// Whether participant `id` still holds its liveness lock. Errors count as alive.
    pub fn is_alive(&self, id: u32) -> bool {
        if id == 0 {
            return false;
        }
        self.lock_holder(LIVENESS_LOCK_BASE + id as i64, 1)
            .map_or(true, |held| held.is_some())
    }

    /// Returns Ok(true) if the lock was taken, Ok(false) if someone else holds it.
    fn lock_byte(&self, id: u32, cmd: libc::c_int, ty: i16) -> io::Result<bool> {
        let fl = flock_for(id, ty);
        // SAFETY: fd is valid and `fl` is a properly initialised flock.
        let rc = unsafe { libc::fcntl(self.fd.as_raw_fd(), cmd, &fl) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
            _ => Err(err),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: base/len describe the mapping made in `map`, unmapped exactly once here.
        // The descriptor (and with it the liveness lock) is closed by OwnedFd afterwards.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The error for a failed open (or unlink) of queue `name`.
fn open_error(name: &str, err: io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::ENOENT) => Error::NotFound {
            name: name.to_string(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => Error::PermissionDenied {
            name: name.to_string(),
            source: err,
        },
        _ => Error::AccessFailed {
            name: name.to_string(),
            source: err,
        },
    }
}

fn flock_for(id: u32, ty: i16) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = ty;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = LIVENESS_LOCK_BASE + id as i64;
    fl.l_len = 1;
    fl.l_pid = 0; // required by OFD locks
    fl
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is a plain C struct; fstat fills it on success.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is valid and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn file_size(fd: &OwnedFd) -> io::Result<usize> {
    let st = fstat(fd)?;
    usize::try_from(st.st_size).map_err(|_| io::Error::other("negative file size"))
}

fn map(fd: &OwnedFd, size: usize) -> io::Result<NonNull<u8>> {
    map_with(fd, size, libc::PROT_READ | libc::PROT_WRITE)
}

fn map_with(fd: &OwnedFd, size: usize, prot: libc::c_int) -> io::Result<NonNull<u8>> {
    // SAFETY: a shared mapping of a descriptor we own; the kernel picks the address. The
    // result is checked against MAP_FAILED.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))
}

/// Removes the name. Processes that have the queue open keep using it until they close it.
pub fn unlink(name: &str) -> Result<()> {
    validate_name(name)?;
    let cname = shm_name(name);
    // SAFETY: cname is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(cname.as_ptr()) } != 0 {
        return Err(open_error(name, io::Error::last_os_error()));
    }
    Ok(())
}

/// Names of the shared-memory objects that look like queues by name (`shmq.*`). Whether each
/// really is one is for the caller to check by its magic.
pub fn candidate_names() -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            if let Some(queue) = name.strip_prefix(SHM_PREFIX) {
                if validate_name(queue).is_ok() {
                    names.push(queue.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Start time of this process in clock ticks since boot (field 22 of /proc/self/stat), to
/// tell a process from a later one that reuses its pid. 0 if unknown.
pub fn process_start_time() -> u64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    // The command name (field 2) may contain spaces; fields after the last ')' are plain.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(19))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// This process's id.
pub fn pid() -> u32 {
    std::process::id()
}

// ----- fork() ---------------------------------------------------------------------------------

/// Bumped in the child of every `fork()` (by a `pthread_atfork` handler, registered when the
/// first handle opens). A handle remembers its value at open: a different one means the
/// handle was inherited from the parent, whose identity (participant id, liveness lock,
/// roles) it carries. `std`'s atomic even under `--cfg loom`: no model forks.
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Relaxed: the child has one thread now; an atomic add is async-signal-safe.
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Starts watching for `fork()` (once per process) and returns the current generation, for
/// [`forked_since`].
pub fn fork_generation() -> u64 {
    static WATCH: std::sync::Once = std::sync::Once::new();
    WATCH.call_once(|| {
        // SAFETY: registers a handler that only bumps an atomic; it stays valid for the
        // process's life (a static function). Failure (ENOMEM) leaves forks undetected,
        // as before this check existed.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    // Relaxed: only this process's own forks change it, in the child, before any of its code.
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether this process is a child forked since `generation` was read (an inherited handle).
#[inline(always)]
pub fn forked_since(generation: u64) -> bool {
    // Relaxed: as in `fork_generation`.
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed) != generation
}

// ----- asymmetric fences ---------------------------------------------------------------------

/// `membarrier(2)` commands (linux/membarrier.h).
const MEMBARRIER_CMD_QUERY: libc::c_long = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_long = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_long = 1 << 2;

/// 0 = not asked yet, 1 = registered, 2 = unavailable (old kernel, seccomp filter).
static MEMBARRIER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// The fork generation ([`fork_generation`]) in which [`MEMBARRIER`] was last set. A forked
/// child inherits the kernel's registration and this cache with it, but a seccomp filter
/// installed after the fork (a pre-forking server sandboxing each worker) takes `membarrier`
/// away: so a child asks again when it opens a handle.
static MEMBARRIER_ASKED_IN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn membarrier(cmd: libc::c_long) -> libc::c_long {
    // SAFETY: membarrier takes two integer arguments besides the command and touches no
    // memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    }
}

/// Registers this process (once) as one whose threads other processes may force through a
/// memory barrier with [`heavy_fence`]. Returns whether that works here; when it does not,
/// the caller must make its peers use real fences (`WakeLine::fence_required`).
pub fn register_light_fences() -> bool {
    use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
    let generation = fork_generation();
    // Acquire: pairs with the Release store below, so a thread that finds this generation
    // also finds the answer stored with it, not the parent's (two threads of a new child
    // opening their first handles at once).
    let asked_here = MEMBARRIER_ASKED_IN.load(Acquire) == generation;
    // Relaxed: the flag only caches the answer of an idempotent system call. "Unavailable"
    // is kept across forks: a child inherits its parent's seccomp filters and kernel.
    match MEMBARRIER.load(Relaxed) {
        1 if asked_here => return true,
        2 => return false,
        _ => {}
    }
    let wanted = MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
    let supported = membarrier(MEMBARRIER_CMD_QUERY);
    let ok = supported >= 0
        && supported & wanted == wanted
        && membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) == 0;
    MEMBARRIER.store(if ok { 1 } else { 2 }, Relaxed);
    MEMBARRIER_ASKED_IN.store(generation, Release);
    ok
}

/// Whether this process registered for light fences (see [`register_light_fences`]).
#[inline]
#[cfg_attr(loom, allow(dead_code))] // under loom, wait.rs always uses real fences
pub fn light_fences_registered() -> bool {
    // Relaxed: set once by `register_light_fences`, which every handle runs at attach, before
    // this thread could reach a hot path through that handle.
    MEMBARRIER.load(std::sync::atomic::Ordering::Relaxed) == 1
}

/// The heavy side of an asymmetric fence: a full fence here, and a barrier forced on every
/// running thread of every registered process, so each of their program-order points is
/// either before our fence or after it (see `wait.rs`). Returns false if the system call
/// failed, in which case only our own fence was issued.
#[cfg_attr(loom, allow(dead_code))] // under loom, wait.rs always uses real fences
pub fn heavy_fence() -> bool {
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    light_fences_registered() && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED) == 0
}
