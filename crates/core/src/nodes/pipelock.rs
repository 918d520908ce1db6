//! The `pipelock` node: the firewall on the way out (default-deny allowlist, SSRF guard,
//! DLP, audit log; see `sidecar::pipelock`).
//!
//! Objects: a live config volume `<bottle>-pipelock-config` (with its revision marker,
//! see [`BottleCtx::live_volume`]) holding the policy rendered from the manifest and the
//! approved grants (`egress.allow`, route hosts, passthrough hosts, the header egress
//! injects per route, DLP rules, `egress.upstream_ca`), and the container, which mounts
//! it read-only. A policy change rewrites the file in place and the sidecar reloads it
//! (`sidecar::reload`): nothing restarts, the agent included. egress mounts the same
//! volume for its allow list ([`POLICY_MOUNT`]). pipelock intercepts TLS with leaves
//! minted from the bottle CA, so it mounts the CA volume (key included), like egress.
//!
//! Our own pipelock starts as root with [`GATEWAY_CAPS`] to hold net-internal's
//! gateway address (the agent's DNS server, and where agent-net reports attempts to
//! leave without the proxy), then drops to the
//! sidecar user for good before it reads its config or the CA key; it never routes
//! (`net.ipv4.ip_forward=0`, as every dual-homed sidecar). See
//! `sidecar::pipelock::sink`. With `pipelock.image` the foreign image runs as the
//! sidecar user without capabilities, and nobody holds the gateway.

use super::sidecar::{self, SidecarShape};
use super::upstream_yaml;
use super::{BottleCtx, DesiredObject, NodeKind, ObjectSpec, ca};
use crate::hash::SpecHasher;
use bottle_contract::pipelock::GATEWAY_ENV;
use bottle_contract::pipelock::{self as config, Config, DlpConfig, RouteHeader};
use bottle_engine::{Mount, VolumeFile};
use bottle_model::AuthScheme;

pub use bottle_contract::pipelock::PORT;

/// Suffix of the config volume's name.
pub const CONFIG_SUFFIX: &str = "pipelock-config";
/// Where egress mounts pipelock's config volume, to follow its allow list.
pub const POLICY_MOUNT: &str = "/etc/bottle/policy";
/// What our own pipelock needs, as root, until it drops them all: add the gateway
/// address (`NET_ADMIN`), bind DNS on it (`NET_BIND_SERVICE`), become the sidecar
/// user (`SETUID`, `SETGID`).
pub const GATEWAY_CAPS: &[&str] = &["NET_ADMIN", "NET_BIND_SERVICE", "SETUID", "SETGID"];

/// The configuration the sidecar gets, rendered from the bottle's policy.
pub fn render(ctx: &BottleCtx<'_>) -> Config {
    let egress = &ctx.policy.egress;
    // Read (and compiled) when the manifest was loaded.
    let rules_toml = match &egress.dlp.rules {
        Some(file) if egress.dlp.enabled => Some(file.text()),
        _ => None,
    };
    Config {
        allow: egress.allow.clone(),
        routes: egress.routes.iter().map(|r| r.host.clone()).collect(),
        allow_cidrs: egress.allow_cidrs.clone(),
        dlp: DlpConfig {
            enabled: egress.dlp.enabled,
            rules_toml,
            rules_error: None,
        },
        passthrough: egress
            .routes
            .iter()
            .filter(|r| r.tls_passthrough)
            .map(|r| r.host.clone())
            .collect(),
        route_headers: egress
            .routes
            .iter()
            .filter(|r| !r.tls_passthrough)
            .map(|r| RouteHeader {
                host: r.host.clone(),
                path_prefix: r.path_prefix.clone(),
                header: r.auth.as_ref().map(|a| match &a.scheme {
                    AuthScheme::Bearer | AuthScheme::Basic => "authorization".to_string(),
                    AuthScheme::Header(h) => h.to_ascii_lowercase(),
                }),
                model: !r.roles.is_empty(),
            })
            .collect(),
        upstream_ca: egress.upstream_ca.as_ref().map(|f| f.text()),
        responses: egress.responses,
    }
}

/// The config volume and the container: `bottle sidecar pipelock` with the JSON
/// config, or, with `pipelock.image`, that image with the policy in its own YAML
/// schema (see `sidecar::pipelock::upstream_yaml`).
pub fn objects(ctx: &BottleCtx<'_>) -> Vec<DesiredObject> {
    let cfg = render(ctx);
    let image = ctx.policy.egress.pipelock_image.as_deref();
    let json = cfg.to_json();
    let file = |path: &str, contents: &str| VolumeFile {
        path: path.into(),
        contents: contents.as_bytes().to_vec(),
        mode: 0o444,
        uid: ca::SIDECAR_UID,
        gid: ca::SIDECAR_UID,
    };
    // config.json always: egress follows its allow list.
    let mut files = vec![file(config::FILE, &json)];
    let mut hasher = SpecHasher::new(ctx.key);
    hasher.field("config", &json);
    let mount = match image {
        None => config::MOUNT,
        Some(_) => {
            let dir = std::path::Path::new(ca::MOUNT);
            let yaml = upstream_yaml::render(
                &cfg,
                &dir.join(ca::CERT_FILE).to_string_lossy(),
                &dir.join(ca::KEY_FILE).to_string_lossy(),
                PORT,
            );
            hasher.field("upstream-yaml", &yaml);
            files.push(file(upstream_yaml::FILE, &yaml));
            upstream_yaml::MOUNT
        }
    };
    let [volume, revision] =
        ctx.live_volume(NodeKind::Pipelock, CONFIG_SUFFIX, hasher.finish(), files);
    let vol_key = volume.key.clone();
    let vol_name = vol_key.name.clone();
    // Our own sidecar starts as root to take net-internal's gateway address, then
    // drops to the sidecar user before reading anything (`sidecar::pipelock::sink`).
    // A foreign image keeps the sidecar user and gets no capability.
    let own = image.is_none();
    let mut env = vec![(
        // Names the mount below, so the mount is part of the container's hash.
        config::ENV.to_string(),
        format!("{}/{}", config::MOUNT, config::FILE),
    )];
    if own {
        env.push((GATEWAY_ENV.to_string(), "1".to_string()));
    }
    let mut container = sidecar::object(
        ctx,
        SidecarShape {
            node: NodeKind::Pipelock,
            port: PORT,
            egress_network: true,
            ca_key: true,
            cap_add: if own { GATEWAY_CAPS } else { &[] },
            starts_as_root: own,
            env,
            agent_netns: false,
        },
    );
    if let ObjectSpec::Container(spec, _) = &mut container.spec {
        spec.mounts.push(Mount::Volume {
            name: vol_name,
            target: mount.into(),
            read_only: true,
        });
        if let Some(image) = image {
            let cmd = upstream_yaml::command(PORT);
            container.hash = SpecHasher::new(ctx.key)
                .field("sidecar", &container.hash.hash)
                .field("image", image)
                .field("cmd", cmd.join("\0"))
                .finish();
            spec.image = image.to_string();
            spec.cmd = cmd;
            // Nothing of ours runs in a foreign image: running is ready.
            spec.probe = None;
            spec.labels = ctx.labels(NodeKind::Pipelock, &container.hash);
        }
    }
    container.binds.push(vol_key);
    vec![volume, revision, container]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottle_model::*;

    fn objects_for(egress: Egress) -> Vec<DesiredObject> {
        let policy = BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::default(),
            env: Default::default(),
            egress,
            git: vec![],
            supervise: false,
        };
        crate::nodes::with_ctx(&policy, objects)
    }

    #[test]
    fn config_volume_is_mounted_and_bound() {
        let objs = objects_for(Egress {
            allow: vec!["pypi.org".into(), "*.pythonhosted.org".into()],
            ..Default::default()
        });
        let [vol, _rev, c] = &objs[..] else { panic!() };
        assert_eq!(vol.key.name, "bottle-p-b-pipelock-config");
        let ObjectSpec::Volume(v) = &vol.spec else {
            panic!()
        };
        let cfg: Config = serde_json::from_slice(&v.files[0].contents).unwrap();
        assert_eq!(cfg.allow, ["pypi.org", "*.pythonhosted.org"]);
        assert!(cfg.dlp.enabled);
        let ObjectSpec::Container(spec, _) = &c.spec else {
            panic!()
        };
        assert!(spec.mounts.contains(&Mount::Volume {
            name: vol.key.name.clone(),
            target: config::MOUNT.into(),
            read_only: true,
        }));
        assert!(c.binds.contains(&vol.key));
        assert!(spec.env.iter().any(|e| e.starts_with(config::ENV)));
        // pipelock mints leaves: it mounts the CA volume, read-only.
        assert!(spec.mounts.iter().any(
            |m| matches!(m, Mount::Volume { target, read_only: true, .. } if target == ca::MOUNT)
        ));
    }

    #[test]
    fn a_policy_change_is_a_new_revision_of_the_same_volume() {
        let a = objects_for(Egress::default());
        let b = objects_for(Egress {
            allow: vec!["example.org".into()],
            ..Default::default()
        });
        // The volume and the container stay; only the revision marker differs.
        assert_eq!(a[0].hash.hash, b[0].hash.hash);
        assert_eq!(a[2].hash.hash, b[2].hash.hash);
        assert_ne!(a[1].hash.hash, b[1].hash.hash);
        assert_ne!(a[1].key, b[1].key);
        let ObjectSpec::Revision(r) = &b[1].spec else {
            panic!()
        };
        assert_eq!(r.content.name, b[0].key.name);
        let cfg: Config = serde_json::from_slice(&r.content.files[0].contents).unwrap();
        assert_eq!(cfg.allow, ["example.org"]);
        // The rules file was read when the manifest was loaded (an unreadable one is a
        // manifest error): its text is what pipelock gets.
        let c = objects_for(Egress {
            dlp: Dlp {
                enabled: true,
                rules: Some(bottle_model::HostFile {
                    path: "/r/rules.toml".into(),
                    contents: b"[[rules]]\nid = 'x'\nregex = 'x'\n".to_vec(),
                }),
            },
            ..Default::default()
        });
        let ObjectSpec::Volume(v) = &c[0].spec else {
            panic!()
        };
        let cfg: Config = serde_json::from_slice(&v.files[0].contents).unwrap();
        assert_eq!(
            cfg.dlp.rules_toml.as_deref(),
            Some("[[rules]]\nid = 'x'\nregex = 'x'\n")
        );
        assert!(cfg.dlp.rules_error.is_none());
    }

    #[test]
    fn routes_render_their_passthrough_and_injected_header() {
        let route = |host: &str, scheme: Option<AuthScheme>, pass: bool| Route {
            host: host.into(),
            path_prefix: None,
            auth: scheme.map(|scheme| RouteAuth {
                scheme,
                token: Secret::new("tok-not-rendered"),
                var: "TOKEN".into(),
            }),
            roles: vec![],
            tls_passthrough: pass,
        };
        let policy = BottlePolicy {
            image: ImageSource::ProviderDefault,
            runtime: RuntimeChoice::Auto,
            resources: Resources::default(),
            env: Default::default(),
            egress: Egress {
                routes: vec![
                    route("a.test", Some(AuthScheme::Bearer), false),
                    route(
                        "b.test",
                        Some(AuthScheme::Header("X-Api-Key".into())),
                        false,
                    ),
                    route("c.test", None, true),
                ],
                ..Default::default()
            },
            git: vec![],
            supervise: false,
        };
        let cfg = crate::nodes::with_ctx(&policy, render);
        assert_eq!(cfg.passthrough, ["c.test"]);
        let headers: Vec<_> = cfg
            .route_headers
            .iter()
            .map(|r| (r.host.as_str(), r.header.as_deref()))
            .collect();
        assert_eq!(
            headers,
            [
                ("a.test", Some("authorization")),
                ("b.test", Some("x-api-key"))
            ]
        );
        assert!(!cfg.to_json().contains("tok-not-rendered"));
    }

    #[test]
    fn responses_policy_renders_with_block_by_default_and_model_routes_marked() {
        let cfg = crate::nodes::with_ctx(
            &BottlePolicy {
                image: ImageSource::ProviderDefault,
                runtime: RuntimeChoice::Auto,
                resources: Resources::default(),
                env: Default::default(),
                egress: Egress {
                    routes: vec![
                        Route {
                            host: "api.anthropic.com".into(),
                            path_prefix: None,
                            auth: None,
                            roles: vec![RouteRole::AnthropicBaseUrl],
                            tls_passthrough: false,
                        },
                        Route {
                            host: "api.example".into(),
                            path_prefix: None,
                            auth: None,
                            roles: vec![],
                            tls_passthrough: false,
                        },
                    ],
                    ..Default::default()
                },
                git: vec![],
                supervise: false,
            },
            render,
        );
        assert_eq!(cfg.responses, config::Responses::Block);
        assert!(cfg.to_json().contains("\"responses\": \"block\""));
        let model: Vec<_> = cfg
            .route_headers
            .iter()
            .map(|r| (r.host.as_str(), r.model))
            .collect();
        assert_eq!(model, [("api.anthropic.com", true), ("api.example", false)]);
        for (mode, word) in [
            (config::Responses::Warn, "warn"),
            (config::Responses::Off, "off"),
        ] {
            let objs = objects_for(Egress {
                responses: mode,
                ..Default::default()
            });
            let ObjectSpec::Volume(v) = &objs[0].spec else {
                panic!()
            };
            let cfg: Config = serde_json::from_slice(&v.files[0].contents).unwrap();
            assert_eq!(cfg.responses, mode);
            assert_eq!(mode.as_str(), word);
        }
        // A policy change is a revision of the live volume: nothing restarts.
        let a = objects_for(Egress::default());
        let b = objects_for(Egress {
            responses: config::Responses::Off,
            ..Default::default()
        });
        assert_eq!(a[2].hash.hash, b[2].hash.hash);
        assert_ne!(a[1].hash.hash, b[1].hash.hash);
    }

    #[test]
    fn our_pipelock_starts_as_root_to_take_the_gateway_and_never_routes() {
        let objs = objects_for(Egress::default());
        let ObjectSpec::Container(spec, _) = &objs[2].spec else {
            panic!()
        };
        assert_eq!(spec.user, "0:0");
        assert_eq!(spec.cap_add, GATEWAY_CAPS);
        assert!(spec.env.iter().any(|e| e == &format!("{}=1", GATEWAY_ENV)));
        assert_eq!(
            spec.sysctls.get(sidecar::IP_FORWARD).map(String::as_str),
            Some("0")
        );
        let foreign = objects_for(Egress {
            pipelock_image: Some("ghcr.io/luckypipewrench/pipelock:2.3.0".into()),
            ..Default::default()
        });
        let ObjectSpec::Container(spec, _) = &foreign[2].spec else {
            panic!()
        };
        assert_eq!(spec.user, format!("{0}:{0}", ca::SIDECAR_UID));
        assert!(
            spec.cap_add.is_empty(),
            "a foreign image gets no capability"
        );
        assert!(!spec.env.iter().any(|e| e.starts_with(GATEWAY_ENV)));
        assert_eq!(
            spec.sysctls.get(sidecar::IP_FORWARD).map(String::as_str),
            Some("0")
        );
    }

    #[test]
    fn pipelock_image_runs_that_image_with_the_yaml_config() {
        let objs = objects_for(Egress {
            allow: vec!["pypi.org".into()],
            pipelock_image: Some("ghcr.io/luckypipewrench/pipelock:2.3.0".into()),
            ..Default::default()
        });
        let [vol, _rev, c] = &objs[..] else { panic!() };
        let ObjectSpec::Volume(v) = &vol.spec else {
            panic!()
        };
        assert_eq!(v.files[0].path, config::FILE, "egress follows config.json");
        assert_eq!(v.files[1].path, upstream_yaml::FILE);
        let yaml = String::from_utf8(v.files[1].contents.clone()).unwrap();
        assert!(
            yaml.contains("mode: strict") && yaml.contains("\"pypi.org\""),
            "{yaml}"
        );
        assert!(yaml.contains("ca_key: \"/etc/bottle/ca/ca.key\""), "{yaml}");
        let ObjectSpec::Container(spec, _) = &c.spec else {
            panic!()
        };
        assert_eq!(spec.image, "ghcr.io/luckypipewrench/pipelock:2.3.0");
        assert_eq!(spec.cmd[0], "run");
        assert!(spec.mounts.contains(&Mount::Volume {
            name: vol.key.name.clone(),
            target: upstream_yaml::MOUNT.into(),
            read_only: true,
        }));
        let plain = objects_for(Egress {
            allow: vec!["pypi.org".into()],
            ..Default::default()
        });
        assert_ne!(plain[2].hash.hash, c.hash.hash, "the image is in the hash");
    }
}
