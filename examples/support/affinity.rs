//! CPU affinity for the programs that place processes on cores: the examples that measure
//! between two processes (`large_send_forms`, `readback_stall`, `depth_probe`), the bench
//! (`benches/compare.rs`) and the tests that pin processes (`tests/queue.rs`). One copy of
//! the `unsafe` calls, included with `#[path = ".../support/affinity.rs"] mod affinity;`
//! (Cargo builds no example from this directory: it has no `main.rs`). Each includer uses
//! some of it.
#![allow(dead_code)]

use std::io;
use std::mem::{size_of, zeroed};

/// Cores online (not `available_parallelism`, which shrinks to 1 once we pin ourselves).
pub fn cpus_online() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// Restricts the calling process to the CPUs `cpus` (each below `CPU_SETSIZE`; others are
/// left out). An error if the kernel refuses (a CPU the process may not use, none at all).
pub fn run_on(cpus: impl IntoIterator<Item = usize>) -> io::Result<()> {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; `CPU_SET` writes inside it (the index is
    // checked against its size), and `sched_setaffinity` reads `size_of::<cpu_set_t>()`
    // bytes of it.
    let status = unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        for cpu in cpus {
            if cpu < libc::CPU_SETSIZE as usize {
                libc::CPU_SET(cpu, &mut set);
            }
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set)
    };
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Restricts the calling process to CPU `core` modulo the cores online, best effort: where
/// the kernel refuses, the process stays where it was (what measurements want: they still
/// run, less well placed).
pub fn pin_to(core: usize) {
    let _ = run_on([core % cpus_online()]);
}

/// Lets the calling process run on every core online again, best effort.
pub fn unpin() {
    let _ = run_on(0..cpus_online());
}

/// The CPUs the calling process may run on, in increasing order.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `run_on`; `sched_getaffinity` fills the set, and `CPU_ISSET` reads
    // inside it.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok((0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect())
    }
}
