//! Where a value the engine refused came from in the manifest, so a refusal (Kubernetes:
//! a LimitRange, a quota, an admission check, an invalid field) is reported at the
//! manifest's file and line. The agent container's limits, runtime, environment and
//! image come from its bottle's own fields; everything else of a bottle is made by
//! bottle itself from the bottle's entry, so its refusal is placed at that entry.

use bottle_contract::node::NodeKind;

use bottle_model::Manifest;

use crate::apply::{Op, OpReport, Outcome};

/// The words of a refusal that name an agent field (whole words, case aside), and the
/// field each names. The first of them in the message is the one it is about.
const AGENT_FIELDS: &[(&str, &str)] = &[
    ("runtimeclass", "runtime"),
    ("runtimeclassname", "runtime"),
    ("memory", "resources.memory"),
    ("cpu", "resources.cpus"),
    ("pids", "resources.pids"),
    ("env", "env"),
    ("envfrom", "env"),
    ("image", "image"),
];

/// The field of [`AGENT_FIELDS`] that `message` names first. Quoted parts (the server
/// quotes the names of objects, which hold agents' names) and `name` are left out.
fn named_field(message: &str, name: &str) -> Option<&'static str> {
    let unnamed = message.replace(name, " ");
    let unquoted: String = unnamed.split('"').step_by(2).collect::<Vec<_>>().join(" ");
    unquoted
        .split(|c: char| !c.is_ascii_alphanumeric())
        .find_map(|word| {
            AGENT_FIELDS
                .iter()
                .find(|(w, _)| word.eq_ignore_ascii_case(w))
                .map(|(_, field)| *field)
        })
}

/// The manifest field (dotted, as in a manifest problem) that the object of `op` took
/// the value from that the engine refused with `message`: a field of the policy
/// (`bottles.<policy>`) of the agent whose bottle it is; `None` for an object of no
/// agent of `manifest` (the shared sidecar image, an orphan).
pub fn manifest_field(op: &Op, manifest: &Manifest, message: &str) -> Option<String> {
    let node = op.node?;
    if node == NodeKind::SidecarImage {
        return None;
    }
    // A bottle is an agent's, made from the policy the agent names.
    let policy = &manifest.agents.get(&op.bottle)?.bottle;
    let bottle = format!("bottles.{policy}");
    if node != NodeKind::Agent {
        return Some(bottle);
    }
    Some(match named_field(message, &op.key.name) {
        Some(f) => format!("{bottle}.{f}"),
        None => bottle,
    })
}

/// Did the engine refuse any of `reports` as unacceptable (what [`refusals`] places)?
/// A caller that must read the manifest to place them asks this first.
pub fn any_refused(reports: &[OpReport]) -> bool {
    reports.iter().any(|r| {
        matches!(
            r.outcome,
            Outcome::Failed(bottle_engine::EngineError::Refused { .. })
        )
    })
}

/// For each operation the engine refused as unacceptable (invalid, or forbidden by the
/// cluster's policy), a line placing the refusal in the manifest at `manifest`, in the
/// form of a manifest problem: `FILE:LINE:COLUMN: FIELD: MESSAGE`. A field left to its
/// default is placed at the map that would hold it, and says so. `read` gives the
/// manifest's text; it is called only when there is a refusal to place, and once.
pub fn refusals(
    reports: &[OpReport],
    manifest: &Manifest,
    read: impl FnOnce() -> Option<String>,
) -> Vec<String> {
    let refused: Vec<(&bottle_engine::EngineError, String)> = reports
        .iter()
        .filter_map(|r| {
            let Outcome::Failed(e @ bottle_engine::EngineError::Refused { message, .. }) =
                &r.outcome
            else {
                return None;
            };
            // The server's words only: the object's name holds the bottle's.
            Some((e, manifest_field(&r.op, manifest, message)?))
        })
        .collect();
    if refused.is_empty() {
        return Vec::new();
    }
    let Some(text) = read() else {
        return Vec::new();
    };
    refused
        .into_iter()
        .filter_map(|(e, field)| {
            let at = bottle_model::manifest::locate_in(&text, &field)?;
            let default = if at.field == field {
                ""
            } else {
                " (not written: its default applies)"
            };
            Some(format!(
                "{}:{}:{}: {field}{default}: refused by the engine: {e}",
                manifest.path.display(),
                at.line,
                at.column
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::OpKind;
    use crate::nodes::{ObjectKey, ObjectKind};
    use bottle_engine::EngineError;

    /// Agent `envoy` (whose name holds "env") under policy `dev`.
    const TEXT: &str = "project: p\nbottles:\n  dev:\n    resources:\n      memory: 4g\n\
                        agents:\n  envoy:\n    bottle: dev\n    provider: claude\n";

    fn manifest() -> Manifest {
        bottle_model::manifest::parse(TEXT, std::path::Path::new("/m/bottles.yaml"), &|_| None)
            .expect("manifest")
    }

    fn op(node: NodeKind) -> Op {
        Op {
            kind: OpKind::Make,
            key: ObjectKey {
                kind: ObjectKind::Container,
                name: "bottle-p-envoy-agent".into(),
            },
            bottle: "envoy".into(),
            node: Some(node),
            preds: Vec::new(),
        }
    }

    #[test]
    fn a_refusal_of_the_agent_is_placed_at_the_policy_field_it_names_first() {
        let m = manifest();
        let agent = op(NodeKind::Agent);
        let at = |message: &str| manifest_field(&agent, &m, message);
        assert_eq!(
            at(r#"pods "bottle-p-envoy-agent" is forbidden: maximum memory usage per Container is 64Mi, but limit is 4Gi"#).as_deref(),
            Some("bottles.dev.resources.memory")
        );
        assert_eq!(
            at("exceeded quota: q, requested: limits.cpu=2,limits.memory=4Gi").as_deref(),
            Some("bottles.dev.resources.cpus")
        );
        assert_eq!(
            at(r#"pod rejected: RuntimeClass "runsc" not found"#).as_deref(),
            Some("bottles.dev.runtime")
        );
        assert_eq!(
            at("Pod is invalid: spec.containers[1].env[0].name: Invalid value").as_deref(),
            Some("bottles.dev.env")
        );
        assert_eq!(
            at("pods is forbidden: User cannot create resource pods").as_deref(),
            Some("bottles.dev")
        );
        // The agent's own name ("envoy", "memory") in an object's name says nothing.
        assert_eq!(
            at("create bottle-p-envoy-agent: bottle-p-envoy-agent is forbidden").as_deref(),
            Some("bottles.dev")
        );
        assert_eq!(
            at(r#"pods "bottle-p-memory-agent" is forbidden: maximum cpu usage"#).as_deref(),
            Some("bottles.dev.resources.cpus")
        );
    }

    #[test]
    fn a_refusal_of_what_bottle_makes_is_placed_at_the_policy() {
        let m = manifest();
        let message = "maximum memory usage per Container is 8Mi";
        assert_eq!(
            manifest_field(&op(NodeKind::Egress), &m, message).as_deref(),
            Some("bottles.dev")
        );
        assert_eq!(
            manifest_field(&op(NodeKind::SidecarImage), &m, message),
            None
        );
        let orphan = Op {
            node: None,
            ..op(NodeKind::Agent)
        };
        assert_eq!(manifest_field(&orphan, &m, message), None);
        let stranger = Op {
            bottle: "gone".into(),
            ..op(NodeKind::Agent)
        };
        assert_eq!(manifest_field(&stranger, &m, message), None);
    }

    fn failed(node: NodeKind, error: EngineError) -> OpReport {
        OpReport {
            op: op(node),
            outcome: Outcome::Failed(error),
            took: std::time::Duration::ZERO,
        }
    }

    #[test]
    fn a_refusal_is_placed_at_the_manifest_field_it_came_from() {
        let m = manifest();
        let refused = |message: &str| EngineError::Refused {
            op: "create container",
            name: "bottle-p-envoy-agent".into(),
            message: message.into(),
        };
        let reports = [
            failed(
                NodeKind::Agent,
                refused("maximum memory usage per Container is 64Mi, but limit is 4Gi"),
            ),
            failed(NodeKind::Agent, refused("maximum cpu usage per Pod is 1")),
            failed(NodeKind::Egress, refused("Secret is invalid")),
            // Not a refusal of the object: not placed in the manifest.
            failed(
                NodeKind::Agent,
                EngineError::Api {
                    op: "create container",
                    name: "x".into(),
                    message: "memory".into(),
                },
            ),
        ];
        assert!(any_refused(&reports) && !any_refused(&reports[3..]));
        let lines = refusals(&reports, &m, || Some(TEXT.to_owned()));
        let file = m.path.display();
        assert_eq!(
            lines,
            [
                format!(
                    "{file}:5:7: bottles.dev.resources.memory: refused by the engine: \
                     create container bottle-p-envoy-agent: maximum memory usage per \
                     Container is 64Mi, but limit is 4Gi"
                ),
                format!(
                    "{file}:4:5: bottles.dev.resources.cpus (not written: its default \
                     applies): refused by the engine: create container \
                     bottle-p-envoy-agent: maximum cpu usage per Pod is 1"
                ),
                format!(
                    "{file}:3:3: bottles.dev: refused by the engine: create container \
                     bottle-p-envoy-agent: Secret is invalid"
                ),
            ]
        );
    }
}
