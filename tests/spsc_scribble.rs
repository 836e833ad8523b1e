//! Recovery of single-producer/single-consumer queues from hostile bytes, searched through
//! the public API on real shared memory in one process: a sender and a receiver handle send
//! and receive (one message, batches) while slot headers are overwritten through the
//! segment's file; then both handles close, and a fresh sender and receiver must get every
//! new message through exactly once and in order. (The multi-producer ring has the heap
//! search of `tests/ring_scribble.rs`; this queue's protocol lives in `src/spsc.rs`, reached
//! here through the handles. Deaths in the middle of a call are `tests/hostile.rs`' and
//! `tests/kill_storm.rs`' business.) `SHMQ_SCRIBBLE_SEED` replays one seed,
//! `SHMQ_SCRIBBLE_CASES` runs more.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{search_seeds, Rng, TestQueue};
use shmq::layout::slot_header_offset;
use shmq::{CrossProcessQueue, Error};

const MESSAGE_SIZE: usize = 16;
const CAPACITIES: [usize; 3] = [1, 2, 4];
const NOW: Option<Duration> = Some(Duration::ZERO);

/// Offset of slot `i`'s header.
fn slot_offset(i: u64) -> u64 {
    slot_header_offset(i as u32, MESSAGE_SIZE as u32).unwrap() as u64
}

fn case(seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let capacity = CAPACITIES[(seed % CAPACITIES.len() as u64) as usize];
    let q = TestQueue::new("spsc_scribble");
    let owner = CrossProcessQueue::options()
        .single_producer_single_consumer(true)
        .create(&q.name, capacity, MESSAGE_SIZE)
        .map_err(|e| format!("create: {e:?}"))?;
    let file = OpenOptions::new()
        .write(true)
        .read(true)
        .open(format!("/dev/shm/shmq.{}", q.name))
        .unwrap();
    let peek = |offset: u64| {
        let mut b = [0u8; 8];
        file.read_exact_at(&mut b, offset).unwrap();
        u64::from_le_bytes(b)
    };
    let mut buf = vec![0u8; 4 * MESSAGE_SIZE];
    let mut metas = Vec::with_capacity(4);
    {
        let tx = CrossProcessQueue::connect(&q.name).unwrap();
        let rx = CrossProcessQueue::connect(&q.name).unwrap();
        for _ in 0..20 + rng.below(60) {
            match rng.below(6) {
                0 => drop(tx.send_with(Some(rng.below(100)), 0, b"old", NOW)),
                1 => drop(tx.send_batch(&[b"o1", b"o2"], NOW)),
                2 => drop(rx.recv_with(&mut buf[..MESSAGE_SIZE], NOW)),
                3 => drop(rx.recv_batch(&mut buf, &mut metas, NOW)),
                _ => {
                    // A slot header word: its sequence word near the positions in use, its
                    // position, its length, or any word with any value.
                    let slot = slot_offset(rng.below(capacity as u64));
                    let tail = peek(128) & !(1 << 63);
                    let near = tail
                        .wrapping_sub(rng.below(2 * capacity as u64 + 1))
                        .wrapping_add(1);
                    let (offset, value) = match rng.below(4) {
                        0 => (slot, near.wrapping_mul(2).wrapping_add(rng.below(2))),
                        1 => (slot + 48, near),
                        2 => (slot + 32, rng.below(2 * MESSAGE_SIZE as u64)),
                        _ => (slot + 8 * rng.below(8), rng.next()),
                    };
                    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
                }
            }
        }
    } // both handles close: their roles are free again
    let before = (peek(128), peek(256));

    const FIRST: u64 = 1 << 40;
    let total = 3 * capacity as u64;
    let tx = CrossProcessQueue::connect(&q.name).unwrap();
    let rx = CrossProcessQueue::connect(&q.name).unwrap();
    let (mut sent, mut got, mut idle) = (0u64, Vec::new(), 0);
    while got.len() < total as usize {
        let mut moved = false;
        if sent < total {
            match tx.send_with(Some(FIRST + sent), 0, b"new", NOW) {
                Ok(_) => {
                    sent += 1;
                    moved = true;
                }
                Err(Error::QueueFull) => {}
                Err(e) => return Err(format!("send {sent}: {e:?}")),
            }
        }
        match rx.recv_with(&mut buf[..MESSAGE_SIZE], NOW) {
            Ok(m) => {
                moved = true;
                if m.id >= FIRST {
                    got.push(m.id - FIRST);
                }
            }
            Err(Error::CorruptedData(_)) => moved = true,
            Err(Error::QueueEmpty) => {}
            Err(e) => return Err(format!("receive: {e:?}")),
        }
        idle = if moved { 0 } else { idle + 1 };
        if idle > 1000 {
            return Err(format!(
                "capacity {capacity}: stuck after {sent} sends, received {got:?}; tail/head \
                 after the chaos {before:x?}, now {:x?}",
                (peek(128), peek(256))
            ));
        }
    }
    drop(owner);
    if got != (0..total).collect::<Vec<_>>() {
        return Err(format!("capacity {capacity}: received {got:?}"));
    }
    Ok(())
}

#[test]
fn new_messages_get_through_once_hostile_writes_stop_and_the_handles_close() {
    let seeds = search_seeds(2000);
    let failures: Vec<String> = seeds
        .into_iter()
        .filter_map(|seed| case(seed).err().map(|e| format!("seed {seed}: {e}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing cases, the first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(3)].join("\n")
    );
}
