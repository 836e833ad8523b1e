//! Hostile and bad input through the Rust API: every case ends in a clear error, nothing
//! crashes, nothing hangs, nothing is lost.
//!
//! * arguments: names, capacities, message sizes, oversize messages, undersized buffers;
//! * segments that are not ours, truncated, of another version, half-built, inconsistent;
//! * a live segment scribbled over while receivers and senders run (in child processes, so
//!   a crash would show as a failed child);
//! * permissions (a child running as `nobody` is refused), stale segments.
//!
//! (Non-UTF-8 names and NULL pointers only exist across the C ABI: see tests/c_abi.rs.)

mod common;

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{xorshift, TestQueue, ROLE_ENV};
use shmq::layout::{self, Claim, Role, HEADER_SIZE, SLOT_HEADER_SIZE};
use shmq::{CrossProcessQueue, Error, Message, OpenMode};

fn shm_path(name: &str) -> String {
    format!("/dev/shm/shmq.{name}")
}

/// Writes `bytes` at `offset` of a queue's segment file (what a hostile process could do).
fn poke(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn peek_u64(name: &str, offset: u64) -> u64 {
    let f = OpenOptions::new().read(true).open(shm_path(name)).unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

fn assert_invalid<T: std::fmt::Debug>(r: shmq::Result<T>, what: &str) {
    match r {
        Err(Error::InvalidArgument(m)) => assert!(!m.is_empty(), "{what}: empty message"),
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

// ----- arguments ----------------------------------------------------------------------------

#[test]
fn bad_names_are_refused_everywhere() {
    let long = "a".repeat(shmq::MAX_NAME_LEN + 1);
    for name in [
        "",
        long.as_str(),
        "a/b",
        "/abs",
        "..",
        ".hidden",
        "nul\0byte",
        "spa ce",
        "caf\u{e9}",
        "tab\t",
    ] {
        assert_invalid(CrossProcessQueue::create(name, 4, 64), "create");
        assert_invalid(CrossProcessQueue::connect(name), "connect");
        assert_invalid(CrossProcessQueue::unlink(name), "unlink");
    }
    // The longest allowed name works.
    let q = TestQueue::new("x");
    let name = format!(
        "{}{}",
        q.name,
        "n".repeat(shmq::MAX_NAME_LEN - q.name.len())
    );
    let made = CrossProcessQueue::create(&name, 1, 1).expect("200-byte name");
    drop(made);
    CrossProcessQueue::unlink(&name).unwrap();
}

#[test]
fn absurd_geometry_is_refused_and_leaves_nothing() {
    let q = TestQueue::new("geometry");
    for (cap, size) in [
        (0, 64),
        (4, 0),
        (usize::MAX, 64),
        (4, usize::MAX),
        (1 << 31, 64),
        (4, (1 << 30) + 1),
        (u32::MAX as usize + 1, 1),
    ] {
        assert_invalid(CrossProcessQueue::create(&q.name, cap, size), "geometry");
    }
    // Representable but far more memory than the machine has: a clear creation error, and
    // no half-made segment left behind.
    match CrossProcessQueue::create(&q.name, 1 << 30, 1 << 30) {
        Err(Error::CreationFailed { source, .. }) => {
            assert!(!source.to_string().is_empty())
        }
        other => panic!("expected CreationFailed, got {other:?}"),
    }
    assert!(matches!(
        CrossProcessQueue::connect(&q.name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn oversize_messages_and_small_buffers() {
    let q = TestQueue::new("sizes");
    let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    match h.send(&Message::new(1, vec![7u8; 65])) {
        Err(Error::MessageTooLarge { len: 65, max: 64 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(h.len(), 0, "a refused message must not be enqueued");
    h.send(&Message::new(2, vec![9u8; 64])).unwrap();
    let mut small = [0u8; 10];
    match h.receive_into(&mut small) {
        Err(Error::BufferTooSmall {
            needed: 64,
            got: 10,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(h.len(), 1, "nothing is dequeued by a failed receive");
    let mut empty: [u8; 0] = [];
    assert!(matches!(
        h.receive_into(&mut empty),
        Err(Error::BufferTooSmall { .. })
    ));
    let m = h.receive().unwrap().unwrap();
    assert_eq!((m.id, m.data.len()), (2, 64));
    // A zero-length message is fine, even into an empty buffer.
    h.send(&Message::new(3, Vec::new())).unwrap();
    let got = h.receive_into(&mut empty).unwrap().unwrap();
    assert_eq!((got.id, got.len), (3, 0));
}

// ----- segments that are not (valid) queues -------------------------------------------------

/// Creates a real queue, drops the handle (the segment stays), returns the name guard.
fn made_queue(tag: &str) -> TestQueue {
    let q = TestQueue::new(tag);
    let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    h.send(&Message::new(1, "x")).unwrap();
    q
}

fn expect_corrupt(name: &str, what: &str) -> String {
    match CrossProcessQueue::connect(name) {
        Err(Error::CorruptedData(m)) => {
            assert!(
                m.contains(name),
                "{what}: message should name the queue: {m}"
            );
            m
        }
        other => panic!("{what}: expected CorruptedData, got {other:?}"),
    }
}

#[test]
fn foreign_segments_are_refused() {
    // Random bytes of a plausible size.
    let q = TestQueue::new("foreign");
    let mut junk = vec![0u8; 3 * HEADER_SIZE];
    let mut rnd = xorshift(0x9e37_79b9_7f4a_7c15);
    for b in &mut junk {
        *b = rnd() as u8;
    }
    std::fs::write(shm_path(&q.name), &junk).unwrap();
    let m = expect_corrupt(&q.name, "random bytes");
    assert!(m.contains("not an shmq queue"), "{m}");
    assert!(!CrossProcessQueue::list().unwrap().contains(&q.name));

    // Empty file: smaller than a header (connect waits briefly for a creator, then gives up).
    let q = TestQueue::new("empty");
    std::fs::write(shm_path(&q.name), b"").unwrap();
    let m = expect_corrupt(&q.name, "empty");
    assert!(m.contains("smaller than a queue header"), "{m}");

    // A text file.
    let q = TestQueue::new("text");
    std::fs::write(shm_path(&q.name), "hello, I am not a queue\n".repeat(400)).unwrap();
    expect_corrupt(&q.name, "text");
}

#[test]
fn half_built_segment_is_refused() {
    // The creator died after sizing the segment but before publishing the magic.
    let q = made_queue("half");
    poke(&q.name, 0, &0u64.to_le_bytes());
    let started = Instant::now();
    let m = expect_corrupt(&q.name, "half-built");
    assert!(m.contains("never finished"), "{m}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "connect must give up"
    );
}

#[test]
fn wrong_magic_and_version_are_refused() {
    let q = made_queue("magic");
    poke(&q.name, 0, b"SHMQRINH");
    let m = expect_corrupt(&q.name, "magic");
    assert!(m.contains("not an shmq queue"), "{m}");

    let q = made_queue("version");
    poke(
        &q.name,
        8,
        &(shmq::layout::LAYOUT_VERSION + 1).to_le_bytes(),
    );
    match CrossProcessQueue::connect(&q.name) {
        Err(Error::IncompatibleVersion { found, expected }) => {
            assert_eq!(found, expected + 1)
        }
        other => panic!("expected IncompatibleVersion, got {other:?}"),
    }
}

#[test]
fn inconsistent_headers_are_refused() {
    // (offset, value, what the error mentions)
    let cases: [(u64, u32, &str); 6] = [
        (12, 1024, "header size"),
        (16, 0, "capacity"),
        (20, 0, "message size"),
        (24, 4096, "stride"),
        (28, 0x80, "flags"),
        (16, 1 << 20, "recorded size"), // capacity no longer matches the recorded size
    ];
    for (offset, value, needle) in cases {
        let q = made_queue("inconsistent");
        poke(&q.name, offset, &value.to_le_bytes());
        let m = expect_corrupt(&q.name, needle);
        assert!(m.contains(needle), "{needle}: {m}");
    }
}

#[test]
fn truncated_segment_is_refused() {
    let q = made_queue("truncated");
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&q.name))
        .unwrap();
    f.set_len(HEADER_SIZE as u64 + 100).unwrap();
    let m = expect_corrupt(&q.name, "truncated");
    assert!(m.contains("truncated"), "{m}");
}

// ----- a live segment scribbled over --------------------------------------------------------

/// Head, tail and every slot's header words, for the message of a failed check.
fn ring_state(name: &str, capacity: u64) -> String {
    let mut out = format!(
        "tail {:#x} head {:#x}\n",
        peek_u64(name, 128),
        peek_u64(name, 256)
    );
    for i in 0..capacity {
        let slot = slot_offset(i);
        let words: Vec<String> = (0..8)
            .map(|w| format!("{:#x}", peek_u64(name, slot + 8 * w)))
            .collect();
        out += &format!("slot {i}: {}\n", words.join(" "));
    }
    out
}

/// Offset of slot `i`'s header in a queue of message size 64 (stride 128).
fn slot_offset(i: u64) -> u64 {
    layout::slot_header_offset(i as u32, 64).unwrap() as u64
}

/// Offset of slot `i`'s payload in a queue of message size 64.
fn payload_offset(i: u64) -> u64 {
    layout::payload_offset(i as u32, 64).unwrap() as u64
}

#[test]
fn corrupted_message_header_is_reported_and_skipped() {
    let q = TestQueue::new("badlen");
    let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    for id in 1..=3 {
        h.send(&Message::new(id, vec![id as u8; 32])).unwrap();
    }
    // Slot 0: a length beyond the slot. Slot 1: a payload byte flipped (checksum).
    poke(&q.name, slot_offset(0) + 32, &u32::MAX.to_le_bytes());
    poke(&q.name, payload_offset(1), &[0xee]);
    let mut buf = [0u8; 64];
    let first = h.receive_into(&mut buf);
    assert!(matches!(first, Err(Error::CorruptedData(_))), "{first:?}");
    let second = h.receive_into(&mut buf);
    assert!(matches!(second, Err(Error::CorruptedData(_))), "{second:?}");
    let third = h.receive().unwrap().unwrap();
    assert_eq!(third.id, 3);
    let stats = h.stats();
    assert_eq!(
        (stats.corrupted, stats.checksum_failures),
        (1, 1),
        "{stats:?}"
    );
    // The queue goes on.
    h.send(&Message::new(4, "after")).unwrap();
    assert_eq!(h.receive().unwrap().unwrap().id, 4);
}

/// A receive batch on the default queue claims the messages after its first in runs (one
/// head move for several): one that fails its checksum inside a run is dropped, and the
/// others the batch had claimed are still received, since the head is past them and nobody
/// else would. Received in another process, the bytes flipped through the segment's file.
#[test]
fn a_corrupt_message_inside_a_receive_run_costs_only_itself() {
    let q = TestQueue::new("runbad");
    let h = CrossProcessQueue::create(&q.name, 8, 64).unwrap();
    for id in 1..=6 {
        h.send(&Message::new(id, vec![id as u8; 32])).unwrap();
    }
    // Message 3 (slot 2): a payload byte flipped.
    poke(&q.name, payload_offset(2), &[0xee]);
    let out = wait_output(
        spawn_child(&q.name, "batch_of_8", 0),
        Duration::from_secs(60),
    );
    assert_eq!(
        child_reports(&out),
        ["CORRUPT", "IDS [1, 2, 4, 5, 6]"],
        "{out}"
    );
    let stats = h.stats();
    assert_eq!(
        (stats.checksum_failures, stats.bytes_received, stats.depth),
        (1, 5 * 32, 0),
        "{stats:?}"
    );
    // The queue goes on.
    h.send(&Message::new(7, "after")).unwrap();
    assert_eq!(h.receive().unwrap().unwrap().id, 7);
}

#[test]
fn impossible_sequence_numbers_are_skipped_not_waited_on() {
    let q = TestQueue::new("badseq");
    let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    for id in 1..=2 {
        h.send(&Message::new(id, "m")).unwrap();
    }
    // Slot 0 claims to be many laps ahead.
    poke(&q.name, slot_offset(0), &1_000_001u64.to_le_bytes());
    let m = h.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!(m.id, 2, "the corrupt slot is skipped");
    assert_eq!(h.stats().corrupted, 1);
    // Producers get past the slot too.
    for id in 3..=8 {
        h.send_timeout(&Message::new(id, "m"), Duration::from_secs(10))
            .unwrap();
        assert_eq!(
            h.recv_timeout(Duration::from_secs(10)).unwrap().unwrap().id,
            id
        );
    }
}

/// A published message whose slot says it holds another position's message (hostile bytes in
/// the slot's `position`): a receiver in another process skips it, counted as corrupted, and
/// goes on to the next message, in both kinds of queue.
#[test]
fn message_of_the_wrong_position_is_skipped() {
    for spsc in [false, true] {
        let q = TestQueue::new("wrongpos");
        let h = CrossProcessQueue::options()
            .single_producer_single_consumer(spsc)
            .create(&q.name, 4, 64)
            .unwrap();
        for id in 1..=2 {
            h.send(&Message::new(id, "m")).unwrap();
        }
        poke(&q.name, slot_offset(0) + 48, &77u64.to_le_bytes());
        drop(h); // frees the single-producer queue's roles for the child and for `tx`
        let reader = spawn_child_with(&q.name, "replay_reader", 0, &[("LAST", "3".into())]);
        let tx = CrossProcessQueue::connect(&q.name).unwrap();
        tx.send(&Message::new(3, "after")).unwrap();
        let out = wait_output(reader, Duration::from_secs(60));
        assert_eq!(
            child_reports(&out),
            ["GOT 2", "GOT 3"],
            "spsc {spsc}: the slot of position 0 is skipped"
        );
        assert_eq!(tx.stats().corrupted, 1, "spsc {spsc}");
    }
}

/// A consumed slot whose sequence word is rewritten to say "published" for the position a
/// lap later still holds its old message, checksum and all. Taken, that message would be
/// delivered a second time, and a multi-producer ring would move its head past its tail:
/// the producer of that position then published into a slot nobody reads, and the ring
/// stopped a lap later. The slot records the position of its message, so a receiver sees
/// there is nothing to take yet, and the producer overwrites the slot when it gets there.
#[test]
fn replayed_slot_is_not_delivered_again() {
    for spsc in [false, true] {
        for checksum in [true, false] {
            let what = format!("spsc {spsc}, checksum {checksum}");
            let q = TestQueue::new("replay");
            let h = CrossProcessQueue::options()
                .single_producer_single_consumer(spsc)
                .checksum(checksum)
                .create(&q.name, 4, 64)
                .unwrap();
            for id in 1..=4 {
                h.send(&Message::new(id, "m")).unwrap();
            }
            for id in 1..=4 {
                assert_eq!(h.receive().unwrap().unwrap().id, id, "{what}");
            }
            // Slot 0 held position 0; "published for position 4" is 2 * 4 + 1.
            poke(&q.name, slot_offset(0), &9u64.to_le_bytes());
            drop(h); // frees the single-producer queue's roles for the child and for `tx`
            let reader = spawn_child_with(&q.name, "replay_reader", 0, &[("LAST", "12".into())]);
            // The reader looks at the rewritten slot before anything is sent (a slower start
            // only makes this run test less: it cannot make it fail).
            std::thread::sleep(Duration::from_millis(300));
            let tx = CrossProcessQueue::connect(&q.name).unwrap();
            // Two laps more: the ring must not stop at position 8.
            for id in 5..=12 {
                tx.send_timeout(&Message::new(id, "m"), Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("{what}: send {id}: {e:?}"));
            }
            let out = wait_output(reader, Duration::from_secs(60));
            let expected: Vec<String> = (5..=12).map(|id| format!("GOT {id}")).collect();
            assert_eq!(
                child_reports(&out),
                expected,
                "{what}: the receiver's results"
            );
        }
    }
}

#[test]
fn absurd_positions_do_not_crash() {
    // head/tail near the top of the range (a hostile process wrote them): no overflow panic,
    // no hang; calls end with an error or a message.
    let q = TestQueue::new("positions");
    let h = CrossProcessQueue::create(&q.name, 2, 64).unwrap();
    for (tail, head) in [
        (u64::MAX, u64::MAX),
        ((1 << 63) - 1, (1 << 63) - 1),
        (5, u64::MAX - 1),
        (u64::MAX - 1, 0),
    ] {
        poke(&q.name, 128, &tail.to_le_bytes());
        poke(&q.name, 256, &head.to_le_bytes());
        let _ = h.send_timeout(&Message::new(1, "m"), Duration::from_millis(100));
        let _ = h.recv_timeout(Duration::from_millis(100));
        let _ = h.stats();
        let _ = h.len();
    }
    // Hostile counters.
    poke(&q.name, 512, &[0xff; 80]);
    let s = h.stats();
    assert_eq!(s.abandoned, u64::MAX);
}

/// A single-producer queue's sender publishes a message before it moves the tail past it, so
/// a sender killed in between (or inside a batch) leaves the tail behind messages the
/// receiver has already taken, until another sender takes over (seen at the end of a kill
/// storm: 475 966 sent, 475 968 received). The statistics must not count fewer sends than
/// receives meanwhile.
#[test]
fn a_tail_left_behind_the_head_does_not_undercount_sends() {
    let q = TestQueue::new("behindtail");
    let h = CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&q.name, 8, 64)
        .unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        h.send_bytes(b"m").unwrap();
        assert!(h
            .recv_into(&mut buf, Some(Duration::ZERO))
            .unwrap()
            .is_some());
    }
    // What a sender killed after publishing positions 1 and 2 of a batch leaves.
    poke(&q.name, 128, &1u64.to_le_bytes());
    let s = h.stats();
    assert_eq!(
        (s.messages_sent, s.messages_received, s.depth),
        (3, 3, 0),
        "{s:?}"
    );
}

/// A tail rewritten far ahead of the head says that every position in between was claimed,
/// while no slot shows a claim: a receive skips such positions as corrupt, but a lap's worth
/// per call at most (this one used to skip for ever, inside one non-blocking call). Run in
/// a child process, so that a receive that never returns fails the test instead of hanging it.
#[test]
fn tail_far_ahead_does_not_trap_a_receive() {
    let q = TestQueue::new("fartail");
    let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    h.send(&Message::new(1, "m")).unwrap();
    assert_eq!(h.receive().unwrap().unwrap().id, 1);
    poke(&q.name, 128, &(1u64 << 40).to_le_bytes());
    let child = spawn_child(&q.name, "far_tail_receiver", 0);
    let out = wait_output(child, Duration::from_secs(60));
    assert!(out.contains("@@RETURNED"), "{out}");
}

/// Entry point of child processes (ignored: runs only when a test spawns it).
#[test]
#[ignore]
fn hostile_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var("Q").unwrap();
    match role.as_str() {
        "connect" => match CrossProcessQueue::connect(&name) {
            Err(Error::PermissionDenied { name: n, source }) => {
                assert_eq!(n, name);
                println!("@@PERMISSION_DENIED {source}");
            }
            other => println!("@@UNEXPECTED {other:?}"),
        },
        "reader" | "writer" => {
            let ms: u64 = std::env::var("RUN_MS").unwrap().parse().unwrap();
            let q = CrossProcessQueue::connect(&name).unwrap();
            let end = Instant::now() + Duration::from_millis(ms);
            let size = q.message_size();
            let mut buf = vec![0u8; 4 * size];
            let mut metas = Vec::with_capacity(4);
            let mut counts = std::collections::BTreeMap::<&str, u64>::new();
            let mut id = 0u64;
            let wait = Some(Duration::from_millis(20));
            while Instant::now() < end {
                // Each form in turn: one message, a copying batch, a zero-copy batch.
                id += 1;
                let r = match (role == "reader", id % 3) {
                    (true, 0) => q.recv_with(&mut buf[..size], wait).map(drop),
                    (true, 1) => q.recv_batch(&mut buf, &mut metas, wait).map(drop),
                    (true, _) => q.recv_batch_in_place(4, wait, |_, _| {}).map(drop),
                    (false, 0) => q.send_with(Some(id), 0, &[1u8; 40], wait).map(drop),
                    (false, 1) => q.send_batch(&[[1u8; 40]; 3], wait).map(drop),
                    (false, _) => q
                        .send_batch_in_place(3, wait, |_, slot| {
                            slot[..40].fill(1);
                            40
                        })
                        .map(drop),
                };
                let kind = match r {
                    Ok(()) => "ok",
                    Err(Error::CorruptedData(_)) => "corrupted",
                    Err(Error::Timeout) => "timeout",
                    Err(Error::QueueEmpty) => "empty",
                    Err(Error::QueueFull) => "full",
                    Err(Error::Closed) => "closed",
                    Err(e) => panic!("unexpected error under corruption: {e:?}"),
                };
                *counts.entry(kind).or_default() += 1;
            }
            println!("@@DONE {role} {counts:?}");
        }
        "exact_reader" | "exact_writer" => {
            let ms: u64 = std::env::var("RUN_MS").unwrap().parse().unwrap();
            let q = CrossProcessQueue::connect(&name).unwrap();
            let end = Instant::now() + Duration::from_millis(ms);
            let mut buf = vec![0u8; q.message_size()];
            let (mut ok, mut corrupted, mut mismatched) = (0u64, 0u64, 0u64);
            let mut id = 0u64;
            while Instant::now() < end {
                if role == "exact_writer" {
                    id += 1;
                    let payload = exact_payload(id, q.message_size());
                    match q.send_with(Some(id), 0, &payload, Some(Duration::from_millis(20))) {
                        Ok(_) | Err(Error::Timeout) => {}
                        Err(e) => panic!("send: {e:?}"),
                    }
                    continue;
                }
                match q.recv_with(&mut buf, Some(Duration::from_millis(20))) {
                    Ok(meta) => {
                        ok += 1;
                        // The id is covered by the checksum too: a message that passed is
                        // the writer's message `meta.id`, byte for byte, or the check failed.
                        if buf[..meta.len] != exact_payload(meta.id, buf.len())[..] {
                            mismatched += 1;
                        }
                    }
                    Err(Error::CorruptedData(_)) => corrupted += 1,
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("receive: {e:?}"),
                }
            }
            if role == "exact_reader" {
                println!("@@EXACT {ok} {corrupted} {mismatched}");
            }
        }
        "far_tail_receiver" => {
            let q = CrossProcessQueue::connect(&name).unwrap();
            let mut buf = [0u8; 64];
            // Whatever they report (nothing to take, corrupt slots), they must return.
            for _ in 0..4 {
                let _ = q.receive_into(&mut buf);
                let _ = q.recv_with(&mut buf, Some(Duration::from_millis(50)));
            }
            println!("@@RETURNED corrupted {}", q.stats().corrupted);
        }
        "replay_reader" => {
            // Receives until message `LAST` or a quiet spell, printing what it got.
            let last: u64 = std::env::var("LAST").unwrap().parse().unwrap();
            let q = CrossProcessQueue::connect(&name).unwrap();
            loop {
                match q.recv_timeout(Duration::from_secs(5)) {
                    Ok(Some(m)) => {
                        println!("@@GOT {}", m.id);
                        if m.id == last {
                            break;
                        }
                    }
                    Err(Error::CorruptedData(_)) => println!("@@CORRUPT"),
                    Err(Error::Timeout) => {
                        println!("@@TIMEOUT");
                        break;
                    }
                    other => panic!("receive: {other:?}"),
                }
            }
        }
        "batch_of_8" => {
            let q = CrossProcessQueue::connect(&name).unwrap();
            let mut buf = vec![0u8; 8 * q.message_size()];
            let mut metas = Vec::with_capacity(8);
            match q.recv_batch(&mut buf, &mut metas, Some(Duration::ZERO)) {
                Err(Error::CorruptedData(_)) => println!("@@CORRUPT"),
                other => println!("@@UNEXPECTED {other:?}"),
            }
            for (i, m) in metas.iter().enumerate() {
                let bytes = &buf[i * q.message_size()..][..m.len];
                assert_eq!(bytes, &[m.id as u8; 32][..], "payload of {}", m.id);
            }
            println!("@@IDS {:?}", metas.iter().map(|m| m.id).collect::<Vec<_>>());
        }
        other => panic!("unknown role {other}"),
    }
}

/// The payload the `exact_writer` child sends as message `id`: every byte depends on both.
fn exact_payload(id: u64, size: usize) -> Vec<u8> {
    (0..size as u64)
        .map(|i| (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (i % 57)) as u8 ^ i as u8)
        .collect()
}

fn spawn_child(name: &str, role: &str, run_ms: u64) -> std::process::Child {
    spawn_child_with(name, role, run_ms, &[])
}

fn spawn_child_with(
    name: &str,
    role: &str,
    run_ms: u64,
    env: &[(&str, String)],
) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args([
            "--exact",
            "hostile_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env("Q", name)
        .env("RUN_MS", run_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// What follows the `@@` marker of each line of a child's output that has one, in order.
fn child_reports(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_once("@@").map(|(_, r)| r))
        .collect()
}

fn wait_output(mut child: std::process::Child, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            assert!(status.success(), "child failed ({status}):\n{out}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child hung (killed after {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn scribbling_a_live_segment_never_crashes_or_hangs_peers() {
    let q = TestQueue::new("scribble");
    let capacity = 8u64;
    let h = CrossProcessQueue::create(&q.name, capacity as usize, 64).unwrap();
    let run_ms = 2500;
    let children: Vec<_> = ["reader", "reader", "writer", "writer"]
        .iter()
        .map(|role| spawn_child(&q.name, role, run_ms))
        .collect();
    let size = HEADER_SIZE as u64 + capacity * 128;
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&q.name))
        .unwrap();
    let mut rnd = xorshift(std::process::id().into());
    let end = Instant::now() + Duration::from_millis(run_ms - 500);
    let mut writes = 0;
    while Instant::now() < end {
        // Random bytes anywhere past the identity line, or a targeted hostile value in a
        // slot header (sequence numbers near the live positions, huge lengths, claims).
        let r = rnd();
        if r % 50 == 0 {
            // Random bytes in the header past the identity line (positions, futex words,
            // counters, participants), sparing the top byte of `tail`: a hostile close is
            // legitimate and would only end the test early.
            let offset = 128 + rnd() % (HEADER_SIZE as u64 - 128 - 8);
            let len = 1 + (r as usize >> 8) % 8;
            if !(offset..offset + len as u64).contains(&135) {
                f.write_all_at(&rnd().to_le_bytes()[..len], offset).unwrap();
            }
        } else if r % 3 == 0 {
            let offset = HEADER_SIZE as u64 + rnd() % (size - HEADER_SIZE as u64 - 8);
            f.write_all_at(&rnd().to_le_bytes()[..1 + (r as usize >> 8) % 8], offset)
                .unwrap();
        } else {
            let slot = slot_offset(rnd() % capacity);
            let tail = peek_u64(&q.name, 128) & !(1 << 63);
            let (field, value) = match r % 5 {
                0 => (0, 2 * tail + rnd() % 5),
                1 => (0, (2 * tail).wrapping_sub(rnd() % 40)),
                2 => (32, rnd() | 0x100),
                3 => (8, rnd()),
                _ => (16, rnd()),
            };
            f.write_all_at(&value.to_le_bytes(), slot + field).unwrap();
        }
        writes += 1;
        if writes % 16 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    // Header junk can make `stats` absurd, never make it panic.
    let _ = h.stats();
    let mut outputs = Vec::new();
    for c in children {
        outputs.push(wait_output(c, Duration::from_secs(60)));
    }
    let summary: Vec<&str> = outputs.iter().flat_map(|o| child_reports(o)).collect();
    println!("{writes} hostile writes; children: {summary:?}");
    assert_eq!(summary.len(), 4, "{outputs:?}");
}

/// Hostile bytes in the slots of a live queue (sequence words near the live positions, claim
/// words, lengths, ids, anything) while two processes send and receive: once the writes stop,
/// the queue must carry messages again, every one of them. A sequence word left in a state no
/// lap produces, a slot whose position nobody claimed: each used to stop a multi-producer ring
/// for good within a few dozen messages (every later send and receive timed out).
#[test]
fn queue_recovers_once_slot_scribbling_stops() {
    for spsc in [false, true] {
        let q = TestQueue::new("recover");
        let capacity = 8u64;
        let h = CrossProcessQueue::options()
            .single_producer_single_consumer(spsc)
            .create(&q.name, capacity as usize, 64)
            .unwrap();
        let run_ms = 1500;
        let roles: &[&str] = if spsc {
            &["reader", "writer"]
        } else {
            &["reader", "reader", "writer", "writer"]
        };
        let children: Vec<_> = roles
            .iter()
            .map(|role| spawn_child(&q.name, role, run_ms))
            .collect();
        let f = OpenOptions::new()
            .write(true)
            .open(shm_path(&q.name))
            .unwrap();
        let mut rnd = xorshift(std::process::id() as u64 * 2 + u64::from(spsc));
        let end = Instant::now() + Duration::from_millis(run_ms - 500);
        let mut writes = 0u64;
        while Instant::now() < end {
            let r = rnd();
            let index = rnd() % capacity;
            let slot = slot_offset(index);
            let tail = peek_u64(&q.name, 128) & !(1 << 63);
            // A position near the tail, for words that name one (claims, positions).
            let near = tail.wrapping_sub(rnd() % (2 * capacity));
            let (offset, value) = match r % 8 {
                0 => (slot, 2 * tail + rnd() % 5),
                1 => (slot, (2 * tail).wrapping_sub(rnd() % 40)),
                2 => (slot + 8, rnd()),
                3 => (slot + 32, rnd() | 0x100),
                4 => (slot + 16, rnd()),
                // A claim that could be real: a nearby lap, either role, and an owner among
                // the participant ids of this phase (nobody 0, the creator 1, the children
                // 2..): all dead once it ends. Not the next ids, which the replay's reader
                // and sender get: a claim naming a live receiver that does not hold the
                // slot is one no repair may take (the receiver might be about to read it),
                // so the replay would wait for ever (seen once in some thirty runs).
                5 => {
                    let claim = Claim {
                        lap: (near / capacity) as u32,
                        role: if rnd() % 2 == 0 {
                            Role::Producer
                        } else {
                            Role::Consumer
                        },
                        owner: (rnd() % (roles.len() as u64 + 2)) as u32,
                    };
                    (slot + 8, claim.encode())
                }
                6 => (slot + 48, near),
                // Anywhere in the slot: payload, then header.
                _ => (
                    payload_offset(index) + rnd() % (64 + SLOT_HEADER_SIZE as u64 - 8),
                    rnd(),
                ),
            };
            f.write_all_at(&value.to_le_bytes(), offset).unwrap();
            writes += 1;
            if writes % 16 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for c in children {
            wait_output(c, Duration::from_secs(60));
        }
        drop(h); // frees the single-producer queue's roles

        // Ids no writer child reached, after whatever the scribbling left (messages, corrupt
        // slots), which the reader drains first.
        let first = 1u64 << 40;
        let rx = spawn_child_with(
            &q.name,
            "replay_reader",
            0,
            &[("LAST", (first + 199).to_string())],
        );
        let tx = CrossProcessQueue::connect(&q.name).unwrap();
        for id in first..first + 200 {
            tx.send_timeout(&Message::new(id, "m"), Duration::from_secs(10))
                .unwrap_or_else(|e| {
                    panic!(
                        "spsc {spsc}, after {writes} writes: send {id}: {e:?}\n{}",
                        ring_state(&q.name, capacity)
                    )
                });
        }
        let out = wait_output(rx, Duration::from_secs(60));
        let got: Vec<u64> = out
            .lines()
            .filter_map(|l| l.split_once("@@GOT ").map(|(_, id)| id.parse().unwrap()))
            .filter(|&id| id >= first)
            .collect();
        assert_eq!(
            got,
            (first..first + 200).collect::<Vec<u64>>(),
            "spsc {spsc}, after {writes} writes: the messages sent once the writes stopped"
        );
    }
}

/// A process rewriting payload bytes of a live queue while messages are copied out of it: a
/// receive either returns the bytes the sender sent, exactly, or reports `CorruptedData`.
/// The checksum is computed from the same loads that fill the receiver's buffer, so a byte
/// changed between the check and the copy cannot slip through (4 KiB messages, so that a
/// copy takes long enough for rewrites to land in the middle of some).
#[test]
fn payload_rewritten_during_receives_is_delivered_exactly_or_reported() {
    let q = TestQueue::new("exact");
    let (capacity, size) = (16u64, 4096u64);
    let _h = CrossProcessQueue::create(&q.name, capacity as usize, size as usize).unwrap();
    let run_ms = 2000;
    let reader = spawn_child(&q.name, "exact_reader", run_ms);
    let writer = spawn_child(&q.name, "exact_writer", run_ms);
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(&q.name))
        .unwrap();
    let mut rnd = xorshift(std::process::id().into());
    let end = Instant::now() + Duration::from_millis(run_ms - 300);
    let mut writes = 0u64;
    while Instant::now() < end {
        let x = rnd();
        // One byte somewhere in some slot's payload (a rewrite that happens to write the
        // byte already there changes nothing).
        let payload = layout::payload_offset((x % capacity) as u32, size as u32).unwrap() as u64;
        let offset = payload + (x >> 8) % size;
        f.write_all_at(&[(x >> 40) as u8 | 1], offset).unwrap();
        writes += 1;
        if writes % 64 == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let out = wait_output(reader, Duration::from_secs(60));
    wait_output(writer, Duration::from_secs(60));
    let counts: Vec<u64> = out
        .lines()
        .find_map(|l| l.split_once("@@EXACT "))
        .map(|(_, r)| r.split(' ').map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("no summary from the reader: {out}"));
    let (ok, corrupted, mismatched) = (counts[0], counts[1], counts[2]);
    println!("{writes} rewrites; {ok} delivered, {corrupted} reported corrupted");
    assert_eq!(
        mismatched, 0,
        "{mismatched} of {ok} delivered messages differ from those sent"
    );
    assert!(
        ok > 0 && corrupted > 0,
        "the rewrites must hit some messages and spare others: \
         {ok} delivered, {corrupted} corrupted"
    );
}

// ----- permissions and stale segments -------------------------------------------------------

#[test]
fn mode_is_exact_and_other_users_are_refused() {
    let q = TestQueue::new("perm");
    let _h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
    let mode = std::fs::metadata(shm_path(&q.name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "default mode");
    let q2 = TestQueue::new("perm640");
    let _h2 = CrossProcessQueue::options()
        .mode(0o640)
        .create(&q2.name, 4, 64)
        .unwrap();
    let mode = std::fs::metadata(shm_path(&q2.name))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640, "explicit mode, whatever the umask");

    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        println!("not root: cannot run a child as another user; permission check skipped");
        return;
    }
    // Run a copy of this test binary as `nobody` (the original may sit in a directory
    // nobody cannot reach).
    let copy = std::env::temp_dir().join(format!("shmq-hostile-{}", std::process::id()));
    std::fs::copy(std::env::current_exe().unwrap(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    struct Remove(std::path::PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _cleanup = Remove(copy.clone());
    let mut cmd = Command::new(&copy);
    cmd.args([
        "--exact",
        "hostile_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, "connect")
    .env("Q", &q.name)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    // SAFETY: the closure only calls async-signal-safe functions (setgroups, setgid,
    // setuid) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(65534) != 0
                || libc::setuid(65534) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Another test's fork, between our copy's write and our exec, may briefly hold the
    // copy open for writing (inherited until that child's exec closes it): exec then fails
    // with ETXTBSY. Retry for a while.
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other.unwrap(),
        }
    };
    let out = wait_output(child, Duration::from_secs(60));
    assert!(
        out.contains("@@PERMISSION_DENIED"),
        "a 0600 queue of root opened by nobody: {out}"
    );
}

#[test]
fn stale_segment_is_reported_and_replaceable() {
    let q = TestQueue::new("stale");
    {
        // A run that "crashed": its handle is gone, the segment stays.
        let h = CrossProcessQueue::create(&q.name, 4, 64).unwrap();
        h.send(&Message::new(1, "old")).unwrap();
    }
    assert!(
        CrossProcessQueue::list().unwrap().contains(&q.name),
        "findable"
    );
    match CrossProcessQueue::create(&q.name, 4, 64) {
        Err(e @ Error::AlreadyExists { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&q.name), "{text}");
            assert!(
                text.contains("replace") && text.contains("rm"),
                "hint: {text}"
            );
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // Open-or-create with another geometry is refused, not silently reused.
    assert_invalid(
        CrossProcessQueue::options()
            .open_mode(OpenMode::OpenOrCreate)
            .create(&q.name, 8, 64),
        "geometry mismatch",
    );
    let fresh = CrossProcessQueue::options()
        .open_mode(OpenMode::Replace)
        .create(&q.name, 4, 64)
        .unwrap();
    assert_eq!(fresh.len(), 0, "replaced queue starts empty");
    fresh.send(&Message::new(2, "new")).unwrap();
    assert_eq!(fresh.receive().unwrap().unwrap().id, 2);
    // Replace also clears a segment that is not a queue at all.
    std::fs::write(shm_path(&q.name), b"garbage").unwrap();
    let again = CrossProcessQueue::options()
        .open_mode(OpenMode::Replace)
        .create(&q.name, 4, 64)
        .unwrap();
    assert_eq!(again.len(), 0);
}
