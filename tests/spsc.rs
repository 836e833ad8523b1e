//! Single-producer/single-consumer queues (`QueueOptions::single_producer_single_consumer`)
//! across real processes and real shared memory:
//!
//! * streams of 200 000 messages through 64 slots (copying, batch and in-place forms), each
//!   received exactly once, in order, with its contents checked;
//! * role leases: a second live handle (in another process or this one) gets `RoleTaken`;
//!   a dropped or dead holder's role is taken; threads sharing one handle take turns;
//! * a sender or receiver killed (SIGKILL) at each crash point: the next holder, in another
//!   process, repairs what it left (no acknowledged message lost or duplicated; a message
//!   taken by a dead receiver is delivered again, flagged `redelivered`);
//! * shutdown from any process, with the sender alive and idle or blocked on a full queue;
//! * blocked calls woken from another process;
//! * hostile bytes in the slots' sequence words of a live queue;
//! * open-or-create refuses a mismatching mode.
//!
//! Children are this test binary run again in a role: the ignored test `spsc_child` reads
//! `SHMQ_TEST_ROLE` and acts. Crash tests need the `crash-points` feature:
//! `cargo test --features crash-points --test spsc` (the other tests run without it).

// The crash helpers are only used with the `crash-points` feature.
#![cfg_attr(not(feature = "crash-points"), allow(dead_code))]

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{Proc, TestQueue, ROLE_ENV};
use shmq::{CrossProcessQueue, Error, OpenMode, Received};

/// Generous bound for anything that should happen "soon" (never a timing assertion).
const SOON: Duration = Duration::from_secs(10);
/// Bound for "promptly" (a wake-up or a shutdown seen by a blocked peer).
const PROMPT: Duration = Duration::from_secs(5);
/// Message size of every queue here (slot stride 128).
const MSG: usize = 64;

// ----- shared helpers --------------------------------------------------------------------

fn spsc_queue(tq: &TestQueue, capacity: usize) -> CrossProcessQueue {
    CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&tq.name, capacity, MSG)
        .expect("create spsc queue")
}

/// The payload of message `seq`: its number, then a pattern; length 8..=48.
fn payload(seq: u64) -> Vec<u8> {
    let len = 8 + (seq % 41) as usize;
    let mut v: Vec<u8> = (0..len)
        .map(|i| (seq as u8).wrapping_mul(31).wrapping_add(i as u8))
        .collect();
    v[..8].copy_from_slice(&seq.to_le_bytes());
    v
}

fn check_payload(seq: u64, bytes: &[u8]) {
    assert_eq!(bytes, &payload(seq)[..], "contents of message {seq}");
}

/// Offsets of the position words in the header (docs/LAYOUT.md).
const TAIL: u64 = 128;
const TAIL_IN_FLIGHT: u64 = 136;
const HEAD: u64 = 256;
const HEAD_IN_FLIGHT: u64 = 264;

/// Offset of slot `i`'s header in a queue of message size 64 (stride 128).
fn slot_offset(i: u64) -> u64 {
    shmq::layout::slot_header_offset(i as u32, MSG as u32).unwrap() as u64
}

fn shm_path(name: &str) -> String {
    format!("/dev/shm/shmq.{name}")
}

/// Writes `value` at `offset` of a queue's segment (what a hostile process could do).
fn poke_u64(name: &str, offset: u64, value: u64) {
    let f = OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    f.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

fn peek_u64(name: &str, offset: u64) -> u64 {
    let f = OpenOptions::new().read(true).open(shm_path(name)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

/// A short name for a result, for children to report.
fn kind<T>(r: &shmq::Result<T>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(Error::RoleTaken { role, holder, .. }) => format!("role_taken:{role}:{holder}"),
        Err(Error::Closed) => "closed".into(),
        Err(Error::QueueFull) => "full".into(),
        Err(Error::QueueEmpty) => "empty".into(),
        Err(Error::Timeout) => "timeout".into(),
        Err(Error::CorruptedData(_)) => "corrupted".into(),
        Err(e) => format!("other:{e}"),
    }
}

// ----- the child side --------------------------------------------------------------------

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

fn env_u64(key: &str) -> u64 {
    env(key).parse().unwrap()
}

/// Prints a line for the parent (found by its `@@` marker after libtest's own output).
fn say(line: impl std::fmt::Display) {
    println!("\n@@{line}");
    let _ = std::io::stdout().flush();
}

fn read_stdin_line() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// Sends message `seq` in the form `mode` names; returns the id.
fn send_one(
    q: &CrossProcessQueue,
    mode: &str,
    seq: u64,
    timeout: Option<Duration>,
) -> shmq::Result<u64> {
    let data = payload(seq);
    match mode {
        "plain" => q.send_with(Some(seq), 7, &data, timeout),
        "in_place" => q.send_in_place(timeout, |buf| {
            buf[..data.len()].copy_from_slice(&data);
            data.len()
        }),
        other => panic!("unknown mode {other}"),
    }
}

/// Receives one message in the form `mode` names and checks its contents; returns the
/// number in its payload (its id, unless sent in place) and its metadata.
fn recv_one(
    q: &CrossProcessQueue,
    mode: &str,
    timeout: Option<Duration>,
) -> shmq::Result<(u64, Received)> {
    match mode {
        "plain" => {
            let mut buf = [0u8; MSG];
            let meta = q.recv_with(&mut buf, timeout)?;
            let seq = seq_of(&buf[..meta.len]);
            check_payload(seq, &buf[..meta.len]);
            Ok((seq, meta))
        }
        "in_place" => q.recv_in_place(timeout, |meta, bytes| {
            let seq = seq_of(bytes);
            check_payload(seq, bytes);
            (seq, meta)
        }),
        other => panic!("unknown mode {other}"),
    }
}

fn seq_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("at least 8 bytes"))
}

/// Child entry point: runs the role named in `SHMQ_TEST_ROLE`.
#[test]
#[ignore = "child process entry point, run by the other tests"]
fn spsc_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let q = CrossProcessQueue::connect(&env("Q")).expect("child connects");
    say("READY");
    let mode = std::env::var("MODE").unwrap_or_else(|_| "plain".into());
    match role.as_str() {
        "stream_send" => {
            // Sends messages 0..COUNT in order, waiting for room as long as it takes.
            let count = env_u64("COUNT");
            match mode.as_str() {
                "batch" => {
                    let mut seq = 0;
                    while seq < count {
                        let chunk: Vec<Vec<u8>> = (seq..count.min(seq + 16)).map(payload).collect();
                        let sent = q.send_batch(&chunk, None).expect("send_batch");
                        assert!(sent >= 1);
                        seq += sent as u64;
                    }
                }
                _ => {
                    for seq in 0..count {
                        let id = send_one(&q, &mode, seq, None).expect("send");
                        assert_eq!(id, seq, "ids are positions on a fresh queue");
                    }
                }
            }
            say(format!("SENT_ALL {count}"));
        }
        "stream_recv" => {
            // Receives until shut down and drained; every message must be the next one.
            let mut next = 0u64;
            let mut check = |meta: Received, bytes: &[u8]| {
                assert_eq!(meta.id, next, "order");
                assert_eq!(meta.len, payload(next).len(), "length of {next}");
                assert!(!meta.redelivered);
                check_payload(next, bytes);
                next += 1;
            };
            match mode.as_str() {
                "plain" => {
                    let mut buf = [0u8; MSG];
                    while let Some(meta) = q.recv_into(&mut buf, None).expect("recv") {
                        check(meta, &buf[..meta.len]);
                    }
                }
                "batch" => {
                    let mut buf = vec![0u8; 16 * MSG];
                    let mut metas = Vec::with_capacity(16);
                    loop {
                        match q.recv_batch(&mut buf, &mut metas, None) {
                            Ok(n) => {
                                assert!(n >= 1 && n == metas.len());
                                for (i, meta) in metas.iter().enumerate() {
                                    check(*meta, &buf[i * MSG..][..meta.len]);
                                }
                            }
                            Err(Error::Closed) => break,
                            Err(e) => panic!("recv_batch: {e}"),
                        }
                    }
                }
                "in_place" => loop {
                    match q.recv_in_place(None, |meta, bytes| check(meta, bytes)) {
                        Ok(()) => {}
                        Err(Error::Closed) => break,
                        Err(e) => panic!("recv_in_place: {e}"),
                    }
                },
                other => panic!("unknown mode {other}"),
            }
            say(format!("GOT {next}"));
        }
        "send_ids" => {
            // Sends FROM.. COUNT messages, reporting each that returned success.
            let from = env_u64("FROM");
            for id in from..from + env_u64("COUNT") {
                match send_one(&q, &mode, id, Some(SOON)) {
                    Ok(_) => say(format!("SENT {id}")),
                    Err(e) => panic!("send {id}: {e}"),
                }
            }
        }
        "send_batch_ids" => {
            // Sends FROM.. COUNT messages in one batch, reporting each that was sent.
            let from = env_u64("FROM");
            let batch: Vec<Vec<u8>> = (from..from + env_u64("COUNT")).map(payload).collect();
            match q.send_batch(&batch, Some(SOON)) {
                Ok(n) => (from..from + n as u64).for_each(|id| say(format!("SENT {id}"))),
                Err(e) => panic!("send_batch {from}: {e}"),
            }
        }
        "recv_ids" => {
            // Receives COUNT messages (0: until shut down and drained), reporting each.
            let count = env_u64("COUNT");
            let mut n = 0;
            while count == 0 || n < count {
                match recv_one(&q, &mode, Some(SOON)) {
                    Ok((seq, m)) => say(format!("RECV {seq} {}", m.redelivered)),
                    Err(Error::Closed) => {
                        say("CLOSED");
                        break;
                    }
                    Err(e) => panic!("receive: {e}"),
                }
                n += 1;
            }
        }
        "recv_batch_ids" => {
            // Receives one batch of up to COUNT messages, reporting each.
            let count = env_u64("COUNT") as usize;
            let mut buf = vec![0u8; count * MSG];
            let mut metas = Vec::with_capacity(count);
            q.recv_batch(&mut buf, &mut metas, Some(SOON))
                .expect("recv_batch");
            for (i, m) in metas.iter().enumerate() {
                let bytes = &buf[i * MSG..][..m.len];
                check_payload(seq_of(bytes), bytes);
                say(format!("RECV {} {}", seq_of(bytes), m.redelivered));
            }
        }
        "recv_blocking" => {
            let mut buf = [0u8; MSG];
            let meta = q
                .recv_into(&mut buf, None)
                .expect("recv")
                .expect("a message");
            check_payload(meta.id, &buf[..meta.len]);
            say(format!("RECV {}", meta.id));
        }
        "send_blocking" => {
            // Sends COUNT messages, each waiting for room without limit; stops at Closed.
            for id in 0..env_u64("COUNT") {
                match q.send_with(Some(id), 7, &payload(id), None) {
                    Ok(_) => say(format!("SENT {id}")),
                    Err(Error::Closed) => {
                        say(format!("CLOSED {id}"));
                        return;
                    }
                    Err(e) => panic!("send {id}: {e}"),
                }
            }
        }
        "idle_sender" => {
            // Sends COUNT messages, then stays alive and idle (holding the sending role)
            // until told to try once more.
            for id in 0..env_u64("COUNT") {
                q.send_with(Some(id), 7, &payload(id), Some(SOON))
                    .expect("send");
            }
            say("SENT_ALL");
            read_stdin_line();
            say(format!("LATE {}", kind(&q.send_bytes(b"late"))));
        }
        "threads_send" => {
            // THREADS threads share this one handle and each send PER messages.
            let per = env_u64("PER");
            std::thread::scope(|s| {
                for t in 0..env_u64("THREADS") {
                    let q = &q;
                    s.spawn(move || {
                        for seq in 0..per {
                            let id = (t << 32) | seq;
                            q.send_with(Some(id), 7, &payload(id), Some(SOON))
                                .expect("send");
                        }
                    });
                }
            });
            say("SENT_ALL");
        }
        "hold" => {
            // Takes both roles, reports, and keeps them until told to drop the handle.
            let mut buf = [0u8; MSG];
            let received = q.receive_into(&mut buf);
            let sent = q.send_bytes(b"held");
            say(format!(
                "HOLDING {} {} {}",
                q.participant_id(),
                kind(&sent),
                kind(&received)
            ));
            read_stdin_line();
            drop(q);
            say("DROPPED");
            read_stdin_line();
        }
        "try" => {
            // Tries each role once and reports what happened.
            let sent = q.send_bytes(b"try");
            let mut buf = [0u8; MSG];
            let received = q.receive_into(&mut buf);
            let got = match &received {
                Ok(Some(m)) => String::from_utf8_lossy(&buf[..m.len]).into_owned(),
                _ => "-".into(),
            };
            say(format!("TRY {} {} {got}", kind(&sent), kind(&received)));
        }
        "shutdown" => {
            q.shutdown().expect("shutdown");
            say("SHUT");
        }
        "info" => say(format!("SPSC {}", q.is_single_producer_single_consumer())),
        "hostile" => {
            // Sends or receives for RUN_MS under corruption; only corruption-shaped
            // outcomes are allowed.
            let end = Instant::now() + Duration::from_millis(env_u64("RUN_MS"));
            let mut counts = BTreeMap::<String, u64>::new();
            let mut buf = [0u8; 4 * MSG];
            let mut metas = Vec::with_capacity(4);
            let mut id = 0u64;
            let wait = Some(Duration::from_millis(20));
            while Instant::now() < end {
                // Each form in turn: one message, a copying batch, a zero-copy batch.
                id += 1;
                let r = match (env("SIDE") == "send", id % 3) {
                    (true, 0) => q.send_with(Some(id), 0, &payload(id), wait).map(drop),
                    (true, 1) => q.send_batch(&[payload(id), payload(id)], wait).map(drop),
                    (true, _) => q
                        .send_batch_in_place(2, wait, |_, slot| {
                            let p = payload(id);
                            slot[..p.len()].copy_from_slice(&p);
                            p.len()
                        })
                        .map(drop),
                    (false, 0) => q.recv_with(&mut buf[..MSG], wait).map(drop),
                    (false, 1) => q.recv_batch(&mut buf, &mut metas, wait).map(drop),
                    (false, _) => q.recv_batch_in_place(4, wait, |_, _| {}).map(drop),
                };
                let k = kind(&r);
                assert!(
                    ["ok", "corrupted", "timeout"].contains(&k.as_str()),
                    "unexpected outcome under corruption: {k}"
                );
                *counts.entry(k).or_default() += 1;
            }
            say(format!("DONE {counts:?}"));
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- the parent side -------------------------------------------------------------------

/// This file's view of a child ([`common::Proc`] running `spsc_child` in a role): it reads
/// only the marked lines, without the marker (`@@`) and what libtest printed before it.
impl Proc {
    fn spawn(q: &TestQueue, role: &str, env: &[(&str, String)], crash_at: Option<&str>) -> Proc {
        let mut all = vec![("Q", q.name.clone())];
        all.extend(env.iter().cloned());
        Proc::start("spsc_child", role, &all, crash_at)
    }

    /// The next marked line, within `limit`.
    fn line(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(l) => {
                    if let Some(m) = marked(&l) {
                        return m;
                    }
                }
                Err(e) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let err = self.take_stderr();
                    panic!("no line from child within {limit:?} ({e}); stderr:\n{err}")
                }
            }
        }
    }

    /// Skips lines until one starting with `prefix`; returns the rest of it.
    fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = self.line(left);
            if let Some(rest) = l.strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    /// Writes a line to the child's stdin (it waits for one in some roles).
    fn tell(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits (at most `limit`) for the child to exit successfully; returns every marked
    /// line it printed that was not consumed yet.
    fn finish_within(mut self, limit: Duration) -> Vec<String> {
        self.stdin.take();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.take_stderr();
                panic!("child hung (killed after {limit:?}); stderr:\n{err}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out: Vec<String> = self.rest(SOON).iter().filter_map(|l| marked(l)).collect();
        let err = self.take_stderr();
        assert!(status.success(), "child failed ({status}):\n{out:?}\n{err}");
        out
    }

    /// Waits until the child stopped itself (SIGSTOP) at its crash point.
    fn wait_stopped(&mut self) {
        self.stopped_within(SOON);
    }

    /// SIGKILLs the stopped child, reaps it (its liveness lock is gone after that), checks
    /// that it stopped at `point`, and returns its marked lines.
    fn kill_at(mut self, point: &str) -> Vec<String> {
        self.killed_at(point, SOON)
            .iter()
            .filter_map(|l| marked(l))
            .collect()
    }
}

/// What follows the `@@` marker of a child's line, if it has one.
fn marked(line: &str) -> Option<String> {
    line.split_once("@@").map(|(_, rest)| rest.to_string())
}

/// `RECV id redelivered` lines, in order.
fn received(lines: &[String]) -> Vec<(u64, bool)> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("RECV "))
        .map(|rest| {
            let (id, flag) = rest.trim().split_once(' ').expect("RECV id flag");
            (id.parse().unwrap(), flag == "true")
        })
        .collect()
}

/// `SENT id` lines, in order.
fn sent(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("SENT "))
        .map(|id| id.trim().parse().unwrap())
        .collect()
}

// ----- 1. streams ------------------------------------------------------------------------

fn stream(send_mode: &str, recv_mode: &str) {
    const COUNT: u64 = 200_000;
    let tq = TestQueue::new(&format!("stream_{send_mode}_{recv_mode}"));
    let q = spsc_queue(&tq, 64);
    let receiver = Proc::spawn(&tq, "stream_recv", &[("MODE", recv_mode.into())], None);
    let mut sender = Proc::spawn(
        &tq,
        "stream_send",
        &[("MODE", send_mode.into()), ("COUNT", COUNT.to_string())],
        None,
    );
    assert_eq!(
        sender.expect("SENT_ALL", Duration::from_secs(60)),
        COUNT.to_string()
    );
    sender.finish_within(SOON);
    q.shutdown().unwrap();
    let out = receiver.finish_within(SOON);
    assert!(out.contains(&format!("GOT {COUNT}")), "receiver: {out:?}");
    let stats = q.stats();
    assert_eq!(stats.messages_sent, COUNT, "{stats:?}");
    assert_eq!(stats.messages_received, COUNT, "{stats:?}");
    assert_eq!(stats.depth, 0, "{stats:?}");
    let expected_bytes: u64 = (0..COUNT).map(|s| payload(s).len() as u64).sum();
    assert_eq!(stats.bytes_sent, expected_bytes, "{stats:?}");
    assert_eq!(stats.bytes_received, expected_bytes, "{stats:?}");
    assert_eq!(
        stats.checksum_failures + stats.abandoned + stats.corrupted + stats.redelivered,
        0,
        "{stats:?}"
    );
    assert!(stats.peak_depth <= 64, "{stats:?}");
}

#[test]
fn one_sender_one_receiver_200k_messages_in_order() {
    stream("plain", "plain");
}

#[test]
fn batches_200k_messages_in_order() {
    stream("batch", "batch");
}

#[test]
fn in_place_200k_messages_in_order() {
    stream("in_place", "in_place");
}

// ----- 2. roles ----------------------------------------------------------------------------

#[test]
fn a_second_live_handle_gets_role_taken_until_the_holder_drops() {
    let tq = TestQueue::new("roles");
    let q = spsc_queue(&tq, 4);
    // Another process holds both roles.
    let mut holder = Proc::spawn(&tq, "hold", &[], None);
    let holding = holder.expect("HOLDING", SOON);
    let words: Vec<&str> = holding.split_whitespace().collect();
    assert_eq!(
        words[1..],
        ["ok", "ok"],
        "holder took both roles: {holding}"
    );
    let id: u32 = words[0].parse().unwrap();
    match q.send_bytes(b"x") {
        Err(Error::RoleTaken { role, holder, name }) => {
            assert_eq!(
                (role, holder, name.as_str()),
                ("sending", id, tq.name.as_str())
            );
        }
        other => panic!("send while another process holds the role: {other:?}"),
    }
    let mut buf = [0u8; MSG];
    match q.receive_into(&mut buf) {
        Err(Error::RoleTaken { role, holder, .. }) => {
            assert_eq!((role, holder), ("receiving", id));
        }
        other => panic!("receive while another process holds the role: {other:?}"),
    }
    // A third process is refused too.
    let out = Proc::spawn(&tq, "try", &[], None).finish_within(SOON);
    assert!(
        out.contains(&format!(
            "TRY role_taken:sending:{id} role_taken:receiving:{id} -"
        )),
        "{out:?}"
    );
    assert_eq!(q.len(), 1, "refused calls change nothing");
    // The holder drops its handle (its process lives on): the roles are free.
    holder.tell();
    holder.expect("DROPPED", SOON);
    q.send_bytes(b"mine")
        .expect("send after the holder dropped its handle");
    let m = q
        .receive_into(&mut buf)
        .unwrap()
        .expect("the holder's message");
    assert_eq!(&buf[..m.len], b"held");
    let m = q.receive_into(&mut buf).unwrap().expect("our message");
    assert_eq!(&buf[..m.len], b"mine");
    // Now we hold both, and another process is refused both.
    let me = q.participant_id();
    let out = Proc::spawn(&tq, "try", &[], None).finish_within(SOON);
    assert!(
        out.contains(&format!(
            "TRY role_taken:sending:{me} role_taken:receiving:{me} -"
        )),
        "{out:?}"
    );
    holder.finish_within(SOON);
    // After we drop our handle, another process takes both roles.
    drop(q);
    let out = Proc::spawn(&tq, "try", &[], None).finish_within(SOON);
    assert!(out.contains(&"TRY ok ok try".to_string()), "{out:?}");
}

#[test]
fn two_handles_in_one_process_are_two_participants() {
    let tq = TestQueue::new("roles_local");
    let a = spsc_queue(&tq, 4);
    let b = CrossProcessQueue::connect(&tq.name).unwrap();
    a.send_bytes(b"a").unwrap();
    match b.send_bytes(b"b") {
        Err(Error::RoleTaken {
            role: "sending",
            holder,
            ..
        }) => {
            assert_eq!(holder, a.participant_id())
        }
        other => panic!("second handle's send: {other:?}"),
    }
    // Receiving is a separate role: b takes it.
    let mut buf = [0u8; MSG];
    let m = b.receive_into(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..m.len], b"a");
    match a.receive_into(&mut buf) {
        Err(Error::RoleTaken {
            role: "receiving",
            holder,
            ..
        }) => {
            assert_eq!(holder, b.participant_id())
        }
        other => panic!("first handle's receive: {other:?}"),
    }
    // Error messages name the role and the holder.
    let msg = b.send_bytes(b"b").unwrap_err().to_string();
    assert!(
        msg.contains("sending") && msg.contains(&a.participant_id().to_string()),
        "{msg}"
    );
    drop(a);
    b.send_bytes(b"b")
        .expect("the role is free once its holder is dropped");
    let m = b.receive_into(&mut buf).unwrap().unwrap();
    assert_eq!(&buf[..m.len], b"b");
    // A new handle is refused while b holds both.
    let c = CrossProcessQueue::connect(&tq.name).unwrap();
    assert!(matches!(c.send_bytes(b"c"), Err(Error::RoleTaken { .. })));
    assert!(matches!(
        c.receive_into(&mut buf),
        Err(Error::RoleTaken { .. })
    ));
}

// ----- 3. threads sharing one handle ----------------------------------------------------------

#[test]
fn threads_sharing_a_handle_take_turns_sending() {
    const THREADS: u64 = 3;
    const PER: u64 = 20_000;
    let tq = TestQueue::new("threads");
    let q = spsc_queue(&tq, 16);
    let sender = Proc::spawn(
        &tq,
        "threads_send",
        &[("THREADS", THREADS.to_string()), ("PER", PER.to_string())],
        None,
    );
    let mut next = [0u64; THREADS as usize];
    let mut buf = [0u8; MSG];
    for _ in 0..THREADS * PER {
        let m = q
            .recv_into(&mut buf, Some(SOON))
            .expect("receive")
            .expect("not closed");
        let (t, seq) = ((m.id >> 32) as usize, m.id & 0xffff_ffff);
        assert!(t < THREADS as usize, "thread of {:#x}", m.id);
        assert_eq!(seq, next[t], "thread {t}: order");
        check_payload(m.id, &buf[..m.len]);
        next[t] += 1;
    }
    assert_eq!(next, [PER; THREADS as usize]);
    sender.finish_within(SOON);
    assert!(q.receive_into(&mut buf).unwrap().is_none(), "nothing extra");
    let stats = q.stats();
    assert_eq!(
        (
            stats.messages_sent,
            stats.messages_received,
            stats.corrupted
        ),
        (THREADS * PER, THREADS * PER, 0),
        "{stats:?}"
    );
}

/// A closure of a zero-copy call runs while the call holds its side: a call on that side of
/// the same handle from inside it is refused (it used to wait for ever, or claim the outer
/// call's own slot), the other side and the statistics work, and nothing is lost or repeated.
#[test]
fn calls_from_inside_a_zero_copy_closure() {
    let tq = TestQueue::new("nested");
    let q = spsc_queue(&tq, 8);
    let mut buf = [0u8; MSG];
    for round in 0..2 {
        // Round 1: this thread owns both sides' fast path by now.
        q.send_bytes(b"m1").unwrap();
        q.send_bytes(b"m2").unwrap();
        let (inner, reply) = q
            .recv_in_place(Some(Duration::ZERO), |_, bytes| {
                assert_eq!(bytes, b"m1");
                let _ = q.stats();
                (q.receive_into(&mut buf), q.send_bytes(b"reply"))
            })
            .unwrap();
        assert!(
            matches!(&inner, Err(Error::InvalidArgument(m)) if m.contains("inside a callback")),
            "round {round}: {inner:?}"
        );
        reply.unwrap();
        let inner = q
            .send_in_place(Some(Duration::ZERO), |slot| {
                let inner = q.send_bytes(b"inner");
                assert!(matches!(inner, Err(Error::InvalidArgument(_))), "{inner:?}");
                slot[..5].copy_from_slice(b"outer");
                5
            })
            .map(|_| ());
        inner.unwrap();
        let mut got = Vec::new();
        while let Some(m) = q.receive_into(&mut buf).unwrap() {
            got.push(buf[..m.len].to_vec());
        }
        assert_eq!(got, [&b"m2"[..], b"reply", b"outer"], "round {round}");
    }
}

// ----- 4. a sender or receiver killed mid-operation ---------------------------------------------

/// A receiving parent and its ledger.
struct Ledger {
    acked: Vec<u64>,
    got: Vec<(u64, bool)>,
}

impl Ledger {
    fn absorb_sent(&mut self, lines: &[String]) {
        self.acked.extend(sent(lines));
    }

    fn recv(&mut self, q: &CrossProcessQueue, mode: &str) {
        let (seq, m) = recv_one(q, mode, Some(SOON)).expect("receive");
        self.got.push((seq, m.redelivered));
    }
}

/// A sender in another process stops at `point` in its first send (ring wrapped, three
/// messages queued) and is killed; a sender in a third process takes the role over. If
/// `published`, the test then marks the dead sender's slot published, as if it had died
/// between publishing and moving the tail: the new sender must move the tail past it.
#[cfg(feature = "crash-points")]
fn sender_killed(point: &str, mode: &str, published: bool) {
    let tq = TestQueue::new(&format!("ksend_{point}_{mode}"));
    let q = spsc_queue(&tq, 4);
    let mut l = Ledger {
        acked: Vec::new(),
        got: Vec::new(),
    };
    let send = |from: u64, count: u64, crash: Option<&str>| {
        Proc::spawn(
            &tq,
            "send_ids",
            &[
                ("FROM", from.to_string()),
                ("COUNT", count.to_string()),
                ("MODE", mode.to_string()),
            ],
            crash,
        )
    };
    // Positions 0..3, then 3..5 from a second (live, finished) sender: head 2, tail 5.
    l.absorb_sent(&send(1, 3, None).finish_within(SOON));
    l.recv(&q, "plain");
    l.recv(&q, "plain");
    l.absorb_sent(&send(4, 2, None).finish_within(SOON));
    assert_eq!(l.acked, [1, 2, 3, 4, 5]);
    // The victim: position 5 (slot 1, second lap).
    let mut victim = send(100, 1, Some(point));
    victim.wait_stopped();
    // The role is still held by the (stopped, live) victim.
    assert!(matches!(q.send_bytes(b"no"), Err(Error::RoleTaken { .. })));
    let out = victim.kill_at(point);
    assert!(
        sent(&out).is_empty(),
        "a killed send cannot have returned: {out:?}"
    );
    let slot = slot_offset(5 % 4);
    if published {
        assert_eq!(
            peek_u64(&tq.name, slot),
            2 + 1,
            "slot 1 still holds position 1's (received) message: position 5 is unpublished"
        );
        poke_u64(&tq.name, slot, 2 * 5 + 1);
    }
    // A new sender in another process takes over; we receive meanwhile.
    let heir = send(6, 2, None);
    let expected: Vec<u64> = if published {
        vec![3, 4, 5, 100, 6, 7]
    } else {
        vec![3, 4, 5, 6, 7]
    };
    for _ in 0..expected.len() {
        l.recv(&q, "plain");
    }
    l.absorb_sent(&heir.finish_within(SOON));
    // Several more laps from this process (the heir's role is free again).
    for lap in 0..3u64 {
        for i in 0..4 {
            let id = 200 + lap * 4 + i;
            send_one(&q, mode, id, Some(SOON)).expect("send");
            l.acked.push(id);
        }
        for _ in 0..4 {
            l.recv(&q, mode);
        }
    }
    let mut buf = [0u8; MSG];
    assert!(q.receive_into(&mut buf).unwrap().is_none(), "nothing extra");
    let ids: Vec<u64> = l.got.iter().map(|&(id, _)| id).collect();
    let mut want = vec![1, 2];
    want.extend(&expected);
    want.extend(200..212);
    assert_eq!(ids, want, "every acknowledged message once, in order");
    for id in &l.acked {
        assert!(ids.contains(id), "acknowledged {id} lost");
    }
    assert!(l.got.iter().all(|&(_, r)| !r), "nothing redelivered");
    let stats = q.stats();
    let total = want.len() as u64;
    assert_eq!(
        (stats.messages_sent, stats.messages_received, stats.depth),
        (total, total, 0),
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.abandoned,
            stats.redelivered,
            stats.corrupted,
            stats.checksum_failures
        ),
        (0, 0, 0, 0),
        "{stats:?}"
    );
}

#[cfg(feature = "crash-points")]
#[test]
fn sender_killed_at_push_tail_moved() {
    sender_killed("push_tail_moved", "plain", false);
}

#[cfg(feature = "crash-points")]
#[test]
fn sender_killed_at_push_written() {
    sender_killed("push_written", "plain", false);
}

#[cfg(feature = "crash-points")]
#[test]
fn sender_killed_at_push_written_in_place() {
    sender_killed("push_written", "in_place", false);
}

#[cfg(feature = "crash-points")]
#[test]
fn sender_killed_after_publishing_before_moving_the_tail() {
    sender_killed("push_written", "plain", true);
}

/// A sender killed inside a batch, after publishing the batch's first message (the tail not
/// yet moved: a batch moves it once, at its end) and claiming the next position: the heir
/// moves the tail past the published message, which is delivered, and writes its own
/// messages from the claimed position on.
#[cfg(feature = "crash-points")]
#[test]
fn sender_killed_inside_a_batch() {
    let tq = TestQueue::new("ksend_batch");
    let q = spsc_queue(&tq, 4);
    let mut l = Ledger {
        acked: Vec::new(),
        got: Vec::new(),
    };
    let mut victim = Proc::spawn(
        &tq,
        "send_batch_ids",
        &[("FROM", "100".to_string()), ("COUNT", "3".to_string())],
        Some("push_batch_next"),
    );
    victim.wait_stopped();
    assert_eq!(
        (peek_u64(&tq.name, TAIL), peek_u64(&tq.name, TAIL_IN_FLIGHT)),
        (0, 2),
        "position 0 published, the tail not moved, position 1 being written"
    );
    let out = victim.kill_at("push_batch_next");
    assert!(sent(&out).is_empty(), "a killed send cannot have returned");
    let heir = Proc::spawn(
        &tq,
        "send_ids",
        &[("FROM", "6".to_string()), ("COUNT", "2".to_string())],
        None,
    );
    l.absorb_sent(&heir.finish_within(SOON));
    for _ in 0..3 {
        l.recv(&q, "plain");
    }
    // Several more laps from this process.
    for lap in 0..3u64 {
        for i in 0..4 {
            let id = 200 + lap * 4 + i;
            send_one(&q, "plain", id, Some(SOON)).expect("send");
            l.acked.push(id);
        }
        for _ in 0..4 {
            l.recv(&q, "plain");
        }
    }
    let mut buf = [0u8; MSG];
    assert!(q.receive_into(&mut buf).unwrap().is_none(), "nothing extra");
    let ids: Vec<u64> = l.got.iter().map(|&(id, _)| id).collect();
    let mut want = vec![100, 6, 7];
    want.extend(200..212);
    assert_eq!(
        ids, want,
        "the published message, then every acknowledged one, in order"
    );
    assert!(l.got.iter().all(|&(_, r)| !r), "nothing redelivered");
    let stats = q.stats();
    let total = want.len() as u64;
    assert_eq!(
        (stats.messages_sent, stats.messages_received, stats.depth),
        (total, total, 0),
        "{stats:?}"
    );
    assert_eq!((stats.abandoned, stats.corrupted), (0, 0), "{stats:?}");
}

/// A receiver in another process stops at `point` in its first receive and is killed; a
/// receiver in a third process takes the role over and gets that message again, flagged.
#[cfg(feature = "crash-points")]
fn receiver_killed(point: &str, mode: &str) {
    let tq = TestQueue::new(&format!("krecv_{point}_{mode}"));
    let q = spsc_queue(&tq, 4);
    let recv = |count: u64, crash: Option<&str>| {
        Proc::spawn(
            &tq,
            "recv_ids",
            &[("COUNT", count.to_string()), ("MODE", mode.to_string())],
            crash,
        )
    };
    let mut acked = Vec::new();
    let mut send = |id: u64| {
        send_one(&q, "plain", id, Some(SOON)).expect("send");
        acked.push(id);
    };
    for id in 1..=3 {
        send(id);
    }
    // A first receiver takes two and leaves: head 2.
    let first = received(&recv(2, None).finish_within(SOON));
    assert_eq!(first, [(1, false), (2, false)]);
    for id in 4..=5 {
        send(id);
    }
    // The victim takes position 2 (message 3) and is killed.
    let mut victim = recv(1, Some(point));
    victim.wait_stopped();
    let out = victim.kill_at(point);
    assert!(
        received(&out).is_empty(),
        "a killed receive cannot have returned: {out:?}"
    );
    // The heir, in another process, receives until shut down while we send more laps.
    let heir = recv(0, None);
    for id in 6..=17 {
        send(id);
    }
    q.shutdown().unwrap();
    let got = received(&heir.finish_within(SOON));
    let mut want = vec![(3, true)];
    want.extend((4..=17).map(|id| (id, false)));
    assert_eq!(
        got, want,
        "the taken message again (flagged), then the rest in order"
    );
    assert_eq!(acked, (1..=17).collect::<Vec<u64>>());
    let stats = q.stats();
    assert_eq!(
        (stats.messages_sent, stats.messages_received, stats.depth),
        (17, 17, 0),
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.redelivered,
            stats.abandoned,
            stats.corrupted,
            stats.checksum_failures
        ),
        (1, 0, 0, 0),
        "{stats:?}"
    );
}

/// A receiver killed inside a batch, after copying its first message and taking the second
/// (the head not yet moved: a batch moves it once, at its end): the heir gets both again,
/// flagged, then the rest.
#[cfg(feature = "crash-points")]
#[test]
fn receiver_killed_inside_a_batch() {
    let tq = TestQueue::new("krecv_batch");
    let q = spsc_queue(&tq, 8);
    for id in 1..=5 {
        send_one(&q, "plain", id, Some(SOON)).expect("send");
    }
    let mut victim = Proc::spawn(
        &tq,
        "recv_batch_ids",
        &[("COUNT", "4".to_string())],
        Some("pop_batch_next"),
    );
    victim.wait_stopped();
    assert_eq!(
        (peek_u64(&tq.name, HEAD), peek_u64(&tq.name, HEAD_IN_FLIGHT)),
        (0, 2),
        "positions 0 and 1 taken, neither released"
    );
    let out = victim.kill_at("pop_batch_next");
    assert!(
        received(&out).is_empty(),
        "a killed receive cannot have returned"
    );
    let heir = Proc::spawn(
        &tq,
        "recv_ids",
        &[("COUNT", "0".to_string()), ("MODE", "plain".to_string())],
        None,
    );
    for id in 6..=13 {
        send_one(&q, "plain", id, Some(SOON)).expect("send");
    }
    q.shutdown().unwrap();
    let got = received(&heir.finish_within(SOON));
    let mut want = vec![(1, true), (2, true)];
    want.extend((3..=13).map(|id| (id, false)));
    assert_eq!(
        got, want,
        "the taken messages again (flagged), then the rest in order"
    );
    let stats = q.stats();
    assert_eq!(
        (stats.messages_sent, stats.messages_received, stats.depth),
        (13, 13, 0),
        "{stats:?}"
    );
    assert_eq!((stats.redelivered, stats.corrupted), (2, 0), "{stats:?}");
}

#[cfg(feature = "crash-points")]
#[test]
fn receiver_killed_at_pop_head_moved() {
    receiver_killed("pop_head_moved", "plain");
}

#[cfg(feature = "crash-points")]
#[test]
fn receiver_killed_at_pop_read() {
    receiver_killed("pop_read", "plain");
}

#[cfg(feature = "crash-points")]
#[test]
fn receiver_killed_at_pop_read_in_place() {
    receiver_killed("pop_read", "in_place");
}

// ----- 5. shutdown ----------------------------------------------------------------------------

#[test]
fn receiver_drains_then_gets_closed_and_sends_are_refused() {
    let tq = TestQueue::new("drain");
    let q = spsc_queue(&tq, 16);
    for id in 0..10 {
        send_one(&q, "plain", id, Some(SOON)).unwrap();
    }
    q.shutdown().unwrap();
    assert!(q.is_shutdown());
    // Every form of send is refused, by the holder of the role and by anyone else.
    assert!(matches!(q.send_bytes(b"late"), Err(Error::Closed)));
    assert!(matches!(
        q.send_with(Some(1), 0, b"late", None),
        Err(Error::Closed)
    ));
    assert!(matches!(q.send_batch(&[b"late"], None), Err(Error::Closed)));
    assert!(matches!(q.send_in_place(None, |_| 0), Err(Error::Closed)));
    let out = Proc::spawn(&tq, "recv_ids", &[("COUNT", "0".into())], None).finish_within(SOON);
    let got = received(&out);
    assert_eq!(got, (0..10).map(|id| (id, false)).collect::<Vec<_>>());
    assert_eq!(out.last().map(String::as_str), Some("CLOSED"), "{out:?}");
    // The receiving role is free again: this process gets Closed too; so does a new sender.
    let mut buf = [0u8; MSG];
    assert!(matches!(q.receive_into(&mut buf), Err(Error::Closed)));
    assert!(matches!(q.recv_into(&mut buf, None), Ok(None)));
    drop(q);
    let out = Proc::spawn(&tq, "try", &[], None).finish_within(SOON);
    assert!(out.contains(&"TRY closed closed -".to_string()), "{out:?}");
}

#[test]
fn shutdown_from_a_third_process_ends_the_receiver_while_the_sender_idles() {
    let tq = TestQueue::new("third");
    let q = spsc_queue(&tq, 8);
    let receiver = Proc::spawn(&tq, "recv_ids", &[("COUNT", "0".into())], None);
    let mut sender = Proc::spawn(&tq, "idle_sender", &[("COUNT", "20".into())], None);
    sender.expect("SENT_ALL", SOON);
    // The sender process is alive, idle, and holds the sending role.
    assert!(matches!(q.send_bytes(b"x"), Err(Error::RoleTaken { .. })));
    Proc::spawn(&tq, "shutdown", &[], None).finish_within(SOON);
    let out = receiver.finish_within(PROMPT);
    assert_eq!(
        received(&out),
        (0..20).map(|id| (id, false)).collect::<Vec<_>>()
    );
    assert_eq!(out.last().map(String::as_str), Some("CLOSED"), "{out:?}");
    // The idle sender's next send is refused.
    sender.tell();
    assert_eq!(sender.expect("LATE", SOON), "closed");
    sender.finish_within(SOON);
    let stats = q.stats();
    assert_eq!(
        (stats.messages_sent, stats.messages_received),
        (20, 20),
        "{stats:?}"
    );
}

#[test]
fn shutdown_wakes_a_sender_blocked_on_a_full_queue() {
    let tq = TestQueue::new("fullshut");
    let q = spsc_queue(&tq, 4);
    let mut sender = Proc::spawn(&tq, "send_blocking", &[("COUNT", "6".into())], None);
    for id in 0..4 {
        assert_eq!(sender.expect("SENT", SOON), id.to_string());
    }
    // Give the fifth send time to go to sleep (if it is not asleep yet, it sees the
    // shutdown before it would).
    std::thread::sleep(Duration::from_millis(200));
    assert!(q.is_full());
    q.shutdown().unwrap();
    assert_eq!(sender.expect("CLOSED", PROMPT), "4");
    sender.finish_within(SOON);
    let mut buf = [0u8; MSG];
    for id in 0..4 {
        let m = q.recv_into(&mut buf, Some(SOON)).unwrap().expect("queued");
        assert_eq!(m.id, id);
        check_payload(id, &buf[..m.len]);
    }
    assert!(matches!(q.recv_into(&mut buf, Some(SOON)), Ok(None)));
}

// ----- 6. wake-ups across processes -----------------------------------------------------------

#[test]
fn blocked_receiver_wakes_when_a_message_arrives() {
    let tq = TestQueue::new("wake_rx");
    let q = spsc_queue(&tq, 4);
    let mut receiver = Proc::spawn(&tq, "recv_blocking", &[], None);
    receiver.expect("READY", SOON);
    // Let the child block (it may still be starting; either way it must get the message).
    std::thread::sleep(Duration::from_millis(300));
    send_one(&q, "plain", 42, None).unwrap();
    assert_eq!(receiver.expect("RECV", PROMPT), "42");
    receiver.finish_within(SOON);
}

#[test]
fn blocked_sender_wakes_when_a_slot_frees() {
    let tq = TestQueue::new("wake_tx");
    let q = spsc_queue(&tq, 1);
    let mut sender = Proc::spawn(&tq, "send_blocking", &[("COUNT", "2".into())], None);
    assert_eq!(sender.expect("SENT", SOON), "0");
    std::thread::sleep(Duration::from_millis(300));
    let mut buf = [0u8; MSG];
    assert_eq!(q.receive_into(&mut buf).unwrap().expect("first").id, 0);
    assert_eq!(sender.expect("SENT", PROMPT), "1");
    sender.finish_within(SOON);
    assert_eq!(
        q.recv_into(&mut buf, Some(SOON))
            .unwrap()
            .expect("second")
            .id,
        1
    );
}

// ----- 7. hostile bytes in the slots ----------------------------------------------------------

/// Sends and receives `laps` full laps, each message checked; panics on any loss.
fn exact_laps(q: &CrossProcessQueue, first: u64, laps: u64) {
    let cap = q.capacity() as u64;
    let mut buf = [0u8; MSG];
    for lap in 0..laps {
        for i in 0..cap {
            let id = first + lap * cap + i;
            send_one(q, "plain", id, Some(SOON)).expect("send after corruption");
        }
        for i in 0..cap {
            let id = first + lap * cap + i;
            match q.recv_with(&mut buf, Some(SOON)) {
                Ok(m) => {
                    assert_eq!(m.id, id, "lap {lap}");
                    check_payload(id, &buf[..m.len]);
                }
                Err(e) => panic!("receive {id} (lap {lap}) after corruption: {e}"),
            }
        }
    }
}

/// A sender and a receiver (child processes) run for two seconds while this process writes
/// wrong values (near the live positions, and random) into the slots' sequence words: neither
/// crashes or hangs, nothing but corruption-shaped errors appear, `corrupted` counts it, and
/// once the writes stop and a lap has settled, full laps go through exactly.
#[test]
fn scribbled_sequence_words_are_survived() {
    let tq = TestQueue::new("scribble");
    let capacity = 8u64;
    let q = spsc_queue(&tq, capacity as usize);
    let run_ms = 2000;
    let kids: Vec<Proc> = ["send", "recv"]
        .iter()
        .map(|side| {
            Proc::spawn(
                &tq,
                "hostile",
                &[("SIDE", side.to_string()), ("RUN_MS", run_ms.to_string())],
                None,
            )
        })
        .collect();
    let f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(shm_path(&tq.name))
        .unwrap();
    let mut rnd = common::xorshift(std::process::id().into());
    let end = Instant::now() + Duration::from_millis(run_ms - 500);
    let mut writes = 0u64;
    while Instant::now() < end {
        let slot = slot_offset(rnd() % capacity);
        let tail = peek_u64(&tq.name, TAIL);
        let head = peek_u64(&tq.name, HEAD);
        let r = rnd();
        // Values near the live positions (they look almost right), and random ones.
        let value = match r % 6 {
            0 => 2 * tail + rnd() % 5,
            1 => (2 * tail).wrapping_sub(rnd() % (4 * capacity)),
            2 => 2 * head + rnd() % 5,
            3 => (2 * head).wrapping_sub(rnd() % (4 * capacity)),
            4 => 2 * (tail + capacity) + rnd() % 3,
            _ => rnd(),
        };
        f.write_all_at(&value.to_le_bytes(), slot).unwrap();
        writes += 1;
        if writes % 8 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let mut summary = Vec::new();
    for k in kids {
        summary.extend(k.finish_within(Duration::from_secs(30)));
    }
    let done: Vec<&String> = summary.iter().filter(|l| l.starts_with("DONE")).collect();
    assert_eq!(done.len(), 2, "{summary:?}");
    let stats = q.stats();
    println!("{writes} hostile writes; children: {done:?}; {stats:?}");
    assert!(stats.corrupted > 0, "corruption is counted: {stats:?}");
    // The queue is usable afterwards: after at most a lap or two of settling (messages
    // sent over corrupt slots may be dropped), full laps go through exactly.
    let mut buf = [0u8; MSG];
    for id in 0..3 * capacity {
        let _ = q.send_with(Some(id), 0, &payload(id), Some(Duration::from_millis(100)));
        while let Ok(Some(_)) | Err(Error::CorruptedData(_)) = q.receive_into(&mut buf) {}
    }
    // (Waiting a little: an empty-looking slot the sender has passed is noticed after a
    // few polls.)
    while let Ok(_) | Err(Error::CorruptedData(_)) =
        q.recv_with(&mut buf, Some(Duration::from_millis(500)))
    {}
    assert_eq!(q.len(), 0, "drained: {:?}", q.stats());
    exact_laps(&q, 1000, 4);
}

/// A published message's sequence word set back to "free": the receiver must not wait for
/// the sender to lap the ring (it would never see the messages queued behind it), and the
/// queue must not lose a message per lap from then on.
#[test]
fn a_published_slot_reset_to_free_does_not_blind_the_receiver() {
    let tq = TestQueue::new("reset_free");
    let q = spsc_queue(&tq, 4);
    for id in 0..2 {
        send_one(&q, "plain", id, None).unwrap();
    }
    assert_eq!(peek_u64(&tq.name, slot_offset(0)), 1);
    poke_u64(&tq.name, slot_offset(0), 0);
    let mut buf = [0u8; MSG];
    let m = q
        .recv_with(&mut buf, Some(SOON))
        .expect("the message behind the corrupt slot");
    assert_eq!(
        m.id, 1,
        "message 0 is lost to the corruption, message 1 is not"
    );
    assert_eq!(q.stats().corrupted, 1);
    // Ping-pong, as a request/response user would: every message gets through.
    for id in 2..30 {
        send_one(&q, "plain", id, Some(SOON)).unwrap();
        let m = q
            .recv_with(&mut buf, Some(SOON))
            .expect("ping-pong receive");
        assert_eq!(m.id, id);
    }
    exact_laps(&q, 100, 3);
    assert_eq!(q.stats().corrupted, 1, "{:?}", q.stats());
}

/// A wrong sequence word for the slot of tail position `t` in a ring of capacity `c`.
type Garbage = fn(u64, u64) -> u64;

/// The sequence word of the slot the sender writes next (the queue empty) set to each kind
/// of wrong value: the receiver takes nothing that was never sent (at most it reports the
/// bytes as corrupt, or hands out the slot's old message again), neither side waits for
/// ever, and at most the next message is lost.
#[test]
fn a_free_slot_that_looks_taken_wedges_neither_side() {
    let tq = TestQueue::new("looks_taken");
    let cap = 4u64;
    let q = spsc_queue(&tq, cap as usize);
    let mut buf = [0u8; MSG];
    let mut next = 0u64;
    let garbage: [(&str, Garbage); 5] = [
        ("previous lap's message", |t, c| 2 * (t - c) + 1),
        ("published", |t, _| 2 * t + 1),
        ("released", |t, c| 2 * (t + c)),
        ("next lap's message", |t, c| 2 * (t + c) + 1),
        ("random", |t, _| {
            t.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1 << 40
        }),
    ];
    for (what, value) in garbage {
        // Get past the first lap, so that "previous lap" exists.
        exact_laps(&q, next, 2);
        next += 2 * cap;
        let tail = peek_u64(&tq.name, TAIL);
        assert_eq!(peek_u64(&tq.name, HEAD), tail, "empty");
        poke_u64(&tq.name, slot_offset(tail % cap), value(tail, cap));
        let first = q.receive_into(&mut buf);
        let corrupt = match first {
            Ok(None) => false,
            Err(Error::CorruptedData(_)) => true,
            // The slot still holds the previous lap's message, whose checksum does not cover
            // its position: a "published" sequence word hands out that old copy again.
            Ok(Some(m)) if m.id < next => {
                check_payload(m.id, &buf[..m.len]);
                true
            }
            other => panic!("{what}: receive from an empty queue: {other:?}"),
        };
        for id in next..next + 2 {
            send_one(&q, "plain", id, Some(SOON))
                .unwrap_or_else(|e| panic!("{what}: send {id}: {e}"));
        }
        let mut got = Vec::new();
        while let Some(m) = q.receive_into(&mut buf).unwrap() {
            check_payload(m.id, &buf[..m.len]);
            got.push(m.id);
        }
        let all = vec![next, next + 1];
        assert!(
            got == all || (corrupt && got == all[1..]),
            "{what}: received {got:?} of {all:?} (corrupt bytes reported: {corrupt})"
        );
        next += 2;
        exact_laps(&q, next, 2);
        next += 2 * cap;
    }
}

// ----- 8. the mode is part of the queue's identity ---------------------------------------------

#[test]
fn open_or_create_refuses_a_mismatching_mode() {
    let tq = TestQueue::new("mode");
    let q = spsc_queue(&tq, 8);
    assert!(q.is_single_producer_single_consumer());
    let open = |spsc: bool| {
        CrossProcessQueue::options()
            .open_mode(OpenMode::OpenOrCreate)
            .single_producer_single_consumer(spsc)
            .create(&tq.name, 8, MSG)
    };
    match open(false) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("single-producer"), "{m}"),
        other => panic!("open-or-create as multi-producer: {other:?}"),
    }
    let again = open(true).expect("open-or-create with the same mode");
    assert!(again.is_single_producer_single_consumer());
    assert!(CrossProcessQueue::connect(&tq.name)
        .unwrap()
        .is_single_producer_single_consumer());
    let out = Proc::spawn(&tq, "info", &[], None).finish_within(SOON);
    assert!(out.contains(&"SPSC true".to_string()), "{out:?}");
    assert!(q.info().single_producer_single_consumer);

    // And the other way round.
    let tq2 = TestQueue::new("mode_mpmc");
    let m = CrossProcessQueue::create(&tq2.name, 8, MSG).unwrap();
    assert!(!m.is_single_producer_single_consumer());
    match CrossProcessQueue::options()
        .open_mode(OpenMode::OpenOrCreate)
        .single_producer_single_consumer(true)
        .create(&tq2.name, 8, MSG)
    {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("open-or-create as spsc on a multi-producer queue: {other:?}"),
    }
    let out = Proc::spawn(&tq2, "info", &[], None).finish_within(SOON);
    assert!(out.contains(&"SPSC false".to_string()), "{out:?}");
}
