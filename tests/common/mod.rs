//! Helpers shared by the integration tests: unique queue names that clean up after
//! themselves, and child processes that re-run the test binary in a given role.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// A queue name unique to this process and call, unlinked when dropped (even on panic).
pub struct TestQueue {
    pub name: String,
}

impl TestQueue {
    pub fn new(tag: &str) -> TestQueue {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        TestQueue {
            name: format!("t{}_{tag}_{n}", std::process::id()),
        }
    }
}

impl Drop for TestQueue {
    fn drop(&mut self) {
        let _ = shmq::CrossProcessQueue::unlink(&self.name);
    }
}

/// Environment variable that selects a child role.
pub const ROLE_ENV: &str = "SHMQ_TEST_ROLE";

/// Runs this test binary again as a child that executes the ignored test `entry` with
/// `SHMQ_TEST_ROLE=role` and extra environment. The entry test reads them and acts.
pub fn spawn_role(entry: &str, role: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        entry,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Kills every child still running when dropped (so a failing test leaves no strays).
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads a child's whole stdout and waits for it; panics if it failed. Returns the lines
/// the child printed with [`report`]'s marker (the test harness prints its own lines too).
pub fn finish(child: &mut Child) -> String {
    use std::io::Read;
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).expect("read child stdout");
    }
    let status = child.wait().expect("wait for child");
    assert!(status.success(), "child failed: {status}\n{out}");
    out.lines()
        .filter_map(|l| l.split_once(MARK).map(|(_, r)| r))
        .collect::<Vec<_>>()
        .join("\n")
}

const MARK: &str = "@@ ";

/// Prints a line for the parent's [`finish`] to return.
pub fn report(line: impl std::fmt::Display) {
    println!("\n{MARK}{line}");
}
