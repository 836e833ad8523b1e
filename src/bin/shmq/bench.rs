//! `shmq bench`: throughput and latency between this process (producer) and a second
//! `shmq bench-peer` process (consumer) on a fresh queue that is removed afterwards.
//!
//! Message timestamps carry CLOCK_MONOTONIC nanoseconds, which is one clock for every
//! process on the machine, so the consumer measures one-way latency directly.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use shmq::CrossProcessQueue;

use crate::{code, CmdResult, Failure};

/// How long either side waits for the other before declaring it stuck.
const PEER_WAIT: Duration = Duration::from_secs(30);

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Messages in the throughput phase.
    #[arg(short = 'n', long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub messages: u64,
    /// Message size in bytes.
    #[arg(short, long, default_value_t = 64)]
    pub size: usize,
    /// Queue capacity (slots).
    #[arg(short, long, default_value_t = 1024)]
    pub capacity: usize,
    /// Messages in the latency phase (sent one at a time to an idle receiver).
    #[arg(short, long, default_value_t = 5000)]
    pub latency_samples: u64,
    /// Print the figures as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Measure a single-producer/single-consumer queue (see `shmq create --spsc`).
    #[arg(long = "single-producer-single-consumer", visible_alias = "spsc")]
    pub single_producer_single_consumer: bool,
    /// Move up to N messages per call in the throughput phase (`send_batch` / `recv_batch`;
    /// the latency phase sends one at a time).
    #[arg(short, long, default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=shmq::RECV_BATCH_MAX as u64))]
    pub batch: u64,
    /// Create the queue without per-message checksums (see `shmq create --no-checksum`).
    #[arg(long)]
    pub no_checksum: bool,
    /// How long each side's blocking calls poll before they sleep, in microseconds
    /// (`set_spin_limit`; the library's default is 10).
    #[arg(long, value_name = "MICROSECONDS")]
    pub spin_us: Option<u64>,
}

#[derive(Args, Debug)]
pub struct PeerArgs {
    pub name: String,
    #[arg(long)]
    pub messages: u64,
    #[arg(long)]
    pub latency_samples: u64,
    #[arg(long)]
    pub size: usize,
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    #[arg(long)]
    pub spin_us: Option<u64>,
}

/// Applies `--spin-us` to a handle.
fn set_spin(queue: &CrossProcessQueue, spin_us: Option<u64>) {
    if let Some(us) = spin_us {
        queue.set_spin_limit(Duration::from_micros(us));
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Removes the bench queue and stops the peer whatever happens.
struct Cleanup {
    name: String,
    child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = CrossProcessQueue::unlink(&self.name);
    }
}

/// Progress on stderr: a line redrawn in place on a terminal, phase lines otherwise.
struct Progress {
    terminal: bool,
    shown: Option<u64>,
}

impl Progress {
    fn phase(&mut self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[K{text}");
        } else {
            eprintln!("{text}");
        }
        self.shown = None;
    }

    fn percent(&mut self, label: &str, done: u64, total: u64) {
        let pct = done * 100 / total.max(1);
        if self.terminal && self.shown != Some(pct) {
            eprint!("\r\x1b[K{label} {pct:3}%");
            self.shown = Some(pct);
        }
    }

    fn finish(&mut self) {
        if self.terminal {
            eprint!("\r\x1b[K");
        }
    }
}

fn fail(queue: &str, reason: impl Into<String>) -> Failure {
    Failure::new(Some(queue), code::FAILURE, reason)
}

pub fn bench(a: BenchArgs) -> CmdResult {
    let name = format!("bench-{}-{}", std::process::id(), mono_ns() % 1_000_000_000);
    let queue = CrossProcessQueue::options()
        .single_producer_single_consumer(a.single_producer_single_consumer)
        .checksum(!a.no_checksum)
        .create(&name, a.capacity, a.size)
        .map_err(|e| Failure::from_error(&name, e))?;
    set_spin(&queue, a.spin_us);
    let mut cleanup = Cleanup {
        name: name.clone(),
        child: None,
    };
    let exe = std::env::current_exe()
        .map_err(|e| fail(&name, format!("cannot find the shmq executable: {e}")))?;
    let child = Command::new(exe)
        .args(["bench-peer", &name])
        .args(["--messages", &a.messages.to_string()])
        .args(["--latency-samples", &a.latency_samples.to_string()])
        .args(["--size", &a.size.to_string()])
        .args(["--batch", &a.batch.to_string()])
        .args(
            a.spin_us
                .map(|us| vec!["--spin-us".to_string(), us.to_string()])
                .unwrap_or_default(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| fail(&name, format!("cannot start the receiving process: {e}")))?;
    let child = cleanup.child.insert(child);
    let mut from_peer = BufReader::new(child.stdout.take().expect("piped stdout"));
    let mut line = String::new();
    from_peer
        .read_line(&mut line)
        .map_err(|e| fail(&name, format!("receiving process: {e}")))?;
    if line.trim() != "ready" {
        return Err(fail(&name, "the receiving process did not start"));
    }

    let mut progress = Progress {
        terminal: std::io::stderr().is_terminal(),
        shown: None,
    };
    let send = |id: u64, payload: &[u8]| {
        queue
            .send_with(Some(id), mono_ns(), payload, Some(PEER_WAIT))
            .map_err(|e| match e {
                shmq::Error::Timeout => fail(&name, "the receiving process stopped receiving"),
                e => Failure::from_error(&name, e),
            })
    };
    let payload = vec![0xA5u8; a.size];
    // A batch's ids are its positions, which on this fresh queue are the same 0, 1, ...
    let batch = vec![payload.as_slice(); a.batch as usize];
    progress.phase(&format!(
        "shmq bench: throughput, {} messages of {} bytes{}...",
        a.messages,
        a.size,
        batches(a.batch)
    ));
    let step = (a.messages / 100).max(1);
    let t0 = mono_ns();
    let mut i = 0;
    while i < a.messages {
        if a.batch == 1 {
            send(i, &payload)?;
            i += 1;
        } else {
            let n = batch.len().min((a.messages - i) as usize);
            i += queue
                .send_batch(&batch[..n], Some(PEER_WAIT))
                .map_err(|e| match e {
                    shmq::Error::Timeout => fail(&name, "the receiving process stopped receiving"),
                    e => Failure::from_error(&name, e),
                })? as u64;
        }
        if i % step < a.batch {
            progress.percent("shmq bench: throughput", i, a.messages);
        }
    }
    let t_sent = mono_ns();
    // Blocking calls that slept so far (the receiver may still be draining: its sleeps from
    // here on count in the latency phase, where it is meant to sleep).
    let streamed = queue.stats();
    progress.phase(&format!(
        "shmq bench: latency, {} messages one at a time...",
        a.latency_samples
    ));
    let step = (a.latency_samples / 100).max(1);
    for j in 0..a.latency_samples {
        // Let the receiver take the previous message and go back to sleep.
        let deadline = Instant::now() + PEER_WAIT;
        while !queue.is_empty() {
            if Instant::now() > deadline {
                return Err(fail(&name, "the receiving process stopped receiving"));
            }
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_micros(200));
        send(a.messages + j, &payload)?;
        if j % step == 0 {
            progress.percent("shmq bench: latency", j, a.latency_samples);
        }
    }
    queue
        .shutdown()
        .map_err(|e| Failure::from_error(&name, e))?;
    line.clear();
    from_peer
        .read_line(&mut line)
        .map_err(|e| fail(&name, format!("receiving process: {e}")))?;
    let status = child
        .wait()
        .map_err(|e| fail(&name, format!("receiving process: {e}")))?;
    cleanup.child = None;
    progress.finish();
    if !status.success() {
        return Err(fail(
            &name,
            format!("the receiving process failed ({status})"),
        ));
    }
    let r = PeerReport::parse(line.trim()).ok_or_else(|| {
        fail(
            &name,
            format!("unreadable report from the receiver: {line:?}"),
        )
    })?;
    if r.errors != 0 {
        return Err(Failure::new(
            Some(&name),
            code::CORRUPTED,
            format!(
                "{} messages arrived out of order, twice or damaged",
                r.errors
            ),
        ));
    }
    // Saturating: the counters live in shared memory, which any process could rewrite.
    let ended = queue.stats();
    let sleeps = [
        (streamed.sender_sleeps, streamed.receiver_sleeps),
        (
            ended.sender_sleeps.saturating_sub(streamed.sender_sleeps),
            ended
                .receiver_sleeps
                .saturating_sub(streamed.receiver_sleeps),
        ),
    ];
    let elapsed = (r.throughput_end_ns.saturating_sub(t0)).max(1) as f64 / 1e9;
    let send_elapsed = t_sent.saturating_sub(t0).max(1) as f64 / 1e9;
    let msgs_per_s = a.messages as f64 / elapsed;
    let bytes_per_s = msgs_per_s * a.size as f64;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    if a.json {
        let out = json!({
            "version": shmq::VERSION,
            "cpus": cpus,
            "messages": a.messages,
            "message_size": a.size,
            "capacity": a.capacity,
            "single_producer_single_consumer": a.single_producer_single_consumer,
            "batch": a.batch,
            "checksum": !a.no_checksum,
            "checksum_implementation": shmq::checksum_implementation(),
            "spin_limit_ns": queue.spin_limit().as_nanos() as u64,
            "elapsed_s": elapsed,
            "send_elapsed_s": send_elapsed,
            "throughput_msgs_per_s": msgs_per_s,
            "throughput_bytes_per_s": bytes_per_s,
            "latency_ns": {
                "samples": r.latency.len(),
                "min": r.latency.first(),
                "p50": percentile(&r.latency, 0.50),
                "p90": percentile(&r.latency, 0.90),
                "p99": percentile(&r.latency, 0.99),
                "p999": percentile(&r.latency, 0.999),
                "max": r.latency.last(),
            },
            "sleeps": {
                "throughput": { "sends": sleeps[0].0, "receives": sleeps[0].1 },
                "latency": { "sends": sleeps[1].0, "receives": sleeps[1].1 },
            },
        });
        println!("{out}");
        return Ok(());
    }
    let us =
        |v: Option<u64>| v.map_or_else(|| "-".into(), |ns| format!("{:.1} us", ns as f64 / 1e3));
    println!(
        "shmq {} bench: 1 producer and 1 consumer process, {cpus} CPUs, capacity {}, {} byte messages{}{}{}{}",
        shmq::VERSION,
        a.capacity,
        a.size,
        if a.single_producer_single_consumer {
            ", single-producer/single-consumer queue"
        } else {
            ""
        },
        batches(a.batch),
        if a.no_checksum {
            ", checksums off".to_string()
        } else {
            format!(", checksums: {}", shmq::checksum_implementation())
        },
        match a.spin_us {
            Some(us) => format!(", polling {us} us before sleeping"),
            None => String::new(),
        },
    );
    println!(
        "throughput  {} messages in {elapsed:.3} s: {:.0} msg/s, {:.1} MB/s",
        a.messages,
        msgs_per_s,
        bytes_per_s / 1e6
    );
    println!(
        "latency     one-way to an idle receiver, {} samples: min {}  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        r.latency.len(),
        us(r.latency.first().copied()),
        us(percentile(&r.latency, 0.50)),
        us(percentile(&r.latency, 0.90)),
        us(percentile(&r.latency, 0.99)),
        us(percentile(&r.latency, 0.999)),
        us(r.latency.last().copied()),
    );
    println!(
        "sleeps      calls that polled past the spin limit and slept: throughput {} sends, {} \
         receives; latency {} receives",
        sleeps[0].0, sleeps[0].1, sleeps[1].1
    );
    Ok(())
}

/// How the throughput phase moves messages, for the text output.
fn batches(batch: u64) -> String {
    if batch == 1 {
        String::new()
    } else {
        format!(", up to {batch} per call")
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn percentile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(rank).copied()
}

/// What the receiving process reports, as one JSON line on its stdout.
#[derive(Debug)]
struct PeerReport {
    throughput_end_ns: u64,
    errors: u64,
    /// One-way latencies of the latency phase, sorted, in nanoseconds.
    latency: Vec<u64>,
}

impl PeerReport {
    fn parse(line: &str) -> Option<PeerReport> {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let latency = v
            .get("latency")?
            .as_array()?
            .iter()
            .map(serde_json::Value::as_u64)
            .collect::<Option<Vec<u64>>>()?;
        Some(PeerReport {
            throughput_end_ns: v.get("throughput_end_ns")?.as_u64()?,
            errors: v.get("errors")?.as_u64()?,
            latency,
        })
    }
}

/// The receiving side: checks every message's id and size, timestamps the end of the
/// throughput phase and each latency message's arrival, and reports once shut down.
pub fn peer(a: PeerArgs) -> CmdResult {
    let name = a.name.as_str();
    let queue = CrossProcessQueue::connect(name).map_err(|e| Failure::from_error(name, e))?;
    set_spin(&queue, a.spin_us);
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(Failure::from_output)?;
    let size = queue.message_size();
    let batch = (a.batch as usize).clamp(1, shmq::RECV_BATCH_MAX);
    let mut buf = vec![0u8; size * batch];
    let mut metas = Vec::with_capacity(batch);
    let mut expected = 0u64;
    let mut errors = 0u64;
    let mut throughput_end_ns = 0;
    let mut latency = Vec::with_capacity(a.latency_samples as usize);
    loop {
        // One at a time once the throughput phase is over: latency messages come alone.
        let received = if batch > 1 && expected < a.messages {
            queue.recv_batch(&mut buf, &mut metas, Some(PEER_WAIT))
        } else {
            queue
                .recv_with(&mut buf[..size], Some(PEER_WAIT))
                .map(|meta| {
                    metas.clear();
                    metas.push(meta);
                    1
                })
        };
        match received {
            Ok(_) => {
                let now = mono_ns();
                for meta in &metas {
                    if meta.id != expected || meta.len != a.size {
                        errors += 1;
                    }
                    expected = meta.id + 1;
                    if meta.id + 1 == a.messages {
                        throughput_end_ns = now;
                    } else if meta.id >= a.messages {
                        latency.push(now.saturating_sub(meta.timestamp_ns));
                    }
                }
            }
            Err(shmq::Error::Closed) => break,
            Err(e) => return Err(Failure::from_error(name, e)),
        }
    }
    if expected != a.messages + a.latency_samples {
        errors += 1;
    }
    latency.sort_unstable();
    let report = json!({
        "throughput_end_ns": throughput_end_ns,
        "errors": errors,
        "latency": latency,
    });
    writeln!(out, "{report}")
        .and_then(|()| out.flush())
        .map_err(Failure::from_output)
}
