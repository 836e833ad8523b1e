//! Kill storm: producers and consumers in separate processes are SIGKILLed and restarted at
//! random while messages flow; at the end every acknowledged message was received, exactly
//! once except for redeliveries of messages whose receiver was killed while holding them,
//! and the queue drains to empty.
//!
//! * Producers send ids `incarnation << 32 | n` (one at a time, in place, or three in a
//!   batch, copied or written in place) and append `id` to their ack file only after the send returned success: an
//!   acknowledged message is one the queue promised.
//! * It runs on a multi-producer queue (two producers, two consumers) and on a
//!   single-producer/single-consumer one, where each restarted process takes over the role
//!   of the one killed before it.
//! * A third of the consumer incarnations receive with `recv_in_place`, a third with
//!   `recv_batch_in_place` (up to 4 at a time); both append `id redelivered` to their record
//!   file *inside* the closure, while the slot is still claimed. A consumer killed before the
//!   record leaves a message nobody recorded, which must be redelivered; one killed after
//!   the record but before the release leaves a message recorded once and then redelivered
//!   (flagged `redelivered`): such duplicates are counted separately and bounded by the
//!   number of consumer kills.
//! * The remaining third receive copying batches (`recv_batch`, up to 4: on the default
//!   queue these claim runs of messages with one head move) into an *inbox*, a buffer in a
//!   shared file mapping that survives the kill, cleared before each call; they record the
//!   batch after the call returns. A kill between the release (inside the call) and the
//!   record leaves messages received but unrecorded: they count as received if they are in
//!   a dead consumer's inbox. So this mode checks for losses only where the message is in
//!   no inbox either; for duplicates and wedges it checks as much as the others.
//!
//! * Every child's handle waits in one of three ways, by incarnation: the default spin, no
//!   spin (each wait sleeps at once), or a 1 ms spin (repairs made between polls).
//! * The children started in the storm's second half cannot call `membarrier` (a seccomp
//!   filter, `common::deny_membarrier`, where the kernel allows one): the first of them
//!   turns the queue to real fences (`QueueInfo::real_fences`), and the rest of the storm
//!   runs its kills, repairs and role takeovers in that mode, among children started before
//!   it that can.
//!
//! CI runs it for 12 s. By hand: `SHMQ_STORM_SECS=300 cargo test --release --test
//! kill_storm -- --nocapture` (`SHMQ_STORM_SEED` replays a seed).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{deny_membarrier, membarrier_can_be_denied, Rng, TestQueue, ROLE_ENV};
use shmq::{CrossProcessQueue, Error};

const PRODUCERS: usize = 2;
const CONSUMERS: usize = 2;

/// The storm queue's message size.
const MESSAGE_SIZE: usize = 64;

fn payload(id: u64) -> [u8; 24] {
    let mut p = [0u8; 24];
    p[..8].copy_from_slice(&id.to_le_bytes());
    p[8..16].copy_from_slice(&(!id).to_le_bytes());
    p[16..].copy_from_slice(b"storm!!!");
    p
}

/// The id of a received message, which travels in its payload (in-place sends get their
/// position as id), after checking the whole payload against it.
fn payload_id(bytes: &[u8]) -> u64 {
    let id = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(bytes, &payload(id)[..], "payload of {id}");
    id
}

/// Messages of a copying batch receive.
const INBOX_MESSAGES: usize = 4;

/// A consumer's receive buffer in a shared mapping of its own file, so that what a copying
/// receive had copied when the consumer was killed can be read afterwards.
struct Inbox {
    base: *mut u8,
}

impl Inbox {
    const LEN: usize = INBOX_MESSAGES * MESSAGE_SIZE;

    fn create(path: &Path) -> Inbox {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create inbox");
        file.set_len(Self::LEN as u64).expect("size inbox");
        // SAFETY: a fresh shared mapping of a file of LEN bytes; the result is checked. The
        // mapping outlives the descriptor, which closes when `file` drops.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "map inbox");
        Inbox { base: base.cast() }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: LEN bytes mapped until the process ends (never unmapped), written only
        // through this borrow in this process, read by the parent only after our death.
        unsafe { std::slice::from_raw_parts_mut(self.base, Self::LEN) }
    }

    /// Zeroes the inbox, so that it shows only what the next call copies.
    fn clear(&mut self) {
        self.bytes().fill(0);
    }
}

/// The storm messages whose payloads are whole in the inbox files of `dir`.
fn read_inboxes(dir: &Path) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".inbox") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        for chunk in bytes.chunks_exact(MESSAGE_SIZE) {
            let id = u64::from_le_bytes(chunk[..8].try_into().unwrap());
            if chunk[..24] == payload(id) {
                ids.insert(id);
            }
        }
    }
    ids
}

fn append(file: &mut std::fs::File, line: &str) {
    // One write(2) of a short line to an O_APPEND file: whole or not at all.
    file.write_all(line.as_bytes()).expect("append record");
}

/// Entry point of the child processes (ignored: runs only when the storm spawns it).
#[test]
#[ignore]
fn storm_child() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var("Q").unwrap();
    let log = PathBuf::from(std::env::var("LOG").unwrap());
    let incarnation: u64 = std::env::var("INCARNATION").unwrap().parse().unwrap();
    if std::env::var_os("NO_MEMBARRIER").is_some() {
        deny_membarrier().expect("deny membarrier");
    }
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .unwrap();
    let q = CrossProcessQueue::connect(&name).expect("connect");
    // Each incarnation waits its own way: the default spin, none (every wait sleeps at
    // once), or a long one (the repairs then happen between polls, not between sleeps).
    // Not by `incarnation % 3`, which picks the consumers' receive.
    q.set_spin_limit(match incarnation / 3 % 3 {
        0 => shmq::DEFAULT_SPIN_LIMIT,
        1 => Duration::ZERO,
        _ => Duration::from_millis(1),
    });
    match role.as_str() {
        "producer" => {
            let mut n = 0u64;
            loop {
                let id = incarnation << 32 | n;
                // Every 16th turn sends three messages in one batch, copied or (another
                // 16th) written in place; every 8th message is written in place. The in-place
                // writes are slow: a kill then often lands while a slot is claimed and
                // unpublished (or, in a batch, between two messages). Every 8th message from
                // the 3rd is a gather send.
                // How many consecutive ids from `id` on were sent.
                let sent = if n % 16 == 8 {
                    let batch = [id, id + 1, id + 2].map(payload);
                    q.send_batch(&batch, Some(Duration::from_secs(1)))
                } else if n % 16 == 0 {
                    q.send_batch_in_place(3, Some(Duration::from_secs(1)), |i, slot| {
                        std::thread::sleep(Duration::from_micros(200));
                        slot[..24].copy_from_slice(&payload(id + i as u64));
                        24
                    })
                } else if n % 8 == 7 {
                    q.send_in_place(Some(Duration::from_secs(1)), |slot| {
                        std::thread::sleep(Duration::from_micros(300));
                        slot[..24].copy_from_slice(&payload(id));
                        24
                    })
                    .map(|_| 1)
                } else if n % 8 == 3 {
                    // A gather send of the payload in three parts.
                    let p = payload(id);
                    let parts: [&[u8]; 3] = [&p[..8], &p[8..16], &p[16..]];
                    q.send_parts_with(Some(id), 0, &parts, Some(Duration::from_secs(1)))
                        .map(|_| 1)
                } else {
                    q.send_with(Some(id), 0, &payload(id), Some(Duration::from_secs(1)))
                        .map(|_| 1)
                };
                match sent {
                    Ok(k) => {
                        let lines: String =
                            (id..id + k as u64).map(|id| format!("{id}\n")).collect();
                        append(&mut file, &lines);
                        n += k as u64;
                    }
                    Err(Error::Timeout) => {}
                    Err(Error::Closed) => return,
                    Err(e) => panic!("send: {e}"),
                }
            }
        }
        "consumer" => {
            let mut inbox = None::<Inbox>;
            let mut metas = Vec::with_capacity(INBOX_MESSAGES);
            let inbox_path = || PathBuf::from(std::env::var("INBOX").unwrap());
            loop {
                let record = |m: shmq::Received, bytes: &[u8], file: &mut std::fs::File| {
                    let id = payload_id(bytes);
                    append(file, &format!("{id} {}\n", m.redelivered as u8));
                    // Every 8th message is "processed" slowly, holding the slot.
                    if id % 8 == 3 {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                };
                // A third of the incarnations receive zero-copy batches of up to 4, each message
                // released as soon as its record is written; another third copying batches.
                let timeout = Some(Duration::from_millis(200));
                let r = match incarnation % 3 {
                    0 => q.recv_in_place(timeout, |m, b| record(m, b, &mut file)),
                    1 => q
                        .recv_batch_in_place(4, timeout, |m, b| record(m, b, &mut file))
                        .map(drop),
                    _ => {
                        let inbox = inbox.get_or_insert_with(|| Inbox::create(&inbox_path()));
                        inbox.clear();
                        q.recv_batch(inbox.bytes(), &mut metas, timeout).map(|n| {
                            let bytes = inbox.bytes();
                            let lines: String = bytes
                                .chunks_exact(MESSAGE_SIZE)
                                .zip(&metas[..n])
                                .map(|(b, m)| {
                                    let id = payload_id(&b[..m.len]);
                                    format!("{id} {}\n", m.redelivered as u8)
                                })
                                .collect();
                            append(&mut file, &lines);
                        })
                    }
                };
                match r {
                    Ok(()) | Err(Error::Timeout) => {}
                    Err(Error::Closed) => return,
                    Err(e) => panic!("receive: {e}"),
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

struct Worker {
    role: &'static str,
    child: Child,
}

/// Every child and the log directory, cleaned up even when the test fails.
struct Storm {
    q: TestQueue,
    dir: PathBuf,
    workers: Vec<Worker>,
    incarnation: u64,
    kills: BTreeMap<&'static str, u64>,
    /// Children started from then on run without `membarrier` (never where the kernel
    /// refuses the filter: the storm then runs on light fences throughout).
    deny_membarrier_from: Option<Instant>,
}

impl Storm {
    fn spawn(&mut self, role: &'static str) -> Worker {
        self.incarnation += 1;
        // The child picks its receive by `incarnation % 3` (see `storm_child`).
        let kind = match role {
            "consumer" if self.incarnation % 3 == 2 => "consumer-batch",
            _ => role,
        };
        let log = self.dir.join(format!("{kind}-{}.log", self.incarnation));
        let inbox = self.dir.join(format!("{}.inbox", self.incarnation));
        let mut command = Command::new(std::env::current_exe().unwrap());
        if self
            .deny_membarrier_from
            .is_some_and(|from| Instant::now() >= from)
        {
            command.env("NO_MEMBARRIER", "1");
        }
        let child = command
            .args([
                "--exact",
                "storm_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE_ENV, role)
            .env("Q", &self.q.name)
            .env("LOG", &log)
            .env("INBOX", &inbox)
            .env("INCARNATION", self.incarnation.to_string())
            .env_remove("SHMQ_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn storm child");
        Worker { role, child }
    }
}

impl Drop for Storm {
    fn drop(&mut self) {
        for w in &mut self.workers {
            let _ = w.child.kill();
            let _ = w.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn read_lines(dir: &Path, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // A line is complete only with its newline (a kill cannot tear a short append,
        // but be strict anyway).
        for line in text.split_inclusive('\n') {
            if let Some(l) = line.strip_suffix('\n') {
                lines.push(l.to_string());
            }
        }
    }
    lines
}

#[test]
fn kill_storm() {
    storm("storm", PRODUCERS, CONSUMERS, false);
}

/// The same on a single-producer/single-consumer queue: one producer and one consumer at a
/// time, each new one taking over the role of the one killed before it.
#[test]
fn kill_storm_single_producer_single_consumer() {
    storm("storm_spsc", 1, 1, true);
}

fn storm(tag: &str, producers: usize, consumers: usize, spsc: bool) {
    let secs: u64 = std::env::var("SHMQ_STORM_SECS").map_or(12, |s| s.parse().unwrap());
    let seed: u64 = std::env::var("SHMQ_STORM_SEED").map_or_else(
        |_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        },
        |s| s.parse().unwrap(),
    );
    let mut rng = Rng::new(seed);
    // Small capacity: the ring laps constantly and producers often find it full, so both
    // repair paths (republish at the tail, adoption) run. A power of two or not (the slot
    // index and lap then come from a shift or from a reciprocal: `src/fastdiv.rs`).
    let capacity = 7 + rng.below(2) as usize;
    println!("{tag}: {secs} s, capacity {capacity}, seed {seed} (SHMQ_STORM_SEED replays it)");
    let q = TestQueue::new(tag);
    let parent = CrossProcessQueue::options()
        .single_producer_single_consumer(spsc)
        .create(&q.name, capacity, MESSAGE_SIZE)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("shmq-storm-{}", q.name));
    std::fs::create_dir_all(&dir).unwrap();
    let mut storm = Storm {
        q,
        dir,
        workers: Vec::new(),
        incarnation: 0,
        kills: BTreeMap::new(),
        deny_membarrier_from: membarrier_can_be_denied()
            .then(|| Instant::now() + Duration::from_secs(secs) / 2),
    };
    for _ in 0..producers {
        let w = storm.spawn("producer");
        storm.workers.push(w);
    }
    for _ in 0..consumers {
        let w = storm.spawn("consumer");
        storm.workers.push(w);
    }

    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10 + rng.below(120)));
        let i = rng.below(storm.workers.len() as u64) as usize;
        let w = &mut storm.workers[i];
        if let Some(status) = w.child.try_wait().unwrap() {
            panic!("a {} exited on its own: {status}", w.role);
        }
        w.child.kill().unwrap(); // SIGKILL
        w.child.wait().unwrap();
        let role = w.role;
        *storm.kills.entry(role).or_default() += 1;
        storm.workers[i] = storm.spawn(role);
    }

    // Stop the producers (killed like the rest: a kill after a successful send only loses
    // the ack), then shut down: consumers drain what is left and exit on `Closed`.
    for w in storm.workers.iter_mut().filter(|w| w.role == "producer") {
        w.child.kill().unwrap();
        w.child.wait().unwrap();
    }
    parent.shutdown().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in storm.workers.iter_mut().filter(|w| w.role == "consumer") {
        loop {
            if let Some(status) = w.child.try_wait().unwrap() {
                assert!(status.success(), "consumer failed: {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consumers did not drain the queue"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // Nothing left, not even an orphan: the parent's receive adopts before saying Closed.
    let mut buf = [0u8; MESSAGE_SIZE];
    match parent.recv_with(&mut buf, Some(Duration::from_secs(5))) {
        Err(Error::Closed) => {}
        other => panic!("queue not drained: {other:?}"),
    }
    let stats = parent.stats();
    assert_eq!(stats.depth, 0, "{stats:?}");

    let acked: BTreeSet<u64> = read_lines(&storm.dir, "producer")
        .iter()
        .map(|l| l.parse().unwrap())
        .collect();
    let mut received: BTreeMap<u64, (u32, u32)> = BTreeMap::new(); // id -> (times, flagged)
    for line in read_lines(&storm.dir, "consumer") {
        let (id, flag) = line.split_once(' ').unwrap();
        let e = received.entry(id.parse().unwrap()).or_default();
        e.0 += 1;
        e.1 += (flag == "1") as u32;
    }
    // Copied by a batch receive whose consumer was killed before recording it (or after:
    // then it is recorded too, and the inbox adds nothing).
    let in_inboxes = read_inboxes(&storm.dir);
    let lost: Vec<u64> = acked
        .iter()
        .filter(|id| !received.contains_key(id) && !in_inboxes.contains(id))
        .copied()
        .collect();
    let only_in_inboxes = in_inboxes
        .iter()
        .filter(|id| !received.contains_key(id))
        .count();
    let mut duplicates = 0u64;
    for (id, &(times, flagged)) in &received {
        assert!(
            id >> 32 >= 1 && id >> 32 <= storm.incarnation,
            "received {id:#x}, which no producer sent"
        );
        if times > 1 {
            // Every extra record must be a redelivery (flagged) of a message whose previous
            // receiver was killed after recording it.
            assert!(
                flagged >= times - 1,
                "message {id:#x} recorded {times} times, only {flagged} flagged as redelivered"
            );
            duplicates += (times - 1) as u64;
        }
    }
    let batch_records = read_lines(&storm.dir, "consumer-batch").len();
    let unacked_received = received.keys().filter(|id| !acked.contains(id)).count();
    let consumer_kills = storm.kills.get("consumer").copied().unwrap_or(0);
    println!(
        "{tag}: kills {:?}, acknowledged {}, received {} distinct ({} unacknowledged), \
         redelivered records {}, recorded by copying batches {}, only in a dead batch \
         receiver's inbox {}, lost {}, real fences {}, stats {:?}",
        storm.kills,
        acked.len(),
        received.len(),
        unacked_received,
        duplicates,
        batch_records,
        only_in_inboxes,
        lost.len(),
        parent.real_fences(),
        stats
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged messages never received: {:x?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        duplicates <= consumer_kills,
        "{duplicates} redelivered records but only {consumer_kills} consumer kills"
    );
    assert!(
        acked.len() > 100,
        "the storm moved too little to prove anything"
    );
    assert!(
        batch_records > 0,
        "no copying batch receive recorded anything"
    );
    assert!(consumer_kills > 0 && storm.kills.get("producer").copied().unwrap_or(0) > 0);
}
