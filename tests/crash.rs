//! Deterministic crash tests: for every crash point of `src/crashpoint.rs`, a child process
//! stops there (SIGSTOP), the test SIGKILLs it (or, for the `*_observed` pause points and the
//! live-republisher race, resumes it with SIGCONT after changing the queue under it), then
//! checks the guarantee of issue 5:
//!
//! * every send that returned success is received exactly once;
//! * `abandoned` / `redelivered` in `stats()` move by exactly what the scenario implies;
//! * the queue stays usable: more sends and receives afterwards, across several laps;
//! * a process killed while asleep in a blocking call leaves nothing that makes others sleep.
//!
//! Needs the `crash-points` feature: `cargo test --features crash-points --test crash`.
#![cfg(feature = "crash-points")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{futex_word, Proc, TestQueue, NOT_EMPTY, NOT_FULL, ROLE_ENV};
use shmq::{CrossProcessQueue, Error};

/// Generous bound for anything that should happen "soon" (never a timing assertion).
const SOON: Duration = Duration::from_secs(10);

// ----- the child side --------------------------------------------------------------------

/// Message `id`'s bytes: its id, then 192 bytes of text, longer than the 128 bytes a gather
/// send joins before sending (so `send_parts` writes it part by part).
fn payload(id: u64) -> Vec<u8> {
    let mut v = id.to_le_bytes().to_vec();
    for _ in 0..8 {
        v.extend_from_slice(b"-crash-test-payload-of-24");
    }
    v.truncate(200);
    v
}

/// Entry point of the child processes (ignored: runs only when a test spawns it).
#[test]
#[ignore]
fn crash_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var("Q").expect("Q");
    let timeout_ms: u64 = std::env::var("TIMEOUT_MS").map_or(10_000, |s| s.parse().unwrap());
    let timeout = Duration::from_millis(timeout_ms);
    let q = CrossProcessQueue::connect(&name).expect("child connect");
    println!("@@READY");
    match role.as_str() {
        "send" => {
            let id: u64 = std::env::var("ID").expect("ID").parse().unwrap();
            match q.send_with(Some(id), 7, &payload(id), Some(timeout)) {
                Ok(_) => println!("@@SENT {id}"),
                Err(e) => println!("@@ERR {e}"),
            }
        }
        "send_parts" => {
            // The same message as "send", in three parts (a gather send).
            let id: u64 = std::env::var("ID").expect("ID").parse().unwrap();
            let bytes = payload(id);
            let parts: [&[u8]; 3] = [&bytes[..8], &bytes[8..100], &bytes[100..]];
            match q.send_parts_with(Some(id), 7, &parts, Some(timeout)) {
                Ok(_) => println!("@@SENT {id}"),
                Err(e) => println!("@@ERR {e}"),
            }
        }
        "send_batch" => {
            // Ids ID, ID + 1, ID + 2 in one batch (their message ids are their positions; the
            // payload carries the id).
            let id: u64 = std::env::var("ID").expect("ID").parse().unwrap();
            let batch: Vec<Vec<u8>> = (id..id + 3).map(payload).collect();
            match q.send_batch(&batch, Some(timeout)) {
                Ok(n) => (id..id + n as u64).for_each(|id| println!("@@SENT {id}")),
                Err(e) => println!("@@ERR {e}"),
            }
        }
        "recv" => {
            let mut buf = vec![0u8; q.message_size()];
            match q.recv_with(&mut buf, Some(timeout)) {
                Ok(m) => {
                    assert_eq!(&buf[..m.len], &payload(m.id)[..], "payload of {}", m.id);
                    println!("@@RECV {} {}", m.id, m.redelivered);
                }
                Err(e) => println!("@@ERR {e}"),
            }
        }
        "recv_batch" => {
            let mut buf = vec![0u8; 3 * q.message_size()];
            let mut metas = Vec::with_capacity(3);
            match q.recv_batch(&mut buf, &mut metas, Some(timeout)) {
                Ok(_) => {
                    for (i, m) in metas.iter().enumerate() {
                        let bytes = &buf[i * q.message_size()..][..m.len];
                        assert_eq!(bytes, &payload(m.id)[..], "payload of {}", m.id);
                        println!("@@RECV {} {}", m.id, m.redelivered);
                    }
                }
                Err(e) => println!("@@ERR {e}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- the parent side -------------------------------------------------------------------

/// This file's view of a child ([`common::Proc`] running `crash_child`).
impl Proc {
    fn spawn(q: &TestQueue, role: &str, id: u64, point: Option<&str>, timeout_ms: u64) -> Proc {
        let env = [
            ("Q", q.name.clone()),
            ("ID", id.to_string()),
            ("TIMEOUT_MS", timeout_ms.to_string()),
        ];
        Proc::start("crash_child", role, &env, point)
    }

    /// A receiver (role `recv`) whose sleeps end only when it is woken: the sleep slice,
    /// which would mend a missed wake-up within 50 ms, is an hour long.
    fn spawn_sleepless(q: &TestQueue, point: Option<&str>) -> Proc {
        let env = [
            ("Q", q.name.clone()),
            ("ID", "0".to_string()),
            ("TIMEOUT_MS", "3600000".to_string()),
            ("SHMQ_TEST_SLEEP_SLICE_MS", "3600000".to_string()),
        ];
        Proc::start("crash_child", "recv", &env, point)
    }

    /// Waits until the process stopped itself at its crash point.
    fn wait_stopped(&mut self) {
        self.stopped_within(SOON);
    }

    /// Waits for the READY line (the child has connected and is about to act).
    fn wait_ready(&mut self) {
        let line = self.next_marked(SOON);
        assert_eq!(line.as_deref(), Some("@@READY"), "child never became ready");
    }

    /// Waits for the child to end and returns the rest of its stdout.
    fn output(&mut self) -> String {
        let _ = self.child.wait();
        lines_text(self.rest(SOON))
    }

    /// SIGKILLs the (stopped) child; returns its stdout and checks that it stopped at `point`.
    fn kill_at(mut self, point: &str) -> String {
        lines_text(self.killed_at(point, SOON))
    }

    /// Resumes a stopped child and waits for it to finish successfully; returns its stdout.
    fn resume(self) -> String {
        self.signal(libc::SIGCONT);
        self.finish()
    }

    /// Waits for a child to finish successfully; returns its stdout.
    fn finish(mut self) -> String {
        let out = self.output();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}\n{out}");
        out
    }
}

/// Lines as one text, each ending in a newline.
fn lines_text(lines: Vec<String>) -> String {
    lines.into_iter().map(|l| l + "\n").collect()
}

/// One queue, the parent's handle, and the ledger of what was promised and delivered.
struct Scenario {
    q: TestQueue,
    h: CrossProcessQueue,
    /// Sends that returned success (the guarantee covers these).
    acked: Vec<u64>,
    /// Sends whose sender was killed before they returned (delivered at most once).
    unacked: Vec<u64>,
    received: BTreeMap<u64, u32>,
    redelivered_flags: u64,
    next_id: u64,
    /// A resumed child whose output is read later.
    pending: Option<Proc>,
}

impl Scenario {
    fn new(tag: &str, capacity: usize) -> Scenario {
        let q = TestQueue::new(tag);
        let h = CrossProcessQueue::create(&q.name, capacity, 256).expect("create");
        Scenario {
            q,
            h,
            acked: Vec::new(),
            unacked: Vec::new(),
            received: BTreeMap::new(),
            redelivered_flags: 0,
            next_id: 1,
            pending: None,
        }
    }

    /// Sends one message from the parent; it must succeed.
    fn send(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.h
            .send_with(Some(id), 7, &payload(id), Some(SOON))
            .unwrap_or_else(|e| panic!("send {id}: {e}"));
        self.acked.push(id);
        id
    }

    fn note(&mut self, id: u64, redelivered: bool) {
        *self.received.entry(id).or_default() += 1;
        self.redelivered_flags += redelivered as u64;
    }

    /// Receives once from the parent; `None` when nothing came within `wait`. Returns the id
    /// the payload carries (a batch's messages have their positions as message ids).
    fn recv(&mut self, wait: Duration) -> Option<u64> {
        let mut buf = [0u8; 256];
        match self.h.recv_with(&mut buf, Some(wait)) {
            Ok(m) => {
                let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
                assert_eq!(&buf[..m.len], &payload(id)[..], "payload of {id}");
                self.note(id, m.redelivered);
                Some(id)
            }
            Err(Error::Timeout) => None,
            Err(e) => panic!("receive: {e}"),
        }
    }

    /// Receives by polling alone (`receive_into`, which never waits), until a message comes
    /// or `within` has passed; `None` then.
    fn poll(&mut self, within: Duration) -> Option<u64> {
        let mut buf = [0u8; 256];
        let start = Instant::now();
        loop {
            match self.h.receive_into(&mut buf) {
                Ok(Some(m)) => {
                    let id = u64::from_le_bytes(buf[..8].try_into().unwrap());
                    assert_eq!(&buf[..m.len], &payload(id)[..], "payload of {id}");
                    self.note(id, m.redelivered);
                    return Some(id);
                }
                Ok(None) if start.elapsed() >= within => return None,
                Ok(None) => std::thread::yield_now(),
                Err(e) => panic!("receive_into: {e}"),
            }
        }
    }

    /// Receives until the queue stays empty for a while.
    fn recv_all(&mut self) -> Vec<u64> {
        let mut got = Vec::new();
        while let Some(id) = self.recv(Duration::from_millis(300)) {
            got.push(id);
        }
        got
    }

    /// A child that sends the next id and stops at `point`.
    fn child_send(&mut self, point: &str) -> (Proc, u64) {
        self.child_send_as("send", point)
    }

    /// [`child_send`](Self::child_send) with the child's `role` ("send" or "send_parts").
    fn child_send_as(&mut self, role: &str, point: &str) -> (Proc, u64) {
        let id = 1000 + self.next_id;
        self.next_id += 1;
        self.unacked.push(id);
        let mut p = Proc::spawn(&self.q, role, id, Some(point), 10_000);
        p.wait_stopped();
        (p, id)
    }

    /// A child that sends the next three ids in one batch and stops at `point`.
    fn child_send_batch(&mut self, point: &str) -> (Proc, [u64; 3]) {
        let id = 1000 + self.next_id;
        self.next_id += 3;
        let ids = [id, id + 1, id + 2];
        self.unacked.extend(ids);
        let mut p = Proc::spawn(&self.q, "send_batch", id, Some(point), 10_000);
        p.wait_stopped();
        (p, ids)
    }

    /// A child that receives once and stops at `point`.
    fn child_recv(&mut self, point: &str) -> Proc {
        let mut p = Proc::spawn(&self.q, "recv", 0, Some(point), 10_000);
        p.wait_stopped();
        p
    }

    /// Records what a finished or killed child reported.
    fn absorb(&mut self, out: &str) {
        // libtest prints "test crash_child ... " before the child's first line: look for
        // the marker anywhere in the line.
        for line in out.lines() {
            let Some((_, line)) = line.split_once("@@") else {
                continue;
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["SENT", id] => {
                    let id: u64 = id.parse().unwrap();
                    self.unacked.retain(|&u| u != id);
                    self.acked.push(id);
                }
                ["RECV", id, redelivered] => {
                    self.note(id.parse().unwrap(), *redelivered == "true");
                }
                ["ERR", ..] => panic!("child reported an error: {line}"),
                _ => {}
            }
        }
    }

    /// Proves the queue still works (several laps of sends and receives), shuts it down,
    /// drains it, and checks the guarantee and the repair counters.
    fn finish(mut self, abandoned: u64, redelivered: u64) {
        self.recv_all();
        let cap = self.h.capacity();
        for _ in 0..3 {
            for _ in 0..cap {
                self.send();
            }
            self.recv_all();
        }
        self.shutdown_and_check(abandoned, redelivered);
    }

    fn shutdown_and_check(mut self, abandoned: u64, redelivered: u64) {
        self.h.shutdown().unwrap();
        let mut buf = [0u8; 256];
        loop {
            match self.h.recv_with(&mut buf, Some(SOON)) {
                Ok(m) => self.note(m.id, m.redelivered),
                Err(Error::Closed) => break,
                Err(e) => panic!("drain after shutdown: {e}"),
            }
        }
        for id in &self.acked {
            assert_eq!(
                self.received.get(id).copied().unwrap_or(0),
                1,
                "acknowledged message {id} must be received exactly once; received: {:?}",
                self.received
            );
        }
        for id in &self.unacked {
            assert!(
                self.received.get(id).copied().unwrap_or(0) <= 1,
                "unacknowledged {id} received twice"
            );
        }
        for id in self.received.keys() {
            assert!(
                self.acked.contains(id) || self.unacked.contains(id),
                "received {id}, which nobody sent"
            );
        }
        let stats = self.h.stats();
        assert_eq!(stats.abandoned, abandoned, "abandoned: {stats:?}");
        assert_eq!(stats.redelivered, redelivered, "redelivered: {stats:?}");
        assert_eq!(
            self.redelivered_flags, redelivered,
            "redelivered flags seen"
        );
        assert_eq!(stats.depth, 0, "{stats:?}");
        assert_eq!(stats.corrupted, 0, "{stats:?}");
        assert_eq!(stats.checksum_failures, 0, "{stats:?}");
        let delivered = self.received.values().sum::<u32>() as u64;
        assert_eq!(
            stats.messages_received, delivered,
            "messages_received: {stats:?}"
        );
        let published = self.acked.len() as u64
            + self
                .unacked
                .iter()
                .filter(|id| self.received.contains_key(id))
                .count() as u64;
        assert_eq!(stats.messages_sent, published, "messages_sent: {stats:?}");
    }
}

// ----- a producer killed mid-send: its position is skipped, nothing promised is lost -------

fn producer_killed(point: &str) {
    producer_killed_as("send", point);
}

fn producer_killed_as(role: &str, point: &str) {
    let mut s = Scenario::new(point, 4);
    s.send();
    let (child, id) = s.child_send_as(role, point);
    let out = child.kill_at(point);
    s.absorb(&out);
    assert!(
        s.unacked.contains(&id),
        "a killed send cannot have returned"
    );
    s.send();
    s.recv_all();
    assert!(
        !s.received.contains_key(&id),
        "an unpublished message was delivered"
    );
    s.finish(1, 0);
}

#[test]
fn killed_at_push_claimed() {
    producer_killed("push_claimed");
}

#[test]
fn killed_at_push_tail_moved() {
    producer_killed("push_tail_moved");
}

#[test]
fn killed_at_push_written() {
    producer_killed("push_written");
}

#[test]
fn killed_in_a_gather_send_at_each_point() {
    for point in ["push_claimed", "push_tail_moved", "push_written"] {
        producer_killed_as("send_parts", point);
    }
}

/// A receiver that only polls, on a queue left empty long enough for its repair checks to
/// come due (an empty queue takes them: no producer is mid-send at the head), then a producer
/// killed between its claim and its publication: the polls alone still skip the abandoned
/// position and deliver the message behind it.
#[test]
fn polling_receiver_skips_a_dead_producers_position() {
    let mut s = Scenario::new("poll_skip", 4);
    let idle = Instant::now();
    while idle.elapsed() < Duration::from_millis(30) {
        assert_eq!(s.poll(Duration::ZERO), None, "the queue is empty");
    }
    let (child, id) = s.child_send("push_claimed");
    s.absorb(&child.kill_at("push_claimed"));
    let behind = s.send();
    assert_eq!(
        s.poll(SOON),
        Some(behind),
        "polling must skip the dead producer's position"
    );
    assert!(
        !s.received.contains_key(&id),
        "an unpublished message was delivered"
    );
    s.finish(1, 0);
}

/// A receiver that never sleeps (`set_spin_limit(Duration::MAX)`), blocked behind a producer
/// killed between its claim and its publication: its polls alone must skip the dead
/// producer's position, as a sleeping receiver's wake-ups do, not wait for the deadline
/// (after which the wait's last attempt would repair it anyway).
#[test]
fn receiver_that_never_sleeps_skips_a_dead_producers_position() {
    let mut s = Scenario::new("spin_skip", 4);
    s.h.set_spin_limit(Duration::MAX);
    let (child, id) = s.child_send("push_claimed");
    s.absorb(&child.kill_at("push_claimed"));
    let behind = s.send();
    let deadline = Duration::from_secs(120);
    let start = Instant::now();
    assert_eq!(s.recv(deadline), Some(behind));
    assert!(
        start.elapsed() < deadline / 2,
        "the polls did not repair: the message came after {:?}",
        start.elapsed()
    );
    assert!(
        !s.received.contains_key(&id),
        "an unpublished message was delivered"
    );
    s.h.set_spin_limit(shmq::DEFAULT_SPIN_LIMIT);
    s.finish(1, 0);
}

/// A producer killed inside a batch of three, after publishing the batch's first message
/// and claiming the slots of the other two (one run), before or after moving the tail past
/// them: the first is delivered, the two claimed positions skipped, and the queue goes on.
fn killed_in_a_send_batch(point: &str) {
    let mut s = Scenario::new(point, 4);
    s.send();
    let (child, ids) = s.child_send_batch(point);
    s.absorb(&child.kill_at(point));
    s.recv_all(); // room for the next send: the run holds two of the four slots
    s.send();
    s.recv_all();
    assert_eq!(
        s.received.get(&ids[0]),
        Some(&1),
        "the batch's published message is delivered"
    );
    assert!(
        !s.received.contains_key(&ids[1]) && !s.received.contains_key(&ids[2]),
        "an unpublished message was delivered"
    );
    s.finish(2, 0);
}

#[test]
fn killed_at_push_run_claimed() {
    killed_in_a_send_batch("push_run_claimed");
}

#[test]
fn killed_at_push_batch_next() {
    killed_in_a_send_batch("push_batch_next");
}

/// A producer killed after claiming, with nobody sending afterwards: receivers are not
/// blocked (they time out on an empty queue), and shutdown still ends them with `Closed`.
#[test]
fn killed_producer_then_shutdown() {
    let mut s = Scenario::new("kp_shutdown", 2);
    s.send();
    let (child, _) = s.child_send("push_tail_moved");
    s.absorb(&child.kill_at("push_tail_moved"));
    assert_eq!(s.recv_all().len(), 1);
    s.shutdown_and_check(1, 0);
}

// ----- a consumer killed mid-receive: its message is delivered by someone else ---------------

/// Other receivers adopt the orphaned message once the queue looks empty.
fn consumer_killed_adopted(point: &str) {
    let mut s = Scenario::new(point, 4);
    let first = s.send();
    s.send();
    let child = s.child_recv(point);
    s.absorb(&child.kill_at(point));
    assert!(s.received.is_empty());
    s.recv_all();
    assert_eq!(s.received.get(&first), Some(&1), "orphan not adopted");
    s.finish(0, 1);
}

/// Producers that find the queue full republish the orphaned message at the tail.
fn consumer_killed_republished(point: &str) {
    let mut s = Scenario::new(point, 4);
    let first = s.send();
    s.send();
    let child = s.child_recv(point);
    s.absorb(&child.kill_at(point));
    s.send();
    s.send();
    // Full: this send repairs the dead receiver's slot (republishing its message), then finds
    // the queue full again since the message is back in it.
    let id = 99;
    let r =
        s.h.send_with(Some(id), 7, &payload(id), Some(Duration::from_millis(300)));
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert_eq!(s.h.stats().redelivered, 1, "the producer did not republish");
    let got = s.recv_all();
    assert_eq!(got.last(), Some(&first), "republished message comes last");
    s.finish(0, 1);
}

#[test]
fn killed_at_pop_claimed_adopted() {
    consumer_killed_adopted("pop_claimed");
}

#[test]
fn killed_at_pop_head_moved_adopted() {
    consumer_killed_adopted("pop_head_moved");
}

#[test]
fn killed_at_pop_read_adopted() {
    consumer_killed_adopted("pop_read");
}

#[test]
fn killed_at_pop_claimed_republished() {
    consumer_killed_republished("pop_claimed");
}

#[test]
fn killed_at_pop_head_moved_republished() {
    consumer_killed_republished("pop_head_moved");
}

#[test]
fn killed_at_pop_read_republished() {
    consumer_killed_republished("pop_read");
}

/// A receiver killed inside a batch of three, after copying the batch's first message and
/// claiming the other two (one run), before or after moving the head past them: all three
/// are delivered again (flagged), since the call never returned them.
fn killed_in_a_receive_batch(point: &str) {
    let mut s = Scenario::new(point, 4);
    let ids = [s.send(), s.send(), s.send()];
    let mut child = Proc::spawn(&s.q, "recv_batch", 0, Some(point), 10_000);
    child.wait_stopped();
    s.absorb(&child.kill_at(point));
    assert!(s.received.is_empty());
    s.recv_all();
    for id in ids {
        assert_eq!(s.received.get(&id), Some(&1), "{id} not delivered again");
    }
    s.finish(0, 3);
}

#[test]
fn killed_at_pop_run_claimed() {
    killed_in_a_receive_batch("pop_run_claimed");
}

#[test]
fn killed_at_pop_batch_next() {
    killed_in_a_receive_batch("pop_batch_next");
}

/// A receiver killed mid-receive, then shutdown: the message still comes before `Closed`.
#[test]
fn killed_consumer_then_shutdown() {
    let mut s = Scenario::new("kc_shutdown", 4);
    s.send();
    let child = s.child_recv("pop_read");
    s.absorb(&child.kill_at("pop_read"));
    s.shutdown_and_check(0, 1);
}

// ----- stale views: a process paused mid-operation while the slot goes a lap ---------------

/// A producer that looked at the tail slot, paused while another message went through the
/// same slot, must not claim the slot for the old position (it would publish a message
/// nobody can receive and wedge the ring).
#[test]
fn paused_at_push_observed() {
    let mut s = Scenario::new("push_observed", 1);
    let (child, id) = s.child_send("push_observed");
    s.send();
    assert_eq!(s.recv_all().len(), 1);
    s.absorb(&child.resume());
    assert!(s.acked.contains(&id), "resumed send did not succeed");
    s.recv_all();
    s.finish(0, 0);
}

/// A consumer that looked at the head slot, paused while that message was received and a
/// new one published in the same slot, must not claim the new one for the old position.
#[test]
fn paused_at_pop_observed() {
    let mut s = Scenario::new("pop_observed", 1);
    s.send();
    let child = s.child_recv("pop_observed");
    assert_eq!(s.recv_all().len(), 1);
    s.send();
    s.absorb(&child.resume());
    s.finish(0, 0);
}

// ----- processes killed inside the repairs ------------------------------------------------

/// Cap 2: message A (position 0) is held by a receiver killed at `pop_claimed`, B is at
/// position 1; a producer finding the queue full starts republishing A and stops at `point`.
fn republisher_stopped(s: &mut Scenario, point: &str) -> (Proc, u64, u64) {
    let a = s.send();
    let b = s.send();
    let receiver = s.child_recv("pop_claimed");
    s.absorb(&receiver.kill_at("pop_claimed"));
    let (producer, _) = s.child_send(point);
    let _ = b;
    (producer, a, b)
}

/// A live republisher paused right after claiming: a receiver at the head must neither take
/// the message from under it (it would be delivered twice) nor wait forever.
#[test]
fn paused_at_repair_tail_claimed() {
    let mut s = Scenario::new("rt_pause", 2);
    let (producer, a, b) = republisher_stopped(&mut s, "repair_tail_claimed");
    assert_eq!(s.recv_all(), vec![b]);
    s.absorb(&producer.resume());
    s.recv_all();
    assert_eq!(s.received.get(&a), Some(&1));
    s.finish(0, 1);
}

#[test]
fn killed_at_repair_tail_claimed() {
    let mut s = Scenario::new("rt_claimed", 2);
    let (producer, a, _) = republisher_stopped(&mut s, "repair_tail_claimed");
    s.absorb(&producer.kill_at("repair_tail_claimed"));
    s.recv_all();
    assert_eq!(s.received.get(&a), Some(&1));
    s.finish(0, 1);
}

#[test]
fn killed_at_repair_tail_head_moved() {
    let mut s = Scenario::new("rt_head", 2);
    let (producer, a, _) = republisher_stopped(&mut s, "repair_tail_head_moved");
    s.absorb(&producer.kill_at("repair_tail_head_moved"));
    s.recv_all();
    assert_eq!(s.received.get(&a), Some(&1));
    s.finish(0, 1);
}

/// The republisher dies after moving the head, and the queue is shut down before any other
/// producer comes by: receivers must still get the message before `Closed`.
#[test]
fn killed_at_repair_tail_head_moved_then_shutdown() {
    let mut s = Scenario::new("rt_head_sd", 2);
    let (producer, _, _) = republisher_stopped(&mut s, "repair_tail_head_moved");
    s.absorb(&producer.kill_at("repair_tail_head_moved"));
    s.shutdown_and_check(0, 1);
}

#[test]
fn killed_at_repair_tail_tail_moved() {
    let mut s = Scenario::new("rt_tail", 2);
    let (producer, a, _) = republisher_stopped(&mut s, "repair_tail_tail_moved");
    s.absorb(&producer.kill_at("repair_tail_tail_moved"));
    s.recv_all();
    assert_eq!(s.received.get(&a), Some(&1));
    s.finish(0, 1);
}

/// Cap 2: a producer killed at `push_tail_moved` leaves position 0 abandoned; B is at
/// position 1; a receiver starts skipping position 0 and is killed at `point`.
fn skipper_killed(point: &str) {
    let mut s = Scenario::new(point, 2);
    let (producer, _) = s.child_send("push_tail_moved");
    s.absorb(&producer.kill_at("push_tail_moved"));
    s.send();
    let skipper = s.child_recv(point);
    s.absorb(&skipper.kill_at(point));
    assert_eq!(s.recv_all().len(), 1);
    s.finish(1, 0);
}

#[test]
fn killed_at_repair_head_claimed() {
    skipper_killed("repair_head_claimed");
}

#[test]
fn killed_at_repair_head_head_moved() {
    skipper_killed("repair_head_head_moved");
}

/// A receiver killed while adopting an orphan: the next receiver adopts it again.
#[test]
fn killed_at_adopt_claimed() {
    let mut s = Scenario::new("adopt", 4);
    let a = s.send();
    s.send();
    let first = s.child_recv("pop_head_moved");
    s.absorb(&first.kill_at("pop_head_moved"));
    assert_eq!(s.recv(SOON).map(|id| id != a), Some(true));
    let adopter = s.child_recv("adopt_claimed");
    s.absorb(&adopter.kill_at("adopt_claimed"));
    s.recv_all();
    assert_eq!(s.received.get(&a), Some(&1));
    s.finish(0, 1);
}

/// A receiver that finishes normally (releases the slot) and disconnects while a producer
/// is deciding to republish its message: the producer must not republish a message that
/// was delivered. (It gives the position it claimed up instead: one `abandoned`.)
#[test]
fn paused_at_repair_tail_observed() {
    let mut s = Scenario::new("rt_observed", 2);
    let a = s.send();
    let b = s.send();
    let receiver = s.child_recv("pop_read");
    let (producer, x) = s.child_send("repair_tail_observed");
    s.absorb(&receiver.resume());
    assert_eq!(s.received.get(&a), Some(&1));
    s.signal_resume(producer);
    assert_eq!(s.recv(SOON), Some(b));
    s.recv_all();
    let producer = s.pending.take().unwrap();
    s.absorb(&producer.finish());
    s.recv_all();
    assert_eq!(s.received.get(&x), Some(&1));
    s.finish(1, 0);
}

/// The same race on the receiving side: a receiver that finishes and disconnects while
/// another is about to adopt its message must not have it delivered twice.
#[test]
fn paused_at_adopt_observed() {
    let mut s = Scenario::new("adopt_observed", 4);
    let a = s.send();
    s.send();
    let first = s.child_recv("pop_read");
    assert!(s.recv(SOON).is_some());
    let adopter = s.child_recv("adopt_observed");
    s.absorb(&first.resume());
    assert_eq!(s.received.get(&a), Some(&1));
    s.signal_resume(adopter);
    let c = s.send();
    let adopter = s.pending.take().unwrap();
    s.absorb(&adopter.finish());
    assert_eq!(
        s.received.get(&c),
        Some(&1),
        "the adopter gets the next message"
    );
    s.finish(0, 0);
}

/// Every crash point is exercised by a test in this file, and every point the library passes
/// is in the list.
#[test]
fn every_crash_point_is_tested() {
    let me = include_str!("crash.rs");
    for point in shmq::crashpoint::POINTS {
        assert!(
            me.contains(&format!("\"{point}\"")),
            "crash point {point} has no test"
        );
    }
    for source in [
        include_str!("../src/lib.rs"),
        include_str!("../src/ring.rs"),
        include_str!("../src/spsc.rs"),
        include_str!("../src/zerocopy.rs"),
    ] {
        for piece in source.split("crashpoint::hit(\"").skip(1) {
            let point = piece.split('"').next().unwrap();
            assert!(
                shmq::crashpoint::POINTS.contains(&point),
                "crash point {point} is not in crashpoint::POINTS"
            );
        }
    }
}

// ----- processes killed while asleep ------------------------------------------------------

/// Waits until the child sleeps on the futex word at `offset`.
fn wait_asleep(q: &TestQueue, p: &Proc, offset: usize) {
    let deadline = Instant::now() + SOON;
    while !(p.in_shared_futex_wait() && futex_word(q, offset) & shmq::layout::WAITERS_BIT != 0) {
        assert!(Instant::now() < deadline, "child never went to sleep");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn killed_while_asleep_in_receive() {
    let mut s = Scenario::new("asleep_recv", 2);
    let mut sleeper = Proc::spawn(&s.q, "recv", 0, None, 60_000);
    sleeper.wait_ready();
    wait_asleep(&s.q, &sleeper, NOT_EMPTY);
    drop(sleeper); // SIGKILL while asleep
    assert_ne!(futex_word(&s.q, NOT_EMPTY) & shmq::layout::WAITERS_BIT, 0);
    // The dead sleeper's announcement costs the next sender one wake-up, then is gone.
    s.send();
    assert_eq!(futex_word(&s.q, NOT_EMPTY) & shmq::layout::WAITERS_BIT, 0);
    assert!(s.recv(SOON).is_some());
    // A new sleeper is woken by the next send.
    let mut waiter = Proc::spawn(&s.q, "recv", 0, None, 60_000);
    waiter.wait_ready();
    wait_asleep(&s.q, &waiter, NOT_EMPTY);
    s.send();
    s.absorb(&waiter.finish());
    s.finish(0, 0);
}

/// A receiver killed after a wake-up, before it looked, leaves the other sleepers in sight
/// of the next sender: the bit stays set while anyone may sleep. (When a waker cleared it
/// at every wake-up and the woken one set it again, the others slept on unseen until their
/// slice ended.) The message it was woken for waits for that next wake-up.
#[test]
fn killed_between_its_wake_up_and_its_look() {
    let mut s = Scenario::new("woken_recv", 4);
    // The kernel wakes a futex's sleepers of equal priority in the order they slept: the
    // first to sleep is the one the first send wakes.
    let mut woken = Proc::spawn_sleepless(&s.q, Some("wait_woken"));
    woken.wait_ready();
    wait_asleep(&s.q, &woken, NOT_EMPTY);
    let mut other = Proc::spawn_sleepless(&s.q, None);
    other.wait_ready();
    wait_asleep(&s.q, &other, NOT_EMPTY);
    s.send();
    woken.wait_stopped();
    let _ = woken.kill_at("wait_woken");
    assert_ne!(
        futex_word(&s.q, NOT_EMPTY) & shmq::layout::WAITERS_BIT,
        0,
        "the other receiver is out of sight"
    );
    s.send();
    let line = other.next_marked(SOON);
    assert!(
        line.as_deref().is_some_and(|l| l.starts_with("@@RECV")),
        "the other receiver was not woken: {line:?}"
    );
    s.absorb(&(line.unwrap() + "\n"));
    s.absorb(&other.finish());
    s.finish(0, 0);
}

#[test]
fn killed_while_asleep_in_send() {
    let mut s = Scenario::new("asleep_send", 1);
    s.send();
    let mut sleeper = Proc::spawn(&s.q, "send", 555, None, 60_000);
    sleeper.wait_ready();
    wait_asleep(&s.q, &sleeper, NOT_FULL);
    drop(sleeper);
    s.unacked.push(555);
    assert!(s.recv(SOON).is_some());
    assert_eq!(futex_word(&s.q, NOT_FULL) & shmq::layout::WAITERS_BIT, 0);
    // A new blocked sender is woken by the next receive.
    s.send_blocked_then_received();
    assert!(!s.received.contains_key(&555));
    s.finish(0, 0);
}

impl Scenario {
    /// Resumes a stopped child without waiting for it; `pending` holds it.
    fn signal_resume(&mut self, p: Proc) {
        p.signal(libc::SIGCONT);
        self.pending = Some(p);
    }

    fn send_blocked_then_received(&mut self) {
        self.send();
        let mut sender = Proc::spawn(&self.q, "send", 777, None, 60_000);
        sender.wait_ready();
        self.unacked.push(777);
        wait_asleep(&self.q, &sender, NOT_FULL);
        assert!(self.recv(SOON).is_some());
        self.absorb(&sender.finish());
        assert!(self.acked.contains(&777));
    }
}
