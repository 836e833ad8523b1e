//! The atomics the ring is built from: `std`'s, or loom's model-checked ones when compiled
//! with `--cfg loom` (`scripts/loom.sh`, `tests/loom_ring.rs`, `tests/loom_spsc.rs`).
//!
//! The shared-memory structs ([`crate::layout`]), the ring ([`crate::ring`]) and the futex
//! words ([`crate::wait`], which under loom yields instead of sleeping) go through this facade.
//! The rest of the crate still compiles under loom, reaching the same header fields, but only
//! the ring and the single-producer/single-consumer protocol over it (`spsc.rs`) are
//! exercised there: a mapped segment zero-filled by the kernel is not a set of loom atomics.
//! The per-handle lock of `spsc.rs` (`Side`) keeps `std` atomics: it is process-local, and
//! its model gives each thread its own handle, so loom need not see it.
//!
//! Also here: [`thread_token`], which names the thread that owns a handle's fast paths.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};

/// A busy-wait hint inside a retry loop. Under loom it yields to the model's scheduler, which
/// would otherwise report the retry loop as a livelock.
#[inline(always)]
pub(crate) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::hint::spin_loop();
}

thread_local! {
    /// A token unique to this thread among the live threads of the process.
    static TOKEN: u64 = {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        // Relaxed: uniqueness needs only the atomicity of the increment.
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    };
}

/// This thread's token: never 0, and never another live thread's. Names the thread that
/// owns a handle's fast paths (the lock of `spsc.rs`, the counts of `counts.rs`). `std`'s
/// even under loom, whose threads share one OS thread (see `spsc.rs`).
#[inline(always)]
pub(crate) fn thread_token() -> u64 {
    TOKEN.with(|t| *t)
}
