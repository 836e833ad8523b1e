//! The lock-free ring: a bounded multi-producer multi-consumer queue over memory it is handed.
//!
//! # Algorithm
//! Dmitry Vyukov's bounded MPMC queue (the design of crossbeam's `ArrayQueue`), extended so
//! that a process killed at any instruction cannot wedge the queue:
//!
//! * Each slot has a sequence word `seq`. For position `p` (slot `p % capacity`, lap
//!   `p / capacity`): `seq == 2p` means free for the producer of `p`, `2p + 1` means the
//!   message of `p` is published; the consumer of `p` stores `2(p + capacity)` when done. (The
//!   factor two keeps a capacity of one unambiguous.)
//! * A producer or consumer *claims* a slot by a compare-and-swap on the slot's `claim` word,
//!   which records lap, role and the claimer's participant id in one atomic step. Only then is
//!   `tail` / `head` advanced, and anyone who sees a claim for the current position helps
//!   advance it. So a claimed slot always names its owner: if that owner dies (its liveness
//!   lock is released by the kernel) another process can repair the slot:
//!   - a producer that died before publishing: a consumer skips the position ("abandoned");
//!   - a consumer that died while reading: its message is still intact in the slot, so a
//!     producer arriving a lap later republishes it in place, or a consumer adopts it and
//!     delivers it ("redelivered").
//! * Claim words are always loaded *before* `seq` when deciding to claim: a claim read after
//!   `seq` may belong to a later lap of the slot (the reader was preempted while the slot
//!   went round), and a compare-and-swap from it would succeed on the wrong lap.
//! * A claim that was decided on a `seq` read earlier is re-validated after the
//!   compare-and-swap wherever `seq` can move without the claim changing (a receiver's
//!   release): a receiver that finished and disconnected looks exactly like one that died
//!   mid-receive until `seq` is read again.
//! * A consumer never claims a message whose claim word says a producer is republishing it
//!   one lap later; it helps the head past it instead. Owner id 0 is nobody: a position
//!   claimed for owner 0 is skipped like a dead producer's.
//! * A producer never claims a position whose claim word says a consumer is skipping it (same
//!   lap, role consumer, `seq` still free): the tail is already past it.
//! * Repair counters (`abandoned`, `redelivered`, `republished`) are bumped by whoever
//!   completes the repair's final store, so a repairer killed halfway is counted once by
//!   the process that finishes its work.
//! * Each slot records the position of the message it holds (`position`, stored before the
//!   publishing `seq`). A `seq` that says "published for `h`" over a slot holding another
//!   position's message is stray bytes, not a publication: taking it would deliver an old
//!   message a second time and, with the tail not yet past `h`, move the head past the tail.
//! * A state no lap leaves a slot in (hostile bytes) is repaired after a few looks at it, so
//!   it cannot stop the ring for good once the bytes stop and the processes that were
//!   running meanwhile are gone (`tests/ring_scribble.rs` searches for counterexamples):
//!   - a producer takes over a slot whose `seq` is neither its own free value, nor ahead of
//!     it, nor held by the position a lap before (under a claim of that lap; a producer's
//!     claim only while the head has not passed that position), but only once the head is
//!     past that position: before, the queue is full by count, and the consumer that gets
//!     there repairs the slot (taken earlier, that consumer's repair would free it under
//!     the new message);
//!   - a consumer skips a position the tail has passed that no claim word says was
//!     claimed, and frees its slot for the next lap by a compare-and-swap from what it saw
//!     (a late publication of that position goes with the hostile bytes; a later lap's
//!     producer keeps the slot). A slot already ahead of the position belongs to a later
//!     lap: only the head moves;
//!   - the head never moves past the tail on a slot's word alone; a head that is past it
//!     anyway (scribbled) takes the tail with it.
//!
//!   One receive skips at most a lap's worth (a tail scribbled far ahead would otherwise
//!   keep it skipping).
//! * `shutdown` sets [`TAIL_CLOSED`] in `tail`; a producer whose claim cannot advance a closed
//!   tail withdraws it, so no message is published after the final position and receivers
//!   can report `Closed` once `head` reaches it.
//!
//! This module makes no system calls: liveness is asked through [`Peers`], waiting is the
//! caller's business. So the same code runs on a heap buffer in unit tests and on the mapped
//! segment in production.
//!
//! # Orderings
//! Every publication of data follows the same pattern: the writer fills the slot, then stores
//! `seq` with `Release`; the reader loads `seq` with `Acquire` before touching the slot. The
//! `claim` CAS is `AcqRel` so that a claimer sees everything the previous owner did before
//! the `seq` store it observed. `head`/`tail` CASes are `AcqRel` and their loads `Acquire`:
//! observing a position implies observing the claims (and through them, the `seq` values)
//! that allowed it to advance, which is what the corruption checks rely on.

use std::ptr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

pub use crate::checksum::{cut_parts, message_crc, MessageCrc, Parts};
use crate::fastdiv::Divisor;
use crate::layout::{
    self, Claim, Header, Role, SlotHeader, FLAG_CHECKSUM, FLAG_SPSC, HEADER_SIZE, LAYOUT_VERSION,
    MAGIC, NO_POSITION, POS_MASK, SLOT_FLAG_REDELIVERED, TAIL_CLOSED,
};
// Only the byte-wise zeroing of a fresh slot header needs its size (under loom a header is
// written whole).
#[cfg(not(loom))]
use crate::layout::SLOT_HEADER_SIZE;
use crate::sync::{spin_loop, AtomicU32, AtomicU64};

/// Who the caller is and which other participants are alive.
pub trait Peers {
    /// Participant id of the caller (never 0).
    fn me(&self) -> u32;
    /// Whether participant `id` may still act on the queue. Must err on the side of `true`:
    /// a `false` lets another process take over that participant's slots. Id 0 is nobody
    /// and must be reported dead (a position given up on purpose is claimed by owner 0).
    fn is_alive(&self, id: u32) -> bool;
}

/// Metadata of a message, as it travels in the slot header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageMeta {
    pub id: u64,
    pub timestamp_ns: u64,
    pub len: usize,
    /// The message was delivered to a receiver that died before returning it.
    pub redelivered: bool,
}

/// Why a slot could not be claimed for sending.
#[derive(Debug, PartialEq, Eq)]
pub enum PushBlocked {
    /// The slot at the tail still holds the previous lap's message.
    Full,
    /// The queue was shut down.
    Closed,
}

/// Why nothing could be received right now.
#[derive(Debug, PartialEq, Eq)]
pub enum PopBlocked {
    /// No message at the head.
    Empty,
    /// A producer is writing the message at the head (it may be dead: see `repair_head`).
    InProgress,
    /// Shut down and drained.
    Closed,
    /// The next message needs a larger buffer; nothing was dequeued.
    BufferTooSmall(usize),
}

/// What [`Ring::spsc_claim_pop`] found.
#[derive(Debug)]
pub enum SpscPop {
    Message(PopToken),
    Empty,
    BufferTooSmall(usize),
    /// Freed for the next lap without being read: a corrupt slot the receiver skipped
    /// ([`Ring::spsc_skip`]) before it died, without moving the head.
    Released,
    /// A sequence word no correct sender writes, or one that says "published for `pos`"
    /// over the message of another position.
    Corrupt,
}

/// What [`Ring::repair_head`] did.
#[derive(Debug)]
pub enum HeadRepair {
    /// Nothing to repair (the producer is alive, or the head moved).
    Nothing,
    /// The head moved past a dead producer's position (or someone else's repair): look again.
    Skipped,
    /// The dead producer had published after all: the message is claimed for the caller.
    Message(PopToken),
}

/// What a consumer reports when the tail (`tail`, flag included) shows nothing published at
/// its position: `Closed` once shut down, else `Empty`.
fn nothing_to_take(tail: u64) -> PopBlocked {
    if tail & TAIL_CLOSED != 0 {
        PopBlocked::Closed
    } else {
        PopBlocked::Empty
    }
}

/// Consecutive looks at one slot in one impossible state (hostile bytes). A look at another
/// position or state starts again: a correct peer's moment in passing is not a stuck slot.
#[derive(Default)]
struct ConsecutiveLooks {
    /// The position and the state looked at.
    at: (u64, u64),
    looks: u32,
}

impl ConsecutiveLooks {
    /// One more look at position `pos` in state `seq`: true after [`CONSISTENCY_RETRIES`] of
    /// them in a row (a correct peer's state would have changed by then), and the count
    /// starts again.
    fn exceeded(&mut self, pos: u64, seq: u64) -> bool {
        if self.at != (pos, seq) {
            self.at = (pos, seq);
            self.looks = 0;
        }
        self.looks += 1;
        if self.looks > CONSISTENCY_RETRIES {
            self.looks = 0;
            return true;
        }
        false
    }
}

/// One [`Ring::claim_pop`]'s looks at slots in impossible states (hostile bytes).
#[derive(Default)]
struct HeadSuspicion {
    looks: ConsecutiveLooks,
    /// Positions this call skipped.
    skipped: u64,
}

impl HeadSuspicion {
    /// One more look at the slot of `h` in the impossible state `seq`: after too many in a
    /// row ([`ConsecutiveLooks`]), skips it. `Err(InProgress)` once this call has skipped a
    /// lap's worth: hostile positions (a tail far ahead) could otherwise keep one call
    /// skipping for ever; the caller gets control back (to time out, or to call again and
    /// go on). `this` is the call's suspicion, made here at its first look (an ordinary
    /// claim then pays one store for it, not four: callgrind, 4 instructions per send +
    /// receive).
    #[cold]
    #[inline(never)]
    fn look(
        this: &mut Option<HeadSuspicion>,
        ring: &Ring,
        h: u64,
        seq: u64,
        peers: &dyn Peers,
    ) -> Result<(), PopBlocked> {
        let this = this.get_or_insert_with(HeadSuspicion::default);
        if this.looks.exceeded(h, seq) {
            ring.skip_corrupt_head(h, seq, peers);
            this.skipped += 1;
            if this.skipped >= ring.capacity {
                return Err(PopBlocked::InProgress);
            }
        }
        Ok(())
    }
}

/// One [`Ring::claim_push_run`]'s looks at the slot at the tail in impossible states.
#[derive(Default)]
struct TailSuspicion {
    looks: ConsecutiveLooks,
}

impl TailSuspicion {
    /// One more look, with the tail still at `t`, at its slot in the impossible state `seq`:
    /// after too many in a row, [`Ring::push_past_corrupt`], whose answer is the claim's if
    /// it has one. `this`: as in [`HeadSuspicion::look`].
    #[cold]
    #[inline(never)]
    fn look(
        this: &mut Option<TailSuspicion>,
        ring: &Ring,
        t: u64,
        seq: u64,
    ) -> Option<PushBlocked> {
        let this = this.get_or_insert_with(TailSuspicion::default);
        if this.looks.exceeded(t, seq) {
            return ring.push_past_corrupt(t, seq);
        }
        None
    }
}

/// A message could not be read from the slot it was claimed from.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The length in the slot header exceeds the message size.
    BadLength(u32),
    /// The checksum does not match the bytes.
    Checksum { expected: u32, actual: u32 },
}

/// A claimed slot for sending: write the message, then [`Ring::publish`].
#[derive(Debug)]
#[must_use]
pub struct PushToken {
    pos: u64,
    /// `pos % capacity`, computed once at the claim (a 64-bit division is tens of cycles).
    index: usize,
}

impl PushToken {
    /// The position claimed (unique per queue, used as the default message id).
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Where the claim is, kept after the token is published (for the next claim of a batch).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos,
            index: self.index,
        }
    }
}

/// A claimed slot for receiving: read it, then [`Ring::release`].
#[derive(Debug)]
#[must_use]
pub struct PopToken {
    pos: u64,
    /// `pos % capacity`, as in [`PushToken`].
    index: usize,
}

impl PopToken {
    /// The position claimed.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Where the claim is, kept after the token is released (for the next claim of a batch).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            pos: self.pos,
            index: self.index,
        }
    }
}

/// A position and its slot index, as a token holds them, without the claim: what a batch
/// needs to claim the next position with an increment instead of a division ([`Ring::after`]).
/// Made only by tokens and by [`Ring::after`], so `index` is always `pos % capacity`.
#[derive(Clone, Copy, Debug)]
pub struct Cursor {
    pos: u64,
    index: usize,
}

impl Cursor {
    /// The position the cursor is at.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

/// Most positions one [`Ring::claim_push_run`] claims.
pub const PUSH_RUN_MAX: usize = 32;

/// How many times a load that looks inconsistent is re-read before the slot is treated
/// as corrupted.
const CONSISTENCY_RETRIES: u32 = 64;

/// A view of a ring laid out per [`layout`] at some base address.
pub struct Ring {
    header: *const Header,
    /// The first slot's payload, where the slots begin.
    slots: *mut u8,
    /// The first slot's header line, which follows its payload.
    slot_headers: *mut u8,
    capacity: u64,
    /// `capacity`, prepared for dividing positions by it (`fastdiv.rs`).
    divisor: Divisor,
    stride: usize,
    message_size: usize,
    /// The checksum's implementation for this CPU, if messages carry one.
    checksum: Option<MessageCrc>,
    spsc: bool,
}

// SAFETY: the ring only touches its memory through atomics and through raw copies into or
// out of slots the caller has claimed; the protocol, not Rust's aliasing rules, arbitrates
// between threads and processes, exactly as between processes sharing the segment.
unsafe impl Send for Ring {}
// SAFETY: as above; every method takes `&self` and is safe to call concurrently.
unsafe impl Sync for Ring {}

impl Ring {
    /// Builds a fresh ring at `base`: header fields, every slot free for its first position.
    /// The magic is *not* published; call [`Ring::publish_magic`] when everything else is set.
    ///
    /// # Safety
    /// `base` must be valid for writes of `layout::segment_size(capacity, message_size)`
    /// bytes, aligned to 128, and not yet shared with anyone who reads it as a ring.
    pub unsafe fn initialize(
        base: *mut u8,
        capacity: u32,
        message_size: u32,
        flags: u32,
        mode: u32,
    ) -> Ring {
        let stride = layout::slot_stride(message_size).expect("validated geometry");
        let size = layout::segment_size(capacity, message_size).expect("validated geometry");
        // SAFETY: the caller guarantees `base` is valid for `size` writable bytes, aligned
        // for a `Header` (128).
        unsafe {
            #[cfg(not(loom))]
            ptr::write_bytes(base, 0, HEADER_SIZE);
            #[cfg(loom)]
            ptr::write(base as *mut Header, loom_memory::Zero::zero());
        }
        // SAFETY: base is 128-aligned and HEADER_SIZE bytes are valid and were just
        // initialised (all-zero bytes are a valid `Header`: it consists of atomics and byte
        // arrays only).
        let header = unsafe { &*(base as *const Header) };
        let id = &header.identity;
        id.layout_version.store(LAYOUT_VERSION, Relaxed);
        id.header_size.store(HEADER_SIZE as u32, Relaxed);
        id.capacity.store(capacity, Relaxed);
        id.message_size.store(message_size, Relaxed);
        id.slot_stride.store(stride as u32, Relaxed);
        id.flags.store(flags, Relaxed);
        id.segment_size.store(size as u64, Relaxed);
        id.mode.store(mode, Relaxed);
        // SAFETY: as above.
        let ring = unsafe { Ring::from_raw(base, capacity, message_size, flags) };
        for i in 0..capacity as u64 {
            // SAFETY: the slot header lies inside the segment (i < capacity) and is 64-aligned.
            unsafe {
                let at = ring.slot_headers.add(i as usize * stride);
                #[cfg(not(loom))]
                ptr::write_bytes(at, 0, SLOT_HEADER_SIZE);
                #[cfg(loom)]
                ptr::write(at as *mut SlotHeader, loom_memory::Zero::zero());
            }
            let slot = ring.slot(i);
            slot.seq.store(2 * i, Relaxed);
            slot.claim.store(Claim::INITIAL, Relaxed);
            slot.position.store(NO_POSITION, Relaxed);
        }
        ring
    }

    /// Makes the ring visible to `connect`: everything written before happens-before any
    /// `Acquire` load of the magic that sees it.
    pub fn publish_magic(&self) {
        self.header().identity.magic.store(MAGIC, Release);
    }

    /// A view of an existing ring whose geometry the caller has validated.
    ///
    /// # Safety
    /// `base` must be 128-aligned and valid for reads and writes of
    /// `layout::segment_size(capacity, message_size)` bytes for as long as the ring is used,
    /// `capacity >= 1` and `message_size >= 1`.
    pub unsafe fn from_raw(base: *mut u8, capacity: u32, message_size: u32, flags: u32) -> Ring {
        let stride = layout::slot_stride(message_size).expect("validated geometry");
        Ring {
            header: base as *const Header,
            // SAFETY: the first slot's payload and header lie inside the segment (capacity >= 1:
            // HEADER_SIZE + stride <= segment size), so the offsets stay inside the allocation.
            slots: unsafe { base.add(layout::payload_offset(0, message_size).expect("validated")) },
            // SAFETY: as above.
            slot_headers: unsafe {
                base.add(layout::slot_header_offset(0, message_size).expect("validated"))
            },
            capacity: capacity as u64,
            divisor: Divisor::new(capacity as u64),
            stride,
            message_size: message_size as usize,
            checksum: (flags & FLAG_CHECKSUM != 0).then(MessageCrc::for_this_cpu),
            spsc: flags & FLAG_SPSC != 0,
        }
    }

    pub fn header(&self) -> &Header {
        // SAFETY: `from_raw`'s contract: the header is valid for the ring's lifetime.
        unsafe { &*self.header }
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    pub fn message_size(&self) -> usize {
        self.message_size
    }

    pub fn checksum_enabled(&self) -> bool {
        self.checksum.is_some()
    }

    /// The slot index of position `pos`, reduced modulo our own validated capacity, never
    /// one read from shared memory.
    #[inline]
    fn index(&self, pos: u64) -> usize {
        self.divisor.div_rem(pos).1 as usize
    }

    /// The slot for position `pos`.
    #[inline]
    fn slot(&self, pos: u64) -> &SlotHeader {
        self.slot_at(self.index(pos))
    }

    /// The slot at `index` (from [`Ring::index`], directly or through a token).
    #[inline]
    fn slot_at(&self, index: usize) -> &SlotHeader {
        // Always true for indices from `index`; checked so that this safe function stays
        // sound whatever it is passed (one well-predicted compare).
        assert!((index as u64) < self.capacity, "slot index out of range");
        // SAFETY: index < capacity, so the slot lies inside the segment; slot headers are
        // 64-aligned (HEADER_SIZE, stride and SLOT_HEADER_SIZE are multiples of 64; under loom
        // of the structs' alignment) and a SlotHeader is all atomics.
        unsafe { &*(self.slot_headers.add(index * self.stride) as *const SlotHeader) }
    }

    /// The payload area of the slot at `index`.
    #[inline]
    fn payload_at(&self, index: usize) -> *mut u8 {
        assert!((index as u64) < self.capacity, "slot index out of range");
        // SAFETY: inside the slot, which lies inside the segment (see `slot_at`).
        unsafe { self.slots.add(index * self.stride) }
    }

    /// Asks for the first payload line of the slot at `index`, for a receiver that found
    /// nothing published there yet. The sender writes the payload before the header line
    /// the receiver polls, so a look made while the sender writes the header fetches the
    /// payload already, and when the message shows, its payload is here: the two lines
    /// travel side by side instead of one after the other. Round trips, 64 B, sixteen
    /// interleaved quick bench runs, fast-state rounds: 2–9 % shorter in all five forms
    /// (docs/PERFORMANCE.md). A hint: it never faults, and no load sees a difference.
    #[inline]
    fn prefetch_payload(&self, index: usize) {
        let line = self.payload_at(index);
        #[cfg(target_arch = "x86_64")]
        #[allow(unused_unsafe)] // safe to call since Rust 1.87 (SSE is baseline on x86-64)
        // SAFETY: a prefetch is a hint that cannot fault, whatever the address; this one is
        // inside the mapping anyway (`payload_at` checks the index).
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line as *const i8);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = line;
    }

    /// Position `pos` and its slot (one division by the capacity; [`Ring::after`] steps
    /// without).
    #[inline]
    fn cursor(&self, pos: u64) -> Cursor {
        Cursor {
            pos,
            index: self.index(pos),
        }
    }

    /// The position after `at` and its slot: an increment and a compare where
    /// `Ring::index` divides (a multiplication and four simple operations, see
    /// `fastdiv.rs`), for batches, which walk consecutive positions.
    #[inline]
    pub fn after(&self, at: Cursor) -> Cursor {
        let index = at.index + 1;
        Cursor {
            pos: at.pos.wrapping_add(1),
            index: if index as u64 >= self.capacity {
                0
            } else {
                index
            },
        }
    }

    /// A token for a position claimed off the fast path.
    fn pop_token(&self, pos: u64) -> PopToken {
        PopToken {
            pos,
            index: self.index(pos),
        }
    }

    fn lap(&self, pos: u64) -> u32 {
        self.divisor.div(pos) as u32
    }

    /// [`Ring::lap`] and [`Ring::index`] of `pos` (one division).
    #[inline(always)]
    fn lap_index(&self, pos: u64) -> (u32, usize) {
        let (lap, index) = self.divisor.div_rem(pos);
        (lap as u32, index as usize)
    }

    /// The position that uses the same slot one lap after `pos`.
    fn next_lap(&self, pos: u64) -> u64 {
        pos.wrapping_add(self.capacity)
    }

    fn tail(&self) -> &AtomicU64 {
        &self.header().tail.value
    }

    fn head(&self) -> &AtomicU64 {
        &self.header().head.value
    }

    /// Messages in the queue right now (published or being written), clamped to capacity.
    pub fn depth(&self) -> u64 {
        let head = self.head().load(Acquire);
        let tail = self.tail().load(Acquire) & POS_MASK;
        tail.saturating_sub(head).min(self.capacity)
    }

    /// Positions claimed by producers so far.
    pub fn tail_position(&self) -> u64 {
        self.tail().load(Acquire) & POS_MASK
    }

    /// Positions claimed by consumers so far.
    pub fn head_position(&self) -> u64 {
        self.head().load(Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.header().is_shut_down()
    }

    /// Whether `shutdown` was called, from the roles line alone (`close` sets it before the
    /// tail's bit), so that looking does not touch the producers' tail line.
    #[inline]
    pub fn close_requested(&self) -> bool {
        // Acquire: as in `Header::is_shut_down`.
        self.header().roles.closed.load(Acquire) != 0
    }

    /// Marks the queue closed for sending. Returns false if it already was.
    pub fn close(&self) -> bool {
        // AcqRel: orders the close after our own earlier publications for any observer.
        let first = self.header().roles.closed.swap(1, AcqRel) == 0;
        if self.spsc {
            // The single sender writes `tail` with plain stores: it checks `closed` instead
            // (see `spsc.rs`).
            return first;
        }
        self.tail().fetch_or(TAIL_CLOSED, AcqRel) & TAIL_CLOSED == 0
    }

    /// Whether the queue has one sender and one receiver at a time ([`FLAG_SPSC`]).
    pub fn is_spsc(&self) -> bool {
        self.spsc
    }

    // ----- single producer, single consumer ([`FLAG_SPSC`], driven by `spsc.rs`) -----------

    /// A token for the single sender's position `pos`, which it knows to be free (the
    /// receiver's head is less than a lap behind: see `spsc.rs`).
    #[inline]
    pub fn spsc_push_token(&self, pos: u64) -> PushToken {
        self.spsc_push_token_at(self.cursor(pos))
    }

    /// [`Ring::spsc_push_token`] for a position whose slot is known.
    #[inline]
    pub fn spsc_push_token_at(&self, at: Cursor) -> PushToken {
        PushToken {
            pos: at.pos,
            index: at.index,
        }
    }

    /// The single receiver's claim of position `pos` (its own head) for a buffer of
    /// `buf_len` bytes.
    #[inline]
    pub fn spsc_claim_pop(&self, pos: u64, buf_len: usize) -> SpscPop {
        self.spsc_claim_pop_at(self.cursor(pos), buf_len)
    }

    /// [`Ring::spsc_claim_pop`] for a position whose slot is known.
    #[inline]
    pub fn spsc_claim_pop_at(&self, at: Cursor, buf_len: usize) -> SpscPop {
        let Cursor { pos, index } = at;
        let slot = self.slot_at(index);
        // Acquire: pairs with the sender's Release in `publish`.
        let seq = slot.seq.load(Acquire);
        // Relaxed: ordered after the Acquire above, which the sender's Release store of `seq`
        // after this field pairs with. A slot that says "published for `pos`" but holds
        // another position's message is `Corrupt` (see `claim_pop`): the receiver waits for
        // the sender to overwrite it, or skips it once the tail is past.
        if seq == seq_full(pos) && slot.position.load(Relaxed) == pos {
            // Relaxed: ordered after the Acquire above; the length is re-read (and checked
            // against the message size) by `read`.
            let len = slot.len.load(Relaxed) as usize;
            if len > buf_len && len <= self.message_size {
                return SpscPop::BufferTooSmall(len);
            }
            SpscPop::Message(PopToken { pos, index })
        } else if seq == seq_free(pos) || seq == seq_full(pos.wrapping_sub(self.capacity)) {
            // Never written (first lap, or skipped a lap ago), or still the previous lap's
            // message: the single receiver does not free slots (see `spsc.rs`).
            self.prefetch_payload(index);
            SpscPop::Empty
        } else if seq == seq_free(self.next_lap(pos)) {
            SpscPop::Released
        } else {
            SpscPop::Corrupt
        }
    }

    /// Frees the slot of position `pos` without reading it (a corrupt slot skipped by the
    /// single receiver).
    pub fn spsc_skip(&self, pos: u64) {
        // Release: as in `release`.
        self.slot(pos)
            .seq
            .store(seq_free(self.next_lap(pos)), Release);
        self.header().stats.corrupted.fetch_add(1, Relaxed);
    }

    /// Marks the message of position `pos` as handed out before (its receiver died).
    pub fn spsc_mark_redelivered(&self, pos: u64) {
        let slot = self.slot(pos);
        // Relaxed: the single receiver owns the slot; `flags` is outside the checksum.
        slot.flags
            .store(slot.flags.load(Relaxed) | SLOT_FLAG_REDELIVERED, Relaxed);
        self.header().stats.redelivered.fetch_add(1, Relaxed);
    }

    // ----- sending -------------------------------------------------------------------------

    /// Claims the slot at the tail for `peers.me()`.
    ///
    /// On `Full`, the caller may wait, or call [`Ring::repair_tail`] if it suspects a
    /// receiver died in the slot.
    // Always inlined: left to the compiler, a batch's claims became calls once the checks of
    // corrupt slots were added (+25 instructions per message of an MPMC batch, callgrind).
    #[inline(always)]
    pub fn claim_push(&self, peers: &dyn Peers) -> Result<PushToken, PushBlocked> {
        self.claim_push_run(peers, 1).map(|(token, _)| token)
    }

    /// Claims the slot at the tail, as [`Ring::claim_push`], and up to `max - 1` positions
    /// after it while they are plainly free, each by its own claim compare-and-swap, then
    /// moves the tail past all of them with one: a run of `n` positions costs `n + 1`
    /// atomic operations instead of `2n`. Returns the first position's token and `n`; the
    /// others are [`Ring::run_token`]s, to be written and published (or, if the caller
    /// cannot, published poisoned) like any claimed slot.
    ///
    /// Each position still names its owner in its claim word, so the repairs are unchanged:
    /// a producer that sees a claimed position at the tail helps the tail past it (as it
    /// helps a single claim), and if the claimer dies before publishing, receivers skip its
    /// positions. An extension stops at the first slot that is not free for its position or
    /// already claimed for its lap (another producer that saw the tail there got it first, or
    /// a receiver is skipping it), so a run is always a contiguous block from the tail.
    #[inline(always)]
    pub fn claim_push_run(
        &self,
        peers: &dyn Peers,
        max: usize,
    ) -> Result<(PushToken, usize), PushBlocked> {
        // Made at the first suspicious look (see `HeadSuspicion::look`).
        let mut suspicion = None::<TailSuspicion>;
        loop {
            let tail = self.tail().load(Acquire);
            if tail & TAIL_CLOSED != 0 {
                return Err(PushBlocked::Closed);
            }
            let t = tail;
            let (lap, index) = self.lap_index(t);
            let slot = self.slot_at(index);
            // The claim is loaded *before* `seq`, never after. A claim word read after `seq`
            // may belong to a later state of the slot: a producer that saw `seq == 2t`, was
            // preempted while the slot went through `t` (published, received: the claim is
            // now the receiver's), would take that claim as "free", win the CAS, publish a
            // message at a position the head has already passed (lost) and leave the slot
            // at `2t + 1` forever (every later producer finds it full). Loaded in this
            // order, a claim that `seq == 2t` follows is one made while the slot was still
            // free for `t` (a later claim happens-after a later `seq`, which this Acquire
            // load would then see), so a successful CAS from it really claims `t`.
            let current = slot.claim.load(Acquire);
            crate::crashpoint::hit("push_observed");
            // Acquire: pairs with the consumer's Release store that freed the slot, so its
            // reads of the old payload happen-before our writes of the new one.
            let seq = slot.seq.load(Acquire);
            if seq == seq_free(t) {
                let c = Claim::decode(current);
                if c.lap == lap && c.role == Role::Producer {
                    // Someone claimed `t` and has not advanced the tail yet: help.
                    let _ = self
                        .tail()
                        .compare_exchange(t, t.wrapping_add(1), AcqRel, Relaxed);
                    continue;
                }
                if c.lap == lap && c.role == Role::Consumer {
                    // A receiver is skipping `t` (its producer died, see `repair_head`): it
                    // claims the slot before freeing it for the next lap, so `seq` still says
                    // "free for `t`", but `t` is given up. Claiming from that claim would
                    // publish a message at a position the head has passed (lost) and leave
                    // the slot at `2t + 1`, full for every later lap. The repair moved only
                    // after seeing the tail past `t`, and we saw its claim: our tail was
                    // stale, and this CAS fails. (It succeeds only on a tail a hostile process
                    // rewrote; moving it past the skipped position keeps us from spinning.)
                    let _ = self
                        .tail()
                        .compare_exchange(t, t.wrapping_add(1), AcqRel, Relaxed);
                    continue;
                }
                // The lap divided out above, not `producer_claim`'s second division.
                let mine = claim_word(lap, Role::Producer, peers.me());
                if slot
                    .claim
                    .compare_exchange(current, mine, AcqRel, Relaxed)
                    .is_ok()
                {
                    crate::crashpoint::hit("push_claimed");
                    let token = PushToken { pos: t, index };
                    if max > 1 {
                        let n = self.extend_push_run(&token, current, max, peers.me())?;
                        return Ok((token, n));
                    }
                    return match self.advance_tail(t) {
                        Ok(()) => Ok((token, 1)),
                        Err(e) => {
                            // Closed under us: withdraw the claim so nobody waits for it.
                            let _ = slot.claim.compare_exchange(mine, current, AcqRel, Relaxed);
                            Err(e)
                        }
                    };
                }
            } else if (seq as i64).wrapping_sub(seq_free(t) as i64) < 0
                && t.checked_sub(self.capacity)
                    .is_some_and(|p| self.held_for(p, t, seq, current))
            {
                return Err(PushBlocked::Full);
            } else {
                // The slot is ahead of `t` (our tail was stale), or behind it in a state no
                // lap leaves it in (see `held_for`). Left alone, such a slot would say "full"
                // to every producer and "empty" to every consumer for ever. If the tail
                // really has not moved, the slot's sequence is corrupt; repair it so
                // producers go on.
                if self.tail().load(Acquire) == tail {
                    if let Some(blocked) = TailSuspicion::look(&mut suspicion, self, t, seq) {
                        return Err(blocked);
                    }
                }
            }
            spin_loop();
        }
    }

    /// The rest of [`Ring::claim_push_run`] once `first` is claimed (over the claim word
    /// `first_was`) and the tail is still at it: claims the positions after it while they are
    /// free, then moves the tail past the run. If the queue was shut down meanwhile, the
    /// positions the tail had already passed (helpers move it past claims they see) stay
    /// claimed, the others are withdrawn; `Closed` if none stayed.
    #[inline(never)]
    fn extend_push_run(
        &self,
        first: &PushToken,
        first_was: u64,
        max: usize,
        me: u32,
    ) -> Result<usize, PushBlocked> {
        let t = first.pos;
        let max = max.min(PUSH_RUN_MAX);
        // The claim words our claims replaced, to withdraw them.
        let mut was = [0u64; PUSH_RUN_MAX];
        was[0] = first_was;
        let mut n = 1;
        let mut at = first.cursor();
        while n < max {
            at = self.after(at);
            let u = at.pos;
            let slot = self.slot_at(at.index);
            // Claim before `seq`, as in `claim_push`: a claim that a free `seq` follows was
            // made while the slot was free for `u`.
            let current = slot.claim.load(Acquire);
            // Acquire: as in `claim_push` (the receiver's reads of the old payload).
            if slot.seq.load(Acquire) != seq_free(u) || Claim::decode(current).lap == self.lap(u) {
                break;
            }
            if slot
                .claim
                .compare_exchange(current, self.producer_claim(u, me), AcqRel, Relaxed)
                .is_err()
            {
                break;
            }
            was[n] = current;
            n += 1;
        }
        crate::crashpoint::hit("push_run_claimed");
        let Err(closed) = move_past_run(self.tail(), t, t.wrapping_add(n as u64)) else {
            return Ok(n);
        };
        // Shut down: positions below the final tail were passed (by helpers) and are ours to
        // publish; withdraw the others so nobody waits for them.
        let kept = (closed & POS_MASK).saturating_sub(t).min(n as u64) as usize;
        let mut at = first.cursor();
        for (i, &old) in was.iter().enumerate().take(n) {
            if i >= kept {
                let _ = self.slot_at(at.index).claim.compare_exchange(
                    self.producer_claim(at.pos, me),
                    old,
                    AcqRel,
                    Relaxed,
                );
            }
            at = self.after(at);
        }
        if kept == 0 {
            Err(PushBlocked::Closed)
        } else {
            Ok(kept)
        }
    }

    /// The token of the position after `prev` in a run that [`Ring::claim_push_run`]
    /// claimed (`prev`: the cursor of the run's previous token). Only for positions of a run
    /// the caller claimed: a token is the right to write and publish a slot.
    pub fn run_token(&self, prev: Cursor) -> PushToken {
        let at = self.after(prev);
        PushToken {
            pos: at.pos,
            index: at.index,
        }
    }

    /// Gives up a position of a send run that the caller (`me`) claimed and will not write
    /// (its batch ended early): the claim passes to owner 0, nobody, and receivers skip the
    /// position as they skip a dead producer's (`repair_head`, counted `abandoned`), without
    /// waiting for a liveness check (see [`Ring::head_given_up`]). Withdrawing the claim
    /// instead could race with a producer that saw it and is helping the tail past it.
    pub fn give_up(&self, token: PushToken, me: u32) {
        self.pass_to_nobody(token.index, token.pos, Role::Producer, me);
    }

    /// Passes `me`'s claim of `pos` (in slot `index`, in `role`) to owner 0, nobody: what a
    /// dead claimer leaves, for the repairs to finish ([`Ring::give_up`],
    /// [`Ring::hand_back`]).
    fn pass_to_nobody(&self, index: usize, pos: u64, role: Role, me: u32) {
        let lap = self.lap(pos);
        // AcqRel, as every claim compare-and-swap (see the module's notes on orderings).
        // It fails only if someone took the claim over, which needs us dead: not so.
        let _ = self.slot_at(index).claim.compare_exchange(
            claim_word(lap, role, me),
            claim_word(lap, role, 0),
            AcqRel,
            Relaxed,
        );
    }

    /// Whether the position at the head was given up by its producer ([`Ring::give_up`]): a
    /// receiver finding it in progress may skip it (`repair_head`) at once. A hint: the
    /// repair checks everything again.
    pub fn head_given_up(&self) -> bool {
        let h = self.head().load(Acquire);
        let (lap, index) = self.lap_index(h);
        let c = Claim::decode(self.slot_at(index).claim.load(Acquire));
        c.lap == lap && c.role == Role::Producer && c.owner == 0
    }

    /// Whether a slot in which the producer of `t` found `seq`, under the claim word `claim`,
    /// still belongs to position `p = t - capacity`: claimed and being written (`seq` free
    /// for `p`), or published and not yet released, under a claim of `p`'s lap (its producer
    /// or the consumer reading it) or a republisher's of `t`. The tail is past `p`, so `p`'s
    /// claim happened before it moved, and both words, loaded after our Acquire load of the
    /// tail, show that state or a later one. Anything else is hostile bytes: waiting for a
    /// consumer to release the slot would wait for ever (none holds it).
    ///
    /// Under a producer claim of `p`'s lap (being written, or published and not yet taken)
    /// the head must not be past `p` either: a consumer moves the head past a position only
    /// after claiming it (or skipping it, which claims it too). A head past `p` there means
    /// hostile bytes, and no consumer will come back to free the slot. (The head is loaded
    /// after the slot's words: seen past `p` while the slot still showed its producer's
    /// claim, the state was a correct one only if it has changed since, and the caller,
    /// treating it as suspicious, looks again.)
    #[cold] // only when the ring looks full: kept out of the claim, which is inlined
    #[inline(never)]
    fn held_for(&self, p: u64, t: u64, seq: u64, claim: u64) -> bool {
        let c = Claim::decode(claim);
        // A message of the lap before `p` held under a claim of `p`'s lap is a dead
        // receiver's message on its way to `p`: a republisher that claimed `p` and has not
        // published it yet, or a receiver that took it from a dead republisher
        // (`repair_head`) and has not marked it `p`'s yet. Both are about to go on.
        let moving_to_p = self.published_a_lap_before(p, seq);
        let of_p =
            (seq == seq_free(p) || seq == seq_full(p) || moving_to_p) && c.lap == self.lap(p);
        if of_p && c.role == Role::Producer {
            return (p.wrapping_sub(self.head().load(Acquire)) as i64) >= 0;
        }
        let republishing = seq == seq_full(p) && c.lap == self.lap(t) && c.role == Role::Producer;
        of_p || republishing
    }

    fn producer_claim(&self, pos: u64, me: u32) -> u64 {
        claim_word(self.lap(pos), Role::Producer, me)
    }

    fn consumer_claim(&self, pos: u64, me: u32) -> u64 {
        claim_word(self.lap(pos), Role::Consumer, me)
    }

    /// Whether `seq` says "published" for the position a lap before `pos`: a dead receiver's
    /// message on its way to `pos` (being republished there, or taken over from a dead
    /// republisher and not yet marked as `pos`'s).
    fn published_a_lap_before(&self, pos: u64, seq: u64) -> bool {
        pos.checked_sub(self.capacity)
            .is_some_and(|before| seq == seq_full(before))
    }

    /// Makes the dead receiver's message in `slot` (claimed by the caller, its earlier
    /// holders dead) the message of `pos`, flagged and counted as redelivered and
    /// republished: the last steps of `repair_tail`, which `repair_head` and `adopt_orphan`
    /// finish for a republisher or a taker that died before them.
    fn republish_as(&self, slot: &SlotHeader, pos: u64) {
        slot.flags.fetch_or(SLOT_FLAG_REDELIVERED, Relaxed);
        slot.position.store(pos, Relaxed);
        // Release: as in `publish`; the payload is the dead receiver's intact message.
        slot.seq.store(seq_full(pos), Release);
        let stats = &self.header().stats;
        stats.redelivered.fetch_add(1, Relaxed);
        stats.republished.fetch_add(1, Relaxed);
    }

    /// Moves the tail past `t` after a claim of `t` (or observes that someone else did).
    #[inline]
    fn advance_tail(&self, t: u64) -> Result<(), PushBlocked> {
        // The CAS comes first: a load before it would fetch the line shared only to have the
        // CAS fetch it again exclusively. On failure the CAS hands us the current value.
        loop {
            match self
                .tail()
                .compare_exchange_weak(t, t.wrapping_add(1), AcqRel, Acquire)
            {
                Ok(_) => return Ok(()),
                Err(cur) if cur == t => continue, // spurious failure: retry
                Err(cur) if cur == t | TAIL_CLOSED => return Err(PushBlocked::Closed),
                // Helped by someone else (cur > t); any other value is corruption, and the
                // claim is ours either way.
                Err(_) => return Ok(()),
            }
        }
    }

    /// The slot of `t` has shown `seen_seq`, impossible for the current tail, for a while.
    /// Only the positions between the head and the tail are in use, and which of them `t`'s
    /// slot is decides what to do:
    /// * the head is past `t` (hostile bytes moved it, or a consumer skipped `t` before the
    ///   tail got there): the positions up to the head are given up; move the tail to the
    ///   head in one step (a head scribbled far ahead would otherwise take as many looks as
    ///   positions) and leave the slot, which belongs to a later position now;
    /// * the head is at or before `t - capacity`: the slot is still the previous lap's, and
    ///   the queue is full by count. The consumer that reaches that position repairs or
    ///   skips it and frees the slot for `t`; taking it now would let that consumer's skip
    ///   free it again under our message (lost), and put `t`'s message in a slot the head
    ///   has not reached yet;
    /// * otherwise nobody else will fix the slot: take it for `t`.
    #[cold]
    #[inline(never)]
    fn push_past_corrupt(&self, t: u64, seen_seq: u64) -> Option<PushBlocked> {
        let head = self.head().load(Acquire) & POS_MASK;
        if head > t {
            let _ = self.tail().compare_exchange(t, head, AcqRel, Relaxed);
            return None;
        }
        if t.checked_sub(self.capacity)
            .is_some_and(|p| (p.wrapping_sub(head) as i64) >= 0)
        {
            return Some(PushBlocked::Full);
        }
        // A receiver's claim of `t`'s lap says a receiver has been at `t` (skipping it): the
        // position is given up. Free the slot for the next lap and move the tail past `t`,
        // rather than freeing it for `t` and leaving it so (the claim makes every producer
        // help the tail past `t`, and nobody would free the slot for the next lap: a lap
        // later it would say "being skipped" for as long as that receiver lives).
        let slot = self.slot(t);
        let c = Claim::decode(slot.claim.load(Acquire));
        let skipped = c.lap == self.lap(t) && c.role == Role::Consumer;
        let free = if skipped {
            seq_free(self.next_lap(t))
        } else {
            seq_free(t)
        };
        if slot
            .seq
            .compare_exchange(seen_seq, free, AcqRel, Relaxed)
            .is_ok()
        {
            self.header().stats.corrupted.fetch_add(1, Relaxed);
        }
        if skipped {
            let _ = self
                .tail()
                .compare_exchange(t, t.wrapping_add(1), AcqRel, Relaxed);
        }
        None
    }

    /// Writes a message into a claimed slot. `data.len()` must not exceed the message size.
    #[inline]
    pub fn write(&self, token: &PushToken, id: u64, timestamp_ns: u64, data: &[u8]) {
        assert!(data.len() <= self.message_size, "caller checks the length");
        // The payload first, then the header fields right before `publish` stores `seq` in
        // the same line: a receiver polling that line takes it away from us at each look,
        // and the header stores and the publication then need it back only once.
        let payload = self.payload_at(token.index);
        let crc = match self.checksum {
            // The checksum of the bytes as they are copied, in one pass (see `MessageCrc`).
            // SAFETY: the slot is claimed by us, its payload area holds message_size >= len
            // bytes, and `data` is private memory that cannot overlap the mapping.
            Some(crc) => unsafe { crc.copy_to_shared(id, timestamp_ns, data, payload) },
            None => {
                // SAFETY: as above.
                unsafe { ptr::copy_nonoverlapping(data.as_ptr(), payload, data.len()) };
                0
            }
        };
        self.set_header(token, id, timestamp_ns, data.len() as u32, crc);
    }

    /// The header fields of a message written into a claimed slot, stored right before
    /// `publish` stores `seq` in the same line (see [`Ring::write`]). `Relaxed` is enough:
    /// that `Release` store orders them before any reader's `Acquire` load of `seq`.
    #[inline(always)]
    fn set_header(&self, token: &PushToken, id: u64, timestamp_ns: u64, len: u32, crc: u32) {
        let slot = self.slot_at(token.index);
        slot.id.store(id, Relaxed);
        slot.timestamp_ns.store(timestamp_ns, Relaxed);
        slot.len.store(len, Relaxed);
        slot.flags.store(0, Relaxed);
        slot.crc.store(crc, Relaxed);
        slot.position.store(token.pos, Relaxed);
    }

    /// [`Ring::write`] of a message given in `count` parts, `part(i)` (a gather send),
    /// `len` bytes in all: the parts are copied one after another into the slot, and
    /// checksummed as they are copied.
    ///
    /// The parts are asked for again here, after the caller summed them to `len`; a C
    /// caller's arrays could have changed in between (a race its contract forbids, but the
    /// slot's neighbours must not pay for it). So each part is cut to the room left, and
    /// nothing is written past `len`: parts that grew are cut, and parts that shrank leave
    /// the message's end stale, which its checksum then reports.
    pub fn write_parts(
        &self,
        token: &PushToken,
        id: u64,
        timestamp_ns: u64,
        (count, part): Parts<'_>,
        len: usize,
    ) {
        assert!(len <= self.message_size, "caller checks the length");
        let payload = self.payload_at(token.index);
        let crc = match self.checksum {
            // SAFETY: the slot is claimed by us and its payload area holds message_size >=
            // len bytes; `copy_parts_to_shared` writes at most `len` (it cuts each part to
            // the room left); the parts lie in private memory that cannot overlap the mapping.
            Some(crc) => unsafe {
                crc.copy_parts_to_shared(id, timestamp_ns, (count, part), len, payload)
            },
            None => {
                let mut at = 0;
                for part in cut_parts((count, part), len) {
                    // SAFETY: as above: `at + part.len() <= len` (`cut_parts`).
                    unsafe { ptr::copy_nonoverlapping(part.as_ptr(), payload.add(at), part.len()) };
                    at += part.len();
                }
                0
            }
        };
        self.set_header(token, id, timestamp_ns, len as u32, crc);
    }

    /// Pointer to the payload area of a claimed slot (`message_size` bytes), for zero-copy
    /// writers. Use [`Ring::finish_in_place`] before publishing.
    #[inline]
    pub fn payload_ptr(&self, token: &PushToken) -> *mut u8 {
        self.payload_at(token.index)
    }

    /// Completes a message written in place: header fields and checksum.
    #[inline]
    pub fn finish_in_place(&self, token: &PushToken, id: u64, timestamp_ns: u64, len: usize) {
        assert!(len <= self.message_size, "caller checks the length");
        let crc = match self.checksum {
            Some(crc) => {
                // SAFETY: the slot is ours and the payload holds `len` initialized bytes
                // written by the caller; nobody else writes a claimed slot in a correct peer.
                let bytes =
                    unsafe { std::slice::from_raw_parts(self.payload_at(token.index), len) };
                crc.compute(id, timestamp_ns, len as u32, bytes)
            }
            None => 0,
        };
        self.set_header(token, id, timestamp_ns, len as u32, crc);
    }

    /// Publishes a claimed slot as a message that no receiver accepts (its length exceeds
    /// the message size): used when a zero-copy writer panics or hands back an impossible
    /// length. The receiver that claims it drops it and reports `CorruptedData`, which frees
    /// the position without waiting for this (live) process to die.
    pub fn publish_poisoned(&self, token: PushToken) {
        let slot = self.slot_at(token.index);
        slot.len.store(u32::MAX, Relaxed);
        slot.flags.store(0, Relaxed);
        slot.crc.store(0, Relaxed);
        slot.position.store(token.pos, Relaxed);
        self.publish(token);
    }

    /// Makes a written message visible to consumers.
    #[inline]
    pub fn publish(&self, token: PushToken) {
        // Release: the payload and header writes above happen-before a consumer's Acquire
        // load that sees this value.
        self.slot_at(token.index)
            .seq
            .store(seq_full(token.pos), Release);
    }

    /// Called by a producer that found the queue full: if the slot at the tail is held by a
    /// receiver that died mid-receive, republishes its (intact) message at the tail position
    /// so another receiver gets it. Returns true if it repaired something (retry the push).
    pub fn repair_tail(&self, peers: &dyn Peers) -> bool {
        let tail = self.tail().load(Acquire);
        if tail & TAIL_CLOSED != 0 {
            return false;
        }
        let t = tail;
        if t < self.capacity {
            return false;
        }
        let p = t - self.capacity;
        let slot = self.slot(t);
        // Claim before `seq`, as everywhere (see `claim_push`): a claim loaded after `seq`
        // may be a later state's. What `seq` moves on without the claim changing (a
        // receiver's release) is re-checked after our claim CAS below.
        let current = slot.claim.load(Acquire);
        let seq = slot.seq.load(Acquire);
        let c = Claim::decode(current);
        // Either a receiver of `p` holds the slot, or a producer that was republishing it
        // at `t` did; anything else is not ours to repair.
        let dead_receiver = c.lap == self.lap(p) && c.role == Role::Consumer;
        let dead_republisher =
            c.lap == self.lap(t) && c.role == Role::Producer && seq == seq_full(p);
        if !(dead_receiver || dead_republisher) || c.owner == peers.me() {
            return false;
        }
        // A receiver that took a dead republisher's message for `p` (`repair_head`) and died
        // before marking it `p`'s: the message of the lap before, republished like `p`'s.
        let taken_over = dead_receiver && self.published_a_lap_before(p, seq);
        if seq != seq_full(p) && seq != seq_free(p) && !taken_over {
            return false;
        }
        crate::crashpoint::hit("repair_tail_observed");
        if peers.is_alive(c.owner) {
            return false;
        }
        let stats = &self.header().stats;
        if seq == seq_free(p) {
            // A receiver died while skipping an abandoned position: the slot holds nothing.
            // Finish its work: the head move (if missing), then free the slot for `t`. Both
            // are compare-and-swaps, so racing repairers cannot undo a later state. Whoever
            // frees the slot counts the abandoned position (the skipper counts only after
            // freeing it, see `repair_head`).
            let _ = self
                .head()
                .compare_exchange(p, p.wrapping_add(1), AcqRel, Relaxed);
            let freed = slot
                .seq
                .compare_exchange(seq_free(p), seq_free(t), Release, Relaxed)
                .is_ok();
            if freed {
                stats.abandoned.fetch_add(1, Relaxed);
            }
            return freed;
        }
        let mine = self.producer_claim(t, peers.me());
        if slot
            .claim
            .compare_exchange(current, mine, AcqRel, Relaxed)
            .is_err()
        {
            return true; // somebody else repaired it
        }
        // `seq` was read before the claim, and a receiver's release changes `seq` but not
        // the claim: the receiver may have finished after all (released the slot, then
        // disconnected) between our look and its death. Republishing would then deliver
        // its message a second time. Look again now that the slot is ours.
        match slot.seq.load(Acquire) {
            s if s == seq_full(p) || (taken_over && s == seq) => {} // still the orphan
            s if s == seq_free(t) => {
                // The slot is free for `t`, and our claim makes us the producer of `t`,
                // with no message to put there. Withdrawing the claim could race with a
                // producer that saw it and is helping the tail past `t`; instead give the
                // position up as abandoned: owner 0 is nobody, never alive, so receivers
                // skip `t` exactly as they skip a dead producer's position.
                let _ =
                    slot.claim
                        .compare_exchange(mine, self.producer_claim(t, 0), AcqRel, Relaxed);
                return true;
            }
            // The dead republisher published `t` before dying: a normal message now, which
            // our producer claim (like its own) leaves to the receivers.
            _ => return true,
        }
        crate::crashpoint::hit("repair_tail_claimed");
        // The dead receiver may have died before advancing the head past `p`: do it, so no
        // consumer ever sees the republished slot at a stale head.
        let _ = self
            .head()
            .compare_exchange(p, p.wrapping_add(1), AcqRel, Relaxed);
        crate::crashpoint::hit("repair_tail_head_moved");
        match self.advance_tail(t) {
            Ok(()) => {
                crate::crashpoint::hit("repair_tail_tail_moved");
                // Counted only once published: if we die before, whoever finishes our work
                // (`repair_head`, `adopt_orphan` or another `repair_tail`) counts instead.
                self.republish_as(slot, t);
                true
            }
            Err(_) => {
                // Closed meanwhile: give the slot back as an orphan; receivers adopt it.
                let _ = slot.claim.compare_exchange(mine, current, AcqRel, Relaxed);
                false
            }
        }
    }

    // ----- receiving -----------------------------------------------------------------------

    /// Whether the slot at the head is still free for its position: nothing published
    /// there yet. Reads only the head and that slot, not the producers' `tail` line, so a
    /// consumer polling an empty queue with it does not take that line from the producer
    /// (whose next claim would then wait for it). [`Ring::claim_pop`] tells empty from
    /// in-progress and closed, and helps or repairs; this is only the cheap look before it.
    #[inline]
    pub fn head_unpublished(&self) -> bool {
        // Acquire: as in `claim_pop` (a `false` leads to it anyway).
        let h = self.head().load(Acquire);
        let index = self.index(h);
        let unpublished = self.slot_at(index).seq.load(Acquire) == seq_free(h);
        if unpublished {
            self.prefetch_payload(index);
        }
        unpublished
    }

    /// Claims the message at the head for `peers.me()`, if it fits in `buf_len` bytes.
    #[inline]
    pub fn claim_pop(&self, peers: &dyn Peers, buf_len: usize) -> Result<PopToken, PopBlocked> {
        self.claim_pop_run(peers, buf_len, 1)
            .map(|(token, _)| token)
    }

    /// Claims the message at the head, as [`Ring::claim_pop`], and up to `max - 1` messages
    /// after it while they are plainly published and fit in `buf_len` bytes, each by its own
    /// claim compare-and-swap, then moves the head past all of them with one: a run of `n`
    /// messages costs `n + 1` atomic operations instead of `2n`. Returns the first message's
    /// token and `n`; the others are [`Ring::pop_run_token`]s, each to be read and released
    /// like any claimed message.
    ///
    /// Each slot of the run holds a receiver's claim of its own lap over its published
    /// message, the state a single claim leaves it in, so the rest of the protocol sees
    /// nothing new: a receiver that finds one at the head helps the head past it (as it helps
    /// a single claim not yet followed by the head), a producer a lap later finds the slot
    /// held, and if the claimer dies, its messages are delivered again (`repair_tail`,
    /// `adopt_orphan`) once the head is past them. An extension stops at the first slot that
    /// is not a publication of its own position under its producer's claim, or whose message
    /// does not fit; whatever it stopped at is the next plain claim's to sort out.
    // Always inlined, as `claim_push_run`: left to the compiler, it was a call from the
    // zero-copy receives (whose `max` of 1 then did not fold the run away): +38
    // instructions per `recv_in_place`, +47 per message of a zero-copy batch (callgrind).
    #[inline(always)]
    pub fn claim_pop_run(
        &self,
        peers: &dyn Peers,
        buf_len: usize,
        max: usize,
    ) -> Result<(PopToken, usize), PopBlocked> {
        // Made at the first suspicious look (see `HeadSuspicion::look`).
        let mut suspicion = None::<HeadSuspicion>;
        loop {
            let h = self.head().load(Acquire);
            let (lap, index) = self.lap_index(h);
            let slot = self.slot_at(index);
            // Claim before `seq`, as in `claim_push`: a claim read after `seq == 2h + 1` may
            // be the producer's of `h + capacity` (the slot went a lap while we were
            // preempted); claiming from it would take that message for the old position
            // and then free the slot under the head, wedging the ring.
            let current = slot.claim.load(Acquire);
            crate::crashpoint::hit("pop_observed");
            // Acquire: pairs with the producer's Release publication of the slot.
            let seq = slot.seq.load(Acquire);
            if seq == seq_full(h) {
                let c = Claim::decode(current);
                if c.lap == lap && c.role == Role::Consumer {
                    // Claimed by someone who has not advanced the head yet: help.
                    self.help_head_past(h)?;
                    continue;
                }
                if c.lap == lap.wrapping_add(1) && c.role == Role::Producer {
                    // A producer is republishing this message one lap later (its receiver
                    // died before moving the head; see `repair_tail`). The message is the
                    // republisher's now: claiming it here would deliver it twice, or free
                    // the slot under the republished position. The republisher moves the
                    // head past `h` itself; help it and look at the next position.
                    self.help_head_past(h)?;
                    continue;
                }
                // Relaxed: ordered after the Acquire load of `seq`, which the producer's
                // Release store of `seq` after this field pairs with.
                if slot.position.load(Relaxed) != h {
                    // "Published for `h`" over a slot that holds another position's message:
                    // stray bytes in `seq`, not a publication (taken, it would deliver an old
                    // message again, checksum and all). If the tail is not past `h`, no
                    // producer has claimed it: the one that does rewrites `seq` (see
                    // `reclaim_corrupt_for_push`), while taking it now would move the head
                    // past the tail, losing that producer's message and wedging the slot a
                    // lap later. Past the tail, its producer may still be writing (its
                    // publication sets both): give it time, then skip the slot.
                    let tail = self.tail().load(Acquire);
                    if tail & POS_MASK <= h {
                        return Err(nothing_to_take(tail));
                    }
                    HeadSuspicion::look(&mut suspicion, self, h, seq, peers)?;
                    spin_loop();
                    continue;
                }
                let len = slot.len.load(Relaxed) as usize;
                if len <= self.message_size && len > buf_len {
                    // Only report it if the slot did not change while we read the length.
                    if slot.seq.load(Acquire) == seq && slot.claim.load(Acquire) == current {
                        return Err(PopBlocked::BufferTooSmall(len));
                    }
                    continue;
                }
                // The lap divided out above, not `consumer_claim`'s second division.
                let mine = claim_word(lap, Role::Consumer, peers.me());
                if slot
                    .claim
                    .compare_exchange(current, mine, AcqRel, Relaxed)
                    .is_ok()
                {
                    crate::crashpoint::hit("pop_claimed");
                    let token = PopToken { pos: h, index };
                    if max > 1 {
                        let n = self.extend_pop_run(&token, buf_len, max, peers.me());
                        return Ok((token, n));
                    }
                    let _ = self
                        .head()
                        .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
                    return Ok((token, 1));
                }
            } else if seq == seq_free(h) {
                let tail = self.tail().load(Acquire);
                if tail & POS_MASK <= h {
                    return Err(nothing_to_take(tail));
                }
                let c = Claim::decode(slot.claim.load(Acquire));
                if c.lap == lap && c.role == Role::Consumer {
                    // Someone is skipping an abandoned position: help advance the head.
                    let _ = self
                        .head()
                        .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
                    continue;
                }
                if c.lap != lap || c.role != Role::Producer {
                    // The tail is past `h`, so `h` was claimed before it moved, and this
                    // claim word, loaded after the tail, would show that claim (or a later
                    // one, if the slot went on while we looked: then `seq` or the head has
                    // moved). Nobody's claim of `h` means hostile bytes: no producer is
                    // writing `h`, and waiting for one would wait for ever. Skip it.
                    if self.head().load(Acquire) == h && slot.seq.load(Acquire) == seq {
                        HeadSuspicion::look(&mut suspicion, self, h, seq, peers)?;
                    }
                    spin_loop();
                    continue;
                }
                return Err(PopBlocked::InProgress);
            } else {
                // The slot is behind (previous lap still in flight) or ahead (stale head).
                let tail = self.tail().load(Acquire);
                let head_now = self.head().load(Acquire);
                if head_now != h {
                    continue;
                }
                // Re-read after loading tail and head: any legitimate transition that led
                // to these positions is now visible (see the module's notes on orderings).
                let seq = slot.seq.load(Acquire);
                // Not past the tail: nothing of `h` to take, whatever the slot says (the
                // producer that claims `h` repairs the slot; skipping `h` now would move the
                // head past the tail).
                if tail & POS_MASK <= h {
                    return Err(nothing_to_take(tail));
                }
                if seq == seq_free(h) || seq == seq_full(h) {
                    continue;
                }
                let behind = (seq as i64).wrapping_sub(seq_free(h) as i64) < 0;
                if behind {
                    let c = Claim::decode(slot.claim.load(Acquire));
                    let republishing = self.published_a_lap_before(h, seq);
                    if c.lap == lap && c.role == Role::Producer && republishing {
                        // A producer is republishing a dead receiver's message here (a dead
                        // one is `repair_head`'s). Under any other `seq`, this claim is no
                        // republisher's, and waiting for it could wait for ever.
                        return Err(PopBlocked::InProgress);
                    }
                    if c.lap == lap && c.role == Role::Consumer {
                        let _ = self
                            .head()
                            .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
                        continue;
                    }
                }
                // Impossible state for a live position: skip it so the queue goes on.
                HeadSuspicion::look(&mut suspicion, self, h, seq, peers)?;
            }
            spin_loop();
        }
    }

    /// The rest of [`Ring::claim_pop_run`] once the message of `first` is claimed and the
    /// head is still at it: claims the messages after it while they are plainly there, then
    /// moves the head past the run. Returns the run's length.
    #[inline(never)]
    fn extend_pop_run(&self, first: &PopToken, buf_len: usize, max: usize, me: u32) -> usize {
        let h = first.pos;
        // The tail is not loaded (the producers' line): a slot that passes every check below
        // was published by the producer of its position, which moved the tail past it first.
        // (Hostile bytes forged to pass them all would be taken by `claim_pop` too.)
        let mut n = 1;
        let mut at = first.cursor();
        while n < max {
            at = self.after(at);
            let u = at.pos;
            let slot = self.slot_at(at.index);
            // Claim before `seq`, as in `claim_pop`: the claim a `seq` of "published for `u`"
            // follows is one made while `u` was published (a receiver's later claim, or a
            // producer's a lap later, would make the compare-and-swap below fail).
            let current = slot.claim.load(Acquire);
            // Acquire: pairs with the producer's Release publication, as in `claim_pop`.
            if slot.seq.load(Acquire) != seq_full(u) {
                break;
            }
            // Only the publisher's own claim: a receiver's (taken already, or being skipped)
            // or a republisher's a lap later is `claim_pop`'s to deal with.
            let c = Claim::decode(current);
            if c.lap != self.lap(u) || c.role != Role::Producer {
                break;
            }
            // Relaxed: ordered after the Acquire load of `seq`, as in `claim_pop`. Another
            // position's message under this `seq` is stray bytes (see `claim_pop`).
            if slot.position.load(Relaxed) != u {
                break;
            }
            let len = slot.len.load(Relaxed) as usize;
            if len <= self.message_size && len > buf_len {
                break;
            }
            if slot
                .claim
                .compare_exchange(current, self.consumer_claim(u, me), AcqRel, Relaxed)
                .is_err()
            {
                break; // another receiver took it (it helped the head past our claims)
            }
            n += 1;
        }
        crate::crashpoint::hit("pop_run_claimed");
        // The head has no shutdown flag: a value with it is corruption, as in `move_past_run`.
        let _ = move_past_run(self.head(), h, h.wrapping_add(n as u64));
        n
    }

    /// The token of the message after `prev` in a run that [`Ring::claim_pop_run`] claimed
    /// (`prev`: the cursor of the run's previous token). Only for positions of a run the
    /// caller claimed: a token is the right to read and release a slot.
    pub fn pop_run_token(&self, prev: Cursor) -> PopToken {
        let at = self.after(prev);
        PopToken {
            pos: at.pos,
            index: at.index,
        }
    }

    /// Moves the head past `h`, which a published slot's claim word says another consumer
    /// (or a republisher, a lap later) has taken, if the tail is past `h`. Such a claim is
    /// made only after the tail has passed `h`, and our Acquire load of the claim makes that
    /// tail visible; a tail not past `h` means the words are hostile, and a head past the
    /// tail would lose the message the producer of `h` then sends. `Err` is what the
    /// receive reports instead.
    #[cold] // contention and repairs only: kept out of the claim, which is inlined
    #[inline(never)]
    fn help_head_past(&self, h: u64) -> Result<(), PopBlocked> {
        let tail = self.tail().load(Acquire);
        if tail & POS_MASK <= h {
            return Err(nothing_to_take(tail));
        }
        let _ = self
            .head()
            .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
        Ok(())
    }

    /// Skips the position `h` whose slot is in an impossible state (`seen_seq`), counted
    /// under `corrupted`.
    fn skip_corrupt_head(&self, h: u64, seen_seq: u64, peers: &dyn Peers) {
        let slot = self.slot(h);
        if (seen_seq.wrapping_sub(seq_full(h)) as i64) > 0 {
            // The slot is ahead of `h`: a later lap's producer has it (it judged the slot
            // corrupt and took it, see `push_past_corrupt`). `h` is lost; the slot is not
            // ours to claim or free.
            if self
                .head()
                .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed)
                .is_ok()
            {
                self.header().stats.corrupted.fetch_add(1, Relaxed);
            }
            return;
        }
        let mine = self.consumer_claim(h, peers.me());
        let current = slot.claim.load(Acquire);
        if slot.seq.load(Acquire) != seen_seq {
            return;
        }
        if slot
            .claim
            .compare_exchange(current, mine, AcqRel, Relaxed)
            .is_err()
        {
            return;
        }
        // A consumer that sees our claim helps the head past `h`: whether this CAS or a
        // helper's moves it, the slot is ours to free.
        let _ = self
            .head()
            .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
        // Free the slot for the next lap, from what it says of `h` only: its producer may
        // still publish (`h`'s message, over the hostile bytes; dropped with them), and once
        // the head has moved, the producer of the next lap may have taken the slot, which a
        // plain store would reset under its message. Counted by whoever frees it.
        let mut seen = seen_seq;
        loop {
            match slot
                .seq
                .compare_exchange(seen, seq_free(self.next_lap(h)), Release, Relaxed)
            {
                Ok(_) => {
                    self.header().stats.corrupted.fetch_add(1, Relaxed);
                    return;
                }
                Err(now) if now == seq_full(h) || now == seq_free(h) => seen = now,
                Err(_) => return,
            }
        }
    }

    /// Called by a consumer that saw `InProgress` for a while: if the producer writing the
    /// head position died, skips that position (the send never returned success, so nothing
    /// promised is lost).
    pub fn repair_head(&self, peers: &dyn Peers) -> HeadRepair {
        let h = self.head().load(Acquire);
        let slot = self.slot(h);
        let seq = slot.seq.load(Acquire);
        // A producer republishing a dead receiver's message leaves the old lap's `seq`.
        let republishing = self.published_a_lap_before(h, seq);
        if seq != seq_free(h) && !republishing {
            return HeadRepair::Nothing;
        }
        if self.tail().load(Acquire) & POS_MASK <= h {
            return HeadRepair::Nothing;
        }
        let current = slot.claim.load(Acquire);
        let c = Claim::decode(current);
        if c.lap != self.lap(h)
            || c.role != Role::Producer
            || c.owner == peers.me()
            || peers.is_alive(c.owner)
        {
            return HeadRepair::Nothing;
        }
        let mine = self.consumer_claim(h, peers.me());
        if slot
            .claim
            .compare_exchange(current, mine, AcqRel, Relaxed)
            .is_err()
        {
            return HeadRepair::Skipped; // someone else got there first; look again
        }
        crate::crashpoint::hit("repair_head_claimed");
        let _ = self
            .head()
            .compare_exchange(h, h.wrapping_add(1), AcqRel, Relaxed);
        // The owner is dead, so `seq` cannot change any more, but it may have changed since
        // we looked: if the producer (or republisher) published just before dying, the
        // message is real, counted by it, and now ours: deliver it.
        if slot.seq.load(Acquire) == seq_full(h) {
            return HeadRepair::Message(self.pop_token(h));
        }
        let stats = &self.header().stats;
        if republishing {
            // The republisher died after moving the tail, before publishing; the dead
            // receiver's message is intact, and ours (claimed, its republisher dead). It
            // counts only after publishing, so we count. And `seq` says "published for `h`",
            // as the republisher would have left it: under our claim that is what a receiver
            // reading `h` looks like to everyone else (the producer of the next lap waits for
            // it; if we die, `repair_tail` or `adopt_orphan` delivers it again). Left at the
            // old lap's value, the slot looked corrupt to that producer, which took it while
            // we read it.
            self.republish_as(slot, h);
            return HeadRepair::Message(self.pop_token(h));
        }
        crate::crashpoint::hit("repair_head_head_moved");
        // Release: our claim and head move happen-before the producer that reuses the slot.
        // Counted by whoever frees the slot: if we die first, `repair_tail` does both.
        if slot
            .seq
            .compare_exchange(seq_free(h), seq_free(self.next_lap(h)), Release, Relaxed)
            .is_ok()
        {
            stats.abandoned.fetch_add(1, Relaxed);
        }
        HeadRepair::Skipped
    }

    /// Looks for a message whose receiver died mid-receive and claims it for `peers.me()`.
    /// Scans every slot: call it when the queue looks empty, not on every receive.
    ///
    /// Also adopts the message of a republisher (see [`Ring::repair_tail`]) that died
    /// before moving the tail: no consumer will ever reach that position, and after
    /// `shutdown` no producer will repair it either.
    pub fn adopt_orphan(
        &self,
        peers: &dyn Peers,
        buf_len: usize,
    ) -> Result<Option<PopToken>, usize> {
        let head = self.head().load(Acquire);
        for i in 0..self.capacity {
            let slot = self.slot(i);
            // Claim before `seq`, as everywhere. Loaded after, the claim may be a later
            // state's: a receiver that released (`seq` moved on) and went away, then a
            // `repair_tail` that claimed the free slot for the next lap and gave that position
            // up (producer claim of owner 0, which looks like a dead republisher's). Taking
            // that claim would erase the only record of the abandoned position once the tail
            // has moved past it: the head would wait for it forever.
            let current = slot.claim.load(Acquire);
            let seq = slot.seq.load(Acquire);
            if seq & 1 == 0 {
                continue;
            }
            let p = seq / 2;
            if p >= head || p % self.capacity != i {
                continue;
            }
            let c = Claim::decode(current);
            let t = self.next_lap(p);
            let dead_receiver = c.role == Role::Consumer && c.lap == self.lap(p);
            let dead_republisher = c.role == Role::Producer && c.lap == self.lap(t);
            // A receiver that took a dead republisher's message for `t` (`repair_head`) and
            // died before marking it `t`'s: the message is `t`'s, and the head is at or past
            // `t` (receivers at `t` help it past a receiver's claim), so only a scan finds it.
            let dead_taker = c.role == Role::Consumer && c.lap == self.lap(t);
            if !(dead_receiver || dead_republisher || dead_taker) || c.owner == peers.me() {
                continue;
            }
            // Only a position the tail has passed was ever taken (the republisher moved the
            // tail past `t` before it died); anything else is stray bytes.
            if dead_taker && self.tail().load(Acquire) & POS_MASK <= t {
                continue;
            }
            crate::crashpoint::hit("adopt_observed");
            if peers.is_alive(c.owner) {
                continue;
            }
            // A dead republisher that moved the tail left position `t` to the receivers
            // that reach it (`repair_head`). Loaded after its death: the tail cannot move
            // past `t` any more without the claim changing first.
            if dead_republisher && self.tail().load(Acquire) & POS_MASK != t {
                continue;
            }
            let len = slot.len.load(Relaxed) as usize;
            if len <= self.message_size && len > buf_len {
                return Err(len);
            }
            let at = if dead_taker { t } else { p };
            let mine = self.consumer_claim(at, peers.me());
            if slot
                .claim
                .compare_exchange(current, mine, AcqRel, Relaxed)
                .is_err()
            {
                continue;
            }
            crate::crashpoint::hit("adopt_claimed");
            // As in `repair_tail`: the receiver may have released the slot (its message
            // delivered) and disconnected after we read `seq`. Our claim then stands in for
            // its finished one, which is all a producer needs: leave the slot alone.
            if slot.seq.load(Acquire) != seq {
                continue;
            }
            if dead_taker {
                // Finish its work (`repair_head`'s), counted there only after it.
                self.republish_as(slot, t);
                return Ok(Some(self.pop_token(t)));
            }
            slot.flags.fetch_or(SLOT_FLAG_REDELIVERED, Relaxed);
            // The message is read as `p`'s. (A republisher stores `t` there only after moving
            // the tail past `t`, which it has not; stored anyway, the slot being ours.)
            slot.position.store(p, Relaxed);
            self.header().stats.redelivered.fetch_add(1, Relaxed);
            return Ok(Some(self.pop_token(p)));
        }
        Ok(None)
    }

    /// Copies a claimed message into `buf` and verifies it. The slot stays claimed: call
    /// [`Ring::release`] afterwards whatever the result.
    #[inline]
    pub fn read(&self, token: &PopToken, buf: &mut [u8]) -> Result<MessageMeta, ReadError> {
        let slot = self.slot_at(token.index);
        let raw_len = slot.len.load(Relaxed);
        let len = raw_len as usize;
        if len > self.message_size || len > buf.len() {
            return Err(ReadError::BadLength(raw_len));
        }
        let id = slot.id.load(Relaxed);
        let timestamp_ns = slot.timestamp_ns.load(Relaxed);
        let flags = slot.flags.load(Relaxed);
        let expected = slot.crc.load(Relaxed);
        let payload = self.payload_at(token.index);
        let copy = &mut buf[..len];
        match self.checksum {
            // The checksum covers the bytes exactly as copied (each word is read from the
            // slot once), so a peer writing the slot concurrently cannot make us accept bytes
            // other than those we return.
            Some(crc) => {
                // SAFETY: len <= message_size, so the source lies inside the slot, and it is
                // 64-aligned (as slots are: see `from_raw`); `buf` is private memory of at
                // least `len` bytes and cannot overlap the mapping.
                let actual = unsafe { crc.copy_from_shared(id, timestamp_ns, payload, copy) };
                if actual != expected {
                    return Err(ReadError::Checksum { expected, actual });
                }
            }
            // SAFETY: as above (alignment aside).
            None => unsafe { ptr::copy_nonoverlapping(payload, copy.as_mut_ptr(), len) },
        }
        Ok(MessageMeta {
            id,
            timestamp_ns,
            len,
            redelivered: flags & SLOT_FLAG_REDELIVERED != 0,
        })
    }

    /// Verifies a claimed message where it lies, for zero-copy readers: returns its metadata
    /// and a pointer to its `len` payload bytes inside the slot. The slot stays claimed: call
    /// [`Ring::release`] afterwards whatever the result, and do not use the pointer after.
    ///
    /// Unlike [`Ring::read`], the checksum is computed over the shared bytes, so it only
    /// protects against peers that break the protocol *before* the claim (a correct peer
    /// never writes a slot claimed by someone else).
    #[inline]
    pub fn read_in_place(&self, token: &PopToken) -> Result<(MessageMeta, *const u8), ReadError> {
        let slot = self.slot_at(token.index);
        let raw_len = slot.len.load(Relaxed);
        let len = raw_len as usize;
        if len > self.message_size {
            return Err(ReadError::BadLength(raw_len));
        }
        let id = slot.id.load(Relaxed);
        let timestamp_ns = slot.timestamp_ns.load(Relaxed);
        let flags = slot.flags.load(Relaxed);
        let expected = slot.crc.load(Relaxed);
        let payload = self.payload_at(token.index) as *const u8;
        if let Some(crc) = self.checksum {
            // SAFETY: len <= message_size, so the bytes lie inside the claimed slot's payload
            // area; the slot is ours until `release`, so correct peers do not write it.
            let bytes = unsafe { std::slice::from_raw_parts(payload, len) };
            let actual = crc.compute(id, timestamp_ns, raw_len, bytes);
            if actual != expected {
                return Err(ReadError::Checksum { expected, actual });
            }
        }
        Ok((
            MessageMeta {
                id,
                timestamp_ns,
                len,
                redelivered: flags & SLOT_FLAG_REDELIVERED != 0,
            },
            payload,
        ))
    }

    /// Hands back a message of a receive run that the caller (`me`) claimed and will not
    /// read (its zero-copy batch ended in a panic before reaching it): the claim passes to
    /// owner 0, nobody, so the message is in the state a receiver killed before reading it
    /// leaves, and is delivered again the same way, flagged `redelivered` (`adopt_orphan`
    /// once the queue looks empty, or `repair_tail` a lap later). Withdrawing the claim
    /// instead would leave a published message behind the head, where no receiver looks.
    #[cold]
    pub fn hand_back(&self, token: PopToken, me: u32) {
        self.pass_to_nobody(token.index, token.pos, Role::Consumer, me);
    }

    /// Frees a claimed slot for the producer one lap later.
    #[inline]
    pub fn release(&self, token: PopToken) {
        // Release: our reads of the payload happen-before the next producer's writes.
        self.slot_at(token.index)
            .seq
            .store(seq_free(self.next_lap(token.pos)), Release);
    }

    /// The futex word consumers sleep on.
    pub fn not_empty_word(&self) -> &AtomicU32 {
        &self.header().wake.not_empty
    }

    /// The futex word producers sleep on.
    pub fn not_full_word(&self) -> &AtomicU32 {
        &self.header().wake.not_full
    }
}

/// The claim word of `role` for a position of lap `lap`, made by participant `owner`.
#[inline(always)]
fn claim_word(lap: u32, role: Role, owner: u32) -> u64 {
    Claim { lap, role, owner }.encode()
}

/// Moves `word` (the tail or the head) from `from` to `end` past a run of positions claimed
/// from `from` on, going on from wherever helpers left it (they move it past each claim they
/// see). `Err` with the value found if it carries [`TAIL_CLOSED`] (the queue was shut down);
/// `Ok` once moved, or helped all the way, or on any other value, which is corruption (the
/// run's claims are its claimer's either way).
fn move_past_run(word: &AtomicU64, from: u64, end: u64) -> Result<(), u64> {
    let mut expected = from;
    loop {
        match word.compare_exchange(expected, end, AcqRel, Acquire) {
            Ok(_) => return Ok(()),
            Err(cur) if cur & TAIL_CLOSED != 0 => return Err(cur),
            Err(cur) if cur > from && cur < end => expected = cur,
            Err(_) => return Ok(()),
        }
    }
}

/// `seq` of a slot that is free for the producer of `pos`.
///
/// Position arithmetic wraps: legitimate positions never come near 2^62, but `head` and
/// `tail` live in shared memory where a hostile or buggy process may store any value, and
/// that must make the ring misbehave (skip, report corruption), never panic on overflow.
fn seq_free(pos: u64) -> u64 {
    pos.wrapping_mul(2)
}

/// `seq` of a slot holding the published message of `pos`.
fn seq_full(pos: u64) -> u64 {
    seq_free(pos).wrapping_add(1)
}

/// Under loom an atomic is a handle that the model registers when the atomic is created, so
/// zero bytes are not a zero atomic: [`Ring::initialize`] writes fresh zero atomics instead.
/// Struct literals name every field, so a field added to the layout but not here is a build
/// error, not an unregistered atomic.
#[cfg(loom)]
mod loom_memory {
    use super::{AtomicU32, AtomicU64};
    use crate::layout::{
        Header, Identity, Participant, PositionLine, RolesLine, SlotHeader, StatsLine, WakeLine,
    };

    pub(super) trait Zero {
        fn zero() -> Self;
    }

    impl Zero for AtomicU32 {
        fn zero() -> Self {
            AtomicU32::new(0)
        }
    }

    impl Zero for AtomicU64 {
        fn zero() -> Self {
            AtomicU64::new(0)
        }
    }

    impl Zero for u8 {
        fn zero() -> Self {
            0
        }
    }

    impl<T: Zero, const N: usize> Zero for [T; N] {
        fn zero() -> Self {
            std::array::from_fn(|_| T::zero())
        }
    }

    macro_rules! zero_structs {
        ($($ty:ident { $($field:ident),* $(,)? })*) => {$(
            impl Zero for $ty {
                fn zero() -> Self {
                    $ty { $($field: Zero::zero()),* }
                }
            }
        )*};
    }

    zero_structs! {
        Identity {
            magic, layout_version, header_size, capacity, message_size, slot_stride, flags,
            segment_size, creator_pid, creator_id, created_at_ns, mode, _reserved,
        }
        PositionLine { value, in_flight, _pad }
        WakeLine { not_empty, not_full, next_participant_id, fence_required, _pad }
        RolesLine { sender, receiver, closed, _pad }
        StatsLine {
            bytes_sent, bytes_received, send_full, timeouts, checksum_failures, abandoned,
            redelivered, republished, peak_depth, corrupted, sender_sleeps, receiver_sleeps,
            _pad,
        }
        Participant { id, pid, start_time, connected_at_ns, _reserved }
        Header { identity, tail, head, wake, stats, participants, roles, _reserved }
        SlotHeader {
            seq, claim, id, timestamp_ns, len, flags, crc, _reserved0, position, _reserved,
        }
    }
}
