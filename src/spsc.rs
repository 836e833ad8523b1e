//! Single-producer/single-consumer queues ([`FLAG_SPSC`](crate::layout::FLAG_SPSC)): the same
//! slots and sequence words as the multi-producer ring, driven by plain loads and stores.
//!
//! # Why a second mode
//! Any locked instruction drains the store buffer, whose stores go to slot lines the peer core
//! holds, so it costs a cache-line round trip: one per message caps a two-core ring at about
//! a third of what the hardware moves (measured in `docs/PERFORMANCE.md`). The multi-producer
//! ring needs two such instructions per side (the claim word and head/tail) because that is
//! how several senders agree on a slot and how a dead one's slot names its owner. With one
//! sender and one receiver there is nothing to agree on: each owns its end of the ring.
//!
//! # Protocol
//! * **Roles.** The first handle that sends takes the *sending role* by a compare-and-swap of
//!   its participant id into `RolesLine::sender`, and keeps it until it is dropped; likewise
//!   for receiving. Another live handle gets [`Error::RoleTaken`]. A role whose holder's
//!   liveness lock is gone (see `docs/LIVENESS.md`) is taken over, and the new holder repairs
//!   what the dead one left (below). Threads sharing one handle take turns through an
//!   in-process lock held from a claim to its publication or release (see [`Side`]).
//! * **Sending position `p`** (the sender's own `tail`): store `in_flight = p + 1`, light
//!   fence, check `closed`; the slot is free if `p - head < capacity`, judged from a cached
//!   `head` that is reloaded (Acquire) only when the ring looks full; write the slot, store
//!   `seq = 2p + 1` (Release), `tail = p + 1`, `in_flight = 0`.
//! * **Receiving position `p`** (its own `head`): `seq == 2p + 1` (Acquire) and the slot's
//!   `position == p` (else stray bytes: see below), store the head line's `in_flight = p + 1`
//!   (the message is taken), read it, store `head = p + 1` (Release). That store alone frees
//!   the slot: the sender judges room by the head, so the receiver never writes a slot (the
//!   slot's header line then crosses between the cores once per message, not twice), and a
//!   consumed slot keeps `seq = 2p + 1` until the sender publishes position `p + capacity`
//!   there.
//! * **Shutdown** sets `RolesLine::closed` (the tail cannot carry a flag: the sender writes it
//!   with plain stores). A receiver that finds the queue empty and closed reports `Closed`
//!   only once the sender is quiet: after a *heavy* fence (`membarrier`, see `wait.rs`) it
//!   reads the sender's `in_flight`; the sender's "store `in_flight`, light fence, load
//!   `closed`" makes this a Dekker pair, so either the sender sees `closed` and publishes
//!   nothing, or the receiver sees the send in flight and waits for it (unless the sender is
//!   dead). So a send that succeeds is never stranded behind a receiver that saw `Closed`.
//! * **Taking over from a dead sender**: if its `in_flight` names a position whose message
//!   was published, the tail moves past it; otherwise the tail moves up to it (a batch
//!   publishes the positions before it) and the half-written slot is simply written again (no
//!   receiver reads a slot before its `seq` says published).
//! * **Taking over from a dead receiver**: the positions it had taken (from the head up to
//!   `in_flight`: one, or a batch) are delivered again with the `redelivered` flag.
//!
//! Corrupt sequence words (written by no correct peer) are overwritten by the sender and
//! skipped by the receiver, each counted under `corrupted`, so hostile bytes cannot wedge the
//! queue or make it read out of bounds. The receiver skips (or passes) a slot only once the
//! tail is past it, and checks an empty-looking slot against the tail now and then, so that
//! the head never overtakes the tail and a published slot reset to "free" is not waited on
//! for ever; a sender that finds the head ahead of its tail anyway continues from the head.

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU64};

use crate::layout::Header;
use crate::ring::{Cursor, Peers, PopToken, PushToken, Ring, SpscPop};
use crate::sync::{thread_token, AtomicU32};
use crate::{wait, Attempt, Error, Result};

/// How many times a corrupt-looking sequence word is re-read before the slot is skipped.
const CORRUPT_RETRIES: u32 = 64;

/// A handle's two roles on a single-producer/single-consumer queue.
///
/// `pub` in a private module: crate-visible, except under `--cfg loom`, where the module is
/// public for the model in `tests/loom_spsc.rs` (one `Spsc` per model thread, see [`Side`]).
#[derive(Default)]
pub struct Spsc {
    tx: Side,
    rx: Side,
}

/// One role as this handle holds it.
///
/// Threads sharing the handle take turns through a *biased* lock: the thread that owns the
/// role enters with two plain stores and a load (`busy`, light fence, `contenders`); any
/// other thread takes the slow path: it announces itself in `contenders`, issues a heavy
/// fence (`membarrier`, see `wait.rs`) and waits for the owner to leave. So the usual case,
/// one thread per role, pays no atomic read-modify-write per message, and mixed use stays
/// correct (and pays a system call per operation on the slow path).
///
/// Ownership changes hands only through 0: the owner gives it up itself (when contention sent
/// it down the slow path), and a slow-path holder takes it only while it is 0. So a thread
/// that reads its own token in `owner` is the owner (no other thread can have changed it
/// since), and only the owner ever writes `busy`. (A thread that reads a token that is being
/// replaced would otherwise store `busy` for an owner it no longer is.) The cost: a role
/// whose owner thread stops using it without contention (the handle moved to another
/// thread) stays on the slow path for the other threads.
///
/// Its atomics and token are `std`'s even under `--cfg loom`: the model
/// (`tests/loom_spsc.rs`) gives each thread its own [`Spsc`], because loom's threads share
/// one OS thread and so one token, and two of them sharing a lock would both own it.
#[derive(Default)]
#[repr(align(128))] // the two sides are used by different threads: no false sharing
struct Side {
    /// Token of the thread that owns the fast path ([`thread_token`]), 0 for none. Moves
    /// from a token to 0 only by that thread, and from 0 to a token only under `slow`.
    owner: AtomicU64,
    /// Set by the owner while it is inside an operation on the fast path.
    busy: AtomicBool,
    /// Threads waiting for (or holding) the slow path.
    contenders: AtomicU32,
    /// Serialises the slow path.
    slow: AtomicBool,
    /// Whether the current holder came in by the slow path (only touched by the holder).
    entered_slow: AtomicBool,
    /// Token of the thread holding the lock by the slow path, 0 otherwise. Written only by
    /// that holder (set after taking `slow`, cleared before giving it back), so a thread that
    /// reads its own token here holds the lock: a call made from inside one of its own
    /// callbacks (the fast path's holder sees `busy` instead).
    slow_holder: AtomicU64,
    /// Whether this handle holds the role's lease in the header. Only read or written by
    /// the lock's holder (or with `&mut` access at drop).
    leased: AtomicBool,
    /// Set by the lock's holder before it runs a caller's callback (a zero-copy fill or
    /// read), which may take any time, and cleared when it unlocks: see
    /// [`LockWait::NotForCallbacks`].
    in_callback: AtomicBool,
    /// Messages and bytes done under the lock and not yet added to the shared statistics.
    /// Only touched by the lock's holder, so plain loads and stores suffice.
    pending_messages: AtomicU64,
    pending_bytes: AtomicU64,
    /// The sending side's last look at the receiver's `head` (holder-only): slots below
    /// `head_seen + capacity` are free without reading their sequence words, so a send
    /// touches no cache line the receiver writes until the ring looks full (Lamport's ring
    /// with cached indices, as in rtrb).
    head_seen: AtomicU64,
    /// The receiving side's count of empty-looking slots met by attempts that may repair
    /// (holder-only): every [`EMPTY_CHECK_INTERVAL`]th one is checked against the tail, which
    /// a hostile reset of a published slot's sequence word would otherwise hide for ever.
    /// Not on every poll, and never while a blocked call polls before sleeping: each read of
    /// the sender's line takes it from the sender, whose next store to it then waits.
    empty_polls: AtomicU32,
}

/// See [`Side::empty_polls`].
const EMPTY_CHECK_INTERVAL: u32 = 16;

/// How long a call may wait for the other threads sharing its handle to leave a side.
#[derive(Clone, Copy, Debug)]
pub enum LockWait {
    /// Not at all (the statistics' flush).
    No,
    /// For the holder's own work, not for a callback it runs (a call that does not wait: it
    /// must not fail just because another thread was in the middle of a send, nor wait for
    /// that thread's callback, which may take any time).
    NotForCallbacks,
    /// Until this instant (a call with a timeout).
    Until(std::time::Instant),
    /// As long as it takes.
    Forever,
}

/// What [`Side::lock`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    Yes,
    /// Another thread holds the side, longer than the caller may wait.
    Busy,
    /// This very thread holds it: the call was made from a callback of a call on this side.
    Reentered,
}

/// Waits while `cond` holds, within `wait` (`in_callback`: the holder runs a callback):
/// spins, then yields, then sleeps in steps that double up to a millisecond (a thread inside
/// a long callback holds the side for as long as it runs: waiting for it must not burn a
/// core). False if `wait` ran out first.
fn wait_while(wait: LockWait, in_callback: &AtomicBool, mut cond: impl FnMut() -> bool) -> bool {
    let mut spins = 0u32;
    let mut nap = std::time::Duration::from_micros(20);
    while cond() {
        match wait {
            LockWait::No => return false,
            // Relaxed: a hint; a holder that just left its callback is waited for anyway
            // at the next look, and one that just entered it costs one more look.
            LockWait::NotForCallbacks if in_callback.load(Relaxed) => return false,
            LockWait::Until(deadline) if std::time::Instant::now() >= deadline => return false,
            _ => {}
        }
        spins += 1;
        if spins < 64 {
            std::hint::spin_loop();
        } else if spins < 256 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(std::time::Duration::from_millis(1));
        }
    }
    true
}

impl Side {
    /// Takes the side, waiting for other threads of this handle within `wait`. Never waits
    /// for this thread itself: a call made from inside a callback of a call that holds the
    /// side gets `Reentered` (it would wait for ever, or, on the fast path, claim the very
    /// slot the outer call holds).
    #[inline]
    fn lock(&self, fence_required: &AtomicU32, wait: LockWait) -> Locked {
        let me = thread_token();
        // Relaxed: only this thread ever stores its own token; another value means "not us".
        if self.owner.load(Relaxed) == me {
            // Relaxed: only the owner (this thread) writes `busy`.
            if self.busy.load(Relaxed) {
                return Locked::Reentered;
            }
            // Relaxed, then a light fence: pairs with a contender's heavy fence between its
            // `contenders` increment and its load of `busy` (a Dekker pair).
            self.busy.store(true, Relaxed);
            wait::light_fence(fence_required);
            if self.contenders.load(Relaxed) == 0 {
                // Relaxed: holder-only field.
                self.entered_slow.store(false, Relaxed);
                return Locked::Yes;
            }
            // Release: our last operation's stores are visible to the contender that sees
            // `busy == false`.
            self.busy.store(false, Release);
        }
        // Relaxed: only a slow holder stores its token here, and clears it before leaving.
        if self.slow_holder.load(Relaxed) == me {
            return Locked::Reentered;
        }
        // Acquire: pairs with the previous slow holder's Release in `unlock`.
        let got_slow = wait_while(wait, &self.in_callback, || {
            self.slow
                .compare_exchange_weak(false, true, Acquire, Relaxed)
                .is_err()
        });
        if !got_slow {
            return Locked::Busy;
        }
        // SeqCst, then a heavy fence: see the fast path.
        self.contenders.fetch_add(1, SeqCst);
        // Failed or not, the fence orders our side; on failure peers fence from now on.
        let _ = wait::heavy_fence(fence_required);
        // Acquire: the owner's operation (and its stores) happen-before ours.
        if !wait_while(wait, &self.in_callback, || self.busy.load(Acquire)) {
            // The owner is still inside its operation: back out. It may see our count and
            // take the slow path once, which is only slower.
            self.contenders.fetch_sub(1, Release);
            // Release: pairs with the next slow holder's Acquire (we changed nothing).
            self.slow.store(false, Release);
            return Locked::Busy;
        }
        // Relaxed: holder-only fields.
        self.entered_slow.store(true, Relaxed);
        self.slow_holder.store(me, Relaxed);
        Locked::Yes
    }

    #[inline]
    fn unlock(&self) {
        // Relaxed: a hint for waiters, written by the holder (see `in_callback`).
        self.in_callback.store(false, Relaxed);
        // Relaxed: holder-only field.
        if self.entered_slow.load(Relaxed) {
            // Relaxed: holder-only field (see `slow_holder`).
            self.slow_holder.store(0, Relaxed);
            let me = thread_token();
            // Relaxed: `owner` changes only under `slow`, except owner -> 0 by the owner
            // itself, which is also here; the fast path reads it for its own token only.
            let owner = self.owner.load(Relaxed);
            if owner == me {
                // Contention sent the owner down the slow path: let another thread have it.
                self.owner.store(0, Relaxed);
            } else if owner == 0 {
                self.owner.store(me, Relaxed);
            }
            self.contenders.fetch_sub(1, Release);
            // Release: pairs with the next slow holder's Acquire.
            self.slow.store(false, Release);
        } else {
            // Release: our stores happen-before the next holder's operation.
            self.busy.store(false, Release);
        }
    }

    /// The owning thread's way in, and only that: true if this thread owns the fast path,
    /// nobody contends and the handle holds the role's lease (the side is then locked);
    /// otherwise false, having changed nothing, and the caller takes the general path.
    #[inline(always)]
    fn try_lock_owned(&self, fence_required: &AtomicU32) -> bool {
        // Relaxed: as in `lock`. A `busy` already set by this owner is a call from inside
        // one of its own callbacks: the general path reports it.
        if self.owner.load(Relaxed) != thread_token() || self.busy.load(Relaxed) {
            return false;
        }
        // Relaxed, then a light fence: as in `lock`.
        self.busy.store(true, Relaxed);
        wait::light_fence(fence_required);
        // Relaxed: `contenders` as in `lock`; `leased` and `entered_slow` are holder-only,
        // and we hold the lock from here.
        if self.contenders.load(Relaxed) == 0 && self.leased.load(Relaxed) {
            self.entered_slow.store(false, Relaxed);
            return true;
        }
        // Release: as in `unlock`.
        self.busy.store(false, Release);
        false
    }

    /// Counts `messages` of `bytes` in all (called by the lock's holder); flushes every
    /// [`crate::STATS_BATCH`] messages.
    #[inline]
    fn count(&self, messages: u64, bytes: u64, total: &crate::sync::AtomicU64, ring: &Ring) {
        // Relaxed loads and stores: holder-only fields (the lock orders holders).
        let messages = self.pending_messages.load(Relaxed) + messages;
        let bytes = self.pending_bytes.load(Relaxed).wrapping_add(bytes);
        if messages >= crate::STATS_BATCH {
            self.flush_counts(bytes, total, ring, true);
        } else {
            self.pending_messages.store(messages, Relaxed);
            self.pending_bytes.store(bytes, Relaxed);
        }
    }

    /// Adds `bytes` to `total`, samples the depth into `peak_depth` if `sample_depth` (see
    /// `CrossProcessQueue::flush_stats`), and clears the pending counts.
    fn flush_counts(
        &self,
        bytes: u64,
        total: &crate::sync::AtomicU64,
        ring: &Ring,
        sample_depth: bool,
    ) {
        // Relaxed: statistics order nothing.
        if bytes != 0 {
            total.fetch_add(bytes, Relaxed);
        }
        if sample_depth {
            ring.header()
                .stats
                .peak_depth
                .fetch_max(ring.depth(), Relaxed);
        }
        self.pending_messages.store(0, Relaxed);
        self.pending_bytes.store(0, Relaxed);
    }

    /// Counts an empty-looking slot; true when it is due for a check against the tail.
    #[inline]
    fn empty_polls_due(&self) -> bool {
        // Relaxed: holder-only field (the lock orders holders).
        let n = self.empty_polls.load(Relaxed).wrapping_add(1);
        self.empty_polls.store(n, Relaxed);
        n % EMPTY_CHECK_INTERVAL == 0
    }

    /// Flushes the counts of this side if the lock is free now. A side held by another
    /// thread of this handle, or by this thread (a statistics call from inside a callback),
    /// keeps its counts until a later flush: statistics wait for nobody.
    fn flush(&self, total: &crate::sync::AtomicU64, ring: &Ring, sample_depth: bool) {
        // Relaxed: a racy peek to skip the lock when there is nothing to flush; a count
        // missed here is flushed by the next one.
        if self.pending_messages.load(Relaxed) == 0 {
            return;
        }
        if self.lock(&ring.header().wake.fence_required, LockWait::No) != Locked::Yes {
            return;
        }
        let bytes = self.pending_bytes.load(Relaxed);
        if self.pending_messages.load(Relaxed) != 0 {
            self.flush_counts(bytes, total, ring, sample_depth);
        }
        self.unlock();
    }
}

/// The error of a call made on a side from inside a callback of a call holding it.
fn reentered(name: &str, role: Role) -> Error {
    Error::InvalidArgument(format!(
        "queue {name:?}: {} call from inside a callback of a {} call on the same \
         single-producer/single-consumer handle, which holds the {} side until the \
         callback returns",
        role.verb(),
        role.verb(),
        role.name()
    ))
}

/// Which role a lease is for.
#[derive(Clone, Copy)]
enum Role {
    Sender,
    Receiver,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Sender => "sending",
            Role::Receiver => "receiving",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Role::Sender => "send",
            Role::Receiver => "receive",
        }
    }

    fn word(self, h: &Header) -> &AtomicU32 {
        match self {
            Role::Sender => &h.roles.sender,
            Role::Receiver => &h.roles.receiver,
        }
    }
}

/// What a claim for sending finds at the tail ([`Spsc::look_at_tail`]).
enum TailState {
    /// The slot of this position is free: claim it.
    Free(u64),
    /// The receiver is a whole ring behind.
    Full,
    /// The queue is shut down.
    Closed,
    /// The receiver's head is past the tail (hostile bytes): continue from this head.
    HeadAhead(u64),
}

/// What a receiver that found the queue empty and closed learns about the sender.
enum SenderState {
    /// Nothing can be published any more: report `Closed`.
    Quiet,
    /// A send is in flight (or a message just arrived): wait, or look again.
    Busy,
}

impl Spsc {
    // ----- sending -------------------------------------------------------------------------

    /// One attempt to claim the next slot for sending. On `Done` the side stays locked until
    /// [`Spsc::published`].
    #[inline]
    pub fn try_claim_push(
        &self,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
        wait: LockWait,
    ) -> Result<Attempt<PushToken>> {
        match self.tx.lock(&ring.header().wake.fence_required, wait) {
            Locked::Yes => {}
            Locked::Busy => return Ok(Attempt::WouldBlock),
            Locked::Reentered => return Err(reentered(name, Role::Sender)),
        }
        let result = self.claim_push_locked(ring, peers, name);
        if !matches!(result, Ok(Attempt::Done(_))) {
            self.tx.unlock();
        }
        result
    }

    #[inline]
    fn claim_push_locked(
        &self,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
    ) -> Result<Attempt<PushToken>> {
        self.take_lease(&self.tx, Role::Sender, ring, peers, name)?;
        let h = ring.header();
        match self.look_at_tail(ring) {
            TailState::Free(tail) => Ok(Attempt::Done(ring.spsc_push_token(tail))),
            TailState::Full => {
                // Release: a receiver that sees 0 sees everything we published before.
                h.tail.in_flight.store(0, Release);
                Ok(Attempt::WouldBlock)
            }
            TailState::Closed => {
                // Release: a receiver that sees 0 sees everything we published before.
                h.tail.in_flight.store(0, Release);
                wait::wake_receivers(h, wait::EVERYONE);
                Err(Error::Closed)
            }
            TailState::HeadAhead(head) => {
                // The receiver is past positions we never published: it read or skipped
                // bytes a hostile process wrote. Continue from its head, or the ring would
                // look full for ever.
                h.stats.corrupted.fetch_add(1, Relaxed);
                // Relaxed: a receiver only asks whether it is 0 (it was not, and is not), and
                // a sender taking over after our death sees all our stores.
                h.tail.in_flight.store(head.wrapping_add(1), Relaxed);
                h.tail.value.store(head, Release);
                Ok(Attempt::Done(ring.spsc_push_token(head)))
            }
        }
    }

    /// The first half of every claim for sending, with the side locked: announces the send
    /// in `in_flight`, then judges the tail's slot. On any state but `Free` the caller
    /// clears or moves `in_flight` before unlocking.
    #[inline(always)]
    fn look_at_tail(&self, ring: &Ring) -> TailState {
        let h = ring.header();
        // Relaxed: we hold the sending role, so we are the tail's only writer.
        let tail = h.tail.value.load(Relaxed);
        // Relaxed: the light fence orders it before the load of `closed` for a receiver
        // that reads it after a heavy fence (module notes).
        h.tail.in_flight.store(tail.wrapping_add(1), Relaxed);
        wait::light_fence(&h.wake.fence_required);
        // Relaxed: ordered by the fences above; `closed` publishes no data.
        if h.roles.closed.load(Relaxed) != 0 {
            return TailState::Closed;
        }
        let capacity = ring.capacity();
        // Relaxed: holder-only cache.
        if tail.wrapping_sub(self.tx.head_seen.load(Relaxed)) >= capacity {
            // Acquire: pairs with the receiver's Release store of the head, made after it
            // released the slots below it, so its reads of them happen-before our writes.
            let head = h.head.value.load(Acquire);
            self.tx.head_seen.store(head, Relaxed);
            if (head.wrapping_sub(tail) as i64) > 0 {
                return TailState::HeadAhead(head);
            }
            if tail.wrapping_sub(head) >= capacity {
                return TailState::Full;
            }
        }
        // The slot's sequence word is not read: whatever it holds (even bytes a hostile
        // process wrote), the receiver has released the position a lap ago, and the
        // publication overwrites it.
        TailState::Free(tail)
    }

    /// [`Spsc::try_claim_push`] without repairs, in the common case only: this thread owns
    /// the sending side, the handle holds the role and the queue is open. Then `Done` (the
    /// side stays locked, as after [`Spsc::try_claim_push`]) or `WouldBlock` (full, judged
    /// by the cached head or the head reloaded). `None` otherwise, with the side unlocked and
    /// `in_flight` back at 0: the general path then finds out why.
    // Always inlined, as the MPMC fast paths (`CrossProcessQueue::claim_push_fast`): left
    // to the compiler, the zero-copy calls made this and `try_claim_pop_fast` calls of their
    // own (50 instructions per send + receive, callgrind).
    #[inline(always)]
    pub fn try_claim_push_fast(&self, ring: &Ring) -> Option<Attempt<PushToken>> {
        let h = ring.header();
        if !self.tx.try_lock_owned(&h.wake.fence_required) {
            return None;
        }
        let verdict = match self.look_at_tail(ring) {
            TailState::Free(tail) => return Some(Attempt::Done(ring.spsc_push_token(tail))),
            TailState::Full => Some(Attempt::WouldBlock),
            // Shut down, or hostile bytes: the general path reports or repairs.
            TailState::Closed | TailState::HeadAhead(_) => None,
        };
        // Release: a receiver that sees 0 sees everything we published before.
        h.tail.in_flight.store(0, Release);
        self.tx.unlock();
        verdict
    }

    /// Completes a send of `bytes` claimed by [`Spsc::try_claim_push`] after the ring
    /// published `pos`.
    #[inline]
    pub fn published(&self, ring: &Ring, pos: u64, bytes: u64) {
        self.published_batch(ring, pos, 1, bytes);
    }

    /// The next position of a batch: called, with the side still locked, after the ring
    /// published `pos` (claimed by [`Spsc::try_claim_push`] or by this). Returns `None` when
    /// the ring looks full; the batch then ends with [`Spsc::published_batch`].
    ///
    /// `closed` is not checked again: `in_flight` has not been 0 since the batch's first
    /// claim checked it, so a receiver that saw `closed` still waits for this send (module
    /// notes, "Shutdown"). `in_flight` moves to the new position after `pos` was published,
    /// so a sender taking over after our death finds every position before it published
    /// (see [`repair_after_dead_sender`]).
    #[inline]
    pub fn claim_next_push(&self, ring: &Ring, prev: Cursor) -> Option<PushToken> {
        let h = ring.header();
        let at = ring.after(prev);
        let next = at.position();
        let capacity = ring.capacity();
        // Relaxed: holder-only cache, as in `claim_push_locked`.
        if next.wrapping_sub(self.tx.head_seen.load(Relaxed)) >= capacity {
            // Acquire: as in `claim_push_locked`.
            let head = h.head.value.load(Acquire);
            self.tx.head_seen.store(head, Relaxed);
            // A head ahead of `next` (hostile bytes) also ends the batch here; the next
            // plain claim deals with it.
            if next.wrapping_sub(head) >= capacity {
                return None;
            }
        }
        // Relaxed: read by a receiver only after a heavy fence, and by a sender taking over
        // after our death, when the kernel has made all our stores visible.
        h.tail.in_flight.store(next.wrapping_add(1), Relaxed);
        Some(ring.spsc_push_token_at(at))
    }

    /// Completes a send of `messages` (`bytes` in all) ending with position `last`, claimed
    /// by [`Spsc::try_claim_push`] and [`Spsc::claim_next_push`] and each published.
    #[inline]
    pub fn published_batch(&self, ring: &Ring, last: u64, messages: u64, bytes: u64) {
        let h = ring.header();
        self.tx.count(messages, bytes, &h.stats.bytes_sent, ring);
        // Release (both): a receiver or `len` that sees the new tail, or `in_flight == 0`,
        // also sees the publications before it.
        h.tail.value.store(last.wrapping_add(1), Release);
        h.tail.in_flight.store(0, Release);
        self.tx.unlock();
    }

    // ----- receiving -----------------------------------------------------------------------

    /// One attempt to claim the next message for a buffer of `buf_len` bytes. On `Done` the
    /// side stays locked until [`Spsc::released`].
    #[inline]
    pub fn try_claim_pop(
        &self,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
        buf_len: usize,
        repair: bool,
        wait: LockWait,
    ) -> Result<Attempt<PopToken>> {
        match self.rx.lock(&ring.header().wake.fence_required, wait) {
            Locked::Yes => {}
            Locked::Busy => return Ok(Attempt::WouldBlock),
            Locked::Reentered => return Err(reentered(name, Role::Receiver)),
        }
        let result = self.claim_pop_locked(ring, peers, name, buf_len, repair);
        if !matches!(result, Ok(Attempt::Done(_))) {
            self.rx.unlock();
        }
        result
    }

    #[inline]
    fn claim_pop_locked(
        &self,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
        buf_len: usize,
        repair: bool,
    ) -> Result<Attempt<PopToken>> {
        self.take_lease(&self.rx, Role::Receiver, ring, peers, name)?;
        let h = ring.header();
        let mut corrupt_reads = 0;
        // Bounded: each turn passes a position or re-reads one, and hostile bytes could
        // otherwise keep us here.
        for _ in 0..ring
            .capacity()
            .saturating_mul(2)
            .saturating_add(CORRUPT_RETRIES as u64)
        {
            // Relaxed: we hold the receiving role, so we are the head's only writer.
            let pos = h.head.value.load(Relaxed);
            match ring.spsc_claim_pop(pos, buf_len) {
                SpscPop::Message(token) => {
                    // Relaxed: read only by a receiver taking over after our death, when the
                    // kernel has made all our stores visible.
                    h.head.in_flight.store(pos.wrapping_add(1), Relaxed);
                    return Ok(Attempt::Done(token));
                }
                SpscPop::BufferTooSmall(needed) => {
                    return Err(Error::BufferTooSmall {
                        needed,
                        got: buf_len,
                    })
                }
                SpscPop::Empty => {
                    if repair
                        && self.rx.empty_polls_due()
                        && sender_passed(ring, pos)
                        && matches!(ring.spsc_claim_pop(pos, 0), SpscPop::Empty)
                    {
                        // The sender published `pos` (the tail, read with Acquire, says so,
                        // and the slot read after it still looks empty): hostile bytes reset
                        // its sequence word. Waiting would wait for ever: skip it.
                        ring.spsc_skip(pos);
                        h.head.value.store(pos.wrapping_add(1), Release);
                        wait::wake_senders(h, 1);
                        continue;
                    }
                    // Acquire: pairs with `Ring::close`.
                    if h.roles.closed.load(Acquire) == 0 {
                        return Ok(Attempt::WouldBlock);
                    }
                    match self.sender_state(ring, peers, pos) {
                        SenderState::Quiet => return Err(Error::Closed),
                        SenderState::Busy => {
                            if !matches!(ring.spsc_claim_pop(pos, 0), SpscPop::Empty) {
                                continue;
                            }
                            return Ok(Attempt::WouldBlock);
                        }
                    }
                }
                // Not published yet (the tail has not passed it), so hostile bytes, which
                // the sender overwrites when it publishes `pos`: passing or skipping it would
                // put the head past the tail and lose that message. (Once closed, nothing
                // will overwrite it: skip it, so the receiver can report `Closed`.)
                SpscPop::Released | SpscPop::Corrupt
                    if !sender_passed(ring, pos) && h.roles.closed.load(Acquire) == 0 =>
                {
                    return Ok(Attempt::WouldBlock);
                }
                SpscPop::Released => {
                    // Release: as in `released`.
                    h.head.value.store(pos.wrapping_add(1), Release);
                }
                SpscPop::Corrupt => {
                    corrupt_reads += 1;
                    if corrupt_reads < CORRUPT_RETRIES {
                        std::hint::spin_loop();
                        continue;
                    }
                    corrupt_reads = 0;
                    ring.spsc_skip(pos);
                    h.head.value.store(pos.wrapping_add(1), Release);
                    wait::wake_senders(h, 1);
                }
            }
        }
        Ok(Attempt::WouldBlock)
    }

    /// [`Spsc::try_claim_pop`] without repairs, in the common case only: this thread owns
    /// the receiving side and the handle holds the role. Then `Done` if the message at the
    /// head is published and fits in `buf_len` bytes (the side stays locked, as after
    /// [`Spsc::try_claim_pop`]), or `WouldBlock` if nothing is published there and the queue
    /// is open. `None` otherwise, with the side unlocked and nothing changed: the general
    /// path then finds out why.
    // Always inlined: see `try_claim_push_fast`.
    #[inline(always)]
    pub fn try_claim_pop_fast(&self, ring: &Ring, buf_len: usize) -> Option<Attempt<PopToken>> {
        let h = ring.header();
        if !self.rx.try_lock_owned(&h.wake.fence_required) {
            return None;
        }
        // Relaxed: as in `claim_pop_locked`.
        let pos = h.head.value.load(Relaxed);
        let verdict = match ring.spsc_claim_pop(pos, buf_len) {
            SpscPop::Message(token) => {
                // Relaxed: as in `claim_pop_locked`.
                h.head.in_flight.store(pos.wrapping_add(1), Relaxed);
                return Some(Attempt::Done(token));
            }
            // Acquire: as in `claim_pop_locked`.
            SpscPop::Empty if h.roles.closed.load(Acquire) == 0 => Some(Attempt::WouldBlock),
            _ => None,
        };
        self.rx.unlock();
        verdict
    }

    /// Decides whether a closed, empty queue can still receive a message: see the module
    /// notes ("Shutdown").
    fn sender_state(&self, ring: &Ring, peers: &dyn Peers, pos: u64) -> SenderState {
        let h = ring.header();
        // Pairs with the sender's light fence between its `in_flight` store and its load of
        // `closed`, which we have seen set.
        // Failed or not, the fence orders our side; on failure peers fence from now on.
        let _ = wait::heavy_fence(&h.wake.fence_required);
        // Acquire: pairs with the sender's Release stores of `in_flight`, so a 0 written
        // after a publication shows us that publication.
        let in_flight = h.tail.in_flight.load(Acquire);
        if in_flight != 0 {
            // Acquire: the holder's id, then its liveness (a system call, rare: only once
            // closed, empty and mid-send).
            let holder = h.roles.sender.load(Acquire);
            if holder != 0 && peers.is_alive(holder) {
                return SenderState::Busy;
            }
        }
        if matches!(ring.spsc_claim_pop(pos, 0), SpscPop::Empty) {
            SenderState::Quiet
        } else {
            SenderState::Busy
        }
    }

    /// Completes a receive of `bytes` at `pos`, claimed by [`Spsc::try_claim_pop`] and read:
    /// moves the head past it, which frees the slot.
    #[inline]
    pub fn released(&self, ring: &Ring, pos: u64, bytes: u64) {
        self.released_batch(ring, pos, 1, bytes);
    }

    /// The message at the position after `prev`, which this receive already holds (claimed by
    /// [`Spsc::try_claim_pop`] or by this, not yet released), if it is published and fits in
    /// `buf_len` bytes; `None` ends the batch (whatever else the slot holds is dealt with by
    /// the next plain receive). The side stays locked.
    #[inline]
    pub fn claim_next_pop(&self, ring: &Ring, prev: Cursor, buf_len: usize) -> Option<PopToken> {
        let at = ring.after(prev);
        let pos = at.position();
        match ring.spsc_claim_pop_at(at, buf_len) {
            SpscPop::Message(token) => {
                // Relaxed: as in `claim_pop_locked`. Positions from the head up to this one
                // are now taken (see `repair_after_dead_receiver`).
                ring.header()
                    .head
                    .in_flight
                    .store(pos.wrapping_add(1), Relaxed);
                Some(token)
            }
            _ => None,
        }
    }

    /// Frees the slot of the message at `pos`, read in a batch that goes on (the zero-copy
    /// batch receive releases each message as its reader returns): moves the head past it.
    /// The side stays locked until [`Spsc::released_batch`] ends the batch.
    #[inline]
    pub fn released_in_batch(&self, ring: &Ring, pos: u64) {
        // Release: as in `released_batch`.
        ring.header().head.value.store(pos.wrapping_add(1), Release);
    }

    /// Completes a receive of `messages` (`bytes` in all) ending with position `last`, all
    /// read: moves the head past them (freeing their slots), counts them, unlocks.
    #[inline]
    pub fn released_batch(&self, ring: &Ring, last: u64, messages: u64, bytes: u64) {
        self.rx
            .count(messages, bytes, &ring.header().stats.bytes_received, ring);
        // Release: our reads of the slots happen-before the sender's Acquire load of the head
        // that lets it overwrite them.
        ring.header()
            .head
            .value
            .store(last.wrapping_add(1), Release);
        self.rx.unlock();
    }

    /// Marks (or unmarks) that the holder of the sending side (`sender`) or the receiving
    /// side runs a caller's callback (see [`LockWait::NotForCallbacks`]); unlocking the side
    /// unmarks it.
    #[inline(always)]
    pub fn in_callback(&self, sender: bool, inside: bool) {
        let side = if sender { &self.tx } else { &self.rx };
        // Relaxed: a hint for waiters (see `wait_while`); the lock orders everything else.
        side.in_callback.store(inside, Relaxed);
    }

    /// Adds this handle's pending counts to the shared statistics: of the sending side
    /// (`sender`), the receiving side, or both (`None`); samples the depth into `peak_depth`
    /// at each side's flush if `sample_depth`.
    pub fn flush_stats(&self, ring: &Ring, sender: Option<bool>, sample_depth: bool) {
        let stats = &ring.header().stats;
        if sender != Some(false) {
            self.tx.flush(&stats.bytes_sent, ring, sample_depth);
        }
        if sender != Some(true) {
            self.rx.flush(&stats.bytes_received, ring, sample_depth);
        }
    }

    // ----- roles -----------------------------------------------------------------------------

    /// Makes sure this handle holds `role`, taking it if free or if its holder is dead
    /// (repairing what that holder left). Called with the side's lock held.
    #[inline(always)]
    fn take_lease(
        &self,
        side: &Side,
        role: Role,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
    ) -> Result<()> {
        // Relaxed: only accessed under the side's lock.
        if side.leased.load(Relaxed) {
            return Ok(());
        }
        Self::acquire_lease(side, role, ring, peers, name)
    }

    #[cold]
    #[inline(never)]
    fn acquire_lease(
        side: &Side,
        role: Role,
        ring: &Ring,
        peers: &dyn Peers,
        name: &str,
    ) -> Result<()> {
        let word = role.word(ring.header());
        let me = peers.me();
        // Acquire: pairs with the Release of a holder giving the role back (`release_roles`),
        // so its last stores to the ring are visible to us.
        let mut holder = word.load(Acquire);
        loop {
            if holder == me {
                break;
            }
            if holder != 0 && peers.is_alive(holder) {
                return Err(Error::RoleTaken {
                    name: name.to_string(),
                    role: role.name(),
                    holder,
                });
            }
            // AcqRel: Acquire as above; Release is not needed by anyone but harmless.
            match word.compare_exchange(holder, me, AcqRel, Acquire) {
                Ok(_) => {
                    if holder != 0 {
                        // Taken from a dead holder: the kernel released its liveness lock
                        // after its last store, and our liveness query (a system call)
                        // came after that, so its stores are visible.
                        match role {
                            Role::Sender => repair_after_dead_sender(ring),
                            Role::Receiver => repair_after_dead_receiver(ring),
                        }
                    }
                    break;
                }
                Err(now) => holder = now,
            }
        }
        side.leased.store(true, Relaxed);
        Ok(())
    }

    /// Gives back the roles this handle holds (when it is dropped).
    pub fn release_roles(&mut self, ring: &Ring, me: u32) {
        let h = ring.header();
        for (side, role) in [(&self.tx, Role::Sender), (&self.rx, Role::Receiver)] {
            if side.leased.load(Relaxed) {
                // Release: a later holder sees everything we did (see `take_lease`). A
                // compare-and-swap, so a role somebody took over is never released by us.
                let _ = role.word(h).compare_exchange(me, 0, Release, Relaxed);
                side.leased.store(false, Relaxed);
            }
        }
    }
}

/// Whether the sender has moved its tail past `pos` (so `pos` was published).
fn sender_passed(ring: &Ring, pos: u64) -> bool {
    // Acquire: pairs with the sender's Release store of the tail, made after it published
    // every position below it, so a sequence word read after this shows that publication.
    (ring.header().tail.value.load(Acquire).wrapping_sub(pos) as i64) > 0
}

/// A dead sender may have published positions up to `in_flight - 1` without moving the
/// tail: a batch publishes every position before the one `in_flight` names, and that one
/// perhaps (see [`Spsc::claim_next_push`]).
fn repair_after_dead_sender(ring: &Ring) {
    let h = ring.header();
    // Acquire: see `take_lease` (the dead holder's stores are visible by then anyway).
    let in_flight = h.tail.in_flight.load(Acquire);
    let tail = h.tail.value.load(Relaxed);
    let writing = in_flight.wrapping_sub(1);
    // Only a position the dead sender could have been writing: at most a ring ahead of the
    // tail (anything else is hostile bytes, and the tail stays).
    if in_flight != 0 && writing.wrapping_sub(tail) < ring.capacity() {
        // Published: the message is there, whether the receiver has read it or not (it
        // does not wait for the tail, and reading leaves the slot as it is), or the
        // receiver skipped it as corrupt (`Released`). The tail must pass it in each case:
        // left behind the head, it would make the ring look full for ever (and a rewrite of
        // the position would go to a slot the receiver has passed). Not published: the
        // tail moves up to it, past the batch's earlier positions, which are.
        let published = matches!(
            ring.spsc_claim_pop(writing, usize::MAX),
            SpscPop::Message(_) | SpscPop::Released
        );
        h.tail
            .value
            .store(if published { in_flight } else { writing }, Release);
    }
    h.tail.in_flight.store(0, Release);
}

/// A dead receiver may have taken messages from the head on (one, or a batch: up to
/// `head.in_flight`) without moving the head past them: deliver them again, flagged. (A
/// slot it skipped as corrupt without moving the head shows `Released`: pass it.)
fn repair_after_dead_receiver(ring: &Ring) {
    let h = ring.header();
    // Acquire: as in `repair_after_dead_sender`.
    let head = h.head.value.load(Acquire);
    let taken = h.head.in_flight.load(Acquire);
    // A receive takes at most a batch (anything else is hostile bytes: nothing to repair).
    if (1..=crate::RECV_BATCH_MAX as u64).contains(&taken.wrapping_sub(head)) {
        let mut pos = head;
        if matches!(ring.spsc_claim_pop(pos, usize::MAX), SpscPop::Released) {
            pos = pos.wrapping_add(1);
            h.head.value.store(pos, Release);
        }
        while pos != taken {
            if matches!(ring.spsc_claim_pop(pos, usize::MAX), SpscPop::Message(_)) {
                ring.spsc_mark_redelivered(pos);
            }
            pos = pos.wrapping_add(1);
        }
    }
    // Relaxed: read only by a later receiver taking over from us (see `claim_pop_locked`).
    h.head.in_flight.store(h.head.value.load(Relaxed), Relaxed);
}
