//! Sleeping and waking across processes: Linux futexes on 32-bit words in the segment, with
//! asymmetric fences so that the hot path pays no fence at all.
//!
//! The futexes are *shared* (no `FUTEX_PRIVATE_FLAG`), so the kernel keys them by the
//! physical page and a waiter in one process is woken by a waker in another.
//!
//! Protocol (an event count with a "waiters" bit): a sleeper sets [`WAITERS_BIT`]
//! ([`prepare`]), re-checks its condition, then sleeps while the word is unchanged. A waker
//! that changed the condition for `n` waiters and sees the bit bumps the count, keeping the
//! bit, and wakes `n` sleepers ([`wake`]). Only a wake-up that finds fewer than `n` asleep
//! clears the bit, and then wakes again whoever announced itself meanwhile ([`clear`]). So
//! the bit stays set while anyone may be asleep, and a woken sleeper that finds it set looks
//! before it announces itself again ([`Sleeper`]): the sleepers not woken are still in sight
//! of the next waker, and a wake-up that finds what it was woken for costs no heavy fence. A
//! woken call that returns (with what it waited for, or failing) while more is left wakes
//! that many more in turn: a message published behind a slower producer's position is not
//! left behind (`pass_wake_on` in `lib.rs`).
//!
//! A process killed while asleep, or after it was woken, leaves at most a stale bit, which
//! the next waker clears when it finds nobody to wake: two spurious system calls, never a
//! lost wake-up or a permanent cost. What a woken process killed before it looked was woken
//! for waits for the next wake-up, or for the other sleepers' next slice (50 ms at most).
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
//! at attach, and asked again in a forked child, which a filter installed after the fork may
//! have taken `membarrier` from). A process that cannot (an old kernel, a seccomp filter)
//! sets `WakeLine::fence_required` in the header when it joins, and from then on every
//! process fences for real on that queue. Under loom both sides always use real fences.
//!
//! # Fence mode
//! A `membarrier` interrupts every core running a registered process, so one per sleep is
//! the dearest part of an idle worker's message (and disturbs the busy cores of a large
//! machine). So a sleeper that paid one then sets [`FENCED_BIT`], and while it is set,
//! sleepers pay none and wakers fence for real: a waker whose light load sees the bit issues
//! a real fence and loads the word again ([`wake`]), which is the Dekker pair of the
//! sleeper's announcing read-modify-write. The bit is set with a compare-and-swap over the
//! word exactly as the sleeper announced it, after its `membarrier` (see [`prepare`]), and
//! cleared by a waker that finds it set with nobody announced. Why a waker whose light load
//! missed the bit cannot miss a sleeper that trusted it: the sleeper's announcement comes
//! after the bit in the word's order, so the waker read the word before the bit was set by
//! some sleeper S. If it read it before S's announcement, its load came before the barrier
//! that S's `membarrier` ran on its core (after that barrier it would see the announcement),
//! so its publication, before the load, was visible before S set the bit. If it read it
//! between the two, it saw S's announcement (the word was unchanged until S set the bit)
//! and wakes. Idle workers that sleep with the bit kept set (see below) then pay no
//! `membarrier` at all; the streams that wake a sleeper now and then pay one per sleep as
//! before, since the first send that finds nobody announced clears the bit.

use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::time::Duration;
#[cfg(not(loom))]
use std::time::Instant;

use crate::layout::{FENCED_BIT, WAITERS_BIT, WAKE_COUNT_MASK};
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

/// Proof that the thread holding it has issued a heavy fence that reached every registered
/// process: only [`heavy_fence`] makes one (outside this module nothing can). Setting the
/// fence mode takes one ([`enter_fence_mode`]): the mode is only sound after that fence,
/// and a value cannot be used before the call that makes it, as a statement can be moved
/// before another (no test caught that reordering: the race it opens is too narrow).
#[must_use]
pub struct HeavyFenced(());

/// The heavy side of an asymmetric fence: a real fence plus `membarrier` (see the module
/// notes). If the system call fails, marks the queue `fence_required` so that peers fence,
/// and returns `None`.
pub fn heavy_fence(fence_required: &AtomicU32) -> Option<HeavyFenced> {
    crate::crashpoint::count_heavy_fence();
    #[cfg(not(loom))]
    {
        if crate::segment::heavy_fence() {
            return Some(HeavyFenced(()));
        }
        // SeqCst: the flag must be visible before our re-check to any waker that then loads
        // it; the first waker that misses it costs at most one sleep slice.
        fence_required.store(1, SeqCst);
        fence(SeqCst);
        None
    }
    #[cfg(loom)]
    {
        let _ = fence_required;
        fence(SeqCst);
        Some(HeavyFenced(()))
    }
}

/// Sets [`FENCED_BIT`] over `word` exactly as `announced` (see "Fence mode" in the module
/// notes), after the heavy fence `_after` proves. Returns the value to sleep on: with the
/// bit, or `announced` if the word moved on meanwhile (a waker bumped or cleared it).
fn enter_fence_mode(word: &AtomicU32, announced: u32, _after: HeavyFenced) -> u32 {
    // SeqCst: a rare path (once per stretch in which nobody slept), not worth a weaker
    // argument; the word carries no data.
    match word.compare_exchange(announced, announced | FENCED_BIT, SeqCst, Relaxed) {
        Ok(_) => announced | FENCED_BIT,
        Err(_) => announced,
    }
}

/// Announces a sleeper on `word`; returns the value to pass to [`sleep`].
///
/// Call it, re-check the condition, and only then sleep. The RMW followed by a heavy fence
/// makes the announcement and the re-check's loads a Dekker pair with [`wake`]'s light
/// fence, so either the waker sees the bit or the sleeper sees the new state.
///
/// It leaves the word as it is when the bit is already set. Changing it would make every
/// other sleeper between its own announcement and its sleep find the word changed, announce
/// itself again and change it in turn: a first version that bumped the count here paid 32
/// heavy fences per message with 16 idle workers.
///
/// With [`FENCED_BIT`] set, wakers fence for real and the heavy fence is skipped; without
/// it, the heavy fence is paid and then the bit set, over the word exactly as announced
/// (see "Fence mode" in the module notes). If the word moved on meanwhile (a waker bumped
/// or cleared it), the bit is left clear and the value returned is the announcement's,
/// which the sleep then finds changed.
pub fn prepare(word: &AtomicU32, fence_required: &AtomicU32) -> u32 {
    let before = word.fetch_or(WAITERS_BIT, SeqCst);
    let value = before | WAITERS_BIT;
    if before & FENCED_BIT != 0 {
        // Wakers fence for real now: a real fence here completes the Dekker pair (on x86 the
        // locked read-modify-write above is one already, but the language's model wants it).
        fence(SeqCst);
        return value;
    }
    match heavy_fence(fence_required) {
        Some(fenced) => enter_fence_mode(word, value, fenced),
        None => value,
    }
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

/// One wait's announcements and sleeps on a futex word. It announces itself before a look,
/// except after a sleep that left the word as it announced it, or left the bit set:
///
/// - The word as announced: no waker has seen the announcement yet (a waker that sees it
///   bumps the count), so it still stands, and the sleeper may sleep on it again after a
///   look, without a new heavy fence. Sleep slices that end with nothing to do cost a look.
/// - The bit still set: every other sleeper is still in sight of wakers (see the module
///   notes), so it looks first, and announces itself (then looks again) only if that look
///   finds nothing. A wake-up that finds what it was woken for costs no heavy fence.
pub struct Sleeper<'a> {
    word: &'a AtomicU32,
    fence_required: &'a AtomicU32,
    /// The value of this sleeper's last announcement, to sleep on.
    announced: u32,
    /// What the last sleep left.
    after_sleep: AfterSleep,
}

/// What a sleep left, and so what comes before the next look (see [`Sleeper`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum AfterSleep {
    /// Nothing to rely on (no sleep yet, or the bit was cleared): announce.
    Announce,
    /// The announcement stands: look, then sleep on it again.
    Standing,
    /// The bit is set: look before announcing.
    LookFirst,
}

impl<'a> Sleeper<'a> {
    pub fn new(word: &'a AtomicU32, fence_required: &'a AtomicU32) -> Self {
        Sleeper {
            word,
            fence_required,
            announced: 0,
            after_sleep: AfterSleep::Announce,
        }
    }

    /// Called before each look; returns whether the caller may [`Sleeper::sleep`] if the
    /// look finds nothing. If not (the look came before an announcement), it looks again.
    pub fn before_look(&mut self) -> bool {
        match std::mem::replace(&mut self.after_sleep, AfterSleep::Announce) {
            AfterSleep::Announce => {
                self.announced = prepare(self.word, self.fence_required);
                true
            }
            AfterSleep::Standing => true,
            AfterSleep::LookFirst => false,
        }
    }

    /// Sleeps on the last announcement, at most `timeout`.
    pub fn sleep(&mut self, timeout: Option<Duration>) {
        sleep(self.word, self.announced, timeout);
        // Relaxed: the word carries no data. An unchanged word means no waker bumped it
        // since the announcement (the count would have to wrap around 2^30 bumps). The bit
        // is only a hint: wakers clear it once nobody is left asleep (see `wake`), so
        // looking first never hides a sleeper from them, and a cleared bit (shutdown)
        // means announcing again.
        let now = self.word.load(Relaxed);
        self.after_sleep = if now == self.announced {
            AfterSleep::Standing
        } else if now & WAITERS_BIT != 0 {
            AfterSleep::LookFirst
        } else {
            AfterSleep::Announce
        };
    }
}

/// [`wake`]'s `n` that wakes every sleeper (`FUTEX_WAKE` takes an `int`).
pub const EVERYONE: u32 = i32::MAX as u32;

/// `n` waiters as [`wake`]'s count: at least one, at most [`EVERYONE`].
pub fn waiters(n: usize) -> u32 {
    u32::try_from(n).map_or(EVERYONE, |n| n.clamp(1, EVERYONE))
}

/// Called after making the condition true for `n` waiters (`n` messages published, or `n`
/// slots freed): wakes up to `n` sleepers if any announced itself. Costs a compiler barrier
/// and one load when nobody sleeps, one system call when somebody does, and two to clear
/// the bit (see [`clear`]) when the sleepers are gone.
///
/// Wakes `n`, not everyone: with many idle workers asleep on a queue, waking them all for
/// each message cost every one of them a wake-up, a heavy fence and a sleep (about 7 µs of
/// CPU each on the project's VM), to find the message taken. The bit stays set for the
/// sleepers not woken; it is cleared only when the kernel had fewer than `n` to wake, so a
/// stale announcement (a sleeper killed, or one woken that did not sleep again) costs the
/// next waker two spurious system calls. A woken call that returns (with what it waited
/// for, or failing) while more is left wakes that many more in turn (`pass_wake_on` in
/// `lib.rs`).
#[inline]
pub fn wake(word: &AtomicU32, fence_required: &AtomicU32, n: u32) {
    // Pairs with `prepare`'s heavy fence (see the module notes): orders our earlier
    // publication before the load of the bit.
    light_fence(fence_required);
    // Relaxed: the word carries no data; the fence above ordered the publication (or, with
    // `FENCED_BIT` seen, the real fence in `wake_sleepers` does).
    let seen = word.load(Relaxed);
    if seen & (WAITERS_BIT | FENCED_BIT) != 0 {
        wake_sleepers(word, n, seen);
    }
}

/// The rest of [`wake`] once it saw a bit (`seen`): out of line, to keep every send's
/// inlined copy of `wake` to a load and a branch (this part costs a system call, or a real
/// fence, anyway).
#[cold]
#[inline(never)]
fn wake_sleepers(word: &AtomicU32, n: u32, seen: u32) {
    let seen = if seen & FENCED_BIT != 0 {
        // Fence mode: a sleeper that found the bit set paid no heavy fence, and this real
        // fence is the other half of its announcement's (see the module notes).
        fence(SeqCst);
        // Relaxed: ordered after our publication by the fence above.
        word.load(Relaxed)
    } else {
        seen
    };
    if seen & WAITERS_BIT == 0 {
        if seen & FENCED_BIT != 0 {
            // Nobody announced: senders go back to compiler barriers, and the next sleeper
            // pays the heavy fence again. A sleeper that announced meanwhile made the word
            // differ, and keeps the mode. Relaxed: the word carries no data.
            let _ = word.compare_exchange(seen, seen & !FENCED_BIT, Relaxed, Relaxed);
        }
        return;
    }
    let Some(bumped) = bump(word) else {
        return;
    };
    let woken = futex(word, libc::FUTEX_WAKE, n, std::ptr::null());
    if woken > 0 {
        record_wake(word);
    }
    if woken >= 0 && (woken as u64) < u64::from(n) {
        clear(word, bumped);
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The futex word this thread last woke a sleeper on, and when (see [`woke_peer`]).
    static LAST_WAKE: std::cell::Cell<Option<(usize, Instant)>> =
        const { std::cell::Cell::new(None) };
}

/// Notes that this thread has just woken a sleeper on `word` (for [`woke_peer`]). Costs a
/// clock read, next to the system call that woke it.
#[cold]
fn record_wake(word: &AtomicU32) {
    #[cfg(not(loom))]
    LAST_WAKE.with(|w| w.set(Some((word.as_ptr() as usize, Instant::now()))));
    #[cfg(loom)]
    let _ = word;
}

/// If this thread's last wake-up of a sleeper was on `word`, less than `cover` ago: how much
/// of `cover` is left. The record is spent by the call that finds it. Only a `FUTEX_WAKE`
/// that woke somebody counts. A thread that has just woken its peer knows the peer is on
/// its way back, and a wait of its own may poll until then rather than sleep
/// (`pacer::PEER_WAKE_COVER`).
pub fn woke_peer(word: &AtomicU32, cover: Duration) -> Option<Duration> {
    #[cfg(not(loom))]
    {
        let (at, when) = LAST_WAKE.with(|w| w.get())?;
        if at != word.as_ptr() as usize {
            return None;
        }
        LAST_WAKE.with(|w| w.set(None));
        cover
            .checked_sub(when.elapsed())
            .filter(|left| !left.is_zero())
    }
    #[cfg(loom)]
    {
        let _ = (word, cover);
        None
    }
}

/// [`wake_sleepers`]' first step: if the bit is (still) set, moves the count on, so that a
/// sleeper that announced itself before this and has not slept yet does not sleep, and
/// keeps the bit, for the sleepers not woken. Returns the value it left, or None if the bit
/// was clear.
#[inline]
fn bump(word: &AtomicU32) -> Option<u32> {
    let next = |v: u32| (v.wrapping_add(1) & WAKE_COUNT_MASK) | (v & FENCED_BIT) | WAITERS_BIT;
    // Relaxed: the word carries no data; `wake`'s fence ordered the publication.
    word.fetch_update(Relaxed, Relaxed, |v| {
        (v & WAITERS_BIT != 0).then(|| next(v))
    })
    .ok()
    .map(next)
}

/// [`wake_sleepers`]' last step: clears the bit after a wake-up that found fewer sleepers
/// than it could wake, so that nobody was left asleep; `bumped` is the value that wake-up
/// left. A sleeper that announced itself before that value and had not slept yet finds the
/// word changed and does not sleep; one that announced itself since (finding the bit set, it
/// left the word as it was) may be asleep by now, with the bit cleared under it: a second
/// wake-up reaches it. If the word moved on, another waker bumped it (and will clear it in
/// turn) or cleared it.
#[cold]
fn clear(word: &AtomicU32, bumped: u32) {
    // SeqCst: a rare path (once per stretch with nobody asleep), not worth a weaker argument.
    if word
        .compare_exchange(bumped, bumped & !WAITERS_BIT, SeqCst, Relaxed)
        .is_ok()
    {
        futex(word, libc::FUTEX_WAKE, EVERYONE, std::ptr::null());
    }
}

/// Wakes every sleeper unconditionally (used by shutdown, which must reach them all). It
/// clears both bits: a plain store could otherwise set [`FENCED_BIT`] again after a waker
/// cleared it, without the heavy fence that must precede setting it.
pub fn wake_everyone(word: &AtomicU32) {
    let value = word.load(Relaxed);
    word.store(value.wrapping_add(1) & WAKE_COUNT_MASK, Relaxed);
    futex(word, libc::FUTEX_WAKE, i32::MAX as u32, std::ptr::null());
}

/// The futex system call on `word` (FUTEX_WAIT or FUTEX_WAKE; `timeout` is null or FUTEX_WAIT's
/// relative timeout). Returns the system call's result: for FUTEX_WAKE, how many it woke
/// (or -1). A sleeper ignores it, and re-checks its condition in every case.
#[inline]
fn futex(
    word: &AtomicU32,
    op: libc::c_int,
    value: u32,
    timeout: *const libc::timespec,
) -> libc::c_long {
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
        )
    }
    // Loom's atomics have no address to sleep on; a wait that returns at once is allowed,
    // and so nobody is ever asleep to be woken.
    #[cfg(loom)]
    {
        let _ = (word, op, value, timeout);
        loom::thread::yield_now();
        0
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

#[cfg(all(test, not(loom)))]
pub(crate) mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// A word and a `fence_required` flag, shared with sleeper threads.
    type Word = Arc<(AtomicU32, AtomicU32)>;

    /// Bounds anything that should happen soon (never a timing assertion).
    const SOON: Duration = Duration::from_secs(10);

    /// A sleeper thread's body: sends its thread id on `tid`, announces itself on `word`
    /// (unless `announced` is given: the value to sleep on) and sleeps once, for up to a
    /// minute. Pass the id to [`wait_until_asleep`].
    pub(crate) fn announce_and_sleep(
        word: &AtomicU32,
        fence_required: &AtomicU32,
        announced: Option<u32>,
        tid: &mpsc::Sender<std::ffi::OsString>,
    ) {
        // "/proc/thread-self" links to "<pid>/task/<tid>".
        let me = std::fs::read_link("/proc/thread-self").unwrap();
        tid.send(me.file_name().unwrap().to_owned()).unwrap();
        let value = announced.unwrap_or_else(|| prepare(word, fence_required));
        sleep(word, value, Some(Duration::from_secs(60)));
    }

    /// Starts a thread that [`announce_and_sleep`]s on the word; returns once it is asleep.
    /// The thread sends `()` when it wakes.
    fn sleeper(w: &Word, announced: Option<u32>) -> mpsc::Receiver<()> {
        let w = Arc::clone(w);
        let (tid_tx, tid_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            announce_and_sleep(&w.0, &w.1, announced, &tid_tx);
            let _ = done_tx.send(());
        });
        wait_until_asleep(&tid_rx.recv().unwrap().to_string_lossy());
        done_rx
    }

    /// Waits until thread `tid` of this process is in a shared `FUTEX_WAIT` (op 0).
    pub(crate) fn wait_until_asleep(tid: &str) {
        let deadline = std::time::Instant::now() + SOON;
        let futex = libc::SYS_futex.to_string();
        loop {
            let call = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .unwrap_or_default();
            let mut fields = call.split_whitespace();
            if fields.next() == Some(futex.as_str()) && fields.nth(1) == Some("0x0") {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "thread {tid} never slept"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn announced(w: &Word) -> bool {
        w.0.load(SeqCst) & WAITERS_BIT != 0
    }

    #[test]
    fn a_wake_keeps_the_bit_for_the_sleepers_it_does_not_wake() {
        let w: Word = Arc::default();
        let first = sleeper(&w, None);
        let second = sleeper(&w, None);
        wake(&w.0, &w.1, 1);
        first
            .recv_timeout(SOON)
            .expect("the first sleeper is woken");
        assert!(announced(&w), "the second sleeper is out of sight");
        assert!(second.recv_timeout(Duration::from_millis(50)).is_err());
        wake(&w.0, &w.1, 1);
        second
            .recv_timeout(SOON)
            .expect("the second sleeper is woken");
        // Nobody is asleep now: the next wake-up finds nobody to wake and clears the bit, so
        // the stale announcement costs no system call after that.
        assert!(announced(&w));
        wake(&w.0, &w.1, 1);
        assert!(!announced(&w));
    }

    #[test]
    fn a_wake_that_clears_the_bit_reaches_a_sleeper_that_announced_itself_meanwhile() {
        let w: Word = Arc::default();
        // A stale announcement (nobody asleep), and a waker between its wake-up, which found
        // nobody, and its clearing of the bit.
        prepare(&w.0, &w.1);
        let bumped = bump(&w.0).expect("the bit is set");
        assert_eq!(futex(&w.0, libc::FUTEX_WAKE, 1, std::ptr::null()), 0);
        // A sleeper announces itself there (the bit is set, so the word stays) and sleeps.
        let value = prepare(&w.0, &w.1);
        assert_eq!(value, bumped);
        let sleeper = sleeper(&w, Some(value));
        clear(&w.0, bumped);
        assert!(!announced(&w));
        sleeper
            .recv_timeout(SOON)
            .expect("the sleeper is woken, to announce itself again");
    }

    #[test]
    fn a_sleeper_sets_the_fence_mode_and_the_sleepers_after_it_rely_on_it() {
        if !crate::segment::register_light_fences() {
            eprintln!("no membarrier here: the fence mode is never set; nothing to test");
            return;
        }
        let w: Word = Arc::default();
        let first = prepare(&w.0, &w.1);
        assert_eq!(
            first,
            WAITERS_BIT | FENCED_BIT,
            "announced, then the mode set"
        );
        // The next sleeper finds both bits: the word stays, and it sleeps on it.
        assert_eq!(prepare(&w.0, &w.1), first);
        let sleeper = sleeper(&w, None);
        wake(&w.0, &w.1, 1);
        sleeper.recv_timeout(SOON).expect("the sleeper is woken");
        let after = w.0.load(SeqCst);
        assert_eq!(
            after,
            (first + 1) | WAITERS_BIT | FENCED_BIT,
            "{after:#x}: bumped"
        );
    }

    #[test]
    fn a_waker_remembers_waking_a_sleeper_on_that_word_once() {
        let (w, other): (Word, Word) = (Arc::default(), Arc::default());
        let asleep = sleeper(&w, None);
        wake(&w.0, &w.1, 1);
        asleep.recv_timeout(SOON).expect("the sleeper is woken");
        assert_eq!(woke_peer(&other.0, SOON), None, "not that word");
        let left = woke_peer(&w.0, SOON).expect("a sleeper was woken on this word");
        assert!(left <= SOON);
        assert_eq!(woke_peer(&w.0, SOON), None, "spent by the first look");
        // Nobody asleep: the wake-up that finds the stale announcement wakes nobody.
        assert!(announced(&w));
        wake(&w.0, &w.1, 1);
        assert_eq!(woke_peer(&w.0, SOON), None, "nobody was woken");
        // A wake-up longer ago than the cover leaves nothing to poll for.
        let asleep = sleeper(&w, None);
        wake(&w.0, &w.1, 1);
        asleep.recv_timeout(SOON).expect("the sleeper is woken");
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(woke_peer(&w.0, Duration::from_millis(1)), None);
    }

    #[test]
    fn a_wake_is_remembered_by_the_thread_that_woke() {
        let w: Word = Arc::default();
        let asleep = sleeper(&w, None);
        let waker = Arc::clone(&w);
        std::thread::spawn(move || wake(&waker.0, &waker.1, 1))
            .join()
            .unwrap();
        asleep.recv_timeout(SOON).expect("the sleeper is woken");
        assert_eq!(woke_peer(&w.0, SOON), None, "another thread woke it");
    }

    #[test]
    fn a_waker_that_finds_nobody_announced_ends_the_fence_mode() {
        let w: Word = Arc::default();
        w.0.store(7 | FENCED_BIT, SeqCst);
        wake(&w.0, &w.1, 1);
        assert_eq!(w.0.load(SeqCst), 7, "the mode cleared, the count kept");
        // With a sleeper announced, the mode stays.
        let value = 8 | WAITERS_BIT | FENCED_BIT;
        w.0.store(value, SeqCst);
        let sleeper = sleeper(&w, Some(value));
        wake(&w.0, &w.1, 1);
        sleeper.recv_timeout(SOON).expect("the sleeper is woken");
        assert_eq!(w.0.load(SeqCst), 9 | WAITERS_BIT | FENCED_BIT);
        // Shutdown's wake-up clears both bits.
        wake_everyone(&w.0);
        assert_eq!(w.0.load(SeqCst), 10);
    }

    #[test]
    fn the_count_wraps_below_the_fence_mode_bit() {
        let w: Word = Arc::default();
        w.0.store(WAKE_COUNT_MASK | WAITERS_BIT, SeqCst);
        assert_eq!(bump(&w.0), Some(WAITERS_BIT));
        w.0.store(WAKE_COUNT_MASK | WAITERS_BIT | FENCED_BIT, SeqCst);
        assert_eq!(bump(&w.0), Some(WAITERS_BIT | FENCED_BIT));
    }
}
