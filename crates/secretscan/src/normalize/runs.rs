//! Encoded runs: maximal runs of the base64 alphabet (standard and URL-safe together)
//! of at least [`BASE64_MIN`] bytes, and inside them runs of hex digits of at least
//! [`HEX_MIN`], found 64 bytes at a time without a branch a byte
//! ([`crate::byteset`]); a run is decoded at every alignment (an agent that prefixes
//! one to three characters shifts the quads). Only the text in a decoding
//! ([`texty_regions`]) is kept: a wrong alignment or a binary payload (an image) is
//! dropped unseen.

/// Shortest base64 run decoded: 18 bytes, less than any secret the rules know.
pub(super) const BASE64_MIN: usize = 24;
/// Shortest hex run decoded: 16 bytes.
pub(super) const HEX_MIN: usize = 32;
/// Shortest base32 run decoded: 16 bytes, the least a kept decoding holds.
pub(super) const BASE32_MIN: usize = 26;
/// A decoding is kept when it holds this many printable characters in a row.
pub(super) const TEXTY_MIN: usize = 16;

use crate::byteset::{self, ByteSet};

const INVALID: u8 = 0xFF;

/// Base64 digit values; `+` and `-` are 62, `/` and `_` are 63 (both alphabets).
const B64: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 26 {
        t[b'A' as usize + i] = i as u8;
        t[b'a' as usize + i] = 26 + i as u8;
        i += 1;
    }
    let mut d = 0;
    while d < 10 {
        t[b'0' as usize + d] = 52 + d as u8;
        d += 1;
    }
    t[b'+' as usize] = 62;
    t[b'-' as usize] = 62;
    t[b'/' as usize] = 63;
    t[b'_' as usize] = 63;
    t
};

/// Call `f(start, len)` for every maximal base64-alphabet run of `min` bytes or more.
#[inline(always)]
pub(super) fn base64_runs(data: &[u8], min: usize, f: impl FnMut(usize, usize)) {
    class_runs(data, min, is_b64_digit, f);
}

/// A base64 digit of either alphabet, without a table (so that a block is tested
/// vectorized): the bytes [`B64`] has a value for.
fn is_b64_digit(b: u8) -> bool {
    ((b | 0x20).wrapping_sub(b'a') < 26)
        | (b.wrapping_sub(b'0') < 10)
        | (b == b'+')
        | (b == b'-')
        | (b == b'/')
        | (b == b'_')
}

/// A hex digit, without a table.
fn is_hex_digit(b: u8) -> bool {
    (b.wrapping_sub(b'0') < 10) | ((b | 0x20).wrapping_sub(b'a') < 6)
}

/// Call `f(start, len)` for every maximal run of hex digits of `min` or more in `run`.
#[inline(always)]
pub(super) fn hex_runs(run: &[u8], min: usize, f: impl FnMut(usize, usize)) {
    class_runs(run, min, is_hex_digit, f);
}

/// Call `f(start, len)` for every maximal run of `min` or more bytes of `run` in
/// `class` (found 64 bytes at a time, [`crate::byteset`]).
#[inline(always)]
pub(super) fn class_runs(
    run: &[u8],
    min: usize,
    class: impl ByteSet,
    mut f: impl FnMut(usize, usize),
) {
    if min == 0 {
        return;
    }
    byteset::runs(class, run, 0, min, |s, e| {
        f(s, e - s);
        false
    });
}

/// Call `f(start, len)` for every maximal run of `min` or more base32 digits (RFC 4648)
/// in `run`, all of one case: `[A-Z2-7]` or `[a-z2-7]` (an encoder writes one case, and
/// a run of mixed-case letters is base64 or prose). Runs of either case may overlap on
/// their digits.
#[inline(always)]
pub(super) fn base32_runs(run: &[u8], min: usize, mut f: impl FnMut(usize, usize)) {
    class_runs(
        run,
        min,
        |c: u8| (c.wrapping_sub(b'A') < 26) | (c.wrapping_sub(b'2') < 6),
        &mut f,
    );
    class_runs(
        run,
        min,
        |c: u8| (c.wrapping_sub(b'a') < 26) | (c.wrapping_sub(b'2') < 6),
        &mut f,
    );
}

/// Decode base32 digits (either case, no padding; trailing bits that do not fill a byte
/// are dropped) into `out`. `run` holds only base32 digits.
pub(super) fn decode_base32(run: &[u8], out: &mut Vec<u8>) {
    out.reserve(run.len() * 5 / 8 + 1);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in run {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return,
        };
        acc = (acc << 5 | u32::from(v)) & 0x1FFF;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
}

/// Per base64 digit: bit 0 when it can start a quad of three text bytes (`b0 >> 2`
/// of a tab, a line break or printable ASCII), bit 1 when it can be the second digit
/// (`b1 >> 4` is 0 or 2..=7), bit 2 when it can be the third (`b2 >> 6` is 0 or 1).
const QUAD_TEXT: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let v = B64[c];
        if v != INVALID {
            if v == 2 || v == 3 || (v >= 8 && v < 32) {
                t[c] |= 1;
            }
            let lo = v & 15;
            if lo == 0 || (lo >= 2 && lo <= 7) {
                t[c] |= 2;
            }
            if v & 3 < 2 {
                t[c] |= 4;
            }
        }
        c += 1;
    }
    t
};

/// Can the quad at `q` of `run` (4 digits, or the 2-3 that end it) decode to text?
fn quad_may_be_text(run: &[u8], q: usize) -> bool {
    let m = |i: usize, bit: u8| {
        run.get(q + i)
            .is_none_or(|&c| QUAD_TEXT[c as usize] & bit != 0)
    };
    // All three looked up, not one after another: on random digits (an image) each
    // test passes about half the time, and a branch on each mispredicted as often.
    (q + 2 <= run.len()) & m(0, 1) & m(1, 2) & m(2, 4)
}

/// Call `f(start, end)`, at alignment `align` of a base64 `run`, for every stretch of
/// quads that may decode to [`TEXTY_MIN`] bytes of text (five quads in a row pass
/// [`quad_may_be_text`]), widened by a quad each side. Only every fifth quad is looked
/// at where no such stretch can be: random data (an image) is skipped, never decoded.
pub(super) fn text_quads(run: &[u8], align: usize, mut f: impl FnMut(usize, usize)) {
    // Sixteen bytes of text, wherever they start, cover five whole quads.
    const NEED: usize = 5;
    let n = run.len();
    let mut q = align;
    loop {
        let probe = q + 4 * (NEED - 1);
        if probe + 2 > n {
            return;
        }
        if !quad_may_be_text(run, probe) {
            q = probe + 4;
            continue;
        }
        let mut j = probe;
        while j > q && quad_may_be_text(run, j - 4) {
            j -= 4;
        }
        if j > q {
            q = j;
            continue;
        }
        let mut e = probe + 4;
        while quad_may_be_text(run, e) {
            e += 4;
        }
        f(q.saturating_sub(4).max(align), (e + 4).min(n));
        q = e + 4;
    }
}

/// Decode base64 leniently (either alphabet, no padding needed, a partial last quad
/// gives what it holds) into `out`. `run` holds only alphabet bytes.
pub(super) fn decode_base64(run: &[u8], out: &mut Vec<u8>) {
    out.reserve(run.len() / 4 * 3 + 3);
    let mut quads = run.chunks_exact(4);
    for q in &mut quads {
        let v = u32::from(B64[q[0] as usize]) << 18
            | u32::from(B64[q[1] as usize]) << 12
            | u32::from(B64[q[2] as usize]) << 6
            | u32::from(B64[q[3] as usize]);
        out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
    }
    let rest = quads.remainder();
    if rest.len() >= 2 {
        let mut v = 0u32;
        for (k, &c) in rest.iter().enumerate() {
            v |= u32::from(B64[c as usize] & 63) << (18 - 6 * k);
        }
        out.push((v >> 16) as u8);
        if rest.len() == 3 {
            out.push((v >> 8) as u8);
        }
    }
}

/// Decode an even-length run of hex digits into `out`.
pub(super) fn decode_hex(run: &[u8], out: &mut Vec<u8>) {
    let even = &run[..run.len() & !1];
    let start = out.len();
    out.resize(start + even.len() / 2, 0);
    if hex::decode_to_slice(even, &mut out[start..]).is_err() {
        out.truncate(start);
    }
}

/// Call `f(first, units)` for every stretch of [`TEXTY_MIN`] or more UTF-16 code units
/// of ASCII text, little- or big-endian alike: text bytes with a zero byte between each
/// two (`t\0t\0t` or `\0t\0t`), the text bytes at `first`, `first + 2`, ... Found from
/// the zero bytes (`memchr`), so text without any costs one fast pass.
pub(super) fn utf16_runs(data: &[u8], mut f: impl FnMut(usize, usize)) {
    let n = data.len();
    let mut done = 0;
    for z in memchr::memchr_iter(0, data) {
        if z < done {
            continue;
        }
        // Text before the first zero (little-endian) or only after it (big-endian).
        let first = if z > done && is_text(data[z - 1]) {
            z - 1
        } else {
            z + 1
        };
        let mut next = first;
        while next < n && is_text(data[next]) && (next == first || data[next - 1] == 0) {
            next += 2;
        }
        let units = (next - first) / 2;
        if units >= TEXTY_MIN {
            f(first, units);
        }
        done = next.max(z + 1);
    }
}

fn is_text(b: u8) -> bool {
    (0x20..0x7F).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r')
}

/// Call `f(start, end)` for every maximal run of [`TEXTY_MIN`] or more bytes of
/// printable ASCII, tabs and line breaks in `data`. Random bytes (a wrong alignment,
/// an image) almost never hold one; decoded text always does. Such a run always
/// covers an aligned 8-byte block of text, so blocks are tested first, without a
/// branch per byte (random data would mispredict every other one).
pub(super) fn texty_regions(data: &[u8], mut f: impl FnMut(usize, usize)) {
    let n = data.len();
    let mut done = 0;
    let mut blk = 0;
    while blk + 8 <= n {
        let all = data[blk..blk + 8].iter().fold(true, |a, &b| a & is_text(b));
        if !all {
            blk += 8;
            continue;
        }
        let mut s = blk;
        while s > done && is_text(data[s - 1]) {
            s -= 1;
        }
        let mut e = blk + 8;
        while e < n && is_text(data[e]) {
            e += 1;
        }
        if e - s >= TEXTY_MIN {
            f(s, e);
        }
        done = e;
        blk = e.div_ceil(8) * 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The predicates (comparisons, for vectorized masks) take the bytes of the
    /// tables and of the standard tests.
    #[test]
    fn digit_predicates_are_the_tables() {
        for c in 0..=255u8 {
            assert_eq!(is_b64_digit(c), B64[usize::from(c)] != INVALID, "{c}");
            assert_eq!(is_hex_digit(c), c.is_ascii_hexdigit(), "{c}");
        }
    }
}
