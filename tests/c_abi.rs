//! Drives the C side from `cargo test`: builds the C test suite (tests/c) and the C examples
//! (examples-c) with `-std=c11 -Wall -Wextra -Werror -pedantic` against include/shmq.h (and
//! the C++ suite with `-std=c++17` against include/shmq.hpp) and the libshmq.so that cargo
//! built for this very test run, runs the suites plain and under AddressSanitizer +
//! UndefinedBehaviorSanitizer, and runs C and Rust processes on one queue.
//!
//! The library is the `cdylib` that cargo builds beside this test binary, so this works with
//! any `CARGO_TARGET_DIR`: `<target dir>/<profile>/deps/libshmq.so`, which the same rustc
//! run as the test's own copy of the crate writes (`cargo test` refreshes it but not the
//! `<profile>/libshmq.so` that `cargo build` puts beside it, which may be stale), else
//! `<profile>/libshmq.so`. C programs run with `LD_LIBRARY_PATH` set to that directory alone:
//! cargo's own `LD_LIBRARY_PATH` lists `<profile>` first, which would override the programs'
//! RUNPATH and load the possibly stale copy.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{spawn_role, Children, TestQueue, ROLE_ENV};
use shmq::{CrossProcessQueue, Error};

/// How long any child process may run before the test gives up on it.
const CHILD_LIMIT: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `<target dir>/<profile>`: where cargo put libshmq.so for this run.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // <target>/<profile>/deps/c_abi-<hash>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        if dir.join("libshmq.so").exists() {
            return Ok(());
        }
        // `cargo test` does not always link the cdylib before running integration tests
        // (on a clean tree it may come only with the doc-tests): build it, same profile and
        // target dir. Cargo does not hold its build lock while tests run.
        let target = dir.parent().expect("<target>/<profile>");
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "--lib", "--manifest-path"])
            .arg(root().join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", target);
        if dir.file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        if cfg!(feature = "crash-points") {
            cargo.args(["--features", "crash-points"]); // same build as the tests: no rebuild
        }
        let status = cargo
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() && dir.join("libshmq.so").exists() {
            Ok(())
        } else {
            Err(format!(
                "cargo build --lib did not produce {}/libshmq.so",
                dir.display()
            ))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    dir
}

/// The directory of the libshmq.so built with this test binary (see the module notes).
fn lib_dir() -> PathBuf {
    let profile = profile_dir();
    let deps = profile.join("deps");
    if deps.join("libshmq.so").exists() {
        deps
    } else {
        profile
    }
}

/// A command running the C program `path` against [`lib_dir`]'s library.
fn c_command(path: PathBuf) -> Command {
    let mut command = Command::new(path);
    command.env("LD_LIBRARY_PATH", lib_dir());
    command
}

fn run_make(dir: &Path, out: &Path, extra: &[&str]) -> Result<(), String> {
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(dir)
        .arg(format!("OUT={}", out.display()))
        .arg(format!("LIBDIR={}", lib_dir().display()))
        .args(extra)
        .env_remove("CFLAGS")
        .output()
        .map_err(|e| format!("cannot run make: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "make -C {} {extra:?} failed:\n{}{}",
            dir.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Builds tests/c once per test process (`SAN=1` in its own directory); returns the
/// directory with `test_api`, `test_cpp` and `xlang`.
fn c_programs(sanitized: bool) -> PathBuf {
    static PLAIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static SANITIZED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let (cell, name, extra): (_, _, &[&str]) = if sanitized {
        (&SANITIZED, "san", &["SAN=1"])
    } else {
        (&PLAIN, "plain", &[])
    };
    cell.get_or_init(|| {
        let out = profile_dir().join("c-tests").join(name);
        run_make(&root().join("tests/c"), &out, extra).map(|()| out)
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits for `child` at most [`CHILD_LIMIT`], reading its stdout meanwhile.
fn wait_output(mut child: Child, what: &str) -> Output {
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut text);
        }
        text
    });
    let deadline = Instant::now() + CHILD_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {CHILD_LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: reader.join().expect("stdout reader"),
        stderr: Vec::new(),
    }
}

/// Removes every queue whose name starts with `prefix` (what a crashed C run left).
struct PrefixCleanup(String);

impl Drop for PrefixCleanup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with(&format!("shmq.{}_", self.0)) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// Runs the suite `program` of tests/c (`test_api`: the C ABI; `test_cpp`: the C++ header).
fn run_c_suite(program: &str, sanitized: bool) {
    let dir = c_programs(sanitized);
    let prefix = format!(
        "{}{}{}",
        if program == "test_cpp" { "x" } else { "c" },
        std::process::id(),
        if sanitized { "s" } else { "p" }
    );
    let _cleanup = PrefixCleanup(prefix.clone());
    let child = c_command(dir.join(program))
        .args(["--prefix", &prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    let output = wait_output(child, program);
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    assert!(
        output.status.success(),
        "{program} failed ({})",
        output.status
    );
    let expected = if sanitized {
        "sanitizers: address+undefined"
    } else {
        "sanitizers: none"
    };
    assert!(text.contains(expected), "expected '{expected}' in:\n{text}");
    let summary = text.lines().last().unwrap_or_default();
    assert!(
        summary.ends_with(" passed, 0 failed") && !summary.starts_with("0 "),
        "unexpected summary {summary:?}"
    );
}

#[test]
fn c_suite() {
    run_c_suite("test_api", false);
}

#[test]
fn c_suite_under_asan_and_ubsan() {
    run_c_suite("test_api", true);
}

/// include/shmq.hpp, built with `-std=c++17 -Wall -Wextra -Werror -pedantic`.
#[test]
fn cpp_suite() {
    run_c_suite("test_cpp", false);
}

#[test]
fn cpp_suite_under_asan_and_ubsan() {
    run_c_suite("test_cpp", true);
}

#[test]
fn c_examples_build_strictly() {
    let out = profile_dir().join("c-examples");
    run_make(&root().join("examples-c"), &out, &[]).unwrap_or_else(|e| panic!("{e}"));
    for program in ["producer", "worker", "worker_cpp"] {
        assert!(out.join(program).exists(), "{program} was not built");
    }
}

// ----- C and Rust processes on one queue ---------------------------------------------------

/// Child roles run by this binary (see `common::spawn_role`).
#[test]
#[ignore = "entry point for child processes"]
fn rust_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let name = std::env::var("XQ_NAME").expect("XQ_NAME");
    let queue = connect_with_retry(&name);
    match role.as_str() {
        // Like tests/c/xlang.c: ids FIRST.., payload "msg <id>".
        "produce" => {
            let first: u64 = std::env::var("XQ_FIRST").unwrap().parse().unwrap();
            let count: u64 = std::env::var("XQ_COUNT").unwrap().parse().unwrap();
            for id in first..first + count {
                queue
                    .send_with(Some(id), 0, format!("msg {id}").as_bytes(), None)
                    .expect("send");
            }
        }
        // Prints "got <id>" for every message until shut down and drained.
        "consume" => {
            let mut buf = vec![0u8; queue.message_size()];
            while let Some(meta) = queue.recv_into(&mut buf, None).expect("receive") {
                let text = std::str::from_utf8(&buf[..meta.len]).expect("UTF-8 payload");
                let expected = format!("msg {}", meta.id);
                let expected_task = format!("Task {} - Process this data", meta.id);
                assert!(
                    text == expected || text == expected_task,
                    "message {} has payload {text:?}",
                    meta.id
                );
                println!("got {}", meta.id);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn connect_with_retry(name: &str) -> CrossProcessQueue {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match CrossProcessQueue::connect(name) {
            Err(Error::NotFound { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            other => return other.expect("connect"),
        }
    }
}

fn rust_child(role: &str, name: &str, first: u64, count: u64) -> Child {
    spawn_role(
        "rust_role",
        role,
        &[
            ("XQ_NAME", name.to_string()),
            ("XQ_FIRST", first.to_string()),
            ("XQ_COUNT", count.to_string()),
        ],
    )
}

fn c_child(args: &[&str]) -> Child {
    c_command(c_programs(false).join("xlang"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn xlang")
}

/// Collects the ids in "got <id>" lines (or "[w] processing task <id>: ..." lines) of
/// every consumer, with how often each was seen.
fn count_ids(outputs: &[(String, Output)]) -> BTreeMap<u64, u32> {
    let mut seen = BTreeMap::new();
    for (what, out) in outputs {
        assert!(
            out.status.success(),
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // (A Rust child's first line follows libtest's "test rust_role ... ".)
            let id = line.rsplit_once("got ").map(|(_, id)| id).or_else(|| {
                line.split_once("] processing task ")
                    .and_then(|(_, rest)| rest.split_once(':'))
                    .map(|(id, _)| id)
            });
            if let Some(id) = id {
                *seen
                    .entry(id.trim().parse::<u64>().expect("id"))
                    .or_insert(0) += 1;
            }
        }
    }
    seen
}

fn assert_exactly_once(seen: &BTreeMap<u64, u32>, expected: impl Iterator<Item = u64>) {
    let expected: Vec<u64> = expected.collect();
    let missing: Vec<&u64> = expected
        .iter()
        .filter(|id| !seen.contains_key(id))
        .collect();
    let twice: Vec<(&u64, &u32)> = seen.iter().filter(|(_, &n)| n != 1).collect();
    let unexpected: Vec<&u64> = seen.keys().filter(|id| !expected.contains(id)).collect();
    assert!(
        missing.is_empty() && twice.is_empty() && unexpected.is_empty(),
        "missing {missing:?}, more than once {twice:?}, unexpected {unexpected:?}"
    );
}

#[test]
fn c_and_rust_processes_share_one_queue() {
    const PER_PRODUCER: u64 = 400;
    let tq = TestQueue::new("xlang");
    // Small capacity: producers in both languages wait for consumers in both languages.
    let queue = CrossProcessQueue::create(&tq.name, 8, 64).expect("create");
    let name = tq.name.as_str();

    let mut consumers = Children(vec![
        c_child(&["consume", name]),
        c_child(&["consume", name]),
        rust_child("consume", name, 0, 0),
        rust_child("consume", name, 0, 0),
    ]);
    let mut producers = Children(vec![
        c_child(&["produce", name, "0", &PER_PRODUCER.to_string()]),
        c_child(&["produce", name, "1000000", &PER_PRODUCER.to_string()]),
        rust_child("produce", name, 2_000_000, PER_PRODUCER),
        rust_child("produce", name, 3_000_000, PER_PRODUCER),
    ]);
    for (i, child) in producers.0.drain(..).enumerate() {
        let out = wait_output(child, "producer");
        assert!(out.status.success(), "producer {i} failed ({})", out.status);
    }
    queue.shutdown().expect("shutdown");
    let outputs: Vec<(String, Output)> = consumers
        .0
        .drain(..)
        .enumerate()
        .map(|(i, c)| {
            let what = if i < 2 { "C consumer" } else { "Rust consumer" };
            (what.to_string(), wait_output(c, what))
        })
        .collect();
    let seen = count_ids(&outputs);
    assert_exactly_once(
        &seen,
        (0..4u64).flat_map(|p| (0..PER_PRODUCER).map(move |i| p * 1_000_000 + i)),
    );
    // Both languages consumed (with 1600 messages through 8 slots, each gets a share).
    let c_got: usize = count_ids(&outputs[..2]).len();
    assert!(
        c_got > 0 && c_got < seen.len(),
        "C consumers got {c_got} of {}",
        seen.len()
    );
    assert_eq!(queue.len(), 0);
}

#[test]
fn c_examples_mix_with_a_rust_worker() {
    const TASKS: u64 = 30;
    let tq = TestQueue::new("demo");
    let examples = profile_dir().join("c-examples-mix");
    run_make(&root().join("examples-c"), &examples, &[]).unwrap_or_else(|e| panic!("{e}"));
    let name = tq.name.as_str();
    let spawn_c = |program: &str, args: &[&str]| {
        c_command(examples.join(program))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn C example")
    };
    // Workers first: they wait for the producer to create the queue.
    let mut workers = Children(vec![
        spawn_c("worker", &["c-worker", "--queue", name, "--work-ms", "1"]),
        spawn_c(
            "worker_cpp",
            &["cpp-worker", "--queue", name, "--work-ms", "1"],
        ),
        rust_child("consume", name, 0, 0),
    ]);
    let producer = spawn_c(
        "producer",
        &[
            "--queue",
            name,
            "--tasks",
            &TASKS.to_string(),
            "--interval-ms",
            "2",
        ],
    );
    let out = wait_output(producer, "C producer");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "C producer failed:\n{text}");
    assert!(text.contains(&format!(
        "[c producer] sent task {TASKS}: Task {TASKS} - Process this data"
    )));
    let outputs: Vec<(String, Output)> = workers
        .0
        .drain(..)
        .map(|c| ("worker".to_string(), wait_output(c, "worker")))
        .collect();
    for (output, worker) in outputs.iter().zip(["c-worker", "cpp-worker"]) {
        let text = String::from_utf8_lossy(&output.1.stdout).into_owned();
        assert!(
            text.contains(&format!(
                "[{worker}] queue shut down and drained; processed"
            )),
            "{worker} output:\n{text}"
        );
        // The C and C++ workers print the text they got, in the demo's format.
        for line in text.lines().filter(|l| l.contains("processing task ")) {
            let (_, rest) = line.split_once("processing task ").unwrap();
            let (id, message) = rest.split_once(": ").unwrap();
            assert_eq!(message, format!("Task {id} - Process this data"));
        }
    }
    assert_exactly_once(&count_ids(&outputs), 1..=TASKS);
}
