//! Where a match of a rule can start, read from its regex: the bytes a match can
//! start with, and whether it starts at an ASCII word boundary (`(?-u:\b)` before
//! anything else). A keywordless rule runs over every segment of the stream; its
//! segment gate ([`crate::validators::Shapes`]) says whether a segment holds the shape
//! of a value its validator accepts *somewhere*, and [`Lead::starts_in`] says whether
//! such a value can *start* where the regex can start a match. In random base64 (an
//! image in a JSON body) every segment holds 25 letters and digits in a row, but almost
//! none holds a `5`, `K` or `L` after a `+` or `/` with 50 more base58 digits after it,
//! so the Bitcoin and card regexes no longer run over images.
//!
//! Both facts are necessary conditions of a match, computed from the parsed regex
//! (`regex-syntax`'s HIR), so a gate built from them never hides a match: a byte set
//! that cannot be computed is "any byte", a boundary that is not certain is not
//! required.

use regex::bytes::{Regex, RegexBuilder};
use regex_syntax::hir::{Class, Hir, HirKind, Look};

use crate::byteset::{self, ByteSet};
use crate::validators::{Validator, WithRun};

/// What every match of a rule's regex starts with, and the run of bytes its
/// validator's value starts.
#[derive(Clone, Debug)]
pub(crate) struct Lead {
    /// `bytes[b]`: a match can start with byte `b`.
    bytes: [bool; 256],
    /// A match starts at an ASCII word boundary.
    boundary: bool,
    /// The rule's validator, when the secret is the whole match (its shape starts
    /// where the match starts).
    validator: Option<Validator>,
    /// The run such a value lies in, from its first byte ([`Validator::run`]).
    run: Option<Run>,
    /// When the secret is the whole match, every match starts at a boundary and holds
    /// only word characters, or bytes of non-ASCII characters too (then `wide`), and
    /// the regex looks at nothing but ASCII word boundaries: the regex anchored at the
    /// start of its haystack (see [`Lead::anchored`]).
    anchored: Option<Regex>,
    wide: bool,
}

/// The run of the validator's set a value lies in ([`Validator::run`]: the set and
/// its least length).
#[derive(Clone, Debug)]
struct Run {
    /// The run is of word characters, and so is every byte a match can start with,
    /// and a match starts at a boundary: only a run's first byte can start one.
    first_only: bool,
}

/// The ASCII word characters of `(?-u:\b)`.
fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Does `set` hold word characters only?
fn only_words(set: impl Fn(u8) -> bool) -> bool {
    (0u8..=255).all(|b| !set(b) || is_word(b))
}

impl Lead {
    /// The lead of `pattern` (the regex of a rule with `validator`; `whole`: its
    /// secret is the whole match), or None when it cannot be parsed (the rule's regex
    /// compiled, so this does not happen) or a match can be empty.
    pub(crate) fn of(pattern: &str, validator: Option<Validator>, whole: bool) -> Option<Lead> {
        let hir = regex_syntax::ParserBuilder::new()
            .utf8(false)
            .build()
            .parse(pattern)
            .ok()?;
        let mut bytes = [false; 256];
        if first_bytes(&hir, &mut bytes) {
            // A match can be empty: it can start anywhere.
            return None;
        }
        let boundary = hir.properties().look_set_prefix().contains(Look::WordAscii);
        let mut inside = [false; 256];
        match_bytes(&hir, &mut inside);
        let other = |b: usize| inside[b] && !is_word(b as u8);
        let words = whole
            && boundary
            && (0..0x80).all(|b| !other(b))
            && hir
                .properties()
                .look_set()
                .iter()
                .all(|l| l == Look::WordAscii);
        let wide = (0x80..0x100).any(other);
        let anchored = words
            .then(|| {
                RegexBuilder::new(&format!("^(?:{pattern})"))
                    .size_limit(1 << 22)
                    .build()
                    .ok()
            })
            .flatten();
        let validator = validator.filter(|_| whole);
        /// Does the run hold word characters only?
        struct Words;
        impl WithRun for Words {
            type Out = bool;
            fn with(self, set: impl ByteSet, _: usize) -> bool {
                only_words(set)
            }
        }
        let starts_words = only_words(|b| bytes[usize::from(b)]);
        let run = validator.and_then(|v| v.run(Words)).map(|words| Run {
            first_only: boundary && starts_words && words,
        });
        Some(Lead {
            bytes,
            boundary,
            validator,
            run,
            anchored,
            wide,
        })
    }

    /// The rule's regex anchored at the start of its haystack, when the matches of
    /// the rule's regex in `hay` are the matches it finds in `hay[p..]` at each `p`
    /// that [`Lead::each_start`] gives, one after another. So they are when every match
    /// starts at a word boundary and holds only word characters (in `hay`: for a rule
    /// whose classes take non-ASCII letters, `(?i)k` is also the Kelvin sign, only when
    /// `hay` is ASCII): no match holds a place where another can start (inside a match
    /// every byte follows a word character, and a match starts after one that is
    /// not), so the regex's iteration over `hay` finds, at each place a match can
    /// start, the match that starts there; a place where a match can start but no
    /// value of the validator's shape can is skipped, as its match, if any, is judged
    /// to no finding and hides no other. The boundary at `p` is the same in `hay[p..]`
    /// (where the regex sees none before it) as in `hay` ([`Lead::each_start`] gives
    /// only places where the regex can start a match: after a byte that is no word
    /// character), and the regex looks at nothing else before a match.
    pub(crate) fn anchored(&self, hay: &[u8]) -> Option<&Regex> {
        self.anchored
            .as_ref()
            .filter(|_| !self.wide || hay.is_ascii())
    }

    /// Can a match start at `hay[p]` (the regex sees `hay`, so `hay[p - 1]` is the
    /// byte its `\b` looks at)?
    fn can_start(&self, hay: &[u8], p: usize) -> bool {
        let b = hay[p];
        self.bytes[usize::from(b)]
            && (!self.boundary || (p > 0 && is_word(hay[p - 1])) != is_word(b))
    }

    /// Can a match start at `p` and hold a value of the validator's shape there?
    fn fits(&self, hay: &[u8], p: usize) -> bool {
        self.can_start(hay, p) && self.validator.is_none_or(|v| v.starts_at(&hay[p..]))
    }

    /// Can a match that the rule's validator accepts start at some `p` in `from..to`
    /// of `hay` (the haystack the rule's regex runs over)?
    pub(crate) fn starts_in(&self, hay: &[u8], from: usize, to: usize) -> bool {
        let mut found = false;
        self.each_start(hay, from, to, |_| {
            found = true;
            true
        });
        found
    }

    /// Call `f(p)` for each `p` in `from..to`, in order, where a match that the rule's
    /// validator accepts can start, until `f` returns true.
    pub(crate) fn each_start(
        &self,
        hay: &[u8],
        from: usize,
        to: usize,
        mut f: impl FnMut(usize) -> bool,
    ) {
        let to = to.min(hay.len());
        let Some(run) = &self.run else {
            for p in from..to {
                if self.fits(hay, p) && f(p) {
                    return;
                }
            }
            return;
        };
        // The value lies in a run of the validator's set at least `min` long that
        // starts at or before it: only such runs are looked at (found 64 bytes at a
        // time, `byteset`, the set's own copy of the search).
        struct Each<'l, 'h, F> {
            lead: &'l Lead,
            run: &'l Run,
            hay: &'h [u8],
            from: usize,
            to: usize,
            f: F,
        }
        impl<F: FnMut(usize) -> bool> WithRun for Each<'_, '_, F> {
            type Out = ();
            #[inline(always)]
            fn with(mut self, set: impl ByteSet, min: usize) {
                let (lead, run, hay, from, to) =
                    (self.lead, self.run, self.hay, self.from, self.to);
                byteset::runs(set, hay, from.saturating_sub(min), min, |rs, re| {
                    if rs >= to {
                        return true;
                    }
                    // Inside a run of word characters no position after its first is
                    // at a boundary (its byte before is a word character too).
                    let last = if run.first_only { rs + 1 } else { re + 1 - min };
                    (rs.max(from)..last.min(to)).any(|p| lead.fits(hay, p) && (self.f)(p))
                });
            }
        }
        let validator = self.validator.expect("a run is a validator's");
        validator.run(Each {
            lead: self,
            run,
            hay,
            from,
            to,
            f,
        });
    }
}

/// Add the bytes of class `c` to `set` (a non-ASCII class: every byte from 0x80, as
/// a UTF-8 lead byte or a continuation byte is not worth narrowing).
fn class_bytes(c: &Class, set: &mut [bool; 256]) {
    match c {
        Class::Bytes(c) => {
            for r in c.ranges() {
                for b in r.start()..=r.end() {
                    set[usize::from(b)] = true;
                }
            }
        }
        Class::Unicode(c) => {
            for r in c.ranges() {
                let (s, e) = (u32::from(r.start()), u32::from(r.end()));
                for b in s.min(0x80)..=e.min(0x7F) {
                    set[b as usize] = true;
                }
                if e >= 0x80 {
                    set[0x80..].fill(true);
                }
            }
        }
    }
}

/// Add every byte a match of `h` can hold to `set`.
fn match_bytes(h: &Hir, set: &mut [bool; 256]) {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => {}
        HirKind::Literal(lit) => {
            for &b in lit.0.iter() {
                set[usize::from(b)] = true;
            }
        }
        HirKind::Class(c) => class_bytes(c, set),
        HirKind::Repetition(r) => match_bytes(&r.sub, set),
        HirKind::Capture(c) => match_bytes(&c.sub, set),
        HirKind::Concat(subs) | HirKind::Alternation(subs) => {
            for s in subs {
                match_bytes(s, set);
            }
        }
    }
}

/// Add the bytes a match of `h` can start with to `set`; whether `h` can match the
/// empty string (then what follows it can start a match too).
fn first_bytes(h: &Hir, set: &mut [bool; 256]) -> bool {
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => true,
        HirKind::Literal(lit) => match lit.0.first() {
            Some(&b) => {
                set[usize::from(b)] = true;
                false
            }
            None => true,
        },
        HirKind::Class(c) => {
            class_bytes(c, set);
            false
        }
        HirKind::Repetition(r) => {
            let empty = first_bytes(&r.sub, set);
            empty || r.min == 0
        }
        HirKind::Capture(c) => first_bytes(&c.sub, set),
        HirKind::Concat(subs) => subs.iter().all(|s| first_bytes(s, set)),
        HirKind::Alternation(subs) => {
            let mut empty = false;
            for s in subs {
                empty |= first_bytes(s, set);
            }
            empty
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(p: &str) -> Lead {
        Lead::of(p, None, true).expect("a lead")
    }

    fn starts(l: &Lead) -> String {
        (0u8..=255)
            .filter(|&b| l.bytes[usize::from(b)])
            .map(char::from)
            .collect()
    }

    #[test]
    fn first_bytes_and_boundary() {
        let l = lead(r"(?-u:\b)[5KLc9][1-9A-HJ-NP-Za-km-z]{50,51}");
        assert_eq!(starts(&l), "59KLc");
        assert!(l.boundary);
        let l = lead(
            r"(?-u:\b)(?:[13][1-9A-HJ-NP-Za-km-z]{24,34}|(?i:(?:bc|tb)1[02-9ac-hj-np-z]{8,87}))",
        );
        assert_eq!(starts(&l), "13BTbt");
        assert!(l.boundary);
        let l = lead(r"[0-9]{13,19}|[0-9]{4}[ \-.][0-9]{4}");
        assert_eq!(starts(&l), "0123456789");
        assert!(!l.boundary);
        // Optional parts let what follows start a match.
        let l = lead(r"(?:0x)?[a-f]{4}");
        assert_eq!(starts(&l), "0abcdef");
        // A boundary in one branch only is not required.
        assert!(!lead(r"(?-u:\b)a|b").boundary);
        // Unicode `\b` is another boundary: not taken for the ASCII one.
        assert!(!lead(r"\ba").boundary);
        // A non-ASCII class lets any high byte start.
        assert!(lead(r"[a-zé]").bytes[0xC3]);
        // A regex that matches the empty string has no lead.
        assert!(Lead::of(r"a*", None, true).is_none());
    }

    #[test]
    fn boundary_is_the_regex_boundary() {
        let l = lead(r"(?-u:\b)K[a-z]");
        for (hay, p, want) in [
            (&b"Kx"[..], 0, true),
            (b"+Kx", 1, true),
            (b"aKx", 1, false),
            (b"_Kx", 1, false),
            (b"\xffKx", 1, true),
        ] {
            assert_eq!(l.can_start(hay, p), want, "{hay:?} at {p}");
        }
    }
}
