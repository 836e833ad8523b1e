//! Read-only inspection of queues, for operators and monitoring (`shmq ls`, `info`, `watch`).
//!
//! A [`QueueView`] maps only the header of a queue, read-only, and never registers as a
//! participant: looking at a queue does not change it, does not take a slot of the
//! participant table, and works for anyone with read permission on the segment (a monitoring
//! account in the queue's group, with mode `0640`). Liveness is answered by the kernel from
//! the participants' OFD locks (see `segment.rs`), which a read-only descriptor may test.

use std::sync::atomic::Ordering::{Acquire, Relaxed};

use crate::layout::{Header, HEADER_SIZE, LAYOUT_VERSION, MAGIC};
use crate::segment::{self, Segment};
use crate::{Error, QueueInfo, Result, Stats};

/// Upper bound on the live handles [`QueueView::live_handles`] counts (one system call each).
const MAX_COUNTED_HANDLES: usize = 100_000;

/// A read-only view of one queue's header.
pub struct QueueView {
    name: String,
    segment: Segment,
}

impl std::fmt::Debug for QueueView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueView")
            .field("name", &self.name)
            .finish()
    }
}

impl QueueView {
    /// Opens queue `name` read-only and checks that it is a finished shmq queue of this
    /// layout version.
    pub fn open(name: &str) -> Result<QueueView> {
        segment::validate_name(name)?;
        let view = QueueView {
            name: name.to_string(),
            segment: Segment::open_read_only(name, HEADER_SIZE)?,
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
        unsafe { &*(self.segment.base() as *const Header) }
    }

    /// Whether the queue was shut down for sending.
    pub fn is_shutdown(&self) -> bool {
        self.header().is_shut_down()
    }

    /// Whether the queue's name was removed (`shmq rm`) or replaced since the view opened.
    pub fn is_unlinked(&self) -> bool {
        self.segment.is_unlinked()
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
    /// without any handle's unflushed byte counts (at most 63 messages' worth per handle,
    /// twice that for a handle that several threads use).
    pub fn stats(&self) -> Stats {
        Stats::from_header(self.header(), self.geometry().0)
    }

    /// Whether participant `id` has the queue open (errors count as alive).
    pub fn is_alive(&self, id: u32) -> bool {
        self.segment.is_alive(id)
    }

    /// Number of handles that have the queue open right now, in any process (each handle
    /// holds one liveness lock). `None` if the kernel would not say.
    pub fn live_handles(&self) -> Option<usize> {
        self.segment.live_participants(MAX_COUNTED_HANDLES)
    }

    /// Identity, geometry and the participant table, as [`crate::CrossProcessQueue::info`].
    pub fn info(&self) -> QueueInfo {
        QueueInfo::from_segment(&self.name, &self.segment, |id| self.is_alive(id))
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
