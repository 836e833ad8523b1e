//! Test-only crash points: named places inside send and receive where a test can freeze a
//! process and then kill it, to prove that nothing promised is lost.
//!
//! Compiled in only with the `crash-points` feature. When the environment variable
//! `SHMQ_CRASH_AT` names a point and the process reaches it, the process prints
//! `SHMQ_CRASH_POINT <name>` on stderr and stops itself with `SIGSTOP`; the test then sends
//! `SIGKILL`. Without the feature, [`hit`] compiles to nothing.

/// Every crash point, in the order an operation passes them.
pub const POINTS: &[&str] = &[
    "push_claimed",    // producer: slot claimed, tail not yet advanced
    "push_tail_moved", // producer: tail advanced, nothing written
    "push_written",    // producer: message written, not yet published
    "pop_claimed",     // consumer: slot claimed, head not yet advanced
    "pop_head_moved",  // consumer: head advanced, message not yet copied
    "pop_read",        // consumer: message copied, slot not yet released
];

#[cfg(feature = "crash-points")]
pub fn hit(point: &'static str) {
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("SHMQ_CRASH_AT").ok());
    if target.as_deref() == Some(point) {
        eprintln!("SHMQ_CRASH_POINT {point}");
        // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}

#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn hit(_point: &'static str) {}
