//! # shmq — a cross-process message queue in named shared memory
//!
//! Many producers and many consumers, in any processes on one machine (Rust, C, C++,
//! Python), share one bounded queue of fixed-size slots. Each message reaches exactly one
//! consumer. The ring is lock-free (no process can die holding a lock), blocking calls sleep
//! on shared futexes, every message carries a CRC32C, and a process killed at any point
//! cannot lose a message whose send returned success or wedge the queue for the others.
//!
//! ```no_run
//! use shmq::{CrossProcessQueue, Message};
//! # fn main() -> shmq::Result<()> {
//! let queue = CrossProcessQueue::create("doc_queue", 100, 1024)?;
//! queue.send(&Message::new(1, "Hello World"))?;
//!
//! let worker = CrossProcessQueue::connect("doc_queue")?;
//! while let Some(message) = worker.receive()? {
//!     println!("got: {}", String::from_utf8_lossy(&message.data));
//! }
//! CrossProcessQueue::unlink("doc_queue")?;
//! # Ok(()) }
//! ```
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod admin;
mod checksum;
mod clock;
mod counts;
pub mod crashpoint;
mod error;
mod fastdiv;
pub mod ffi;
pub mod layout;
mod pacer;
pub mod ring;
mod segment;
#[cfg(not(loom))]
mod spsc;
/// Public under `--cfg loom` only, for the model in `tests/loom_spsc.rs`; not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod spsc;
mod sync;
mod wait;
mod zerocopy;

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

pub use error::{Error, Result};
pub use ring::MessageMeta as Received;
pub use segment::{validate_name, MAX_NAME_LEN, SHM_DIR, SHM_PREFIX};

use counts::PendingCounts;
use layout::{Header, FLAG_CHECKSUM, FLAG_SPSC, HEADER_SIZE, KNOWN_FLAGS, LAYOUT_VERSION, MAGIC};
use pacer::YieldPacer;
use ring::{HeadRepair, MessageMeta, Peers, PopBlocked, PopToken, PushBlocked, Ring};
use segment::Segment;

/// Version of this library (the crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Gather sends ([`CrossProcessQueue::send_parts`]) of at most this many bytes are joined on
/// the stack and sent as one message. Part by part, the checksum's state carried across
/// parts costs about 140 instructions per message: between two processes, a two-part
/// 64-byte message went at about 0.65× the rate of one its caller joined (20.6–23.3 against
/// 27.5–36.1 M msgs/s in four rounds), and at 0.94× once joined here; at 128 bytes the two
/// ways ran alike, at 200 bytes part by part was ahead (`examples/large_send_forms.rs`,
/// docs/PERFORMANCE.md, twenty-fourth session).
const JOIN_ON_STACK: usize = 128;

/// Which implementation computes message checksums in this process, chosen once per queue
/// handle for the CPU it runs on: a 512-bit carry-less folding on x86-64 CPUs with AVX-512
/// and VPCLMULQDQ, a 256-bit one on those with VPCLMULQDQ and AVX2 only (both when built with
/// Rust 1.89 or newer), three `crc32` streams on other x86-64 CPUs with SSE4.2, the `crc32c`
/// crate elsewhere. All compute the same CRC32C, so processes on different CPUs share queues;
/// only the speed differs (from 1 KiB on, the 512-bit fold ran twice as fast as the streams,
/// and the 256-bit one up to 1.5× as fast, on the project's VMs). `shmq bench` prints it; C
/// has `shmq_checksum_implementation()`, Python `shmq.checksum_implementation()`.
pub fn checksum_implementation() -> &'static str {
    checksum::MessageCrc::for_this_cpu().name()
}

/// Default permission bits of a new queue: owner read and write only.
pub const DEFAULT_MODE: u32 = 0o600;

/// How long `connect` waits for a segment that another process is still building.
const CONNECT_WAIT: Duration = Duration::from_secs(1);
/// Longest single sleep of a blocked call; it then re-checks for dead peers to repair.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

/// [`SLEEP_SLICE`]; with the `crash-points` feature (tests only), the environment variable
/// `SHMQ_TEST_SLEEP_SLICE_MS` sets it, so that a test can turn a missed wake-up, which the
/// slice would mend 50 ms later, into a hang it detects.
fn sleep_slice() -> Duration {
    #[cfg(feature = "crash-points")]
    {
        static SLICE: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
        *SLICE.get_or_init(|| {
            std::env::var("SHMQ_TEST_SLEEP_SLICE_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .map_or(SLEEP_SLICE, Duration::from_millis)
        })
    }
    #[cfg(not(feature = "crash-points"))]
    SLEEP_SLICE
}
/// How long a blocked call polls before it sleeps, unless its handle says otherwise
/// ([`CrossProcessQueue::set_spin_limit`]). A futex sleep and wake-up costs the waker a
/// system call and the sleeper tens of microseconds on a VM, so a peer that answers within
/// this is answered at polling speed, and a stream of messages never puts its receiver to
/// sleep; a queue that stays empty or full costs this much CPU per wait, until the handle
/// stops polling (see [`CrossProcessQueue::spin_limit`]).
pub const DEFAULT_SPIN_LIMIT: Duration = Duration::from_micros(10);
/// A wait that polls longer than [`DEFAULT_SPIN_LIMIT`] makes every this-many-th attempt one
/// that may repair a dead peer's slot, as the attempts between sleeps do (the repairs are
/// rate-limited inside), so a long spin is not stuck behind a dead peer; the attempts
/// between stay on the common-case path.
const REPAIR_EVERY_POLLS: u32 = 64;
/// A waiting receive's first attempts follow each other without a `pause` between them, and
/// without a look at the clock every few: the answer to a request usually comes within them
/// (a round trip is about half a microsecond), and each `pause` (28 ns on the project's Zen 3
/// VM, 24–26 ns on its Zen 5, about 140 cycles on Intel cores since Skylake) or clock read
/// (two of 25–30 ns at the first) delays noticing it. Blocking round trips, 64 B, interleaved
/// bench rounds: without the pauses MPMC 611 -> 541 ns and SPSC 461 -> 431 ns (500 rounds),
/// then without the clock reads SPSC 411 -> 351 ns and MPMC 471 -> 461 ns (fast-state rounds
/// of 20 runs). Later attempts pause, as a spin loop should (for a sibling hyperthread, and
/// power), and so does every attempt of a waiting send: nobody awaits its result as closely,
/// and an MPMC send polling without pauses lowered blocking throughput (docs/PERFORMANCE.md).
/// A deadline is then noticed at most these attempts late (about a microsecond).
const POLLS_WITHOUT_PAUSE: u32 = 32;
/// The most `pause`s between the attempts of a send waiting for room on an SPSC queue (see
/// [`room_wait_pauses`]).
const MAX_ROOM_WAIT_PAUSES: u32 = 64;
/// Minimum interval between liveness checks (each is a system call) by one handle.
const LIVENESS_INTERVAL_NS: u64 = 1_000_000;
/// Pending byte counts are flushed to the shared statistics after this many messages.
const STATS_BATCH: u64 = 64;
/// Most messages one `recv_batch` takes: it holds their slots until all are copied.
pub const RECV_BATCH_MAX: usize = 64;

/// How many `pause`s a send waiting for room on an SPSC queue of `capacity` slots makes
/// between its attempts: a quarter of the capacity, from 1 to [`MAX_ROOM_WAIT_PAUSES`].
///
/// A send waits when the queue is full, that is, when the receiver is the slower side. Each
/// attempt of an SPSC send reads the head, whose line the receiver writes twice per message
/// (`in_flight`, then the head itself): polled after every `pause`, the line changes hands
/// about once per message, and the receiver must fetch it back for each store. On the
/// project's VM, runs of 64-byte messages that kept the queue full were the slow ones, down
/// to half the throughput of runs that did not: 4.1–7.2 M msgs/s in one spell, and 9.3–10.2 M
/// polling after every 64 `pause`s (about 1.3 µs there) instead (`examples/depth_probe.rs`,
/// docs/PERFORMANCE.md). The receiver frees a dozen slots between two looks, and the sender
/// fills them in one go. A receiver takes about 100 ns per small message, and a `pause`
/// 20–40 ns on recent x86 cores, so waiting a quarter of the capacity in `pause`s costs a few
/// percent of the time the receiver takes to drain a full queue: it does not run dry
/// meanwhile. A queue of up to seven slots polls after every `pause`, as before.
///
/// Not for MPMC queues: their sends read the slot at the head instead, which the receiver
/// writes too, but there the longer pauses changed nothing on separate cores and cost 2–3 %
/// with two or four producers and consumers.
#[inline]
fn room_wait_pauses(capacity: u64) -> u32 {
    (capacity / 4).clamp(1, u64::from(MAX_ROOM_WAIT_PAUSES)) as u32
}

/// How many attempts a wait with `pauses` `pause`s before each makes between two looks at the
/// clock, less one, as a mask: about one look per eight `pause`s, or one per attempt. The
/// count is a power of two for every `pause` count, so the wait tests `polls & mask` rather
/// than dividing at every attempt.
#[inline]
fn clock_look_mask(pauses: u32) -> u64 {
    u64::from((8 / pauses.max(1)).max(1)) - 1
}

/// A message as the original design note defines it. `id` and `timestamp` travel in the
/// slot header, so every language sees them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u64,
    pub data: Vec<u8>,
    /// Sender-supplied time; [`Message::new`] and `send_bytes` use nanoseconds since the
    /// Unix epoch (`CLOCK_REALTIME` extrapolated with the time-stamp counter, within about a
    /// microsecond of it: it may lead a clock read made right after the receive).
    pub timestamp: u64,
}

impl Message {
    /// A message stamped with the current time in nanoseconds since the Unix epoch.
    pub fn new(id: u64, data: impl Into<Vec<u8>>) -> Message {
        Message {
            id,
            data: data.into(),
            timestamp: clock::realtime_ns(),
        }
    }
}

/// A snapshot of a queue's statistics, shared by every process using it.
///
/// Message counts are derived from the ring's positions and are exact once no operation is
/// in flight; byte counts are flushed by each handle every 64 messages and whenever it goes
/// idle (on a handle that several threads use, every 64 of its first user's messages and
/// every 64 of the others'); `peak_depth` is sampled at the flushes every 64 messages, when
/// a sender waits for room, at [`CrossProcessQueue::stats`], and when a send finds the queue
/// full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Sends refused (or timed out) because the queue was full.
    pub send_full: u64,
    /// Blocking calls that reached their deadline.
    pub timeouts: u64,
    pub checksum_failures: u64,
    /// Positions claimed by producers that died before publishing (skipped).
    pub abandoned: u64,
    /// Messages handed to another receiver because theirs died mid-receive.
    pub redelivered: u64,
    /// Messages or slots dropped because their header was invalid.
    pub corrupted: u64,
    pub peak_depth: u64,
    /// Messages in the queue at the time of the snapshot.
    pub depth: u64,
    pub capacity: u64,
    /// Blocking sends that found no room while they polled (for the handle's spin limit)
    /// and slept on the queue's futex, counted once per call, by every process. Many, in a
    /// stream, mean the waits poll too briefly for the other side's pauses (see
    /// [`CrossProcessQueue::set_spin_limit`]); in a queue that is often full for long, they
    /// are the waits that cost no CPU.
    pub sender_sleeps: u64,
    /// The same for blocking receives that found no message.
    pub receiver_sleeps: u64,
}

impl Stats {
    /// Reads the counters of a header; `capacity` is the validated one.
    pub(crate) fn from_header(h: &Header, capacity: u64) -> Stats {
        // Relaxed throughout: monotonic counters and positions read as a snapshot; nothing
        // else is read on the strength of them.
        let s = &h.stats;
        let abandoned = s.abandoned.load(Relaxed);
        let republished = s.republished.load(Relaxed);
        let head = h.head.value.load(Relaxed);
        // Not below the head: a message received was sent. A single-producer queue's sender
        // publishes a message before it moves the tail past it, so one killed in between
        // (or in a batch) leaves the tail behind messages already taken, until the next
        // sender takes over; the count of sends must not fall behind the receives meanwhile.
        let tail = (h.tail.value.load(Relaxed) & layout::POS_MASK).max(head);
        Stats {
            messages_sent: tail.saturating_sub(abandoned.saturating_add(republished)),
            messages_received: head.saturating_sub(abandoned.saturating_add(republished)),
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
            sender_sleeps: s.sender_sleeps.load(Relaxed),
            receiver_sleeps: s.receiver_sleeps.load(Relaxed),
        }
    }
}

/// How [`QueueOptions::create`] treats an existing queue of the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Fail with [`Error::AlreadyExists`] (the default).
    CreateNew,
    /// Connect to it instead, if its geometry matches.
    OpenOrCreate,
    /// Unlink it and create a fresh one (processes still attached keep the old one).
    Replace,
}

/// Options for creating a queue: `CrossProcessQueue::options().mode(0o660).create(...)`.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    mode: u32,
    checksum: bool,
    open_mode: OpenMode,
    spsc: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            mode: DEFAULT_MODE,
            checksum: true,
            open_mode: OpenMode::CreateNew,
            spsc: false,
        }
    }
}

impl QueueOptions {
    /// Permission bits of the segment (default `0o600`); the umask does not apply.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Whether every message carries a CRC32C that receivers verify (default on).
    pub fn checksum(mut self, on: bool) -> Self {
        self.checksum = on;
        self
    }

    /// One sender and one receiver at a time (default off: any number of each).
    ///
    /// The first handle that sends takes the queue's *sending role* and keeps it until it is
    /// dropped; likewise for receiving. Another handle that tries gets [`Error::RoleTaken`],
    /// until the holder closes its handle or dies (its role is then taken over, and what it
    /// left half-done is repaired). In exchange, sends and receives use no atomic
    /// read-modify-write instruction and no fence: several times the throughput of the
    /// default mode between two processes (see `docs/PERFORMANCE.md`). Threads sharing one
    /// handle may still both send: they take turns inside the handle.
    pub fn single_producer_single_consumer(mut self, on: bool) -> Self {
        self.spsc = on;
        self
    }

    /// What to do when the name is taken (default [`OpenMode::CreateNew`]).
    pub fn open_mode(mut self, mode: OpenMode) -> Self {
        self.open_mode = mode;
        self
    }

    /// Creates (or, per the open mode, opens or replaces) the queue.
    pub fn create(
        &self,
        name: &str,
        max_messages: usize,
        message_size: usize,
    ) -> Result<CrossProcessQueue> {
        validate_name(name)?;
        let capacity = u32::try_from(max_messages)
            .ok()
            .filter(|&c| (1..=layout::MAX_CAPACITY).contains(&c))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "capacity {max_messages} is out of range 1..={}",
                    layout::MAX_CAPACITY
                ))
            })?;
        let msg_size = u32::try_from(message_size)
            .ok()
            .filter(|&s| (1..=layout::MAX_MESSAGE_SIZE).contains(&s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "message size {message_size} is out of range 1..={}",
                    layout::MAX_MESSAGE_SIZE
                ))
            })?;
        if self.mode & !0o777 != 0 {
            return Err(Error::InvalidArgument(format!(
                "mode {:o} has bits outside 0o777",
                self.mode
            )));
        }
        let size = layout::segment_size(capacity, msg_size).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{capacity} messages of {msg_size} bytes do not fit in the address space"
            ))
        })?;
        if self.open_mode == OpenMode::Replace {
            match segment::unlink(name) {
                Ok(()) | Err(Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let segment = match Segment::create(name, size, self.mode) {
            Ok(s) => s,
            Err(Error::AlreadyExists { .. }) if self.open_mode == OpenMode::OpenOrCreate => {
                let q = CrossProcessQueue::connect(name)?;
                if q.capacity() != max_messages
                    || q.message_size() != message_size
                    || q.is_single_producer_single_consumer() != self.spsc
                {
                    return Err(Error::InvalidArgument(format!(
                        "queue '{name}' exists with capacity {}, message size {} and \
                         single-producer/single-consumer {}, not {max_messages}, \
                         {message_size} and {}",
                        q.capacity(),
                        q.message_size(),
                        q.is_single_producer_single_consumer(),
                        self.spsc
                    )));
                }
                return Ok(q);
            }
            Err(e) => return Err(e),
        };
        let flags =
            if self.checksum { FLAG_CHECKSUM } else { 0 } | if self.spsc { FLAG_SPSC } else { 0 };
        // SAFETY: the segment is a fresh, exclusive, page-aligned mapping of `size` bytes,
        // which is segment_size(capacity, msg_size); nobody can read it as a ring before the
        // magic is published below.
        let ring =
            unsafe { Ring::initialize(segment.base(), capacity, msg_size, flags, self.mode) };
        let queue = CrossProcessQueue::attach(name, segment, ring)?;
        let identity = &queue.ring.header().identity;
        identity.creator_pid.store(segment::pid(), Relaxed);
        identity.creator_id.store(queue.me, Relaxed);
        identity
            .created_at_ns
            .store(clock::kernel_realtime_ns(), Relaxed);
        queue.ring.publish_magic();
        Ok(queue)
    }
}

/// A handle to a queue in named shared memory.
///
/// A handle may be shared by any number of threads (`&self` methods, `Send + Sync`).
/// Dropping it never removes the queue: use [`CrossProcessQueue::unlink`]. Handles do not
/// cross `fork()`: in the child, an inherited handle refuses to send or receive
/// ([`Error::InvalidArgument`]); [`reopen`](Self::reopen) it or connect a new one there.
pub struct CrossProcessQueue {
    ring: Ring,
    segment: Segment,
    name: String,
    me: u32,
    /// [`segment::fork_generation`] when the handle was opened: a child process that
    /// inherited the handle through `fork()` sees another value, and the handle refuses to
    /// send or receive there (see [`inherited`](Self::inherited)).
    fork_generation: u64,
    /// This handle's unflushed statistics per direction (multi-producer queues).
    pending_sent: PendingCounts,
    pending_received: PendingCounts,
    next_liveness_check: AtomicU64,
    next_orphan_scan: AtomicU64,
    /// Per direction (receiving, sending): whether the last yield of a blocked call gave
    /// the core to another task, so the next blocked call yields before it polls (see
    /// [`run`](Self::run)).
    yield_first: [AtomicBool; 2],
    /// How long this handle's blocking calls poll before they sleep, in nanoseconds (see
    /// [`set_spin_limit`](Self::set_spin_limit)).
    spin_limit_ns: AtomicU64,
    /// Whether [`set_spin_limit`](Self::set_spin_limit) was called: an explicit limit is
    /// used as given; the default one adapts (see [`pacer::spin_for`]).
    spin_limit_set: AtomicBool,
    /// Per direction (receiving, sending): how many blocked calls in a row ended after a
    /// long sleep (see [`pacer::spin_for`]).
    sleepy_waits: [AtomicU32; 2],
    /// The roles this handle holds on a single-producer/single-consumer queue.
    spsc: Option<Box<spsc::Spsc>>,
}

/// Liveness answers for one handle.
struct HandlePeers<'a> {
    segment: &'a Segment,
    me: u32,
}

impl Peers for HandlePeers<'_> {
    fn me(&self) -> u32 {
        self.me
    }

    fn is_alive(&self, id: u32) -> bool {
        id == self.me || self.segment.is_alive(id)
    }
}

impl std::fmt::Debug for CrossProcessQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossProcessQueue")
            .field("name", &self.name)
            .field("capacity", &self.capacity())
            .field("message_size", &self.message_size())
            .field("len", &self.len())
            .finish()
    }
}

thread_local! {
    /// Set while a binding runs one slice of a longer wait (see [`uncounted_expiry`]).
    static UNCOUNTED_EXPIRY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with its expiries (timeouts, "full" refusals) left out of the shared statistics
/// if `uncounted`, counted if not, whatever an enclosing call set: a call made from inside a
/// callback of a sliced wait counts its own expiries.
///
/// For bindings that wait in short slices to stay interruptible (Python waits 100 ms at a time
/// so Ctrl-C works): only the slice that ends the caller's real wait should count.
pub(crate) fn uncounted_expiry<R>(uncounted: bool, f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNCOUNTED_EXPIRY.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(UNCOUNTED_EXPIRY.with(|c| c.replace(uncounted)));
    f()
}

/// Whether an expiry in this thread is counted in the statistics.
fn count_expiry() -> bool {
    !UNCOUNTED_EXPIRY.with(|c| c.get())
}

mod attempt {
    /// What a single non-blocking attempt found.
    pub enum Attempt<T> {
        Done(T),
        WouldBlock,
    }
}
#[cfg(not(loom))]
use attempt::Attempt;
/// Public under `--cfg loom` only, for the model in `tests/loom_spsc.rs` (what
/// [`spsc::Spsc`]'s claims return); not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub use attempt::Attempt;
use spsc::LockWait;

impl CrossProcessQueue {
    /// Creates a new queue of `max_messages` slots of `message_size` bytes each, with the
    /// default options (mode 0600, checksums on). Fails with [`Error::AlreadyExists`] if the
    /// name is taken.
    pub fn create(name: &str, max_messages: usize, message_size: usize) -> Result<Self> {
        QueueOptions::default().create(name, max_messages, message_size)
    }

    /// Options for creating a queue (mode, checksums, open-or-create, replace).
    pub fn options() -> QueueOptions {
        QueueOptions::default()
    }

    /// Connects to an existing queue, validating everything in its header first.
    pub fn connect(name: &str) -> Result<Self> {
        validate_name(name)?;
        let segment = Segment::open(name, HEADER_SIZE, CONNECT_WAIT)?;
        Self::join(name, segment)
    }

    /// Opens another handle on this handle's queue: the same segment, even if its name was
    /// unlinked or now names another queue, as a participant of its own (its own id,
    /// liveness and roles). For a child process after `fork()`, whose inherited handle
    /// carries the parent's identity and refuses to send or receive: `reopen` works on it,
    /// and the child then drops the inherited one. Linux: through `/proc/self/fd`.
    /// The new handle keeps this one's spin limit if it was set
    /// ([`set_spin_limit`](Self::set_spin_limit)).
    pub fn reopen(&self) -> Result<Self> {
        let queue = Self::join(&self.name, self.segment.reopen(&self.name)?)?;
        // Relaxed: a setting; it orders nothing.
        if self.spin_limit_set.load(Relaxed) {
            queue.set_spin_limit(self.spin_limit());
        }
        Ok(queue)
    }

    /// Validates an opened segment and joins it as a new participant.
    fn join(name: &str, segment: Segment) -> Result<Self> {
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page aligned; a Header is all
        // atomics, valid for any bit pattern.
        let header = unsafe { &*(segment.base() as *const Header) };
        let deadline = Instant::now() + CONNECT_WAIT;
        // Acquire: pairs with the creator's Release store of the magic, making every header
        // field and slot it initialised visible.
        let mut magic = header.identity.magic.load(Acquire);
        while magic == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
            magic = header.identity.magic.load(Acquire);
        }
        let corrupt = |what: String| Error::CorruptedData(format!("queue '{name}': {what}"));
        if magic == 0 {
            return Err(corrupt(
                "segment was never finished (its creator died while building it?); \
                 remove it or create with replace"
                    .into(),
            ));
        }
        if magic != MAGIC {
            return Err(corrupt(format!("not an shmq queue (magic {magic:#018x})")));
        }
        let id = &header.identity;
        let version = id.layout_version.load(Relaxed);
        if version != LAYOUT_VERSION {
            return Err(Error::IncompatibleVersion {
                found: version,
                expected: LAYOUT_VERSION,
            });
        }
        let header_size = id.header_size.load(Relaxed);
        let capacity = id.capacity.load(Relaxed);
        let message_size = id.message_size.load(Relaxed);
        let stride = id.slot_stride.load(Relaxed);
        let flags = id.flags.load(Relaxed);
        let recorded_size = id.segment_size.load(Relaxed);
        if header_size as usize != HEADER_SIZE {
            return Err(corrupt(format!(
                "header size {header_size}, expected {HEADER_SIZE}"
            )));
        }
        if !(1..=layout::MAX_CAPACITY).contains(&capacity) {
            return Err(corrupt(format!("capacity {capacity} out of range")));
        }
        if !(1..=layout::MAX_MESSAGE_SIZE).contains(&message_size) {
            return Err(corrupt(format!("message size {message_size} out of range")));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(corrupt(format!("unknown flags {flags:#x}")));
        }
        if Some(stride as usize) != layout::slot_stride(message_size) {
            return Err(corrupt(format!(
                "slot stride {stride} does not match message size"
            )));
        }
        let size = layout::segment_size(capacity, message_size)
            .ok_or_else(|| corrupt("geometry overflows".into()))?;
        if recorded_size != size as u64 {
            return Err(corrupt(format!(
                "recorded size {recorded_size} does not match geometry ({size})"
            )));
        }
        if segment.size() < size {
            return Err(corrupt(format!(
                "segment is {} bytes, its header needs {size} (truncated?)",
                segment.size()
            )));
        }
        // SAFETY: geometry validated above; the mapping covers `size` bytes, page aligned,
        // and lives in `segment`, which the queue owns alongside the ring.
        let ring = unsafe { Ring::from_raw(segment.base(), capacity, message_size, flags) };
        CrossProcessQueue::attach(name, segment, ring)
    }

    fn attach(name: &str, segment: Segment, ring: Ring) -> Result<Self> {
        if !segment::register_light_fences() {
            // This process cannot be reached by a peer's `membarrier`: from now on every
            // process on this queue uses real fences (see `wait.rs`).
            // SeqCst: visible before this handle's first wait relies on it.
            ring.header().wake.fence_required.store(1, SeqCst);
        }
        let me = segment
            .register_participant(&ring.header().wake.next_participant_id)
            .map_err(|source| Error::AccessFailed {
                name: name.to_string(),
                source,
            })?;
        let entry = &ring.header().participants[me as usize % layout::PARTICIPANT_SLOTS];
        entry.id.store(0, Relaxed);
        entry.pid.store(segment::pid(), Relaxed);
        entry
            .start_time
            .store(segment::process_start_time(), Relaxed);
        entry
            .connected_at_ns
            .store(clock::kernel_realtime_ns(), Relaxed);
        entry.id.store(me, Relaxed);
        let spsc = ring.is_spsc().then(Box::<spsc::Spsc>::default);
        Ok(CrossProcessQueue {
            ring,
            segment,
            name: name.to_string(),
            me,
            fork_generation: segment::fork_generation(),
            pending_sent: PendingCounts::default(),
            pending_received: PendingCounts::default(),
            next_liveness_check: AtomicU64::new(0),
            yield_first: Default::default(),
            spin_limit_ns: AtomicU64::new(DEFAULT_SPIN_LIMIT.as_nanos() as u64),
            spin_limit_set: AtomicBool::new(false),
            sleepy_waits: Default::default(),
            next_orphan_scan: AtomicU64::new(0),
            spsc,
        })
    }

    /// Removes the queue's name. Processes that have it open keep working on it; new
    /// `connect`s fail with `NotFound`.
    pub fn unlink(name: &str) -> Result<()> {
        segment::unlink(name)
    }

    /// Names of every shmq queue on this machine that this process may read (objects
    /// `/dev/shm/shmq.*` whose header carries the shmq magic). Joins none of them.
    pub fn list() -> Result<Vec<String>> {
        let names = segment::candidate_names().map_err(|source| Error::AccessFailed {
            name: SHM_DIR.to_string(),
            source,
        })?;
        Ok(names
            .into_iter()
            .filter(|n| {
                Segment::open_read_only(n, HEADER_SIZE)
                    .map(|s| {
                        // SAFETY: mapping of at least HEADER_SIZE bytes; all-atomic header.
                        let h = unsafe { &*(s.base() as *const Header) };
                        h.identity.magic.load(Acquire) == MAGIC
                    })
                    .unwrap_or(false)
            })
            .collect())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of slots (the `max_messages` given at creation).
    pub fn capacity(&self) -> usize {
        self.ring.capacity() as usize
    }

    /// Largest message, in bytes.
    pub fn message_size(&self) -> usize {
        self.ring.message_size()
    }

    /// Messages in the queue now (including ones being written or read).
    pub fn len(&self) -> usize {
        self.ring.depth() as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        self.len() >= self.capacity()
    }

    pub fn checksum_enabled(&self) -> bool {
        self.ring.checksum_enabled()
    }

    /// Whether the queue allows one sender and one receiver at a time (see
    /// [`QueueOptions::single_producer_single_consumer`]).
    pub fn is_single_producer_single_consumer(&self) -> bool {
        self.ring.is_spsc()
    }

    /// Whether every send and receive on this queue issues a real memory fence, because a
    /// process that cannot call `membarrier` (an old kernel, a seccomp filter) joined it:
    /// correct, and slower (see [`QueueInfo::real_fences`]). Set for the queue's life.
    pub fn real_fences(&self) -> bool {
        // Relaxed: informational; the waits that rely on the flag read it themselves.
        self.ring.header().wake.fence_required.load(Relaxed) != 0
    }

    /// This handle's participant id (what `shmq info` lists).
    pub fn participant_id(&self) -> u32 {
        self.me
    }

    /// How long a blocking call on this handle polls for the other side before it sleeps in
    /// the kernel: [`DEFAULT_SPIN_LIMIT`] (10 µs) unless
    /// [`set_spin_limit`](Self::set_spin_limit) changed it. Left at the default, the limit
    /// adapts: a handle whose waits (in one direction) keep ending after long sleeps (200 µs
    /// or more, eight in a row, as an idle worker's waits for its next task do) stops
    /// polling, and polls again once an answer reaches a wait while it polls (every
    /// sixteenth wait polls to find out); and a thread that has just woken a sleeping peer
    /// on the other side (a receive that freed room for a sleeping sender, a send that
    /// reached a sleeping receiver) polls, in its next wait on the queue, until 100 µs after
    /// that wake-up, the time the peer takes to come back (see the README's "Blocking"). A
    /// limit that was set is used as given.
    pub fn spin_limit(&self) -> Duration {
        Duration::from_nanos(self.spin_limit_ns())
    }

    /// [`spin_limit`](Self::spin_limit) as the nanoseconds it is kept in (the C API's unit).
    pub(crate) fn spin_limit_ns(&self) -> u64 {
        // Relaxed: a setting read once per wait; it orders nothing.
        self.spin_limit_ns.load(Relaxed)
    }

    /// Sets how long blocking calls on this handle (in every thread, from their next wait
    /// on) poll for the other side before they sleep on the queue's futex. A wait ends as
    /// soon as its message or room shows, so this is a bound on the CPU a wait burns, not a
    /// delay:
    ///
    /// * **Longer** (say 100 µs to a few ms) when the other side usually answers within that
    ///   time, as in request/reply with a peer that works for tens of microseconds per
    ///   message (or a Python peer): the answer is seen at polling speed, and neither side
    ///   pays a wake-up (a system call for the waker, and tens of microseconds for the
    ///   sleeper on a VM). The price: up to this much of a core per wait.
    /// * **`Duration::ZERO`**: sleep after one look. No CPU spent waiting; every wait that
    ///   sleeps pays the kernel's wake-up latency.
    /// * **`Duration::MAX`** (anything from `u64::MAX` nanoseconds, 584 years, up): never
    ///   sleep; busy polling for as long as the call's timeout allows.
    ///
    /// Polling still yields the core to a peer that shares it (every microsecond, then,
    /// past [`DEFAULT_SPIN_LIMIT`] and while nobody else wants the core, less often, down to
    /// every 64 µs), and a wait polling past [`DEFAULT_SPIN_LIMIT`] still repairs what dead
    /// peers left (at the usual rate), as a sleeping one does. The setting is this handle's:
    /// other handles, in this process or others, keep theirs, and [`reopen`](Self::reopen)
    /// copies it. An explicit limit, even the default value, does not adapt (see
    /// [`spin_limit`](Self::spin_limit)).
    pub fn set_spin_limit(&self, limit: Duration) {
        let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed (both): a setting read once per wait; it orders nothing.
        self.spin_limit_ns.store(nanos, Relaxed);
        self.spin_limit_set.store(true, Relaxed);
    }

    /// Whether [`shutdown`](Self::shutdown) was called by anyone.
    pub fn is_shutdown(&self) -> bool {
        self.ring.is_closed()
    }

    /// Closes the queue for sending, for every process: sends fail with `Closed`; receivers
    /// get what is left, then `Closed` (or `None` from the blocking forms). Idempotent.
    pub fn shutdown(&self) -> Result<()> {
        self.ring.close();
        wait::wake_everyone(self.ring.not_empty_word());
        wait::wake_everyone(self.ring.not_full_word());
        Ok(())
    }

    fn peers(&self) -> HandlePeers<'_> {
        HandlePeers {
            segment: &self.segment,
            me: self.me,
        }
    }

    fn now_ns(&self) -> u64 {
        // Coarse: these deadlines only limit how often repairs are looked for (at most one
        // tick late), and a receive polling an empty queue asks on every call.
        clock::coarse_monotonic_ns()
    }

    /// Rate limiter for liveness checks (system calls) on the would-block paths.
    fn liveness_due(&self) -> bool {
        let now = self.now_ns();
        let next = self.next_liveness_check.load(Relaxed);
        if now < next {
            return false;
        }
        self.next_liveness_check
            .compare_exchange(next, now + LIVENESS_INTERVAL_NS, Relaxed, Relaxed)
            .is_ok()
    }

    /// Whether a repair of the receive side is due (without claiming it, unlike
    /// [`liveness_due`](Self::liveness_due) and [`orphan_scan_due`](Self::orphan_scan_due)).
    fn receive_repair_due(&self) -> bool {
        let now = self.now_ns();
        // Relaxed: rate limiters only.
        now >= self.next_liveness_check.load(Relaxed) || now >= self.next_orphan_scan.load(Relaxed)
    }

    /// Rate limiter for the full-ring scan for orphaned messages (O(capacity)).
    fn orphan_scan_due(&self) -> bool {
        let now = self.now_ns();
        let next = self.next_orphan_scan.load(Relaxed);
        if now < next {
            return false;
        }
        let interval = 100_000_000 + self.ring.capacity() * 1_000;
        self.next_orphan_scan
            .compare_exchange(next, now + interval, Relaxed, Relaxed)
            .is_ok()
    }

    // ----- statistics ----------------------------------------------------------------------

    /// Adds messages to this handle's pending statistics (without a locked instruction in
    /// the thread that uses the handle: `counts.rs`), a flush every [`STATS_BATCH`]
    /// messages.
    #[inline]
    fn count(&self, pending: &PendingCounts, messages: u64, bytes: u64) {
        if self.spsc.is_some() {
            // Counted under the role's lock by `commit_push` / `commit_pop`.
            return;
        }
        if bytes >= counts::PACKED_BYTES_LIMIT {
            // Too large to pack (a huge batch): count it directly.
            let stats = &self.ring.header().stats;
            let total = if std::ptr::eq(pending, &self.pending_sent) {
                &stats.bytes_sent
            } else {
                &stats.bytes_received
            };
            // Relaxed: statistics order nothing (see `flush_stats`).
            total.fetch_add(bytes, Relaxed);
            return;
        }
        if pending.count(messages, bytes) {
            self.flush_stats(true);
        }
    }

    /// Moves this handle's pending byte counts into the shared statistics, and, if
    /// `sample_depth`, the queue's depth into `peak_depth` (which reads both ends of the ring,
    /// and so takes the line the other side writes for every message).
    fn flush_stats(&self, sample_depth: bool) {
        if self.inherited() {
            return; // the counts are the parent's, which flushes them itself
        }
        if let Some(spsc) = &self.spsc {
            spsc.flush_stats(&self.ring, None, sample_depth);
            return;
        }
        if !self.pending_sent.any() && !self.pending_received.any() {
            return;
        }
        // Relaxed throughout: statistics are monotonic counters read as a snapshot; they
        // order nothing else.
        let stats = &self.ring.header().stats;
        let sent = self.pending_sent.take();
        if sent != 0 {
            stats.bytes_sent.fetch_add(sent, Relaxed);
        }
        let received = self.pending_received.take();
        if received != 0 {
            stats.bytes_received.fetch_add(received, Relaxed);
        }
        if sample_depth {
            stats.peak_depth.fetch_max(self.ring.depth(), Relaxed);
        }
    }

    /// Flushes the pending counts of one direction before a wait (on a single-producer
    /// queue, without touching the other role's lock). A sender waits on a full queue, whose
    /// depth is sampled; a receiver waits on an empty one, whose depth (about 0) is not: a
    /// receiver polling with `receive_into` flushes after nearly every message, and reading
    /// the sender's line there cost it a line transfer per message (and the sender one too).
    fn flush_side(&self, producer: bool) {
        match &self.spsc {
            Some(spsc) => spsc.flush_stats(&self.ring, Some(producer), producer),
            None => self.flush_stats(producer),
        }
    }

    /// Whether this process is a child that inherited the handle through `fork()`. The
    /// handle then carries its opener's identity (participant id, liveness lock, roles):
    /// used here, two processes would act as one, and a crash of either would go unrepaired
    /// while the other lives. So it sends and receives nothing (`InvalidArgument`), and
    /// dropping it only unmaps the segment.
    #[inline(always)]
    pub(crate) fn inherited(&self) -> bool {
        segment::forked_since(self.fork_generation)
    }

    /// On a single-producer queue, marks that the holder of the sending (`sender`) or
    /// receiving side is about to run a caller's callback, which may take any time: another
    /// thread's call that may not wait then does not wait for the side
    /// ([`LockWait::NotForCallbacks`]). Called with the side held; the mark goes when the
    /// side is unlocked (a batch marks once, for all its callbacks).
    #[inline(always)]
    pub(crate) fn entering_callbacks(&self, sender: bool) {
        if let Some(spsc) = &self.spsc {
            spsc.in_callback(sender, true);
        }
    }

    pub(crate) fn inherited_error(&self) -> Error {
        Error::InvalidArgument(format!(
            "queue {:?}: this handle was opened by the parent of this process and inherited \
             through fork(); it carries the parent's identity (participant id, liveness, \
             roles): reopen it (reopen / shmq_reopen) or connect a new handle in the child",
            self.name
        ))
    }

    /// A snapshot of the queue's statistics (flushing this handle's pending counts first).
    pub fn stats(&self) -> Stats {
        self.flush_stats(true);
        Stats::from_header(self.ring.header(), self.ring.capacity())
    }

    // ----- the engine: one attempt, and waiting between attempts --------------------------

    /// Runs `attempt` until it succeeds or fails, polling for the handle's spin limit, then
    /// sleeping on `word` in slices. `timeout`: `None` waits without limit, `Some(ZERO)`
    /// makes one attempt that may repair, after one that does not unless `looked`.
    ///
    /// Called after an attempt in the common case failed ([`claim_push_fast`] or
    /// [`claim_pop_fast`]); `looked` says it answered "would block" (rather than "something
    /// else"). A waiting send starts with a pause rather than another attempt at once (a
    /// waiting receive looks again at once: see [`POLLS_WITHOUT_PAUSE`]); a call that
    /// does not wait makes the general attempt (which also takes a single-producer side's
    /// lock by its slow path when this thread does not own it), the one that does not repair
    /// only if the common-case attempt could not say: repeating its look costs a polling
    /// receiver time between messages.
    ///
    /// [`claim_push_fast`]: Self::claim_push_fast
    /// [`claim_pop_fast`]: Self::claim_pop_fast
    #[inline]
    fn run<T>(
        &self,
        timeout: Option<Duration>,
        producer: bool,
        looked: bool,
        mut attempt: impl FnMut(bool, LockWait) -> Result<Attempt<T>>,
    ) -> Result<Attempt<T>> {
        if timeout == Some(Duration::ZERO) {
            if !looked {
                if let Attempt::Done(v) = attempt(false, LockWait::NotForCallbacks)? {
                    return Ok(Attempt::Done(v));
                }
            }
            self.flush_side(producer);
            return attempt(true, LockWait::NotForCallbacks);
        }
        // Poll (a peer on another core usually answers within microseconds), with a pause
        // between attempts (a receive's first few go without: see `POLLS_WITHOUT_PAUSE`),
        // yielding now and then for a peer on this core.
        //
        // The clock is read every few attempts only (and not in a receive's first
        // `POLLS_WITHOUT_PAUSE`), and not at all by a wait without a deadline that ends
        // within its first few attempts: a receiver that keeps up with a
        // stream finds the queue empty for a moment before most messages, and a clock read
        // costs as much as an attempt.
        //
        // A peer on this core cannot answer while we poll: there, each microsecond polled is
        // lost. So when a yield keeps us off the core for a while (another task ran: likely
        // the peer, which then filled or drained the queue), the next wait yields at once;
        // when a yield comes straight back (nobody else wanted the core), polling costs
        // nobody and the next wait polls first again. `YieldPacer` spaces the yields.
        // Relaxed: a hint for this handle's own scheduling; it orders nothing.
        let yield_first = &self.yield_first[usize::from(producer)];
        let peer_on_this_core = yield_first.load(Relaxed);
        let mut pacer = YieldPacer::new(peer_on_this_core);
        let mut spin_start = (timeout.is_some() || pacer.every_attempt()).then(Instant::now);
        let deadline = timeout.zip(spin_start).map(|(t, start)| start + t);
        // Another thread of this handle inside a call on a single-producer side: waited for
        // within the deadline (see `spsc::Side::lock`).
        let lock_wait = deadline.map_or(LockWait::Forever, LockWait::Until);
        // With the default limit, a handle whose recent waits all ended after long sleeps
        // does not poll, but for a probe now and then (see `pacer::spin_for`), and a thread
        // that has just woken a peer polls until it is back (see `polling_limit`). Relaxed:
        // hints for this handle's own waits; they order nothing.
        let sleepy = &self.sleepy_waits[usize::from(producer)];
        let adaptive = !self.spin_limit_set.load(Relaxed);
        let in_a_row = if adaptive { sleepy.load(Relaxed) } else { 0 };
        let spin_limit = self.polling_limit(producer, adaptive, in_a_row, pacer::PEER_WAKE_COVER);
        // Records how this wait ended, given when it first went to sleep (if it did): after
        // a long sleep (one more in a row), or not.
        let ended = |slept_at: Option<Instant>| {
            if adaptive && slept_at.is_some_and(|t| t.elapsed() >= pacer::LONG_SLEEP) {
                sleepy.store(in_a_row.wrapping_add(1), Relaxed);
            } else if in_a_row != 0 {
                sleepy.store(0, Relaxed);
            }
        };
        // Set once the wait has polled for `DEFAULT_SPIN_LIMIT`: see `REPAIR_EVERY_POLLS`.
        let mut repairing = false;
        let mut polls = 0u64;
        // A waiting send on an SPSC queue pauses longer between attempts (see
        // `room_wait_pauses`), and so looks at the clock after fewer of them: about every eight
        // `pause`s, as a receive does. Not once a yield has let another task run on this core
        // (in this wait or the handle's last): the receiver is then likely here, waiting for
        // the core, not for us to stop reading its line, and the yields must come on time.
        let (mut pauses, mut clock_mask) = if producer && self.spsc.is_some() && !peer_on_this_core
        {
            let pauses = room_wait_pauses(self.ring.capacity());
            (pauses, clock_look_mask(pauses))
        } else {
            // A constant: a receive's wait divides nothing.
            (1, clock_look_mask(1))
        };
        while !spin_limit.is_zero() {
            polls += 1;
            let eager = !producer && polls <= u64::from(POLLS_WITHOUT_PAUSE);
            if !eager {
                for _ in 0..pauses {
                    std::hint::spin_loop();
                }
            }
            let repair = repairing && polls % u64::from(REPAIR_EVERY_POLLS) == 0;
            if let Attempt::Done(v) = attempt(repair, lock_wait)? {
                ended(None);
                return Ok(Attempt::Done(v));
            }
            if (!eager && polls & clock_mask == 0) || pacer.every_attempt() {
                let start = *spin_start.get_or_insert_with(Instant::now);
                let spun = start.elapsed();
                if spun >= spin_limit || deadline.is_some_and(|d| start + spun >= d) {
                    break;
                }
                if !repairing && spun >= DEFAULT_SPIN_LIMIT {
                    // A long spin: publish this handle's pending statistics now, as a wait
                    // about to sleep does, and repair now and then from here on.
                    repairing = true;
                    self.flush_side(producer);
                }
                if pacer.due(spun) {
                    std::thread::yield_now();
                    let switched = pacer.yielded(spun, start.elapsed());
                    yield_first.store(switched, Relaxed);
                    if switched {
                        pauses = 1;
                        clock_mask = clock_look_mask(1);
                    }
                }
            }
        }
        self.flush_side(producer);
        self.sleep_until(producer, deadline, lock_wait, attempt, ended)
    }

    /// How long a wait (a send's if `producer`) polls before it sleeps: the handle's spin
    /// limit, or with the default one (`adaptive`), what [`pacer::spin_for`] makes of it
    /// after `in_a_row` long sleeps, raised to what is left of `cover` after this thread's
    /// wake-up of a sleeper on the other side, if that was less than `cover` ago (see
    /// [`pacer::PEER_WAKE_COVER`]; the wake-up is then forgotten).
    fn polling_limit(
        &self,
        producer: bool,
        adaptive: bool,
        in_a_row: u32,
        cover: Duration,
    ) -> Duration {
        if !adaptive {
            return self.spin_limit();
        }
        let limit = pacer::spin_for(self.spin_limit(), in_a_row);
        // A send waits for room, which a receiver makes: it looks for a wake-up of the
        // receivers (its own publication reached a sleeping receiver), and a receive for one
        // of the senders.
        let peers_word = if producer {
            self.ring.not_empty_word()
        } else {
            self.ring.not_full_word()
        };
        match wait::woke_peer(peers_word, cover) {
            Some(left) => limit.max(left),
            None => limit,
        }
    }

    /// The rest of [`run`](Self::run) once polling is over: announce, look, sleep, until the
    /// attempt succeeds or fails, or `deadline` passes. Out of line: a sleep costs
    /// microseconds anyway, and the polling loop stays compact without it. `ended` records
    /// how the wait ended, given when it first slept (see `pacer::spin_for`).
    #[inline(never)]
    fn sleep_until<T>(
        &self,
        producer: bool,
        deadline: Option<Instant>,
        lock_wait: LockWait,
        mut attempt: impl FnMut(bool, LockWait) -> Result<Attempt<T>>,
        ended: impl Fn(Option<Instant>),
    ) -> Result<Attempt<T>> {
        let word = if producer {
            self.ring.not_full_word()
        } else {
            self.ring.not_empty_word()
        };
        // When this call first slept: it may have been woken for a message (or a slot) and
        // so must pass the wake on if it leaves one behind (see `pass_wake_on`).
        let mut slept_at: Option<Instant> = None;
        let mut sleeper = wait::Sleeper::new(word, &self.ring.header().wake.fence_required);
        loop {
            let may_sleep = sleeper.before_look();
            let result = attempt(true, lock_wait);
            if !matches!(result, Ok(Attempt::WouldBlock)) {
                // Done or failed: a woken call passes on what it leaves behind.
                if slept_at.is_some() {
                    self.pass_wake_on(producer);
                }
                if result.is_ok() {
                    ended(slept_at);
                }
                return result;
            }
            if !may_sleep {
                // Woken, it looked before announcing itself again, and found nothing.
                continue;
            }
            let slice = match deadline {
                None => sleep_slice(),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        if count_expiry() {
                            self.ring.header().stats.timeouts.fetch_add(1, Relaxed);
                        }
                        ended(slept_at);
                        return Err(Error::Timeout);
                    }
                    (d - now).min(sleep_slice())
                }
            };
            if slept_at.is_none() {
                slept_at = Some(Instant::now());
                let stats = &self.ring.header().stats;
                let sleeps = if producer {
                    &stats.sender_sleeps
                } else {
                    &stats.receiver_sleeps
                };
                // Relaxed: a monotonic counter, read as a snapshot.
                sleeps.fetch_add(1, Relaxed);
            }
            sleeper.sleep(Some(slice));
            crashpoint::hit("wait_woken");
        }
    }

    /// Called by a wait that slept and is about to return: a waker wakes only as many
    /// sleepers as it published messages (or freed slots), and a wake-up can be spent on a
    /// call that takes nothing, so a woken call that leaves something behind wakes as many
    /// sleepers as there are messages (or free slots) left. It took a message and more are
    /// queued (one published behind a slower producer's position, whose own wake-up found
    /// nothing it could take yet), or it failed without taking one (a buffer too small).
    /// Costs a load of the positions and of the futex word.
    #[cold]
    fn pass_wake_on(&self, producer: bool) {
        let depth = self.ring.depth();
        let header = self.ring.header();
        if producer {
            let free = self.ring.capacity() - depth;
            if free > 0 {
                wait::wake_senders(header, wait::waiters(free as usize));
            }
        } else if depth > 0 {
            wait::wake_receivers(header, wait::waiters(depth as usize));
        }
    }

    // ----- sending ---------------------------------------------------------------------------

    /// One attempt to claim the slot at the tail, repairing a dead receiver's slot if
    /// `repair` and the queue is full; `wait` bounds a wait for another thread sharing a
    /// single-producer side.
    #[inline]
    fn try_claim_push(&self, repair: bool, wait: LockWait) -> Result<Attempt<ring::PushToken>> {
        if self.inherited() {
            return Err(self.inherited_error());
        }
        if !repair {
            if let Some(attempt) = self.claim_push_fast() {
                return Ok(attempt);
            }
        }
        let peers = self.peers();
        if let Some(spsc) = &self.spsc {
            return spsc.try_claim_push(&self.ring, &peers, &self.name, wait);
        }
        match self.ring.claim_push(&peers) {
            Ok(token) => Ok(Attempt::Done(token)),
            Err(PushBlocked::Closed) => Err(Error::Closed),
            Err(PushBlocked::Full) => {
                if repair && self.liveness_due() && self.ring.repair_tail(&peers) {
                    wait::wake_receivers(self.ring.header(), 1);
                    return self.try_claim_push(false, wait);
                }
                Ok(Attempt::WouldBlock)
            }
        }
    }

    /// Writes, publishes and counts a message in a claimed slot; returns its id.
    #[inline]
    fn complete_send(
        &self,
        token: ring::PushToken,
        id: Option<u64>,
        timestamp: u64,
        data: &[u8],
    ) -> u64 {
        crashpoint::hit("push_tail_moved");
        let id = id.unwrap_or(token.position());
        self.ring.write(&token, id, timestamp, data);
        self.finish_send(token, id, data.len())
    }

    /// The end of a copying send once the slot is written: publish, wake, count; returns
    /// `id`.
    #[inline(always)]
    fn finish_send(&self, token: ring::PushToken, id: u64, len: usize) -> u64 {
        crashpoint::hit("push_written");
        self.commit_push(token, len);
        wait::wake_receivers(self.ring.header(), 1);
        self.count(&self.pending_sent, 1, len as u64);
        id
    }

    /// An attempt to claim the slot at the tail, without repairs, in the common case only:
    /// `Done` (claimed) or `WouldBlock` (full), as [`try_claim_push`](Self::try_claim_push)
    /// would say, but without its layers. `None` for anything else (shut down; on a
    /// single-producer queue, a thread that does not own the side's fast path, a role not yet
    /// taken, hostile bytes), having changed nothing: the general attempt then finds out.
    ///
    /// Every send begins with it, and so does every attempt that does not repair: through
    /// the general path alone, one thread's 64-byte send + receive pair on a single-producer
    /// queue took 1.2–1.8× as long (`examples/hotpath`, docs/PERFORMANCE.md). Always
    /// inlined, as is [`claim_pop_fast`](Self::claim_pop_fast): left to the compiler, the
    /// zero-copy calls made both calls of their own (+15 instructions per send or receive,
    /// callgrind), which the copying ones did not.
    #[inline(always)]
    fn claim_push_fast(&self) -> Option<Attempt<ring::PushToken>> {
        if self.inherited() {
            return None;
        }
        match &self.spsc {
            Some(spsc) => spsc.try_claim_push_fast(&self.ring),
            None => match self.ring.claim_push(&self.peers()) {
                Ok(token) => Some(Attempt::Done(token)),
                Err(PushBlocked::Full) => Some(Attempt::WouldBlock),
                Err(PushBlocked::Closed) => None,
            },
        }
    }

    /// An attempt to claim the message at the head for a buffer of `buf_len` bytes, without
    /// repairs, in the common case only (see [`claim_push_fast`](Self::claim_push_fast)):
    /// `Done` (claimed) or `WouldBlock` (nothing to take yet, not shut down). `None` for
    /// anything else, having changed nothing.
    #[inline(always)]
    fn claim_pop_fast(&self, buf_len: usize) -> Option<Attempt<PopToken>> {
        if self.inherited() {
            return None;
        }
        match &self.spsc {
            Some(spsc) => spsc.try_claim_pop_fast(&self.ring, buf_len),
            // Nothing published at the head: `claim_pop` would read the producers' tail line
            // only to say so (see `try_claim_pop`).
            None if self.ring.head_unpublished() => {
                (!self.ring.close_requested()).then_some(Attempt::WouldBlock)
            }
            None => match self.ring.claim_pop(&self.peers(), buf_len) {
                Ok(token) => Some(Attempt::Done(token)),
                Err(PopBlocked::Empty | PopBlocked::InProgress) => Some(Attempt::WouldBlock),
                Err(PopBlocked::Closed | PopBlocked::BufferTooSmall(_)) => None,
            },
        }
    }

    /// Publishes a claimed slot (and, on a single-producer queue, moves the tail and lets
    /// the next send of this handle in).
    #[inline]
    fn commit_push(&self, token: ring::PushToken, bytes: usize) {
        let pos = token.position();
        self.ring.publish(token);
        if let Some(spsc) = &self.spsc {
            spsc.published(&self.ring, pos, bytes as u64);
        }
    }

    /// [`commit_push`](Self::commit_push) of a slot whose message no receiver accepts.
    fn commit_push_poisoned(&self, token: ring::PushToken) {
        let pos = token.position();
        self.ring.publish_poisoned(token);
        if let Some(spsc) = &self.spsc {
            spsc.published(&self.ring, pos, 0);
        }
    }

    /// Releases a claimed message's slot: frees it for the next lap, or on a
    /// single-consumer queue moves the head past it (which is what frees it there).
    #[inline]
    fn commit_pop(&self, token: PopToken, bytes: usize) {
        match &self.spsc {
            Some(spsc) => spsc.released(&self.ring, token.position(), bytes as u64),
            None => self.ring.release(token),
        }
    }

    // ----- batches: one claim after another ---------------------------------------------------
    //
    // A multi-producer ring claims each message of a batch like a single one. A
    // single-producer/single-consumer side stays locked from the batch's first claim to
    // its end instead, and moves the tail (sending) or the head (receiving) once: see
    // `spsc.rs`. A receive batch releases its slots only once all are copied.

    /// Publishes a claimed slot of a send batch. (Always inlined, as is `claim_next_push`:
    /// with both send batches in one program the compiler made them calls, 10 % more
    /// instructions per message.)
    #[inline(always)]
    fn commit_push_in_batch(&self, token: ring::PushToken, bytes: usize) {
        if self.spsc.is_some() {
            self.ring.publish(token);
        } else {
            self.commit_push(token, bytes);
        }
    }

    /// Claims the slot after `prev` (just published by [`commit_push_in_batch`]) without
    /// waiting, and on a multi-producer queue up to `max - 1` more after it as a run
    /// ([`Ring::claim_push_run`]: one tail move for all); returns the first token and how
    /// many were claimed. `None` ends the batch.
    ///
    /// [`commit_push_in_batch`]: Self::commit_push_in_batch
    /// [`Ring::claim_push_run`]: ring::Ring::claim_push_run
    #[inline(always)]
    fn claim_next_push(&self, prev: ring::Cursor, max: usize) -> Option<(ring::PushToken, usize)> {
        match &self.spsc {
            Some(spsc) => spsc
                .claim_next_push(&self.ring, prev)
                .map(|token| (token, 1)),
            // Full, or shut down meanwhile: what was sent stays sent. The ring's claim
            // itself, not `try_claim_push`'s layers around it: they only map its answers.
            None => self.ring.claim_push_run(&self.peers(), max).ok(),
        }
    }

    /// Ends a send batch of `messages` (`bytes` in all) whose last position is `last`.
    #[inline]
    fn finish_push_batch(&self, last: u64, messages: usize, bytes: u64) {
        if let Some(spsc) = &self.spsc {
            spsc.published_batch(&self.ring, last, messages as u64, bytes);
        }
    }

    /// Releases the claimed messages of a receive batch, `bytes` in all, once every one of
    /// them is copied (on a single-consumer queue the head then moves past them, and the
    /// side is unlocked).
    fn release_batch(&self, held: &mut [Option<PopToken>], bytes: u64) {
        let tokens = held.iter_mut().filter_map(Option::take);
        match &self.spsc {
            Some(spsc) => {
                if let Some(last) = tokens.last() {
                    spsc.released_batch(&self.ring, last.position(), held.len() as u64, bytes);
                }
            }
            None => tokens.for_each(|token| self.ring.release(token)),
        }
    }

    /// Releases one message of a receive batch that goes on (the zero-copy batch, which frees
    /// each slot as its reader returns): on a single-consumer queue the head moves past it
    /// and the side stays locked until [`finish_pop_batch`](Self::finish_pop_batch).
    #[inline(always)]
    fn release_in_batch(&self, token: PopToken) {
        match &self.spsc {
            Some(spsc) => spsc.released_in_batch(&self.ring, token.position()),
            None => self.ring.release(token),
        }
    }

    /// Ends a receive batch released one message at a time, `last` the position of the
    /// last: on a single-consumer queue counts its `messages` (`bytes` in all) and unlocks.
    #[inline]
    fn finish_pop_batch(&self, last: u64, messages: u64, bytes: u64) {
        if let Some(spsc) = &self.spsc {
            spsc.released_batch(&self.ring, last, messages, bytes);
        }
    }

    /// Claims the message after `prev` (claimed earlier in the batch, and still held), if one
    /// is there for a buffer of `buf_len` bytes, and on a multi-consumer queue up to `max - 1`
    /// more after it as a run ([`Ring::claim_pop_run`]: one head move for all); returns the
    /// first token and how many were claimed. `None` ends the batch.
    ///
    /// [`Ring::claim_pop_run`]: ring::Ring::claim_pop_run
    // Always inlined, as `claim_next_push`: once `claim_pop_run` was always inlined into it,
    // the compiler made this a call from `recv_batch`, +39 instructions per message of an
    // SPSC receive batch (callgrind).
    #[inline(always)]
    fn claim_next_pop(
        &self,
        prev: ring::Cursor,
        buf_len: usize,
        max: usize,
    ) -> Option<(PopToken, usize)> {
        match &self.spsc {
            Some(spsc) => spsc
                .claim_next_pop(&self.ring, prev, buf_len)
                .map(|token| (token, 1)),
            // The ring's claim itself, as in `claim_next_push`: no look at the head first
            // (the message after one just taken is usually there), and whatever else it
            // finds (empty, in progress, closed, too large) ends the batch for the next plain
            // receive to deal with.
            None => self.ring.claim_pop_run(&self.peers(), buf_len, max).ok(),
        }
    }

    /// The general send: `timeout` `Some(ZERO)` = do not wait (fails with `QueueFull`),
    /// `None` = wait without limit, otherwise wait at most that long (fails with `Timeout`).
    /// Returns the message id (`id`, or the message's position in the queue if `None`).
    #[inline]
    pub fn send_with(
        &self,
        id: Option<u64>,
        timestamp: u64,
        data: &[u8],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        if data.len() > self.message_size() {
            return Err(Error::MessageTooLarge {
                len: data.len(),
                max: self.message_size(),
            });
        }
        let token = self.claim_for_send(timeout)?;
        Ok(self.complete_send(token, id, timestamp, data))
    }

    /// [`send_with`](Self::send_with) of a message given in parts (a gather send, as
    /// `writev` is for a file): the message is the parts joined, copied into the slot one
    /// after another (and checksummed as they are copied), with no buffer to assemble it in
    /// first. A header and a body kept apart, for instance, travel as one message. Fails
    /// with [`Error::MessageTooLarge`] before claiming anything if the parts add up to more
    /// than the message size.
    #[inline]
    pub fn send_parts_with(
        &self,
        id: Option<u64>,
        timestamp: u64,
        parts: &[&[u8]],
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.send_gathered(id, timestamp, (parts.len(), &|i| parts[i]), timeout)
    }

    /// [`send_parts_with`](Self::send_parts_with) of `count` parts given by `part(i)` (the
    /// C API's arrays, without a slice of slices to build).
    #[inline]
    pub(crate) fn send_gathered(
        &self,
        id: Option<u64>,
        timestamp: u64,
        (count, part): ring::Parts<'_>,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        let max = self.message_size();
        // Saturating: lengths of real slices cannot overflow, but the error must not either.
        let len = (0..count).fold(0usize, |sum, i| sum.saturating_add(part(i).len()));
        if len > max {
            return Err(Error::MessageTooLarge { len, max });
        }
        if len <= JOIN_ON_STACK {
            // Small messages are joined first and sent as one: below this size the checksum
            // carried from part to part cost more than the copy (see `JOIN_ON_STACK`).
            // Each part cut to the room left, as `Ring::write_parts` does (C arrays asked for
            // twice).
            let mut joined = [0u8; JOIN_ON_STACK];
            let mut at = 0;
            for part in ring::cut_parts((count, part), len) {
                joined[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
            return self.send_with(id, timestamp, &joined[..len], timeout);
        }
        let token = self.claim_for_send(timeout)?;
        crashpoint::hit("push_tail_moved");
        let id = id.unwrap_or(token.position());
        self.ring
            .write_parts(&token, id, timestamp, (count, part), len);
        Ok(self.finish_send(token, id, len))
    }

    /// [`send_bytes`](Self::send_bytes) of a message given in parts (see
    /// [`send_parts_with`](Self::send_parts_with)): fails at once with `QueueFull`; returns
    /// the id, the message's position in the queue.
    #[inline]
    pub fn send_parts(&self, parts: &[&[u8]]) -> Result<u64> {
        self.send_parts_with(None, clock::realtime_ns(), parts, Some(Duration::ZERO))
    }

    /// [`send_parts`](Self::send_parts) that waits for room: `None` without limit.
    #[inline]
    pub fn send_parts_timeout(&self, parts: &[&[u8]], timeout: Option<Duration>) -> Result<u64> {
        self.send_parts_with(None, clock::realtime_ns(), parts, timeout)
    }

    /// Claims a slot to send into, waiting per `timeout` as [`send_with`](Self::send_with)
    /// says, with its errors and statistics: the common-case attempt, then the engine.
    ///
    /// The engine is a call away ([`claim_for_send_waiting`](Self::claim_for_send_waiting)),
    /// so that a call finding room at once does not pay for the wait loop it did not enter:
    /// inlined with a timeout not known to be zero, that loop's frame and saved registers
    /// made a blocking send + receive pair 131 instructions dearer than a non-blocking one
    /// (`examples/hotpath block` against `copy`).
    #[inline]
    fn claim_for_send(&self, timeout: Option<Duration>) -> Result<ring::PushToken> {
        match self.claim_push_fast() {
            Some(Attempt::Done(token)) => Ok(token),
            fast => self.claim_for_send_waiting(timeout, fast.is_some()),
        }
    }

    /// The rest of [`claim_for_send`](Self::claim_for_send) once its common-case attempt did
    /// not claim (`looked`: it answered "full").
    #[inline(never)]
    fn claim_for_send_waiting(
        &self,
        timeout: Option<Duration>,
        looked: bool,
    ) -> Result<ring::PushToken> {
        match self.run(timeout, true, looked, |repair, wait| {
            self.try_claim_push(repair, wait)
        }) {
            Ok(Attempt::Done(token)) => Ok(token),
            Ok(Attempt::WouldBlock) => {
                let stats = &self.ring.header().stats;
                if count_expiry() {
                    stats.send_full.fetch_add(1, Relaxed);
                }
                // The depth as it is (a single-producer side held by another thread's
                // callback also ends here, short of full).
                stats.peak_depth.fetch_max(self.ring.depth(), Relaxed);
                Err(Error::QueueFull)
            }
            Err(Error::Timeout) => {
                // One slice of a binding's longer wait is not counted (see `count_expiry`).
                if count_expiry() {
                    self.ring.header().stats.send_full.fetch_add(1, Relaxed);
                }
                Err(Error::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends a message; fails at once with [`Error::QueueFull`] if there is no room.
    pub fn send(&self, message: &Message) -> Result<()> {
        self.send_with(
            Some(message.id),
            message.timestamp,
            &message.data,
            Some(Duration::ZERO),
        )
        .map(drop)
    }

    /// Sends a message, waiting for room as long as it takes.
    pub fn send_blocking(&self, message: &Message) -> Result<()> {
        self.send_with(Some(message.id), message.timestamp, &message.data, None)
            .map(drop)
    }

    /// Sends a message, waiting at most `timeout` for room ([`Error::Timeout`] after).
    pub fn send_timeout(&self, message: &Message, timeout: Duration) -> Result<()> {
        self.send_with(
            Some(message.id),
            message.timestamp,
            &message.data,
            Some(timeout),
        )
        .map(drop)
    }

    /// Sends bytes without building a [`Message`] (no allocation); fails at once with
    /// `QueueFull`. The id is the message's position in the queue; it is returned.
    #[inline]
    pub fn send_bytes(&self, data: &[u8]) -> Result<u64> {
        self.send_with(None, clock::realtime_ns(), data, Some(Duration::ZERO))
    }

    /// [`send_bytes`](Self::send_bytes) that waits for room: `None` without limit.
    #[inline]
    pub fn send_bytes_timeout(&self, data: &[u8], timeout: Option<Duration>) -> Result<u64> {
        self.send_with(None, clock::realtime_ns(), data, timeout)
    }

    // ----- receiving -------------------------------------------------------------------------

    #[inline]
    fn finish_read(&self, token: PopToken, buf: &mut [u8]) -> Result<MessageMeta> {
        crashpoint::hit("pop_head_moved");
        let result = self.ring.read(&token, buf);
        crashpoint::hit("pop_read");
        self.commit_pop(token, result.as_ref().map_or(0, |m| m.len));
        wait::wake_senders(self.ring.header(), 1);
        match result {
            Ok(meta) => {
                self.count(&self.pending_received, 1, meta.len as u64);
                Ok(meta)
            }
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// One attempt to claim the message at the head for a buffer of `buf_len` bytes,
    /// repairing a dead producer's position or adopting a dead receiver's message if `repair`;
    /// `wait` as for [`try_claim_push`](Self::try_claim_push).
    #[inline]
    fn try_claim_pop(
        &self,
        buf_len: usize,
        repair: bool,
        wait: LockWait,
    ) -> Result<Attempt<PopToken>> {
        if self.inherited() {
            return Err(self.inherited_error());
        }
        if !repair {
            if let Some(attempt) = self.claim_pop_fast(buf_len) {
                return Ok(attempt);
            }
        }
        let peers = self.peers();
        if let Some(spsc) = &self.spsc {
            return spsc.try_claim_pop(&self.ring, &peers, &self.name, buf_len, repair, wait);
        }
        // Nothing published at the head, not shut down, and no repair to make (none due, and
        // the head not a position given up, which is skipped at once): that is all
        // `claim_pop` would find out too, after reading the producers' tail line.
        if self.ring.head_unpublished()
            && !self.ring.close_requested()
            && !(repair && (self.receive_repair_due() || self.ring.head_given_up()))
        {
            return Ok(Attempt::WouldBlock);
        }
        loop {
            match self.ring.claim_pop(&peers, buf_len) {
                Ok(token) => return Ok(Attempt::Done(token)),
                Err(PopBlocked::BufferTooSmall(needed)) => {
                    return Err(Error::BufferTooSmall {
                        needed,
                        got: buf_len,
                    })
                }
                Err(PopBlocked::InProgress) => {
                    // A position given up by a live producer is skipped at once; a claim of
                    // a producer that may be dead waits for the rate-limited liveness check.
                    if repair && (self.ring.head_given_up() || self.liveness_due()) {
                        match self.ring.repair_head(&peers) {
                            HeadRepair::Message(token) => return Ok(Attempt::Done(token)),
                            HeadRepair::Skipped => {
                                wait::wake_senders(self.ring.header(), 1);
                                continue;
                            }
                            HeadRepair::Nothing => {}
                        }
                    }
                    return Ok(Attempt::WouldBlock);
                }
                Err(PopBlocked::Empty) => {
                    if repair {
                        // Nothing is in progress at the head, so no producer there needs a
                        // liveness check: count this as the check. Only `InProgress` takes it
                        // otherwise, so on a queue that stays empty it would stay due, and
                        // every empty receive would miss the shortcut above (reading the
                        // producers' tail line each time).
                        let _ = self.liveness_due();
                        if self.orphan_scan_due() {
                            if let Some(token) = self.adopt(&peers, buf_len)? {
                                return Ok(Attempt::Done(token));
                            }
                        }
                    }
                    return Ok(Attempt::WouldBlock);
                }
                Err(PopBlocked::Closed) => {
                    // Before saying "closed", deliver any message a dead receiver left.
                    if let Some(token) = self.adopt(&peers, buf_len)? {
                        return Ok(Attempt::Done(token));
                    }
                    return Err(Error::Closed);
                }
            }
        }
    }

    fn adopt(&self, peers: &HandlePeers<'_>, buf_len: usize) -> Result<Option<PopToken>> {
        self.ring
            .adopt_orphan(peers, buf_len)
            .map_err(|needed| Error::BufferTooSmall {
                needed,
                got: buf_len,
            })
    }

    /// The general receive into a caller's buffer. `timeout` as in [`send_with`]
    /// (`Some(ZERO)`: fails with `QueueEmpty`; elapsed: `Timeout`). After shutdown, once
    /// drained: `Closed`. A buffer too small fails with `BufferTooSmall` and dequeues nothing.
    ///
    /// [`send_with`]: Self::send_with
    #[inline]
    pub fn recv_with(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Received> {
        let token = self.claim_for_recv(buf.len(), timeout)?;
        self.finish_read(token, buf)
    }

    /// Waits (per `timeout`, as [`recv_with`](Self::recv_with) says) for a message that fits
    /// in `buf_len` bytes and claims it: the common-case attempt, then the engine.
    ///
    /// The engine is a call away, as for [`claim_for_send`](Self::claim_for_send).
    #[inline]
    fn claim_for_recv(&self, buf_len: usize, timeout: Option<Duration>) -> Result<PopToken> {
        match self.claim_pop_fast(buf_len) {
            Some(Attempt::Done(token)) => Ok(token),
            fast => self.claim_for_recv_waiting(buf_len, timeout, fast.is_some()),
        }
    }

    /// The rest of [`claim_for_recv`](Self::claim_for_recv) once its common-case attempt did
    /// not claim (`looked`: it answered "empty").
    #[inline(never)]
    fn claim_for_recv_waiting(
        &self,
        buf_len: usize,
        timeout: Option<Duration>,
        looked: bool,
    ) -> Result<PopToken> {
        match self.run(timeout, false, looked, |repair, wait| {
            self.try_claim_pop(buf_len, repair, wait)
        })? {
            Attempt::Done(token) => Ok(token),
            Attempt::WouldBlock => Err(Error::QueueEmpty),
        }
    }

    /// Receives into `buf` without waiting and without allocating: `Ok(None)` when empty,
    /// `Err(Closed)` when shut down and drained.
    #[inline]
    pub fn receive_into(&self, buf: &mut [u8]) -> Result<Option<Received>> {
        match self.recv_with(buf, Some(Duration::ZERO)) {
            Ok(meta) => Ok(Some(meta)),
            Err(Error::QueueEmpty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives into `buf`, waiting (`None`: without limit): `Ok(None)` once shut down and
    /// drained, `Err(Timeout)` at the deadline.
    #[inline]
    pub fn recv_into(&self, buf: &mut [u8], timeout: Option<Duration>) -> Result<Option<Received>> {
        match self.recv_with(buf, timeout) {
            Ok(meta) => Ok(Some(meta)),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn recv_message(&self, timeout: Option<Duration>) -> Result<Message> {
        let mut buf = vec![0u8; self.message_size()];
        let meta = self.recv_with(&mut buf, timeout)?;
        buf.truncate(meta.len);
        Ok(Message {
            id: meta.id,
            data: buf,
            timestamp: meta.timestamp_ns,
        })
    }

    /// Receives a message without waiting: `Ok(None)` when the queue is empty (the note's
    /// semantics), `Err(Closed)` when it was shut down and is drained.
    pub fn receive(&self) -> Result<Option<Message>> {
        match self.recv_message(Some(Duration::ZERO)) {
            Ok(m) => Ok(Some(m)),
            Err(Error::QueueEmpty) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives a message, waiting as long as it takes; `Ok(None)` once the queue is shut
    /// down and drained, so `while let Some(m) = q.recv()? { ... }` ends cleanly.
    pub fn recv(&self) -> Result<Option<Message>> {
        match self.recv_message(None) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Receives a message, waiting at most `timeout`: `Err(Timeout)` then; `Ok(None)` once
    /// shut down and drained.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Option<Message>> {
        match self.recv_message(Some(timeout)) {
            Ok(m) => Ok(Some(m)),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A blocking iterator over messages that ends when the queue is shut down and drained.
    pub fn iter(&self) -> impl Iterator<Item = Result<Message>> + '_ {
        std::iter::from_fn(move || self.recv().transpose())
    }

    // ----- typed messages ---------------------------------------------------------------------

    /// Encodes `value` with postcard and sends it without waiting (`QueueFull` when full).
    #[cfg(feature = "serde")]
    pub fn send_value<T: serde::Serialize>(&self, value: &T) -> Result<()> {
        self.send_value_timeout(value, Some(Duration::ZERO))
    }

    /// Encodes `value` with postcard and sends it, waiting for room (`None`: without limit).
    #[cfg(feature = "serde")]
    pub fn send_value_timeout<T: serde::Serialize>(
        &self,
        value: &T,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let bytes =
            postcard::to_stdvec(value).map_err(|e| Error::SerializationFailed(e.to_string()))?;
        self.send_with(None, clock::realtime_ns(), &bytes, timeout)
            .map(drop)
    }

    /// Receives and decodes a postcard-encoded value, waiting as long as it takes;
    /// `Ok(None)` once shut down and drained.
    #[cfg(feature = "serde")]
    pub fn recv_value<T: serde::de::DeserializeOwned>(&self) -> Result<Option<T>> {
        self.recv_value_timeout(None)
    }

    /// [`recv_value`](Self::recv_value) with a deadline (`Err(Timeout)` after it).
    #[cfg(feature = "serde")]
    pub fn recv_value_timeout<T: serde::de::DeserializeOwned>(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<T>> {
        match self.recv_message(timeout) {
            Ok(m) => postcard::from_bytes(&m.data)
                .map(Some)
                .map_err(|e| Error::DeserializationFailed(e.to_string())),
            Err(Error::Closed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Details for `shmq info`: the segment's identity and recently connected processes.
    pub fn info(&self) -> QueueInfo {
        let peers = self.peers();
        QueueInfo::from_segment(&self.name, &self.segment, |id| peers.is_alive(id))
    }
}

/// Identity and participants of a queue, for operators.
#[derive(Clone, Debug)]
pub struct QueueInfo {
    pub name: String,
    pub layout_version: u32,
    pub capacity: usize,
    pub message_size: usize,
    pub slot_stride: usize,
    pub segment_size: usize,
    pub checksum: bool,
    pub mode: u32,
    pub owner_uid: u32,
    pub creator_pid: u32,
    pub created_at_ns: u64,
    pub shutdown: bool,
    /// One sender and one receiver at a time.
    pub single_producer_single_consumer: bool,
    /// Single-producer/single-consumer queues: who holds the sending role (`None` when
    /// nobody does, and on multi-producer queues).
    pub sender: Option<RoleHolder>,
    /// Single-producer/single-consumer queues: who holds the receiving role.
    pub receiver: Option<RoleHolder>,
    /// The most recent connections (up to 64), live or not, excluding the caller's own
    /// liveness which is always reported alive.
    pub participants: Vec<ParticipantInfo>,
    /// A process that cannot call `membarrier` (an old kernel, a seccomp filter, a sandbox
    /// without it) has joined the queue: from then on every send and receive on it, in every
    /// process, issues a real memory fence where it would otherwise issue none (see
    /// "Asymmetric fences" in `src/wait.rs`). Correct, and slower. It stays so for the
    /// queue's life.
    pub real_fences: bool,
}

impl QueueInfo {
    /// Reads identity and participants from a segment whose header was validated.
    pub(crate) fn from_segment(
        name: &str,
        segment: &Segment,
        is_alive: impl Fn(u32) -> bool,
    ) -> QueueInfo {
        // SAFETY: the caller validated the segment, whose mapping covers the header.
        let h = unsafe { &*(segment.base() as *const Header) };
        // Relaxed throughout: identity fields are written once before the magic (loaded with
        // Acquire when the segment was validated); the participant table is informational.
        let id = &h.identity;
        let (owner_uid, mode) = segment.owner_and_mode().unwrap_or((u32::MAX, 0));
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
                    alive: is_alive(pid_id),
                })
            })
            .collect();
        participants.sort_by_key(|p| p.id);
        let spsc = id.flags.load(Relaxed) & FLAG_SPSC != 0;
        let holder = |word: &sync::AtomicU32| {
            // Relaxed: informational, like the participant table.
            let id = word.load(Relaxed);
            (spsc && id != 0).then(|| RoleHolder {
                id,
                pid: participants.iter().find(|p| p.id == id).map(|p| p.pid),
                alive: is_alive(id),
            })
        };
        let (sender, receiver) = (holder(&h.roles.sender), holder(&h.roles.receiver));
        QueueInfo {
            name: name.to_string(),
            layout_version: id.layout_version.load(Relaxed),
            capacity: id.capacity.load(Relaxed) as usize,
            message_size: id.message_size.load(Relaxed) as usize,
            slot_stride: id.slot_stride.load(Relaxed) as usize,
            segment_size: segment
                .file_size()
                .unwrap_or(id.segment_size.load(Relaxed) as usize),
            checksum: id.flags.load(Relaxed) & FLAG_CHECKSUM != 0,
            mode,
            owner_uid,
            creator_pid: id.creator_pid.load(Relaxed),
            created_at_ns: id.created_at_ns.load(Relaxed),
            shutdown: h.is_shut_down(),
            single_producer_single_consumer: spsc,
            sender,
            receiver,
            participants,
            // Relaxed: informational, like the participant table (set once, never cleared).
            real_fences: h.wake.fence_required.load(Relaxed) != 0,
        }
    }
}

/// The holder of a single-producer/single-consumer queue's sending or receiving role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleHolder {
    /// Participant id ([`CrossProcessQueue::participant_id`] of the holding handle).
    pub id: u32,
    /// Its process id, if it is still in the participant table (the 64 most recent
    /// connections).
    pub pid: Option<u32>,
    /// Whether its handle is still open. A role whose holder is gone is taken over by the
    /// next handle that sends (or receives).
    pub alive: bool,
}

/// One entry of the participant table.
#[derive(Clone, Debug)]
pub struct ParticipantInfo {
    pub id: u32,
    pub pid: u32,
    pub start_time: u64,
    pub connected_at_ns: u64,
    /// Whether its liveness lock is held (the process has the queue open).
    pub alive: bool,
}

impl Drop for CrossProcessQueue {
    fn drop(&mut self) {
        if self.inherited() {
            // A copy of the parent's handle: its roles and counts are the parent's. Only
            // this process's mapping and descriptor go (closing a descriptor of the shared
            // open file description leaves the parent's liveness lock held).
            return;
        }
        self.flush_stats(true);
        if let Some(spsc) = &mut self.spsc {
            spsc.release_roles(&self.ring, self.me);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A wait after this thread woke a sleeping peer (not under loom: nobody sleeps on loom's
    /// atomics).
    #[cfg(not(loom))]
    mod peer_wake {
        use super::*;

        /// Unlinks a test's queue when dropped, also when the test fails.
        struct Unlink(String);

        impl Drop for Unlink {
            fn drop(&mut self) {
                let _ = CrossProcessQueue::unlink(&self.0);
            }
        }

        /// Fills `q` (capacity 1), puts a thread to sleep on its "not full" word, as a blocked
        /// send sleeps, and receives: the receive frees the slot and wakes it.
        fn wake_a_sleeping_sender(q: &CrossProcessQueue) {
            let (word, fence_required) =
                (q.ring.not_full_word(), &q.ring.header().wake.fence_required);
            q.send_bytes(b"full").unwrap();
            std::thread::scope(|scope| {
                let (tid_tx, tid_rx) = std::sync::mpsc::channel();
                scope.spawn(move || {
                    wait::tests::announce_and_sleep(word, fence_required, None, &tid_tx);
                });
                wait::tests::wait_until_asleep(&tid_rx.recv().unwrap().to_string_lossy());
                let mut buf = [0u8; 8];
                assert_eq!(q.receive_into(&mut buf).unwrap().map(|m| m.len), Some(4));
            });
        }

        #[test]
        fn a_thread_that_woke_a_sleeping_peer_polls_longer_in_its_next_wait_the_other_way() {
            let name = format!("shmq_unit_peer_wake_{}", std::process::id());
            let _unlink = Unlink(name.clone());
            let q = CrossProcessQueue::create(&name, 1, 8).unwrap();
            let cover = Duration::from_secs(3600);
            let default = pacer::spin_for(q.spin_limit(), 0);
            wake_a_sleeping_sender(&q);
            // A send's wait is not the one to extend; a receive's is, once.
            assert_eq!(q.polling_limit(true, true, 0, cover), default);
            let limit = q.polling_limit(false, true, 0, cover);
            assert!(limit > default && limit <= cover, "{limit:?}");
            assert_eq!(q.polling_limit(false, true, 0, cover), default, "spent");
            // A limit that was set is used as given.
            wake_a_sleeping_sender(&q);
            q.set_spin_limit(Duration::ZERO);
            assert_eq!(q.polling_limit(false, false, 0, cover), Duration::ZERO);
        }
    }

    #[test]
    fn a_send_waiting_for_room_pauses_a_quarter_of_the_capacity_at_most_64_times() {
        for capacity in [0, 1, 4, 7] {
            assert_eq!(room_wait_pauses(capacity), 1, "capacity {capacity}");
        }
        assert_eq!(room_wait_pauses(8), 2);
        assert_eq!(room_wait_pauses(100), 25);
        assert_eq!(room_wait_pauses(256), MAX_ROOM_WAIT_PAUSES);
        assert_eq!(
            room_wait_pauses(u64::from(layout::MAX_CAPACITY)),
            MAX_ROOM_WAIT_PAUSES
        );
    }

    #[test]
    fn a_wait_looks_at_the_clock_at_least_every_eight_pauses_or_every_attempt() {
        assert_eq!(
            clock_look_mask(1),
            7,
            "a receive's eight attempts, as before"
        );
        for pauses in 1..=MAX_ROOM_WAIT_PAUSES {
            let attempts = clock_look_mask(pauses) + 1;
            assert!(attempts.is_power_of_two(), "{pauses} pauses: {attempts}");
            assert!(
                attempts * u64::from(pauses) <= u64::from(pauses.max(8)),
                "{pauses} pauses: a look every {attempts} attempts"
            );
        }
    }
}
