//! Where a stream runs: one producer and one consumer process (pinned to cores 0 and 1 when
//! the machine has two) move `N` 64-byte messages through a 256-slot queue, every byte
//! written and checked, one per call or in batches of 32, while the parent samples the
//! queue's depth every 200 µs (or every SAMPLE_US; 0: the parent only waits for them).
//! Prints, per run, the throughput, the share of samples with the queue near empty (depth
//! < 8), in between, and near full (depth > 248), and how many times each process slept
//! (its voluntary context switches: futex sleeps, for a process alone on its core). The
//! sampling parent takes a core from one of them now and then, which makes the other wait:
//! count sleeps without it.
//!
//! ```sh
//! # CHECKSUMS KIND N RUNS FORM SAMPLE_US
//! cargo run --release --example depth_probe -- on spsc 2000000 10 one
//! cargo run --release --example depth_probe -- on mpmc 4000000 10 batch 0
//! ```
//!
//! Which of the three a run falls into changes its throughput more than most code changes
//! do, and it is not the same from run to run: compare variants by the runs in the same
//! state (docs/PERFORMANCE.md, seventeenth session).

use std::time::{Duration, Instant};

use shmq::CrossProcessQueue;

#[path = "support/affinity.rs"]
mod affinity;
use affinity::pin_to;

const CAPACITY: usize = 256;
const SIZE: usize = 64;
/// Messages per call in the batch form.
const BATCH: usize = 32;

/// Unlinks the probe's queue when dropped, also when a run fails.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = CrossProcessQueue::unlink(&self.0);
    }
}

/// Writes message `i`: its number, then a fill byte derived from it.
fn write_message(buf: &mut [u8], i: u64) {
    buf.fill(i as u8);
    buf[..8].copy_from_slice(&i.to_le_bytes());
}

/// Checks that `buf` is message `i`, whole.
fn check_message(buf: &[u8], i: u64) {
    assert_eq!(
        u64::from_le_bytes(buf[..8].try_into().unwrap()),
        i,
        "in order"
    );
    assert!(buf[8..].iter().all(|&b| b == i as u8), "message {i} intact");
}

/// The producer (`role` 0) or the consumer (1) of one run, in a child process, one message
/// per call.
fn play(queue: &CrossProcessQueue, role: usize, n: u64) {
    let mut buf = [0u8; SIZE];
    for i in 0..n {
        if role == 0 {
            write_message(&mut buf, i);
            queue.send_bytes_timeout(&buf, None).expect("send");
        } else {
            let got = queue.recv_into(&mut buf, None).expect("receive");
            assert_eq!(got.map(|m| m.len), Some(SIZE), "a whole message");
            check_message(&buf, i);
        }
    }
}

/// [`play`] in batches of up to [`BATCH`] (`send_batch`, `recv_batch`).
fn play_batches(queue: &CrossProcessQueue, role: usize, n: u64) {
    let mut messages = vec![[0u8; SIZE]; BATCH];
    let mut buf = vec![0u8; SIZE * BATCH];
    let mut metas = Vec::with_capacity(BATCH);
    let mut i = 0;
    while i < n {
        if role == 0 {
            let count = (n - i).min(BATCH as u64) as usize;
            for (k, message) in messages[..count].iter_mut().enumerate() {
                write_message(message, i + k as u64);
            }
            i += queue.send_batch(&messages[..count], None).expect("send") as u64;
        } else {
            let got = queue
                .recv_batch(&mut buf, &mut metas, None)
                .expect("receive");
            for (message, meta) in buf.chunks(SIZE).zip(&metas) {
                assert_eq!(meta.len, SIZE, "a whole message");
                check_message(message, i);
                i += 1;
            }
            assert_eq!(metas.len(), got);
        }
    }
}

/// Waits for child `pid` (without blocking, if `nohang`): its exit status and its voluntary
/// context switches, once it has exited.
fn reap(pid: libc::pid_t, nohang: bool) -> Option<(i32, i64)> {
    let mut status = 0;
    // SAFETY: all-zero is a valid `rusage`, which `wait4` fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if nohang { libc::WNOHANG } else { 0 };
    // SAFETY: waits for our own child; `status` and `usage` are ours to write.
    let reaped = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
    (reaped == pid).then_some((status, usage.ru_nvcsw))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let checksums = arg(1, "on") == "on";
    let spsc = arg(2, "mpmc") == "spsc";
    let n: u64 = arg(3, "2000000").parse().expect("N: a number");
    let runs: u32 = arg(4, "1").parse().expect("RUNS: a number");
    let batches = arg(5, "one") == "batch";
    let sample_us: u64 = arg(6, "200").parse().expect("SAMPLE_US: a number");
    let two_cores = std::thread::available_parallelism().is_ok_and(|c| c.get() >= 2);
    for run in 1..=runs {
        let name = format!("depth_probe_{}_{run}", std::process::id());
        let queue = CrossProcessQueue::options()
            .checksum(checksums)
            .single_producer_single_consumer(spsc)
            .create(&name, CAPACITY, SIZE)
            .expect("create queue");
        let _unlink = Unlink(name);
        let start = Instant::now();
        let mut children = Vec::new();
        for role in 0..2 {
            // SAFETY: this process has one thread here, so the child may run any code.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                if two_cores {
                    pin_to(role);
                }
                let ok = std::panic::catch_unwind(|| {
                    let queue = queue.reopen().expect("reopen");
                    if batches {
                        play_batches(&queue, role, n);
                    } else {
                        play(&queue, role, n);
                    }
                })
                .is_ok();
                // SAFETY: ends the child at once, without the parent's destructors (which
                // would unlink the queue).
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            children.push(pid);
        }
        // Near empty, in between, near full.
        let mut shares = [0u64; 3];
        let mut depths = Vec::new();
        let consumer = loop {
            if sample_us == 0 {
                break reap(children[1], false).expect("the consumer exits");
            }
            std::thread::sleep(Duration::from_micros(sample_us));
            let depth = queue.len();
            shares[usize::from(depth >= 8) + usize::from(depth > CAPACITY - 8)] += 1;
            depths.push(depth);
            if let Some(reaped) = reap(children[1], true) {
                break reaped;
            }
        };
        let seconds = start.elapsed().as_secs_f64();
        let producer = reap(children[0], false).expect("the producer exits");
        let failed = |s: i32| !libc::WIFEXITED(s) || libc::WEXITSTATUS(s) != 0;
        assert!(!failed(producer.0) && !failed(consumer.0), "a child failed");
        let depth_shares = if depths.is_empty() {
            String::from("(not sampled)")
        } else {
            let samples = depths.len() as f64;
            depths.sort_unstable();
            format!(
                "near empty {:3.0} %   between {:3.0} %   near full {:3.0} %   median depth {}",
                100.0 * shares[0] as f64 / samples,
                100.0 * shares[1] as f64 / samples,
                100.0 * shares[2] as f64 / samples,
                depths[depths.len() / 2],
            )
        };
        println!(
            "checksums {:3} {:4} {:5}: {:6.2} M msgs/s   {depth_shares}   slept {} and {} times",
            if checksums { "on" } else { "off" },
            if spsc { "spsc" } else { "mpmc" },
            if batches { "batch" } else { "one" },
            n as f64 / seconds / 1e6,
            producer.1,
            consumer.1,
        );
    }
}
