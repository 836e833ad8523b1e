//! When a polling wait gives its core away (`sched_yield`).
//!
//! A wait polls before it sleeps (`CrossProcessQueue::run`). A peer on the same core cannot
//! answer while we poll, so the wait yields now and then; when a yield keeps it off the core
//! for a while, another task ran there (likely the peer), and the wait then yields at every
//! attempt. When yields come straight back, nobody else wants the core and each one is a
//! system call for nothing: about 370 ns on the project's VM, against a microsecond of
//! polling between them. Within [`DEFAULT_SPIN_LIMIT`] the wait still yields every
//! microsecond (a short wait is over before backing off would save anything); a longer one
//! (a handle with a raised spin limit) doubles the gap after each yield that came straight
//! back, up to [`MAX_YIELD_GAP`], and starts again from a microsecond after one that did not.

use std::time::Duration;

use crate::DEFAULT_SPIN_LIMIT;

/// While polling, the caller yields its core this often at first, so a peer on the same
/// core runs.
const SPIN_YIELD_EVERY: Duration = Duration::from_micros(1);
/// The longest gap between yields of a wait that polls past [`DEFAULT_SPIN_LIMIT`] while
/// nobody else wants its core: a peer woken onto this core meanwhile (and not given it by
/// the scheduler at once) waits at most this long for the core.
const MAX_YIELD_GAP: Duration = Duration::from_micros(64);
/// A yield that keeps the caller off its core this long let another task run there: when
/// the peer shares the core, polling only delays it.
const YIELD_SWITCHED: Duration = Duration::from_micros(5);

/// The yield schedule of one wait; times are measured from the start of its polling.
#[derive(Debug)]
pub(crate) struct YieldPacer {
    /// Yield once the wait has polled this long (zero: at every attempt).
    next: Duration,
    /// The gap to the next yield after one that came straight back.
    gap: Duration,
}

impl YieldPacer {
    /// A wait's schedule: yield at once if the handle's previous wait found another task on
    /// its core (`yield_first`), else after the first gap.
    pub(crate) fn new(yield_first: bool) -> Self {
        Self {
            next: if yield_first {
                Duration::ZERO
            } else {
                SPIN_YIELD_EVERY
            },
            gap: SPIN_YIELD_EVERY,
        }
    }

    /// Whether the wait yields at every attempt (so it reads the clock at every attempt).
    pub(crate) fn every_attempt(&self) -> bool {
        self.next.is_zero()
    }

    /// Whether a wait that has polled for `spun` yields now.
    pub(crate) fn due(&self, spun: Duration) -> bool {
        spun >= self.next
    }

    /// Records a yield made when the wait had polled for `spun`, back when it had polled for
    /// `back`; returns whether another task ran meanwhile (the handle's next wait then
    /// yields first).
    pub(crate) fn yielded(&mut self, spun: Duration, back: Duration) -> bool {
        let switched = back.saturating_sub(spun) >= YIELD_SWITCHED;
        if switched {
            self.gap = SPIN_YIELD_EVERY;
            self.next = Duration::ZERO;
        } else {
            self.next = back + self.gap;
            if back >= DEFAULT_SPIN_LIMIT {
                self.gap = (self.gap * 2).min(MAX_YIELD_GAP);
            }
        }
        switched
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    /// Runs a wait that polls until `until`, each yield returning after `cost`; returns the
    /// times (from the start of polling) of its yields.
    fn yields(pacer: &mut YieldPacer, until: Duration, cost: Duration) -> Vec<Duration> {
        let step = Duration::from_nanos(50); // one attempt
        let (mut now, mut at) = (Duration::ZERO, Vec::new());
        while now < until {
            now += step;
            if pacer.due(now) {
                at.push(now);
                let back = now + cost;
                pacer.yielded(now, back);
                now = back;
            }
        }
        at
    }

    #[test]
    fn a_short_wait_yields_every_microsecond() {
        let at = yields(
            &mut YieldPacer::new(false),
            DEFAULT_SPIN_LIMIT,
            Duration::ZERO,
        );
        assert_eq!(at.len(), 10, "{at:?}");
        assert!(at.windows(2).all(|w| w[1] - w[0] <= US + US / 10), "{at:?}");
    }

    #[test]
    fn a_long_wait_alone_on_its_core_backs_off_to_the_cap() {
        let cost = Duration::from_nanos(370);
        let at = yields(&mut YieldPacer::new(false), 10_000 * US, cost);
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        // 1 µs gaps for the first 10 µs, then doubling to the cap, which it keeps.
        assert!(
            gaps.iter().all(|&g| g <= MAX_YIELD_GAP + cost + US),
            "{gaps:?}"
        );
        assert!(gaps.windows(2).all(|w| w[1] + US / 10 >= w[0]), "{gaps:?}");
        let last = gaps[gaps.len() - 1];
        assert!(last >= MAX_YIELD_GAP, "{gaps:?}");
        // Against a yield every microsecond (about 7,300 in 10 ms at this cost).
        assert!(at.len() < 200, "{} yields", at.len());
    }

    #[test]
    fn a_yield_that_let_another_task_run_starts_the_schedule_again() {
        let mut pacer = YieldPacer::new(false);
        yields(&mut pacer, 1_000 * US, Duration::ZERO);
        assert!(!pacer.every_attempt());
        let spun = 1_000 * US;
        assert!(pacer.yielded(spun, spun + YIELD_SWITCHED));
        assert!(pacer.every_attempt() && pacer.due(spun + YIELD_SWITCHED));
        // Straight back now: the next yield is a microsecond later, then the gaps grow again.
        let back = spun + 2 * YIELD_SWITCHED;
        assert!(!pacer.yielded(back, back));
        assert!(!pacer.due(back + US / 2) && pacer.due(back + US));
        assert!(!pacer.yielded(back + US, back + US));
        assert!(!pacer.due(back + 2 * US) && pacer.due(back + 3 * US));
    }

    #[test]
    fn a_handle_that_found_another_task_on_its_core_yields_first() {
        assert!(YieldPacer::new(true).due(Duration::ZERO));
        assert!(!YieldPacer::new(false).due(Duration::ZERO));
    }
}
