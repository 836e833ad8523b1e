//! Which send and receive forms pay at large message sizes with checksums on: one producer
//! and one consumer process (pinned to cores 0 and 1) move N messages of SIZE bytes through
//! a 256-slot queue, every byte written and checked, and print the rate.
//!
//! ```sh
//! # SEND(copy|inplace|parts) RECEIVE(copy|inplace) CHECKSUMS(on|off) N [SIZE [FILL]]
//! cargo run --release --example large_send_forms -- inplace copy on 1000000 4096 memset
//! ```
//!
//! FILL is how a send writes the message after its 8-byte number: `memset` (a `fill` of
//! run-time length, as the bench does), `copy` (`copy_from_slice` of a prepared body) or, in
//! place only, `words` (whole 8-byte stores). A copying send fills its buffer so, then sends
//! it; `parts` sends the number and the prepared body as two parts (`send_parts`, a gather
//! send: the prepared body as `copy` has it, without a buffer to assemble it in).
//!
//! On the development VM, at 4 KiB with checksums, a zero-copy send ran at 0.4–0.55× a
//! copying send with `memset` or `copy` fills, 0.7–0.8× with `words`: the checksum reads back
//! bytes just written to lines the consumer's core held (docs/PERFORMANCE.md, twenty-third
//! session). A copying send of a buffer filled by `copy` waits the same way, and `parts`
//! ran at 1.7× its rate (twenty-fourth session).

use std::time::Instant;

use shmq::CrossProcessQueue;

#[path = "support/affinity.rs"]
mod affinity;
use affinity::pin_to;

const CAPACITY: usize = 256;

/// Unlinks the queue when dropped, also when a run fails.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = CrossProcessQueue::unlink(&self.0);
    }
}

/// The body of message `i` (after its number), prepared once per byte value so that
/// checking a message is one `memcmp`.
fn bodies(size: usize) -> Vec<Vec<u8>> {
    (0..=255u8).map(|v| vec![v; size - 8]).collect()
}

fn consume(queue: &CrossProcessQueue, form: &str, n: u64, size: usize) {
    let bodies = bodies(size);
    let mut buf = vec![0u8; size];
    let check = |bytes: &[u8], i: u64| {
        assert_eq!(bytes.len(), size, "message {i}: length");
        assert_eq!(bytes[..8], i.to_le_bytes(), "message {i}: in order");
        assert!(
            bytes[8..] == bodies[i as usize % 256][..],
            "message {i}: body"
        );
    };
    for i in 0..n {
        if form == "copy" {
            let meta = queue.recv_into(&mut buf, None).expect("receive");
            check(&buf[..meta.expect("a message").len], i);
        } else {
            queue
                .recv_in_place(None, |_, bytes| check(bytes, i))
                .expect("receive in place");
        }
    }
}

fn produce(queue: &CrossProcessQueue, form: &str, fill: &str, n: u64, size: usize) {
    let bodies = bodies(size);
    let mut buf = vec![0u8; size];
    for i in 0..n {
        let value = i as u8;
        let body = &bodies[i as usize % 256];
        if form == "copy" {
            // The message assembled in a buffer, then sent.
            buf[..8].copy_from_slice(&i.to_le_bytes());
            match fill {
                "copy" => buf[8..].copy_from_slice(body),
                _ => buf[8..].fill(value),
            }
            queue.send_bytes_timeout(&buf, None).expect("send");
            continue;
        }
        if form == "parts" {
            // The number and the prepared body as two parts: no buffer to assemble.
            queue
                .send_parts_timeout(&[&i.to_le_bytes(), body], None)
                .expect("send parts");
            continue;
        }
        queue
            .send_in_place(None, |slot| {
                let slot = &mut slot[..size];
                slot[..8].copy_from_slice(&i.to_le_bytes());
                match fill {
                    "words" => {
                        let word = u64::from_ne_bytes([value; 8]).to_ne_bytes();
                        for chunk in slot[8..].chunks_exact_mut(8) {
                            chunk.copy_from_slice(&word);
                        }
                        let rest = (size - 8) % 8;
                        slot[size - rest..].fill(value);
                    }
                    "copy" => slot[8..].copy_from_slice(body),
                    _ => slot[8..].fill(value),
                }
                size
            })
            .expect("send in place");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let (send, receive, checksums) = (arg(0, "copy"), arg(1, "copy"), arg(2, "on") == "on");
    let n: u64 = arg(3, "1000000").parse().expect("N");
    let size: usize = arg(4, "4096").parse().expect("SIZE");
    let fill = arg(5, "memset");
    assert!(
        size >= 16,
        "SIZE holds at least the 8-byte number and a body"
    );

    let name = format!("large_send_forms_{}", std::process::id());
    let _unlink = Unlink(name.clone());
    let queue = CrossProcessQueue::options()
        .checksum(checksums)
        .create(&name, CAPACITY, size)
        .expect("create");
    let start = Instant::now();
    // SAFETY: this process has one thread; the child only runs the consumer and `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        pin_to(1);
        let queue = CrossProcessQueue::connect(&name).expect("connect");
        let ok = std::panic::catch_unwind(|| consume(&queue, &receive, n, size)).is_ok();
        // SAFETY: ends the forked child without running the parent's destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pin_to(0);
    produce(&queue, &send, &fill, n, size);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(status, 0, "the consumer failed");
    let rate = n as f64 / start.elapsed().as_secs_f64() / 1e6;
    let checksums = if checksums { "on" } else { "off" };
    let fill = if send == "parts" { "two parts" } else { &fill };
    println!(
        "{send:>7} send ({fill}) -> {receive:>7} receive, {size} B, checksums {checksums}: \
         {rate:.2} M msgs/s"
    );
}
