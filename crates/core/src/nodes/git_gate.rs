//! The `git-gate` node: the agent's only git remote, present when the bottle has `git:`
//! entries.
//!
//! Three objects: the gate image (`debian:bookworm-slim` with git and openssh-client,
//! plus the static `bottle` binary taken from the sidecar image; tagged with the hash of
//! its build context), the config volume (the remotes, and per remote its private key,
//! mode 0400 owned by the sidecar user, and its known_hosts line) and the container,
//! which has the usual sidecar shape but runs the gate image and mounts the config
//! volume read-only. The agent reaches the gate at `http://git-gate:8418/<name>.git`;
//! [`agent_gitconfig`] rewrites each upstream URL to it.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind, ObjectKey, ObjectKind, ObjectSpec, ca};
use crate::hash::{SpecHasher, content_hash};
pub use bottle_contract::git_gate::{
    BINARY, CONFIG_FILE, CONFIG_MOUNT, GateConfig, GateRemote, HOST, MIRRORS, PORT,
};
use bottle_engine::{BuildSpec, Mount, VolumeFile};

/// The gate image, its config volume and its container.
pub fn objects(ctx: &BottleCtx<'_>) -> Vec<DesiredObject> {
    let image = image(ctx);
    let config = config_volume(ctx);
    let mirrors = mirrors_volume(ctx);
    let container = container(ctx, &image, &config, &mirrors);
    vec![image, config, mirrors, container]
}

/// The gate image's Dockerfile: Debian with git and ssh, and the `bottle` binary copied
/// from the sidecar image (so its tag, the binary's hash, is part of this context).
pub fn dockerfile(sidecar_image: &str) -> String {
    let uid = ca::SIDECAR_UID;
    format!(
        "FROM {sidecar_image} AS bottle\n\
         FROM debian:bookworm-slim\n\
         RUN apt-get update \\\n \
         && apt-get install -y --no-install-recommends git openssh-client \\\n \
         && rm -rf /var/lib/apt/lists/*\n\
         RUN mkdir -p {MIRRORS} && chown {uid}:{uid} {MIRRORS}\n\
         COPY --from=bottle /bottle {BINARY}\n\
         USER {uid}:{uid}\n\
         ENTRYPOINT [\"{BINARY}\"]\n"
    )
}

fn image(ctx: &BottleCtx<'_>) -> DesiredObject {
    let dockerfile = dockerfile(ctx.sidecar_image);
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(dockerfile.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    // Appending a short fixed path to an in-memory tar cannot fail.
    let _ = tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes());
    let tar = tar.into_inner().unwrap_or_default();
    let ctx_hash = content_hash(&tar);
    let tag = format!("{}:{ctx_hash}", ctx.name(NodeKind::GitGate.as_str()));
    let hash = SpecHasher::new(ctx.key)
        .field("context", &ctx_hash)
        .finish();
    DesiredObject {
        key: ObjectKey::new(ObjectKind::Image, tag.clone()),
        bottle: ctx.bottle.to_string(),
        node: NodeKind::GitGate,
        spec: ObjectSpec::Image(BuildSpec {
            tag,
            labels: ctx.labels(NodeKind::GitGate, &hash),
            dockerfile: "Dockerfile".into(),
            context: bottle_engine::BuildContext::Tar(tar.into()),
        }),
        hash,
        binds: Vec::new(),
        // It copies the binary out of the sidecar image.
        after: vec![ObjectKey::new(ObjectKind::Image, ctx.sidecar_image)],
    }
}

/// The config of the gate for this bottle.
pub fn gate_config(ctx: &BottleCtx<'_>) -> GateConfig {
    GateConfig {
        remotes: ctx
            .policy
            .git
            .iter()
            .map(|g| GateRemote {
                name: g.name.clone(),
                upstream: g.upstream.clone(),
                allow_force: g.allow_force,
            })
            .collect(),
    }
}

/// The config volume: `gate.json`, and per remote `<name>.key` (0400, the sidecar
/// user's) and `<name>.known_hosts`. The keys enter the hash only as keyed digests.
fn config_volume(ctx: &BottleCtx<'_>) -> DesiredObject {
    let uid = ca::SIDECAR_UID;
    let config = gate_config(ctx);
    let json = serde_json::to_string_pretty(&config).unwrap_or_default();
    let mut files = vec![VolumeFile {
        path: CONFIG_FILE.into(),
        contents: json.clone().into_bytes(),
        mode: 0o444,
        uid,
        gid: uid,
    }];
    let mut keys = Vec::new();
    let mut known_hosts = String::new();
    for (g, remote) in ctx.policy.git.iter().zip(&config.remotes) {
        let key = g.identity_file.contents.clone();
        let line = format!("{}\n", g.known_host_key.trim());
        known_hosts.push_str(&line);
        files.push(VolumeFile {
            path: remote.key_file(),
            contents: key.clone(),
            mode: 0o400,
            uid,
            gid: uid,
        });
        files.push(VolumeFile {
            path: remote.known_hosts_file(),
            contents: line.into_bytes(),
            mode: 0o444,
            uid,
            gid: uid,
        });
        keys.push((g.name.clone(), String::from_utf8_lossy(&key).into_owned()));
    }
    let hash = SpecHasher::new(ctx.key)
        .field("config", &json)
        .field("known_hosts", &known_hosts)
        .secret_field(
            "keys",
            keys.iter().map(|(n, k)| (n.as_str(), Some(k.as_str()))),
        )
        .finish();
    ctx.files_volume(
        NodeKind::GitGate,
        "git-gate-config",
        hash,
        files,
        Some((uid, uid)),
    )
}

/// The mirrors volume (the container's root is read-only). Made anew, empty, when the
/// remotes change, so a mirror never outlives its upstream's configuration.
fn mirrors_volume(ctx: &BottleCtx<'_>) -> DesiredObject {
    let uid = ca::SIDECAR_UID;
    let json = serde_json::to_string(&gate_config(ctx)).unwrap_or_default();
    let hash = SpecHasher::new(ctx.key).field("config", &json).finish();
    ctx.files_volume(
        NodeKind::GitGate,
        "git-gate-mirrors",
        hash,
        Vec::new(),
        Some((uid, uid)),
    )
}

/// The sidecar container, on the gate image, with the config volume mounted read-only
/// and the mirrors volume read-write.
fn container(
    ctx: &BottleCtx<'_>,
    image: &DesiredObject,
    config: &DesiredObject,
    mirrors: &DesiredObject,
) -> DesiredObject {
    let gate_ctx = BottleCtx {
        sidecar_image: &image.key.name,
        ..*ctx
    };
    // The mounts are implied by BOTTLE_GIT_CONFIG and BOTTLE_GIT_MIRRORS (hashed with
    // the env); the volumes' own changes reach the container through `binds`.
    let mut obj = sidecar::object(
        &gate_ctx,
        SidecarShape {
            node: NodeKind::GitGate,
            port: PORT,
            egress_network: true,
            ca_key: false,
            cap_add: &[],
            starts_as_root: false,
            env: vec![
                ("BOTTLE_GIT_CONFIG".into(), CONFIG_MOUNT.into()),
                ("BOTTLE_GIT_MIRRORS".into(), MIRRORS.into()),
                ("HOME".into(), "/tmp".into()),
            ],
            agent_netns: false,
        },
    );
    if let ObjectSpec::Container(spec, _) = &mut obj.spec {
        spec.mounts.push(Mount::Volume {
            name: config.key.name.clone(),
            target: CONFIG_MOUNT.into(),
            read_only: true,
        });
        spec.mounts.push(Mount::Volume {
            name: mirrors.key.name.clone(),
            target: MIRRORS.into(),
            read_only: false,
        });
    }
    obj.binds.push(image.key.clone());
    obj.binds.push(config.key.clone());
    obj.binds.push(mirrors.key.clone());
    obj
}

/// The agent's `~/.gitconfig`: each upstream URL (and its scp-like and https forms) is
/// rewritten to the gate, for fetch and push, and the gate is reached without a proxy.
/// `None` when the bottle has no `git:` entries.
pub fn agent_gitconfig(ctx: &BottleCtx<'_>) -> Option<String> {
    if ctx.policy.git.is_empty() {
        return None;
    }
    let base = format!("http://{HOST}:{PORT}/");
    let mut out =
        String::from("# Written by bottle: the git-gate is this bottle's only git remote.\n");
    out.push_str(&format!("[http \"{base}\"]\n\tproxy = \"\"\n"));
    for g in &ctx.policy.git {
        out.push_str(&format!("[url \"{base}{}.git\"]\n", g.name));
        for form in upstream_forms(&g.upstream) {
            out.push_str(&format!("\tinsteadOf = {form}\n\tpushInsteadOf = {form}\n"));
        }
    }
    Some(out)
}

/// The spellings of one upstream an agent may use: as written, and for
/// `ssh://user@host/path` (default port) also `user@host:path` and `https://host/path`.
fn upstream_forms(upstream: &str) -> Vec<String> {
    let mut forms = vec![upstream.to_string()];
    let scp = |user: &str, host: &str, path: &str| {
        [
            format!("{user}@{host}:{path}"),
            format!("ssh://{user}@{host}/{path}"),
            format!("https://{host}/{path}"),
        ]
    };
    let more = if let Some(rest) = upstream.strip_prefix("ssh://") {
        match rest.split_once('/') {
            Some((auth, path)) if !auth.contains(':') && !path.is_empty() => {
                let (user, host) = auth.split_once('@').unwrap_or(("git", auth));
                scp(user, host, path).to_vec()
            }
            _ => Vec::new(),
        }
    } else if let Some((auth, path)) = upstream.split_once(':') {
        match auth.split_once('@') {
            Some((user, host)) if !path.is_empty() && !host.contains('/') => {
                scp(user, host, path.trim_start_matches('/')).to_vec()
            }
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    for f in more {
        if !forms.contains(&f) {
            forms.push(f);
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms_cover_ssh_scp_and_https() {
        assert_eq!(
            upstream_forms("ssh://git@github.com/acme/app.git"),
            vec![
                "ssh://git@github.com/acme/app.git",
                "git@github.com:acme/app.git",
                "https://github.com/acme/app.git"
            ]
        );
        assert_eq!(
            upstream_forms("git@github.com:acme/app.git"),
            vec![
                "git@github.com:acme/app.git",
                "ssh://git@github.com/acme/app.git",
                "https://github.com/acme/app.git"
            ]
        );
        // A port: only the form as written.
        assert_eq!(
            upstream_forms("ssh://git@h:2222/r.git"),
            vec!["ssh://git@h:2222/r.git"]
        );
    }

    #[test]
    fn dockerfile_names_the_sidecar_image() {
        let d = dockerfile("bottle-sidecar:0123");
        assert!(d.starts_with("FROM bottle-sidecar:0123 AS bottle\n"));
        assert!(d.contains("openssh-client"));
        assert!(d.contains("USER 65534:65534"));
    }
}
