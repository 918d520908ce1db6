//! After a pass: wait until what it changed is in force. A sidecar the pass created,
//! recreated or started must report itself ready; a live config volume the pass rewrote
//! must be loaded by every running sidecar that reads it (nudged with SIGHUP first, so
//! nobody waits for a poll). Both are read from the sidecar's status
//! (`bottle_contract::status`), printed by its probe command, run through the engine's
//! [`Exec`].
//!
//! [`expectations`] decides what to wait for, from the desired state and the pass's
//! reports (pure); [`settle`] waits for it, each container on its own, with one deadline.
//! Time is tokio's, so tests run it under paused time against the fake engine.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::apply::{OpKind, OpReport, Outcome};
use crate::graph::DesiredState;
use crate::nodes::{NodeKind, ObjectSpec};
use bottle_contract::status::{self, FileState, Status};
use bottle_engine::{Exec, Mount};

/// The default bound on [`settle`]: long enough for a git mirror's first clone.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// First pause between two probes of one container; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// Longest pause between two probes of one container.
const MAX_PAUSE: Duration = Duration::from_millis(500);

/// What to wait for in one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The bottle it belongs to.
    pub bottle: String,
    /// Its node.
    pub node: NodeKind,
    /// The container's name.
    pub container: String,
    /// Its probe command.
    pub probe: Vec<String>,
    /// Live config files it must have loaded: its path for the file, the digest.
    pub files: BTreeMap<String, String>,
    /// Send it SIGHUP first: a config it reads was rewritten while it ran.
    pub nudge: bool,
}

/// What to wait for after a pass whose operations ended as `reports`: each sidecar
/// container made or started, and each running sidecar that reads a live volume the
/// pass rewrote. Containers without a probe (the agent, a foreign image) are ready
/// when running, which the engine said when it started them.
pub fn expectations(desired: &DesiredState, reports: &[OpReport]) -> Vec<Expect> {
    let mut started: BTreeSet<&str> = BTreeSet::new();
    let mut rewritten: BTreeSet<&str> = BTreeSet::new();
    for r in reports.iter().filter(|r| r.outcome == Outcome::Done) {
        match (desired.objects.get(&r.op.key).map(|o| &o.spec), r.op.kind) {
            (Some(ObjectSpec::Revision(rev)), OpKind::Make) => {
                rewritten.insert(&rev.content.name);
            }
            (Some(ObjectSpec::Container(spec, _)), OpKind::Make | OpKind::Start) => {
                started.insert(&spec.name);
            }
            _ => {}
        }
    }
    if started.is_empty() && rewritten.is_empty() {
        return Vec::new();
    }
    // Each live volume's files, by volume name.
    let live: BTreeMap<&str, &[bottle_engine::VolumeFile]> = desired
        .objects
        .values()
        .filter_map(|o| match &o.spec {
            ObjectSpec::Revision(rev) => Some((rev.content.name.as_str(), &rev.content.files[..])),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for obj in desired.objects.values() {
        let ObjectSpec::Container(spec, _) = &obj.spec else {
            continue;
        };
        let Some(probe) = &spec.probe else { continue };
        let mounted: Vec<(&str, &str)> = spec
            .mounts
            .iter()
            .filter_map(|m| match m {
                Mount::Volume { name, target, .. } if live.contains_key(name.as_str()) => {
                    Some((name.as_str(), target.as_str()))
                }
                _ => None,
            })
            .collect();
        let made = started.contains(spec.name.as_str());
        if !made && !mounted.iter().any(|(v, _)| rewritten.contains(v)) {
            continue;
        }
        // Digests only for the containers waited for: this runs after every pass.
        let files = mounted
            .iter()
            .flat_map(|(v, target)| {
                live[v].iter().map(move |f| {
                    (
                        status::mounted_path(target, &f.path),
                        status::file_digest(&f.contents),
                    )
                })
            })
            .collect();
        out.push(Expect {
            bottle: obj.bottle.clone(),
            node: obj.node,
            container: spec.name.clone(),
            probe: probe.clone(),
            files,
            // Running when the pass rewrote what it reads: look now, not at the poll.
            nudge: !made,
        });
    }
    out
}

/// How the wait for one container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// The bottle.
    pub bottle: String,
    /// The node.
    pub node: NodeKind,
    /// The container.
    pub container: String,
    /// Ready and with its config in force, or not.
    pub outcome: Readiness,
    /// How long the wait took.
    pub took: Duration,
}

/// Where a container stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// It serves with what was asked in force; the text is what it said.
    Ready(String),
    /// It refused a config file the pass wrote: the path and why. Nothing more will
    /// come of waiting.
    Refused {
        /// The file, as the container sees it.
        path: String,
        /// What the sidecar said.
        why: String,
    },
    /// The deadline passed first: what it last reported.
    NotReady(String),
}

impl Readiness {
    /// It serves with what was asked in force.
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready(_))
    }
}

/// Run a sidecar's probe in `container` and read its status; `Err` says why there is
/// none (the engine's error, or what the probe printed instead). A status whose probe
/// did not exit 0 is not ready, whatever it says.
pub async fn probe_once<E: Exec>(
    engine: &E,
    container: &str,
    probe: &[String],
) -> Result<Status, String> {
    let out = engine
        .exec(container, probe, None, &[])
        .await
        .map_err(|e| bottle_contract::ErrorChain(&e).to_string())?;
    match Status::parse(&out.stdout) {
        Some(mut s) => {
            s.ready &= out.code == 0;
            Ok(s)
        }
        None => {
            let text = out.stdout.trim();
            Err(if text.is_empty() {
                format!("the probe exited {} printing nothing", out.code)
            } else {
                format!("the probe exited {}: {}", out.code, first_line(text))
            })
        }
    }
}

/// Where a status leaves the wait for `expect`: ready, refused, or (not yet) with why not.
pub fn judge(expect: &Expect, s: Status) -> Result<Readiness, String> {
    for (path, digest) in &expect.files {
        // A file the sidecar has never reported is one it does not read.
        if !s.loaded.contains_key(path) && !s.rejected.contains_key(path) {
            continue;
        }
        match s.file(path, digest) {
            FileState::InForce => {}
            FileState::Rejected(why) => {
                return Ok(Readiness::Refused {
                    path: path.clone(),
                    why: why.to_string(),
                });
            }
            FileState::Pending => return Err(format!("{}; {path} not loaded yet", s.detail)),
        }
    }
    if s.ready {
        Ok(Readiness::Ready(s.detail))
    } else {
        Err(s.detail)
    }
}

fn first_line(s: &str) -> &str {
    let line = s.lines().next().unwrap_or("");
    &line[..line.len().min(300)]
}

/// Wait for each of `expects`, all at once, until `timeout` has passed; `on_settled`
/// sees each as it ends. Never fails: a container that does not get ready is reported
/// [`Readiness::NotReady`] with what it last said.
pub async fn settle<E: Exec>(
    engine: &E,
    expects: Vec<Expect>,
    timeout: Duration,
    on_settled: &mut dyn FnMut(&Settled),
) -> Vec<Settled> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut waits: FuturesUnordered<_> = expects
        .into_iter()
        .map(|e| wait_one(engine, e, deadline))
        .collect();
    let mut out = Vec::new();
    while let Some(s) = waits.next().await {
        on_settled(&s);
        out.push(s);
    }
    out
}

async fn wait_one<E: Exec>(engine: &E, e: Expect, deadline: tokio::time::Instant) -> Settled {
    let start = tokio::time::Instant::now();
    if e.nudge
        && let Err(err) = engine.signal(&e.container, "HUP").await
    {
        // It still polls its file; the wait below tells whether the change arrived.
        tracing::debug!(container = %e.container, error = %err, "nudge failed");
    }
    let mut pause = FIRST_PAUSE;
    let outcome = loop {
        let last = match probe_once(engine, &e.container, &e.probe)
            .await
            .and_then(|s| judge(&e, s))
        {
            Ok(r) => break r,
            Err(why) => why,
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break Readiness::NotReady(last);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(MAX_PAUSE);
    };
    Settled {
        bottle: e.bottle,
        node: e.node,
        container: e.container,
        outcome,
        took: start.elapsed(),
    }
}

#[cfg(test)]
#[path = "ready_tests.rs"]
mod tests;
