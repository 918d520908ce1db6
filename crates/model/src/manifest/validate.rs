//! Stage two of manifest parsing: walk the spanned [`Raw`] tree by hand into the
//! validated [`model::Manifest`].
//!
//! The walk never stops at the first mistake: each check records a [`Problem`] with the
//! offending node's position and dotted field path, substitutes a default and carries
//! on, so one run reports everything that is wrong.

use std::collections::{BTreeMap, BTreeSet};

use std::path::{Path, PathBuf};

use serde_saphyr::{Location, Spanned};

use super::diag::{DOCUMENT, Problem};
use super::raw::{Node, Raw, position};
use super::schema::{self, Field, MAX_CPUS, MAX_NAME, MIN_MEMORY, MIN_PIDS, SchemeWord};
use crate::codex_login::{self, CodexLogin};
use crate::{
    Agent, AuthScheme, BottlePolicy, Dlp, Egress, EnvValue, GitRemote, HostFile, ImageSource,
    Manifest, Provider, Resources, Route, RouteAuth, RouteRole, RuntimeChoice, Secret, Skill,
};

/// How much of the host a walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Everything: `from_env` values, skills, identity, rule and CA files, paths.
    Host,
    /// Nothing outside the text: the structure and names are checked, while host
    /// values are left as placeholders that only [`super::Names`] may expose.
    NamesOnly,
}

/// Validate a parsed document. `path` is the manifest file, absolute.
pub fn manifest(
    root: &Node,
    path: &Path,
    source: &str,
    env: &dyn Fn(&str) -> Option<String>,
    reads: Reads,
) -> Result<Manifest, Vec<Problem>> {
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut cx = Ctx {
        problems: Vec::new(),
        env,
        dir,
        source,
        host: reads == Reads::Host,
    };
    let manifest = cx.top(root, path);
    match manifest {
        Some(m) if cx.problems.is_empty() => Ok(m),
        _ => Err(cx.problems),
    }
}

/// Everything the walk needs, plus the problems found so far.
struct Ctx<'a> {
    problems: Vec<Problem>,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The manifest's directory: relative paths are resolved against it.
    dir: PathBuf,
    source: &'a str,
    /// Whether host values are read (env, files); false in [`Reads::NamesOnly`].
    host: bool,
}

/// A YAML map being read, with its location, dotted path and (for a map with fixed
/// keys) its keys in the [`schema`].
struct MapView<'n> {
    entries: &'n [(Spanned<String>, Node)],
    node: &'n Node,
    path: String,
    fields: &'static [Field],
}

impl<'n> MapView<'n> {
    /// The value of `key`; an explicit null counts as absent. Only a key of the schema
    /// is ever looked up.
    fn get(&self, key: &str) -> Option<&'n Node> {
        debug_assert!(
            self.fields.iter().any(|f| f.name == key),
            "`{key}` is not a key of {:?} in the schema",
            self.path
        );
        self.entries
            .iter()
            .find(|(k, _)| k.value == key)
            .map(|(_, v)| v)
            .filter(|v| v.value != Raw::Null)
    }

    fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl Ctx<'_> {
    fn report(&mut self, at: &Location, field: &str, message: impl Into<String>) {
        let (line, column) = position(at);
        self.problems.push(Problem {
            line,
            column,
            field: if field.is_empty() {
                DOCUMENT.to_owned()
            } else {
                field.to_owned()
            },
            message: message.into(),
        });
    }

    fn wrong_type(&mut self, node: &Node, field: &str, expected: &str) {
        let message = format!("expected {expected}, found {}", node.value.kind());
        self.report(&node.referenced, field, message);
    }

    /// Read `node` as a map whose keys must all be among `fields` (the schema's).
    fn map<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        fields: &'static [Field],
    ) -> Option<MapView<'n>> {
        let Raw::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a map");
            return None;
        };
        let allowed: Vec<&str> = fields.iter().map(|f| f.name).collect();
        for (key, _) in entries {
            if !allowed.contains(&key.value.as_str()) {
                let message = unknown("key", &key.value, &allowed);
                self.report(&key.referenced, &join(path, &key.value), message);
            }
        }
        Some(MapView {
            entries,
            node,
            path: path.to_owned(),
            fields,
        })
    }

    /// A map whose keys are user-chosen names (bottles, agents): any key is allowed.
    fn named_map<'n>(&mut self, node: &'n Node, path: &str) -> Option<MapView<'n>> {
        let Raw::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a map");
            return None;
        };
        Some(MapView {
            entries,
            node,
            path: path.to_owned(),
            fields: &[],
        })
    }

    fn required<'n>(&mut self, map: &MapView<'n>, key: &str) -> Option<&'n Node> {
        let found = map.get(key);
        // A misspelt key was already reported as unknown, with this key as suggestion.
        let misspelt = map
            .entries
            .iter()
            .any(|(k, _)| k.value != key && closest(&k.value, &[key]).is_some());
        if found.is_none() && !misspelt {
            let at = map
                .entries
                .iter()
                .find(|(k, _)| k.value == key)
                .map_or(&map.node.referenced, |(_, v)| &v.referenced);
            let field = map.field(key);
            self.report(at, &field, format!("`{key}` is required"));
        }
        found
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.value {
            Raw::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(node, field, "a string");
                None
            }
        }
    }

    fn bool(&mut self, node: &Node, field: &str) -> Option<bool> {
        match node.value {
            Raw::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, field, "true or false");
                None
            }
        }
    }

    fn list<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &node.value {
            Raw::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, field, "a list");
                None
            }
        }
    }

    /// One of a fixed set of words.
    fn choice<T: Copy>(&mut self, node: &Node, field: &str, choices: &[(&str, T)]) -> Option<T> {
        let word = self.string(node, field)?;
        if let Some((_, value)) = choices.iter().find(|(name, _)| *name == word) {
            return Some(*value);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let message = unknown("value", &word, &names);
        self.report(&node.referenced, field, message);
        None
    }

    /// A scalar's text as written (numbers keep their spelling where possible).
    fn scalar_text(&self, node: &Node) -> Option<String> {
        match &node.value {
            Raw::Str(s) => Some(s.clone()),
            Raw::Bool(b) => Some(b.to_string()),
            Raw::Int(_) | Raw::Float(_) => {
                let span = node.defined.span();
                let written = span.byte_offset().zip(span.byte_len()).and_then(|(o, l)| {
                    let start = usize::try_from(o).ok()?;
                    let end = start.checked_add(usize::try_from(l).ok()?)?;
                    self.source.get(start..end)
                });
                match (written, &node.value) {
                    (Some(w), _)
                        if !w.is_empty()
                            && w.chars().all(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_')
                            }) =>
                    {
                        Some(w.to_owned())
                    }
                    (_, Raw::Int(i)) => Some(i.to_string()),
                    (_, Raw::Float(f)) => Some(f.to_string()),
                    _ => None,
                }
            }
            Raw::Null | Raw::Seq(_) | Raw::Map(_) => None,
        }
    }

    /// `{from_env: VAR}`: the host variable's name and value.
    fn env_ref(&mut self, node: &Node, field: &str) -> Option<(String, String)> {
        let map = self.map(node, field, schema::FROM_ENV)?;
        let var_node = self.required(&map, "from_env")?;
        let var_field = map.field("from_env");
        let var = self.string(var_node, &var_field)?;
        if !is_env_name(&var) {
            self.report(
                &var_node.referenced,
                &var_field,
                format!("`{var}` is not a valid environment variable name"),
            );
            return None;
        }
        if !self.host {
            return Some((var, String::new()));
        }
        match (self.env)(&var) {
            Some(value) => Some((var, value)),
            None => {
                self.report(
                    &var_node.referenced,
                    &var_field,
                    format!("host environment variable `{var}` is not set"),
                );
                None
            }
        }
    }

    /// A file relative to the manifest directory, read now (at most [`MAX_HOST_FILE`]
    /// bytes): a file that cannot be read is a problem at `node`.
    fn host_file(&mut self, node: &Node, field: &str) -> Option<HostFile> {
        let raw = self.string(node, field)?;
        self.read_host_file(node, field, &raw)
    }

    fn read_host_file(&mut self, node: &Node, field: &str, raw: &str) -> Option<HostFile> {
        let path = self.check_path(node, field, raw, false)?;
        if !self.host {
            return Some(HostFile {
                path,
                contents: Vec::new(),
            });
        }
        let contents = self.read_bounded(node, field, &path, |path, err| {
            format!("file `{}` cannot be read: {err}", path.display())
        })?;
        Some(HostFile { path, contents })
    }

    /// The contents of the host file `path`, at most [`MAX_HOST_FILE`] bytes read: a
    /// larger file, or one that cannot be read (said by `unreadable`), is a problem at
    /// `node`.
    fn read_bounded(
        &mut self,
        node: &Node,
        field: &str,
        path: &Path,
        unreadable: impl FnOnce(&Path, std::io::Error) -> String,
    ) -> Option<Vec<u8>> {
        use std::io::Read as _;
        let mut contents = Vec::new();
        let read = std::fs::File::open(path)
            .and_then(|f| f.take(MAX_HOST_FILE as u64 + 1).read_to_end(&mut contents));
        let message = match read {
            Ok(n) if n > MAX_HOST_FILE => {
                format!("`{}` is larger than {MAX_HOST_FILE} bytes", path.display())
            }
            Ok(_) => return Some(contents),
            Err(err) => unreadable(path, err),
        };
        self.report(&node.referenced, field, message);
        None
    }

    /// A path relative to the manifest directory that must exist; canonicalized.
    fn existing_path(&mut self, node: &Node, field: &str, want_dir: bool) -> Option<PathBuf> {
        let raw = self.string(node, field)?;
        self.check_path(node, field, &raw, want_dir)
    }

    fn check_path(
        &mut self,
        node: &Node,
        field: &str,
        raw: &str,
        want_dir: bool,
    ) -> Option<PathBuf> {
        if raw.is_empty() {
            self.report(&node.referenced, field, "the path is empty");
            return None;
        }
        let path = self.dir.join(raw);
        if !self.host {
            return Some(path);
        }
        let kind = if want_dir { "directory" } else { "file" };
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() == want_dir => {
                Some(std::fs::canonicalize(&path).unwrap_or(path))
            }
            Ok(_) => {
                self.report(
                    &node.referenced,
                    field,
                    format!("`{}` is not a {kind}", path.display()),
                );
                None
            }
            Err(err) => {
                self.report(
                    &node.referenced,
                    field,
                    format!("{kind} `{}` cannot be read: {err}", path.display()),
                );
                None
            }
        }
    }

    /// A Docker-safe name (`[a-z0-9][a-z0-9-]*`, at most 32 characters).
    fn name(&mut self, at: &Location, field: &str, what: &str, name: &str) -> bool {
        match name_error(name) {
            None => true,
            Some(why) => {
                self.report(at, field, format!("{what} name `{name}` {why}"));
                false
            }
        }
    }

    fn top(&mut self, root: &Node, path: &Path) -> Option<Manifest> {
        match &root.value {
            Raw::Map(_) => {}
            Raw::Null => {
                self.report(
                    &root.referenced,
                    "",
                    "the manifest is empty: expected a map with `bottles:` and `agents:`",
                );
                return None;
            }
            other => {
                let message = format!(
                    "expected a map with `bottles:` and `agents:`, found {}",
                    other.kind()
                );
                self.report(&root.referenced, "", message);
                return None;
            }
        }
        let top = self.map(root, "", schema::TOP)?;

        let project = match top.get("project") {
            Some(node) => self.string(node, "project").and_then(|name| {
                self.name(&node.referenced, "project", "project", &name)
                    .then_some(name)
            }),
            None => {
                let dir_name = self
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let name = sanitize_name(&dir_name);
                match name_error(&name) {
                    None => Some(name),
                    Some(why) => {
                        let message = format!(
                            "no `project:` given and the directory name `{dir_name}` gives `{name}`, \
                             which {why}; set `project:`"
                        );
                        self.report(&root.referenced, "project", message);
                        None
                    }
                }
            }
        };

        let mut bottles = BTreeMap::new();
        if let Some(node) = self.required(&top, "bottles")
            && let Some(map) = self.named_map(node, "bottles")
        {
            for (key, value) in map.entries {
                let field = map.field(&key.value);
                let named = self.name(&key.referenced, &field, "bottle", &key.value);
                if let Some(policy) = self.bottle(value, &field)
                    && named
                {
                    bottles.insert(key.value.clone(), policy);
                }
            }
        }

        let bottle_names: Vec<&str> = top
            .get("bottles")
            .map(|node| match &node.value {
                Raw::Map(entries) => entries.iter().map(|(k, _)| k.value.as_str()).collect(),
                _ => Vec::new(),
            })
            .unwrap_or_default();

        let mut agents = BTreeMap::new();
        if let Some(node) = self.required(&top, "agents")
            && let Some(map) = self.named_map(node, "agents")
        {
            if map.entries.is_empty() {
                self.report(&node.referenced, "agents", "at least one agent is required");
            }
            for (key, value) in map.entries {
                let field = map.field(&key.value);
                let named = self.name(&key.referenced, &field, "agent", &key.value);
                if let Some(agent) = self.agent(value, &field, &bottle_names, &bottles)
                    && named
                {
                    agents.insert(key.value.clone(), agent);
                }
            }
        }

        Some(Manifest {
            path: path.to_path_buf(),
            project: project?,
            bottles,
            agents,
        })
    }

    fn bottle(&mut self, node: &Node, path: &str) -> Option<BottlePolicy> {
        let mut policy = BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::AGENT_DEFAULT,
            env: BTreeMap::new(),
            egress: Egress::default(),
            git: Vec::new(),
            supervise: false,
        };
        // `name:` with nothing after it: a policy with every default.
        if node.value == Raw::Null {
            return Some(policy);
        }
        let map = self.map(node, path, schema::BOTTLE)?;
        if let Some(image) = map.get("image") {
            policy.image = self
                .image(image, &map.field("image"))
                .unwrap_or(policy.image);
        }
        if let Some(runtime) = map.get("runtime") {
            policy.runtime = self
                .choice(runtime, &map.field("runtime"), &schema::RUNTIMES)
                .unwrap_or_default();
        }
        if let Some(resources) = map.get("resources") {
            policy.resources = self.resources(resources, &map.field("resources"));
        }
        if let Some(env) = map.get("env") {
            policy.env = self.env(env, &map.field("env"));
        }
        if let Some(egress) = map.get("egress") {
            policy.egress = self.egress(egress, &map.field("egress"));
        }
        if let Some(git) = map.get("git") {
            policy.git = self.git(git, &map.field("git"));
        }
        if let Some(pl) = map.get("pipelock") {
            let field = map.field("pipelock");
            if let Some(pl_map) = self.map(pl, &field, schema::PIPELOCK)
                && let Some(image) = pl_map.get("image")
            {
                policy.egress.pipelock_image = self.string(image, &pl_map.field("image"));
            }
        }
        if let Some(supervise) = map.get("supervise") {
            policy.supervise = self
                .bool(supervise, &map.field("supervise"))
                .unwrap_or_default();
        }
        Some(policy)
    }

    fn image(&mut self, node: &Node, path: &str) -> Option<ImageSource> {
        let map = self.map(node, path, schema::IMAGE)?;
        let dockerfile_node = self.required(&map, "dockerfile");
        let dockerfile =
            dockerfile_node.and_then(|n| self.existing_path(n, &map.field("dockerfile"), false));
        let context = match map.get("context") {
            Some(n) => self.existing_path(n, &map.field("context"), true),
            None => dockerfile
                .as_ref()
                .and_then(|d| d.parent().map(Path::to_path_buf)),
        };
        Some(ImageSource::Dockerfile {
            dockerfile: dockerfile?,
            context: context?,
        })
    }

    fn resources(&mut self, node: &Node, path: &str) -> Resources {
        let mut resources = Resources::AGENT_DEFAULT;
        let Some(map) = self.map(node, path, schema::RESOURCES) else {
            return resources;
        };
        if let Some(n) = map.get("cpus") {
            let field = map.field("cpus");
            let cpus = match n.value {
                Raw::Int(i) => Some(i as f64),
                Raw::Float(f) => Some(f),
                _ => {
                    self.wrong_type(n, &field, "a number of CPUs");
                    None
                }
            };
            match cpus {
                Some(c) if c.is_finite() && c > 0.0 && c <= MAX_CPUS => resources.cpus = c,
                Some(c) => self.report(
                    &n.referenced,
                    &field,
                    format!("{c} CPUs is out of range: must be more than 0 and at most {MAX_CPUS}"),
                ),
                None => {}
            }
        }
        if let Some(n) = map.get("memory") {
            let field = map.field("memory");
            let bytes = match &n.value {
                Raw::Int(i) => u64::try_from(*i).map_err(|_| format!("{i} is not a size")),
                Raw::Str(s) => parse_memory(s),
                _ => Err(format!(
                    "expected a size like `512m` or `4g`, found {}",
                    n.value.kind()
                )),
            };
            match bytes {
                Ok(b) if b >= MIN_MEMORY => resources.memory = b,
                Ok(_) => self.report(&n.referenced, &field, "memory must be at least 16m"),
                Err(message) => self.report(&n.referenced, &field, message),
            }
        }
        if let Some(n) = map.get("pids") {
            let field = map.field("pids");
            match n.value {
                Raw::Int(i) => match i64::try_from(i) {
                    Ok(p) if p >= MIN_PIDS => resources.pids = p,
                    _ => self.report(
                        &n.referenced,
                        &field,
                        format!("pids must be an integer of at least {MIN_PIDS}, found {i}"),
                    ),
                },
                _ => self.wrong_type(n, &field, "an integer"),
            }
        }
        resources
    }

    fn env(&mut self, node: &Node, path: &str) -> BTreeMap<String, EnvValue> {
        let mut env = BTreeMap::new();
        let Raw::Map(entries) = &node.value else {
            self.wrong_type(node, path, "a map of variable names to values");
            return env;
        };
        for (key, value) in entries {
            let name = &key.value;
            let field = join(path, name);
            if !is_env_name(name) {
                self.report(
                    &key.referenced,
                    &field,
                    format!("`{name}` is not a valid environment variable name"),
                );
                continue;
            }
            let upper = name.to_ascii_uppercase();
            if matches!(upper.as_str(), "HTTP_PROXY" | "HTTPS_PROXY" | "NO_PROXY")
                || upper.starts_with("BOTTLE_")
            {
                self.report(
                    &key.referenced,
                    &field,
                    format!("`{name}` is set by bottle and cannot be overridden"),
                );
                continue;
            }
            let parsed = match &value.value {
                Raw::Map(_) => self
                    .env_ref(value, &field)
                    .map(|(var, v)| EnvValue::FromEnv {
                        var,
                        value: Secret::new(v),
                    }),
                Raw::Str(_) | Raw::Int(_) | Raw::Float(_) | Raw::Bool(_) => {
                    self.scalar_text(value).map(EnvValue::Literal)
                }
                Raw::Null | Raw::Seq(_) => {
                    self.wrong_type(
                        value,
                        &field,
                        "a string, number, boolean or `{from_env: VAR}`",
                    );
                    None
                }
            };
            if let Some(v) = parsed {
                env.insert(name.clone(), v);
            }
        }
        env
    }

    fn egress(&mut self, node: &Node, path: &str) -> Egress {
        let mut egress = Egress::default();
        let Some(map) = self.map(node, path, schema::EGRESS) else {
            return egress;
        };
        if let Some(allow) = map.get("allow") {
            let field = map.field("allow");
            for (i, item) in self
                .list(allow, &field)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let item_field = format!("{field}[{i}]");
                let Some(host) = self.string(item, &item_field) else {
                    continue;
                };
                match host_name(&host, true) {
                    Ok(h) => egress.allow.push(h),
                    Err(why) => self.report(&item.referenced, &item_field, why),
                }
            }
        }
        if let Some(cidrs) = map.get("allow_cidrs") {
            let field = map.field("allow_cidrs");
            for (i, item) in self
                .list(cidrs, &field)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                let item_field = format!("{field}[{i}]");
                let Some(cidr) = self.string(item, &item_field) else {
                    continue;
                };
                match cidr_block(&cidr) {
                    Ok(c) => egress.allow_cidrs.push(c),
                    Err(e) => self.report(&item.referenced, &item_field, e),
                }
            }
        }
        if let Some(routes) = map.get("routes") {
            let field = map.field("routes");
            let mut roles_seen: Vec<RouteRole> = Vec::new();
            for (i, item) in self
                .list(routes, &field)
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                if let Some(route) = self.route(item, &format!("{field}[{i}]"), &mut roles_seen) {
                    egress.routes.push(route);
                }
            }
        }
        if let Some(dlp) = map.get("dlp") {
            let field = map.field("dlp");
            if let Some(dlp_map) = self.map(dlp, &field, schema::DLP) {
                egress.dlp = Dlp {
                    enabled: dlp_map
                        .get("enabled")
                        .and_then(|n| self.bool(n, &dlp_map.field("enabled")))
                        .unwrap_or(true),
                    rules: dlp_map.get("rules").and_then(|n| {
                        let field = dlp_map.field("rules");
                        let file = self.host_file(n, &field)?;
                        if !self.host {
                            return Some(file);
                        }
                        match bottle_secretscan::RuleSet::from_toml(&file.text()) {
                            Ok(_) => Some(file),
                            Err(e) => {
                                let message = format!(
                                    "`{}` is not a gitleaks rule file: {}",
                                    file.path.display(),
                                    error_chain(&e)
                                );
                                self.report(&n.referenced, &field, message);
                                None
                            }
                        }
                    }),
                };
            }
        }
        if let Some(ca) = map.get("upstream_ca") {
            egress.upstream_ca = self.host_file(ca, &map.field("upstream_ca"));
        }
        if let Some(responses) = map.get("responses") {
            egress.responses = self
                .choice(responses, &map.field("responses"), &schema::RESPONSES)
                .unwrap_or_default();
        }
        egress
    }

    fn route(&mut self, node: &Node, path: &str, roles_seen: &mut Vec<RouteRole>) -> Option<Route> {
        let map = self.map(node, path, schema::ROUTE)?;
        let host = self.required(&map, "host").and_then(|n| {
            let field = map.field("host");
            let h = self.string(n, &field)?;
            host_name(&h, false)
                .map_err(|why| self.report(&n.referenced, &field, why))
                .ok()
        });
        let path_prefix = map.get("path_prefix").and_then(|n| {
            let field = map.field("path_prefix");
            let p = self.string(n, &field)?;
            if p.starts_with('/') && !p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Some(p)
            } else {
                self.report(
                    &n.referenced,
                    &field,
                    format!("path_prefix `{p}` must start with `/` and contain no spaces"),
                );
                None
            }
        });
        let auth = map
            .get("auth")
            .and_then(|n| self.auth(n, &map.field("auth")));
        let mut roles = Vec::new();
        if let Some(n) = map.get("roles") {
            let field = map.field("roles");
            for (i, item) in self.list(n, &field).unwrap_or_default().iter().enumerate() {
                let item_field = format!("{field}[{i}]");
                if let Some(role) = self.choice(item, &item_field, &schema::ROLES) {
                    if roles_seen.contains(&role) {
                        self.report(
                            &item.referenced,
                            &item_field,
                            "this role is already given to another route",
                        );
                    } else {
                        roles_seen.push(role);
                        roles.push(role);
                    }
                }
            }
        }
        let tls_passthrough = map
            .get("tls_passthrough")
            .and_then(|n| self.bool(n, &map.field("tls_passthrough")))
            .unwrap_or(false);
        if tls_passthrough {
            let at = map
                .get("tls_passthrough")
                .map_or(&node.referenced, |n| &n.referenced);
            let field = map.field("tls_passthrough");
            if map.get("auth").is_some() {
                self.report(
                    at,
                    &field,
                    "a tls_passthrough route cannot have `auth`: bottle cannot inject credentials into traffic it does not terminate",
                );
            }
            if map.get("path_prefix").is_some() {
                self.report(
                    at,
                    &field,
                    "a tls_passthrough route cannot have `path_prefix`: paths are not visible in passthrough",
                );
            }
        }
        Some(Route {
            host: host?,
            path_prefix,
            auth,
            roles,
            tls_passthrough,
        })
    }

    fn auth(&mut self, node: &Node, path: &str) -> Option<RouteAuth> {
        let map = self.map(node, path, schema::AUTH)?;
        let kind = self
            .required(&map, "scheme")
            .and_then(|n| self.choice(n, &map.field("scheme"), &schema::SCHEMES));
        let header_node = map.get("header");
        let scheme = match kind {
            Some(SchemeWord::Bearer) | Some(SchemeWord::Basic) => {
                if let Some(h) = header_node {
                    self.report(
                        &h.referenced,
                        &map.field("header"),
                        "`header` is only used with `scheme: header`",
                    );
                }
                Some(if matches!(kind, Some(SchemeWord::Bearer)) {
                    AuthScheme::Bearer
                } else {
                    AuthScheme::Basic
                })
            }
            Some(SchemeWord::Header) => self.required(&map, "header").and_then(|n| {
                let field = map.field("header");
                let name = self.string(n, &field)?;
                if is_header_name(&name) {
                    Some(AuthScheme::Header(name))
                } else {
                    self.report(
                        &n.referenced,
                        &field,
                        format!("`{name}` is not a valid HTTP header name"),
                    );
                    None
                }
            }),
            None => None,
        };
        let token = self.required(&map, "token").and_then(|n| {
            let field = map.field("token");
            match &n.value {
                Raw::Map(_) => {
                    let (var, value) = self.env_ref(n, &field)?;
                    if value.is_empty() && self.host {
                        self.report(
                            &n.referenced,
                            &field,
                            format!("host environment variable `{var}` is empty"),
                        );
                        return None;
                    }
                    Some((Secret::new(value), var))
                }
                Raw::Str(_) | Raw::Int(_) | Raw::Float(_) | Raw::Bool(_) => {
                    self.report(
                        &n.referenced,
                        &field,
                        "tokens must come from the environment, not the manifest: use `{from_env: VAR}`",
                    );
                    None
                }
                _ => {
                    self.wrong_type(n, &field, "`{from_env: VAR}`");
                    None
                }
            }
        });
        let (token, var) = token?;
        Some(RouteAuth {
            scheme: scheme?,
            token,
            var,
        })
    }

    fn git(&mut self, node: &Node, path: &str) -> Vec<GitRemote> {
        let mut remotes: Vec<GitRemote> = Vec::new();
        let mut names = BTreeSet::new();
        for (i, item) in self.list(node, path).unwrap_or_default().iter().enumerate() {
            let field = format!("{path}[{i}]");
            let Some(map) = self.map(item, &field, schema::GIT) else {
                continue;
            };
            let name = self.required(&map, "name").and_then(|n| {
                let f = map.field("name");
                let name = self.string(n, &f)?;
                let valid = !name.is_empty()
                    && name.len() <= 64
                    && !name.starts_with(['-', '.'])
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if !valid {
                    self.report(
                        &n.referenced,
                        &f,
                        format!(
                            "`{name}` is not a valid remote name (letters, digits, `-`, `_`, `.`)"
                        ),
                    );
                    return None;
                }
                if !names.insert(name.clone()) {
                    self.report(
                        &n.referenced,
                        &f,
                        format!("remote `{name}` is defined twice"),
                    );
                    return None;
                }
                Some(name)
            });
            let upstream = self.required(&map, "upstream").and_then(|n| {
                let f = map.field("upstream");
                let url = self.string(n, &f)?;
                if is_ssh_upstream(&url) {
                    Some(url)
                } else {
                    self.report(
                        &n.referenced,
                        &f,
                        format!("`{url}` is not an SSH remote: use `ssh://user@host/path` or `user@host:path`"),
                    );
                    None
                }
            });
            let identity_file = self.required(&map, "identity_file").and_then(|n| {
                let f = map.field("identity_file");
                let raw = self.string(n, &f)?;
                let expanded = if self.host && (raw == "~" || raw.starts_with("~/")) {
                    match (self.env)("HOME") {
                        Some(home) => format!("{home}{}", &raw[1..]),
                        None => {
                            self.report(
                                &n.referenced,
                                &f,
                                "cannot expand `~`: host environment variable `HOME` is not set",
                            );
                            return None;
                        }
                    }
                } else {
                    raw
                };
                self.read_host_file(n, &f, &expanded)
            });
            let known_host_key = self.required(&map, "known_host_key").and_then(|n| {
                let f = map.field("known_host_key");
                let key = self.string(n, &f)?;
                if is_known_host_key(&key) {
                    Some(key.trim().to_owned())
                } else {
                    self.report(
                        &n.referenced,
                        &f,
                        "expected a known_hosts line like `github.com ssh-ed25519 AAAA...`",
                    );
                    None
                }
            });
            let allow_force = map
                .get("allow_force")
                .and_then(|n| self.bool(n, &map.field("allow_force")))
                .unwrap_or(false);
            if let (Some(name), Some(upstream), Some(identity_file), Some(known_host_key)) =
                (name, upstream, identity_file, known_host_key)
            {
                remotes.push(GitRemote {
                    name,
                    upstream,
                    identity_file,
                    known_host_key,
                    allow_force,
                });
            }
        }
        remotes
    }

    /// Where skill `name` lives on the host: `$BOTTLE_SKILLS_DIR/<name>`, else
    /// `$HOME/.claude/skills/<name>`. A missing one is a problem naming it.
    fn skill_dir(&mut self, name: &str, node: &Node, field: &str) -> Option<PathBuf> {
        if !self.host {
            return Some(PathBuf::from(name));
        }
        let root = match ((self.env)("BOTTLE_SKILLS_DIR"), (self.env)("HOME")) {
            (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir),
            (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".claude/skills"),
            _ => {
                self.report(
                    &node.referenced,
                    field,
                    format!(
                        "cannot find skill `{name}`: neither BOTTLE_SKILLS_DIR nor HOME is set"
                    ),
                );
                return None;
            }
        };
        let dir = root.join(name);
        if dir.is_dir() {
            Some(std::fs::canonicalize(&dir).unwrap_or(dir))
        } else {
            self.report(
                &node.referenced,
                field,
                format!("skill `{name}` not found: no directory {}", dir.display()),
            );
            None
        }
    }

    fn agent(
        &mut self,
        node: &Node,
        path: &str,
        bottles: &[&str],
        policies: &BTreeMap<String, BottlePolicy>,
    ) -> Option<Agent> {
        let map = self.map(node, path, schema::AGENT)?;
        let bottle = self.required(&map, "bottle").and_then(|n| {
            let field = map.field("bottle");
            let name = self.string(n, &field)?;
            if bottles.contains(&name.as_str()) {
                return Some(name);
            }
            let mut message = format!(
                "agent `{}` refers to bottle `{name}`, which is not defined under `bottles`",
                path.rsplit('.').next().unwrap_or(path)
            );
            if let Some(close) = closest(&name, bottles) {
                message.push_str(&format!(" (did you mean `{close}`?)"));
            }
            self.report(&n.referenced, &field, message);
            None
        });
        let provider = map
            .get("provider")
            .and_then(|n| self.choice(n, &map.field("provider"), &schema::PROVIDERS))
            .unwrap_or_default();
        let prompt = map
            .get("prompt")
            .and_then(|n| self.string(n, &map.field("prompt")));
        let mut skills = Vec::new();
        if let Some(n) = map.get("skills") {
            let field = map.field("skills");
            for (i, item) in self.list(n, &field).unwrap_or_default().iter().enumerate() {
                let item_field = format!("{field}[{i}]");
                let Some(skill) = self.string(item, &item_field) else {
                    continue;
                };
                let valid = !skill.is_empty()
                    && skill != "."
                    && skill != ".."
                    && skill
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
                if valid {
                    if let Some(dir) = self.skill_dir(&skill, item, &item_field) {
                        skills.push(Skill { name: skill, dir });
                    }
                } else {
                    self.report(
                        &item.referenced,
                        &item_field,
                        format!("`{skill}` is not a skill name (letters, digits, `_`, `.`, `-`)"),
                    );
                }
            }
        }
        let workspace = map
            .get("workspace")
            .and_then(|n| self.existing_path(n, &map.field("workspace"), true));
        let policy = bottle.as_ref().and_then(|b| policies.get(b));
        let host_login = map.get("host_login").and_then(|n| {
            let field = map.field("host_login");
            self.host_login(n, &field, provider, policy)
        });
        let remote_control = map.get("remote_control").is_some_and(|n| {
            let field = map.field("remote_control");
            self.remote_control(n, &field, provider, policy)
        });
        Some(Agent {
            bottle: bottle?,
            provider,
            prompt,
            skills,
            workspace,
            host_login,
            remote_control,
        })
    }

    /// An agent's opt-in `field: true`, which only `only` agents take: false when it is
    /// absent, false or no boolean, or set on another provider (a problem saying
    /// `refusal`).
    fn opt_in(
        &mut self,
        node: &Node,
        field: &str,
        provider: Provider,
        only: Provider,
        refusal: &str,
    ) -> bool {
        if !self.bool(node, field).unwrap_or(false) {
            return false;
        }
        if provider != only {
            self.report(&node.referenced, field, refusal);
            return false;
        }
        true
    }

    /// Whether a route of the agent's bottle stands in the way of its opt-in `field`:
    /// the first route `against` gives a reason against is a problem at `node`.
    fn route_in_the_way(
        &mut self,
        node: &Node,
        field: &str,
        policy: Option<&BottlePolicy>,
        against: impl Fn(&Route) -> Option<String>,
    ) -> bool {
        let routes = policy.map(|p| p.egress.routes.as_slice()).unwrap_or(&[]);
        let Some((i, why)) = routes
            .iter()
            .enumerate()
            .find_map(|(i, r)| against(r).map(|why| (i, why)))
        else {
            return false;
        };
        let message =
            format!("{why} (egress.routes[{i}]); run this agent under a bottle without that route");
        self.report(&node.referenced, field, message);
        true
    }

    /// `host_login: true`: the host's Codex login, read now from `$CODEX_HOME/auth.json`
    /// (else `~/.codex/auth.json`). A file that is missing or no ChatGPT login, another
    /// provider, or a bottle that already routes Codex elsewhere is a problem here.
    fn host_login(
        &mut self,
        node: &Node,
        field: &str,
        provider: Provider,
        policy: Option<&BottlePolicy>,
    ) -> Option<CodexLogin> {
        let refusal =
            "`host_login` is supported for `provider: codex` only (the host's ChatGPT login)";
        if !self.opt_in(node, field, provider, Provider::Codex, refusal) {
            return None;
        }
        let in_the_way = self.route_in_the_way(node, field, policy, |r| {
            let why = if r.host == codex_login::HOST {
                format!("it routes {} itself", r.host)
            } else if r.roles.contains(&RouteRole::OpenaiBaseUrl) {
                "its route with `openai-base-url` gives Codex an API key already".to_string()
            } else {
                return None;
            };
            Some(format!(
                "`host_login` cannot be used with this bottle: {why}"
            ))
        });
        // A names-only walk reads nothing of the host, and `Names` keeps no login.
        if in_the_way || !self.host {
            return None;
        }
        let path = match ((self.env)("CODEX_HOME"), (self.env)("HOME")) {
            (Some(dir), _) if !dir.is_empty() => Path::new(&dir).join("auth.json"),
            (_, Some(home)) if !home.is_empty() => Path::new(&home).join(".codex/auth.json"),
            _ => {
                self.report(
                    &node.referenced,
                    field,
                    "cannot find the host's Codex login: neither CODEX_HOME nor HOME is set",
                );
                return None;
            }
        };
        let contents = self.read_bounded(node, field, &path, |path, err| {
            format!(
                "the host's Codex login `{}` cannot be read: {err}; log in on the host with \
                 `codex login` (a login kept in the OS keyring has no file: set \
                 `cli_auth_credentials_store = \"file\"` in Codex's config.toml)",
                path.display()
            )
        })?;
        match codex_login::parse(&contents) {
            // Canonical: build contexts leave it out by its path.
            Ok(login) => Some(CodexLogin {
                path: std::fs::canonicalize(&path).unwrap_or(path),
                ..login
            }),
            Err(why) => {
                let message = format!("`{}` is not a usable ChatGPT login: {why}", path.display());
                self.report(&node.referenced, field, message);
                None
            }
        }
    }

    /// `remote_control: true`: Claude Code only, and its hosts must not be routes of the
    /// bottle that inject a credential (Remote Control needs Claude Code's own claude.ai
    /// login, tunnelled untouched).
    fn remote_control(
        &mut self,
        node: &Node,
        field: &str,
        provider: Provider,
        policy: Option<&BottlePolicy>,
    ) -> bool {
        let refusal = "`remote_control` is a Claude Code feature (`provider: claude`)";
        if !self.opt_in(node, field, provider, Provider::Claude, refusal) {
            return false;
        }
        let hosts = crate::provider::REMOTE_CONTROL_HOSTS;
        !self.route_in_the_way(node, field, policy, |r| {
            (!r.tls_passthrough && hosts.contains(&r.host.as_str())).then(|| {
                format!(
                    "Remote Control needs Claude Code's own claude.ai login on {}, tunnelled \
                     untouched, and this bottle routes that host through egress",
                    r.host
                )
            })
        })
    }
}

/// A CIDR block by the one host grammar (`bottle_contract::host::Cidr`), canonical.
fn cidr_block(text: &str) -> Result<String, String> {
    bottle_contract::host::Cidr::parse(text)
        .map(|c| c.to_string())
        .map_err(|e| e.to_string())
}

/// The largest host file the manifest may name (a rules file, a CA, a key).
const MAX_HOST_FILE: usize = 1 << 20;

/// An error and its causes, `: `-joined (for a problem's one-line message).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// "unknown key `x` (did you mean `y`?)", or the list of valid words.
fn unknown(what: &str, word: &str, expected: &[&str]) -> String {
    let mut message = format!("unknown {what} `{word}`");
    if let Some(close) = closest(word, expected) {
        message.push_str(&format!(" (did you mean `{close}`?)"));
    } else if !expected.is_empty() {
        message.push_str(&format!("; expected one of: {}", expected.join(", ")));
    }
    message
}

/// The candidate nearest to `word`, if it is close enough to be a likely typo.
fn closest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let lower = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&lower, c), *c))
        .filter(|(d, c)| *d <= (c.chars().count() / 3).clamp(1, 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// Why `name` is not a valid Docker-safe name, if it is not.
fn name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("is empty".to_owned());
    }
    if name.len() > MAX_NAME {
        return Some(format!("is longer than {MAX_NAME} characters"));
    }
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Some(
            "must be lowercase letters, digits and `-`, starting with a letter or digit".to_owned(),
        );
    }
    None
}

/// A directory name turned into a project name candidate.
fn sanitize_name(dir: &str) -> String {
    let mapped: String = dir
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    mapped.trim_matches('-').to_owned()
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// RFC 7230 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c))
}

/// A host name, or with `wildcard` a host pattern (`*.suffix`), by the one host grammar
/// (`bottle_contract::host`): what the manifest accepts here is exactly what an agent's
/// proposal, egress and pipelock accept.
fn host_name(raw: &str, wildcard: bool) -> Result<String, String> {
    use bottle_contract::host::{HostName, HostPattern};
    let parsed = if wildcard {
        HostPattern::parse(raw).map(|p| p.to_string())
    } else {
        HostName::parse(raw).map(|n| n.to_string())
    };
    parsed.map_err(|e| e.to_string())
}

/// Parse a memory size: bytes, or a number with a k/m/g/t suffix (binary units).
fn parse_memory(raw: &str) -> Result<u64, String> {
    let bad = || format!("`{raw}` is not a size: use e.g. `512m`, `4g`, `1.5g`, `1024k` or bytes");
    let s = raw.trim().to_ascii_lowercase();
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let shift = match unit {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let well_formed = !number.is_empty()
        && !number.starts_with('.')
        && !number.ends_with('.')
        && number.chars().all(|c| c.is_ascii_digit() || c == '.')
        && number.matches('.').count() <= 1;
    if !well_formed {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("`{raw}` is too large"));
    }
    Ok(bytes as u64)
}

/// `ssh://[user@]host[:port]/path` or scp-like `user@host:path`.
fn is_ssh_upstream(url: &str) -> bool {
    let clean = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if let Some(rest) = url.strip_prefix("ssh://") {
        let Some((authority, path)) = rest.split_once('/') else {
            return false;
        };
        let host = authority.rsplit('@').next().unwrap_or(authority);
        let host = host.split(':').next().unwrap_or(host);
        return clean(host) && clean(path) && !authority.starts_with('-');
    }
    if url.contains("://") {
        return false;
    }
    match url.split_once('@') {
        Some((user, rest)) => match rest.split_once(':') {
            Some((host, path)) => {
                clean(user) && clean(host) && clean(path) && !user.starts_with('-')
            }
            None => false,
        },
        None => false,
    }
}

/// `host keytype base64 [comment]`.
fn is_known_host_key(line: &str) -> bool {
    let parts: Vec<&str> = line.split_whitespace().collect();
    if parts.len() < 3 {
        return false;
    }
    let key_type = parts[1];
    let type_ok = ["ssh-", "ecdsa-", "sk-"]
        .iter()
        .any(|p| key_type.starts_with(p));
    let data_ok = parts[2].len() >= 16
        && parts[2]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='));
    !parts[0].is_empty() && type_ok && data_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(name_error("dev-1"), None);
        assert!(name_error("Dev").is_some());
        assert!(name_error("-dev").is_some());
        assert!(name_error(&"a".repeat(33)).is_some());
        assert_eq!(sanitize_name("My Project_2!"), "my-project-2");
    }

    #[test]
    fn hosts() {
        assert_eq!(host_name("PyPI.org.", true), Ok("pypi.org".into()));
        assert_eq!(host_name("*.Example.com", true), Ok("*.example.com".into()));
        assert!(host_name("*.example.com", false).is_err());
        assert!(host_name("*", true).is_err());
        assert!(host_name("10.0.0.1", true).is_err());
        assert!(host_name("[::1]", true).is_err());
        assert!(host_name("127.1", true).is_err());
        assert!(host_name("bad_host.com", true).is_err());
        assert!(host_name("-a.com", true).is_err());
        assert!(host_name("a..com", true).is_err());
    }

    #[test]
    fn memory() {
        assert_eq!(parse_memory("512m"), Ok(512 << 20));
        assert_eq!(parse_memory("4g"), Ok(4 << 30));
        assert_eq!(parse_memory("1.5g"), Ok(3 << 29));
        assert_eq!(parse_memory("1024k"), Ok(1 << 20));
        assert_eq!(parse_memory("1048576"), Ok(1 << 20));
        assert!(parse_memory("4x").is_err());
        assert!(parse_memory("g").is_err());
        assert!(parse_memory("1.g").is_err());
        assert!(parse_memory("-1g").is_err());
        assert!(parse_memory("99999999999999t").is_err());
    }

    #[test]
    fn suggestions() {
        assert_eq!(closest("runtme", &["image", "runtime"]), Some("runtime"));
        assert_eq!(closest("zzz", &["image", "runtime"]), None);
        assert_eq!(closest("Egress", &["egress"]), Some("egress"));
    }

    #[test]
    fn upstreams_and_keys() {
        assert!(is_ssh_upstream("ssh://git@github.com/acme/app.git"));
        assert!(is_ssh_upstream("ssh://git@host:2222/x"));
        assert!(is_ssh_upstream("git@github.com:acme/app.git"));
        assert!(!is_ssh_upstream("https://github.com/acme/app.git"));
        assert!(!is_ssh_upstream("github.com:acme/app.git"));
        assert!(!is_ssh_upstream("ssh://host"));
        assert!(is_known_host_key(
            "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq"
        ));
        assert!(!is_known_host_key("github.com ssh-ed25519"));
        assert!(!is_known_host_key(
            "github.com rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMq"
        ));
    }
}
