//! Host names as a channel out: is data encoded into the labels of a name?
//!
//! With `*.attacker.example` allowed, `<hex of a secret>.attacker.example` carries the
//! secret to the domain's DNS servers in the lookup itself, before any byte of a request
//! is sent. [`encoded_labels`] judges the labels an agent can choose (the part of a name
//! below the operator's wildcard) by their *shape*, so a proxy can refuse the name
//! before it resolves it:
//!
//! - a label longer than [`MAX_LABEL`] bytes;
//! - a hex run of [`BLOCK`]`.hex` characters or more (16: 8 bytes of data), a run of 20
//!   or more digits;
//! - a base32/base36 shape: letters and digits mixed, switching often between the two;
//! - a base64 shape: upper and lower case mixed, switching often (only a name whose case
//!   was kept, e.g. a raw DNS question, can show it);
//! - random letters: a long run without vowels, or too few vowels for a word;
//! - Shannon entropy above [`BLOCK`]`.entropy_bits` in a long label;
//! - more than [`MAX_FREE_LABELS`] labels, or more than [`MAX_FREE_LEN`] bytes, under
//!   the wildcard;
//! - and, with [`encoded_labels_dlp`], a DLP rule that fires on the labels joined.
//!
//! Each label is judged piece by piece (split at `-` and `_`) *and* whole with the
//! separators removed, so hyphens inserted between the characters of an encoding do not
//! hide it. The thresholds were set against real names (CDN and object-store hosts,
//! package registries, model APIs, preview deploys; see the tests): a short random
//! identifier (a CloudFront distribution, a 9-character preview hash, a 6-character
//! bucket suffix, a 7-character commit) passes, so a name can still carry some tens of
//! bits; what is refused is a label that carries a secret's worth of data. A name the
//! operator allowed exactly carries nothing the agent chose, and is not judged (see
//! pipelock's `allowed`).
//!
//! The same shape test, with the lower thresholds of [`LOG`], decides which path
//! segments and words the audit writers replace by a keyed hash ([`crate::redact`]).
//! Everything here works on bytes with bounded loops: no input panics.

use std::fmt;

use super::rules::{RuleSet, shannon_entropy};

/// Longest label accepted under a wildcard (DNS allows 63).
pub const MAX_LABEL: usize = 48;
/// Most labels accepted under a wildcard (`bucket.s3.us-east-1` is 3).
pub const MAX_FREE_LABELS: usize = 4;
/// Longest part of a name accepted under a wildcard, dots included.
pub const MAX_FREE_LEN: usize = 96;

/// What a run of characters looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Longer than the limit.
    Long,
    /// Hexadecimal.
    Hex,
    /// Decimal digits.
    Digits,
    /// Letters and digits mixed, as in base32 or base36.
    Base32,
    /// Upper and lower case mixed, as in base64.
    Base64,
    /// Letters that do not form words: a long run without vowels, or few vowels.
    RandomLetters,
    /// High Shannon entropy.
    Entropy,
}

impl Shape {
    fn describe(self) -> &'static str {
        match self {
            Shape::Long => "too long",
            Shape::Hex => "hex-shaped",
            Shape::Digits => "a long run of digits",
            Shape::Base32 => "base32-shaped (letters and digits mixed)",
            Shape::Base64 => "base64-shaped (upper and lower case mixed)",
            Shape::RandomLetters => "random letters",
            Shape::Entropy => "high-entropy",
        }
    }
}

/// Why a name looks like it carries encoded data. Never holds the name or a label:
/// only positions, lengths and the rule.
#[derive(Clone, Debug, PartialEq)]
pub enum HostReason {
    /// Label `label` (1-based, from the left) of `len` bytes has this shape.
    Label {
        label: usize,
        len: usize,
        shape: Shape,
    },
    /// The `count` labels joined (`len` bytes without the dots) have this shape.
    Labels {
        count: usize,
        len: usize,
        shape: Shape,
    },
    /// More labels than [`MAX_FREE_LABELS`].
    TooManyLabels { count: usize },
    /// Longer than [`MAX_FREE_LEN`].
    LongName { len: usize },
    /// A DLP rule fired on the labels.
    Dlp { rule: String },
}

impl fmt::Display for HostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostReason::Label { label, len, shape } => {
                write!(f, "label {label} ({len} bytes) is {}", shape.describe())
            }
            HostReason::Labels { count, len, shape } => write!(
                f,
                "its {count} labels joined ({len} bytes) are {}",
                shape.describe()
            ),
            HostReason::TooManyLabels { count } => write!(
                f,
                "{count} labels under the allowed domain (at most {MAX_FREE_LABELS})"
            ),
            HostReason::LongName { len } => write!(
                f,
                "{len} bytes under the allowed domain (at most {MAX_FREE_LEN})"
            ),
            HostReason::Dlp { rule } => write!(f, "the labels match DLP rule {rule}"),
        }
    }
}

/// Thresholds of the shape test: [`BLOCK`] for names (what is refused), [`LOG`] for what
/// the audit writers redact.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A piece this long or longer is [`Shape::Long`].
    pub long: usize,
    /// A hex run with a letter, this long or longer.
    pub hex: usize,
    /// A run of digits this long or longer.
    pub digits: usize,
    /// A piece mixing letters and digits this long or longer, with at least a quarter of
    /// its positions switching between the two, is [`Shape::Base32`]; the whole (the
    /// pieces joined) needs `mixed_whole`.
    pub mixed: usize,
    pub mixed_whole: usize,
    /// A piece mixing cases this long or longer, switching case at a third of its
    /// positions, is [`Shape::Base64`].
    pub case_mix: usize,
    /// A run of consonants this long, or a letters-only piece this long with under a
    /// quarter vowels, or this many adjacent letter pairs of which over half are two
    /// consonants, is [`Shape::RandomLetters`].
    pub consonants: usize,
    pub few_vowels: usize,
    /// A whole this long or longer whose entropy is above `entropy_bits`.
    pub entropy_len: usize,
    pub entropy_bits: f64,
}

/// What is refused in a host name.
pub const BLOCK: Limits = Limits {
    long: MAX_LABEL + 1,
    hex: 16,
    digits: 20,
    mixed: 16,
    mixed_whole: 24,
    case_mix: 16,
    consonants: 7,
    few_vowels: 16,
    entropy_len: 24,
    entropy_bits: 4.3,
};

/// What the audit writers redact in paths and messages: a lower bar, since losing a
/// harmless identifier from a log line costs little.
pub const LOG: Limits = Limits {
    long: 33,
    hex: 12,
    digits: 12,
    mixed: 12,
    mixed_whole: 16,
    case_mix: 16,
    consonants: 6,
    few_vowels: 14,
    entropy_len: 24,
    entropy_bits: 4.2,
};

/// Labels read at most (a name has at most 127); the rest count, unread.
const MAX_READ: usize = 128;

/// Does the part of a name an agent chose (below the allowed wildcard, or a whole name)
/// look like it carries encoded data? Judged on shape alone: see the module docs.
pub fn encoded_labels(name: &str) -> Option<HostReason> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    let mut count = 0;
    for (i, label) in name.split('.').enumerate() {
        count += 1;
        if i >= MAX_READ {
            continue;
        }
        if let Some(shape) = shape(label.as_bytes(), &BLOCK) {
            return Some(HostReason::Label {
                label: i + 1,
                len: label.len(),
                shape,
            });
        }
    }
    if count > MAX_FREE_LABELS {
        return Some(HostReason::TooManyLabels { count });
    }
    // Data spread over several labels: the labels joined, judged as one.
    if count > 1 {
        let joined: Vec<u8> = name.bytes().filter(|&b| b != b'.').collect();
        // No length or entropy limit here: long multi-label names of words are
        // common, and their entropy grows with the length.
        let whole = Limits {
            long: usize::MAX,
            entropy_len: usize::MAX,
            ..BLOCK
        };
        if let Some(shape) = shape(&joined, &whole) {
            return Some(HostReason::Labels {
                count,
                len: joined.len(),
                shape,
            });
        }
    }
    if name.len() > MAX_FREE_LEN {
        return Some(HostReason::LongName { len: name.len() });
    }
    None
}

/// [`encoded_labels`], then `rules` on the labels as written and joined without dots,
/// each through [`rule_in`] deep: every decoding `scan_deep` knows, in either case. The
/// shape thresholds are a heuristic a random key's encoding can slip under (about one
/// base32 AWS key in twenty); its decoding cannot. The chosen part of a name is at most
/// [`MAX_FREE_LEN`] bytes by then, so the decodings are cheap.
pub fn encoded_labels_dlp(name: &str, rules: &RuleSet) -> Option<HostReason> {
    if let Some(r) = encoded_labels(name) {
        return Some(r);
    }
    let joined: String = name.chars().filter(|&c| c != '.').collect();
    [name, &joined]
        .into_iter()
        .find_map(|text| rule_in(text.as_bytes(), rules, true))
        .map(|rule| HostReason::Dlp { rule })
}

/// The id of the first rule of `rules` that finds a secret in `text` as given or, when
/// it has lower case, upper-cased (DNS folds names to lower case; a rule may not be
/// case-blind). With `deep`, through every decoding `scan_deep` knows (base32, hex,
/// base64...), and past its budget counts as found (`undecidable`): the one check of a
/// name's labels for what pipelock refuses and what the audit writers hash.
pub(crate) fn rule_in(text: &[u8], rules: &RuleSet, deep: bool) -> Option<String> {
    let find = |b: &[u8]| {
        if deep {
            match rules.scan_deep(b, &crate::Limits::default()) {
                Ok(found) => found.into_iter().next().map(|f| f.rule_id),
                Err(e) => Some(format!("undecidable ({e})")),
            }
        } else {
            rules.scan(b).into_iter().next().map(|f| f.rule_id)
        }
    };
    find(text).or_else(|| {
        text.iter()
            .any(u8::is_ascii_lowercase)
            .then(|| find(&text.to_ascii_uppercase()))
            .flatten()
    })
}

/// The shape of one label or word, if it looks like encoded data under `limits`: each
/// piece (split at `-` and `_`) and the pieces joined are judged.
pub fn shape(word: &[u8], limits: &Limits) -> Option<Shape> {
    if word.len() >= limits.long {
        return Some(Shape::Long);
    }
    for piece in word.split(|&b| b == b'-' || b == b'_') {
        if let Some(s) = judge(piece, limits, limits.mixed) {
            return Some(s);
        }
    }
    let whole: Vec<u8> = word
        .iter()
        .copied()
        .filter(|&b| b != b'-' && b != b'_')
        .collect();
    if let Some(s) = judge(&whole, limits, limits.mixed_whole) {
        return Some(s);
    }
    (whole.len() >= limits.entropy_len && shannon_entropy(&whole) > limits.entropy_bits)
        .then_some(Shape::Entropy)
}

fn is_vowel(b: u8) -> bool {
    matches!(
        b.to_ascii_lowercase(),
        b'a' | b'e' | b'i' | b'o' | b'u' | b'y'
    )
}

/// One run of characters without separators.
fn judge(p: &[u8], limits: &Limits, mixed_len: usize) -> Option<Shape> {
    if p.len() >= limits.long {
        return Some(Shape::Long);
    }
    // Runs of hex (with at least one letter) and of digits, anywhere in the piece.
    let (mut hex_run, mut hex_letter, mut digit_run) = (0usize, false, 0usize);
    let (mut digits, mut letters, mut vowels) = (0usize, 0usize, 0usize);
    let (mut upper, mut lower) = (0usize, 0usize);
    let (mut class_switch, mut case_switch) = (0usize, 0usize);
    let (mut consonant_run, mut max_consonants) = (0usize, 0usize);
    // Adjacent letter pairs, and those of two consonants.
    let (mut pairs, mut cc_pairs) = (0usize, 0usize);
    let mut prev_letter: Option<bool> = None;
    let mut prev_digit: Option<bool> = None;
    let mut prev_upper: Option<bool> = None;
    for &b in p {
        if b.is_ascii_hexdigit() {
            hex_run += 1;
            hex_letter |= b.is_ascii_alphabetic();
            if hex_run >= limits.hex && hex_letter {
                return Some(Shape::Hex);
            }
        } else {
            hex_run = 0;
            hex_letter = false;
        }
        if b.is_ascii_digit() {
            digit_run += 1;
            digits += 1;
            if digit_run >= limits.digits {
                return Some(Shape::Digits);
            }
        } else {
            digit_run = 0;
        }
        if b.is_ascii_alphabetic() {
            letters += 1;
            let up = b.is_ascii_uppercase();
            if up {
                upper += 1;
            } else {
                lower += 1;
            }
            if prev_upper.is_some_and(|u| u != up) {
                case_switch += 1;
            }
            prev_upper = Some(up);
            let vowel = is_vowel(b);
            if vowel {
                vowels += 1;
                consonant_run = 0;
            } else {
                consonant_run += 1;
                max_consonants = max_consonants.max(consonant_run);
            }
            if let Some(prev_vowel) = prev_letter {
                pairs += 1;
                cc_pairs += usize::from(!prev_vowel && !vowel);
            }
            prev_letter = Some(vowel);
        } else {
            consonant_run = 0;
            prev_letter = None;
        }
        if b.is_ascii_alphanumeric() {
            let d = b.is_ascii_digit();
            if prev_digit.is_some_and(|x| x != d) {
                class_switch += 1;
            }
            prev_digit = Some(d);
        }
    }
    let n = p.len();
    if n >= mixed_len && digits >= 3 && letters >= 3 && class_switch * 5 >= n {
        return Some(Shape::Base32);
    }
    // Upper-case letters with digits (AKIA-style keys) in a run this long.
    if n >= mixed_len && lower == 0 && upper >= 3 && digits >= 1 && p == p.to_ascii_uppercase() {
        return Some(Shape::Base32);
    }
    if n >= limits.case_mix
        && upper >= 2
        && lower >= 2
        && (case_switch * 3 >= letters || (digits >= 2 && case_switch * 4 >= letters))
    {
        return Some(Shape::Base64);
    }
    // Words alternate vowels and consonants: about a third of their letter pairs are
    // two consonants, random letters two thirds.
    if max_consonants >= limits.consonants
        || (digits == 0 && letters >= limits.few_vowels && vowels * 4 < letters)
        || (pairs >= limits.few_vowels && cc_pairs * 2 > pairs)
    {
        return Some(Shape::RandomLetters);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::rnd;

    const HEX: &[u8] = b"0123456789abcdef";
    const B32: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
    const B36: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    const B64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-";

    /// The part of each real name an agent could vary under a typical wildcard, and
    /// some whole names: none may be refused.
    const REAL_FREE: &[&str] = &[
        "d2908q01vomqb2",
        "dfkcx9tkaqo1a",
        "d111111abcdef8",
        "storage",
        "objects",
        "registry",
        "files",
        "github-production-release-asset-2e65be",
        "github-production-repository-file-5c1aeb",
        "github-production-user-asset-6210df",
        "codeload",
        "api",
        "lga25s62-in-f14",
        "my-app-git-feature-branch-myteam",
        "my-app-e5kq9x2mz-myteam",
        "dashboard-git-fix-login-redirect-acme-corp",
        "deploy-preview-42--site",
        "5f8a3b2c.my-project",
        "a1b2c3d.my-docs",
        "my-company-artifacts-prod-us-east-1",
        "internal-my-internal-loadbalancer-1234567890.us-west-2.elb",
        "production.cloudflare",
        "release-assets",
        "raw",
        "avatars",
        "pkg-containers",
        "dualstack.python.map",
        "cdn-lfs-us-1",
        "cas-bridge.xethub",
        "us-central1-docker",
        "europe-west4-aiplatform",
        "service-name-abc123xyz-uc.a",
        "bucket.s3.us-east-1",
        "my-bucket.s3.dualstack.eu-west-1",
        "sts.us-east-1",
        "runtime.sagemaker",
        "bedrock-runtime.us-west-2",
        "login.microsoftonline",
        "xn--bcher-kva",
        "prod-registry-k8s-io-us-east-1",
        "static.crates",
        "index.crates",
        "o4505055446204416.ingest.us",
        "o123456.ingest",
        "featuregates",
        "ghcr",
        "pkgs",
        "www",
    ];

    /// Whole real names: every label passes (the count is not judged: a wildcard is
    /// below the registrable domain).
    const REAL_WHOLE: &[&str] = &[
        "api.anthropic.com",
        "registry.npmjs.org",
        "files.pythonhosted.org",
        "storage.googleapis.com",
        "objects.githubusercontent.com",
        "codeload.github.com",
        "lga25s62-in-f14.1e100.net",
        "mybucketname.s3.amazonaws.com",
        "statsig.anthropic.com",
        "sentry.io",
        "static.rust-lang.org",
        "proxy.golang.org",
        "repo.maven.apache.org",
        "rubygems.org",
        "ppa.launchpadcontent.net",
        "deb.debian.org",
        "security.ubuntu.com",
        "auth.docker.io",
        "registry-1.docker.io",
        "production.cloudflare.docker.com",
        "huggingface.co",
        "cdn-lfs-us-1.hf.co",
        "pypi.org",
        "nodejs.org",
        "dl-cdn.alpinelinux.org",
        "mirrors.kernel.org",
        "github-cloud.githubusercontent.com",
        "pipelines.actions.githubusercontent.com",
        "productionresultssa0.blob.core.windows.net",
    ];

    #[test]
    fn real_names_pass() {
        let bad: Vec<_> = REAL_FREE
            .iter()
            .map(|n| (n, encoded_labels(n)))
            .filter(|(_, r)| r.is_some())
            .collect();
        assert!(bad.is_empty(), "{bad:?}");
        for n in REAL_WHOLE {
            for l in n.split('.') {
                assert_eq!(shape(l.as_bytes(), &BLOCK), None, "{n}");
            }
        }
    }

    #[test]
    fn encoded_secrets_are_caught() {
        // A 16-byte secret (and a 32-byte one) in each common encoding, as one label,
        // hyphenated every 5 characters, and spread over labels: the share caught over
        // 500 random secrets, and the least share required.
        let one = |l: &str| l.to_string();
        let hyphenate = |l: &str| {
            l.as_bytes()
                .chunks(5)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-")
        };
        let spread = |l: &str| {
            l.as_bytes()
                .chunks(15)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join(".")
        };
        type Form<'a> = (&'a str, &'a dyn Fn(&str) -> String);
        let forms: [Form; 3] = [
            ("one label", &one),
            ("hyphenated", &hyphenate),
            ("spread over labels", &spread),
        ];
        let encodings: [(&str, usize, &[u8], f64); 7] = [
            ("hex, 16 bytes", 32, HEX, 1.0),
            ("hex, 8 bytes", 16, HEX, 1.0),
            ("base32, 16 bytes", 26, B32, 0.93),
            ("base36, 16 bytes", 25, B36, 0.97),
            ("base64url, 16 bytes", 22, B64URL, 0.95),
            ("base32, 32 bytes", 52, B32, 0.97),
            ("hex, 32 bytes", 64, HEX, 1.0),
        ];
        const N: u64 = 500;
        let mut report = Vec::new();
        let mut ok = true;
        for (what, len, alphabet, least) in encodings {
            for (how, form) in &forms {
                let caught = (0..N)
                    .filter(|&seed| encoded_labels(&form(&rnd(seed, len, alphabet))).is_some())
                    .count();
                let share = caught as f64 / N as f64;
                report.push(format!("{what}, {how}: {share:.3} (at least {least})"));
                ok &= share >= least;
            }
        }
        eprintln!("{}", report.join("\n"));
        assert!(ok, "{report:#?}");
    }

    #[test]
    fn each_reason_with_a_sample() {
        let r = |n: &str| encoded_labels(n);
        let shape_of = |n: &str| match r(n) {
            Some(HostReason::Label { shape, .. }) => Some(shape),
            _ => None,
        };
        assert_eq!(shape_of(&"a".repeat(49)), Some(Shape::Long));
        assert_eq!(shape_of(&"xo".repeat(24)), None, "48 is the limit");
        assert_eq!(shape_of("x.deadbeef00112233"), Some(Shape::Hex));
        assert_eq!(shape_of("deadbeef0011223"), None, "15 hex pass");
        assert_eq!(shape_of("12345678901234567890"), Some(Shape::Digits));
        assert_eq!(shape_of("1234567890123456789"), None);
        assert_eq!(shape_of("k3j9xq2mz7w4vp8tr5"), Some(Shape::Base32));
        assert_eq!(shape_of("AKIAIOSFODNN7EXAMPLE"), Some(Shape::Base32));
        assert_eq!(shape_of("qWeRtYuIoPaSdFgHjK"), Some(Shape::Base64));
        assert_eq!(
            shape_of("HelloWorldService"),
            None,
            "camel case is not base64"
        );
        assert_eq!(shape_of("xkcdqwrtzplm"), Some(Shape::RandomLetters));
        assert_eq!(shape_of("qzkxwvbnmtrplkjh"), Some(Shape::RandomLetters));
        assert_eq!(shape_of("githubusercontent"), None);
        assert_eq!(
            shape_of("zq9r-kv3m-x7tw-p2ny-h8fd-4bqk-5tw"),
            Some(Shape::Base32),
            "hyphens do not hide base36"
        );
        assert_eq!(r("a.b.c.d.e"), Some(HostReason::TooManyLabels { count: 5 }));
        assert_eq!(r("a.b.c.d"), None);
        let long = ["storage-bucket-number"; 4].join(".") + ".x";
        assert_eq!(r(&long), Some(HostReason::TooManyLabels { count: 5 }));
        let long = ["storage-bucket-number-one-for-us"; 3].join(".") + ".x";
        assert_eq!(r(&long), Some(HostReason::LongName { len: long.len() }));
        assert_eq!(r(""), None);
        assert_eq!(r("."), None);
    }

    #[test]
    fn reasons_never_name_the_label() {
        let secret = "deadbeefcafebabe0123456789";
        let why = encoded_labels(&format!("{secret}.x")).expect("flagged");
        assert!(!why.to_string().contains(secret));
        assert!(!format!("{why:?}").contains(secret));
    }

    #[test]
    fn dlp_rules_fire_on_joined_labels() {
        // A rule whose match no shape test flags: it fires on the labels joined, and
        // in either case.
        let rules = RuleSet::from_toml(
            "[[rules]]\nid = \"canary\"\nregex = 'CANARY[A-Z]{8}'\nkeywords = [\"canary\"]\n",
        )
        .expect("rules");
        let why = encoded_labels_dlp("canary.abcdefgh", &rules);
        assert_eq!(
            why,
            Some(HostReason::Dlp {
                rule: "canary".into()
            })
        );
        assert_eq!(encoded_labels_dlp("canaryabcdefgh", &rules), why);
        assert_eq!(encoded_labels_dlp("canary.abc", &rules), None);
        // The built-in rules on real names: nothing.
        let builtin = RuleSet::builtin();
        for n in REAL_FREE {
            assert_eq!(encoded_labels_dlp(n, &builtin), None, "{n}");
        }
        for n in REAL_WHOLE {
            assert_eq!(builtin.scan(n.as_bytes()), vec![], "{n}");
        }
        // A split AWS key is caught either way.
        assert!(encoded_labels_dlp("akiaq7rz.4tx2mbw6nc3p", &builtin).is_some());
    }

    #[test]
    fn an_encoded_key_is_refused_whatever_its_shape() {
        // The containment suite's `base32-label-connect` case over many random keys:
        // the shape test lets about one in twenty through; their decoding does not.
        let builtin = RuleSet::builtin();
        let mut shape_missed = 0;
        for seed in 0..300 {
            let key = format!(
                "AKIA{}",
                crate::test_support::rnd(seed, 16, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
            );
            let b32 = crate::test_support::base32(key.as_bytes());
            let hex = hex::encode(key.as_bytes());
            for name in [
                b32.clone(),
                b32.to_ascii_uppercase(),
                format!("{}.{}", &hex[..20], &hex[20..]),
            ] {
                shape_missed += usize::from(encoded_labels(&name).is_none());
                assert!(
                    encoded_labels_dlp(&name, &builtin).is_some(),
                    "{key} as {name}"
                );
            }
        }
        assert!(shape_missed > 0, "the case no longer tests the decoding");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn never_panics(name in "\\PC{0,300}", bytes in proptest::collection::vec(0u8.., 0..300)) {
            let _ = encoded_labels(&name);
            let _ = shape(&bytes, &BLOCK);
            let _ = shape(&bytes, &LOG);
            let _ = encoded_labels(&String::from_utf8_lossy(&bytes));
        }
    }
}
