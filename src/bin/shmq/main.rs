//! `shmq`: create, inspect, feed, drain, watch and benchmark shmq queues.
//!
//! Every command prints its results on stdout and at most one error line on stderr,
//! `shmq: <queue>: <reason>`, and exits with one of the codes in [`code`] (documented in
//! `shmq --help` and docs/OPERATING.md), so scripts can tell "not found" from "timed out".

mod bench;
mod inspect;
mod ops;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes. Stable: scripts rely on them; never renumber, only add.
pub mod code {
    pub const OK: u8 = 0;
    /// Any failure without a more specific code (system call failed, I/O error, ...).
    pub const FAILURE: u8 = 1;
    /// Bad command line or input (also clap's code for usage errors), message too large.
    pub const INVALID: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const TIMEOUT: u8 = 4;
    /// `recv --timeout 0` found no message.
    pub const EMPTY: u8 = 5;
    /// `send --timeout 0` found no room.
    pub const FULL: u8 = 6;
    /// The queue was shut down (and, for `recv`, drained).
    pub const CLOSED: u8 = 7;
    pub const EXISTS: u8 = 8;
    pub const PERMISSION: u8 = 9;
    /// Not a valid queue, an incompatible layout version, or a corrupted message.
    pub const CORRUPTED: u8 = 10;
}

/// The exit-code table, appended to every command's `--help`.
macro_rules! exit_codes {
    () => {
        "
Exit codes:
  0  success                     6  queue full (send --timeout 0)
  1  other failure               7  queue shut down (and drained, for recv)
  2  invalid input or usage      8  queue already exists
  3  queue not found             9  permission denied
  4  timed out                  10  corrupted data or incompatible queue
  5  queue empty (recv --timeout 0)
Errors are reported on stderr in one line: `shmq: <queue>: <reason>`.
Times are in milliseconds."
    };
}

const MAIN_HELP: &str = concat!(
    "Examples:
  shmq create jobs --capacity 1024 --message-size 4096 --mode 0660
  echo hello | shmq send jobs
  shmq recv jobs --timeout 1000
  shmq ls
  shmq watch jobs --interval 500
  shmq info jobs --json | jq .stats
  shmq rm jobs
",
    exit_codes!()
);

/// Operate shmq queues: cross-process message queues in named shared memory (/dev/shm).
#[derive(Parser, Debug)]
#[command(name = "shmq", version, after_help = MAIN_HELP, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a queue.
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq create jobs --capacity 1024 --message-size 4096\n",
        "  shmq create jobs -c 100 -s 256 --mode 0660 --replace\n",
        "  shmq create jobs -c 100 -s 256 --exist-ok   # idempotent in scripts\n",
        "  shmq create frames -c 1024 -s 4096 --spsc    # one sender, one receiver: faster\n",
        exit_codes!(),
    ))]
    Create(ops::CreateArgs),
    /// Show a queue's configuration, statistics, processes and health.
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq info jobs\n",
        "  shmq info jobs --json | jq '.stats.messages_sent'\n",
        "\nReads the queue without joining it: works with read permission only.\n",
        exit_codes!(),
    ))]
    Info(inspect::InfoArgs),
    /// List every queue on this machine.
    #[command(
        visible_alias = "list",
        after_help = concat!(
            "Examples:\n",
            "  shmq ls\n",
            "  shmq ls --json | jq -r '.[] | select(.stale) | .name' | xargs -r shmq rm\n",
            "\nQueues are found by the magic number in their header; other files in /dev/shm\n",
            "are ignored. STATE is `live` (some process has it open), `stale` (nobody has),\n",
            "or `shutdown`.\n",
            exit_codes!(),
        )
    )]
    Ls(inspect::LsArgs),
    /// Send a message (DATA, or standard input).
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq send jobs 'hello world'\n",
        "  shmq send jobs < payload.bin\n",
        "  printf 'a\\nb\\nc\\n' | shmq send jobs --lines\n",
        "  shmq send jobs --timeout 0 ping || echo \"full or missing: exit $?\"\n",
        exit_codes!(),
    ))]
    Send(ops::SendArgs),
    /// Receive messages and write them to standard output.
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq recv jobs                      # one message, waiting as long as it takes\n",
        "  shmq recv jobs --count 10 --timeout 500\n",
        "  shmq recv jobs --follow             # until the queue is shut down\n",
        "  shmq recv jobs --follow --timeout 0 # drain what is there (exit 5 when empty)\n",
        "  shmq recv jobs --raw > message.bin\n",
        exit_codes!(),
    ))]
    Recv(ops::RecvArgs),
    /// Remove queues (processes that have them open keep using them).
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq rm jobs\n",
        "  shmq rm -f jobs results   # no error for queues that do not exist\n",
        exit_codes!(),
    ))]
    Rm(ops::RmArgs),
    /// Close a queue for sending: receivers drain it, then stop.
    #[command(after_help = concat!("Examples:\n  shmq shutdown jobs\n", exit_codes!()))]
    Shutdown(ops::NameArg),
    /// Watch a queue's depth, rates and counters.
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq watch jobs\n",
        "  shmq watch jobs --interval 200 --count 50 > samples.txt\n",
        "  shmq watch jobs --json | my-monitoring-agent\n",
        "\nOn a terminal the view is redrawn in place; otherwise one line per sample\n",
        "(key=value pairs) or, with --json, one JSON object per line.\n",
        exit_codes!(),
    ))]
    Watch(inspect::WatchArgs),
    /// Measure throughput and latency between two processes on a fresh queue.
    #[command(after_help = concat!(
        "Examples:\n",
        "  shmq bench\n",
        "  shmq bench --messages 1000000 --size 1024 --capacity 4096\n",
        "  shmq bench --batch 32 --no-checksum --spsc\n",
        "  shmq bench --json\n",
        "  shmq bench --spin-us 500\n",
        "\nThe throughput phase sends as fast as possible; the latency phase sends one\n",
        "message every 200 us or so to an idle receiver (which sleeps on a futex, unless\n",
        "--spin-us keeps it polling that long) and measures the one-way delay. Progress is\n",
        "shown on stderr; figures on stdout.\n",
        exit_codes!(),
    ))]
    Bench(bench::BenchArgs),
    /// The receiving side of `bench` (run by `shmq bench` itself).
    #[command(hide = true, name = "bench-peer")]
    BenchPeer(bench::PeerArgs),
}

/// Why a command failed: printed as `shmq: <queue>: <reason>`, exits with `code`.
#[derive(Debug)]
pub struct Failure {
    pub queue: Option<String>,
    pub reason: String,
    pub code: u8,
}

impl Failure {
    pub fn new(queue: Option<&str>, code: u8, reason: impl Into<String>) -> Failure {
        Failure {
            queue: queue.map(str::to_string),
            reason: reason.into(),
            code,
        }
    }

    /// A library error about `queue`, with its exit code and a reason that does not repeat
    /// the queue name where the library's message would.
    pub fn from_error(queue: &str, e: shmq::Error) -> Failure {
        use shmq::Error as E;
        let (code, reason) = match &e {
            E::NotFound { .. } => (code::NOT_FOUND, "no such queue".to_string()),
            E::AlreadyExists { .. } => (
                code::EXISTS,
                format!("already exists (remove it with `shmq rm {queue}`, or use --replace)"),
            ),
            E::Timeout => (code::TIMEOUT, "timed out".to_string()),
            E::QueueEmpty => (code::EMPTY, "queue is empty".to_string()),
            E::QueueFull => (code::FULL, "queue is full".to_string()),
            E::Closed => (code::CLOSED, "queue is shut down".to_string()),
            E::PermissionDenied { source, .. } => {
                (code::PERMISSION, format!("permission denied ({source})"))
            }
            E::InvalidArgument(_) | E::MessageTooLarge { .. } | E::BufferTooSmall { .. } => {
                (code::INVALID, e.to_string())
            }
            E::CorruptedData(_) | E::IncompatibleVersion { .. } => (code::CORRUPTED, e.to_string()),
            E::RoleTaken { role, holder, .. } => (
                code::FAILURE,
                format!(
                    "single-producer/single-consumer queue whose {role} role is held by live \
                     participant {holder} (see `shmq info {queue}`); close that handle first"
                ),
            ),
            _ => (code::FAILURE, e.to_string()),
        };
        Failure::new(Some(queue), code, reason)
    }

    /// Writing to stdout failed: a closed pipe (`shmq recv q | head -1`) is a normal end.
    pub fn from_output(e: std::io::Error) -> Failure {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::new(None, code::OK, String::new())
        } else {
            Failure::new(None, code::FAILURE, format!("cannot write output: {e}"))
        }
    }
}

pub type CmdResult = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Create(a) => ops::create(a),
        Command::Info(a) => inspect::info(a),
        Command::Ls(a) => inspect::ls(a),
        Command::Send(a) => ops::send(a),
        Command::Recv(a) => ops::recv(a),
        Command::Rm(a) => ops::rm(a),
        Command::Shutdown(a) => ops::shutdown(a),
        Command::Watch(a) => inspect::watch(a),
        Command::Bench(a) => bench::bench(a),
        Command::BenchPeer(a) => bench::peer(a),
    };
    match result {
        Ok(()) => ExitCode::from(code::OK),
        Err(f) => {
            report(&f);
            ExitCode::from(f.code)
        }
    }
}

/// Prints a failure's one line on stderr (nothing for a quiet end such as a closed pipe).
pub fn report(f: &Failure) {
    if f.reason.is_empty() {
        return;
    }
    match &f.queue {
        Some(q) => eprintln!("shmq: {q}: {}", f.reason),
        None => eprintln!("shmq: {}", f.reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
