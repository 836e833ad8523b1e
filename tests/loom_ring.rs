//! Model checking of the ring (`src/ring.rs`) with loom: every interleaving of a few threads,
//! and the weak-memory outcomes of their atomics, up to a bound on preemptions.
//!
//! Run with `scripts/loom.sh` (`RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test
//! --release --test loom_ring`). Under `--cfg loom` the ring's atomics are loom's (see
//! `src/sync.rs`) and `Ring::initialize` builds them in a heap buffer; the code under test is
//! the production ring, not a copy. Payloads are plain memory, which loom does not track: a
//! message read after its slot was reused would show as a wrong id or a checksum failure.
//!
//! A participant is "dead" when its flag in [`World`] says so. A thread that dies stops
//! using the ring, then clears its flag (SeqCst, like the kernel releasing a dead process's
//! liveness lock after its last store), so a repairer that sees it dead sees all it did.
//!
//! Bounded waits: loom explores every choice of thread after a `yield_now`, so two threads
//! that spin waiting for a third make the paths grow without end ("exceeded maximum number of
//! branches"). Except where one thread alone waits, threads make at most [`TRIES`] attempts;
//! after they are joined, [`drain`] receives what is left, alone. The checks then compare
//! what was sent (sends that returned success) with what was received, in the threads or by
//! the drain: exactly once each.
#![cfg(loom)]

mod heap_ring;
mod loom_world;

use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;
use loom::thread;

use heap_ring::{run_tokens, HeapRing};
use loom_world::{Peer, World};
use shmq::layout::FLAG_CHECKSUM;
use shmq::ring::{HeadRepair, Peers, PopBlocked, PopToken, PushBlocked, Ring};

/// Every message is its id, eight bytes.
const MESSAGE_SIZE: u32 = 8;

/// Attempts a thread makes before it gives up (see "Bounded waits" above).
const TRIES: usize = 3;

/// A ring of `capacity` slots in heap memory, shared by the model's threads.
fn heap_ring(capacity: u32) -> Arc<HeapRing> {
    Arc::new(HeapRing::new(capacity, MESSAGE_SIZE, FLAG_CHECKSUM))
}

fn push(ring: &Ring, p: &Peer, id: u64) -> Result<(), PushBlocked> {
    let t = ring.claim_push(p)?;
    ring.write(&t, id, 0, &id.to_le_bytes());
    ring.publish(t);
    Ok(())
}

/// Sends `id`, yielding while the ring is full; `Err` only if it is closed. Only for a thread
/// whose wait the others are sure to end.
fn send(ring: &Ring, p: &Peer, id: u64) -> Result<(), PushBlocked> {
    loop {
        match push(ring, p, id) {
            Err(PushBlocked::Full) => thread::yield_now(),
            other => return other,
        }
    }
}

/// At most [`TRIES`] attempts to send `id` (yielding between them, repairing the tail with
/// `repair`); whether it was sent.
fn try_send(ring: &Ring, p: &Peer, id: u64, repair: bool) -> bool {
    for _ in 0..TRIES {
        match push(ring, p, id) {
            Ok(()) => return true,
            Err(PushBlocked::Closed) => return false,
            Err(PushBlocked::Full) => {
                if repair {
                    ring.repair_tail(p);
                }
                thread::yield_now();
            }
        }
    }
    false
}

/// Reads and releases a claimed message; checks that it is intact.
fn take(ring: &Ring, token: PopToken) -> u64 {
    let mut buf = [0u8; MESSAGE_SIZE as usize];
    let meta = ring.read(&token, &mut buf).expect("an intact message");
    ring.release(token);
    assert_eq!(meta.len, buf.len());
    assert_eq!(
        u64::from_le_bytes(buf),
        meta.id,
        "payload of another message"
    );
    meta.id
}

/// One receive attempt; with `repair`, also tries the repairs a blocked receiver makes.
fn try_recv(ring: &Ring, p: &Peer, repair: bool) -> Result<u64, PopBlocked> {
    match ring.claim_pop(p, MESSAGE_SIZE as usize) {
        Ok(token) => Ok(take(ring, token)),
        Err(PopBlocked::InProgress) if repair => match ring.repair_head(p) {
            HeadRepair::Message(token) => Ok(take(ring, token)),
            _ => Err(PopBlocked::InProgress),
        },
        Err(PopBlocked::Empty) if repair => match ring.adopt_orphan(p, MESSAGE_SIZE as usize) {
            Ok(Some(token)) => Ok(take(ring, token)),
            _ => Err(PopBlocked::Empty),
        },
        Err(e) => Err(e),
    }
}

/// Receives until the ring is closed and drained, yielding while nothing comes. Only for a
/// thread whose wait the others are sure to end.
fn recv_all(ring: &Ring, p: &Peer) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match try_recv(ring, p, false) {
            Ok(id) => got.push(id),
            Err(PopBlocked::Closed) => return got,
            Err(PopBlocked::BufferTooSmall(n)) => panic!("message of {n} bytes"),
            Err(_) => thread::yield_now(),
        }
    }
}

/// At most `tries` receive attempts, yielding after each that finds nothing.
fn recv_some(ring: &Ring, p: &Peer, repair: bool, tries: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..tries {
        match try_recv(ring, p, repair) {
            Ok(id) => got.push(id),
            Err(PopBlocked::BufferTooSmall(n)) => panic!("message of {n} bytes"),
            Err(_) => thread::yield_now(),
        }
    }
    got
}

/// After every thread has finished: whatever is left, received by a fresh participant that
/// repairs what the dead left behind. Nobody else runs, so every attempt must make progress.
fn drain(ring: &Ring, p: &Peer) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..8 {
        match try_recv(ring, p, true) {
            Ok(id) => got.push(id),
            Err(PopBlocked::Empty | PopBlocked::Closed) => return got,
            // A dead producer's position, skipped by the repair: look again.
            Err(PopBlocked::InProgress) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!(
        "the ring does not drain: head {}, tail {}",
        ring.head_position(),
        ring.tail_position()
    );
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// Runs `scenario` under loom for a ring of one slot and for one of two.
fn for_capacities(scenario: impl Fn(u32) + Copy + Send + Sync + 'static) {
    for capacity in [1, 2] {
        loom::model(move || scenario(capacity));
    }
}

/// (1) Two producers send one message each while a consumer receives: every sent message is
/// received exactly once.
#[test]
fn two_producers_one_consumer() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let producers: Vec<_> = (1..=2u32)
            .map(|id| {
                let (q, p) = (q.clone(), world.peer(id));
                let msg = u64::from(id) * 10;
                thread::spawn(move || try_send(&q.ring, &p, msg, false).then_some(msg))
            })
            .collect();
        let mut got = recv_some(&q.ring, &world.peer(3), false, TRIES);
        let mut sent = Vec::new();
        for producer in producers {
            sent.extend(producer.join().unwrap());
        }
        if capacity == 2 {
            assert_eq!(sent.len(), 2, "two messages always fit");
        }
        got.extend(drain(&q.ring, &world.peer(4)));
        assert_eq!(sorted(got), sorted(sent));
    });
}

/// Claims a run of up to `max` slots and publishes them as `ids` (from `first`); the ids
/// sent. A run is a contiguous block from the tail, so its ids are consecutive positions.
fn push_run(ring: &Ring, p: &Peer, first: u64, max: usize) -> Vec<u64> {
    let Ok((token, n)) = ring.claim_push_run(p, max) else {
        return Vec::new();
    };
    assert!((1..=max).contains(&n), "run of {n} for at most {max}");
    let mut at = token.cursor();
    ring.write(&token, first, 0, &first.to_le_bytes());
    ring.publish(token);
    for i in 1..n as u64 {
        let t = ring.run_token(at);
        at = t.cursor();
        ring.write(&t, first + i, 0, &(first + i).to_le_bytes());
        ring.publish(t);
    }
    (first..first + n as u64).collect()
}

/// (1b) A producer claims a run of two slots (one tail move for both) while another sends one
/// message and a consumer receives: every message sent is received once, and the run's
/// messages in their order. With one slot the run is one message (the second slot is the
/// first one's next lap).
#[test]
fn a_run_races_a_single_producer() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let runner = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || push_run(&q.ring, &p, 10, 2))
        };
        let single = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || try_send(&q.ring, &p, 20, false).then_some(20))
        };
        let mut got = recv_some(&q.ring, &world.peer(3), false, TRIES);
        let mut sent = runner.join().unwrap();
        if capacity == 1 {
            assert!(sent.len() <= 1, "a run past the capacity: {sent:?}");
        }
        sent.extend(single.join().unwrap());
        got.extend(drain(&q.ring, &world.peer(4)));
        let run: Vec<u64> = got.iter().copied().filter(|&id| id < 20).collect();
        assert!(run.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
        assert_eq!(sorted(got), sorted(sent));
    });
}

/// (1d) A producer claims a run of two, publishes the first message and gives the second
/// position up (its zero-copy batch ended early: `Ring::give_up`), while another producer
/// sends and a consumer receives with repairs: every message sent is received once, the
/// given-up position is skipped (counted `abandoned`) and nothing else is, and the head
/// meets the tail.
#[test]
fn a_run_given_up_races_a_producer_and_a_receiver() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let runner = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || {
                let Ok((token, n)) = q.ring.claim_push_run(&p, 2) else {
                    return (Vec::new(), 0);
                };
                let at = token.cursor();
                q.ring.write(&token, 10, 0, &10u64.to_le_bytes());
                q.ring.publish(token);
                if n == 2 {
                    q.ring.give_up(q.ring.run_token(at), p.me());
                }
                (vec![10], n as u64 - 1)
            })
        };
        let single = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || try_send(&q.ring, &p, 20, false).then_some(20))
        };
        let mut got = recv_some(&q.ring, &world.peer(3), true, TRIES);
        let (mut sent, given_up) = runner.join().unwrap();
        sent.extend(single.join().unwrap());
        got.extend(drain(&q.ring, &world.peer(4)));
        assert_eq!(sorted(got), sorted(sent.clone()));
        let abandoned = q.ring.header().stats.abandoned.load(SeqCst);
        assert_eq!(abandoned, given_up, "sent {sent:?}");
        let positions = sent.len() as u64 + given_up;
        assert_eq!(q.ring.head_position(), positions);
        assert_eq!(q.ring.tail_position(), positions);
    });
}

/// (1c) A run of two races a shutdown: the messages of the run that the final tail covers
/// are sent and received, the rest withdrawn (not sent, and no receiver waits for them).
#[test]
fn a_run_races_close() {
    loom::model(|| {
        let q = heap_ring(2);
        let world = World::new();
        let runner = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || push_run(&q.ring, &p, 10, 2))
        };
        q.ring.close();
        let sent = runner.join().unwrap();
        let got = drain(&q.ring, &world.peer(2));
        assert_eq!(got, sent);
        assert!(matches!(
            q.ring.claim_pop(&world.peer(2), MESSAGE_SIZE as usize),
            Err(PopBlocked::Closed)
        ));
    });
}

/// (2) One producer sends two messages then closes while two consumers receive: each sent
/// message exactly once, and each consumer sees them in the order they were sent.
#[test]
fn one_producer_two_consumers() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let consumers: Vec<_> = (2..=3u32)
            .map(|id| {
                let (q, p) = (q.clone(), world.peer(id));
                thread::spawn(move || recv_some(&q.ring, &p, false, 2))
            })
            .collect();
        let producer = world.peer(1);
        let sent: Vec<u64> = (1..=2)
            .take_while(|&id| try_send(&q.ring, &producer, id, false))
            .collect();
        if capacity == 2 {
            assert_eq!(sent.len(), 2, "two messages always fit");
        }
        assert!(q.ring.close());
        let mut all = Vec::new();
        for consumer in consumers {
            let got = consumer.join().unwrap();
            assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
            all.extend(got);
        }
        all.extend(drain(&q.ring, &world.peer(4)));
        assert_eq!(sorted(all), sent);
    });
}

/// Claims a run of up to `max` messages from the head; their tokens, in order.
fn claim_pop_run(ring: &Ring, p: &Peer, max: usize) -> Vec<PopToken> {
    let Ok((first, n)) = ring.claim_pop_run(p, MESSAGE_SIZE as usize, max) else {
        return Vec::new();
    };
    assert!((1..=max).contains(&n), "run of {n} for at most {max}");
    run_tokens(ring, first, n)
}

/// (2b) A consumer claims a run of two messages (one head move for both) while another
/// receives and a producer sends into the slots they free: every message sent is received
/// once, and the run's messages are consecutive positions, in order.
#[test]
fn a_receive_run_races_a_single_consumer() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let mut sent: Vec<u64> = (1..=u64::from(capacity)).collect();
        for &id in &sent {
            push(&q.ring, &world.peer(1), id).unwrap();
        }
        let runner = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || {
                let tokens = claim_pop_run(&q.ring, &p, 2);
                let positions: Vec<u64> = tokens.iter().map(|t| t.position()).collect();
                let got: Vec<u64> = tokens.into_iter().map(|t| take(&q.ring, t)).collect();
                (positions, got)
            })
        };
        let single = {
            let (q, p) = (q.clone(), world.peer(3));
            thread::spawn(move || recv_some(&q.ring, &p, false, TRIES))
        };
        let extra = u64::from(capacity) + 1;
        if try_send(&q.ring, &world.peer(1), extra, false) {
            sent.push(extra);
        }
        let (positions, mut got) = runner.join().unwrap();
        assert!(
            positions.windows(2).all(|w| w[1] == w[0] + 1),
            "a run of non-consecutive positions: {positions:?}"
        );
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
        got.extend(single.join().unwrap());
        got.extend(drain(&q.ring, &world.peer(4)));
        assert_eq!(sorted(got), sent);
    });
}

/// (2c) A consumer claims a run of two messages and dies before reading them (and maybe
/// before moving the head past them) while another consumer receives with repairs and a
/// producer that finds the ring full repairs the tail: every message is delivered exactly
/// once, and each of the run's counted as redelivered once.
#[test]
fn a_receiver_dies_holding_a_run() {
    loom::model(|| {
        let q = heap_ring(2);
        let world = World::new();
        for id in 1..=2 {
            push(&q.ring, &world.peer(1), id).unwrap();
        }
        let dying = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || {
                let held = claim_pop_run(&q.ring, &p, 2).len();
                p.die();
                held
            })
        };
        let producer = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || try_send(&q.ring, &p, 3, true))
        };
        let mut all = recv_some(&q.ring, &world.peer(3), true, TRIES);
        let held = dying.join().unwrap();
        let sent = producer.join().unwrap();
        all.extend(drain(&q.ring, &world.peer(4)));
        let expected = 1..=if sent { 3 } else { 2 };
        assert_eq!(sorted(all), expected.collect::<Vec<_>>());
        let redelivered = q.ring.header().stats.redelivered.load(SeqCst);
        assert_eq!(redelivered, held as u64);
    });
}

/// (3) Wrap-around: with one slot, the second message reuses the slot one lap later. (Two
/// threads: each one's wait is ended by the other.)
#[test]
fn wrap_around() {
    loom::model(|| {
        let q = heap_ring(1);
        let world = World::new();
        let producer = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || {
                send(&q.ring, &p, 1).unwrap();
                send(&q.ring, &p, 2).unwrap();
                assert!(q.ring.close());
            })
        };
        let got = recv_all(&q.ring, &world.peer(2));
        producer.join().unwrap();
        assert_eq!(got, [1, 2]);
        assert_eq!(q.ring.head_position(), 2);
        assert_eq!(q.ring.tail_position(), 2);
    });
}

/// (4) Close races with a push: either the push succeeded and the consumer gets the message
/// before `Closed`, or it returned `Closed` and nothing is delivered. (The consumer alone
/// waits; the push and the close end its wait.)
#[test]
fn close_races_with_push() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let producer = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || push(&q.ring, &p, 7))
        };
        let consumer = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || recv_all(&q.ring, &p))
        };
        assert!(q.ring.close());
        let pushed = producer.join().unwrap();
        let got = consumer.join().unwrap();
        match pushed {
            Ok(()) => assert_eq!(got, [7]),
            Err(PushBlocked::Closed) => assert!(got.is_empty(), "{got:?}"),
            Err(PushBlocked::Full) => panic!("one message cannot fill the ring"),
        }
        assert_eq!(q.ring.head_position(), q.ring.tail_position());
    });
}

/// (5a) A producer dies holding a claim (it never publishes) while a live producer sends and a
/// consumer repairs the head: the live message is delivered exactly once, the dead position is
/// skipped and counted as abandoned, nothing else is ever delivered.
#[test]
fn repair_head_races_with_a_live_producer() {
    for_capacities(|capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        let dead = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || {
                // Claims a position, never publishes it, dies.
                let claimed = q.ring.claim_push(&p).is_ok();
                p.die();
                claimed
            })
        };
        let live = {
            let (q, p) = (q.clone(), world.peer(2));
            thread::spawn(move || try_send(&q.ring, &p, 5, false))
        };
        let mut got = recv_some(&q.ring, &world.peer(3), true, TRIES);
        let claimed = dead.join().unwrap();
        let sent = live.join().unwrap();
        got.extend(drain(&q.ring, &world.peer(4)));
        assert_eq!(got, if sent { vec![5] } else { vec![] });
        let positions = u64::from(claimed) + u64::from(sent);
        assert_eq!(q.ring.head_position(), positions);
        assert_eq!(q.ring.tail_position(), positions);
        let abandoned = q.ring.header().stats.abandoned.load(SeqCst);
        assert_eq!(abandoned, u64::from(claimed));
    });
}

/// (5b) A consumer dies holding message 1 (claimed, never released) while a producer that
/// finds the ring full repairs the tail (republishes the message in place) and another
/// consumer adopts orphans (delivers it from where it lies): every message is delivered
/// exactly once, message 1 counted as redelivered once.
#[test]
fn repair_tail_races_with_adopt_orphan() {
    repair_tail_vs_adopt(false);
}

/// (5c) As (5b), but the consumer finishes its receive (releases the slot) before it goes
/// away: it must not be mistaken for one that died mid-receive (no second delivery), however
/// the repairers' looks interleave with its release and its death.
#[test]
fn finished_receiver_is_not_repaired() {
    repair_tail_vs_adopt(true);
}

fn repair_tail_vs_adopt(releases: bool) {
    for_capacities(move |capacity| {
        let q = heap_ring(capacity);
        let world = World::new();
        // Fill the ring so that the producer below finds it full and repairs the tail.
        for id in 1..=u64::from(capacity) {
            push(&q.ring, &world.peer(1), id).unwrap();
        }
        let extra = u64::from(capacity) + 1;
        // The dying consumer's claim is made before the others start, so it holds message 1.
        let dying = world.peer(2);
        let token = q.ring.claim_pop(&dying, MESSAGE_SIZE as usize).unwrap();
        let dying = {
            let q = q.clone();
            thread::spawn(move || {
                let got = releases.then(|| take(&q.ring, token));
                dying.die();
                got
            })
        };
        let producer = {
            let (q, p) = (q.clone(), world.peer(1));
            thread::spawn(move || try_send(&q.ring, &p, extra, true))
        };
        let mut all = recv_some(&q.ring, &world.peer(3), true, TRIES);
        all.extend(dying.join().unwrap());
        let sent = producer.join().unwrap();
        all.extend(drain(&q.ring, &world.peer(4)));
        let expected = 1..=if sent { extra } else { extra - 1 };
        assert_eq!(sorted(all), expected.collect::<Vec<_>>());
        let redelivered = q.ring.header().stats.redelivered.load(SeqCst);
        assert_eq!(redelivered, u64::from(!releases));
    });
}
