//! Secret scanning shared by pipelock (DLP on what leaves a bottle) and git-gate (what
//! a push carries).
//!
//! Rules come in gitleaks' TOML format ([`RuleSet::from_toml`]), or the built-in set
//! ([`RuleSet::builtin`], `builtin.toml`). A [`StreamScanner`] takes the input in chunks
//! of any size and reports the same [`Finding`]s as a scan of the whole buffer: a rule
//! is only tried in a bounded window around one of its keywords (an Aho-Corasick
//! prefilter), its regex runs on bytes (`regex::bytes`), and the secret must pass the
//! rule's Shannon-entropy threshold and allowlists. Findings carry the rule id and the
//! offset and a keyed hash ([`redact`]), never the secret.
//!
//! [`hostname`] judges host names for encoded data (a DNS lookup is a channel out), and
//! [`redact`] writes hosts, paths and messages for logs with such data hashed.

pub mod hostname;
pub mod injection;
mod normalize;
pub mod redact;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;

pub use hostname::{HostReason, encoded_labels, encoded_labels_dlp};
pub use normalize::{
    InflateError, Limits, MAX_ENCODINGS, NormalizeError, inflate, is_invisible, text,
};
pub use rules::{BUILTIN_TOML, Rule, RuleSet, RulesError, shannon_entropy};
pub use scanner::{BACK, FORWARD, Finding, LINES_AFTER, StreamScanner};

/// Deterministic secret-shaped strings for other crates' tests.
#[cfg(any(test, feature = "test-util"))]
pub mod test_support;
