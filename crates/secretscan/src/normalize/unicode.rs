//! Unicode normalization shared by DLP and the response (prompt-injection) scanner:
//! invisible characters (Unicode's Default_Ignorable_Code_Point: zero-width spaces and
//! joiners, bidi controls, variation selectors, tags, fillers) are dropped and
//! compatibility forms (fullwidth letters, ligatures, mathematical alphanumerics,
//! non-breaking spaces) folded by NFKC.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// Default_Ignorable_Code_Point ranges (Unicode DerivedCoreProperties.txt).
const INVISIBLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// Is `c` a character that renders as nothing (and so can hide inside a token)?
pub fn is_invisible(c: char) -> bool {
    let c = c as u32;
    if c < 0xAD {
        return false;
    }
    INVISIBLE
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// The NFKC form of one character, when it differs from the character (a fullwidth
/// `Ａ` is `A`, `ﬁ` is `fi`, a non-breaking space is a space).
pub(super) fn fold(c: char, out: &mut Vec<u8>) -> bool {
    if c.is_ascii()
        || unicode_normalization::is_nfkc_quick(std::iter::once(c))
            == unicode_normalization::IsNormalized::Yes
    {
        return false;
    }
    let mut buf = [0u8; 4];
    let mut changed = false;
    let start = out.len();
    for d in std::iter::once(c).nfkc() {
        changed |= d != c;
        out.extend_from_slice(d.encode_utf8(&mut buf).as_bytes());
    }
    if !changed {
        out.truncate(start);
    }
    changed
}

/// Text for a scanner that reads words: lossy UTF-8 (invalid bytes become U+FFFD),
/// invisible characters removed, NFKC. ASCII input is returned as is, without a copy.
pub fn text(data: &[u8]) -> Cow<'_, str> {
    if data.is_ascii()
        && let Ok(s) = std::str::from_utf8(data)
    {
        return Cow::Borrowed(s);
    }
    let lossy = String::from_utf8_lossy(data);
    let visible = lossy.chars().filter(|&c| !is_invisible(c));
    Cow::Owned(visible.nfkc().filter(|&c| !is_invisible(c)).collect())
}
