//! Encoded runs: maximal runs of the base64 alphabet (standard and URL-safe together)
//! of at least [`BASE64_MIN`] bytes, and inside them runs of hex digits of at least
//! [`HEX_MIN`], found with a skip-ahead pass (only every `min`-th byte is looked at
//! where no run can be); a run is decoded at every alignment (an agent that prefixes
//! one to three characters shifts the quads). Only the text in a decoding
//! ([`texty_regions`]) is kept: a wrong alignment or a binary payload (an image) is
//! dropped unseen.

/// Shortest base64 run decoded: 18 bytes, less than any secret the rules know.
pub(super) const BASE64_MIN: usize = 24;
/// Shortest hex run decoded: 16 bytes.
pub(super) const HEX_MIN: usize = 32;
/// A decoding is kept when it holds this many printable characters in a row.
pub(super) const TEXTY_MIN: usize = 16;

use super::unicode::{fold, is_invisible};

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

fn is_b64(b: u8) -> bool {
    B64[b as usize] != INVALID
}

/// Call `f(start, len)` for every maximal base64-alphabet run of `min` bytes or more.
pub(super) fn base64_runs(data: &[u8], min: usize, mut f: impl FnMut(usize, usize)) {
    let n = data.len();
    let mut i = 0;
    // Invariant: i == 0 or data[i - 1] is outside the alphabet.
    while min > 0 && i + min <= n {
        let probe = i + min - 1;
        if !is_b64(data[probe]) {
            i = probe + 1;
            continue;
        }
        let mut j = probe;
        while j > i && is_b64(data[j - 1]) {
            j -= 1;
        }
        if j > i {
            i = j;
            continue;
        }
        let mut end = probe + 1;
        while end < n && is_b64(data[end]) {
            end += 1;
        }
        f(i, end - i);
        i = end + 1;
    }
}

/// Call `f(start, len)` for every maximal run of hex digits of `min` or more in `run`.
pub(super) fn hex_runs(run: &[u8], min: usize, mut f: impl FnMut(usize, usize)) {
    let mut i = 0;
    while i < run.len() {
        if !run[i].is_ascii_hexdigit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < run.len() && run[i].is_ascii_hexdigit() {
            i += 1;
        }
        if i - start >= min {
            f(start, i - start);
        }
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

/// Call `f(start, end)` for every maximal run of [`TEXTY_MIN`] or more text
/// characters in `data`: printable ASCII, tab and line breaks, and the non-ASCII
/// characters NFKC folds or that are invisible (a fullwidth secret). Random bytes
/// (a wrong alignment, an image) almost never hold one; decoded text always does.
pub(super) fn texty_regions(data: &[u8], mut f: impl FnMut(usize, usize)) {
    let mut start = 0;
    let mut i = 0;
    let mut chars = 0;
    let mut scratch = Vec::new();
    while i < data.len() {
        let b = data[i];
        let width = if (0x20..0x7F).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r') {
            1
        } else if b >= 0xC2 {
            let w = match b {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let special = data
                .get(i..i + w)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.chars().next())
                .is_some_and(|c| {
                    scratch.clear();
                    is_invisible(c) || fold(c, &mut scratch)
                });
            if special { w } else { 0 }
        } else {
            0
        };
        if width == 0 {
            if chars >= TEXTY_MIN {
                f(start, i);
            }
            chars = 0;
            i += 1;
            start = i;
        } else {
            chars += 1;
            i += width;
        }
    }
    if chars >= TEXTY_MIN {
        f(start, data.len());
    }
}
