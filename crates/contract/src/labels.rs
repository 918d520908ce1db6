//! The only place that knows label names and Docker object names.
//!
//! Every object `bottle` creates carries `bottle.managed=true`, its project, its running
//! bottle, its node kind and its spec hash (docs/design.md). Ownership is decided
//! here and nowhere else: an object is ours to change only when [`is_ours`] says so.

use crate::Labels;

/// `true` on every object bottle manages.
pub const MANAGED: &str = "bottle.managed";
/// The project (manifest) an object belongs to.
pub const PROJECT: &str = "bottle.project";
/// The running bottle (agent) an object belongs to.
pub const BOTTLE: &str = "bottle.bottle";
/// The node kind of an object (see [`crate::node::NodeKind`]).
pub const NODE: &str = "bottle.node";
/// The digest of the object's desired spec; a different one means recreate.
pub const SPEC_HASH: &str = "bottle.spec-hash";
/// Per-field digests, `field=digest,...`, so `diff` can name the field that changed.
pub const SPEC_FIELDS: &str = "bottle.spec-fields";

/// On agent containers: the provider (`claude`, `codex`).
pub const PROVIDER: &str = "bottle.provider";
/// On agent containers: the runtime resolved at creation (`runc`, `runsc`).
pub const RUNTIME: &str = "bottle.runtime";
/// On networks: the IPv4 subnet the executor chose at creation (`10.213.0.16/28`). The
/// engine's IPAM config is the record; the label shows it where labels are read.
pub const SUBNET: &str = "bottle.subnet";

/// On grant volumes (approved proposals, see [`crate::supervise`]): the proposal id,
/// the approval time (unix seconds), and what was granted: a host or a Dockerfile.
pub const GRANT_ID: &str = "bottle.grant.id";
/// Approval time of a grant, unix seconds.
pub const GRANT_AT: &str = "bottle.grant.at";
/// The host a grant allows.
pub const GRANT_HOST: &str = "bottle.grant.host";
/// The Dockerfile a grant allows.
pub const GRANT_DOCKERFILE: &str = "bottle.grant.dockerfile";
/// When a time-boxed grant ends, unix seconds (absent: until revoked).
pub const GRANT_UNTIL: &str = "bottle.grant.until";

/// On a seeding helper container (created, never started, removed once its archive is
/// in): the volumes it mounts to seed, `name,name,...`. One found by a later apply was
/// left by an apply that stopped while seeding: those volumes may be empty or half
/// written, and are made anew rather than taken as in place.
pub const SEEDING: &str = "bottle.seeding";

/// The [`SEEDING`] label's value for a helper that seeds `volumes`.
pub fn seeding_value<'a>(volumes: impl IntoIterator<Item = &'a str>) -> String {
    volumes.into_iter().collect::<Vec<_>>().join(",")
}

/// The volumes a seeding helper with `labels` mounts (empty: not a seeding helper).
pub fn seeding(labels: &Labels) -> impl Iterator<Item = &str> {
    labels
        .get(SEEDING)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .filter(|v| !v.is_empty())
}

/// Name prefix of every object.
pub const PREFIX: &str = "bottle";

/// The label filters that select one project's objects (server-side, ANDed).
pub fn project_filter(project: &str) -> Vec<String> {
    vec![format!("{MANAGED}=true"), format!("{PROJECT}={project}")]
}

/// The label filter that selects everything `bottle` manages (images shared by projects).
pub fn managed_filter() -> Vec<String> {
    vec![format!("{MANAGED}=true")]
}

/// The project of an object bottle manages (`None`: not ours, or no project).
pub fn project(labels: &Labels) -> Option<&str> {
    (labels.get(MANAGED).map(String::as_str) == Some("true"))
        .then(|| labels.get(PROJECT).map(String::as_str))
        .flatten()
        .filter(|p| !p.is_empty())
}

/// True when `labels` mark an object as belonging to `project`.
pub fn is_ours(labels: &Labels, project: &str) -> bool {
    labels.get(MANAGED).map(String::as_str) == Some("true")
        && labels.get(PROJECT).map(String::as_str) == Some(project)
}

/// `bottle-<project>-<bottle>-<node>`.
pub fn object_name(project: &str, bottle: &str, node: &str) -> String {
    format!("{PREFIX}-{project}-{bottle}-{node}")
}

/// `bottle-<project>-`: the start of every name of the project's objects. Network
/// events carry no labels, so they are told apart by this prefix.
pub fn project_prefix(project: &str) -> String {
    format!("{PREFIX}-{project}-")
}

/// The workspace volume of a bottle: it survives agent recreation.
pub fn workspace_volume(project: &str, bottle: &str) -> String {
    object_name(project, bottle, "workspace")
}

/// The grant volume of an approved proposal.
pub fn grant_volume(project: &str, bottle: &str, id: &str) -> String {
    object_name(project, bottle, &format!("grant-{id}"))
}

/// Is `name` the name of a grant volume of `project`?
pub fn is_grant_volume(name: &str, project: &str) -> bool {
    name.strip_prefix(&project_prefix(project))
        .and_then(|rest| rest.rsplit_once("-grant-"))
        .is_some_and(|(_, id)| crate::supervise::valid_id(id))
}

/// Repository of a project's agent images; the tag is the build context's hash, so
/// agents whose context and Dockerfile are the same share one image.
pub fn agent_image_repo(project: &str) -> String {
    format!("{PREFIX}-{project}-agent")
}

/// Repository of the sidecar image shared by every project; the tag is the binary's hash.
pub const SIDECAR_IMAGE_REPO: &str = "bottle-sidecar";

/// Labels of an object of a running bottle.
pub fn object_labels(project: &str, bottle: &str, node: &str, hash: &str, fields: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(MANAGED.into(), "true".into());
    l.insert(PROJECT.into(), project.into());
    l.insert(BOTTLE.into(), bottle.into());
    l.insert(NODE.into(), node.into());
    l.insert(SPEC_HASH.into(), hash.into());
    if !fields.is_empty() {
        l.insert(SPEC_FIELDS.into(), fields.into());
    }
    l
}

/// Labels of the shared sidecar image: managed, but of no project, so no project's
/// garbage collection ever removes it.
pub fn sidecar_image_labels(hash: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(MANAGED.into(), "true".into());
    l.insert(NODE.into(), "sidecar-image".into());
    l.insert(SPEC_HASH.into(), hash.into());
    l
}

/// Parse a [`SPEC_FIELDS`] label into (field, digest) pairs.
pub fn parse_fields(value: &str) -> Vec<(&str, &str)> {
    value
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership_needs_both_labels() {
        let l = object_labels("p", "b", "agent", "h", "");
        assert!(is_ours(&l, "p"));
        assert!(!is_ours(&l, "q"));
        let mut foreign = l.clone();
        foreign.remove(MANAGED);
        assert!(!is_ours(&foreign, "p"));
        assert!(!is_ours(&sidecar_image_labels("h"), "p"));
        assert_eq!(project(&l), Some("p"));
        assert_eq!(project(&foreign), None);
        assert_eq!(project(&sidecar_image_labels("h")), None);
    }

    #[test]
    fn fields_round_trip() {
        assert_eq!(
            parse_fields("env=ab,image=cd"),
            vec![("env", "ab"), ("image", "cd")]
        );
        assert!(parse_fields("").is_empty());
    }

    #[test]
    fn a_seeding_helper_names_its_volumes() {
        let mut l = Labels::new();
        assert_eq!(seeding(&l).count(), 0);
        l.insert(
            SEEDING.into(),
            seeding_value(["bottle-p-b-home", "bottle-p-b-ws"]),
        );
        assert_eq!(
            seeding(&l).collect::<Vec<_>>(),
            ["bottle-p-b-home", "bottle-p-b-ws"]
        );
        l.insert(SEEDING.into(), String::new());
        assert_eq!(seeding(&l).count(), 0);
    }
}
