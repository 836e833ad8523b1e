//! The design note's producer: creates `task_queue` (100 x 1024), sends 20 tasks, then
//! shuts the queue down so workers exit once it is drained.
//!
//! `cargo run --example producer [-- --queue NAME --tasks N --interval-ms MS]`

use std::time::Duration;

use shmq::{CrossProcessQueue, Message, OpenMode};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue_name = arg("--queue").unwrap_or_else(|| "task_queue".into());
    let tasks: u64 = arg("--tasks").map_or(Ok(20), |s| s.parse())?;
    let interval = Duration::from_millis(arg("--interval-ms").map_or(Ok(50), |s| s.parse())?);

    println!("=== shmq producer (PID: {}) ===", std::process::id());
    // The producer owns the queue: a stale one left by an earlier (or crashed) run is
    // replaced, never reused.
    let queue = CrossProcessQueue::options()
        .open_mode(OpenMode::Replace)
        .create(&queue_name, 100, 1024)?;
    println!(
        "created queue {queue_name} ({} slots x {} bytes)",
        queue.capacity(),
        queue.message_size()
    );
    println!("sending tasks");
    for i in 1..=tasks {
        let text = format!("Task {i} - Process this data");
        queue.send_blocking(&Message::new(i, text.as_bytes()))?;
        println!("[rust producer] sent task {i}: {text}");
        println!(
            "queue status: {}/{} messages",
            queue.len(),
            queue.capacity()
        );
        std::thread::sleep(interval);
    }
    queue.shutdown()?;
    println!("producer done, sent {tasks} tasks (queue shut down; workers drain it)");
    Ok(())
}
