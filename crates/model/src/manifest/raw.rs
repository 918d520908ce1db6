//! Stage one of manifest parsing: YAML text to a generic tree that keeps every node's
//! source location.
//!
//! The tree is deliberately untyped (`Raw`): all schema checks happen in `validate.rs`,
//! which can then report every problem at once with its line and column. Parsing runs
//! under a strict serde-saphyr [`Budget`](serde_saphyr::Budget) so alias bombs, deep nesting and huge inputs
//! fail fast instead of hanging or exhausting memory.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Location, MessageFormatter, Options, Spanned};

/// A YAML node with no schema applied.
#[derive(Clone, Debug, PartialEq)]
pub enum Raw {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order; duplicate keys are rejected by the parser.
    Map(Vec<(Spanned<String>, Node)>),
}

/// A node together with where it appears in the source.
pub type Node = Spanned<Raw>;

impl Raw {
    /// What kind of value this is, for "expected X, found Y" messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Raw::Null => "nothing (null)",
            Raw::Bool(_) => "a boolean",
            Raw::Int(_) => "an integer",
            Raw::Float(_) => "a number",
            Raw::Str(_) => "a string",
            Raw::Seq(_) => "a list",
            Raw::Map(_) => "a map",
        }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(i128::from(v)))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(i128::try_from(v).map_or(Raw::Float(v as f64), Raw::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        match std::str::from_utf8(v) {
            Ok(s) => Ok(Raw::Str(s.to_owned())),
            Err(_) => Err(E::custom("binary values are not supported")),
        }
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        Raw::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Raw::Map(entries))
    }
}

/// A YAML-level failure: syntax error, budget breach, duplicate key, invalid UTF-8.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Deepest nesting accepted. A real manifest needs about ten levels; each level costs
/// tens of KiB of stack in debug builds, so this also keeps the recursive deserializer
/// well inside a 2 MiB thread stack.
pub const MAX_DEPTH: usize = 20;

/// Limits for a manifest: generous for any hand-written file, tiny for an attack.
fn options() -> Options {
    let mut options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(super::MAX_MANIFEST_BYTES),
            flow_nesting_limit: MAX_DEPTH,
            max_depth: MAX_DEPTH,
            max_events: 200_000,
            max_aliases: 256,
            max_anchors: 256,
            max_recorded_anchor_events: 20_000,
            max_recorded_anchor_bytes: 256 * 1024,
            max_documents: 1,
            max_nodes: 100_000,
            max_total_scalar_bytes: 2 * super::MAX_MANIFEST_BYTES,
            max_merge_keys: 64,
            max_inclusion_depth: 0,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
        strict_booleans: true,
        with_snippet: false,
    };
    options.alias_limits.max_total_replayed_events = 20_000;
    options.alias_limits.max_replay_stack_depth = 16;
    options.alias_limits.max_alias_expansions_per_anchor = 64;
    options
}

/// Parse `text` into a spanned tree under the manifest budget.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    // Budget check before building anything: a breach here costs no allocations.
    serde_saphyr::from_str_with_options::<Node>(text, options()).map_err(|err| {
        let location = err.location().unwrap_or(Location::UNKNOWN);
        let message = serde_saphyr::UserMessageFormatter.format_message(err.without_snippet());
        SyntaxError {
            line: usize::try_from(location.line())
                .unwrap_or(usize::MAX)
                .max(1),
            column: usize::try_from(location.column())
                .unwrap_or(usize::MAX)
                .max(1),
            message: sanitize(&message),
        }
    })
}

/// Where and why `bytes` are not UTF-8.
pub fn utf8_error(bytes: &[u8], err: std::str::Utf8Error) -> SyntaxError {
    let valid = bytes.get(..err.valid_up_to()).unwrap_or_default();
    let (line, column) = line_column_of_end(valid);
    SyntaxError {
        line,
        column,
        message: "the file is not valid UTF-8".to_owned(),
    }
}

/// 1-based line and (character) column just after `valid`, which is valid UTF-8.
fn line_column_of_end(valid: &[u8]) -> (usize, usize) {
    let text = String::from_utf8_lossy(valid);
    let line = text.matches('\n').count() + 1;
    let last = text.rsplit('\n').next().unwrap_or("");
    (line, last.chars().count() + 1)
}

/// Replace control characters so a message stays on one line.
fn sanitize(message: &str) -> String {
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// 1-based (line, column) of a node, never zero.
pub fn position(location: &Location) -> (usize, usize) {
    (
        usize::try_from(location.line())
            .unwrap_or(usize::MAX)
            .max(1),
        usize::try_from(location.column())
            .unwrap_or(usize::MAX)
            .max(1),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(node: &Node) -> (u64, u64) {
        (node.referenced.line(), node.referenced.column())
    }

    #[test]
    fn nested_nodes_keep_their_locations() {
        let text = "a:\n  b:\n    - x\n    - {c: 3}\nd: [1, 2.5, true, ~]\n";
        let root = parse(text).expect("parses");
        let Raw::Map(entries) = &root.value else {
            panic!("root is a map: {root:?}");
        };
        assert_eq!(entries[0].0.value, "a");
        assert_eq!(
            (
                entries[0].0.referenced.line(),
                entries[0].0.referenced.column()
            ),
            (1, 1)
        );
        let Raw::Map(a) = &entries[0].1.value else {
            panic!("a is a map")
        };
        assert_eq!(
            (a[0].0.referenced.line(), a[0].0.referenced.column()),
            (2, 3)
        );
        let Raw::Seq(b) = &a[0].1.value else {
            panic!("b is a list")
        };
        assert_eq!(b[0].value, Raw::Str("x".into()));
        assert_eq!(at(&b[0]), (3, 7));
        let Raw::Map(c) = &b[1].value else {
            panic!("flow map")
        };
        assert_eq!(c[0].1.value, Raw::Int(3));
        assert_eq!(at(&c[0].1), (4, 11));
        let Raw::Seq(d) = &entries[1].1.value else {
            panic!("d is a list")
        };
        assert_eq!(
            d.iter().map(|n| n.value.clone()).collect::<Vec<_>>(),
            vec![Raw::Int(1), Raw::Float(2.5), Raw::Bool(true), Raw::Null]
        );
        assert_eq!(at(&d[1]), (5, 8));
    }

    #[test]
    fn yaml_1_1_booleans_stay_strings() {
        let root = parse("a: no\nb: yes\n").expect("parses");
        let Raw::Map(entries) = root.value else {
            panic!("map")
        };
        assert_eq!(entries[0].1.value, Raw::Str("no".into()));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
        assert_eq!(err.line, 3, "{err:?}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let err = parse("a: [1, 2\nb: 3\n").expect_err("unclosed");
        assert!(err.line >= 1 && err.column >= 1, "{err:?}");
        assert!(!err.message.is_empty());
    }

    #[test]
    fn invalid_utf8_is_located() {
        let bytes = b"a: 1\nbb: \xff\n".to_vec();
        let utf8 = std::str::from_utf8(&bytes).expect_err("bad utf8");
        let err = utf8_error(&bytes, utf8);
        assert_eq!((err.line, err.column), (2, 5));
    }
}
