//! Side-by-side benchmark: shmq against the hardware limit and against the transports a user
//! would pick instead (POSIX mq, a Unix SEQPACKET socket, a pipe, and, when they can be built
//! here, Boost.Interprocess message_queue and iceoryx2 publish-subscribe, the latter copying
//! and zero-copy, beside shmq's own zero-copy forms), in one run.
//!
//! ```text
//! cargo bench --bench compare                      # full run (a few minutes)
//! SHMQ_BENCH_QUICK=1 cargo bench --bench compare   # smoke run (< 60 s)
//! SHMQ_BENCH_ONLY=tput64 cargo bench --bench compare   # only workloads whose key contains it
//! SHMQ_BENCH_ICEORYX2=0 cargo bench --bench compare    # without iceoryx2 (no cargo build)
//! ```
//!
//! iceoryx2 is compiled by the first run that asks for it (`benches/iceoryx2_peer`, a minute
//! or two once; it needs crates.io then) and skipped, saying why, if it cannot be.
//!
//! Every workload runs in separate processes (`fork`), each pinned to a core with
//! `sched_setaffinity`. Every message has every byte written by the sender (an 8-byte
//! sequence number, then a fill byte derived from it) and every byte checked by the receiver;
//! a single mismatch fails the run. Queue depth is 256 wherever the transport lets us set it.
//! Each figure is the median of 5 runs (3 for the message-size sweep). The runs are rounds:
//! each round measures every transport of a workload once, in turn, and a ratio to the limit
//! is the median of the ratios within each round, so that the VM's speed drifting between
//! rounds (2x and more here) moves a figure and its limit together.
//!
//! Besides the limit (a cache-line ping-pong; an SPSC spin ring), two references that are not
//! peers: the *limit ring*'s round trip (64 bytes and an index), and the *claim ring*
//! ([`ClaimRing`]), the bare protocol of shmq's default queue (a compare-and-swap on the
//! slot's claim word and one on the shared index, each side), so that shmq's distance from
//! the hardware splits into what its protocol costs and what its implementation adds.
//!
//! Results are printed as a table with ratios to the limit and to the best peer, and written
//! to `target/shmq-bench/` (or `$SHMQ_BENCH_OUT`) as `results.csv` and `rtt_samples.csv` for
//! `benches/plot.py`, and `rounds.csv` with every round's figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use shmq::{CrossProcessQueue, Error};

#[path = "../examples/support/affinity.rs"]
mod affinity;
use affinity::{cpus_online, pin_to, unpin};

// ----- counting allocator: proves "no allocation per message" --------------------------------

struct Counting;
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ----- configuration ------------------------------------------------------------------------

const DEPTH: usize = 256;
const BATCH: usize = 32;
const MAX_ROLES: usize = 8;

struct Config {
    quick: bool,
    runs: usize,
    sweep_runs: usize,
    /// Bytes moved per throughput run (message count = bytes / size, within bounds).
    bytes_per_run: u64,
    rtt_iters: u64,
    /// A run stops early (with what it has measured) after this long: on a loaded machine a
    /// spinning transport can take a whole scheduler slice per message.
    run_cap: Duration,
    only: Option<String>,
    out_dir: String,
}

impl Config {
    fn from_env() -> Config {
        let quick = std::env::var("SHMQ_BENCH_QUICK").is_ok_and(|v| v != "0");
        Config {
            quick,
            runs: 5,
            sweep_runs: if quick { 1 } else { 3 },
            bytes_per_run: if quick { 6 << 20 } else { 128 << 20 },
            rtt_iters: if quick { 3_000 } else { 20_000 },
            run_cap: Duration::from_millis(if quick { 600 } else { 5_000 }),
            only: std::env::var("SHMQ_BENCH_ONLY").ok(),
            out_dir: std::env::var("SHMQ_BENCH_OUT")
                .unwrap_or_else(|_| "target/shmq-bench".to_string()),
        }
    }

    fn messages(&self, size: usize) -> u64 {
        (self.bytes_per_run / size as u64)
            .clamp(5_000, if self.quick { 200_000 } else { 2_000_000 })
    }

    fn wants(&self, key: &str) -> bool {
        self.only.as_deref().is_none_or(|o| key.contains(o))
    }

    /// `SHMQ_BENCH_TRANSPORT="shmq batch 32"` runs only the transport with that label (used to
    /// count one transport's system calls with `strace -c -f`); several labels separated by
    /// `|` run those (`"hardware limit|shmq polling"`: a ratio to the limit within each round,
    /// for a quick comparison of two builds).
    fn wants_kind(&self, kind: Kind) -> bool {
        std::env::var("SHMQ_BENCH_TRANSPORT")
            .map_or(true, |t| t.split('|').any(|label| label == kind.label()))
    }
}

// ----- processes, cores, clocks -------------------------------------------------------------

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes.
fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// The time of `clock` in nanoseconds.
#[inline]
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec we own.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(target_arch = "x86_64")]
fn ticks() -> u64 {
    // SAFETY: rdtsc has no preconditions on x86_64.
    unsafe { core::arch::x86_64::_rdtsc() }
}
#[cfg(not(target_arch = "x86_64"))]
fn ticks() -> u64 {
    mono_ns()
}

/// Anonymous shared memory that survives `fork` (for control words and the limit ring).
fn shared_alloc(bytes: usize) -> *mut u8 {
    // SAFETY: a fresh anonymous mapping; we check the result.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap failed");
    p as *mut u8
}

/// Control block shared by the parent and the children of one run.
#[repr(C)]
struct Ctl {
    ready: AtomicU32,
    go: AtomicU32,
    failed: AtomicU32,
    end_ns: [AtomicU64; MAX_ROLES],
    allocs: [AtomicU64; MAX_ROLES],
    sent: [AtomicU64; MAX_ROLES],
    received: AtomicU64,
    seq_sum: AtomicU64,
    producers_done: AtomicU32,
    steady_ns: AtomicU64,
    steady_msgs: AtomicU64,
}

fn ctl() -> &'static Ctl {
    static mut CTL: *mut Ctl = std::ptr::null_mut();
    // SAFETY: set once before any fork in the single-threaded parent; all-zero is a valid Ctl.
    unsafe {
        if CTL.is_null() {
            CTL = shared_alloc(std::mem::size_of::<Ctl>()) as *mut Ctl;
        }
        &*CTL
    }
}

fn reset_ctl() {
    let c = ctl();
    c.ready.store(0, SeqCst);
    c.go.store(0, SeqCst);
    c.failed.store(0, SeqCst);
    for i in 0..MAX_ROLES {
        c.end_ns[i].store(0, SeqCst);
        c.allocs[i].store(0, SeqCst);
        c.sent[i].store(0, SeqCst);
    }
    c.received.store(0, SeqCst);
    c.seq_sum.store(0, SeqCst);
    c.producers_done.store(0, SeqCst);
    c.steady_ns.store(0, SeqCst);
    c.steady_msgs.store(0, SeqCst);
}

/// Forks a child that pins itself to `core`, runs `f`, and exits (status 1 if `f` panicked).
fn spawn(core: usize, f: impl FnOnce()) -> libc::pid_t {
    // SAFETY: the parent is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        pin_to(core);
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok();
        if !ok {
            ctl().failed.store(1, SeqCst);
        }
        let _ = std::io::stdout().flush();
        // SAFETY: ends the child without running the parent's destructors or atexit hooks.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

fn wait_child(pid: libc::pid_t) -> (i32, libc::rusage) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 writes it and the status.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child.
    unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    (status, usage)
}

/// Waits for every child in `pids`; true if all exited with status 0. When one fails (or
/// reports a failure), the others are killed: they may be waiting for messages that the
/// failed one will never send, and a failed run must end, not hang.
fn wait_all(pids: &[libc::pid_t]) -> bool {
    let mut alive = pids.to_vec();
    let mut ok = true;
    while !alive.is_empty() {
        alive.retain(|&pid| {
            let mut status = 0;
            // SAFETY: polls our own child without blocking.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                ok &= status == 0;
                false
            } else {
                true
            }
        });
        if !ok || ctl().failed.load(SeqCst) != 0 {
            for &pid in &alive {
                // SAFETY: our own child, not reaped yet.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                wait_child(pid);
            }
            return false;
        }
        if !alive.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ok
}

/// Child side of the start barrier: announce readiness, wait for the go.
fn barrier() {
    ctl().ready.fetch_add(1, SeqCst);
    while ctl().go.load(Acquire) == 0 {
        std::thread::yield_now();
    }
}

/// Parent side: wait until `n` children are ready, start them, return the start time.
fn start(n: u32) -> u64 {
    while ctl().ready.load(Acquire) < n {
        std::thread::sleep(Duration::from_micros(200));
    }
    let t = mono_ns();
    ctl().go.store(1, Release);
    t
}

// ----- message pattern: every byte written and checked --------------------------------------

fn fill_byte(seq: u64) -> u8 {
    (seq ^ (seq >> 40) ^ 0x5a) as u8
}

#[inline]
fn fill(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..].fill(fill_byte(seq));
}

/// Checks a received message; returns its sequence number. Panics (failing the run) on any
/// wrong byte.
#[inline]
fn check(buf: &[u8], size: usize) -> u64 {
    assert_eq!(buf.len(), size, "wrong message length");
    let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
    let b = fill_byte(seq);
    let diff = buf[8..].iter().fold(0u8, |acc, &x| acc | (x ^ b));
    assert_eq!(diff, 0, "corrupted message {seq}");
    seq
}

const MARKER: u64 = u64::MAX;

// ----- the hardware-limit references ---------------------------------------------------------

#[repr(C, align(128))]
struct Line {
    value: AtomicU64,
}

/// The index word of line `line` (0 or 1) of a ring's mapping at `base`: the rings keep
/// their two indices in the first two 128-byte lines, one each.
///
/// # Safety
/// `base` is a live mapping of at least 256 bytes, 128-aligned, for as long as `'a`.
unsafe fn index_word<'a>(base: *mut u8, line: usize) -> &'a AtomicU64 {
    debug_assert!(line < 2);
    // SAFETY: inside the first 256 bytes of the mapping (our contract), aligned; an all-zero
    // Line is valid.
    unsafe { &(*(base.add(line * 128) as *const Line)).value }
}

/// A best-effort single-producer single-consumer spin ring (Lamport's ring with cached
/// indices, as in rtrb), slots written and read in place.
#[derive(Clone, Copy)]
struct LimitRing {
    base: *mut u8,
    stride: usize,
}

impl LimitRing {
    fn new(size: usize) -> LimitRing {
        let stride = size.div_ceil(64) * 64;
        LimitRing {
            base: shared_alloc(256 + stride * DEPTH),
            stride,
        }
    }
    fn head(&self) -> &AtomicU64 {
        // SAFETY: our mapping of 256 bytes and more, page-aligned, lives as long as `self`'s
        // users.
        unsafe { index_word(self.base, 0) }
    }
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as in `head`.
        unsafe { index_word(self.base, 1) }
    }
    fn slot(&self, pos: u64, size: usize) -> *mut u8 {
        let _ = size;
        // SAFETY: index < DEPTH, inside the mapping.
        unsafe { self.base.add(256 + (pos as usize % DEPTH) * self.stride) }
    }
    fn free(&self) {
        // SAFETY: our own mapping, no longer used by anyone.
        unsafe { libc::munmap(self.base as *mut _, 256 + self.stride * DEPTH) };
    }
}

struct LimitTx {
    ring: LimitRing,
    tail: u64,
    head_cache: u64,
}

struct LimitRx {
    ring: LimitRing,
    head: u64,
    tail_cache: u64,
}

/// The least a multi-producer multi-consumer ring pays that records who holds each slot, as
/// shmq's default queue does for its crash repair: a sender claims a slot with a
/// compare-and-swap on its claim word and moves the shared tail with another (a receiver the
/// same on the head), and a run of `n` slots costs `n + 1` of them. Otherwise bare: no owner
/// ids, laps, crash checks, checksums, statistics or waiting (both sides spin). Messages are
/// written and read in place, as in the limit ring. Each slot is its payload, then a header
/// line (`seq`, then `claim`), as in shmq's layout. Not a peer: a floor for the claim protocol,
/// between the limit ring (no read-modify-write at all) and shmq.
#[derive(Clone, Copy)]
struct ClaimRing {
    base: *mut u8,
    /// The payload's bytes, rounded up to whole lines; the header line follows.
    payload: usize,
}

/// `seq`: `2 * pos` while the slot is free for position `pos`, `2 * pos + 1` once `pos` is
/// published there. `claim`: the position and the side that claimed it (see `ClaimRing`).
#[repr(C)]
struct ClaimSlot {
    seq: AtomicU64,
    claim: AtomicU64,
}

impl ClaimRing {
    const SENDER: u64 = 1;
    const RECEIVER: u64 = 2;

    fn new(size: usize) -> ClaimRing {
        let payload = size.div_ceil(64) * 64;
        let ring = ClaimRing {
            base: shared_alloc(Self::bytes_for(payload)),
            payload,
        };
        for i in 0..DEPTH as u64 {
            // Relaxed: written before the roles are forked, which orders it for them.
            ring.slot(i).seq.store(2 * i, Relaxed);
        }
        ring
    }
    /// The mapping: the tail's and the head's lines, then the slots.
    fn bytes_for(payload: usize) -> usize {
        256 + (payload + 64) * DEPTH
    }
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: our mapping of 256 bytes and more, page-aligned, lives as long as `self`'s
        // users.
        unsafe { index_word(self.base, 0) }
    }
    fn head(&self) -> &AtomicU64 {
        // SAFETY: as in `tail`.
        unsafe { index_word(self.base, 1) }
    }
    fn payload_of(&self, pos: u64) -> *mut u8 {
        // SAFETY: index < DEPTH, inside the mapping.
        unsafe {
            self.base
                .add(256 + (pos as usize % DEPTH) * (self.payload + 64))
        }
    }
    fn slot(&self, pos: u64) -> &ClaimSlot {
        // SAFETY: the header line after the payload, inside the mapping, 64-aligned; its
        // words are atomics (all-zero is valid), shared with the other processes.
        unsafe { &*(self.payload_of(pos).add(self.payload) as *const ClaimSlot) }
    }
    /// The claim word of `pos` by `side`, for a run of `len` positions from it (1 unless
    /// `pos` starts a run claimed by its first slot).
    fn claim_word(pos: u64, side: u64, len: usize) -> u64 {
        pos << 8 | (len as u64) << 2 | side
    }
    /// Whether claim word `word` is `side`'s claim of `pos` (of any run length).
    fn claims(word: u64, pos: u64, side: u64) -> bool {
        word >> 8 == pos && word & 3 == side
    }
    /// Claims up to `max` positions from `index` (the tail, or the head) whose slots are in
    /// state `seq(pos) == 2 * pos + ready` (0: free, 1: published), helping a claim whose
    /// index has not moved yet; returns the first position and how many, or `None` if the
    /// slot at the index is not ready.
    ///
    /// Orderings as in shmq's ring: `seq` is loaded with Acquire (it pairs with the Release
    /// store that published the message, or freed the slot after its last read), and stored
    /// with Release by the callers; the claim and index compare-and-swaps are AcqRel, so a
    /// helper or the next claimer sees the claim it moves past (on failure the value found
    /// is only compared, and the loop loads again with Acquire).
    ///
    /// `first_slot`: the run is claimed by one compare-and-swap on its first slot, whose
    /// claim word records the run's length (helpers move the index past all of it), and
    /// the others' claim words are plain stores: what shmq's batches would pay if its
    /// repairs looked back to a run's first slot for the owner. Otherwise each position is
    /// claimed by its own compare-and-swap, as shmq's batches do.
    fn claim(
        &self,
        index: &AtomicU64,
        ready: u64,
        side: u64,
        max: usize,
        first_slot: bool,
    ) -> Option<(u64, usize)> {
        loop {
            let at = index.load(Acquire);
            let slot = self.slot(at);
            // Claim before `seq`, as in shmq (a claim that a ready `seq` follows was made
            // while the slot was ready for `at`).
            let current = slot.claim.load(Acquire);
            let seq = slot.seq.load(Acquire);
            if seq != 2 * at + ready {
                if (seq.wrapping_sub(2 * at + ready) as i64) < 0 {
                    return None; // full (senders) or empty (receivers)
                }
                continue; // our index was stale
            }
            if Self::claims(current, at, side) {
                // Claimed, the index not moved yet: help it past the claim's run.
                let len = (current >> 2 & 63).max(1);
                let _ = index.compare_exchange(at, at + len, AcqRel, Relaxed);
                continue;
            }
            if first_slot {
                // Nobody else claims a position the index has not reached: count the ready
                // slots, claim them all with the first, then record the others' owner.
                let n = (1..max)
                    .take_while(|&k| {
                        let u = at + k as u64;
                        self.slot(u).seq.load(Acquire) == 2 * u + ready
                    })
                    .count()
                    + 1;
                let mine = Self::claim_word(at, side, n);
                if slot
                    .claim
                    .compare_exchange(current, mine, AcqRel, Relaxed)
                    .is_err()
                {
                    continue;
                }
                for k in 1..n as u64 {
                    // Relaxed: read by nobody here (shmq's repairs would read them after the
                    // message's publication, whose Release store follows).
                    self.slot(at + k)
                        .claim
                        .store(Self::claim_word(at + k, side, 1), Relaxed);
                }
                // Helpers move the index past the whole run, or not at all.
                let _ = index.compare_exchange(at, at + n as u64, AcqRel, Relaxed);
                return Some((at, n));
            }
            let mine = Self::claim_word(at, side, 1);
            if slot
                .claim
                .compare_exchange(current, mine, AcqRel, Relaxed)
                .is_err()
            {
                continue;
            }
            let mut n = 1;
            while n < max {
                let u = at + n as u64;
                let next = self.slot(u);
                let current = next.claim.load(Acquire);
                if next.seq.load(Acquire) != 2 * u + ready || Self::claims(current, u, side) {
                    break;
                }
                if next
                    .claim
                    .compare_exchange(current, Self::claim_word(u, side, 1), AcqRel, Relaxed)
                    .is_err()
                {
                    break;
                }
                n += 1;
            }
            // Helpers may have moved the index part of the way.
            let end = at + n as u64;
            let mut expected = at;
            while let Err(now) = index.compare_exchange(expected, end, AcqRel, Acquire) {
                if now >= end {
                    break;
                }
                expected = now;
            }
            return Some((at, n));
        }
    }
    fn free(&self) {
        // SAFETY: our own mapping, no longer used by anyone.
        unsafe { libc::munmap(self.base as *mut _, Self::bytes_for(self.payload)) };
    }
}

// ----- transports ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Shmq {
    /// Default blocking calls (`send_bytes_timeout(None)`, `recv_into(None)`).
    Block,
    /// Non-blocking calls retried in a loop (receiver polling).
    Poll,
    /// `send_batch` / `recv_batch`, 32 at a time.
    Batch,
    /// `send_in_place` / `recv_in_place`.
    ZeroCopy,
    /// `send_batch_in_place` / `recv_batch_in_place`, 32 at a time.
    BatchZeroCopy,
}

/// How [`ClaimRing`] claims.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClaimRuns {
    /// One message per claim: a compare-and-swap on the slot, one on the index.
    One,
    /// Runs of up to 32, a compare-and-swap per slot and one on the index (shmq's batches).
    PerSlot,
    /// Runs of up to 32 claimed by a compare-and-swap on their first slot (see
    /// [`ClaimRing::claim`]), and one on the index.
    FirstSlot,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Limit,
    /// The limit's SPSC spin ring (which moves the throughput limit) timed for round trips:
    /// what the least a queue pays to carry a 64-byte message and its index through shared
    /// memory, against the cache-line ping-pong, which carries one word.
    LimitRing,
    /// [`ClaimRing`], one message per claim or runs of up to 32.
    ClaimRing {
        runs: ClaimRuns,
    },
    Shmq {
        mode: Shmq,
        crc: bool,
        spsc: bool,
    },
    Mq,
    Seqpacket,
    Pipe,
    /// Boost.Interprocess `message_queue`, when the Boost headers and a C++ compiler are
    /// installed (see [`boost`]).
    Boost,
    /// iceoryx2 0.10 publish-subscribe, receiver busy-polling, when `benches/iceoryx2_peer`
    /// could be built (see [`iceoryx2`]): each message copied from the sender's buffer into a
    /// loaned sample and out of the received one into the receiver's, or, `zero_copy`, written
    /// in the loaned sample and checked in the received one, in place (as shmq's
    /// `send_in_place` / `recv_in_place`).
    Iceoryx2 {
        zero_copy: bool,
    },
}

impl Kind {
    fn label(&self) -> String {
        match self {
            Kind::Limit => "hardware limit".into(),
            Kind::LimitRing => "limit ring (64 B + index)".into(),
            Kind::ClaimRing {
                runs: ClaimRuns::One,
            } => "claim ring (2 CAS a side)".into(),
            Kind::ClaimRing {
                runs: ClaimRuns::PerSlot,
            } => "claim ring, runs of 32".into(),
            Kind::ClaimRing {
                runs: ClaimRuns::FirstSlot,
            } => "claim ring, runs of 32 by their first slot".into(),
            Kind::Shmq { mode, crc, spsc } => {
                let m = match mode {
                    Shmq::Block => "blocking",
                    Shmq::Poll => "polling",
                    Shmq::Batch => "batch 32",
                    Shmq::ZeroCopy => "zero-copy",
                    Shmq::BatchZeroCopy => "zero-copy batch 32",
                };
                format!(
                    "shmq {}{m}{}",
                    if *spsc { "spsc " } else { "" },
                    if *crc { "" } else { ", crc off" }
                )
            }
            Kind::Mq => "POSIX mq".into(),
            Kind::Boost => "Boost message_queue".into(),
            Kind::Iceoryx2 { zero_copy: false } => "iceoryx2 pub/sub".into(),
            Kind::Iceoryx2 { zero_copy: true } => "iceoryx2 pub/sub zero-copy".into(),
            Kind::Seqpacket => "Unix SEQPACKET".into(),
            Kind::Pipe => "pipe".into(),
        }
    }
    /// Whether this transport can run here (Boost and iceoryx2 only when they could be built).
    fn available(&self) -> bool {
        match self {
            Kind::Boost => boost().is_some(),
            Kind::Iceoryx2 { .. } => iceoryx2().is_some(),
            _ => true,
        }
    }
    fn is_peer(&self) -> bool {
        matches!(
            self,
            Kind::Mq | Kind::Seqpacket | Kind::Pipe | Kind::Boost | Kind::Iceoryx2 { .. }
        )
    }
    /// Whether the receiver busy-polls (iceoryx2's pub/sub has no blocking receive without
    /// its separate event service): on one core it holds the CPU until preempted.
    fn spins(&self) -> bool {
        matches!(
            self,
            Kind::Limit
                | Kind::LimitRing
                | Kind::ClaimRing { .. }
                | Kind::Iceoryx2 { .. }
                | Kind::Shmq {
                    mode: Shmq::Poll,
                    ..
                }
        )
    }
}

// ----- Boost.Interprocess message_queue, built at run time when present ------------------------

type BmqCreate = unsafe extern "C" fn(*const libc::c_char, usize, usize) -> libc::c_int;
type BmqOpen = unsafe extern "C" fn(*const libc::c_char) -> *mut libc::c_void;
type BmqSend = unsafe extern "C" fn(*mut libc::c_void, *const libc::c_void, usize) -> libc::c_int;
type BmqReceive = unsafe extern "C" fn(*mut libc::c_void, *mut libc::c_void, usize) -> libc::c_long;
type BmqRemove = unsafe extern "C" fn(*const libc::c_char) -> libc::c_int;

/// The C interface of `benches/boost_mq.cpp`, loaded with `dlopen`.
struct BoostLib {
    create: BmqCreate,
    open: BmqOpen,
    send: BmqSend,
    receive: BmqReceive,
    remove: BmqRemove,
}

/// Boost's message_queue, compiled (`c++ -O2 -shared`) and loaded the first time it is asked
/// for, in the parent before any fork; `None` (with the reason printed once) if the headers
/// or the compiler are missing.
fn boost() -> Option<&'static BoostLib> {
    static LIB: std::sync::OnceLock<Option<BoostLib>> = std::sync::OnceLock::new();
    LIB.get_or_init(|| match load_boost() {
        Ok(lib) => Some(lib),
        Err(why) => {
            println!("Boost message_queue: skipped ({why})");
            None
        }
    })
    .as_ref()
}

fn load_boost() -> Result<BoostLib, String> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/boost_mq.cpp");
    let dir = std::env::temp_dir().join(format!("shmq-bench-boost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lib = dir.join("libshmq_bench_boost.so");
    let out = std::process::Command::new("c++")
        .args(["-O2", "-std=c++17", "-shared", "-fPIC", src, "-o"])
        .arg(&lib)
        .args(["-lpthread", "-lrt"])
        .output()
        .map_err(|e| format!("no C++ compiler: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").to_string();
        return Err(format!("cannot build it, install libboost-dev: {first}"));
    }
    let path = std::ffi::CString::new(lib.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; the library's initialisers are those of a plain C++
    // shared object (no global state of ours).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    let _ = std::fs::remove_dir_all(&dir); // the mapping stays valid after the unlink
    if handle.is_null() {
        return Err("dlopen failed".into());
    }
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: a live handle and a NUL-terminated symbol name.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(format!("{name:?} missing"))
        } else {
            Ok(p)
        }
    };
    // SAFETY (each transmute): the symbols are the extern "C" functions of boost_mq.cpp with
    // exactly these signatures; the library stays loaded for the whole process.
    unsafe {
        Ok(BoostLib {
            create: std::mem::transmute::<*mut libc::c_void, BmqCreate>(sym(c"bmq_create")?),
            open: std::mem::transmute::<*mut libc::c_void, BmqOpen>(sym(c"bmq_open")?),
            send: std::mem::transmute::<*mut libc::c_void, BmqSend>(sym(c"bmq_send")?),
            receive: std::mem::transmute::<*mut libc::c_void, BmqReceive>(sym(c"bmq_receive")?),
            remove: std::mem::transmute::<*mut libc::c_void, BmqRemove>(sym(c"bmq_remove")?),
        })
    }
}

// ----- iceoryx2 publish-subscribe, built at run time ---------------------------------------------

type IoxInit = unsafe extern "C" fn(*const libc::c_char) -> libc::c_int;
type IoxCreate = unsafe extern "C" fn(*const libc::c_char, usize, usize) -> *mut libc::c_void;
type IoxOpenTx = unsafe extern "C" fn(*const libc::c_char, usize) -> *mut libc::c_void;
type IoxOpenRx = unsafe extern "C" fn(*const libc::c_char, usize) -> *mut libc::c_void;
/// `iox_wait_subscribers` and `iox_wait_publishers`.
type IoxWait = unsafe extern "C" fn(*mut libc::c_void, usize, u64) -> libc::c_int;
type IoxSend = unsafe extern "C" fn(*mut libc::c_void, *const u8, usize) -> libc::c_long;
type IoxTryReceive = unsafe extern "C" fn(*mut libc::c_void, *mut u8, usize) -> libc::c_long;
type IoxClose = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_int;
type IoxLoan = unsafe extern "C" fn(*mut libc::c_void, usize) -> *mut u8;
type IoxSendLoaned = unsafe extern "C" fn(*mut libc::c_void) -> libc::c_long;
type IoxPeek = unsafe extern "C" fn(*mut libc::c_void, *mut *const u8) -> libc::c_long;
type IoxCleanup = extern "C" fn() -> libc::c_long;

/// `iox_try_receive`, `iox_peek`: no message there.
const IOX_EMPTY: libc::c_long = -2;

/// The C interface of `benches/iceoryx2_peer` (see its `src/lib.rs`), loaded with `dlopen`.
struct IoxLib {
    create: IoxCreate,
    destroy: IoxClose,
    open_tx: IoxOpenTx,
    open_rx: IoxOpenRx,
    wait_subscribers: IoxWait,
    wait_publishers: IoxWait,
    send: IoxSend,
    try_receive: IoxTryReceive,
    loan: IoxLoan,
    send_loaned: IoxSendLoaned,
    peek: IoxPeek,
    /// `iox_release`.
    release: IoxClose,
    close_tx: IoxClose,
    close_rx: IoxClose,
    cleanup: IoxCleanup,
}

static ICEORYX2: std::sync::OnceLock<Option<IoxLib>> = std::sync::OnceLock::new();

/// iceoryx2, built (`cargo build --release` of `benches/iceoryx2_peer`, its own project so
/// that shmq's builds never compile it) and loaded the first time it is asked for, in the
/// parent before any fork; `None` (with the reason printed once) if it cannot be built
/// (offline, no cargo) or `SHMQ_BENCH_ICEORYX2=0`.
fn iceoryx2() -> Option<&'static IoxLib> {
    ICEORYX2
        .get_or_init(|| match load_iceoryx2() {
            Ok(lib) => Some(lib),
            Err(why) => {
                println!("iceoryx2: skipped ({why})");
                None
            }
        })
        .as_ref()
}

fn iceoryx2_opted_out() -> bool {
    std::env::var("SHMQ_BENCH_ICEORYX2").is_ok_and(|v| v == "0")
}

fn load_iceoryx2() -> Result<IoxLib, String> {
    if iceoryx2_opted_out() {
        return Err("SHMQ_BENCH_ICEORYX2=0".into());
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/iceoryx2_peer");
    let manifest = format!("{dir}/Cargo.toml");
    if !std::path::Path::new(&manifest).exists() {
        return Err(format!("{manifest} is missing"));
    }
    let lib = format!("{dir}/target/release/libshmq_bench_iceoryx2.so");
    // The cargo running this bench (it sets CARGO), else the one on the PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Cargo decides what to rebuild; this only says why the bench may pause for minutes.
    let modified = |p: &str| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&lib);
    if ["Cargo.toml", "Cargo.lock", "src/lib.rs"]
        .iter()
        .any(|f| built.is_none() || modified(&format!("{dir}/{f}")) > built)
    {
        println!("iceoryx2: building benches/iceoryx2_peer (cargo build --release, minutes)");
        let _ = std::io::stdout().flush();
    }
    let t = Instant::now();
    let out = std::process::Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "--manifest-path",
            &manifest,
        ])
        // Its own target directory, whatever CARGO_TARGET_DIR says for shmq's build.
        .args(["--target-dir", &format!("{dir}/target")])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| l.contains("error"))
            .or_else(|| err.lines().next())
            .map_or_else(|| out.status.to_string(), str::to_string);
        return Err(format!("cargo build failed: {first}"));
    }
    if t.elapsed() > Duration::from_secs(5) {
        println!("iceoryx2: built in {:.0} s", t.elapsed().as_secs_f64());
    }
    let path = std::ffi::CString::new(lib).unwrap();
    // SAFETY: a NUL-terminated path; the library is a Rust cdylib whose only global state is
    // its own (iceoryx2's logger and configuration).
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err("dlopen failed".into());
    }
    let sym = |name: &std::ffi::CStr| {
        // SAFETY: a live handle and a NUL-terminated symbol name.
        let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
        if p.is_null() {
            Err(format!("{name:?} missing"))
        } else {
            Ok(p)
        }
    };
    type P = *mut libc::c_void;
    // SAFETY (each transmute): the symbols are the extern "C" functions of
    // benches/iceoryx2_peer/src/lib.rs with exactly these signatures; the library stays
    // loaded for the whole process.
    let lib = unsafe {
        IoxLib {
            create: std::mem::transmute::<P, IoxCreate>(sym(c"iox_create")?),
            destroy: std::mem::transmute::<P, IoxClose>(sym(c"iox_destroy")?),
            open_tx: std::mem::transmute::<P, IoxOpenTx>(sym(c"iox_open_tx")?),
            open_rx: std::mem::transmute::<P, IoxOpenRx>(sym(c"iox_open_rx")?),
            wait_subscribers: std::mem::transmute::<P, IoxWait>(sym(c"iox_wait_subscribers")?),
            wait_publishers: std::mem::transmute::<P, IoxWait>(sym(c"iox_wait_publishers")?),
            send: std::mem::transmute::<P, IoxSend>(sym(c"iox_send")?),
            try_receive: std::mem::transmute::<P, IoxTryReceive>(sym(c"iox_try_receive")?),
            loan: std::mem::transmute::<P, IoxLoan>(sym(c"iox_loan")?),
            send_loaned: std::mem::transmute::<P, IoxSendLoaned>(sym(c"iox_send_loaned")?),
            peek: std::mem::transmute::<P, IoxPeek>(sym(c"iox_peek")?),
            release: std::mem::transmute::<P, IoxClose>(sym(c"iox_release")?),
            close_tx: std::mem::transmute::<P, IoxClose>(sym(c"iox_close_tx")?),
            close_rx: std::mem::transmute::<P, IoxClose>(sym(c"iox_close_rx")?),
            cleanup: std::mem::transmute::<P, IoxCleanup>(sym(c"iox_cleanup")?),
        }
    };
    // SAFETY: as above.
    let init = unsafe { std::mem::transmute::<P, IoxInit>(sym(c"iox_init")?) };
    // This run's own iceoryx2 domain (files under $TMPDIR/<domain>/, shared memory named
    // <domain>_*), so that `cleanup_iceoryx2` removes exactly what the run created.
    let domain = std::ffi::CString::new(format!("shmqbench_iox2_{}", std::process::id())).unwrap();
    // SAFETY: a NUL-terminated name; the function catches panics.
    if unsafe { init(domain.as_ptr()) } != 0 {
        return Err("iox_init failed".into());
    }
    Ok(lib)
}

/// Removes this run's iceoryx2 domain once every child is gone (`iox_cleanup`). Each role
/// drops its ports and node before `_exit` (see [`IoxTx`]), which removes their files; what
/// iceoryx2 never removes (its global management segment, its directories) and the files of a
/// role that died without dropping its node (killed, say) go here: iceoryx2's own dead-node
/// cleanup cannot see those, as forked children share the parent's cached process identity.
fn cleanup_iceoryx2() {
    if let Some(Some(lib)) = ICEORYX2.get() {
        match (lib.cleanup)() {
            0 => {}
            -1 => println!("iceoryx2: could not remove all of its files"),
            n => println!("iceoryx2: removed the files of {n} nodes that were not dropped"),
        }
    }
}

/// Removes the run's iceoryx2 domain when `main` ends, panicking or not (forked children
/// leave with `_exit` and never drop it).
struct Iceoryx2Domain;

impl Drop for Iceoryx2Domain {
    fn drop(&mut self) {
        cleanup_iceoryx2();
    }
}

/// A publisher this process opened; closed (with its node, whose files go too) when dropped,
/// which is before a role's `_exit`.
struct IoxTx(*mut libc::c_void);

impl Drop for IoxTx {
    fn drop(&mut self) {
        let lib = iceoryx2().expect("opened, so loaded");
        // SAFETY: our handle from iox_open_tx, not used afterwards.
        unsafe { (lib.close_tx)(self.0) };
    }
}

/// A subscriber this process opened; closed when dropped.
struct IoxRx(*mut libc::c_void);

impl Drop for IoxRx {
    fn drop(&mut self) {
        let lib = iceoryx2().expect("opened, so loaded");
        // SAFETY: our handle from iox_open_rx, not used afterwards.
        unsafe { (lib.close_rx)(self.0) };
    }
}

/// One direction of a transport, created in the parent before forking.
#[allow(clippy::large_enum_variant)] // one per run, never moved in a loop: boxing buys nothing
enum Chan {
    Limit(LimitRing),
    Claim {
        ring: ClaimRing,
        runs: ClaimRuns,
    },
    Shmq {
        name: String,
        queue: CrossProcessQueue,
        mode: Shmq,
    },
    Mq {
        name: std::ffi::CString,
        fd: libc::mqd_t,
    },
    Boost {
        name: std::ffi::CString,
    },
    Iceoryx2 {
        name: std::ffi::CString,
        /// The parent's node and service handle, which keep the service alive.
        owner: *mut libc::c_void,
        zero_copy: bool,
    },
    Fd {
        rx: i32,
        tx: i32,
    },
}

static CHAN_COUNTER: AtomicU32 = AtomicU32::new(0);

impl Chan {
    fn new(kind: Kind, size: usize) -> Chan {
        let n = CHAN_COUNTER.fetch_add(1, Relaxed);
        let pid = std::process::id();
        match kind {
            Kind::Limit | Kind::LimitRing => Chan::Limit(LimitRing::new(size)),
            Kind::ClaimRing { runs } => Chan::Claim {
                ring: ClaimRing::new(size),
                runs,
            },
            Kind::Shmq { mode, crc, spsc } => {
                let name = format!("bench{pid}_{n}");
                let queue = CrossProcessQueue::options()
                    .checksum(crc)
                    .single_producer_single_consumer(spsc)
                    .create(&name, DEPTH, size)
                    .expect("create shmq queue");
                Chan::Shmq { name, queue, mode }
            }
            Kind::Mq => {
                let name = std::ffi::CString::new(format!("/shmqbench{pid}_{n}")).unwrap();
                // SAFETY: mq_attr is plain data.
                let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
                attr.mq_maxmsg = DEPTH as _;
                attr.mq_msgsize = size as _;
                // SAFETY: valid C string and attr; variadic mode and attr as mq_open expects.
                let fd = unsafe {
                    libc::mq_open(
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                        0o600 as libc::mode_t,
                        &attr as *const libc::mq_attr,
                    )
                };
                if fd < 0 {
                    // Unprivileged users are limited to /proc/sys/fs/mqueue/msg_max (10).
                    attr.mq_maxmsg = 10;
                    // SAFETY: as above.
                    let fd = unsafe {
                        libc::mq_open(
                            name.as_ptr(),
                            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                            0o600 as libc::mode_t,
                            &attr as *const libc::mq_attr,
                        )
                    };
                    assert!(fd >= 0, "mq_open: {}", std::io::Error::last_os_error());
                    return Chan::Mq { name, fd };
                }
                Chan::Mq { name, fd }
            }
            Kind::Boost => {
                let lib = boost().expect("Boost is available (Kind::available)");
                let name = std::ffi::CString::new(format!("shmqbench{pid}_{n}")).unwrap();
                // SAFETY: a NUL-terminated name; the function catches every C++ exception.
                let r = unsafe { (lib.create)(name.as_ptr(), DEPTH, size) };
                assert_eq!(r, 0, "Boost message_queue create");
                Chan::Boost { name }
            }
            Kind::Iceoryx2 { zero_copy } => {
                let lib = iceoryx2().expect("iceoryx2 is available (Kind::available)");
                // Unique per run and channel: a stale service of another run cannot clash.
                let name = std::ffi::CString::new(format!("shmqbench{pid}_{n}")).unwrap();
                // SAFETY: a NUL-terminated name; the function catches panics.
                let owner = unsafe { (lib.create)(name.as_ptr(), DEPTH, size) };
                assert!(!owner.is_null(), "iceoryx2 service create");
                Chan::Iceoryx2 {
                    name,
                    owner,
                    zero_copy,
                }
            }
            Kind::Seqpacket => {
                let mut fds = [0i32; 2];
                // SAFETY: writes two fds into our array.
                let r = unsafe {
                    libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET, 0, fds.as_mut_ptr())
                };
                assert_eq!(r, 0, "socketpair");
                Chan::Fd {
                    rx: fds[0],
                    tx: fds[1],
                }
            }
            Kind::Pipe => {
                let mut fds = [0i32; 2];
                // SAFETY: writes two fds into our array.
                assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
                let want = (DEPTH * size).max(4096) as libc::c_int;
                // SAFETY: plain fcntl on our pipe; failure only leaves the default size.
                unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, want) };
                Chan::Fd {
                    rx: fds[0],
                    tx: fds[1],
                }
            }
        }
    }

    fn close(self) {
        match self {
            Chan::Limit(r) => r.free(),
            Chan::Claim { ring, .. } => ring.free(),
            Chan::Shmq { name, queue, .. } => {
                drop(queue);
                let _ = CrossProcessQueue::unlink(&name);
            }
            Chan::Boost { name } => {
                let lib = boost().expect("created, so loaded");
                // SAFETY: a NUL-terminated name.
                unsafe { (lib.remove)(name.as_ptr()) };
            }
            Chan::Iceoryx2 { owner, .. } => {
                let lib = iceoryx2().expect("created, so loaded");
                // SAFETY: the parent's handle from iox_create, not used afterwards (children
                // that inherited a copy have exited without touching it).
                unsafe { (lib.destroy)(owner) };
            }
            Chan::Mq { name, fd } => {
                // SAFETY: our descriptor and name.
                unsafe {
                    libc::mq_close(fd);
                    libc::mq_unlink(name.as_ptr());
                }
            }
            Chan::Fd { rx, tx } => {
                // SAFETY: our descriptors.
                unsafe {
                    libc::close(rx);
                    libc::close(tx);
                }
            }
        }
    }

    fn tx(&self, size: usize) -> Tx {
        let buf = vec![0u8; size];
        match self {
            // Picks up where a previous (exited) producer stopped.
            Chan::Limit(r) => Tx::Limit(LimitTx {
                ring: *r,
                tail: r.tail().load(Acquire),
                head_cache: r.head().load(Acquire),
            }),
            Chan::Claim { ring, runs } => Tx::Claim {
                ring: *ring,
                runs: *runs,
            },
            Chan::Shmq { name, mode, .. } => Tx::Shmq {
                q: CrossProcessQueue::connect(name).expect("connect"),
                mode: *mode,
                bufs: (0..BATCH).map(|_| vec![0u8; size]).collect(),
            },
            Chan::Mq { fd, .. } => Tx::Mq { fd: *fd, buf },
            Chan::Boost { name } => Tx::Boost {
                q: open_boost(name),
                buf,
            },
            Chan::Iceoryx2 {
                name, zero_copy, ..
            } => {
                let lib = iceoryx2().expect("created, so loaded");
                // SAFETY: a NUL-terminated name; the function catches panics.
                let port = IoxTx(unsafe { (lib.open_tx)(name.as_ptr(), size) });
                assert!(!port.0.is_null(), "iceoryx2 publisher");
                // Pub/sub without history delivers only to subscribers already connected (see
                // `Chan::rx`). Every role opens its ports before the start barrier, each
                // creating its own port before waiting for the other's, so this cannot deadlock.
                // SAFETY: our live publisher handle.
                let r = unsafe { (lib.wait_subscribers)(port.0, 1, 10_000) };
                assert_eq!(r, 0, "iceoryx2: no subscriber within 10 s");
                Tx::Iceoryx2 {
                    port,
                    // The zero-copy form writes in the loaned sample: no buffer of its own.
                    buf: if *zero_copy { Vec::new() } else { buf },
                    zero_copy: *zero_copy,
                }
            }
            Chan::Fd { tx, .. } => Tx::Fd { fd: *tx, buf },
        }
    }

    fn rx(&self, size: usize) -> Rx {
        let buf = vec![0u8; size.max(1) * BATCH];
        match self {
            Chan::Limit(r) => Rx::Limit(LimitRx {
                ring: *r,
                head: 0,
                tail_cache: 0,
            }),
            Chan::Claim { ring, runs } => Rx::Claim {
                ring: *ring,
                runs: *runs,
            },
            Chan::Shmq { name, mode, .. } => Rx::Shmq {
                q: CrossProcessQueue::connect(name).expect("connect"),
                mode: *mode,
                buf,
                metas: Vec::with_capacity(BATCH),
            },
            Chan::Mq { fd, .. } => Rx::Mq { fd: *fd, buf },
            Chan::Boost { name } => Rx::Boost {
                q: open_boost(name),
                buf,
            },
            Chan::Iceoryx2 {
                name, zero_copy, ..
            } => {
                let lib = iceoryx2().expect("created, so loaded");
                // SAFETY: a NUL-terminated name; the function catches panics.
                let port = IoxRx(unsafe { (lib.open_rx)(name.as_ptr(), DEPTH) });
                assert!(!port.0.is_null(), "iceoryx2 subscriber");
                // Until the subscriber has connected to the publisher, a publisher that has
                // filled its buffer drops messages instead of waiting: connect before the
                // start barrier rather than at the first receive.
                // SAFETY: our live subscriber handle.
                let r = unsafe { (lib.wait_publishers)(port.0, 1, 10_000) };
                assert_eq!(r, 0, "iceoryx2: no publisher within 10 s");
                Rx::Iceoryx2 {
                    port,
                    // The zero-copy form checks the received sample: no buffer of its own.
                    buf: if *zero_copy { Vec::new() } else { buf },
                    zero_copy: *zero_copy,
                }
            }
            Chan::Fd { rx, .. } => Rx::Fd { fd: *rx, buf },
        }
    }
}

/// Opens a Boost queue this process then uses until it exits (handles are not closed: the
/// roles end with `_exit`).
fn open_boost(name: &std::ffi::CStr) -> *mut libc::c_void {
    let lib = boost().expect("created, so loaded");
    // SAFETY: a NUL-terminated name; the function catches every C++ exception.
    let q = unsafe { (lib.open)(name.as_ptr()) };
    assert!(!q.is_null(), "Boost message_queue open");
    q
}

#[allow(clippy::large_enum_variant)] // as for `Chan`: one per process, held in place
enum Tx {
    Limit(LimitTx),
    Claim {
        ring: ClaimRing,
        runs: ClaimRuns,
    },
    Boost {
        q: *mut libc::c_void,
        buf: Vec<u8>,
    },
    Iceoryx2 {
        port: IoxTx,
        buf: Vec<u8>,
        zero_copy: bool,
    },
    Shmq {
        q: CrossProcessQueue,
        mode: Shmq,
        bufs: Vec<Vec<u8>>,
    },
    Mq {
        fd: libc::mqd_t,
        buf: Vec<u8>,
    },
    Fd {
        fd: i32,
        buf: Vec<u8>,
    },
}

fn write_all(fd: i32, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads from our buffer.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr() as *const _, buf.len() - done) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
}

impl Tx {
    /// Sends messages `seq, seq + 1, ...` (up to `max` of them); returns how many it sent.
    /// Only the batch form sends more than one.
    #[inline]
    fn send(&mut self, seq: u64, max: usize, size: usize) -> usize {
        match self {
            Tx::Limit(t) => {
                while t.tail - t.head_cache == DEPTH as u64 {
                    t.head_cache = t.ring.head().load(Acquire);
                    std::hint::spin_loop();
                }
                // SAFETY: slot `tail` is ours until we publish `tail + 1` (the consumer has
                // released it: head_cache > tail - DEPTH, loaded with Acquire).
                let slot =
                    unsafe { std::slice::from_raw_parts_mut(t.ring.slot(t.tail, size), size) };
                fill(slot, seq);
                t.tail += 1;
                t.ring.tail().store(t.tail, Release);
                1
            }
            Tx::Claim { ring, runs } => {
                let max = if *runs == ClaimRuns::One {
                    1
                } else {
                    max.min(BATCH)
                };
                let first_slot = *runs == ClaimRuns::FirstSlot;
                let (first, n) = loop {
                    match ring.claim(ring.tail(), 0, ClaimRing::SENDER, max, first_slot) {
                        Some(run) => break run,
                        None => std::hint::spin_loop(),
                    }
                };
                for j in 0..n as u64 {
                    let pos = first + j;
                    // SAFETY: claimed: slot `pos` is ours until we publish it (its receiver
                    // of the lap before freed it, with Release, before our claim's Acquire).
                    let slot =
                        unsafe { std::slice::from_raw_parts_mut(ring.payload_of(pos), size) };
                    fill(slot, seq + j);
                    ring.slot(pos).seq.store(2 * pos + 1, Release);
                }
                n
            }
            Tx::Shmq { q, mode, bufs } => match mode {
                Shmq::Block => {
                    fill(&mut bufs[0][..size], seq);
                    q.send_bytes_timeout(&bufs[0][..size], None).expect("send");
                    1
                }
                Shmq::Poll => {
                    fill(&mut bufs[0][..size], seq);
                    loop {
                        match q.send_bytes(&bufs[0][..size]) {
                            Ok(_) => return 1,
                            Err(Error::QueueFull) => std::hint::spin_loop(),
                            Err(e) => panic!("send: {e}"),
                        }
                    }
                }
                Shmq::ZeroCopy => {
                    q.send_in_place(None, |slot| {
                        fill(&mut slot[..size], seq);
                        size
                    })
                    .expect("send_in_place");
                    1
                }
                Shmq::BatchZeroCopy => q
                    .send_batch_in_place(max.min(BATCH), None, |j, slot| {
                        fill(&mut slot[..size], seq + j as u64);
                        size
                    })
                    .expect("send_batch_in_place"),
                Shmq::Batch => {
                    let k = max.min(BATCH);
                    for (j, b) in bufs[..k].iter_mut().enumerate() {
                        fill(&mut b[..size], seq + j as u64);
                    }
                    let refs: [&[u8]; BATCH] = std::array::from_fn(|j| &bufs[j][..size]);
                    q.send_batch(&refs[..k], None).expect("send_batch")
                }
            },
            Tx::Boost { q, buf } => {
                fill(&mut buf[..size], seq);
                let lib = boost().expect("opened, so loaded");
                // SAFETY: `q` is an open queue; our buffer of `size` bytes.
                let r = unsafe { (lib.send)(*q, buf.as_ptr() as *const _, size) };
                assert_eq!(r, 0, "Boost send");
                1
            }
            Tx::Iceoryx2 {
                port,
                buf,
                zero_copy,
            } => {
                let lib = iceoryx2().expect("opened, so loaded");
                let r = if *zero_copy {
                    // SAFETY: our live publisher handle, used by this thread alone.
                    let p = unsafe { (lib.loan)(port.0, size) };
                    assert!(!p.is_null(), "iceoryx2 loan");
                    // SAFETY: `size` bytes of the loaned sample, in the publisher's shared
                    // memory, ours alone until `send_loaned` (no other reference to them).
                    let slot = unsafe { std::slice::from_raw_parts_mut(p, size) };
                    fill(slot, seq);
                    // SAFETY: our live publisher handle; `fill` wrote every byte of the sample.
                    unsafe { (lib.send_loaned)(port.0) }
                } else {
                    fill(&mut buf[..size], seq);
                    // SAFETY: our live publisher handle; our buffer of `size` bytes.
                    unsafe { (lib.send)(port.0, buf.as_ptr(), size) }
                };
                // The number of subscribers reached: 0 would be a message lost.
                assert_eq!(r, 1, "iceoryx2 send");
                1
            }
            Tx::Mq { fd, buf } => {
                fill(&mut buf[..size], seq);
                // SAFETY: our buffer of `size` bytes.
                let r = unsafe { libc::mq_send(*fd, buf.as_ptr() as *const _, size, 0) };
                assert_eq!(r, 0, "mq_send: {}", std::io::Error::last_os_error());
                1
            }
            Tx::Fd { fd, buf } => {
                fill(&mut buf[..size], seq);
                write_all(*fd, &buf[..size]);
                1
            }
        }
    }
}

#[allow(clippy::large_enum_variant)] // as for `Chan`: one per process, held in place
enum Rx {
    Limit(LimitRx),
    Claim {
        ring: ClaimRing,
        runs: ClaimRuns,
    },
    Boost {
        q: *mut libc::c_void,
        buf: Vec<u8>,
    },
    Iceoryx2 {
        port: IoxRx,
        buf: Vec<u8>,
        zero_copy: bool,
    },
    Shmq {
        q: CrossProcessQueue,
        mode: Shmq,
        buf: Vec<u8>,
        metas: Vec<shmq::Received>,
    },
    Mq {
        fd: libc::mqd_t,
        buf: Vec<u8>,
    },
    Fd {
        fd: i32,
        buf: Vec<u8>,
    },
}

impl Rx {
    /// Waits for at least one message, checks each, hands its sequence number to `f`;
    /// returns how many it received. Only the batch form receives more than one.
    #[inline]
    fn recv(&mut self, size: usize, mut f: impl FnMut(u64)) -> usize {
        match self {
            Rx::Limit(r) => {
                while r.head == r.tail_cache {
                    r.tail_cache = r.ring.tail().load(Acquire);
                    std::hint::spin_loop();
                }
                // SAFETY: slot `head` was published by the producer's Release store of a
                // tail beyond it (loaded with Acquire) and stays ours until we advance head.
                let slot = unsafe { std::slice::from_raw_parts(r.ring.slot(r.head, size), size) };
                f(check(slot, size));
                r.head += 1;
                r.ring.head().store(r.head, Release);
                1
            }
            Rx::Claim { ring, runs } => {
                let max = if *runs == ClaimRuns::One { 1 } else { BATCH };
                let first_slot = *runs == ClaimRuns::FirstSlot;
                let (first, n) = loop {
                    match ring.claim(ring.head(), 1, ClaimRing::RECEIVER, max, first_slot) {
                        Some(run) => break run,
                        None => std::hint::spin_loop(),
                    }
                };
                for pos in first..first + n as u64 {
                    // SAFETY: claimed: the message of `pos`, published with Release before
                    // our claim's Acquire, stays put until we free the slot.
                    let slot = unsafe { std::slice::from_raw_parts(ring.payload_of(pos), size) };
                    f(check(slot, size));
                    ring.slot(pos).seq.store(2 * (pos + DEPTH as u64), Release);
                }
                n
            }
            Rx::Shmq {
                q,
                mode,
                buf,
                metas,
            } => match mode {
                Shmq::Block => {
                    let meta = q
                        .recv_into(&mut buf[..size], None)
                        .expect("recv")
                        .expect("open");
                    f(check(&buf[..meta.len], size));
                    1
                }
                Shmq::Poll => loop {
                    match q.receive_into(&mut buf[..size]) {
                        Ok(Some(meta)) => {
                            f(check(&buf[..meta.len], size));
                            return 1;
                        }
                        Ok(None) => std::hint::spin_loop(),
                        Err(e) => panic!("receive: {e}"),
                    }
                },
                Shmq::ZeroCopy => q
                    .recv_in_place(None, |_, bytes| {
                        f(check(bytes, size));
                        1
                    })
                    .expect("recv_in_place"),
                Shmq::BatchZeroCopy => q
                    .recv_batch_in_place(BATCH, None, |_, bytes| f(check(bytes, size)))
                    .expect("recv_batch_in_place"),
                Shmq::Batch => {
                    let n = q
                        .recv_batch(&mut buf[..size * BATCH], metas, None)
                        .expect("recv_batch");
                    for (i, m) in metas.iter().enumerate() {
                        f(check(&buf[i * size..][..m.len], size));
                    }
                    n
                }
            },
            Rx::Boost { q, buf } => {
                let lib = boost().expect("opened, so loaded");
                // SAFETY: `q` is an open queue; our buffer of at least `size` bytes (the
                // queue's message size).
                let n = unsafe { (lib.receive)(*q, buf.as_mut_ptr() as *mut _, buf.len()) };
                assert!(n >= 0, "Boost receive");
                f(check(&buf[..n as usize], size));
                1
            }
            Rx::Iceoryx2 {
                port,
                buf,
                zero_copy,
            } => {
                let lib = iceoryx2().expect("opened, so loaded");
                let mut empty = 0u32;
                loop {
                    let n = if *zero_copy {
                        let mut data = std::ptr::null();
                        // SAFETY: our live subscriber handle, used by this thread alone; a
                        // pointer of ours to write to.
                        let n = unsafe { (lib.peek)(port.0, &mut data) };
                        if n >= 0 {
                            let bytes = if n == 0 {
                                &[][..]
                            } else {
                                // SAFETY: the `n` bytes of the sample `peek` holds for us, in
                                // shared memory, unchanged until we release it (the publisher
                                // reuses a slot only once every subscriber has let it go).
                                unsafe { std::slice::from_raw_parts(data, n as usize) }
                            };
                            let seq = check(bytes, size);
                            // SAFETY: our live subscriber handle; `bytes` is not used again.
                            let r = unsafe { (lib.release)(port.0) };
                            assert_eq!(r, 0, "iceoryx2 release");
                            f(seq);
                            return 1;
                        }
                        n
                    } else {
                        // SAFETY: our live subscriber handle; our buffer of `buf.len()` bytes.
                        unsafe { (lib.try_receive)(port.0, buf.as_mut_ptr(), buf.len()) }
                    };
                    if n == IOX_EMPTY {
                        // Busy polling, as iceoryx2 pub/sub is used without its event service.
                        std::hint::spin_loop();
                        empty = empty.wrapping_add(1);
                        // A sender that failed sends no end marker: stop rather than spin on.
                        if empty % 65_536 == 0 && ctl().failed.load(Relaxed) != 0 {
                            panic!("iceoryx2 receive: another role failed");
                        }
                        continue;
                    }
                    assert!(n >= 0, "iceoryx2 receive: {n}");
                    f(check(&buf[..n as usize], size));
                    return 1;
                }
            }
            Rx::Mq { fd, buf } => {
                // SAFETY: our buffer of at least `size` bytes (the queue's message size).
                let n = unsafe {
                    libc::mq_receive(
                        *fd,
                        buf.as_mut_ptr() as *mut _,
                        buf.len(),
                        std::ptr::null_mut(),
                    )
                };
                assert!(n >= 0, "mq_receive: {}", std::io::Error::last_os_error());
                f(check(&buf[..n as usize], size));
                1
            }
            Rx::Fd { fd, buf } => {
                let mut got = 0;
                while got < size {
                    // SAFETY: writes into our buffer.
                    let n =
                        unsafe { libc::read(*fd, buf[got..].as_mut_ptr() as *mut _, size - got) };
                    assert!(n > 0, "read: {}", std::io::Error::last_os_error());
                    got += n as usize;
                }
                f(check(&buf[..size], size));
                1
            }
        }
    }
}

// ----- workloads ----------------------------------------------------------------------------

/// Where the roles of a throughput run are pinned.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Producer(s) on core 0, consumer(s) on core 1 (1P1C), or one of each per core (2P2C).
    Split,
    /// Every role on core 0.
    SameCore,
}

struct Tput {
    msgs_per_s: f64,
    allocs_per_msg: f64,
}

/// `producers` x `consumers` processes move `n` messages of `size` bytes in total.
fn throughput(
    kind: Kind,
    size: usize,
    n: u64,
    producers: usize,
    consumers: usize,
    placement: Placement,
    cap: Duration,
) -> Tput {
    reset_ctl();
    let chan = Chan::new(kind, size);
    let core = |role: usize| match placement {
        Placement::SameCore => 0,
        Placement::Split if producers == 1 && consumers == 1 => role,
        Placement::Split => role % 2,
    };
    let mut pids = Vec::new();
    let per_producer = n / producers as u64;
    let ordered = producers == 1;
    // With several producers or consumers, the parent sends the end markers once every
    // producer is done (one at a time until every consumer has stopped): all real messages
    // precede them in the queue, and a consumer that takes two markers cannot starve another.
    let parent_markers = producers > 1 || consumers > 1;
    for p in 0..producers {
        let chan = &chan;
        pids.push(spawn(core(p), move || {
            let mut tx = chan.tx(size);
            let base = (p as u64) << 40;
            barrier();
            let deadline = mono_ns() + cap.as_nanos() as u64;
            let mut i = 0;
            let mut alloc_start = None;
            let mut next_check = 1024;
            while i < per_producer {
                if alloc_start.is_none() && i >= 64 {
                    alloc_start = Some(ALLOCATIONS.load(Relaxed));
                }
                i += tx.send(base + i, (per_producer - i) as usize, size) as u64;
                if i >= next_check {
                    next_check = i + 1024;
                    if mono_ns() > deadline {
                        break;
                    }
                }
            }
            let now = ALLOCATIONS.load(Relaxed);
            ctl().allocs[p].store(now - alloc_start.unwrap_or(now), SeqCst);
            ctl().sent[p].store(i, SeqCst);
            if !parent_markers {
                // The single consumer stops at this marker, after every real message.
                tx.send(MARKER, 1, size);
            }
            ctl().end_ns[p].store(mono_ns(), SeqCst);
            ctl().producers_done.fetch_add(1, SeqCst);
        }));
    }
    for c in 0..consumers {
        let chan = &chan;
        let role = producers + c;
        pids.push(spawn(core(role), move || {
            let mut rx = chan.rx(size);
            barrier();
            let mut got = 0u64;
            let mut sum = 0u64;
            let mut alloc_start = None;
            let mut done = false;
            while !done {
                if alloc_start.is_none() && got >= 64 {
                    alloc_start = Some(ALLOCATIONS.load(Relaxed));
                }
                rx.recv(size, |seq| {
                    if seq == MARKER {
                        done = true;
                        return;
                    }
                    if ordered && consumers == 1 {
                        assert_eq!(seq, got, "out of order");
                    }
                    sum = sum.wrapping_add(seq);
                    got += 1;
                });
            }
            let now = ALLOCATIONS.load(Relaxed);
            ctl().allocs[role].store(now - alloc_start.unwrap_or(now), SeqCst);
            ctl().received.fetch_add(got, SeqCst);
            ctl().seq_sum.fetch_add(sum, SeqCst);
            ctl().end_ns[role].store(mono_ns(), SeqCst);
        }));
    }
    let t0 = start(pids.len() as u32);
    let mut failed = false;
    if parent_markers {
        while ctl().producers_done.load(SeqCst) < producers as u32 && ctl().failed.load(SeqCst) == 0
        {
            std::thread::sleep(Duration::from_micros(50));
        }
        let mut tx = chan.tx(size);
        let mut alive: Vec<libc::pid_t> = pids.clone();
        while !alive.is_empty() && ctl().failed.load(SeqCst) == 0 {
            tx.send(MARKER, 1, size);
            std::thread::sleep(Duration::from_millis(1));
            alive.retain(|&pid| {
                let mut status = 0;
                // SAFETY: polls our own child without blocking.
                let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if r == pid {
                    failed |= status != 0;
                    false
                } else {
                    true
                }
            });
        }
        for pid in alive {
            // SAFETY: our own child; a failed run must not leave it spinning.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            wait_child(pid);
            failed = true;
        }
    } else {
        failed |= !wait_all(&pids);
    }
    let end = (0..pids.len())
        .map(|r| ctl().end_ns[r].load(SeqCst))
        .max()
        .unwrap();
    chan.close();
    let sent: Vec<u64> = (0..producers).map(|p| ctl().sent[p].load(SeqCst)).collect();
    let total: u64 = sent.iter().sum();
    let expected_sum: u64 = (0..producers as u64)
        .map(|p| (0..sent[p as usize]).fold(0u64, |s, i| s.wrapping_add((p << 40) + i)))
        .fold(0, u64::wrapping_add);
    assert!(
        !failed && ctl().failed.load(SeqCst) == 0,
        "{}: a child failed",
        kind.label()
    );
    assert_eq!(
        ctl().received.load(SeqCst),
        total,
        "{}: messages lost",
        kind.label()
    );
    assert_eq!(
        ctl().seq_sum.load(SeqCst),
        expected_sum,
        "{}: wrong messages",
        kind.label()
    );
    let allocs: u64 = (0..pids.len()).map(|r| ctl().allocs[r].load(SeqCst)).sum();
    Tput {
        msgs_per_s: total as f64 / ((end - t0) as f64 / 1e9),
        allocs_per_msg: allocs as f64 / total as f64,
    }
}

/// Round trips of one `size`-byte message; returns the samples in nanoseconds.
fn round_trips(kind: Kind, size: usize, iters: u64, same_core: bool, cap: Duration) -> Vec<f64> {
    reset_ctl();
    let warm = iters / 10 + 1;
    if kind == Kind::Limit {
        // One cache line bounced between the two cores.
        let line = shared_alloc(128) as *const Line;
        // SAFETY: a fresh zeroed mapping holds a valid Line until we unmap it.
        let word = unsafe { &(*line).value };
        let child = spawn(if same_core { 0 } else { 1 }, move || {
            barrier();
            for i in 0.. {
                loop {
                    let v = word.load(Acquire);
                    if v == MARKER {
                        return;
                    }
                    if v == 2 * i + 1 {
                        break;
                    }
                    std::hint::spin_loop();
                }
                word.store(2 * i + 2, Release);
            }
        });
        pin_to(0);
        start(1);
        let mut samples = Vec::with_capacity(iters as usize);
        let (t_start, k_start) = (mono_ns(), ticks());
        let deadline = t_start + cap.as_nanos() as u64;
        for i in 0..iters + warm {
            let k0 = ticks();
            word.store(2 * i + 1, Release);
            while word.load(Acquire) != 2 * i + 2 {
                std::hint::spin_loop();
            }
            if i >= warm {
                samples.push((ticks() - k0) as f64);
            }
            if i % 64 == 0 && mono_ns() > deadline && !samples.is_empty() {
                break;
            }
        }
        word.store(MARKER, Release);
        let scale = (mono_ns() - t_start) as f64 / (ticks() - k_start) as f64;
        unpin();
        wait_child(child);
        // SAFETY: our mapping, unused now.
        unsafe { libc::munmap(line as *mut _, 128) };
        return samples.into_iter().map(|s| s * scale).collect();
    }
    let ping = Chan::new(kind, size);
    let pong = Chan::new(kind, size);
    let child = {
        let (ping, pong) = (&ping, &pong);
        spawn(if same_core { 0 } else { 1 }, move || {
            let mut rx = ping.rx(size);
            let mut tx = pong.tx(size);
            barrier();
            loop {
                let mut seq = 0;
                rx.recv(size, |s| seq = s);
                if seq == MARKER {
                    return;
                }
                tx.send(seq, 1, size);
            }
        })
    };
    pin_to(0);
    let mut tx = ping.tx(size);
    let mut rx = pong.rx(size);
    start(1);
    let mut samples = Vec::with_capacity(iters as usize);
    let (t_start, k_start) = (mono_ns(), ticks());
    let deadline = t_start + cap.as_nanos() as u64;
    for i in 0..iters + warm {
        let k0 = ticks();
        tx.send(i, 1, size);
        let mut seq = u64::MAX;
        rx.recv(size, |s| seq = s);
        assert_eq!(seq, i, "round trip returned the wrong message");
        if i >= warm {
            samples.push((ticks() - k0) as f64);
        }
        if i % 64 == 0 && mono_ns() > deadline && !samples.is_empty() {
            break;
        }
    }
    tx.send(MARKER, 1, size);
    let scale = (mono_ns() - t_start) as f64 / (ticks() - k_start) as f64;
    unpin();
    let (status, _) = wait_child(child);
    assert_eq!(status, 0, "{}: echo child failed", kind.label());
    drop((tx, rx));
    ping.close();
    pong.close();
    samples.into_iter().map(|s| s * scale).collect()
}

/// The user + system time in `usage`, in seconds.
fn cpu_seconds(usage: &libc::rusage) -> f64 {
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// CPU time (user + system) a receiver blocked on an empty shmq queue uses over `secs`.
fn blocked_receiver_cpu(secs: f64) -> (f64, f64) {
    // Maps the control block before forking (when this is the only workload selected,
    // nothing else has): a child mapping it first would wait on a private copy.
    reset_ctl();
    let name = format!("benchidle{}", std::process::id());
    let q = CrossProcessQueue::create(&name, DEPTH, 64).expect("create");
    let child = {
        let name = name.clone();
        spawn(1, move || {
            let q = CrossProcessQueue::connect(&name).expect("connect");
            let mut buf = [0u8; 64];
            barrier();
            // Blocks until shutdown, then returns None.
            assert!(q.recv_into(&mut buf, None).expect("recv").is_none());
        })
    };
    let t0 = start(1);
    std::thread::sleep(Duration::from_secs_f64(secs));
    q.shutdown().unwrap();
    let (status, usage) = wait_child(child);
    let wall = (mono_ns() - t0) as f64 / 1e9;
    drop(q);
    let _ = CrossProcessQueue::unlink(&name);
    assert_eq!(status, 0);
    (cpu_seconds(&usage), wall)
}

/// CPU time (user + system, microseconds) per message of `workers` receivers blocked on
/// one queue, half of them on each core, while the parent sends `n` 64-byte messages, one
/// every `gap`: what a message costs the idle workers it wakes (one, or all of them).
/// Returns the workers' whole CPU time per message (from `wait4`: fork, connecting, every
/// wait) and their steady cost: the CPU each used from its first message on (its process
/// CPU clock), per message after the first, which leaves out what a worker pays once.
fn idle_workers_cpu(kind: Kind, workers: usize, n: u64, gap: Duration) -> (f64, f64) {
    let size = 64;
    reset_ctl();
    let chan = Chan::new(kind, size);
    let mut pids = Vec::new();
    for w in 0..workers {
        let chan = &chan;
        pids.push(spawn(w % 2, move || {
            let mut rx = chan.rx(size);
            barrier();
            let (mut got, mut sum, mut done) = (0u64, 0u64, false);
            let mut first = 0u64;
            while !done {
                rx.recv(size, |seq| {
                    if seq == MARKER {
                        done = true;
                    } else {
                        sum = sum.wrapping_add(seq);
                        got += 1;
                    }
                });
                if got == 1 && first == 0 {
                    first = clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID);
                }
            }
            if got > 1 {
                ctl()
                    .steady_ns
                    .fetch_add(clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - first, SeqCst);
                ctl().steady_msgs.fetch_add(got - 1, SeqCst);
            }
            ctl().received.fetch_add(got, SeqCst);
            ctl().seq_sum.fetch_add(sum, SeqCst);
        }));
    }
    start(pids.len() as u32);
    let mut tx = chan.tx(size);
    std::thread::sleep(Duration::from_millis(50)); // every worker asleep
    let begin = Instant::now();
    for i in 0..n {
        tx.send(i, 1, size);
        let next = begin + gap * (i + 1) as u32;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    // One end marker per worker: each stops at the first it takes.
    for _ in 0..workers {
        tx.send(MARKER, 1, size);
    }
    let mut cpu = 0.0;
    for pid in pids {
        let (status, usage) = wait_child(pid);
        assert_eq!(status, 0, "{}: a worker failed", kind.label());
        cpu += cpu_seconds(&usage);
    }
    chan.close();
    assert_eq!(
        ctl().received.load(SeqCst),
        n,
        "{}: messages lost",
        kind.label()
    );
    assert_eq!(
        ctl().seq_sum.load(SeqCst),
        n * n.saturating_sub(1) / 2,
        "{}: wrong messages",
        kind.label()
    );
    let steady = ctl().steady_ns.load(SeqCst) as f64 / 1e3;
    (
        cpu * 1e6 / n as f64,
        steady / ctl().steady_msgs.load(SeqCst).max(1) as f64,
    )
}

/// The kernel's limit on POSIX mq message sizes (`mq_open` refuses larger ones).
fn mq_msgsize_max() -> usize {
    std::fs::read_to_string("/proc/sys/fs/mqueue/msgsize_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(8192)
}

// ----- reporting ----------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() - 1) as f64 * p) as usize]
}

/// One transport's figure in one workload.
struct Row {
    label: String,
    value: f64,
    is_peer: bool,
    /// The figure of each round (empty for single measurements), for per-round ratios.
    rounds: Vec<f64>,
}

struct Report {
    /// workload key -> rows in run order
    values: BTreeMap<String, Vec<Row>>,
    csv: String,
    notes: Vec<String>,
    alloc_checks: usize,
    /// workload key -> (transport, why it was left out), printed under the workload's rows
    left_out: BTreeMap<String, Vec<(String, String)>>,
}

impl Report {
    fn add(&mut self, key: &str, kind: Kind, value: f64) {
        self.add_row(key, kind, value, Vec::new());
    }

    /// Adds the median of `rounds` (one figure per round, rounds in the same order for every
    /// transport of the workload).
    fn add_rounds(&mut self, key: &str, kind: Kind, rounds: Vec<f64>) {
        self.add_row(key, kind, median(rounds.clone()), rounds);
    }

    fn add_row(&mut self, key: &str, kind: Kind, value: f64, rounds: Vec<f64>) {
        self.values.entry(key.to_string()).or_default().push(Row {
            label: kind.label(),
            value,
            is_peer: kind.is_peer(),
            rounds,
        });
        let _ = writeln!(self.csv, "{key},{},{value}", csv_field(&kind.label()));
    }

    /// Records that `kind` was not run in workload `key`, and why (printed with "–" for a
    /// value; results.csv has no row, which plot.py's table also shows as "–").
    fn leave_out(&mut self, key: &str, kind: Kind, why: &str) {
        self.left_out
            .entry(key.to_string())
            .or_default()
            .push((kind.label(), why.to_string()));
    }
}

/// `row` as a multiple (latency) or share (throughput) of `limit`: the median of the
/// per-round ratios when both were measured in the same rounds (the VM's speed drifts
/// between rounds, and both figures of a round saw the same machine), else the ratio of
/// the medians.
fn ratio(row: &Row, limit: &Row) -> f64 {
    if !row.rounds.is_empty() && row.rounds.len() == limit.rounds.len() {
        median(
            row.rounds
                .iter()
                .zip(&limit.rounds)
                .map(|(v, l)| v / l)
                .collect(),
        )
    } else {
        row.value / limit.value
    }
}

/// A CSV field (RFC 4180): quoted when it holds a comma or a quote, as some labels do
/// ("shmq blocking, crc off"), so that any CSV reader splits the rows right.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Whether a lower figure is better (latency, CPU) for workload `key`.
fn lower_is_better(key: &str) -> bool {
    key.starts_with("rtt") || key.starts_with("idle_workers")
}

fn fmt_value(key: &str, v: f64) -> String {
    if key.starts_with("idle_workers") {
        format!("{v:.1} us CPU")
    } else if key.starts_with("rtt") {
        if v >= 1e6 {
            format!("{:.2} ms", v / 1e6)
        } else if v >= 1e3 {
            format!("{:.1} us", v / 1e3)
        } else {
            format!("{v:.0} ns")
        }
    } else if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else {
        format!("{:.0} k/s", v / 1e3)
    }
}

/// Prints one workload's figures with ratios to the limit and to the best peer.
fn print_workload(
    report: &Report,
    key: &str,
    title: &str,
    limit_key: Option<&str>,
    extra: impl Fn(f64) -> String,
) {
    let Some(rows) = report.values.get(key) else {
        return;
    };
    let lower_better = lower_is_better(key);
    let limit = limit_key
        .and_then(|k| report.values.get(k))
        .and_then(|r| r.iter().find(|r| r.label == "hardware limit"))
        .or_else(|| rows.iter().find(|r| r.label == "hardware limit"));
    // The best of the other transports, whatever its form: a zero-copy peer (iceoryx2's) is
    // as much an alternative to every shmq form as a copying one.
    let best = rows.iter().filter(|r| r.is_peer).reduce(|a, b| {
        if lower_better == (a.value < b.value) {
            a
        } else {
            b
        }
    });
    let best_peer = best.map(|r| r.value);
    match best {
        Some(b) => println!("\n{title} (best peer: {})", b.label),
        None => println!("\n{title}"),
    }
    println!(
        "  {:<26} {:>12} {:>16} {:>16}",
        "transport", "value", "vs limit", "vs best peer"
    );
    for row in rows {
        let (label, v) = (&row.label, &row.value);
        // Ratios read as "a multiple of the limit" (latency) or "a share of it" (throughput),
        // and "how many times better than the best peer".
        let vs_limit = limit.map(|l| ratio(row, l));
        let vs_peer = best_peer.map(|p| if lower_better { p / v } else { v / p });
        println!(
            "  {:<26} {:>12} {:>16} {:>16} {}",
            label,
            fmt_value(key, *v),
            vs_limit.map_or("-".into(), |r| {
                if lower_better {
                    format!("{r:.2}x limit")
                } else {
                    format!("{:.1}% of limit", r * 100.0)
                }
            }),
            vs_peer.map_or("-".into(), |r| format!("{r:.1}x best peer")),
            extra(*v)
        );
    }
    for (label, why) in report.left_out.get(key).into_iter().flatten() {
        println!("  {label:<26} {:>12}   not run: {why}", "–");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let cfg = Config::from_env();
    let started = Instant::now();
    assert!(
        cpus_online() >= 2 || cfg.quick,
        "this benchmark needs two cores"
    );
    println!(
        "shmq compare ({} mode): depth {DEPTH}, median of {} runs, {} cores, every byte written and checked",
        if cfg.quick { "quick" } else { "full" },
        cfg.runs,
        cpus_online()
    );
    let mut report = Report {
        values: BTreeMap::new(),
        csv: String::from("workload,transport,value\n"),
        notes: Vec::new(),
        alloc_checks: 0,
        left_out: BTreeMap::new(),
    };
    // Removes the run's iceoryx2 files when main returns or panics.
    let _iceoryx2_domain = Iceoryx2Domain;
    let shmq_block = Kind::Shmq {
        mode: Shmq::Block,
        crc: true,
        spsc: false,
    };
    let shmq_block_nocrc = Kind::Shmq {
        mode: Shmq::Block,
        crc: false,
        spsc: false,
    };
    let shmq_poll = Kind::Shmq {
        mode: Shmq::Poll,
        crc: true,
        spsc: false,
    };
    let shmq_poll_nocrc = Kind::Shmq {
        mode: Shmq::Poll,
        crc: false,
        spsc: false,
    };
    let shmq_batch = Kind::Shmq {
        mode: Shmq::Batch,
        crc: true,
        spsc: false,
    };
    let shmq_batch_nocrc = Kind::Shmq {
        mode: Shmq::Batch,
        crc: false,
        spsc: false,
    };
    let shmq_zc = Kind::Shmq {
        mode: Shmq::ZeroCopy,
        crc: true,
        spsc: false,
    };
    let shmq_zc_nocrc = Kind::Shmq {
        mode: Shmq::ZeroCopy,
        crc: false,
        spsc: false,
    };
    let shmq_batch_zc = Kind::Shmq {
        mode: Shmq::BatchZeroCopy,
        crc: true,
        spsc: false,
    };
    let shmq_batch_zc_nocrc = Kind::Shmq {
        mode: Shmq::BatchZeroCopy,
        crc: false,
        spsc: false,
    };
    // Single-producer/single-consumer queues: the same forms without atomic read-modify-writes.
    let spsc = |k: Kind| match k {
        Kind::Shmq { mode, crc, .. } => Kind::Shmq {
            mode,
            crc,
            spsc: true,
        },
        other => other,
    };
    let iox = Kind::Iceoryx2 { zero_copy: false };
    let iox_zc = Kind::Iceoryx2 { zero_copy: true };
    // The copying peers; iceoryx2's zero-copy form joins shmq's zero-copy forms where they run.
    let peers = [Kind::Mq, Kind::Seqpacket, Kind::Pipe, Kind::Boost, iox];
    let mut rtt_csv = String::from("transport,ns\n");

    // Round trips, 64 B, split cores.
    if cfg.wants("rtt64") {
        let kinds = [
            Kind::Limit,
            Kind::LimitRing,
            Kind::ClaimRing {
                runs: ClaimRuns::One,
            },
            shmq_poll,
            shmq_poll_nocrc,
            shmq_block,
            shmq_block_nocrc,
            shmq_zc,
            spsc(shmq_poll),
            spsc(shmq_block),
            spsc(shmq_poll_nocrc),
            spsc(shmq_block_nocrc),
        ]
        .into_iter()
        .chain(peers)
        .chain([iox_zc])
        .filter(|&k| cfg.wants_kind(k) && k.available())
        .collect::<Vec<_>>();
        // Rounds outermost: each round measures every transport once, so a drift of the
        // VM's speed between rounds affects them all alike (see `ratio`).
        let mut p50s = vec![Vec::new(); kinds.len()];
        let mut last = vec![Vec::new(); kinds.len()];
        for _ in 0..cfg.runs {
            for (i, &kind) in kinds.iter().enumerate() {
                let iters = if kind.is_peer() {
                    cfg.rtt_iters / 2
                } else {
                    cfg.rtt_iters
                };
                let s = round_trips(kind, 64, iters, false, cfg.run_cap);
                p50s[i].push(percentile(&s, 0.5));
                last[i] = s;
            }
        }
        for ((kind, p50s), all) in kinds.into_iter().zip(p50s).zip(last) {
            report.add_rounds("rtt64", kind, p50s);
            report.add("rtt64_p99", kind, percentile(&all, 0.99));
            for s in all.iter().step_by((all.len() / 2000).max(1)) {
                let _ = writeln!(rtt_csv, "{},{s:.0}", csv_field(&kind.label()));
            }
        }
    }
    // Round trips with both processes on one core (spinning transports collapse).
    if cfg.wants("rtt_same") {
        for kind in [Kind::Limit, shmq_poll, shmq_block, spsc(shmq_block)]
            .into_iter()
            .chain(peers)
        {
            if !cfg.wants_kind(kind) || !kind.available() {
                continue;
            }
            let iters = if kind.spins() { 20 } else { cfg.rtt_iters / 4 };
            let runs = if kind.spins() { 1 } else { cfg.runs };
            let p50 = median(
                (0..runs)
                    .map(|_| percentile(&round_trips(kind, 64, iters, true, cfg.run_cap), 0.5))
                    .collect(),
            );
            report.add("rtt_samecore", kind, p50);
        }
    }
    let tput = |report: &mut Report,
                key: &str,
                kinds: &[Kind],
                size: usize,
                p: usize,
                c: usize,
                placement: Placement,
                runs: usize| {
        if !cfg.wants(key) {
            return;
        }
        let kinds: Vec<Kind> = kinds
            .iter()
            .copied()
            .filter(|&k| cfg.wants_kind(k) && k.available())
            .collect();
        let count = |kind: Kind| {
            let n = cfg.messages(size);
            if placement == Placement::SameCore && kind.spins() {
                n.min(20_000) // a spinning ring on one core moves one ring per time slice
            } else {
                n
            }
        };
        // Rounds outermost, as for the round trips.
        let mut rates = vec![Vec::new(); kinds.len()];
        let mut allocs = vec![0.0f64; kinds.len()];
        for _ in 0..runs {
            for (i, &kind) in kinds.iter().enumerate() {
                let t = throughput(kind, size, count(kind), p, c, placement, cfg.run_cap);
                rates[i].push(t.msgs_per_s);
                allocs[i] = allocs[i].max(t.allocs_per_msg);
            }
        }
        for ((kind, rates), allocs) in kinds.into_iter().zip(rates).zip(allocs) {
            report.add_rounds(key, kind, rates);
            if matches!(kind, Kind::Shmq { .. }) {
                report.alloc_checks += 1;
                if allocs > 0.0 {
                    report.notes.push(format!(
                        "{key} {}: {allocs:.5} heap allocations per message ({} messages)",
                        kind.label(),
                        count(kind)
                    ));
                }
            }
        }
    };
    let all64 = [
        Kind::Limit,
        Kind::ClaimRing {
            runs: ClaimRuns::One,
        },
        Kind::ClaimRing {
            runs: ClaimRuns::PerSlot,
        },
        Kind::ClaimRing {
            runs: ClaimRuns::FirstSlot,
        },
        shmq_block,
        shmq_block_nocrc,
        shmq_poll,
        shmq_batch,
        shmq_batch_nocrc,
        shmq_zc,
        shmq_zc_nocrc,
        shmq_batch_zc,
        shmq_batch_zc_nocrc,
        spsc(shmq_block),
        spsc(shmq_block_nocrc),
        spsc(shmq_poll),
        spsc(shmq_batch),
        spsc(shmq_batch_nocrc),
        spsc(shmq_zc),
        spsc(shmq_zc_nocrc),
        spsc(shmq_batch_zc),
        spsc(shmq_batch_zc_nocrc),
        Kind::Mq,
        Kind::Seqpacket,
        Kind::Pipe,
        Kind::Boost,
        iox,
        iox_zc,
    ];
    tput(
        &mut report,
        "tput64",
        &all64,
        64,
        1,
        1,
        Placement::Split,
        cfg.runs,
    );
    tput(
        &mut report,
        "tput4k",
        &all64,
        4096,
        1,
        1,
        Placement::Split,
        cfg.runs,
    );
    // Not iceoryx2: publish-subscribe hands every message to every subscriber, so two
    // consumers would each get all of them; it is not a work queue.
    let mpmc = [
        shmq_block,
        shmq_batch,
        Kind::Mq,
        Kind::Seqpacket,
        Kind::Pipe,
        Kind::Boost,
    ];
    if cfg.wants("tput64_2p2c") && cfg.wants_kind(iox) && !iceoryx2_opted_out() {
        report.leave_out(
            "tput64_2p2c",
            iox,
            "pub/sub delivers every message to every subscriber, not a work queue",
        );
    }
    // More processes than cores, as a pool of workers often is: spinning must give way.
    tput(
        &mut report,
        "tput64_4p4c",
        &mpmc,
        64,
        4,
        4,
        Placement::Split,
        cfg.runs,
    );
    tput(
        &mut report,
        "tput64_2p2c",
        &mpmc,
        64,
        2,
        2,
        Placement::Split,
        cfg.runs,
    );
    let same = [
        Kind::Limit,
        shmq_block,
        shmq_poll,
        shmq_batch,
        spsc(shmq_block),
        spsc(shmq_batch),
        spsc(shmq_batch_zc),
        Kind::Mq,
        Kind::Seqpacket,
        Kind::Pipe,
        Kind::Boost,
        iox,
    ];
    tput(
        &mut report,
        "tput64_samecore",
        &same,
        64,
        1,
        1,
        Placement::SameCore,
        cfg.runs,
    );
    // Throughput against message size, for the plot.
    for size in [64usize, 256, 1024, 4096, 16384] {
        let key = format!("sweep_{size}");
        let mut kinds = vec![
            Kind::Limit,
            shmq_block,
            shmq_batch,
            shmq_zc,
            shmq_zc_nocrc,
            spsc(shmq_block),
            spsc(shmq_batch),
            spsc(shmq_zc),
            spsc(shmq_zc_nocrc),
            spsc(shmq_batch_zc),
            spsc(shmq_batch_zc_nocrc),
            Kind::Seqpacket,
            Kind::Pipe,
            Kind::Boost,
            iox,
            iox_zc,
        ];
        if size <= mq_msgsize_max() {
            kinds.push(Kind::Mq);
        }
        tput(
            &mut report,
            &key,
            &kinds,
            size,
            1,
            1,
            Placement::Split,
            cfg.sweep_runs,
        );
    }

    // Idle workers: 16 receivers asleep on one queue, a message every millisecond (since the
    // fourteenth session). No limit row: spinning receivers would never be idle.
    if cfg.wants("idle_workers") {
        let n = if cfg.quick { 300 } else { 1000 };
        let kinds = [
            shmq_block,
            Kind::Mq,
            Kind::Seqpacket,
            Kind::Pipe,
            Kind::Boost,
        ]
        .into_iter()
        .filter(|&k| cfg.wants_kind(k) && k.available())
        .collect::<Vec<_>>();
        // Rounds outermost, as for round trips: the VM's drift over a workload of many
        // seconds then lands on every transport alike, not on whichever ran first.
        let (mut whole, mut steady) =
            (vec![Vec::new(); kinds.len()], vec![Vec::new(); kinds.len()]);
        for _ in 0..cfg.sweep_runs {
            for (i, &kind) in kinds.iter().enumerate() {
                let (w, s) = idle_workers_cpu(kind, 16, n, Duration::from_millis(1));
                whole[i].push(w);
                steady[i].push(s);
            }
        }
        for ((kind, whole), steady) in kinds.into_iter().zip(whole).zip(steady) {
            report.add_rounds("idle_workers16", kind, whole);
            report.add_rounds("idle_workers16_steady", kind, steady);
        }
    }

    let idle = if cfg.wants("idle") {
        let secs = if cfg.quick { 2.0 } else { 5.0 };
        Some(blocked_receiver_cpu(secs))
    } else {
        None
    };

    // ----- print ------------------------------------------------------------------------
    println!(
        "\n=== results (ratios: latency as a multiple of the limit, throughput as a share of it; \
         each the median of the ratios within a round, every round measuring every transport) ==="
    );
    print_workload(
        &report,
        "rtt64",
        "Round trip p50, 64 B, processes on separate cores",
        None,
        |_| String::new(),
    );
    print_workload(
        &report,
        "rtt64_p99",
        "Round trip p99 (last run), 64 B, separate cores",
        Some("rtt64_p99"),
        |_| String::new(),
    );
    print_workload(
        &report,
        "rtt_samecore",
        "Round trip p50, 64 B, both processes on ONE core",
        None,
        |_| String::new(),
    );
    print_workload(
        &report,
        "tput64",
        "One-way throughput 1P->1C, 64 B",
        None,
        |_| String::new(),
    );
    print_workload(
        &report,
        "tput4k",
        "One-way throughput 1P->1C, 4 KiB",
        None,
        |v| format!("{:.2} GB/s", v * 4096.0 / 1e9),
    );
    print_workload(
        &report,
        "tput64_2p2c",
        "Two producers + two consumers, 64 B, one of each per core",
        Some("tput64"),
        |_| String::new(),
    );
    print_workload(
        &report,
        "tput64_4p4c",
        "Four producers + four consumers, 64 B, two of each per core (8 processes, 2 cores)",
        Some("tput64"),
        |_| String::new(),
    );
    print_workload(
        &report,
        "tput64_samecore",
        "1P->1C, 64 B, both processes on ONE core",
        None,
        |_| String::new(),
    );
    for size in [64usize, 256, 1024, 4096, 16384] {
        let key = format!("sweep_{size}");
        print_workload(
            &report,
            &key,
            &format!(
                "Throughput vs size: {size} B (median of {})",
                cfg.sweep_runs
            ),
            None,
            move |v| format!("{:.2} GB/s", v * size as f64 / 1e9),
        );
    }
    print_workload(
        &report,
        "idle_workers16",
        "CPU per message of 16 idle receivers, a message every ms (lower is better)",
        None,
        |_| String::new(),
    );
    print_workload(
        &report,
        "idle_workers16_steady",
        "The same, from each receiver's first message on: what a message costs after the \
         receivers' one-time costs (lower is better)",
        None,
        |_| String::new(),
    );
    if let Some((cpu, wall)) = idle {
        println!(
            "\nBlocked receiver on an empty queue: {:.2} ms CPU over {wall:.1} s = {:.4}% of a core",
            cpu * 1e3,
            cpu / wall * 100.0
        );
        let _ = writeln!(
            report.csv,
            "idle_cpu_percent,shmq blocking,{}",
            cpu / wall * 100.0
        );
    }
    // Checksums on vs off, side by side.
    let pick = |key: &str, label: &str| {
        report
            .values
            .get(key)
            .and_then(|r| r.iter().find(|x| x.label == label))
            .map(|x| x.value)
    };
    println!("\nChecksums on vs off (msgs/s):");
    for key in ["tput64", "tput4k"] {
        for (on, off) in [
            (shmq_block, shmq_block_nocrc),
            (shmq_batch, shmq_batch_nocrc),
            (shmq_zc, shmq_zc_nocrc),
        ] {
            if let (Some(a), Some(b)) = (pick(key, &on.label()), pick(key, &off.label())) {
                println!(
                    "  {key:<8} {:<22} on {:>12}  off {:>12}  (off/on {:.2})",
                    on.label(),
                    fmt_value(key, a),
                    fmt_value(key, b),
                    b / a
                );
            }
        }
    }
    println!(
        "\nAllocation check (counting global allocator, every process, after the first 64 \
         messages): {} shmq workloads checked, {}",
        report.alloc_checks,
        if report.notes.is_empty() {
            "zero heap allocations in every steady-state loop".to_string()
        } else {
            format!("{} allocated:", report.notes.len())
        }
    );
    for n in &report.notes {
        println!("  {n}");
    }
    let _ = std::fs::create_dir_all(&cfg.out_dir);
    let _ = std::fs::write(format!("{}/results.csv", cfg.out_dir), &report.csv);
    let _ = std::fs::write(format!("{}/rtt_samples.csv", cfg.out_dir), &rtt_csv);
    // Every round's figure, so that a drift of the VM between rounds can be seen (a
    // transport's figure moving with the limit's) rather than only guessed from the medians.
    let mut rounds_csv = String::from("workload,round,transport,value\n");
    for (key, rows) in &report.values {
        for row in rows {
            for (i, v) in row.rounds.iter().enumerate() {
                let _ = writeln!(rounds_csv, "{key},{i},{},{v}", csv_field(&row.label));
            }
        }
    }
    let _ = std::fs::write(format!("{}/rounds.csv", cfg.out_dir), &rounds_csv);
    println!(
        "\nwrote {0}/results.csv, rtt_samples.csv and rounds.csv; total time {1:.1} s",
        cfg.out_dir,
        started.elapsed().as_secs_f64()
    );
}
