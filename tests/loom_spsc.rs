//! Model checking of the single-producer/single-consumer protocol (`src/spsc.rs`) with loom:
//! every interleaving of a few threads, and the weak-memory outcomes of their atomics, up to a
//! bound on preemptions.
//!
//! Run with `scripts/loom.sh` (`RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test
//! --release --test loom_spsc`). The code under test is the production one: [`Spsc`] (public
//! under `--cfg loom` only) driven the way `src/lib.rs` drives it (claim, `Ring::write`,
//! `Ring::publish`, `Spsc::published`; claim, `Ring::read`, `Spsc::released`; and the batch
//! calls as `src/zerocopy.rs` makes them), on a ring whose atomics are loom's
//! (`src/sync.rs`; `Ring::initialize` builds them in a heap buffer, as in
//! `tests/loom_ring.rs`). Payloads are plain memory, which loom does not track; every slot
//! header field is a loom atomic, so a slot read before its message was fully visible shows
//! as a wrong id or a checksum failure.
//!
//! # Handles
//! Each simulated process (participant) owns its own [`Spsc`] value, as each handle does,
//! and one thread at a time uses it (a value changes threads only at a spawn or a join).
//! That matters: the per-handle lock (`Side` in `spsc.rs`) is made of `std` atomics, which
//! loom does not see, and recognises its owner thread by a `std` thread-local token. Loom
//! runs all model threads as coroutines on the test's one OS thread, so they all read the
//! same `std` thread-local (checked: a value one model thread stores there, another reads):
//! two model threads sharing one `Spsc` would both take the lock's fast path at once, which
//! no real threads can. With one `Spsc` per thread, each lock has a single user at a time
//! and never contends (its spin waits never spin), so neither its `std` atomics nor the
//! shared token change what the model explores. (A handle moved to a new thread keeps the
//! fast path here where a real thread would take the slow path once; both are correct.)
//!
//! # Fences
//! The Dekker pair of the shutdown protocol (the sender's "store `in_flight`, light fence,
//! load `closed`" against the receiver's "load `closed`, heavy fence, load `in_flight`")
//! goes through `wait::light_fence` and `wait::heavy_fence`, which under loom are both real
//! `fence(SeqCst)`: the model checks the configuration where every process fences for real
//! (`fence_required`), not the `membarrier` asymmetry, which loom cannot express (there the
//! light side is only a compiler barrier, and the heavy side forces a barrier on the *other*
//! threads). Loom also makes every SeqCst fence happen-before every later one, which is
//! stronger than the C++ model, and the per-handle lock issues a light fence at each claim.
//! So an ordering bug whose window the peer's next claim closes can go unseen here; every
//! ordering mutation listed under "Mutations" below was caught nonetheless.
//!
//! # Deaths
//! A participant is "dead" when its flag in [`World`] says so. A thread that dies stops
//! using the ring, then clears its flag (SeqCst, like the kernel releasing a dead process's
//! liveness lock after its last store), so a handle that sees it dead and takes its role
//! over sees all it did. A dead handle's role stays leased to it, as after a crash.
//!
//! # Bounded waits
//! As in `tests/loom_ring.rs`: two threads that spin waiting for a third make loom's paths
//! grow without end, so except where each waiting thread's wait is surely ended by the
//! others, threads make at most [`TRIES`] attempts; after they are joined, [`drain`]
//! receives what is left, alone. The checks compare what was published (sends that
//! returned success, and a dead sender's publications) with what was received: exactly once
//! each, in the order sent, flagged `redelivered` exactly when a dead receiver had it.
//!
//! # Mutations
//! Each of these changes to the production code, made one at a time, fails at least one
//! test here: `Ring::publish` or `spsc_claim_pop`'s load of `seq` made Relaxed (a stale
//! slot is read: checksum failure); no light fence between the sender's `in_flight` store
//! and its `closed` load, or no heavy fence in `sender_state`, or `in_flight = 0` stored
//! Relaxed in `published_batch`, or loaded Relaxed in `sender_state` (a sent message is
//! left behind `Closed`); the dead-sender repair ignoring a publication (a message is
//! overwritten) or assuming one (the ring wedges); the dead-receiver repair not flagging,
//! or the claim not recording the taken position in `head.in_flight` (no `redelivered`
//! flag); the receiver's head store or the sender's head reload made Relaxed (a later
//! message inherits the `redelivered` flag of the slot's previous lap).
//!
//! Not modelled: hostile bytes (corrupt sequence words, a head past the tail), the futex
//! wake-ups (`wait::wake_*`, private; nobody sleeps here), two handles contending for one
//! role at once (each takeover here has one candidate at a time), the byte and depth
//! statistics, and the every-16th-empty-poll tail check (claims are made with `repair =
//! false`, which only gates that check).
#![cfg(loom)]

mod heap_ring;
mod loom_world;

use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;
use loom::thread;

use heap_ring::HeapRing;
use loom_world::{Peer, World};
use shmq::layout::{FLAG_CHECKSUM, FLAG_SPSC};
use shmq::ring::{MessageMeta, PopToken, PushToken, Ring};
use shmq::spsc::{LockWait, Spsc};
use shmq::{Attempt, Error};

/// Every message is its id, eight bytes.
const MESSAGE_SIZE: u32 = 8;

/// Attempts a thread makes before it gives up (see "Bounded waits" above).
const TRIES: usize = 3;

/// The queue name errors would carry.
const NAME: &str = "loom";

/// A single-producer/single-consumer ring of `capacity` slots in heap memory, shared by the
/// model's threads.
fn heap_ring(capacity: u32) -> Arc<HeapRing> {
    let q = HeapRing::new(capacity, MESSAGE_SIZE, FLAG_CHECKSUM | FLAG_SPSC);
    assert!(q.ring.is_spsc());
    Arc::new(q)
}

impl World {
    /// A new handle of participant `id`, with its own roles and per-role locks.
    fn handle(&self, id: u32) -> Handle {
        Handle {
            spsc: Spsc::default(),
            peer: self.peer(id),
        }
    }
}

/// One handle of a simulated process (see "Handles" above).
struct Handle {
    spsc: Spsc,
    peer: Peer,
}

impl Handle {
    /// This participant stops for good: from now on another handle may take its roles over.
    fn die(&self) {
        self.peer.die();
    }
}

/// What one send attempt did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Sent {
    Yes,
    Full,
    Closed,
    RoleTaken,
}

/// What one receive attempt found.
#[derive(Debug)]
enum Got {
    Message(MessageMeta),
    Empty,
    Closed,
    RoleTaken,
}

/// The sending side of one attempt, as `CrossProcessQueue` makes it: the common case
/// (`claim_push_fast`), then the general one (`try_claim_push`).
fn claim_push(ring: &Ring, h: &Handle) -> Result<PushToken, Sent> {
    match h.spsc.try_claim_push_fast(ring) {
        Some(Attempt::Done(token)) => return Ok(token),
        Some(Attempt::WouldBlock) => return Err(Sent::Full),
        None => {}
    }
    // Each model thread has its own `Spsc`, so its side lock is never contended.
    match h
        .spsc
        .try_claim_push(ring, &h.peer, NAME, LockWait::Forever)
    {
        Ok(Attempt::Done(token)) => Ok(token),
        Ok(Attempt::WouldBlock) => Err(Sent::Full),
        Err(Error::Closed) => Err(Sent::Closed),
        Err(Error::RoleTaken { .. }) => Err(Sent::RoleTaken),
        Err(e) => panic!("claim_push: {e}"),
    }
}

/// Writes message `id` into a claimed slot and publishes it (`Ring::publish`), without
/// completing the send; returns its position.
fn write_and_publish(ring: &Ring, token: PushToken, id: u64) -> u64 {
    let pos = token.position();
    ring.write(&token, id, 0, &id.to_le_bytes());
    ring.publish(token);
    pos
}

/// One attempt to send `id`, as `CrossProcessQueue::send_with` makes it (through `claim_for_send`).
fn try_send(ring: &Ring, h: &Handle, id: u64) -> Sent {
    match claim_push(ring, h) {
        Ok(token) => {
            let pos = write_and_publish(ring, token, id);
            h.spsc.published(ring, pos, u64::from(MESSAGE_SIZE));
            Sent::Yes
        }
        Err(blocked) => blocked,
    }
}

/// Sends `id`, yielding while the ring is full: `Yes` or `Closed`. Only for a thread whose
/// wait the others are sure to end.
fn send(ring: &Ring, h: &Handle, id: u64) -> Sent {
    loop {
        match try_send(ring, h, id) {
            Sent::Full => thread::yield_now(),
            Sent::RoleTaken => panic!("sending role taken"),
            done => return done,
        }
    }
}

/// At most [`TRIES`] attempts to send `id` (yielding between them, while the ring is full
/// or the role's holder is alive); whether it was sent.
fn try_send_some(ring: &Ring, h: &Handle, id: u64) -> bool {
    for _ in 0..TRIES {
        match try_send(ring, h, id) {
            Sent::Yes => return true,
            Sent::Closed => return false,
            Sent::Full | Sent::RoleTaken => thread::yield_now(),
        }
    }
    false
}

/// One claim of a message, as `CrossProcessQueue` makes it: the common case
/// (`claim_pop_fast`), then the general one (`try_claim_pop`).
fn claim_pop(ring: &Ring, h: &Handle) -> Result<PopToken, Got> {
    match h.spsc.try_claim_pop_fast(ring, MESSAGE_SIZE as usize) {
        Some(Attempt::Done(token)) => return Ok(token),
        Some(Attempt::WouldBlock) => return Err(Got::Empty),
        None => {}
    }
    match h.spsc.try_claim_pop(
        ring,
        &h.peer,
        NAME,
        MESSAGE_SIZE as usize,
        false,
        LockWait::Forever,
    ) {
        Ok(Attempt::Done(token)) => Ok(token),
        Ok(Attempt::WouldBlock) => Err(Got::Empty),
        Err(Error::Closed) => Err(Got::Closed),
        Err(Error::RoleTaken { .. }) => Err(Got::RoleTaken),
        Err(e) => panic!("claim_pop: {e}"),
    }
}

/// Reads a claimed message (without releasing it) and checks that it is intact.
fn read(ring: &Ring, token: &PopToken) -> MessageMeta {
    let mut buf = [0u8; MESSAGE_SIZE as usize];
    let meta = ring
        .read(token, &mut buf)
        .expect("an intact message (never a half-written or stale slot)");
    assert_eq!(meta.len, buf.len());
    assert_eq!(
        u64::from_le_bytes(buf),
        meta.id,
        "payload of another message"
    );
    meta
}

/// One receive attempt, as `CrossProcessQueue::recv_with` makes it (through `claim_for_recv`).
fn try_recv(ring: &Ring, h: &Handle) -> Got {
    match claim_pop(ring, h) {
        Ok(token) => {
            let pos = token.position();
            let meta = read(ring, &token);
            h.spsc.released(ring, pos, meta.len as u64);
            Got::Message(meta)
        }
        Err(nothing) => nothing,
    }
}

/// Receives until the ring is closed and drained, yielding while nothing comes. Only for a
/// thread whose wait the others are sure to end.
fn recv_all(ring: &Ring, h: &Handle) -> Vec<MessageMeta> {
    let mut got = Vec::new();
    loop {
        match try_recv(ring, h) {
            Got::Message(meta) => got.push(meta),
            Got::Empty => thread::yield_now(),
            Got::Closed => return got,
            Got::RoleTaken => panic!("receiving role taken"),
        }
    }
}

/// At most [`TRIES`] receive attempts, yielding after each that finds nothing (or finds the
/// role held by a live handle).
fn recv_some(ring: &Ring, h: &Handle) -> Vec<MessageMeta> {
    let mut got = Vec::new();
    for _ in 0..TRIES {
        match try_recv(ring, h) {
            Got::Message(meta) => got.push(meta),
            Got::Empty | Got::RoleTaken => thread::yield_now(),
            Got::Closed => panic!("nobody closes here"),
        }
    }
    got
}

/// After every thread has finished: whatever is left, received by `h` (taking the
/// receiving role over if its holder is dead). Nobody else runs, so every attempt must make
/// progress.
fn drain(ring: &Ring, h: &Handle) -> Vec<MessageMeta> {
    let mut got = Vec::new();
    for _ in 0..8 {
        match try_recv(ring, h) {
            Got::Message(meta) => got.push(meta),
            Got::Empty | Got::Closed => return got,
            Got::RoleTaken => panic!("receiving role held by a live handle"),
        }
    }
    panic!(
        "the ring does not drain: head {}, tail {}",
        ring.head_position(),
        ring.tail_position()
    );
}

/// One attempt at a send batch of `ids`, as `CrossProcessQueue::send_batch_with` makes it
/// (claim, then write and `Ring::publish` each message, `Spsc::claim_next_push` for the
/// next, `Spsc::published_batch` at the end): how many were sent.
fn try_send_batch(ring: &Ring, h: &Handle, ids: &[u64]) -> Result<usize, Sent> {
    let mut token = claim_push(ring, h)?;
    let mut sent = 0;
    let last = loop {
        let at = token.cursor();
        let pos = write_and_publish(ring, token, ids[sent]);
        sent += 1;
        if sent == ids.len() {
            break pos;
        }
        match h.spsc.claim_next_push(ring, at) {
            Some(next) => token = next,
            None => break pos,
        }
    };
    let bytes = sent as u64 * u64::from(MESSAGE_SIZE);
    h.spsc.published_batch(ring, last, sent as u64, bytes);
    Ok(sent)
}

/// Claims and reads up to `max` messages as `CrossProcessQueue::recv_batch_with` does (a
/// claim, then `Spsc::claim_next_pop` for each next one), without releasing them; returns
/// them and the last position.
fn claim_batch(ring: &Ring, h: &Handle, max: usize) -> Result<(Vec<MessageMeta>, u64), Got> {
    let mut token = claim_pop(ring, h)?;
    let mut got = Vec::new();
    loop {
        let at = token.cursor();
        let pos = at.position();
        got.push(read(ring, &token));
        if got.len() == max {
            return Ok((got, pos));
        }
        match h.spsc.claim_next_pop(ring, at, MESSAGE_SIZE as usize) {
            Some(next) => token = next,
            None => return Ok((got, pos)),
        }
    }
}

/// One batch receive of up to `max` messages: claimed and read, then released together
/// (`Spsc::released_batch`).
fn try_recv_batch(ring: &Ring, h: &Handle, max: usize) -> Result<Vec<MessageMeta>, Got> {
    let (got, last) = claim_batch(ring, h, max)?;
    let bytes = got.len() as u64 * u64::from(MESSAGE_SIZE);
    h.spsc.released_batch(ring, last, got.len() as u64, bytes);
    Ok(got)
}

/// Claims and reads up to `max` messages as `CrossProcessQueue::recv_batch_in_place` does:
/// each is released (`Spsc::released_in_batch`) once read, before the next is claimed
/// (`Spsc::claim_next_pop`), and `Spsc::released_batch` ends the batch. With `die_holding`,
/// the `max`-th message is read but neither released nor the batch ended (the receiver
/// dies in its reader). Returns the released messages and the held one.
fn claim_batch_releasing_each(
    ring: &Ring,
    h: &Handle,
    max: usize,
    die_holding: bool,
) -> Result<(Vec<MessageMeta>, Option<MessageMeta>), Got> {
    let mut token = claim_pop(ring, h)?;
    let mut released = Vec::new();
    loop {
        let at = token.cursor();
        let meta = read(ring, &token);
        if die_holding && released.len() + 1 == max {
            return Ok((released, Some(meta)));
        }
        h.spsc.released_in_batch(ring, at.position());
        released.push(meta);
        let next = if released.len() == max {
            None
        } else {
            h.spsc.claim_next_pop(ring, at, MESSAGE_SIZE as usize)
        };
        match next {
            Some(t) => token = t,
            None => {
                let bytes = released.len() as u64 * u64::from(MESSAGE_SIZE);
                h.spsc
                    .released_batch(ring, at.position(), released.len() as u64, bytes);
                return Ok((released, None));
            }
        }
    }
}

fn ids(metas: &[MessageMeta]) -> Vec<u64> {
    metas.iter().map(|m| m.id).collect()
}

/// The ids of `metas` flagged `redelivered`.
fn redelivered(metas: &[MessageMeta]) -> Vec<u64> {
    metas
        .iter()
        .filter(|m| m.redelivered)
        .map(|m| m.id)
        .collect()
}

/// Runs `scenario` under loom for each ring capacity of `capacities`.
fn for_capacities(capacities: &[u32], scenario: impl Fn(u32) + Copy + Send + Sync + 'static) {
    for &capacity in capacities {
        loom::model(move || scenario(capacity));
    }
}

/// (a) One sender sends three messages, then closes, while one receiver receives until
/// `Closed`: all three arrive in order, once each, and the positions wrap around the ring
/// (every slot is reused). (Two threads: each one's wait is ended by the other.)
#[test]
fn three_messages_wrap_around() {
    for_capacities(&[1, 2], |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let sender = {
            let (q, h) = (q.clone(), world.handle(1));
            thread::spawn(move || {
                for id in 1..=3 {
                    assert_eq!(send(&q.ring, &h, id), Sent::Yes);
                }
                assert!(q.ring.close());
            })
        };
        let got = recv_all(&q.ring, &world.handle(3));
        sender.join().unwrap();
        assert_eq!(ids(&got), [1, 2, 3]);
        assert!(redelivered(&got).is_empty());
        assert_eq!(q.ring.head_position(), 3);
        assert_eq!(q.ring.tail_position(), 3);
    });
}

/// (a) with batches: the sender sends messages 1..=3 in batches (as many as fit each time,
/// waiting while the ring is full), the receiver receives batches of up to two until
/// `Closed`, released together or (`release_each`, the zero-copy batch) one by one. On one
/// slot every batch is a single message.
fn three_messages_in_batches(release_each: bool) {
    for_capacities(&[1, 2], move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let sender = {
            let (q, h) = (q.clone(), world.handle(1));
            thread::spawn(move || {
                let ids = [1, 2, 3];
                let mut next = 0;
                while next < ids.len() {
                    match try_send_batch(&q.ring, &h, &ids[next..]) {
                        Ok(sent) => next += sent,
                        Err(Sent::Full) => thread::yield_now(),
                        Err(other) => panic!("{other:?}"),
                    }
                }
                assert!(q.ring.close());
            })
        };
        let h = world.handle(3);
        let mut got = Vec::new();
        loop {
            let batch = if release_each {
                claim_batch_releasing_each(&q.ring, &h, 2, false).map(|(batch, _)| batch)
            } else {
                try_recv_batch(&q.ring, &h, 2)
            };
            match batch {
                Ok(batch) => got.extend(batch),
                Err(Got::Empty) => thread::yield_now(),
                Err(Got::Closed) => break,
                Err(other) => panic!("{other:?}"),
            }
        }
        sender.join().unwrap();
        assert_eq!(ids(&got), [1, 2, 3]);
        assert!(redelivered(&got).is_empty());
        assert_eq!(q.ring.head_position(), 3);
        assert_eq!(q.ring.tail_position(), 3);
    });
}

#[test]
fn three_messages_in_batches_released_together() {
    three_messages_in_batches(false);
}

#[test]
fn three_messages_in_batches_released_one_by_one() {
    three_messages_in_batches(true);
}

/// (b) Shutdown races with sends: the sender sends 1 then 2 (waiting while the ring is
/// full, stopping at `Closed`) while a receiver receives until `Closed` and the main thread
/// closes. Every send that returned success is received, in order, before the receiver
/// reports `Closed`; nothing else is. This is the Dekker pair of the module notes
/// ("Shutdown"): the sender's `in_flight` store, light fence, `closed` load against the
/// receiver's `closed` load, heavy fence, `in_flight` load (both real SeqCst fences here).
/// (The receiver's wait is ended by the close and the sends; the sender's by the receiver
/// or the close.)
#[test]
fn close_races_with_send() {
    for_capacities(&[1, 2], |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let sender = {
            let (q, h) = (q.clone(), world.handle(1));
            thread::spawn(move || {
                (1..=2)
                    .take_while(|&id| send(&q.ring, &h, id) == Sent::Yes)
                    .collect::<Vec<u64>>()
            })
        };
        let receiver = {
            let (q, h) = (q.clone(), world.handle(3));
            thread::spawn(move || recv_all(&q.ring, &h))
        };
        assert!(q.ring.close());
        let sent = sender.join().unwrap();
        let got = receiver.join().unwrap();
        assert_eq!(ids(&got), sent, "received before Closed vs sent");
        assert_eq!(q.ring.head_position(), q.ring.tail_position());
    });
}

/// Where a sender dies in a send (scenarios (c)).
#[derive(Clone, Copy, Debug)]
enum SenderDeath {
    /// After its claim (`in_flight` names the position), before writing anything.
    Claimed,
    /// After writing the slot, before publishing it: a half-done send.
    Written,
    /// After `Ring::publish`, before `Spsc::published` (the tail and `in_flight` not
    /// updated).
    Published,
}

/// Does what a sender dying at `death` in the send of `id`, claimed by `token`, did; returns
/// whether the message was published.
fn die_mid_send(ring: &Ring, token: PushToken, id: u64, death: SenderDeath) -> bool {
    match death {
        SenderDeath::Claimed => false,
        SenderDeath::Written => {
            ring.write(&token, id, 0, &id.to_le_bytes());
            false
        }
        SenderDeath::Published => {
            write_and_publish(ring, token, id);
            true
        }
    }
}

/// Sender 1 of the scenarios (c): after message 1 (sent before the others start), at most
/// [`TRIES`] attempts to claim a slot for message 2 (the ring may be full, or closed), then
/// death at `death` if it got one. Returns the messages it published.
fn first_sender(ring: &Ring, h: &Handle, death: SenderDeath) -> Vec<u64> {
    let mut published = vec![1];
    for _ in 0..TRIES {
        match claim_push(ring, h) {
            Ok(token) => {
                if die_mid_send(ring, token, 2, death) {
                    published.push(2);
                }
                break;
            }
            Err(Sent::Full) => thread::yield_now(),
            Err(Sent::Closed) => break,
            Err(other) => panic!("{other:?} (the role taken from a live sender?)"),
        }
    }
    h.die();
    published
}

/// (c) A sender dies mid-send; a new handle takes the sending role over (once the dead one's
/// liveness flag is clear) and sends more, while the receiver receives. Sender 1 sends
/// message 1 (before the others start), claims a slot for message 2 and dies at `death`;
/// sender 2 tries to send 3 (its attempts fail with `RoleTaken` while sender 1 lives).
/// After all are joined, the receiver drains the ring, sender 2 sends 4 (taking the role
/// over if it had not yet) and the receiver drains again. Every published message (1, 2 if
/// published, 3 if sent, 4) is received exactly once, in order, and nothing else: a
/// half-written slot is never read as a message (it is written again by sender 2, or left
/// unread).
fn dead_sender(death: SenderDeath) {
    for_capacities(&[1, 2], move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let h = world.handle(1);
        assert_eq!(try_send(&q.ring, &h, 1), Sent::Yes);
        let first = {
            let q = q.clone();
            thread::spawn(move || first_sender(&q.ring, &h, death))
        };
        let second = {
            let (q, h) = (q.clone(), world.handle(2));
            thread::spawn(move || {
                let sent = try_send_some(&q.ring, &h, 3);
                (h, sent)
            })
        };
        let receiver = world.handle(3);
        let mut got = recv_some(&q.ring, &receiver);
        let mut expected = first.join().unwrap();
        let (second, sent) = second.join().unwrap();
        if sent {
            expected.push(3);
        }
        got.extend(drain(&q.ring, &receiver));
        assert_eq!(
            try_send(&q.ring, &second, 4),
            Sent::Yes,
            "after the takeover"
        );
        expected.push(4);
        got.extend(drain(&q.ring, &receiver));
        assert_eq!(ids(&got), expected, "{death:?}");
        assert!(redelivered(&got).is_empty());
        assert_eq!(q.ring.head_position(), q.ring.tail_position());
    });
}

/// (c) The dead sender had claimed its slot and written nothing.
#[test]
fn sender_dies_after_claim() {
    dead_sender(SenderDeath::Claimed);
}

/// (c) The dead sender had written its slot but not published it.
#[test]
fn sender_dies_before_publishing() {
    dead_sender(SenderDeath::Written);
}

/// (c) The dead sender had published its message but not moved the tail.
#[test]
fn sender_dies_after_publishing() {
    dead_sender(SenderDeath::Published);
}

/// (c) and (b): the queue is closed while sender 1 dies mid-send and sender 2 tries to take
/// over and send 3 (as in [`dead_sender`]); the receiver receives until `Closed`. It must
/// not wait for ever for the dead sender's `in_flight` (the holder's liveness decides), and
/// must not report `Closed` before it has every published message (sender 1's, and 3 if
/// its send returned success). (Only the receiver waits: the close, the death and sender
/// 2's last attempt end it.)
fn closed_with_dead_sender(death: SenderDeath) {
    for_capacities(&[1, 2], move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let h = world.handle(1);
        assert_eq!(try_send(&q.ring, &h, 1), Sent::Yes);
        let first = {
            let q = q.clone();
            thread::spawn(move || first_sender(&q.ring, &h, death))
        };
        let second = {
            let (q, h) = (q.clone(), world.handle(2));
            thread::spawn(move || try_send_some(&q.ring, &h, 3))
        };
        let receiver = {
            let (q, h) = (q.clone(), world.handle(3));
            thread::spawn(move || recv_all(&q.ring, &h))
        };
        assert!(q.ring.close());
        let mut expected = first.join().unwrap();
        if second.join().unwrap() {
            expected.push(3);
        }
        let got = receiver.join().unwrap();
        assert_eq!(ids(&got), expected, "{death:?}");
    });
}

/// (c) and (b), the dead sender had claimed its slot.
#[test]
fn closed_after_sender_dies_after_claim() {
    closed_with_dead_sender(SenderDeath::Claimed);
}

/// (c) and (b), the dead sender had published its message but not moved the tail.
#[test]
fn closed_after_sender_dies_after_publishing() {
    closed_with_dead_sender(SenderDeath::Published);
}

/// (c) with a batch, on two slots: sender 1's batch publishes message 1, claims the next
/// position for message 2 (`claim_next_push`: `in_flight` now names it, the tail has not
/// moved) and dies at `death`. Sender 2 takes over (the repair moves the tail past message
/// 1, and past message 2 only if it was published) and sends 3; as in [`dead_sender`],
/// then 4 after the joins. If sender 2 takes the role first, sender 1 sends nothing.
fn dead_sender_mid_batch(death: SenderDeath) {
    for_capacities(&[2], move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let first = {
            let (q, h) = (q.clone(), world.handle(1));
            thread::spawn(move || {
                let mut published = Vec::new();
                match claim_push(&q.ring, &h) {
                    Ok(token) => {
                        let at = token.cursor();
                        write_and_publish(&q.ring, token, 1);
                        published.push(1);
                        let token = h.spsc.claim_next_push(&q.ring, at).expect("two free slots");
                        if die_mid_send(&q.ring, token, 2, death) {
                            published.push(2);
                        }
                    }
                    Err(Sent::RoleTaken) => {}
                    Err(other) => panic!("{other:?}"),
                }
                h.die();
                published
            })
        };
        let second = {
            let (q, h) = (q.clone(), world.handle(2));
            thread::spawn(move || {
                let sent = try_send_some(&q.ring, &h, 3);
                (h, sent)
            })
        };
        let receiver = world.handle(3);
        let mut got = recv_some(&q.ring, &receiver);
        let mut expected = first.join().unwrap();
        let (second, sent) = second.join().unwrap();
        if sent {
            expected.push(3);
        }
        got.extend(drain(&q.ring, &receiver));
        assert_eq!(
            try_send(&q.ring, &second, 4),
            Sent::Yes,
            "after the takeover"
        );
        expected.push(4);
        got.extend(drain(&q.ring, &receiver));
        assert_eq!(ids(&got), expected, "{death:?}");
        assert!(redelivered(&got).is_empty());
        assert_eq!(q.ring.head_position(), q.ring.tail_position());
    });
}

/// (c) with a batch: the dead sender had written the batch's second slot, not published it.
#[test]
fn sender_dies_mid_batch_before_publishing() {
    dead_sender_mid_batch(SenderDeath::Written);
}

/// (c) with a batch: the dead sender had published both messages, not moved the tail.
#[test]
fn sender_dies_mid_batch_after_publishing() {
    dead_sender_mid_batch(SenderDeath::Published);
}

/// What the first receiver of (d) does before it dies: `finish` complete receives, then one
/// receive (of a batch of up to `hold` messages, if more than one) claimed and read but never
/// released (`hold` 0: none); or, `release_each`, a zero-copy batch of up to `hold` that
/// releases each message it reads and dies reading the `hold`-th.
#[derive(Clone, Copy, Debug)]
struct ReceiverEnd {
    finish: usize,
    hold: usize,
    release_each: bool,
}

/// (d) A receiver dies holding a message (or a batch of them), or after complete receives;
/// a new handle takes the receiving role over while the sender sends 1 then 2. Receiver 1
/// takes the role before the others start, then receives as `end` says (at most [`TRIES`]
/// attempts for each receive); receiver 2 receives, its attempts failing with `RoleTaken`
/// while receiver 1 lives, and drains after all are joined. Every sent message reaches
/// receiver 2 exactly once, in order, except those receiver 1 completed; those receiver 1
/// died holding reach receiver 2 again, flagged `redelivered` (and counted), and no other
/// message is flagged.
fn dead_receiver(end: ReceiverEnd) {
    // A batch of two needs two slots.
    let capacities: &[u32] = if end.hold > 1 { &[2] } else { &[1, 2] };
    for_capacities(capacities, move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        // Receiver 1 takes the role (a receive that finds nothing) before the others start.
        let h = world.handle(3);
        assert!(matches!(claim_pop(&q.ring, &h), Err(Got::Empty)));
        let sender = {
            let (q, h) = (q.clone(), world.handle(1));
            thread::spawn(move || {
                (1..=2)
                    .take_while(|&id| try_send_some(&q.ring, &h, id))
                    .collect::<Vec<u64>>()
            })
        };
        let first = {
            let q = q.clone();
            thread::spawn(move || {
                let (mut done, mut held) = (Vec::new(), Vec::new());
                for _ in 0..end.finish {
                    for _ in 0..TRIES {
                        match try_recv(&q.ring, &h) {
                            Got::Message(meta) => {
                                done.push(meta);
                                break;
                            }
                            Got::Empty => thread::yield_now(),
                            other => panic!("{other:?}"),
                        }
                    }
                }
                if done.len() == end.finish && end.hold > 0 && end.release_each {
                    for _ in 0..TRIES {
                        match claim_batch_releasing_each(&q.ring, &h, end.hold, true) {
                            Ok((released, last)) => {
                                done.extend(released);
                                held.extend(last);
                                break;
                            }
                            Err(Got::Empty) => thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                } else if done.len() == end.finish && end.hold > 0 {
                    for _ in 0..TRIES {
                        match claim_batch(&q.ring, &h, end.hold) {
                            Ok((batch, _)) => {
                                held = batch;
                                break;
                            }
                            Err(Got::Empty) => thread::yield_now(),
                            Err(other) => panic!("{other:?}"),
                        }
                    }
                }
                h.die();
                (done, held)
            })
        };
        let second = world.handle(4);
        let mut got = recv_some(&q.ring, &second);
        let sent = sender.join().unwrap();
        let (done, held) = first.join().unwrap();
        got.extend(drain(&q.ring, &second));
        let (done, held) = (ids(&done), ids(&held));
        let first_got = [done.as_slice(), held.as_slice()].concat();
        assert_eq!(
            first_got,
            sent[..first_got.len()],
            "the first messages sent"
        );
        assert_eq!(ids(&got), sent[done.len()..], "{end:?}");
        assert_eq!(redelivered(&got), held, "flagged redelivered");
        let counted = q.ring.header().stats.redelivered.load(SeqCst);
        assert_eq!(counted, held.len() as u64, "counted as redelivered");
        assert_eq!(q.ring.head_position(), q.ring.tail_position());
    });
}

/// (d) The dead receiver held the message it had read: it is delivered again, flagged.
#[test]
fn receiver_dies_holding_a_message() {
    dead_receiver(ReceiverEnd {
        finish: 0,
        hold: 1,
        release_each: false,
    });
}

/// (d) with a batch, on two slots: the dead receiver held the (one or two) messages it had
/// read: all are delivered again, flagged, in order.
#[test]
fn receiver_dies_holding_a_batch() {
    dead_receiver(ReceiverEnd {
        finish: 0,
        hold: 2,
        release_each: false,
    });
}

/// (d) The dead receiver had finished its receive: nothing is delivered twice.
#[test]
fn finished_receiver_is_not_redelivered() {
    dead_receiver(ReceiverEnd {
        finish: 1,
        hold: 0,
        release_each: false,
    });
}

/// (d) The dead receiver had finished a receive, then held the next message: only that one
/// is delivered again.
#[test]
fn receiver_dies_holding_its_second_message() {
    dead_receiver(ReceiverEnd {
        finish: 1,
        hold: 1,
        release_each: false,
    });
}

/// (d) with a zero-copy batch on two slots: the dead receiver had released the first message
/// of its batch (if there were two) and died reading the next: only the message it died in
/// is delivered again.
#[test]
fn receiver_dies_inside_a_batch_released_one_by_one() {
    dead_receiver(ReceiverEnd {
        finish: 0,
        hold: 2,
        release_each: true,
    });
}
