//! The zero-copy (`send_in_place` / `recv_in_place`) and batch (`send_batch` / `recv_batch` /
//! `send_batch_in_place` / `recv_batch_in_place`) forms, across real processes: content,
//! order, interoperation with the copying forms, errors, panics inside closures, and
//! processes killed inside a closure.
//!
//! Children are this test binary run again in a role (see `tests/common`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::Duration;

use common::{finish, report, spawn_role, Children, TestQueue, ROLE_ENV};
use shmq::{CrossProcessQueue, Error};

const WAIT: Option<Duration> = Some(Duration::from_secs(10));

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set"))
}

fn env_u64(key: &str) -> u64 {
    env(key).parse().unwrap()
}

/// Message `seq`: its length varies with `seq`, 8 bytes of `seq`, then a fill byte.
fn pattern_len(seq: u64, max: usize) -> usize {
    8 + (seq as usize * 7) % (max - 8 + 1)
}

fn write_pattern(buf: &mut [u8], seq: u64) -> usize {
    let len = pattern_len(seq, buf.len());
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..len].fill((seq % 251) as u8);
    len
}

fn pattern(seq: u64, max: usize) -> Vec<u8> {
    let mut v = vec![0u8; max];
    let len = write_pattern(&mut v, seq);
    v.truncate(len);
    v
}

/// Panics unless `bytes` is message `seq`.
fn check_pattern(bytes: &[u8], seq: u64, max: usize) {
    assert_eq!(
        bytes.len(),
        pattern_len(seq, max),
        "length of message {seq}"
    );
    assert_eq!(&bytes[..8], &seq.to_le_bytes(), "sequence of message {seq}");
    assert!(
        bytes[8..].iter().all(|&b| b == (seq % 251) as u8),
        "payload of message {seq}"
    );
}

/// Child entry point: runs the role named in `SHMQ_TEST_ROLE`.
#[test]
#[ignore = "child process entry point, run by the other tests"]
fn child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let q = CrossProcessQueue::connect(&env("Q")).expect("child connects");
    let size = q.message_size();
    match role.as_str() {
        "zc_send" => {
            for seq in 0..env_u64("COUNT") {
                let id = q
                    .send_in_place(WAIT, |slot| write_pattern(slot, seq))
                    .expect("send_in_place");
                assert_eq!(id, seq, "the id is the position");
            }
        }
        "plain_recv" => {
            let mut buf = vec![0u8; size];
            for seq in 0..env_u64("COUNT") {
                let meta = q.recv_into(&mut buf, WAIT).expect("recv").expect("open");
                check_pattern(&buf[..meta.len], seq, size);
            }
            report("received all");
        }
        "batch_send" => {
            let count = env_u64("COUNT");
            let mut seq = 0;
            while seq < count {
                let batch: Vec<Vec<u8>> = (seq..count.min(seq + 7))
                    .map(|s| pattern(s, size))
                    .collect();
                let sent = q.send_batch(&batch, WAIT).expect("send_batch");
                assert!((1..=batch.len()).contains(&sent));
                seq += sent as u64;
            }
        }
        "batch_zc_send" => {
            // Batches of up to 7 written in place; a batch cut short by a full queue is
            // resumed where it stopped.
            let count = env_u64("COUNT");
            let mut seq = 0;
            while seq < count {
                let want = (count - seq).min(7) as usize;
                let mut filled = 0;
                let sent = q
                    .send_batch_in_place(want, WAIT, |i, slot| {
                        assert_eq!(i, filled, "fill is called in order");
                        filled += 1;
                        assert_eq!(slot.len(), size, "the whole payload area is lent");
                        write_pattern(slot, seq + i as u64)
                    })
                    .expect("send_batch_in_place");
                assert!((1..=want).contains(&sent));
                assert_eq!(filled, sent, "fill runs once per message sent");
                seq += sent as u64;
            }
        }
        "hang_in_batch_send" => {
            // Sends messages 0 and 1 of a batch of 5, then waits inside message 2's fill to
            // be killed.
            let _ = q.send_batch_in_place(5, WAIT, |i, slot| {
                if i == 2 {
                    report("inside");
                    std::thread::sleep(Duration::from_secs(60));
                }
                write_pattern(slot, i as u64)
            });
            unreachable!("the parent kills this process inside the closure");
        }
        "hang_in_send" => {
            // Claims a slot, writes half a message, and waits inside the closure to be killed.
            let _ = q.send_in_place(WAIT, |slot| {
                slot[..4].copy_from_slice(b"half");
                report("inside");
                std::thread::sleep(Duration::from_secs(60));
                4
            });
            unreachable!("the parent kills this process inside the closure");
        }
        "hang_in_recv" => {
            let _ = q.recv_in_place(WAIT, |_, bytes| {
                report(format!("inside {}", String::from_utf8_lossy(bytes)));
                std::thread::sleep(Duration::from_secs(60));
            });
            unreachable!("the parent kills this process inside the closure");
        }
        "hang_in_batch_recv" => {
            // Reads message 0 of a batch, then waits inside message 1's read to be killed.
            let mut i = 0;
            let _ = q.recv_batch_in_place(5, WAIT, |meta, bytes| {
                check_pattern(bytes, i, size);
                assert_eq!(meta.id, i);
                if i == 1 {
                    report("inside");
                    std::thread::sleep(Duration::from_secs(60));
                }
                i += 1;
            });
            unreachable!("the parent kills this process inside the closure");
        }
        "recv_report" => {
            // Receives COUNT messages one at a time, then reports `id:redelivered` for each.
            let got: Vec<String> = receive_ids(&q, env_u64("COUNT") as usize)
                .into_iter()
                .map(|(id, redelivered)| format!("{id}:{}", u8::from(redelivered)))
                .collect();
            report(format!("got {}", got.join(" ")));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Waits until the child reports a line starting with `prefix` (it is then still running).
fn wait_for_report(child: &mut Child, prefix: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("child ended before reporting '{prefix}'"))
            .expect("read child stdout");
        if let Some((_, rest)) = line.split_once("@@ ") {
            if rest.starts_with(prefix) {
                return rest.to_string();
            }
        }
    }
}

fn kill(child: &mut Child) {
    child.kill().expect("kill child");
    child.wait().expect("reap child");
}

/// Runs `role` (one of the `hang_in_*` roles) in a child on queue `name`, waits until it
/// reports being inside its closure, and kills it there. Returns its report.
fn killed_inside(name: &str, role: &str) -> String {
    let mut kids = Children(vec![spawn_role("child", role, &[("Q", name.to_string())])]);
    let report = wait_for_report(&mut kids.0[0], "inside");
    kill(&mut kids.0[0]);
    report
}

#[test]
fn zero_copy_across_processes_with_and_without_checksums() {
    const COUNT: u64 = 3_000;
    for checksum in [true, false] {
        let tq = TestQueue::new("zc");
        let q = CrossProcessQueue::options()
            .checksum(checksum)
            .create(&tq.name, 16, 200)
            .unwrap();
        let size = q.message_size();
        let mut kids = Children(Vec::new());
        // Child writes in place; we read in place.
        kids.0.push(spawn_role(
            "child",
            "zc_send",
            &[("Q", tq.name.clone()), ("COUNT", COUNT.to_string())],
        ));
        for seq in 0..COUNT {
            let (id, len) = q
                .recv_in_place(WAIT, |meta, bytes| {
                    check_pattern(bytes, seq, size);
                    assert!(!meta.redelivered);
                    (meta.id, meta.len)
                })
                .expect("recv_in_place");
            assert_eq!((id, len), (seq, pattern_len(seq, size)));
        }
        finish(&mut kids.0[0]);
        // We write in place; the child reads with the copying receive.
        kids.0.push(spawn_role(
            "child",
            "plain_recv",
            &[("Q", tq.name.clone()), ("COUNT", COUNT.to_string())],
        ));
        for seq in 0..COUNT {
            q.send_in_place(WAIT, |slot| {
                assert_eq!(slot.len(), size, "the whole payload area is lent");
                write_pattern(slot, seq)
            })
            .expect("send_in_place");
        }
        assert_eq!(finish(&mut kids.0[1]), "received all");
        let stats = q.stats();
        assert_eq!(stats.messages_sent, 2 * COUNT);
        assert_eq!(stats.messages_received, 2 * COUNT);
        assert_eq!(stats.checksum_failures + stats.corrupted, 0);
    }
}

#[test]
fn batches_across_processes_keep_order_and_content() {
    const COUNT: u64 = 6_000;
    let tq = TestQueue::new("batch");
    let q = CrossProcessQueue::create(&tq.name, 32, 100).unwrap();
    let size = q.message_size();
    let mut kids = Children(vec![spawn_role(
        "child",
        "batch_send",
        &[("Q", tq.name.clone()), ("COUNT", COUNT.to_string())],
    )]);
    let mut buf = vec![0u8; 10 * size + 5]; // room for 10 whole messages
    let mut metas = Vec::with_capacity(10);
    let mut seq = 0u64;
    // First half with the copying batch receive...
    while seq < COUNT / 2 {
        let n = q
            .recv_batch(&mut buf, &mut metas, WAIT)
            .expect("recv_batch");
        assert!((1..=10).contains(&n), "batch of {n}");
        assert_eq!(n, metas.len());
        for (i, meta) in metas.iter().enumerate() {
            assert_eq!(meta.id, seq, "ids are positions, in order");
            check_pattern(&buf[i * size..][..meta.len], seq, size);
            seq += 1;
        }
    }
    // ...the rest lent in place.
    while seq < COUNT {
        let n = q
            .recv_batch_in_place(10, WAIT, |meta, bytes| {
                assert_eq!(meta.id, seq);
                check_pattern(bytes, seq, size);
                seq += 1;
            })
            .expect("recv_batch_in_place");
        assert!((1..=10).contains(&n), "batch of {n}");
    }
    finish(&mut kids.0[0]);
    assert!(q.is_empty());
    let stats = q.stats();
    assert_eq!(
        (stats.messages_sent, stats.messages_received),
        (COUNT, COUNT)
    );
}

#[test]
fn batch_semantics_full_empty_errors_and_shutdown() {
    let tq = TestQueue::new("batchsem");
    let q = CrossProcessQueue::create(&tq.name, 4, 16).unwrap();
    let msgs: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; i as usize + 1]).collect();
    assert_eq!(
        q.send_batch(&[] as &[&[u8]], Some(Duration::ZERO)).unwrap(),
        0
    );
    // Only what fits is sent, in order.
    assert_eq!(q.send_batch(&msgs, Some(Duration::ZERO)).unwrap(), 4);
    assert!(matches!(
        q.send_batch(&msgs[4..], Some(Duration::ZERO)),
        Err(Error::QueueFull)
    ));
    assert!(matches!(
        q.send_batch(&msgs[4..], Some(Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
    // A buffer for 3 messages (and a bit) receives 3.
    let mut buf = vec![0u8; 3 * 16 + 15];
    let mut metas = Vec::new();
    assert_eq!(
        q.recv_batch(&mut buf, &mut metas, Some(Duration::ZERO))
            .unwrap(),
        3
    );
    for (i, m) in metas.iter().enumerate() {
        assert_eq!(m.id, i as u64);
        assert_eq!(&buf[i * 16..][..m.len], &msgs[i][..]);
    }
    // Too large anywhere in the batch: nothing is sent.
    let too_big: Vec<Vec<u8>> = vec![vec![1; 3], vec![2; 17]];
    assert!(matches!(
        q.send_batch(&too_big, Some(Duration::ZERO)),
        Err(Error::MessageTooLarge { len: 17, max: 16 })
    ));
    assert_eq!(q.len(), 1);
    // A buffer smaller than one message is refused and dequeues nothing.
    assert!(matches!(
        q.recv_batch(&mut [0u8; 15], &mut metas, Some(Duration::ZERO)),
        Err(Error::BufferTooSmall {
            needed: 16,
            got: 15
        })
    ));
    assert_eq!(
        q.recv_batch(&mut buf, &mut metas, Some(Duration::ZERO))
            .unwrap(),
        1
    );
    assert_eq!(&buf[..metas[0].len], &msgs[3][..]);
    assert!(matches!(
        q.recv_batch(&mut buf, &mut metas, Some(Duration::ZERO)),
        Err(Error::QueueEmpty)
    ));
    assert!(matches!(
        q.recv_batch_in_place(8, Some(Duration::from_millis(20)), |_, _| {}),
        Err(Error::Timeout)
    ));
    // After shutdown: what is queued is delivered, then Closed.
    assert_eq!(q.send_batch(&msgs[..2], None).unwrap(), 2);
    q.shutdown().unwrap();
    assert!(matches!(q.send_batch(&msgs, None), Err(Error::Closed)));
    let mut seen = Vec::new();
    assert_eq!(
        q.recv_batch_in_place(8, None, |m, b| seen.push((m.id, b.to_vec())))
            .unwrap(),
        2
    );
    assert_eq!(seen, vec![(4, msgs[0].clone()), (5, msgs[1].clone())]);
    assert!(matches!(
        q.recv_batch(&mut buf, &mut metas, None),
        Err(Error::Closed)
    ));
    let stats = q.stats();
    assert_eq!((stats.messages_sent, stats.messages_received), (6, 6));
    assert_eq!(stats.bytes_sent, (1 + 2 + 3 + 4) + (1 + 2));
    assert_eq!(stats.bytes_received, stats.bytes_sent);
}

#[test]
fn in_place_timeouts_full_empty_and_shutdown() {
    let tq = TestQueue::new("zcsem");
    let q = CrossProcessQueue::create(&tq.name, 2, 8).unwrap();
    assert!(matches!(
        q.recv_in_place(Some(Duration::ZERO), |_, _| ()),
        Err(Error::QueueEmpty)
    ));
    assert!(matches!(
        q.recv_in_place(Some(Duration::from_millis(20)), |_, _| ()),
        Err(Error::Timeout)
    ));
    for _ in 0..2 {
        q.send_in_place(Some(Duration::ZERO), |s| {
            s.fill(7);
            8
        })
        .unwrap();
    }
    let mut called = false;
    assert!(matches!(
        q.send_in_place(Some(Duration::ZERO), |_| {
            called = true;
            0
        }),
        Err(Error::QueueFull)
    ));
    assert!(!called, "the closure only runs once a slot is claimed");
    // An empty message is fine.
    q.recv_in_place(None, |_, _| ()).unwrap();
    q.send_in_place(None, |_| 0).unwrap();
    q.shutdown().unwrap();
    assert!(matches!(q.send_in_place(None, |_| 1), Err(Error::Closed)));
    assert_eq!(
        q.recv_in_place(None, |_, b| b.to_vec()).unwrap(),
        vec![7u8; 8]
    );
    assert_eq!(q.recv_in_place(None, |_, b| b.len()).unwrap(), 0);
    assert!(matches!(
        q.recv_in_place(None, |_, _| ()),
        Err(Error::Closed)
    ));
}

#[test]
fn panics_and_bad_lengths_in_closures_do_not_wedge_the_queue() {
    let tq = TestQueue::new("zcpanic");
    let q = CrossProcessQueue::create(&tq.name, 4, 32).unwrap();
    // A writer that panics: its slot is published poisoned and the panic goes on.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.send_in_place(None, |_| panic!("writer fails"))
    }));
    assert!(r.is_err());
    // A writer that claims too many bytes: refused, slot poisoned.
    assert!(matches!(
        q.send_in_place(None, |_| 33),
        Err(Error::InvalidArgument(_))
    ));
    q.send_in_place(None, |s| {
        s[..2].copy_from_slice(b"ok");
        2
    })
    .unwrap();
    // A receiver sees both poisoned slots as corrupted messages, then the good one.
    for _ in 0..2 {
        assert!(matches!(
            q.recv_in_place(None, |_, _| ()),
            Err(Error::CorruptedData(_))
        ));
    }
    assert_eq!(q.recv_in_place(None, |_, b| b.to_vec()).unwrap(), b"ok");
    assert_eq!(q.stats().corrupted, 2);
    // A reader that panics: the slot is released (the message counts as delivered).
    q.send_bytes(b"lost").unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.recv_in_place(None, |_, _| panic!("reader fails"))
    }));
    assert!(r.is_err());
    assert!(q.is_empty());
    // Same inside a batch.
    q.send_batch(&[b"a", b"b", b"c"], None).unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        q.recv_batch_in_place(3, None, |_, b| assert_ne!(b, b"b"))
    }));
    assert!(r.is_err());
    assert_eq!(q.recv_in_place(None, |_, b| b.to_vec()).unwrap(), b"c");
    // Every slot is usable again: fill the ring without waiting, then drain it.
    for i in 0..4u8 {
        q.send_bytes(&[i]).unwrap();
    }
    for i in 0..4u8 {
        assert_eq!(q.recv_in_place(None, |_, b| b[0]).unwrap(), i);
    }
}

#[test]
fn writer_killed_inside_send_closure_is_skipped() {
    let tq = TestQueue::new("zckillsend");
    let q = CrossProcessQueue::create(&tq.name, 8, 64).unwrap();
    killed_inside(&tq.name, "hang_in_send");
    // The dead writer's position never published; the next message still arrives.
    q.send_bytes(b"after").unwrap();
    let got = q.recv_in_place(WAIT, |_, b| b.to_vec()).expect("recv");
    assert_eq!(got, b"after");
    let stats = q.stats();
    assert_eq!(stats.abandoned, 1);
    assert_eq!(stats.messages_received, 1);
    assert!(q.is_empty());
}

#[test]
fn reader_killed_inside_recv_closure_message_is_redelivered() {
    let tq = TestQueue::new("zckillrecv");
    let q = CrossProcessQueue::create(&tq.name, 8, 64).unwrap();
    q.send_bytes(b"precious").unwrap();
    assert_eq!(killed_inside(&tq.name, "hang_in_recv"), "inside precious");
    let (data, redelivered) = q
        .recv_in_place(WAIT, |meta, b| (b.to_vec(), meta.redelivered))
        .expect("the message survives its reader's death");
    assert_eq!(data, b"precious");
    assert!(redelivered, "flagged as redelivered");
    assert_eq!(q.stats().redelivered, 1);
    assert!(matches!(
        q.recv_in_place(Some(Duration::ZERO), |_, _| ()),
        Err(Error::QueueEmpty)
    ));
}

fn spsc_or_not(spsc: bool) -> shmq::QueueOptions {
    CrossProcessQueue::options().single_producer_single_consumer(spsc)
}

#[test]
fn zero_copy_batches_across_processes() {
    const COUNT: u64 = 4_000;
    for (spsc, checksum) in [(false, true), (true, true), (true, false)] {
        let tq = TestQueue::new("zcbatch");
        let q = spsc_or_not(spsc)
            .checksum(checksum)
            .create(&tq.name, 16, 120)
            .unwrap();
        let size = q.message_size();
        let mut kids = Children(vec![spawn_role(
            "child",
            "batch_zc_send",
            &[("Q", tq.name.clone()), ("COUNT", COUNT.to_string())],
        )]);
        let mut seq = 0u64;
        while seq < COUNT {
            q.recv_batch_in_place(10, WAIT, |meta, bytes| {
                assert_eq!(meta.id, seq, "ids are positions, in order");
                check_pattern(bytes, seq, size);
                seq += 1;
            })
            .expect("recv_batch_in_place");
        }
        finish(&mut kids.0[0]);
        assert!(q.is_empty());
        let stats = q.stats();
        assert_eq!(
            (stats.messages_sent, stats.messages_received),
            (COUNT, COUNT),
            "spsc {spsc}, checksum {checksum}"
        );
        assert_eq!(stats.bytes_sent, stats.bytes_received);
        assert_eq!(stats.checksum_failures + stats.corrupted, 0);
    }
}

#[test]
fn zero_copy_batch_send_semantics() {
    for spsc in [false, true] {
        let tq = TestQueue::new("zcbatchsem");
        let q = spsc_or_not(spsc).create(&tq.name, 4, 16).unwrap();
        let calls = std::cell::Cell::new(0);
        let mut fill = |i: usize, slot: &mut [u8]| {
            calls.set(calls.get() + 1);
            slot[..=i].fill(i as u8);
            i + 1
        };
        assert_eq!(q.send_batch_in_place(0, None, &mut fill).unwrap(), 0);
        // Only what fits is sent; fill runs once per message sent.
        q.send_bytes(b"x").unwrap();
        assert_eq!(q.send_batch_in_place(6, None, &mut fill).unwrap(), 3);
        assert_eq!(calls.get(), 3);
        assert!(matches!(
            q.send_batch_in_place(2, Some(Duration::ZERO), &mut fill),
            Err(Error::QueueFull)
        ));
        assert!(matches!(
            q.send_batch_in_place(2, Some(Duration::from_millis(20)), &mut fill),
            Err(Error::Timeout)
        ));
        assert_eq!(calls.get(), 3, "fill never runs without a claimed slot");
        let mut got = Vec::new();
        q.recv_batch_in_place(8, None, |m, b| got.push((m.id, b.to_vec())))
            .unwrap();
        let expected: Vec<(u64, Vec<u8>)> = std::iter::once((0, b"x".to_vec()))
            .chain((0..3u8).map(|i| (i as u64 + 1, vec![i; i as usize + 1])))
            .collect();
        assert_eq!(got, expected);

        // Receives without waiting until the queue says empty: each message, or `Err(())`
        // for a dropped one. Positions given up are skipped on the way, at once (not after a
        // liveness check, which a handle makes at most once a millisecond): the queue is
        // empty afterwards.
        let drain = || {
            let mut seen = Vec::new();
            loop {
                match q.recv_in_place(Some(Duration::ZERO), |_, b| b.to_vec()) {
                    Ok(m) => seen.push(Ok(m)),
                    Err(Error::CorruptedData(_)) => seen.push(Err(())),
                    Err(Error::QueueEmpty) => {
                        assert!(q.is_empty(), "spsc {spsc}: {} left", q.len());
                        return seen;
                    }
                    Err(e) => panic!("receive: {e}"),
                }
            }
        };
        // A length beyond the message size for message 1: message 0 is sent, message 1's
        // slot is poisoned, and no fill runs after it. A multi-producer queue claimed the
        // positions of messages 2 and 3 with message 1's (a run, as far as the four slots
        // go): they are given up, and receivers skip them without reporting anything.
        let mut calls = 0;
        let r = q.send_batch_in_place(5, None, |i, slot| {
            calls += 1;
            slot[0] = b'a' + i as u8;
            if i == 1 {
                17
            } else {
                1
            }
        });
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("messages 0..1 were sent"), "{m}"),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(calls, 2);
        assert_eq!(drain(), vec![Ok(b"a".to_vec()), Err(())], "spsc {spsc}");
        assert_eq!(q.stats().abandoned, 2 * u64::from(!spsc), "spsc {spsc}");
        // A panic in message 1's fill: message 0 is sent, message 1's slot is poisoned (and
        // message 2's position given up), and on a single-producer queue the side is
        // unlocked again.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            q.send_batch_in_place(3, None, |i, slot| {
                assert_eq!(i, 0, "writer fails");
                slot[0] = b'p';
                1
            })
        }));
        assert!(r.is_err());
        assert_eq!(drain(), vec![Ok(b"p".to_vec()), Err(())], "spsc {spsc}");
        let stats = q.stats();
        assert_eq!(stats.corrupted, 2);
        assert_eq!(stats.abandoned, 3 * u64::from(!spsc), "spsc {spsc}");
        // A poisoned slot takes a position like a message (counted as sent and received,
        // and under `corrupted`); a position given up is neither.
        assert_eq!(stats.messages_sent, 1 + 3 + 2 + 2);
        assert_eq!(stats.messages_received, 8);
        // The queue goes on: fill it again with one batch, then drain it.
        assert_eq!(
            q.send_batch_in_place(4, None, |i, s| {
                s[0] = i as u8;
                1
            })
            .unwrap(),
            4
        );
        for i in 0..4u8 {
            assert_eq!(q.recv_in_place(None, |_, b| b.to_vec()).unwrap(), [i]);
        }
        // After shutdown: Closed, fill not called.
        q.shutdown().unwrap();
        assert!(matches!(
            q.send_batch_in_place(1, None, |_, _| unreachable!("no slot after shutdown")),
            Err(Error::Closed)
        ));
    }
}

#[test]
fn writer_killed_inside_a_batch_fill_keeps_what_it_sent() {
    for spsc in [false, true] {
        let tq = TestQueue::new("zcbatchkill");
        let q = spsc_or_not(spsc).create(&tq.name, 8, 64).unwrap();
        let size = q.message_size();
        killed_inside(&tq.name, "hang_in_batch_send");
        // Messages 0 and 1 were published before the death. Message 2's position, and on a
        // multi-producer queue those of messages 3 and 4 (the run claimed after message 0),
        // are skipped, each once its owner is seen dead; a single-producer queue has the
        // sender taking the dead one's role over write message 2's position again.
        q.send_bytes(b"after").unwrap();
        let got: Vec<Vec<u8>> = (0..3)
            .map(|_| q.recv_in_place(WAIT, |_, b| b.to_vec()).unwrap())
            .collect();
        assert_eq!(
            got,
            vec![pattern(0, size), pattern(1, size), b"after".to_vec()],
            "spsc {spsc}"
        );
        let stats = q.stats();
        assert_eq!(stats.abandoned, 3 * u64::from(!spsc), "spsc {spsc}");
        assert_eq!(stats.messages_received, 3);
        assert!(q.is_empty());
    }
}

/// Sends messages `0..n` (patterns, ids their positions) with the copying send.
fn send_patterns(q: &CrossProcessQueue, n: u64) {
    for seq in 0..n {
        let id = q.send_bytes(&pattern(seq, q.message_size())).expect("send");
        assert_eq!(id, seq);
    }
}

/// Receives `n` messages one at a time (each within [`WAIT`]), checking their patterns, as
/// `(id, redelivered)` in the order they came.
fn receive_ids(q: &CrossProcessQueue, n: usize) -> Vec<(u64, bool)> {
    let size = q.message_size();
    (0..n)
        .map(|_| {
            q.recv_in_place(WAIT, |meta, bytes| {
                check_pattern(bytes, meta.id, size);
                (meta.id, meta.redelivered)
            })
            .expect("recv_in_place")
        })
        .collect()
}

/// [`receive_ids`], sorted by id (messages handed back or left by a dead receiver are found
/// by a scan of the ring, at most every 100 ms per handle, not in queue order); the queue
/// must be empty afterwards.
fn drain_ids(q: &CrossProcessQueue, n: usize) -> Vec<(u64, bool)> {
    let mut got = receive_ids(q, n);
    got.sort_unstable();
    assert!(matches!(
        q.recv_in_place(Some(Duration::ZERO), |_, _| ()),
        Err(Error::QueueEmpty)
    ));
    got
}

#[test]
fn reader_killed_inside_a_batch_leaves_its_run_to_be_redelivered() {
    for spsc in [false, true] {
        let tq = TestQueue::new("zcbatchrecvkill");
        let q = spsc_or_not(spsc).create(&tq.name, 8, 64).unwrap();
        send_patterns(&q, 4);
        killed_inside(&tq.name, "hang_in_batch_recv");
        // Message 0 was released before the death. The child held message 1, and on a
        // multi-consumer queue had claimed 2 and 3 with it (a run): all three come again,
        // flagged. A single-consumer queue claims one at a time: only message 1 is flagged.
        let got = drain_ids(&q, 3);
        let expected: Vec<(u64, bool)> = vec![(1, true), (2, !spsc), (3, !spsc)];
        assert_eq!(got, expected, "spsc {spsc}");
        assert_eq!(q.stats().redelivered, if spsc { 1 } else { 3 });
    }
}

#[test]
fn reader_panicking_in_a_batch_hands_back_the_rest_to_other_processes() {
    for spsc in [false, true] {
        let tq = TestQueue::new("zcbatchrecvpanic");
        let q = spsc_or_not(spsc).create(&tq.name, 8, 64).unwrap();
        send_patterns(&q, 4);
        // A handle of its own. Kept open on a multi-consumer queue while the child receives:
        // closed, its claims would be a dead receiver's, delivered again without any hand
        // back. Closed on a single-consumer queue, whose receiving role belongs to one handle
        // at a time.
        let mut rx = Some(CrossProcessQueue::connect(&tq.name).unwrap());
        let mut seen = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let rx = rx.as_ref().unwrap();
            rx.recv_batch_in_place(8, None, |meta, _| {
                seen.push(meta.id);
                assert_ne!(meta.id, 1, "reader fails");
            })
        }));
        assert!(r.is_err());
        assert_eq!(seen, [0, 1]);
        if spsc {
            rx = None;
        }
        // Message 1 counts as received. A multi-consumer queue had claimed 2 and 3 with it:
        // they are handed back, and another process gets them, flagged as redelivered. A
        // single-consumer queue had not claimed them: they come as usual.
        let mut kids = Children(vec![spawn_role(
            "child",
            "recv_report",
            &[("Q", tq.name.clone()), ("COUNT", "2".to_string())],
        )]);
        let flag = u8::from(!spsc);
        assert_eq!(
            finish(&mut kids.0[0]),
            format!("got 2:{flag} 3:{flag}"),
            "spsc {spsc}"
        );
        drop(rx);
        let stats = q.stats();
        assert_eq!(stats.redelivered, 2 * u64::from(!spsc), "spsc {spsc}");
        assert_eq!(stats.messages_received, 4, "spsc {spsc}");
        assert!(q.is_empty());
        // The queue goes on, every slot usable.
        for seq in 0..8u8 {
            q.send_bytes(&[seq]).unwrap();
        }
        let mut n = 0u8;
        q.recv_batch_in_place(8, None, |_, b| {
            assert_eq!(b, [n]);
            n += 1;
        })
        .unwrap();
        assert_eq!(n, 8);
    }
}

#[test]
fn a_corrupted_message_ends_a_batch_after_the_rest_of_its_run() {
    for spsc in [false, true] {
        let tq = TestQueue::new("zcbatchrecvbad");
        let q = spsc_or_not(spsc).create(&tq.name, 8, 16).unwrap();
        q.send_bytes(b"a").unwrap();
        // A writer that claims too many bytes: its slot is published poisoned.
        assert!(matches!(
            q.send_in_place(None, |_| 17),
            Err(Error::InvalidArgument(_))
        ));
        q.send_bytes(b"c").unwrap();
        let mut seen = Vec::new();
        let r = q.recv_batch_in_place(8, None, |_, b| seen.push(b.to_vec()));
        assert!(matches!(r, Err(Error::CorruptedData(_))), "{r:?}");
        // A multi-consumer queue claimed "c" in the run that held the poisoned message, and
        // the batch reads it before it ends; a single-consumer queue leaves it queued.
        if spsc {
            assert_eq!(seen, [b"a".to_vec()]);
            assert_eq!(q.recv_in_place(None, |_, b| b.to_vec()).unwrap(), b"c");
        } else {
            assert_eq!(seen, [b"a".to_vec(), b"c".to_vec()]);
        }
        assert!(q.is_empty(), "spsc {spsc}");
        let stats = q.stats();
        assert_eq!(stats.corrupted, 1, "spsc {spsc}");
        assert_eq!(stats.redelivered, 0, "spsc {spsc}");
    }
}
