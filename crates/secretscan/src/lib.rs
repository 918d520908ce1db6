//! Secret scanning shared by pipelock (DLP on what leaves a bottle) and git-gate (what
//! a push carries).
//!
//! Rules come in gitleaks' TOML format ([`RuleSet::from_toml`]), or the built-in set
//! ([`RuleSet::builtin`], `builtin.toml`). A [`StreamScanner`] takes the input in chunks
//! of any size and reports the same [`Finding`]s as a scan of the whole buffer: a rule
//! is only tried in a bounded window around one of its keywords (an Aho-Corasick
//! prefilter), its regex runs on bytes (`regex::bytes`), and the secret must pass the
//! rule's Shannon-entropy threshold, allowlists (whole values only) and checksum
//! validator ([`validators`]). Rules without a keyword (card numbers, IBANs, Bitcoin
//! keys, seed phrases) are validated shapes run over fixed segments of the stream.
//! [`high_entropy_tokens`] looks for long random tokens in a URL. Findings carry the
//! rule id and the offset, never the secret.

pub mod entropy;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_dlp;
pub mod validators;

pub use entropy::high_entropy_tokens;
pub use rules::{BUILTIN_TOML, Rule, RuleSet, RulesError, shannon_entropy};
pub use scanner::{
    BACK, FORWARD, Finding, LINES_AFTER, SEGMENT, SEGMENT_LEFT, SEGMENT_OVERLAP, StreamScanner,
};

/// Deterministic secret-shaped strings for other crates' tests.
#[cfg(any(test, feature = "test-util"))]
pub mod test_support;
