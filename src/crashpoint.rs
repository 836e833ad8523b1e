//! Test-only crash points: named places inside send, receive and the repairs where a test can
//! freeze a process and then kill it, to prove that nothing promised is lost.
//!
//! Compiled in only with the `crash-points` feature. When the environment variable
//! `SHMQ_CRASH_AT` names a point and the process reaches it, the process prints
//! `SHMQ_CRASH_POINT <name>` on stderr and stops itself with `SIGSTOP`; the test then sends
//! `SIGKILL`. Without the feature, [`hit`] compiles to nothing (under loom, to a yield when
//! `SHMQ_LOOM_YIELD` is set: see the loom version of [`hit`]).
//!
//! A point fires at most once per process. That makes the same points usable as *pause*
//! points: a test may resume the stopped process with `SIGCONT` instead of killing it, after
//! changing the queue under it, and the process then goes on from a stale view of the slot
//! (the `*_observed` points exist for that; see `tests/crash.rs`).
//!
//! Also here, with the same feature: a count of the process's heavy fences, for tests of
//! what a wait costs.

/// Test-only count of this process's heavy fences (`wait::heavy_fence`: a `membarrier`
/// each), so that a test can check what a wait pays (`tests/wake.rs`).
#[cfg(feature = "crash-points")]
static HEAVY_FENCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts one heavy fence (with the `crash-points` feature; nothing without).
#[inline(always)]
pub fn count_heavy_fence() {
    // Relaxed: a counter read by the same process's test code, ordering nothing.
    #[cfg(feature = "crash-points")]
    HEAVY_FENCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// The heavy fences this process has issued so far (see [`count_heavy_fence`]).
#[cfg(feature = "crash-points")]
pub fn heavy_fences() -> u64 {
    // Relaxed: as in `count_heavy_fence`.
    HEAVY_FENCES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Every crash point, in the order an operation passes them.
pub const POINTS: &[&str] = &[
    "push_observed",    // producer: slot's claim loaded, its seq not yet (pause point)
    "push_claimed",     // producer: slot claimed, tail not yet advanced
    "push_tail_moved",  // producer: tail advanced, nothing written
    "push_written",     // producer: message written, not yet published
    "pop_observed",     // consumer: slot's claim loaded, its seq not yet (pause point)
    "pop_claimed",      // consumer: slot claimed, head not yet advanced
    "pop_head_moved",   // consumer: head advanced, message not yet copied
    "pop_read",         // consumer: message copied, slot not yet released
    "push_batch_next",  // producer in send_batch: earlier messages published, next slot claimed
    "push_run_claimed", // producer in send_batch: a run's slots claimed, tail not yet moved
    "pop_batch_next",   // consumer in recv_batch: earlier messages copied (held), next one claimed
    "pop_run_claimed",  // consumer in recv_batch: a run's messages claimed, head not yet moved
    "repair_tail_observed", // producer found a dead-looking receiver's slot (pause point)
    "repair_tail_claimed", // producer republishing a dead receiver's message: slot claimed
    "repair_tail_head_moved", // ... head moved past the old position, tail not yet advanced
    "repair_tail_tail_moved", // ... tail advanced, message not yet republished
    "repair_head_claimed", // consumer skipping a dead producer's position: slot claimed
    "repair_head_head_moved", // ... head advanced, slot not yet freed for the next lap
    "adopt_observed",   // consumer found a dead-looking receiver's message (pause point)
    "adopt_claimed",    // consumer adopting a dead receiver's message: slot claimed
    "wait_woken",       // blocked sender or receiver: back from a futex sleep, not yet looked
];

#[cfg(feature = "crash-points")]
pub fn hit(point: &'static str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    static FIRED: AtomicBool = AtomicBool::new(false);
    let target = TARGET.get_or_init(|| std::env::var("SHMQ_CRASH_AT").ok());
    // Relaxed: the flag only makes the point fire once; it orders nothing.
    if target.as_deref() == Some(point) && !FIRED.swap(true, Ordering::Relaxed) {
        eprintln!("SHMQ_CRASH_POINT {point}");
        // SAFETY: raising a signal on ourselves has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGSTOP) };
    }
}

#[cfg(all(not(feature = "crash-points"), not(loom)))]
#[inline(always)]
pub fn hit(_point: &'static str) {}

/// Under loom with `SHMQ_LOOM_YIELD` set, a crash point makes the model's scheduler run the
/// other threads first: loom's search did not try a preemption between a receive run's first
/// claim and its next ones (a double claim planted there passed every model, even without a
/// preemption bound, and fails at once with the yield). Crash points mark exactly such
/// windows. A forced switch also leaves out the schedules that run on through the point, so
/// this is a second search next to the default one, not a replacement (docs/LIVENESS.md).
#[cfg(all(not(feature = "crash-points"), loom))]
pub fn hit(_point: &'static str) {
    use std::sync::OnceLock;
    static YIELD: OnceLock<bool> = OnceLock::new();
    if *YIELD.get_or_init(|| std::env::var_os("SHMQ_LOOM_YIELD").is_some()) {
        loom::thread::yield_now();
    }
}
