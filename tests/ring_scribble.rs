//! Recovery from hostile bytes, searched deterministically on heap memory: random sends,
//! receives, half-done calls, repairs and scribbles on slot headers by a few participants,
//! then all of them die, and a fresh producer and consumer (alive throughout) must get every
//! new message through exactly once and in order. `tests/hostile.rs` does the same across
//! real processes with real timing; this search reaches the rare interleavings it cannot
//! aim at, thousands of times a second, and names the seed that fails
//! (`SHMQ_SCRIBBLE_SEED=<seed>` replays one, with `SHMQ_SCRIBBLE_TRACE=1` the state at each
//! step of its recovery; `SHMQ_SCRIBBLE_CASES=<n>` runs more).

mod common;
mod heap_ring;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use common::{search_seeds, Rng};
use heap_ring::{run_tokens, HeapRing};
use shmq::layout::{slot_header_offset, Claim, Role, FLAG_CHECKSUM};
use shmq::ring::{HeadRepair, Peers, PopBlocked, PopToken, PushBlocked, PushToken, Ring};

/// Capacities searched, one per seed in turn: one slot (every position shares it) up to a
/// few laps' worth of positions in flight.
const CAPACITIES: [u32; 4] = [1, 2, 4, 8];
const MESSAGE_SIZE: u32 = 16;
/// Participants of the chaos phase: ids 1..=CHAOS_PEERS, replaced by fresh ids when killed.
const CHAOS_PEERS: u32 = 3;

/// A participant; every id not in `alive` is dead (no liveness lock), as in production.
struct Peer<'a> {
    id: u32,
    alive: &'a HashSet<u32>,
}

impl Peers for Peer<'_> {
    fn me(&self) -> u32 {
        self.id
    }
    fn is_alive(&self, id: u32) -> bool {
        self.alive.contains(&id)
    }
}

/// The slot header word at `offset` of slot `index`.
fn word(h: &HeapRing, index: u64, offset: usize) -> &AtomicU64 {
    let at = slot_header_offset(index as u32, MESSAGE_SIZE).unwrap() + offset;
    // SAFETY: `at` is inside the ring's block (index < capacity, offset < the slot header),
    // 8-aligned (header, stride and offsets are multiples of 8), and the block lives as long
    // as `h`; the ring accesses these words only atomically too.
    unsafe { &*(h.base().add(at) as *const AtomicU64) }
}

/// The header word at `offset` (the tail at 128, the head at 256: docs/LAYOUT.md).
fn header_word(h: &HeapRing, offset: usize) -> &AtomicU64 {
    // SAFETY: as in `word`: inside the block, 8-aligned, accessed atomically by the ring.
    unsafe { &*(h.base().add(offset) as *const AtomicU64) }
}

const TAIL: usize = 128;
const HEAD: usize = 256;
const SEQ: usize = 0;
const CLAIM: usize = 8;
const LEN_FLAGS: usize = 32;
const POSITION: usize = 48;

/// Slot headers, head and tail, for a failure message.
fn state(h: &HeapRing) -> String {
    let mut s = format!(
        "capacity {}, head {} tail {:#x}\n",
        h.ring.capacity(),
        h.ring.head_position(),
        h.ring.tail_position()
    );
    for i in 0..h.ring.capacity() {
        let c = Claim::decode(word(h, i, CLAIM).load(Relaxed));
        s += &format!(
            "slot {i}: seq {} claim lap {} {:?} owner {} position {}\n",
            word(h, i, SEQ).load(Relaxed),
            c.lap,
            c.role,
            c.owner,
            word(h, i, POSITION).load(Relaxed) as i64,
        );
    }
    s
}

/// Writes one hostile word: the kinds of values `tests/hostile.rs` writes (sequence words
/// near the positions in use, claims of nearby laps by live, dead or no participants,
/// positions and lengths), aimed at a random slot; with `positions`, the head and the tail
/// too.
fn scribble(h: &HeapRing, rng: &mut Rng, owners: u32, positions: bool) {
    let cap = h.ring.capacity();
    if positions && rng.below(4) == 0 {
        let at = [TAIL, HEAD][rng.below(2) as usize];
        let now = header_word(h, at).load(Relaxed);
        let value = match rng.below(3) {
            0 => now.wrapping_add(rng.below(3 * cap)).wrapping_sub(cap),
            1 => rng.next() >> rng.below(64),
            _ => rng.next(),
        };
        header_word(h, at).store(value, Relaxed);
        return;
    }
    let index = rng.below(cap);
    let tail = h.ring.tail_position() & !(1 << 63);
    let head = h.ring.head_position();
    let near = match rng.below(3) {
        0 => tail,
        1 => head,
        _ => tail.wrapping_sub(cap),
    }
    .wrapping_add(rng.below(3))
    .wrapping_sub(1);
    match rng.below(6) {
        0 => word(h, index, SEQ).store(near.wrapping_mul(2).wrapping_add(rng.below(2)), Relaxed),
        1 => word(h, index, SEQ).store(
            tail.wrapping_mul(2).wrapping_sub(rng.below(4 * cap)),
            Relaxed,
        ),
        2 => {
            let claim = Claim {
                lap: (near / cap) as u32,
                role: if rng.below(2) == 0 {
                    Role::Producer
                } else {
                    Role::Consumer
                },
                owner: rng.below(u64::from(owners) + 1) as u32,
            };
            word(h, index, CLAIM).store(claim.encode(), Relaxed)
        }
        3 => word(h, index, POSITION).store(near, Relaxed),
        4 => word(h, index, LEN_FLAGS).store(rng.below(2 * u64::from(MESSAGE_SIZE)), Relaxed),
        _ => {
            word(h, index, [SEQ, CLAIM, POSITION][rng.below(3) as usize]).store(rng.next(), Relaxed)
        }
    }
}

fn send(ring: &Ring, token: PushToken, id: u64) {
    ring.write(&token, id, 0, &id.to_le_bytes());
    ring.publish(token);
}

/// Reads and releases a claimed message; its id if it was intact.
fn take(ring: &Ring, token: PopToken) -> Option<u64> {
    let mut buf = [0u8; MESSAGE_SIZE as usize];
    let got = ring.read(&token, &mut buf).ok().map(|m| m.id);
    ring.release(token);
    got
}

/// Claims a run of up to `max` messages from the head (none if there is nothing to take).
fn claim_pop_run(ring: &Ring, me: &Peer, max: usize) -> Vec<PopToken> {
    match ring.claim_pop_run(me, MESSAGE_SIZE as usize, max) {
        Ok((first, n)) => run_tokens(ring, first, n),
        Err(_) => Vec::new(),
    }
}

/// One case: chaos, deaths, then recovery. `Err` describes a failure. With `positions`,
/// the chaos scribbles on the head and the tail too, after which positions may be lost for
/// good (the queue counts on them); then only that every call returns is checked.
fn run_case(seed: u64, positions: bool) -> Result<(), String> {
    let capacity = CAPACITIES[(seed % CAPACITIES.len() as u64) as usize];
    let h = HeapRing::new(capacity, MESSAGE_SIZE, FLAG_CHECKSUM);
    let ring = &h.ring;
    let mut rng = Rng::new(seed);
    let mut ids: Vec<u32> = (1..=CHAOS_PEERS).collect();
    let mut alive: HashSet<u32> = ids.iter().copied().collect();
    let mut next_id = CHAOS_PEERS + 1;
    let mut pushes: Vec<(u32, PushToken)> = Vec::new();
    let mut pops: Vec<(u32, PopToken)> = Vec::new();
    let trace = std::env::var_os("SHMQ_SCRIBBLE_TRACE").is_some();
    let steps = 20 + rng.below(80);
    for _ in 0..steps {
        let who = ids[rng.below(ids.len() as u64) as usize];
        let me = Peer {
            id: who,
            alive: &alive,
        };
        let op = rng.below(12);
        if trace {
            eprintln!("{}participant {who}: step {op}", state(&h));
        }
        match op {
            0 | 1 => {
                if let Ok(t) = ring.claim_push(&me) {
                    send(ring, t, rng.below(100));
                }
            }
            2 => {
                // One slot or a run (one tail move for several claims), published later or
                // never.
                if let Ok((t, n)) = ring.claim_push_run(&me, 1 + rng.below(3) as usize) {
                    let mut at = t.cursor();
                    pushes.push((who, t));
                    for _ in 1..n {
                        let next = ring.run_token(at);
                        at = next.cursor();
                        pushes.push((who, next));
                    }
                }
            }
            3 if !pushes.is_empty() => {
                // A producer finishes late: its slot may have been repaired meanwhile.
                let (_, t) = pushes.remove(rng.below(pushes.len() as u64) as usize);
                send(ring, t, rng.below(100));
            }
            4 | 5 => {
                // One message or a run (one head move for several claims), read at once.
                for t in claim_pop_run(ring, &me, 1 + rng.below(3) as usize) {
                    take(ring, t);
                }
            }
            6 => {
                // One message or a run, read later or never.
                for t in claim_pop_run(ring, &me, 1 + rng.below(3) as usize) {
                    pops.push((who, t));
                }
            }
            7 if !pops.is_empty() => {
                take(ring, pops.remove(rng.below(pops.len() as u64) as usize).1);
            }
            8 => {
                ring.repair_tail(&me);
            }
            9 => match ring.repair_head(&me) {
                HeadRepair::Message(t) => {
                    take(ring, t);
                }
                HeadRepair::Nothing | HeadRepair::Skipped => {}
            },
            10 => {
                if let Ok(Some(t)) = ring.adopt_orphan(&me, MESSAGE_SIZE as usize) {
                    take(ring, t);
                }
            }
            11 if rng.below(4) == 0 => {
                // A participant dies: its unfinished calls stay unfinished.
                alive.remove(&who);
                pushes.retain(|(o, _)| *o != who);
                pops.retain(|(o, _)| *o != who);
                let i = ids.iter().position(|&x| x == who).unwrap();
                ids[i] = next_id;
                alive.insert(next_id);
                next_id += 1;
            }
            // Owners up to the last id handed out (a hostile writer may name any of them).
            _ => scribble(&h, &mut rng, next_id - 1, positions),
        }
    }
    // Everyone of the chaos phase dies; the scribbling stops.
    alive.clear();
    drop(pushes);
    drop(pops);

    let (producer, consumer) = (next_id, next_id + 1);
    alive.extend([producer, consumer]);
    let p = Peer {
        id: producer,
        alive: &alive,
    };
    let c = Peer {
        id: consumer,
        alive: &alive,
    };
    let before = state(&h);
    const FIRST: u64 = 1 << 40;
    let total = 3 * u64::from(capacity);
    let (mut sent, mut got) = (0u64, Vec::new());
    let mut idle = 0;
    while got.len() < total as usize {
        if trace {
            eprintln!("sent {sent}, received {got:?}\n{}", state(&h));
        }
        let mut moved = false;
        if sent < total {
            // Runs of up to three slots every other time.
            let max = if sent % 2 == 0 { 3 } else { 1 };
            match ring.claim_push_run(&p, max.min((total - sent) as usize)) {
                Ok((t, n)) => {
                    let mut at = t.cursor();
                    send(ring, t, FIRST + sent);
                    for i in 1..n as u64 {
                        let next = ring.run_token(at);
                        at = next.cursor();
                        send(ring, next, FIRST + sent + i);
                    }
                    sent += n as u64;
                    moved = true;
                }
                Err(PushBlocked::Full) => moved |= ring.repair_tail(&p),
                Err(PushBlocked::Closed) if positions => {}
                Err(PushBlocked::Closed) => return Err("closed".into()),
            }
        }
        // Runs of up to three messages every other time.
        let max = if got.len() % 2 == 0 { 3 } else { 1 };
        let tokens = match ring.claim_pop_run(&c, MESSAGE_SIZE as usize, max) {
            Ok((t, n)) => run_tokens(ring, t, n),
            Err(PopBlocked::InProgress) => match ring.repair_head(&c) {
                HeadRepair::Message(t) => vec![t],
                HeadRepair::Skipped => {
                    moved = true;
                    vec![]
                }
                HeadRepair::Nothing => vec![],
            },
            Err(PopBlocked::Empty) => ring
                .adopt_orphan(&c, MESSAGE_SIZE as usize)
                .ok()
                .flatten()
                .into_iter()
                .collect(),
            Err(PopBlocked::Closed) if positions => vec![],
            Err(e) => return Err(format!("receive: {e:?}")),
        };
        for t in tokens {
            moved = true;
            if let Some(id) = take(ring, t) {
                if id >= FIRST {
                    got.push(id - FIRST);
                }
            }
        }
        idle = if moved { 0 } else { idle + 1 };
        if positions && (idle > 20 || sent == total) {
            return Ok(());
        }
        if idle > 1000 {
            return Err(format!(
                "stuck after {sent} sends, received {got:?}\nafter the chaos:\n{before}now:\n{}",
                state(&h)
            ));
        }
    }
    if got != (0..total).collect::<Vec<_>>() {
        return Err(format!("received {got:?}\nafter the chaos:\n{before}"));
    }
    Ok(())
}

/// Runs `run_case` for the seeds of the environment (see the module's doc), on a thread
/// given two minutes: a call that never returns is a failure too.
fn search(positions: bool) {
    let seeds = search_seeds(20_000);
    let current = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU32::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let (cur, fails) = (current.clone(), failures.clone());
    std::thread::spawn(move || {
        let mut report = Vec::new();
        for seed in seeds {
            cur.store(seed, Relaxed);
            if let Err(e) = run_case(seed, positions) {
                if fails.fetch_add(1, Relaxed) < 3 {
                    report.push(format!("seed {seed}: {e}"));
                }
            }
        }
        let _ = done_tx.send(report);
    });
    match done_rx.recv_timeout(Duration::from_secs(120)) {
        Ok(report) => assert!(
            report.is_empty(),
            "{} failing cases, the first ones:\n{}",
            failures.load(Relaxed),
            report.join("\n")
        ),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!(
            "seed {} did not finish (a call spinning for ever?)",
            current.load(Relaxed)
        ),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("seed {} panicked (above)", current.load(Relaxed))
        }
    }
}

#[test]
fn new_messages_get_through_once_hostile_writes_and_their_writers_are_gone() {
    search(false);
}

/// A head or a tail scribbled far away can cost positions (and the messages sent to them)
/// until it is repaired by hand, but no call may spin for ever over it.
#[test]
fn every_call_returns_whatever_the_head_and_tail_say() {
    search(true);
}
