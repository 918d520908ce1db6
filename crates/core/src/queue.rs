//! The supervise queue's state machine, the operator's side: read the proposals agents
//! made (each bottle's supervise state volume, through [`VolumeFiles`]), and decide
//! them. Only a pending proposal can be approved or denied; only an approved one can be
//! revoked. An approval is a grant volume (see `bottle_contract::supervise`) that the
//! next reconcile merges into the desired state; every verdict is also written back
//! into the state volume, where the agent's `proposal-status` reads it.
//!
//! Time is data here: callers pass `now` (unix seconds).

use std::collections::BTreeMap;

use bottle_contract::labels;
use bottle_contract::node::NodeKind;
use bottle_contract::supervise::{
    DECISIONS_DIR, Decision, Grant, MAX_GRANT_SECS, PROPOSALS_DIR, Proposal, STATE_MOUNT, Verdict,
    time_left, valid_id,
};
use bottle_engine::{ContainerInfo, Engine, EngineError, VolumeFiles};

use crate::hash::DigestKey;
use crate::nodes::ObjectSpec;

/// A proposal found in a bottle's state volume, with its decision.
#[derive(Clone, Debug)]
pub struct Found {
    /// What the agent asked for.
    pub proposal: Proposal,
    /// The operator's decision, when there is one.
    pub decision: Option<Decision>,
    /// The supervise container that holds it.
    pub container: ContainerInfo,
}

impl Found {
    /// `pending`, `approved`, `denied` or `revoked`.
    pub fn status(&self) -> &'static str {
        self.decision
            .as_ref()
            .map(|d| d.verdict.as_str())
            .unwrap_or("pending")
    }

    /// As [`Found::status`], but `expired` for a time-boxed approval past its end at
    /// `now` (unix seconds).
    pub fn status_at(&self, now: u64) -> &'static str {
        match &self.decision {
            Some(d) if d.verdict == Verdict::Approved && d.until.is_some_and(|u| u <= now) => {
                "expired"
            }
            _ => self.status(),
        }
    }

    /// For a time-boxed approval, the time left at `now` (`1h59m`, `expired`).
    pub fn left(&self, now: u64) -> Option<String> {
        let d = self.decision.as_ref()?;
        let u = d.until.filter(|_| d.verdict == Verdict::Approved)?;
        Some(time_left(u, now))
    }

    /// The bottle it belongs to: the label of the container that holds it, not what
    /// the record says.
    pub fn bottle(&self) -> &str {
        self.container
            .labels
            .get(labels::BOTTLE)
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// Why a queue operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The id is not shaped like a proposal id.
    #[error("{0:?} is not a proposal id (p and 10 hex digits; see `bottle queue list`)")]
    NotAnId(String),
    /// No such proposal in the project.
    #[error("no proposal {id} in project {project}")]
    Missing {
        /// The id asked for.
        id: String,
        /// The project looked in.
        project: String,
    },
    /// Approve or deny of a proposal already decided.
    #[error("proposal {id} is already {status}")]
    Decided {
        /// The proposal.
        id: String,
        /// Its verdict.
        status: &'static str,
    },
    /// Revoke of a proposal that is not approved.
    #[error("proposal {id} is {status}: only an approved proposal can be revoked")]
    NotApproved {
        /// The proposal.
        id: String,
        /// Its status.
        status: &'static str,
    },
    /// A time box of zero or longer than a grant may last.
    #[error("a grant lasts from 1 s to {MAX_GRANT_SECS} s, not {0} s")]
    BadDuration(u64),
    /// The engine refused an operation (`what` says which).
    #[error("{what}")]
    Engine {
        /// What was being done.
        what: String,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
}

fn engine(what: impl Into<String>) -> impl FnOnce(EngineError) -> QueueError {
    let what = what.into();
    move |source| QueueError::Engine { what, source }
}

/// Every proposal of the project's supervise containers, oldest first. A malformed
/// proposal file is skipped with a warning.
pub async fn read<E: Engine + VolumeFiles>(
    engine_: &E,
    project: &str,
) -> Result<Vec<Found>, QueueError> {
    let mut filter = labels::project_filter(project);
    filter.push(format!("{}={}", labels::NODE, NodeKind::Supervise.as_str()));
    let containers = engine_
        .list_containers(&filter)
        .await
        .map_err(engine("listing the supervise containers"))?;
    read_in(engine_, containers).await
}

/// Is `c` a supervise container of `project` (one [`read_in`] reads)?
pub fn holds_queue(c: &ContainerInfo, project: &str) -> bool {
    labels::is_ours(&c.labels, project)
        && c.labels.get(labels::NODE).map(String::as_str) == Some(NodeKind::Supervise.as_str())
}

/// Every proposal held by `containers` (a project's supervise containers, already
/// listed: see [`holds_queue`]), oldest first, as [`read`].
pub async fn read_in<E: VolumeFiles>(
    engine_: &E,
    containers: impl IntoIterator<Item = ContainerInfo>,
) -> Result<Vec<Found>, QueueError> {
    let mut out = Vec::new();
    for c in containers {
        let parse = |files: Vec<(String, Vec<u8>)>| -> BTreeMap<String, Vec<u8>> {
            files
                .into_iter()
                .filter_map(|(n, b)| Some((n.strip_suffix(".json")?.to_string(), b)))
                .filter(|(id, _)| valid_id(id))
                .collect()
        };
        let reading = || format!("reading the queue in {}", c.name);
        let proposals = parse(
            engine_
                .read_dir_files(&c.name, &format!("{STATE_MOUNT}/{PROPOSALS_DIR}"))
                .await
                .map_err(engine(reading()))?,
        );
        let decisions = parse(
            engine_
                .read_dir_files(&c.name, &format!("{STATE_MOUNT}/{DECISIONS_DIR}"))
                .await
                .map_err(engine(reading()))?,
        );
        for (id, bytes) in proposals {
            let Ok(proposal) = serde_json::from_slice::<Proposal>(&bytes) else {
                tracing::warn!(container = %c.name, id, "malformed proposal skipped");
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

/// The proposal `id` among `found`.
pub fn find<'a>(found: &'a [Found], id: &str, project: &str) -> Result<&'a Found, QueueError> {
    let id = id.trim();
    if !valid_id(id) {
        return Err(QueueError::NotAnId(id.to_string()));
    }
    found
        .iter()
        .find(|f| f.proposal.id == id)
        .ok_or_else(|| QueueError::Missing {
            id: id.to_string(),
            project: project.to_string(),
        })
}

fn pending(f: &Found) -> Result<(), QueueError> {
    match &f.decision {
        None => Ok(()),
        Some(d) => Err(QueueError::Decided {
            id: f.proposal.id.clone(),
            status: d.verdict.as_str(),
        }),
    }
}

/// Approve a pending proposal: make its grant volume, then record the verdict. With
/// `for_secs` the grant is time-boxed: it ends at `now + for_secs` (recorded in the
/// grant's labels and in the decision).
pub async fn approve<E: Engine + VolumeFiles>(
    engine_: &E,
    project: &str,
    key: &DigestKey,
    f: &Found,
    now: u64,
    for_secs: Option<u64>,
) -> Result<Grant, QueueError> {
    pending(f)?;
    if let Some(s) = for_secs
        && (s == 0 || s > MAX_GRANT_SECS)
    {
        return Err(QueueError::BadDuration(s));
    }
    let grant = Grant {
        id: f.proposal.id.clone(),
        bottle: f.bottle().to_string(),
        ask: f.proposal.ask.clone(),
        at: now,
        until: for_secs.map(|s| now + s),
    };
    let obj = crate::nodes::supervise::grant_object(project, key, &f.container.image, &grant);
    if let ObjectSpec::Volume(spec) = &obj.spec {
        engine_
            .create_volume(spec)
            .await
            .map_err(engine("recording the grant"))?;
    }
    decide(engine_, f, Verdict::Approved, None, now, grant.until).await?;
    Ok(grant)
}

/// Deny a pending proposal, with the operator's reason.
pub async fn deny<E: Engine + VolumeFiles>(
    engine_: &E,
    f: &Found,
    reason: Option<String>,
    now: u64,
) -> Result<(), QueueError> {
    pending(f)?;
    // An empty reason is none, wherever it was typed (a form field, `--reason ''`).
    let reason = reason
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty());
    decide(engine_, f, Verdict::Denied, reason, now, None).await
}

/// Revoke an approved proposal: remove its grant volume, then record the verdict.
pub async fn revoke<E: Engine + VolumeFiles>(
    engine_: &E,
    project: &str,
    f: &Found,
    now: u64,
) -> Result<(), QueueError> {
    if f.decision.as_ref().map(|d| d.verdict) != Some(Verdict::Approved) {
        return Err(QueueError::NotApproved {
            id: f.proposal.id.clone(),
            status: f.status(),
        });
    }
    let vol = labels::grant_volume(project, f.bottle(), &f.proposal.id);
    engine_
        .remove_volume(&vol)
        .await
        .map_err(engine("removing the grant"))?;
    decide(engine_, f, Verdict::Revoked, None, now, None).await
}

async fn decide<E: VolumeFiles>(
    engine_: &E,
    f: &Found,
    verdict: Verdict,
    reason: Option<String>,
    now: u64,
    until: Option<u64>,
) -> Result<(), QueueError> {
    let d = Decision {
        id: f.proposal.id.clone(),
        verdict,
        reason,
        at: now,
        until,
    };
    let json = serde_json::to_vec_pretty(&d).expect("a decision serializes");
    engine_
        .write_file(
            &f.container.name,
            &format!("{STATE_MOUNT}/{DECISIONS_DIR}"),
            &format!("{}.json", d.id),
            &json,
        )
        .await
        .map_err(engine(format!(
            "recording the decision in {}",
            f.container.name
        )))
}

#[cfg(test)]
mod tests {
    use bottle_contract::supervise::{Ask, Grants};
    use bottle_engine::Engine as _;
    use bottle_engine::fake::FakeEngine;

    use super::*;

    const SUPERVISE: &str = "bottle-p-dev-supervise";

    /// A fake engine holding bottle `dev`'s supervise container with two proposals.
    fn engine() -> FakeEngine {
        let e = FakeEngine::default();
        let l = labels::object_labels("p", "dev", NodeKind::Supervise.as_str(), "h", "");
        e.add_container(SUPERVISE, "bottle-sidecar:abc", l);
        for (id, created, ask) in [
            (
                "p0000000001",
                10,
                Ask::Host {
                    host: "pypi.org".into(),
                },
            ),
            (
                "p0000000002",
                20,
                Ask::Dockerfile {
                    dockerfile: "FROM scratch\n".into(),
                },
            ),
        ] {
            let p = Proposal {
                id: id.into(),
                bottle: "dev".into(),
                ask,
                reason: "need it".into(),
                created,
            };
            futures_util::FutureExt::now_or_never(e.write_file(
                SUPERVISE,
                &format!("{STATE_MOUNT}/{PROPOSALS_DIR}"),
                &format!("{id}.json"),
                &serde_json::to_vec(&p).unwrap(),
            ))
            .unwrap()
            .unwrap();
        }
        // Junk the sidecar would never write: skipped, not fatal.
        futures_util::FutureExt::now_or_never(e.write_file(
            SUPERVISE,
            &format!("{STATE_MOUNT}/{PROPOSALS_DIR}"),
            "p0000000003.json",
            b"{not json",
        ))
        .unwrap()
        .unwrap();
        e
    }

    fn verdict(e: &FakeEngine, id: &str) -> Option<Decision> {
        e.file(
            SUPERVISE,
            &format!("{STATE_MOUNT}/{DECISIONS_DIR}"),
            &format!("{id}.json"),
        )
        .map(|b| serde_json::from_slice(&b).unwrap())
    }

    async fn grants(e: &FakeEngine) -> Grants {
        let vols = e.list_volumes(&labels::project_filter("p")).await.unwrap();
        Grants::from_volumes(vols.iter().map(|v| &v.labels), 0)
    }

    #[tokio::test]
    async fn approve_makes_a_grant_and_records_the_verdict_once() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        assert_eq!(
            found
                .iter()
                .map(|f| f.proposal.id.as_str())
                .collect::<Vec<_>>(),
            ["p0000000001", "p0000000002"],
            "oldest first, malformed skipped"
        );
        assert_eq!(found[0].status(), "pending");
        // From containers already listed (the console lists every project's at once).
        let all = e.list_containers(&labels::managed_filter()).await.unwrap();
        assert!(!all.iter().any(|c| holds_queue(c, "other")));
        let held = all.into_iter().filter(|c| holds_queue(c, "p"));
        let again = read_in(&e, held).await.unwrap();
        let proposals = |f: &[Found]| f.iter().map(|f| f.proposal.clone()).collect::<Vec<_>>();
        assert_eq!(proposals(&again), proposals(&found));
        let f = find(&found, "p0000000001", "p").unwrap();
        let g = approve(&e, "p", &DigestKey::fixed(1), f, 100, None)
            .await
            .unwrap();
        assert_eq!((g.bottle.as_str(), g.at), ("dev", 100));
        assert_eq!(
            verdict(&e, "p0000000001").unwrap().verdict,
            Verdict::Approved
        );
        assert_eq!(grants(&e).await.of("dev").len(), 1);

        // Decided now: a second approve or a deny is refused and changes nothing.
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, "p0000000001", "p").unwrap();
        assert_eq!(f.status(), "approved");
        let before = e.mutations();
        let again = approve(&e, "p", &DigestKey::fixed(1), f, 200, None).await;
        assert!(matches!(
            again,
            Err(QueueError::Decided {
                status: "approved",
                ..
            })
        ));
        assert!(matches!(
            deny(&e, f, None, 200).await,
            Err(QueueError::Decided { .. })
        ));
        assert_eq!(e.mutations(), before);
    }

    #[tokio::test]
    async fn a_time_boxed_approval_records_its_end_in_grant_and_decision() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, "p0000000001", "p").unwrap();
        let bad = approve(&e, "p", &DigestKey::fixed(1), f, 100, Some(0)).await;
        assert!(matches!(bad, Err(QueueError::BadDuration(0))));
        let g = approve(&e, "p", &DigestKey::fixed(1), f, 100, Some(7200))
            .await
            .unwrap();
        assert_eq!(g.until, Some(7300));
        assert_eq!(verdict(&e, "p0000000001").unwrap().until, Some(7300));
        let vols = e.list_volumes(&labels::project_filter("p")).await.unwrap();
        let at = |now| Grants::from_volumes(vols.iter().map(|v| &v.labels), now);
        assert_eq!(at(7299).of("dev").len(), 1);
        assert!(at(7300).of("dev").is_empty());
        assert_eq!(at(7300).all_of("dev").count(), 1, "expired, not gone");
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, "p0000000001", "p").unwrap();
        assert_eq!(f.status_at(7299), "approved");
        assert_eq!(f.left(7299).as_deref(), Some("1s"));
        assert_eq!(f.status_at(7300), "expired");
        assert_eq!(f.left(7300).as_deref(), Some("expired"));
        // An expired grant can still be revoked (its volume goes).
        revoke(&e, "p", f, 7400).await.unwrap();
        assert!(grants(&e).await.is_empty());
    }

    #[tokio::test]
    async fn revoke_takes_back_only_an_approval() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        let host = find(&found, "p0000000001", "p").unwrap();
        let err = revoke(&e, "p", host, 1).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueueError::NotApproved {
                    status: "pending",
                    ..
                }
            ),
            "{err}"
        );
        approve(&e, "p", &DigestKey::fixed(1), host, 2, None)
            .await
            .unwrap();

        let found = read(&e, "p").await.unwrap();
        let host = find(&found, "p0000000001", "p").unwrap();
        revoke(&e, "p", host, 3).await.unwrap();
        assert_eq!(
            verdict(&e, "p0000000001").unwrap().verdict,
            Verdict::Revoked
        );
        assert!(grants(&e).await.is_empty());
        let found = read(&e, "p").await.unwrap();
        let host = find(&found, "p0000000001", "p").unwrap();
        assert!(matches!(
            revoke(&e, "p", host, 4).await,
            Err(QueueError::NotApproved {
                status: "revoked",
                ..
            })
        ));
    }

    #[tokio::test]
    async fn deny_records_the_reason_and_makes_no_grant() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, "p0000000002", "p").unwrap();
        deny(&e, f, Some("not for this bottle".into()), 5)
            .await
            .unwrap();
        let d = verdict(&e, "p0000000002").unwrap();
        assert_eq!(
            (d.verdict, d.reason.as_deref()),
            (Verdict::Denied, Some("not for this bottle"))
        );
        assert!(grants(&e).await.is_empty());
    }

    #[tokio::test]
    async fn a_blank_reason_is_none_and_an_id_may_be_padded() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, " p0000000002\n", "p").unwrap();
        deny(&e, f, Some("  ".into()), 5).await.unwrap();
        let d = verdict(&e, "p0000000002").unwrap();
        assert_eq!((d.verdict, d.reason), (Verdict::Denied, None));
    }

    #[tokio::test]
    async fn ids_are_checked_before_anything_is_looked_up() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        assert!(matches!(
            find(&found, "../../etc", "p"),
            Err(QueueError::NotAnId(_))
        ));
        assert!(matches!(
            find(&found, "p00000000ff", "p"),
            Err(QueueError::Missing { .. })
        ));
    }

    #[tokio::test]
    async fn a_failed_grant_records_no_verdict() {
        let e = engine();
        let found = read(&e, "p").await.unwrap();
        let f = find(&found, "p0000000001", "p").unwrap();
        e.fail_on(&labels::grant_volume("p", "dev", "p0000000001"));
        let err = approve(&e, "p", &DigestKey::fixed(1), f, 1, None)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "recording the grant");
        assert!(verdict(&e, "p0000000001").is_none());
    }
}
