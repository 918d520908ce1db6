//! The supervise sidecar's proposal store: JSON files in the state volume
//! ([`bottle_contract::supervise::STATE_MOUNT`]). The sidecar writes proposals; it only reads the
//! decisions `bottle queue` writes. Files are written to a temporary name and renamed,
//! so a reader never sees half a record and a restart loses nothing.

use std::path::{Path, PathBuf};

use bottle_contract::supervise::{
    self, Ask, DECISIONS_DIR, Decision, MAX_PENDING, PROPOSALS_DIR, Proposal, ProposalError,
};

/// Records larger than this are not read (a record is at most a bounded Dockerfile).
const MAX_RECORD: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Proposal(#[from] ProposalError),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A proposal with the operator's decision, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub proposal: Proposal,
    pub decision: Option<Decision>,
}

/// The store rooted at the state volume.
pub struct Store {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Open (creating the proposals directory) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let root = root.into();
        let dir = root.join(PROPOSALS_DIR);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(Store { root })
    }

    /// Check, then store a new pending proposal of `bottle`.
    pub fn propose(&self, bottle: &str, ask: Ask, reason: &str) -> Result<Proposal, StoreError> {
        let (ask, reason) = supervise::check(ask, reason)?;
        let pending = self.list()?.iter().filter(|e| e.decision.is_none()).count();
        if pending >= MAX_PENDING {
            return Err(ProposalError::TooMany.into());
        }
        let p = Proposal {
            id: new_id(),
            bottle: bottle.to_string(),
            ask,
            reason,
            created: bottle_contract::supervise::now(),
        };
        let dir = self.root.join(PROPOSALS_DIR);
        let tmp = dir.join(format!(".{}.tmp", p.id));
        let dst = dir.join(format!("{}.json", p.id));
        let json = serde_json::to_vec_pretty(&p).map_err(|e| StoreError::Io {
            path: dst.clone(),
            source: e.into(),
        })?;
        std::fs::write(&tmp, json).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        Ok(p)
    }

    /// One proposal with its decision; `None` for an unknown or malformed id.
    pub fn get(&self, id: &str) -> Result<Option<Entry>, StoreError> {
        if !supervise::valid_id(id) {
            return Ok(None);
        }
        let Some(proposal) = self.read::<Proposal>(PROPOSALS_DIR, id)? else {
            return Ok(None);
        };
        let decision = self.read::<Decision>(DECISIONS_DIR, id)?;
        Ok(Some(Entry { proposal, decision }))
    }

    /// Every proposal, oldest first. Unreadable records are skipped with a warning.
    pub fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let dir = self.root.join(PROPOSALS_DIR);
        let mut out = Vec::new();
        for ent in std::fs::read_dir(&dir).map_err(io(&dir))? {
            let ent = ent.map_err(io(&dir))?;
            let name = ent.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if let Some(e) = self.get(id)? {
                out.push(e);
            }
        }
        out.sort_by(|a, b| {
            (a.proposal.created, &a.proposal.id).cmp(&(b.proposal.created, &b.proposal.id))
        });
        Ok(out)
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        dir: &str,
        id: &str,
    ) -> Result<Option<T>, StoreError> {
        let path = self.root.join(dir).join(format!("{id}.json"));
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        if !meta.is_file() || meta.len() > MAX_RECORD {
            tracing::warn!(path = %path.display(), "skipping a record that is not a small file");
            return Ok(None);
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(Some(v)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping a malformed record");
                Ok(None)
            }
        }
    }
}

/// A new proposal id: `p` and 10 hex digits.
fn new_id() -> String {
    format!("p{:010x}", rand::random::<u64>() & 0xff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_contract::supervise::Verdict;

    #[test]
    fn proposals_persist_and_pick_up_decisions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        let p = s
            .propose(
                "dev",
                Ask::Host {
                    host: "Docs.Example.".into(),
                },
                "read docs",
            )
            .unwrap();
        assert_eq!(
            p.ask,
            Ask::Host {
                host: "docs.example".into()
            }
        );
        // A new store on the same volume (a restarted sidecar) still has it.
        let s = Store::open(dir.path()).unwrap();
        let e = s.get(&p.id).unwrap().unwrap();
        assert_eq!(e.proposal, p);
        assert!(e.decision.is_none());
        let d = Decision {
            id: p.id.clone(),
            verdict: Verdict::Denied,
            reason: Some("no".into()),
            at: 1,
            until: None,
        };
        std::fs::create_dir_all(dir.path().join(DECISIONS_DIR)).unwrap();
        std::fs::write(
            dir.path()
                .join(DECISIONS_DIR)
                .join(format!("{}.json", p.id)),
            serde_json::to_vec(&d).unwrap(),
        )
        .unwrap();
        assert_eq!(s.get(&p.id).unwrap().unwrap().decision, Some(d));
        assert_eq!(s.list().unwrap().len(), 1);
        assert!(s.get("../../etc/passwd").unwrap().is_none());
    }

    #[test]
    fn pending_proposals_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for _ in 0..MAX_PENDING {
            s.propose(
                "dev",
                Ask::Host {
                    host: "a.example".into(),
                },
                "r",
            )
            .unwrap();
        }
        let err = s
            .propose(
                "dev",
                Ask::Host {
                    host: "b.example".into(),
                },
                "r",
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::Proposal(ProposalError::TooMany)));
    }
}
