//! The per-message hot path in one thread, for instruction counts under callgrind.
//!
//! Each mode moves N messages of SIZE bytes through one queue (depth 256) in one thread:
//! `copy` = `send_bytes` + `receive_into` pairs, `parts` = the same with each message sent as
//! two parts (`send_parts`, 8 bytes and the rest), `block` = `send_bytes_timeout(None)` +
//! `recv_into(None)` pairs (the blocking forms, never waiting here), `fill` = the copying
//! calls a queue-full at a time (as two processes sharing one core take turns), `inplace` =
//! `send_in_place` + `recv_in_place` pairs, `batch` = `send_batch` + `recv_batch` of 32,
//! `inplacebatch` = `send_batch_in_place` + `recv_batch_in_place` of 32,
//! `empty` = a `receive_into` that finds the queue empty (a polling receiver's cost between
//! messages; no send, so its figure is per receive). Only `hot_loop` is meant to be
//! measured: callgrind counts it alone with
//!
//! ```sh
//! cargo build --release --example hotpath
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*hot_loop*' \
//!     target/release/examples/hotpath copy 100000 64 on
//! ```
//!
//! and the total instruction count divided by N is the cost of one send + receive.
//!
//! `cargo run --release --example hotpath -- MODE [N [SIZE [on|off [mpmc|spsc]]]]`

use std::time::Duration;

use shmq::{CrossProcessQueue, OpenMode, Received};

const BATCH: usize = 32;

#[inline(never)]
fn hot_loop(queue: &CrossProcessQueue, mode: &str, n: u64, size: usize) -> u64 {
    let data = vec![0xA5u8; size];
    let mut buf = vec![0u8; queue.message_size() * BATCH];
    let mut sum = 0u64;
    match mode {
        "copy" => {
            for _ in 0..n {
                queue.send_bytes(&data).expect("send");
                let meta = queue
                    .receive_into(&mut buf)
                    .expect("receive")
                    .expect("a message");
                sum = sum.wrapping_add(meta.len as u64 + buf[0] as u64);
            }
        }
        "parts" => {
            // `copy` with the message sent as two parts, 8 bytes and the rest (a gather send).
            let (head, body) = data.split_at(8.min(size));
            for _ in 0..n {
                queue.send_parts(&[head, body]).expect("send");
                let meta = queue
                    .receive_into(&mut buf)
                    .expect("receive")
                    .expect("a message");
                sum = sum.wrapping_add(meta.len as u64 + buf[0] as u64);
            }
        }
        "block" => {
            // The blocking forms (the default calls), each finding what it waits for at once.
            for _ in 0..n {
                queue.send_bytes_timeout(&data, None).expect("send");
                let meta = queue
                    .recv_into(&mut buf, None)
                    .expect("receive")
                    .expect("a message");
                sum = sum.wrapping_add(meta.len as u64 + buf[0] as u64);
            }
        }
        "fill" => {
            // Like two processes on one core: fill the queue, then drain it.
            let depth = queue.capacity() as u64;
            for _ in 0..n / depth {
                for _ in 0..depth {
                    queue.send_bytes(&data).expect("send");
                }
                for _ in 0..depth {
                    let meta = queue
                        .receive_into(&mut buf)
                        .expect("receive")
                        .expect("a message");
                    sum = sum.wrapping_add(meta.len as u64 + buf[0] as u64);
                }
            }
        }
        "inplace" => {
            for _ in 0..n {
                queue
                    .send_in_place(Some(Duration::ZERO), |slot| {
                        slot[..size].copy_from_slice(&data);
                        size
                    })
                    .expect("send");
                sum = sum.wrapping_add(
                    queue
                        .recv_in_place(Some(Duration::ZERO), |meta, bytes| {
                            meta.len as u64 + bytes[0] as u64
                        })
                        .expect("receive"),
                );
            }
        }
        "batch" => {
            let batch: Vec<&[u8]> = vec![&data[..]; BATCH];
            let mut metas: Vec<Received> = Vec::with_capacity(BATCH);
            for _ in 0..n / BATCH as u64 {
                let sent = queue
                    .send_batch(&batch, Some(Duration::ZERO))
                    .expect("send");
                let got = queue
                    .recv_batch(&mut buf, &mut metas, Some(Duration::ZERO))
                    .expect("receive");
                assert_eq!((sent, got), (BATCH, BATCH));
                sum = sum.wrapping_add(metas[BATCH - 1].len as u64);
            }
        }
        "inplacebatch" => {
            for _ in 0..n / BATCH as u64 {
                let sent = queue
                    .send_batch_in_place(BATCH, Some(Duration::ZERO), |_, slot| {
                        slot[..size].copy_from_slice(&data);
                        size
                    })
                    .expect("send");
                let mut last = 0;
                let got = queue
                    .recv_batch_in_place(BATCH, Some(Duration::ZERO), |meta, bytes| {
                        last = meta.len as u64 + bytes[0] as u64;
                    })
                    .expect("receive");
                assert_eq!((sent, got), (BATCH, BATCH));
                sum = sum.wrapping_add(last);
            }
        }
        "empty" => {
            // What a polling receiver pays between messages: a receive that finds nothing.
            for _ in 0..n {
                let got = queue.receive_into(&mut buf).expect("receive");
                sum = sum.wrapping_add(u64::from(got.is_none()));
            }
        }
        other => {
            panic!("unknown mode {other}: copy, block, fill, inplace, batch, inplacebatch or empty")
        }
    }
    sum
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("copy", |s| s.as_str());
    let n: u64 = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
    let size: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let checksum = args.get(4).is_none_or(|s| s != "off");
    let spsc = args.get(5).is_some_and(|s| s == "spsc");
    let name = format!("hotpath_{}", std::process::id());
    let queue = CrossProcessQueue::options()
        .checksum(checksum)
        .single_producer_single_consumer(spsc)
        .open_mode(OpenMode::Replace)
        .create(&name, 256, size.max(1))?;
    let start = std::time::Instant::now();
    let sum = hot_loop(&queue, mode, n, size);
    let elapsed = start.elapsed();
    drop(queue);
    CrossProcessQueue::unlink(&name)?;
    let unit = if mode == "empty" {
        "empty receive"
    } else {
        "send+receive"
    };
    println!(
        "{mode} n={n} size={size} checksum={checksum} spsc={spsc}: {:.1} ns per {unit} (sum {sum})",
        elapsed.as_nanos() as f64 / n as f64
    );
    Ok(())
}
