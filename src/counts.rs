//! A handle's statistics of one direction (messages and bytes sent, or received) not yet
//! added to the shared header, on multi-producer queues. (The sides of a
//! single-producer/single-consumer queue count under their own lock: `spsc.rs`.)
//!
//! A handle adds its byte counts to the header every [`STATS_BATCH`](crate::STATS_BATCH)
//! messages and before it waits, not per message: the header's counters are lines every
//! process writes. It used to keep them in one word per direction with a `fetch_add` per
//! message, because threads may share a handle. On x86 that locked instruction waits for
//! the store buffer to drain, where the message just published waits for lines the other
//! side holds: removing it took the MPMC queue from 3.1 to 4.4 M msgs/s between two
//! processes (64 B, docs/PERFORMANCE.md).
//!
//! So the first thread that counts becomes the *owner* and counts with plain loads and
//! stores into words only it writes; any other thread of the handle adds to a shared word
//! with `fetch_add`, as before. Any thread can flush both: the owner's byte count only ever
//! grows, and a flush moves `flushed` up to it with a compare-and-swap, so each byte is added
//! once whoever flushes, and a handle at rest has no pending counts whichever thread asks.
//! Ownership is never given up: when the owner thread stops using the handle (it was moved
//! to another thread after use), the others count by the shared word, correctly and with
//! the locked instruction.
//!
//! These are process-local atomics (`std`'s, also under loom, which does not model handles).

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};

use crate::sync::thread_token;

/// Bit at which the shared word keeps messages (bytes below it).
const SHARED_SHIFT: u32 = 40;
/// Byte counts from this size up do not fit the shared word: the caller adds them to the
/// header directly.
pub const PACKED_BYTES_LIMIT: u64 = 1 << (SHARED_SHIFT - 1);

/// One direction's pending counts (see the module notes).
#[derive(Default)]
pub struct PendingCounts {
    /// [`thread_token`] of the owner thread; 0 until a thread counts. Set once.
    owner: AtomicU64,
    /// Bytes the owner counted, ever (wrapping). Written only by the owner.
    owned_bytes: AtomicU64,
    /// Messages the owner counted since its last flush: when to flush. Written only by the
    /// owner.
    owned_messages: AtomicU64,
    /// How much of `owned_bytes` is already in the header. Moves up by compare-and-swap.
    flushed_bytes: AtomicU64,
    /// Other threads' counts: messages above [`SHARED_SHIFT`], bytes below.
    shared: AtomicU64,
}

impl PendingCounts {
    /// Counts `messages` messages of `bytes` bytes in all (`bytes <
    /// PACKED_BYTES_LIMIT`); true when a flush is due ([`crate::STATS_BATCH`] messages
    /// pending, or the shared word's byte count half full).
    #[inline]
    pub fn count(&self, messages: u64, bytes: u64) -> bool {
        debug_assert!(bytes < PACKED_BYTES_LIMIT);
        let me = thread_token();
        // Relaxed: only this thread ever stores its own token; another value means "not us".
        let mut owner = self.owner.load(Relaxed);
        if owner == 0 {
            // Relaxed: the claim orders nothing; the loser counts by the shared word.
            owner = match self.owner.compare_exchange(0, me, Relaxed, Relaxed) {
                Ok(_) => me,
                Err(actual) => actual,
            };
        }
        if owner == me {
            // Relaxed loads and stores: only this thread writes these two words. A flush
            // by another thread reads `owned_bytes` (see `take`), never writes it.
            let bytes = self.owned_bytes.load(Relaxed).wrapping_add(bytes);
            self.owned_bytes.store(bytes, Relaxed);
            let messages = self.owned_messages.load(Relaxed) + messages;
            self.owned_messages.store(messages, Relaxed);
            return messages >= crate::STATS_BATCH;
        }
        // Relaxed: statistics order nothing.
        let before = self
            .shared
            .fetch_add((messages << SHARED_SHIFT) | bytes, Relaxed);
        (before >> SHARED_SHIFT) + messages >= crate::STATS_BATCH
            || (before & (PACKED_BYTES_LIMIT - 1)) + bytes >= PACKED_BYTES_LIMIT
    }

    /// Whether anything may be pending (a cheap look before a flush; a count racing with
    /// it is flushed by a later one).
    #[inline]
    pub fn any(&self) -> bool {
        // Relaxed: a hint (see above).
        self.shared.load(Relaxed) != 0
            || self.owned_messages.load(Relaxed) != 0
            || self.owned_bytes.load(Relaxed) != self.flushed_bytes.load(Relaxed)
    }

    /// Takes the pending bytes (for the header's total), whichever thread calls.
    pub fn take(&self) -> u64 {
        // Acquire/AcqRel on `flushed_bytes`: the flush that moved it to `f` had read
        // `owned_bytes == f`, so our read of `owned_bytes` below, which happens after, sees
        // at least `f` (the count only grows): `owned - f` never underflows.
        let mut flushed = self.flushed_bytes.load(Acquire);
        let mut owned_part = 0;
        loop {
            // Relaxed: see above; the owner's stores need no more than coherence.
            let owned = self.owned_bytes.load(Relaxed);
            if owned == flushed {
                break;
            }
            match self
                .flushed_bytes
                .compare_exchange(flushed, owned, AcqRel, Acquire)
            {
                Ok(_) => {
                    owned_part = owned.wrapping_sub(flushed);
                    break;
                }
                Err(actual) => flushed = actual,
            }
        }
        // Relaxed: only the owner writes it (the owner resets its own message count).
        if self.owner.load(Relaxed) == thread_token() {
            self.owned_messages.store(0, Relaxed);
        }
        // Relaxed: statistics order nothing. Looked at first: with one thread per handle the
        // word stays 0, and the swap is a locked instruction (a count racing with the look is
        // left for the next flush, as one racing with the swap would be).
        let shared = match self.shared.load(Relaxed) {
            0 => 0,
            _ => self.shared.swap(0, Relaxed) & ((1 << SHARED_SHIFT) - 1),
        };
        owned_part.wrapping_add(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_and_other_threads_count_every_byte_once() {
        let counts = PendingCounts::default();
        assert!(!counts.any());
        // This thread becomes the owner.
        for _ in 0..crate::STATS_BATCH - 1 {
            assert!(!counts.count(1, 3));
        }
        assert!(counts.count(1, 3));
        assert!(counts.any());
        let mut total = 0;
        std::thread::scope(|s| {
            let others: Vec<_> = (0..3)
                .map(|_| {
                    s.spawn(|| {
                        let mut flushed = 0;
                        for i in 0..10_000 {
                            // Flushing when due, and often besides, to race the others.
                            if counts.count(1, 5) || i % 3 == 0 {
                                flushed += counts.take();
                            }
                        }
                        flushed
                    })
                })
                .collect();
            // The owner keeps counting while the others count and flush.
            for _ in 0..10_000 {
                if counts.count(1, 7) {
                    total += counts.take();
                }
            }
            total += others.into_iter().map(|t| t.join().unwrap()).sum::<u64>();
        });
        total += counts.take();
        assert_eq!(total, crate::STATS_BATCH * 3 + 10_000 * 7 + 3 * 10_000 * 5);
        assert!(!counts.any());
        assert_eq!(counts.take(), 0);
    }

    #[test]
    fn another_thread_flushes_what_the_owner_counted() {
        let counts = PendingCounts::default();
        counts.count(1, 11);
        counts.count(2, 20);
        let taken = std::thread::scope(|s| s.spawn(|| counts.take()).join().unwrap());
        assert_eq!(taken, 31);
        // Nothing is left for the owner to add again, but its own batch still runs to 64.
        assert_eq!(counts.take(), 0);
        assert!(!counts.any());
    }
}
