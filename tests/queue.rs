//! The Rust API across real processes and real shared memory.
//!
//! Children are this test binary run again in a role (see `tests/common`): the ignored test
//! `child` reads `SHMQ_TEST_ROLE` and acts; every other test is a parent.

#[path = "../examples/support/affinity.rs"]
mod affinity;
mod common;

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{finish, report, spawn_role, Children, TestQueue, ROLE_ENV};
use shmq::{CrossProcessQueue, Error, Message, OpenMode};

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

fn env_u64(key: &str) -> u64 {
    env(key).parse().unwrap()
}

/// Child entry point: runs the role named in `SHMQ_TEST_ROLE`.
#[test]
#[ignore = "child process entry point, run by the other tests"]
fn child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    if let Ok(cpu) = std::env::var("PIN_CPU") {
        pin_to_cpu(cpu.parse().unwrap());
    }
    let q = CrossProcessQueue::connect(&env("Q")).expect("child connects");
    if let Ok(ns) = std::env::var("SPIN_NS") {
        q.set_spin_limit(Duration::from_nanos(ns.parse().unwrap()));
    }
    match role.as_str() {
        "producer" => {
            // Sends COUNT messages `producer:seq` padded to a varying length.
            let me = env_u64("PRODUCER");
            for seq in 0..env_u64("COUNT") {
                let id = (me << 32) | seq;
                let len = 8 + (seq % 50) as usize;
                let mut data = vec![(seq % 251) as u8; len];
                data[..8].copy_from_slice(&id.to_le_bytes());
                q.send_with(Some(id), seq, &data, None).expect("send");
            }
        }
        "consumer" => {
            // Receives until shut down; checks content and per-producer order; writes ids.
            let mut buf = vec![0u8; q.message_size()];
            let mut last: HashMap<u64, u64> = HashMap::new();
            let mut ids = Vec::new();
            while let Some(meta) = q.recv_into(&mut buf, None).expect("recv") {
                let id = meta.id;
                let (p, seq) = (id >> 32, id & 0xffff_ffff);
                assert_eq!(meta.len, 8 + (seq % 50) as usize, "length of {id:#x}");
                assert_eq!(&buf[..8], &id.to_le_bytes());
                assert!(buf[8..meta.len].iter().all(|&b| b == (seq % 251) as u8));
                assert_eq!(meta.timestamp_ns, seq);
                if let Some(prev) = last.insert(p, seq) {
                    assert!(prev < seq, "producer {p}: {seq} after {prev}");
                }
                ids.push(id);
            }
            let mut out = std::fs::File::create(env("OUT")).unwrap();
            for id in ids {
                out.write_all(&id.to_le_bytes()).unwrap();
            }
        }
        "recv_one" => {
            if std::env::var("SAY_READY").is_ok() {
                report("ready");
            }
            let m = q.recv().expect("recv").expect("a message");
            report(format!("{} {}", m.id, String::from_utf8_lossy(&m.data)));
        }
        "drain" => {
            let mut n = 0;
            while let Some(m) = q.recv().expect("recv") {
                assert_eq!(m.id, n);
                n += 1;
            }
            report(format!("drained {n}"));
        }
        "send_one" => {
            q.send_bytes_timeout(b"late", None).expect("send");
            report("sent");
        }
        "send_message" => {
            q.send(&Message {
                id: 42,
                data: b"answer".to_vec(),
                timestamp: 7,
            })
            .unwrap();
        }
        "send_value" => {
            q.send_value(&("typed", 12u32, vec![1.5f64, 2.5])).unwrap();
        }
        "send_parts" => {
            // Every message of `gathered_message`, sent as its parts; reports the ids.
            let mut ids = Vec::new();
            for k in 0..GATHERED {
                let parts = gathered_message(k, q.message_size());
                let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
                ids.push(q.send_parts_timeout(&parts, None).expect("send_parts"));
            }
            report(format!("{ids:?}"));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Restricts this process to one CPU.
fn pin_to_cpu(cpu: usize) {
    affinity::run_on([cpu]).unwrap_or_else(|e| panic!("pin to CPU {cpu}: {e}"));
}

/// The first CPU this process may run on.
fn first_allowed_cpu() -> usize {
    let cpus = affinity::allowed_cpus().expect("sched_getaffinity");
    *cpus.first().expect("some CPU is allowed")
}

/// `producers` processes send `per_producer` messages each through a queue of depth 64 to
/// `consumers` processes with the blocking calls; every message must arrive exactly once, in
/// order per producer. `pin`: every child runs on that one CPU; `spin_ns`: every child's
/// handle polls that long before it sleeps (`set_spin_limit`).
fn exactly_once(
    tag: &str,
    queue: &CrossProcessQueue,
    producers: u64,
    consumers: usize,
    per_producer: u64,
    pin: Option<usize>,
    spin_ns: Option<u64>,
) {
    let name = queue.name();
    let dir = std::env::temp_dir();
    let outs: Vec<_> = (0..consumers)
        .map(|i| dir.join(format!("{name}_{tag}_{i}.ids")))
        .collect();
    let mut placement = vec![("Q", name.to_string())];
    if let Some(cpu) = pin {
        placement.push(("PIN_CPU", cpu.to_string()));
    }
    if let Some(ns) = spin_ns {
        placement.push(("SPIN_NS", ns.to_string()));
    }
    let mut kids = Children(Vec::new());
    for out in &outs {
        let mut env = placement.clone();
        env.push(("OUT", out.display().to_string()));
        kids.0.push(spawn_role("child", "consumer", &env));
    }
    for p in 0..producers {
        let mut env = placement.clone();
        env.push(("PRODUCER", p.to_string()));
        env.push(("COUNT", per_producer.to_string()));
        kids.0.push(spawn_role("child", "producer", &env));
    }
    let (consumer_kids, producer_kids) = kids.0.split_at_mut(consumers);
    for p in producer_kids {
        finish(p);
    }
    queue.shutdown().unwrap();
    for c in consumer_kids {
        finish(c);
    }
    let mut ids = Vec::new();
    for out in &outs {
        let bytes = std::fs::read(out).unwrap();
        let _ = std::fs::remove_file(out);
        ids.extend(
            bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap())),
        );
    }
    assert_eq!(ids.len() as u64, producers * per_producer, "received count");
    ids.sort_unstable();
    let expected: Vec<u64> = (0..producers)
        .flat_map(|p| (0..per_producer).map(move |s| (p << 32) | s))
        .collect();
    assert_eq!(ids, expected, "every message exactly once");
    let stats = queue.stats();
    assert_eq!(stats.messages_sent, producers * per_producer);
    assert_eq!(stats.messages_received, producers * per_producer);
    assert_eq!(
        stats.checksum_failures + stats.abandoned + stats.corrupted,
        0
    );
    assert!(stats.peak_depth <= 64);
    // Every process flushed its byte counts when it closed the queue.
    let bytes = producers * (0..per_producer).map(|seq| 8 + seq % 50).sum::<u64>();
    assert_eq!((stats.bytes_sent, stats.bytes_received), (bytes, bytes));
}

#[test]
fn two_producers_two_consumers_200k_messages_exactly_once() {
    let tq = TestQueue::new("mpmc");
    let q = CrossProcessQueue::create(&tq.name, 64, 64).unwrap();
    exactly_once("split", &q, 2, 2, 100_000, None, None);
}

/// Every process on one CPU: a blocked call must let its peer run there (a waiter that only
/// polled would hold the core until its spin ends), which changes how the calls wait.
#[test]
fn all_processes_on_one_cpu_exactly_once() {
    let cpu = first_allowed_cpu();
    let tq = TestQueue::new("onecpu");
    let q = CrossProcessQueue::create(&tq.name, 64, 64).unwrap();
    exactly_once("mpmc", &q, 2, 2, 20_000, Some(cpu), None);
    let tq = TestQueue::new("onecpu_spsc");
    let q = CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&tq.name, 64, 64)
        .unwrap();
    exactly_once("spsc", &q, 1, 1, 20_000, Some(cpu), None);
}

/// Every process on one CPU, and no handle ever sleeps (`Duration::MAX`): the peers take
/// turns on the core only through the waits' yields (and the scheduler's preemption), which
/// a long wait spaces out further and further while they come straight back. This checks
/// delivery only (every message, once): the scheduler's preemption alone would also let
/// it pass, slowly, so how promptly a wait gives the core away is `src/pacer.rs`'s tests.
#[test]
fn all_processes_on_one_cpu_with_handles_that_never_sleep_exactly_once() {
    let cpu = first_allowed_cpu();
    let tq = TestQueue::new("onecpu_spin");
    let q = CrossProcessQueue::create(&tq.name, 64, 64).unwrap();
    exactly_once("mpmc", &q, 2, 2, 20_000, Some(cpu), Some(u64::MAX));
    let tq = TestQueue::new("onecpu_spin_spsc");
    let q = CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&tq.name, 64, 64)
        .unwrap();
    exactly_once("spsc", &q, 1, 1, 20_000, Some(cpu), Some(u64::MAX));
}

/// Handles that never poll (spin limit zero) hand every message over through the futex
/// alone: each wait sleeps at once, so every wake-up path is taken, and none may be missed
/// (a missed one would hang the stream). Receivers wait for messages, and senders for room
/// whenever the receivers fall 64 behind: one run made 23,850 `futex` calls and no
/// `sched_yield` (the default spin: 717 and 1,831).
#[test]
fn handles_that_never_poll_deliver_every_message() {
    let tq = TestQueue::new("nospin");
    let q = CrossProcessQueue::create(&tq.name, 64, 64).unwrap();
    exactly_once("mpmc", &q, 2, 2, 20_000, None, Some(0));
    let tq = TestQueue::new("nospin_spsc");
    let q = CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&tq.name, 64, 64)
        .unwrap();
    exactly_once("spsc", &q, 1, 1, 20_000, None, Some(0));
}

#[test]
fn the_spin_limit_is_per_handle_and_kept_by_reopen() {
    let tq = TestQueue::new("spinset");
    let q = CrossProcessQueue::create(&tq.name, 2, 16).unwrap();
    assert_eq!(q.spin_limit(), shmq::DEFAULT_SPIN_LIMIT);
    assert_eq!(shmq::DEFAULT_SPIN_LIMIT, Duration::from_micros(10));
    q.set_spin_limit(Duration::from_micros(250));
    assert_eq!(q.spin_limit(), Duration::from_micros(250));
    assert_eq!(q.reopen().unwrap().spin_limit(), Duration::from_micros(250));
    let other = CrossProcessQueue::connect(&tq.name).unwrap();
    assert_eq!(
        other.spin_limit(),
        shmq::DEFAULT_SPIN_LIMIT,
        "another handle keeps its own"
    );
    q.set_spin_limit(Duration::MAX);
    assert_eq!(q.spin_limit(), Duration::from_nanos(u64::MAX), "saturates");
    q.set_spin_limit(Duration::ZERO);
    assert_eq!(q.spin_limit(), Duration::ZERO);
    // A zero limit still waits (asleep) and times out as asked.
    let mut buf = [0u8; 16];
    assert!(matches!(
        q.recv_with(&mut buf, Some(Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
}

/// How many of process `pid`'s threads are running or ready to run (state `R` in /proc).
fn running_threads(pid: u32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('R'))
        })
        .count()
}

/// A receiver blocked on an empty queue, watched from outside through /proc: with a spin
/// limit of `Duration::MAX` it keeps polling (a thread always running or runnable), with
/// the default or zero it sleeps in the kernel (no thread runnable at most looks); then a
/// message ends its wait either way.
#[test]
fn the_spin_limit_decides_whether_a_blocked_receiver_polls_or_sleeps() {
    let tq = TestQueue::new("spinwatch");
    let q = CrossProcessQueue::create(&tq.name, 2, 16).unwrap();
    let default_ns = shmq::DEFAULT_SPIN_LIMIT.as_nanos() as u64;
    for (spin_ns, polls) in [(u64::MAX, true), (default_ns, false), (0, false)] {
        let slept_before = q.stats().receiver_sleeps;
        let env = [
            ("Q", tq.name.clone()),
            ("SPIN_NS", spin_ns.to_string()),
            ("SAY_READY", "1".to_string()),
        ];
        let mut child = common::Proc::start("child", "recv_one", &env, None);
        while !child
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the receiver reports that it is about to receive")
            .contains("@@ ready")
        {}
        // Its wait has begun well before the first look (and a 10 µs spin ended).
        std::thread::sleep(Duration::from_millis(50));
        let looks = 40;
        let mut running = 0;
        for _ in 0..looks {
            running += usize::from(running_threads(child.pid()) > 0);
            std::thread::sleep(Duration::from_millis(5));
        }
        if polls {
            assert_eq!(
                running, looks,
                "spin limit {spin_ns} ns: the receiver slept"
            );
        } else {
            assert!(
                running <= looks / 4,
                "spin limit {spin_ns} ns: the receiver ran at {running} of {looks} looks"
            );
        }
        q.send_bytes(b"wake").unwrap();
        let status = child.child.wait().unwrap();
        let rest = child.rest(Duration::from_secs(5)).join("\n");
        assert!(status.success(), "receiver failed: {status}\n{rest}");
        assert!(
            rest.contains(" wake"),
            "the receiver got the message: {rest}"
        );
        // Its one call counts once, however many sleep slices it took (the looks above
        // last 250 ms, five slices); nothing when it polled.
        let stats = q.stats();
        assert_eq!(
            (stats.receiver_sleeps, stats.sender_sleeps),
            (slept_before + u64::from(!polls), 0),
            "spin limit {spin_ns} ns"
        );
    }
}

/// A send blocked on a full queue in another process, seen asleep on the futex: its call
/// counts once in `sender_sleeps`, and receives that never waited count nothing.
#[test]
fn a_blocked_send_that_sleeps_is_counted_once() {
    let tq = TestQueue::new("sendsleep");
    let q = CrossProcessQueue::create(&tq.name, 1, 16).unwrap();
    q.send_bytes(b"first").unwrap();
    let env = [("Q", tq.name.clone())];
    let mut child = common::Proc::start("child", "send_one", &env, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !child.in_shared_futex_wait() {
        assert!(Instant::now() < deadline, "the sender never slept");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Several sleep slices (50 ms each) pass: still one call.
    std::thread::sleep(Duration::from_millis(120));
    assert_eq!(q.stats().sender_sleeps, 1);
    let mut buf = [0u8; 16];
    let first = q.recv_into(&mut buf, None).unwrap().unwrap();
    assert_eq!(&buf[..first.len], b"first");
    let status = child.child.wait().unwrap();
    let rest = child.rest(Duration::from_secs(5)).join("\n");
    assert!(status.success(), "sender failed: {status}\n{rest}");
    let late = q.recv_into(&mut buf, None).unwrap().unwrap();
    assert_eq!(&buf[..late.len], b"late");
    let stats = q.stats();
    assert_eq!((stats.sender_sleeps, stats.receiver_sleeps), (1, 0));
}

#[test]
fn blocking_receive_wakes_when_a_message_arrives() {
    let tq = TestQueue::new("wake");
    let q = CrossProcessQueue::create(&tq.name, 4, 32).unwrap();
    let mut kids = Children(vec![spawn_role(
        "child",
        "recv_one",
        &[("Q", tq.name.clone())],
    )]);
    // Let the child block (it may also still be starting; either way it must get the message).
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    q.send(&Message::new(5, "wake up")).unwrap();
    let out = finish(&mut kids.0[0]);
    assert_eq!(out.trim(), "5 wake up");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn timeouts_are_neither_early_nor_far_late() {
    let tq = TestQueue::new("timeout");
    let q = CrossProcessQueue::create(&tq.name, 1, 8).unwrap();
    for wait in [Duration::from_millis(1), Duration::from_millis(120)] {
        let t = Instant::now();
        assert!(matches!(q.recv_timeout(wait), Err(Error::Timeout)));
        let took = t.elapsed();
        assert!(took >= wait, "returned after {took:?}, before {wait:?}");
        assert!(took < wait + Duration::from_secs(2), "took {took:?}");
    }
    q.send_bytes(b"x").unwrap();
    let t = Instant::now();
    let wait = Duration::from_millis(80);
    assert!(matches!(
        q.send_bytes_timeout(b"y", Some(wait)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= wait);
    assert_eq!(q.stats().timeouts, 3);
}

#[test]
fn shutdown_drains_then_ends_in_another_process() {
    let tq = TestQueue::new("drain");
    let q = CrossProcessQueue::create(&tq.name, 8, 16).unwrap();
    for i in 0..5 {
        q.send(&Message::new(i, "x")).unwrap();
    }
    q.shutdown().unwrap();
    assert!(matches!(q.send_bytes(b"late"), Err(Error::Closed)));
    let mut kids = Children(vec![spawn_role(
        "child",
        "drain",
        &[("Q", tq.name.clone())],
    )]);
    assert_eq!(finish(&mut kids.0[0]).trim(), "drained 5");
    assert!(matches!(q.receive(), Err(Error::Closed)));
    assert!(matches!(q.recv(), Ok(None)));
}

#[test]
fn shutdown_wakes_a_blocked_receiver() {
    let tq = TestQueue::new("shutwake");
    let q = CrossProcessQueue::create(&tq.name, 2, 16).unwrap();
    let mut kids = Children(vec![spawn_role(
        "child",
        "drain",
        &[("Q", tq.name.clone())],
    )]);
    std::thread::sleep(Duration::from_millis(300));
    q.shutdown().unwrap();
    assert_eq!(finish(&mut kids.0[0]).trim(), "drained 0");
}

#[test]
fn id_and_timestamp_travel_with_the_message() {
    let tq = TestQueue::new("meta");
    let q = CrossProcessQueue::create(&tq.name, 2, 16).unwrap();
    finish(&mut spawn_role(
        "child",
        "send_message",
        &[("Q", tq.name.clone())],
    ));
    let m = q.receive().unwrap().unwrap();
    assert_eq!(
        m,
        Message {
            id: 42,
            data: b"answer".to_vec(),
            timestamp: 7
        }
    );
    assert_eq!(q.receive().unwrap(), None);
}

/// How many messages `gathered_message` describes.
const GATHERED: u64 = 40;

/// Message `k` of the gather-send test, as its parts, at most `max` bytes in all: zero to
/// nine parts of assorted lengths (empty ones too), cut so that part boundaries fall on and
/// off 8-, 64- and 256-byte boundaries; every fourth message is under 200 bytes, and the last
/// fills the message size exactly.
fn gathered_message(k: u64, max: usize) -> Vec<Vec<u8>> {
    let mut rng = common::Rng::new(k);
    let total = if k == GATHERED - 1 {
        max
    } else if k % 4 == 1 {
        // Small ones too, which the call joins before sending (up to 128 bytes).
        (rng.next() % 200) as usize
    } else {
        (rng.next() % (max as u64 + 1)) as usize
    };
    let count = (k % 10) as usize;
    if count == 0 {
        // No parts at all: an empty message (unless the last, which needs one part).
        return if total == max {
            vec![vec![7; max]]
        } else {
            vec![]
        };
    }
    let mut cuts: Vec<usize> = (1..count)
        .map(|_| (rng.next() % (total as u64 + 1)) as usize)
        .collect();
    cuts.sort_unstable();
    cuts.insert(0, 0);
    cuts.push(total);
    cuts.windows(2)
        .map(|w| (w[0]..w[1]).map(|i| (i as u64 * 31 + k) as u8).collect())
        .collect()
}

#[test]
fn gather_sends_arrive_joined_in_another_process() {
    for (tag, spsc, checksum) in [
        ("parts_mpmc", false, true),
        ("parts_spsc", true, true),
        ("parts_nocrc", false, false),
    ] {
        let tq = TestQueue::new(tag);
        let q = CrossProcessQueue::options()
            .single_producer_single_consumer(spsc)
            .checksum(checksum)
            .create(&tq.name, 8, 5000)
            .unwrap();
        // Killed on drop: a failed check must not leave it blocked on a full queue.
        let mut kids = Children(vec![spawn_role(
            "child",
            "send_parts",
            &[("Q", tq.name.clone())],
        )]);
        let mut buf = vec![0u8; q.message_size()];
        let mut ids = Vec::new();
        for k in 0..GATHERED {
            let meta = q
                .recv_into(&mut buf, Some(Duration::from_secs(10)))
                .expect("every gathered message verifies")
                .expect("a message");
            let joined = gathered_message(k, q.message_size()).concat();
            assert_eq!(meta.len, joined.len(), "{tag}: message {k}'s length");
            assert!(buf[..meta.len] == joined[..], "{tag}: message {k}'s bytes");
            ids.push(meta.id);
        }
        assert_eq!(
            finish(&mut kids.0[0]).trim(),
            format!("{ids:?}"),
            "{tag}: ids"
        );
        let bytes: u64 = (0..GATHERED)
            .map(|k| gathered_message(k, q.message_size()).concat().len() as u64)
            .sum();
        let s = q.stats();
        assert_eq!(
            (s.messages_sent, s.messages_received, s.checksum_failures),
            (GATHERED, GATHERED, 0),
            "{tag}"
        );
        assert_eq!((s.bytes_sent, s.bytes_received), (bytes, bytes), "{tag}");
    }
}

#[test]
fn a_gather_send_too_large_claims_nothing() {
    let tq = TestQueue::new("parts_large");
    let q = CrossProcessQueue::create(&tq.name, 2, 16).unwrap();
    let err = q.send_parts(&[&[1; 10], &[], &[2; 7]]).unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { len: 17, max: 16 }),
        "{err:?}"
    );
    assert_eq!(q.len(), 0);
    // Exactly the message size fits, and a full queue says so without waiting.
    assert_eq!(q.send_parts(&[&[1; 10], &[2; 6]]).unwrap(), 0);
    assert_eq!(q.send_parts(&[]).unwrap(), 1);
    assert!(matches!(q.send_parts(&[b"x"]), Err(Error::QueueFull)));
    assert!(matches!(
        q.send_parts_timeout(&[b"x"], Some(Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
    let m = q.receive().unwrap().unwrap();
    assert_eq!((m.id, m.data), (0, [[1; 10].as_slice(), &[2; 6]].concat()));
    let m = q.receive().unwrap().unwrap();
    assert_eq!((m.id, m.data.len()), (1, 0));
}

#[test]
fn typed_values_cross_processes() {
    let tq = TestQueue::new("typed");
    let q = CrossProcessQueue::create(&tq.name, 2, 64).unwrap();
    finish(&mut spawn_role(
        "child",
        "send_value",
        &[("Q", tq.name.clone())],
    ));
    let v: (String, u32, Vec<f64>) = q
        .recv_value_timeout(Some(Duration::from_secs(5)))
        .unwrap()
        .unwrap();
    assert_eq!(v, ("typed".to_string(), 12, vec![1.5, 2.5]));
    q.send_bytes(&[0xff; 3]).unwrap();
    assert!(matches!(
        q.recv_value::<(String, u32, Vec<f64>)>(),
        Err(Error::DeserializationFailed(_))
    ));
}

#[test]
fn capacity_is_exact_and_send_fails_at_once_when_full() {
    let tq = TestQueue::new("full");
    let q = CrossProcessQueue::create(&tq.name, 3, 8).unwrap();
    for i in 0..3 {
        q.send(&Message::new(i, "abc")).unwrap();
    }
    assert!(q.is_full());
    assert_eq!((q.len(), q.capacity()), (3, 3));
    let t = Instant::now();
    assert!(matches!(
        q.send(&Message::new(9, "x")),
        Err(Error::QueueFull)
    ));
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(q.stats().send_full, 1);
    assert_eq!(q.receive().unwrap().unwrap().id, 0);
    assert!(!q.is_full());
}

#[test]
fn oversize_messages_and_small_buffers_lose_nothing() {
    let tq = TestQueue::new("sizes");
    let q = CrossProcessQueue::create(&tq.name, 4, 100).unwrap();
    assert!(matches!(
        q.send_bytes(&[0; 101]),
        Err(Error::MessageTooLarge { len: 101, max: 100 })
    ));
    q.send_bytes(&[7; 100]).unwrap();
    let mut small = [0u8; 99];
    assert!(matches!(
        q.receive_into(&mut small),
        Err(Error::BufferTooSmall {
            needed: 100,
            got: 99
        })
    ));
    assert_eq!(q.len(), 1);
    let mut buf = [0u8; 100];
    let meta = q.receive_into(&mut buf).unwrap().unwrap();
    assert_eq!(meta.len, 100);
    assert_eq!(buf, [7; 100]);
}

#[test]
fn names_and_missing_queues_give_clear_errors() {
    for bad in ["", ".hidden", "a/b", "sp ace", "ünï", &"x".repeat(201)] {
        assert!(
            matches!(
                CrossProcessQueue::create(bad, 1, 1),
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
        assert!(matches!(
            CrossProcessQueue::connect(bad),
            Err(Error::InvalidArgument(_))
        ));
    }
    let tq = TestQueue::new("missing");
    assert!(matches!(
        CrossProcessQueue::connect(&tq.name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        CrossProcessQueue::unlink(&tq.name),
        Err(Error::NotFound { .. })
    ));
    for (cap, size) in [
        (0, 8),
        (8, 0),
        (usize::MAX, 8),
        (8, usize::MAX),
        (1 << 31, 8),
    ] {
        assert!(matches!(
            CrossProcessQueue::create(&tq.name, cap, size),
            Err(Error::InvalidArgument(_))
        ));
    }
    // Valid geometry, but more memory than the machine has: a clear failure, no leftovers.
    let err = CrossProcessQueue::create(&tq.name, 1 << 30, 1 << 30).unwrap_err();
    assert!(matches!(err, Error::CreationFailed { .. }), "{err}");
    assert!(matches!(
        CrossProcessQueue::connect(&tq.name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn create_is_exclusive_and_can_open_or_replace() {
    let tq = TestQueue::new("excl");
    let q = CrossProcessQueue::create(&tq.name, 4, 8).unwrap();
    q.send_bytes(b"old").unwrap();
    let err = CrossProcessQueue::create(&tq.name, 4, 8).unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }));
    assert!(err.to_string().contains("shmq rm"), "hint: {err}");
    let same = CrossProcessQueue::options()
        .open_mode(OpenMode::OpenOrCreate)
        .create(&tq.name, 4, 8)
        .unwrap();
    assert_eq!(same.len(), 1);
    assert!(matches!(
        CrossProcessQueue::options()
            .open_mode(OpenMode::OpenOrCreate)
            .create(&tq.name, 5, 8),
        Err(Error::InvalidArgument(_))
    ));
    let fresh = CrossProcessQueue::options()
        .open_mode(OpenMode::Replace)
        .create(&tq.name, 4, 8)
        .unwrap();
    assert_eq!(fresh.len(), 0);
    // The old handles keep their (now unnamed) queue.
    assert_eq!(q.len(), 1);
}

#[test]
fn mode_is_applied_exactly() {
    let tq = TestQueue::new("mode");
    let _q = CrossProcessQueue::create(&tq.name, 1, 8).unwrap();
    let path = format!("/dev/shm/shmq.{}", tq.name);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let tq2 = TestQueue::new("mode");
    let _q2 = CrossProcessQueue::options()
        .mode(0o664)
        .create(&tq2.name, 1, 8)
        .unwrap();
    let path = format!("/dev/shm/shmq.{}", tq2.name);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o664);
}

#[test]
fn garbage_segments_are_refused_on_connect() {
    let tq = TestQueue::new("garbage");
    let path = format!("/dev/shm/shmq.{}", tq.name);
    std::fs::write(&path, vec![0xa5u8; 8192]).unwrap();
    assert!(matches!(
        CrossProcessQueue::connect(&tq.name),
        Err(Error::CorruptedData(_))
    ));
    std::fs::write(&path, b"short").unwrap();
    assert!(matches!(
        CrossProcessQueue::connect(&tq.name),
        Err(Error::CorruptedData(_))
    ));
    // A real queue whose recorded geometry is larger than the file.
    drop(std::fs::remove_file(&path));
    let q = CrossProcessQueue::create(&tq.name, 4, 64).unwrap();
    drop(q);
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(4096 + 100).unwrap();
    assert!(matches!(
        CrossProcessQueue::connect(&tq.name),
        Err(Error::CorruptedData(_))
    ));
}

#[test]
fn handles_are_shared_by_threads_and_listed() {
    let tq = TestQueue::new("threads");
    let q = CrossProcessQueue::create(&tq.name, 16, 8).unwrap();
    let len = |i: u64| 1 + (i % 8) as usize;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let q = &q;
            s.spawn(move || {
                for i in 0..2000u64 {
                    q.send_with(Some(t * 10_000 + i), 0, &[7; 8][..len(i)], None)
                        .unwrap();
                }
            });
        }
        let mut got = 0;
        let mut buf = [0u8; 8];
        while got < 8000 {
            q.recv_into(&mut buf, Some(Duration::from_secs(10)))
                .unwrap()
                .unwrap();
            got += 1;
        }
    });
    assert!(CrossProcessQueue::list().unwrap().contains(&tq.name));
    // Exact byte counts, read by a thread that sent nothing: the sending threads' counts
    // (one of them counting without locked instructions, `src/counts.rs`) are all flushed.
    let stats = q.stats();
    let bytes = 4 * (0..2000).map(|i| len(i) as u64).sum::<u64>();
    assert_eq!(stats.messages_received, 8000);
    assert_eq!((stats.bytes_sent, stats.bytes_received), (bytes, bytes));
}
