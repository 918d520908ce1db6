//! What an agent's `host_login` (Codex on the host's ChatGPT login) and
//! `remote_control` (Claude Code) put into its bottle's desired state: the routes, the
//! hosts pipelock allows, the header it exempts, the agent's stand-in login and
//! environment; and that the real token is nowhere but egress's token file.

use std::collections::BTreeMap;

use crate::apply::tests::desired;
use crate::graph::DesiredState;
use crate::nodes::{DesiredObject, ObjectSpec};
use bottle_contract::egress::{Config as EgressConfig, Scheme};
use bottle_contract::pipelock::Config as PipelockConfig;
use bottle_engine::VolumeFile;
use bottle_model::*;

const ACCESS: &str = "eyJhbGciOiJSUzI1NiJ9.real-host-access-token.c2ln";
const REFRESH: &str = "rt_real-host-refresh-token";

fn login(access: &str) -> codex_login::CodexLogin {
    let text = codex_login::host_auth_json(access, REFRESH, "acct-9", "me@example.com");
    codex_login::CodexLogin {
        path: "/home/u/.codex/auth.json".into(),
        ..codex_login::parse(text.as_bytes()).expect("a login")
    }
}

fn manifest(provider: Provider, host_login: Option<codex_login::CodexLogin>, rc: bool) -> Manifest {
    let policy = BottlePolicy {
        image: ImageSource::ProviderDefault,
        runtime: RuntimeChoice::Runc,
        resources: Resources::default(),
        env: BTreeMap::new(),
        egress: Egress {
            allow: vec!["pypi.org".into()],
            ..Egress::default()
        },
        git: vec![],
        supervise: true,
    };
    let agent = Agent {
        bottle: "dev".into(),
        provider,
        prompt: Some("be careful".into()),
        skills: vec![],
        workspace: None,
        host_login,
        remote_control: rc,
    };
    Manifest {
        path: "/m/bottles.yaml".into(),
        project: "p".into(),
        bottles: BTreeMap::from([("dev".into(), policy)]),
        agents: BTreeMap::from([("a".into(), agent)]),
    }
}

fn object<'d>(d: &'d DesiredState, name: &str) -> &'d DesiredObject {
    d.objects
        .values()
        .find(|o| o.key.name == name)
        .unwrap_or_else(|| panic!("no {name}"))
}

fn files(o: &DesiredObject) -> &[VolumeFile] {
    match &o.spec {
        ObjectSpec::Volume(v) => &v.files,
        ObjectSpec::Revision(r) => &r.content.files,
        other => panic!("{} is no volume: {other:?}", o.key),
    }
}

fn file<'o>(o: &'o DesiredObject, path: &str) -> &'o VolumeFile {
    files(o)
        .iter()
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no {path} in {}", o.key))
}

fn egress_config(d: &DesiredState) -> EgressConfig {
    let vol = object(d, "bottle-p-a-egress-config");
    serde_json::from_slice(&file(vol, "config.json").contents).expect("egress config")
}

fn pipelock_config(d: &DesiredState) -> PipelockConfig {
    let marker = d
        .objects
        .values()
        .find(|o| o.key.name.starts_with("bottle-p-a-pipelock-config-rev-"))
        .expect("pipelock revision");
    serde_json::from_slice(&file(marker, "config.json").contents).expect("pipelock config")
}

fn env(d: &DesiredState) -> Vec<String> {
    match &object(d, "bottle-p-a-agent").spec {
        ObjectSpec::Container(c, _) => c.env.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn host_login_routes_the_codex_backend_with_the_hosts_token_in_egress_only() {
    let d = desired(&manifest(Provider::Codex, Some(login(ACCESS)), false));

    // egress: one route, the model path of the ChatGPT backend, a bearer from a file.
    let cfg = egress_config(&d);
    let route = cfg
        .routes
        .iter()
        .find(|r| r.host == codex_login::HOST)
        .expect("a chatgpt.com route");
    assert_eq!(route.path_prefix.as_deref(), Some(codex_login::PATH_PREFIX));
    assert!(!route.tls_passthrough);
    let auth = route.auth.as_ref().expect("a credential");
    assert_eq!(auth.scheme, Scheme::Bearer);
    let token_file = auth.token_file.file_name().unwrap().to_str().unwrap();
    let vol = object(&d, "bottle-p-a-egress-config");
    let token = file(vol, token_file);
    assert_eq!(token.contents, ACCESS.as_bytes());
    assert_eq!((token.mode, token.uid), (0o400, 65534));

    // pipelock: the host allowed, only the injected header exempt, on that path only;
    // a model route (its responses are the agent's model's output).
    let pl = pipelock_config(&d);
    assert!(pl.routes.contains(&codex_login::HOST.to_string()));
    assert!(!pl.passthrough.contains(&codex_login::HOST.to_string()));
    let rh = pl
        .route_headers
        .iter()
        .find(|h| h.host == codex_login::HOST)
        .expect("route header");
    assert_eq!(rh.path_prefix.as_deref(), Some(codex_login::PATH_PREFIX));
    assert_eq!(rh.header.as_deref(), Some("authorization"));
    assert!(rh.model);

    // The agent: a stand-in login in its home (0600, its own), the real token nowhere.
    let home = object(&d, "bottle-p-a-home");
    let auth_json = file(home, codex_login::AGENT_FILE);
    assert_eq!((auth_json.mode, auth_json.uid), (0o600, 1000));
    let text = String::from_utf8(auth_json.contents.clone()).unwrap();
    assert_eq!(text, login(ACCESS).agent_auth_json());
    assert!(text.contains("acct-9") && text.contains(codex_login::PLACEHOLDER));
    for o in d.objects.values().filter(|o| o.key.name != vol.key.name) {
        let seen = format!("{o:?} {:?}", files_of(o));
        for secret in [ACCESS, REFRESH, "real-host"] {
            assert!(!seen.contains(secret), "{secret} in {}", o.key);
        }
    }
    assert!(
        !env(&d)
            .iter()
            .any(|e| e.contains("OPENAI") || e.contains(ACCESS))
    );
    assert!(
        !format!("{:?}", vol).contains(ACCESS),
        "Debug redacts volume files"
    );
}

/// The contents of a volume's files, as text (empty for other objects).
fn files_of(o: &DesiredObject) -> String {
    match &o.spec {
        ObjectSpec::Volume(_) | ObjectSpec::Revision(_) => files(o)
            .iter()
            .map(|f| String::from_utf8_lossy(&f.contents).into_owned())
            .collect(),
        _ => String::new(),
    }
}

#[test]
fn a_token_refreshed_on_the_host_remakes_egress_and_leaves_the_agent_alone() {
    let a = desired(&manifest(Provider::Codex, Some(login(ACCESS)), false));
    let b = desired(&manifest(
        Provider::Codex,
        Some(login("eyJ.refreshed.token")),
        false,
    ));
    let changed: Vec<&str> = a
        .objects
        .values()
        .filter(|o| {
            b.objects
                .get(&o.key)
                .is_none_or(|n| n.hash.hash != o.hash.hash)
        })
        .map(|o| o.key.name.as_str())
        .collect();
    // Only egress's config volume: its container binds it and is made anew with it;
    // nothing of the agent binds either.
    assert_eq!(changed, ["bottle-p-a-egress-config"]);
    let volume = &object(&a, "bottle-p-a-egress-config").key;
    assert!(object(&a, "bottle-p-a-egress").binds.contains(volume));
    for o in a
        .objects
        .values()
        .filter(|o| o.node == crate::nodes::NodeKind::Agent)
    {
        assert!(!o.binds.contains(volume), "{} binds egress", o.key);
    }
}

#[test]
fn without_host_login_nothing_is_routed_to_chatgpt() {
    let d = desired(&manifest(Provider::Codex, None, false));
    assert!(egress_config(&d).routes.is_empty());
    assert!(pipelock_config(&d).routes.is_empty());
    let home = object(&d, "bottle-p-a-home");
    assert!(
        !files(home)
            .iter()
            .any(|f| f.path == codex_login::AGENT_FILE)
    );
}

#[test]
fn remote_control_tunnels_its_hosts_and_turns_the_flag_on() {
    let d = desired(&manifest(Provider::Claude, None, true));
    let hosts = provider::REMOTE_CONTROL_HOSTS;
    let cfg = egress_config(&d);
    for host in hosts {
        let r = cfg
            .routes
            .iter()
            .find(|r| r.host == *host)
            .unwrap_or_else(|| panic!("no route to {host}"));
        assert!(r.tls_passthrough && r.auth.is_none() && r.path_prefix.is_none());
    }
    assert_eq!(cfg.routes.len(), hosts.len());
    let pl = pipelock_config(&d);
    for host in hosts {
        assert!(pl.routes.contains(&host.to_string()), "{host} allowed");
        assert!(
            pl.passthrough.contains(&host.to_string()),
            "{host} tunnelled"
        );
    }
    assert!(
        pl.route_headers.is_empty(),
        "nothing injected, nothing exempt"
    );
    let e = env(&d);
    assert!(
        e.contains(&format!("{}=1", provider::REMOTE_CONTROL_ENV)),
        "{e:?}"
    );
    // `bottle exec` runs the provider's session command, which reads that variable.
    assert!(Provider::Claude.session_command()[2].contains(provider::REMOTE_CONTROL_ENV));

    // Off: no route, no variable.
    let off = desired(&manifest(Provider::Claude, None, false));
    assert!(egress_config(&off).routes.is_empty());
    assert!(
        !env(&off)
            .iter()
            .any(|e| e.starts_with(provider::REMOTE_CONTROL_ENV))
    );
}
