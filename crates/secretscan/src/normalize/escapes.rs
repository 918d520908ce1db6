//! Finding escapes in a text: `%XX` (and `+` in form bodies), quoted-printable `=XX`
//! and soft line breaks, backslash escapes (`\uXXXX` with surrogate pairs, `\u{X}`,
//! `\xNN`, octal, `\n`, `\"`, `\/` ...), HTML character references, and Unicode
//! characters that NFKC folds or that are invisible.
//!
//! Each escape records what it decodes to and whether it is *strong*: whether its
//! output can form part of a rule keyword (an ASCII letter or digit, `_-./+=`, or a
//! character that folds to one, or a removal between two such bytes). Only strong
//! escapes can make a keyword appear; a weak one (a space, a quote, a newline) matters
//! only near a keyword that is already there, which is how the caller keeps the common
//! escapes of JSON and URLs from costing a second scan of the whole text.

use memchr::{memchr, memchr2};

use super::unicode::{fold, is_invisible};
use crate::byteset;

/// The escape families, each decoded into a view of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Percent,
    /// Percent plus `+` for a space (`application/x-www-form-urlencoded`).
    Form,
    QuotedPrintable,
    Backslash,
    Html,
    Unicode,
}

impl Kind {
    pub(super) const ALL: [Kind; 6] = [
        Kind::Percent,
        Kind::Form,
        Kind::QuotedPrintable,
        Kind::Backslash,
        Kind::Html,
        Kind::Unicode,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Percent => "percent",
            Kind::Form => "form",
            Kind::QuotedPrintable => "qp",
            Kind::Backslash => "escape",
            Kind::Html => "html",
            Kind::Unicode => "unicode",
        }
    }

    /// The most source bytes one attempt at an escape consumes (`&#x10FFFF;`, a
    /// surrogate pair `\uD83D\uDE00`): an escape never covers a place with no trigger
    /// byte this far before it.
    fn longest(self) -> usize {
        match self {
            Kind::Percent | Kind::Form | Kind::QuotedPrintable => 3,
            Kind::Unicode => 4,
            Kind::Html => 10,
            Kind::Backslash => 12,
        }
    }

    /// A byte an escape of this kind starts with.
    fn trigger(self, b: u8) -> bool {
        match self {
            Kind::Percent => b == b'%',
            Kind::Form => b == b'%' || b == b'+',
            Kind::QuotedPrintable => b == b'=',
            Kind::Backslash => b == b'\\',
            Kind::Html => b == b'&',
            Kind::Unicode => b >= 0x80,
        }
    }

    /// The most source bytes one decoded byte can come from (for weak escapes): how
    /// much farther apart two places can be in the source than in the decoded text.
    pub(super) fn shrink(self) -> usize {
        match self {
            Kind::Percent | Kind::Form | Kind::QuotedPrintable => 3,
            Kind::Unicode => 4,
            Kind::Backslash | Kind::Html => 10,
        }
    }
}

/// One escape: `len` source bytes at `pos` decode to `bytes[dec..dec + dec_len]`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Esc {
    pub pos: usize,
    pub len: usize,
    pub dec: usize,
    pub dec_len: usize,
    pub strong: bool,
}

/// The escapes of one kind in a text, in order, not overlapping.
#[derive(Default, Debug)]
pub(super) struct Escapes {
    pub list: Vec<Esc>,
    pub bytes: Vec<u8>,
    keep: Keep,
    /// Does an escape listed decode to one byte that leads a UTF-8 sequence?
    leads: bool,
}

/// Which of the escapes found are listed: all, or (for the input as given, where a
/// JSON body or a form holds tens of thousands of weak escapes and only those in the
/// islands are used) fewer. The text is parsed the same way in every case, so an
/// escape that is listed is the same escape with the same strength as in the full
/// list.
#[derive(Default, Debug)]
pub(super) enum Keep {
    #[default]
    All,
    /// Every escape that can be strong (strong as decoded, or a byte of a UTF-8
    /// sequence, which its group can make strong) and every escape starting inside
    /// one of the spans (sorted, disjoint): the anchors of the islands are all there,
    /// with the strength the full list gives them.
    Anchors(Within),
    /// The escapes starting inside one of the spans (the islands), and only they;
    /// parsing jumps over the text between them (see [`Escapes::resume`]).
    Inside(Within),
}

/// Sorted, disjoint intervals asked about positions in ascending order.
#[derive(Debug)]
pub(super) struct Within {
    spans: Vec<(usize, usize)>,
    at: usize,
}

impl Within {
    pub(super) fn new(spans: Vec<(usize, usize)>) -> Self {
        Within { spans, at: 0 }
    }

    /// Is `p` in one of the intervals? `p` never decreases from one call to the next.
    pub(super) fn contains(&mut self, p: usize) -> bool {
        while self.spans.get(self.at).is_some_and(|&(_, e)| e <= p) {
            self.at += 1;
        }
        self.spans.get(self.at).is_some_and(|&(s, _)| s <= p)
    }
}

impl Escapes {
    /// Room for `n` escapes (most decode to one byte), so that a text dense with
    /// them (JSON, a form body) does not copy the lists as they grow.
    fn reserve(&mut self, n: usize) {
        self.list.reserve(n);
        self.bytes.reserve(n);
    }

    #[inline(always)]
    fn push(&mut self, pos: usize, len: usize, dec: &[u8], strong: bool) {
        let listed = match &mut self.keep {
            Keep::All => true,
            Keep::Anchors(near) => strong || matches!(dec, [b] if *b >= 0x80) || near.contains(pos),
            Keep::Inside(islands) => islands.contains(pos),
        };
        if !listed {
            return;
        }
        self.list.push(Esc {
            pos,
            len,
            dec: self.bytes.len(),
            dec_len: dec.len(),
            strong,
        });
        match dec {
            [b] => {
                self.bytes.push(*b);
                self.leads |= *b >= 0xC2;
            }
            _ => self.bytes.extend_from_slice(dec),
        }
    }

    fn push_char(&mut self, pos: usize, len: usize, c: char) {
        let mut buf = [0u8; 4];
        self.push(pos, len, c.encode_utf8(&mut buf).as_bytes(), strong_char(c));
    }

    /// Where the parse of `kind` at `i` goes on: `i`, or with [`Keep::Inside`] the
    /// place before the next island from which parsing finds the escapes the full
    /// parse finds (no trigger byte within [`Kind::longest`] before it, so no attempt
    /// at an escape covers it); `None` once past the last island.
    fn resume(&mut self, kind: Kind, data: &[u8], i: usize) -> Option<usize> {
        let Keep::Inside(islands) = &mut self.keep else {
            return Some(i);
        };
        while islands.spans.get(islands.at).is_some_and(|&(_, e)| e <= i) {
            islands.at += 1;
        }
        let &(lo, _) = islands.spans.get(islands.at)?;
        let mut q = lo;
        while q > i {
            let from = q.saturating_sub(kind.longest() - 1).max(i);
            match data[from..q].iter().rposition(|&b| kind.trigger(b)) {
                Some(r) => q = from + r,
                None => return Some(q),
            }
        }
        Some(i)
    }

    pub(super) fn decoded(&self, e: &Esc) -> &[u8] {
        &self.bytes[e.dec..e.dec + e.dec_len]
    }
}

/// Can this byte be part of a rule keyword or of an encoded secret's alphabet?
pub(super) fn key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b'+' | b'=')
}

fn strong_char(c: char) -> bool {
    if c.is_ascii() {
        return key_byte(c as u8);
    }
    if is_invisible(c) {
        return true;
    }
    let mut out = Vec::new();
    fold(c, &mut out) && out.iter().copied().any(key_byte)
}

/// Hex digit values; 0xFF for other bytes.
const HEX: [u8; 256] = {
    let mut t = [0xFF; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

fn hex_val(b: u8) -> Option<u8> {
    let v = HEX[usize::from(b)];
    (v != 0xFF).then_some(v)
}

/// `data[at..at + n]` as a hex number, when all `n` bytes are hex digits.
fn hex_num(data: &[u8], at: usize, n: usize) -> Option<u32> {
    let digits = data.get(at..at.checked_add(n)?)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc << 4 | u32::from(hex_val(b)?)))
}

/// `data[at..at + 2]` as a byte, when both are hex digits (`%XX`, `=XX`).
fn hex_byte(data: &[u8], at: usize) -> Option<u8> {
    let (&h, &l) = (data.get(at)?, data.get(at + 1)?);
    let (h, l) = (HEX[usize::from(h)], HEX[usize::from(l)]);
    (h != 0xFF && l != 0xFF).then_some(h << 4 | l)
}

/// Where a strong escape of `kind` can start in `data`, for the kinds where that is
/// a few two-byte patterns: `\/`, `\u`, `\x` and octal (`\0`-`\3`) among backslash
/// escapes (`\n`, `\"` and the rest decode to no key byte), `&#` among HTML
/// references (the named ones decode to none). Found with one vectorized search, so
/// that the escapes of a JSON body need not all be parsed to find its few strong ones.
/// A backslash pattern can start where the parse sees no escape (`\\u`); the parse
/// decides. `None` for the other kinds.
pub(super) fn strong_starts(kind: Kind, data: &[u8]) -> Option<Vec<usize>> {
    use memchr::memmem::Finder;
    use std::sync::OnceLock;
    type Finders = Vec<Finder<'static>>;
    static HTML: OnceLock<Finders> = OnceLock::new();
    let made = |patterns: &[&[u8]]| -> Finders {
        patterns
            .iter()
            .map(|p| Finder::new(p).into_owned())
            .collect()
    };
    let (trigger, finders) = match kind {
        Kind::Backslash => return Some(backslash_starts(data)),
        Kind::Html => (b'&', HTML.get_or_init(|| made(&[b"&#"]))),
        _ => return None,
    };
    // One pair search (both bytes at once); text without the first byte (code,
    // prose) costs one `memchr`.
    let Some(first) = memchr(trigger, data) else {
        return Some(Vec::new());
    };
    let mut starts: Vec<usize> = finders
        .iter()
        .flat_map(|f| f.find_iter(&data[first..]).map(move |s| first + s))
        .collect();
    starts.sort_unstable();
    Some(starts)
}

/// Where a strong backslash escape can start: a `\` before `/`, `u`, `x` or `0`-`3`,
/// every such pair in order. One pass over the pairs of bytes, 64 at a time without
/// a branch (vectorized), walked only where one is: a JSON body's backslashes (`\n`,
/// `\"`, one every few bytes of escaped code) cost no call each, where a search a
/// pattern (`memmem`) went over the text once for each of the seven.
pub(super) fn backslash_starts(data: &[u8]) -> Vec<usize> {
    let pair = |x: u8, y: u8| {
        u8::from(x == b'\\')
            & (u8::from(y == b'/')
                | u8::from(y == b'u')
                | u8::from(y == b'x')
                | u8::from(y.wrapping_sub(b'0') < 4))
    };
    let mut out = Vec::new();
    // Text without a backslash (code, prose) costs one `memchr`.
    let Some(mut i) = memchr(b'\\', data) else {
        return out;
    };
    // Blocks of 64 pairs (65 bytes, a fixed size: no bounds checks, vectorized),
    // then the pairs left a byte at a time. After a block without a backslash the
    // next one is found by `memchr` (an image or a form has none: no pair starts
    // before it).
    while let Some(block) = data.get(i..i + 65) {
        let block: &[u8; 65] = block.try_into().expect("65 bytes");
        let (pairs, slashes) = (0..64).fold((0u8, 0u8), |(f, b), k| {
            (
                f | pair(block[k], block[k + 1]),
                b | u8::from(block[k] == b'\\'),
            )
        });
        if pairs != 0 {
            out.extend((i..i + 64).filter(|&p| pair(data[p], data[p + 1]) != 0));
        }
        i += 64;
        if slashes == 0 {
            match memchr(b'\\', &data[i..]) {
                Some(o) => i += o,
                None => return out,
            }
        }
    }
    out.extend((i..data.len().saturating_sub(1)).filter(|&p| pair(data[p], data[p + 1]) != 0));
    out
}

/// Every escape of `kind` in `data` (what the short lists are tested against).
#[cfg(test)]
pub(super) fn find(kind: Kind, data: &[u8]) -> Escapes {
    find_kept(kind, data, Keep::All)
}

/// The escapes of `kind` in `data` that `keep` lists. Quoted-printable and Unicode
/// escapes are always listed whole (their strength depends on the whole text; they
/// are few), which holds every promise of [`Keep`].
pub(super) fn find_kept(kind: Kind, data: &[u8], keep: Keep) -> Escapes {
    let mut out = Escapes::default();
    if matches!(
        kind,
        Kind::Percent | Kind::Form | Kind::Backslash | Kind::Html
    ) {
        out.keep = keep;
    }
    // The triggers in the text, or in the spans that are listed from: as many escapes
    // at most, most of them listed (the anchors are few: not counted).
    let count = |b: u8| match &out.keep {
        Keep::All => memchr::memchr_iter(b, data).count(),
        Keep::Inside(islands) => islands
            .spans
            .iter()
            .map(|&(s, e)| memchr::memchr_iter(b, &data[s..e.min(data.len())]).count())
            .sum(),
        Keep::Anchors(_) => 0,
    };
    let n = match kind {
        Kind::Percent => count(b'%'),
        Kind::Form => count(b'%') + count(b'+'),
        Kind::QuotedPrintable => count(b'='),
        Kind::Backslash => count(b'\\'),
        Kind::Html => count(b'&'),
        Kind::Unicode => 0,
    };
    out.reserve(n);
    match kind {
        Kind::Percent => percent(data, false, &mut out),
        Kind::Form => percent(data, true, &mut out),
        Kind::QuotedPrintable => quoted_printable(data, &mut out),
        Kind::Backslash => backslash(data, &mut out),
        Kind::Html => html(data, &mut out),
        Kind::Unicode => unicode(data, &mut out),
    }
    if kind != Kind::Unicode {
        base64_context(data, &mut out);
    }
    out
}

/// `/`, `+` and `=` are strong only inside something as long as an encoded secret
/// (`QUtJ%2BQ...`): `https%3A%2F%2Fexample.com%2Fa` is not, and is left to the
/// keyword test like a space.
pub(super) fn base64_context(data: &[u8], out: &mut Escapes) {
    const RUN: usize = super::runs::BASE64_MIN;
    for e in &mut out.list {
        if !e.strong || e.dec_len != 1 || !matches!(out.bytes[e.dec], b'/' | b'+' | b'=') {
            continue;
        }
        // The context reaches `RUN` with `need` more bytes of the class: those before
        // it are walked back only that far, those after it only as far as still needed.
        let need = RUN.saturating_sub(e.len);
        let left = data[..e.pos]
            .iter()
            .rev()
            .take(need)
            .take_while(|&&b| B64_CONTEXT[usize::from(b)])
            .count();
        let need = need - left;
        let right = data
            .get(e.pos + e.len..)
            .unwrap_or_default()
            .iter()
            .take(need)
            .take_while(|&&b| B64_CONTEXT[usize::from(b)])
            .count();
        e.strong = right == need;
    }
}

/// A base64 digit, or the start of an escaped one (`%2B`, `\/`).
const B64_CONTEXT: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || matches!(c, b'%' | b'+' | b'/' | b'_' | b'-' | b'\\');
        b += 1;
    }
    t
};

/// The places of one or two trigger bytes in a text, asked in ascending order: a
/// 64-byte block's mask of them ([`crate::byteset::mask_at`]) is kept between calls,
/// so that the escapes of a form or a JSON string, a few bytes apart, cost a bit scan
/// each, where a call to `memchr` each cost more than the look; past a block without
/// one, `memchr` skips ahead (text with none, code or an image, costs one call).
pub(super) struct Triggers {
    a: u8,
    b: u8,
    /// Where the block of `mask` starts (`usize::MAX`: none yet).
    base: usize,
    mask: u64,
}

impl Triggers {
    pub(super) fn new(a: u8, b: u8) -> Triggers {
        Triggers {
            a,
            b,
            base: usize::MAX,
            mask: 0,
        }
    }

    /// The first place at or after `at` of `a` or `b` (`at` never less than at the
    /// call before).
    #[inline]
    pub(super) fn next(&mut self, data: &[u8], mut at: usize) -> Option<usize> {
        loop {
            if at >= data.len() {
                return None;
            }
            if at < self.base || at - self.base >= 64 {
                self.load(data, at);
            }
            let m = self.mask & (!0u64 << (at - self.base));
            if m != 0 {
                return Some(self.base + m.trailing_zeros() as usize);
            }
            let from = self.base + 64;
            let rest = data.get(from..)?;
            at = from
                + if self.a == self.b {
                    memchr(self.a, rest)
                } else {
                    memchr2(self.a, self.b, rest)
                }?;
            self.load(data, at);
        }
    }

    fn load(&mut self, data: &[u8], at: usize) {
        let (a, b) = (self.a, self.b);
        self.base = at;
        self.mask = byteset::mask_at(|c: u8| (c == a) | (c == b), data, at).0;
    }
}

fn percent(data: &[u8], plus: bool, out: &mut Escapes) {
    let kind = if plus { Kind::Form } else { Kind::Percent };
    let mut triggers = Triggers::new(b'%', if plus { b'+' } else { b'%' });
    let mut i = 0;
    while let Some(at) = out.resume(kind, data, i)
        && let Some(p) = triggers.next(data, at)
    {
        if data[p] == b'+' {
            out.push(p, 1, b" ", false);
            i = p + 1;
        } else if let Some(b) = hex_byte(data, p + 1) {
            out.push(p, 3, &[b], key_byte(b));
            i = p + 3;
        } else {
            i = p + 1;
        }
    }
    utf8_groups(out);
}

fn quoted_printable(data: &[u8], out: &mut Escapes) {
    let mut triggers = Triggers::new(b'=', b'=');
    let mut i = 0;
    while let Some(p) = triggers.next(data, i) {
        let soft = match data.get(p + 1..) {
            Some([b'\r', b'\n', ..]) => 3,
            Some([b'\n', ..]) => 2,
            _ => 0,
        };
        if soft > 0 {
            // A soft line break joins the lines: strong when it splits a token.
            let joins =
                p > 0 && key_byte(data[p - 1]) && data.get(p + soft).copied().is_some_and(key_byte);
            out.push(p, soft, b"", joins);
            i = p + soft;
        } else if let Some(b) = hex_byte(data, p + 1) {
            out.push(p, 3, &[b], key_byte(b));
            i = p + 3;
        } else {
            i = p + 1;
        }
    }
    // `page=42` is not quoted-printable: without a sign of real QP (a soft break, an
    // encoded `=`, two escapes in a row) an `=XX` counts as weak.
    let hallmark = out.list.windows(2).any(|w| w[0].pos + w[0].len == w[1].pos)
        || out
            .list
            .iter()
            .any(|e| e.dec_len == 0 || out.bytes[e.dec..e.dec + e.dec_len] == *b"=");
    if !hallmark {
        for e in &mut out.list {
            e.strong = false;
        }
    }
    utf8_groups(out);
}

fn backslash(data: &[u8], out: &mut Escapes) {
    let mut triggers = Triggers::new(b'\\', b'\\');
    let mut i = 0;
    while let Some(at) = out.resume(Kind::Backslash, data, i)
        && let Some(p) = triggers.next(data, at)
    {
        let Some(&next) = data.get(p + 1) else { break };
        let simple = match next {
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'v' => Some(0x0b),
            b'"' | b'\'' | b'\\' | b'/' => Some(next),
            _ => None,
        };
        let consumed = if let Some(b) = simple {
            out.push(p, 2, &[b], key_byte(b));
            2
        } else if next == b'u' {
            unicode_escape(data, p, out)
        } else if next == b'x' {
            match hex_byte(data, p + 2) {
                Some(v) => {
                    out.push(p, 4, &[v], key_byte(v));
                    4
                }
                None => 0,
            }
        } else if (b'0'..=b'3').contains(&next)
            && let Some(&[a, b]) = data.get(p + 2..p + 4)
            && (b'0'..=b'7').contains(&a)
            && (b'0'..=b'7').contains(&b)
        {
            let v = (next - b'0') << 6 | (a - b'0') << 3 | (b - b'0');
            out.push(p, 4, &[v], key_byte(v));
            4
        } else if next == b'0' {
            out.push(p, 2, &[0], false);
            2
        } else {
            0
        };
        i = p + consumed.max(1);
    }
    utf8_groups(out);
}

/// `\uXXXX` (a surrogate pair is two of them) or `\u{X..}` at `p`; bytes consumed.
fn unicode_escape(data: &[u8], p: usize, out: &mut Escapes) -> usize {
    if data.get(p + 2) == Some(&b'{') {
        let digits = data
            .get(p + 3..)
            .unwrap_or_default()
            .iter()
            .take(7)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if (1..=6).contains(&digits)
            && data.get(p + 3 + digits) == Some(&b'}')
            && let Some(c) = hex_num(data, p + 3, digits).and_then(char::from_u32)
        {
            out.push_char(p, digits + 4, c);
            return digits + 4;
        }
        return 0;
    }
    let Some(hi) = hex_num(data, p + 2, 4) else {
        return 0;
    };
    if let Some(c) = char::from_u32(hi) {
        out.push_char(p, 6, c);
        return 6;
    }
    if (0xD800..0xDC00).contains(&hi)
        && data.get(p + 6..p + 8) == Some(b"\\u")
        && let Some(lo) = hex_num(data, p + 8, 4)
        && (0xDC00..0xE000).contains(&lo)
        && let Some(c) = char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))
    {
        out.push_char(p, 12, c);
        return 12;
    }
    0
}

fn html(data: &[u8], out: &mut Escapes) {
    const NAMED: [(&[u8], &[u8]); 6] = [
        (b"&amp;", b"&"),
        (b"&lt;", b"<"),
        (b"&gt;", b">"),
        (b"&quot;", b"\""),
        (b"&apos;", b"'"),
        (b"&nbsp;", b" "),
    ];
    // The second bytes of the names, lower case: a form's `&page=` or `&lang=` is
    // compared with a name only when its second byte starts one.
    const NAMED_SECOND: [bool; 256] = {
        let mut t = [false; 256];
        let mut k = 0;
        while k < NAMED.len() {
            t[NAMED[k].0[1] as usize] = true;
            k += 1;
        }
        t
    };
    let mut triggers = Triggers::new(b'&', b'&');
    let mut i = 0;
    while let Some(at) = out.resume(Kind::Html, data, i)
        && let Some(p) = triggers.next(data, at)
    {
        let rest = &data[p..];
        let mut consumed = 0;
        if rest.get(1) == Some(&b'#') {
            let (start, radix, max) = match rest.get(2) {
                Some(b'x' | b'X') => (3, 16, 6),
                _ => (2, 10, 7),
            };
            let digits = rest
                .get(start..)
                .unwrap_or_default()
                .iter()
                .take(max + 1)
                .take_while(|b| {
                    if radix == 16 {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count();
            if (1..=max).contains(&digits)
                && rest.get(start + digits) == Some(&b';')
                && let Ok(s) = std::str::from_utf8(&rest[start..start + digits])
                && let Ok(v) = u32::from_str_radix(s, radix)
                && let Some(c) = char::from_u32(v).filter(|&c| c != '\0')
            {
                out.push_char(p, start + digits + 1, c);
                consumed = start + digits + 1;
            }
        } else if rest
            .get(1)
            .is_some_and(|&b| NAMED_SECOND[usize::from(b.to_ascii_lowercase())])
            && let Some((name, dec)) = NAMED
                .iter()
                .find(|(n, _)| rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n))
        {
            out.push(p, name.len(), dec, false);
            consumed = name.len();
        }
        i = p + consumed.max(1);
    }
}

/// The first place at or after `i` of a byte that is not ASCII (or the end): four
/// words at a time, then a word, then a byte.
pub(super) fn skip_ascii(data: &[u8], mut i: usize) -> usize {
    const HI: u64 = 0x8080_8080_8080_8080;
    let word = |w: &[u8]| u64::from_ne_bytes(w.try_into().expect("8 bytes"));
    while let Some(block) = data.get(i..i + 32) {
        if block.chunks_exact(8).fold(0, |acc, w| acc | word(w)) & HI != 0 {
            break;
        }
        i += 32;
    }
    while let Some(w) = data.get(i..i + 8) {
        if word(w) & HI != 0 {
            break;
        }
        i += 8;
    }
    while i < data.len() && data[i] < 0x80 {
        i += 1;
    }
    i
}

fn unicode(data: &[u8], out: &mut Escapes) {
    let mut i = 0;
    let mut folded = Vec::new();
    while i < data.len() {
        i = skip_ascii(data, i);
        if i >= data.len() {
            break;
        }
        let width = match data[i] {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => {
                i += 1;
                continue;
            }
        };
        let Some(c) = data
            .get(i..i + width)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.chars().next())
        else {
            i += 1;
            continue;
        };
        if is_invisible(c) {
            out.push(i, width, b"", false);
        } else {
            folded.clear();
            if fold(c, &mut folded) {
                let strong = folded.iter().copied().any(key_byte);
                out.push(i, width, &folded, strong);
            }
        }
        i += width;
    }
    // A run of invisible characters is strong when it splits a token: `AK<ZWSP>IA`.
    let mut k = 0;
    while k < out.list.len() {
        if out.list[k].dec_len != 0 {
            k += 1;
            continue;
        }
        let mut end = k + 1;
        while end < out.list.len()
            && out.list[end].dec_len == 0
            && out.list[end].pos == out.list[end - 1].pos + out.list[end - 1].len
        {
            end += 1;
        }
        let first = out.list[k].pos;
        let last = out.list[end - 1].pos + out.list[end - 1].len;
        // The neighbours: an ASCII key byte, or a character folded to one.
        let before = first > 0
            && (key_byte(data[first - 1])
                || k > 0
                    && out.list[k - 1].strong
                    && out.list[k - 1].pos + out.list[k - 1].len == first);
        let after = data.get(last).is_some_and(|&b| key_byte(b))
            || out.list.get(end).is_some_and(|e| e.strong && e.pos == last);
        let joins = before && after;
        for e in &mut out.list[k..end] {
            e.strong = joins;
        }
        k = end;
    }
}

/// The strength of each escape of `e` with its UTF-8 groups judged again whether or
/// not one leads a sequence (what the skip without one is tested against).
#[cfg(test)]
pub(super) fn regrouped(e: &Escapes) -> Vec<bool> {
    let mut all = Escapes {
        list: e.list.clone(),
        bytes: e.bytes.clone(),
        leads: true,
        ..Escapes::default()
    };
    utf8_groups(&mut all);
    all.list.iter().map(|x| x.strong).collect()
}

/// A UTF-8 character written as several byte escapes (`%EF%BC%A1`, `\xef\xbc\xa1`):
/// its escapes are as strong as the character.
fn utf8_groups(out: &mut Escapes) {
    // Without an escape that leads a sequence (most texts) there is no group.
    if !out.leads {
        return;
    }
    let mut k = 0;
    while k < out.list.len() {
        let e = out.list[k];
        let lead = if e.dec_len == 1 { out.bytes[e.dec] } else { 0 };
        let width = match lead {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => {
                k += 1;
                continue;
            }
        };
        let group = out.list.get(k..k + width).unwrap_or_default();
        let adjacent = group.len() == width
            && group.windows(2).all(|w| w[0].pos + w[0].len == w[1].pos)
            && group.iter().all(|g| g.dec_len == 1);
        if adjacent {
            let bytes: Vec<u8> = group.iter().map(|g| out.bytes[g.dec]).collect();
            if let Some(c) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.chars().next())
            {
                let strong = strong_char(c);
                for g in &mut out.list[k..k + width] {
                    g.strong = strong;
                }
                k += width;
                continue;
            }
        }
        k += 1;
    }
}
