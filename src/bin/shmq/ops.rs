//! Commands that act on queues: create, send, recv, rm, shutdown.

use std::io::{Read, Write};
use std::time::Duration;

use clap::Args;
use shmq::{CrossProcessQueue, OpenMode};

use crate::{code, CmdResult, Failure};

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Queue name (A-Z a-z 0-9 . _ -, up to 200 characters).
    pub name: String,
    /// Number of message slots.
    #[arg(short, long)]
    pub capacity: usize,
    /// Largest message, in bytes.
    #[arg(short = 's', long)]
    pub message_size: usize,
    /// Permission bits, in octal (0600: owner only; 0660: owner and group).
    #[arg(short, long, default_value = "0600", value_parser = parse_mode)]
    pub mode: u32,
    /// Do not compute and verify a CRC32C per message.
    #[arg(long)]
    pub no_checksum: bool,
    /// One sender and one receiver at a time, several times faster between two processes:
    /// the first handle that sends keeps the sending role until it closes (likewise for
    /// receiving); other handles that try fail with "role ... is held".
    #[arg(long = "single-producer-single-consumer", visible_alias = "spsc")]
    pub single_producer_single_consumer: bool,
    /// Remove an existing queue of that name first (processes attached to it keep the old one).
    #[arg(long, conflicts_with = "exist_ok")]
    pub replace: bool,
    /// Succeed if a queue of that name and geometry already exists.
    #[arg(long)]
    pub exist_ok: bool,
}

fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    let mode = u32::from_str_radix(digits, 8)
        .map_err(|_| format!("'{s}' is not an octal mode such as 0660"))?;
    if mode > 0o777 {
        return Err(format!("mode {s} has bits outside 0777"));
    }
    Ok(mode)
}

pub fn create(a: CreateArgs) -> CmdResult {
    let open_mode = if a.replace {
        OpenMode::Replace
    } else if a.exist_ok {
        OpenMode::OpenOrCreate
    } else {
        OpenMode::CreateNew
    };
    CrossProcessQueue::options()
        .mode(a.mode)
        .checksum(!a.no_checksum)
        .single_producer_single_consumer(a.single_producer_single_consumer)
        .open_mode(open_mode)
        .create(&a.name, a.capacity, a.message_size)
        .map(drop)
        .map_err(|e| Failure::from_error(&a.name, e))
}

/// `--timeout MS`: absent means wait without limit.
fn timeout(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

#[derive(Args, Debug)]
pub struct SendArgs {
    /// Queue name.
    pub name: String,
    /// The message; standard input is read when absent.
    pub data: Option<String>,
    /// Send each line (without its newline) as a separate message.
    #[arg(short, long)]
    pub lines: bool,
    /// Wait at most MS milliseconds for room (per message); 0: fail at once when full.
    /// Without it, wait as long as it takes.
    #[arg(short, long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Message id (default: the message's position in the queue); with --lines, the id of
    /// the first line, incremented for each following one.
    #[arg(long)]
    pub id: Option<u64>,
}

pub fn send(a: SendArgs) -> CmdResult {
    let name = a.name.as_str();
    let queue = CrossProcessQueue::connect(name).map_err(|e| Failure::from_error(name, e))?;
    let data = match a.data {
        Some(d) => d.into_bytes(),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| {
                Failure::new(Some(name), code::FAILURE, format!("cannot read stdin: {e}"))
            })?;
            buf
        }
    };
    let messages: Vec<&[u8]> = if a.lines {
        let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
        if data.last() == Some(&b'\n') || data.is_empty() {
            lines.pop(); // the "line" after the final newline
        }
        lines
    } else {
        vec![&data[..]]
    };
    // Check every size first so that --lines sends all or (for this reason) nothing.
    if let Some((i, m)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.len() > queue.message_size())
    {
        let which = if a.lines {
            format!("line {} is", i + 1)
        } else {
            "message is".to_string()
        };
        return Err(Failure::new(
            Some(name),
            code::INVALID,
            format!(
                "{which} {} bytes; the queue's message size is {}",
                m.len(),
                queue.message_size()
            ),
        ));
    }
    let total = messages.len();
    for (i, m) in messages.into_iter().enumerate() {
        let id = a.id.map(|id| id.wrapping_add(i as u64));
        if let Err(e) = queue.send_with(id, now_ns(), m, timeout(a.timeout)) {
            let mut f = Failure::from_error(name, e);
            if total > 1 {
                f.reason = format!("{} (sent {i} of {total} messages)", f.reason);
            }
            return Err(f);
        }
    }
    Ok(())
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(Args, Debug)]
pub struct RecvArgs {
    /// Queue name.
    pub name: String,
    /// Number of messages to receive.
    #[arg(short = 'n', long, default_value_t = 1, conflicts_with = "follow")]
    pub count: u64,
    /// Keep receiving until the queue is shut down and drained (then exit 0).
    #[arg(short, long)]
    pub follow: bool,
    /// Wait at most MS milliseconds for each message; 0: do not wait. Without it, wait as
    /// long as it takes.
    #[arg(short, long, value_name = "MS")]
    pub timeout: Option<u64>,
    /// Write the messages' bytes exactly, with nothing between them.
    #[arg(long, conflicts_with = "null")]
    pub raw: bool,
    /// End each message with a NUL byte instead of a newline.
    #[arg(short = '0', long)]
    pub null: bool,
}

pub fn recv(a: RecvArgs) -> CmdResult {
    let name = a.name.as_str();
    let queue = CrossProcessQueue::connect(name).map_err(|e| Failure::from_error(name, e))?;
    let separator: &[u8] = match (a.raw, a.null) {
        (true, _) => b"",
        (_, true) => b"\0",
        _ => b"\n",
    };
    let mut buf = vec![0u8; queue.message_size()];
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut received = 0u64;
    while a.follow || received < a.count {
        match queue.recv_with(&mut buf, timeout(a.timeout)) {
            Ok(meta) => {
                received += 1;
                out.write_all(&buf[..meta.len])
                    .and_then(|()| out.write_all(separator))
                    .and_then(|()| out.flush())
                    .map_err(Failure::from_output)?;
            }
            Err(shmq::Error::Closed) if a.follow => return Ok(()),
            Err(e) => {
                let mut f = Failure::from_error(name, e);
                if received > 0 && !a.follow {
                    f.reason = format!("{} (received {received} of {})", f.reason, a.count);
                }
                return Err(f);
            }
        }
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Queue names.
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not fail for queues that do not exist.
    #[arg(short, long)]
    pub force: bool,
}

/// Removes every name it can; reports each failure and exits with the first one's code.
pub fn rm(a: RmArgs) -> CmdResult {
    let mut first_code = None;
    for name in &a.names {
        match CrossProcessQueue::unlink(name) {
            Ok(()) => {}
            Err(shmq::Error::NotFound { .. }) if a.force => {}
            Err(e) => {
                let f = Failure::from_error(name, e);
                crate::report(&f);
                first_code.get_or_insert(f.code);
            }
        }
    }
    // Already reported: an empty reason prints nothing more.
    first_code.map_or(Ok(()), |c| Err(Failure::new(None, c, "")))
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// Queue name.
    pub name: String,
}

pub fn shutdown(a: NameArg) -> CmdResult {
    let name = a.name.as_str();
    CrossProcessQueue::connect(name)
        .and_then(|q| q.shutdown())
        .map_err(|e| Failure::from_error(name, e))
}
