//! Participants and their liveness for the loom models (`tests/loom_ring.rs`,
//! `tests/loom_spsc.rs`): a participant is "dead" when its flag here says so. A thread that
//! dies stops using the ring, then clears its flag (SeqCst, like the kernel releasing a dead
//! process's liveness lock after its last store), so one that sees it dead sees all it did.

use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::SeqCst;
use loom::sync::Arc;

use shmq::ring::Peers;

/// Liveness of participants 0..5, shared by all threads; 0 is nobody, never alive.
#[derive(Clone)]
pub struct World {
    alive: Arc<[AtomicBool; 5]>,
}

impl World {
    pub fn new() -> World {
        World {
            alive: Arc::new(std::array::from_fn(|id| AtomicBool::new(id != 0))),
        }
    }

    pub fn peer(&self, id: u32) -> Peer {
        Peer {
            id,
            world: self.clone(),
        }
    }
}

pub struct Peer {
    id: u32,
    world: World,
}

impl Peer {
    /// This participant stops for good: from now on the others may repair what it left.
    pub fn die(&self) {
        self.world.alive[self.id as usize].store(false, SeqCst);
    }
}

impl Peers for Peer {
    fn me(&self) -> u32 {
        self.id
    }
    fn is_alive(&self, id: u32) -> bool {
        self.world
            .alive
            .get(id as usize)
            .is_none_or(|a| a.load(SeqCst))
    }
}
