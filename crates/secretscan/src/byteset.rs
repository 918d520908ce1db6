//! Sets of bytes tested 64 bytes at a time without a branch, and the runs of a set
//! found from those masks. One piece for every "run of at least `n` bytes of a class"
//! the scanner looks for: the segment gates (`validators::shapes`), the encoded runs
//! that `normalize` decodes (base64, hex, base32), and the leads of the keywordless
//! rules (`lead`).
//!
//! A set is a predicate written with comparisons, so that testing a block is a few
//! comparisons of all its bytes at once (the compiler vectorizes them; a table lookup
//! a byte would not be). The bits of a block give, with a few shifts, every place
//! where `n` bytes of the set end ([`window_ends`]); a block without one costs no
//! branch. Text whose runs are short (code, prose, JSON) and text that is one long
//! run (an image in base64) both cost a pass of such blocks, where a probe every `n`
//! bytes, walked back byte by byte, mispredicted a branch at nearly every probe.

/// A set of bytes: a predicate written with comparisons (ranges, `|`), not a table
/// lookup, so that testing a block of 64 is vectorized. Monomorphized: each set is
/// its own copy of the loops below, its constants kept in registers.
pub(crate) trait ByteSet: Fn(u8) -> bool + Copy {}
impl<F: Fn(u8) -> bool + Copy> ByteSet for F {}

/// Bit `k` set when `block[k]` is in `set`.
#[inline(always)]
pub(crate) fn mask(set: impl ByteSet, block: &[u8; 64]) -> u64 {
    let mut bits = [0u8; 64];
    for (bit, &b) in bits.iter_mut().zip(block) {
        *bit = u8::from(set(b));
    }
    pack(&bits)
}

/// The mask of the (up to) 64 bytes at `at`, and how many there are.
#[inline(always)]
pub(crate) fn mask_at(set: impl ByteSet, data: &[u8], at: usize) -> (u64, usize) {
    match data.get(at..at + 64) {
        Some(block) => (mask(set, block.try_into().expect("64 bytes")), 64),
        None => {
            let part = &data[at.min(data.len())..];
            let mut block = [0u8; 64];
            block[..part.len()].copy_from_slice(part);
            (mask(set, &block) & low_bits(part.len()), part.len())
        }
    }
}

/// Where the run of `set` that goes on at `at` ends (`at` when `data[at]` is not in
/// it).
#[inline]
pub(crate) fn run_end(set: impl ByteSet, data: &[u8], mut at: usize) -> usize {
    loop {
        let (m, len) = mask_at(set, data, at);
        let end = (!m).trailing_zeros() as usize;
        if end < len || len < 64 {
            return at + end.min(len);
        }
        at += 64;
    }
}

/// Call `f(start, end)` for every maximal run of bytes of `set` that holds `min` (at
/// least 1) of them at `from` or later, in order, until `f` returns true. A run that
/// goes on before `from` is reported from its start. Inlined, so that a constant
/// `min` at the call folds the window's shifts into a fixed few.
#[inline(always)]
pub(crate) fn runs(
    set: impl ByteSet,
    data: &[u8],
    from: usize,
    min: usize,
    mut f: impl FnMut(usize, usize) -> bool,
) {
    let min = min.max(1);
    let window = min.min(64);
    let mut i = from;
    // The mask of the 64 bytes before `i` (none of them counted at `from` or after a
    // run: the byte before is outside the set).
    let mut prev = 0u64;
    while i < data.len() {
        let (m, len) = mask_at(set, data, i);
        let w = window_ends(prev, m, window);
        if w == 0 {
            prev = m;
            i += len;
            continue;
        }
        // The first place `window` bytes of the set end: the run starts `window`
        // bytes before it (the byte before that is outside the set, or is before `i`,
        // which is `from` or the byte after a run).
        let p = i + w.trailing_zeros() as usize;
        let mut s = p + 1 - window;
        if s == from {
            while s > 0 && set(data[s - 1]) {
                s -= 1;
            }
        }
        let e = run_end(set, data, p + 1);
        if e - s.max(from) >= min && f(s, e) {
            return;
        }
        i = e + 1;
        prev = 0;
    }
}

/// Is there a run of `min` bytes of `set` in `data`?
#[inline(always)]
pub(crate) fn any_run(set: impl ByteSet, data: &[u8], min: usize) -> bool {
    let mut found = false;
    runs(set, data, 0, min, |_, _| {
        found = true;
        true
    });
    found
}

/// The low `n` (at most 64) bits set.
fn low_bits(n: usize) -> u64 {
    if n >= 64 { !0 } else { (1u64 << n) - 1 }
}

/// Bit `k` of the result is `bits[k]` (each 0 or 1): sixteen bytes at a time, each
/// byte's bit moved to its top and gathered by `pmovmskb` (SSE2, on every x86-64;
/// through `safe_arch`, as the crate allows no `unsafe`). The compiler keeps the
/// comparisons that made `bits` in registers: no store, no load.
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn pack(bits: &[u8; 64]) -> u64 {
    use safe_arch::{m128i, move_mask_i8_m128i, shl_imm_u16_m128i};
    let mut m = 0u64;
    for (j, sixteen) in bits.chunks_exact(16).enumerate() {
        let lanes: [u8; 16] = sixteen.try_into().expect("16 bytes");
        let tops = shl_imm_u16_m128i::<7>(m128i::from(lanes));
        m |= u64::from(move_mask_i8_m128i(tops) as u16) << (16 * j);
    }
    m
}

/// Bit `k` of the result is `bits[k]` (each 0 or 1): eight bytes at a time, each
/// byte's bit gathered into the top byte by one multiplication (the partial products
/// land on distinct bits, so nothing carries).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn pack(bits: &[u8; 64]) -> u64 {
    let mut m = 0u64;
    for (j, eight) in bits.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(eight.try_into().expect("8 bytes"));
        m |= (x.wrapping_mul(0x0102_0408_1020_4080) >> 56) << (8 * j);
    }
    m
}

/// The places in the block of mask `cur` where `n` (1 to 64) bytes of the set end,
/// the block before having mask `prev`: bit `k` set when bytes `k - n + 1 ..= k`
/// (counted across into the block before) are all set. Windows of 1, 2, 4, ... bytes
/// come from doubling (shifts by constants), and a window of `n` is those of its
/// binary digits laid end to end: a few shifts that do not wait on each other.
#[inline(always)]
pub(crate) fn window_ends(prev: u64, cur: u64, n: usize) -> u64 {
    let mut pow = u128::from(cur) << 64 | u128::from(prev);
    let (mut acc, mut off) = (!0u128, 0);
    for k in 0..7 {
        if n >> k & 1 == 1 {
            acc &= pow << off;
            off += 1 << k;
        }
        if n >> (k + 1) == 0 {
            break;
        }
        pow &= pow << (1 << k);
    }
    (acc >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every maximal run of `set` holding `min` bytes at `from` or later, the
    /// obvious way.
    fn naive(set: impl ByteSet, data: &[u8], from: usize, min: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            if !set(data[i]) {
                i += 1;
                continue;
            }
            let s = i;
            while i < data.len() && set(data[i]) {
                i += 1;
            }
            if i > from && i - s.max(from) >= min.max(1) {
                out.push((s, i));
            }
        }
        out
    }

    fn found(set: impl ByteSet, data: &[u8], from: usize, min: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        runs(set, data, from, min, |s, e| {
            out.push((s, e));
            false
        });
        out
    }

    #[test]
    fn masks_hold_the_bytes_the_predicate_takes() {
        let preds: [fn(u8) -> bool; 5] = [
            |b: u8| b.is_ascii_alphanumeric(),
            |b: u8| b == 0 || b == 255,
            |_| false,
            |_| true,
            |b: u8| b.is_multiple_of(3),
        ];
        for f in preds {
            let block: [u8; 64] = std::array::from_fn(|k| (k * 4 + 1) as u8);
            let m = mask(f, &block);
            for (k, &b) in block.iter().enumerate() {
                assert_eq!(m >> k & 1 == 1, f(b), "{k}");
            }
        }
    }

    #[test]
    fn runs_at_block_edges_and_past_64() {
        let set = |b: u8| b == b'x';
        for len in [1, 24, 25, 63, 64, 65, 127, 128, 129, 200] {
            for at in [0, 1, 39, 63, 64, 65, 100] {
                let mut data = vec![b'.'; 400];
                data[at..at + len].fill(b'x');
                for min in [1, 2, 24, 25, 47, 64, 65, 100] {
                    for from in [0, 1, at, at + 1, 64, 130] {
                        assert_eq!(
                            found(set, &data, from, min),
                            naive(set, &data, from, min),
                            "len {len} at {at} min {min} from {from}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// Bit `k` of the packed mask is byte `k`.
        #[test]
        fn pack_puts_byte_k_at_bit_k(bits in proptest::collection::vec(0u8..2, 64)) {
            let bits: [u8; 64] = bits.try_into().expect("64");
            let want = bits.iter().enumerate().fold(0u64, |m, (k, &b)| m | u64::from(b) << k);
            prop_assert_eq!(pack(&bits), want);
        }
    }

    #[test]
    fn window_ends_count_across_the_block_before() {
        // The last three bytes of the block before and the first two of this one.
        let prev = 0b111 << 61;
        assert_eq!(window_ends(prev, 0b11, 5), 0b10);
        assert_eq!(window_ends(prev, 0b11, 6), 0);
        assert_eq!(window_ends(0, !0, 64), 1 << 63);
        assert_eq!(window_ends(!0, 0, 1), 0);
    }

    proptest! {
        /// Random text over a few bytes, some in the set: the same runs as the
        /// obvious walk, for every length and start.
        #[test]
        fn same_runs_as_the_obvious_walk(
            data in proptest::collection::vec(prop_oneof![3 => Just(b'a'), 1 => Just(b'.'), 1 => Just(b'b')], 0..600),
            min in 0usize..80,
            from in 0usize..600,
        ) {
            let set = |b: u8| b.is_ascii_lowercase();
            let from = from.min(data.len());
            prop_assert_eq!(found(set, &data, from, min), naive(set, &data, from, min));
            let any = !naive(set, &data, 0, min).is_empty();
            prop_assert_eq!(any_run(set, &data, min), any);
        }

        /// The first run where `f` stops, and none after it.
        #[test]
        fn stops_when_told(data in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'.')], 0..300)) {
            let set = |b: u8| b == b'a';
            let all = naive(set, &data, 0, 3);
            let mut seen = Vec::new();
            runs(set, &data, 0, 3, |s, e| {
                seen.push((s, e));
                seen.len() == 2
            });
            prop_assert_eq!(&seen[..], &all[..all.len().min(2)]);
        }
    }
}
