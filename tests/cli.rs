//! The `shmq` command driven as a user drives it: real processes, real shared memory.
//! Every test uses its own queue names (removed even when it fails) and checks output and
//! exit codes; no test depends on timing beyond generous upper bounds.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestQueue;
use serde_json::Value;
use shmq::CrossProcessQueue;

const SHMQ: &str = env!("CARGO_BIN_EXE_shmq");
/// Longest any single command may take before the test calls it hung.
const LIMIT: Duration = Duration::from_secs(30);

// Exit codes, as documented in `shmq --help` and docs/OPERATING.md.
const OK: i32 = 0;
const FAILURE: i32 = 1;
const INVALID: i32 = 2;
const NOT_FOUND: i32 = 3;
const TIMEOUT: i32 = 4;
const EMPTY: i32 = 5;
const FULL: i32 = 6;
const CLOSED: i32 = 7;
const EXISTS: i32 = 8;

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Kills a child still running when dropped.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str], stdin: Option<&[u8]>) -> Running {
    let mut child = Command::new(SHMQ)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start shmq");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
    }
    Running(Some(child))
}

/// Waits for a spawned command (at most LIMIT) and collects its output.
fn finish(mut r: Running) -> Out {
    let mut child = r.0.take().unwrap();
    let (so, mut se) = (child.stdout.take(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut so) = so {
            so.read_to_string(&mut s).unwrap();
        }
        s
    });
    let mut stderr = String::new();
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("shmq did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    se.read_to_string(&mut stderr).unwrap();
    Out {
        code: status.code().expect("exited, not killed"),
        stdout: reader.join().unwrap(),
        stderr,
    }
}

fn run(args: &[&str]) -> Out {
    finish(spawn(args, None))
}

fn run_in(args: &[&str], stdin: &[u8]) -> Out {
    finish(spawn(args, Some(stdin)))
}

fn ok(args: &[&str]) -> Out {
    let out = run(args);
    assert_eq!(out.code, OK, "shmq {args:?}: {out:?}");
    out
}

/// Asserts the exit code and the one-line error `shmq: <queue>: ...` on stderr.
fn fails(out: &Out, code: i32, queue: &str) {
    assert_eq!(out.code, code, "{out:?}");
    assert_eq!(out.stderr.lines().count(), 1, "one error line: {out:?}");
    assert!(
        out.stderr.starts_with(&format!("shmq: {queue}: ")),
        "{out:?}"
    );
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn create(q: &TestQueue, capacity: &str, size: &str) {
    ok(&[
        "create",
        &q.name,
        "--capacity",
        capacity,
        "--message-size",
        size,
    ]);
}

#[test]
fn create_and_its_errors() {
    let q = TestQueue::new("cli_create");
    ok(&[
        "create",
        &q.name,
        "-c",
        "16",
        "-s",
        "100",
        "--mode",
        "0640",
        "--no-checksum",
    ]);
    let handle = CrossProcessQueue::connect(&q.name).unwrap();
    assert_eq!((handle.capacity(), handle.message_size()), (16, 100));
    assert!(!handle.checksum_enabled());
    assert_eq!(handle.info().mode, 0o640);

    fails(
        &run(&["create", &q.name, "-c", "16", "-s", "100"]),
        EXISTS,
        &q.name,
    );
    ok(&["create", &q.name, "-c", "16", "-s", "100", "--exist-ok"]);
    let wrong = run(&["create", &q.name, "-c", "8", "-s", "100", "--exist-ok"]);
    fails(&wrong, INVALID, &q.name);

    // --replace: a fresh queue under the name; the old handle keeps the old one.
    handle.send_bytes(b"old").unwrap();
    ok(&["create", &q.name, "-c", "4", "-s", "10", "--replace"]);
    let fresh = CrossProcessQueue::connect(&q.name).unwrap();
    assert_eq!((fresh.capacity(), fresh.len()), (4, 0));
    assert!(fresh.checksum_enabled());

    // Invalid input: exit 2, whether clap or the library catches it.
    let bad = TestQueue::new("cli_create_bad");
    assert_eq!(
        run(&["create", &bad.name, "-c", "0", "-s", "8"]).code,
        INVALID
    );
    assert_eq!(
        run(&["create", &bad.name, "-c", "8", "-s", "8", "--mode", "999"]).code,
        INVALID
    );
    assert_eq!(run(&["create", &bad.name, "-c", "8"]).code, INVALID);
    fails(
        &run(&["create", "bad/name", "-c", "8", "-s", "8"]),
        INVALID,
        "bad/name",
    );
    assert!(CrossProcessQueue::connect(&bad.name).is_err());
}

#[test]
fn send_and_recv_between_processes() {
    let q = TestQueue::new("cli_sendrecv");
    create(&q, "64", "32");
    // Three producer processes feed the queue at once; one receiver process takes all.
    let lines = |p: u32| {
        (0..10)
            .map(|i| format!("p{p}-{i}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let receiver = spawn(
        &["recv", &q.name, "--count", "31", "--timeout", "20000"],
        None,
    );
    let producers: Vec<Running> = (0..3)
        .map(|p| spawn(&["send", &q.name, "--lines"], Some(&lines(p))))
        .collect();
    let single = run(&["send", &q.name, "single message"]);
    assert_eq!(single.code, OK, "{single:?}");
    for p in producers {
        let out = finish(p);
        assert_eq!(out.code, OK, "{out:?}");
    }
    let out = finish(receiver);
    assert_eq!(out.code, OK, "{out:?}");
    let mut got: Vec<&str> = out.stdout.lines().collect();
    got.sort();
    let mut want: Vec<String> = (0..3)
        .flat_map(|p| (0..10).map(move |i| format!("p{p}-{i}")))
        .collect();
    want.push("single message".into());
    want.sort();
    assert_eq!(got, want);

    // Per-producer order is kept (one sending process, FIFO queue).
    let handle = CrossProcessQueue::connect(&q.name).unwrap();
    run_in(&["send", &q.name, "--lines", "--id", "100"], b"a\nb\nc\n");
    let out = ok(&["recv", &q.name, "-n", "3", "--timeout", "0"]);
    assert_eq!(out.stdout, "a\nb\nc\n");

    // stdin as one message, ids, raw and NUL-separated output.
    run_in(&["send", &q.name, "--id", "42"], b"two\nlines");
    let mut buf = [0u8; 32];
    let meta = handle.recv_with(&mut buf, Some(Duration::ZERO)).unwrap();
    assert_eq!((meta.id, &buf[..meta.len]), (42, &b"two\nlines"[..]));
    handle.send_bytes(b"x\ny").unwrap();
    handle.send_bytes(b"z").unwrap();
    assert_eq!(ok(&["recv", &q.name, "--raw", "-t", "0"]).stdout, "x\ny");
    handle.send_bytes(b"w").unwrap();
    assert_eq!(
        ok(&["recv", &q.name, "-0", "-n", "2", "-t", "0"]).stdout,
        "z\0w\0"
    );
    assert_eq!(handle.len(), 0);
}

#[test]
fn send_and_recv_exit_codes() {
    let q = TestQueue::new("cli_codes");
    create(&q, "2", "8");
    fails(&run(&["recv", &q.name, "--timeout", "0"]), EMPTY, &q.name);
    let out = run(&["recv", &q.name, "--timeout", "50"]);
    fails(&out, TIMEOUT, &q.name);
    assert!(out.stdout.is_empty());

    fails(&run(&["send", &q.name, "123456789"]), INVALID, &q.name);
    // All-or-nothing size check for --lines.
    fails(
        &run_in(&["send", &q.name, "-l"], b"ok\n123456789\n"),
        INVALID,
        &q.name,
    );
    assert_eq!(CrossProcessQueue::connect(&q.name).unwrap().len(), 0);

    ok(&["send", &q.name, "one"]);
    ok(&["send", &q.name, "two"]);
    let out = run(&["send", &q.name, "three", "--timeout", "0"]);
    fails(&out, FULL, &q.name);
    fails(
        &run(&["send", &q.name, "three", "--timeout", "50"]),
        TIMEOUT,
        &q.name,
    );

    // Two of three received, then a timeout: the two are printed, the exit says timeout.
    let out = run(&["recv", &q.name, "-n", "3", "--timeout", "50"]);
    fails(&out, TIMEOUT, &q.name);
    assert_eq!(out.stdout, "one\ntwo\n");

    // A sender blocked on a full queue completes when another process makes room.
    ok(&["send", &q.name, "a"]);
    ok(&["send", &q.name, "b"]);
    let blocked = spawn(&["send", &q.name, "c"], None);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(ok(&["recv", &q.name, "-n", "3"]).stdout, "a\nb\nc\n");
    assert_eq!(finish(blocked).code, OK);

    let missing = TestQueue::new("cli_codes_missing");
    for cmd in ["send", "recv", "info", "shutdown", "watch", "rm"] {
        let out = run(&[cmd, &missing.name]);
        fails(&out, NOT_FOUND, &missing.name);
        assert_eq!(
            out.stderr,
            format!("shmq: {}: no such queue\n", missing.name)
        );
    }
}

#[test]
fn shutdown_closes_for_senders_and_ends_follow() {
    let q = TestQueue::new("cli_shutdown");
    create(&q, "16", "16");
    let follower = spawn(&["recv", &q.name, "--follow"], None);
    let handle = CrossProcessQueue::connect(&q.name).unwrap();
    for i in 0..5 {
        handle.send_bytes(format!("m{i}").as_bytes()).unwrap();
    }
    ok(&["shutdown", &q.name]);
    assert!(handle.is_shutdown());
    assert!(matches!(
        handle.send_bytes(b"late"),
        Err(shmq::Error::Closed)
    ));
    fails(&run(&["send", &q.name, "late"]), CLOSED, &q.name);
    let out = finish(follower);
    assert_eq!(out.code, OK, "{out:?}");
    assert_eq!(out.stdout, "m0\nm1\nm2\nm3\nm4\n");
    fails(&run(&["recv", &q.name, "-t", "0"]), CLOSED, &q.name);
    ok(&["shutdown", &q.name]); // idempotent

    let info = json(&ok(&["info", &q.name, "--json"]).stdout);
    assert_eq!(info["shutdown"], true);
    let text = ok(&["info", &q.name]).stdout;
    assert!(text.contains("shut down      yes"), "{text}");
}

#[test]
fn info_reports_configuration_counters_and_processes() {
    let q = TestQueue::new("cli_info");
    ok(&["create", &q.name, "-c", "8", "-s", "64", "--mode", "0660"]);
    let a = CrossProcessQueue::connect(&q.name).unwrap();
    let b = CrossProcessQueue::connect(&q.name).unwrap();
    for i in 0..8 {
        a.send_bytes(format!("{i:04}").as_bytes()).unwrap();
    }
    assert!(a.send_bytes(b"full").is_err());
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        b.recv_with(&mut buf, Some(Duration::ZERO)).unwrap();
    }
    assert!(b
        .recv_with(&mut buf, Some(Duration::from_millis(1)))
        .is_ok());
    // A receiver blocked in another process, then killed: listed, first alive, then gone.
    let empty = TestQueue::new("cli_info_empty");
    create(&empty, "2", "8");
    let mut blocked = spawn(&["recv", &empty.name], None);
    let pid = blocked.0.as_ref().unwrap().id();

    let expected = a.stats();
    let out = ok(&["info", &q.name, "--json"]);
    let v = json(&out.stdout);
    assert_eq!(v["name"], q.name.as_str());
    assert_eq!(v["capacity"], 8);
    assert_eq!(v["message_size"], 64);
    assert_eq!(v["mode"], "0660");
    assert_eq!(v["checksum"], true);
    // The library's own value (which depends on this machine's `membarrier`), in both forms;
    // `tests/wake.rs` checks the value itself.
    let real_fences = a.info().real_fences;
    assert_eq!(v["real_fences"], real_fences);
    assert_eq!(v["layout_version"], shmq::layout::LAYOUT_VERSION);
    assert_ne!(
        v["creator_pid"],
        std::process::id(),
        "created by the shmq process"
    );
    assert_eq!(v["depth"], 4);
    assert_eq!(v["live_handles"], 2, "this process holds two handles");
    assert_eq!(v["stale"], false);
    let s = &v["stats"];
    assert_eq!(s["messages_sent"], expected.messages_sent);
    assert_eq!(s["messages_received"], 4);
    assert_eq!(s["send_full"], expected.send_full);
    assert!(s["send_full"].as_u64().unwrap() >= 1);
    assert_eq!(s["bytes_sent"], 32);
    assert_eq!(s["peak_depth"], 8);
    for key in [
        "timeouts",
        "checksum_failures",
        "abandoned",
        "redelivered",
        "corrupted",
        "sender_sleeps",
        "receiver_sleeps",
    ] {
        assert!(s[key].is_u64(), "{key} in {s}");
    }
    let me = std::process::id();
    let mine: Vec<&Value> = v["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == me)
        .collect();
    assert_eq!(mine.len(), 2, "{v}");
    assert!(mine.iter().all(|p| p["alive"] == true));

    let text = ok(&["info", &q.name]).stdout;
    for needle in [
        "depth          4 / 8",
        "mode           0660",
        "live: 2 handles open",
        "messages sent          8",
        "messages received      4",
        "health         ok",
        if real_fences {
            "fences         real"
        } else {
            "fences         light"
        },
    ] {
        assert!(text.contains(needle), "{needle:?} in\n{text}");
    }

    // The blocked receiver: alive while it waits, gone once killed.
    let alive = |want: bool| {
        let deadline = Instant::now() + LIMIT;
        loop {
            let v = json(&ok(&["info", &empty.name, "--json"]).stdout);
            let found = v["participants"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["pid"] == pid && p["alive"] == want);
            if found {
                return v;
            }
            assert!(Instant::now() < deadline, "pid {pid} alive={want}: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(alive(true)["live_handles"], 1);
    let mut child = blocked.0.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let v = alive(false);
    assert_eq!(v["live_handles"], 0);
    assert_eq!(v["stale"], true);

    drop((a, b));
    let v = json(&ok(&["info", &q.name, "--json"]).stdout);
    assert_eq!(v["live_handles"], 0);
}

/// A file in /dev/shm that is removed when dropped.
struct ShmFile(std::path::PathBuf);

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn ls_lists_queues_marks_stale_and_ignores_foreign_files() {
    let live = TestQueue::new("cli_ls_live");
    let stale = TestQueue::new("cli_ls_stale");
    create(&live, "10", "128");
    ok(&[
        "create",
        &stale.name,
        "-c",
        "5",
        "-s",
        "16",
        "--mode",
        "0640",
    ]);
    let handle = CrossProcessQueue::connect(&live.name).unwrap();
    handle.send_bytes(b"1").unwrap();
    handle.send_bytes(b"2").unwrap();
    ok(&["shutdown", &stale.name]);

    let tag = format!("cli_ls_{}", std::process::id());
    let junk = ShmFile(format!("/dev/shm/shmq.{tag}_foreign").into());
    std::fs::write(&junk.0, vec![0x5a; 8192]).unwrap();
    let short = ShmFile(format!("/dev/shm/shmq.{tag}_short").into());
    std::fs::write(&short.0, b"SHMQRING").unwrap();
    let unprefixed = ShmFile(format!("/dev/shm/{tag}_unprefixed").into());
    std::fs::write(&unprefixed.0, b"not a queue").unwrap();

    let out = ok(&["ls"]);
    assert!(!out.stdout.contains(&tag), "foreign files listed:\n{out:?}");
    assert!(
        !out.stderr.contains(&tag),
        "foreign files reported:\n{out:?}"
    );
    let header = out.stdout.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{header}");
    let row = |name: &str| -> Vec<String> {
        out.stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{}", out.stdout))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let me = inspect_user();
    assert_eq!(
        row(&live.name)[1..],
        ["2", "10", "128", "0600", &me, "live"]
    );
    assert_eq!(
        row(&stale.name)[1..],
        ["0", "5", "16", "0640", &me, "stale,shutdown"]
    );

    let v = json(&ok(&["ls", "--json"]).stdout);
    let entries = v.as_array().unwrap();
    assert!(entries
        .iter()
        .all(|e| !e["name"].as_str().unwrap().contains(&tag)));
    let entry = |name: &str| {
        entries
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {v}"))
    };
    let l = entry(&live.name);
    assert_eq!(
        (l["depth"].as_u64(), l["capacity"].as_u64()),
        (Some(2), Some(10))
    );
    assert_eq!(
        (l["stale"].as_bool(), l["live_handles"].as_u64()),
        (Some(false), Some(1))
    );
    let s = entry(&stale.name);
    assert_eq!(
        (s["stale"].as_bool(), s["shutdown"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(s["mode"], "0640");

    // Removed queues disappear from the listing.
    ok(&["rm", &stale.name]);
    let out = ok(&["ls"]);
    assert!(!out.stdout.contains(&stale.name), "{out:?}");
}

/// The current user's name as `ls` shows it (from /etc/passwd, else the uid).
fn inspect_user() -> String {
    let uid = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid()
    });
    let uid = uid.unwrap();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

#[test]
fn rm_removes_and_reports_each_missing_name() {
    let a = TestQueue::new("cli_rm_a");
    let b = TestQueue::new("cli_rm_b");
    let missing = TestQueue::new("cli_rm_missing");
    create(&a, "4", "8");
    create(&b, "4", "8");
    let attached = CrossProcessQueue::connect(&a.name).unwrap();
    let out = run(&["rm", &a.name, &missing.name, &b.name]);
    fails(&out, NOT_FOUND, &missing.name);
    for q in [&a, &b] {
        assert!(matches!(
            CrossProcessQueue::connect(&q.name),
            Err(shmq::Error::NotFound { .. })
        ));
    }
    // A process that had it open keeps working on it.
    attached.send_bytes(b"still").unwrap();
    assert_eq!(attached.len(), 1);
    ok(&["rm", "-f", &a.name, &missing.name]);
    assert_eq!(run(&["rm"]).code, INVALID);
}

/// Runs `f` while a thread of this process sends to `handle` every few milliseconds
/// (receiving one when the queue is full), so the queue's counters keep moving.
fn while_feeding<T>(handle: &CrossProcessQueue, f: impl FnOnce() -> T) -> T {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if handle.send_bytes(b"tick").is_err() {
                    let _ = handle.receive();
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let result = f();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

#[test]
fn watch_plain_lines_show_counters_moving() {
    let q = TestQueue::new("cli_watch");
    create(&q, "1000", "16");
    let handle = CrossProcessQueue::connect(&q.name).unwrap();
    handle.send_bytes(b"first").unwrap();
    let out = while_feeding(&handle, || {
        run(&["watch", &q.name, "--interval", "200", "--count", "5"])
    });
    assert_eq!(out.code, OK, "{out:?}");
    assert!(!out.stdout.contains('\x1b'), "no terminal codes in a pipe");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{out:?}");
    let field = |line: &str, key: &str| -> String {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(String::from))
            .unwrap_or_else(|| panic!("{key} in {line}"))
    };
    let sent: Vec<u64> = lines
        .iter()
        .map(|l| field(l, "sent").parse().unwrap())
        .collect();
    assert!(sent.windows(2).all(|w| w[0] <= w[1]), "{sent:?}");
    assert!(sent[4] > sent[0], "sent did not move: {sent:?}");
    assert_eq!(field(lines[0], "send_rate"), "-");
    let rate: f64 = field(lines[4], "send_rate").parse().unwrap();
    assert!(rate >= 0.0);
    assert_eq!(field(lines[0], "capacity"), "1000");
    assert_eq!(field(lines[0], "live"), "1");
    assert_eq!(field(lines[0], "shutdown"), "false");
}

#[test]
fn watch_json_and_removal() {
    let q = TestQueue::new("cli_watch_json");
    create(&q, "100", "16");
    let handle = CrossProcessQueue::connect(&q.name).unwrap();
    let watcher = spawn(&["watch", &q.name, "-i", "100", "-n", "4", "--json"], None);
    let out = while_feeding(&handle, || finish(watcher));
    assert_eq!(out.code, OK, "{out:?}");
    let samples: Vec<Value> = out.stdout.lines().map(json).collect();
    assert_eq!(samples.len(), 4);
    assert!(samples[0]["send_rate"].is_null());
    assert!(samples[3]["send_rate"].is_f64());
    assert_eq!(samples[0]["name"], q.name.as_str());
    let sent = |v: &Value| v["stats"]["messages_sent"].as_u64().unwrap();
    assert!(sent(&samples[3]) > sent(&samples[0]), "{}", out.stdout);
    assert_eq!(samples[3]["depth"], samples[3]["stats"]["depth"]);

    // A watched queue that is removed ends the watch with "not found".
    let mut watcher = spawn(&["watch", &q.name, "-i", "20"], None);
    // Keep reading its output (a closed pipe would end it quietly).
    let stdout = watcher.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("time="), "watching: {first}");
    CrossProcessQueue::unlink(&q.name).unwrap();
    let drain = std::thread::spawn(move || lines.count());
    let out = finish(watcher);
    drain.join().unwrap();
    fails(&out, NOT_FOUND, &q.name);
    assert!(out.stderr.contains("removed"), "{out:?}");
}

#[test]
fn bench_runs_two_processes_and_cleans_up() {
    let runner = spawn(
        &[
            "bench",
            "--messages",
            "3000",
            "--latency-samples",
            "50",
            "--json",
        ],
        None,
    );
    let pid = runner.0.as_ref().unwrap().id();
    let out = finish(runner);
    assert_eq!(out.code, OK, "{out:?}");
    let v = json(&out.stdout);
    assert_eq!(v["messages"], 3000);
    assert!(v["throughput_msgs_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["latency_ns"]["samples"], 50);
    assert!(v["latency_ns"]["p50"].as_u64().unwrap() <= v["latency_ns"]["max"].as_u64().unwrap());
    assert!(
        out.stderr.contains("latency"),
        "progress on stderr: {out:?}"
    );
    let prefix = format!("shmq.bench-{pid}-");
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = ok(&["bench", "-n", "1000", "-l", "10", "-s", "200", "-c", "16"]);
    assert!(out.stdout.contains("throughput"), "{out:?}");
    assert!(out.stdout.contains("msg/s"), "{out:?}");
    assert!(out.stdout.contains("p99"), "{out:?}");
    assert!(out.stdout.contains("sleeps"), "{out:?}");

    // Batches (a count that is no multiple of the batch: the last call sends the rest) on
    // a queue without checksums; the receiver still checks every id and size.
    let out = ok(&[
        "bench",
        "-n",
        "1001",
        "-l",
        "10",
        "-c",
        "16",
        "--batch",
        "32",
        "--no-checksum",
        "--json",
    ]);
    let v = json(&out.stdout);
    assert_eq!(
        (v["batch"].as_u64(), v["checksum"].as_bool()),
        (Some(32), Some(false))
    );
    // Which checksum this machine computes with: the library's answer, in the JSON and the
    // text.
    assert_eq!(
        v["checksum_implementation"].as_str(),
        Some(shmq::checksum_implementation()),
        "{out:?}"
    );
    assert_eq!(v["messages"], 1001);
    assert_eq!(v["latency_ns"]["samples"], 10);
    let out = ok(&["bench", "-n", "100", "-l", "5", "-b", "64"]);
    assert!(out.stdout.contains("up to 64 per call"), "{out:?}");
    let checksums = format!("checksums: {}", shmq::checksum_implementation());
    assert!(out.stdout.contains(&checksums), "{out:?}");
    // Both sides' spin limit: reported, and the run still checks every message (zero: every
    // wait sleeps at once; a long one: the latency phase's receiver never sleeps).
    for (us, ns) in [("0", 0), ("1000", 1_000_000)] {
        let out = ok(&[
            "bench",
            "-n",
            "2000",
            "-l",
            "10",
            "-c",
            "8",
            "--spin-us",
            us,
            "--json",
        ]);
        let v = json(&out.stdout);
        assert_eq!(v["spin_limit_ns"], ns, "{out:?}");
        for phase in ["throughput", "latency"] {
            for side in ["sends", "receives"] {
                assert!(v["sleeps"][phase][side].is_u64(), "{phase} {side}: {out:?}");
            }
        }
        if ns == 0 {
            // Every wait sleeps at once, and the latency phase's receiver waits 10 times.
            let slept = v["sleeps"]["latency"]["receives"].as_u64().unwrap();
            assert!(slept >= 1, "{out:?}");
        }
    }
    let out = ok(&["bench", "-n", "100", "-l", "5", "--spin-us", "50"]);
    assert!(
        out.stdout.contains("polling 50 us before sleeping"),
        "{out:?}"
    );
    assert_eq!(
        run(&["bench", "--spin-us", "-1"]).code,
        INVALID,
        "a negative spin"
    );
    for bad in ["0", "65"] {
        assert_eq!(
            run(&["bench", "-n", "10", "--batch", bad]).code,
            INVALID,
            "--batch {bad}"
        );
    }
}

#[test]
fn single_producer_single_consumer_create_info_roles_and_bench() {
    let q = TestQueue::new("cli_spsc");
    let long = TestQueue::new("cli_spsc_long");
    let plain = TestQueue::new("cli_spsc_plain");
    ok(&["create", &q.name, "-c", "8", "-s", "64", "--spsc"]);
    ok(&[
        "create",
        &long.name,
        "-c",
        "8",
        "-s",
        "64",
        "--single-producer-single-consumer",
    ]);
    create(&plain, "8", "64");
    for (queue, spsc) in [(&q, true), (&long, true), (&plain, false)] {
        let handle = CrossProcessQueue::connect(&queue.name).unwrap();
        assert_eq!(
            handle.is_single_producer_single_consumer(),
            spsc,
            "{}",
            queue.name
        );
        let v = json(&ok(&["info", &queue.name, "--json"]).stdout);
        assert_eq!(v["single_producer_single_consumer"], spsc, "{v}");
        // Roles exist only on single-producer queues (none taken yet).
        let roles = &v["roles"];
        if spsc {
            assert!(
                roles["sender"].is_null() && roles["receiver"].is_null(),
                "{v}"
            );
        } else {
            assert!(roles.is_null(), "{v}");
        }
        let text = ok(&["info", &queue.name]).stdout;
        let line = if spsc {
            "concurrency    single producer, single consumer"
        } else {
            "concurrency    multiple producers, multiple consumers"
        };
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    // --exist-ok only accepts a queue of the same kind.
    fails(
        &run(&["create", &q.name, "-c", "8", "-s", "64", "--exist-ok"]),
        INVALID,
        &q.name,
    );
    ok(&[
        "create",
        &q.name,
        "-c",
        "8",
        "-s",
        "64",
        "--exist-ok",
        "--spsc",
    ]);

    // Each command takes a role only for its own run.
    ok(&["send", &q.name, "one"]);
    ok(&["send", &q.name, "two"]);
    assert_eq!(ok(&["recv", &q.name, "--timeout", "0"]).stdout, "one\n");

    // A live handle holding the sending role: `shmq send` fails at once, naming it.
    let holder = CrossProcessQueue::connect(&q.name).unwrap();
    holder.send_bytes(b"three").unwrap();
    // `info` names the holder (this process) of the sending role; the receiving one is free.
    let roles = json(&ok(&["info", &q.name, "--json"]).stdout)["roles"].clone();
    assert_eq!(
        roles["sender"],
        serde_json::json!({
            "id": holder.participant_id(),
            "pid": std::process::id(),
            "alive": true
        }),
        "{roles}"
    );
    assert!(roles["receiver"].is_null(), "{roles}");
    let text = ok(&["info", &q.name]).stdout;
    let line = format!(
        "sending role   participant {} (pid {}, alive)",
        holder.participant_id(),
        std::process::id()
    );
    assert!(text.contains(&line), "{line:?} in\n{text}");
    assert!(text.contains("receiving role free"), "{text}");
    let refused = run(&["send", &q.name, "--timeout", "10000", "x"]);
    fails(&refused, FAILURE, &q.name);
    let who = format!(
        "sending role is held by live participant {}",
        holder.participant_id()
    );
    assert!(refused.stderr.contains(&who), "{who:?} in {refused:?}");
    assert_eq!(refused.stderr.matches(&q.name).count(), 2, "{refused:?}");
    // ... and the receiving role likewise.
    let mut buf = [0u8; 64];
    holder.recv_with(&mut buf, Some(Duration::ZERO)).unwrap();
    let refused = run(&["recv", &q.name, "--timeout", "0"]);
    fails(&refused, FAILURE, &q.name);
    assert!(refused.stderr.contains("receiving role"), "{refused:?}");
    // Closing the handle frees both roles.
    drop(holder);
    ok(&["send", &q.name, "four"]);
    let out = ok(&["recv", &q.name, "--count", "2", "--timeout", "0"]);
    assert_eq!(out.stdout, "three\nfour\n");

    // Shutdown of a single-producer queue (a word of its own, not a bit of the tail) shows in
    // the read-only views as well as in `info`.
    ok(&["shutdown", &q.name]);
    assert_eq!(
        json(&ok(&["info", &q.name, "--json"]).stdout)["shutdown"],
        true
    );
    let listed = json(&ok(&["ls", "--json"]).stdout);
    let entry = listed
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == q.name.as_str()))
        .unwrap_or_else(|| panic!("{} not in {listed}", q.name));
    assert_eq!(entry["shutdown"], true, "{entry}");
    let watched = ok(&["watch", &q.name, "-i", "10", "-n", "1", "--json"]).stdout;
    let sample = json(watched.lines().next().unwrap_or_default());
    assert_eq!(sample["shutdown"], true, "{sample}");

    // bench measures either kind of queue.
    let out = ok(&["bench", "-n", "2000", "-l", "20", "--spsc", "--json"]);
    let v = json(&out.stdout);
    assert_eq!(v["single_producer_single_consumer"], true, "{v}");
    assert_eq!(v["messages"], 2000);
    let out = ok(&[
        "bench",
        "-n",
        "1000",
        "-l",
        "10",
        "--single-producer-single-consumer",
    ]);
    assert!(
        out.stdout.contains("single-producer/single-consumer queue"),
        "{out:?}"
    );
}

#[test]
fn help_everywhere_with_examples_and_exit_codes() {
    for cmd in [
        None,
        Some("create"),
        Some("info"),
        Some("ls"),
        Some("send"),
        Some("recv"),
        Some("rm"),
        Some("shutdown"),
        Some("watch"),
        Some("bench"),
    ] {
        let args: Vec<&str> = cmd.into_iter().chain(["--help"]).collect();
        let out = ok(&args);
        assert!(out.stdout.contains("Examples:"), "{args:?}: {out:?}");
        assert!(out.stdout.contains("Exit codes:"), "{args:?}: {out:?}");
    }
    assert!(!ok(&["--help"]).stdout.contains("bench-peer"), "hidden");
    assert_eq!(run(&["no-such-command"]).code, INVALID);
    assert_eq!(run(&[]).code, INVALID);
}
