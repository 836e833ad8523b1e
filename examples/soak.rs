//! Soak: sustained multi-process load for minutes, by hand.
//!
//! `cargo run --release --example soak -- [--secs 300] [--producers 2] [--consumers 2]
//!  [--capacity 64] [--size 256]`
//!
//! Spawns producer and consumer processes (this same binary) on a fresh queue, lets them run,
//! then shuts the queue down; consumers drain it. Reports messages moved, the resident memory
//! (VmRSS) and open file descriptors of every process a few seconds in and at the end (they
//! must not grow), and anything lost or duplicated (must be zero). Exits non-zero if anything
//! was lost, duplicated, or grew.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shmq::{CrossProcessQueue, Error};

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn payload(buf: &mut [u8], producer: u64, n: u64) {
    buf[..8].copy_from_slice(&producer.to_le_bytes());
    buf[8..16].copy_from_slice(&n.to_le_bytes());
    for (i, b) in buf[16..].iter_mut().enumerate() {
        *b = (n as u8).wrapping_add(i as u8);
    }
}

fn producer(queue: &str, me: u64, size: usize) -> Result<(), Box<dyn std::error::Error>> {
    let q = CrossProcessQueue::connect(queue)?;
    let mut buf = vec![0u8; size];
    let mut n = 0u64;
    loop {
        payload(&mut buf, me, n);
        match q.send_with(Some(me << 40 | n), 0, &buf, None) {
            Ok(_) => n += 1,
            Err(Error::Closed) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("SENT {me} {n}");
    Ok(())
}

/// Per producer: count, sum of n, sum of n² (a loss and a duplicate cannot cancel in all).
type Tally = BTreeMap<u64, (u64, u128, u128)>;

fn consumer(queue: &str, size: usize) -> Result<(), Box<dyn std::error::Error>> {
    let q = CrossProcessQueue::connect(queue)?;
    let mut buf = vec![0u8; size];
    let mut expect = vec![0u8; size];
    let mut tally = Tally::new();
    let mut bad = 0u64;
    while let Some(m) = q.recv_into(&mut buf, None)? {
        let p = u64::from_le_bytes(buf[..8].try_into()?);
        let n = u64::from_le_bytes(buf[8..16].try_into()?);
        payload(&mut expect, p, n);
        if m.len != size || buf != expect || m.id != p << 40 | n {
            bad += 1;
        }
        let e = tally.entry(p).or_default();
        e.0 += 1;
        e.1 += n as u128;
        e.2 += (n as u128) * (n as u128);
    }
    for (p, (c, s, s2)) in tally {
        println!("GOT {p} {c} {s} {s2}");
    }
    println!("BAD {bad}");
    Ok(())
}

/// (VmRSS in KiB, open fds) of a process.
fn usage(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (rss, fds)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let role: String = arg("--role", String::new());
    let queue: String = arg("--queue", String::new());
    let size: usize = arg("--size", 256);
    match role.as_str() {
        "producer" => return producer(&queue, arg("--id", 1), size),
        "consumer" => return consumer(&queue, size),
        _ => {}
    }
    let secs: u64 = arg("--secs", 60);
    let producers: u64 = arg("--producers", 2);
    let consumers: u64 = arg("--consumers", 2);
    let capacity: usize = arg("--capacity", 64);
    let name = format!("soak_{}", std::process::id());
    let q = CrossProcessQueue::create(&name, capacity, size)?;
    struct Unlink(String);
    impl Drop for Unlink {
        fn drop(&mut self) {
            let _ = CrossProcessQueue::unlink(&self.0);
        }
    }
    let _unlink = Unlink(name.clone());
    println!(
        "soak: {secs} s, {producers} producers, {consumers} consumers, capacity {capacity}, \
         {size}-byte messages, queue {name}"
    );
    let exe = std::env::current_exe()?;
    let spawn = |role: &str, id: u64| -> std::io::Result<Child> {
        Command::new(&exe)
            .args([
                "--role",
                role,
                "--queue",
                &name,
                "--size",
                &size.to_string(),
            ])
            .args(["--id", &id.to_string()])
            .stdout(Stdio::piped())
            .spawn()
    };
    let mut children: Vec<(String, Child)> = Vec::new();
    for i in 1..=producers {
        children.push((format!("producer {i}"), spawn("producer", i)?));
    }
    for i in 1..=consumers {
        children.push((format!("consumer {i}"), spawn("consumer", i)?));
    }
    let sample = |children: &Vec<(String, Child)>| -> Vec<(u64, usize)> {
        let mut v = vec![usage(std::process::id())];
        v.extend(children.iter().map(|(_, c)| usage(c.id())));
        v
    };
    let started = Instant::now();
    let warmup = Duration::from_secs(secs.clamp(1, 5));
    std::thread::sleep(warmup);
    let first = sample(&children);
    let first_pos = q.stats();
    let mut last_report = Instant::now();
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= Duration::from_secs(10) {
            let s = q.stats();
            println!(
                "  {:>4} s: {} messages, depth {}",
                started.elapsed().as_secs(),
                s.messages_received,
                s.depth
            );
            last_report = Instant::now();
        }
    }
    let last = sample(&children);
    let before_shutdown = q.stats();
    q.shutdown()?;

    let mut sent: BTreeMap<u64, u64> = BTreeMap::new();
    let mut got = Tally::new();
    let mut bad = 0u64;
    for (who, mut child) in children {
        let out = child.stdout.take().expect("piped");
        for line in BufReader::new(out).lines() {
            let line = line?;
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                ["SENT", p, n] => {
                    sent.insert(p.parse()?, n.parse()?);
                }
                ["GOT", p, c, s, s2] => {
                    let e = got.entry(p.parse()?).or_default();
                    e.0 += c.parse::<u64>()?;
                    e.1 += s.parse::<u128>()?;
                    e.2 += s2.parse::<u128>()?;
                }
                ["BAD", n] => bad += n.parse::<u64>()?,
                _ => {}
            }
        }
        let status = child.wait()?;
        if !status.success() {
            return Err(format!("{who} failed: {status}").into());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut lost = 0i128;
    let mut mismatched = 0;
    for (p, &n) in &sent {
        let (c, s, s2) = got.get(p).copied().unwrap_or_default();
        let n128 = n as u128;
        let want_s = n128 * n128.saturating_sub(1) / 2;
        let want_s2 = n128.saturating_sub(1) * n128 * (2 * n128).saturating_sub(1) / 6;
        lost += n as i128 - c as i128;
        if c != n || s != want_s || s2 != want_s2 {
            mismatched += 1;
            println!("producer {p}: sent {n}, received {c} (sums {s}/{want_s}, {s2}/{want_s2})");
        }
    }
    let total: u64 = sent.values().sum();
    let end = q.stats();
    println!(
        "moved {total} messages in {elapsed:.1} s ({:.0}/s); steady-state rate {:.0}/s",
        total as f64 / elapsed,
        (before_shutdown.messages_received - first_pos.messages_received) as f64
            / (secs as f64 - warmup.as_secs_f64()).max(1.0)
    );
    println!("process          RSS start -> end (KiB)   fds start -> end");
    let names = std::iter::once("soak (parent)".to_string()).chain(
        (1..=producers)
            .map(|i| format!("producer {i}"))
            .chain((1..=consumers).map(|i| format!("consumer {i}"))),
    );
    let mut grew = false;
    for (name, (a, b)) in names.zip(first.iter().zip(&last)) {
        // Allow a little allocator noise in RSS; fds must not change at all.
        let rss_grew = b.0 > a.0 + a.0 / 10 + 512;
        let fds_grew = b.1 > a.1;
        grew |= rss_grew || fds_grew;
        println!(
            "{name:<16} {:>9} -> {:<9} {} {:>8} -> {:<3} {}",
            a.0,
            b.0,
            if rss_grew { "GREW" } else { "    " },
            a.1,
            b.1,
            if fds_grew { "GREW" } else { "" }
        );
    }
    println!(
        "lost {lost}, mismatched producers {mismatched}, corrupted payloads {bad}, \
         stats: abandoned {} redelivered {} corrupted {} checksum failures {} depth {}",
        end.abandoned, end.redelivered, end.corrupted, end.checksum_failures, end.depth
    );
    if lost != 0 || mismatched != 0 || bad != 0 || grew || end.depth != 0 {
        return Err("soak FAILED".into());
    }
    println!("soak OK");
    Ok(())
}
