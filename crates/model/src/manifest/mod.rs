//! Reading `bottles.yaml`: text to the validated [`crate::Manifest`].
//!
//! Two stages, like ripgrep's low-level and high-level arguments:
//! 1. [`raw`]: YAML to a generic tree of nodes that keep their line and column, under a
//!    strict parse budget;
//! 2. [`validate`]: a hand-written walk of that tree into the model that collects every
//!    problem (unknown keys, wrong types, bad values, missing fields, dangling
//!    references) instead of stopping at the first.
//!
//! Problems come back as [`Diagnostics`], printed one per line as
//! `FILE:LINE:COLUMN: FIELD: MESSAGE`. The keys and word lists the walk accepts come
//! from [`schema`], which `bottle schema` also prints as a JSON Schema.

mod diag;
mod raw;
pub mod schema;
mod validate;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub use diag::{DOCUMENT, Diagnostics, Problem, Snippets};

use crate::{Manifest, Provider};
use validate::Reads;

/// Manifests larger than this are refused before parsing.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

/// Why a manifest could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is over [`MAX_MANIFEST_BYTES`].
    #[error("{} is too large ({size} bytes; a manifest may be at most {limit} bytes)", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// The file was read but is not a valid manifest.
    #[error(transparent)]
    Invalid(Diagnostics),
}

impl miette::Diagnostic for ManifestError {
    fn code<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        match self {
            ManifestError::Invalid(d) => d.code(),
            _ => Some(Box::new("bottle::manifest")),
        }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        match self {
            ManifestError::Invalid(d) => d.source_code(),
            _ => None,
        }
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        match self {
            ManifestError::Invalid(d) => d.related(),
            _ => None,
        }
    }
}

/// What a manifest names, read without touching the host: no `from_env` variable, skill,
/// identity, rule, CA or Dockerfile is looked up, so a shell that lacks the secrets can
/// still find, list and remove the project's bottles. It is not a [`Manifest`] and
/// cannot be turned into one: nothing built from it can reach a desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The manifest file, absolute.
    pub path: PathBuf,
    pub project: String,
    /// The bottle (policy) names.
    pub bottles: Vec<String>,
    /// Agent name to its bottle and provider.
    pub agents: BTreeMap<String, AgentNames>,
    /// Per bottle (policy), what `bottle verify` checks a running bottle against: the
    /// runtime asked for and the hosts it may reach. Names and choices only, no value.
    pub policies: BTreeMap<String, PolicyNames>,
}

/// One bottle policy of [`Names`], without any host value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyNames {
    pub runtime: crate::RuntimeChoice,
    /// `egress.allow`, as written (lowercased).
    pub allow: Vec<String>,
    pub routes: Vec<RouteNames>,
    /// `pipelock.image` is set: the upstream project's firewall, which holds no gateway
    /// and audits no DNS question or direct packet.
    pub foreign_pipelock: bool,
    /// Where the agent image comes from (paths, not contents): the console shows a
    /// proposed Dockerfile against it.
    pub image: crate::ImageSource,
}

/// One route of a [`PolicyNames`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteNames {
    pub host: String,
    pub path_prefix: Option<String>,
    /// The host variable its token comes from, when it has one.
    pub token_var: Option<String>,
}

/// One agent of [`Names`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentNames {
    pub bottle: String,
    pub provider: Provider,
}

impl Names {
    /// Keep only names: the placeholders of a names-only walk never leave this module.
    fn of(m: Manifest) -> Names {
        let policies = m
            .bottles
            .iter()
            .map(|(name, p)| {
                let names = PolicyNames {
                    runtime: p.runtime,
                    allow: p.egress.allow.clone(),
                    routes: p
                        .egress
                        .routes
                        .iter()
                        .map(|r| RouteNames {
                            host: r.host.clone(),
                            path_prefix: r.path_prefix.clone(),
                            token_var: r.auth.as_ref().map(|a| a.var.clone()),
                        })
                        .collect(),
                    foreign_pipelock: p.egress.pipelock_image.is_some(),
                    image: p.image.clone(),
                };
                (name.clone(), names)
            })
            .collect();
        Names {
            path: m.path,
            project: m.project,
            policies,
            bottles: m.bottles.into_keys().collect(),
            agents: m
                .agents
                .into_iter()
                .map(|(name, a)| {
                    let names = AgentNames {
                        bottle: a.bottle,
                        provider: a.provider,
                    };
                    (name, names)
                })
                .collect(),
        }
    }
}

/// Read and validate a manifest file. `env` looks up host environment variables (for
/// `from_env` and `~` expansion).
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Manifest, ManifestError> {
    let text = read(path)?;
    parse_with(&text, path, env, Reads::Host)
}

/// Read a manifest file for its [`Names`]: the same syntax and structure checks, with
/// the same located problems, as [`load`], but nothing of the host is read, so an unset
/// `from_env` variable or a missing skill, identity or rule file is not a problem.
pub fn load_names(path: &Path) -> Result<Names, ManifestError> {
    let text = read(path)?;
    parse_names(&text, path)
}

/// Same as [`load_names`], from text already read.
pub fn parse_names(text: &str, path: &Path) -> Result<Names, ManifestError> {
    parse_with(text, path, &|_| None, Reads::NamesOnly).map(Names::of)
}

/// The file's text, bounded by [`MAX_MANIFEST_BYTES`]; bad UTF-8 is a located problem.
fn read(path: &Path) -> Result<String, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let limit = MAX_MANIFEST_BYTES as u64;
    let size = file.metadata().map_err(io)?.len();
    if size > limit {
        return Err(too_large(path, size));
    }
    // The file may grow between the check and the read: never read past the limit.
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(path, bytes.len() as u64));
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(text),
        Err(err) => {
            let bytes = err.as_bytes();
            let problem = raw::utf8_error(bytes, err.utf8_error());
            Err(syntax(path, &String::from_utf8_lossy(bytes), problem))
        }
    }
}

/// Same as [`load`], from text already read; `path` is used for messages and to resolve
/// relative paths (relative to the manifest's directory).
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, ManifestError> {
    parse_with(text, path, env, Reads::Host)
}

fn parse_with(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    reads: Reads,
) -> Result<Manifest, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(too_large(path, text.len() as u64));
    }
    let root = raw::parse(text).map_err(|err| syntax(path, text, err))?;
    let absolute = absolute(path);
    validate::manifest(&root, &absolute, text, env, reads)
        .map_err(|problems| ManifestError::Invalid(Diagnostics::new(path, text, problems)))
}

/// A manifest file's text, read as [`load`] reads it (bounded, UTF-8), not validated.
pub fn read_text(path: &Path) -> Result<String, ManifestError> {
    read(path)
}

/// Where the manifest `text` writes `field` (a dotted path of map keys, as in
/// [`Problem::field`]): the deepest key of the path that the text has, so a field left
/// to its default is placed at the map that would hold it. `None` when the text does
/// not parse, or holds not even the path's first key.
pub fn locate_in(text: &str, field: &str) -> Option<Located> {
    let mut node = raw::parse(text).ok()?;
    let mut found: Option<Located> = None;
    for key in field.split('.') {
        let raw::Raw::Map(entries) = node.value else {
            break;
        };
        let Some((k, v)) = entries.into_iter().find(|(k, _)| k.value == key) else {
            break;
        };
        let (line, column) = raw::position(&k.referenced);
        let field = match found {
            Some(f) => format!("{}.{key}", f.field),
            None => key.to_owned(),
        };
        found = Some(Located {
            line,
            column,
            field,
        });
        node = v;
    }
    found
}

/// A place in a manifest: see [`locate_in`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The part of the asked path the file has.
    pub field: String,
}

fn too_large(path: &Path, size: u64) -> ManifestError {
    ManifestError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_MANIFEST_BYTES as u64,
    }
}

fn syntax(path: &Path, text: &str, err: raw::SyntaxError) -> ManifestError {
    let problem = Problem {
        line: err.line,
        column: err.column,
        field: DOCUMENT.to_owned(),
        message: err.message,
    };
    ManifestError::Invalid(Diagnostics::new(path, text, vec![problem]))
}

/// The manifest path made absolute (canonical when it exists).
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Agent, AuthScheme, BottlePolicy, Dlp, Egress, EnvValue, GitRemote, ImageSource, Provider,
        Resources, Route, RouteAuth, RouteRole, RuntimeChoice, Secret, Skill,
    };
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    const EXAMPLE: &str = r#"project: demo
bottles:
  dev:
    image: {dockerfile: Dockerfile.test}
    runtime: auto
    resources: {cpus: 2, memory: 4g, pids: 512}
    env:
      TZ: UTC
      GH_USER: {from_env: GH_USER}
    egress:
      allow: [registry.npmjs.org, pypi.org, "*.pythonhosted.org"]
      routes:
        - host: api.anthropic.com
          auth: {scheme: bearer, token: {from_env: ANTHROPIC_API_KEY}}
          roles: [anthropic-base-url]
        - host: chatgpt.com
          tls_passthrough: true
      dlp: {enabled: true}
      responses: warn
    supervise: true
agents:
  reviewer:
    bottle: dev
    provider: claude
    prompt: |
      You review pull requests.
    skills: [code-review]
    workspace: .
"#;

    const TOKEN: &str = "sk-ant-very-secret-token-value";

    /// A skills directory holding `code-review`, shared by the tests.
    fn skills_dir() -> &'static Path {
        static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        DIR.get_or_init(|| {
            let d = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir(d.path().join("code-review")).expect("mkdir");
            d
        })
        .path()
    }

    fn host_env(name: &str) -> Option<String> {
        match name {
            "BOTTLE_SKILLS_DIR" => Some(skills_dir().display().to_string()),
            "GH_USER" => Some("octocat".to_owned()),
            "ANTHROPIC_API_KEY" => Some(TOKEN.to_owned()),
            "HOME" => Some("/nonexistent-home".to_owned()),
            _ => None,
        }
    }

    /// A temporary project directory holding the files the example refers to.
    fn project_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("Dockerfile.test"), "FROM scratch\n").expect("write");
        dir
    }

    fn parse_in(dir: &Path, text: &str) -> Result<Manifest, ManifestError> {
        parse(text, &dir.join("bottles.yaml"), &host_env)
    }

    fn problems(result: Result<Manifest, ManifestError>) -> Vec<Problem> {
        match result {
            Err(ManifestError::Invalid(d)) => d.problems,
            other => panic!("expected problems, got {other:?}"),
        }
    }

    fn canonical(path: &Path) -> PathBuf {
        std::fs::canonicalize(path).expect("canonicalize")
    }

    #[test]
    fn example_parses_to_the_expected_model() {
        let dir = project_dir();
        let root = canonical(dir.path());
        let manifest = parse_in(dir.path(), EXAMPLE).expect("valid");
        let dev = BottlePolicy {
            image: ImageSource::Dockerfile {
                dockerfile: root.join("Dockerfile.test"),
                context: root.clone(),
            },
            runtime: RuntimeChoice::Auto,
            resources: Resources {
                cpus: 2.0,
                memory: 4 << 30,
                pids: 512,
            },
            env: BTreeMap::from([
                ("TZ".to_owned(), EnvValue::Literal("UTC".to_owned())),
                (
                    "GH_USER".to_owned(),
                    EnvValue::FromEnv {
                        var: "GH_USER".to_owned(),
                        value: Secret::new("octocat"),
                    },
                ),
            ]),
            egress: Egress {
                allow_cidrs: vec![],
                allow: vec![
                    "registry.npmjs.org".to_owned(),
                    "pypi.org".to_owned(),
                    "*.pythonhosted.org".to_owned(),
                ],
                routes: vec![
                    Route {
                        host: "api.anthropic.com".to_owned(),
                        path_prefix: None,
                        auth: Some(RouteAuth {
                            scheme: AuthScheme::Bearer,
                            token: Secret::new(TOKEN),
                            var: "ANTHROPIC_API_KEY".into(),
                        }),
                        roles: vec![RouteRole::AnthropicBaseUrl],
                        tls_passthrough: false,
                    },
                    Route {
                        host: "chatgpt.com".to_owned(),
                        path_prefix: None,
                        auth: None,
                        roles: vec![],
                        tls_passthrough: true,
                    },
                ],
                dlp: Dlp {
                    enabled: true,
                    rules: None,
                },
                upstream_ca: None,
                pipelock_image: None,
                responses: bottle_contract::pipelock::Responses::Warn,
            },
            git: vec![],
            supervise: true,
        };
        let reviewer = Agent {
            bottle: "dev".to_owned(),
            provider: Provider::Claude,
            prompt: Some("You review pull requests.\n".to_owned()),
            skills: vec![Skill {
                name: "code-review".to_owned(),
                dir: canonical(&skills_dir().join("code-review")),
            }],
            workspace: Some(root.clone()),
            host_login: None,
            remote_control: false,
        };
        let expected = Manifest {
            path: root.join("bottles.yaml"),
            project: "demo".to_owned(),
            bottles: BTreeMap::from([("dev".to_owned(), dev)]),
            agents: BTreeMap::from([("reviewer".to_owned(), reviewer)]),
        };
        assert_eq!(manifest, expected);
    }

    #[test]
    fn load_reads_the_file() {
        let dir = project_dir();
        let path = dir.path().join("bottles.yaml");
        std::fs::write(&path, EXAMPLE).expect("write");
        let manifest = load(&path, &host_env).expect("valid");
        assert_eq!(manifest.project, "demo");
        assert_eq!(manifest.path, canonical(&path));
        let missing = load(&dir.path().join("nope.yaml"), &host_env);
        assert!(
            matches!(missing, Err(ManifestError::Io { .. })),
            "{missing:?}"
        );
    }

    #[test]
    fn five_mistakes_give_five_located_problems() {
        let dir = project_dir();
        let text = "\
project: demo
bottles:
  dev:
    runtme: auto
    resources: {cpus: lots}
    env:
      TOKEN: {from_env: NOPE_NOT_SET}
agents:
  a:
    bottle: prod
    provider: gemini
";
        let err = parse_in(dir.path(), text).expect_err("invalid");
        let rendered = err.to_string();
        let found = problems(Err(err));
        let summary: Vec<(usize, usize, &str)> = found
            .iter()
            .map(|p| (p.line, p.column, p.field.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (4, 5, "bottles.dev.runtme"),
                (5, 23, "bottles.dev.resources.cpus"),
                (7, 25, "bottles.dev.env.TOKEN.from_env"),
                (10, 13, "agents.a.bottle"),
                (11, 15, "agents.a.provider"),
            ],
            "{rendered}"
        );
        assert!(
            found[0].message.contains("did you mean `runtime`"),
            "{rendered}"
        );
        assert!(found[1].message.contains("found a string"), "{rendered}");
        assert!(found[2].message.contains("NOPE_NOT_SET"), "{rendered}");
        assert!(found[3].message.contains("`prod`") && found[3].message.contains("`a`"));
        assert!(found[4].message.contains("gemini"), "{rendered}");
        let file = dir.path().join("bottles.yaml");
        let first = format!(
            "{}:4:5: bottles.dev.runtme: unknown key `runtme`",
            file.display()
        );
        assert!(rendered.starts_with(&first), "{rendered}");
        assert!(
            rendered.ends_with(&format!("5 problems in {}", file.display())),
            "{rendered}"
        );
        assert_eq!(rendered.lines().count(), 6);
    }

    #[test]
    fn more_mistakes_are_caught() {
        let dir = project_dir();
        let text = r#"
bottles:
  Dev_1:
    image: {dockerfile: missing.Dockerfile}
    resources: {cpus: 0, memory: 8m, pids: 3}
    env:
      BOTTLE_X: a
      http_proxy: b
      1BAD: c
    egress:
      allow: ["*", 10.0.0.1, "*.ok.example", bad_host]
      routes:
        - host: api.example.com
          path_prefix: v1
          auth: {scheme: header, token: literal-token}
        - host: x.example.com
          tls_passthrough: true
          auth: {scheme: bearer, token: {from_env: ANTHROPIC_API_KEY}}
        - path_prefix: /x
      dlp: {enabled: yes, rules: nope.toml}
      responses: maybe
    git:
      - name: origin
        upstream: https://github.com/acme/app.git
        identity_file: ~/.ssh/key
        known_host_key: ""
      - name: origin
agents:
  rev:
    bottle: dev
    skills: [../etc]
    workspace: nowhere
"#;
        let found = problems(parse_in(dir.path(), text));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        for expected in [
            "bottles.Dev_1",
            "bottles.Dev_1.image.dockerfile",
            "bottles.Dev_1.resources.cpus",
            "bottles.Dev_1.resources.memory",
            "bottles.Dev_1.resources.pids",
            "bottles.Dev_1.env.BOTTLE_X",
            "bottles.Dev_1.env.http_proxy",
            "bottles.Dev_1.env.1BAD",
            "bottles.Dev_1.egress.allow[0]",
            "bottles.Dev_1.egress.allow[1]",
            "bottles.Dev_1.egress.allow[3]",
            "bottles.Dev_1.egress.routes[0].path_prefix",
            "bottles.Dev_1.egress.routes[0].auth.header",
            "bottles.Dev_1.egress.routes[0].auth.token",
            "bottles.Dev_1.egress.routes[1].tls_passthrough",
            "bottles.Dev_1.egress.routes[2].host",
            "bottles.Dev_1.egress.dlp.enabled",
            "bottles.Dev_1.egress.dlp.rules",
            "bottles.Dev_1.egress.responses",
            "bottles.Dev_1.git[0].upstream",
            "bottles.Dev_1.git[0].identity_file",
            "bottles.Dev_1.git[0].known_host_key",
            "bottles.Dev_1.git[1].name",
            "bottles.Dev_1.git[1].upstream",
            "agents.rev.bottle",
            "agents.rev.skills[0]",
            "agents.rev.workspace",
        ] {
            assert!(
                fields.contains(&expected),
                "missing {expected} in {found:#?}"
            );
        }
        assert_eq!(found.len(), 29, "{found:#?}");
        let token = found
            .iter()
            .find(|p| p.field.ends_with("auth.token"))
            .expect("token problem");
        assert!(
            token
                .message
                .contains("tokens must come from the environment")
        );
        let identity = found
            .iter()
            .find(|p| p.field.ends_with("identity_file"))
            .expect("identity problem");
        assert!(
            identity.message.contains("/nonexistent-home/.ssh/key"),
            "{identity:?}"
        );
    }

    #[test]
    fn a_misspelt_required_key_is_reported_once() {
        let dir = project_dir();
        let text = "\
bottles:
  b:
    env: {X: {frm_env: GH_USER}}
agents:
  a: {botle: b}
";
        let found = problems(parse_in(dir.path(), text));
        let summary: Vec<(usize, usize, &str, &str)> = found
            .iter()
            .map(|p| (p.line, p.column, p.field.as_str(), p.message.as_str()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    3,
                    15,
                    "bottles.b.env.X.frm_env",
                    "unknown key `frm_env` (did you mean `from_env`?)"
                ),
                (
                    5,
                    7,
                    "agents.a.botle",
                    "unknown key `botle` (did you mean `bottle`?)"
                ),
            ]
        );
    }

    #[test]
    fn project_defaults_to_the_directory_name() {
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("My App_2");
        std::fs::create_dir(&dir).expect("mkdir");
        let text = "bottles:\n  b: {}\n  c:\nagents: {a: {bottle: c}}\n";
        let manifest = parse(text, &dir.join("bottles.yaml"), &host_env).expect("valid");
        assert_eq!(manifest.project, "my-app-2");
        assert_eq!(manifest.bottles["b"].image, ImageSource::ProviderDefault);
        assert_eq!(manifest.bottles["b"].resources, Resources::AGENT_DEFAULT);
        assert_eq!(manifest.bottles["c"], manifest.bottles["b"]);

        let bad = parent.path().join("___");
        std::fs::create_dir(&bad).expect("mkdir");
        let found = problems(parse(text, &bad.join("bottles.yaml"), &host_env));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "project");
    }

    #[test]
    fn git_remotes_and_env_literals() {
        let dir = project_dir();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".ssh")).expect("mkdir");
        std::fs::write(home.join(".ssh/key"), "key").expect("write");
        let home_str = home.to_string_lossy().into_owned();
        let env = move |name: &str| (name == "HOME").then(|| home_str.clone());
        let text = r#"
project: p
bottles:
  b:
    env: {N: 1.50, F: false, Q: "007"}
    git:
      - name: origin
        upstream: ssh://git@github.com/acme/app.git
        identity_file: ~/.ssh/key
        known_host_key: "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV"
        allow_force: true
agents: {a: {bottle: b, provider: codex}}
"#;
        let m = parse(text, &dir.path().join("bottles.yaml"), &env).expect("valid");
        let b = &m.bottles["b"];
        assert_eq!(b.env["N"], EnvValue::Literal("1.50".into()));
        assert_eq!(b.env["F"], EnvValue::Literal("false".into()));
        assert_eq!(b.env["Q"], EnvValue::Literal("007".into()));
        assert_eq!(
            b.git,
            vec![GitRemote {
                name: "origin".into(),
                upstream: "ssh://git@github.com/acme/app.git".into(),
                identity_file: crate::HostFile {
                    path: canonical(&home.join(".ssh/key")),
                    contents: b"key".to_vec(),
                },
                known_host_key: "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV".into(),
                allow_force: true,
            }]
        );
        assert_eq!(m.agents["a"].provider, Provider::Codex);
        // The key was read once, now; its contents never show in Debug output.
        assert!(!format!("{m:?}").contains("key\""), "{m:?}");
    }

    #[test]
    fn host_files_are_read_at_load_and_their_failures_are_located() {
        let dir = project_dir();
        std::fs::write(dir.path().join("bad.toml"), "[[rules]]\nid = 1\n").expect("write");
        std::fs::write(dir.path().join("big.pem"), vec![b'a'; (1 << 20) + 1]).expect("write");
        let text = "bottles:\n  b:\n    image: {dockerfile: Dockerfile.test}\n    egress:\n      dlp: {rules: bad.toml}\n      upstream_ca: big.pem\nagents: {a: {bottle: b}}\n";
        let found = problems(parse_in(dir.path(), text));
        let at = |field: &str| {
            found
                .iter()
                .find(|p| p.field == field)
                .unwrap_or_else(|| panic!("no problem at {field}: {found:?}"))
        };
        let rules = at("bottles.b.egress.dlp.rules");
        assert_eq!(rules.line, 5, "{rules:?}");
        assert!(
            rules.message.contains("not a gitleaks rule file"),
            "{}",
            rules.message
        );
        let ca = at("bottles.b.egress.upstream_ca");
        assert_eq!(ca.line, 6, "{ca:?}");
        assert!(ca.message.contains("larger than"), "{}", ca.message);
    }

    /// A manifest with an agent `a` of `provider` under bottle `b`, whose policy holds
    /// `routes` (YAML list) and whose agent holds `extra` (YAML flow map entries).
    fn agent_text(provider: &str, routes: &str, extra: &str) -> String {
        format!(
            "bottles:\n  b:\n    image: {{dockerfile: Dockerfile.test}}\n    egress:\n      routes: {routes}\nagents:\n  a: {{bottle: b, provider: {provider}, {extra}}}\n"
        )
    }

    #[test]
    fn host_login_reads_the_hosts_codex_login() {
        let dir = project_dir();
        let codex_home = dir.path().join("codex-home");
        std::fs::create_dir(&codex_home).expect("mkdir");
        let access = "eyJhbGciOiJSUzI1NiJ9.host-access-token.sig";
        std::fs::write(
            codex_home.join("auth.json"),
            crate::codex_login::host_auth_json(access, "rt_refresh", "acct-7", "me@example.com"),
        )
        .expect("write");
        let home = codex_home.display().to_string();
        let env = |name: &str| match name {
            "CODEX_HOME" => Some(home.clone()),
            other => host_env(other),
        };
        let text = agent_text("codex", "[]", "host_login: true");
        let m = parse(&text, &dir.path().join("bottles.yaml"), &env).expect("valid");
        let a = &m.agents["a"];
        let login = a.host_login.as_ref().expect("a login");
        assert_eq!(login.access_token.expose(), access);
        assert_eq!(login.account_id, "acct-7");
        assert_eq!(login.path, canonical(&codex_home.join("auth.json")));
        assert!(!a.remote_control);
        assert!(!format!("{m:?}").contains(access));
        // `false` is no login at all; without CODEX_HOME, `~/.codex/auth.json`.
        let off = agent_text("codex", "[]", "host_login: false");
        let m = parse(&off, &dir.path().join("bottles.yaml"), &env).expect("valid");
        assert!(m.agents["a"].host_login.is_none());
        let found = problems(parse_in(dir.path(), &text));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].field.as_str(), found[0].line),
            ("agents.a.host_login", 7)
        );
        assert!(
            found[0]
                .message
                .contains("/nonexistent-home/.codex/auth.json` cannot be read")
                && found[0].message.contains("codex login"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn host_login_and_remote_control_refuse_what_they_cannot_serve() {
        let dir = project_dir();
        std::fs::write(
            dir.path().join("auth.json"),
            r#"{"OPENAI_API_KEY": "sk-x"}"#,
        )
        .expect("write");
        let home = dir.path().display().to_string();
        let env = |name: &str| match name {
            "CODEX_HOME" => Some(home.clone()),
            other => host_env(other),
        };
        let cases = [
            (
                agent_text("codex", "[]", "host_login: true"),
                "agents.a.host_login",
                "holds an API key, not a ChatGPT login",
            ),
            (
                agent_text("claude", "[]", "host_login: true"),
                "agents.a.host_login",
                "`provider: codex` only",
            ),
            (
                agent_text(
                    "codex",
                    "[{host: chatgpt.com, tls_passthrough: true}]",
                    "host_login: true",
                ),
                "agents.a.host_login",
                "it routes chatgpt.com itself (egress.routes[0])",
            ),
            (
                agent_text(
                    "codex",
                    "[{host: api.openai.com, auth: {scheme: bearer, token: {from_env: ANTHROPIC_API_KEY}}, roles: [openai-base-url]}]",
                    "host_login: true",
                ),
                "agents.a.host_login",
                "`openai-base-url` gives Codex an API key already",
            ),
            (
                agent_text("codex", "[]", "remote_control: true"),
                "agents.a.remote_control",
                "a Claude Code feature",
            ),
            (
                agent_text(
                    "claude",
                    "[{host: api.anthropic.com, auth: {scheme: bearer, token: {from_env: ANTHROPIC_API_KEY}}, roles: [anthropic-base-url]}]",
                    "remote_control: true",
                ),
                "agents.a.remote_control",
                "routes that host through egress (egress.routes[0])",
            ),
            (
                agent_text("claude", "[]", "remote_control: yes"),
                "agents.a.remote_control",
                "expected true or false",
            ),
        ];
        for (text, field, says) in cases {
            let found = problems(parse(&text, &dir.path().join("bottles.yaml"), &env));
            assert!(
                found
                    .iter()
                    .any(|p| p.field == field && p.line == 7 && p.message.contains(says)),
                "{text}\nwant {field}: {says}\ngot {found:?}"
            );
        }
        // A passthrough route to a Remote Control host is what it needs anyway.
        let fine = agent_text(
            "claude",
            "[{host: api.anthropic.com, tls_passthrough: true}]",
            "remote_control: true",
        );
        let m = parse_in(dir.path(), &fine).expect("valid");
        assert!(m.agents["a"].remote_control);
        let warned = m.warnings();
        assert!(
            warned.len() == 1
                && warned[0].contains("bottle a: remote_control")
                && warned[0].contains("api.anthropic.com"),
            "{warned:?}"
        );
        let quiet = agent_text("claude", "[]", "remote_control: false");
        assert!(
            parse_in(dir.path(), &quiet)
                .expect("valid")
                .warnings()
                .is_empty()
        );
        // Names mode reads no login.
        let names = parse_names(
            &agent_text("codex", "[]", "host_login: true"),
            &dir.path().join("bottles.yaml"),
        )
        .expect("names");
        assert_eq!(names.agents["a"].provider, Provider::Codex);
    }

    /// Each host value a manifest may lack: names mode loads it, full mode refuses it with
    /// the located problem it always gave.
    #[test]
    fn names_mode_reads_nothing_of_the_host() {
        let dir = project_dir();
        let path = dir.path().join("bottles.yaml");
        let cases = [
            (
                "bottles:\n  b:\n    env: {T: {from_env: NOPE_UNSET}}\nagents: {a: {bottle: b}}\n",
                (3, 25, "bottles.b.env.T.from_env"),
                "host environment variable `NOPE_UNSET` is not set",
            ),
            (
                "bottles:\n  b:\n    egress:\n      routes:\n        - host: api.example.com\n          auth: {scheme: bearer, token: {from_env: NOPE_UNSET}}\nagents: {a: {bottle: b}}\n",
                (6, 52, "bottles.b.egress.routes[0].auth.token.from_env"),
                "host environment variable `NOPE_UNSET` is not set",
            ),
            (
                "bottles: {b: {}}\nagents:\n  a:\n    bottle: b\n    skills: [no-such-skill]\n",
                (5, 14, "agents.a.skills[0]"),
                "skill `no-such-skill` not found",
            ),
            (
                "bottles:\n  b:\n    git:\n      - name: origin\n        upstream: ssh://git@github.com/a/b.git\n        identity_file: ~/.ssh/nope\n        known_host_key: \"github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkV\"\nagents: {a: {bottle: b}}\n",
                (6, 24, "bottles.b.git[0].identity_file"),
                "/nonexistent-home/.ssh/nope",
            ),
            (
                "bottles:\n  b:\n    egress:\n      dlp: {rules: missing.toml}\nagents: {a: {bottle: b}}\n",
                (4, 20, "bottles.b.egress.dlp.rules"),
                "missing.toml` cannot be read",
            ),
            (
                "bottles:\n  b:\n    image: {dockerfile: Nope.Dockerfile}\nagents:\n  a: {bottle: b, workspace: nowhere}\n",
                (3, 25, "bottles.b.image.dockerfile"),
                "Nope.Dockerfile` cannot be read",
            ),
        ];
        for (text, (line, column, field), message) in cases {
            let found = problems(parse_in(dir.path(), text));
            let first = &found[0];
            assert_eq!(
                (first.line, first.column, first.field.as_str()),
                (line, column, field),
                "{found:#?}"
            );
            assert!(first.message.contains(message), "{found:#?}");
            std::fs::write(&path, text).expect("write");
            let full = load(&path, &host_env).expect_err("full mode refuses");
            assert!(full.to_string().contains(message), "{full}");
            let names = load_names(&path).unwrap_or_else(|e| panic!("names mode: {e}"));
            let project = dir.path().file_name().expect("name").to_string_lossy();
            assert_eq!(names.project, sanitize(&project), "{text}");
            assert_eq!(names.bottles, vec!["b".to_owned()]);
            assert_eq!(names.agents["a"].bottle, "b");
        }
    }

    fn sanitize(dir: &str) -> String {
        let dir = Path::new("/x").join(dir);
        parse_names(
            "bottles: {b: {}}\nagents: {a: {bottle: b}}\n",
            &dir.join("m.yaml"),
        )
        .expect("valid")
        .project
    }

    #[test]
    fn names_mode_keeps_every_structural_problem_located() {
        let dir = project_dir();
        let path = dir.path().join("bottles.yaml");
        // Bad YAML: the same one located problem in both modes.
        std::fs::write(&path, "project: demo\nbottles: [\n").expect("write");
        let full = problems(load(&path, &host_env));
        let names = problems(load_names(&path).map(|_| unreachable_manifest()));
        assert_eq!(names, full);
        assert_eq!(names.len(), 1);
        // Structure and names are still checked: unknown keys, bad names, dangling
        // references, a literal token.
        let text = "project: Bad_Name\nbottles:\n  b:\n    runtme: auto\n    egress:\n      routes:\n        - host: x.example.com\n          auth: {scheme: bearer, token: literal}\nagents: {a: {bottle: c}}\n";
        let found = problems(parse_names(text, &path).map(|_| unreachable_manifest()));
        let fields: Vec<&str> = found.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "project",
                "bottles.b.runtme",
                "bottles.b.egress.routes[0].auth.token",
                "agents.a.bottle"
            ]
        );
        // The example, with every host value missing, gives its names.
        let names = parse_names(EXAMPLE, &path).expect("valid");
        assert_eq!(names.project, "demo");
        assert_eq!(names.bottles, vec!["dev".to_owned()]);
        let dev = &names.policies["dev"];
        assert_eq!(dev.runtime, crate::RuntimeChoice::Auto);
        assert_eq!(dev.allow[0], "registry.npmjs.org");
        assert_eq!(
            dev.routes[0],
            RouteNames {
                host: "api.anthropic.com".into(),
                path_prefix: None,
                token_var: Some("ANTHROPIC_API_KEY".into()),
            }
        );
        assert_eq!(dev.routes[1].token_var, None);
        assert!(!dev.foreign_pipelock);
        assert_eq!(
            names.agents["reviewer"],
            AgentNames {
                bottle: "dev".into(),
                provider: Provider::Claude
            }
        );
        assert!(parse(EXAMPLE, &path, &|_| None).is_err());
    }

    /// Lets a names result go through `problems`, which wants a manifest result.
    fn unreachable_manifest() -> Manifest {
        panic!("expected problems")
    }

    #[test]
    fn tokens_never_appear_in_debug_output() {
        let dir = project_dir();
        let manifest = parse_in(dir.path(), EXAMPLE).expect("valid");
        let debug = format!("{manifest:?} {manifest:#?}");
        assert!(!debug.contains(TOKEN), "token leaked");
        assert!(!debug.contains("octocat"), "from_env value leaked");
        assert!(debug.contains("<redacted>"));
    }

    /// Run `f`, insisting it finishes quickly.
    fn quickly<T>(what: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{what} took {took:?}");
        out
    }

    fn one_document_problem(what: &str, result: Result<Manifest, ManifestError>) -> Problem {
        let found = problems(result);
        assert_eq!(found.len(), 1, "{what}: {found:#?}");
        assert!(found[0].line >= 1 && found[0].column >= 1);
        found[0].clone()
    }

    #[test]
    fn hostile_and_degenerate_inputs_fail_fast() {
        let dir = project_dir();
        let path = dir.path().join("bottles.yaml");

        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
        for pair in names.windows(2) {
            let (prev, next) = (pair[0], pair[1]);
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        one_document_problem(
            "alias bomb",
            quickly("alias bomb", || parse_in(dir.path(), &bomb)),
        );

        let deep_flow = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        one_document_problem(
            "deep flow",
            quickly("deep flow", || parse_in(dir.path(), &deep_flow)),
        );
        let deep_block: String = (0..1_000)
            .map(|i| format!("{}a:\n", " ".repeat(i)))
            .collect();
        one_document_problem(
            "deep block",
            quickly("deep block", || parse_in(dir.path(), &deep_block)),
        );
        let deep_seq = "- ".repeat(10_000) + "x\n";
        one_document_problem(
            "deep seq",
            quickly("deep seq", || parse_in(dir.path(), &deep_seq)),
        );

        let huge = format!("project: demo\n# {}\n", "x".repeat(2 << 20));
        let err = quickly("2 MiB text", || parse_in(dir.path(), &huge));
        assert!(
            matches!(err, Err(ManifestError::TooLarge { .. })),
            "{err:?}"
        );
        std::fs::write(&path, &huge).expect("write");
        let err = quickly("2 MiB file", || load(&path, &host_env));
        assert!(
            matches!(err, Err(ManifestError::TooLarge { .. })),
            "{err:?}"
        );

        std::fs::write(&path, b"project: demo\nbottles: \xc3\x28\n").expect("write");
        let p = one_document_problem("utf-8", load(&path, &host_env));
        assert_eq!((p.line, p.column), (2, 10));
        assert!(p.message.contains("UTF-8"));

        let p = one_document_problem("empty", parse_in(dir.path(), ""));
        assert!(p.message.contains("empty"), "{p:?}");
        std::fs::write(&path, "").expect("write");
        one_document_problem("empty file", load(&path, &host_env));
        one_document_problem("comments only", parse_in(dir.path(), "# nothing\n"));

        let p = one_document_problem("list", parse_in(dir.path(), "- a\n- b\n"));
        assert!(p.message.contains("found a list"), "{p:?}");
        one_document_problem("scalar", parse_in(dir.path(), "hello\n"));
        one_document_problem("two docs", parse_in(dir.path(), "a: 1\n---\nb: 2\n"));
        one_document_problem(
            "duplicate key",
            parse_in(dir.path(), "project: a\nproject: b\n"),
        );
        one_document_problem("syntax", parse_in(dir.path(), "bottles: [\n"));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        fn any_env(name: &str) -> Option<String> {
            name.len().is_multiple_of(2).then(|| "value".to_owned())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn parse_never_panics_on_strings(text in "\\PC*") {
                let _ = parse(&text, Path::new("/nonexistent/bottles.yaml"), &any_env);
            }

            #[test]
            fn parse_never_panics_on_yamlish(text in "[a-z:{}\\[\\],&*!|>'\" \n#.-]{0,200}") {
                let _ = parse(&text, Path::new("/nonexistent/bottles.yaml"), &any_env);
            }

            #[test]
            fn parse_never_panics_on_mutations(
                edits in proptest::collection::vec((any::<usize>(), any::<char>(), 0u8..3), 1..8)
            ) {
                let mut chars: Vec<char> = EXAMPLE.chars().collect();
                for (at, c, op) in edits {
                    let i = at % (chars.len() + 1);
                    match op {
                        0 => chars.insert(i, c),
                        1 if i < chars.len() => chars[i] = c,
                        _ if i < chars.len() => { chars.remove(i); }
                        _ => {}
                    }
                }
                let text: String = chars.into_iter().collect();
                let _ = parse(&text, Path::new("/nonexistent/bottles.yaml"), &any_env);
            }
        }
    }

    #[test]
    fn a_field_is_located_at_its_deepest_written_key() {
        let at = |field: &str| locate_in(EXAMPLE, field).map(|l| (l.line, l.column, l.field));
        assert_eq!(
            at("bottles.dev.resources.memory"),
            Some((6, 26, "bottles.dev.resources.memory".into())),
            "a key of a flow map"
        );
        assert_eq!(
            at("bottles.dev.resources.unwritten"),
            Some((6, 5, "bottles.dev.resources".into())),
            "a field left to its default is placed at the map that would hold it"
        );
        assert_eq!(
            at("bottles.dev.env.TZ"),
            Some((8, 7, "bottles.dev.env.TZ".into()))
        );
        assert_eq!(
            at("bottles.dev.runtime"),
            Some((5, 5, "bottles.dev.runtime".into()))
        );
        assert_eq!(at("bottles.other"), Some((2, 1, "bottles".into())));
        assert_eq!(at("nothing.here"), None);
        assert_eq!(locate_in("{{{ not yaml", "bottles"), None);
    }
}
