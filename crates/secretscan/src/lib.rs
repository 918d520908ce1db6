//! Secret scanning shared by pipelock (DLP on what leaves a bottle) and git-gate (what
//! a push carries).
//!
//! Rules come in gitleaks' TOML format ([`RuleSet::from_toml`]), or the built-in set
//! ([`RuleSet::builtin`], `builtin.toml`). A [`StreamScanner`] takes the input in chunks
//! of any size and reports the same [`Finding`]s as a scan of the whole buffer: a rule
//! is only tried in a bounded window around one of its keywords (an Aho-Corasick
//! prefilter), its regex runs on bytes (`regex::bytes`), and the secret must pass the
//! rule's Shannon-entropy threshold and allowlists. Findings carry the rule id and the
//! offset, never the secret.

mod normalize;
mod rules;
mod scanner;
#[cfg(test)]
mod tests;

pub use normalize::{
    InflateError, Limits, MAX_ENCODINGS, NormalizeError, inflate, is_invisible, text,
};
pub use rules::{BUILTIN_TOML, Rule, RuleSet, RulesError, shannon_entropy};
pub use scanner::{BACK, FORWARD, Finding, LINES_AFTER, StreamScanner};

/// Deterministic secret-shaped strings for other crates' tests.
#[cfg(any(test, feature = "test-util"))]
pub mod test_support;
