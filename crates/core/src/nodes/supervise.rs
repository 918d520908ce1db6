//! The `supervise` node, present when `supervise: true`: the MCP server through which
//! the agent proposes (see `sidecar::supervise`), and the grants the operator approved.
//!
//! Objects: a live config volume (what the manifest allows, for `list-egress-routes`;
//! built from the manifest's policy, not the granted one; rewritten in place and
//! reloaded, see [`BottleCtx::live_volume`], so neither a grant nor a changed allowlist
//! restarts the MCP server), a state volume holding the proposals (its hash never changes: it outlives
//! every restart of the sidecar), the container, and one label-only volume per grant
//! (`bottle_contract::supervise::Grant`), which `bottle queue approve` creates with the same
//! constructor, so the reconciler sees it as already in place.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind, ObjectKind, ObjectSpec, ca};
use crate::hash::{DigestKey, SpecHasher};
use bottle_contract::labels;
use bottle_contract::supervise::{CONFIG_FILE, CONFIG_MOUNT, Config, RouteView};
use bottle_contract::supervise::{Grant, STATE_MOUNT};
use bottle_engine::{Mount, VolumeFile, VolumeSpec};
use bottle_model::BottlePolicy;

pub use bottle_contract::supervise::PORT;

/// The MCP endpoint as the agent reaches it.
pub fn mcp_url() -> String {
    format!(
        "http://{}:{PORT}{}",
        NodeKind::Supervise.as_str(),
        bottle_contract::supervise::MCP_PATH
    )
}

/// What the agent may see of the manifest's policy.
pub fn render(bottle: &str, declared: &BottlePolicy) -> Config {
    Config {
        bottle: bottle.to_string(),
        allow: declared.egress.allow.clone(),
        routes: declared
            .egress
            .routes
            .iter()
            .map(|r| RouteView {
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                credentialed: r.auth.is_some(),
                tls_passthrough: r.tls_passthrough,
            })
            .collect(),
    }
}

/// The config and state volumes, the container, and the grant volumes.
pub fn objects<'a>(
    ctx: &BottleCtx<'_>,
    declared: &BottlePolicy,
    grants: impl IntoIterator<Item = &'a Grant>,
) -> Vec<DesiredObject> {
    // serde_json cannot fail on this plain struct.
    let json = serde_json::to_vec_pretty(&render(ctx.bottle, declared)).unwrap_or_default();
    let [config, revision] = ctx.live_volume(
        NodeKind::Supervise,
        "supervise-config",
        SpecHasher::new(ctx.key).field("config", &json).finish(),
        vec![VolumeFile {
            path: CONFIG_FILE.into(),
            contents: json,
            mode: 0o444,
            uid: ca::SIDECAR_UID,
            gid: ca::SIDECAR_UID,
        }],
    );
    let state = ctx.files_volume(
        NodeKind::Supervise,
        "supervise-state",
        SpecHasher::new(ctx.key).field("state", "v1").finish(),
        Vec::new(),
        Some((ca::SIDECAR_UID, ca::SIDECAR_UID)),
    );
    let mut container = sidecar::object_with_mounts(
        ctx,
        SidecarShape {
            node: NodeKind::Supervise,
            port: PORT,
            egress_network: false,
            ca_key: false,
            cap_add: &[],
            starts_as_root: false,
            env: Vec::new(),
            agent_netns: false,
        },
        vec![Mount::Volume {
            name: config.key.name.clone(),
            target: CONFIG_MOUNT.into(),
            read_only: true,
        }],
    );
    // The state volume is mounted but not bound: recreating the container keeps it, and
    // it is never recreated itself.
    if let ObjectSpec::Container(spec, _) = &mut container.spec {
        spec.mounts.push(Mount::Volume {
            name: state.key.name.clone(),
            target: STATE_MOUNT.into(),
            read_only: false,
        });
    }
    let mut out = vec![config, revision, state, container];
    out.extend(
        grants
            .into_iter()
            .map(|g| grant_object(ctx.project, ctx.key, ctx.sidecar_image, g)),
    );
    out
}

/// The label-only volume that records `grant`. Used by the graph and by `bottle queue
/// approve`, so both agree on name, labels and hash.
pub fn grant_object(
    project: &str,
    key: &DigestKey,
    sidecar_image: &str,
    grant: &Grant,
) -> DesiredObject {
    let name = labels::grant_volume(project, &grant.bottle, &grant.id);
    let extra = grant.labels();
    let mut record: Vec<(&String, &String)> = extra.iter().collect();
    record.sort();
    let record: Vec<u8> = record
        .into_iter()
        .flat_map(|(k, v)| [k.as_bytes(), b"=", v.as_bytes(), b"\0"].concat())
        .collect();
    let hash = SpecHasher::new(key).field("grant", &record).finish();
    let mut l = labels::object_labels(
        project,
        &grant.bottle,
        NodeKind::Supervise.as_str(),
        &hash.hash,
        &hash.fields_label(),
    );
    l.extend(extra);
    DesiredObject {
        key: super::ObjectKey::new(ObjectKind::Volume, name.clone()),
        bottle: grant.bottle.clone(),
        node: NodeKind::Supervise,
        hash,
        spec: ObjectSpec::Volume(VolumeSpec {
            name,
            labels: l,
            files: Vec::new(),
            seed_dirs: Vec::new(),
            owner: None,
            seed_image: sidecar_image.to_string(),
        }),
        binds: Vec::new(),
        after: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::with_ctx;
    use bottle_contract::supervise::Ask;
    use bottle_model::*;

    fn policy() -> BottlePolicy {
        BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Runc,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress {
                allow: vec!["pypi.org".into()],
                routes: vec![Route {
                    host: "api.example".into(),
                    path_prefix: None,
                    auth: Some(RouteAuth {
                        scheme: AuthScheme::Bearer,
                        token: Secret::new("sk-live-secret"),
                        var: "TOKEN".into(),
                    }),
                    roles: vec![],
                    tls_passthrough: false,
                }],
                ..Egress::default()
            },
            git: vec![],
            supervise: true,
        }
    }

    #[test]
    fn the_agent_sees_routes_but_no_credential() {
        let p = policy();
        let objs = with_ctx(&p, |ctx| objects(ctx, &p, &[]));
        assert_eq!(objs.len(), 4);
        let text = format!("{objs:?}");
        assert!(!text.contains("sk-live-secret"));
        let cfg = render("b", &p);
        assert!(cfg.routes[0].credentialed);
        assert_eq!(cfg.allow, vec!["pypi.org".to_string()]);
    }

    #[test]
    fn a_grant_object_is_stable_and_readable_back() {
        let g = Grant {
            id: "p0123456789".into(),
            bottle: "b".into(),
            ask: Ask::Host {
                host: "docs.example".into(),
            },
            at: 5,
            until: Some(65),
        };
        let key = DigestKey::fixed(1);
        let a = grant_object("p", &key, "img", &g);
        let b = grant_object("p", &key, "img", &g);
        assert_eq!(a.hash, b.hash);
        let ObjectSpec::Volume(v) = &a.spec else {
            panic!("not a volume")
        };
        assert_eq!(Grant::from_labels(&v.labels), Some(g));
        assert!(labels::is_ours(&v.labels, "p"));
    }
}
