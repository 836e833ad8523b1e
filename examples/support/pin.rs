//! Pinning for the examples that measure between two processes on separate cores
//! (`large_send_forms`, `readback_stall`, `depth_probe`): one copy of the `unsafe` call.
//! Included with `#[path = "support/pin.rs"] mod pin;` (Cargo builds no example from this
//! directory: it has no `main.rs`).

/// Restricts the calling process to CPU `core` (best effort: a CPU the process may not use
/// leaves it where it was).
pub fn pin_to(core: usize) {
    // SAFETY: a zeroed `cpu_set_t` is an empty set; `CPU_SET` and `sched_setaffinity` only
    // read and write the set we own.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
