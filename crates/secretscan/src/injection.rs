//! Prompt-injection shapes in what an agent reads: [`scan_response`] looks at a fetched
//! page, an API response or one SSE event and reports which classes of injection it
//! carries ([`Class`]) and where. Pure: no I/O, no allocation beyond a bounded multiple
//! of the input, cost linear in the input.
//!
//! Order of work:
//! 1. On the text as given: runs of invisible characters (zero-width, bidi controls,
//!    variation selectors) and Unicode tag characters (U+E0000 block, "ASCII
//!    smuggling") are a signal in themselves ([`Class::InvisibleText`]); emoji flag tag
//!    sequences and single joiners are not.
//! 2. Base64 runs are decoded once (no recursion) and the decoded text, when it is
//!    text, goes through the phrase classes ([`Class::EncodedInstructions`]).
//! 3. The text is normalized: invisible characters removed, NFKC, lowercased. The
//!    phrase classes run on it: instructions to ignore or override earlier
//!    instructions, system/role impersonation markers, instructions to send files or
//!    credentials somewhere, tool-call markup, and directives to an AI placed where a
//!    human reader does not see them (HTML comments, hidden elements, alt/title/aria
//!    attributes, markdown comments).
//!
//! What is deliberately not a hit (false-positive decisions, see the tests): prose
//! that says "ignore the previous section" (the object must be instructions, prompts,
//! rules...), chat-template tokens without a role (`<|im_start|>' + message['role']`
//! in a tokenizer config), `<system>` as an XML element (Maven POMs), an `alt` text or
//! `aria-label` naming an AI product, SSH *public* keys. A page that *discusses* prompt
//! injection and quotes a real payload ("ignore previous instructions and ...") is a
//! hit: the quoted payload works on a model exactly as well inside a blog post, and
//! the detector cannot tell an example from an attack. Such a page is refused under
//! `egress.responses: block`; `warn` lets it through with an audit line.
//!
//! A hit carries the class and an offset, never the matched text. Offsets of
//! [`Class::InvisibleText`] and [`Class::EncodedInstructions`] are byte offsets in the
//! text as given; the others are byte offsets in the normalized text (equal for ASCII
//! input): a location for an audit line, not for slicing.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::LazyLock;

use base64::Engine as _;
use regex::Regex;

/// The kind of injection a hit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// "Ignore/disregard/forget/override previous (system) instructions", "you are now
    /// in developer mode", "new instructions:".
    IgnoreInstructions,
    /// Role or system-prompt impersonation: `<|im_start|>system`, `<<SYS>>`,
    /// `### System:`, `</user><system>`, `<system-reminder>`.
    RoleImpersonation,
    /// Instructions to send files or credentials somewhere: `~/.ssh`, `id_rsa`, `.env`,
    /// AWS credentials, "send/upload/post ... to http...", `cat ~/.ssh/id_rsa | curl`.
    Exfiltration,
    /// Tool-call markup a model may take for its own: `<function_calls>`, `<invoke
    /// name=`, `<tool_call>`.
    ToolCallMarkup,
    /// A directive to an AI, or a shell command, where a human reader does not see it:
    /// HTML comments, hidden elements, alt/title/aria attributes, markdown comments.
    HiddenInstructions,
    /// A run of invisible characters or Unicode tag characters (ASCII smuggling).
    InvisibleText,
    /// A base64 blob that decodes to text of one of the phrase classes.
    EncodedInstructions,
}

impl Class {
    /// Every class, in a stable order.
    pub const ALL: [Class; 7] = [
        Class::IgnoreInstructions,
        Class::RoleImpersonation,
        Class::Exfiltration,
        Class::ToolCallMarkup,
        Class::HiddenInstructions,
        Class::InvisibleText,
        Class::EncodedInstructions,
    ];

    /// Stable id, for audit lines and messages.
    pub fn id(self) -> &'static str {
        match self {
            Class::IgnoreInstructions => "injection-ignore-instructions",
            Class::RoleImpersonation => "injection-role-impersonation",
            Class::Exfiltration => "injection-exfiltration",
            Class::ToolCallMarkup => "injection-tool-call-markup",
            Class::HiddenInstructions => "injection-hidden-instructions",
            Class::InvisibleText => "injection-invisible-text",
            Class::EncodedInstructions => "injection-encoded-instructions",
        }
    }

    /// A short description without any of the matched text.
    pub fn describe(self) -> &'static str {
        match self {
            Class::IgnoreInstructions => {
                "an instruction to ignore or override earlier instructions"
            }
            Class::RoleImpersonation => "a system or role marker impersonating the prompt",
            Class::Exfiltration => "an instruction to send files or credentials somewhere",
            Class::ToolCallMarkup => "tool-call markup",
            Class::HiddenInstructions => "a directive to an AI hidden in markup",
            Class::InvisibleText => "hidden text in invisible or Unicode tag characters",
            Class::EncodedInstructions => "base64 that decodes to instructions",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// One hit: the class and where. Never the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InjectionHit {
    pub class: Class,
    /// Byte offset (see the module documentation for which text it is in).
    pub offset: usize,
}

/// At most this many hits are returned per call (the first by offset).
pub const MAX_HITS: usize = 64;
/// A run of this many invisible characters in a row is a hit.
pub const INVISIBLE_RUN: usize = 8;
/// A run of this many Unicode tag characters (outside an emoji flag) is a hit.
pub const TAG_RUN: usize = 4;
/// Base64 runs shorter than this are not decoded.
pub const BASE64_MIN: usize = 24;
/// At most this much of one base64 run is decoded.
pub const BASE64_MAX: usize = 16 << 10;
/// A hidden region (comment, hidden element's text, attribute value) is looked at up
/// to this many bytes.
pub const HIDDEN_MAX: usize = 4 << 10;

/// Inputs that would make a careless scanner quadratic (unterminated comments,
/// attribute starts, long base64, keyword floods), repeated to any length by the tests
/// and the `secretscan` benchmark.
pub const PATHOLOGICAL_SHAPES: [&str; 9] = [
    "<!--",
    "alt=\"",
    "<p hidden>",
    "ignore ignore previous ",
    "QUJDRE",
    "send ~/.ssh ",
    "\u{200B}a",
    "<|im_start|>",
    "ｉｇｎｏｒｅ ",
];

/// Scan `text` for prompt-injection shapes. Linear in `text`; never panics.
pub fn scan_response(text: &str) -> Vec<InjectionHit> {
    let mut hits = Vec::new();
    invisible(text, &mut hits);
    encoded(text, &mut hits);
    let norm = normalize_text(text);
    phrases(&norm, &mut hits);
    hidden(&norm, &mut hits);
    hits.sort();
    hits.dedup();
    hits.sort_by_key(|h| h.offset);
    hits.truncate(MAX_HITS);
    hits
}

/// [`scan_response`] on bytes: invalid UTF-8 becomes U+FFFD.
pub fn scan_response_bytes(bytes: &[u8]) -> Vec<InjectionHit> {
    scan_response(&String::from_utf8_lossy(bytes))
}

/// Characters that render as nothing: the one set DLP's normalization drops
/// ([`crate::is_invisible`], Default_Ignorable_Code_Point).
pub use crate::is_invisible;

fn is_tag(c: char) -> bool {
    ('\u{E0000}'..='\u{E007F}').contains(&c)
}

/// Lossy text, invisible characters removed, NFKC ([`crate::text`], the normalization DLP
/// uses), lowercased.
fn normalize_text(text: &str) -> Cow<'_, str> {
    match crate::text(text.as_bytes()) {
        Cow::Borrowed(t) if !t.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Borrowed(t),
        t => Cow::Owned(t.to_lowercase()),
    }
}

/// Runs of invisible characters and of tag characters, on the text as given.
fn invisible(text: &str, hits: &mut Vec<InjectionHit>) {
    if text.is_ascii() {
        return;
    }
    let mut run_start = 0;
    let mut run = 0usize;
    let mut tags = 0usize;
    let mut tag_start = 0;
    // Whether the current tag run follows U+1F3F4 (an emoji subdivision flag).
    let mut flag = false;
    let mut prev: Option<char> = None;
    let end_run = |run: usize, start: usize, hits: &mut Vec<InjectionHit>| {
        if run >= INVISIBLE_RUN {
            hits.push(InjectionHit {
                class: Class::InvisibleText,
                offset: start,
            });
        }
    };
    for (i, c) in text.char_indices() {
        if is_tag(c) {
            if tags == 0 {
                tag_start = i;
                flag = prev == Some('\u{1F3F4}');
            }
            tags += 1;
            // A subdivision flag ends with CANCEL TAG after a handful of tags.
            if c == '\u{E007F}' && flag && tags <= 8 {
                tags = 0;
            }
        } else {
            if tags >= TAG_RUN {
                hits.push(InjectionHit {
                    class: Class::InvisibleText,
                    offset: tag_start,
                });
            }
            tags = 0;
        }
        if is_invisible(c) {
            if run == 0 {
                run_start = i;
            }
            run += 1;
        } else {
            end_run(run, run_start, hits);
            run = 0;
        }
        prev = Some(c);
    }
    if tags >= TAG_RUN {
        hits.push(InjectionHit {
            class: Class::InvisibleText,
            offset: tag_start,
        });
    }
    // A tag run is also an invisible run; keep one hit per place.
    end_run(run, run_start, hits);
}

static BASE64_RUN: LazyLock<Regex> = LazyLock::new(|| re(r"[A-Za-z0-9+/_-]{24,}={0,2}"));

/// Base64 runs that decode to text carrying a phrase class.
fn encoded(text: &str, hits: &mut Vec<InjectionHit>) {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    let url_engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    for m in BASE64_RUN.find_iter(text) {
        let run = m.as_str().trim_end_matches('=');
        if run.len() < BASE64_MIN {
            continue;
        }
        // Whole quanta only, bounded.
        let take = run.len().min(BASE64_MAX) / 4 * 4;
        let Some(run) = run.get(..take) else { continue };
        // A hex digest decodes to bytes, never to text.
        if run.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        let url = run.contains(['-', '_']);
        if url && run.contains(['+', '/']) {
            continue;
        }
        let decoded = if url {
            url_engine.decode(run)
        } else {
            engine.decode(run)
        };
        let Ok(decoded) = decoded else { continue };
        let Ok(s) = std::str::from_utf8(&decoded) else {
            continue;
        };
        let printable = s
            .chars()
            .filter(|c| !c.is_control() || c.is_whitespace())
            .count();
        if printable * 10 < s.chars().count() * 9 {
            continue;
        }
        let mut inner = Vec::new();
        phrases(&normalize_text(s), &mut inner);
        if !inner.is_empty() {
            hits.push(InjectionHit {
                class: Class::EncodedInstructions,
                offset: m.start(),
            });
        }
    }
}

fn re(pattern: &str) -> Regex {
    regex::RegexBuilder::new(pattern)
        .size_limit(32 << 20)
        .build()
        .expect("built-in injection pattern compiles")
}

/// Separator between words: punctuation and spaces, a few of them.
const S: &str = r"[\s\-_*~\x60'\x22’‘“”«»,/<>|]{1,6}";
/// Up to `n` filler words.
fn filler(n: usize) -> String {
    format!(r"(?:[\w'’]{{1,20}}{S}){{0,{n}}}")
}

static IGNORE: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    let strong_q = "previous|previously|prior|preceding|above|earlier|foregoing|initial|original|system|developer|safety|old";
    let override_q =
        "previous|previously|prior|preceding|above|earlier|foregoing|initial|original|safety";
    let weak_q = "all|any|every|your";
    let strong_n = r"instructions?|prompts?|directives?|guidelines|guidance|commands|orders|directions|programming";
    let weak_n = r"rules|context|messages|restrictions|guardrails|constraints|polic(?:y|ies)|conversation|tasks?";
    let verbs = r"ignore|disregard|forget|neglect|abandon|discard|set\s+aside|stop\s+following|do\s+not\s+(?:follow|obey)|don'?t\s+(?:follow|obey)|never\s+mind";
    let override_verbs = r"override|overwrite|bypass|supersede";
    let f3 = filler(3);
    let f2 = filler(2);
    [
        format!(r"\b(?:{verbs}){S}{f3}(?:{strong_q}){S}{f2}(?:{strong_n}|{weak_n})\b"),
        format!(r"\b(?:{override_verbs}){S}{f3}(?:{override_q}){S}{f2}(?:{strong_n}|{weak_n})\b"),
        format!(r"\b(?:{verbs}){S}{f2}(?:{weak_q}){S}{f2}(?:{strong_n})\b"),
        format!(r"\b(?:ignore|disregard|forget){S}(?:all\s+|of\s+)*(?:everything|anything){S}(?:{f3})?(?:above|before\s+this|so\s+far|you\s+(?:were|have\s+been)\s+told)\b"),
        r"\b(?:new|real|actual|true|secret|hidden|updated\s+system|revised\s+system|override)\s+(?:system\s+)?instructions?\s*:".to_string(),
        r"\byou\s+are\s+now\s+(?:a\s+|an\s+|in\s+)?(?:dan\b|developer\s+mode|jailbroken|unrestricted|unfiltered|uncensored|evil)".to_string(),
        r"\b(?:developer|god|jailbreak|dan)\s+mode\s+(?:is\s+)?(?:enabled|activated|on)\b".to_string(),
    ]
    .iter()
    .map(|p| re(p))
    .collect()
});

static ROLE: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    [
        r"<\|im_start\|>\s*(?:system|assistant|developer)\b",
        r"<\|start_header_id\|>\s*(?:system|assistant|developer)\b",
        r"<\|(?:system|assistant|developer)\|>",
        r"<<\s*sys\s*>>",
        r"(?m)^[ \t]*#{1,4}[ \t]*(?:system|assistant|developer)(?:[ \t]+(?:prompt|message|instructions?|override|note))?[ \t]*:",
        r"(?m)^[ \t]*\[?(?:system|developer)(?:[ \t]+(?:prompt|message|note|override))?\]?[ \t]*:[ \t]*(?:you\s+(?:are|must|will|should)|ignore|new\s+instructions|from\s+now\s+on|important)",
        r"</(?:user|human|user_input|user_query|document|documents|context|data|search_results?|tool_result|function_results)>\s*(?:<[a-z_ -]{1,30}>\s*)?(?:<\s*/?\s*(?:system|assistant|admin|developer|instructions?)[\w -]{0,20}>|(?:system|assistant|human)\s*:)",
        r"</?system[-_]reminder>",
        r"<(?:system|admin|developer)[-_ ](?:prompt|instructions?|message|override|note)>",
        r"\[(?:system|admin|developer)[ _-](?:message|prompt|note|override|instructions?)\]",
        r"\b(?:begin|start)\s+(?:system|admin|developer)\s+(?:prompt|instructions|message)\b",
    ]
    .iter()
    .map(|p| re(p))
    .collect()
});

static TOOL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"<\s*(?:antml:)?(?:function_calls|function_results|tool_call|tool_use|tool_calls)\s*>|<\s*(?:antml:)?invoke\s+name\s*=|<\|(?:tool_call|python_tag|tool_calls)\|>",
    )
});

static EXFIL: LazyLock<Vec<Regex>> = LazyLock::new(|| {
    let files = r"~/\.ssh\b|\.ssh/(?:id_[a-z0-9]+|authorized_keys|config)(?:[^.\w]|$)|\bid_(?:rsa|dsa|ecdsa|ed25519)(?:[^.\w]|$)|(?:^|[\s'\x22=@/~(])\.env\b(?:[^.\w]|\.local|$)|\.aws/credentials|\.netrc\b|\.git-credentials|\.npmrc\b|\.pypirc\b|\.docker/config\.json|\.kube/config|/etc/shadow|\.bash_history|\.config/gh/hosts\.yml";
    let generic = r"credentials|secrets?|api[\s_-]?keys?|access[\s_-]?keys?|tokens?|passwords?|private[\s_-]?keys?|ssh[\s_-]?keys?|aws[\s_-]?(?:secret|keys?|credentials)";
    // A credential named the way an attacker names it: all of them, the ones here.
    let grab = format!(
        r"\b(?:all|every|any)\s+(?:of\s+)?(?:the\s+|your\s+|my\s+)?(?:available\s+|stored\s+|saved\s+|local\s+|cached\s+)?(?:{generic})\b|\b(?:{generic})\s+(?:you\s+(?:can\s+)?find|(?:on|in)\s+(?:this|the)\s+(?:machine|system|host|computer|server|workspace|repo(?:sitory)?)|from\s+(?:the\s+)?(?:environment|disk|filesystem|home\s+directory))|\benv(?:ironment)?[\s_-]?var(?:iable)?s\b|\bcontents?\s+of\s+(?:the\s+|your\s+)?(?:{generic})"
    );
    let verbs = r"send|post|upload|exfiltrate|transmit|forward|leak|email|e-mail|submit|deliver|copy|paste|include|append|attach|share|report|encode|base64|collect|gather|dump|steal";
    let sink = r"https?://|webhooks?\b|ngrok|pastebin|requestbin|burpcollaborator|interact\.sh";
    let to_sink = format!(
        r"\b(?:to|at|into|via|using)\s+(?:this\s+|the\s+following\s+|the\s+|my\s+|our\s+)?(?:url|endpoint|server|address|webhook|site)?\s*:?\s*[<\x22'`(]?(?:{sink})"
    );
    let sinkcmd = r"\|\s*(?:curl|wget|nc|ncat|netcat|socat|telnet)\b|\b(?:curl|wget)\b";
    [
        // verb ... a file or credential ... to a destination.
        format!(r"\b(?:{verbs})\b[^\n]{{0,160}}?(?:{files}|{grab})[^\n]{{0,160}}?{to_sink}"),
        // verb ... to a destination ... the file: "post to https://x the contents of ~/.ssh".
        format!(r"\b(?:{verbs})\b[^\n]{{0,40}}?{to_sink}[^\n]{{0,160}}?(?:{files})"),
        // a command reading a file, then a network tool on the same line.
        format!(r"\b(?:cat|base64|tar|zip|xxd|gzip|openssl|head|tail|less|more|type)\b[^\n;]{{0,80}}?(?:{files})[^\n]{{0,120}}?(?:{sinkcmd})"),
        // a network tool sending a file.
        format!(r"\b(?:curl|wget)\b[^\n]{{0,160}}?(?:-d|--data(?:-binary|-raw|-urlencode)?|-f|--form|-t|--upload-file|--post-file|--body-file)[\s=]*[@<]?[^\n\s]{{0,20}}?(?:{files})"),
        // the environment piped to the network.
        format!(r"\b(?:printenv|env|set|export\s+-p)\s*\|\s*(?:base64\s*\|\s*)?(?:{sinkcmd})"),
        // a markdown image whose URL carries a placeholder for data.
        r"!\[[^\]\n]{0,100}\]\(\s*https?://[^)\s]{1,200}[?&=/](?:\{\{?|\$\{|<|\[)[\w .-]{1,40}(?:\}\}?|>|\])".to_string(),
    ]
    .iter()
    .map(|p| re(p))
    .collect()
});

static THIRD_PERSON: LazyLock<Regex> =
    LazyLock::new(|| re(r"\b(?:its|their|his|her|a\s+model's|the\s+model's)\b"));

/// Keywords without which a class's patterns cannot match: one Aho-Corasick pass
/// decides which pattern sets run at all.
static GATE: LazyLock<(aho_corasick::AhoCorasick, Vec<Class>)> = LazyLock::new(|| {
    let words: &[(Class, &[&str])] = &[
        (
            Class::IgnoreInstructions,
            &[
                "ignore",
                "disregard",
                "forget",
                "neglect",
                "abandon",
                "discard",
                "aside",
                "follow",
                "obey",
                "never",
                "override",
                "overwrite",
                "bypass",
                "supersede",
                "instruction",
                "you are now",
                " mode",
            ],
        ),
        (
            Class::RoleImpersonation,
            &[
                "<|",
                "<<",
                "system",
                "developer",
                "assistant",
                "admin",
                "</",
            ],
        ),
        (
            Class::Exfiltration,
            &[
                ".ssh",
                "id_",
                ".env",
                ".aws",
                ".netrc",
                "credential",
                ".npmrc",
                ".pypirc",
                ".docker",
                ".kube",
                "/etc/shadow",
                "history",
                "hosts.yml",
                "secret",
                "key",
                "token",
                "password",
                "env",
                "set",
                "export",
                "![",
            ],
        ),
        (
            Class::ToolCallMarkup,
            &["<function", "<tool", "<invoke", "< ", "<antml", "<|"],
        ),
    ];
    let mut patterns = Vec::new();
    let mut classes = Vec::new();
    for (class, list) in words {
        for w in *list {
            patterns.push(*w);
            classes.push(*class);
        }
    }
    let ac = aho_corasick::AhoCorasick::new(patterns).expect("gate keywords build");
    (ac, classes)
});

/// Which phrase classes have a keyword in `norm`.
fn gated(norm: &str) -> BTreeSet<Class> {
    let (ac, classes) = &*GATE;
    let mut on = BTreeSet::new();
    for m in ac.find_overlapping_iter(norm) {
        if let Some(c) = classes.get(m.pattern().as_usize()) {
            on.insert(*c);
            if on.len() == 4 {
                break;
            }
        }
    }
    on
}

fn phrases(norm: &str, hits: &mut Vec<InjectionHit>) {
    let on = gated(norm);
    let mut add = |class, set: &[Regex]| {
        if !on.contains(&class) {
            return;
        }
        for r in set {
            // Prose about someone else's instructions ("make a model disregard its
            // system prompt") is not addressed to the reader.
            let addressed = |m: &regex::Match<'_>| {
                class != Class::IgnoreInstructions || !THIRD_PERSON.is_match(m.as_str())
            };
            if let Some(m) = r.find_iter(norm).find(addressed) {
                hits.push(InjectionHit {
                    class,
                    offset: m.start(),
                });
            }
        }
    };
    add(Class::IgnoreInstructions, &IGNORE);
    add(Class::RoleImpersonation, &ROLE);
    add(Class::Exfiltration, &EXFIL);
    add(Class::ToolCallMarkup, std::slice::from_ref(&TOOL));
}

static HIDDEN_ELEMENT: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"<[a-z][a-z0-9-]{0,20}\b[^<>]{0,300}?(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.0+)?(?:px|em|rem|pt|%)?\s*[;"'!]|opacity\s*:\s*0(?:\.0+)?\s*[;"'!]|\shidden\b|aria-hidden\s*=\s*["']?true|color\s*:\s*(?:white|#fff(?:fff)?|transparent)\s*[;"'!]|(?:left|top|text-indent)\s*:\s*-\d{3,}(?:px|em)|clip\s*:\s*rect\(\s*0|width\s*:\s*0(?:px)?\s*;[^<>]{0,80}height\s*:\s*0)[^<>]{0,300}>"#,
    )
});
static HIDDEN_ATTR: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"\s(?:alt|title|aria-label|aria-description|data-[a-z0-9-]{1,30}|content|placeholder)\s*=\s*["']"#,
    )
});
static MD_COMMENT: LazyLock<Regex> = LazyLock::new(|| re(r"\[(?://|comment|_)\]:\s*(?:#|<>)\s*\("));
static AGENT: LazyLock<Regex> = LazyLock::new(|| {
    re(r"\b(?:ai|a\.i\.|llms?|language\s+models?|assistants?|agents?|chatbots?|models?|bots?)\b")
});
static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:you\s+(?:must|should|need\s+to|have\s+to|are\s+(?:required|instructed|now)|will\s+now)|please\s+(?:run|execute|call|send|read|fetch|ignore|open|visit|download|install|include|append|add|reply|respond|say|output|print|write|tell)|(?:ai|llms?|assistants?|agents?|models?|bots?)\s*[:,]\s*(?:\w+\s+){0,2}?(?:run|execute|call|send|read|fetch|ignore|open|visit|download|install|do|stop|forget|include|append|add|use|tell|reply|respond|say|output|print|write)|ignore\b|instead\s+of|do\s+not\s+(?:tell|mention|reveal|inform|show)|don'?t\s+(?:tell|mention|reveal|inform|show)|without\s+(?:telling|mentioning|informing|asking)|important\s*:|note\s+to\s+(?:the\s+)?(?:ai|llms?|assistants?|agents?|models?)|(?:if|when)\s+you\s+are\s+an?\s+(?:ai|llm|assistant|agent|language\s+model))",
    )
});
static SHELL: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b(?:curl|wget)\s+(?:-\S+\s+)*['\x22]?https?://|\|\s*(?:sudo\s+)?(?:sh|bash|zsh|python3?)\b|\brm\s+-rf\s+[/~]|\bchmod\s+\+x\b",
    )
});

fn hidden_region(region: &str) -> bool {
    (AGENT.is_match(region) && DIRECTIVE.is_match(region)) || SHELL.is_match(region)
}

/// Directives to an AI in places a human reader does not see. Every region is
/// looked at once and the search moves past it, so the cost stays linear.
fn hidden(norm: &str, hits: &mut Vec<InjectionHit>) {
    let mut found = |offset| {
        hits.push(InjectionHit {
            class: Class::HiddenInstructions,
            offset,
        })
    };
    // HTML comments.
    let mut pos = 0;
    while let Some(rel) = norm.get(pos..).and_then(|t| t.find("<!--")) {
        let start = pos + rel + 4;
        let rest = norm.get(start..).unwrap_or("");
        let (len, next) = match rest.find("-->") {
            Some(e) => (e, start + e + 3),
            None => (rest.len(), norm.len()),
        };
        if hidden_region(bounded(norm, start, len)) {
            found(start - 4);
        }
        pos = next;
    }
    // Hidden elements: the text directly inside them.
    let mut pos = 0;
    while let Some(m) = HIDDEN_ELEMENT.find_at(norm, pos) {
        let start = m.end();
        let len = norm
            .get(start..)
            .and_then(|t| t.find('<'))
            .unwrap_or(norm.len() - start);
        if hidden_region(bounded(norm, start, len)) {
            found(m.start());
        }
        pos = start + len.min(HIDDEN_MAX);
        pos = ceil_char(norm, pos);
    }
    // Attribute values read by tools, not shown: alt, title, aria-*, data-*.
    let mut pos = 0;
    while let Some(m) = HIDDEN_ATTR.find_at(norm, pos) {
        let start = m.end();
        let quote = norm
            .as_bytes()
            .get(m.end().wrapping_sub(1))
            .copied()
            .unwrap_or(b'"') as char;
        let len = norm
            .get(start..)
            .and_then(|t| t.find(quote))
            .unwrap_or(norm.len() - start);
        if hidden_region(bounded(norm, start, len)) {
            found(m.start());
        }
        pos = ceil_char(norm, start + len.min(HIDDEN_MAX));
    }
    // Markdown comments: `[//]: # (text)`.
    let mut pos = 0;
    while let Some(m) = MD_COMMENT.find_at(norm, pos) {
        let start = m.end();
        let len = norm
            .get(start..)
            .and_then(|t| t.find(')'))
            .unwrap_or(norm.len() - start);
        if hidden_region(bounded(norm, start, len)) {
            found(m.start());
        }
        pos = ceil_char(norm, start + len.min(HIDDEN_MAX));
    }
}

/// `text[start..start + len]`, at most [`HIDDEN_MAX`] bytes, on char boundaries.
fn bounded(text: &str, start: usize, len: usize) -> &str {
    let end = floor_char(
        text,
        start.saturating_add(len.min(HIDDEN_MAX)).min(text.len()),
    );
    text.get(start..end).unwrap_or("")
}

fn floor_char(text: &str, mut i: usize) -> usize {
    i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(text: &str, mut i: usize) -> usize {
    if i >= text.len() {
        return text.len();
    }
    while !text.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
#[path = "injection_tests.rs"]
mod tests;
