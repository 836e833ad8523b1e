//! How fast the message checksum runs, with each implementation this CPU has, next to the
//! `crc32c` crate, in one thread over data in the L1/L2 cache (the figures in
//! docs/PERFORMANCE.md).
//!
//! `cargo run --release --example checksum_speed`
//!
//! On x86-64 the implementations are the 512-bit carry-less folding (CPUs with AVX-512 and
//! VPCLMULQDQ), the 256-bit one (CPUs with VPCLMULQDQ and AVX2; both built with Rust 1.89 or
//! newer), the three `crc32` streams (SSE4.2), and the crate's (the portable fallback,
//! which also computes the message's 20 header bytes); a queue uses the first this CPU has
//! (`shmq::checksum_implementation()`). Each figure is
//! the best of 15 timed batches (this VM's noise is one-sided: a batch can only be slowed
//! down). All compute the same CRC32C and are checked equal before timing; shmq's calls
//! also cover the 20 header bytes, the crate's column starts from their state.

use std::hint::black_box;
use std::time::Instant;

use shmq::ring::MessageCrc;

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
    let implementations = MessageCrc::all_for_this_cpu();
    println!("columns: the crc32c crate (from the header's state), then");
    for (i, crc) in implementations.iter().enumerate() {
        println!("  {}: {}", (b'A' + i as u8) as char, crc.name());
    }
    print!("{:>8}  {:>20}", "bytes", "crc32c crate");
    for i in 0..implementations.len() {
        print!("  {:>20}", (b'A' + i as u8) as char);
    }
    println!("  {:>11}", "crate / A");
    for size in [64usize, 256, 512, 1024, 4096, 16_384, 65_536] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
        let (id, ts) = (1u64, 2u64);
        let mut head = Vec::new();
        head.extend_from_slice(&id.to_le_bytes());
        head.extend_from_slice(&ts.to_le_bytes());
        head.extend_from_slice(&(size as u32).to_le_bytes());
        let head_state = crc32c::crc32c(&head);
        let expected = crc32c::crc32c_append(head_state, &data);
        for crc in &implementations {
            assert_eq!(
                crc.compute(id, ts, size as u32, &data),
                expected,
                "{} differs from the crate",
                crc.name()
            );
        }
        let gbs = |ns: f64| size as f64 / ns;
        let crate_ns = best_ns(&data, &|d| crc32c::crc32c_append(head_state, d));
        print!("{size:>8}  {crate_ns:>7.1} ns {:>5.1} GB/s", gbs(crate_ns));
        let mut first_ns = None;
        for crc in &implementations {
            let crc = *crc;
            let ns = best_ns(&data, &|d| crc.compute(id, ts, d.len() as u32, d));
            first_ns.get_or_insert(ns);
            print!("  {ns:>7.1} ns {:>5.1} GB/s", gbs(ns));
        }
        println!("  {:>10.2}x", crate_ns / first_ns.unwrap_or(crate_ns));
    }
}
