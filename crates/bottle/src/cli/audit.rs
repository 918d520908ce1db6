//! `bottle audit [NAME]`: one time-ordered stream of every decision the bottles'
//! sidecars made (egress, pipelock, agent-net through pipelock's sink, git-gate,
//! supervise), read from their logs through the engine and parsed by the one format
//! in `bottle_contract::audit`. Text or JSON lines; `--since`, `--denied`, `--follow`.
//! On Kubernetes the logs are the pods' (the `log` subresource), of the project's
//! namespace: the project must be named.

use futures_util::StreamExt;

use super::{AuditArgs, Backend, LogLines, Output, connect, connect_kube_sessions, load_names};
use crate::engine::{ContainerInfo, Engine};
use crate::labels;
use bottle_contract::audit::{self, Decision, MAX_LINE};

/// The nodes whose logs carry decisions.
const NODES: [&str; 4] = ["egress", "pipelock", "git-gate", "supervise"];

/// One sidecar container to read.
pub(crate) struct Source {
    pub container: String,
    pub project: String,
    pub bottle: String,
    pub node: String,
}

pub async fn run(args: AuditArgs) -> anyhow::Result<i32> {
    let since = match args.since.as_deref() {
        Some(s) => parse_since(s, now())?,
        None => 0.0,
    };
    let project = match (&args.project, &args.file, &args.name) {
        (Some(p), _, _) => Some(p.clone()),
        (None, Some(f), _) => Some(load_names(f)?.project),
        // A NAME alone: any project that has it (as `logs` and `exec`).
        (None, None, Some(_)) => None,
        (None, None, None) => Some(load_names(std::path::Path::new("bottles.yaml"))?.project),
    };
    match args.backend.backend {
        Backend::Docker => show(&connect().await?, &args, project.as_deref(), since).await,
        Backend::Kubernetes => {
            let kube = connect_kube_sessions(project.as_deref(), &args.backend).await?;
            show(&kube, &args, project.as_deref(), since).await
        }
    }
}

/// The decisions of `project`'s sidecars on `engine` (of bottle NAME's), then with
/// `--follow` the new ones as they come.
async fn show<E: Engine + LogLines>(
    engine: &E,
    args: &AuditArgs,
    project: Option<&str>,
    since: f64,
) -> anyhow::Result<i32> {
    let sources = sources(engine, project, args.name.as_deref()).await?;
    if sources.is_empty() {
        let what = match (&args.name, project) {
            (Some(n), _) => format!("bottle {n}"),
            (None, Some(p)) => format!("project {p}"),
            (None, None) => "this project".into(),
        };
        anyhow::bail!(
            "{what} has no sidecars to audit; run `bottle apply -f <manifest>` to create it"
        );
    }
    let keep = |d: &Decision| (!args.denied || d.is_denial()) && d.ts >= since;
    // The history, merged.
    let mut streams = Vec::new();
    let mut last = Vec::new();
    for s in &sources {
        let found = history(engine, s, since).await?;
        last.push(found.last().map_or(since, |d: &Decision| d.ts));
        streams.push(found.into_iter().filter(|d| keep(d)).collect());
    }
    for d in audit::merge(streams) {
        print(&d, args.output);
    }
    if !args.follow {
        return Ok(0);
    }
    // Then live, as each line comes (lines up to the history's last are skipped).
    let start = last.iter().copied().fold(since, f64::min);
    let mut live = Vec::new();
    for (s, after) in sources.into_iter().zip(last) {
        let lines = engine
            .log_lines(&s.container, true, since_secs(start), MAX_LINE)
            .await?;
        live.push(
            lines
                .filter_map(move |line| {
                    let d = line.ok().and_then(|l| decision(&s, &l));
                    async move { d.filter(|d| d.ts > after) }
                })
                .boxed(),
        );
    }
    let mut all = futures_util::stream::select_all(live);
    while let Some(d) = all.next().await {
        if keep(&d) {
            print(&d, args.output);
        }
    }
    Ok(0)
}

/// The decisions `s` logged from `since` (whole seconds, rounded down) to now.
pub(super) async fn history<E: LogLines>(
    engine: &E,
    s: &Source,
    since: f64,
) -> anyhow::Result<Vec<Decision>> {
    let mut found = Vec::new();
    let mut lines = engine
        .log_lines(&s.container, false, since_secs(since), MAX_LINE)
        .await?;
    while let Some(line) = lines.next().await {
        if let Some(d) = decision(s, &line?) {
            found.push(d);
        }
    }
    Ok(found)
}

/// The decision of one time-stamped log line of `s`, if it is one.
pub(crate) fn decision(s: &Source, line: &str) -> Option<Decision> {
    let (ts, text) = audit::split_docker_line(line);
    let mut d = audit::parse(&s.node, text, ts)?;
    d.bottle.clone_from(&s.bottle);
    Some(d)
}

fn print(d: &Decision, output: Output) {
    use std::io::Write as _;
    let line = match output {
        Output::Text => d.to_string(),
        Output::Json => match serde_json::to_string(d) {
            Ok(l) => l,
            Err(_) => return,
        },
    };
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// The sidecar containers of the project (or of any project, for one NAME).
pub(crate) async fn sources<E: Engine>(
    engine: &E,
    project: Option<&str>,
    name: Option<&str>,
) -> anyhow::Result<Vec<Source>> {
    let mut filter = labels::managed_filter();
    if let Some(p) = project {
        filter.push(format!("{}={p}", labels::PROJECT));
    }
    if let Some(n) = name {
        filter.push(format!("{}={n}", labels::BOTTLE));
    }
    let found = engine.list_containers(&filter).await?;
    if name.is_some() && project.is_none() {
        let mut projects: Vec<&str> = found
            .iter()
            .filter_map(|c| c.labels.get(labels::PROJECT).map(String::as_str))
            .collect();
        projects.sort_unstable();
        projects.dedup();
        if projects.len() > 1 {
            anyhow::bail!(
                "bottle {} exists in several projects ({}): choose one with -p",
                name.unwrap_or_default(),
                projects.join(", ")
            );
        }
    }
    Ok(sources_in(&found))
}

/// The sidecar containers among `found` (one listing), by bottle and node.
pub(crate) fn sources_in(found: &[ContainerInfo]) -> Vec<Source> {
    let mut sources: Vec<Source> = found.iter().filter_map(source).collect();
    sources.sort_by(|a, b| (&a.bottle, &a.node).cmp(&(&b.bottle, &b.node)));
    sources
}

/// Container `c` as a source of decisions, when it is a sidecar that logs them.
pub(crate) fn source(c: &ContainerInfo) -> Option<Source> {
    let node = c.labels.get(labels::NODE)?;
    NODES.contains(&node.as_str()).then(|| Source {
        container: c.name.clone(),
        project: labels::project(&c.labels).unwrap_or_default().to_string(),
        bottle: c.labels.get(labels::BOTTLE).cloned().unwrap_or_default(),
        node: node.clone(),
    })
}

/// Unix seconds now, to the nanosecond: the time stamps decisions carry.
pub(super) fn now() -> f64 {
    bottle_contract::supervise::unix_now().as_secs_f64()
}

/// The engine's `since` (whole seconds, rounded down so no line is missed).
fn since_secs(ts: f64) -> i64 {
    (ts.floor() as i64).max(0)
}

/// `--since`: a duration back from `now` (`90s`, `10m`, `2h`, `1d`), an RFC 3339 time,
/// or seconds since the epoch.
fn parse_since(s: &str, now: f64) -> anyhow::Result<f64> {
    let s = s.trim();
    if let Some(ts) = audit::docker_ts(s) {
        return Ok(ts);
    }
    if let Ok(n) = s.parse::<f64>()
        && n.is_finite()
        && n >= 0.0
    {
        return Ok(n);
    }
    match bottle_contract::duration::parse(s) {
        Ok(d) => Ok((now - d.as_secs_f64()).max(0.0)),
        Err(_) => anyhow::bail!(
            "--since {s:?}: expected a duration (90s, 10m, 2h, 1d), an RFC 3339 time or seconds since the epoch"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_forms() {
        let now = 1_000_000.0;
        assert_eq!(parse_since("90s", now).ok(), Some(now - 90.0));
        assert_eq!(parse_since("10m", now).ok(), Some(now - 600.0));
        assert_eq!(parse_since("2h", now).ok(), Some(now - 7200.0));
        assert_eq!(parse_since("1d", now).ok(), Some(now - 86400.0));
        assert_eq!(parse_since("12345", now).ok(), Some(12345.0));
        assert_eq!(
            parse_since("2024-05-01T10:00:00Z", now).ok(),
            Some(1_714_557_600.0)
        );
        for bad in ["", "m", "10x", "-5m", "NaN", "inf", "99999999999d"] {
            assert!(parse_since(bad, now).is_err(), "{bad}");
        }
        assert_eq!(since_secs(-1.0), 0);
        assert_eq!(since_secs(10.9), 10);
    }

    #[test]
    fn a_log_line_becomes_a_decision_of_its_bottle() {
        let s = Source {
            container: "c".into(),
            project: "p".into(),
            bottle: "dev".into(),
            node: "egress".into(),
        };
        let line = r#"2024-05-01T10:00:00.250000000Z {"bottle":"b","host":"evil.example","method":"GET","path":"/","route":"deny","status":403,"bytes":0,"bytes_up":0,"duration_ms":0,"error":"no route and not in egress.allow"}"#;
        let d = decision(&s, line).expect("decision");
        assert_eq!(d.bottle, "dev");
        assert_eq!(d.ts, 1_714_557_600.25);
        assert!(d.is_denial());
        assert_eq!(decision(&s, "2024-05-01T10:00:00Z egress listening"), None);
    }
}
