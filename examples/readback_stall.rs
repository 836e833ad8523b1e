//! Why a zero-copy send with checksums can run at half the speed of one without: the send
//! reads back, for the checksum, the bytes its closure has just written, and a read that
//! overlaps two writes still in the core's store buffer cannot take its bytes from them (no
//! store-to-load forwarding): it waits until they have reached the cache. A copy of a
//! run-time length (glibc's `memset`/`memcpy`: two overlapping 32-byte stores for 33 to 64
//! bytes) leaves such writes; whole 8-byte stores do not.
//!
//! No queue here, only its pattern: two threads (pinned to cores 0 and 1) pass 64-byte
//! messages through a ring of 256 slots, each a payload line and a header line (`seq`,
//! `crc`) as in shmq's layout, and the producer writes each message in one of four ways:
//!
//! * `words, checksum`: 8-byte stores, then the checksum read back from the slot;
//! * `copy, checksum`: a run-time-length fill (a `memset` call), then the checksum read back;
//! * `copy, no checksum`: the same fill, nothing read back;
//! * `copy into a buffer, checksum, copy`: the fill into a private buffer, the checksum read
//!   back from it, then a copy into the slot (a copying send right after filling its buffer).
//!
//! ```sh
//! cargo run --release --example readback_stall              # rounds of 2 M messages each
//! cargo run --release --example readback_stall one-thread   # no consumer: the cost alone
//! ```
//!
//! With `one-thread`, the producer frees each slot itself right before writing it, so no
//! line moves between cores: what is left is the wait itself.
//!
//! The ways take turns, round after round, so a drift of the VM's speed affects them alike.
//! Figures from the development VM are in docs/PERFORMANCE.md (twenty-first session).

use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::time::Instant;

use shmq::ring::message_crc;

#[path = "support/affinity.rs"]
mod affinity;
use affinity::pin_to;

const DEPTH: usize = 256;
const SIZE: usize = 64;
const PER_ROUND: u64 = 2_000_000;
const ROUNDS: usize = 6;
const WAYS: [&str; 4] = [
    "words, checksum",
    "copy, checksum",
    "copy, no checksum",
    "copy into a buffer, checksum, copy",
];

/// A slot: the payload line, then the header line, as in shmq's layout.
#[repr(C, align(64))]
struct Slot {
    payload: [AtomicU64; SIZE / 8],
    /// `2 * pos` while free for position `pos`, `2 * pos + 1` once `pos` is published.
    seq: AtomicU64,
    crc: AtomicU64,
}

/// The byte every message repeats after its position (as the bench's messages do).
fn fill_byte(pos: u64) -> u8 {
    (pos ^ 0x5a) as u8
}

/// Writes message `pos` into `buf` the way a copy of a run-time length does: a `memset` call
/// (the length hidden from the compiler, which would otherwise inline its own stores).
#[inline(never)]
fn fill_by_copy(buf: &mut [u8], pos: u64) {
    let len = std::hint::black_box(buf.len());
    buf[..8].copy_from_slice(&pos.to_le_bytes());
    buf[8..len].fill(fill_byte(pos));
}

/// Writes message `pos` into `slot` the `way`-th way; returns its checksum (0 without one).
fn produce(slot: &Slot, pos: u64, way: usize, buf: &mut [u8; SIZE]) -> u32 {
    if way == 0 {
        let word = u64::from_ne_bytes([fill_byte(pos); 8]);
        // Relaxed (these and the payload's loads): ordered for the consumer by the `seq`
        // publication (Release) that follows, which its Acquire load pairs with.
        slot.payload[0].store(pos.to_le(), Relaxed);
        for w in &slot.payload[1..] {
            w.store(word, Relaxed);
        }
        // SAFETY: the payload is SIZE bytes of atomics, laid out as plain integers; only this
        // thread writes the slot while it is free, and it reads it here, after its stores.
        let written = unsafe { std::slice::from_raw_parts(slot.payload.as_ptr().cast(), SIZE) };
        return message_crc(pos, 0, SIZE as u32, written);
    }
    // SAFETY: the payload is SIZE bytes of atomics, which have the layout of plain integers
    // and allow writes through a shared reference. Only the producer writes a slot, and only
    // while its `seq` says free for the position it writes, when the consumer does not read
    // it; no other reference to these bytes is used while this one lives.
    let payload = unsafe { std::slice::from_raw_parts_mut(slot.payload.as_ptr() as *mut u8, SIZE) };
    match way {
        1 => {
            fill_by_copy(payload, pos);
            message_crc(pos, 0, SIZE as u32, payload)
        }
        2 => {
            fill_by_copy(payload, pos);
            0
        }
        _ => {
            fill_by_copy(buf, pos);
            let crc = message_crc(pos, 0, SIZE as u32, buf);
            payload.copy_from_slice(buf);
            crc
        }
    }
}

fn main() {
    let ring: &'static [Slot] = Vec::leak(
        (0..DEPTH as u64)
            .map(|i| Slot {
                payload: Default::default(),
                seq: AtomicU64::new(2 * i),
                crc: AtomicU64::new(0),
            })
            .collect(),
    );
    let total = PER_ROUND * (WAYS.len() * ROUNDS) as u64;
    let one_thread = std::env::args().nth(1).as_deref() == Some("one-thread");
    let two_cores = std::thread::available_parallelism().is_ok_and(|c| c.get() >= 2);
    if !one_thread && !two_cores {
        // Two spinning threads on one core would take turns a time slice at a time.
        eprintln!("this needs two cores; `one-thread` runs on one");
        std::process::exit(2);
    }
    let consumer = std::thread::spawn(move || {
        if one_thread {
            return;
        }
        pin_to(1);
        for pos in 0..total {
            let slot = &ring[pos as usize % DEPTH];
            // Acquire: pairs with the producer's Release publication.
            while slot.seq.load(Acquire) != 2 * pos + 1 {
                std::hint::spin_loop();
            }
            // Relaxed (the payload's loads): after the Acquire load above, which ordered the
            // producer's writes of this message before them.
            assert_eq!(
                u64::from_le(slot.payload[0].load(Relaxed)),
                pos,
                "message order"
            );
            let word = u64::from_ne_bytes([fill_byte(pos); 8]);
            assert!(
                slot.payload[1..].iter().all(|w| w.load(Relaxed) == word),
                "message {pos}"
            );
            // Release: our reads happen-before the producer's next writes to the slot.
            slot.seq.store(2 * (pos + DEPTH as u64), Release);
        }
    });
    pin_to(0);
    let mut buf = [0u8; SIZE];
    let mut rates = vec![Vec::new(); WAYS.len()];
    let mut pos = 0u64;
    for _ in 0..ROUNDS {
        for (way, rate) in rates.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..PER_ROUND {
                let slot = &ring[pos as usize % DEPTH];
                if one_thread {
                    // Relaxed: nobody else uses the ring.
                    slot.seq.store(2 * pos, Relaxed);
                }
                // Acquire: pairs with the consumer's Release store that freed the slot.
                while slot.seq.load(Acquire) != 2 * pos {
                    std::hint::spin_loop();
                }
                let crc = produce(slot, pos, way, &mut buf);
                // Relaxed: published by the Release store below, as the payload is.
                slot.crc.store(u64::from(crc), Relaxed);
                // Release: the message's bytes happen-before the consumer's reads.
                slot.seq.store(2 * pos + 1, Release);
                pos += 1;
            }
            rate.push(PER_ROUND as f64 / start.elapsed().as_secs_f64() / 1e6);
        }
    }
    consumer.join().expect("consumer");
    println!("64-byte messages, M msgs/s per round (median last):");
    for (name, mut rate) in WAYS.iter().zip(rates) {
        let rounds: Vec<String> = rate.iter().map(|r| format!("{r:6.1}")).collect();
        rate.sort_by(f64::total_cmp);
        println!(
            "{name:>36}: {}  | {:6.1}",
            rounds.join(""),
            rate[rate.len() / 2]
        );
    }
}
