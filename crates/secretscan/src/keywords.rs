//! The keyword automaton of a rule set: every occurrence of every keyword (ASCII
//! case-insensitive, overlapping ones too), in one pass over the bytes.
//!
//! A dense DFA of `regex-automata` built from the escaped keywords with
//! `MatchKind::All`, so that a state after a byte holds every keyword that ends there,
//! walked by the tight loop of [`Keywords::each`]: one table lookup and one comparison
//! a byte. (Aho-Corasick's overlapping iterator, used before, costs about three times as
//! many instructions a byte; it is the scanner's first pass over every byte of every
//! view.) Keywords are literals, so a hit's start is its end less the keyword's length.

use regex_automata::dfa::{Automaton, StartKind, dense};
use regex_automata::nfa::thompson;
use regex_automata::util::primitives::StateID;
use regex_automata::util::syntax;
use regex_automata::{Anchored, MatchKind};

/// Why the keywords cannot be compiled (a rule file with very many of them).
pub type BuildError = Box<regex_automata::dfa::dense::BuildError>;

/// The compiled keywords.
#[derive(Clone, Debug)]
pub(crate) struct Keywords {
    dfa: dense::DFA<Vec<u32>>,
    start: StateID,
    /// The keywords, by pattern id.
    patterns: Vec<String>,
    /// The bytes a keyword occurrence can hold (each keyword byte in both cases).
    bytes: [bool; 256],
    /// The shortest keyword's length.
    min_len: usize,
}

/// Bound on the DFA and on the work to build it (a few hundred short keywords take
/// well under 1 MiB).
const SIZE_LIMIT: usize = 64 << 20;

impl Keywords {
    /// Compile `patterns` (lower-case; matched ASCII case-insensitively).
    pub(crate) fn new(patterns: &[String]) -> Result<Keywords, BuildError> {
        let escaped: Vec<String> = patterns.iter().map(|p| regex::escape(p)).collect();
        let dfa = dense::Builder::new()
            .configure(
                dense::Config::new()
                    .match_kind(MatchKind::All)
                    .start_kind(StartKind::Unanchored)
                    .accelerate(false)
                    .dfa_size_limit(Some(SIZE_LIMIT))
                    .determinize_size_limit(Some(SIZE_LIMIT)),
            )
            .syntax(
                syntax::Config::new()
                    .unicode(false)
                    .utf8(false)
                    .case_insensitive(true),
            )
            .thompson(thompson::Config::new().utf8(false))
            .build_many(&escaped)
            .map_err(Box::new)?;
        let start = dfa
            .universal_start_state(Anchored::No)
            .expect("literals have no look-around: one start state");
        let mut bytes = [false; 256];
        for &b in patterns.iter().flat_map(|p| p.as_bytes()) {
            for c in [b, b.to_ascii_lowercase(), b.to_ascii_uppercase()] {
                bytes[usize::from(c)] = true;
            }
        }
        Ok(Keywords {
            dfa,
            start,
            patterns: patterns.to_vec(),
            bytes,
            min_len: patterns.iter().map(String::len).min().unwrap_or(0),
        })
    }

    /// Can byte `b` be part of an occurrence of a keyword (ASCII case-insensitively)?
    /// A byte no keyword holds in either case cannot.
    pub(crate) fn can_hold(&self, b: u8) -> bool {
        self.bytes[usize::from(b)]
    }

    /// The keywords, by pattern id.
    #[cfg(test)]
    pub(crate) fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The shortest keyword's length (0 when there are none, or an empty one).
    pub(crate) fn min_len(&self) -> usize {
        self.min_len
    }

    /// Call `f(start, end, pattern)` for every occurrence of a keyword in `hay`, in
    /// order of `end`.
    pub(crate) fn each(&self, hay: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        let dfa = &self.dfa;
        let mut report = |sid, end: usize| {
            for i in 0..dfa.match_len(sid) {
                let p = dfa.match_pattern(sid, i).as_usize();
                f(end - self.patterns[p].len(), end, p);
            }
        };
        let (mut sid, mut at) = (self.start, 0);
        while at < hay.len() {
            (sid, at) = run(dfa, sid, hay, at);
            // The only special states here are match states (no dead or quit state in
            // an unanchored search without quit bytes, no acceleration, start states
            // not specialized): a match ending before `at` (DFAs delay one byte).
            if at < hay.len() {
                if dfa.is_match_state(sid) {
                    report(sid, at);
                }
                at += 1;
            }
        }
        let sid = dfa.next_eoi_state(sid);
        if dfa.is_match_state(sid) {
            report(sid, hay.len());
        }
    }
}

/// From state `sid` at `at`: the state after the first byte that leads to a special
/// state and that byte's offset, or the state at the end and `hay.len()`. Nothing but
/// the table walk in the loop, unrolled four times.
#[inline(always)]
fn run(
    dfa: &dense::DFA<Vec<u32>>,
    mut sid: StateID,
    hay: &[u8],
    mut at: usize,
) -> (StateID, usize) {
    while at + 4 <= hay.len() {
        let s1 = dfa.next_state(sid, hay[at]);
        if dfa.is_special_state(s1) {
            return (s1, at);
        }
        let s2 = dfa.next_state(s1, hay[at + 1]);
        if dfa.is_special_state(s2) {
            return (s2, at + 1);
        }
        let s3 = dfa.next_state(s2, hay[at + 2]);
        if dfa.is_special_state(s3) {
            return (s3, at + 2);
        }
        sid = dfa.next_state(s3, hay[at + 3]);
        if dfa.is_special_state(sid) {
            return (sid, at + 3);
        }
        at += 4;
    }
    while at < hay.len() {
        sid = dfa.next_state(sid, hay[at]);
        if dfa.is_special_state(sid) {
            return (sid, at);
        }
        at += 1;
    }
    (sid, at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every occurrence, by brute force: what the automaton must report.
    fn naive(patterns: &[String], hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        for (p, k) in patterns.iter().enumerate() {
            let k = k.as_bytes();
            for s in 0..hay.len().saturating_sub(k.len() - 1) {
                if hay[s..s + k.len()].eq_ignore_ascii_case(k) {
                    out.push((s, s + k.len(), p));
                }
            }
        }
        out.sort_unstable();
        out
    }

    fn found(kw: &Keywords, hay: &[u8]) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        kw.each(hay, |s, e, p| out.push((s, e, p)));
        out.sort_unstable();
        out
    }

    #[test]
    fn overlapping_nested_and_case_insensitive() {
        let pats: Vec<String> = ["priv", "private_token", "ate_t", "a", "-----begin", "sg."]
            .map(String::from)
            .to_vec();
        let kw = Keywords::new(&pats).unwrap();
        for hay in [
            &b"PRIVATE_TOKEN=x private_token"[..],
            b"aaa",
            b"-----BEGIN RSA",
            b"SG.x sg.",
            b"",
            b"priv",
        ] {
            assert_eq!(found(&kw, hay), naive(&pats, hay), "{hay:?}");
        }
    }

    #[test]
    fn builtin_keywords_match_brute_force() {
        let rules = crate::RuleSet::builtin();
        let pats = rules.keywords.patterns.clone();
        let mut hay = Vec::new();
        for (i, p) in pats.iter().enumerate() {
            hay.extend_from_slice(p.as_bytes());
            if i % 3 == 0 {
                hay.extend_from_slice(p.to_ascii_uppercase().as_bytes());
            }
            hay.extend_from_slice(&p.as_bytes()[..p.len() / 2]);
        }
        assert_eq!(found(&rules.keywords, &hay), naive(&pats, &hay));
    }

    proptest! {
        /// Any text made of keyword pieces: the same occurrences as brute force.
        #[test]
        fn same_as_brute_force(parts in proptest::collection::vec((0usize..9, 0usize..14, any::<bool>()), 0..40)) {
            let pats: Vec<String> = ["api_key", "apikey", "aws", "akia", "ghp_", "k_live_", "priv", "private_token", "eyj"]
                .map(String::from)
                .to_vec();
            let kw = Keywords::new(&pats).unwrap();
            let mut hay = Vec::new();
            for (p, cut, upper) in parts {
                let k = pats[p].as_bytes();
                let piece = &k[..cut.min(k.len())];
                if upper {
                    hay.extend_from_slice(&piece.to_ascii_uppercase());
                } else {
                    hay.extend_from_slice(piece);
                }
            }
            prop_assert_eq!(found(&kw, &hay), naive(&pats, &hay));
        }
    }
}
