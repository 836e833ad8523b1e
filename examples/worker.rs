//! The design note's worker: connects to `task_queue`, processes tasks with 300 ms of
//! simulated work each, and exits when the producer has shut the queue down and it is drained.
//!
//! `cargo run --example worker -- worker-1 [--queue NAME --work-ms MS]`

use std::time::{Duration, Instant};

use shmq::{CrossProcessQueue, Error};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn connect(name: &str) -> shmq::Result<CrossProcessQueue> {
    // Producers should start first; give one a few seconds to create the queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match CrossProcessQueue::connect(name) {
            Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            other => return other,
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let worker = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with("--"))
        .unwrap_or_else(|| "worker-1".into());
    let queue_name = arg("--queue").unwrap_or_else(|| "task_queue".into());
    let work = Duration::from_millis(arg("--work-ms").map_or(Ok(300), |s| s.parse())?);

    println!("starting worker {worker} (PID: {})", std::process::id());
    let queue = connect(&queue_name)?;
    println!("[{worker}] connected to task queue {queue_name}");
    let mut done = 0;
    while let Some(message) = queue.recv()? {
        let text = String::from_utf8_lossy(&message.data);
        println!("[{worker}] processing task {}: {text}", message.id);
        let started = Instant::now();
        std::thread::sleep(work);
        println!(
            "[{worker}] finished task {} (took {}ms)",
            message.id,
            started.elapsed().as_millis()
        );
        println!(
            "[{worker}] queue status: {}/{} messages left",
            queue.len(),
            queue.capacity()
        );
        done += 1;
    }
    println!("[{worker}] queue shut down and drained; processed {done} tasks");
    Ok(())
}
