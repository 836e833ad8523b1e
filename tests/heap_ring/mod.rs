//! A ring in heap memory, for the tests that drive `shmq::ring` (and `shmq::spsc`) directly
//! with threads instead of processes: `tests/ring.rs` and the loom models
//! (`tests/loom_ring.rs`, `tests/loom_spsc.rs`). The code under test is the production ring;
//! only the memory is the heap's instead of a mapped segment's.

use std::alloc::{alloc_zeroed, dealloc, Layout};

use shmq::layout::segment_size;
use shmq::ring::{PopToken, Ring};

/// A ring of its own heap block, freed on drop.
pub struct HeapRing {
    pub ring: Ring,
    base: *mut u8,
    layout: Layout,
}

// SAFETY: the heap block is only accessed through the ring, which is Send + Sync.
unsafe impl Send for HeapRing {}
// SAFETY: as above.
unsafe impl Sync for HeapRing {}

impl HeapRing {
    /// `capacity` slots of `message_size` bytes, with the header flags `flags`
    /// (`shmq::layout::FLAG_*`).
    pub fn new(capacity: u32, message_size: u32, flags: u32) -> HeapRing {
        let size = segment_size(capacity, message_size).unwrap();
        let layout = Layout::from_size_align(size, 4096).unwrap();
        // SAFETY: non-zero size, valid layout.
        let base = unsafe { alloc_zeroed(layout) };
        assert!(!base.is_null());
        // SAFETY: base is a fresh, 4096-aligned block of `size` bytes owned by this struct;
        // under loom `initialize` writes fresh atomics into it.
        let ring = unsafe { Ring::initialize(base, capacity, message_size, flags, 0o600) };
        ring.publish_magic();
        HeapRing { ring, base, layout }
    }

    /// The start of the block (the header), for tests that scribble on it behind the ring's
    /// back.
    #[allow(dead_code)] // not every test that includes this module scribbles
    pub fn base(&self) -> *mut u8 {
        self.base
    }
}

/// The tokens of a receive run of `n` messages claimed from `first` on
/// (`Ring::claim_pop_run`), in order.
#[allow(dead_code)] // not every test that includes this module claims runs
pub fn run_tokens(ring: &Ring, first: PopToken, n: usize) -> Vec<PopToken> {
    let mut tokens = vec![first];
    for _ in 1..n {
        let next = ring.pop_run_token(tokens.last().unwrap().cursor());
        tokens.push(next);
    }
    tokens
}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; the ring is not used after this (under
        // loom, its atomics need no drop: the model owns their state).
        unsafe { dealloc(self.base, self.layout) };
    }
}
