//! The agent node: the agent image (built from the bottle's Dockerfile, tagged with the
//! context hash) and the agent container, on net-internal only, hardened, with the
//! bottle's CA certificate (never its key) mounted read-only.

use super::{BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ObjectSpec, ca};
use crate::engine::{BuildSpec, ContainerSpec, Mount};
use crate::hash::SpecHasher;
use crate::images::{self, Context, ImageError};
use crate::model::EnvValue;

/// The non-root user the agent runs as (`node` in the provider images).
pub const AGENT_USER: &str = "1000:1000";
/// The agent's home; a tmpfs until the workspace volume exists.
pub const HOME: &str = "/home/node";

/// Files never sent in a build context: the manifest and the key files it names.
fn excluded(ctx: &BottleCtx<'_>) -> Vec<std::path::PathBuf> {
    std::iter::once(ctx.manifest_path.to_path_buf())
        .chain(ctx.policy.git.iter().map(|g| g.identity_file.clone()))
        .collect()
}

/// The agent image object and the agent container object.
pub fn objects(ctx: &BottleCtx<'_>) -> Result<Vec<DesiredObject>, ImageError> {
    let Context {
        tar,
        dockerfile,
        hash: ctx_hash,
    } = images::agent_context(&ctx.policy.image, ctx.agent.provider, &excluded(ctx))?;
    let tag = images::agent_tag(ctx.project, ctx.bottle, &ctx_hash);
    let image_hash = SpecHasher::new(ctx.key)
        .field("context", &ctx_hash)
        .finish();
    let image_key = ObjectKey::new(ObjectKind::Image, tag.clone());
    let image = DesiredObject {
        key: image_key.clone(),
        bottle: ctx.bottle.to_string(),
        node: NodeKind::Agent,
        spec: ObjectSpec::Image(BuildSpec {
            tag: tag.clone(),
            labels: ctx.labels(NodeKind::Agent, &image_hash),
            dockerfile,
            context_tar: tar,
        }),
        hash: image_hash,
        binds: Vec::new(),
        after: Vec::new(),
    };

    let name = ctx.name(NodeKind::Agent.as_str());
    let internal = ctx.name(NodeKind::NetInternal.as_str());
    let ca_cert = ctx.name("ca-cert");
    let mut env = vec![
        format!("BOTTLE_NAME={}", ctx.bottle),
        format!("HOME={HOME}"),
    ];
    let mut env_digest: Vec<(String, Option<&str>)> = Vec::new();
    for (k, v) in &ctx.policy.env {
        match v {
            EnvValue::Literal(s) => {
                env.push(format!("{k}={s}"));
                env_digest.push((format!("{k}={s}"), None));
            }
            EnvValue::FromEnv { value, .. } => {
                env.push(format!("{k}={}", value.expose()));
                env_digest.push((k.clone(), Some(value.expose())));
            }
        }
    }
    let mounts = vec![
        Mount::Volume {
            name: ca_cert.clone(),
            target: ca::MOUNT.into(),
            read_only: true,
        },
        Mount::Tmpfs {
            target: "/tmp".into(),
            size_bytes: 512 << 20,
        },
        Mount::Tmpfs {
            target: HOME.into(),
            size_bytes: 1 << 30,
        },
    ];
    let cmd = vec!["sleep".to_string(), "infinity".to_string()];
    let r = ctx.policy.resources;
    let runtime = ctx.policy.runtime;
    let hash = SpecHasher::new(ctx.key)
        .field("image", &tag)
        .field("cmd", cmd.join("\0"))
        .secret_field("env", env_digest.iter().map(|(p, s)| (p.as_str(), *s)))
        .field("networks", &internal)
        .field("mounts", format!("{mounts:?}"))
        .field("user", AGENT_USER)
        .field("resources", format!("{}/{}/{}", r.cpus, r.memory, r.pids))
        .field("runtime", runtime.as_str())
        .field("provider", ctx.agent.provider.as_str())
        .finish();
    let container = DesiredObject {
        key: ObjectKey::new(ObjectKind::Container, name.clone()),
        bottle: ctx.bottle.to_string(),
        node: NodeKind::Agent,
        spec: ObjectSpec::Container(
            Box::new(ContainerSpec {
                name,
                image: tag,
                labels: ctx.labels(NodeKind::Agent, &hash),
                cmd,
                env,
                user: AGENT_USER.into(),
                networks: vec![internal.clone()],
                aliases: vec!["agent".into()],
                mounts,
                cap_add: Vec::new(),
                memory: r.memory as i64,
                nano_cpus: (r.cpus * 1e9) as i64,
                pids: r.pids,
                runtime: None,
                working_dir: None,
                init: true,
            }),
            runtime,
        ),
        hash,
        binds: vec![
            image_key,
            ObjectKey::new(ObjectKind::Network, internal),
            ObjectKey::new(ObjectKind::Volume, ca_cert),
        ],
        after: Vec::new(),
    };
    Ok(vec![image, container])
}
