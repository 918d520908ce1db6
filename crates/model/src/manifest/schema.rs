//! The shape of `bottles.yaml`, declared once: every map's keys, each field's kind,
//! whether it is required, and what it means.
//!
//! Two readers, so they cannot disagree: the validator (`validate.rs`) takes each map's
//! allowed keys and each word list (`runtime:`, `provider:`...) from the constants here,
//! and `bottle schema` turns [`MANIFEST`] into a JSON Schema ([`json_schema`]) for
//! editors. What needs the host or more than a shape (a file that exists, a `from_env`
//! variable that is set, a host name's grammar, a bottle an agent refers to) is checked
//! by the validator only.

use serde_json::{Map, Value as Json, json};

use crate::{Provider, RouteRole, RuntimeChoice};
use bottle_contract::pipelock::Responses;

/// Longest bottle, agent or project name: they become parts of Docker object names.
pub const MAX_NAME: usize = 32;
/// Smallest accepted memory limit, in bytes.
pub const MIN_MEMORY: u64 = 16 << 20;
/// Most CPUs a bottle may ask for.
pub const MAX_CPUS: f64 = 64.0;
/// Fewest processes a bottle may be limited to.
pub const MIN_PIDS: i64 = 16;

/// The schema's `$id` (the schema is a file of this repository, not a web page).
pub const ID: &str = "urn:bottle:bottles.schema.json";

/// A key of a map with fixed keys.
#[derive(Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub required: bool,
    /// `(key, word)`: the field is required when the map's `key` is `word`, and taken
    /// only then.
    pub only_with: Option<(&'static str, &'static str)>,
    pub value: Value,
}

/// A value: what it means and its shape.
#[derive(Clone, Copy)]
pub struct Value {
    pub description: &'static str,
    pub shape: Shape,
}

/// What a value may be.
#[derive(Clone, Copy)]
pub enum Shape {
    /// A string, matching `pattern` when there is one, and none of `except`.
    Str {
        pattern: Option<&'static str>,
        except: &'static [&'static str],
    },
    Bool,
    /// An integer of at least this.
    Int {
        minimum: i64,
    },
    /// A number of CPUs: more than 0, at most [`MAX_CPUS`].
    Cpus,
    /// A memory size: bytes, or a number with a k/m/g/t suffix.
    Size,
    /// A string, number or boolean, kept as written.
    Scalar,
    /// One word of a list.
    Choice(&'static dyn Words),
    /// A list of values.
    List(&'static Value),
    /// A map with these keys only.
    Map(&'static [Field]),
    /// A map whose keys the user chooses (matching `keys`), each holding `value`.
    Named {
        keys: &'static str,
        value: &'static Value,
        min_entries: usize,
    },
    /// Any one of these.
    AnyOf(&'static [Value]),
    /// Nothing (an empty YAML value).
    Null,
}

/// The words of a [`Shape::Choice`]: a table of words and what each means to the
/// validator, so the words are written once.
pub trait Words {
    fn words(&self) -> Vec<&'static str>;
}

impl<T, const N: usize> Words for [(&'static str, T); N] {
    fn words(&self) -> Vec<&'static str> {
        self.iter().map(|(word, _)| *word).collect()
    }
}

/// A bottle, agent or project name.
pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,31}$";
/// An environment variable name.
pub const ENV_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// A skill name.
const SKILL_PATTERN: &str = "^[A-Za-z0-9_.-]+$";
/// A memory size written as text.
const SIZE_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?([kKmMgGtT]([iI]?[bB])?|[bB])?\s*$";

pub const RUNTIMES: [(&str, RuntimeChoice); 3] = [
    ("auto", RuntimeChoice::Auto),
    ("runc", RuntimeChoice::Runc),
    ("runsc", RuntimeChoice::Runsc),
];

pub const PROVIDERS: [(&str, Provider); 2] =
    [("claude", Provider::Claude), ("codex", Provider::Codex)];

pub const RESPONSES: [(&str, Responses); 3] = [
    ("block", Responses::Block),
    ("warn", Responses::Warn),
    ("off", Responses::Off),
];

pub const ROLES: [(&str, RouteRole); 2] = [
    ("anthropic-base-url", RouteRole::AnthropicBaseUrl),
    ("openai-base-url", RouteRole::OpenaiBaseUrl),
];

/// `auth.scheme`, before `header` makes a [`crate::AuthScheme`] of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemeWord {
    Bearer,
    Basic,
    Header,
}

pub const SCHEMES: [(&str, SchemeWord); 3] = [
    ("bearer", SchemeWord::Bearer),
    ("basic", SchemeWord::Basic),
    ("header", SchemeWord::Header),
];

const fn field(name: &'static str, description: &'static str, shape: Shape) -> Field {
    Field {
        name,
        required: false,
        only_with: None,
        value: Value { description, shape },
    }
}

const fn required(name: &'static str, description: &'static str, shape: Shape) -> Field {
    Field {
        required: true,
        ..field(name, description, shape)
    }
}

const STR: Shape = Shape::Str {
    pattern: None,
    except: &[],
};

const fn matching(pattern: &'static str) -> Shape {
    Shape::Str {
        pattern: Some(pattern),
        except: &[],
    }
}

/// The whole manifest.
pub const MANIFEST: Value = Value {
    description: "A bottle manifest: sandbox policies (`bottles`) and the agents that run \
                  under them (`agents`). Unknown keys are errors; an optional key left \
                  empty counts as absent. `bottle diff -f FILE` shows what `bottle apply` \
                  would do.",
    shape: Shape::Map(TOP),
};

pub const TOP: &[Field] = &[
    field(
        "project",
        "Project name: prefixes every Docker object (bottle-<project>-<agent>-<node>). \
         Lowercase letters, digits and `-`, at most 32 characters. Default: the \
         manifest's directory name, sanitised.",
        matching(NAME_PATTERN),
    ),
    required(
        "bottles",
        "Sandbox policies by name. An agent runs under one of them.",
        Shape::Named {
            keys: NAME_PATTERN,
            value: &Value {
                description: "A sandbox policy. Empty: every default.",
                shape: Shape::AnyOf(&[
                    Value {
                        description: "The policy's settings.",
                        shape: Shape::Map(BOTTLE),
                    },
                    Value {
                        description: "Every default.",
                        shape: Shape::Null,
                    },
                ]),
            },
            min_entries: 0,
        },
    ),
    required(
        "agents",
        "Running bottles by agent name (at least one): each agent is one bottle, named \
         after the agent.",
        Shape::Named {
            keys: NAME_PATTERN,
            value: &Value {
                description: "One agent: the policy it runs under and what it is given.",
                shape: Shape::Map(AGENT),
            },
            min_entries: 1,
        },
    ),
];

pub const BOTTLE: &[Field] = &[
    field(
        "image",
        "The agent image, built from a Dockerfile. Absent: the provider's default \
         (Dockerfile.claude or Dockerfile.codex, embedded in bottle).",
        Shape::Map(IMAGE),
    ),
    field(
        "runtime",
        "The agent's container runtime. `auto` (default): gVisor (runsc) when the engine \
         has a working one, else runc with a warning; `runc` or `runsc`: exactly that \
         (runsc on an engine without it is an error).",
        Shape::Choice(&RUNTIMES),
    ),
    field(
        "resources",
        "Limits of the agent container. Defaults: cpus 2, memory 4g, pids 1024.",
        Shape::Map(RESOURCES),
    ),
    field(
        "env",
        "The agent's environment: variable name to a literal value or `{from_env: VAR}`, \
         copied from the host at apply time (never printed). HTTP_PROXY, HTTPS_PROXY, \
         NO_PROXY and BOTTLE_* are reserved.",
        Shape::Named {
            keys: ENV_PATTERN,
            value: &Value {
                description: "The variable's value.",
                shape: Shape::AnyOf(&[
                    Value {
                        description: "A literal value, passed as written.",
                        shape: Shape::Scalar,
                    },
                    Value {
                        description: "The value of a host environment variable, read at \
                                      apply time; a missing one is an error.",
                        shape: Shape::Map(FROM_ENV),
                    },
                ]),
            },
            min_entries: 0,
        },
    ),
    field(
        "egress",
        "What may leave the bottle: allowed hosts, credentialed routes, data-loss \
         prevention and response scanning.",
        Shape::Map(EGRESS),
    ),
    field(
        "git",
        "Git remotes the agent may push to, through the git-gate sidecar only (pushed \
         commits are scanned for secrets).",
        Shape::List(&Value {
            description: "One remote.",
            shape: Shape::Map(GIT),
        }),
    ),
    field(
        "supervise",
        "Give the agent the supervise MCP server: it may propose hosts and Dockerfiles, \
         the operator approves (`bottle queue`). Default: false.",
        Shape::Bool,
    ),
    field(
        "pipelock",
        "The firewall. Default: bottle's own (`bottle sidecar pipelock`).",
        Shape::Map(PIPELOCK),
    ),
];

pub const IMAGE: &[Field] = &[
    required(
        "dockerfile",
        "The Dockerfile, relative to the manifest's directory.",
        STR,
    ),
    field(
        "context",
        "The build context directory, relative to the manifest's directory. Default: \
         the Dockerfile's directory.",
        STR,
    ),
];

pub const RESOURCES: &[Field] = &[
    field(
        "cpus",
        "CPUs, may be fractional: more than 0, at most 64. Default: 2.",
        Shape::Cpus,
    ),
    field(
        "memory",
        "Memory limit: bytes, or a number with a k, m, g or t suffix (binary units), \
         e.g. `512m`, `4g`, `1.5g`. At least 16m. Default: 4g.",
        Shape::Size,
    ),
    field(
        "pids",
        "Most processes at once: at least 16. Default: 1024.",
        Shape::Int { minimum: MIN_PIDS },
    ),
];

pub const FROM_ENV: &[Field] = &[required(
    "from_env",
    "The host environment variable's name.",
    matching(ENV_PATTERN),
)];

pub const EGRESS: &[Field] = &[
    field(
        "allow",
        "Hosts reachable without credentials.",
        Shape::List(&Value {
            description: "An exact host name, or `*.suffix` for every name below suffix.",
            shape: STR,
        }),
    ),
    field(
        "allow_cidrs",
        "Address blocks the firewall may connect to despite its guard against \
         loopback, private and link-local addresses.",
        Shape::List(&Value {
            description: "An IPv4 or IPv6 block, `a.b.c.d/n`.",
            shape: STR,
        }),
    ),
    field(
        "routes",
        "Credentialed (or passthrough) upstreams: the egress sidecar strips the agent's \
         credentials and injects the real token, which comes only from the host \
         environment.",
        Shape::List(&Value {
            description: "One upstream.",
            shape: Shape::Map(ROUTE),
        }),
    ),
    field(
        "dlp",
        "Data-loss prevention on what the agent sends. Default: on, built-in rules.",
        Shape::Map(DLP),
    ),
    field(
        "upstream_ca",
        "A PEM file of an extra CA trusted for upstream TLS, relative to the manifest's \
         directory.",
        STR,
    ),
    field(
        "responses",
        "Responses to the agent scanned for prompt injection: `block` (default) \
         replaces one with an error, `warn` passes it with an audit line, `off` scans \
         nothing.",
        Shape::Choice(&RESPONSES),
    ),
];

pub const ROUTE: &[Field] = &[
    required("host", "The upstream's exact host name.", STR),
    field(
        "path_prefix",
        "Only requests whose path starts with this (`/` first, no spaces). Not with \
         `tls_passthrough`.",
        STR,
    ),
    field(
        "auth",
        "The credential egress injects. Not with `tls_passthrough`.",
        Shape::Map(AUTH),
    ),
    field(
        "roles",
        "What the route is to the agent; each role on one route at most.",
        Shape::List(&Value {
            description: "`anthropic-base-url`: the agent's ANTHROPIC_BASE_URL; \
                          `openai-base-url`: its OPENAI_BASE_URL.",
            shape: Shape::Choice(&ROLES),
        }),
    ),
    field(
        "tls_passthrough",
        "Tunnel the host's TLS untouched: neither intercepted, scanned nor credentialed. \
         Default: false.",
        Shape::Bool,
    ),
];

pub const AUTH: &[Field] = &[
    required(
        "scheme",
        "How the token is sent: `bearer` (Authorization: Bearer), `basic` \
         (Authorization: Basic) or `header` (verbatim in the header named by `header`).",
        Shape::Choice(&SCHEMES),
    ),
    Field {
        only_with: Some(("scheme", "header")),
        ..field(
            "header",
            "The header that carries the token, with `scheme: header` only (required \
             there).",
            STR,
        )
    },
    required(
        "token",
        "The token, from the host environment only (never written in the manifest).",
        Shape::Map(FROM_ENV),
    ),
];

pub const DLP: &[Field] = &[
    field(
        "enabled",
        "Scan requests for secrets. Default: true.",
        Shape::Bool,
    ),
    field(
        "rules",
        "A gitleaks-format TOML rule file, relative to the manifest's directory. \
         Default: the built-in rules.",
        STR,
    ),
];

pub const GIT: &[Field] = &[
    required(
        "name",
        "The remote's name in the agent's repository (letters, digits, `-`, `_`, `.`).",
        STR,
    ),
    required(
        "upstream",
        "The real remote, over SSH: `ssh://user@host/path` or `user@host:path`.",
        STR,
    ),
    required(
        "identity_file",
        "The private key git-gate pushes with (`~` expands to HOME); it never enters \
         the agent.",
        STR,
    ),
    required(
        "known_host_key",
        "The upstream's pinned host key, as a known_hosts line: `host keytype base64`.",
        STR,
    ),
    field(
        "allow_force",
        "Allow force pushes. Default: false.",
        Shape::Bool,
    ),
];

pub const PIPELOCK: &[Field] = &[field(
    "image",
    "Run the upstream pipelock project's image instead, already in the engine (bottle \
     pulls nothing), with the policy rendered in its own schema.",
    STR,
)];

pub const AGENT: &[Field] = &[
    required(
        "bottle",
        "The policy it runs under: a key of `bottles`.",
        STR,
    ),
    field(
        "provider",
        "The agent CLI: `claude` (Claude Code, default) or `codex`.",
        Shape::Choice(&PROVIDERS),
    ),
    field(
        "prompt",
        "Instructions appended to the agent's system prompt.",
        STR,
    ),
    field(
        "skills",
        "Skills copied into the agent, each a directory `$BOTTLE_SKILLS_DIR/<name>` or \
         `~/.claude/skills/<name>` on the host.",
        Shape::List(&Value {
            description: "A skill's directory name (letters, digits, `_`, `.`, `-`).",
            shape: Shape::Str {
                pattern: Some(SKILL_PATTERN),
                except: &[".", ".."],
            },
        }),
    ),
    field(
        "workspace",
        "A host directory, relative to the manifest's directory, copied into the bottle \
         at creation (never mounted).",
        STR,
    ),
    field(
        "host_login",
        "Codex only: use the host's Codex ChatGPT login (`$CODEX_HOME/auth.json`, else \
         `~/.codex/auth.json`). The agent gets stand-in tokens; egress sends the real \
         access token on `chatgpt.com`'s Codex path only.",
        Shape::Bool,
    ),
    field(
        "remote_control",
        "Claude Code only: start it with Remote Control (`bottle exec` passes \
         `--remote-control`); Anthropic's hosts are then tunnelled unscanned and the agent \
         holds its own claude.ai login (see README).",
        Shape::Bool,
    ),
];

/// The JSON Schema (draft 2020-12) of a manifest, with a description on every value.
pub fn json_schema() -> Json {
    let mut root = value_json(&MANIFEST);
    if let Json::Object(map) = &mut root {
        map.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        map.insert("$id".into(), ID.into());
        map.insert("title".into(), "bottles.yaml".into());
    }
    sorted(root)
}

/// [`json_schema`] as `bottle schema` prints it, and as `schema/bottles.schema.json`
/// holds it: pretty, keys sorted, one newline at the end.
pub fn json_schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

fn value_json(value: &Value) -> Json {
    let mut out = shape_json(&value.shape);
    if let Json::Object(map) = &mut out {
        map.insert("description".into(), value.description.into());
    }
    out
}

fn shape_json(shape: &Shape) -> Json {
    match shape {
        Shape::Str { pattern, except } => {
            let mut out = json!({"type": "string"});
            if let Some(pattern) = pattern {
                out["pattern"] = json!(pattern);
            }
            if !except.is_empty() {
                out["not"] = json!({"enum": except});
            }
            out
        }
        Shape::Bool => json!({"type": "boolean"}),
        Shape::Int { minimum } => json!({"type": "integer", "minimum": minimum}),
        Shape::Cpus => json!({"type": "number", "exclusiveMinimum": 0, "maximum": MAX_CPUS}),
        Shape::Size => json!({"anyOf": [
            {"type": "integer", "minimum": MIN_MEMORY},
            {"type": "string", "pattern": SIZE_PATTERN},
        ]}),
        Shape::Scalar => json!({"type": ["string", "number", "boolean"]}),
        Shape::Choice(words) => json!({"type": "string", "enum": words.words()}),
        Shape::List(item) => json!({"type": "array", "items": value_json(item)}),
        Shape::Map(fields) => {
            let properties: Map<String, Json> = fields
                .iter()
                .map(|f| {
                    let mut value = value_json(&f.value);
                    if !f.required {
                        or_null(&mut value);
                    }
                    (f.name.to_owned(), value)
                })
                .collect();
            let required: Vec<&str> = fields
                .iter()
                .filter(|f| f.required)
                .map(|f| f.name)
                .collect();
            let mut out = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            if !required.is_empty() {
                out["required"] = json!(required);
            }
            let conditions: Vec<Json> = fields
                .iter()
                .filter_map(|f| {
                    let (key, word) = f.only_with?;
                    Some(json!({
                        "if": {"properties": {key: {"const": word}}, "required": [key]},
                        "then": {
                            "required": [f.name],
                            "properties": {f.name: {"not": {"type": "null"}}},
                        },
                        "else": {"properties": {f.name: {"type": "null"}}},
                    }))
                })
                .collect();
            if !conditions.is_empty() {
                out["allOf"] = json!(conditions);
            }
            out
        }
        Shape::Named {
            keys,
            value,
            min_entries,
        } => {
            let mut out = json!({
                "type": "object",
                "propertyNames": {"pattern": keys},
                "additionalProperties": value_json(value),
            });
            if *min_entries > 0 {
                out["minProperties"] = json!(min_entries);
            }
            out
        }
        Shape::AnyOf(values) => {
            json!({"anyOf": values.iter().map(value_json).collect::<Vec<_>>()})
        }
        Shape::Null => json!({"type": "null"}),
    }
}

/// Let a schema also take null: an optional key left empty counts as absent.
fn or_null(schema: &mut Json) {
    if let Some(options) = schema.get_mut("anyOf").and_then(Json::as_array_mut) {
        options.push(json!({"type": "null"}));
        return;
    }
    if let Some(words) = schema.get_mut("enum").and_then(Json::as_array_mut) {
        words.push(Json::Null);
    }
    match schema.get_mut("type") {
        Some(Json::Array(types)) => types.push("null".into()),
        Some(one) => *one = json!([one.take(), "null"]),
        None => {}
    }
}

/// `value` with every object's keys in sorted order, whether or not serde_json keeps
/// insertion order (its `preserve_order` feature), so the text never depends on it.
fn sorted(value: Json) -> Json {
    match value {
        Json::Object(map) => {
            let mut entries: Vec<(String, Json)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Json::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Json::Array(items) => Json::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::manifest::raw::{self, Node, Raw};
    use crate::manifest::{ManifestError, Problem, load, parse_names};

    /// The first line of every example: editors that speak yaml-language-server take
    /// completion, hover text and checks from the committed schema.
    const EDITOR_LINE: &str = "# yaml-language-server: $schema=../schema/bottles.schema.json\n";

    /// Every map of the schema present, every list non-empty.
    const EVERY_FIELD: &str = r#"
project: demo
bottles:
  dev:
    image: {dockerfile: Dockerfile.agent, context: .}
    runtime: runsc
    resources: {cpus: 1.5, memory: 512m, pids: 64}
    env:
      TZ: UTC
      N: 3
      TOKEN: {from_env: USER}
    egress:
      allow: [pypi.org, "*.example.com"]
      allow_cidrs: [10.0.0.0/8]
      routes:
        - host: api.anthropic.com
          path_prefix: /v1
          auth: {scheme: header, header: X-Api-Key, token: {from_env: ANTHROPIC_API_KEY}}
          roles: [anthropic-base-url]
        - host: chatgpt.com
          tls_passthrough: true
      dlp: {enabled: true, rules: rules.toml}
      upstream_ca: ca.pem
      responses: warn
    git:
      - name: origin
        upstream: ssh://git@github.com/acme/app.git
        identity_file: ~/.ssh/key
        known_host_key: "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV"
        allow_force: false
    supervise: true
    pipelock: {image: "pipelock:2"}
  defaults:
agents:
  reviewer:
    bottle: dev
    provider: codex
    prompt: Review.
    skills: [code-review]
    workspace: .
"#;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn validator() -> jsonschema::Validator {
        jsonschema::draft202012::new(&json_schema()).expect("the schema compiles")
    }

    /// A parsed YAML tree as JSON, the way an editor's YAML plugin sees it.
    fn to_json(node: &Node) -> Json {
        match &node.value {
            Raw::Null => Json::Null,
            Raw::Bool(b) => Json::Bool(*b),
            Raw::Int(i) => i64::try_from(*i).map_or_else(|_| json!(*i as f64), Json::from),
            Raw::Float(f) => json!(f),
            Raw::Str(s) => Json::String(s.clone()),
            Raw::Seq(items) => items.iter().map(to_json).collect(),
            Raw::Map(entries) => Json::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.value.clone(), to_json(v)))
                    .collect(),
            ),
        }
    }

    fn yaml_to_json(text: &str) -> Json {
        to_json(&raw::parse(text).expect("the YAML parses"))
    }

    /// The validator's problems with `doc` (JSON is YAML), reading nothing of the host.
    fn problems(doc: &Json) -> Vec<Problem> {
        let text = serde_json::to_string(doc).expect("serialises");
        match parse_names(&text, Path::new("/nonexistent/demo/bottles.yaml")) {
            Ok(_) => Vec::new(),
            Err(ManifestError::Invalid(d)) => d.problems,
            Err(e) => panic!("{e}"),
        }
    }

    fn schema_errors(validator: &jsonschema::Validator, doc: &Json) -> Vec<String> {
        validator.iter_errors(doc).map(|e| e.to_string()).collect()
    }

    fn join(path: &str, key: &str) -> String {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    }

    /// A map with fixed keys found in a document.
    struct Site {
        /// Where in the document (a JSON pointer).
        pointer: String,
        /// The validator's dotted field path.
        field: String,
        /// Where in the generated schema (a JSON pointer).
        schema: String,
        fields: &'static [Field],
    }

    /// Every map with fixed keys in `doc`, walking it along `value`.
    fn sites(value: &Value, doc: &Json, at: (&str, &str, &str), out: &mut Vec<Site>) {
        let (pointer, field, schema) = at;
        match (&value.shape, doc) {
            (Shape::Map(fields), Json::Object(map)) => {
                out.push(Site {
                    pointer: pointer.to_owned(),
                    field: field.to_owned(),
                    schema: schema.to_owned(),
                    fields,
                });
                for f in fields.iter() {
                    if let Some(v) = map.get(f.name) {
                        let p = format!("{pointer}/{}", f.name);
                        let s = format!("{schema}/properties/{}", f.name);
                        sites(&f.value, v, (&p, &join(field, f.name), &s), out);
                    }
                }
            }
            (Shape::Named { value, .. }, Json::Object(map)) => {
                for (k, v) in map {
                    let p = format!("{pointer}/{k}");
                    let s = format!("{schema}/additionalProperties");
                    sites(value, v, (&p, &join(field, k), &s), out);
                }
            }
            (Shape::List(item), Json::Array(items)) => {
                for (i, v) in items.iter().enumerate() {
                    let p = format!("{pointer}/{i}");
                    let s = format!("{schema}/items");
                    sites(item, v, (&p, &format!("{field}[{i}]"), &s), out);
                }
            }
            (Shape::AnyOf(values), _) => {
                for (i, v) in values.iter().enumerate() {
                    sites(
                        v,
                        doc,
                        (pointer, field, &format!("{schema}/anyOf/{i}")),
                        out,
                    );
                }
            }
            _ => {}
        }
    }

    /// Every map with fixed keys in the schema tree, by schema pointer.
    fn schema_maps(value: &Value, schema: &str, out: &mut BTreeSet<String>) {
        match &value.shape {
            Shape::Map(fields) => {
                out.insert(schema.to_owned());
                for f in fields.iter() {
                    schema_maps(&f.value, &format!("{schema}/properties/{}", f.name), out);
                }
            }
            Shape::Named { value, .. } => {
                schema_maps(value, &format!("{schema}/additionalProperties"), out)
            }
            Shape::List(item) => schema_maps(item, &format!("{schema}/items"), out),
            Shape::AnyOf(values) => {
                for (i, v) in values.iter().enumerate() {
                    schema_maps(v, &format!("{schema}/anyOf/{i}"), out);
                }
            }
            _ => {}
        }
    }

    fn every_field_sites() -> (Json, Vec<Site>) {
        let doc = yaml_to_json(EVERY_FIELD);
        let mut found = Vec::new();
        sites(&MANIFEST, &doc, ("", "", ""), &mut found);
        (doc, found)
    }

    #[test]
    fn the_schema_is_a_valid_draft_2020_12_schema() {
        let schema = json_schema();
        jsonschema::meta::validate(&schema).expect("valid against its metaschema");
        assert_eq!(schema["$id"], ID);
        assert_eq!(schema["title"], "bottles.yaml");
    }

    #[test]
    fn every_value_has_a_description() {
        fn walk(node: &Json, at: &str) {
            let description = node["description"].as_str().unwrap_or_default();
            assert!(!description.trim().is_empty(), "no description at {at}");
            if let Some(props) = node["properties"].as_object() {
                for (k, v) in props {
                    walk(v, &format!("{at}/properties/{k}"));
                }
            }
            for key in ["items", "additionalProperties"] {
                if node[key].is_object() {
                    walk(&node[key], &format!("{at}/{key}"));
                }
            }
            if let Some(options) = node["anyOf"].as_array() {
                // A size's two spellings are one value's, described once.
                if options.iter().all(|o| o.get("description").is_some()) {
                    for (i, v) in options.iter().enumerate() {
                        walk(v, &format!("{at}/anyOf/{i}"));
                    }
                }
            }
        }
        walk(&json_schema(), "");
        fn tree(value: &Value, at: &str) {
            assert!(
                !value.description.trim().is_empty(),
                "no description at {at}"
            );
            match &value.shape {
                Shape::Map(fields) => {
                    for f in fields.iter() {
                        tree(&f.value, &join(at, f.name));
                    }
                }
                Shape::Named { value, .. } => tree(value, &join(at, "*")),
                Shape::List(item) => tree(item, &format!("{at}[]")),
                Shape::AnyOf(values) => values.iter().for_each(|v| tree(v, at)),
                _ => {}
            }
        }
        tree(&MANIFEST, "");
    }

    #[test]
    fn the_committed_schema_is_current() {
        let path = repo().join("schema/bottles.schema.json");
        let text = json_schema_text();
        if std::env::var_os("BOTTLE_UPDATE_SCHEMA").is_some() {
            std::fs::write(&path, &text).expect("write the schema");
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is not `bottle schema`'s output: rewrite it with \
             `BOTTLE_UPDATE_SCHEMA=1 cargo test -p bottle-model committed_schema`",
            path.display()
        );
    }

    #[test]
    fn every_example_starts_with_the_editor_line_and_is_valid_for_both() {
        let validator = validator();
        let mut seen = 0;
        let dir = repo().join("examples");
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            seen += 1;
            let text = std::fs::read_to_string(&path).expect("read");
            assert!(
                text.starts_with(EDITOR_LINE),
                "{} does not start with {EDITOR_LINE:?}",
                path.display()
            );
            let doc = yaml_to_json(&text);
            let errors = schema_errors(&validator, &doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            let env = |_: &str| Some("value".to_owned());
            if let Err(e) = load(&path, &env) {
                panic!("{e}");
            }
        }
        assert!(seen >= 2, "no examples in {}", dir.display());
    }

    #[test]
    fn every_map_of_the_schema_is_in_the_every_field_manifest() {
        let (doc, found) = every_field_sites();
        assert!(problems(&doc).is_empty(), "{:#?}", problems(&doc));
        let errors = schema_errors(&validator(), &doc);
        assert!(errors.is_empty(), "{errors:#?}");
        let covered: BTreeSet<String> = found.iter().map(|s| s.schema.clone()).collect();
        let mut all = BTreeSet::new();
        schema_maps(&MANIFEST, "", &mut all);
        let missing: Vec<&String> = all.difference(&covered).collect();
        assert!(missing.is_empty(), "not in EVERY_FIELD: {missing:?}");
    }

    /// At every map, an unknown key is refused by both; the validator lists exactly the
    /// schema's properties as the keys it expected.
    #[test]
    fn unknown_keys_are_refused_by_both_at_every_depth() {
        let (doc, found) = every_field_sites();
        let validator = validator();
        let schema = json_schema();
        assert!(found.len() >= 10, "{}", found.len());
        for site in &found {
            let mut bad = doc.clone();
            let map = bad
                .pointer_mut(&site.pointer)
                .and_then(Json::as_object_mut)
                .expect("a map");
            map.insert("zzz_unknown".into(), json!(1));
            assert!(!validator.is_valid(&bad), "the schema takes {}", site.field);
            let field = join(&site.field, "zzz_unknown");
            let found = problems(&bad);
            let problem = found
                .iter()
                .find(|p| p.field == field)
                .unwrap_or_else(|| panic!("no problem at {field}: {found:#?}"));
            let listed: BTreeSet<&str> = problem
                .message
                .strip_prefix("unknown key `zzz_unknown`; expected one of: ")
                .unwrap_or_else(|| panic!("{}", problem.message))
                .split(", ")
                .collect();
            let properties: BTreeSet<&str> = schema
                .pointer(&format!("{}/properties", site.schema))
                .and_then(Json::as_object)
                .unwrap_or_else(|| panic!("no properties at {}", site.schema))
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(listed, properties, "at {}", site.field);
            let names: BTreeSet<&str> = site.fields.iter().map(|f| f.name).collect();
            assert_eq!(listed, names, "at {}", site.field);
        }
    }

    /// At every map, an optional key left empty is taken by both, as absent.
    #[test]
    fn optional_keys_may_be_empty_for_both() {
        let (doc, found) = every_field_sites();
        let validator = validator();
        for site in &found {
            for f in site
                .fields
                .iter()
                .filter(|f| !f.required && f.only_with.is_none())
            {
                let mut empty = doc.clone();
                let map = empty
                    .pointer_mut(&site.pointer)
                    .and_then(Json::as_object_mut)
                    .expect("a map");
                map.insert(f.name.to_owned(), Json::Null);
                let field = join(&site.field, f.name);
                let errors = schema_errors(&validator, &empty);
                assert!(errors.is_empty(), "{field}: {errors:#?}");
                let found = problems(&empty);
                assert!(found.is_empty(), "{field}: {found:#?}");
            }
        }
    }

    /// At every map, a required key left out is refused by both.
    #[test]
    fn required_keys_are_required_by_both() {
        let (doc, found) = every_field_sites();
        let validator = validator();
        let mut checked = 0;
        for site in &found {
            for f in site.fields.iter().filter(|f| f.required) {
                let mut bad = doc.clone();
                let map = bad
                    .pointer_mut(&site.pointer)
                    .and_then(Json::as_object_mut)
                    .expect("a map");
                map.remove(f.name);
                let field = join(&site.field, f.name);
                assert!(!validator.is_valid(&bad), "the schema lacks {field}");
                let found = problems(&bad);
                let message = format!("`{}` is required", f.name);
                assert!(
                    found
                        .iter()
                        .any(|p| p.field == field && p.message == message),
                    "{field}: {found:#?}"
                );
                checked += 1;
            }
        }
        assert!(checked >= 10, "{checked}");
    }

    /// Where the schema checks a value's spelling, it agrees with the validator.
    #[test]
    fn patterns_agree_with_the_validator() {
        let validator = validator();
        let base = yaml_to_json("bottles: {b: {}}\nagents: {a: {bottle: b}}\n");
        let with = |pointer: &str, key: &str, value: Json| {
            let mut doc = base.clone();
            let map = doc
                .pointer_mut(pointer)
                .and_then(Json::as_object_mut)
                .expect("a map");
            map.insert(key.to_owned(), value);
            doc
        };
        let named = |pointer: &str, key: &str| {
            let mut doc = base.clone();
            doc.pointer_mut(pointer)
                .and_then(Json::as_object_mut)
                .expect("a map")
                .insert(key.to_owned(), json!({"bottle": "b"}));
            doc
        };
        let long = "a".repeat(MAX_NAME);
        let too_long = "a".repeat(MAX_NAME + 1);
        let mut cases: Vec<Json> = Vec::new();
        for name in [
            "dev", "dev-1", "1", "Dev", "-dev", "dev_1", "dév", "", &long, &too_long,
        ] {
            cases.push(with("", "project", json!(name)));
            cases.push(named("/agents", name));
        }
        for var in ["TZ", "_x1", "1BAD", "A-B", ""] {
            cases.push(with("/bottles/b", "env", json!({var: "v"})));
            cases.push(with("/bottles/b", "env", json!({"X": {"from_env": var}})));
        }
        for skill in ["code-review", "a.b_c", ".", "..", "../etc", "a b", ""] {
            cases.push(with("/agents/a", "skills", json!([skill])));
        }
        for memory in [
            json!("512m"),
            json!("1.5g"),
            json!(" 2GiB "),
            json!("16777216"),
        ] {
            cases.push(with("/bottles/b", "resources", json!({"memory": memory})));
        }
        for memory in [
            json!("4x"),
            json!("g"),
            json!("1.g"),
            json!("-1g"),
            json!("3 g"),
        ] {
            cases.push(with("/bottles/b", "resources", json!({"memory": memory})));
        }
        for memory in [json!(16 << 20), json!((16 << 20) - 1), json!(true)] {
            cases.push(with("/bottles/b", "resources", json!({"memory": memory})));
        }
        for cpus in [
            json!(0),
            json!(0.5),
            json!(64),
            json!(64.5),
            json!(-1),
            json!("2"),
        ] {
            cases.push(with("/bottles/b", "resources", json!({"cpus": cpus})));
        }
        for pids in [json!(MIN_PIDS), json!(MIN_PIDS - 1), json!(1.5)] {
            cases.push(with("/bottles/b", "resources", json!({"pids": pids})));
        }
        for (key, value) in [
            ("runtime", json!("runsc")),
            ("runtime", json!("docker")),
            ("supervise", json!("yes")),
            ("env", json!({"N": 1.5, "B": false})),
            ("env", json!({"L": [1]})),
        ] {
            cases.push(with("/bottles/b", key, value));
        }
        cases.push(yaml_to_json("bottles: {b: }\nagents: {}\n"));
        for (scheme, header) in [
            ("header", json!("X-Key")),
            ("header", Json::Null),
            ("bearer", json!("X-Key")),
            ("bearer", Json::Null),
        ] {
            let auth = json!({"scheme": scheme, "header": header, "token": {"from_env": "T"}});
            cases.push(with(
                "/bottles/b",
                "egress",
                json!({"routes": [{"host": "a.io", "auth": auth}]}),
            ));
        }
        for doc in cases {
            let by_validator = problems(&doc);
            let by_schema = schema_errors(&validator, &doc);
            assert_eq!(
                by_validator.is_empty(),
                by_schema.is_empty(),
                "{doc}\nvalidator: {by_validator:#?}\nschema: {by_schema:#?}"
            );
        }
    }
}
