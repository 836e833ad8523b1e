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
//! sizes, so the shift constants are computed at compile time. The same rounds also copy:
//! a copying send or receive checksums each word as it moves it (see [`MessageCrc`]), and a
//! gather send each part, the state going on from one part to the next
//! ([`MessageCrc::copy_parts_to_shared`]).
//!
//! On CPUs with AVX-512 and VPCLMULQDQ a wider path (`x86::wide`) folds the bulk of a
//! message 256 bytes at a time with 512-bit carry-less multiplications, about twice as fast
//! from 1 KiB on, and copies in the same pass too. CPUs with VPCLMULQDQ but not AVX-512 fold
//! 128 bytes at a time with 256-bit ones (`x86::fold256`), 1.1–1.5× the streams' speed from
//! 256 bytes to 4 KiB. Their intrinsics are stable since Rust 1.89; `build.rs` probes the
//! compiler, and an older one builds without them.
//!
//! Unit tests check every implementation the CPU runs against the crate: every length up to
//! 1100 bytes, a spread up to 7000 and both sides of every round boundary, at four
//! alignments (the copies too, their shared end at four distances from a 64-byte boundary),
//! and the shift and fold constants against feeding zero bytes.
//!
//! The `#[target_feature]` functions are `unsafe fn` and call the intrinsics in `unsafe`
//! blocks that newer compilers find unneeded: safe `#[target_feature]` functions (Rust 1.86)
//! and safe intrinsics (1.87) are newer than this crate's minimum Rust, 1.82.

use std::ffi::CStr;

/// CRC32C over the header fields that travel with a message (`id`, `timestamp_ns`, `len`,
/// little-endian, 20 bytes), then the payload.
#[inline]
pub fn message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    MessageCrc::for_this_cpu().compute(id, timestamp_ns, len, data)
}

/// [`message_crc`]'s implementation for this CPU, chosen once (a ring holds one), with the
/// two copies that checksum what they copy.
///
/// Deciding per call cost a 64-byte message's checksum about 30 instructions on top of the
/// 40 the checksum takes (two feature checks, and a frame around the call into the
/// `#[target_feature]` code, which cannot be inlined into its caller): 60 of a send +
/// receive pair's ~640 (callgrind, `examples/hotpath`).
///
/// # Why copies that checksum
/// A send checksums the caller's bytes and copies them into the slot; a receive copies the
/// slot's bytes out and checksums its private copy. Done one after the other, each side
/// walks the message twice, and at 4 KiB the two passes cost about their sum: the copy
/// waits on cache lines coming from the other core while the checksum's unit idles, then
/// the checksum runs on its own. [`MessageCrc::copy_from_shared`] and
/// [`MessageCrc::copy_to_shared`] make one pass: each 8-byte word is loaded once into a
/// register, fed to `crc32` and stored from that register, so the checksum still covers
/// exactly the bytes that were delivered (or written), as the two passes did.
#[derive(Clone, Copy)]
pub struct MessageCrc {
    name: &'static CStr,
    compute: fn(u64, u64, u32, &[u8]) -> u32,
    from_shared: CopyFn,
    to_shared: CopyFn,
    gather_to_shared: GatherFn,
}

/// A copy that checksums: `(id, timestamp_ns, src, dst, len) -> crc`, both pointers valid
/// for `len` bytes and not overlapping (see [`MessageCrc::copy_from_shared`] for the rest).
type CopyFn = unsafe fn(u64, u64, *const u8, *mut u8, usize) -> u32;

/// A gather copy into shared memory that checksums: `(id, timestamp_ns, (count, part), len,
/// dst) -> crc`, the parts `part(0)..part(count - 1)` copied one after another and cut at
/// `len` bytes, `dst` valid for writing them and overlapping none (see
/// [`MessageCrc::copy_parts_to_shared`]). One call per message, into code compiled for the
/// CPU's features; the parts come through a `dyn` closure, so that the C API's arrays need
/// no slice of slices.
type GatherFn = unsafe fn(u64, u64, Parts<'_>, usize, *mut u8) -> u32;

/// The parts of a gather copy: how many, and part `i`.
pub type Parts<'a> = (usize, &'a dyn Fn(usize) -> &'a [u8]);

/// The parts in order, each cut to the room that `len` leaves after those before it, so that
/// they add up to at most `len` whatever `part(i)` answers: every gather copy writes through
/// this, and so writes nothing past the length its caller summed, even if the parts changed
/// since (a C caller's arrays rewritten by a racing thread).
#[inline(always)]
pub fn cut_parts((count, part): Parts<'_>, len: usize) -> CutParts<'_> {
    CutParts {
        part,
        next: 0,
        count,
        left: len,
    }
}

/// The iterator of [`cut_parts`].
pub struct CutParts<'a> {
    part: &'a dyn Fn(usize) -> &'a [u8],
    next: usize,
    count: usize,
    left: usize,
}

impl<'a> Iterator for CutParts<'a> {
    type Item = &'a [u8];

    #[inline(always)]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.next == self.count {
            return None;
        }
        let part = (self.part)(self.next);
        self.next += 1;
        let n = part.len().min(self.left);
        self.left -= n;
        Some(&part[..n])
    }
}

impl MessageCrc {
    /// The fastest implementation this CPU runs.
    pub fn for_this_cpu() -> MessageCrc {
        MessageCrc::wide()
            .or_else(MessageCrc::fold256)
            .or_else(MessageCrc::x86)
            .unwrap_or_else(MessageCrc::portable)
    }

    /// Every implementation this CPU runs, fastest first (the portable one last): the
    /// tests check each against the portable definition, and `examples/checksum_speed.rs`
    /// times each.
    pub fn all_for_this_cpu() -> Vec<MessageCrc> {
        [
            MessageCrc::wide(),
            MessageCrc::fold256(),
            MessageCrc::x86(),
            Some(MessageCrc::portable()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The wide path (`x86::wide`), if the compiler had its intrinsics and the CPU has
    /// its features.
    fn wide() -> Option<MessageCrc> {
        #[cfg(all(target_arch = "x86_64", shmq_wide_crc))]
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
        {
            return Some(MessageCrc {
                name: c"CRC32C, 512-bit carry-less folding (AVX-512, VPCLMULQDQ)",
                compute: x86_wide_message_crc,
                // As in `x86`: only set here, after the check above.
                from_shared: x86::wide::copy_message_crc::<true>,
                to_shared: x86::wide::copy_message_crc::<false>,
                gather_to_shared: x86::wide::gather_to_shared,
            });
        }
        None
    }

    /// The 256-bit fold (`x86::fold256`), if the compiler had its intrinsics and the CPU
    /// has its features.
    fn fold256() -> Option<MessageCrc> {
        #[cfg(all(target_arch = "x86_64", shmq_fold256_crc))]
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
        {
            return Some(MessageCrc {
                name: c"CRC32C, 256-bit carry-less folding (AVX2, VPCLMULQDQ)",
                compute: x86_fold256_message_crc,
                // As in `x86`: only set here, after the check above.
                from_shared: x86::fold256::copy_message_crc::<true>,
                to_shared: x86::fold256::copy_message_crc::<false>,
                gather_to_shared: x86::fold256::gather_to_shared,
            });
        }
        None
    }

    /// The three-stream `crc32` path (`x86`), if the CPU has its features.
    fn x86() -> Option<MessageCrc> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            return Some(MessageCrc {
                name: c"CRC32C, three crc32 streams (SSE4.2, PCLMULQDQ)",
                compute: x86_message_crc,
                // These need the features too: only set here, after the check above (the
                // fields are private to this module).
                from_shared: x86::copy_message_crc::<true>,
                to_shared: x86::copy_message_crc::<false>,
                gather_to_shared: x86::gather_to_shared,
            });
        }
        None
    }

    /// The `crc32c` crate's implementation, whatever the CPU (the fallback; and the
    /// reference the fast path is tested against).
    pub fn portable() -> MessageCrc {
        MessageCrc {
            name: c"CRC32C, the crc32c crate",
            compute: portable_message_crc,
            from_shared: portable_copy::<true>,
            to_shared: portable_copy::<false>,
            gather_to_shared: portable_gather_to_shared,
        }
    }

    /// What this implementation is, for people comparing machines (`shmq bench` prints
    /// it): the checksum is the same CRC32C whichever computes it.
    pub fn name(self) -> &'static str {
        // The names are ASCII literals.
        self.name.to_str().unwrap_or("CRC32C")
    }

    /// [`MessageCrc::name`], NUL-terminated, for the C API.
    pub fn c_name(self) -> &'static CStr {
        self.name
    }

    /// The checksum of a message (see [`message_crc`]).
    #[inline]
    pub fn compute(self, id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
        (self.compute)(id, timestamp_ns, len, data)
    }

    /// Copies `dst.len()` bytes from `src`, in shared memory, to `dst`, and returns the
    /// checksum of the message `(id, timestamp_ns, dst)`: of the bytes `dst` holds after the
    /// copy, whatever another process writes at `src` meanwhile (each word is read once).
    ///
    /// # Safety
    /// `src` is valid for reading `dst.len()` bytes, 8-byte aligned, and does not overlap
    /// `dst`.
    #[inline]
    pub unsafe fn copy_from_shared(
        self,
        id: u64,
        timestamp_ns: u64,
        src: *const u8,
        dst: &mut [u8],
    ) -> u32 {
        // SAFETY: the caller's contract; `dst` is a valid slice.
        unsafe { (self.from_shared)(id, timestamp_ns, src, dst.as_mut_ptr(), dst.len()) }
    }

    /// Copies `src` to `dst`, in shared memory, and returns the checksum of the message
    /// `(id, timestamp_ns, src)`.
    ///
    /// # Safety
    /// `dst` is valid for writing `src.len()` bytes and does not overlap `src`.
    #[inline]
    pub unsafe fn copy_to_shared(
        self,
        id: u64,
        timestamp_ns: u64,
        src: &[u8],
        dst: *mut u8,
    ) -> u32 {
        // SAFETY: the caller's contract; `src` is a valid slice.
        unsafe { (self.to_shared)(id, timestamp_ns, src.as_ptr(), dst, src.len()) }
    }

    /// Copies the parts (`part(0)`, `part(1)`, ... `part(count - 1)`) one after another to
    /// `dst`, in shared memory, and returns the checksum of the message `(id, timestamp_ns,
    /// the parts joined)`, `len` bytes in all: a gather send, one pass over each part as
    /// [`copy_to_shared`](Self::copy_to_shared) makes over one.
    ///
    /// Writes at most `len` bytes whatever the parts say: each part is cut to the room left.
    /// Parts that add up to less leave the rest of `dst` as it was, and the checksum (which
    /// takes `len` as the message's length) then fails at the receiver: so a caller whose
    /// parts changed after it summed them (a C caller's arrays rewritten by a racing thread)
    /// writes nothing past the message.
    ///
    /// # Safety
    /// `len` fits in a `u32`; `dst` is valid for writing `len` bytes and overlaps no part.
    #[inline]
    pub unsafe fn copy_parts_to_shared(
        self,
        id: u64,
        timestamp_ns: u64,
        parts: Parts<'_>,
        len: usize,
        dst: *mut u8,
    ) -> u32 {
        // SAFETY: the caller's contract.
        unsafe { (self.gather_to_shared)(id, timestamp_ns, parts, len, dst) }
    }
}

/// Only reachable through a [`MessageCrc`] that [`MessageCrc::for_this_cpu`] made after
/// detecting the features (the field is private to this module).
#[cfg(target_arch = "x86_64")]
fn x86_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    // SAFETY: the CPU supports SSE4.2 and PCLMULQDQ (see above).
    unsafe { x86::message_crc(id, timestamp_ns, len, data) }
}

/// As [`x86_message_crc`], for the wide path's features.
#[cfg(all(target_arch = "x86_64", shmq_wide_crc))]
fn x86_wide_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    // SAFETY: the CPU supports SSE4.2, PCLMULQDQ, AVX-512F and VPCLMULQDQ (see above).
    unsafe { x86::wide::message_crc(id, timestamp_ns, len, data) }
}

/// As [`x86_message_crc`], for the 256-bit fold's features.
#[cfg(all(target_arch = "x86_64", shmq_fold256_crc))]
fn x86_fold256_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    // SAFETY: the CPU supports SSE4.2, PCLMULQDQ, AVX2 and VPCLMULQDQ (see above).
    unsafe { x86::fold256::message_crc(id, timestamp_ns, len, data) }
}

/// The portable definition, through the `crc32c` crate.
fn portable_message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
    let mut head = [0u8; 20];
    head[..8].copy_from_slice(&id.to_le_bytes());
    head[8..16].copy_from_slice(&timestamp_ns.to_le_bytes());
    head[16..].copy_from_slice(&len.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&head), data)
}

/// The portable [`MessageCrc::copy_parts_to_shared`]: each part copied, then added to the
/// checksum.
///
/// # Safety
/// As [`MessageCrc::copy_parts_to_shared`] says.
unsafe fn portable_gather_to_shared(
    id: u64,
    timestamp_ns: u64,
    parts: Parts<'_>,
    len: usize,
    dst: *mut u8,
) -> u32 {
    let mut crc = portable_message_crc(id, timestamp_ns, len as u32, &[]);
    let mut at = 0;
    for part in cut_parts(parts, len) {
        // SAFETY: `at + part.len() <= len` (`cut_parts`), so `dst + at` is writable for the
        // part's bytes (the caller's contract), which `dst` does not overlap.
        unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), dst.add(at), part.len()) };
        crc = crc32c::crc32c_append(crc, part);
        at += part.len();
    }
    crc
}

/// The portable copies of [`MessageCrc`]: copy, then checksum the private side (the copy
/// out of shared memory if `FROM_SHARED`, else the bytes copied into it).
///
/// # Safety
/// As [`MessageCrc::copy_from_shared`] (`FROM_SHARED`) or [`MessageCrc::copy_to_shared`]
/// says; `len` fits in a `u32`.
unsafe fn portable_copy<const FROM_SHARED: bool>(
    id: u64,
    timestamp_ns: u64,
    src: *const u8,
    dst: *mut u8,
    len: usize,
) -> u32 {
    // SAFETY: the caller's contract: `src` readable and `dst` writable for `len` bytes, not
    // overlapping; the private side is not written by anyone else while we read it.
    let private = unsafe {
        std::ptr::copy_nonoverlapping(src, dst, len);
        std::slice::from_raw_parts(if FROM_SHARED { dst.cast_const() } else { src }, len)
    };
    portable_message_crc(id, timestamp_ns, len as u32, private)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        _mm_clmulepi64_si128, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8, _mm_cvtsi128_si64,
        _mm_cvtsi32_si128, _mm_prefetch, _MM_HINT_T0,
    };
    use std::ptr;

    /// CRC32C's polynomial, bit-reflected (the `crc32` instruction's convention).
    const POLY: u32 = 0x82F6_3B78;

    /// Block sizes of the three-stream rounds: long rounds for the bulk, short ones for the
    /// rest, then single words. A round's streams are joined with two multiplications whose
    /// latency (about a dozen cycles) is paid once per round.
    const LONG: usize = 1024;
    const SHORT: usize = 128;

    /// How far ahead of its stores a copying send into shared memory fetches the slot's
    /// lines, in each of a long round's three blocks (messages of 3 KiB and more). A 4 KiB
    /// message makes three streams of 16 lines, whose lines the receiving core used last;
    /// left to the hardware, the stores waited for them: with the lines fetched 256 bytes
    /// ahead, 4 KiB streams with checksums ran 1.2–1.3× as fast between two processes, while
    /// 1 KiB (short rounds, where fetching ahead did not pay) and 16 KiB did not move
    /// (docs/PERFORMANCE.md, twenty-second session). A write prefetch (`prefetchw`) did no
    /// better than this read one.
    const SEND_PREFETCH_AHEAD: usize = 256;

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

    /// The message's `T` (a word or a byte) at byte `at` of `src`; also stored at `dst + at`
    /// when copying (`COPY`), from the register the checksum reads. A value read from shared
    /// memory (`SHARED`) is read with a volatile load, which the compiler may not repeat: the
    /// checksum and the copy see the same value even if another process writes it meanwhile.
    ///
    /// # Safety
    /// `src` is readable (and `dst` writable if `COPY`) for `size_of::<T>()` bytes at `at`,
    /// not overlapping; `src + at` is aligned for `T` if `SHARED`.
    #[inline(always)]
    unsafe fn take<T: Copy, const COPY: bool, const SHARED: bool>(
        src: *const u8,
        dst: *mut u8,
        at: usize,
    ) -> T {
        // SAFETY: the caller's contract (alignment only needed by the volatile load).
        unsafe {
            let from = src.add(at).cast::<T>();
            let value = if SHARED {
                ptr::read_volatile(from)
            } else {
                ptr::read_unaligned(from)
            };
            if COPY {
                ptr::write_unaligned(dst.add(at).cast::<T>(), value);
            }
            value
        }
    }

    /// [`take`] of the 8-byte word at `at`, little-endian, for `crc32`.
    ///
    /// # Safety
    /// As [`take`] says, for 8 bytes.
    #[inline(always)]
    unsafe fn word<const COPY: bool, const SHARED: bool>(
        src: *const u8,
        dst: *mut u8,
        at: usize,
    ) -> u64 {
        // SAFETY: the caller's contract.
        u64::from_le(unsafe { take::<u64, COPY, SHARED>(src, dst, at) })
    }

    /// Advances the raw CRC32C state `crc` (no inversions) over as many rounds of three
    /// `BLOCK`-byte blocks as the `len - at` bytes from `at` on hold (copying them if
    /// `COPY`, see [`word`]); returns the state and the offset after the last round. `k1`
    /// and `k2` shift a state across one and two blocks.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ; `src` and `dst` as [`take`] says for bytes
    /// `at..len`; `at <= len`.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn rounds<const BLOCK: usize, const COPY: bool, const SHARED: bool>(
        mut crc: u32,
        (src, dst): (*const u8, *mut u8),
        mut at: usize,
        len: usize,
        (k1, k2): (u32, u32),
    ) -> (u32, usize) {
        while len - at >= 3 * BLOCK {
            let (mut s0, mut s1, mut s2) = (u64::from(crc), 0u64, 0u64);
            let mut i = at;
            while i < at + BLOCK {
                if COPY && !SHARED && BLOCK == LONG && (i - at) % 64 == 0 {
                    // A new line in each block: fetch the lines the stores reach next (see
                    // `SEND_PREFETCH_AHEAD`), within the message.
                    for block in 0..3 {
                        let ahead = i + block * BLOCK + SEND_PREFETCH_AHEAD;
                        if ahead < len {
                            #[allow(unused_unsafe)]
                            // SAFETY: the CPU has SSE (x86-64); `dst + ahead` lies inside
                            // the `len` bytes our caller lets us write, and a prefetch only
                            // moves a line into the cache, changing no byte.
                            unsafe {
                                _mm_prefetch::<_MM_HINT_T0>(dst.add(ahead).cast())
                            };
                        }
                    }
                }
                #[allow(unused_unsafe)]
                // SAFETY: the CPU has SSE4.2 (our contract); the three words lie in
                // `at..at + 3 * BLOCK`, inside `..len`, at multiples of 8 from `at`.
                unsafe {
                    s0 = _mm_crc32_u64(s0, word::<COPY, SHARED>(src, dst, i));
                    s1 = _mm_crc32_u64(s1, word::<COPY, SHARED>(src, dst, i + BLOCK));
                    s2 = _mm_crc32_u64(s2, word::<COPY, SHARED>(src, dst, i + 2 * BLOCK));
                }
                i += 8;
            }
            // The state after the three blocks: the first's shifted past the other two, the
            // second's past the third, and the third's.
            // SAFETY: the CPU has the features (our contract).
            crc = unsafe { shift(s0 as u32, k2) ^ shift(s1 as u32, k1) } ^ s2 as u32;
            at += 3 * BLOCK;
        }
        (crc, at)
    }

    /// Advances the raw CRC32C state `crc` (no inversions) over bytes `at..len` of `src`,
    /// copying them to `dst` if `COPY` (see [`word`]): rounds of three long blocks, then of
    /// three short blocks, then single words and bytes.
    ///
    /// `GATHER` changes nothing in what it does: the gather copy (`gather_to_shared`) takes
    /// an instance of its own, so that each hot copy stays the only caller of its instance.
    /// With the gather's calls added to the copying send's instance, the compiler stopped
    /// inlining it there: +8 instructions per 64-byte send + receive pair, +8 per message of
    /// a batch (callgrind, `examples/hotpath`).
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ; `src` and `dst` as [`take`] says for bytes
    /// `at..len` (`dst` unused unless `COPY`), `src + at` 8-byte aligned if `SHARED`;
    /// `at <= len`.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    unsafe fn update<const COPY: bool, const SHARED: bool, const GATHER: bool>(
        crc: u32,
        src: *const u8,
        dst: *mut u8,
        at: usize,
        len: usize,
    ) -> u32 {
        let ends = (src, dst);
        // SAFETY: the CPU has the features and the pointers are valid (our contract).
        let (crc, mut at) = unsafe {
            let (crc, at) = rounds::<LONG, COPY, SHARED>(crc, ends, at, len, (LONG_1, LONG_2));
            rounds::<SHORT, COPY, SHARED>(crc, ends, at, len, (SHORT_1, SHORT_2))
        };
        let mut wide = u64::from(crc);
        // Four words at a time, then one: the loop's own instructions are as many as a
        // word's, and messages of a few words are the common case.
        while len - at >= 32 {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has SSE4.2; the words lie inside `..len`, at multiples of 8.
            unsafe {
                wide = _mm_crc32_u64(wide, word::<COPY, SHARED>(src, dst, at));
                wide = _mm_crc32_u64(wide, word::<COPY, SHARED>(src, dst, at + 8));
                wide = _mm_crc32_u64(wide, word::<COPY, SHARED>(src, dst, at + 16));
                wide = _mm_crc32_u64(wide, word::<COPY, SHARED>(src, dst, at + 24));
            }
            at += 32;
        }
        while len - at >= 8 {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has SSE4.2; the word lies inside `..len`, at a multiple of 8.
            unsafe {
                wide = _mm_crc32_u64(wide, word::<COPY, SHARED>(src, dst, at));
            }
            at += 8;
        }
        let mut crc = wide as u32;
        while at < len {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has SSE4.2; `at < len`.
            unsafe {
                crc = _mm_crc32_u8(crc, take::<u8, COPY, SHARED>(src, dst, at));
            }
            at += 1;
        }
        crc
    }

    /// The raw state after the header fields that travel with a message: three
    /// instructions.
    ///
    /// # Safety
    /// The CPU supports SSE4.2.
    #[inline]
    #[target_feature(enable = "sse4.2")]
    unsafe fn header(id: u64, timestamp_ns: u64, len: u32) -> u32 {
        #[allow(unused_unsafe)]
        // SAFETY: the CPU has SSE4.2 (our contract); the intrinsics take values only.
        unsafe {
            let state = _mm_crc32_u64(u64::from(u32::MAX), id);
            let state = _mm_crc32_u64(state, timestamp_ns);
            _mm_crc32_u32(state as u32, len)
        }
    }

    /// [`super::message_crc`] with the `crc32` instruction: the 20 header bytes, then
    /// [`update`]. The same CRC32C (initial value and final xor `!0`, bytes in little-endian
    /// order), so the value is identical to the portable path's.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) unsafe fn message_crc(id: u64, timestamp_ns: u64, len: u32, data: &[u8]) -> u32 {
        // SAFETY: the CPU has the features (our contract); `data` is readable for its length
        // and nothing is written (`COPY` is false).
        !unsafe {
            update::<false, false, false>(
                header(id, timestamp_ns, len),
                data.as_ptr(),
                ptr::null_mut(),
                0,
                data.len(),
            )
        }
    }

    /// [`message_crc`] of the `len` bytes at `src` (as `len as u32`), copied to `dst` in
    /// the same pass (see `MessageCrc`'s notes); `src` is in shared memory if
    /// `FROM_SHARED`.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ; `src` readable and `dst` writable for `len`
    /// bytes, not overlapping; `src` 8-byte aligned if `FROM_SHARED`.
    #[inline]
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) unsafe fn copy_message_crc<const FROM_SHARED: bool>(
        id: u64,
        timestamp_ns: u64,
        src: *const u8,
        dst: *mut u8,
        len: usize,
    ) -> u32 {
        // SAFETY: the CPU has the features and the pointers are valid (our contract); the
        // offsets `update` reads from `src` are multiples of 8 up to its last bytes.
        !unsafe {
            update::<true, FROM_SHARED, false>(
                header(id, timestamp_ns, len as u32),
                src,
                dst,
                0,
                len,
            )
        }
    }

    /// [`super::MessageCrc::copy_parts_to_shared`] with [`update`]: each part copied and
    /// checksummed in one pass, the state going on from one part to the next.
    ///
    /// # Safety
    /// The CPU supports SSE4.2 and PCLMULQDQ; as `copy_parts_to_shared` says.
    #[target_feature(enable = "sse4.2,pclmulqdq")]
    pub(super) unsafe fn gather_to_shared(
        id: u64,
        timestamp_ns: u64,
        parts: super::Parts<'_>,
        len: usize,
        dst: *mut u8,
    ) -> u32 {
        // SAFETY: the CPU has the features (our contract).
        let mut crc = unsafe { header(id, timestamp_ns, len as u32) };
        let mut at = 0;
        for part in super::cut_parts(parts, len) {
            let n = part.len();
            // SAFETY: the CPU has the features; `at + n <= len` (`cut_parts`), so `dst + at`
            // is writable for the part's `n` bytes (our contract), a private slice `dst` does
            // not overlap (no alignment needed: `src` is not shared).
            crc = unsafe { update::<true, false, true>(crc, part.as_ptr(), dst.add(at), 0, n) };
            at += n;
        }
        !crc
    }

    /// The two multipliers that move a 16-byte lane `bits` bits forward in the folding paths
    /// (`wide`, `fold256`): its low half (the earlier bytes) `bits + 64` bits, its high half
    /// `bits`, each by a carry-less multiplication that gains 33 powers of `x` as in
    /// [`shift`].
    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    const fn fold_constants(bits: u32) -> (u64, u64) {
        (
            x_pow_mod_p(bits + 64 - 33) as u64,
            x_pow_mod_p(bits - 33) as u64,
        )
    }

    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    const FOLD_1024: (u64, u64) = fold_constants(1024);
    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    const FOLD_512: (u64, u64) = fold_constants(512);
    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    const FOLD_256: (u64, u64) = fold_constants(256);
    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    const FOLD_128: (u64, u64) = fold_constants(128);

    /// The entry points of a folding path (`wide`, `fold256`), written once for both: they
    /// differ only in the CPU features they are compiled for (`$features`, which the
    /// functions' callers in [`super::MessageCrc`] check) and in the `STEP` and `steps` of the
    /// module they are expanded in. A macro, not a generic function: a `#[target_feature]`
    /// function's features are fixed where it is written.
    ///
    /// - `update_folded`: [`update`] from offset 0, with the module's `STEP`-byte steps first
    ///   when the message holds at least one (after the words that bring a shared `src` to a
    ///   64-byte boundary; slots start on one, so there are none in a queue). `GATHER` as for
    ///   [`update`].
    /// - `message_crc`, `copy_message_crc`, `gather_to_shared`: [`message_crc`],
    ///   [`copy_message_crc`] and [`gather_to_shared`] on `update_folded`.
    #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
    macro_rules! folded_entry_points {
        ($features:literal) => {
            /// `update` from offset 0 with this module's steps first (see
            /// `folded_entry_points`).
            ///
            /// # Safety
            /// The CPU supports this module's features; as `update` says for bytes
            /// `0..len`.
            #[inline]
            #[target_feature(enable = $features)]
            unsafe fn update_folded<const COPY: bool, const SHARED: bool, const GATHER: bool>(
                mut crc: u32,
                src: *const u8,
                dst: *mut u8,
                len: usize,
            ) -> u32 {
                let mut at = 0;
                // Bytes up to the next 64-byte boundary (arithmetic, not `align_offset`,
                // which may answer `usize::MAX`).
                let lead = if SHARED {
                    (64 - src as usize % 64) % 64
                } else {
                    0
                };
                if len >= STEP + lead {
                    #[allow(unused_unsafe)]
                    // SAFETY: the CPU has the features and the pointers are valid (our
                    // contract); `src` is 8-byte aligned if `SHARED`, so `lead` is a
                    // multiple of 8 (at most 56) and the words before it lie inside
                    // `..len`; then `STEP` bytes remain from the 64-byte boundary.
                    unsafe {
                        while at < lead {
                            crc = _mm_crc32_u64(u64::from(crc), word::<COPY, SHARED>(src, dst, at))
                                as u32;
                            at += 8;
                        }
                        (crc, at) = steps::<COPY, SHARED>(crc, (src, dst), at, len);
                    }
                }
                // SAFETY: as above; `at <= len`, and a multiple of 8 from `src`.
                unsafe { update::<COPY, SHARED, GATHER>(crc, src, dst, at, len) }
            }

            /// `super::message_crc` on this path.
            ///
            /// # Safety
            /// The CPU supports this module's features.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn message_crc(
                id: u64,
                timestamp_ns: u64,
                len: u32,
                data: &[u8],
            ) -> u32 {
                // SAFETY: the CPU has the features (our contract); `data` is readable for
                // its length and nothing is written (`COPY` is false).
                !unsafe {
                    update_folded::<false, false, false>(
                        header(id, timestamp_ns, len),
                        data.as_ptr(),
                        ptr::null_mut(),
                        data.len(),
                    )
                }
            }

            /// `super::copy_message_crc` on this path.
            ///
            /// # Safety
            /// The CPU supports this module's features; the pointers as
            /// `super::copy_message_crc` says.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn copy_message_crc<const FROM_SHARED: bool>(
                id: u64,
                timestamp_ns: u64,
                src: *const u8,
                dst: *mut u8,
                len: usize,
            ) -> u32 {
                // SAFETY: the CPU has the features and the pointers are valid (our
                // contract).
                !unsafe {
                    update_folded::<true, FROM_SHARED, false>(
                        header(id, timestamp_ns, len as u32),
                        src,
                        dst,
                        len,
                    )
                }
            }

            /// `super::gather_to_shared` on this path.
            ///
            /// # Safety
            /// The CPU supports this module's features; as `copy_parts_to_shared` says.
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn gather_to_shared(
                id: u64,
                timestamp_ns: u64,
                parts: super::super::Parts<'_>,
                len: usize,
                dst: *mut u8,
            ) -> u32 {
                // SAFETY: the CPU has the features (our contract).
                let mut crc = unsafe { header(id, timestamp_ns, len as u32) };
                let mut at = 0;
                for part in super::super::cut_parts(parts, len) {
                    let n = part.len();
                    // SAFETY: as in `super::gather_to_shared`: `at + n <= len`.
                    crc = unsafe {
                        update_folded::<true, false, true>(crc, part.as_ptr(), dst.add(at), n)
                    };
                    at += n;
                }
                !crc
            }
        };
    }

    /// The wide path, for CPUs with AVX-512 and VPCLMULQDQ (AMD Zen 4 and later, Intel Ice
    /// Lake and later), when the compiler has the intrinsics (see `build.rs`): the bulk of
    /// a message is folded 256 bytes at a time with 512-bit carry-less multiplications,
    /// then [`update`] finishes the rest.
    ///
    /// # Why
    /// The `crc32` instruction takes 8 bytes a cycle at best, so the three-stream rounds
    /// run at about 33 GB/s on the development VM (AMD EPYC, Zen 5), while one 512-bit
    /// carry-less multiplication, at about the same rate as `crc32` there, folds 64 bytes.
    /// The fold (the textbook method for CRCs over vectors) ran at 62–66 GB/s for 4–64 KiB
    /// (`examples/checksum_speed.rs`), and a send + receive pair of 4 KiB with checksums
    /// took half the time (`examples/hotpath`); docs/PERFORMANCE.md has the figures. The
    /// 128-bit `pclmulqdq` form, stable since long before this crate's minimum Rust, folds
    /// a quarter as much per instruction and ran at half the `crc32` path's speed.
    ///
    /// # How
    /// Four 64-byte accumulators take the message's first 256 bytes (the state in flight
    /// added to the first four bytes). Each further 256 bytes, every 16-byte lane of an
    /// accumulator is multiplied forward by 2048 bits (its two halves by two constants) and
    /// added to the lane 256 bytes on. At the end, the accumulators fold into one and its
    /// four lanes into the last, whose 128 bits `crc32` reduces to a state, which also
    /// applies the `x^32` a CRC's definition asks for. The constants are `x^n mod P` for
    /// the right `n` (`fold_constants`), computed at compile time, as [`shift`]'s are.
    #[cfg(shmq_wide_crc)]
    // Built only by a compiler that has these intrinsics (`build.rs`), 1.89 or newer.
    #[clippy::msrv = "1.89"]
    pub(super) mod wide {
        use super::{
            fold_constants, header, take, update, word, FOLD_1024, FOLD_128, FOLD_256, FOLD_512,
        };
        use std::arch::x86_64::{
            __m512i, _mm512_broadcast_i32x4, _mm512_castsi512_si128, _mm512_clmulepi64_epi128,
            _mm512_extracti32x4_epi32, _mm512_set_epi64, _mm512_ternarylogic_epi64,
            _mm512_xor_si512, _mm_crc32_u64, _mm_cvtsi128_si64, _mm_extract_epi64, _mm_set_epi64x,
            _mm_xor_si128,
        };
        use std::ptr;

        /// Bytes folded per step: four 64-byte accumulators.
        const STEP: usize = 256;

        const FOLD_2048: (u64, u64) = fold_constants(2048);
        const FOLD_384: (u64, u64) = fold_constants(384);

        /// `k`'s pair of multipliers in each of a register's four lanes.
        ///
        /// # Safety
        /// The CPU supports AVX-512F.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn in_every_lane((low, high): (u64, u64)) -> __m512i {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the feature (our contract); the intrinsics take values.
            unsafe {
                _mm512_broadcast_i32x4(_mm_set_epi64x(high as i64, low as i64))
            }
        }

        /// Each lane of `lanes` moved forward by the multipliers in the same lane of `k`
        /// and added to the same lane of `next`: two multiplications and a three-way xor.
        ///
        /// # Safety
        /// The CPU supports AVX-512F and VPCLMULQDQ.
        #[inline]
        #[target_feature(enable = "avx512f,vpclmulqdq")]
        unsafe fn fold(lanes: __m512i, k: __m512i, next: __m512i) -> __m512i {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the features (our contract); the intrinsics take values.
            unsafe {
                let low = _mm512_clmulepi64_epi128(lanes, k, 0x00);
                let high = _mm512_clmulepi64_epi128(lanes, k, 0x11);
                // 0x96: a ^ b ^ c.
                _mm512_ternarylogic_epi64(low, high, next, 0x96)
            }
        }

        /// Advances the raw state `crc` over as many 256-byte steps as bytes `at..len`
        /// hold, copying them if `COPY` (see [`take`]); returns the state and the offset
        /// after the last step.
        ///
        /// # Safety
        /// The CPU supports SSE4.2, AVX-512F and VPCLMULQDQ; `src` and `dst` as [`take`]
        /// says for bytes `at..len`; `len - at >= 256`; `src + at` 64-byte aligned if
        /// `SHARED`.
        #[inline]
        #[target_feature(enable = "sse4.2,avx512f,vpclmulqdq")]
        unsafe fn steps<const COPY: bool, const SHARED: bool>(
            crc: u32,
            (src, dst): (*const u8, *mut u8),
            mut at: usize,
            len: usize,
        ) -> (u32, usize) {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the features (our contract). Each 64 bytes taken lie in
            // `at..len` (a step is taken only while 256 bytes remain), at multiples of 64
            // from `at`, so aligned for the volatile load when `SHARED`.
            unsafe {
                let lanes = |at: usize| take::<__m512i, COPY, SHARED>(src, dst, at);
                let state = _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, i64::from(crc));
                let mut x0 = _mm512_xor_si512(lanes(at), state);
                let mut x1 = lanes(at + 64);
                let mut x2 = lanes(at + 128);
                let mut x3 = lanes(at + 192);
                at += STEP;
                let k = in_every_lane(FOLD_2048);
                while len - at >= STEP {
                    x0 = fold(x0, k, lanes(at));
                    x1 = fold(x1, k, lanes(at + 64));
                    x2 = fold(x2, k, lanes(at + 128));
                    x3 = fold(x3, k, lanes(at + 192));
                    at += STEP;
                }
                // Four accumulators to one: x0 onto x1 and x2 onto x3 (64 bytes on), then
                // the first pair onto the second (128 bytes on).
                let k512 = in_every_lane(FOLD_512);
                let x = fold(
                    fold(x0, k512, x1),
                    in_every_lane(FOLD_1024),
                    fold(x2, k512, x3),
                );
                // Its four lanes onto the last: lanes 0, 1 and 2 are 48, 32 and 16 bytes
                // before it (lane 3's multipliers are zero, so its products vanish).
                let k = _mm512_set_epi64(
                    0,
                    0,
                    FOLD_128.1 as i64,
                    FOLD_128.0 as i64,
                    FOLD_256.1 as i64,
                    FOLD_256.0 as i64,
                    FOLD_384.1 as i64,
                    FOLD_384.0 as i64,
                );
                let moved = _mm512_xor_si512(
                    _mm512_clmulepi64_epi128(x, k, 0x00),
                    _mm512_clmulepi64_epi128(x, k, 0x11),
                );
                let last = _mm_xor_si128(
                    _mm_xor_si128(
                        _mm512_extracti32x4_epi32::<3>(x),
                        _mm512_castsi512_si128(moved),
                    ),
                    _mm_xor_si128(
                        _mm512_extracti32x4_epi32::<1>(moved),
                        _mm512_extracti32x4_epi32::<2>(moved),
                    ),
                );
                let crc = _mm_crc32_u64(0, _mm_cvtsi128_si64(last) as u64);
                let crc = _mm_crc32_u64(crc, _mm_extract_epi64::<1>(last) as u64);
                (crc as u32, at)
            }
        }

        folded_entry_points!("sse4.2,pclmulqdq,avx512f,vpclmulqdq");

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn fold_constants_match_a_zero_feed() {
                if !(std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("vpclmulqdq"))
                {
                    return;
                }
                let cases = [
                    (16, FOLD_128),
                    (32, FOLD_256),
                    (48, FOLD_384),
                    (64, FOLD_512),
                    (128, FOLD_1024),
                    (256, FOLD_2048),
                ];
                super::super::tests::check_fold_constants(&cases, |lane, k| {
                    // SAFETY: the features were checked above; the intrinsics take values.
                    unsafe {
                        let v =
                            _mm512_broadcast_i32x4(std::ptr::read_unaligned(lane.as_ptr().cast()));
                        let zero = _mm512_set_epi64(0, 0, 0, 0, 0, 0, 0, 0);
                        let out = _mm512_castsi512_si128(fold(v, in_every_lane(k), zero));
                        let mut bytes = [0u8; 16];
                        std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), out);
                        bytes
                    }
                });
            }
        }
    }

    /// The 256-bit fold, for CPUs with VPCLMULQDQ and AVX2 but without AVX-512 (AMD Zen 3,
    /// Intel Alder Lake and Raptor Lake, Intel's E-core Xeons), when the compiler has the
    /// intrinsics (see `build.rs`): [`wide`]'s method on 32-byte registers, four of them
    /// folding 128 bytes a step, then [`update`] for the rest.
    ///
    /// # Why
    /// Without it those CPUs ran the three `crc32` streams, at 8 bytes a cycle at best,
    /// while each 256-bit carry-less multiplication folds 16 bytes. On the development VM of
    /// the twenty-fifth session (an AMD EPYC with VPCLMULQDQ and no AVX-512) it took
    /// 0.7–0.9× the streams' time from 256 bytes to 4 KiB, and 0.93–0.94× at 16–64 KiB,
    /// where both ran at 22–24 GB/s (`examples/checksum_speed.rs`, docs/PERFORMANCE.md).
    ///
    /// # How
    /// As [`wide`]: four 32-byte accumulators take the first 128 bytes, the state in flight
    /// added to the first four; each further 128 bytes, every 16-byte lane is multiplied
    /// 1024 bits forward and added to the lane 128 bytes on. At the end the accumulators
    /// fold into one (pairs 32 bytes apart, then the pairs 64 bytes apart), its first lane
    /// onto its second, and `crc32` reduces that lane's 128 bits to a state.
    #[cfg(shmq_fold256_crc)]
    // Built only by a compiler that has these intrinsics (`build.rs`), 1.89 or newer.
    #[clippy::msrv = "1.89"]
    pub(super) mod fold256 {
        use super::{header, take, update, word, FOLD_1024, FOLD_128, FOLD_256, FOLD_512};
        use std::arch::x86_64::{
            __m256i, _mm256_castsi256_si128, _mm256_clmulepi64_epi128, _mm256_extracti128_si256,
            _mm256_set_epi64x, _mm256_xor_si256, _mm_crc32_u64, _mm_cvtsi128_si64,
            _mm_extract_epi64, _mm_xor_si128,
        };
        use std::ptr;

        /// Bytes folded per step: four 32-byte accumulators.
        const STEP: usize = 128;

        /// `k`'s pair of multipliers in both of a register's lanes.
        ///
        /// # Safety
        /// The CPU supports AVX.
        #[inline]
        #[target_feature(enable = "avx")]
        unsafe fn in_both_lanes((low, high): (u64, u64)) -> __m256i {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the feature (our contract); the intrinsic takes values.
            unsafe {
                _mm256_set_epi64x(high as i64, low as i64, high as i64, low as i64)
            }
        }

        /// Each lane of `lanes` moved forward by the multipliers in the same lane of `k`
        /// and added to the same lane of `next`: two multiplications and two xors.
        ///
        /// # Safety
        /// The CPU supports AVX2 and VPCLMULQDQ.
        #[inline]
        #[target_feature(enable = "avx2,vpclmulqdq")]
        unsafe fn fold(lanes: __m256i, k: __m256i, next: __m256i) -> __m256i {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the features (our contract); the intrinsics take values.
            unsafe {
                let low = _mm256_clmulepi64_epi128(lanes, k, 0x00);
                let high = _mm256_clmulepi64_epi128(lanes, k, 0x11);
                _mm256_xor_si256(_mm256_xor_si256(low, high), next)
            }
        }

        /// Advances the raw state `crc` over as many 128-byte steps as bytes `at..len`
        /// hold, copying them if `COPY` (see [`take`]); returns the state and the offset
        /// after the last step.
        ///
        /// # Safety
        /// The CPU supports SSE4.2, AVX2 and VPCLMULQDQ; `src` and `dst` as [`take`] says
        /// for bytes `at..len`; `len - at >= 128`; `src + at` 32-byte aligned if `SHARED`.
        #[inline]
        #[target_feature(enable = "sse4.2,avx2,vpclmulqdq")]
        unsafe fn steps<const COPY: bool, const SHARED: bool>(
            crc: u32,
            (src, dst): (*const u8, *mut u8),
            mut at: usize,
            len: usize,
        ) -> (u32, usize) {
            #[allow(unused_unsafe)]
            // SAFETY: the CPU has the features (our contract). Each 32 bytes taken lie in
            // `at..len` (a step is taken only while 128 bytes remain), at multiples of 32
            // from `at`, so aligned for the volatile load when `SHARED`.
            unsafe {
                let lanes = |at: usize| take::<__m256i, COPY, SHARED>(src, dst, at);
                let state = _mm256_set_epi64x(0, 0, 0, i64::from(crc));
                let mut x0 = _mm256_xor_si256(lanes(at), state);
                let mut x1 = lanes(at + 32);
                let mut x2 = lanes(at + 64);
                let mut x3 = lanes(at + 96);
                at += STEP;
                let k = in_both_lanes(FOLD_1024);
                while len - at >= STEP {
                    x0 = fold(x0, k, lanes(at));
                    x1 = fold(x1, k, lanes(at + 32));
                    x2 = fold(x2, k, lanes(at + 64));
                    x3 = fold(x3, k, lanes(at + 96));
                    at += STEP;
                }
                // Four accumulators to one: x0 onto x1 and x2 onto x3 (32 bytes on), then
                // the first pair onto the second (64 bytes on).
                let k256 = in_both_lanes(FOLD_256);
                let x = fold(
                    fold(x0, k256, x1),
                    in_both_lanes(FOLD_512),
                    fold(x2, k256, x3),
                );
                // Its first lane onto its second, 16 bytes on (the second lane's multipliers
                // are zero, so its products vanish).
                let k = _mm256_set_epi64x(0, 0, FOLD_128.1 as i64, FOLD_128.0 as i64);
                let moved = _mm256_xor_si256(
                    _mm256_clmulepi64_epi128(x, k, 0x00),
                    _mm256_clmulepi64_epi128(x, k, 0x11),
                );
                let last = _mm_xor_si128(
                    _mm256_extracti128_si256::<1>(x),
                    _mm256_castsi256_si128(moved),
                );
                let crc = _mm_crc32_u64(0, _mm_cvtsi128_si64(last) as u64);
                let crc = _mm_crc32_u64(crc, _mm_extract_epi64::<1>(last) as u64);
                (crc as u32, at)
            }
        }

        folded_entry_points!("sse4.2,pclmulqdq,avx2,vpclmulqdq");

        #[cfg(test)]
        mod tests {
            use super::*;

            #[test]
            fn fold_constants_match_a_zero_feed() {
                if !(std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("vpclmulqdq"))
                {
                    return;
                }
                let cases = [
                    (16, FOLD_128),
                    (32, FOLD_256),
                    (64, FOLD_512),
                    (128, FOLD_1024),
                ];
                super::super::tests::check_fold_constants(&cases, |lane, k| {
                    // SAFETY: the features were checked above; the intrinsics take values.
                    unsafe {
                        let v: std::arch::x86_64::__m128i =
                            std::ptr::read_unaligned(lane.as_ptr().cast());
                        let v = std::arch::x86_64::_mm256_broadcastsi128_si256(v);
                        let zero = _mm256_set_epi64x(0, 0, 0, 0);
                        let out = _mm256_castsi256_si128(fold(v, in_both_lanes(k), zero));
                        let mut bytes = [0u8; 16];
                        std::ptr::write_unaligned(bytes.as_mut_ptr().cast(), out);
                        bytes
                    }
                });
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// For the folding paths' tests: folding a lane forward must equal feeding the zero
        /// bytes it moves across. For each `(n, k)`, a lane holding `v` then `n` zero bytes
        /// has the state of `fold_lane(v, k)`, the lane folded by the multipliers `k`.
        ///
        /// The caller has checked that the CPU has AVX2 or AVX-512 (for its fold).
        #[cfg(any(shmq_wide_crc, shmq_fold256_crc))]
        pub(super) fn check_fold_constants(
            cases: &[(usize, (u64, u64))],
            fold_lane: impl Fn([u8; 16], (u64, u64)) -> [u8; 16],
        ) {
            let feed = |bytes: &[u8]| {
                bytes.iter().fold(0u32, |crc, &b| {
                    // SAFETY: x86-64 CPUs with AVX2 or AVX-512 have SSE4.2 (our caller
                    // checked one of them).
                    unsafe { _mm_crc32_u8(crc, b) }
                })
            };
            let lane: [u8; 16] = std::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0xA5);
            for &(bytes, k) in cases {
                let mut message = lane.to_vec();
                message.resize(16 + bytes, 0);
                // The folded lane stands for the message's last 16 bytes.
                assert_eq!(feed(&fold_lane(lane, k)), feed(&message), "{bytes} bytes");
            }
        }

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

    /// A spread of lengths: every one up to a few short rounds (3 × 128 bytes each) and
    /// fold steps (128 and 256 bytes each), then a sample up to past two long rounds (3 × 1024
    /// bytes each), and each side of the rounds' boundaries.
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

    /// Every implementation this CPU runs, named by rank (0 is the one a ring picks).
    fn implementations() -> Vec<(String, MessageCrc)> {
        let all = MessageCrc::all_for_this_cpu();
        let last = all.len() - 1;
        all.into_iter()
            .enumerate()
            .map(|(i, crc)| {
                let name = match i {
                    0 => "this CPU's fastest".to_string(),
                    i if i == last => "the portable".to_string(),
                    i => format!("this CPU's number {i}"),
                };
                (name, crc)
            })
            .collect()
    }

    /// Each implementation says which it is; the one a ring picks is the first.
    #[test]
    fn implementations_have_distinct_names() {
        let all = MessageCrc::all_for_this_cpu();
        let names: Vec<&str> = all.iter().map(|crc| crc.name()).collect();
        for crc in &all {
            // The C name is the same text (not the fallback of a failed conversion).
            assert_eq!(crc.c_name().to_str(), Ok(crc.name()));
        }
        assert_eq!(names[0], MessageCrc::for_this_cpu().name());
        assert_eq!(names.last(), Some(&MessageCrc::portable().name()));
        let mut distinct = names.clone();
        distinct.dedup();
        assert_eq!(distinct, names);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sse4.2")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
        {
            assert!(names.len() >= 2, "{names:?}");
        }
    }

    /// Every implementation this CPU runs, and the one a ring picks.
    #[test]
    fn message_crc_matches_the_portable_definition() {
        let data = sample_bytes();
        let implementations = implementations();
        for n in lengths() {
            for offset in [0, 1, 3, 7] {
                let bytes = &data[offset..offset + n];
                let id = 0x0123_4567_89ab_cdef ^ n as u64;
                let ts = u64::MAX - n as u64;
                let len = bytes.len() as u32;
                let expected = reference_crc(id, ts, len, bytes);
                assert_eq!(message_crc(id, ts, len, bytes), expected, "length {n}");
                for (which, crc) in &implementations {
                    assert_eq!(
                        crc.compute(id, ts, len, bytes),
                        expected,
                        "{which} implementation, length {n}, offset {offset}"
                    );
                }
            }
        }
    }

    /// The copies that checksum: the copy is exact (and writes nothing past it), and the
    /// checksum equals the reference's, for every implementation, every length of
    /// [`lengths`], unaligned private ends and shared ends at several multiples of 8 from
    /// a 64-byte boundary (the shared end of `copy_from_shared` is 8-byte aligned, as
    /// slots are; the wide path steps to the next 64-byte boundary).
    #[test]
    fn copies_copy_exactly_and_checksum_what_they_copied() {
        /// 64-byte aligned storage holding `bytes` from byte `at` on, for the shared end.
        fn aligned(bytes: &[u8], at: usize) -> (Vec<u64>, usize) {
            let mut words = vec![0u64; (at + bytes.len()) / 8 + 10];
            let start = words.as_ptr().cast::<u8>().align_offset(64) + at;
            // SAFETY: `words` holds at least `start + bytes.len()` bytes (the 64-byte
            // boundary is at most 56 bytes in); u64 has no invalid bits.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    words.as_mut_ptr().cast::<u8>().add(start),
                    bytes.len(),
                )
            };
            (words, start)
        }
        let data = sample_bytes();
        let implementations = implementations();
        const GUARD: u8 = 0x5A;
        for n in lengths() {
            let id = 0x0123_4567_89ab_cdef ^ n as u64;
            let ts = u64::MAX - n as u64;
            let expected = reference_crc(id, ts, n as u32, &data[..n]);
            for (which, crc) in &implementations {
                for (offset, shared_at) in [(0, 0), (1, 8), (3, 24), (7, 56)] {
                    let (shared_words, start) = aligned(&data[..n], shared_at);
                    // SAFETY: `start + n` bytes lie inside `shared_words`.
                    let shared = unsafe { shared_words.as_ptr().cast::<u8>().add(start) };
                    // Out of shared memory (aligned) into private memory (at `offset`).
                    let mut out = vec![GUARD; offset + n + 1];
                    // SAFETY: `shared` holds more than n bytes, 8-byte aligned; `out` is a
                    // separate allocation.
                    let got = unsafe {
                        crc.copy_from_shared(id, ts, shared, &mut out[offset..offset + n])
                    };
                    assert_eq!(
                        got, expected,
                        "{which} copy_from_shared, length {n}, offset {offset}"
                    );
                    assert!(
                        out[offset..offset + n] == data[..n],
                        "{which} copy_from_shared, length {n}"
                    );
                    assert_eq!(
                        (out[..offset].iter().all(|&b| b == GUARD), out[offset + n]),
                        (true, GUARD)
                    );

                    // From private memory (at `offset`) into shared memory (aligned).
                    let (mut slot, start) = aligned(&vec![GUARD; n + 8], shared_at);
                    let src = &data[offset..offset + n];
                    let expected = reference_crc(id, ts, n as u32, src);
                    // SAFETY: `slot` holds n + 8 bytes from `start`; `data` is a separate
                    // allocation.
                    let got = unsafe {
                        let dst = slot.as_mut_ptr().cast::<u8>().add(start);
                        crc.copy_to_shared(id, ts, src, dst)
                    };
                    assert_eq!(
                        got, expected,
                        "{which} copy_to_shared, length {n}, offset {offset}"
                    );
                    // SAFETY: `slot` holds n + 8 initialized bytes from `start`.
                    let written = unsafe {
                        std::slice::from_raw_parts(slot.as_ptr().cast::<u8>().add(start), n + 1)
                    };
                    assert!(written[..n] == *src, "{which} copy_to_shared, length {n}");
                    assert_eq!(
                        written[n], GUARD,
                        "{which} copy_to_shared wrote past length {n}"
                    );
                }
            }
        }
    }

    /// Parts that add up to more than `len` are cut at it, by every implementation: `len`
    /// bytes written, nothing after, and the checksum of those bytes.
    #[test]
    fn gather_copies_cut_parts_at_the_length() {
        let data = sample_bytes();
        const GUARD: u8 = 0x3C;
        for len in [0, 5, 64, 300, 1000, 5000] {
            let parts: [&[u8]; 3] = [
                &data[..len / 3 + 1],
                &data[len / 3 + 1..len + 40],
                &data[..9],
            ];
            let expected = reference_crc(3, 4, len as u32, &data[..len]);
            for (which, crc) in &implementations() {
                let mut out = vec![GUARD; len + 64];
                // SAFETY: `out` holds more than `len` bytes; `data` is a separate allocation.
                let got = unsafe {
                    crc.copy_parts_to_shared(3, 4, (3, &|i| parts[i]), len, out.as_mut_ptr())
                };
                assert_eq!(got, expected, "{which}, length {len}");
                assert!(out[..len] == data[..len], "{which}, length {len}");
                assert!(
                    out[len..].iter().all(|&b| b == GUARD),
                    "{which} wrote past {len}"
                );
            }
        }
    }

    /// The gather copy: the parts land one after another, exactly, and the checksum is the
    /// joined message's, for every implementation, however the message is cut (empty
    /// parts, single bytes, cuts on and off the rounds' and the wide steps' boundaries, a
    /// destination off any alignment).
    #[test]
    fn gather_copies_checksum_the_joined_message() {
        let data = sample_bytes();
        let implementations = implementations();
        const GUARD: u8 = 0xA5;
        for n in [0, 1, 7, 64, 255, 256, 257, 1000, 3 * 1024 + 5, 4096, 7000] {
            let id = 0xfeed_f00d ^ n as u64;
            let ts = 1_700_000_000_000_000_000 + n as u64;
            let expected = reference_crc(id, ts, n as u32, &data[..n]);
            let cuts: Vec<Vec<usize>> = vec![
                vec![],
                vec![0, 0],
                vec![1],
                vec![n / 2],
                vec![3, n / 3, n / 3 + 1, 2 * n / 3],
                (1..n.min(40)).collect(),
                vec![256, 512, 3072],
                vec![n, n],
            ];
            for cut in cuts {
                let mut bounds: Vec<usize> = cut.into_iter().map(|c| c.min(n)).collect();
                bounds.insert(0, 0);
                bounds.push(n);
                bounds.sort_unstable();
                let parts: Vec<&[u8]> = bounds.windows(2).map(|w| &data[w[0]..w[1]]).collect();
                for (which, crc) in &implementations {
                    for dst_at in [0, 5] {
                        let mut out = vec![GUARD; dst_at + n + 1];
                        // SAFETY: `out` holds `n` bytes from `dst_at`, the parts add up to
                        // `n` and lie in `data`, a separate allocation.
                        let got = unsafe {
                            crc.copy_parts_to_shared(
                                id,
                                ts,
                                (parts.len(), &|i| parts[i]),
                                n,
                                out.as_mut_ptr().add(dst_at),
                            )
                        };
                        let at = format!("{which}, length {n}, parts {bounds:?}, at {dst_at}");
                        assert_eq!(got, expected, "{at}");
                        assert!(out[dst_at..dst_at + n] == data[..n], "{at}");
                        assert_eq!(
                            (out[..dst_at].iter().all(|&b| b == GUARD), out[dst_at + n]),
                            (true, GUARD),
                            "{at}"
                        );
                    }
                }
            }
        }
    }
}
