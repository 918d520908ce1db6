//! The keyword automaton of a rule set: every occurrence of every keyword (ASCII
//! case-insensitive, overlapping ones too), in one pass over the bytes.
//!
//! A dense DFA of `regex-automata` built from the escaped keywords with
//! `MatchKind::All`, so that a state after a byte holds every keyword that ends there,
//! walked by the tight loop of [`Keywords::each`]: one table lookup and one comparison
//! a byte. A long input is walked as four parts at once (one byte of each in turn; a
//! shorter one as two): a walk is a chain of loads, each waiting on the one before,
//! and the parts' chains overlap where one cannot (more instructions a byte, less
//! time). (Aho-Corasick's overlapping iterator, used before, costs about three times
//! as many instructions a byte; it is the scanner's first pass over every byte of
//! every view.) Keywords are literals, so a hit's start is its end less the keyword's
//! length.

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
    /// The longest keyword's length.
    max_len: usize,
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
            max_len: patterns.iter().map(String::len).max().unwrap_or(0),
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

    /// Call `f(start, end, pattern)` for every occurrence of a keyword in `hay` (in
    /// no particular order: a long `hay` is walked in parts at once).
    pub(crate) fn each(&self, hay: &[u8], mut f: impl FnMut(usize, usize, usize)) {
        let part =
            |lanes: usize| self.min_len > 0 && hay.len() / lanes >= LANE_MIN.max(self.max_len);
        if part(4) {
            self.parts::<4>(hay, &mut f);
        } else if part(2) {
            self.parts::<2>(hay, &mut f);
        } else {
            self.parts::<1>(hay, &mut f);
        }
    }

    /// The matches of state `sid` (entered on the byte at `end`, or at the end of
    /// the input): keywords ending at `end`.
    #[inline(always)]
    fn report(&self, sid: StateID, end: usize, f: &mut impl FnMut(usize, usize, usize)) {
        for i in 0..self.dfa.match_len(sid) {
            let p = self.dfa.match_pattern(sid, i).as_usize();
            f(end - self.patterns[p].len(), end, p);
        }
    }

    /// From state `sid`, walk `hay[at..]`, reporting the keywords that end at `from`
    /// or later (before the end); the state at the end.
    fn walk(
        &self,
        hay: &[u8],
        mut at: usize,
        mut sid: StateID,
        from: usize,
        f: &mut impl FnMut(usize, usize, usize),
    ) -> StateID {
        let dfa = &self.dfa;
        while at < hay.len() {
            ([sid], at) = run_parts(dfa, [sid], &[hay], at);
            // The only special states here are match states (no dead or quit state in
            // an unanchored search without quit bytes, no acceleration, start states
            // not specialized): a match ending before `at` (DFAs delay one byte).
            if at < hay.len() {
                if dfa.is_match_state(sid) && at >= from {
                    self.report(sid, at, f);
                }
                at += 1;
            }
        }
        sid
    }

    /// The keywords that end at the end of the input, `end`, in state `sid`.
    fn end(&self, sid: StateID, end: usize, f: &mut impl FnMut(usize, usize, usize)) {
        let sid = self.dfa.next_eoi_state(sid);
        if self.dfa.is_match_state(sid) {
            self.report(sid, end, f);
        }
    }

    /// [`Keywords::each`] in `L` parts walked a byte of each at a time: each walk
    /// waits on its own table lookups only, so the chains of loads overlap. Part `k`
    /// reports the keywords that end in `(q[k], q[k + 1]]` (the first from 0), the
    /// `q` cutting `hay` in `L`: such a keyword starts at `q[k] + 1 - max_len` or
    /// later, where part `k`'s walk starts from the start state, and the DFA reports
    /// every keyword that starts where it started or later. A keyword ending at
    /// `q[k + 1]` is reported at the end of part `k`'s input, and not by the next.
    fn parts<const L: usize>(&self, hay: &[u8], f: &mut impl FnMut(usize, usize, usize)) {
        let dfa = &self.dfa;
        // Each part is at least `max_len` long (see `each`).
        let q: [usize; L] = std::array::from_fn(|k| k * hay.len() / L);
        let end = |k: usize| q.get(k + 1).copied().unwrap_or(hay.len());
        let from = |k: usize| if k == 0 { 0 } else { q[k] + 1 };
        let start: [usize; L] = std::array::from_fn(|k| from(k).saturating_sub(self.max_len));
        let steps = (0..L).map(|k| end(k) - start[k]).min().unwrap_or(0);
        let lanes: [&[u8]; L] = std::array::from_fn(|k| &hay[start[k]..start[k] + steps]);
        let (mut sids, mut j) = ([self.start; L], 0);
        while j < steps {
            (sids, j) = run_parts(dfa, sids, &lanes, j);
            if j < steps {
                for k in 0..L {
                    if dfa.is_match_state(sids[k]) && start[k] + j >= from(k) {
                        self.report(sids[k], start[k] + j, f);
                    }
                }
                j += 1;
            }
        }
        for k in 0..L {
            let sid = self.walk(&hay[..end(k)], start[k] + steps, sids[k], from(k), f);
            self.end(sid, end(k), f);
        }
    }
}

/// Parts a long input is walked in at once ([`Keywords::parts`]): four, or two for a
/// shorter one. (Eight were no faster than four on the machine measured; four were
/// about x1.1 on the traffic mix and x1.4 on code-like text over two.)
const LANE_MIN: usize = 1024;

/// `L` walks from states `sids` at `j`, over `lanes` (as long): the states after the
/// first byte where any leads to a special state and that byte's offset, or the
/// states at the end and the lanes' length. The lanes' loop is unrolled (`L` is a
/// constant), their states kept in registers.
#[inline(always)]
fn run_parts<const L: usize>(
    dfa: &dense::DFA<Vec<u32>>,
    mut sids: [StateID; L],
    lanes: &[&[u8]; L],
    mut j: usize,
) -> ([StateID; L], usize) {
    let n = lanes[0].len();
    let lanes: [&[u8]; L] = std::array::from_fn(|k| &lanes[k][..n]);
    while j < n {
        let mut special = false;
        for k in 0..L {
            sids[k] = dfa.next_state(sids[k], lanes[k][j]);
            special |= dfa.is_special_state(sids[k]);
        }
        if special {
            return (sids, j);
        }
        j += 1;
    }
    (sids, j)
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

    /// A keyword at every offset around each place a long input is cut into parts
    /// (where one part's walk ends and the next's starts), and at its ends: found
    /// once each, for inputs walked in four parts and in two.
    #[test]
    fn keywords_across_the_parts_are_found_once() {
        let rules = crate::RuleSet::builtin();
        let pats = rules.keywords.patterns.clone();
        for (n, lanes) in [
            (2 * LANE_MIN, 2),
            (2 * LANE_MIN + 1, 2),
            (4 * LANE_MIN - 1, 2),
            (4 * LANE_MIN, 4),
            (4 * LANE_MIN + 3, 4),
            (5000, 4),
        ] {
            for cut in 1..lanes {
                let cut = cut * n / lanes;
                for k in ["age-secret-key-1", "aws", "private_token", "sg."] {
                    for d in 0..=k.len() + 1 {
                        let mut hay = vec![b' '; n];
                        let at = cut + 1 - d;
                        hay[at..at + k.len()].copy_from_slice(k.as_bytes());
                        hay[..k.len()].copy_from_slice(k.as_bytes());
                        hay[n - k.len()..].copy_from_slice(k.as_bytes());
                        assert_eq!(
                            found(&rules.keywords, &hay),
                            naive(&pats, &hay),
                            "{k} {n} {cut} {d}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// Long text of keyword pieces and filler (walked in parts): the same
        /// occurrences as brute force.
        #[test]
        fn long_inputs_in_parts_same_as_brute_force(
            parts in proptest::collection::vec((0usize..83, 0usize..20, any::<bool>(), 0usize..40), 0..400),
        ) {
            static RULES: std::sync::OnceLock<crate::RuleSet> = std::sync::OnceLock::new();
            let rules = RULES.get_or_init(crate::RuleSet::builtin);
            let pats = &rules.keywords.patterns;
            let mut hay = Vec::new();
            for (p, cut, upper, gap) in parts {
                let k = pats[p % pats.len()].as_bytes();
                let piece = &k[..cut.min(k.len())];
                hay.extend_from_slice(&if upper { piece.to_ascii_uppercase() } else { piece.to_vec() });
                hay.extend(std::iter::repeat_n(b'x', gap % 7));
                hay.extend(std::iter::repeat_n(b' ', gap / 7));
            }
            prop_assert_eq!(found(&rules.keywords, &hay), naive(pats, &hay));
        }

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
