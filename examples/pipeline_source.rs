//! Pipeline stage 1 of 3 (Rust): generates N records into queue A, then shuts A down.
//!
//! Record `i` (1..=N) is sent with message id `i`, the current time as its timestamp, and
//! the text `rec <i> <v>` where `v = (i * 2654435761) mod 1000003`. The C stage
//! (`examples-c/pipeline_transform.c`) turns it into `rec <i> <v> <3v+7> rust>c` in queue B
//! and the Python stage (`bindings/python/examples/pipeline_sink.py`) recomputes both
//! numbers to prove every record passed through every stage exactly once.
//!
//! `cargo run --example pipeline_source -- --queue A [--records N --capacity C]`
//!
//! With `--join` it is one producer among several (the cross-language tests use it so): it
//! connects to the existing queue instead of creating it, sends records `--first-id` ..
//! `--first-id + N - 1`, and leaves the queue open for the others.

use shmq::{CrossProcessQueue, Message, OpenMode};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// The value of record `i` (the sink recomputes it).
fn value(i: u64) -> u64 {
    i.wrapping_mul(2_654_435_761) % 1_000_003
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_name = arg("--queue").unwrap_or_else(|| "pipeline_a".into());
    let records: u64 = arg("--records").map_or(Ok(1000), |s| s.parse())?;
    let capacity: usize = arg("--capacity").map_or(Ok(64), |s| s.parse())?;
    let first: u64 = arg("--first-id").map_or(Ok(1), |s| s.parse())?;
    let join = std::env::args().any(|a| a == "--join");

    let queue = if join {
        CrossProcessQueue::connect(&queue_name)?
    } else {
        // This stage owns queue A: a stale queue of the same name is replaced.
        CrossProcessQueue::options()
            .open_mode(OpenMode::Replace)
            .create(&queue_name, capacity, 128)?
    };
    println!(
        "[rust source] {} queue {queue_name} ({} slots x {} bytes), sending {records} records (PID: {})",
        if join { "joined" } else { "created" },
        queue.capacity(),
        queue.message_size(),
        std::process::id()
    );
    let mut sum = 0u64;
    for i in first..first + records {
        let v = value(i);
        sum += v;
        queue.send_blocking(&Message::new(i, format!("rec {i} {v}")))?;
    }
    if join {
        println!("[rust source] sent {records} records (ids {first}..); queue left open");
        return Ok(());
    }
    queue.shutdown()?;
    println!(
        "[rust source] sent {records} records (sum of values {sum}); queue {queue_name} shut down"
    );
    Ok(())
}
