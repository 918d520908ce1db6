//! Normalize before matching: DLP that an agent cannot walk around by encoding.
//!
//! [`RuleSet::scan_deep`] scans the bytes as given and every decoded *view* of them,
//! layer after layer up to [`Limits::max_depth`]: percent-encoding (and `+` in form
//! bodies), quoted-printable, backslash escapes of JSON and other string syntaxes
//! (`\uXXXX`, `\xNN`, `\/` ...), HTML character references, Unicode compatibility
//! forms and invisible characters, and base64 (standard and URL-safe, padded or not,
//! at any alignment), hex and base32 (RFC 4648, one case, padded or not) runs. So a
//! base64 key inside percent-encoding inside a JSON string is found
//! (`escape>percent>base64`). ASCII text in UTF-16 (either byte order) is scanned
//! without its zero bytes (`utf16`); a gzip or zlib stream (the view as a whole, or a
//! base64 run) is inflated within the budget (`inflate`). A lower-case run that holds a keyword of a rule that
//! matches only upper case (an AWS key id) is also scanned upper-cased (`upper`).
//!
//! It stays cheap on ordinary traffic because nothing is decoded blindly:
//! - escapes are found from 64-byte masks of their first bytes (`memchr` past a
//!   block without one), and only the *islands* around the ones that matter
//!   are decoded and scanned: an escape whose output can be part of a keyword (a
//!   letter, a digit, `_-./+=`, a fullwidth letter, a zero-width space inside a token)
//!   always matters; one that cannot (`\n`, `\"`, `%20`, `+`) only within reach of a
//!   keyword already in the text, since a rule only matches around its keyword;
//! - base64, hex and base32 runs are found 64 bytes at a time ([`crate::byteset`]), decoded at
//!   each alignment, and only the text inside a decoding is kept ([`runs`]), so images
//!   and other binary payloads cost a decode but no scan.
//!
//! A finding in a decoded view names the decodings that led to it (`Finding::via`) and
//! the span of the *encoded* form in the original input (`offset`, `len`). All decoded
//! views together may hold at most [`Limits::budget`] bytes; more is
//! [`NormalizeError::Budget`], which a caller treats as a refusal, never as a pass.
//!
//! [`text`] is the same Unicode normalization for a scanner of words (the response
//! scanner); [`inflate`] undoes a `Content-Encoding` with a cap on the output.

mod escapes;
mod inflate;
mod runs;
#[cfg(test)]
mod tests;
mod unicode;

use std::borrow::Cow;
use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};

pub use inflate::{InflateError, MAX_ENCODINGS, inflate};
pub use unicode::{is_invisible, text};

use crate::rules::RuleSet;
use crate::scanner::{BACK, FORWARD, Finding, Hit};
use escapes::{Escapes, Keep, Kind, Within};

/// Bounds on the work [`RuleSet::scan_deep`] does for one input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Decoding layers over the input as given (`percent>base64` is two).
    pub max_depth: usize,
    /// Decoded views may hold this many times the input's length ...
    pub max_expansion: usize,
    /// ... but never more than this many bytes ...
    pub max_output: usize,
    /// ... and at least this many (a short input may nest deep).
    pub min_output: usize,
}

impl Default for Limits {
    /// Four layers; decoded views up to 8x the input, at least 1 MiB, at most 64 MiB.
    fn default() -> Self {
        Limits {
            max_depth: 4,
            max_expansion: 8,
            max_output: 64 << 20,
            min_output: 1 << 20,
        }
    }
}

impl Limits {
    /// The bytes of decoded views allowed for an input of `len` bytes.
    pub fn budget(&self, len: usize) -> usize {
        len.saturating_mul(self.max_expansion)
            .max(self.min_output)
            .min(self.max_output.max(self.min_output))
    }
}

/// Why an input could not be inspected. Never carries input bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the decoded forms of the input exceed the {budget}-byte inspection budget")]
    Budget { budget: usize },
}

/// Between islands of a view: no rule's pattern crosses a NUL between line breaks.
const SEP: &[u8] = b"\n\0\n";
/// A base64-alphabet run this long is a blob (an image), never a keyword's context.
const BLOB: usize = 256;
/// Shortest lower-case run the `upper` view folds: the shortest AWS key id.
const FOLD_MIN: usize = 20;
/// Bytes of binary kept on each side of a run of text in a decoded base64/hex run.
const TEXT_MARGIN: usize = 16;

/// How a segment of a view maps to its parent.
#[derive(Clone, Copy, Debug)]
enum Map {
    /// Byte for byte (a segment of length 0 marks where an unchanged stretch starts).
    Identity,
    /// Escapes of `src` bytes each decoding to `out` bytes, one after another
    /// (`%41%4B`: 3 and 1): any part of one is the whole escape.
    Escapes { src: u16, out: u16 },
    /// Base64 decoded from `src`; the segment starts at decoded byte `phase`.
    Base64 { phase: u32 },
    /// Hex decoded from `src`; the segment starts at decoded byte `phase`.
    Hex { phase: u32 },
    /// Base32 decoded from `src`; the segment starts at decoded byte `phase`.
    Base32 { phase: u32 },
    /// Inflated from `src` (or from base64 there): any part is the whole source.
    Whole,
    /// The separator between islands: maps to nothing.
    Gap,
}

/// One segment of a view. After it, up to the next segment, the view is unchanged
/// from the parent, continuing from `src + src_len`: only escapes and island starts
/// cost a segment. Offsets are u32: an input over 4 GiB is refused.
#[derive(Clone, Copy, Debug)]
struct Seg {
    out: u32,
    len: u32,
    src: u32,
    src_len: u32,
    map: Map,
}

impl Seg {
    /// The parent span of this segment's part of `[s, e)` (relative to `out`),
    /// `None` for a separator.
    fn source(&self, a: usize, b: usize) -> Option<(usize, usize)> {
        let (src, end) = (self.src as usize, (self.src + self.src_len) as usize);
        Some(match self.map {
            Map::Identity => (src + a, src + b),
            Map::Escapes { src: us, out: uo } => {
                let (us, uo) = (usize::from(us), usize::from(uo).max(1));
                (src + a / uo * us, (src + b.div_ceil(uo) * us).min(end))
            }
            Map::Base64 { phase } => {
                let p = phase as usize;
                (
                    (src + (p + a) / 3 * 4).min(end),
                    (src + (p + b).div_ceil(3) * 4).min(end),
                )
            }
            Map::Hex { phase } => {
                let p = phase as usize;
                ((src + 2 * (p + a)).min(end), (src + 2 * (p + b)).min(end))
            }
            Map::Base32 { phase } => {
                let p = phase as usize;
                (
                    (src + (p + a) * 8 / 5).min(end),
                    (src + ((p + b) * 8).div_ceil(5)).min(end),
                )
            }
            Map::Whole => (src, end),
            Map::Gap => return None,
        })
    }
}

/// The input as given (depth 0) or one decoded view of its parent.
struct View<'a> {
    parent: usize,
    /// Emptied once the view's own views are made.
    data: Cow<'a, [u8]>,
    len: usize,
    /// Sorted by `out`.
    segs: Vec<Seg>,
    via: String,
    depth: usize,
    /// Its keyword hits, sorted, while its own views are to be made (emptied then).
    hits: Vec<Hit>,
}

impl View<'_> {
    /// The parent span of `[s, e)`, or None when it is all separator.
    fn source(&self, s: usize, e: usize) -> Option<(usize, usize)> {
        let e = e.max(s + 1).min(self.len.max(s + 1));
        let mut i = self
            .segs
            .partition_point(|g| g.out as usize <= s)
            .checked_sub(1)?;
        let (mut lo, mut hi) = (usize::MAX, 0);
        let mut add = |span: Option<(usize, usize)>| {
            if let Some((a, b)) = span {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        };
        while let Some(g) = self.segs.get(i) {
            let (start, mid) = (g.out as usize, (g.out + g.len) as usize);
            let next = self.segs.get(i + 1).map_or(self.len, |n| n.out as usize);
            if start >= e {
                break;
            }
            if s < mid && start < e {
                add(g.source(s.max(start) - start, e.min(mid) - start));
            }
            if !matches!(g.map, Map::Gap) && s < next && mid < e {
                let tail = (g.src + g.src_len) as usize;
                add(Some((tail + s.max(mid) - mid, tail + e.min(next) - mid)));
            }
            i += 1;
        }
        (lo != usize::MAX).then_some((lo, hi.max(lo)))
    }

    /// Is `[s, e)` unchanged from the parent (inside one stretch after a segment)?
    fn unchanged(&self, s: usize, e: usize) -> bool {
        let Some(i) = self
            .segs
            .partition_point(|g| g.out as usize <= s)
            .checked_sub(1)
        else {
            return false;
        };
        let g = self.segs[i];
        let next = self.segs.get(i + 1).map_or(self.len, |n| n.out as usize);
        !matches!(g.map, Map::Gap) && (g.out + g.len) as usize <= s && e <= next
    }
}

/// A view under construction, refusing to grow past `limit` bytes.
struct Builder {
    data: Vec<u8>,
    segs: Vec<Seg>,
    /// Where the unchanged stretch after the last segment has got to in the parent.
    tail: Option<usize>,
    limit: usize,
    over: bool,
}

impl Builder {
    fn new(limit: usize) -> Self {
        Builder {
            data: Vec::new(),
            segs: Vec::new(),
            tail: None,
            limit,
            over: false,
        }
    }

    fn room(&mut self, n: usize) -> bool {
        let size = self.data.len() + n + (self.segs.len() + 1) * size_of::<Seg>();
        if size > self.limit || size > u32::MAX as usize {
            self.over = true;
        }
        !self.over
    }

    fn seg(&mut self, len: usize, src: usize, src_len: usize, map: Map) {
        // `room` keeps every offset below u32::MAX; the input is checked by the caller.
        self.segs.push(Seg {
            out: self.data.len() as u32,
            len: len as u32,
            src: src as u32,
            src_len: src_len as u32,
            map,
        });
    }

    fn sep(&mut self) {
        if !self.data.is_empty() && self.room(SEP.len()) {
            self.seg(SEP.len(), 0, 0, Map::Gap);
            self.data.extend_from_slice(SEP);
            self.tail = None;
        }
    }

    /// Bytes copied unchanged from `src` in the parent.
    fn same(&mut self, bytes: &[u8], src: usize) {
        if bytes.is_empty() || !self.room(bytes.len()) {
            return;
        }
        if self.tail != Some(src) {
            self.seg(0, src, 0, Map::Identity);
        }
        self.data.extend_from_slice(bytes);
        self.tail = Some(src + bytes.len());
    }

    /// One escape: `src_len` parent bytes at `src` decode to `bytes`.
    fn escape(&mut self, bytes: &[u8], src: usize, src_len: usize) {
        if bytes.is_empty() {
            // A removal: the stretch after it starts anew.
            return;
        }
        if !self.room(bytes.len()) {
            return;
        }
        let (us, uo) = (
            src_len.min(u16::MAX as usize) as u16,
            bytes.len().min(u16::MAX as usize) as u16,
        );
        let out = self.data.len() as u32;
        if let Some(last) = self.segs.last_mut()
            && let Map::Escapes { src: ls, out: lo } = last.map
            && (ls, lo) == (us, uo)
            && last.out + last.len == out
            && Some((last.src + last.src_len) as usize) == Some(src)
            && self.tail == Some(src)
        {
            last.len += bytes.len() as u32;
            last.src_len += src_len as u32;
        } else {
            self.seg(bytes.len(), src, src_len, Map::Escapes { src: us, out: uo });
        }
        self.data.extend_from_slice(bytes);
        self.tail = Some(src + src_len);
    }

    /// `bytes` replacing as many parent bytes at `src`, one for one (a case fold).
    fn replaced(&mut self, bytes: &[u8], src: usize) {
        if bytes.is_empty() || !self.room(bytes.len()) {
            return;
        }
        self.seg(
            bytes.len(),
            src,
            bytes.len(),
            Map::Escapes { src: 1, out: 1 },
        );
        self.data.extend_from_slice(bytes);
        self.tail = Some(src + bytes.len());
    }

    /// Decoded run text: `bytes` from the run at `src` (`src_len` long).
    fn decoded(&mut self, bytes: &[u8], src: usize, src_len: usize, map: Map) {
        if bytes.is_empty() || !self.room(bytes.len()) {
            return;
        }
        self.seg(bytes.len(), src, src_len, map);
        self.data.extend_from_slice(bytes);
        self.tail = Some(src + src_len);
    }

    fn size(&self) -> usize {
        self.data.len() + self.segs.len() * size_of::<Seg>()
    }
}

/// Merge intervals given in ascending order of start.
fn merge(spans: impl Iterator<Item = (usize, usize)>) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

struct Deep<'r, 'a> {
    rules: &'r RuleSet,
    budget: usize,
    used: usize,
    views: Vec<View<'a>>,
    seen: HashSet<u64>,
    findings: Vec<Finding>,
    /// Reach of a rule's match around its keyword, in decoded bytes.
    reach: usize,
    max_depth: usize,
    /// Run the keyword automaton over every byte of every view, instead of taking a
    /// view's hits from its parent's where it is unchanged (for the test of that).
    whole_views: bool,
}

impl RuleSet {
    /// Scan `data` as given and every decoded view of it (see the module docs).
    /// Findings are sorted by offset; one in a decoded view gives the encoded span in
    /// `data` and its `via`. Over the budget of `limits` is an error.
    pub fn scan_deep(&self, data: &[u8], limits: &Limits) -> Result<Vec<Finding>, NormalizeError> {
        self.scan_deep_with(data, limits, false)
    }

    /// [`RuleSet::scan_deep`]; `whole_views`: every view searched for keywords whole.
    pub(crate) fn scan_deep_with(
        &self,
        data: &[u8],
        limits: &Limits,
        whole_views: bool,
    ) -> Result<Vec<Finding>, NormalizeError> {
        let budget = limits.budget(data.len());
        if data.len() > u32::MAX as usize {
            return Err(NormalizeError::Budget { budget });
        }
        let mut hits = Vec::new();
        let findings = self.scan_with(data, None, Some(&mut hits));

        let mut deep = Deep {
            rules: self,
            budget,
            used: 0,
            views: vec![View {
                parent: 0,
                data: Cow::Borrowed(data),
                len: data.len(),
                segs: Vec::new(),
                via: String::new(),
                depth: 0,
                hits,
            }],
            seen: HashSet::new(),
            findings,
            reach: BACK + FORWARD + self.max_keyword,
            max_depth: limits.max_depth,
            whole_views,
        };
        let mut queue = VecDeque::from([0usize]);
        while let Some(v) = queue.pop_front() {
            if deep.views[v].depth >= limits.max_depth {
                continue;
            }
            for child in deep.derive(v)? {
                if let Some(c) = deep.admit(child)? {
                    queue.push_back(c);
                }
            }
            deep.views[v].data = Cow::Borrowed(&[]);
            deep.views[v].hits = Vec::new();
        }
        let mut out = deep.findings;
        out.sort_by(|a, b| {
            (a.offset, a.len, &a.rule_id, a.via.len()).cmp(&(
                b.offset,
                b.len,
                &b.rule_id,
                b.via.len(),
            ))
        });
        out.dedup_by(|b, a| (a.offset, a.len, &a.rule_id) == (b.offset, b.len, &b.rule_id));
        Ok(out)
    }
}

impl<'a> Deep<'_, 'a> {
    /// Count, deduplicate and scan a new view; its index when it is to be expanded.
    fn admit(&mut self, child: View<'a>) -> Result<Option<usize>, NormalizeError> {
        if child.data.is_empty() {
            return Ok(None);
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        child.data.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return Ok(None);
        }
        self.used += child.data.len() + child.segs.len() * size_of::<Seg>();
        if self.used > self.budget {
            return Err(NormalizeError::Budget {
                budget: self.budget,
            });
        }
        let idx = self.views.len();
        let given = if self.whole_views {
            None
        } else {
            self.child_hits(&child)
        };
        #[cfg(test)]
        {
            if let Some(given) = &given {
                let mut whole = Vec::new();
                self.rules.scan_with(&child.data, None, Some(&mut whole));
                assert_eq!(given, &whole, "the hits of {} from its parent's", child.via);
            }
        }
        let mut hits = Vec::new();
        // A view at the deepest layer makes no views: its hits are not kept.
        let keep = (child.depth < self.max_depth).then_some(&mut hits);
        let found = self.rules.scan_with(&child.data, given, keep);
        let mut child = child;
        child.hits = hits;
        self.views.push(child);
        for f in found {
            let (s, e) = self.to_root(idx, f.offset as usize, f.offset as usize + f.len);
            self.findings.push(Finding {
                offset: s as u64,
                len: e - s,
                via: self.views[idx].via.clone(),
                ..f
            });
        }
        Ok(Some(idx))
    }

    /// The keyword hits of a new view, every occurrence of every keyword in it, as
    /// the automaton would find them over the whole view, but without running it
    /// where the view is its parent unchanged. None when that cannot be done (a rule
    /// set with an empty keyword): the automaton then runs over the whole view.
    ///
    /// Why they are the same. An occurrence is a run of bytes equal (ASCII case
    /// aside) to a keyword, so whether one lies at a place depends on those bytes
    /// alone. A view is stretches copied unchanged from its parent (after each
    /// non-separator segment, up to the next segment, from `src + src_len` on) and
    /// bytes it made (segments: decoded escapes, runs, separators). Then every
    /// occurrence in the view
    /// - lies wholly inside one unchanged stretch, where the parent holds the same
    ///   bytes: it is one of the parent's hits inside the stretch's source, moved (the
    ///   parent's hits are every occurrence in the parent, as given or by this same
    ///   argument one layer up); or
    /// - holds a byte the view made: that byte is one a keyword can hold
    ///   ([`Keywords::can_hold`]; a decoded `"`, newline or space, a separator, is
    ///   not), and the occurrence, at most `max_keyword` long, lies in the bytes from
    ///   `max_keyword - 1` before it to `max_keyword` after it, searched by the
    ///   automaton; or
    /// - holds both sides of a place where one unchanged stretch ends and the next
    ///   begins with no byte made between them (a removed escape, a zero-width
    ///   character): it lies in the bytes `max_keyword - 1` on each side of the
    ///   place, searched too.
    ///
    /// Occurrences found both ways are one hit (sorted and deduplicated).
    fn child_hits(&self, child: &View<'_>) -> Option<Vec<Hit>> {
        let kw = &self.rules.keywords;
        if kw.min_len() == 0 {
            return None;
        }
        let parent = &self.views[child.parent].hits;
        let data: &[u8] = &child.data;
        let k = self.rules.max_keyword;
        let mut out = Vec::new();
        // Spans of the view the automaton searches, merged as they come (in order).
        let mut spans: Vec<(usize, usize)> = Vec::new();
        fn search(spans: &mut Vec<(usize, usize)>, s: usize, e: usize) {
            match spans.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => spans.push((s, e)),
            }
        }
        // The bytes `[s, e)` were made by the view.
        let made = |spans: &mut Vec<(usize, usize)>, s: usize, e: usize| {
            for (x, &b) in data[s..e].iter().enumerate() {
                if kw.can_hold(b) {
                    let x = s + x;
                    search(spans, x.saturating_sub(k - 1), (x + k).min(data.len()));
                }
            }
        };
        // The parent's hits are walked forward with the stretches' sources (back with
        // a binary search, should a source lie before the last one).
        let (mut cur, mut last_from) = (0, 0);
        let mut at = 0;
        for (i, g) in child.segs.iter().enumerate() {
            let (start, mid) = (g.out as usize, (g.out + g.len) as usize);
            let next = child.segs.get(i + 1).map_or(child.len, |n| n.out as usize);
            made(&mut spans, at, mid);
            if start == mid && start > 0 {
                // Two stretches meet with nothing made between them.
                search(
                    &mut spans,
                    (start + 1).saturating_sub(k),
                    (start + k - 1).min(data.len()),
                );
            }
            if matches!(g.map, Map::Gap) {
                made(&mut spans, mid, next);
            } else if mid < next {
                let from = (g.src + g.src_len) as usize;
                let to = from + (next - mid);
                if from < last_from {
                    cur = parent.partition_point(|h| (h.start as usize) < from);
                } else {
                    while cur < parent.len() && (parent[cur].start as usize) < from {
                        cur += 1;
                    }
                }
                last_from = from;
                for h in &parent[cur..] {
                    if h.start as usize >= to {
                        break;
                    }
                    if h.end as usize <= to {
                        out.push(Hit {
                            start: (h.start as usize - from + mid) as u64,
                            end: (h.end as usize - from + mid) as u64,
                            pattern: h.pattern,
                        });
                    }
                }
            }
            at = next.max(mid);
        }
        made(&mut spans, at, data.len());
        for (s, e) in spans {
            kw.each(&data[s..e], |a, b, pattern| {
                out.push(Hit {
                    start: (s + a) as u64,
                    end: (s + b) as u64,
                    pattern,
                })
            });
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Where keywords start in the input as given, in order (a start once per keyword
    /// that starts there): the input's own hits, kept while its views are made, which
    /// is when these are asked for.
    fn root_starts(&self) -> impl Iterator<Item = usize> + '_ {
        self.views[0].hits.iter().map(|h| h.start as usize)
    }

    /// The span in the input of the span `[s, e)` of view `v`.
    fn to_root(&self, mut v: usize, mut s: usize, mut e: usize) -> (usize, usize) {
        while v != 0 {
            let view = &self.views[v];
            // All separator (no rule matches one): the whole source of the view.
            let (lo, hi) = view
                .source(s, e)
                .unwrap_or_else(|| view.source(0, view.len).unwrap_or((0, 0)));
            (s, e, v) = (lo, hi, view.parent);
        }
        (s, e)
    }

    fn remaining(&self) -> usize {
        self.budget.saturating_sub(self.used)
    }

    fn via(&self, v: usize, name: &str) -> String {
        let parent = &self.views[v].via;
        if parent.is_empty() {
            name.to_string()
        } else {
            format!("{parent}>{name}")
        }
    }

    /// The decoded views of view `v`.
    fn derive(&self, v: usize) -> Result<Vec<View<'a>>, NormalizeError> {
        let data: &[u8] = &self.views[v].data;
        let depth = self.views[v].depth;
        let mut out = Vec::new();
        // Weak escapes count near a keyword of the input as given (in a deeper view,
        // a few small islands, every escape counts).
        let margin = |kind: Kind| kind.shrink() * self.reach;
        // The reach of the hits, for an escape of `kind`.
        let reach = |kind: Kind| {
            let m = margin(kind);
            merge(self.root_starts().map(|h| (h.saturating_sub(m), h + m + 1)))
        };
        // In the input as given only the escapes that can be anchors are listed first
        // (strong ones, and those in the hits' reach); those inside the islands are
        // listed once the islands are known.
        let all: Vec<(Kind, Escapes)> = Kind::ALL
            .iter()
            .map(|&k| {
                let keep = match (depth, k) {
                    // Only a `+` in the hits' reach is an anchor of the form view.
                    (0, Kind::Form) => Keep::Inside(Within::new(reach(k))),
                    // Backslash and HTML: parsed only where a strong one can start
                    // and in the reach.
                    (0, _) => match escapes::strong_starts(k, data) {
                        Some(starts) => {
                            let mut spans = reach(k);
                            spans.extend(starts.into_iter().map(|s| (s, s + 1)));
                            spans.sort_unstable();
                            Keep::Inside(Within::new(merge(spans.into_iter())))
                        }
                        None => Keep::Anchors(Within::new(reach(k))),
                    },
                    _ => Keep::All,
                };
                (k, escapes::find_kept(k, data, keep))
            })
            .filter(|(k, e)| {
                !e.list.is_empty() && (*k != Kind::Form || e.list.iter().any(|x| x.len == 1))
            })
            .collect();
        // Inside a long base64 run (an image) a `+` or `\/` separates nothing: a short
        // keyword that turns up in it by chance must not make the run a view.
        // Every base64-alphabet run, found once for the blobs and for `runs`.
        let mut b64_runs = Vec::new();
        runs::base64_runs(data, runs::BASE64_MIN, |s, l| b64_runs.push((s, l)));
        let blobs: Vec<(usize, usize)> = if depth == 0 && !all.is_empty() {
            b64_runs
                .iter()
                .filter(|&&(_, l)| l >= BLOB)
                .map(|&(s, l)| (s, s + l))
                .collect()
        } else {
            Vec::new()
        };
        for (kind, esc) in &all {
            let margin = margin(*kind);
            let span = |e: &escapes::Esc| {
                (
                    e.pos.saturating_sub(margin),
                    (e.pos + e.len + margin).min(data.len()),
                )
            };
            let islands = if depth == 0 {
                // Escapes come in order: where hits and blobs are is walked once.
                let mut reach = Within::new(reach(*kind));
                let mut blob = Within::new(blobs.clone());
                let mut near = |p: usize| reach.contains(p) && !blob.contains(p);
                // Form adds `+` for a space to percent, whose escapes make their own view.
                let mut anchor = |e: &&escapes::Esc| {
                    if *kind == Kind::Form {
                        e.len == 1 && near(e.pos)
                    } else {
                        e.strong || near(e.pos)
                    }
                };
                merge(esc.list.iter().filter(&mut anchor).map(span))
            } else {
                // A deeper view is decoded around each of its escapes (Form: each
                // `+`), not whole: far from them it is its parent, already scanned
                // and decoded (a match and its window span less than the margin).
                merge(
                    esc.list
                        .iter()
                        .filter(|e| *kind != Kind::Form || e.len == 1)
                        .map(span),
                )
            };
            if islands.is_empty() {
                continue;
            }
            // In the input as given, now the escapes inside the islands, all of them.
            let inside;
            let esc = if depth == 0 {
                inside =
                    escapes::find_kept(*kind, data, Keep::Inside(Within::new(islands.clone())));
                &inside
            } else {
                esc
            };
            let mut b = Builder::new(self.remaining());
            // Room for a segment an escape, so that a view dense with escapes does not
            // copy its segments as they grow. (Its text is not reserved: room for the
            // islands' length, fresh each time, cost more page faults than the copies
            // it saved.)
            b.segs.reserve(esc.list.len() + 2 * islands.len());
            let mut k = 0;
            for (lo, hi) in islands {
                b.sep();
                let mut cursor = lo;
                while k < esc.list.len() && esc.list[k].pos < lo {
                    k += 1;
                }
                while k < esc.list.len() && esc.list[k].pos + esc.list[k].len <= hi {
                    let e = esc.list[k];
                    b.same(&data[cursor..e.pos], cursor);
                    b.escape(esc.decoded(&e), e.pos, e.len);
                    cursor = e.pos + e.len;
                    k += 1;
                }
                b.same(&data[cursor..hi], cursor);
            }
            out.push(self.finish(v, b, kind.name())?);
        }
        if let Some(b) = self.upper(v, data) {
            out.push(self.finish(v, b, "upper")?);
        }
        if let Some(b) = self.utf16(data) {
            out.push(self.finish(v, b, "utf16")?);
        }
        let (b64, hex, b32, streams) = self.runs(v, data, &b64_runs);
        if let Some(b) = self.inflated(data, streams)? {
            out.push(self.finish(v, b, "inflate")?);
        }
        out.push(self.finish(v, b64, "base64")?);
        out.push(self.finish(v, hex, "hex")?);
        out.push(self.finish(v, b32, "base32")?);
        Ok(out)
    }

    fn finish(&self, v: usize, b: Builder, name: &str) -> Result<View<'a>, NormalizeError> {
        if b.over || b.size() > self.remaining() {
            return Err(NormalizeError::Budget {
                budget: self.budget,
            });
        }
        Ok(View {
            parent: v,
            len: b.data.len(),
            data: Cow::Owned(b.data),
            segs: b.segs,
            via: self.via(v, name),
            depth: self.views[v].depth + 1,
            hits: Vec::new(),
        })
    }

    /// The inflated streams in `data`: `data` itself when it starts with a gzip or zlib
    /// header (a gzip body inside a gzip body), and every base64 run that decodes to one
    /// (`H4sI...`, `eJ...`). Inflating costs the budget; a stream that inflates past
    /// what is left of it refuses the input.
    fn inflated(
        &self,
        data: &[u8],
        streams: Vec<(usize, usize)>,
    ) -> Result<Option<Builder>, NormalizeError> {
        let mut found: Vec<(usize, usize, Vec<u8>)> = Vec::new();
        let mut cap = self.remaining();
        let over = NormalizeError::Budget {
            budget: self.budget,
        };
        if inflate::compressed(data).is_some() {
            let out = inflate::inflate_partial(data, cap).map_err(|_| over.clone())?;
            cap = cap.saturating_sub(out.len());
            found.push((0, data.len(), out));
        }
        for (start, len) in streams {
            let mut raw = Vec::new();
            runs::decode_base64(&data[start..start + len], &mut raw);
            let out = inflate::inflate_partial(&raw, cap).map_err(|_| over.clone())?;
            cap = cap.saturating_sub(out.len());
            found.push((start, len, out));
        }
        if found.iter().all(|(_, _, out)| out.is_empty()) {
            return Ok(None);
        }
        let mut b = Builder::new(self.remaining());
        for (src, len, out) in found {
            b.sep();
            b.decoded(&out, src, len, Map::Whole);
        }
        Ok(Some(b))
    }

    /// The ASCII text in UTF-16 (either byte order) in `data`, with the zero bytes
    /// dropped. Other code units end a stretch (a fullwidth letter in UTF-16 is not
    /// decoded).
    fn utf16(&self, data: &[u8]) -> Option<Builder> {
        let mut b: Option<Builder> = None;
        let mut text = Vec::new();
        runs::utf16_runs(data, |first, units| {
            let b = b.get_or_insert_with(|| Builder::new(self.remaining()));
            text.clear();
            text.extend((0..units).map(|i| data[first + 2 * i]));
            // Each text byte and its zero: the pair starts at `first` (little-endian,
            // text first) or one before (big-endian, zero first).
            let src = if first > 0 && data[first - 1] == 0 {
                first - 1
            } else {
                first
            };
            b.sep();
            if b.room(text.len()) {
                b.seg(text.len(), src, 2 * units, Map::Escapes { src: 2, out: 1 });
                b.data.extend_from_slice(&text);
                b.tail = Some(src + 2 * units);
            }
        });
        b
    }

    /// The lower-case runs of view `v` that hold a keyword of a rule matching only
    /// upper case (an AWS key id: `akia...`), upper-cased. Lower-casing such a secret
    /// loses nothing, so the agent could send it so; a run is maximal `[a-z0-9]`, at
    /// least [`FOLD_MIN`] long. In the input as given, only runs at a keyword hit are
    /// looked at; a deeper view (small islands) is searched whole.
    fn upper(&self, v: usize, data: &[u8]) -> Option<Builder> {
        let folds = &self.rules.fold_keywords;
        if folds.is_empty() {
            return None;
        }
        let class = |c: u8| c.is_ascii_lowercase() | c.is_ascii_digit();
        let mut spans = Vec::new();
        let mut push = |s: usize, e: usize| {
            let run = &data[s..e];
            if e - s >= FOLD_MIN
                && run.iter().any(u8::is_ascii_lowercase)
                && folds
                    .iter()
                    .any(|k| memchr::memmem::find(run, k.as_bytes()).is_some())
            {
                spans.push((s, e));
            }
        };
        if self.views[v].depth == 0 {
            let mut done = 0;
            for h in self.root_starts() {
                if h < done || !data.get(h).copied().is_some_and(class) {
                    continue;
                }
                let mut s = h;
                while s > done && class(data[s - 1]) {
                    s -= 1;
                }
                let mut e = h;
                while e < data.len() && class(data[e]) {
                    e += 1;
                }
                push(s, e);
                done = e;
            }
        } else {
            // Most runs are words, far shorter than a key: skipped without a look at
            // each byte.
            runs::class_runs(data, FOLD_MIN, class, |s, len| push(s, s + len));
        }
        if spans.is_empty() {
            return None;
        }
        let mut b = Builder::new(self.remaining());
        for (s, e) in spans {
            b.sep();
            b.replaced(&data[s..e].to_ascii_uppercase(), s);
        }
        Some(b)
    }

    /// The text inside the base64, the hex and the base32 runs of view `v`.
    /// Also the base64 runs that decode to a gzip or zlib header.
    #[allow(clippy::type_complexity)]
    fn runs(
        &self,
        v: usize,
        data: &[u8],
        b64_runs: &[(usize, usize)],
    ) -> (Builder, Builder, Builder, Vec<(usize, usize)>) {
        let view = &self.views[v];
        let mut b64 = Builder::new(self.remaining());
        let mut hex = Builder::new(self.remaining());
        let mut b32 = Builder::new(self.remaining());
        let mut streams = Vec::new();
        let mut scratch = Vec::new();
        let keep = |b: &mut Builder,
                    scratch: &[u8],
                    base: usize,
                    src: usize,
                    src_len: usize,
                    map: fn(u32) -> Map| {
            let mut spans = Vec::new();
            runs::texty_regions(scratch, |s, e| {
                spans.push((
                    s.saturating_sub(TEXT_MARGIN),
                    (e + TEXT_MARGIN).min(scratch.len()),
                ));
            });
            for (s, e) in merge(spans.into_iter()) {
                b.sep();
                let phase = (base + s) as u32;
                b.decoded(&scratch[s..e], src, src_len, map(phase));
            }
        };
        for &(start, len) in b64_runs {
            // A run wholly inside an unchanged stretch was decoded in the parent.
            if v != 0 && view.unchanged(start, start + len) {
                continue;
            }
            let run = &data[start..start + len];
            scratch.clear();
            runs::decode_base64(&run[..4], &mut scratch);
            if inflate::compressed(&scratch).is_some() {
                streams.push((start, len));
            }
            for a in 0..4 {
                if len - a < runs::BASE64_MIN {
                    break;
                }
                runs::text_quads(run, a, |qs, qe| {
                    scratch.clear();
                    runs::decode_base64(&run[qs..qe], &mut scratch);
                    // Decoded offsets count from the alignment's first quad.
                    let base = (qs - a) / 4 * 3;
                    keep(&mut b64, &scratch, base, start + a, len - a, |phase| {
                        Map::Base64 { phase }
                    });
                });
            }
            runs::hex_runs(run, runs::HEX_MIN, |hs, hl| {
                for a in 0..2 {
                    scratch.clear();
                    runs::decode_hex(&run[hs + a..hs + hl], &mut scratch);
                    keep(&mut hex, &scratch, 0, start + hs + a, hl - a, |phase| {
                        Map::Hex { phase }
                    });
                }
            });
            // Eight digits make five bytes: a byte starts at one of eight alignments.
            runs::base32_runs(run, runs::BASE32_MIN, |bs, bl| {
                for a in 0..8.min(bl) {
                    scratch.clear();
                    runs::decode_base32(&run[bs + a..bs + bl], &mut scratch);
                    keep(&mut b32, &scratch, 0, start + bs + a, bl - a, |phase| {
                        Map::Base32 { phase }
                    });
                }
            });
        }
        (b64, hex, b32, streams)
    }
}
