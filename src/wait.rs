//! Sleeping and waking across processes: Linux futexes on 32-bit words in the segment.
//!
//! The futexes are *shared* (no `FUTEX_PRIVATE_FLAG`), so the kernel keys them by the
//! physical page and a waiter in one process is woken by a waker in another.
//!
//! Protocol (an event count with a "waiters" bit): a sleeper sets [`WAITERS_BIT`], re-checks
//! its condition, then sleeps while the word is unchanged. A waker that changed the
//! condition bumps the word and clears the bit if it was set, then wakes everyone. A process
//! killed while asleep leaves at most a stale bit, which the next waker clears: one spurious
//! system call, never a lost wake-up or a permanent cost.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use crate::layout::WAITERS_BIT;
use crate::sync::{fence, AtomicU32};

/// Announces a sleeper on `word`; returns the value to pass to [`sleep`].
///
/// Call it, re-check the condition, and only then sleep. `SeqCst` (an RMW followed by a
/// fence) makes the announcement and the re-check's loads a Dekker pair with [`wake_all`]'s
/// fence, so either the waker sees the bit or the sleeper sees the new state.
pub fn prepare(word: &AtomicU32) -> u32 {
    let value = word.fetch_or(WAITERS_BIT, SeqCst) | WAITERS_BIT;
    fence(SeqCst);
    value
}

/// Sleeps while `word == expected`, at most `timeout` (None: no limit). Returns on wake-up,
/// timeout, signal or a changed word; the caller re-checks its condition in every case.
pub fn sleep(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // A relative FUTEX_WAIT timeout is measured on CLOCK_MONOTONIC.
    futex(word, libc::FUTEX_WAIT, expected, ts_ptr);
}

/// Called after making the condition true: wakes every sleeper if any announced itself.
/// Costs one fence and one load when nobody sleeps.
#[inline]
pub fn wake_all(word: &AtomicU32) {
    // SeqCst fence: pairs with `prepare` (see there); orders our earlier publication before
    // the load of the bit.
    fence(SeqCst);
    let mut value = word.load(Relaxed);
    loop {
        if value & WAITERS_BIT == 0 {
            return;
        }
        let next = value.wrapping_add(1) & !WAITERS_BIT;
        // Relaxed: the word carries no data; the fence above ordered the publication.
        match word.compare_exchange_weak(value, next, Relaxed, Relaxed) {
            Ok(_) => break,
            Err(v) => value = v,
        }
    }
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32, std::ptr::null());
}

/// Wakes every sleeper unconditionally (used by shutdown, which must reach them all).
pub fn wake_everyone(word: &AtomicU32) {
    let value = word.load(Relaxed);
    word.store(value.wrapping_add(1) & !WAITERS_BIT, Relaxed);
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32, std::ptr::null());
}

/// The futex system call on `word` (FUTEX_WAIT or FUTEX_WAKE; `timeout` is null or FUTEX_WAIT's
/// relative timeout). Its result is ignored: every caller re-checks its condition.
#[inline]
fn futex(word: &AtomicU32, op: libc::c_int, value: u32, timeout: *const libc::timespec) {
    #[cfg(not(loom))]
    // SAFETY: `word` is a live, aligned 32-bit atomic, which FUTEX_WAIT only reads and
    // FUTEX_WAKE only uses as a key; `timeout` is null or points to a timespec that outlives
    // the call; the remaining arguments are unused by both operations.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            value,
            timeout,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
    // Loom's atomics have no address to sleep on; a wait that returns at once is allowed.
    #[cfg(loom)]
    {
        let _ = (word, op, value, timeout);
        loom::thread::yield_now();
    }
}
