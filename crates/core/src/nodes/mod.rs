//! One module per graph node kind: each says what its Docker objects are, what goes into
//! their spec hash, and how they are created.
//!
//! A node is one or more Docker objects (a network, a volume pair, an image and a
//! container). [`NodeKind::deps`] is the static dependency table of DESIGN.md section 2;
//! `graph.rs` turns it into a per-bottle petgraph and orders the objects.

pub mod agent;
pub mod agent_net;
pub mod ca;
pub mod egress;
pub mod git_gate;
pub mod network;
pub mod pipelock;
pub mod sidecar;
pub mod supervise;
pub mod upstream_yaml;

use std::fmt;

use crate::hash::{DigestKey, SpecHash, SpecHasher};
pub use bottle_contract::node::NodeKind;
use bottle_engine::{BuildSpec, ContainerSpec, NetworkSpec, VolumeSpec};
use bottle_model::{Agent, BottlePolicy, RuntimeChoice};

/// The type of a Docker object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKind {
    /// An image `bottle` builds (an agent image or the sidecar image).
    Image,
    /// A network.
    Network,
    /// A volume.
    Volume,
    /// A container.
    Container,
}

impl ObjectKind {
    /// The lowercase name of the type (`image`, `network`, `volume`, `container`), as
    /// shown in plans, reports and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Image => "image",
            ObjectKind::Network => "network",
            ObjectKind::Volume => "volume",
            ObjectKind::Container => "container",
        }
    }
}

/// Identifies one Docker object: its type and name (an image's name is `repo:tag`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// The type of the object.
    pub kind: ObjectKind,
    /// The object's Docker name (`repo:tag` for an image).
    pub name: String,
}

impl ObjectKey {
    /// The key of the object of type `kind` named `name`.
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind.as_str(), self.name)
    }
}

/// How to create an object.
#[derive(Clone, Debug)]
pub enum ObjectSpec {
    /// A network, created as specified.
    Network(NetworkSpec),
    /// A volume, created and seeded with its files once.
    Volume(VolumeSpec),
    /// The runtime choice is resolved against the engine by the executor.
    Container(Box<ContainerSpec>, RuntimeChoice),
    /// An image, built from its context.
    Image(BuildSpec),
    /// The revision marker of a live volume (see [`BottleCtx::live_volume`]).
    Revision(Box<Revision>),
    /// One of the CA's two volumes, minted by the executor (see [`ca`]).
    Ca(Box<ca::CaVolume>),
}

/// A live volume's files at one revision. Making it rewrites `content.files` into the
/// existing volume `content.name`, then creates `marker`, a label-only volume whose name
/// and spec hash record that revision; removing it removes only the marker.
#[derive(Clone, Debug)]
pub struct Revision {
    /// The live volume and the files rewritten into it.
    pub content: VolumeSpec,
    /// The label-only volume that records this revision.
    pub marker: VolumeSpec,
}

/// One object the manifest wants.
#[derive(Clone, Debug)]
pub struct DesiredObject {
    /// The object's type and name.
    pub key: ObjectKey,
    /// The running bottle it belongs to; empty for the shared sidecar image.
    pub bottle: String,
    /// The graph node the object belongs to.
    pub node: NodeKind,
    /// The spec hash and per-field digests of `spec`, carried on the object's labels;
    /// a different hash on the engine's object means it is recreated.
    pub hash: SpecHash,
    /// How to create the object.
    pub spec: ObjectSpec,
    /// Objects whose creation forces this one to be recreated too (a container on a
    /// network, the two volumes of one CA).
    pub binds: Vec<ObjectKey>,
    /// Objects that must exist before this one is created; filled in by `graph.rs`.
    pub after: Vec<ObjectKey>,
}

/// Everything a node module needs to know about the bottle it builds for.
pub struct BottleCtx<'a> {
    /// The project the bottle belongs to, as named in the manifest.
    pub project: &'a str,
    /// The manifest file (absolute).
    pub manifest_path: &'a std::path::Path,
    /// The running bottle's name (the agent's name).
    pub bottle: &'a str,
    /// The agent the bottle runs.
    pub agent: &'a Agent,
    /// The bottle policy the agent runs under, with the operator's grants merged in.
    pub policy: &'a BottlePolicy,
    /// The host-local key for digests of secrets in spec hashes.
    pub key: &'a DigestKey,
    /// `repo:tag` of the sidecar image.
    pub sidecar_image: &'a str,
    /// Build contexts and skill digests already made for this desired state.
    pub contexts: &'a crate::images::ContextCache,
}

impl BottleCtx<'_> {
    /// A desired object of this bottle, labelled with its node and spec hash; it binds to
    /// nothing and its ordering is filled in by `graph.rs`.
    pub fn object(
        &self,
        node: NodeKind,
        kind: ObjectKind,
        name: String,
        hash: SpecHash,
        spec: impl FnOnce(bottle_engine::Labels) -> ObjectSpec,
    ) -> DesiredObject {
        DesiredObject {
            key: ObjectKey::new(kind, name),
            bottle: self.bottle.to_string(),
            node,
            spec: spec(self.labels(node, &hash)),
            hash,
            binds: Vec::new(),
            after: Vec::new(),
        }
    }

    /// A volume named `bottle-<project>-<bottle>-<suffix>` holding `files`, written once
    /// at creation (config, certificates, keys); its root owned by `owner` (root if none).
    pub fn files_volume(
        &self,
        node: NodeKind,
        suffix: &str,
        hash: SpecHash,
        files: Vec<bottle_engine::VolumeFile>,
        owner: Option<(u64, u64)>,
    ) -> DesiredObject {
        let name = self.name(suffix);
        self.object(node, ObjectKind::Volume, name.clone(), hash, |labels| {
            ObjectSpec::Volume(self.volume_spec(name, labels, files, owner))
        })
    }

    /// A volume seeded through the sidecar image.
    fn volume_spec(
        &self,
        name: String,
        labels: bottle_engine::Labels,
        files: Vec<bottle_engine::VolumeFile>,
        owner: Option<(u64, u64)>,
    ) -> VolumeSpec {
        VolumeSpec {
            name,
            labels,
            files,
            seed_dirs: Vec::new(),
            owner,
            seed_image: self.sidecar_image.to_string(),
        }
    }

    /// A volume like [`files_volume`](Self::files_volume) whose files are rewritten in
    /// place when they change, for a sidecar that reloads them (`sidecar::reload`), so
    /// a change restarts nothing. Two objects: the volume, whose hash leaves the files
    /// out (only its being made anew recreates what binds it), and its revision marker
    /// `<volume>-rev-<digest>` (a [`Revision`]), whose hash is `files_hash`. A change
    /// of the files is a new marker, made after rewriting the volume, and the old
    /// marker's removal; an interrupted rewrite leaves the marker missing, so the next
    /// pass writes again.
    pub fn live_volume(
        &self,
        node: NodeKind,
        suffix: &str,
        files_hash: SpecHash,
        files: Vec<bottle_engine::VolumeFile>,
    ) -> [DesiredObject; 2] {
        let volume_hash = SpecHasher::new(self.key).field("live", "files").finish();
        let volume = self.files_volume(node, suffix, volume_hash, files.clone(), None);
        let content = self.volume_spec(
            volume.key.name.clone(),
            self.labels(node, &volume.hash),
            files,
            None,
        );
        let name = format!(
            "{}-rev-{}",
            volume.key.name,
            &files_hash.hash[..files_hash.hash.len().min(12)]
        );
        let marker = self.object(
            node,
            ObjectKind::Volume,
            name.clone(),
            files_hash,
            |labels| {
                ObjectSpec::Revision(Box::new(Revision {
                    marker: self.volume_spec(name, labels, Vec::new(), None),
                    content,
                }))
            },
        );
        [volume, marker]
    }

    /// `bottle-<project>-<bottle>-<suffix>`.
    pub fn name(&self, suffix: &str) -> String {
        bottle_contract::labels::object_name(self.project, self.bottle, suffix)
    }

    /// Labels for an object of `node` with spec hash `hash`.
    pub fn labels(&self, node: NodeKind, hash: &SpecHash) -> bottle_engine::Labels {
        bottle_contract::labels::object_labels(
            self.project,
            self.bottle,
            node.as_str(),
            &hash.hash,
            &hash.fields_label(),
        )
    }
}

/// Run `f` with a context for bottle `b` of project `p` under `policy` (tests).
#[cfg(test)]
pub(crate) fn with_ctx<T>(policy: &BottlePolicy, f: impl FnOnce(&BottleCtx<'_>) -> T) -> T {
    let agent = Agent {
        bottle: "dev".into(),
        provider: bottle_model::Provider::Claude,
        prompt: None,
        skills: vec![],
        workspace: None,
        host_login: None,
        remote_control: false,
    };
    with_agent_ctx(policy, &agent, f)
}

/// [`with_ctx`] for `agent`.
#[cfg(test)]
pub(crate) fn with_agent_ctx<T>(
    policy: &BottlePolicy,
    agent: &Agent,
    f: impl FnOnce(&BottleCtx<'_>) -> T,
) -> T {
    let key = DigestKey::fixed(3);
    let contexts = crate::images::ContextCache::default();
    let ctx = BottleCtx {
        project: "p",
        manifest_path: std::path::Path::new("/m/bottles.yaml"),
        bottle: "b",
        agent,
        policy,
        key: &key,
        sidecar_image: "bottle-sidecar:x",
        contexts: &contexts,
    };
    f(&ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_table_has_no_cycle_and_agent_is_last() {
        for k in NodeKind::ALL {
            assert!(!k.depends_on(k), "{k} depends on itself");
            if k != NodeKind::Agent && k != NodeKind::SidecarImage {
                assert!(!k.depends_on(NodeKind::Agent));
            }
        }
        assert!(NodeKind::Agent.depends_on(NodeKind::SidecarImage));
    }

    #[test]
    fn names_round_trip() {
        for k in NodeKind::ALL {
            assert_eq!(NodeKind::parse(k.as_str()), Some(k));
        }
    }
}
