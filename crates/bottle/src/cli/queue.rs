//! `bottle queue`: the operator's side of supervise, printed. The state machine (read
//! the proposals, approve, deny, revoke) is `bottle_core::queue`; this file renders it,
//! with agent-written text made safe for a terminal. Nothing here is reachable from a
//! bottle's network. On either backend: through Docker's archive API, or on Kubernetes
//! through the hidden `bottle sidecar read-files`/`write-file` exec'd in supervise's
//! container (`bottle_contract::volume_files`; the project's namespace must be named).

use super::{
    Backend, Output, QueueAction, QueueArgs, connect, connect_kube_sessions, digest_key, project_of,
};
use bottle_contract::supervise::now;
use bottle_core::queue::{self, Found};
use bottle_engine::{Engine, VolumeFiles};

pub async fn run(args: QueueArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    match args.backend.backend {
        Backend::Docker => act(&connect().await?, &project, args.action).await,
        Backend::Kubernetes => {
            let kube = connect_kube_sessions(Some(&project), &args.backend).await?;
            act(&kube, &project, args.action).await
        }
    }
}

async fn act<E: Engine + VolumeFiles>(
    engine: &E,
    project: &str,
    action: QueueAction,
) -> anyhow::Result<i32> {
    let found = queue::read(engine, project).await?;
    match action {
        QueueAction::List { all, output } => {
            let shown: Vec<&Found> = found
                .iter()
                .filter(|f| all || f.decision.is_none())
                .collect();
            match output {
                Output::Json => println!("{}", list_json(&shown, now())),
                Output::Text => print!("{}", list_text(&shown, now())),
            }
            Ok(0)
        }
        QueueAction::Show { id } => {
            let f = queue::find(&found, &id, project)?;
            print!("{}", show_text(f));
            Ok(0)
        }
        QueueAction::Approve { id, for_ } => {
            let f = queue::find(&found, &id, project)?;
            let key = digest_key()?;
            let now = now();
            let grant = queue::approve(engine, project, &key, f, now, for_).await?;
            let lasting = match grant.until {
                Some(_) => format!(", for {}", grant.left(now)),
                None => String::new(),
            };
            println!(
                "approved {}: {} {} for bottle {}{lasting}\n\
                 a running `bottle apply --watch` converges now; otherwise run `bottle apply`",
                grant.id,
                grant.ask.kind(),
                clean(&grant.ask.summary()),
                grant.bottle
            );
            Ok(0)
        }
        QueueAction::Deny { id, reason } => {
            let f = queue::find(&found, &id, project)?;
            queue::deny(engine, f, reason, now()).await?;
            println!("denied {}", f.proposal.id);
            Ok(0)
        }
        QueueAction::Revoke { id } => {
            let f = queue::find(&found, &id, project)?;
            queue::revoke(engine, project, f, now()).await?;
            println!(
                "revoked {}\na running `bottle apply --watch` converges now; otherwise run `bottle apply`",
                f.proposal.id
            );
            Ok(0)
        }
    }
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

pub(crate) fn age(secs: u64) -> String {
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
        "{:<12} {:<14} {:<10} {:<9} {:>5} {:>7}  {}\n",
        "ID", "BOTTLE", "KIND", "STATUS", "AGE", "LEFT", "WHAT / REASON"
    );
    for f in found {
        out.push_str(&format!(
            "{:<12} {:<14} {:<10} {:<9} {:>5} {:>7}  {} / {}\n",
            f.proposal.id,
            f.bottle(),
            f.proposal.ask.kind(),
            f.status_at(now),
            age(now.saturating_sub(f.proposal.created)),
            f.left(now)
                .filter(|l| l != "expired")
                .unwrap_or_else(|| "-".into()),
            clean_to(&f.proposal.ask.summary(), 60),
            clean_to(&f.proposal.reason, 80),
        ));
    }
    out
}

fn list_json(found: &[&Found], now: u64) -> serde_json::Value {
    serde_json::Value::Array(
        found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.proposal.id,
                    "bottle": f.bottle(),
                    "kind": f.proposal.ask.kind(),
                    "summary": f.proposal.ask.summary(),
                    "reason": f.proposal.reason,
                    "status": f.status_at(now),
                    "created": f.proposal.created,
                    "until": f.decision.as_ref().and_then(|d| d.until),
                    "left": f.left(now),
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
        f.bottle(),
        f.proposal.ask.kind(),
        f.status_at(now()),
        clean_to(&f.proposal.reason, 4000),
    );
    if let Some(left) = f.left(now()) {
        out.push_str(&format!("left:    {left}\n"));
    }
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
