//! Sleeping and waking across processes: Linux futexes on 32-bit words in the segment, with
//! asymmetric fences so that the hot path pays no fence at all.
//!
//! The futexes are *shared* (no `FUTEX_PRIVATE_FLAG`), so the kernel keys them by the
//! physical page and a waiter in one process is woken by a waker in another.
//!
//! Protocol (an event count with a "waiters" bit): a sleeper sets [`WAITERS_BIT`], re-checks
//! its condition, then sleeps while the word is unchanged. A waker that changed the
//! condition for `n` waiters bumps the word and clears the bit if it was set, then wakes
//! `n` sleepers. A woken sleeper announces itself again before it looks, and one that
//! returns (with what it waited for, or failing) while more is left wakes that many more in
//! turn (see [`wake`]). A process killed while asleep leaves at most a stale bit, which the next
//! waker clears: one spurious system call, never a lost wake-up or a permanent cost. One
//! killed after it was woken and before it announced itself again leaves the other sleepers
//! out of sight until their sleep slice ends (50 ms at most).
//!
//! # Asymmetric fences
//! The waker's "publish, then load the bit" and the sleeper's "set the bit, then re-check" are
//! a Dekker pair: each side needs a full (store-load) fence between its two steps, or both can
//! miss each other. A fence per message costs as much as the rest of a send (it drains the
//! store buffer, whose stores go to lines the peer core holds), while sleeping is rare. So the
//! waker issues only a compiler barrier ([`light_fence`]) and the sleeper pays for both sides
//! with `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` ([`heavy_fence`]), which makes every
//! running thread of every registered process pass a full barrier before it returns: the
//! waker's load of the bit is then either before that barrier (so its publication is visible
//! to the re-check) or after it (so it sees the bit). This is the pattern of liburcu and
//! folly's `asymmetricHeavyBarrier`.
//!
//! It only holds if every waker's process registered (`segment::register_light_fences`, done
//! at attach). A process that cannot (an old kernel, a seccomp filter) sets
//! `WakeLine::fence_required` in the header when it joins, and from then on every process
//! fences for real on that queue. Under loom both sides always use real fences.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;

use crate::layout::WAITERS_BIT;
use crate::sync::{fence, AtomicU32};

/// The light side of an asymmetric fence (see the module notes): a compiler barrier when
/// every process on the queue can be reached by [`heavy_fence`], a real fence otherwise.
/// `fence_required` is the header's `WakeLine::fence_required`.
#[inline(always)]
pub fn light_fence(fence_required: &AtomicU32) {
    #[cfg(not(loom))]
    {
        // Relaxed: the flag is set once, at a join that precedes that process's first sleep
        // (and so the first heavy fence that relies on us seeing it; a waker that misses it
        // during that join costs at most one sleep slice, never a hang).
        if crate::segment::light_fences_registered() && fence_required.load(Relaxed) == 0 {
            std::sync::atomic::compiler_fence(SeqCst);
            return;
        }
    }
    #[cfg(loom)]
    let _ = fence_required;
    fence(SeqCst);
}

/// The heavy side of an asymmetric fence: a real fence plus `membarrier` (see the module
/// notes). If the system call fails, marks the queue `fence_required` so that peers fence.
pub fn heavy_fence(fence_required: &AtomicU32) {
    #[cfg(not(loom))]
    if !crate::segment::heavy_fence() {
        // SeqCst: the flag must be visible before our re-check to any waker that then loads
        // it; the first waker that misses it costs at most one sleep slice.
        fence_required.store(1, SeqCst);
        fence(SeqCst);
    }
    #[cfg(loom)]
    {
        let _ = fence_required;
        fence(SeqCst);
    }
}

/// Announces a sleeper on `word`; returns the value to pass to [`sleep`].
///
/// Call it, re-check the condition, and only then sleep. The RMW followed by a heavy fence
/// makes the announcement and the re-check's loads a Dekker pair with [`wake`]'s light
/// fence, so either the waker sees the bit or the sleeper sees the new state.
pub fn prepare(word: &AtomicU32, fence_required: &AtomicU32) -> u32 {
    let value = word.fetch_or(WAITERS_BIT, SeqCst) | WAITERS_BIT;
    heavy_fence(fence_required);
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

/// [`wake`]'s `n` that wakes every sleeper (`FUTEX_WAKE` takes an `int`).
pub const EVERYONE: u32 = i32::MAX as u32;

/// `n` waiters as [`wake`]'s count: at least one, at most [`EVERYONE`].
pub fn waiters(n: usize) -> u32 {
    u32::try_from(n).map_or(EVERYONE, |n| n.clamp(1, EVERYONE))
}

/// Called after making the condition true for `n` waiters (`n` messages published, or `n`
/// slots freed): wakes up to `n` sleepers if any announced itself. Costs a compiler barrier
/// and one load when nobody sleeps.
///
/// Wakes `n`, not everyone: with many idle workers asleep on a queue, waking them all for
/// each message cost every one of them a wake-up, a heavy fence and a sleep (about 7 µs of
/// CPU each on the project's VM), to find the message taken. Clearing the bit leaves the
/// sleepers not woken out of sight of the next waker until a woken one announces itself
/// again, which it does before it looks; a woken call that returns (with what it waited
/// for, or failing) while more is left wakes that many more in turn (`pass_wake_on` in
/// `lib.rs`), so what was published meanwhile is not left behind.
#[inline]
pub fn wake(word: &AtomicU32, fence_required: &AtomicU32, n: u32) {
    // Pairs with `prepare`'s heavy fence (see the module notes): orders our earlier
    // publication before the load of the bit.
    light_fence(fence_required);
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
    futex(word, libc::FUTEX_WAKE, n, std::ptr::null());
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

/// Wakes up to `n` receivers sleeping on the queue of header `h` (after publishing `n`
/// messages).
#[inline]
pub fn wake_receivers(h: &crate::layout::Header, n: u32) {
    wake(&h.wake.not_empty, &h.wake.fence_required, n);
}

/// Wakes up to `n` senders sleeping on the queue of header `h` (after freeing `n` slots).
#[inline]
pub fn wake_senders(h: &crate::layout::Header, n: u32) {
    wake(&h.wake.not_full, &h.wake.fence_required, n);
}
