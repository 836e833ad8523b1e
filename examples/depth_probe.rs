//! Where a stream runs: one producer and one consumer process (pinned to cores 0 and 1 when
//! the machine has two) move `N` 64-byte messages through a 256-slot queue, every byte
//! written and checked, while the parent samples the queue's depth every 200 µs. Prints,
//! per run, the throughput and the share of samples with the queue near empty (depth < 8),
//! in between, and near full (depth > 248).
//!
//! ```sh
//! cargo run --release --example depth_probe -- on spsc 2000000 10   # CHECKSUMS KIND N RUNS
//! ```
//!
//! Which of the three a run falls into changes its throughput more than most code changes
//! do, and it is not the same from run to run: compare variants by the runs in the same
//! state (docs/PERFORMANCE.md, seventeenth session).

use std::time::{Duration, Instant};

use shmq::CrossProcessQueue;

const CAPACITY: usize = 256;
const SIZE: usize = 64;

/// Unlinks the probe's queue when dropped, also when a run fails.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = CrossProcessQueue::unlink(&self.0);
    }
}

fn pin_to(core: usize) {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; `CPU_SET` and `sched_setaffinity` only
    // read and write the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The producer (`role` 0) or the consumer (1) of one run, in a child process.
fn play(queue: &CrossProcessQueue, role: usize, n: u64) {
    let mut buf = [0u8; SIZE];
    for i in 0..n {
        if role == 0 {
            buf.fill(i as u8);
            buf[..8].copy_from_slice(&i.to_le_bytes());
            queue.send_bytes_timeout(&buf, None).expect("send");
        } else {
            let got = queue.recv_into(&mut buf, None).expect("receive");
            assert_eq!(got.map(|m| m.len), Some(SIZE), "a whole message");
            assert_eq!(
                u64::from_le_bytes(buf[..8].try_into().unwrap()),
                i,
                "in order"
            );
            assert!(buf[8..].iter().all(|&b| b == i as u8), "message {i} intact");
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let checksums = arg(1, "on") == "on";
    let spsc = arg(2, "mpmc") == "spsc";
    let n: u64 = arg(3, "2000000").parse().expect("N: a number");
    let runs: u32 = arg(4, "1").parse().expect("RUNS: a number");
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
                    play(&queue, role, n);
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
        let mut consumer_status = None;
        while consumer_status.is_none() {
            std::thread::sleep(Duration::from_micros(200));
            let depth = queue.len();
            shares[usize::from(depth >= 8) + usize::from(depth > CAPACITY - 8)] += 1;
            depths.push(depth);
            let mut status = 0;
            // SAFETY: waits for our own child without blocking; `status` is ours.
            if unsafe { libc::waitpid(children[1], &mut status, libc::WNOHANG) } == children[1] {
                consumer_status = Some(status);
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut producer_status = 0;
        // SAFETY: waits for our own child; `producer_status` is ours.
        unsafe { libc::waitpid(children[0], &mut producer_status, 0) };
        let failed = |s: i32| !libc::WIFEXITED(s) || libc::WEXITSTATUS(s) != 0;
        assert!(
            !failed(producer_status) && !consumer_status.is_some_and(failed),
            "a child failed"
        );
        let samples = depths.len().max(1) as f64;
        depths.sort_unstable();
        println!(
            "checksums {:3} {:4}: {:6.2} M msgs/s   near empty {:3.0} %   between {:3.0} %   \
             near full {:3.0} %   median depth {}",
            if checksums { "on" } else { "off" },
            if spsc { "spsc" } else { "mpmc" },
            n as f64 / seconds / 1e6,
            100.0 * shares[0] as f64 / samples,
            100.0 * shares[1] as f64 / samples,
            100.0 * shares[2] as f64 / samples,
            depths.get(depths.len() / 2).copied().unwrap_or(0),
        );
    }
}
