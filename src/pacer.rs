//! When a polling wait gives its core away (`sched_yield`), and whether a wait polls at all
//! ([`spin_for`]: a handle at the default spin limit whose waits keep ending in long sleeps
//! stops polling).
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
//!
//! "A while" is a few system calls' worth ([`switch_threshold`]): a yield that finds nobody
//! else to run costs about two (a system call and a pass through the scheduler), one that
//! runs a peer costs two context switches and the peer's own calls. A fixed 5 µs, as before,
//! missed the peer of a round trip on one core (it answers within 1–3 µs here), so each side
//! polled a microsecond for nothing before every yield: round trips on one core took
//! 5.6–6.9 µs, against 2.3–3.2 µs now (a pipe: 2.9–4.6 µs).
//!
//! Within a wait, only a long switch ([`LONG_SWITCH`]) makes the rest of the wait yield at
//! every attempt. After a brief one that did not bring what the wait waits for, the task
//! that ran was most likely another waiter on this core, yielding back: yielding at every
//! attempt then only hands the core back and forth (two producers and two consumers on two
//! cores ran about 4 % slower that way, within this VM's noise but in the same direction).

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::DEFAULT_SPIN_LIMIT;

/// While polling, the caller yields its core this often at first, so a peer on the same
/// core runs.
const SPIN_YIELD_EVERY: Duration = Duration::from_micros(1);
/// The longest gap between yields of a wait that polls past [`DEFAULT_SPIN_LIMIT`] while
/// nobody else wants its core: a peer woken onto this core meanwhile (and not given it by
/// the scheduler at once) waits at most this long for the core.
const MAX_YIELD_GAP: Duration = Duration::from_micros(64);
/// The bounds of [`switch_threshold`]: the least time a yield that let another task run keeps
/// the caller off its core, whatever the system calls cost (a no-op `sched_yield` takes 0.4 µs
/// on the project's VM, and a thousandth of them take over 2 µs, a pause of the VM: a
/// threshold below that sees switches that did not happen, each costing one needless
/// yield), ...
const MIN_SWITCH: Duration = Duration::from_micros(1);
/// ... and the most: where system calls are that slow (a sandboxing kernel, nested
/// virtualisation), the rule cannot tell and stays at the old fixed threshold.
const MAX_SWITCH: Duration = LONG_SWITCH;
/// A yield that keeps the caller off its core this long let another task do work there,
/// not just yield back: the rest of the wait yields at every attempt.
const LONG_SWITCH: Duration = Duration::from_micros(5);
/// How many of the cheapest system calls a yield that keeps the caller off its core longer
/// than that let another task run: twice a yield that finds nobody else to run.
const SWITCH_IN_SYSTEM_CALLS: u32 = 4;

/// How long a yield keeps the caller off its core when it let another task run there (when
/// the peer shares the core, polling only delays it): [`SWITCH_IN_SYSTEM_CALLS`] times the
/// cheapest system call, measured once per process (at its first yield), within
/// [`MIN_SWITCH`]..=[`MAX_SWITCH`].
pub(crate) fn switch_threshold() -> Duration {
    static THRESHOLD: OnceLock<Duration> = OnceLock::new();
    *THRESHOLD.get_or_init(|| threshold_for(cheapest_system_call()))
}

/// The switch threshold where the cheapest system call costs `system_call`.
fn threshold_for(system_call: Duration) -> Duration {
    (system_call * SWITCH_IN_SYSTEM_CALLS).clamp(MIN_SWITCH, MAX_SWITCH)
}

/// The cost of a system call that does nothing: the least of 16 `getppid`s (the least, so
/// that a preemption during one does not count; `getppid` is never cached by the C
/// library, unlike `getpid` in old ones).
fn cheapest_system_call() -> Duration {
    (0..16)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(std::os::unix::process::parent_id());
            start.elapsed()
        })
        .min()
        .unwrap_or(MAX_SWITCH)
}

/// A sleep this long was not a near miss: polling a little longer would not have caught
/// the answer. Shorter sleeps (an answer that came just after the polling, plus the
/// wake-up's tens of microseconds) keep a handle polling, so that a peer answering around
/// the limit does not switch it off.
pub(crate) const LONG_SLEEP: Duration = Duration::from_micros(200);
/// With the default spin limit, a handle whose last this-many waits (in one direction) all
/// ended after sleeping [`LONG_SLEEP`] or more polls no more: its waits sleep after one
/// look, as with a spin limit of zero (an idle worker's waits for its next task: polling
/// 10 µs before each sleep cost it a third more CPU per task than the wake-up alone). A
/// wait that its answer reaches while it polls, or soon after it went to sleep, starts it
/// polling again, ...
const SLEEPY_WAITS: u32 = 8;
/// ... as does every this-many-th wait, which polls for the full limit to find out.
const PROBE_EVERY_WAITS: u32 = 16;

/// With the default spin limit, a wait of a thread that has just woken a sleeper on the
/// other side of the queue (a sender asleep on a full queue, for a receive; a receiver asleep
/// on an empty one, for a send) polls until this long after that wake-up, if that is longer.
/// The peer is on its way back: a wake-up takes it tens of microseconds on a VM. A wait that
/// sleeps meanwhile makes the peer wake it in turn, and so on: a stream whose queue runs
/// full or empty can fall into turns of sleeps on both sides, each costing both a wake-up.
/// With 64-byte batches of 32 on the project's VM, the two processes of a stream slept up
/// to 275 times each per 4 M messages, in equal numbers (turns), and those runs were up to
/// a quarter slower; polling this long after a wake-up left 0–4 sleeps a process in the
/// VM's fast state, mostly one side's (docs/PERFORMANCE.md, twenty-second session). The
/// price: at most this much polling per wake-up this thread pays for anyway, and only when
/// it then has to wait on that same queue in the other direction.
pub(crate) const PEER_WAKE_COVER: Duration = Duration::from_micros(100);

/// How long a wait polls, with the handle's default spin limit `limit`, when the handle's
/// last `in_a_row` waits all ended after a long sleep: `limit`, or zero once that makes
/// [`SLEEPY_WAITS`] in a row, but for every [`PROBE_EVERY_WAITS`]-th wait.
pub(crate) fn spin_for(limit: Duration, in_a_row: u32) -> Duration {
    if in_a_row >= SLEEPY_WAITS && in_a_row % PROBE_EVERY_WAITS != 0 {
        Duration::ZERO
    } else {
        limit
    }
}

/// The yield schedule of one wait; times are measured from the start of its polling.
#[derive(Debug)]
pub(crate) struct YieldPacer {
    /// Yield once the wait has polled this long (zero: at every attempt).
    next: Duration,
    /// The gap to the next yield after one that came straight back.
    gap: Duration,
    /// A yield that keeps the caller off its core this long let another task run (`None`:
    /// [`switch_threshold`], looked up at the first yield, so that a wait that never yields
    /// does not measure it).
    switched_after: Option<Duration>,
}

impl YieldPacer {
    /// A wait's schedule: yield at once if the handle's previous wait found another task on
    /// its core (`yield_first`), else after the first gap.
    pub(crate) fn new(yield_first: bool) -> Self {
        Self::with_threshold(yield_first, None)
    }

    fn with_threshold(yield_first: bool, switched_after: Option<Duration>) -> Self {
        Self {
            next: if yield_first {
                Duration::ZERO
            } else {
                SPIN_YIELD_EVERY
            },
            gap: SPIN_YIELD_EVERY,
            switched_after,
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
    /// yields first). After a long switch the rest of this wait yields at every attempt,
    /// after a brief one a microsecond later.
    pub(crate) fn yielded(&mut self, spun: Duration, back: Duration) -> bool {
        let switched_after = *self.switched_after.get_or_insert_with(switch_threshold);
        let off = back.saturating_sub(spun);
        let switched = off >= switched_after;
        if switched {
            // Another task ran here: the gaps start again from a microsecond, and after a
            // long switch the rest of the wait yields at every attempt.
            self.gap = SPIN_YIELD_EVERY;
            self.next = if off >= LONG_SWITCH {
                Duration::ZERO
            } else {
                back + self.gap
            };
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
        assert!(pacer.yielded(spun, spun + LONG_SWITCH));
        assert!(pacer.every_attempt() && pacer.due(spun + LONG_SWITCH));
        // Straight back now: the next yield is a microsecond later, then the gaps grow again.
        let back = spun + 2 * LONG_SWITCH;
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

    #[test]
    fn a_peer_answering_on_this_core_within_microseconds_counts_as_a_switch() {
        // The project's VM: `getppid` 0.19 µs, a no-op yield 0.4 µs, the peer of a round
        // trip on one core back within 1–3 µs.
        let mut pacer = YieldPacer::with_threshold(false, Some(threshold_for(190 * US / 1000)));
        assert!(
            !pacer.yielded(US, US + 400 * US / 1000),
            "a yield that came straight back"
        );
        let back = 3 * US + 1500 * US / 1000;
        assert!(pacer.yielded(3 * US, back), "the peer ran for 1.5 µs");
        // The handle's next wait yields first (the caller stores the answer for it); this
        // one, not brought its answer by the brief switch, keeps a gap before the next yield.
        assert!(!pacer.every_attempt());
        assert!(!pacer.due(back + US / 2) && pacer.due(back + US));
        // In a long wait whose gaps have grown, a brief switch starts them again.
        let mut pacer = YieldPacer::with_threshold(false, Some(MIN_SWITCH));
        yields(&mut pacer, 1_000 * US, Duration::ZERO);
        let spun = 1_000 * US;
        assert!(!pacer.due(spun + 2 * US), "the gaps have grown");
        assert!(pacer.yielded(spun, spun + 2 * US));
        assert!(!pacer.every_attempt() && pacer.due(spun + 3 * US));
    }

    #[test]
    fn the_switch_threshold_follows_the_cost_of_a_system_call_within_bounds() {
        assert_eq!(threshold_for(Duration::ZERO), MIN_SWITCH);
        assert_eq!(threshold_for(190 * US / 1000), MIN_SWITCH);
        assert_eq!(threshold_for(400 * US / 1000), 1600 * US / 1000);
        assert_eq!(threshold_for(3 * US), MAX_SWITCH);
        // Measured on this machine: whatever it is, within the bounds, and the same each
        // time (once per process).
        let measured = switch_threshold();
        assert!(
            (MIN_SWITCH..=MAX_SWITCH).contains(&measured),
            "{measured:?}"
        );
        assert_eq!(switch_threshold(), measured);
    }

    #[test]
    fn a_handle_whose_waits_keep_ending_asleep_stops_polling_but_probes() {
        let limit = 10 * US;
        // Polls while fewer than eight waits in a row slept.
        assert!((0..SLEEPY_WAITS).all(|n| spin_for(limit, n) == limit));
        // Then not, but for every sixteenth wait.
        let polled: Vec<u32> = (SLEEPY_WAITS..200)
            .filter(|&n| spin_for(limit, n) == limit)
            .collect();
        assert_eq!(
            polled,
            (1..13).map(|k| k * PROBE_EVERY_WAITS).collect::<Vec<_>>()
        );
        // A count that wrapped around starts over, polling.
        assert_eq!(spin_for(limit, u32::MAX.wrapping_add(1)), limit);
    }
}
