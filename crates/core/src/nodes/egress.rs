//! The `egress` node: the agent's HTTPS_PROXY (`bottle sidecar egress`): TLS interception
//! and credential injection per route.
//!
//! Two objects: the config volume `<bottle>-egress-config`, seeded with a non-secret
//! `config.json` (routes, hosts, header names, token FILE paths), one token file per
//! credentialed route (mode 0400, owned by the sidecar user) and the optional extra
//! upstream CA; and the container, which mounts it read-only and binds it, so a changed
//! token recreates both. The allow list is not in it: egress mounts pipelock's live
//! config volume read-only and follows its `allow` (`config.allow_file`), so a changed
//! allowlist or an approved grant reaches egress without a restart. Tokens enter the spec hash only through
//! [`SpecHasher::secret_field`]; they are never in argv, labels, env or logs.
//!
//! [`agent_env`] is what the agent needs to use the proxy.

use super::sidecar::{self, SidecarShape};
use super::{BottleCtx, DesiredObject, NodeKind, ca};
use crate::hash::SpecHasher;
use bottle_contract::egress::{self as config, AuthConfig, Config, RouteConfig, Scheme};
use bottle_engine::{Mount, VolumeFile};
use bottle_model::{AuthScheme, RouteRole};

pub use bottle_contract::egress::PORT;
/// The CA bundle the agent trusts: system roots plus the bottle CA (provisioned by the
/// agent node).
pub const AGENT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The upstream proxy egress sends through: pipelock, which intercepts that TLS hop with
/// a leaf of the bottle CA (egress trusts the CA it mounts).
pub const PIPELOCK_PROXY: &str = "http://pipelock:8888";
/// A non-secret stand-in for API keys the agent's tools insist on having.
pub const PLACEHOLDER_KEY: &str = "bottle-placeholder";

/// Name of a route's token file inside the config volume.
fn token_file(i: usize) -> String {
    format!("token-{i}")
}

/// The config volume and the egress container.
pub fn objects(ctx: &BottleCtx<'_>) -> Vec<DesiredObject> {
    let eg = &ctx.policy.egress;
    let mount = |f: &str| std::path::Path::new(config::MOUNT).join(f);
    let mut files = Vec::new();
    let mut secrets: Vec<(String, Option<&str>)> = Vec::new();
    let mut routes = Vec::new();
    for (i, r) in eg.routes.iter().enumerate() {
        let auth = r.auth.as_ref().map(|a| {
            files.push(VolumeFile {
                path: token_file(i),
                contents: a.token.expose().as_bytes().to_vec(),
                mode: 0o400,
                uid: ca::SIDECAR_UID,
                gid: ca::SIDECAR_UID,
            });
            secrets.push((token_file(i), Some(a.token.expose())));
            AuthConfig {
                scheme: match &a.scheme {
                    AuthScheme::Bearer => Scheme::Bearer,
                    AuthScheme::Basic => Scheme::Basic,
                    AuthScheme::Header(h) => Scheme::Header(h.clone()),
                },
                token_file: mount(&token_file(i)),
            }
        });
        routes.push(RouteConfig {
            host: r.host.clone(),
            path_prefix: r.path_prefix.clone(),
            tls_passthrough: r.tls_passthrough,
            auth,
        });
    }
    let upstream_ca = eg.upstream_ca.as_ref().map(|f| f.contents.clone());
    let cfg = Config {
        bottle: ctx.bottle.to_string(),
        // From pipelock's policy volume, reloaded when it changes.
        allow: Vec::new(),
        allow_file: Some(
            std::path::Path::new(super::pipelock::POLICY_MOUNT)
                .join(bottle_contract::pipelock::FILE),
        ),
        routes,
        upstream_ca_file: upstream_ca
            .as_ref()
            .map(|_| mount(config::UPSTREAM_CA_FILE)),
        // Every byte out goes through pipelock, the firewall.
        upstream_proxy: Some(PIPELOCK_PROXY.to_string()),
    };
    // serde_json cannot fail on these plain structs.
    let cfg_json = serde_json::to_vec_pretty(&cfg).unwrap_or_default();
    let mut hasher = SpecHasher::new(ctx.key);
    hasher
        .field("config", &cfg_json)
        .secret_field("tokens", secrets.iter().map(|(p, s)| (p.as_str(), *s)));
    if let Some(pem) = &upstream_ca {
        hasher.field("upstream_ca", pem);
        files.push(VolumeFile {
            path: config::UPSTREAM_CA_FILE.into(),
            contents: pem.clone(),
            mode: 0o444,
            uid: ca::SIDECAR_UID,
            gid: ca::SIDECAR_UID,
        });
    }
    files.push(VolumeFile {
        path: config::CONFIG_FILE.into(),
        contents: cfg_json,
        mode: 0o444,
        uid: ca::SIDECAR_UID,
        gid: ca::SIDECAR_UID,
    });
    let vol_hash = hasher.finish();
    let volume = ctx.files_volume(NodeKind::Egress, "egress-config", vol_hash, files, None);
    let vol_key = volume.key.clone();
    let vol_name = vol_key.name.clone();
    let container = sidecar::object_with_mounts(
        ctx,
        SidecarShape {
            node: NodeKind::Egress,
            port: PORT,
            // Not on net-egress: its only way out is pipelock.
            egress_network: false,
            ca_key: true,
            cap_add: &[],
            starts_as_root: false,
            env: Vec::new(),
            agent_netns: false,
        },
        vec![
            Mount::Volume {
                name: vol_name,
                target: config::MOUNT.into(),
                read_only: true,
            },
            Mount::Volume {
                name: ctx.name(super::pipelock::CONFIG_SUFFIX),
                target: super::pipelock::POLICY_MOUNT.into(),
                read_only: true,
            },
        ],
    );
    vec![volume, container]
}

/// The environment the agent needs to go out through egress: proxy variables (both
/// cases: curl reads only the lowercase `http_proxy`), the CA bundle for every common
/// runtime, and the base URL plus a placeholder key for routes with a role.
pub fn agent_env(ctx: &BottleCtx<'_>) -> Vec<(String, String)> {
    let proxy = format!("http://{}:{PORT}", NodeKind::Egress.as_str());
    let no_proxy = [
        NodeKind::Egress,
        NodeKind::Pipelock,
        NodeKind::GitGate,
        NodeKind::Supervise,
    ]
    .iter()
    .map(|k| k.as_str())
    .chain(["localhost", "127.0.0.1", "::1"])
    .collect::<Vec<_>>()
    .join(",");
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| env.push((k.to_string(), v.to_string()));
    for k in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        set(k, &proxy);
    }
    set("NO_PROXY", &no_proxy);
    set("no_proxy", &no_proxy);
    for k in [
        "NODE_EXTRA_CA_CERTS",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "GIT_SSL_CAINFO",
    ] {
        set(k, AGENT_CA_BUNDLE);
    }
    for r in &ctx.policy.egress.routes {
        let base = format!(
            "https://{}{}",
            r.host,
            r.path_prefix.as_deref().unwrap_or("")
        );
        for role in &r.roles {
            match role {
                RouteRole::AnthropicBaseUrl => {
                    set("ANTHROPIC_BASE_URL", &base);
                    set("ANTHROPIC_API_KEY", PLACEHOLDER_KEY);
                    set("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
                }
                RouteRole::OpenaiBaseUrl => {
                    // OpenAI SDKs expect the API version in the base URL.
                    let base = if r.path_prefix.is_some() {
                        base.clone()
                    } else {
                        format!("{base}/v1")
                    };
                    set("OPENAI_BASE_URL", &base);
                    set("OPENAI_API_KEY", PLACEHOLDER_KEY);
                }
                // Codex's own default URL; its stand-in login is in its home.
                RouteRole::ChatgptLogin => {}
            }
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::{ObjectKey, ObjectKind, ObjectSpec};
    use bottle_engine::{ContainerSpec, VolumeSpec};
    use bottle_model::*;

    const TOKEN: &str = "sk-ant-secret-token-123";

    fn policy(token: &str) -> BottlePolicy {
        BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress {
                allow_cidrs: vec![],
                allow: vec!["pypi.org".into()],
                routes: vec![
                    Route {
                        host: "api.anthropic.com".into(),
                        path_prefix: None,
                        auth: Some(RouteAuth {
                            scheme: AuthScheme::Bearer,
                            token: Secret::new(token),
                            var: "TOKEN".into(),
                        }),
                        roles: vec![RouteRole::AnthropicBaseUrl],
                        tls_passthrough: false,
                    },
                    Route {
                        host: "chatgpt.com".into(),
                        path_prefix: None,
                        auth: None,
                        roles: vec![],
                        tls_passthrough: true,
                    },
                ],
                dlp: Dlp::default(),
                upstream_ca: None,
                pipelock_image: None,
                responses: Default::default(),
            },
            git: vec![],
            supervise: false,
        }
    }

    use crate::nodes::with_ctx;

    fn split(objs: &[DesiredObject]) -> (&VolumeSpec, &ContainerSpec) {
        let ObjectSpec::Volume(v) = &objs[0].spec else {
            panic!("volume first")
        };
        let ObjectSpec::Container(c, _) = &objs[1].spec else {
            panic!("container second")
        };
        (v, c)
    }

    #[test]
    fn the_allow_list_comes_from_pipelocks_live_volume_not_the_hash() {
        let p = policy(TOKEN);
        let mut q = policy(TOKEN);
        q.egress.allow.push("late.example".into());
        let a = with_ctx(&p, objects);
        let b = with_ctx(&q, objects);
        assert_eq!(a[0].hash.hash, b[0].hash.hash);
        assert_eq!(a[1].hash.hash, b[1].hash.hash);
        let (v, c) = split(&a);
        let cfg = v.files.iter().find(|f| f.path == "config.json").unwrap();
        let parsed: Config = serde_json::from_slice(&cfg.contents).unwrap();
        assert!(parsed.allow.is_empty());
        assert_eq!(
            parsed.allow_file.as_deref(),
            Some(std::path::Path::new("/etc/bottle/policy/config.json"))
        );
        let policy_vol = ObjectKey::new(ObjectKind::Volume, "bottle-p-b-pipelock-config");
        assert!(a[1].binds.contains(&policy_vol));
        assert!(c.mounts.contains(&Mount::Volume {
            name: policy_vol.name.clone(),
            target: super::super::pipelock::POLICY_MOUNT.into(),
            read_only: true,
        }));
    }

    #[test]
    fn token_is_only_in_its_0400_file() {
        let p = policy(TOKEN);
        let objs = with_ctx(&p, objects);
        let (v, c) = split(&objs);
        assert_eq!(v.name, "bottle-p-b-egress-config");
        let tok = v.files.iter().find(|f| f.path == "token-0").unwrap();
        assert_eq!(tok.contents, TOKEN.as_bytes());
        assert_eq!((tok.mode, tok.uid), (0o400, 65534));
        let cfg = v.files.iter().find(|f| f.path == "config.json").unwrap();
        let text = String::from_utf8(cfg.contents.clone()).unwrap();
        assert!(!text.contains(TOKEN) && text.contains("/etc/bottle/egress/token-0"));
        let parsed: Config = serde_json::from_str(&text).unwrap();
        assert!(parsed.routes[1].tls_passthrough);
        let visible = format!("{:?} {:?} {:?} {:?}", c, v, objs[0].hash, objs[1].hash);
        assert!(!visible.contains(TOKEN), "{visible}");
        assert!(c.mounts.iter().any(|m| matches!(m,
            Mount::Volume { name, read_only: true, .. } if name == &v.name)));
        assert!(objs[1].binds.contains(&objs[0].key));
    }

    #[test]
    fn a_changed_token_changes_the_volume_hash_only_through_the_tokens_field() {
        let (a, b) = (policy(TOKEN), policy("another-token"));
        let oa = with_ctx(&a, objects);
        let ob = with_ctx(&b, objects);
        assert_ne!(oa[0].hash.hash, ob[0].hash.hash);
        assert_ne!(oa[0].hash.fields["tokens"], ob[0].hash.fields["tokens"]);
        assert_eq!(oa[0].hash.fields["config"], ob[0].hash.fields["config"]);
    }

    #[test]
    fn agent_env_points_at_the_proxy_and_carries_no_secret() {
        let p = policy(TOKEN);
        let env = with_ctx(&p, agent_env);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("HTTPS_PROXY"), Some("http://egress:3128"));
        assert_eq!(get("http_proxy"), Some("http://egress:3128"));
        assert!(get("NO_PROXY").unwrap().contains("egress"));
        assert_eq!(get("NODE_EXTRA_CA_CERTS"), Some(AGENT_CA_BUNDLE));
        assert_eq!(get("ANTHROPIC_BASE_URL"), Some("https://api.anthropic.com"));
        assert_eq!(get("ANTHROPIC_API_KEY"), Some(PLACEHOLDER_KEY));
        assert!(!format!("{env:?}").contains(TOKEN));
    }
}
