//! Secret scanning shared by pipelock (DLP on what leaves a bottle) and git-gate (what
//! a push carries).
//!
//! Rules come in gitleaks' TOML format ([`RuleSet::from_toml`]), or the built-in set
//! ([`RuleSet::builtin`], `builtin.toml`). A [`StreamScanner`] takes the input in chunks
//! of any size and reports the same [`Finding`]s as a scan of the whole buffer: a rule
//! is only tried in a bounded window around one of its keywords (one DFA of all
//! keywords), its regex runs on bytes (`regex::bytes`), and the secret must pass the
//! rule's Shannon-entropy threshold, allowlists (whole values only) and checksum
//! validator ([`validators`]). Rules without a keyword (card numbers, IBANs, Bitcoin
//! keys, seed phrases) are validated shapes run over fixed segments of the stream.
//! [`high_entropy_tokens`] looks for long random tokens in a URL. Findings carry the
//! rule id, the offset and a keyed hash ([`redact`]), never the secret.
//!
//! [`RuleSet::scan_deep`] also scans every decoded form of the input (percent, form,
//! quoted-printable, escapes, HTML, Unicode, base64, hex; nested, within a budget), and
//! [`inflate`] undoes a `Content-Encoding` with a cap. [`hostname`] judges host names
//! for encoded data (a DNS lookup is a channel out), [`redact`] writes hosts, paths and
//! messages for logs with such data hashed, and [`injection`] finds prompt-injection
//! shapes in responses to the agent.

mod byteset;
pub mod entropy;
pub mod hostname;
pub mod injection;
mod keywords;
mod lead;
mod normalize;
pub mod redact;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dlp;
pub mod validators;

pub use entropy::high_entropy_tokens;
pub use hostname::{HostReason, encoded_labels, encoded_labels_dlp};
pub use normalize::{
    InflateError, Limits, MAX_ENCODINGS, NormalizeError, inflate, is_invisible, text,
};
pub use rules::{BUILTIN_TOML, Rule, RuleSet, RulesError, shannon_entropy};
pub use scanner::{
    BACK, FORWARD, Finding, LINES_AFTER, SEGMENT, SEGMENT_LEFT, SEGMENT_OVERLAP, StreamScanner,
};

/// Deterministic secret-shaped strings for other crates' tests.
#[cfg(any(test, feature = "test-util"))]
pub mod test_support;
