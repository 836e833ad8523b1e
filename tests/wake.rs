//! Waking sleepers: a message (or a free slot) wakes as many sleeping processes as it needs,
//! not every one, and no message is left in the queue while idle receivers sleep.
//!
//! The receivers here never wake on their own: `SHMQ_TEST_SLEEP_SLICE_MS` (feature
//! `crash-points`) stretches the sleep slice, which otherwise mends a missed wake-up within
//! 50 ms, to an hour. Each receiver, once it has a message, holds it (as a worker busy with
//! a task) until the test lets it go, so a message that no wake-up reached stays in the
//! queue and the test fails at its deadline instead of passing late.
//!
//! Needs the `crash-points` feature: `cargo test --features crash-points --test wake`.
#![cfg(feature = "crash-points")]

mod common;

use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use common::{deny_membarrier, futex_word, membarrier_works, Proc, TestQueue, NOT_EMPTY, ROLE_ENV};
use shmq::layout::{FENCED_BIT, WAITERS_BIT};
use shmq::{crashpoint, CrossProcessQueue, Error};

/// Generous bound for anything that should happen "soon" (never a timing assertion).
const SOON: Duration = Duration::from_secs(10);
/// Long enough for every receiver to have polled, given up and gone to sleep.
const SETTLE: Duration = Duration::from_millis(100);

/// Entry point of the child processes (ignored: runs only when a test spawns it).
#[test]
#[ignore]
fn wake_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    if role == "membarrier_probe" {
        // Whether `deny_membarrier` works here: it must turn a working call into a failing one.
        let answer = match (membarrier_works(), deny_membarrier()) {
            (false, _) => "membarrier fails without a filter".to_string(),
            (true, Err(e)) => {
                eprintln!("deny_membarrier: {e}");
                "the kernel refused the filter".to_string()
            }
            (true, Ok(())) if membarrier_works() => "membarrier works through the filter".into(),
            (true, Ok(())) => "denied".to_string(),
        };
        println!("@@PROBE {answer}");
        return;
    }
    if std::env::var_os("NO_MEMBARRIER").is_some() {
        deny_membarrier().expect("deny membarrier");
    }
    let name = std::env::var("Q").expect("Q");
    let q = CrossProcessQueue::connect(&name).expect("child connect");
    println!("@@READY");
    match role.as_str() {
        // Receives one message at a time, reports it, then holds it until a line arrives
        // on stdin. A buffer too small (`BUF`) is reported and held the same way.
        "worker" => {
            let size = std::env::var("BUF").map_or(q.message_size(), |s| s.parse().unwrap());
            let mut buf = vec![0u8; size];
            let mut stdin = std::io::stdin().lock();
            let mut line = String::new();
            loop {
                match q.recv_into(&mut buf, None) {
                    // With the heavy fences this process has issued so far.
                    Ok(Some(m)) => println!("@@GOT {} {}", m.id, crashpoint::heavy_fences()),
                    Ok(None) => break,
                    Err(Error::BufferTooSmall { .. }) => println!("@@SMALL"),
                    Err(e) => panic!("worker: {e}"),
                }
                line.clear();
                if stdin.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
            }
        }
        // Sends one message with id `ID` (stopping at its crash point, if any).
        "send" => {
            let id = std::env::var("ID").expect("ID").parse().unwrap();
            q.send_with(Some(id), 0, b"held back", None).expect("send");
            println!("@@SENT {id}");
        }
        // Answers every message on `Q` with one of the same id on `R`, never polling (every
        // wait that finds nothing sleeps), until `Q` is shut down.
        "pong" => {
            let replies = never_polling(&q);
            let mut buf = [0u8; 64];
            let mut answered = 0u64;
            while let Some(m) = q.recv_into(&mut buf, None).expect("pong receive") {
                replies
                    .send_with(Some(m.id), 0, b"pong", None)
                    .expect("pong send");
                answered += 1;
            }
            println!("@@ANSWERED {answered}");
        }
        // Sends `ROUNDS` bursts of 1 to 4 messages on `Q`, each followed by waiting for as
        // many replies on `R`, never polling.
        "ping" => {
            let replies = never_polling(&q);
            let rounds: u64 = std::env::var("ROUNDS").expect("ROUNDS").parse().unwrap();
            let mut buf = [0u8; 64];
            let mut next = 0u64;
            for round in 0..rounds {
                let burst = 1 + round % 4;
                let (first, mut sum) = (next, 0u64);
                for _ in 0..burst {
                    q.send_with(Some(next), 0, b"ping", None)
                        .expect("ping send");
                    next += 1;
                }
                for _ in 0..burst {
                    let m = replies.recv_into(&mut buf, None).expect("ping receive");
                    sum += m.expect("not shut down").id;
                }
                assert_eq!(
                    sum,
                    (first..next).sum::<u64>(),
                    "round {round}: wrong replies"
                );
            }
            println!("@@PINGED {next}");
        }
        other => panic!("unknown role {other}"),
    }
}

/// The replies queue `R` of a ping-pong role, with `q` and it set never to poll: every wait
/// that finds nothing sleeps.
fn never_polling(q: &CrossProcessQueue) -> CrossProcessQueue {
    let replies = CrossProcessQueue::connect(&std::env::var("R").expect("R")).unwrap();
    q.set_spin_limit(Duration::ZERO);
    replies.set_spin_limit(Duration::ZERO);
    replies
}

/// Starts a worker on `q` whose sleeps never end on their own.
fn worker(q: &TestQueue, buf: Option<usize>) -> Proc {
    let mut env = vec![
        ("Q", q.name.clone()),
        ("SHMQ_TEST_SLEEP_SLICE_MS", "3600000".to_string()),
    ];
    if let Some(b) = buf {
        env.push(("BUF", b.to_string()));
    }
    let p = Proc::start("wake_child", "worker", &env, None);
    expect_line(&p, "@@READY");
    p
}

/// Waits (at most `SOON`) for the child's next `@@` line; panics if it does not start with
/// `prefix`.
fn expect_line(p: &Proc, prefix: &str) -> String {
    let line = p
        .next_marked(SOON)
        .unwrap_or_else(|| panic!("no {prefix} line from the child"));
    assert!(line.starts_with(prefix), "expected {prefix}, got {line}");
    line
}

/// Collects `n` `@@GOT` lines from `workers` (each worker reports at most one before it is
/// let go); returns the ids and which worker got each. Fails after `SOON`: a message left
/// in the queue while the idle workers sleep.
fn collect(workers: &[Proc], n: usize) -> Vec<(u64, usize)> {
    let deadline = Instant::now() + SOON;
    let mut got = Vec::new();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} messages received; the rest stay queued while idle workers sleep \
             (got {got:?})",
            got.len()
        );
        for (i, w) in workers.iter().enumerate() {
            while let Ok(l) = w.lines.try_recv() {
                if let Some((_, rest)) = l.split_once("@@GOT ") {
                    let id = rest.split_whitespace().next().unwrap();
                    got.push((id.parse().unwrap(), i));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    got
}

/// Shuts the queue down and checks that every worker then ends cleanly (one holding a
/// message sees its stdin close first).
fn end(queue: &CrossProcessQueue, workers: &mut [Proc]) {
    queue.shutdown().unwrap();
    for w in workers {
        drop(w.stdin.take());
        assert!(w.child.wait().unwrap().success());
    }
}

/// Lets a worker that holds a message go on to its next receive.
fn release(w: &mut Proc) {
    let stdin = w.stdin.as_mut().expect("worker stdin");
    stdin
        .write_all(b"go\n")
        .and_then(|_| stdin.flush())
        .expect("release worker");
}

#[test]
fn every_message_reaches_an_idle_worker_when_each_wakes_only_as_many_as_needed() {
    const WORKERS: usize = 6;
    let q = TestQueue::new("wake_idle");
    let queue = CrossProcessQueue::create(&q.name, 64, 64).unwrap();
    let mut workers: Vec<Proc> = (0..WORKERS).map(|_| worker(&q, None)).collect();
    let mut next_id = 0u64;
    // Rounds of 1..=WORKERS messages, sent one by one or in one batch, each to a pool of
    // workers that are all asleep.
    for round in 0..24 {
        std::thread::sleep(SETTLE);
        let k = round % WORKERS + 1;
        let ids: Vec<u64> = (next_id..next_id + k as u64).collect();
        next_id += k as u64;
        if round % 2 == 0 {
            for &id in &ids {
                queue.send_with(Some(id), 0, b"task", None).unwrap();
            }
        } else {
            let batch: Vec<&[u8]> = ids.iter().map(|_| &b"task"[..]).collect();
            assert_eq!(queue.send_batch(&batch, None).unwrap(), k);
        }
        let got = collect(&workers, k);
        let mut received: Vec<u64> = got.iter().map(|&(id, _)| id).collect();
        received.sort_unstable();
        // A batch's ids are its positions, which are these ids too (every message before
        // took one position).
        assert_eq!(received, ids, "round {round}: {got:?}");
        for &(_, w) in &got {
            release(&mut workers[w]);
        }
    }
    end(&queue, &mut workers);
}

#[test]
fn a_message_published_behind_a_slower_one_is_passed_on_to_a_second_worker() {
    let q = TestQueue::new("wake_order");
    let queue = CrossProcessQueue::create(&q.name, 16, 64).unwrap();
    let mut workers = [worker(&q, None), worker(&q, None)];
    std::thread::sleep(SETTLE);
    // A producer claims position 0 and stops before publishing it.
    let mut slow = Proc::start(
        "wake_child",
        "send",
        &[("Q", q.name.clone()), ("ID", "100".to_string())],
        Some("push_written"),
    );
    expect_line(&slow, "@@READY");
    slow.stopped_within(SOON);
    // Position 1, published first, wakes a worker that finds position 0 not ready and
    // goes back to sleep.
    queue.send_with(Some(101), 0, b"behind", None).unwrap();
    std::thread::sleep(SETTLE);
    // Position 0's publication wakes one worker; the one that takes it must wake the other
    // for position 1 (each holds its message, so nobody else will look).
    slow.signal(libc::SIGCONT);
    expect_line(&slow, "@@SENT 100");
    let got = collect(&workers, 2);
    let mut ids: Vec<u64> = got.iter().map(|&(id, _)| id).collect();
    ids.sort_unstable();
    assert_eq!(ids, [100, 101]);
    assert_ne!(got[0].1, got[1].1, "one message per worker: {got:?}");
    end(&queue, &mut workers);
}

#[test]
fn a_woken_worker_that_cannot_take_the_message_wakes_another() {
    let q = TestQueue::new("wake_small");
    let queue = CrossProcessQueue::create(&q.name, 16, 64).unwrap();
    // The worker with a buffer too small goes to sleep first, so the futex (first come,
    // first woken) wakes it first.
    let small = worker(&q, Some(8));
    std::thread::sleep(SETTLE);
    let big = worker(&q, None);
    std::thread::sleep(SETTLE);
    queue.send_with(Some(7), 0, &[1u8; 32], None).unwrap();
    let got = collect(std::slice::from_ref(&big), 1);
    assert_eq!(got[0].0, 7);
    // Whether the small one was woken first is up to the kernel; if it was, it said so.
    end(&queue, &mut [small, big]);
}

#[test]
fn senders_blocked_on_a_full_queue_each_get_a_freed_slot() {
    const SENDERS: usize = 4;
    let q = TestQueue::new("wake_full");
    let queue = CrossProcessQueue::create(&q.name, 2, 64).unwrap();
    for id in 0..2 {
        queue.send_with(Some(id), 0, b"fill", None).unwrap();
    }
    let env = |id: u64| {
        vec![
            ("Q", q.name.clone()),
            ("ID", id.to_string()),
            ("SHMQ_TEST_SLEEP_SLICE_MS", "3600000".to_string()),
        ]
    };
    let senders: Vec<Proc> = (0..SENDERS as u64)
        .map(|i| Proc::start("wake_child", "send", &env(10 + i), None))
        .collect();
    for s in &senders {
        expect_line(s, "@@READY");
    }
    std::thread::sleep(SETTLE);
    // Free the slots in one batch (the senders sleep on a full queue), then one at a time.
    let mut received = Vec::new();
    let mut buf = vec![0u8; 2 * 64];
    let mut metas = Vec::new();
    let n = queue.recv_batch(&mut buf, &mut metas, None).unwrap();
    received.extend(metas.iter().map(|m| m.id));
    let deadline = Instant::now() + SOON;
    let mut one = [0u8; 64];
    while received.len() < 2 + SENDERS {
        assert!(
            Instant::now() < deadline,
            "senders still blocked with free slots: received {received:?} (batch of {n})"
        );
        match queue.recv_into(&mut one, Some(Duration::from_millis(10))) {
            Ok(Some(m)) => received.push(m.id),
            Ok(None) => unreachable!("not shut down"),
            Err(Error::Timeout) => {}
            Err(e) => panic!("{e}"),
        }
    }
    received.sort_unstable();
    assert_eq!(received, [0, 1, 10, 11, 12, 13]);
    for s in &senders {
        expect_line(s, "@@SENT");
    }
}

/// Waits until the worker sleeps in `FUTEX_WAIT`, then a while longer (about 30 of its
/// 10 ms sleep slices), and sends it message `id`; returns the heavy fences it reports.
fn send_to_sleeping(queue: &CrossProcessQueue, w: &mut Proc, id: u64) -> u64 {
    let deadline = Instant::now() + SOON;
    while !w.in_shared_futex_wait() {
        assert!(Instant::now() < deadline, "the worker never went to sleep");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(300));
    queue.send_with(Some(id), 0, b"task", None).unwrap();
    got(w, id)
}

/// Reads the worker's `@@GOT id fences` line for message `id`; returns the fences.
fn got(w: &Proc, id: u64) -> u64 {
    let line = expect_line(w, "@@GOT");
    let got: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(got.len(), 2, "{line}");
    assert_eq!(got[0], id, "{line}: the wrong message");
    got[1]
}

/// A sleeper pays one heavy fence (a `membarrier`) and then sets the fence-mode bit, and
/// while it stays set (the waiters bit kept set by wakers, as with an idle worker) later
/// sleeps pay none: the wakers fence for real. A woken worker also takes its message
/// before it announces itself again, and a sleep slice that ends with nothing to do sleeps
/// on without announcing itself again. Once a send finds nobody announced, the bit is
/// cleared, and the next sleep pays a heavy fence again. Heavy fences are counted by the
/// library under `crash-points`; the word is read from the segment. (Without the mode: one
/// fence per message; announcing again after each wake-up: two; after each slice: 30.)
#[test]
fn sleepers_pay_a_heavy_fence_only_when_the_fence_mode_is_off() {
    let q = TestQueue::new("wake_fences");
    let queue = CrossProcessQueue::create(&q.name, 16, 64).unwrap();
    // Slices of 10 ms: about 30 of them end while the worker waits for each message.
    let env = [
        ("Q", q.name.clone()),
        ("SHMQ_TEST_SLEEP_SLICE_MS", "10".to_string()),
    ];
    let mut w = Proc::start("wake_child", "worker", &env, None);
    expect_line(&w, "@@READY");
    for id in 0..3u64 {
        assert_eq!(
            send_to_sleeping(&queue, &mut w, id),
            1,
            "message {id}: only the first sleep pays a heavy fence"
        );
        let word = futex_word(&q, NOT_EMPTY);
        assert_eq!(
            word & (WAITERS_BIT | FENCED_BIT),
            WAITERS_BIT | FENCED_BIT,
            "{word:#x}: the wake-up kept both bits"
        );
        if id < 2 {
            release(&mut w);
        }
    }
    // The worker holds message 2. The first send finds the waiters bit set, wakes nobody
    // and clears it; the second finds only the mode bit, and clears it.
    queue.send_with(Some(3), 0, b"task", None).unwrap();
    queue.send_with(Some(4), 0, b"task", None).unwrap();
    let word = futex_word(&q, NOT_EMPTY);
    assert_eq!(
        word & (WAITERS_BIT | FENCED_BIT),
        0,
        "{word:#x}: both bits cleared"
    );
    for id in 3..5 {
        release(&mut w);
        assert_eq!(
            got(&w, id),
            1,
            "message {id} was waiting: no sleep, no fence"
        );
    }
    release(&mut w);
    assert_eq!(
        send_to_sleeping(&queue, &mut w, 5),
        2,
        "the mode was off: the next sleep pays a heavy fence again"
    );
    let word = futex_word(&q, NOT_EMPTY);
    assert_eq!(
        word & FENCED_BIT,
        FENCED_BIT,
        "{word:#x}: and sets the mode again"
    );
    release(&mut w);
    end(&queue, &mut [w]);
}

/// No wake-up is lost when every wait sleeps: a pinger sends bursts of 1 to 4 requests to
/// three answering processes and waits for as many replies, through two queues of depth 2
/// (so senders sleep on full queues too), with polling off and sleep slices of an hour in
/// every process. Each message then passes through a sleep and a wake-up on one side or
/// the other, with the fence mode turning on and off as the sleepers come and go; a lost
/// wake-up leaves both sides asleep, and the test fails at its deadline instead of
/// finishing within a second. Then the same between one pinger and one answering process
/// on single-producer/single-consumer queues. One after the other: with both at once, a
/// waker that skipped the fence mode's real fence no longer hung it in three runs (alone,
/// in three of four).
#[test]
fn no_wake_up_is_lost_between_processes_that_always_sleep() {
    ping_pong(false, 3, Denied::default(), 20_000);
    ping_pong(true, 1, Denied::default(), 20_000);
}

/// The same ping-pongs with processes that cannot call `membarrier` (a seccomp filter makes
/// it fail, as a sandbox or an old kernel would): each flags both queues when it joins, and
/// from then on every waker fences for real. First the pinger without it among answerers
/// with it, then one answerer without it and a pinger with it (on the default queues, then
/// on single-producer/single-consumer ones), so that on each queue a process whose sleeps
/// could not pay the `membarrier` is woken by one that could. Checks that the flag
/// (`QueueInfo::real_fences`) was off before they joined and on after.
#[test]
fn no_wake_up_is_lost_when_a_process_cannot_use_membarrier() {
    let probe = Proc::start("wake_child", "membarrier_probe", &[], None);
    let answer = expect_line(&probe, "@@PROBE ");
    match answer.trim_start_matches("@@PROBE ") {
        "denied" => {}
        why @ ("membarrier fails without a filter" | "the kernel refused the filter") => {
            eprintln!("{why}: no process here can be kept from membarrier; nothing to test");
            return;
        }
        other => panic!("the seccomp filter does not work: {other}"),
    }
    // 100 000 rounds: with wakers that ignored the flag (a compiler barrier alone, as if
    // every process could call `membarrier`), runs of 100 000 hung in three of four, runs of
    // 20 000 in none of three.
    const ROUNDS: u64 = 100_000;
    let denied = |ping, pongs| Denied { ping, pongs };
    ping_pong(false, 3, denied(true, 0), ROUNDS);
    ping_pong(false, 3, denied(false, 1), ROUNDS);
    ping_pong(true, 1, denied(false, 1), ROUNDS);
}

/// Which processes of a ping-pong run without `membarrier`: the pinger, and how many of the
/// answering processes.
#[derive(Clone, Copy, Default)]
struct Denied {
    ping: bool,
    pongs: usize,
}

/// The ping-pong of the tests above, `rounds` bursts long, with `pongs` answering processes,
/// the processes `denied` names run without `membarrier`.
fn ping_pong(spsc: bool, pongs: usize, denied: Denied, rounds: u64) {
    let (q, r) = (TestQueue::new("wake_ping"), TestQueue::new("wake_pong"));
    let create = |name: &str| {
        CrossProcessQueue::options()
            .single_producer_single_consumer(spsc)
            .create(name, 2, 64)
            .unwrap()
    };
    let requests = create(&q.name);
    let replies = create(&r.name);
    // Off unless this process itself cannot call `membarrier`.
    let light_fences = !requests.info().real_fences;
    let env = |role_rounds: Option<u64>, no_membarrier: bool| {
        let mut env = vec![
            ("Q", q.name.clone()),
            ("R", r.name.clone()),
            ("SHMQ_TEST_SLEEP_SLICE_MS", "3600000".to_string()),
        ];
        if let Some(n) = role_rounds {
            env.push(("ROUNDS", n.to_string()));
        }
        if no_membarrier {
            env.push(("NO_MEMBARRIER", "1".to_string()));
        }
        env
    };
    let mut pongs: Vec<Proc> = (0..pongs)
        .map(|i| Proc::start("wake_child", "pong", &env(None, i < denied.pongs), None))
        .collect();
    let ping = Proc::start("wake_child", "ping", &env(Some(rounds), denied.ping), None);
    let line = ping
        .next_marked(SOON)
        .and_then(|_ready| ping.next_marked(Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("the ping-pong stopped: a wake-up was lost"));
    let sent: u64 = (0..rounds).map(|r| 1 + r % 4).sum();
    assert_eq!(line, format!("@@PINGED {sent}"));
    if light_fences {
        let flagged = denied.ping || denied.pongs > 0;
        for (queue, which) in [(&requests, "requests"), (&replies, "replies")] {
            assert_eq!(
                (queue.info().real_fences, queue.real_fences()),
                (flagged, flagged),
                "{which}: real fences exactly when a process without membarrier joined"
            );
        }
    }
    requests.shutdown().unwrap();
    let mut answered = 0;
    for p in &mut pongs {
        let done = p.rest(SOON).into_iter().find_map(|l| {
            l.split_once("@@ANSWERED ")
                .map(|(_, n)| n.parse::<u64>().unwrap())
        });
        answered += done.expect("a pong process ended without its count");
        assert!(p.child.wait().unwrap().success());
    }
    assert_eq!(answered, sent);
}
