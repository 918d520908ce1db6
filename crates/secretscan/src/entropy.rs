//! Long high-entropy tokens in a URL: a secret whose format no rule knows (a random
//! API key, an encoded blob) still stands out in a request line by its randomness.
//!
//! [`high_entropy_tokens`] looks at the parts of a URL that reach the wire: host
//! labels, userinfo, path segments, query keys and values (not the fragment, which a
//! client does not send). Each part is cut into tokens at characters outside
//! `[A-Za-z0-9_+=-]` (a query value also keeps `/`, for standard base64); a token is a
//! finding when it is long and random:
//!
//! - at least [`MIN_TOKEN`] bytes ([`MIN_HOST_LABEL`] for a host label);
//! - a service's id (a lowercase word of 2 to 12 letters and `_` or `-` before the
//!   random part, as `msg_01…`, `file-…`, `chatcmpl-…`, `msgbatch_01…`): the random
//!   part at least [`MIN_PREFIXED_ID`] bytes;
//! - not a shape that real traffic is full of: all digits (ids, timestamps), a UUID,
//!   a hex digest of a standard length (32, 40, 56, 60, 64, 96 or 128 hex digits:
//!   package checksums, git object names, PyPI's blake2 paths, S3 signatures) outside
//!   host labels, or a slug (parts of at most 12 characters between `-`, `_` or `.`,
//!   each lowercase letters, uppercase letters or digits only);
//! - hex (of another length): Shannon entropy at least [`HEX_ENTROPY`] bits per byte;
//! - anything else: at least [`TOKEN_ENTROPY`] bits per byte ([`HOST_ENTROPY`] in a
//!   host label), and letters mixed with digits or both letter cases.
//!
//! Thresholds were tuned against the false-positive corpus in `tests.rs` (package
//! registry and git URLs, model API calls, signed-URL digests) and the random tokens
//! of [`crate::test_support::rnd`]: a random base62 token of 24 bytes has an entropy
//! near 4.2, an English slug under 4.0.
//!
//! Known limits, for the caller to weigh: a secret cut into tokens shorter than the
//! minimum (or spread over requests) passes; tokens that are random by design are
//! findings (presigned-URL signatures in base64, JWT signatures, Nix store hashes,
//! long random file ids), so the caller should apply this to hosts that are not
//! exempted by policy. A URL is read once, linearly; no allocation is proportional to
//! more than its length.

use crate::scanner::{Finding, finding};
use crate::shannon_entropy;

/// Shortest token that can be a finding in a path, query or userinfo.
pub const MIN_TOKEN: usize = 24;
/// Shortest host label that can be a finding.
pub const MIN_HOST_LABEL: usize = 20;
/// Entropy (bits per byte) from which a hex token is random.
pub const HEX_ENTROPY: f64 = 3.0;
/// Entropy (bits per byte) from which another token is random.
pub const TOKEN_ENTROPY: f64 = 3.9;
/// Entropy (bits per byte) from which a host label is random (labels are one case).
pub const HOST_ENTROPY: f64 = 3.5;
/// Shortest random part after a service's id prefix (`msg_`, `file-`, `chatcmpl-`).
pub const MIN_PREFIXED_ID: usize = 32;

/// Rule id of a finding in a host label.
pub const RULE_HOST: &str = "high-entropy-host-label";
/// Rule id of a finding in the userinfo (`user:password@`).
pub const RULE_USERINFO: &str = "high-entropy-userinfo";
/// Rule id of a finding in a path segment.
pub const RULE_PATH: &str = "high-entropy-path";
/// Rule id of a finding in a query key or value.
pub const RULE_QUERY: &str = "high-entropy-query";

/// Hex digest lengths that are not findings outside host labels.
const DIGEST_LENGTHS: [usize; 7] = [32, 40, 56, 60, 64, 96, 128];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Host,
    Userinfo,
    Path,
    Query,
}

/// Long high-entropy tokens in `url` (absolute-form `scheme://host/path?query`, or
/// origin-form `/path?query` as in a request line). Each finding's offset and length
/// are in bytes of `url`; its rule id says where the token was ([`RULE_HOST`],
/// [`RULE_USERINFO`], [`RULE_PATH`], [`RULE_QUERY`]).
pub fn high_entropy_tokens(url: &str) -> Vec<Finding> {
    let b = url.as_bytes();
    let mut out = Vec::new();
    // The fragment never goes on the wire.
    let end = memchr(b'#', b).unwrap_or(b.len());
    let mut pos = 0;
    if let Some(i) = find(b"://", &b[..end]) {
        let auth_start = i + 3;
        let auth_end = b[auth_start..end]
            .iter()
            .position(|&c| c == b'/' || c == b'?')
            .map_or(end, |j| auth_start + j);
        let auth = &b[auth_start..auth_end];
        let host_start = match auth.iter().rposition(|&c| c == b'@') {
            Some(at) => {
                tokens(b, auth_start, auth_start + at, Part::Userinfo, &mut out);
                auth_start + at + 1
            }
            None => auth_start,
        };
        // Host without the port; an IPv6 literal has nothing to look at.
        if b.get(host_start) != Some(&b'[') {
            let host_end = b[host_start..auth_end]
                .iter()
                .position(|&c| c == b':')
                .map_or(auth_end, |j| host_start + j);
            tokens(b, host_start, host_end, Part::Host, &mut out);
        }
        pos = auth_end;
    }
    let q = memchr(b'?', &b[pos..end]).map_or(end, |j| pos + j);
    tokens(b, pos, q, Part::Path, &mut out);
    if q < end {
        tokens(b, q + 1, end, Part::Query, &mut out);
    }
    out
}

fn token_byte(c: u8, part: Part) -> bool {
    match part {
        // A host label: letters, digits, hyphens (labels are cut at dots).
        Part::Host => c.is_ascii_alphanumeric() || c == b'-' || c == b'_',
        Part::Query => c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'/' | b'.'),
        Part::Path | Part::Userinfo => {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.')
        }
    }
}

/// Cut `b[from..to]` into tokens of `part` and push the random ones.
fn tokens(b: &[u8], from: usize, to: usize, part: Part, out: &mut Vec<Finding>) {
    let mut i = from;
    while i < to {
        if !token_byte(b[i], part) {
            i += 1;
            continue;
        }
        let start = i;
        while i < to && token_byte(b[i], part) {
            i += 1;
        }
        // Dots cut host labels; elsewhere a dot cuts a token unless it joins parts of
        // one random run (kept for the slug check, trimmed at the ends).
        let tok = &b[start..i];
        if part == Part::Host {
            let mut s = start;
            for label in tok.split(|&c| c == b'.') {
                judge(label, s, part, out);
                s += label.len() + 1;
            }
        } else {
            let mut s = start;
            for piece in tok.split(|&c| c == b'.') {
                judge(piece, s, part, out);
                s += piece.len() + 1;
            }
        }
    }
}

fn judge(tok: &[u8], at: usize, part: Part, out: &mut Vec<Finding>) {
    if is_random(tok, part) {
        let id = match part {
            Part::Host => RULE_HOST,
            Part::Userinfo => RULE_USERINFO,
            Part::Path => RULE_PATH,
            Part::Query => RULE_QUERY,
        };
        out.push(finding(at as u64, id, tok));
    }
}

/// Is `tok` a long random token (see the module docs)?
fn is_random(tok: &[u8], part: Part) -> bool {
    let n = tok.len();
    let min = if part == Part::Host {
        MIN_HOST_LABEL
    } else {
        MIN_TOKEN
    };
    if n < min || tok.iter().all(u8::is_ascii_digit) || is_uuid(tok) || is_slug(tok) {
        return false;
    }
    if part != Part::Host
        && let Some(body) = id_body(tok)
        && body.len() < MIN_PREFIXED_ID
    {
        return false;
    }
    let hex = tok.iter().all(u8::is_ascii_hexdigit)
        && (!tok.iter().any(u8::is_ascii_uppercase) || !tok.iter().any(u8::is_ascii_lowercase));
    if hex {
        if part != Part::Host && DIGEST_LENGTHS.contains(&n) {
            return false;
        }
        return shannon_entropy(tok) >= HEX_ENTROPY;
    }
    let upper = tok.iter().any(u8::is_ascii_uppercase);
    let lower = tok.iter().any(u8::is_ascii_lowercase);
    let digit = tok.iter().any(u8::is_ascii_digit);
    let mixed = (upper && lower) || ((upper || lower) && digit);
    let threshold = if part == Part::Host {
        HOST_ENTROPY
    } else {
        TOKEN_ENTROPY
    };
    mixed && shannon_entropy(tok) >= threshold
}

/// The random part of a service id: after a lowercase word of 2 to 12 letters and one
/// `_` or `-`.
fn id_body(t: &[u8]) -> Option<&[u8]> {
    let word = t.iter().take_while(|c| c.is_ascii_lowercase()).count();
    if (2..=12).contains(&word) && matches!(t.get(word), Some(b'_' | b'-')) {
        Some(&t[word + 1..])
    } else {
        None
    }
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(t: &[u8]) -> bool {
    t.len() == 36
        && t.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Words between separators: each part at most 12 bytes of one class (lowercase,
/// uppercase or digits), and more than one part.
fn is_slug(t: &[u8]) -> bool {
    let mut parts = 0;
    for p in t.split(|&c| matches!(c, b'-' | b'_' | b'.' | b'+' | b'/')) {
        if p.is_empty() {
            continue;
        }
        parts += 1;
        let one_class = p.iter().all(u8::is_ascii_lowercase)
            || p.iter().all(u8::is_ascii_uppercase)
            || p.iter().all(u8::is_ascii_digit)
            // A capitalised word.
            || (p[0].is_ascii_uppercase() && p[1..].iter().all(u8::is_ascii_lowercase));
        if p.len() > 12 || !one_class {
            return false;
        }
    }
    parts > 1
}

fn memchr(c: u8, b: &[u8]) -> Option<usize> {
    b.iter().position(|&x| x == c)
}

fn find(needle: &[u8], hay: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
