//! The streaming scanner: feed chunks, get findings with absolute offsets.
//!
//! One pass of the keyword automaton (`crate::keywords`) finds keyword hits. Each hit is judged in a window that depends
//! on the content only: from the start of its line (at most [`BACK`] bytes back) to the
//! end of the [`LINES_AFTER`]th line break after it (at most [`FORWARD`] bytes on). A
//! rule's regex runs over that window, and a match counts when it contains the hit.
//! Because windows never depend on where chunks begin or end, the findings of a stream
//! are the same for every chunking; the scanner keeps only the bytes that a pending or
//! future window can still need (a bounded overlap), so memory is bounded.
//!
//! Rules without keywords (validated shapes such as card numbers, see
//! [`crate::validators`]) run over fixed segments instead: [`SEGMENT`] bytes at fixed
//! absolute offsets, seen with [`SEGMENT_LEFT`] bytes of context before and
//! [`SEGMENT_OVERLAP`] after; a segment reports the matches that start in it. Segments
//! do not depend on chunking either.
//!
//! Judging a match: the rule's entropy threshold, then the built-in filler check and
//! the allowlists (whole-value placeholders), then the rule's validator with the window
//! as context.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap, VecDeque};

use super::redact::keyed_hash;
use super::rules::{Candidate, RuleSet, below_entropy, is_placeholder};
use super::validators::shapes;

/// How far past a segment its shape gate looks (a value that starts in the segment
/// shows its shape within this many bytes: 12 words of 8 letters and 3 separators).
const GATE_MARGIN: u64 = 256;

/// How far back from a keyword hit its window may start.
pub const BACK: usize = 512;
/// How far forward from a keyword hit's end its window may reach.
pub const FORWARD: usize = 4096;
/// A window ends at this many line breaks after the hit (a PEM header and its body).
pub const LINES_AFTER: usize = 4;

/// Keywordless rules run over segments of this many bytes.
pub const SEGMENT: usize = 2048;
/// Context before a segment (for word boundaries; matches starting there belong to the
/// segment before).
pub const SEGMENT_LEFT: usize = 128;
/// Context after a segment: a keywordless match starting in a segment is found when it
/// is at most this long.
pub const SEGMENT_OVERLAP: usize = 1024;

/// A secret found: which rule, where. Never the secret itself.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Finding {
    /// Absolute offset of the secret in the stream.
    pub offset: u64,
    /// Length of the secret in bytes.
    pub len: usize,
    pub rule_id: String,
    /// A short keyed hash of the secret ([`crate::redact::keyed_hash`]): lines about the
    /// same secret can be correlated, the secret cannot be recovered.
    pub hash: String,
    /// The decodings that led to it (`percent>base64`), empty when found in the bytes
    /// as given. With a `via`, `offset` and `len` are the encoded span in the input.
    pub via: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {} ({} bytes, hash {})",
            self.rule_id, self.offset, self.len, self.hash
        )?;
        if !self.via.is_empty() {
            write!(f, " via {}", self.via)?;
        }
        Ok(())
    }
}

/// The finding of `rule_id` for `secret` at `offset` (the one place a [`Finding`] is
/// made, for the scanner and [`crate::entropy`]): a keyed hash, never the secret.
pub(crate) fn finding(offset: u64, rule_id: &str, secret: &[u8]) -> Finding {
    Finding {
        offset,
        len: secret.len(),
        rule_id: rule_id.to_string(),
        hash: keyed_hash(secret),
        via: String::new(),
    }
}

/// One keyword occurrence: where it starts and ends, and which keyword it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Hit {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) pattern: usize,
}

/// A match of one rule in one window, already judged.
#[derive(Clone, Debug)]
struct Judged {
    start: u64,
    end: u64,
    finding: Option<Finding>,
}

/// Scans a byte stream chunk by chunk.
pub struct StreamScanner<'r> {
    rules: &'r RuleSet,
    /// Retained bytes; `buf[0]` is at absolute offset `base`. Borrowed when a whole
    /// buffer is scanned ([`RuleSet::scan`]), so that it is not copied.
    pub(super) buf: Cow<'r, [u8]>,
    base: u64,
    /// Absolute offset where the next keyword search starts.
    search_from: u64,
    /// Absolute end of the data already searched: hits ending at or before it are known.
    searched_to: u64,
    pending: VecDeque<Hit>,
    /// Per rule: the last window it ran in and what it found there.
    last_window: HashMap<usize, (u64, u64, Vec<Judged>)>,
    reported: BTreeSet<(usize, u64, usize)>,
    findings: Vec<Finding>,
    /// Absolute start of the next segment the keywordless rules have not run over.
    next_segment: u64,
    eof: bool,
    /// The keyword hits, when the caller asked (`scan_deep` uses them).
    pub(crate) hits_seen: Option<Vec<Hit>>,
    /// The keyword hits of the whole buffer, when the caller already knows them
    /// (`scan_deep` derives a view's from its parent's): used instead of the
    /// automaton, by the one search of a whole-buffer scan.
    pub(crate) hits_given: Option<Vec<Hit>>,
}

impl<'r> StreamScanner<'r> {
    pub fn new(rules: &'r RuleSet) -> Self {
        StreamScanner {
            rules,
            buf: Cow::Owned(Vec::new()),
            base: 0,
            search_from: 0,
            searched_to: 0,
            pending: VecDeque::new(),
            last_window: HashMap::new(),
            reported: BTreeSet::new(),
            findings: Vec::new(),
            next_segment: 0,
            eof: false,
            hits_seen: None,
            hits_given: None,
        }
    }

    /// Total bytes fed so far.
    pub fn position(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Feed the next chunk; returns the findings it completed (possibly about earlier
    /// bytes).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Finding> {
        self.buf.to_mut().extend_from_slice(chunk);
        self.search();
        self.judge_ready();
        self.run_segments();
        self.trim();
        std::mem::take(&mut self.findings)
    }

    /// The stream has ended: judge what is left.
    pub fn finish(&mut self) -> Vec<Finding> {
        self.eof = true;
        self.search();
        self.judge_ready();
        self.run_segments();
        self.trim();
        std::mem::take(&mut self.findings)
    }

    /// Every byte before this absolute offset is clear: no finding reported later can
    /// touch it. A forwarding proxy may release bytes up to here.
    pub fn safe_offset(&self) -> u64 {
        if self.eof {
            return self.position();
        }
        let oldest = self
            .pending
            .iter()
            .map(|h| h.start)
            .min()
            .map_or(self.search_from, |s| s.min(self.search_from));
        let oldest = if self.rules.keywordless.is_empty() {
            oldest
        } else {
            oldest.min(self.next_segment)
        };
        oldest.saturating_sub(BACK as u64)
    }

    fn search(&mut self) {
        let end = self.position();
        if end == self.searched_to && !self.eof {
            return;
        }
        let from = (self.search_from - self.base) as usize;
        let hay = &self.buf[from..];
        let mut new_hits: Vec<Hit> = Vec::new();
        let (from, searched_to) = (self.search_from, self.searched_to);
        let mut add = |s: usize, e: usize, pattern: usize| {
            let (start, end) = (from + s as u64, from + e as u64);
            if end > searched_to {
                new_hits.push(Hit {
                    start,
                    end,
                    pattern,
                });
            }
        };
        match self.hits_given.take() {
            // Given for the whole buffer, which this one search covers (`scan_with`).
            Some(given) => {
                debug_assert!(from == 0 && self.eof);
                for h in given {
                    add(h.start as usize, h.end as usize, h.pattern);
                }
            }
            None => self.rules.keywords.each(hay, add),
        }
        new_hits.sort_by_key(|h| (h.start, h.end, h.pattern));
        if let Some(seen) = &mut self.hits_seen {
            seen.extend_from_slice(&new_hits);
        }
        self.pending.extend(new_hits);
        self.searched_to = end;
        let k = self.rules.max_keyword.saturating_sub(1) as u64;
        self.search_from = end.saturating_sub(k).max(self.search_from);
    }

    /// Judge every pending hit whose window is complete.
    fn judge_ready(&mut self) {
        while let Some(&hit) = self.pending.front() {
            let Some((ws, we)) = self.window(hit) else {
                break;
            };
            self.pending.pop_front();
            self.judge(hit, ws, we);
        }
        if self.pending.is_empty() {
            self.last_window.clear();
        }
    }

    /// The window of `hit`, or None while its end has not arrived.
    fn window(&self, hit: Hit) -> Option<(u64, u64)> {
        let end = self.position();
        let lo = hit.start.saturating_sub(BACK as u64).max(self.base);
        let back = &self.buf[(lo - self.base) as usize..(hit.start - self.base) as usize];
        let ws = match memchr_rev(b'\n', back) {
            Some(i) => lo + i as u64 + 1,
            None => lo,
        };
        let limit = hit.end + FORWARD as u64;
        let avail = limit.min(end);
        let fwd = &self.buf[(hit.end - self.base) as usize..(avail - self.base) as usize];
        let mut breaks = 0;
        for (i, &b) in fwd.iter().enumerate() {
            if b == b'\n' {
                breaks += 1;
                if breaks == LINES_AFTER {
                    return Some((ws, hit.end + i as u64));
                }
            }
        }
        if avail == limit || self.eof {
            Some((ws, avail))
        } else {
            None
        }
    }

    fn judge(&mut self, hit: Hit, ws: u64, we: u64) {
        let rules = self.rules;
        for &ri in &rules.keyword_rules[hit.pattern] {
            let fresh = match self.last_window.get(&ri) {
                Some((s, e, _)) => (*s, *e) != (ws, we),
                None => true,
            };
            if fresh {
                let judged = self.run_rule(ri, ws, we);
                self.last_window.insert(ri, (ws, we, judged));
            }
            let (_, _, judged) = &self.last_window[&ri];
            for j in judged {
                if j.start <= hit.start
                    && hit.end <= j.end
                    && let Some(f) = &j.finding
                    && self.reported.insert((ri, f.offset, f.len))
                {
                    self.findings.push(f.clone());
                }
            }
        }
    }

    /// Run rule `ri` over the window and judge each match.
    fn run_rule(&self, ri: usize, ws: u64, we: u64) -> Vec<Judged> {
        let rule = &self.rules.rules[ri];
        let window = &self.buf[(ws - self.base) as usize..(we - self.base) as usize];
        let mut out = Vec::new();
        for caps in rule.regex.captures_iter(window) {
            let whole = caps.get(0).expect("group 0 always participates");
            out.push(Judged {
                start: ws + whole.start() as u64,
                end: ws + whole.end() as u64,
                finding: self.rules.judge_match(ri, window, ws, &caps),
            });
        }
        out
    }

    /// Run the keywordless rules over every segment that is complete (or, at the end
    /// of the stream, over what is left).
    fn run_segments(&mut self) {
        let rules = self.rules;
        if rules.keywordless.is_empty() {
            return;
        }
        loop {
            let start = self.next_segment;
            let end = self.position();
            let full = start + (SEGMENT + SEGMENT_OVERLAP) as u64;
            if start >= end || (full > end && !self.eof) {
                break;
            }
            let lo = start.saturating_sub(SEGMENT_LEFT as u64).max(self.base);
            let hi = full.min(end);
            let report_to = start + SEGMENT as u64;
            let seg = &self.buf[(lo - self.base) as usize..(hi - self.base) as usize];
            // Shapes of where a match can start (and as far as a value runs on).
            let gate_end = (report_to + GATE_MARGIN).min(hi);
            let shapes = shapes(
                &self.buf[(start - self.base) as usize..(hi - self.base) as usize],
                (gate_end - start) as usize,
            );
            {
                for &ri in &rules.keywordless {
                    let rule = &rules.rules[ri];
                    if rule.validator.is_some_and(|v| !v.possible(shapes)) {
                        continue;
                    }
                    // Where a match may start: only where the regex can start one
                    // and the validator's shape starts too.
                    let (from, to) = ((start - lo) as usize, (report_to - lo) as usize);
                    match &rule.lead {
                        Some(l) if let Some(anchored) = l.anchored(seg) => {
                            // The regex tried at each such start alone.
                            let mut pos = from;
                            l.each_start(seg, from, to, |p| {
                                if p < pos {
                                    return false;
                                }
                                if let Some(m) = anchored.find(&seg[p..]) {
                                    let whole = p + m.start()..p + m.end();
                                    pos = whole.end.max(p + 1);
                                    // The secret is the whole match (a lead is only
                                    // anchored so).
                                    if let Some(f) =
                                        rules.judge_span(ri, seg, lo, whole.clone(), whole)
                                        && self.reported.insert((ri, f.offset, f.len))
                                    {
                                        self.findings.push(f);
                                    }
                                }
                                false
                            });
                            continue;
                        }
                        Some(l) if !l.starts_in(seg, from, to) => continue,
                        _ => {}
                    }
                    for caps in rules.rules[ri].regex.captures_iter(seg) {
                        let whole = caps.get(0).expect("group 0 always participates");
                        let at = lo + whole.start() as u64;
                        if at < start || at >= report_to {
                            continue;
                        }
                        if let Some(f) = rules.judge_match(ri, seg, lo, &caps)
                            && self.reported.insert((ri, f.offset, f.len))
                        {
                            self.findings.push(f);
                        }
                    }
                }
            }
            self.next_segment = report_to;
        }
    }

    /// Drop bytes no window can need any more.
    fn trim(&mut self) {
        let keep_from = self.safe_offset().max(self.base);
        let cut = (keep_from - self.base) as usize;
        if cut > 0 {
            match &mut self.buf {
                Cow::Borrowed(b) => *b = &b[cut..],
                Cow::Owned(v) => {
                    v.drain(..cut);
                }
            }
            self.base = keep_from;
        }
    }
}

fn memchr_rev(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().rposition(|&b| b == needle)
}

impl RuleSet {
    /// Judge one match of rule `ri` in `window` (which starts at absolute `ws`):
    /// entropy, filler, allowlists, validator. The finding, or None when excused.
    fn judge_match(
        &self,
        ri: usize,
        window: &[u8],
        ws: u64,
        caps: &regex::bytes::Captures<'_>,
    ) -> Option<Finding> {
        let rule = &self.rules[ri];
        let whole = caps.get(0).expect("group 0 always participates");
        let secret = caps.get(rule.secret_group).unwrap_or(whole);
        self.judge_span(ri, window, ws, whole.range(), secret.range())
    }

    /// [`RuleSet::judge_match`] of the match `whole` whose secret is `secret` (spans
    /// of `window`).
    fn judge_span(
        &self,
        ri: usize,
        window: &[u8],
        ws: u64,
        whole: std::ops::Range<usize>,
        secret: std::ops::Range<usize>,
    ) -> Option<Finding> {
        let rule = &self.rules[ri];
        let bytes = &window[secret.clone()];
        if rule.entropy.is_some_and(|min| below_entropy(min, bytes)) || is_placeholder(bytes) {
            return None;
        }
        let line_start = memchr_rev(b'\n', &window[..whole.start]).map_or(0, |i| i + 1);
        let line_end = window[whole.end..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(window.len(), |i| whole.end + i);
        let cand = Candidate {
            secret: bytes,
            whole: &window[whole],
            line: &window[line_start..line_end],
        };
        if rule.allowlists.iter().any(|a| a.allows(&rule.id, &cand))
            || self.global.iter().any(|a| a.allows(&rule.id, &cand))
        {
            return None;
        }
        if rule
            .validator
            .is_some_and(|v| !v.check(window, secret.clone()))
        {
            return None;
        }
        Some(finding(ws + secret.start as u64, &rule.id, bytes))
    }

    /// Scan a whole buffer: the same as streaming it in any chunks.
    pub fn scan(&self, data: &[u8]) -> Vec<Finding> {
        self.scan_with(data, None, None)
    }

    /// [`RuleSet::scan`], also giving the keyword hits, sorted by (start, end,
    /// pattern). `given`: the hits of `data` when already known (every occurrence of
    /// every keyword, as the automaton would find them), so that the automaton does
    /// not run.
    pub(crate) fn scan_with(
        &self,
        data: &[u8],
        given: Option<Vec<Hit>>,
        hits: Option<&mut Vec<Hit>>,
    ) -> Vec<Finding> {
        // The whole buffer at once, borrowed: the findings of a stream are the same
        // for every chunking.
        let mut s = StreamScanner::new(self);
        s.hits_seen = hits.as_ref().map(|_| Vec::new());
        s.hits_given = given;
        s.buf = Cow::Borrowed(data);
        let mut out = s.finish();
        out.sort();
        if let (Some(h), Some(got)) = (hits, s.hits_seen.take()) {
            *h = got;
        }
        out
    }
}
