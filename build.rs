//! Build-time probe of the compiler: the 512- and 256-bit carry-less multiplication
//! intrinsics the folding checksum paths need (`src/checksum.rs`) are stable since Rust 1.89,
//! and this crate builds with 1.82. With an older compiler the paths are left out and the
//! checksum runs on the `crc32` instruction alone; the CRC it computes is the same either way.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let probe = autocfg::new();
    probe.emit_path_cfg(
        "std::arch::x86_64::_mm512_clmulepi64_epi128",
        "shmq_wide_crc",
    );
    // The 256-bit fold's, for CPUs with VPCLMULQDQ but not AVX-512 (stable in the same
    // release, probed on its own all the same).
    probe.emit_path_cfg(
        "std::arch::x86_64::_mm256_clmulepi64_epi128",
        "shmq_fold256_crc",
    );
}
