//! What idle workers cost: `W` worker processes block on one queue while a producer sends
//! `N` rounds of `B` messages, one round every `GAP` µs; each worker "works" `WORK` µs per
//! message (sleeping). Prints the workers' CPU time per message (user + system, from
//! `getrusage(RUSAGE_CHILDREN)`, tick-based) and the mean and longest delay from send to
//! receive.
//!
//! ```sh
//! cargo run --release --example idle_workers -- 32 2000 1000       # W N GAP [B WORK]
//! cargo run --release --example idle_workers -- 4 300 10000 4 2000  # bursts of 4
//! ```
//!
//! A message wakes one sleeping worker (a batch of n, n); before that change every message
//! woke every sleeping worker, which then found it taken and went back to sleep.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shmq::CrossProcessQueue;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn arg(i: usize, default: u64) -> u64 {
    std::env::args()
        .nth(i)
        .map_or(default, |s| s.parse().expect("a number"))
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn main() {
    let (workers, rounds, gap_us) = (arg(1, 8), arg(2, 2000), arg(3, 1000));
    let (burst, work_us) = (arg(4, 1), arg(5, 0));
    let name = format!("idle_workers_{}", std::process::id());
    let results = format!("{name}_results");
    let q = CrossProcessQueue::create(&name, 256, 64).expect("create queue");
    let r = CrossProcessQueue::create(&results, 256, 24).expect("create results queue");
    let mut children = Vec::new();
    for _ in 0..workers {
        // SAFETY: this process has one thread here, so the child may run any code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let (q, r) = (q.reopen().unwrap(), r.reopen().unwrap());
            let mut buf = [0u8; 64];
            let (mut got, mut delay_ns, mut max_ns) = (0u64, 0u64, 0u64);
            while let Ok(Some(_)) = q.recv_into(&mut buf, None) {
                let sent = u64::from_le_bytes(buf[..8].try_into().unwrap());
                let delay = now_ns().saturating_sub(sent);
                delay_ns += delay;
                max_ns = max_ns.max(delay);
                got += 1;
                if work_us > 0 {
                    std::thread::sleep(Duration::from_micros(work_us));
                }
            }
            let mut report = [0u8; 24];
            report[..8].copy_from_slice(&got.to_le_bytes());
            report[8..16].copy_from_slice(&delay_ns.to_le_bytes());
            report[16..].copy_from_slice(&max_ns.to_le_bytes());
            r.send_bytes_timeout(&report, None).unwrap();
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(0) };
        }
        children.push(pid);
    }
    std::thread::sleep(Duration::from_millis(200)); // every worker asleep
    let start = Instant::now();
    for i in 0..rounds {
        for _ in 0..burst {
            q.send_bytes_timeout(&now_ns().to_le_bytes(), None).unwrap();
        }
        let next = start + Duration::from_micros(gap_us * (i + 1));
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    q.shutdown().unwrap();
    let (mut got, mut delay_ns, mut max_ns) = (0u64, 0u64, 0u64);
    let mut buf = [0u8; 24];
    for _ in 0..workers {
        r.recv_into(&mut buf, None).unwrap();
        got += u64::from_le_bytes(buf[..8].try_into().unwrap());
        delay_ns += u64::from_le_bytes(buf[8..16].try_into().unwrap());
        max_ns = max_ns.max(u64::from_le_bytes(buf[16..].try_into().unwrap()));
    }
    for pid in children {
        // SAFETY: waits for our own child; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    }
    // SAFETY: an all-zero rusage is a valid value for getrusage to fill.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    let (user, system) = (seconds(usage.ru_utime), seconds(usage.ru_stime));
    let sent = rounds * burst;
    println!(
        "{workers} workers, {sent} messages ({burst} every {gap_us} µs, {work_us} µs of work each): \
         workers' CPU {:.1} µs per message (user {user:.3} s, system {system:.3} s), \
         delay mean {:.1} µs, max {:.1} µs",
        (user + system) * 1e6 / sent as f64,
        delay_ns as f64 / got.max(1) as f64 / 1e3,
        max_ns as f64 / 1e3,
    );
    assert_eq!(got, sent, "every message received once");
    let _ = CrossProcessQueue::unlink(&name);
    let _ = CrossProcessQueue::unlink(&results);
}
