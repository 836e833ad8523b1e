//! Message timestamps: `CLOCK_REALTIME` in nanoseconds since the Unix epoch, read cheaply.
//!
//! Platform code (Linux, x86_64 fast path), like `segment.rs` and `wait.rs`.
//!
//! # Why
//! Every `send_bytes` stamps its message. Through the vDSO, `clock_gettime(CLOCK_REALTIME)`
//! costs about 30 ns on the project's VM (a serialising `lfence; rdtsc` plus the kernel's
//! scaling), a third to a half of a whole single-producer send. An unserialised `rdtsc` costs
//! about 12 ns.
//!
//! # How
//! Each thread reads the kernel clock at most once per [`REFRESH_NS`] and extrapolates between
//! reads with the time-stamp counter, at the rate it measured between its last two kernel
//! reads (at least [`CALIBRATION_NS`] apart). So a timestamp is the kernel's `CLOCK_REALTIME`
//! read less than a millisecond earlier, plus the TSC ticks since, converted at a rate
//! measured over a millisecond or more. Each kernel read is paired with the counter read
//! right before and after it, and a pair that took long (an interruption) is not used. On
//! the project's VM the stamps stayed within 0.8 µs of kernel reads bracketing them over
//! 2 s of back-to-back stamping (the unit test checks 20 µs). A step of the system clock
//! shows within one refresh interval.
//!
//! This is only done when the kernel itself uses the TSC as its clocksource: it then has
//! verified that the counter is invariant and synchronised across CPUs. Otherwise (another
//! clocksource, another architecture) every timestamp is a `clock_gettime`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};

/// Longest extrapolation from one kernel read.
const REFRESH_NS: u64 = 1_000_000;
/// Shortest interval over which a TSC rate is measured.
const CALIBRATION_NS: u64 = 1_000_000;
/// Plausible TSC rates, ticks per microsecond (10 MHz to 20 GHz): a rate outside them means a
/// clock step between the two reads, and the measurement is discarded.
const MIN_TICKS_PER_US: u64 = 10;
const MAX_TICKS_PER_US: u64 = 20_000;
/// A kernel clock read that took more TSC ticks than this was interrupted (an uninterrupted
/// one takes about a hundred: ~30 ns at a few GHz).
const MAX_READ_TICKS: u64 = 2_000;

/// Whether the kernel's clocksource is the TSC: 0 not yet known, 1 yes, 2 no.
static TSC_CLOCKSOURCE: AtomicU8 = AtomicU8::new(0);

/// One thread's extrapolation state.
#[derive(Clone, Copy)]
struct Extrapolation {
    /// TSC and kernel time of the last kernel read.
    base_tsc: u64,
    base_ns: u64,
    /// Nanoseconds per tick in 32.32 fixed point; 0 until measured.
    ns_per_tick_q32: u64,
    /// Ticks after `base_tsc` within which extrapolation is allowed (0: read the kernel).
    window_ticks: u64,
    /// TSC and kernel time of the read that starts the current rate measurement.
    calibration_tsc: u64,
    calibration_ns: u64,
}

thread_local! {
    static STATE: Cell<Extrapolation> = const {
        Cell::new(Extrapolation {
            base_tsc: 0,
            base_ns: 0,
            ns_per_tick_q32: 0,
            window_ticks: 0,
            calibration_tsc: 0,
            calibration_ns: 0,
        })
    };
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`, to well under a microsecond: see the
/// module notes). A clock before the epoch reads as 0.
#[inline]
pub fn realtime_ns() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        let tsc = rdtsc();
        if let Ok(Some(ns)) = STATE.try_with(|s| {
            let st = s.get();
            let ticks = tsc.wrapping_sub(st.base_tsc);
            // A counter that went backwards (wrapping to a huge value) fails this test too.
            (ticks < st.window_ticks).then(|| {
                st.base_ns
                    .wrapping_add(((ticks as u128 * st.ns_per_tick_q32 as u128) >> 32) as u64)
            })
        }) {
            return ns;
        }
        refresh()
    }
    #[cfg(not(target_arch = "x86_64"))]
    kernel_realtime_ns()
}

/// The slow path: reads the kernel clock, and (re)measures the TSC rate when the last
/// measurement started long enough ago.
#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
fn refresh() -> u64 {
    if !tsc_is_clocksource() {
        return kernel_realtime_ns();
    }
    let Some((tsc, now)) = paired_read() else {
        // Interrupted around every try (a VM exit, preemption): no pair to extrapolate from.
        let _ = STATE.try_with(|s| {
            s.set(Extrapolation {
                window_ticks: 0,
                ..s.get()
            })
        });
        return kernel_realtime_ns();
    };
    // Thread-local storage being torn down (a send from a destructor): no state to keep.
    let _ = STATE.try_with(|s| {
        let mut st = s.get();
        let ticks = tsc.wrapping_sub(st.calibration_tsc);
        let nanos = now.wrapping_sub(st.calibration_ns);
        if st.calibration_tsc == 0 || (nanos as i64) < 0 || ticks as i64 <= 0 {
            // First read, or a clock or counter that went backwards: start measuring again.
            st = Extrapolation {
                window_ticks: 0,
                calibration_tsc: tsc,
                calibration_ns: now,
                ..st
            };
        } else if nanos >= CALIBRATION_NS {
            let plausible =
                (MIN_TICKS_PER_US..=MAX_TICKS_PER_US).contains(&(ticks / (nanos / 1_000).max(1)));
            if plausible {
                let ns_per_tick_q32 = ((nanos as u128) << 32) / ticks as u128;
                st.ns_per_tick_q32 = ns_per_tick_q32.min(u64::MAX as u128) as u64;
                st.window_ticks = (ticks as u128 * REFRESH_NS as u128 / nanos as u128) as u64;
            } else {
                st.window_ticks = 0;
            }
            st.calibration_tsc = tsc;
            st.calibration_ns = now;
        }
        st.base_tsc = tsc;
        st.base_ns = now;
        s.set(st);
    });
    now
}

/// A kernel clock read and the TSC at the same moment: the counter read just before and
/// just after, averaged, from a try short enough not to have been interrupted (a pair taken
/// across a preemption or a VM exit would skew the base and the measured rate by as long).
#[cfg(target_arch = "x86_64")]
fn paired_read() -> Option<(u64, u64)> {
    for _ in 0..4 {
        let before = rdtsc();
        let now = kernel_realtime_ns();
        let ticks = rdtsc().wrapping_sub(before);
        if ticks < MAX_READ_TICKS {
            return Some((before.wrapping_add(ticks / 2), now));
        }
    }
    None
}

/// Reads the time-stamp counter. Not serialised: a timestamp may be taken a few dozen cycles
/// early or late, which is far below the clock's accuracy anyway.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` has no preconditions on x86_64 (it only reads the counter). The
    // intrinsic is an `unsafe fn` in older compilers and a safe one in newer ones.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
}

/// Whether the kernel uses the TSC as its clocksource (read once per process).
#[cfg(target_arch = "x86_64")]
fn tsc_is_clocksource() -> bool {
    // Relaxed: a cached answer to a question every thread would answer the same way.
    match TSC_CLOCKSOURCE.load(Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let tsc = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .is_ok_and(|s| s.trim() == "tsc");
            TSC_CLOCKSOURCE.store(if tsc { 1 } else { 2 }, Relaxed);
            tsc
        }
    }
}

/// `clock_gettime(CLOCK_REALTIME)` in nanoseconds since the Unix epoch (0 before it).
pub fn kernel_realtime_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    timespec_ns(&ts)
}

/// A clock reading in nanoseconds since the clock's zero (0 for a time before it).
fn timespec_ns(ts: &libc::timespec) -> u64 {
    if ts.tv_sec < 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// `CLOCK_MONOTONIC_COARSE` in nanoseconds: the kernel's last tick, read without the
/// counter (about 7–11 ns on the project's VM against 30 for `CLOCK_MONOTONIC`), to the
/// tick's resolution (4 ms there). For rate limits that a receive polling an empty queue
/// asks about on every call, where a precise clock read cost a third of the call. Falls
/// back to the precise clock if the kernel lacks the coarse one.
pub fn coarse_monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; an unknown clock id fails with EINVAL
    // and writes nothing.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } != 0 {
        // SAFETY: as above; CLOCK_MONOTONIC always exists on Linux.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    timespec_ns(&ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The coarse clock moves forward, with the precise one, to within its resolution.
    #[test]
    fn coarse_clock_follows_the_monotonic_clock() {
        let precise = || {
            let t = std::time::Instant::now();
            move || t.elapsed().as_nanos() as u64
        };
        let since = precise();
        let first = coarse_monotonic_ns();
        let mut last = first;
        while since() < 50_000_000 {
            let now = coarse_monotonic_ns();
            assert!(now >= last, "the coarse clock went back: {last} then {now}");
            last = now;
        }
        // 50 ms passed on the precise clock: the coarse one moved by that, less at most two
        // ticks (its resolution, 4 ms at HZ=250, 10 ms at HZ=100); more only if this thread
        // was kept off its core for long inside the loop (hence the wide upper bound: it
        // catches a wrong unit).
        let moved = last - first;
        assert!(
            (30_000_000..60_000_000_000).contains(&moved),
            "the coarse clock moved {moved} ns while the precise one moved 50 ms"
        );
    }

    /// Stamps taken over a few calibration periods stay within a few microseconds of the
    /// kernel's clock read right before and after each of them.
    #[test]
    fn stays_close_to_the_kernel_clock() {
        let start = kernel_realtime_ns();
        let mut worst = 0u64;
        while kernel_realtime_ns() - start < 20 * CALIBRATION_NS {
            let before = kernel_realtime_ns();
            let stamp = realtime_ns();
            let after = kernel_realtime_ns();
            // Outside [before, after] by how much (0 if inside).
            let off = before
                .saturating_sub(stamp)
                .max(stamp.saturating_sub(after));
            worst = worst.max(off);
        }
        // Preemption cannot put an exact clock outside the bracket, so `off` is the
        // extrapolation's error; the bound leaves room over the sub-microsecond measured.
        assert!(
            worst < 20_000,
            "a timestamp was {worst} ns outside the kernel clock's reads around it"
        );
        let extrapolating = STATE.with(|s| s.get().window_ticks) > 0;
        assert_eq!(
            extrapolating,
            tsc_is_clocksource(),
            "extrapolation runs exactly when the kernel uses the TSC"
        );
    }
}
