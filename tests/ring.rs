//! The ring algorithm on heap memory: no system calls, threads instead of processes, and
//! simulated deaths (a participant is "dead" when the test says so). The same code runs on
//! the mapped segment in production; the cross-process tests live in `tests/queue.rs`.

mod heap_ring;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use heap_ring::{run_tokens, HeapRing};
use shmq::layout::{payload_offset, slot_header_offset, Claim, Role, FLAG_CHECKSUM, FLAG_SPSC};
use shmq::ring::{HeadRepair, Peers, PopBlocked, PushBlocked, ReadError, Ring, SpscPop};

/// Participants whose death the test decides.
#[derive(Clone, Default)]
struct World {
    dead: Arc<Mutex<HashSet<u32>>>,
}

struct Peer {
    id: u32,
    world: World,
}

impl Peers for Peer {
    fn me(&self) -> u32 {
        self.id
    }
    fn is_alive(&self, id: u32) -> bool {
        !self.world.dead.lock().unwrap().contains(&id)
    }
}

fn peer(world: &World, id: u32) -> Peer {
    Peer {
        id,
        world: world.clone(),
    }
}

fn push(ring: &Ring, p: &Peer, id: u64, data: &[u8]) -> Result<(), PushBlocked> {
    let t = ring.claim_push(p)?;
    ring.write(&t, id, 0, data);
    ring.publish(t);
    Ok(())
}

fn pop(ring: &Ring, p: &Peer) -> Result<(u64, Vec<u8>, bool), PopBlocked> {
    let mut buf = vec![0u8; ring.message_size()];
    let t = ring.claim_pop(p, buf.len())?;
    let meta = ring.read(&t, &mut buf).expect("valid message");
    ring.release(t);
    buf.truncate(meta.len);
    Ok((meta.id, buf, meta.redelivered))
}

/// A batch finds each next slot from the last one by an increment (`Ring::after`) instead of
/// dividing its position by the capacity: across the wrap, the slot it writes must be the one
/// a receiver claiming that position by division reads.
#[test]
fn batch_cursor_walks_the_slots_of_consecutive_positions() {
    for cap in [1u32, 2, 3, 5, 8] {
        let h = HeapRing::new(cap, 16, FLAG_CHECKSUM | FLAG_SPSC);
        let start = 2 * u64::from(cap) - 1; // the last slot of a lap: the next one wraps
        let mut at = h.ring.spsc_push_token(start).cursor();
        for pos in start + 1..start + 3 * u64::from(cap) + 2 {
            at = h.ring.after(at);
            assert_eq!(at.position(), pos, "capacity {cap}");
            let token = h.ring.spsc_push_token_at(at);
            h.ring.write(&token, pos, 0, &pos.to_le_bytes());
            h.ring.publish(token);
            let SpscPop::Message(got) = h.ring.spsc_claim_pop(pos, 16) else {
                panic!("capacity {cap}: position {pos} not published where it belongs");
            };
            let mut buf = [0u8; 16];
            let meta = h.ring.read(&got, &mut buf).expect("intact");
            assert_eq!((meta.id, &buf[..8]), (pos, &pos.to_le_bytes()[..]));
        }
    }
}

#[test]
fn fifo_full_empty_and_capacity_exact() {
    for cap in [1u32, 2, 3, 100] {
        let h = HeapRing::new(cap, 16, FLAG_CHECKSUM);
        let w = World::default();
        let p = peer(&w, 1);
        for i in 0..cap as u64 {
            push(&h.ring, &p, i, &i.to_le_bytes()).unwrap();
        }
        assert_eq!(h.ring.depth(), cap as u64);
        assert_eq!(push(&h.ring, &p, 99, b"x"), Err(PushBlocked::Full));
        for lap in 0..3u64 {
            for i in 0..cap as u64 {
                let (id, data, _) = pop(&h.ring, &p).unwrap();
                assert_eq!(id, lap * 1000 + i);
                assert_eq!(data, id.to_le_bytes());
                push(
                    &h.ring,
                    &p,
                    (lap + 1) * 1000 + i,
                    &((lap + 1) * 1000 + i).to_le_bytes(),
                )
                .unwrap();
            }
        }
        for _ in 0..cap {
            pop(&h.ring, &p).unwrap();
        }
        assert_eq!(pop(&h.ring, &p).unwrap_err(), PopBlocked::Empty);
    }
}

#[test]
fn close_drains_then_reports_closed() {
    let h = HeapRing::new(4, 8, FLAG_CHECKSUM);
    let w = World::default();
    let p = peer(&w, 1);
    push(&h.ring, &p, 1, b"a").unwrap();
    push(&h.ring, &p, 2, b"b").unwrap();
    assert!(h.ring.close());
    assert!(!h.ring.close());
    assert_eq!(push(&h.ring, &p, 3, b"c"), Err(PushBlocked::Closed));
    assert_eq!(pop(&h.ring, &p).unwrap().0, 1);
    assert_eq!(pop(&h.ring, &p).unwrap().0, 2);
    assert_eq!(pop(&h.ring, &p).unwrap_err(), PopBlocked::Closed);
}

#[test]
fn claim_withdrawn_when_closed_before_tail_moves() {
    // A producer that claimed a slot must not publish once the queue closed at its position.
    let h = HeapRing::new(4, 8, FLAG_CHECKSUM);
    let w = World::default();
    let p = peer(&w, 1);
    h.ring.close();
    assert_eq!(h.ring.claim_push(&p).unwrap_err(), PushBlocked::Closed);
    assert_eq!(h.ring.depth(), 0);
    assert_eq!(pop(&h.ring, &p).unwrap_err(), PopBlocked::Closed);
}

#[test]
fn buffer_too_small_dequeues_nothing() {
    let h = HeapRing::new(4, 64, FLAG_CHECKSUM);
    let w = World::default();
    let p = peer(&w, 1);
    push(&h.ring, &p, 7, &[5u8; 40]).unwrap();
    assert_eq!(
        h.ring.claim_pop(&p, 39).unwrap_err(),
        PopBlocked::BufferTooSmall(40)
    );
    assert_eq!(h.ring.depth(), 1);
    let (id, data, _) = pop(&h.ring, &p).unwrap();
    assert_eq!((id, data.len()), (7, 40));
}

#[test]
fn checksum_catches_a_flipped_payload_byte() {
    let h = HeapRing::new(2, 64, FLAG_CHECKSUM);
    let w = World::default();
    let p = peer(&w, 1);
    push(&h.ring, &p, 1, b"hello").unwrap();
    // Flip a payload byte of slot 0 behind the ring's back.
    // SAFETY: slot 0's payload lies inside the block.
    unsafe { *h.base().add(payload_offset(0, 64).unwrap()) ^= 0xff };
    let mut buf = [0u8; 64];
    let t = h.ring.claim_pop(&p, 64).unwrap();
    assert!(matches!(
        h.ring.read(&t, &mut buf),
        Err(ReadError::Checksum { .. })
    ));
    h.ring.release(t);
    push(&h.ring, &p, 2, b"again").unwrap();
    assert_eq!(pop(&h.ring, &p).unwrap().0, 2);
}

#[test]
fn dead_producer_position_is_skipped() {
    let h = HeapRing::new(4, 8, FLAG_CHECKSUM);
    let w = World::default();
    let (a, c) = (peer(&w, 1), peer(&w, 2));
    push(&h.ring, &a, 1, b"one").unwrap();
    let claimed = h.ring.claim_push(&a).unwrap(); // a claims position 1 and "dies"
    push(&h.ring, &c, 3, b"three").unwrap();
    assert_eq!(pop(&h.ring, &c).unwrap().0, 1);
    assert_eq!(pop(&h.ring, &c).unwrap_err(), PopBlocked::InProgress);
    // Alive: nothing to repair.
    assert!(matches!(h.ring.repair_head(&c), HeadRepair::Nothing));
    w.dead.lock().unwrap().insert(1);
    assert!(matches!(h.ring.repair_head(&c), HeadRepair::Skipped));
    assert_eq!(h.ring.header().stats.abandoned.load(Relaxed), 1);
    assert_eq!(pop(&h.ring, &c).unwrap().0, 3);
    drop(claimed);
    // The queue keeps working through many laps.
    for i in 10..30 {
        push(&h.ring, &c, i, b"x").unwrap();
        assert_eq!(pop(&h.ring, &c).unwrap().0, i);
    }
}

/// The 64-bit word at `offset` of the ring's memory.
fn word_at(h: &HeapRing, offset: usize) -> &std::sync::atomic::AtomicU64 {
    // SAFETY: `offset` is inside the ring's block and 8-aligned (callers pass header and slot
    // header words), the block lives as long as `h`, and the ring accesses it atomically too.
    unsafe { &*(h.base().add(offset) as *const std::sync::atomic::AtomicU64) }
}

/// A receive run (`Ring::claim_pop_run`) takes the messages after its first only while each
/// is plainly published for its own position under its producer's claim and fits the
/// buffer; it stops before anything else (the next plain claim sorts that out). Each case
/// leaves the third of five published messages in another state, as a racing peer or
/// hostile bytes would, and the run must end before it, with the head moved past the two it
/// took.
#[test]
fn a_receive_run_stops_at_what_is_not_a_plain_publication() {
    let (seq, claim, len, position) = (0, 8, 32, 48);
    let other = |lap, role| {
        Claim {
            lap,
            role,
            owner: 9,
        }
        .encode()
    };
    type Case = (&'static str, Option<(usize, u64)>);
    let cases: [Case; 7] = [
        ("untouched", None),
        (
            "held by another receiver",
            Some((claim, other(0, Role::Consumer))),
        ),
        (
            "republished a lap later",
            Some((claim, other(1, Role::Producer))),
        ),
        ("of a producer still writing", Some((seq, 2 * 2))),
        ("published for the next lap", Some((seq, 2 * (2 + 8) + 1))),
        ("another position's message", Some((position, 2 + 8))),
        ("longer than the buffer", Some((len, 12))),
    ];
    for (what, change) in cases {
        let h = HeapRing::new(8, 16, FLAG_CHECKSUM);
        let w = World::default();
        let p = peer(&w, 1);
        for id in 0..5u64 {
            push(&h.ring, &p, id, &id.to_le_bytes()).unwrap();
        }
        if let Some((offset, value)) = change {
            let at = slot_header_offset(2, 16).unwrap() + offset;
            if offset == len {
                // The length word is 32 bits, next to the flags.
                let old = word_at(&h, at).load(Relaxed);
                word_at(&h, at).store(old & !0xffff_ffff | value, Relaxed);
            } else {
                word_at(&h, at).store(value, Relaxed);
            }
        }
        let (first, n) = h.ring.claim_pop_run(&peer(&w, 2), 8, 8).unwrap();
        let expected = if change.is_none() { 5 } else { 2 };
        assert_eq!((first.position(), n), (0, expected), "{what}");
        assert_eq!(h.ring.head_position(), expected as u64, "{what}");
        for (i, token) in (0u64..).zip(run_tokens(&h.ring, first, n)) {
            let mut buf = [0u8; 8];
            let meta = h.ring.read(&token, &mut buf).expect("intact");
            assert_eq!((meta.id, buf), (i, i.to_le_bytes()), "{what}");
            h.ring.release(token);
        }
    }
}

/// A receiver dies between a run's claims and its head move, after helpers moved the head
/// `k` of the run's `n` positions (what a receiver killed at `pop_run_claimed` leaves), at
/// every offset in rings of one to six slots. With a producer and a receiver that make the
/// repairs, every message is delivered exactly once, the run's flagged `redelivered` and no
/// other, and the ring closes and drains. (From an audit of the receive runs.)
#[test]
fn a_receiver_dead_in_a_run_before_its_head_move_loses_nothing() {
    for cap in 1..=6u32 {
        for offset in 0..u64::from(cap) {
            for n in 1..=cap as usize {
                for k in 0..=n as u64 {
                    dead_in_a_run(cap, offset, n, k);
                }
            }
        }
    }
}

fn dead_in_a_run(cap: u32, offset: u64, n: usize, k: u64) {
    let case = format!("capacity {cap}, offset {offset}, run of {n}, head moved {k}");
    let h = HeapRing::new(cap, 16, FLAG_CHECKSUM);
    let ring = &h.ring;
    let w = World::default();
    let (producer, receiver) = (peer(&w, 1), peer(&w, 3));
    for i in 0..offset {
        push(ring, &producer, 1000 + i, b"x").unwrap();
        pop(ring, &receiver).unwrap();
    }
    let mut sent: Vec<u64> = (0..u64::from(cap)).collect();
    for &id in &sent {
        push(ring, &producer, id, &id.to_le_bytes()).unwrap();
    }
    let head = ring.head_position();
    let (_, claimed) = ring.claim_pop_run(&peer(&w, 2), 16, n).unwrap();
    assert_eq!(claimed, n, "{case}");
    word_at(&h, 256).store(head + k, Relaxed); // the head, where helpers left it
    w.dead.lock().unwrap().insert(2);
    let mut got = HashMap::<u64, u32>::new();
    let receive = |got: &mut HashMap<u64, u32>| -> Result<(), PopBlocked> {
        for (id, redelivered) in receive_repairing(ring, &receiver)? {
            assert_eq!(redelivered, id < n as u64, "{case}: message {id}");
            *got.entry(id).or_default() += 1;
        }
        Ok(())
    };
    for id in 100..100 + 3 * u64::from(cap) + 5 {
        if send_repairing(ring, &producer, id) {
            sent.push(id);
        }
        let _ = receive(&mut got);
    }
    ring.close();
    for _ in 0..10 * cap {
        match receive(&mut got) {
            Ok(()) => {}
            Err(PopBlocked::Closed) => break,
            Err(e) => panic!("{case}: {e:?}"),
        }
    }
    let mut once: Vec<u64> = got
        .iter()
        .filter(|&(_, &c)| c == 1)
        .map(|(&id, _)| id)
        .collect();
    once.sort_unstable();
    sent.sort_unstable();
    assert_eq!(once, sent, "{case}: {got:?}");
    assert_eq!(got.len(), sent.len(), "{case}: {got:?}");
}

/// One send, repairing the tail while the ring is full of a dead receiver's messages.
fn send_repairing(ring: &Ring, p: &Peer, id: u64) -> bool {
    loop {
        match push(ring, p, id, &id.to_le_bytes()) {
            Ok(()) => return true,
            Err(PushBlocked::Full) if ring.repair_tail(p) => {}
            Err(_) => return false,
        }
    }
}

/// One receive of a run of up to three, with the repairs a blocked receiver makes; the ids
/// and `redelivered` flags.
fn receive_repairing(ring: &Ring, p: &Peer) -> Result<Vec<(u64, bool)>, PopBlocked> {
    let tokens = loop {
        match ring.claim_pop_run(p, ring.message_size(), 3) {
            Ok((first, n)) => break run_tokens(ring, first, n),
            Err(PopBlocked::InProgress) => match ring.repair_head(p) {
                HeadRepair::Message(t) => break vec![t],
                HeadRepair::Skipped => {}
                HeadRepair::Nothing => return Err(PopBlocked::InProgress),
            },
            Err(e @ (PopBlocked::Empty | PopBlocked::Closed)) => {
                match ring.adopt_orphan(p, ring.message_size()) {
                    Ok(Some(t)) => break vec![t],
                    _ => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
    };
    let mut buf = vec![0u8; ring.message_size()];
    Ok(tokens
        .into_iter()
        .map(|t| {
            let meta = ring.read(&t, &mut buf).expect("intact");
            assert_eq!(buf[..8], meta.id.to_le_bytes());
            ring.release(t);
            (meta.id, meta.redelivered)
        })
        .collect())
}

/// A receiver takes a dead republisher's message (`repair_head`: the republisher moved the
/// tail to the message's new position and died before publishing it there) and holds it,
/// reading it in place. The producer a lap later must wait for that receiver, as for any
/// receiver reading: it took the slot instead (the slot still said "published a lap
/// before", which looked corrupt), wrote its message over the one being read, and the
/// receiver's release then erased that message's publication. (Found by an audit.)
#[test]
fn a_message_taken_from_a_dead_republisher_is_not_overwritten_while_read() {
    let h = HeapRing::new(2, 16, FLAG_CHECKSUM);
    let ring = &h.ring;
    let w = World::default();
    let p = |id| peer(&w, id);
    let mut buf = [0u8; 16];
    push(ring, &p(1), 0xA, b"a").unwrap(); // position 0
    push(ring, &p(1), 0xB, b"b").unwrap(); // position 1: full
                                           // Receiver 2 claims a and dies reading it.
    let _never_released = ring.claim_pop(&p(2), 16).unwrap();
    w.dead.lock().unwrap().insert(2);
    // Producer 3 finds the ring full and republishes a at position 2 (`repair_tail`), dying
    // after moving the tail, before publishing: its stores up to there, by hand (claim of
    // lap 1, head 0 -> 1 was done by receiver 2's claim, tail 2 -> 3).
    let slot0 = slot_header_offset(0, 16).unwrap();
    let claim = word_at(&h, slot0 + 8);
    let receiver = claim.load(Relaxed);
    assert_eq!(Claim::decode(receiver).owner, 2);
    let republisher = Claim {
        lap: 1,
        role: Role::Producer,
        owner: 3,
    };
    claim.store(republisher.encode(), Relaxed);
    word_at(&h, 128).store(3, Relaxed); // the tail
    w.dead.lock().unwrap().insert(3);
    // Receiver 4 takes b, then a (from the dead republisher) and holds it.
    assert_eq!(pop(ring, &p(4)).unwrap().0, 0xB);
    assert_eq!(
        ring.claim_pop(&p(4), 16).unwrap_err(),
        PopBlocked::InProgress
    );
    let HeadRepair::Message(held) = ring.repair_head(&p(4)) else {
        panic!("repair_head hands over the republished message");
    };
    assert_eq!(held.position(), 2);
    // Producer 5 sends c (position 3); d finds the ring full: position 2 is being read.
    push(ring, &p(5), 0xC, b"c").unwrap();
    assert_eq!(
        push(ring, &p(5), 0xD, b"d").unwrap_err(),
        PushBlocked::Full,
        "the slot of a message being read was taken"
    );
    let meta = ring.read(&held, &mut buf).unwrap();
    assert_eq!(
        (meta.id, &buf[..meta.len], meta.redelivered),
        (0xA, &b"a"[..], true)
    );
    ring.release(held);
    push(ring, &p(5), 0xD, b"d").unwrap();
    assert_eq!(pop(ring, &p(4)).unwrap().0, 0xC);
    assert_eq!(pop(ring, &p(4)).unwrap().0, 0xD);
    assert_eq!(ring.header().stats.corrupted.load(Relaxed), 0);
}

/// As above, but the receiver that took the message dies before it marks the message as its
/// new position's: the next lap's producer delivers it again (republishes it), and so does a
/// receiver's scan for orphans when no producer comes.
#[test]
fn a_message_taken_from_a_dead_republisher_survives_its_taker() {
    for by_producer in [true, false] {
        let h = HeapRing::new(2, 16, FLAG_CHECKSUM);
        let ring = &h.ring;
        let w = World::default();
        let p = |id| peer(&w, id);
        push(ring, &p(1), 0xA, b"a").unwrap();
        push(ring, &p(1), 0xB, b"b").unwrap();
        let _never_released = ring.claim_pop(&p(2), 16).unwrap();
        w.dead.lock().unwrap().insert(2);
        // The state `repair_head` leaves right after claiming the dead republisher's slot
        // (position 2) for receiver 4 and moving the head: the message is still marked as
        // the old position's. Receiver 4 dies there.
        let taker = Claim {
            lap: 1,
            role: Role::Consumer,
            owner: 4,
        };
        let slot0 = slot_header_offset(0, 16).unwrap();
        word_at(&h, slot0 + 8).store(taker.encode(), Relaxed);
        word_at(&h, 128).store(3, Relaxed); // the tail (the republisher moved it)
        assert_eq!(pop(ring, &p(5)).unwrap().0, 0xB);
        word_at(&h, 256).store(3, Relaxed); // the head (past 2, as repair_head moved it)
        w.dead.lock().unwrap().insert(4);
        if by_producer {
            push(ring, &p(6), 0xC, b"c").unwrap(); // position 3
            assert_eq!(push(ring, &p(6), 0xD, b"d").unwrap_err(), PushBlocked::Full);
            assert!(
                ring.repair_tail(&p(6)),
                "the taker's message is republished"
            );
            assert_eq!(pop(ring, &p(5)).unwrap().0, 0xC);
            let (id, _, redelivered) = pop(ring, &p(5)).unwrap();
            assert_eq!(
                (id, redelivered),
                (0xA, true),
                "after c, which was sent before"
            );
        } else {
            assert_eq!(pop(ring, &p(5)).unwrap_err(), PopBlocked::Empty);
            let token = ring.adopt_orphan(&p(5), 16).unwrap().expect("adopted");
            let mut buf = [0u8; 16];
            let meta = ring.read(&token, &mut buf).unwrap();
            ring.release(token);
            assert_eq!((meta.id, meta.redelivered), (0xA, true));
            push(ring, &p(6), 0xC, b"c").unwrap();
            push(ring, &p(6), 0xD, b"d").unwrap();
            assert_eq!(pop(ring, &p(5)).unwrap().0, 0xC);
            assert_eq!(pop(ring, &p(5)).unwrap().0, 0xD);
        }
    }
}

#[test]
fn dead_consumer_message_is_republished_by_a_producer() {
    let h = HeapRing::new(2, 8, FLAG_CHECKSUM);
    let w = World::default();
    let (prod, dead, live) = (peer(&w, 1), peer(&w, 2), peer(&w, 3));
    push(&h.ring, &prod, 1, b"first").unwrap();
    push(&h.ring, &prod, 2, b"second").unwrap();
    let held = h.ring.claim_pop(&dead, 8).unwrap(); // consumer 2 takes message 1 and dies
    assert_eq!(pop(&h.ring, &live).unwrap().0, 2);
    // The next push lands on the dead consumer's slot.
    assert_eq!(push(&h.ring, &prod, 3, b"third"), Err(PushBlocked::Full));
    assert!(!h.ring.repair_tail(&prod), "consumer still alive");
    w.dead.lock().unwrap().insert(2);
    assert!(h.ring.repair_tail(&prod));
    let (id, data, redelivered) = pop(&h.ring, &live).unwrap();
    assert_eq!((id, data.as_slice(), redelivered), (1, &b"first"[..], true));
    push(&h.ring, &prod, 3, b"third").unwrap();
    let (id, _, redelivered) = pop(&h.ring, &live).unwrap();
    assert_eq!((id, redelivered), (3, false));
    assert_eq!(h.ring.header().stats.redelivered.load(Relaxed), 1);
    drop(held);
}

#[test]
fn dead_consumer_message_is_adopted_when_no_producer_comes() {
    let h = HeapRing::new(4, 8, FLAG_CHECKSUM);
    let w = World::default();
    let (prod, dead, live) = (peer(&w, 1), peer(&w, 2), peer(&w, 3));
    push(&h.ring, &prod, 1, b"only").unwrap();
    let held = h.ring.claim_pop(&dead, 8).unwrap();
    h.ring.close();
    assert_eq!(pop(&h.ring, &live).unwrap_err(), PopBlocked::Closed);
    assert!(
        h.ring.adopt_orphan(&live, 8).unwrap().is_none(),
        "owner alive"
    );
    w.dead.lock().unwrap().insert(2);
    let t = h
        .ring
        .adopt_orphan(&live, 8)
        .unwrap()
        .expect("orphan adopted");
    let mut buf = [0u8; 8];
    let meta = h.ring.read(&t, &mut buf).unwrap();
    h.ring.release(t);
    assert_eq!((meta.id, meta.redelivered), (1, true));
    assert!(h.ring.adopt_orphan(&live, 8).unwrap().is_none());
    drop(held);
}

#[test]
fn many_threads_every_message_once_in_producer_order() {
    many_threads(false);
}

/// As above, with two of the producers claiming runs of slots (one tail move per run, see
/// `Ring::claim_push_run`) among the others' single claims, and two of the consumers
/// claiming runs of messages (one head move per run, `Ring::claim_pop_run`).
#[test]
fn runs_among_single_claims_every_message_once_in_producer_order() {
    many_threads(true);
}

/// Claims a run of up to `max` slots and publishes messages `ids.next()` into them; how many.
fn push_run(ring: &Ring, p: &Peer, max: usize, mut ids: impl FnMut() -> u64) -> usize {
    let Ok((token, n)) = ring.claim_push_run(p, max) else {
        return 0;
    };
    let mut at = token.cursor();
    let id = ids();
    ring.write(&token, id, 0, &id.to_le_bytes());
    ring.publish(token);
    for _ in 1..n {
        let t = ring.run_token(at);
        at = t.cursor();
        let id = ids();
        ring.write(&t, id, 0, &id.to_le_bytes());
        ring.publish(t);
    }
    n
}

/// Claims a run of up to `max` messages and reads them (ids, in order), releasing each.
fn pop_run(ring: &Ring, p: &Peer, max: usize) -> Result<Vec<(u64, Vec<u8>)>, PopBlocked> {
    let mut buf = vec![0u8; ring.message_size()];
    let (first, n) = ring.claim_pop_run(p, buf.len(), max)?;
    let mut got = Vec::with_capacity(n);
    for token in run_tokens(ring, first, n) {
        let meta = ring.read(&token, &mut buf).expect("valid message");
        got.push((meta.id, buf[..meta.len].to_vec()));
        ring.release(token);
    }
    Ok(got)
}

fn many_threads(runs: bool) {
    const PRODUCERS: u64 = 4;
    const CONSUMERS: u32 = 4;
    const PER_PRODUCER: u64 = 50_000;
    let h = Arc::new(HeapRing::new(8, 16, FLAG_CHECKSUM));
    let w = World::default();
    let received = Arc::new(Mutex::new(Vec::new()));
    let longest = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut threads = Vec::new();
    for p in 0..PRODUCERS {
        let (h, w, longest) = (h.clone(), w.clone(), longest.clone());
        threads.push(std::thread::spawn(move || {
            let me = peer(&w, 100 + p as u32);
            let mut i = 0;
            while i < PER_PRODUCER {
                let sent = if runs && p % 2 == 1 {
                    let max = (PER_PRODUCER - i).min(8) as usize;
                    let mut next = i;
                    let n = push_run(&h.ring, &me, max, || {
                        next += 1;
                        (p << 32) | (next - 1)
                    });
                    longest.fetch_max(n, Relaxed);
                    n as u64
                } else {
                    let id = (p << 32) | i;
                    u64::from(push(&h.ring, &me, id, &id.to_le_bytes()).is_ok())
                };
                if sent == 0 {
                    std::thread::yield_now();
                }
                i += sent;
            }
        }));
    }
    let longest_pop = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for c in 0..CONSUMERS {
        let (h, w, received) = (h.clone(), w.clone(), received.clone());
        let longest_pop = longest_pop.clone();
        threads.push(std::thread::spawn(move || {
            let me = peer(&w, 200 + c);
            let mut mine = Vec::new();
            let mut last = [None::<u64>; PRODUCERS as usize];
            loop {
                let got = if runs && c % 2 == 1 {
                    pop_run(&h.ring, &me, 8)
                } else {
                    pop(&h.ring, &me).map(|(id, data, _)| vec![(id, data)])
                };
                match got {
                    Ok(got) => {
                        longest_pop.fetch_max(got.len(), Relaxed);
                        // A pause now and then lets the producers fill the ring, so that a
                        // run claim finds several messages waiting however the threads are
                        // scheduled (on 2 cores, consumers kept up and every run was one
                        // message, once in many runs).
                        if runs && mine.len() / 1000 != (mine.len() + got.len()) / 1000 {
                            std::thread::sleep(std::time::Duration::from_micros(100));
                        }
                        for (id, data) in got {
                            assert_eq!(data, id.to_le_bytes());
                            let (p, i) = ((id >> 32) as usize, id & 0xffff_ffff);
                            // Per-producer order as seen by one consumer.
                            assert!(last[p].is_none_or(|l| l < i));
                            last[p] = Some(i);
                            mine.push(id);
                        }
                    }
                    Err(PopBlocked::Closed) => break,
                    Err(_) => std::thread::yield_now(),
                }
            }
            received.lock().unwrap().extend(mine);
        }));
    }
    let consumers = threads.split_off(PRODUCERS as usize);
    for t in threads {
        t.join().unwrap();
    }
    h.ring.close();
    for t in consumers {
        t.join().unwrap();
    }
    let mut all = received.lock().unwrap().clone();
    assert_eq!(all.len() as u64, PRODUCERS * PER_PRODUCER);
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len() as u64, PRODUCERS * PER_PRODUCER, "duplicates");
    if runs {
        assert!(longest.load(Relaxed) > 1, "no run of more than one slot");
        assert!(
            longest_pop.load(Relaxed) > 1,
            "no receive run of more than one message"
        );
    }
}

/// A gather write whose parts changed after its caller summed them (a C caller's arrays
/// rewritten by a racing thread) writes nothing past the message's length: parts that grew
/// are cut (the message is their first `len` bytes, with a valid checksum), and parts that
/// shrank leave a message whose checksum fails.
#[test]
fn gather_writes_stay_within_the_length_their_caller_summed() {
    use shmq::layout::segment_size;
    const SIZE: u32 = 64;
    for flags in [FLAG_CHECKSUM, 0] {
        let h = HeapRing::new(2, SIZE, flags);
        let w = World::default();
        let p = peer(&w, 1);
        let block = segment_size(2, SIZE).unwrap();
        let snapshot = || {
            // SAFETY: the block is `block` bytes from `base`, ours while `h` lives; reading
            // it as bytes while no other thread runs.
            unsafe { std::slice::from_raw_parts(h.base(), block) }.to_vec()
        };
        let grown: Vec<u8> = (0..200u8).collect();
        let before = snapshot();
        let t = h.ring.claim_push(&p).unwrap();
        let header =
            slot_header_offset(0, SIZE).unwrap()..slot_header_offset(0, SIZE).unwrap() + 64;
        let payload = payload_offset(0, SIZE).unwrap();
        // Summed as 10 + 6 bytes; asked for again, the second part has grown to 200.
        let parts: [&[u8]; 2] = [&grown[..10], &grown];
        h.ring.write_parts(&t, 9, 0, (2, &|i| parts[i]), 16);
        h.ring.publish(t);
        let after = snapshot();
        // From the first slot on (the header before it holds the positions that move).
        let slots = payload.min(header.start);
        for (at, (b, a)) in before.iter().zip(&after).enumerate().skip(slots) {
            if b != a {
                assert!(
                    header.contains(&at) || (payload..payload + 16).contains(&at),
                    "flags {flags}: byte {at} written, outside the message's 16 bytes"
                );
            }
        }
        let (id, data, _) = pop(&h.ring, &p).unwrap();
        assert_eq!(
            (id, &data[..10], &data[10..]),
            (9, &grown[..10], &grown[..6])
        );

        // Summed as 16 bytes; asked for again, the part has shrunk to 4.
        let t = h.ring.claim_push(&p).unwrap();
        h.ring.write_parts(&t, 10, 0, (1, &|_| &grown[..4]), 16);
        h.ring.publish(t);
        let mut buf = [0u8; SIZE as usize];
        let t = h.ring.claim_pop(&p, buf.len()).unwrap();
        let read = h.ring.read(&t, &mut buf);
        h.ring.release(t);
        if flags == FLAG_CHECKSUM {
            assert!(matches!(read, Err(ReadError::Checksum { .. })), "{read:?}");
        } else {
            assert_eq!(read.unwrap().len, 16);
        }
    }
}
