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

/// A child running this test binary's ignored test `entry` in `role` (as [`spawn_role`]),
/// for tests that watch it closely: its stdout lines arrive on a channel as they are printed,
/// its stderr is collected, its stdin is a pipe, and it can stop itself at a crash point
/// (`crash_at`, feature `crash-points`). Killed and reaped when dropped, so a failing test
/// leaves no strays.
pub struct Proc {
    pub child: std::process::Child,
    pub stdin: Option<std::process::ChildStdin>,
    /// Every stdout line, unfiltered (libtest prints lines of its own around the child's).
    pub lines: std::sync::mpsc::Receiver<String>,
    pub stderr: Option<std::thread::JoinHandle<String>>,
}

impl Proc {
    pub fn start(entry: &str, role: &str, env: &[(&str, String)], crash_at: Option<&str>) -> Proc {
        use std::io::{BufRead, Read};
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
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        match crash_at {
            Some(p) => cmd.env("SHMQ_CRASH_AT", p),
            None => cmd.env_remove("SHMQ_CRASH_AT"),
        };
        let mut child = cmd.spawn().expect("spawn child test process");
        let stdin = child.stdin.take();
        let out = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Proc {
            child,
            stdin,
            lines,
            stderr: Some(stderr),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process state letter from /proc (R, S, T, Z, ...), or None once reaped.
    pub fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    /// Whether a thread of the child is asleep in a shared `FUTEX_WAIT`: one of the library's
    /// sleeps (the Rust runtime's own futexes are process-private).
    pub fn in_shared_futex_wait(&self) -> bool {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return false;
        };
        let futex = libc::SYS_futex.to_string();
        tasks.flatten().any(|task| {
            // "number address op ...": the op is the system call's second argument.
            std::fs::read_to_string(task.path().join("syscall")).is_ok_and(|call| {
                let mut fields = call.split_whitespace();
                fields.next() == Some(futex.as_str()) && fields.nth(1) == Some("0x0")
            })
        })
    }

    /// Waits (at most `limit`) until the child stopped itself (SIGSTOP) at its crash point;
    /// panics with its stderr if it exited first.
    pub fn stopped_within(&mut self, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            match self.state() {
                Some('T') | Some('t') => return,
                Some('Z') | None => {
                    let _ = self.child.wait();
                    let err = self.take_stderr();
                    panic!("child exited before its crash point; stderr:\n{err}");
                }
                _ => {}
            }
            assert!(
                std::time::Instant::now() < deadline,
                "child never reached its crash point"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// The child's whole stderr (once it has exited); empty if already taken.
    pub fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default()
    }

    /// The child's next line with a `@@` marker, from the marker on (libtest may print words
    /// of its own before it on the same line), if one comes within `limit`.
    pub fn next_marked(&self, limit: std::time::Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(at) = line.find("@@") {
                return Some(line[at..].to_string());
            }
        }
    }

    /// The stdout lines not received yet, until the child's stdout closes (or `limit` passes
    /// without a line).
    pub fn rest(&self, limit: std::time::Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(limit) {
            out.push(l);
        }
        out
    }

    /// SIGKILLs the (stopped) child, reaps it (its liveness lock is gone after that) and
    /// checks from its stderr that it stopped at `point`. Returns its remaining stdout lines.
    pub fn killed_at(&mut self, point: &str, limit: std::time::Duration) -> Vec<String> {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        let out = self.rest(limit);
        let err = self.take_stderr();
        assert!(
            err.contains(&format!("SHMQ_CRASH_POINT {point}\n")),
            "child did not stop at {point}; stderr:\n{err}"
        );
        out
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Offset in a segment of the futex word consumers sleep on (`WakeLine::not_empty`).
pub const NOT_EMPTY: usize = std::mem::offset_of!(shmq::layout::Header, wake)
    + std::mem::offset_of!(shmq::layout::WakeLine, not_empty);
/// Offset in a segment of the futex word producers sleep on (`WakeLine::not_full`).
pub const NOT_FULL: usize = std::mem::offset_of!(shmq::layout::Header, wake)
    + std::mem::offset_of!(shmq::layout::WakeLine, not_full);

/// The futex word at `offset` (`NOT_EMPTY` or `NOT_FULL`) of `q`'s segment, read from its
/// file: the same page the processes map.
pub fn futex_word(q: &TestQueue, offset: usize) -> u32 {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(format!("/dev/shm/shmq.{}", q.name)).unwrap();
    let mut word = [0u8; 4];
    file.read_exact_at(&mut word, offset as u64).unwrap();
    u32::from_ne_bytes(word)
}

/// A xorshift64 generator: the hostile tests' cheap, seedable randomness (`seed | 1`, since
/// a zero state would stay zero).
pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// xorshift64*, seeded through splitmix64 (neighbouring seeds start far apart, and the state
/// is never 0): reproducible randomness without a dependency, for tests that print their
/// seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        Rng((z ^ (z >> 27)) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Below `n` (0 for 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The seeds a seeded search runs: `SHMQ_SCRIBBLE_SEED` alone if set (to replay one),
/// else `1..=SHMQ_SCRIBBLE_CASES` (default `cases`).
pub fn search_seeds(cases: u64) -> Vec<u64> {
    match std::env::var("SHMQ_SCRIBBLE_SEED") {
        Ok(s) => vec![s.parse().expect("SHMQ_SCRIBBLE_SEED: a number")],
        Err(_) => {
            let n = std::env::var("SHMQ_SCRIBBLE_CASES")
                .map(|n| n.parse().expect("SHMQ_SCRIBBLE_CASES: a number"))
                .unwrap_or(cases);
            (1..=n).collect()
        }
    }
}

/// Makes every later `membarrier` call of the calling thread (and of threads and processes
/// it starts) fail with `ENOSYS`, as a sandbox's seccomp filter or an old kernel would: a
/// queue handle connected afterwards cannot use the asymmetric fences. Irreversible; for
/// child processes. An error if the kernel refuses the filter.
///
/// The filter compares the system call number alone, not the architecture: the test
/// binary makes its system calls in its own architecture's convention.
pub fn deny_membarrier() -> std::io::Result<()> {
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut filter = [
        // A = seccomp_data.nr (offset 0)
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        // if A == SYS_membarrier, go on to the next instruction, else skip one
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_membarrier as u32,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let program = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: `PR_SET_NO_NEW_PRIVS` takes integers only; `PR_SET_SECCOMP` reads the program
    // (a length and that many instructions, all in `filter`, alive across the call) and
    // copies it into the kernel.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &program as *const libc::sock_fprog,
            ) == 0
    };
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether the kernel lets a child process install [`deny_membarrier`]'s filter (a child
/// running `true` installs it first).
pub fn membarrier_can_be_denied() -> bool {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new("true");
    // SAFETY: the closure runs in the forked child before `exec`, where only
    // async-signal-safe calls are allowed: it makes two `prctl` calls and reads `errno`,
    // with its filter on the stack; nothing allocates or takes a lock.
    unsafe { command.pre_exec(deny_membarrier) };
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Whether `membarrier(MEMBARRIER_CMD_QUERY)` succeeds in the calling thread.
pub fn membarrier_works() -> bool {
    // SAFETY: the query command takes integers only and touches no memory of ours.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        ) >= 0
    }
}
