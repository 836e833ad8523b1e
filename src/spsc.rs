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
//!   in-process lock held from a claim to its publication or release.
//! * **Sending position `p`** (the sender's own `tail`): store `in_flight = p + 1`, light
//!   fence, check `closed`, check the slot's `seq == 2p` (else the queue is full), write the
//!   slot, store `seq = 2p + 1` (Release), `tail = p + 1`, `in_flight = 0`.
//! * **Receiving position `p`** (its own `head`): `seq == 2p + 1` (Acquire), store the head
//!   line's `in_flight = p + 1` (the message is taken), read it, store `seq = 2(p + capacity)`
//!   (Release), `head = p + 1`.
//! * **Shutdown** sets `RolesLine::closed` (the tail cannot carry a flag: the sender writes it
//!   with plain stores). A receiver that finds the queue empty and closed reports `Closed`
//!   only once the sender is quiet: after a *heavy* fence (`membarrier`, see `wait.rs`) it
//!   reads the sender's `in_flight`; the sender's "store `in_flight`, light fence, load
//!   `closed`" makes this a Dekker pair, so either the sender sees `closed` and publishes
//!   nothing, or the receiver sees the send in flight and waits for it (unless the sender is
//!   dead). So a send that succeeds is never stranded behind a receiver that saw `Closed`.
//! * **Taking over from a dead sender**: if its `in_flight` names a position whose message
//!   was published, the tail moves past it; otherwise the half-written slot is simply written
//!   again (no receiver reads a slot before its `seq` says published).
//! * **Taking over from a dead receiver**: a position it had taken (`in_flight`) but not
//!   released is delivered again with the `redelivered` flag; one it had released but whose
//!   head it had not moved is passed.
//!
//! Corrupt sequence words (written by no correct peer) are overwritten by the sender and
//! skipped by the receiver, each counted under `corrupted`, so hostile bytes cannot wedge the
//! queue or make it read out of bounds.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};

use crate::layout::Header;
use crate::ring::{Peers, PopToken, PushToken, Ring, SpscPop, SpscPush};
use crate::sync::AtomicU32;
use crate::{wait, Attempt, Error, Result};

/// How many times a corrupt-looking sequence word is re-read before the slot is skipped.
const CORRUPT_RETRIES: u32 = 64;

/// A handle's two roles on a single-producer/single-consumer queue.
#[derive(Default)]
pub(crate) struct Spsc {
    tx: Side,
    rx: Side,
}

/// One role as this handle holds it.
#[derive(Default)]
struct Side {
    /// In-process turn-taking between threads sharing the handle: held from a claim until
    /// the slot is published or released.
    locked: AtomicBool,
    /// Whether this handle holds the role's lease in the header. Only read or written with
    /// `locked` held (or with `&mut` access at drop).
    leased: AtomicBool,
}

impl Side {
    #[inline]
    fn lock(&self) {
        let mut spins = 0u32;
        // Acquire: pairs with `unlock`'s Release, so the previous holder's stores to the
        // ring (its tail or head) are visible to us.
        while self
            .locked
            .compare_exchange_weak(false, true, Acquire, Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    #[inline]
    fn unlock(&self) {
        // Release: see `lock`.
        self.locked.store(false, Release);
    }
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

    fn word(self, h: &Header) -> &AtomicU32 {
        match self {
            Role::Sender => &h.roles.sender,
            Role::Receiver => &h.roles.receiver,
        }
    }
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
    ) -> Result<Attempt<PushToken>> {
        self.tx.lock();
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
        // Relaxed: we hold the sending role, so we are the tail's only writer.
        let tail = h.tail.value.load(Relaxed);
        // Relaxed: the light fence orders it before the load of `closed` for a receiver
        // that reads it after a heavy fence (module notes).
        h.tail.in_flight.store(tail.wrapping_add(1), Relaxed);
        wait::light_fence(&h.wake.fence_required);
        // Relaxed: ordered by the fences above; `closed` publishes no data.
        if h.roles.closed.load(Relaxed) != 0 {
            // Release: a receiver that sees 0 sees everything we published before.
            h.tail.in_flight.store(0, Release);
            wait::wake_receivers(h);
            return Err(Error::Closed);
        }
        match ring.spsc_claim_push(tail) {
            SpscPush::Free(token) => Ok(Attempt::Done(token)),
            SpscPush::Corrupt(token) => {
                h.stats.corrupted.fetch_add(1, Relaxed);
                Ok(Attempt::Done(token))
            }
            SpscPush::Full => {
                h.tail.in_flight.store(0, Release);
                Ok(Attempt::WouldBlock)
            }
        }
    }

    /// Completes a send claimed by [`Spsc::try_claim_push`] after the ring published `pos`.
    #[inline]
    pub fn published(&self, ring: &Ring, pos: u64) {
        let h = ring.header();
        // Release (both): a receiver or `len` that sees the new tail, or `in_flight == 0`,
        // also sees the publication before it.
        h.tail.value.store(pos.wrapping_add(1), Release);
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
    ) -> Result<Attempt<PopToken>> {
        self.rx.lock();
        let result = self.claim_pop_locked(ring, peers, name, buf_len);
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
                    wait::wake_senders(h);
                }
            }
        }
        Ok(Attempt::WouldBlock)
    }

    /// Decides whether a closed, empty queue can still receive a message: see the module
    /// notes ("Shutdown").
    fn sender_state(&self, ring: &Ring, peers: &dyn Peers, pos: u64) -> SenderState {
        let h = ring.header();
        // Pairs with the sender's light fence between its `in_flight` store and its load of
        // `closed`, which we have seen set.
        wait::heavy_fence(&h.wake.fence_required);
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

    /// Completes a receive claimed by [`Spsc::try_claim_pop`] after the ring released `pos`.
    #[inline]
    pub fn released(&self, ring: &Ring, pos: u64) {
        // Release: `len` and a receiver taking over see the release before the new head.
        ring.header().head.value.store(pos.wrapping_add(1), Release);
        self.rx.unlock();
    }

    // ----- roles -----------------------------------------------------------------------------

    /// Makes sure this handle holds `role`, taking it if free or if its holder is dead
    /// (repairing what that holder left). Called with the side's lock held.
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

/// A dead sender may have published position `in_flight - 1` without moving the tail.
fn repair_after_dead_sender(ring: &Ring) {
    let h = ring.header();
    // Acquire: see `take_lease` (the dead holder's stores are visible by then anyway).
    let in_flight = h.tail.in_flight.load(Acquire);
    if in_flight != 0 && ring.spsc_is_published(in_flight.wrapping_sub(1)) {
        h.tail.value.store(in_flight, Release);
    }
    h.tail.in_flight.store(0, Release);
}

/// A dead receiver may have taken the message at the head (deliver it again, flagged), or
/// released it without moving the head (pass it).
fn repair_after_dead_receiver(ring: &Ring) {
    let h = ring.header();
    // Acquire: as in `repair_after_dead_sender`.
    let head = h.head.value.load(Acquire);
    let taken = h.head.in_flight.load(Acquire);
    if taken == head.wrapping_add(1) {
        match ring.spsc_claim_pop(head, usize::MAX) {
            SpscPop::Released => h.head.value.store(taken, Release),
            SpscPop::Message(_) => ring.spsc_mark_redelivered(head),
            _ => {}
        }
    }
    // Relaxed: read only by a later receiver taking over from us (see `claim_pop_locked`).
    h.head.in_flight.store(h.head.value.load(Relaxed), Relaxed);
}
