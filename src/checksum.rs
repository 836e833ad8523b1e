//! The message checksum: CRC32C (Castagnoli) over the header fields that travel with a
//! message, then its payload.
//!
//! # Why not only the `crc32c` crate
//! The crate is the portable definition and the fallback, but on x86-64 the checksum of a
//! large message is most of what a send or a receive costs, and the crate's loop runs below
//! what the `crc32` instruction can do, and unevenly: on the development VM (best of 15 timed
//! runs, `examples/checksum_speed.rs`) it took 1.1–1.7× as long as the path here for
//! 4–64 KiB and 1.4–2.2× for 512 bytes, depending on the process and the minute;
//! `crc-fast` 1.10 was no faster than the crate, with any of its feature flags (see
//! docs/PERFORMANCE.md). The fast path (SSE4.2 and PCLMULQDQ) is the textbook method: three
//! independent `crc32` streams over three consecutive blocks (the instruction's latency is
//! three cycles and its throughput one per cycle), joined by shifting each stream's state
//! across the blocks after it with one carry-less multiplication. The blocks have fixed
//! sizes, so the shift constants are computed at compile time. Unit tests check every length
//! up to 1100 bytes, a spread up to 7000 and both sides of every round boundary, at four
//! alignments, against the crate, and the shift constants against feeding zero bytes.
//!
//! The `#[target_feature]` functions are `unsafe fn` and call the intrinsics in `unsafe`
//! blocks that newer compilers find unneeded: safe `#[target_feature]` functions (Rust 1.86)
//! and safe intrinsics (1.87) are newer than this crate's minimum Rust, 1.82.

/// CRC32C over the header fields that travel with a message (`id`, `timestamp_ns`, `len`,
/// little-endian, 20 bytes), then the payload.
#[inline]
pub fn message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    MessageCrc::for_this_cpu().compute(id, timestamp_ns, len, data)
}

/// [`message_crc`]'s implementation for this CPU, chosen once (a ring holds one).
///
/// Deciding per call cost a 64-byte message's checksum about 30 instructions on top of the
/// 40 the checksum takes (two feature checks, and a frame around the call into the
/// `#[target_feature]` code, which cannot be inlined into its caller): 60 of a send +
/// receive pair's ~640 (callgrind, `examples/hotpath`).
#[derive(Clone, Copy)]
pub struct MessageCrc(fn(u64, u64, u32, &[u8]) -> u32);

impl MessageCrc {
    /// The fastest implementation this CPU runs.
    pub fn for_this_cpu() -> MessageCrc {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return MessageCrc(x86_message_crc);
        }
        MessageCrc(portable_message_crc)
    }

    /// The checksum of a message (see [`message_crc`]).
    #[inline]
    pub fn compute(self, id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
        (self.0)(id, timestamp_ns, len, data)
    }
}

/// Only reachable through a [`MessageCrc`] that [`MessageCrc::for_this_cpu`] made after
/// detecting the features (the field is private to this module).
#[cfg(target_arch = "x86_64")]
fn x86_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    // SAFETY: the CPU supports SSE4.2 and PCLMULQDQ (see above).
    unsafe { x86::message_crc(id, timestamp_ns, len, data) }
}

/// The portable definition, through the `crc32c` crate.
fn portable_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&id.to_le_bytes());
    head[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    head[16..].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8, _mm_cvtsi128_si64,
        _mm_cvtsi32_si128,
    };

    /// CRC32C's polynomial, bit-reflected (the `crc32` instruction's convention).
    const POLY: u32 = 0x82F6_3B78;

    /// Block sizes of the three-stream rounds: long rounds for the bulk, short ones for the
    /// rest, then single words. A round's streams are joined with two multiplications whose
    /// latency (about a dozen cycles) is paid once per round.
    const LONG: usize = 1024;
    const SHORT: usize = 128;

    /// `x^n mod P`, bit-reflected (bit 31 is `x^0`): multiplying by `x` is a right shift,
    /// and `x^32` folds back in as the polynomial.
    const fn x_pow_mod_p(n: u32) -> u32 {
        let mut acc = 0x8000_0000u32;
        let mut i = 0;
        while i < n {
            acc = if acc & 1 != 0 {
                (acc >> 1) ^ POLY
            } else {
                acc >> 1
            };
            i += 1;
        }
        acc
    }

    /// The multiplier that shifts a state across `bytes` zero bytes (see [`shift`]).
    const fn shift_constant(bytes: usize) -> u32 {
        x_pow_mod_p(bytes as u32 * 8 - 33)
    }

    const LONG_1: u32 = shift_constant(LONG);
    const LONG_2: u32 = shift_constant(2 * LONG);
    const SHORT_1: u32 = shift_constant(SHORT);
    const SHORT_2: u32 = shift_constant(2 * SHORT);

    /// The state `crc` would have after `n` more zero bytes, given `k = shift_constant(n)`:
    /// `crc · x^(8n)` mod P. The carry-less product of two reflected 32-bit values is the
    /// product times `x` as a reflected 64-bit value, and `crc32` of a 64-bit word from a zero
    /// state multiplies it by `x^32`: hence the 33 taken off the exponent.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ (as for every function here).
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn shift(crc: u32, k: u32) -> u32 {
        #[allow(unused_unsafe)]
        // SAFETY: the CPU has the features (our contract); the intrinsics take values only.
        unsafe {
            let product = _mm_clmulepi64_si128(
                _mm_cvtsi32_si128(crc as i32),
                _mm_cvtsi32_si128(k as i32),
                0,
            );
            _mm_crc32_u64(0, _mm_cvtsi128_si64(product) as u64) as u32
        }
    }

    /// `crc32` of one 8-byte chunk, little-endian.
    ///
    /// # Safety
    /// The CPU supports SSE4.2.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn crc_word(state: u64, chunk: &[u8]) -> u64 {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8 bytes"));
        #[allow(unused_unsafe)]
        // SAFETY: the CPU has SSE4.2 (our contract); the intrinsic takes values only.
        unsafe {
            _mm_crc32_u64(state, word)
        }
    }

    /// Advances the raw CRC32C state `crc` (no inversions) over as many rounds of three
    /// `BLOCK`-byte blocks as `data` holds; returns the state and the rest of `data`. `k1`
    /// and `k2` shift a state across one and two blocks.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn rounds<const BLOCK: usize>(
        mut crc: u32,
        mut data: &[u8],
        (k1, k2): (u32, u32),
    ) -> (u32, &[u8]) {
        while data.len() >= 3 * BLOCK {
            let (a, rest) = data.split_at(BLOCK);
            let (b, rest) = rest.split_at(BLOCK);
            let (c, rest) = rest.split_at(BLOCK);
            let (mut s0, mut s1, mut s2) = (u64::from(crc), 0u64, 0u64);
            for ((x, y), z) in a
                .chunks_exact(8)
                .zip(b.chunks_exact(8))
                .zip(c.chunks_exact(8))
            {
                // SAFETY: the CPU has SSE4.2 (our contract).
                unsafe {
                    s0 = crc_word(s0, x);
                    s1 = crc_word(s1, y);
                    s2 = crc_word(s2, z);
                }
            }
            // The state after the three blocks: the first's shifted past the other two, the
            // second's past the third, and the third's.
            // SAFETY: the CPU has the features (our contract).
            crc = unsafe { shift(s0 as u32, k2) ^ shift(s1 as u32, k1) } ^ s2 as u32;
            data = rest;
        }
        (crc, data)
    }

    /// Advances the raw CRC32C state `crc` (no inversions) over `data`: rounds of three long
    /// blocks, then of three short blocks, then single words and bytes.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn update(crc: u32, data: &[u8]) -> u32 {
        // SAFETY: the CPU has the features (our contract).
        let (crc, data) = unsafe {
            let (crc, data) = rounds::<LONG>(crc, data, (LONG_1, LONG_2));
            rounds::<SHORT>(crc, data, (SHORT_1, SHORT_2))
        };
        let mut words = data.chunks_exact(8);
        let mut wide = u64::from(crc);
        for w in &mut words {
            // SAFETY: the CPU has SSE4.2 (our contract).
            wide = unsafe { crc_word(wide, w) };
        }
        let mut crc = wide as u32;
        for &byte in words.remainder() {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has SSE4.2 (our contract); the intrinsic takes values only.
            unsafe {
                crc = _mm_crc32_u8(crc, byte);
            }
        }
        crc
    }

    /// [`super::message_crc`] with the `crc32` instruction: the 20 header bytes are three
    /// instructions, then [`update`]. The same CRC32C (initial value and final xor `!0`,
    /// bytes in little-endian order), so the value is identical to the portable path's.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) unsafe fn message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
        #[allow(unused_unsafe)]
        // SAFETY: the CPU has SSE4.2 (our contract); the intrinsics take values only.
        let state = unsafe {
            let state = _mm_crc32_u64(u64::from(u32::MAX), id);
            let state = _mm_crc32_u64(state, timestamp_ns);
            _mm_crc32_u32(state as u32, len)
        };
        // SAFETY: the CPU has the features (our contract).
        !unsafe { update(state, data) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn shift_constants_match_a_zero_feed() {
            // Shifting a state across n zero bytes must equal feeding n zero bytes.
            if !std::arch::is_x86_feature_detected!("sse4.2")
                || !std::arch::is_x86_feature_detected!("pclmulqdq")
            {
                return;
            }
            for (n, k) in [
                (SHORT, SHORT_1),
                (2 * SHORT, SHORT_2),
                (LONG, LONG_1),
                (2 * LONG, LONG_2),
            ] {
                for crc in [1u32, 0x8000_0000, 0xDEAD_BEEF, u32::MAX] {
                    let zeros = vec![0u8; n];
                    let mut fed = crc;
                    for &b in &zeros {
                        // SAFETY: SSE4.2 checked above.
                        fed = unsafe { _mm_crc32_u8(fed, b) };
                    }
                    // SAFETY: both features checked above.
                    assert_eq!(unsafe { shift(crc, k) }, fed, "{n} bytes from {crc:#x}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable definition of the message checksum (the crate over the header bytes,
    /// then the payload): every fast path must agree with it bit for bit.
    fn reference_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
        let mut head = Vec::with_capacity(20 + data.len());
        head.extend_from_slice(&id.to_le_bytes());
        head.extend_from_slice(&timestamp_ns.to_le_bytes());
        head.extend_from_slice(&len.to_le_bytes());
        head.extend_from_slice(data);
        crc32c::crc32c(&head)
    }

    /// A spread of lengths: every one up to a few short rounds (3 × 128 bytes each), then a
    /// sample up to past two long rounds (3 × 1024 bytes each), and each side of the
    /// rounds' boundaries.
    fn lengths() -> impl Iterator<Item = usize> {
        (0..=1_100).chain((1_100..=7_000).step_by(13)).chain([
            3_071, 3_072, 3_073, 3_455, 3_456, 3_457, 6_144, 6_528, 16_384, 16_461,
        ])
    }

    fn sample_bytes() -> Vec<u8> {
        (0..16_500u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Both implementations, and the one a ring picks for this CPU.
    #[test]
    fn message_crc_matches_the_portable_definition() {
        let data = sample_bytes();
        let implementations = [
            ("this CPU's", MessageCrc::for_this_cpu()),
            ("the portable", MessageCrc(portable_message_crc)),
        ];
        for n in lengths() {
            for offset in [0, 1, 3, 7] {
                let bytes = &data[offset..offset + n];
                let id = 0x0123_4567_89ab_cdef ^ n as u64;
                let ts = u64::MAX - n as u64;
                let len = bytes.len() as u32;
                let expected = reference_crc(id, ts, len, bytes);
                assert_eq!(message_crc(id, ts, len, bytes), expected, "length {n}");
                for (which, crc) in implementations {
                    assert_eq!(
                        crc.compute(id, ts, len, bytes),
                        expected,
                        "{which} implementation, length {n}, offset {offset}"
                    );
                }
            }
        }
    }
}
