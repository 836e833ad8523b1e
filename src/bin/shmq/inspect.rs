//! Commands that look at queues without joining them: info, ls, watch.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{json, Value};
use shmq::admin::{self, Found, QueueView};
use shmq::{QueueInfo, RoleHolder, Stats};

use crate::{code, CmdResult, Failure};

fn open(name: &str) -> Result<QueueView, Failure> {
    QueueView::open(name).map_err(|e| Failure::from_error(name, e))
}

fn print(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(Failure::from_output)
}

// ----- formatting helpers ----------------------------------------------------------------

/// `ns` since the Unix epoch as ISO 8601 UTC with milliseconds, or "-" for 0 (unknown).
pub fn utc(ns: u64) -> String {
    if ns == 0 {
        return "-".into();
    }
    let secs = ns / 1_000_000_000;
    let millis = (ns / 1_000_000) % 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The user name for `uid` from /etc/passwd, or the number (users from other name
/// services, or no permission to read the file).
pub fn user_name(uid: u32) -> String {
    let found = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_string())
            })
        });
    found.unwrap_or_else(|| {
        if uid == u32::MAX {
            "?".into()
        } else {
            uid.to_string()
        }
    })
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "messages_sent": s.messages_sent,
        "messages_received": s.messages_received,
        "bytes_sent": s.bytes_sent,
        "bytes_received": s.bytes_received,
        "send_full": s.send_full,
        "timeouts": s.timeouts,
        "checksum_failures": s.checksum_failures,
        "abandoned": s.abandoned,
        "redelivered": s.redelivered,
        "corrupted": s.corrupted,
        "peak_depth": s.peak_depth,
        "depth": s.depth,
        "capacity": s.capacity,
        "sender_sleeps": s.sender_sleeps,
        "receiver_sleeps": s.receiver_sleeps,
    })
}

/// "live", "stale" or "?" from the number of open handles, plus ",shutdown".
fn state(live: Option<usize>, shutdown: bool) -> String {
    let base = match live {
        Some(0) => "stale",
        Some(_) => "live",
        None => "?",
    };
    if shutdown {
        format!("{base},shutdown")
    } else {
        base.to_string()
    }
}

// ----- info ------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Queue name.
    pub name: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

fn info_json(info: &QueueInfo, stats: &Stats, live: Option<usize>) -> Value {
    let participants: Vec<Value> = info
        .participants
        .iter()
        .map(|p| {
            json!({
                "id": p.id,
                "pid": p.pid,
                "start_time": p.start_time,
                "connected_at_ns": p.connected_at_ns,
                "alive": p.alive,
            })
        })
        .collect();
    json!({
        "name": info.name,
        "layout_version": info.layout_version,
        "capacity": info.capacity,
        "message_size": info.message_size,
        "slot_stride": info.slot_stride,
        "segment_size": info.segment_size,
        "checksum": info.checksum,
        "real_fences": info.real_fences,
        "single_producer_single_consumer": info.single_producer_single_consumer,
        "roles": info.single_producer_single_consumer.then(|| json!({
            "sender": info.sender.map(role_json),
            "receiver": info.receiver.map(role_json),
        })),
        "mode": format!("{:04o}", info.mode),
        "owner_uid": info.owner_uid,
        "owner": user_name(info.owner_uid),
        "creator_pid": info.creator_pid,
        "created_at_ns": info.created_at_ns,
        "shutdown": info.shutdown,
        "live_handles": live,
        "stale": live == Some(0),
        "depth": stats.depth,
        "stats": stats_json(stats),
        "participants": participants,
    })
}

fn role_json(r: RoleHolder) -> Value {
    json!({ "id": r.id, "pid": r.pid, "alive": r.alive })
}

/// "participant 7 (pid 1234, alive)", or "free".
fn role_text(r: Option<RoleHolder>) -> String {
    match r {
        None => "free".to_string(),
        Some(r) => format!(
            "participant {} ({}{})",
            r.id,
            r.pid.map_or(String::new(), |p| format!("pid {p}, ")),
            if r.alive {
                "alive"
            } else {
                "gone: the next handle takes it over"
            }
        ),
    }
}

fn info_text(info: &QueueInfo, s: &Stats, live: Option<usize>) -> String {
    use std::fmt::Write as _;
    let mut t = String::new();
    let live_text = match live {
        Some(0) => "stale: no process has it open".to_string(),
        Some(1) => "live: 1 handle open".to_string(),
        Some(n) => format!("live: {n} handles open"),
        None => "unknown (cannot test liveness locks)".to_string(),
    };
    let pct = if s.capacity > 0 {
        s.depth as f64 * 100.0 / s.capacity as f64
    } else {
        0.0
    };
    let _ = writeln!(t, "queue          {}", info.name);
    let _ = writeln!(t, "state          {live_text}");
    let _ = writeln!(
        t,
        "shut down      {}",
        if info.shutdown { "yes" } else { "no" }
    );
    let _ = writeln!(t, "depth          {} / {} ({pct:.1}%)", s.depth, s.capacity);
    let _ = writeln!(
        t,
        "message size   {} bytes (slot stride {}, segment {} bytes)",
        info.message_size, info.slot_stride, info.segment_size
    );
    let _ = writeln!(
        t,
        "checksums      {}",
        if info.checksum { "on (CRC32C)" } else { "off" }
    );
    let _ = writeln!(
        t,
        "concurrency    {}",
        if info.single_producer_single_consumer {
            "single producer, single consumer (one sending and one receiving handle at a time)"
        } else {
            "multiple producers, multiple consumers"
        }
    );
    let _ = writeln!(
        t,
        "fences         {}",
        if info.real_fences {
            "real, in every send and receive: a process without membarrier joined"
        } else {
            "light (a sleeper pays a membarrier)"
        }
    );
    if info.single_producer_single_consumer {
        let _ = writeln!(t, "sending role   {}", role_text(info.sender));
        let _ = writeln!(t, "receiving role {}", role_text(info.receiver));
    }
    let _ = writeln!(t, "mode           {:04o}", info.mode);
    let _ = writeln!(
        t,
        "owner          {} (uid {})",
        user_name(info.owner_uid),
        info.owner_uid
    );
    let _ = writeln!(
        t,
        "created        {} by pid {}",
        utc(info.created_at_ns),
        info.creator_pid
    );
    let _ = writeln!(t, "layout         version {}", info.layout_version);
    let _ = writeln!(t, "\nstatistics");
    for (label, value) in [
        ("messages sent", s.messages_sent),
        ("messages received", s.messages_received),
        ("bytes sent", s.bytes_sent),
        ("bytes received", s.bytes_received),
        ("peak depth", s.peak_depth),
        ("sends refused (full)", s.send_full),
        ("timeouts", s.timeouts),
        ("sends that slept", s.sender_sleeps),
        ("receives that slept", s.receiver_sleeps),
    ] {
        let _ = writeln!(t, "  {label:<22} {value}");
    }
    let healthy = s.checksum_failures + s.abandoned + s.redelivered + s.corrupted == 0;
    let _ = writeln!(
        t,
        "\nhealth         {}",
        if healthy {
            "ok"
        } else {
            "some messages were lost, dropped or redelivered (see below)"
        }
    );
    for (label, value) in [
        ("checksum failures", s.checksum_failures),
        ("abandoned slots", s.abandoned),
        ("redelivered", s.redelivered),
        ("corrupted", s.corrupted),
    ] {
        let _ = writeln!(t, "  {label:<22} {value}");
    }
    let _ = writeln!(t, "\nprocesses (the {} most recent connections)", 64);
    if info.participants.is_empty() {
        let _ = writeln!(t, "  none");
    } else {
        let _ = writeln!(t, "  {:>8} {:>8} {:<6} CONNECTED", "ID", "PID", "STATE");
        for p in &info.participants {
            let _ = writeln!(
                t,
                "  {:>8} {:>8} {:<6} {}",
                p.id,
                p.pid,
                if p.alive { "alive" } else { "gone" },
                utc(p.connected_at_ns)
            );
        }
    }
    t
}

pub fn info(a: InfoArgs) -> CmdResult {
    let view = open(&a.name)?;
    let info = view.info();
    let stats = view.stats();
    let live = view.live_handles();
    if a.json {
        print(&format!("{}\n", info_json(&info, &stats, live)))
    } else {
        print(&info_text(&info, &stats, live))
    }
}

// ----- ls --------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn ls(a: LsArgs) -> CmdResult {
    let found =
        admin::scan().map_err(|e| Failure::new(Some("/dev/shm"), code::FAILURE, e.to_string()))?;
    let mut rows = Vec::new();
    let mut json_rows = Vec::new();
    for f in found {
        match f {
            Found::Queue(view) => {
                let info = view.info();
                let stats = view.stats();
                let live = view.live_handles();
                let owner = user_name(info.owner_uid);
                json_rows.push(json!({
                    "name": info.name,
                    "depth": stats.depth,
                    "capacity": info.capacity,
                    "message_size": info.message_size,
                    "mode": format!("{:04o}", info.mode),
                    "owner": owner,
                    "owner_uid": info.owner_uid,
                    "live_handles": live,
                    "stale": live == Some(0),
                    "shutdown": info.shutdown,
                }));
                rows.push([
                    info.name.clone(),
                    stats.depth.to_string(),
                    info.capacity.to_string(),
                    info.message_size.to_string(),
                    format!("{:04o}", info.mode),
                    owner,
                    state(live, info.shutdown),
                ]);
            }
            Found::Unreadable { name, error } => {
                crate::report(&Failure::from_error(&name, error));
            }
        }
    }
    if a.json {
        return print(&format!("{}\n", Value::Array(json_rows)));
    }
    let header = [
        "NAME", "DEPTH", "CAPACITY", "MSG_SIZE", "MODE", "OWNER", "STATE",
    ]
    .map(String::from);
    let mut widths = [0usize; 7];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            // Names and words left-aligned, numbers right-aligned.
            let cell = if matches!(i, 1..=3) {
                format!("{cell:>w$}")
            } else {
                format!("{cell:<w$}")
            };
            line.push_str(&cell);
            line.push_str("  ");
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    print(&text)
}

// ----- watch -----------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Queue name.
    pub name: String,
    /// Time between samples, in milliseconds.
    #[arg(short, long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub interval: u64,
    /// Stop after N samples (default: run until interrupted).
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// One JSON object per sample and line.
    #[arg(long)]
    pub json: bool,
}

struct Sample {
    at: Instant,
    stats: Stats,
}

/// Per-second rate of a counter between two samples; `None` for the first sample.
fn rate(prev: Option<&Sample>, now: &Sample, f: impl Fn(&Stats) -> u64) -> Option<f64> {
    let prev = prev?;
    let dt = now.at.duration_since(prev.at).as_secs_f64();
    (dt > 0.0).then(|| f(&now.stats).saturating_sub(f(&prev.stats)) as f64 / dt)
}

fn fmt_rate(r: Option<f64>) -> String {
    r.map_or_else(|| "-".into(), |r| format!("{r:.1}"))
}

pub fn watch(a: WatchArgs) -> CmdResult {
    let view = open(&a.name)?;
    let terminal = std::io::stdout().is_terminal() && !a.json;
    let mut prev: Option<Sample> = None;
    let mut n = 0u64;
    loop {
        if view.is_unlinked() {
            return Err(Failure::new(
                Some(&a.name),
                code::NOT_FOUND,
                "queue was removed",
            ));
        }
        let sample = Sample {
            at: Instant::now(),
            stats: view.stats(),
        };
        let live = view.live_handles();
        let shutdown = view.is_shutdown();
        let s = &sample.stats;
        let send_rate = rate(prev.as_ref(), &sample, |s| s.messages_sent);
        let recv_rate = rate(prev.as_ref(), &sample, |s| s.messages_received);
        let bytes_in = rate(prev.as_ref(), &sample, |s| s.bytes_sent);
        let bytes_out = rate(prev.as_ref(), &sample, |s| s.bytes_received);
        let text = if a.json {
            format!(
                "{}\n",
                json!({
                    "time_ns": now_ns(),
                    "name": a.name,
                    "depth": s.depth,
                    "capacity": s.capacity,
                    "send_rate": send_rate,
                    "recv_rate": recv_rate,
                    "bytes_sent_rate": bytes_in,
                    "bytes_received_rate": bytes_out,
                    "live_handles": live,
                    "shutdown": shutdown,
                    "stats": stats_json(s),
                })
            )
        } else if terminal {
            // Home, clear to end of screen, then the whole view.
            format!(
                "\x1b[H\x1b[J{name}  {time}  every {ms} ms  ({state})\n\n\
                 depth        {depth} / {cap}  (peak {peak})\n\
                 send rate    {sr} msg/s  {br} B/s\n\
                 recv rate    {rr} msg/s  {bo} B/s\n\
                 sent         {sent}  ({bs} bytes)\n\
                 received     {recv}  ({brx} bytes)\n\
                 full         {full}\n\
                 timeouts     {to}\n\
                 slept        {ss} sends, {rs} receives\n\
                 health       checksum failures {cf}, abandoned {ab}, redelivered {rd}, corrupted {co}\n",
                name = a.name,
                time = utc(now_ns()),
                ms = a.interval,
                state = state(live, shutdown),
                depth = s.depth,
                cap = s.capacity,
                peak = s.peak_depth,
                sr = fmt_rate(send_rate),
                br = fmt_rate(bytes_in),
                rr = fmt_rate(recv_rate),
                bo = fmt_rate(bytes_out),
                sent = s.messages_sent,
                bs = s.bytes_sent,
                recv = s.messages_received,
                brx = s.bytes_received,
                full = s.send_full,
                to = s.timeouts,
                ss = s.sender_sleeps,
                rs = s.receiver_sleeps,
                cf = s.checksum_failures,
                ab = s.abandoned,
                rd = s.redelivered,
                co = s.corrupted,
            )
        } else {
            format!(
                "time={} depth={} capacity={} sent={} received={} send_rate={} recv_rate={} \
                 full={} timeouts={} checksum_failures={} abandoned={} redelivered={} \
                 sender_sleeps={} receiver_sleeps={} live={} shutdown={}\n",
                utc(now_ns()),
                s.depth,
                s.capacity,
                s.messages_sent,
                s.messages_received,
                fmt_rate(send_rate),
                fmt_rate(recv_rate),
                s.send_full,
                s.timeouts,
                s.checksum_failures,
                s.abandoned,
                s.redelivered,
                s.sender_sleeps,
                s.receiver_sleeps,
                live.map_or_else(|| "?".into(), |l| l.to_string()),
                shutdown
            )
        };
        print(&text)?;
        prev = Some(sample);
        n += 1;
        if a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(a.interval));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "-");
        assert_eq!(utc(1), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(utc(1_700_000_000_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn state_marks_stale_and_shutdown() {
        assert_eq!(state(Some(0), false), "stale");
        assert_eq!(state(Some(3), true), "live,shutdown");
        assert_eq!(state(None, false), "?");
    }
}
