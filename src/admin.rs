//! Read-only inspection of queues, for operators and monitoring (`shmq ls`, `info`, `watch`).
//!
//! A [`QueueView`] maps only the header of a queue, read-only, and never registers as a
//! participant: looking at a queue does not change it, does not take a slot of the
//! participant table, and works for anyone with read permission on the segment (a monitoring
//! account in the queue's group, with mode `0640`). Liveness is answered by the kernel from
//! the participants' OFD locks (see `segment.rs`), which a read-only descriptor may test.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::layout::{
    Header, FLAG_CHECKSUM, HEADER_SIZE, LAYOUT_VERSION, MAGIC, MAX_OWNER, POS_MASK, TAIL_CLOSED,
};
use crate::segment::{self, SHM_PREFIX};
use crate::{Error, ParticipantInfo, QueueInfo, Result, Stats};

/// Offset of participant `id`'s liveness lock byte. Must equal `LIVENESS_LOCK_BASE` in
/// `segment.rs` (private there); `tests/cli.rs` checks that a live process is seen.
const LIVENESS_LOCK_BASE: i64 = 1 << 40;
/// Upper bound on the live handles [`QueueView::live_handles`] counts (one system call each).
const MAX_COUNTED_HANDLES: usize = 100_000;

/// A read-only view of one queue's header.
pub struct QueueView {
    name: String,
    fd: OwnedFd,
    header: NonNull<Header>,
}

// SAFETY: the view only performs atomic loads on the shared mapping and system calls on its
// own descriptor; both are safe from any thread.
unsafe impl Send for QueueView {}
// SAFETY: as above; every method takes `&self` and only reads.
unsafe impl Sync for QueueView {}

impl std::fmt::Debug for QueueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueView")
            .field("name", &self.name)
            .finish()
    }
}

fn os_error(name: &str, err: io::Error) -> Error {
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

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: stat is a plain C struct for which all-zero is valid; fstat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is a valid descriptor and `st` is writable.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

impl QueueView {
    /// Opens queue `name` read-only and checks that it is a finished shmq queue of this
    /// layout version.
    pub fn open(name: &str) -> Result<QueueView> {
        segment::validate_name(name)?;
        let cname = CString::new(format!("/{SHM_PREFIX}{name}"))
            .map_err(|_| Error::InvalidArgument("queue name contains NUL".into()))?;
        // SAFETY: cname is a valid NUL-terminated string; flags are plain ints.
        let raw = unsafe { libc::shm_open(cname.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
        if raw < 0 {
            return Err(os_error(name, io::Error::last_os_error()));
        }
        // SAFETY: shm_open returned a fresh descriptor that we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let st = fstat(&fd).map_err(|e| os_error(name, e))?;
        if st.st_size < HEADER_SIZE as libc::off_t {
            return Err(Error::CorruptedData(format!(
                "queue '{name}': segment is {} bytes, smaller than a queue header \
                 (not an shmq queue)",
                st.st_size
            )));
        }
        // SAFETY: a shared read-only mapping of the first HEADER_SIZE bytes (checked to
        // exist above) of a descriptor we own; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                HEADER_SIZE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(os_error(name, io::Error::last_os_error()));
        }
        let header = NonNull::new(ptr.cast::<Header>())
            .ok_or_else(|| os_error(name, io::Error::other("mmap returned NULL")))?;
        let view = QueueView {
            name: name.to_string(),
            fd,
            header,
        };
        let id = &view.header().identity;
        // Acquire: pairs with the creator's Release store of the magic, so the identity
        // fields read below are the finished ones.
        let magic = id.magic.load(Acquire);
        if magic == 0 {
            return Err(Error::CorruptedData(format!(
                "queue '{name}': segment was never finished (being created, or its creator \
                 died while building it)"
            )));
        }
        if magic != MAGIC {
            return Err(Error::CorruptedData(format!(
                "queue '{name}': not an shmq queue (magic {magic:#018x})"
            )));
        }
        let version = id.layout_version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(Error::IncompatibleVersion {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        Ok(view)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping covers HEADER_SIZE = size_of::<Header>() bytes, page aligned,
        // and lives as long as `self`. A Header is all atomics (valid for any bits), and
        // atomic loads of at most 8 bytes are allowed on read-only memory.
        unsafe { self.header.as_ref() }
    }

    /// Whether the queue was shut down for sending.
    pub fn is_shutdown(&self) -> bool {
        // Relaxed: a snapshot for display; nothing is read on the strength of it.
        self.header().tail.value.load(Relaxed) & TAIL_CLOSED != 0
    }

    /// Whether the queue's name was removed (`shmq rm`) or replaced since the view opened.
    pub fn is_unlinked(&self) -> bool {
        fstat(&self.fd).map(|st| st.st_nlink == 0).unwrap_or(false)
    }

    /// Capacity and message size as recorded in the header.
    pub fn geometry(&self) -> (u64, u64) {
        // Relaxed: written once before the magic, which `open` loaded with Acquire.
        let id = &self.header().identity;
        (
            id.capacity.load(Relaxed) as u64,
            id.message_size.load(Relaxed) as u64,
        )
    }

    /// A statistics snapshot computed exactly as [`crate::CrossProcessQueue::stats`] does,
    /// without any handle's unflushed byte counts (at most 63 messages' worth per handle).
    pub fn stats(&self) -> Stats {
        // Relaxed throughout: monotonic counters read as a snapshot, ordering nothing.
        let h = self.header();
        let s = &h.stats;
        let (capacity, _) = self.geometry();
        let abandoned = s.abandoned.load(Relaxed);
        let republished = s.republished.load(Relaxed);
        let head = h.head.value.load(Relaxed);
        let tail = h.tail.value.load(Relaxed) & POS_MASK;
        Stats {
            messages_sent: tail.saturating_sub(abandoned + republished),
            messages_received: head.saturating_sub(abandoned + republished),
            bytes_sent: s.bytes_sent.load(Relaxed),
            bytes_received: s.bytes_received.load(Relaxed),
            send_full: s.send_full.load(Relaxed),
            timeouts: s.timeouts.load(Relaxed),
            checksum_failures: s.checksum_failures.load(Relaxed),
            abandoned,
            redelivered: s.redelivered.load(Relaxed),
            corrupted: s.corrupted.load(Relaxed),
            peak_depth: s.peak_depth.load(Relaxed),
            depth: tail.saturating_sub(head).min(capacity),
            capacity,
        }
    }

    /// Tests participant `id`'s liveness lock; `None` if the system call failed.
    fn lock_holder(&self, start: i64, len: i64) -> Option<Option<i64>> {
        // SAFETY: flock is a plain C struct for which all-zero is valid.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        fl.l_pid = 0; // required by OFD locks
                      // SAFETY: fd is valid and `fl` is a properly initialised flock. Testing a lock
                      // (F_OFD_GETLK) needs no write access to the file.
        let rc = unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
        if rc != 0 {
            return None;
        }
        Some((fl.l_type != libc::F_UNLCK as i16).then_some(fl.l_start))
    }

    /// Whether participant `id` has the queue open (errors count as alive).
    pub fn is_alive(&self, id: u32) -> bool {
        id != 0
            && self
                .lock_holder(LIVENESS_LOCK_BASE + id as i64, 1)
                .map_or(true, |held| held.is_some())
    }

    /// Number of handles that have the queue open right now, in any process (each handle
    /// holds one liveness lock). `None` if the kernel would not say.
    pub fn live_handles(&self) -> Option<usize> {
        let end = LIVENESS_LOCK_BASE + MAX_OWNER as i64 + 1;
        let mut start = LIVENESS_LOCK_BASE + 1;
        let mut count = 0;
        while start < end && count < MAX_COUNTED_HANDLES {
            match self.lock_holder(start, end - start)? {
                Some(held) => {
                    count += 1;
                    start = held.max(start) + 1;
                }
                None => break,
            }
        }
        Some(count)
    }

    /// Identity, geometry and the participant table, as [`crate::CrossProcessQueue::info`].
    pub fn info(&self) -> QueueInfo {
        // Relaxed throughout: identity fields are written once before the magic (loaded with
        // Acquire in `open`); the participant table is informational, read as a snapshot.
        let h = self.header();
        let id = &h.identity;
        let (owner_uid, mode) = fstat(&self.fd)
            .map(|st| (st.st_uid, st.st_mode & 0o7777))
            .unwrap_or((u32::MAX, 0));
        let mut participants: Vec<ParticipantInfo> = h
            .participants
            .iter()
            .filter_map(|p| {
                let pid_id = p.id.load(Relaxed);
                (pid_id != 0).then(|| ParticipantInfo {
                    id: pid_id,
                    pid: p.pid.load(Relaxed),
                    start_time: p.start_time.load(Relaxed),
                    connected_at_ns: p.connected_at_ns.load(Relaxed),
                    alive: self.is_alive(pid_id),
                })
            })
            .collect();
        participants.sort_by_key(|p| p.id);
        let (capacity, message_size) = self.geometry();
        let segment_size = fstat(&self.fd)
            .map(|st| st.st_size as usize)
            .unwrap_or_else(|_| id.segment_size.load(Relaxed) as usize);
        QueueInfo {
            name: self.name.clone(),
            layout_version: id.layout_version.load(Relaxed),
            capacity: capacity as usize,
            message_size: message_size as usize,
            slot_stride: id.slot_stride.load(Relaxed) as usize,
            segment_size,
            checksum: id.flags.load(Relaxed) & FLAG_CHECKSUM != 0,
            mode,
            owner_uid,
            creator_pid: id.creator_pid.load(Relaxed),
            created_at_ns: id.created_at_ns.load(Relaxed),
            shutdown: self.is_shutdown(),
            participants,
        }
    }
}

impl Drop for QueueView {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `open`, of HEADER_SIZE bytes, unmapped exactly once.
        unsafe { libc::munmap(self.header.as_ptr().cast(), HEADER_SIZE) };
    }
}

/// One `shmq.*` object found in the shared-memory directory.
#[derive(Debug)]
pub enum Found {
    /// A queue (its magic checked).
    Queue(QueueView),
    /// An object that may be a queue but cannot be read (permission denied, I/O error).
    Unreadable { name: String, error: Error },
}

/// Every shmq queue on this machine, by name. Objects that are not queues (wrong or missing
/// magic, too small, other layout versions are reported as unreadable) are left out.
pub fn scan() -> Result<Vec<Found>> {
    let names = segment::candidate_names().map_err(|source| Error::AccessFailed {
        name: segment::SHM_DIR.to_string(),
        source,
    })?;
    let mut found = Vec::new();
    for name in names {
        match QueueView::open(&name) {
            Ok(view) => found.push(Found::Queue(view)),
            // Removed between the listing and the open, or not a queue at all.
            Err(Error::NotFound { .. }) | Err(Error::CorruptedData(_)) => {}
            Err(error) => found.push(Found::Unreadable { name, error }),
        }
    }
    Ok(found)
}
