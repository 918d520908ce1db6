//! The gate's `pre-receive` hook (`bottle sidecar git-gate-hook`): runs inside
//! `git receive-pack`, with the pushed objects still in quarantine.
//!
//! For each ref update: a deletion or a non-fast-forward is refused unless the remote
//! allows force; then everything the upstream does not have yet (not reachable from
//! the mirror's refs: commits, annotated tags, blobs) is scanned ([`super::scan`]); any
//! finding refuses the whole push, naming commit (or tag), file, line and rule. A clean push is forwarded to the upstream over SSH, synchronously:
//! the agent sees the upstream's answer, and the mirror's refs move only when the
//! upstream took the push. What this prints reaches the agent as `remote:` lines, so it
//! never prints a secret and never logs.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{config_dir, load_config, ssh_command};
use bottle_contract::audit::PushEvent;
use bottle_contract::git_gate::GateRemote;
use bottle_secretscan::RuleSet;

/// Findings listed at most; the rest are counted.
const MAX_LISTED: usize = 50;

struct Update {
    old: String,
    new: String,
    name: String,
}

impl Update {
    fn is_delete(&self) -> bool {
        is_zero(&self.new)
    }
    fn is_create(&self) -> bool {
        is_zero(&self.old)
    }
}

fn is_zero(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

/// Run the hook; returns the exit status (0 accepts the push). Each verdict is also
/// left for the gate's audit stream ([`super::audit_push`]).
pub fn run() -> i32 {
    let mut audit = PushEvent {
        decision: "deny".into(),
        reason: "config".into(),
        remote: String::new(),
        host: String::new(),
        refs: 0,
        detail: String::new(),
    };
    let code = match check_and_forward(&mut audit) {
        Ok(()) => {
            audit.decision = "allow".into();
            audit.reason = "forwarded".into();
            0
        }
        Err(msg) => {
            eprintln!("git-gate: push rejected: {msg}");
            1
        }
    };
    super::audit_push(&audit);
    code
}

/// Check the push and forward it; `audit` is filled as it goes (remote, refs, and the
/// reason of a refusal: `policy`, `secret`, `scan-failed` or `upstream`).
fn check_and_forward(audit: &mut PushEvent) -> Result<(), String> {
    let git_dir = PathBuf::from(".");
    let cwd = std::env::current_dir().map_err(|e| format!("no working directory: {e}"))?;
    let name = cwd
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".git"))
        .ok_or("the gate's repository has an unexpected name")?
        .to_string();
    let dir = config_dir();
    let config = load_config(&dir).map_err(|e| format!("gate configuration: {e}"))?;
    let remote = config
        .remotes
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| format!("no remote named {name} is configured"))?;
    audit.remote = remote.name.clone();
    audit.host = PushEvent::host_of(&remote.upstream);
    let mut updates = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading the ref updates: {e}"))?;
        let mut it = line.split_whitespace();
        if let (Some(old), Some(new), Some(r)) = (it.next(), it.next(), it.next()) {
            updates.push(Update {
                old: old.into(),
                new: new.into(),
                name: r.into(),
            });
        }
    }
    audit.refs = updates.len();
    audit.reason = "policy".into();
    let forced = check_policy(&git_dir, remote, &updates)?;
    audit.reason = "scan-failed".into();
    scan(&git_dir, &updates).map_err(|(msg, rules)| {
        if !rules.is_empty() {
            audit.reason = "secret".into();
            audit.detail = format!("rules {}", rules.join(","));
        }
        msg
    })?;
    audit.reason = "upstream".into();
    forward(&git_dir, &dir, remote, &updates, &forced)
}

/// Refuse deletions and non-fast-forwards unless `allow_force`; returns which updates
/// need a forced push upstream.
fn check_policy(
    git_dir: &Path,
    remote: &GateRemote,
    updates: &[Update],
) -> Result<Vec<bool>, String> {
    let mut forced = Vec::new();
    for u in updates {
        if u.is_delete() {
            if !remote.allow_force {
                return Err(format!(
                    "deleting {} is not allowed (remote {} has allow_force: false)",
                    u.name, remote.name
                ));
            }
            forced.push(false);
            continue;
        }
        if u.is_create() {
            forced.push(false);
            continue;
        }
        let status = Command::new("git")
            .arg("--git-dir")
            .arg(git_dir)
            .args(["merge-base", "--is-ancestor", &u.old, &u.new])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("running git merge-base: {e}"))?;
        let ff = match status.code() {
            Some(0) => true,
            Some(1) => false,
            _ => return Err(format!("cannot tell whether {} fast-forwards", u.name)),
        };
        if !ff && !remote.allow_force {
            return Err(format!(
                "{} is not a fast-forward (remote {} has allow_force: false)",
                u.name, remote.name
            ));
        }
        forced.push(!ff);
    }
    Ok(forced)
}

/// Scan every commit and annotated tag the push brings that the upstream does not have.
/// A refusal carries the message and the ids of the rules that fired (none when the
/// scan itself failed).
fn scan(git_dir: &Path, updates: &[Update]) -> Result<(), (String, Vec<String>)> {
    let rules = RuleSet::builtin();
    let tips: Vec<String> = updates
        .iter()
        .filter(|u| !u.is_delete())
        .map(|u| u.new.clone())
        .collect();
    // receive-pack keeps what the push sent in a quarantine directory until the hook
    // accepts it: read there first, in pack order.
    let quarantine = std::env::var_os("GIT_QUARANTINE_PATH").map(PathBuf::from);
    let report = super::scan::scan_push(&rules, git_dir, &tips, &["--all"], quarantine.as_deref())
        .map_err(|e| (format!("the secret scan failed: {e}"), Vec::new()))?;
    if report.findings.is_empty() {
        return Ok(());
    }
    let mut msg = format!(
        "{} secret(s) found in the pushed commits or tags; remove them from history (not \
         just the latest commit) and push again:",
        report.findings.len()
    );
    for f in report.findings.iter().take(MAX_LISTED) {
        msg.push_str(&format!("\n  {f}"));
    }
    if report.findings.len() > MAX_LISTED {
        msg.push_str(&format!(
            "\n  ... and {} more",
            report.findings.len() - MAX_LISTED
        ));
    }
    let mut rules: Vec<String> = report.findings.iter().map(|f| f.rule_id.clone()).collect();
    rules.sort();
    rules.dedup();
    rules.truncate(16);
    Err((msg, rules))
}

/// Push the accepted updates to the upstream; its output reaches the agent.
fn forward(
    git_dir: &Path,
    dir: &Path,
    remote: &GateRemote,
    updates: &[Update],
    forced: &[bool],
) -> Result<(), String> {
    let refspecs: Vec<String> = updates
        .iter()
        .zip(forced)
        .map(|(u, &f)| {
            if u.is_delete() {
                format!(":{}", u.name)
            } else if f {
                format!("+{}:{}", u.new, u.name)
            } else {
                format!("{}:{}", u.new, u.name)
            }
        })
        .collect();
    if refspecs.is_empty() {
        return Ok(());
    }
    eprintln!(
        "git-gate: no secrets found; forwarding to {}",
        remote.upstream
    );
    let status = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["push", "--no-verify", &remote.upstream])
        .args(&refspecs)
        .env("GIT_SSH_COMMAND", ssh_command(dir, remote))
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GIT_TERMINAL_PROMPT", "0")
        // The quarantined objects stay readable (GIT_OBJECT_DIRECTORY); only the marker
        // that forbids ref updates goes, so a local upstream's receive-pack works too.
        .env_remove("GIT_QUARANTINE_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| format!("running git push: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "the upstream {} did not take the push (see above)",
            remote.upstream
        ))
    }
}
