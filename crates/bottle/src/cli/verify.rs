//! `bottle verify [NAME]`: check from inside each running agent, as the agent user, that
//! the bottle keeps its promise (the checks, their commands and their judgement are
//! `bottle_core::verify`). This file does the host's part: find the bottles, read what
//! the engine says of the agent container (runtime, mounts), run the commands, read the
//! audit lines the run caused from egress's and pipelock's logs, look up the route
//! tokens set in this host's environment (searched for here, never sent in), and print a
//! table or JSON. Exit 0 when every check holds, 1 when one fails, 2 when a bottle is
//! not running or the input is bad.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use super::audit::{self, Source};
use super::{BottleTarget, Output, VerifyArgs, connect, find_agent, load_names};
use crate::engine::{ContainerInfo, Engine};
use crate::labels;
use crate::manifest::{Names, PolicyNames};
use crate::verify::{self, Check, HostFacts, Probe, Token};
use bottle_contract::audit::{Decision, MAX_LINE};
use bottle_docker::Docker;

/// How long the audit lines of a run may take to show in the logs.
const AUDIT_WAIT: Duration = Duration::from_secs(10);

pub async fn run(args: VerifyArgs) -> anyhow::Result<i32> {
    let names = manifest(&args)?;
    let project = args
        .target
        .project
        .clone()
        .or_else(|| names.as_ref().map(|n| n.project.clone()));
    let docker = connect().await?;
    let bottles: Vec<String> = match (&args.name, &names, &project) {
        (Some(n), _, _) => vec![n.clone()],
        (None, Some(m), _) => m.agents.keys().cloned().collect(),
        (None, None, Some(p)) => agents_of(&docker, p).await?,
        (None, None, None) => {
            anyhow::bail!("no bottles.yaml here: name a bottle, or give -f MANIFEST or -p PROJECT")
        }
    };
    if bottles.is_empty() {
        anyhow::bail!("no bottles to verify");
    }
    if let (Some(m), Some(n)) = (&names, &args.name)
        && !m.agents.contains_key(n)
    {
        anyhow::bail!("{} names no agent {n}", m.path.display());
    }
    // Every bottle must be running before anything is checked.
    let mut agents = Vec::new();
    for b in &bottles {
        let target = BottleTarget {
            name: b.clone(),
            project: project.clone(),
            file: None,
        };
        agents.push(find_agent(&docker, &target).await?);
    }
    let runtimes = super::runtime_facts(&docker).await?;
    let mut report = Vec::new();
    for (b, agent) in bottles.iter().zip(&agents) {
        let policy = names.as_ref().and_then(|m| {
            let a = m.agents.get(b)?;
            m.policies.get(&a.bottle)
        });
        let checks = verify_one(
            &docker,
            &agent.project,
            b,
            &agent.container,
            policy,
            &runtimes,
        )
        .await?;
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

/// The agents (running or not) of `project`, by their labels.
async fn agents_of(docker: &Docker, project: &str) -> anyhow::Result<Vec<String>> {
    let mut filter = labels::managed_filter();
    filter.push(format!("{}={project}", labels::PROJECT));
    filter.push(format!("{}=agent", labels::NODE));
    let mut found: Vec<String> = docker
        .list_containers(&filter)
        .await?
        .into_iter()
        .filter_map(|c| c.labels.get(labels::BOTTLE).cloned())
        .collect();
    found.sort();
    Ok(found)
}

/// Run every check on one running bottle.
async fn verify_one(
    docker: &Docker,
    project: &str,
    bottle: &str,
    container: &str,
    policy: Option<&PolicyNames>,
    runtimes: &crate::runtime::RuntimeFacts,
) -> anyhow::Result<Vec<Check>> {
    let mut filter = labels::managed_filter();
    filter.push(format!("{}={project}", labels::PROJECT));
    filter.push(format!("{}={bottle}", labels::BOTTLE));
    let containers = docker.list_containers(&filter).await?;
    let node_of = |c: &ContainerInfo| c.labels.get(labels::NODE).cloned().unwrap_or_default();
    let agent_label = containers
        .iter()
        .find(|c| c.name == container)
        .and_then(|c| c.labels.get(labels::RUNTIME).cloned());
    let details = docker.container_details(container).await?;
    let facts = HostFacts {
        runtime: details.runtime,
        runtime_label: agent_label,
        runtimes: runtimes.clone(),
        volumes: details.volumes,
    };
    let mut probe = Probe::new(policy, rand::random());
    // A firewall that is not bottle's own sidecar audits no DNS question or packet.
    probe.foreign_pipelock |= containers.iter().any(|c| {
        node_of(c) == "pipelock"
            && !c
                .image
                .starts_with(&format!("{}:", labels::SIDECAR_IMAGE_REPO))
    });
    let sources: Vec<Source> = containers
        .iter()
        .filter(|c| audit::NODES.contains(&node_of(c).as_str()))
        .map(|c| Source {
            container: c.name.clone(),
            project: project.to_string(),
            bottle: bottle.to_string(),
            node: node_of(c),
        })
        .collect();
    let since = audit::now();
    let observed = verify::observe(docker, container, &probe).await;
    let decisions = audit_lines(docker, &sources, since, &probe).await?;
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
async fn audit_lines(
    docker: &Docker,
    sources: &[Source],
    since: f64,
    probe: &Probe,
) -> anyhow::Result<Vec<Decision>> {
    let deadline = tokio::time::Instant::now() + AUDIT_WAIT;
    loop {
        let mut found = Vec::new();
        for s in sources {
            let mut lines =
                Box::pin(docker.log_lines(&s.container, false, audit::since_secs(since), MAX_LINE));
            while let Some(line) = lines.next().await {
                if let Some(d) = audit::decision(s, &line?) {
                    found.push(d);
                }
            }
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
