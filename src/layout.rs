//! The shared-memory contract: the byte layout every language and every version relies on.
//!
//! `docs/LAYOUT.md` describes the same bytes in prose; the compile-time asserts at the end of
//! this file pin every offset so the layout cannot drift with the compiler or the target.
//!
//! Every field is an atomic, even those written once at creation: another process may write
//! any byte of the segment at any time (a bug or an attack), and atomics make such accesses
//! defined behaviour on our side. Loads of immutable fields use `Relaxed` because they are
//! ordered after the `Acquire` load of `magic` that publishes them.

use crate::sync::{AtomicU32, AtomicU64};

/// "SHMQRING" read as a little-endian u64: identifies a segment as an shmq queue.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQRING");
/// Bumped whenever any byte's meaning changes; a mismatch is refused on connect.
pub const LAYOUT_VERSION: u32 = 6;
/// Size of the header; slots start here (page aligned).
#[cfg(not(loom))]
pub const HEADER_SIZE: usize = 4096;
/// Size of the per-slot header that follows each payload.
#[cfg(not(loom))]
pub const SLOT_HEADER_SIZE: usize = 64;
// Under loom (`tests/loom_ring.rs`) an atomic is a handle into the model, of another size than
// the real one: the structs keep their fields and the sizes follow them (multiples of the
// structs' alignment, so slots stay aligned). Nothing else depends on the sizes there.
#[cfg(loom)]
pub const HEADER_SIZE: usize = std::mem::size_of::<Header>();
#[cfg(loom)]
pub const SLOT_HEADER_SIZE: usize = std::mem::size_of::<SlotHeader>();
/// Alignment of slots and of payload sizes.
pub const SLOT_ALIGN: usize = 64;
/// Number of entries in the participant table (informational, see [`Participant`]).
pub const PARTICIPANT_SLOTS: usize = 64;

/// Largest capacity accepted (slots in the ring).
pub const MAX_CAPACITY: u32 = 1 << 30;
/// Largest message size accepted, in bytes.
pub const MAX_MESSAGE_SIZE: u32 = 1 << 30;

/// Header flag: every message carries a CRC32C that receivers verify.
pub const FLAG_CHECKSUM: u32 = 1;
/// Header flag: one sender and one receiver at a time (see [`RolesLine`]). The ring is then
/// driven by plain loads and stores, without read-modify-write operations on the hot path.
pub const FLAG_SPSC: u32 = 2;
/// All header flags this version understands.
pub const KNOWN_FLAGS: u32 = FLAG_CHECKSUM | FLAG_SPSC;

/// Bit of `tail` set by `shutdown`: no position at or after the current tail is ever published.
pub const TAIL_CLOSED: u64 = 1 << 63;
/// Positions occupy the low 63 bits of `head` and `tail`.
pub const POS_MASK: u64 = TAIL_CLOSED - 1;

/// Slot flag: this message was claimed by a receiver that died; it is delivered again.
pub const SLOT_FLAG_REDELIVERED: u32 = 1;

/// Bit of a futex word meaning "someone may be sleeping on this word".
pub const WAITERS_BIT: u32 = 1 << 31;
/// Bit of a futex word meaning "wakers fence for real": set by a sleeper after its heavy
/// fence, so that the sleepers after it need none (see "Fence mode" in `wait.rs`).
pub const FENCED_BIT: u32 = 1 << 30;
/// The event count of a futex word: the bits below [`FENCED_BIT`].
pub const WAKE_COUNT_MASK: u32 = FENCED_BIT - 1;

/// Bytes `[0, 128)`: identity and geometry, written once before `magic` is published.
#[repr(C, align(128))]
pub struct Identity {
    /// [`MAGIC`], stored last with `Release` when the segment is fully built.
    pub magic: AtomicU64,
    pub layout_version: AtomicU32,
    pub header_size: AtomicU32,
    pub capacity: AtomicU32,
    pub message_size: AtomicU32,
    pub slot_stride: AtomicU32,
    pub flags: AtomicU32,
    pub segment_size: AtomicU64,
    pub creator_pid: AtomicU32,
    pub creator_id: AtomicU32,
    /// Wall-clock creation time, nanoseconds since the Unix epoch.
    pub created_at_ns: AtomicU64,
    /// Permission bits the segment was created with.
    pub mode: AtomicU32,
    pub _reserved: [AtomicU32; 17],
}

/// A 128-byte line holding one hot counter, so producers and consumers do not share lines.
#[repr(C, align(128))]
pub struct PositionLine {
    pub value: AtomicU64,
    /// Single-producer/single-consumer queues only (0 otherwise). In the tail line: `p + 1`
    /// while the sender is writing position `p` (every position from the tail up to `p` is
    /// published: a batch moves the tail once, at its end), 0 between sends. In the head
    /// line: one past the last position the receiver has taken; every position from the head
    /// up to it is taken and not yet released, or released in order (a batch holds its
    /// messages until all are copied).
    pub in_flight: AtomicU64,
    pub _pad: [AtomicU64; 14],
}

/// Bytes `[384, 512)`: futex words and the participant id counter.
#[repr(C, align(128))]
pub struct WakeLine {
    /// Futex word consumers sleep on; bumped by producers that see [`WAITERS_BIT`] (bits:
    /// [`WAITERS_BIT`], [`FENCED_BIT`], the count in [`WAKE_COUNT_MASK`]).
    pub not_empty: AtomicU32,
    /// Futex word producers sleep on; bumped by consumers that see [`WAITERS_BIT`] (same bits).
    pub not_full: AtomicU32,
    /// Source of participant ids; id 0 means "nobody".
    pub next_participant_id: AtomicU32,
    /// Non-zero once a process that cannot issue `membarrier` joined: every waker (and
    /// single-producer sender) then uses a real fence. See `wait.rs`.
    pub fence_required: AtomicU32,
    pub _pad: [AtomicU32; 28],
}

/// Bytes `[2688, 2816)`: role leases of single-producer/single-consumer queues
/// ([`FLAG_SPSC`]), and the shutdown word every queue sets.
#[repr(C, align(128))]
pub struct RolesLine {
    /// Participant id holding the sending role, 0 if none. Taken by compare-and-swap, taken
    /// over only from a holder whose liveness lock is gone.
    pub sender: AtomicU32,
    /// Participant id holding the receiving role, 0 if none.
    pub receiver: AtomicU32,
    /// Non-zero once `shutdown` was called (multi-producer queues also set [`TAIL_CLOSED`]).
    pub closed: AtomicU32,
    pub _pad: [AtomicU32; 29],
}

/// Bytes `[512, 640)`: statistics counters, all monotonic.
///
/// Hot-path counts (messages, bytes) are derived from positions or flushed in batches by each
/// handle; rare events are counted directly.
#[repr(C, align(128))]
pub struct StatsLine {
    pub bytes_sent: AtomicU64,
    pub bytes_received: AtomicU64,
    pub send_full: AtomicU64,
    pub timeouts: AtomicU64,
    pub checksum_failures: AtomicU64,
    /// Positions a dead producer claimed and never published, skipped by a repairer.
    pub abandoned: AtomicU64,
    /// Messages whose receiver died mid-receive, handed to another receiver.
    pub redelivered: AtomicU64,
    /// Redelivered messages that were republished at a new position (a subset of `redelivered`).
    pub republished: AtomicU64,
    pub peak_depth: AtomicU64,
    /// Messages dropped because their header was invalid (length beyond the slot, ...).
    pub corrupted: AtomicU64,
    /// Blocking sends that polled past their spin limit and slept, once per call (since the
    /// twenty-second session; zero where older versions of the library wait).
    pub sender_sleeps: AtomicU64,
    /// Blocking receives that polled past their spin limit and slept, once per call.
    pub receiver_sleeps: AtomicU64,
    pub _pad: [AtomicU64; 4],
}

/// One entry of the participant table: who connected, for `shmq info` and stale detection.
///
/// Liveness is never decided from these pids (they lie across pid namespaces and after pid
/// reuse): it comes from the per-participant lock described in `docs/LIVENESS.md`.
#[repr(C)]
pub struct Participant {
    pub id: AtomicU32,
    pub pid: AtomicU32,
    /// Process start time in clock ticks since boot (field 22 of /proc/PID/stat).
    pub start_time: AtomicU64,
    pub connected_at_ns: AtomicU64,
    pub _reserved: AtomicU64,
}

/// The segment header: [`HEADER_SIZE`] bytes at offset 0.
#[repr(C, align(128))]
pub struct Header {
    pub identity: Identity,
    /// Next position a producer claims; bit 63 is [`TAIL_CLOSED`].
    pub tail: PositionLine,
    /// Next position a consumer claims.
    pub head: PositionLine,
    pub wake: WakeLine,
    pub stats: StatsLine,
    pub participants: [Participant; PARTICIPANT_SLOTS],
    pub roles: RolesLine,
    /// Up to [`HEADER_SIZE`], spelled as a literal because under loom that is computed from
    /// this struct (the asserts below check it otherwise).
    pub _reserved: [u8; 4096 - 640 - PARTICIPANT_SLOTS * 32 - 128],
}

impl Header {
    /// Whether `shutdown` was called: the roles line's `closed` word (every queue) or, as a
    /// multi-producer queue also records it, [`TAIL_CLOSED`] in `tail`.
    pub fn is_shut_down(&self) -> bool {
        // Acquire: pairs with the AcqRel of `Ring::close`, so an observer of the close also
        // sees the closer's earlier publications.
        self.roles.closed.load(std::sync::atomic::Ordering::Acquire) != 0
            || self.tail.value.load(std::sync::atomic::Ordering::Acquire) & TAIL_CLOSED != 0
    }
}

/// The header of each slot: the slot's last [`SLOT_HEADER_SIZE`] bytes, after its payload
/// (see [`slot_header_offset`] for why it comes last).
///
/// `seq` encodes the slot's state for position `p` (Vyukov's per-cell sequence, doubled so
/// that a capacity of one is unambiguous): `2p` = free for the producer of `p`, `2p + 1` =
/// message of position `p` published. After the consumer of `p` is done it stores
/// `2(p + capacity)`. `claim` says who owns the slot right now (see [`Claim`]).
#[repr(C, align(64))]
pub struct SlotHeader {
    pub seq: AtomicU64,
    pub claim: AtomicU64,
    pub id: AtomicU64,
    /// Nanoseconds since the Unix epoch when the message was sent.
    pub timestamp_ns: AtomicU64,
    pub len: AtomicU32,
    pub flags: AtomicU32,
    /// CRC32C of id, timestamp, len and payload (0 when checksums are off).
    pub crc: AtomicU32,
    pub _reserved0: AtomicU32,
    /// The position whose message the slot holds, stored before `seq` publishes it
    /// ([`NO_POSITION`] until the first). A `seq` that says "published for `p`" over a slot
    /// holding another position's message is not a publication: stray or hostile bytes, which
    /// would otherwise deliver an old message a second time with a valid checksum.
    pub position: AtomicU64,
    pub _reserved: [AtomicU32; 2],
}

/// [`SlotHeader::position`] of a slot that has never held a message: no position is this
/// large (positions stay below 2^63).
pub const NO_POSITION: u64 = u64::MAX;

/// Whether a claim was made by a producer (to write) or a consumer (to read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

/// Decoded `SlotHeader::claim`: lap (low 32 bits of `position / capacity`), role, and the
/// participant id of the owner. Packing them in one word lets a claim and its owner be
/// recorded by a single compare-and-swap, so a process can never hold a slot anonymously.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    pub lap: u32,
    pub role: Role,
    pub owner: u32,
}

/// Largest participant id (31 bits).
pub const MAX_OWNER: u32 = (1 << 31) - 1;

impl Claim {
    /// The claim word every slot starts with: "a consumer of the lap before lap 0".
    pub const INITIAL: u64 = Claim {
        lap: u32::MAX,
        role: Role::Consumer,
        owner: 0,
    }
    .encode();

    pub const fn encode(self) -> u64 {
        let role = match self.role {
            Role::Producer => 0,
            Role::Consumer => 1u64 << 31,
        };
        ((self.lap as u64) << 32) | role | (self.owner & MAX_OWNER) as u64
    }

    pub const fn decode(word: u64) -> Claim {
        Claim {
            lap: (word >> 32) as u32,
            role: if word & (1 << 31) != 0 {
                Role::Consumer
            } else {
                Role::Producer
            },
            owner: (word as u32) & MAX_OWNER,
        }
    }
}

/// Bytes one slot occupies: payload rounded up to [`SLOT_ALIGN`], then the header.
pub fn slot_stride(message_size: u32) -> Option<usize> {
    let payload = (message_size as usize).checked_add(SLOT_ALIGN - 1)? / SLOT_ALIGN * SLOT_ALIGN;
    payload.checked_add(SLOT_HEADER_SIZE)
}

/// Offset in the segment of the payload of slot `index`: where the slot begins.
pub fn payload_offset(index: u32, message_size: u32) -> Option<usize> {
    slot_stride(message_size)?
        .checked_mul(index as usize)?
        .checked_add(HEADER_SIZE)
}

/// Offset in the segment of the header of slot `index`: the slot's last line, right after
/// its payload.
///
/// Last, so that the line after a payload is the same slot's header, which the writer of
/// the payload owns and writes next anyway, and not the next slot's header, where the next
/// message's claim is made and receivers wait. A writer may store past the bytes it means
/// to: glibc's `memset` of fewer than 64 bytes on CPUs with AVX-512 is one 64-byte masked
/// store, and its masked-off bytes still take the lines they span from other cores. With
/// the header first, a zero-copy writer clearing the end of its message (`memset(slot +
/// len, 0, size - len)`) took the next slot's header line from the receiver polling it,
/// one more cross-core transfer per message: zero-copy round trips of 64 B took 320 ns
/// instead of 290 on the project's AMD Zen 5 VM (docs/PERFORMANCE.md).
pub fn slot_header_offset(index: u32, message_size: u32) -> Option<usize> {
    payload_offset(index, message_size)?.checked_add(slot_stride(message_size)? - SLOT_HEADER_SIZE)
}

/// Total segment size for a geometry, or `None` if it overflows.
pub fn segment_size(capacity: u32, message_size: u32) -> Option<usize> {
    slot_stride(message_size)?
        .checked_mul(capacity as usize)?
        .checked_add(HEADER_SIZE)
        .filter(|&n| n <= isize::MAX as usize)
}

// The layout is a contract: pin it.
#[cfg(not(loom))]
const _: () = {
    use std::mem::{align_of, offset_of, size_of};
    assert!(size_of::<Identity>() == 128);
    assert!(size_of::<PositionLine>() == 128);
    assert!(size_of::<WakeLine>() == 128);
    assert!(size_of::<StatsLine>() == 128);
    assert!(size_of::<Participant>() == 32);
    assert!(size_of::<Header>() == HEADER_SIZE);
    assert!(align_of::<Header>() == 128);
    assert!(offset_of!(Header, identity) == 0);
    assert!(offset_of!(Header, tail) == 128);
    assert!(offset_of!(Header, head) == 256);
    assert!(offset_of!(Header, wake) == 384);
    assert!(offset_of!(Header, stats) == 512);
    assert!(offset_of!(Header, participants) == 640);
    assert!(offset_of!(Header, roles) == 2688);
    assert!(size_of::<RolesLine>() == 128);
    assert!(offset_of!(RolesLine, sender) == 0);
    assert!(offset_of!(RolesLine, receiver) == 4);
    assert!(offset_of!(RolesLine, closed) == 8);
    assert!(offset_of!(PositionLine, in_flight) == 8);
    assert!(offset_of!(WakeLine, fence_required) == 12);
    assert!(offset_of!(Identity, magic) == 0);
    assert!(offset_of!(Identity, layout_version) == 8);
    assert!(offset_of!(Identity, header_size) == 12);
    assert!(offset_of!(Identity, capacity) == 16);
    assert!(offset_of!(Identity, message_size) == 20);
    assert!(offset_of!(Identity, slot_stride) == 24);
    assert!(offset_of!(Identity, flags) == 28);
    assert!(offset_of!(Identity, segment_size) == 32);
    assert!(offset_of!(Identity, creator_pid) == 40);
    assert!(offset_of!(Identity, creator_id) == 44);
    assert!(offset_of!(Identity, created_at_ns) == 48);
    assert!(offset_of!(Identity, mode) == 56);
    assert!(offset_of!(WakeLine, not_empty) == 0);
    assert!(offset_of!(WakeLine, not_full) == 4);
    assert!(offset_of!(WakeLine, next_participant_id) == 8);
    assert!(offset_of!(StatsLine, bytes_sent) == 0);
    assert!(offset_of!(StatsLine, corrupted) == 72);
    assert!(offset_of!(StatsLine, sender_sleeps) == 80);
    assert!(offset_of!(StatsLine, receiver_sleeps) == 88);
    assert!(size_of::<SlotHeader>() == SLOT_HEADER_SIZE);
    assert!(offset_of!(SlotHeader, seq) == 0);
    assert!(offset_of!(SlotHeader, claim) == 8);
    assert!(offset_of!(SlotHeader, id) == 16);
    assert!(offset_of!(SlotHeader, timestamp_ns) == 24);
    assert!(offset_of!(SlotHeader, len) == 32);
    assert!(offset_of!(SlotHeader, flags) == 36);
    assert!(offset_of!(SlotHeader, crc) == 40);
    assert!(offset_of!(SlotHeader, position) == 48);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_round_trips() {
        for c in [
            Claim {
                lap: 0,
                role: Role::Producer,
                owner: 1,
            },
            Claim {
                lap: u32::MAX,
                role: Role::Consumer,
                owner: MAX_OWNER,
            },
            Claim {
                lap: 7,
                role: Role::Consumer,
                owner: 12345,
            },
        ] {
            assert_eq!(Claim::decode(c.encode()), c);
        }
    }

    #[test]
    fn geometry() {
        assert_eq!(slot_stride(1), Some(128));
        assert_eq!(slot_stride(64), Some(128));
        assert_eq!(slot_stride(1024), Some(1088));
        assert_eq!(segment_size(100, 1024), Some(4096 + 100 * 1088));
        // (2^32 + 64) * (2^32 - 1) + 4096 exceeds isize::MAX: refused, not wrapped.
        assert_eq!(segment_size(u32::MAX, u32::MAX), None);
        assert_eq!(slot_stride(u32::MAX), Some(64 + (1 << 32)));
        // Each slot: its payload, then its header line.
        assert_eq!(payload_offset(0, 64), Some(4096));
        assert_eq!(slot_header_offset(0, 64), Some(4096 + 64));
        assert_eq!(payload_offset(3, 1000), Some(4096 + 3 * 1088));
        assert_eq!(slot_header_offset(3, 1000), Some(4096 + 3 * 1088 + 1024));
        assert_eq!(slot_header_offset(2, 1), Some(4096 + 2 * 128 + 64));
    }
}
