//! `bottle queue`: the operator's side of supervise. Lists the proposals agents made
//! (read from each bottle's supervise state volume through the engine's archive API),
//! and approves, denies or revokes them. An approval is a grant volume (see
//! [`crate::supervise`]) that the next reconcile merges into the desired state; every
//! verdict is also written back into the state volume, where `proposal-status` reads
//! it. Nothing here is reachable from a bottle's network.

use std::collections::BTreeMap;

use anyhow::Context as _;

use super::{Output, QueueAction, QueueArgs, connect, digest_key, project_of};
use crate::engine::{ContainerInfo, Engine};
use crate::labels;
use crate::nodes::NodeKind;
use crate::supervise::{
    DECISIONS_DIR, Decision, Grant, PROPOSALS_DIR, Proposal, STATE_MOUNT, Verdict, now, valid_id,
};
use bottle_docker::Docker;

/// A proposal found in a bottle's state volume, with its decision.
struct Found {
    proposal: Proposal,
    decision: Option<Decision>,
    /// The supervise container that holds it.
    container: ContainerInfo,
}

impl Found {
    fn status(&self) -> &'static str {
        self.decision
            .as_ref()
            .map(|d| d.verdict.as_str())
            .unwrap_or("pending")
    }
}

pub async fn run(args: QueueArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let docker = connect().await?;
    let found = read_queue(&docker, &project).await?;
    match args.action {
        QueueAction::List { all, output } => {
            let shown: Vec<&Found> = found
                .iter()
                .filter(|f| all || f.decision.is_none())
                .collect();
            match output {
                Output::Json => println!("{}", list_json(&shown)),
                Output::Text => print!("{}", list_text(&shown, now())),
            }
            Ok(0)
        }
        QueueAction::Show { id } => {
            let f = find(&found, &id, &project)?;
            print!("{}", show_text(f));
            Ok(0)
        }
        QueueAction::Approve { id } => {
            let f = find(&found, &id, &project)?;
            pending(f)?;
            let key = digest_key()?;
            let grant = Grant {
                id: f.proposal.id.clone(),
                bottle: bottle_of(f).to_string(),
                ask: f.proposal.ask.clone(),
                at: now(),
            };
            let obj =
                crate::nodes::supervise::grant_object(&project, &key, &f.container.image, &grant);
            if let crate::nodes::ObjectSpec::Volume(spec) = &obj.spec {
                docker
                    .create_volume(spec)
                    .await
                    .context("recording the grant")?;
            }
            decide(&docker, f, Verdict::Approved, None).await?;
            println!(
                "approved {}: {} {} for bottle {}\n\
                 a running `bottle apply --watch` converges now; otherwise run `bottle apply`",
                grant.id,
                grant.ask.kind(),
                clean(&grant.ask.summary()),
                grant.bottle
            );
            Ok(0)
        }
        QueueAction::Deny { id, reason } => {
            let f = find(&found, &id, &project)?;
            pending(f)?;
            decide(&docker, f, Verdict::Denied, reason).await?;
            println!("denied {}", f.proposal.id);
            Ok(0)
        }
        QueueAction::Revoke { id } => {
            let f = find(&found, &id, &project)?;
            if f.decision.as_ref().map(|d| d.verdict) != Some(Verdict::Approved) {
                anyhow::bail!(
                    "proposal {} is {}: only an approved proposal can be revoked",
                    f.proposal.id,
                    f.status()
                );
            }
            let vol = labels::grant_volume(&project, bottle_of(f), &f.proposal.id);
            docker
                .remove_volume(&vol)
                .await
                .context("removing the grant")?;
            decide(&docker, f, Verdict::Revoked, None).await?;
            println!(
                "revoked {}\na running `bottle apply --watch` converges now; otherwise run `bottle apply`",
                f.proposal.id
            );
            Ok(0)
        }
    }
}

/// The bottle a proposal belongs to: the label of the container that holds it, not
/// what the record says.
fn bottle_of(f: &Found) -> &str {
    f.container
        .labels
        .get(labels::BOTTLE)
        .map(String::as_str)
        .unwrap_or("")
}

fn find<'a>(found: &'a [Found], id: &str, project: &str) -> anyhow::Result<&'a Found> {
    if !valid_id(id) {
        anyhow::bail!("{id:?} is not a proposal id (p and 10 hex digits; see `bottle queue list`)");
    }
    found
        .iter()
        .find(|f| f.proposal.id == id)
        .ok_or_else(|| anyhow::anyhow!("no proposal {id} in project {project}"))
}

fn pending(f: &Found) -> anyhow::Result<()> {
    match &f.decision {
        None => Ok(()),
        Some(d) => anyhow::bail!(
            "proposal {} is already {}",
            f.proposal.id,
            d.verdict.as_str()
        ),
    }
}

async fn decide(
    docker: &Docker,
    f: &Found,
    verdict: Verdict,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let d = Decision {
        id: f.proposal.id.clone(),
        verdict,
        reason,
        at: now(),
    };
    let json = serde_json::to_vec_pretty(&d)?;
    docker
        .write_file(
            &f.container.name,
            &format!("{STATE_MOUNT}/{DECISIONS_DIR}"),
            &format!("{}.json", d.id),
            &json,
        )
        .await
        .with_context(|| format!("recording the decision in {}", f.container.name))
}

/// Every proposal of the project's supervise containers, oldest first.
async fn read_queue(docker: &Docker, project: &str) -> anyhow::Result<Vec<Found>> {
    let mut filter = labels::project_filter(project);
    filter.push(format!("{}={}", labels::NODE, NodeKind::Supervise.as_str()));
    let containers = docker.list_containers(&filter).await?;
    let mut out = Vec::new();
    for c in containers {
        let parse = |files: Vec<(String, Vec<u8>)>| -> BTreeMap<String, Vec<u8>> {
            files
                .into_iter()
                .filter_map(|(n, b)| Some((n.strip_suffix(".json")?.to_string(), b)))
                .filter(|(id, _)| valid_id(id))
                .collect()
        };
        let proposals = parse(
            docker
                .read_dir_files(&c.name, &format!("{STATE_MOUNT}/{PROPOSALS_DIR}"))
                .await?,
        );
        let decisions = parse(
            docker
                .read_dir_files(&c.name, &format!("{STATE_MOUNT}/{DECISIONS_DIR}"))
                .await?,
        );
        for (id, bytes) in proposals {
            let Ok(proposal) = serde_json::from_slice::<Proposal>(&bytes) else {
                eprintln!("warning: {}: proposal {id} is malformed; skipped", c.name);
                continue;
            };
            if proposal.id != id {
                continue;
            }
            let decision = decisions
                .get(&id)
                .and_then(|b| serde_json::from_slice::<Decision>(b).ok());
            out.push(Found {
                proposal,
                decision,
                container: c.clone(),
            });
        }
    }
    out.sort_by(|a, b| {
        (a.proposal.created, &a.proposal.id).cmp(&(b.proposal.created, &b.proposal.id))
    });
    Ok(out)
}

/// Agent-written text made safe for a terminal: control characters (escape sequences
/// included) become `?`, and it is cut at `max` characters.
fn clean_to(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

fn clean(s: &str) -> String {
    clean_to(s, 200)
}

fn age(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn list_text(found: &[&Found], now: u64) -> String {
    if found.is_empty() {
        return "no proposals\n".to_string();
    }
    let mut out = format!(
        "{:<12} {:<14} {:<10} {:<9} {:>5}  {}\n",
        "ID", "BOTTLE", "KIND", "STATUS", "AGE", "WHAT / REASON"
    );
    for f in found {
        out.push_str(&format!(
            "{:<12} {:<14} {:<10} {:<9} {:>5}  {} / {}\n",
            f.proposal.id,
            bottle_of(f),
            f.proposal.ask.kind(),
            f.status(),
            age(now.saturating_sub(f.proposal.created)),
            clean_to(&f.proposal.ask.summary(), 60),
            clean_to(&f.proposal.reason, 80),
        ));
    }
    out
}

fn list_json(found: &[&Found]) -> serde_json::Value {
    serde_json::Value::Array(
        found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.proposal.id,
                    "bottle": bottle_of(f),
                    "kind": f.proposal.ask.kind(),
                    "summary": f.proposal.ask.summary(),
                    "reason": f.proposal.reason,
                    "status": f.status(),
                    "created": f.proposal.created,
                    "decision_reason": f.decision.as_ref().and_then(|d| d.reason.clone()),
                })
            })
            .collect(),
    )
}

fn show_text(f: &Found) -> String {
    let mut out = format!(
        "id:      {}\nbottle:  {}\nkind:    {}\nstatus:  {}\nreason:  {}\n",
        f.proposal.id,
        bottle_of(f),
        f.proposal.ask.kind(),
        f.status(),
        clean_to(&f.proposal.reason, 4000),
    );
    match &f.proposal.ask {
        crate::supervise::Ask::Host { host } => {
            out.push_str(&format!("host:    {}\n", clean(host)))
        }
        crate::supervise::Ask::Dockerfile { dockerfile } => {
            out.push_str("dockerfile:\n");
            for line in dockerfile.lines() {
                out.push_str(&format!("  | {}\n", clean_to(line, 4000)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_cannot_drive_the_terminal() {
        assert_eq!(clean("ok\x1b[2J\nnext"), "ok?[2J?next");
        assert_eq!(clean_to("abcdef", 3), "abc…");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(5), "5s");
        assert_eq!(age(600), "10m");
        assert_eq!(age(10_800), "3h");
        assert_eq!(age(864_000), "10d");
    }
}
