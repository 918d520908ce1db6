//! Rules in gitleaks' TOML format, parsed with serde and compiled once.
//!
//! Supported: `[[rules]]` with `id`, `description`, `regex`, `secretGroup`, `entropy`,
//! `keywords`, `tags`, and per-rule `[[rules.allowlists]]` (or the older singular
//! `[rules.allowlist]`); a global `[allowlist]` (or `[[allowlists]]`). An allowlist has
//! `regexes` (matched against the secret, or the whole match or line with
//! `regexTarget`), `stopwords` and `condition` (`OR`, the default, or `AND`). Path and
//! commit allowlists are accepted but mean nothing to a byte stream: an `AND` allowlist
//! that has them never applies (fail closed).
//!
//! Unlike gitleaks, a keyword must occur inside the rule's match: the scanner only tries
//! a rule in a bounded window around a keyword hit, which is what lets it stream with a
//! bounded memory. A rule without `keywords` must name a `validator` (a checksum, see
//! [`crate::validators`]): it runs over every fixed-size segment of the stream instead.
//!
//! bottle extensions and deviations, so that the agent whose traffic is scanned cannot
//! choose when a rule looks away:
//! - `validator = "luhn" | "iban" | "wif" | "btc-address" | "secp256k1-key" | "bip39"`
//!   on a rule: a match is a finding only if the validator accepts it.
//! - `stopwords` match the **whole** secret (ASCII case-insensitive), never a substring:
//!   in gitleaks a stopword anywhere in the secret excuses it, so appending `.example`
//!   to a real key would hide it. Use them for an explicit list of documentation
//!   values.
//! - `entropy` is never stricter than what a random value of the secret's own length and
//!   alphabet reaches with near certainty ([`below_entropy`]): gitleaks' fixed `3.0` on
//!   `AKIA` + 16 base32 characters excuses about one real AWS key in 4,500, and `3.7`
//!   on a 32-digit hex API key excuses most of them. The threshold still excuses
//!   placeholders (`AKIAXXXXXXXXXXXXXXXX`, `aaaa…`), which sit far below random.
//! - A secret that is all filler ([`crate::validators::is_filler`]: `xxxx`, `0000`,
//!   every long part one repeated character) is never a finding, whatever the rules.

use regex::bytes::{Regex, RegexBuilder};
use serde::Deserialize;

use crate::keywords::Keywords;
use crate::lead::Lead;
use crate::validators::Validator;

/// Why a rule file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rule file is not valid gitleaks TOML")]
    Toml(#[from] toml::de::Error),
    #[error("rule {id}: regex does not compile")]
    Regex {
        id: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("allowlist of {scope}: regex {regex:?} does not compile")]
    AllowRegex {
        scope: String,
        regex: String,
        #[source]
        source: Box<regex::Error>,
    },
    #[error("rule {id}: has no regex (path-only rules are not supported)")]
    NoRegex { id: String },
    #[error("rule {id}: secretGroup {group} but the regex has only {groups} groups")]
    SecretGroup {
        id: String,
        group: usize,
        groups: usize,
    },
    #[error("allowlist of {scope}: unknown {field} {value:?}")]
    AllowValue {
        scope: String,
        field: &'static str,
        value: String,
    },
    #[error(
        "rule {id}: has no keywords and no validator; a rule without keywords runs over all traffic and needs a validator"
    )]
    NoKeywordsNoValidator { id: String },
    #[error("rule {id}: validator")]
    Validator {
        id: String,
        #[source]
        source: crate::validators::UnknownValidator,
    },
    #[error("rule id {0} appears twice")]
    DuplicateId(String),
    #[error("the rule file has no rules")]
    Empty,
    #[error("keyword automaton")]
    Keywords(#[from] crate::keywords::BuildError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    #[allow(dead_code)]
    title: Option<String>,
    #[serde(default)]
    rules: Vec<RawRule>,
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    regex: Option<String>,
    #[serde(default, rename = "secretGroup")]
    secret_group: Option<usize>,
    #[serde(default)]
    entropy: Option<f64>,
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    tags: Vec<String>,
    #[serde(default)]
    #[allow(dead_code)]
    path: Option<String>,
    #[serde(default)]
    validator: Option<String>,
    #[serde(default)]
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowlist {
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default, rename = "regexTarget")]
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default, rename = "targetRules")]
    target_rules: Vec<String>,
}

/// What an allowlist regex is matched against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Secret,
    Match,
    Line,
}

/// A compiled allowlist.
#[derive(Debug)]
pub(crate) struct Allowlist {
    and: bool,
    target: Target,
    regexes: Vec<Regex>,
    /// Whole values, lowercased (ASCII).
    stopwords: Vec<Vec<u8>>,
    /// An AND allowlist with path or commit conditions can never hold here.
    never: bool,
    /// Global allowlists can be limited to some rule ids.
    target_rules: Vec<String>,
}

/// The text an allowlist looks at, for one candidate finding.
pub(crate) struct Candidate<'a> {
    pub secret: &'a [u8],
    pub whole: &'a [u8],
    pub line: &'a [u8],
}

/// The built-in whole-value judgement every rule gets, before its allowlists: filler.
pub(crate) fn is_placeholder(secret: &[u8]) -> bool {
    crate::validators::is_filler(secret)
}

impl Allowlist {
    fn compile(raw: RawAllowlist, scope: &str) -> Result<Allowlist, RulesError> {
        let and = match raw.condition.as_deref().map(str::to_ascii_uppercase) {
            None => false,
            Some(c) if c == "OR" => false,
            Some(c) if c == "AND" => true,
            Some(c) => {
                return Err(RulesError::AllowValue {
                    scope: scope.to_string(),
                    field: "condition",
                    value: c,
                });
            }
        };
        let target = match raw.regex_target.as_deref() {
            None | Some("secret") => Target::Secret,
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            Some(t) => {
                return Err(RulesError::AllowValue {
                    scope: scope.to_string(),
                    field: "regexTarget",
                    value: t.to_string(),
                });
            }
        };
        let regexes = raw
            .regexes
            .iter()
            .map(|r| {
                Regex::new(r).map_err(|e| RulesError::AllowRegex {
                    scope: scope.to_string(),
                    regex: r.clone(),
                    source: Box::new(e),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Allowlist {
            and,
            target,
            regexes,
            stopwords: raw
                .stopwords
                .iter()
                .map(|s| s.as_bytes().to_ascii_lowercase())
                .collect(),
            never: and && (!raw.paths.is_empty() || !raw.commits.is_empty()),
            target_rules: raw.target_rules,
        })
    }

    /// Does this allowlist excuse `c`?
    pub(crate) fn allows(&self, rule_id: &str, c: &Candidate<'_>) -> bool {
        if self.never {
            return false;
        }
        if !self.target_rules.is_empty() && !self.target_rules.iter().any(|r| r == rule_id) {
            return false;
        }
        let text = match self.target {
            Target::Secret => c.secret,
            Target::Match => c.whole,
            Target::Line => c.line,
        };
        let mut conds = Vec::with_capacity(2);
        if !self.regexes.is_empty() {
            conds.push(self.regexes.iter().any(|r| r.is_match(text)));
        }
        if !self.stopwords.is_empty() {
            // The whole secret, never a substring: see the module docs.
            conds.push(
                self.stopwords
                    .iter()
                    .any(|w| w.eq_ignore_ascii_case(c.secret)),
            );
        }
        if conds.is_empty() {
            return false;
        }
        if self.and {
            conds.iter().all(|&b| b)
        } else {
            conds.iter().any(|&b| b)
        }
    }
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub(crate) regex: Regex,
    pub(crate) secret_group: usize,
    pub(crate) entropy: Option<f64>,
    pub(crate) allowlists: Vec<Allowlist>,
    pub(crate) validator: Option<Validator>,
    /// Where a match can start (keywordless rules: see [`crate::lead`]).
    pub(crate) lead: Option<Lead>,
}

/// A compiled rule set: the rules, the global allowlists, and the keyword automaton.
#[derive(Debug)]
pub struct RuleSet {
    pub(crate) rules: Vec<Rule>,
    pub(crate) global: Vec<Allowlist>,
    pub(crate) keywords: Keywords,
    /// For each keyword pattern id, the rules that listed it.
    pub(crate) keyword_rules: Vec<Vec<usize>>,
    /// Length of the longest keyword.
    pub(crate) max_keyword: usize,
    /// Rules without keywords (each has a validator), run over every segment.
    pub(crate) keywordless: Vec<usize>,
    /// The (lower-case, alphanumeric) keywords of rules that only match upper case
    /// ([`upper_only`]): lower-casing such a secret loses nothing, so
    /// [`RuleSet::scan_deep`] upper-cases lower-case runs that hold one of these.
    pub(crate) fold_keywords: Vec<String>,
}

/// Does the regex source match no ASCII lower-case letter? Conservative: any
/// lower-case letter in it (a flag such as `(?i)`, a class `a-z`, `\w`, `\p{..}`), a
/// negated class or `.` says no. `\b`, `\d`, `\s` and `\B` are allowed.
pub(crate) fn upper_only(src: &str) -> bool {
    let mut chars = src.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('b' | 'B' | 'd' | 's') => {}
                Some(e) if e.is_ascii_alphanumeric() => return false,
                _ => {}
            },
            '.' => return false,
            '[' if chars.clone().next() == Some('^') => return false,
            c if c.is_ascii_lowercase() => return false,
            _ => {}
        }
    }
    true
}

/// The rules shipped with bottle.
pub const BUILTIN_TOML: &str = include_str!("builtin.toml");

impl Rule {
    /// The rule's regular expression, as written in its rule file.
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }
}

impl RuleSet {
    /// The built-in rules.
    pub fn builtin() -> RuleSet {
        RuleSet::from_toml(BUILTIN_TOML).expect("built-in rules compile (tested)")
    }

    /// Parse and compile a gitleaks-format TOML rule file.
    pub fn from_toml(text: &str) -> Result<RuleSet, RulesError> {
        let raw: RawConfig = toml::from_str(text)?;
        if raw.rules.is_empty() {
            return Err(RulesError::Empty);
        }
        let mut global = Vec::new();
        for a in raw.allowlist.into_iter().chain(raw.allowlists) {
            global.push(Allowlist::compile(a, "the global allowlist")?);
        }
        let mut rules = Vec::new();
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut keywordless = Vec::new();
        let mut fold_keywords: Vec<String> = Vec::new();
        for r in raw.rules {
            if rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(RulesError::DuplicateId(r.id));
            }
            let Some(src) = r.regex else {
                return Err(RulesError::NoRegex { id: r.id });
            };
            let validator = match &r.validator {
                None => None,
                Some(v) => Some(v.parse::<Validator>().map_err(|e| RulesError::Validator {
                    id: r.id.clone(),
                    source: e,
                })?),
            };
            if r.keywords.is_empty() && validator.is_none() {
                return Err(RulesError::NoKeywordsNoValidator { id: r.id });
            }
            let regex = RegexBuilder::new(&src)
                .size_limit(1 << 22)
                .build()
                .map_err(|e| RulesError::Regex {
                    id: r.id.clone(),
                    source: Box::new(e),
                })?;
            let groups = regex.captures_len() - 1;
            let secret_group = match r.secret_group {
                Some(g) if g > groups => {
                    return Err(RulesError::SecretGroup {
                        id: r.id,
                        group: g,
                        groups,
                    });
                }
                Some(g) => g,
                // gitleaks: without secretGroup, the first group is the secret if any.
                None => usize::from(groups > 0),
            };
            let scope = format!("rule {}", r.id);
            let mut allowlists = Vec::new();
            for a in r.allowlist.into_iter().chain(r.allowlists) {
                allowlists.push(Allowlist::compile(a, &scope)?);
            }
            let idx = rules.len();
            let lead = if r.keywords.is_empty() {
                keywordless.push(idx);
                Lead::of(&src, validator, secret_group == 0)
            } else {
                None
            };
            let fold = upper_only(&src);
            for k in r.keywords {
                let k = k.to_ascii_lowercase();
                if fold
                    && k.bytes().all(|b| b.is_ascii_alphanumeric())
                    && !fold_keywords.contains(&k)
                {
                    fold_keywords.push(k.clone());
                }
                match patterns.iter().position(|p| *p == k) {
                    Some(p) => keyword_rules[p].push(idx),
                    None => {
                        patterns.push(k);
                        keyword_rules.push(vec![idx]);
                    }
                }
            }
            rules.push(Rule {
                description: r.description.unwrap_or_default(),
                id: r.id,
                regex,
                secret_group,
                entropy: r.entropy,
                allowlists,
                validator,
                lead,
            });
        }
        let keywords = Keywords::new(&patterns)?;
        let max_keyword = patterns.iter().map(String::len).max().unwrap_or(1);
        Ok(RuleSet {
            rules,
            global,
            keywords,
            keyword_rules,
            max_keyword,
            keywordless,
            fold_keywords,
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

impl Rule {
    /// The rule's regex as written.
    pub fn regex_source(&self) -> &str {
        self.regex.as_str()
    }
}

/// Bits below the expected entropy of a random value at which [`below_entropy`]'s
/// floor sits: a random value falls that far under its mean less than once in a
/// million draws at the lengths rules use (measured by sampling; the test
/// `a_random_value_of_a_rules_shape_is_found` holds it).
const RANDOM_SLACK: f64 = 1.25;

/// Is `secret` too ordered to be a real secret under a rule's `min` entropy? True when
/// its Shannon entropy is at most `min`, or at most the floor a random value of the
/// same length over the same alphabet stays above (its expected entropy less
/// [`RANDOM_SLACK`]), whichever is lower. So a threshold written for one alphabet and
/// length never excuses a real random secret of another.
pub fn below_entropy(min: f64, secret: &[u8]) -> bool {
    let h = shannon_entropy(secret);
    h <= min && h <= expected_random_entropy(secret.len(), alphabet_size(secret)) - RANDOM_SLACK
}

/// The size of the smallest usual alphabet `secret` is written in: hex (either case),
/// base32 (either case), one-case alphanumerics, alphanumerics, or base64 and wider.
fn alphabet_size(secret: &[u8]) -> usize {
    let all = |f: fn(&u8) -> bool| secret.iter().all(f);
    if all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
        || all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
    {
        16
    } else if all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(b))
        || all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(b))
    {
        32
    } else if all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        || all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        36
    } else if all(u8::is_ascii_alphanumeric) {
        62
    } else {
        64
    }
}

/// The expected Shannon entropy (bits per byte) of `n` bytes drawn uniformly from `k`
/// symbols: each symbol's count is Binomial(n, 1/k), so the mean is
/// `-k * sum_c P(c) * (c/n) * log2(c/n)`. Exact, O(n); `n` is capped at 1024, which
/// only lowers the floor (the mean grows with `n`).
pub(crate) fn expected_random_entropy(n: usize, k: usize) -> f64 {
    let n = n.min(1024);
    if n == 0 {
        return 0.0;
    }
    let (nf, p) = (n as f64, 1.0 / k as f64);
    // P(c) by the recurrence P(c) = P(c-1) * (n-c+1)/c * p/(1-p), from P(0) = (1-p)^n.
    let mut pc = (1.0 - p).powi(n as i32);
    let mut sum = 0.0;
    for c in 1..=n {
        pc *= (nf - c as f64 + 1.0) / c as f64 * p / (1.0 - p);
        let q = c as f64 / nf;
        sum -= pc * q * q.log2();
    }
    k as f64 * sum
}

/// Shannon entropy of `data`, in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let n = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}
