//! How fast the message checksum runs next to the `crc32c` crate it replaces on x86-64, in
//! one thread over data in the L1/L2 cache (the figures in docs/PERFORMANCE.md).
//!
//! `cargo run --release --example checksum_speed`
//!
//! Each figure is the best of 15 timed batches (this VM's noise is one-sided: a batch can
//! only be slowed down). Both compute the same CRC32C and are checked equal before timing;
//! shmq's call also covers the 20 header bytes, the crate's starts from their state.

use std::hint::black_box;
use std::time::Instant;

use shmq::ring::message_crc;

/// Nanoseconds per call of `f` on `data`, best of 15 batches of about 20 ms.
fn best_ns(data: &[u8], f: &dyn Fn(&[u8]) -> u32) -> f64 {
    let calls = (20_000_000 / data.len().max(64)) as u32;
    let mut best = f64::MAX;
    let mut sink = 0u32;
    for _ in 0..15 {
        let start = Instant::now();
        for _ in 0..calls {
            sink ^= f(black_box(data));
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e9 / f64::from(calls));
    }
    black_box(sink);
    best
}

fn main() {
    println!(
        "{:>8}  {:>22}  {:>22}  {:>7}",
        "bytes", "crc32c crate", "shmq message_crc", "speedup"
    );
    for size in [64usize, 256, 512, 1024, 4096, 16_384, 65_536] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let (id, ts) = (1u64, 2u64);
        let mut head = Vec::new();
        head.extend_from_slice(&id.to_le_bytes());
        head.extend_from_slice(&ts.to_le_bytes());
        head.extend_from_slice(&(size as u32).to_le_bytes());
        let head_state = crc32c::crc32c(&head);
        assert_eq!(
            crc32c::crc32c_append(head_state, &data),
            message_crc(id, ts, size as u32, &data),
            "the two checksums differ"
        );
        let crate_ns = best_ns(&data, &|d| crc32c::crc32c_append(head_state, d));
        let shmq_ns = best_ns(&data, &|d| message_crc(id, ts, d.len() as u32, d));
        let gbs = |ns: f64| size as f64 / ns;
        println!(
            "{size:>8}  {crate_ns:>9.1} ns {:>6.1} GB/s  {shmq_ns:>9.1} ns {:>6.1} GB/s  {:>6.2}x",
            gbs(crate_ns),
            gbs(shmq_ns),
            crate_ns / shmq_ns
        );
    }
}
