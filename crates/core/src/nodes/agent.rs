//! The agent node: the agent image (built from the bottle's Dockerfile or the
//! provider's, tagged with the context hash), the home volume (prompt and skills, and
//! for `host_login` Codex's stand-in `auth.json` without any real token; provisioned at
//! creation), the workspace volume (a copy of the host folder, `.git`
//! included; it survives agent recreation), and the agent container: hardened, trusting
//! the bottle's CA (never holding its key), with no network of its own. It joins the
//! network namespace agent-net holds (`nodes::agent_net`): net-internal under the name
//! `agent`, DNS at pipelock's gateway address, and a default route into a trap, so a
//! name or an address outside the bottle fails at once and lands in pipelock's audit
//! log instead of timing out unseen.

use std::path::PathBuf;

use super::{BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ObjectSpec, ca};
use crate::hash::SpecHasher;
use crate::images::{self, Context, ImageError};
use bottle_contract::labels;
use bottle_engine::{BuildSpec, ContainerSpec, Mount, SeedDir, VolumeFile, VolumeSpec};
use bottle_model::provider::{HOME, PROMPT_FILE, REMOTE_CONTROL_ENV, WORKSPACE};
use bottle_model::{EnvValue, codex_login};

pub use bottle_contract::ca::AGENT_UID;
/// The agent's user and group as a container `user` value (`uid:gid`, both [`AGENT_UID`]).
pub const AGENT_USER: &str = "1000:1000";

/// Files never sent in a build context: the manifest and the secret files it names
/// (git identities, the host's Codex login of a `host_login` agent).
fn excluded(ctx: &BottleCtx<'_>) -> Vec<PathBuf> {
    std::iter::once(ctx.manifest_path.to_path_buf())
        .chain(ctx.policy.git.iter().map(|g| g.identity_file.path.clone()))
        .chain(ctx.agent.host_login.iter().map(|l| l.path.clone()))
        .collect()
}

/// The image, the home and workspace volumes, and the agent container.
pub fn objects(ctx: &BottleCtx<'_>) -> Result<Vec<DesiredObject>, ImageError> {
    let image = image(ctx)?;
    let home = home_volume(ctx)?;
    let workspace = workspace_volume(ctx);
    let container = container(ctx, &image, &home, workspace.as_ref());
    Ok([Some(image), Some(home), workspace, Some(container)]
        .into_iter()
        .flatten()
        .collect())
}

fn image(ctx: &BottleCtx<'_>) -> Result<DesiredObject, ImageError> {
    let Context {
        files,
        dockerfile,
        hash: ctx_hash,
    } = ctx
        .contexts
        .agent_context(&ctx.policy.image, ctx.agent.provider, &excluded(ctx))?;
    let tag = images::agent_tag(ctx.project, &ctx_hash);
    let hash = SpecHasher::new(ctx.key)
        .field("context", &ctx_hash)
        .finish();
    let mut obj = ctx.object(
        NodeKind::Agent,
        ObjectKind::Image,
        tag.clone(),
        hash,
        |mut labels| {
            // The project's, not one bottle's: agents with the same context share it,
            // and it is garbage-collected only when no agent of the project wants it.
            labels.remove(bottle_contract::labels::BOTTLE);
            ObjectSpec::Image(BuildSpec {
                tag,
                labels,
                dockerfile,
                context: bottle_engine::BuildContext::Files(files),
            })
        },
    );
    obj.bottle = String::new();
    Ok(obj)
}

/// The home volume: the prompt file and the skills, owned by the agent user. Its hash
/// covers their content, so a changed prompt or skill makes it, and the agent, anew.
fn home_volume(ctx: &BottleCtx<'_>) -> Result<DesiredObject, ImageError> {
    let provider = ctx.agent.provider;
    let mut files = Vec::new();
    let file = |path: String, contents: Vec<u8>| VolumeFile {
        path,
        contents,
        mode: 0o644,
        uid: AGENT_UID,
        gid: AGENT_UID,
    };
    if let Some(prompt) = &ctx.agent.prompt {
        files.push(file(PROMPT_FILE.into(), prompt.clone().into_bytes()));
        for copy in provider.prompt_copies() {
            files.push(file((*copy).into(), prompt.clone().into_bytes()));
        }
    }
    // Git remotes go through the git-gate: the upstream URLs are rewritten to it.
    let gitconfig = super::git_gate::agent_gitconfig(ctx);
    if let Some(text) = &gitconfig {
        files.push(file(".gitconfig".into(), text.clone().into_bytes()));
    }
    // The supervise MCP server, where the provider's CLI finds it.
    let mcp = ctx
        .policy
        .supervise
        .then(|| provider.mcp_config(&super::supervise::mcp_url()));
    if let Some((path, text)) = &mcp {
        files.push(file(path.clone(), text.clone().into_bytes()));
    }
    // The host's Codex login, as a stand-in without any real token (egress holds it).
    let codex_auth = ctx.agent.host_login.as_ref().map(|l| l.agent_auth_json());
    if let Some(text) = &codex_auth {
        files.push(VolumeFile {
            mode: 0o600,
            ..file(codex_login::AGENT_FILE.into(), text.clone().into_bytes())
        });
    }
    let mut seed_dirs = Vec::new();
    let mut skills_digest = Vec::new();
    for skill in &ctx.agent.skills {
        seed_dirs.push(SeedDir {
            host: skill.dir.clone(),
            target: format!("{}/skills/{}", provider.config_dir(), skill.name),
            uid: AGENT_UID,
            gid: AGENT_UID,
        });
        skills_digest.extend_from_slice(skill.name.as_bytes());
        skills_digest.push(0);
        skills_digest.extend(ctx.contexts.tree_digest(&skill.dir)?.into_bytes());
        skills_digest.push(0);
    }
    let name = ctx.name("home");
    let hash = SpecHasher::new(ctx.key)
        .field("prompt", ctx.agent.prompt.as_deref().unwrap_or(""))
        .field("skills", &skills_digest)
        .field("provider", provider.as_str())
        .field("gitconfig", gitconfig.as_deref().unwrap_or(""))
        .field("mcp", mcp.map(|(_, t)| t).unwrap_or_default())
        .field("codex_login", codex_auth.unwrap_or_default())
        .finish();
    Ok(ctx.object(
        NodeKind::Agent,
        ObjectKind::Volume,
        name.clone(),
        hash,
        |labels| {
            ObjectSpec::Volume(VolumeSpec {
                name,
                labels,
                files,
                seed_dirs,
                owner: Some((AGENT_UID, AGENT_UID)),
                seed_image: ctx.sidecar_image.to_string(),
            })
        },
    ))
}

/// The workspace volume: the host folder copied once, at creation. Only the folder's
/// path is in its hash: later edits on either side never recreate it.
fn workspace_volume(ctx: &BottleCtx<'_>) -> Option<DesiredObject> {
    let dir = ctx.agent.workspace.as_ref()?;
    let name = labels::workspace_volume(ctx.project, ctx.bottle);
    let hash = SpecHasher::new(ctx.key)
        .field("source", dir.to_string_lossy().as_bytes())
        .finish();
    Some(ctx.object(
        NodeKind::Agent,
        ObjectKind::Volume,
        name.clone(),
        hash,
        |labels| {
            ObjectSpec::Volume(VolumeSpec {
                name,
                labels,
                files: Vec::new(),
                seed_dirs: vec![SeedDir {
                    host: dir.clone(),
                    target: String::new(),
                    uid: AGENT_UID,
                    gid: AGENT_UID,
                }],
                owner: Some((AGENT_UID, AGENT_UID)),
                seed_image: ctx.sidecar_image.to_string(),
            })
        },
    ))
}

fn container(
    ctx: &BottleCtx<'_>,
    image: &DesiredObject,
    home: &DesiredObject,
    workspace: Option<&DesiredObject>,
) -> DesiredObject {
    let provider = ctx.agent.provider;
    let tag = image.key.name.clone();
    let name = ctx.name(NodeKind::Agent.as_str());
    let holder = ctx.name(NodeKind::AgentNet.as_str());
    let ca_cert = ctx.name("ca-cert");
    let mut env = vec![
        format!("BOTTLE_NAME={}", ctx.bottle),
        format!("BOTTLE_PROVIDER={}", provider.as_str()),
        format!("HOME={HOME}"),
    ];
    // Proxy, trust store and base URLs: the way out is egress.
    env.extend(
        super::egress::agent_env(ctx)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    if ctx.agent.prompt.is_some() {
        env.push(format!("BOTTLE_PROMPT_FILE={HOME}/{PROMPT_FILE}"));
    }
    if ctx.agent.remote_control {
        env.push(format!("{REMOTE_CONTROL_ENV}=1"));
    }
    env.extend(provider.env().iter().map(|(k, v)| format!("{k}={v}")));
    let mut env_digest: Vec<(String, Option<&str>)> =
        env.iter().map(|e| (e.clone(), None)).collect();
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
    let mut mounts = vec![
        Mount::Volume {
            name: ca_cert.clone(),
            target: ca::MOUNT.into(),
            read_only: true,
        },
        Mount::Volume {
            name: ca_cert.clone(),
            target: ca::AGENT_TRUST_DIR.into(),
            read_only: true,
        },
        Mount::Volume {
            name: home.key.name.clone(),
            target: HOME.into(),
            read_only: false,
        },
        Mount::Tmpfs {
            target: "/tmp".into(),
            size_bytes: 512 << 20,
        },
    ];
    let mut binds = vec![
        image.key.clone(),
        home.key.clone(),
        // A namespace cannot be re-joined: a new (or restarted) holder, a new agent.
        ObjectKey::new(ObjectKind::Container, holder.clone()),
        ObjectKey::new(ObjectKind::Volume, ca_cert),
    ];
    let working_dir = match workspace {
        Some(w) => {
            mounts.push(Mount::Volume {
                name: w.key.name.clone(),
                target: WORKSPACE.into(),
                read_only: false,
            });
            binds.push(w.key.clone());
            WORKSPACE
        }
        None => HOME,
    };
    let cmd = vec!["sleep".to_string(), "infinity".to_string()];
    let r = ctx.policy.resources;
    let runtime = ctx.policy.runtime;
    let hash = SpecHasher::new(ctx.key)
        .field("image", &tag)
        .field("cmd", cmd.join("\0"))
        .secret_field("env", env_digest.iter().map(|(p, s)| (p.as_str(), *s)))
        .field("network", format!("container:{holder}"))
        .field("mounts", format!("{mounts:?}"))
        .field("user", AGENT_USER)
        .field("resources", format!("{}/{}/{}", r.cpus, r.memory, r.pids))
        .field("runtime", runtime.as_str())
        .field("provider", provider.as_str())
        .finish();
    let mut labels = ctx.labels(NodeKind::Agent, &hash);
    labels.insert(labels::PROVIDER.into(), provider.as_str().into());
    DesiredObject {
        key: ObjectKey::new(ObjectKind::Container, name.clone()),
        bottle: ctx.bottle.to_string(),
        node: NodeKind::Agent,
        spec: ObjectSpec::Container(
            Box::new(ContainerSpec {
                name,
                image: tag,
                labels,
                cmd,
                env,
                user: AGENT_USER.into(),
                networks: Vec::new(),
                aliases: Vec::new(),
                mounts,
                cap_add: Vec::new(),
                memory: r.memory as i64,
                nano_cpus: (r.cpus * 1e9) as i64,
                pids: r.pids,
                runtime: None,
                working_dir: Some(working_dir.into()),
                init: true,
                sysctls: Default::default(),
                dns_gateway_of: None,
                network_of: Some(holder),
                devices: Vec::new(),
                probe: None,
            }),
            runtime,
        ),
        hash,
        binds,
        after: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_codex_login_is_never_in_a_build_context() {
        let policy = bottle_model::BottlePolicy {
            image: bottle_model::ImageSource::ProviderDefault,
            runtime: Default::default(),
            resources: Default::default(),
            env: Default::default(),
            egress: Default::default(),
            git: vec![],
            supervise: false,
        };
        let login = codex_login::CodexLogin {
            path: "/home/u/project/.codex/auth.json".into(),
            access_token: bottle_model::Secret::new("t"),
            account_id: "a".into(),
            email: None,
            plan: None,
            user_id: None,
        };
        let agent = bottle_model::Agent {
            bottle: "dev".into(),
            provider: bottle_model::Provider::Codex,
            prompt: None,
            skills: vec![],
            workspace: None,
            host_login: Some(login.clone()),
            remote_control: false,
        };
        let excluded = crate::nodes::with_agent_ctx(&policy, &agent, excluded);
        assert!(excluded.contains(&login.path));
    }

    #[test]
    fn the_bundle_egress_names_is_the_one_the_agent_mounts() {
        assert_eq!(
            super::super::egress::AGENT_CA_BUNDLE,
            format!("{}/{}", ca::AGENT_TRUST_DIR, ca::BUNDLE_FILE)
        );
    }
}
