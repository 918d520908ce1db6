//! `bottle sidecar cni`: netlock as a chained CNI plugin on the node (CNI spec 0.4.0;
//! docs/design.md section 9.5). Under gVisor nothing inside the pod can write nf_tables
//! (its `NETLINK_NETFILTER` socket is refused), so the node writes the agent pod's lock
//! instead, into the pod's network namespace, before any of its containers exists.
//!
//! The container runtime runs the plugin after the bridge plugin, with `CNI_COMMAND`,
//! `CNI_NETNS` and `CNI_ARGS` (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`) in its environment
//! and the network's config on stdin (`kubeconfig`: the file it reads the pod with;
//! `prevResult`: the bridge's result, passed on untouched). On `ADD` for a pod that
//! carries [`ANNOTATION`] (the endpoints, `ADDR:PORT` separated by spaces), it enters the
//! namespace in a thread of its own and runs [`super::lock`]: the same table, written by
//! the same builder in one transaction, then [`super::prove`]n. A pod without the
//! annotation passes through untouched; a malformed annotation, an unreadable pod, or a
//! lock that fails is an `ADD` error, and the runtime makes no sandbox (fails closed).
//! `CHECK` proves an annotated pod's lock again; `DEL` has nothing to undo (the table
//! goes with the namespace). Errors are CNI error objects on stdout, exit status 1.
//!
//! The pure parts (the environment, the config, the annotation, the replies) are
//! functions tested below; reading the pod and entering the namespace are not.

use std::io::Read;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::{LockError, nft};

pub use bottle_contract::netlock::{ANNOTATION, annotation};

/// The CNI versions this plugin speaks.
pub const VERSIONS: [&str; 3] = ["0.3.0", "0.3.1", "0.4.0"];

/// At most this much config on stdin (a conflist entry and the previous result).
pub const MAX_CONFIG: usize = 1 << 20;

/// At most this long an annotation: [`nft::MAX_ENDPOINTS`] of the longest `ADDR:PORT`
/// (21 bytes) and a separator each.
pub const MAX_ANNOTATION: usize = nft::MAX_ENDPOINTS * 22;

/// At most this long to read the pod from the API server.
const API_TIMEOUT: Duration = Duration::from_secs(15);

/// At most this long one environment value (`CNI_ARGS`, `CNI_NETNS`).
const MAX_ENV: usize = 4096;

/// Why `ADD` or `CHECK` failed; each is a CNI error code ([`CniError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("unsupported CNI version {0:?}")]
    Version(String),
    #[error("invalid environment: {0}")]
    Env(String),
    #[error("reading the network config: {0}")]
    Decode(String),
    #[error("invalid network config: {0}")]
    Config(String),
    #[error("reading pod {0}: {1}")]
    Api(String, String),
    #[error("pod {0}: annotation {ANNOTATION}: {1}")]
    Annotation(String, String),
    #[error("entering the pod's network namespace {0}: {1}")]
    Netns(PathBuf, String),
    #[error("pod {0}: {1}")]
    Lock(String, #[source] LockError),
}

impl CniError {
    /// The spec's codes (1 version, 4 environment, 6 decoding, 7 config); above 99 this
    /// plugin's own.
    pub fn code(&self) -> u32 {
        match self {
            CniError::Version(_) => 1,
            CniError::Env(_) => 4,
            CniError::Decode(_) => 6,
            CniError::Config(_) => 7,
            CniError::Api(..) => 100,
            CniError::Annotation(..) => 101,
            CniError::Netns(..) => 102,
            CniError::Lock(..) => 103,
        }
    }
}

/// What the runtime asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Add,
    Del,
    Check,
    Version,
}

/// The invocation, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub cmd: Cmd,
    /// `CNI_NETNS`: the pod's network namespace (required for `ADD` and `CHECK`).
    pub netns: Option<PathBuf>,
    /// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` from `CNI_ARGS`, when both are there.
    pub pod: Option<(String, String)>,
}

/// Reads the invocation through `var` (the process environment in [`run`]).
pub fn invocation(var: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
    let get = |k: &str| -> Result<Option<String>, CniError> {
        match var(k) {
            Some(v) if v.len() > MAX_ENV => Err(CniError::Env(format!("{k} is too long"))),
            v => Ok(v.filter(|v| !v.is_empty())),
        }
    };
    let cmd = match get("CNI_COMMAND")?.as_deref() {
        Some("ADD") => Cmd::Add,
        Some("DEL") => Cmd::Del,
        Some("CHECK") => Cmd::Check,
        Some("VERSION") => Cmd::Version,
        Some(other) => return Err(CniError::Env(format!("unknown CNI_COMMAND {other:?}"))),
        None => return Err(CniError::Env("CNI_COMMAND is not set".into())),
    };
    let netns = get("CNI_NETNS")?.map(PathBuf::from);
    if matches!(cmd, Cmd::Add | Cmd::Check) && netns.is_none() {
        return Err(CniError::Env("CNI_NETNS is not set".into()));
    }
    let args = get("CNI_ARGS")?.unwrap_or_default();
    let mut ns = None;
    let mut name = None;
    for kv in args.split(';').filter(|s| !s.is_empty()) {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CniError::Env(format!("CNI_ARGS: {kv:?} is not KEY=VALUE")));
        };
        match k {
            "K8S_POD_NAMESPACE" => ns = Some(v.to_owned()),
            "K8S_POD_NAME" => name = Some(v.to_owned()),
            _ => {}
        }
    }
    let pod = match (ns, name) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Some((ns, name)),
        _ => None,
    };
    Ok(Invocation { cmd, netns, pod })
}

/// The network config on stdin, as far as this plugin reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: String,
    /// The kubeconfig the pod is read with (the node's own, in the test cluster).
    pub kubeconfig: Option<PathBuf>,
    /// The previous plugin's result, passed on as it is.
    pub prev_result: Option<Value>,
}

/// Parses the config; its version must be one of [`VERSIONS`].
pub fn parse_config(bytes: &[u8]) -> Result<NetConf, CniError> {
    if bytes.len() > MAX_CONFIG {
        return Err(CniError::Decode(format!("more than {MAX_CONFIG} bytes")));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|e| CniError::Decode(e.to_string()))?;
    let Some(o) = v.as_object() else {
        return Err(CniError::Decode("not a JSON object".into()));
    };
    let cni_version = match o.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(CniError::Config("no cniVersion".into())),
    };
    if !VERSIONS.contains(&cni_version.as_str()) {
        return Err(CniError::Version(cni_version));
    }
    let kubeconfig = match o.get("kubeconfig") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
        Some(_) => return Err(CniError::Config("kubeconfig is not a path".into())),
    };
    let prev_result = match o.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(r @ Value::Object(_)) => Some(r.clone()),
        Some(_) => return Err(CniError::Config("prevResult is not an object".into())),
    };
    Ok(NetConf {
        cni_version,
        kubeconfig,
        prev_result,
    })
}

/// The endpoints an annotation names (`ADDR:PORT` separated by spaces), bounded as
/// netlock's own arguments are.
pub fn endpoints_of(annotation: &str) -> Result<Vec<SocketAddrV4>, String> {
    if annotation.len() > MAX_ANNOTATION {
        return Err(format!("longer than {MAX_ANNOTATION} bytes"));
    }
    let words: Vec<String> = annotation.split_whitespace().map(str::to_owned).collect();
    super::parse_endpoints(&words).map_err(|e| e.to_string())
}

/// `ADD`'s result: the previous result passed on in the config's version (an empty one
/// when this plugin is first in its chain).
pub fn add_result(conf: &NetConf) -> Value {
    let mut r = conf
        .prev_result
        .clone()
        .unwrap_or_else(|| json!({"interfaces": [], "ips": [], "dns": {}}));
    if let Some(o) = r.as_object_mut() {
        o.insert("cniVersion".into(), Value::String(conf.cni_version.clone()));
    }
    r
}

/// `VERSION`'s answer.
pub fn version_result() -> Value {
    json!({"cniVersion": "0.4.0", "supportedVersions": VERSIONS})
}

/// A CNI error object.
pub fn error_result(version: &str, e: &CniError) -> Value {
    json!({
        "cniVersion": version,
        "code": e.code(),
        "msg": e.to_string(),
        "details": bottle_contract::ErrorChain(e).to_string(),
    })
}

/// Runs the plugin on the process's environment and stdin; returns its exit status
/// after printing its reply.
pub async fn run() -> i32 {
    let mut input = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(MAX_CONFIG as u64 + 1)
        .read_to_end(&mut input);
    let conf = match read {
        Err(e) => Err(CniError::Decode(e.to_string())),
        Ok(_) => parse_config(&input),
    };
    let version = conf
        .as_ref()
        .map_or_else(|_| "0.4.0".into(), |c| c.cni_version.clone());
    let reply = serve(conf).await;
    match reply {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            tracing::error!(error = %bottle_contract::ErrorChain(&e), "netlock cni");
            println!("{}", error_result(&version, &e));
            1
        }
    }
}

/// The reply to this invocation, with its config as read from stdin (which `VERSION`
/// does not need).
async fn serve(conf: Result<NetConf, CniError>) -> Result<Option<Value>, CniError> {
    let inv = invocation(|k| std::env::var(k).ok())?;
    if inv.cmd == Cmd::Version {
        return Ok(Some(version_result()));
    }
    let conf = conf?;
    if inv.cmd == Cmd::Del {
        return Ok(None);
    }
    let reply = (inv.cmd == Cmd::Add).then(|| add_result(&conf));
    let Some((ns, name)) = &inv.pod else {
        // Not a pod of Kubernetes: nothing to lock.
        return Ok(reply);
    };
    let Some(kubeconfig) = &conf.kubeconfig else {
        return Err(CniError::Config("no kubeconfig to read pods with".into()));
    };
    let pod = format!("{ns}/{name}");
    let Some(value) = pod_annotation(kubeconfig, ns, name).await? else {
        return Ok(reply);
    };
    let endpoints = endpoints_of(&value).map_err(|e| CniError::Annotation(pod.clone(), e))?;
    let netns = inv.netns.clone().unwrap_or_default();
    let check = inv.cmd == Cmd::Check;
    in_netns(&netns, move || {
        if check {
            super::prove(&endpoints)
        } else {
            super::lock(&endpoints)
        }
    })?
    .map_err(|e| CniError::Lock(pod.clone(), e))?;
    tracing::info!(%pod, "netlock cni: the pod's network is locked");
    Ok(reply)
}

/// The pod's [`ANNOTATION`], read from the API server with `kubeconfig`. A pod that
/// cannot be read is an error: its sandbox is being made, so it exists.
async fn pod_annotation(
    kubeconfig: &Path,
    ns: &str,
    name: &str,
) -> Result<Option<String>, CniError> {
    use k8s_openapi::api::core::v1::Pod;
    let pod = format!("{ns}/{name}");
    let api = |e: &dyn std::fmt::Display| CniError::Api(pod.clone(), e.to_string());
    let read = async {
        let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| api(&e))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .map_err(|e| api(&e))?;
        let client = kube::Client::try_from(cfg).map_err(|e| api(&e))?;
        kube::Api::<Pod>::namespaced(client, ns)
            .get(name)
            .await
            .map_err(|e| api(&e))
    };
    let p = tokio::time::timeout(API_TIMEOUT, read)
        .await
        .map_err(|_| api(&format!("no answer within {API_TIMEOUT:?}")))??;
    Ok(p.metadata
        .annotations
        .and_then(|mut a| a.remove(ANNOTATION)))
}

/// Runs `f` in a thread of its own that entered the network namespace at `path`; the
/// thread ends with it, so no other work ever runs in that namespace.
fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, CniError> {
    use std::os::fd::AsFd as _;
    let err = |e: &dyn std::fmt::Display| CniError::Netns(path.to_path_buf(), e.to_string());
    let file = std::fs::File::open(path).map_err(|e| err(&e))?;
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            file.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        Ok::<T, rustix::io::Errno>(f())
    })
    .join()
    .map_err(|_| err(&"the thread panicked"))?
    .map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn the_invocation_names_the_command_the_namespace_and_the_pod() {
        let inv = invocation(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", "/var/run/netns/cni-1"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=bottle-p;K8S_POD_NAME=agent;K8S_POD_INFRA_CONTAINER_ID=abc",
            ),
        ]))
        .expect("add");
        assert_eq!(inv.cmd, Cmd::Add);
        assert_eq!(inv.netns, Some(PathBuf::from("/var/run/netns/cni-1")));
        assert_eq!(inv.pod, Some(("bottle-p".into(), "agent".into())));

        let del = invocation(env(&[("CNI_COMMAND", "DEL")])).expect("del");
        assert_eq!((del.cmd, del.netns, del.pod), (Cmd::Del, None, None));
        assert_eq!(
            invocation(env(&[("CNI_COMMAND", "VERSION")]))
                .expect("v")
                .cmd,
            Cmd::Version
        );
    }

    #[test]
    fn a_bad_environment_is_refused() {
        for bad in [
            env(&[]),
            env(&[("CNI_COMMAND", "UP")]),
            env(&[("CNI_COMMAND", "ADD")]),
            env(&[("CNI_COMMAND", "CHECK")]),
            env(&[
                ("CNI_COMMAND", "ADD"),
                ("CNI_NETNS", "/n"),
                ("CNI_ARGS", "K8S_POD_NAME"),
            ]),
        ] {
            let e = invocation(bad).expect_err("refused");
            assert_eq!(e.code(), 4, "{e}");
        }
        let long = "x".repeat(MAX_ENV + 1);
        let e = invocation(env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_NETNS", "/n"),
            ("CNI_ARGS", &long),
        ]))
        .expect_err("too long");
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn the_config_gives_version_kubeconfig_and_previous_result() {
        let c = parse_config(
            br#"{"cniVersion":"0.4.0","name":"n","type":"bottle-netlock","kubeconfig":"/k",
                "prevResult":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.1.0.5/24"}]}}"#,
        )
        .expect("config");
        assert_eq!(c.cni_version, "0.4.0");
        assert_eq!(c.kubeconfig, Some(PathBuf::from("/k")));
        let r = add_result(&c);
        assert_eq!(r["ips"][0]["address"], "10.1.0.5/24");
        assert_eq!(r["cniVersion"], "0.4.0");

        let first = parse_config(br#"{"cniVersion":"0.3.1"}"#).expect("config");
        assert_eq!(
            add_result(&first),
            json!({"cniVersion":"0.3.1","interfaces":[],"ips":[],"dns":{}})
        );
    }

    #[test]
    fn a_bad_config_is_refused_with_its_code() {
        for (bytes, code) in [
            (&b"not json"[..], 6),
            (b"[1]", 6),
            (br#"{"name":"n"}"#, 7),
            (br#"{"cniVersion":"1.0.0"}"#, 1),
            (br#"{"cniVersion":"0.4.0","kubeconfig":3}"#, 7),
            (br#"{"cniVersion":"0.4.0","prevResult":"x"}"#, 7),
        ] {
            let e = parse_config(bytes).expect_err("refused");
            assert_eq!(e.code(), code, "{e}");
        }
        let huge = vec![b' '; MAX_CONFIG + 1];
        assert_eq!(parse_config(&huge).expect_err("huge").code(), 6);
    }

    #[test]
    fn the_annotation_round_trips_and_a_malformed_one_is_refused() {
        let eps: Vec<SocketAddrV4> = vec![
            "10.88.0.5:3128".parse().expect("a"),
            "10.88.0.6:8418".parse().expect("b"),
        ];
        let a = annotation(eps.iter().copied());
        assert_eq!(a, "10.88.0.5:3128 10.88.0.6:8418");
        assert_eq!(endpoints_of(&a).expect("parse"), eps);
        assert_eq!(
            endpoints_of("  10.88.0.5:3128\n").expect("spaces"),
            eps[..1]
        );
        for bad in [
            "",
            "   ",
            "egress:3128",
            "10.88.0.5",
            "[::1]:80",
            "10.88.0.5:3128,x",
        ] {
            assert!(endpoints_of(bad).is_err(), "{bad:?} accepted");
        }
        let many = vec!["10.0.0.1:1"; nft::MAX_ENDPOINTS + 1].join(" ");
        assert!(endpoints_of(&many).is_err());
        assert!(endpoints_of(&" ".repeat(MAX_ANNOTATION + 1)).is_err());
    }

    #[test]
    fn replies_are_cni_objects() {
        assert_eq!(version_result()["supportedVersions"][2], "0.4.0");
        let e = CniError::Annotation("ns/p".into(), "bad".into());
        let v = error_result("0.4.0", &e);
        assert_eq!(v["code"], 101);
        assert_eq!(v["cniVersion"], "0.4.0");
        assert!(v["msg"].as_str().expect("msg").contains(ANNOTATION));
    }
}
