//! `bottle verify [NAME]`: check from inside each running agent, as the agent user, that
//! the bottle keeps its promise (the checks, their commands and their judgement are
//! `bottle_core::verify`). This file does the host's part: find the bottles, read what
//! the engine says of the agent container (runtime, mounts), run the commands, read the
//! audit lines the run caused from egress's and pipelock's logs, look up the route
//! tokens set in this host's environment (searched for here, never sent in), and print a
//! table or JSON. Exit 0 when every check holds, 1 when one fails, 2 when a bottle is
//! not running or the input is bad. On Kubernetes the same checks, through the pod exec
//! and log subresources; the runtime is the pod's, and pipelock (without its gateway in
//! a pod) audits no DNS question or direct packet, so those are judged from the agent's
//! side alone.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

use super::audit::{self, Source};
use super::{
    AgentRef, Backend, LogLines, Output, VerifyArgs, agent_in, connect, connect_kube_sessions,
    load_names,
};
use crate::engine::{ContainerInfo, Engine, EngineError, Exec};
use crate::labels;
use crate::manifest::{Names, PolicyNames};
use crate::runtime::RuntimeFacts;
use crate::verify::{self, Check, HostFacts, Probe, Token};
use bottle_contract::audit::Decision;
use bottle_docker::{ContainerDetails, Docker};

/// How long the audit lines of a run may take to show in the logs.
const AUDIT_WAIT: Duration = Duration::from_secs(10);

pub async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let names = manifest(&args)?;
    let project = args
        .target
        .project
        .clone()
        .or_else(|| names.as_ref().map(|n| n.project.clone()));
    if args.name.is_none() && project.is_none() {
        anyhow::bail!("no bottles.yaml here: name a bottle, or give -f MANIFEST or -p PROJECT");
    }
    if let (Some(m), Some(n)) = (&names, &args.name)
        && !m.agents.contains_key(n)
    {
        anyhow::bail!("{} names no agent {n}", m.path.display());
    }
    match args.target.backend.backend {
        Backend::Docker => {
            let docker = connect().await?;
            let runtimes = super::runtime_facts(&docker).await?;
            verify_all(&docker, &args, names, project, &runtimes).await
        }
        Backend::Kubernetes => {
            let kube = connect_kube_sessions(project.as_deref(), &args.target.backend).await?;
            // What `apply` decided on this backend: its runtimes, no runsc probe.
            let runtimes = RuntimeFacts::unprobed(kube.runtimes().await?);
            verify_all(&kube, &args, names, project, &runtimes).await
        }
    }
}

/// The host side of `verify` that differs between the backends.
#[allow(async_fn_in_trait)] // used through generics only
pub(crate) trait VerifyHost: Engine + Exec + LogLines {
    /// The runtime and the named volumes of `container`, as the engine reports them.
    async fn details(&self, container: &str) -> Result<ContainerDetails, EngineError>;
    /// Does bottle's pipelock hold its gateway here, so that it audits the agent's DNS
    /// questions and direct packets? Not in a Kubernetes pod (design 9.10).
    fn pipelock_audits_packets(&self) -> bool;
}

impl VerifyHost for Docker {
    async fn details(&self, container: &str) -> Result<ContainerDetails, EngineError> {
        self.container_details(container).await
    }

    fn pipelock_audits_packets(&self) -> bool {
        true
    }
}

impl VerifyHost for bottle_kube::engine::KubeEngine<Docker> {
    async fn details(&self, container: &str) -> Result<ContainerDetails, EngineError> {
        self.container_details(container).await
    }

    fn pipelock_audits_packets(&self) -> bool {
        false
    }
}

/// Verify the bottles `args` names (or all of `project`'s) on `engine`.
async fn verify_all<E: VerifyHost>(
    engine: &E,
    args: &VerifyArgs,
    names: Option<Names>,
    project: Option<String>,
    runtimes: &RuntimeFacts,
) -> anyhow::Result<i32> {
    // One listing serves the run: the bottles of the project, each one's agent and sidecars.
    let mut filter = labels::managed_filter();
    if let Some(p) = &project {
        filter.push(format!("{}={p}", labels::PROJECT));
    }
    if let Some(n) = &args.name {
        filter.push(format!("{}={n}", labels::BOTTLE));
    }
    let containers = engine.list_containers(&filter).await?;
    let bottles: Vec<String> = match (&args.name, &names) {
        (Some(n), _) => vec![n.clone()],
        (None, Some(m)) => m.agents.keys().cloned().collect(),
        (None, None) => agents_of(&containers),
    };
    if bottles.is_empty() {
        anyhow::bail!("no bottles to verify");
    }
    // Every bottle must be running before anything is checked.
    let agents = bottles
        .iter()
        .map(|b| agent_in(&containers, b))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut report = Vec::new();
    for (b, agent) in bottles.iter().zip(&agents) {
        let policy = names.as_ref().and_then(|m| {
            let a = m.agents.get(b)?;
            m.policies.get(&a.bottle)
        });
        let own = containers.iter().filter(|c| {
            labels::is_ours(&c.labels, &agent.project) && c.labels.get(labels::BOTTLE) == Some(b)
        });
        let checks = verify_one(engine, b, agent, own.cloned().collect(), policy, runtimes).await?;
        report.push((b.clone(), checks));
    }
    let project = project.unwrap_or_else(|| {
        agents
            .first()
            .map(|a| a.project.clone())
            .unwrap_or_default()
    });
    print(&project, &report, args.target.output);
    let held = report.iter().all(|(_, c)| verify::all_hold(c));
    Ok(if held { 0 } else { 1 })
}

/// The manifest's names: `-f F`, else `bottles.yaml` here when there is one and no `-p`.
fn manifest(args: &VerifyArgs) -> anyhow::Result<Option<Names>> {
    match (&args.target.file, &args.target.project) {
        (Some(f), _) => load_names(f).map(Some),
        (None, Some(_)) => Ok(None),
        (None, None) => {
            let here = Path::new("bottles.yaml");
            if here.exists() {
                load_names(here).map(Some)
            } else {
                Ok(None)
            }
        }
    }
}

/// The bottles (running or not) that have an agent among `containers`, by name.
fn agents_of(containers: &[ContainerInfo]) -> Vec<String> {
    let mut found: Vec<String> = containers
        .iter()
        .filter(|c| c.labels.get(labels::NODE).map(String::as_str) == Some("agent"))
        .filter_map(|c| c.labels.get(labels::BOTTLE).cloned())
        .collect();
    found.sort();
    found
}

/// Run every check on one running bottle, whose containers (agent and sidecars) are `own`.
async fn verify_one<E: VerifyHost>(
    engine: &E,
    bottle: &str,
    agent: &AgentRef,
    own: Vec<ContainerInfo>,
    policy: Option<&PolicyNames>,
    runtimes: &crate::runtime::RuntimeFacts,
) -> anyhow::Result<Vec<Check>> {
    let (project, container) = (agent.project.as_str(), agent.container.as_str());
    let agent_label = own
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.labels.get(labels::RUNTIME).cloned());
    let details = engine.details(container).await?;
    let facts = HostFacts {
        runtime: details.runtime,
        runtime_label: agent_label,
        runtimes: runtimes.clone(),
        volumes: details.volumes,
    };
    let mut probe = Probe::new(policy, rand::random());
    // A firewall that is not bottle's own sidecar audits no DNS question or packet, nor
    // does bottle's without its gateway (in a Kubernetes pod).
    probe.foreign_pipelock |= !engine.pipelock_audits_packets();
    probe.foreign_pipelock |= own.iter().any(|c| {
        c.labels.get(labels::NODE).map(String::as_str) == Some("pipelock")
            && !c
                .image
                .starts_with(&format!("{}:", labels::SIDECAR_IMAGE_REPO))
    });
    let sources = audit::sources_in(&own);
    let since = audit::now();
    let observed = verify::observe(engine, container, &probe).await;
    let decisions = audit_lines(engine, &sources, since, &probe).await?;
    let tokens = tokens(policy);
    Ok(verify::judge(&verify::Inputs {
        project,
        bottle,
        probe: &probe,
        observed: &observed,
        facts: &facts,
        decisions: &decisions,
        asked: policy.map(|p| p.runtime),
        tokens: &tokens,
    }))
}

/// The decisions the sidecars logged since `since`, read again until the run's are all
/// there or [`AUDIT_WAIT`] has passed.
async fn audit_lines<E: LogLines>(
    engine: &E,
    sources: &[Source],
    since: f64,
    probe: &Probe,
) -> anyhow::Result<Vec<Decision>> {
    let deadline = tokio::time::Instant::now() + AUDIT_WAIT;
    loop {
        let mut found = Vec::new();
        for s in sources {
            found.extend(audit::history(engine, s, since).await?);
        }
        if probe.audit_complete(&found) || tokio::time::Instant::now() >= deadline {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The route tokens of `policy` that this host's environment holds: searched for in what
/// the agent can read, on this side only.
fn tokens(policy: Option<&PolicyNames>) -> Vec<Token> {
    policy
        .map(|p| p.routes.as_slice())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            let var = r.token_var.as_ref()?;
            let value = std::env::var(var).ok().filter(|v| !v.is_empty())?;
            Some(Token {
                var: var.clone(),
                host: r.host.clone(),
                value: crate::model::Secret::new(value),
            })
        })
        .collect()
}

fn print(project: &str, report: &[(String, Vec<Check>)], output: Output) {
    match output {
        Output::Json => {
            let bottles: Vec<_> = report
                .iter()
                .map(|(b, checks)| {
                    json!({"bottle": b, "ok": verify::all_hold(checks), "checks": checks})
                })
                .collect();
            println!("{}", json!({"project": project, "bottles": bottles}));
        }
        Output::Text => {
            for (b, checks) in report {
                let failed = checks
                    .iter()
                    .filter(|c| c.result == verify::Outcome::Fail)
                    .count();
                let verdict = if failed == 0 {
                    "every check holds".to_string()
                } else {
                    format!("{failed} check(s) FAIL")
                };
                println!("{b}: {verdict}");
                println!("  {:<13} {:<6} DETAIL", "CHECK", "RESULT");
                for c in checks {
                    println!("  {:<13} {:<6} {}", c.check, c.result.word(), c.detail);
                }
            }
        }
    }
}
