//! Writing about secrets without writing them down: a short keyed hash, and redactors
//! for the parts of a request an audit line names (host, path, free text).
//!
//! [`keyed_hash`] is HMAC-SHA256 under a key drawn at random when the process first
//! needs it, truncated to 8 hex digits. The key never leaves the process's memory: it is
//! in no file, config or log. So a hash in a log line cannot be brute-forced back to a
//! short secret (a 4-digit PIN, a 6-letter password) by anyone who reads the log, the
//! operator included, while two lines about the same value from one sidecar (until it
//! restarts) carry the same hash and can be correlated. A key from the sidecar's config
//! would correlate across restarts and sidecars, but it would sit on the host beside the
//! logs, and with both a short secret is found by trying every candidate; correlation
//! within one run is what an incident needs, and is kept. 32 bits tell apart the few
//! values a log is about, and are too few to confirm a guess across a large space.
//!
//! The redactors replace whatever is shaped like encoded data ([`crate::hostname`]) by
//! `<redacted:HASH>`: [`name`] with the host-name thresholds (a label that passes them
//! was sent in a DNS lookup anyway), [`path`] and [`text`] with the lower thresholds of
//! [`LOG`]. Each is linear in its input and never panics.

use std::sync::OnceLock;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::hostname::{BLOCK, HostReason, LOG, Limits, encoded_labels, rule_in, shape};

/// The key of [`keyed_hash`]: random per process (see the module docs).
fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(rand::random)
}

/// A short keyed hash of `value` (8 hex digits), for naming a secret in a log.
pub fn keyed_hash(value: &[u8]) -> String {
    keyed_hash_with(key(), value)
}

/// [`keyed_hash`] under a given key.
pub fn keyed_hash_with(key: &[u8], value: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return "00000000".into();
    };
    mac.update(value);
    let out = mac.finalize().into_bytes();
    out[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// What stands in for a redacted value.
fn placeholder(value: &[u8]) -> String {
    format!("<redacted:{}>", keyed_hash(value))
}

/// A host name for a log line: each label shaped like encoded data is replaced by its
/// hash; when the labels left of the last two carry data together (joined, too many,
/// too long), they are hashed as one.
pub fn name(host: &str) -> String {
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() > 2 {
        let cut = labels.len() - 2;
        let head = labels[..cut].join(".");
        let together = matches!(
            encoded_labels(&head),
            Some(r) if !matches!(r, HostReason::Label { .. })
        );
        if together {
            return format!(
                "{}.{}",
                placeholder(head.as_bytes()),
                labels[cut..].join(".")
            );
        }
    }
    labels
        .iter()
        .map(|l| word(l.as_bytes(), &BLOCK, true).unwrap_or_else(|| (*l).to_string()))
        .collect::<Vec<_>>()
        .join(".")
}

/// `w` redacted, or None when it may be written as it is; `deep` as for [`dlp`].
fn word(w: &[u8], limits: &Limits, deep: bool) -> Option<String> {
    let odd = w.iter().any(|&b| !b.is_ascii_graphic());
    (odd || shape(w, limits).is_some() || dlp(w, deep)).then(|| placeholder(w))
}

/// Whether a built-in DLP rule finds a secret in `w` ([`rule_in`]: as given and
/// upper-cased, as the host-label check reads labels): what pipelock refused for a rule
/// is not written down by a log line that quotes it, whatever its shape. Only words long
/// enough to hold a secret are scanned. With `deep` (host labels: few and short) the
/// rules also look through every decoding, since the shape thresholds are a heuristic a
/// random key's encoding can slip under; free text, every word of every audit line,
/// gets the plain scan.
fn dlp(w: &[u8], deep: bool) -> bool {
    /// Shorter than the shortest secret a built-in rule reports (a 14-digit card).
    const MIN_SECRET: usize = 12;
    static RULES: std::sync::OnceLock<crate::RuleSet> = std::sync::OnceLock::new();
    w.len() >= MIN_SECRET && rule_in(w, RULES.get_or_init(crate::RuleSet::builtin), deep).is_some()
}

/// Bytes of a path judged at most; the rest is replaced whole.
const MAX_PATH: usize = 8192;

/// A URL path (never a query: callers drop it) for a log line: each segment holding
/// something shaped like a token, after percent-decoding, is replaced by its hash.
pub fn path(path: &str) -> String {
    let (head, rest) = match path.char_indices().nth(MAX_PATH) {
        Some((i, _)) => (&path[..i], Some(&path[i..])),
        None => (path, None),
    };
    let mut out: String = head
        .split('/')
        .map(|seg| segment(seg).unwrap_or_else(|| seg.to_string()))
        .collect::<Vec<_>>()
        .join("/");
    if let Some(rest) = rest {
        out.push_str(&placeholder(rest.as_bytes()));
    }
    out
}

/// One path segment redacted, or None when it may be written as it is.
fn segment(seg: &str) -> Option<String> {
    let decoded = percent_decode(seg.as_bytes());
    // What survives one decoding still encoded, or is not printable ASCII, is opaque.
    if decoded.contains(&b'%') || decoded.iter().any(|b| !b.is_ascii_graphic()) {
        return Some(placeholder(seg.as_bytes()));
    }
    let pieces = decoded.split(|b| !b.is_ascii_alphanumeric());
    let joined: Vec<u8> = decoded
        .iter()
        .copied()
        .filter(u8::is_ascii_alphanumeric)
        .collect();
    let flagged = dlp(&decoded, false)
        || pieces
            .chain(std::iter::once(&joined[..]))
            .any(|p| shape(p, &LOG).is_some());
    flagged.then(|| placeholder(seg.as_bytes()))
}

/// `%XX` decoded once; a malformed escape is kept as it is.
fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).and_then(|&b| hex(b)),
                s.get(i + 2).and_then(|&b| hex(b)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// Free text (an error message, a detail) for a log line: each word (a run of letters,
/// digits and `+/=_-%`) shaped like a token is replaced by its hash; dots split words,
/// so a host name in the text is judged label by label.
pub fn text(s: &str) -> String {
    let token = |c: char| c.is_ascii_alphanumeric() || "+/=_-%".contains(c);
    let mut out = String::with_capacity(s.len());
    let mut start: Option<usize> = None;
    let flush = |out: &mut String, w: &str| match word(w.as_bytes(), &LOG, false) {
        Some(p) => out.push_str(&p),
        None => out.push_str(w),
    };
    for (i, c) in s.char_indices() {
        if token(c) {
            start.get_or_insert(i);
            continue;
        }
        if let Some(st) = start.take() {
            flush(&mut out, &s[st..i]);
        }
        out.push(c);
    }
    if let Some(st) = start {
        flush(&mut out, &s[st..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_rules_know_is_hashed_whatever_its_shape_or_case() {
        let key = format!("AKIA{}", "Z7XQ4RW3MBK2LJ5N");
        let lower = key.to_ascii_lowercase();
        for line in [
            text(&format!("refused CONNECT {lower}.exfil.example.test:443")),
            name(&format!("{lower}.exfil.example.test")),
            path(&format!("/v1/{key}/x")),
        ] {
            assert!(!line.to_ascii_lowercase().contains(&lower), "{line}");
            assert!(line.contains("<redacted:"), "{line}");
        }
    }
    use crate::test_support::rnd;

    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    #[test]
    fn the_hash_is_keyed_short_and_stable() {
        let a = keyed_hash(b"hunter2");
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(a, keyed_hash(b"hunter2"), "stable within a process");
        assert_ne!(a, keyed_hash(b"hunter3"));
        assert_ne!(
            keyed_hash_with(b"one key", b"hunter2"),
            keyed_hash_with(b"another", b"hunter2")
        );
        // HMAC-SHA256 (RFC 4231 test case 2), truncated.
        assert_eq!(
            keyed_hash_with(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146"
        );
    }

    #[test]
    fn an_encoded_key_in_a_label_is_hashed_even_when_its_shape_passes() {
        // The containment suite's `base32-label-dns` case with many random keys: the
        // shape heuristic lets some through; the decoded DLP check must not.
        for seed in 0..300 {
            let key = format!("AKIA{}", rnd(seed, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"));
            let label = crate::test_support::base32(key.as_bytes());
            let r = name(&format!("{label}.exfil.example.test"));
            assert!(!r.contains(&label), "{key} leaks as {r}");
        }
    }

    #[test]
    fn names_keep_real_labels_and_hash_encoded_ones() {
        assert_eq!(name("registry.npmjs.org"), "registry.npmjs.org");
        assert_eq!(
            name("d2908q01vomqb2.cloudfront.net"),
            "d2908q01vomqb2.cloudfront.net"
        );
        let secret = "6b6579206f6620313620627974657321";
        let r = name(&format!("{secret}.attacker.example"));
        assert!(!r.contains(secret), "{r}");
        assert!(
            r.starts_with("<redacted:") && r.ends_with(">.attacker.example"),
            "{r}"
        );
        let many = "a.b.c.d.e.f.g.attacker.example";
        let r = name(many);
        assert!(
            r.ends_with(">.attacker.example") && !r.contains("a.b"),
            "{r}"
        );
    }

    #[test]
    fn paths_keep_their_shape_and_lose_their_tokens() {
        for keep in [
            "/v1/messages",
            "/simple/requests/",
            "/packages/requests-2.31.0-py3-none-any.whl",
            "/org/repo.git/info/refs",
            "/@types%2fnode",
            "/-/lodash-4.17.21.tgz",
            "/manylinux2014_x86_64/",
            "/v1/models/claude-3-5-sonnet-20241022",
            "/MyProjectName/",
            "",
            "/",
        ] {
            assert_eq!(path(keep), keep);
        }
        for (p, secret) in [
            (
                "/upload/AKIAQ7RZ4TX2MBW6NC3P",
                "AKIAQ7RZ4TX2MBW6NC3P".to_string(),
            ),
            (
                "/x/AKIA-Q7RZ-4TX2-MBW6-NC3P/y",
                "AKIA-Q7RZ-4TX2-MBW6-NC3P".into(),
            ),
            (
                "/t/ghp_Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3",
                "ghp_Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3".into(),
            ),
            ("/k/%41%4B%49%41Q7RZ4TX2MBW6NC3P", "Q7RZ4TX2MBW6NC3P".into()),
            ("/h/deadbeef0011223344", "deadbeef0011223344".into()),
        ] {
            let r = path(p);
            assert!(!r.contains(&secret), "{p} -> {r}");
            assert!(r.contains("<redacted:"), "{r}");
        }
        for seed in 0..100 {
            let secret = rnd(seed, 24, ALNUM);
            let r = path(&format!("/api/{secret}/x"));
            assert!(!r.contains(&secret), "{r}");
            assert!(r.starts_with("/api/<redacted:") && r.ends_with(">/x"));
        }
    }

    #[test]
    fn text_loses_tokens_and_keeps_words() {
        let msg = "upstream proxy http://pipelock:3128 refused CONNECT api.anthropic.com:443: 403";
        assert_eq!(text(msg), msg);
        let secret = "sk-ant-api03-Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3";
        let r = text(&format!("bad token {secret} here"));
        assert!(
            !r.contains(secret) && r.starts_with("bad token <redacted:"),
            "{r}"
        );
        let host = "6b6579206f6620313620627974657321.attacker.example";
        let r = text(&format!("TLS server name {host} is not the CONNECT host"));
        assert!(!r.contains("6b6579206f66"), "{r}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        #[test]
        fn never_panics(s in "\\PC{0,400}") {
            let _ = name(&s);
            let _ = path(&s);
            let _ = text(&s);
        }
    }
}
