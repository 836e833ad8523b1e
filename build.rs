//! Build-time probe of the compiler: the 512-bit carry-less multiplication intrinsics the
//! wide checksum path needs (`src/checksum.rs`) are stable since Rust 1.89, and this crate
//! builds with 1.82. With an older compiler the path is left out and the checksum runs on
//! the `crc32` instruction alone, as before; the CRC it computes is the same either way.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let probe = autocfg::new();
    probe.emit_path_cfg(
        "std::arch::x86_64::_mm512_clmulepi64_epi128",
        "shmq_wide_crc",
    );
}
