//! [`KubeEngine`]: the engine seam (`bottle_engine::Engine`) over the Kubernetes API, so
//! the same pure plan (`bottle_core::apply::reconcile_once`) converges a bottle onto a
//! cluster (docs/design.md section 9.9). One engine serves one project, in its namespace
//! (`bottle-<project>`, made by [`KubeEngine::connect`]).
//!
//! The mapping of specs to objects is [`render`]'s (pure); this module does the calls:
//! every object is created through [`Cluster::create`] (which refuses one without the
//! project's labels) and removed through [`Cluster::delete_ours`] (which reads its
//! labels first), so nothing unlabelled in the namespace is touched. Images are built
//! with the local engine (`I`, Docker) as under the Docker backend and pushed to the
//! registry the operator names; the local `registry/repo:tag` is the record that a tag
//! was pushed, so an unchanged image is neither built nor pushed again.
//!
//! Pods address each other directly (the test cluster has no kube-proxy, section 9.8):
//! a pod is given its bottle's running pods' addresses through `hostAliases` when it is
//! made, the agent's `netlock` the sidecars' pod addresses.

pub mod events;
mod files;
pub mod render;
pub mod session;

use std::collections::BTreeMap;
use std::time::Duration;

use bottle_engine::{
    BuildSpec, ContainerInfo, ContainerSpec, Engine, EngineError, ImageInfo, NetworkInfo,
    NetworkSpec, VolumeInfo, VolumeSpec, matches_labels,
};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};

use crate::{Cluster, Deleted, KubeError, Namespaced, pod};
use render::Backing;

/// Pushes a locally built image to a registry: the local engine's part of the backend.
#[allow(async_fn_in_trait)] // used through generics only
pub trait Push {
    /// Push the local image `tag` as `reference` (`registry/repo:tag`).
    async fn push(&self, tag: &str, reference: &str) -> Result<(), EngineError>;
    /// Does the registry hold `reference`? (A local tag of it says only that it was
    /// pushed once: the registry may have been replaced or emptied since.)
    async fn in_registry(&self, reference: &str) -> bool;
}

impl Push for bottle_docker::Docker {
    async fn push(&self, tag: &str, reference: &str) -> Result<(), EngineError> {
        self.push_image(tag, reference).await
    }

    async fn in_registry(&self, reference: &str) -> bool {
        bottle_docker::Docker::in_registry(self, reference).await
    }
}

/// How the backend is set up: what the operator provides (section 9.7).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The registry the nodes pull from and `bottle` pushes to (`127.0.0.1:5000`).
    pub registry: String,
    /// The StorageClass of volume claims; `None` takes the cluster's default.
    pub storage_class: Option<String>,
    /// The size each volume claim asks for.
    pub claim_size: String,
    /// How long a new pod may take to run (image pull included).
    pub pod_timeout: Duration,
}

impl Settings {
    /// Defaults for `registry`: the default StorageClass, 1Gi claims, 180 s per pod.
    pub fn new(registry: &str) -> Self {
        Settings {
            registry: registry.to_owned(),
            storage_class: None,
            claim_size: "1Gi".into(),
            pod_timeout: Duration::from_secs(180),
        }
    }
}

/// The engine seam over one project's namespace.
pub struct KubeEngine<I> {
    cluster: Cluster,
    namespace: String,
    project: String,
    settings: Settings,
    images: I,
    /// The API server's version (`v1.20.2`).
    server_version: String,
    /// Its exec sessions can end their standard input (1.30 and later: `session`).
    stream_close: bool,
}

fn api_error(op: &'static str, name: &str, e: KubeError) -> EngineError {
    match &e {
        KubeError::Api {
            cause: kube::Error::Api(status),
            ..
        } if status.code == 404 => EngineError::NotFound {
            kind: "object",
            name: name.into(),
        },
        KubeError::Api {
            cause: kube::Error::Api(status),
            ..
        } if status.code == 409 => EngineError::Conflict {
            kind: "object",
            name: name.into(),
        },
        // The object itself refused: invalid (422), or forbidden by the cluster's policy
        // (403: a LimitRange, a quota, admission, RBAC), in the server's own words.
        KubeError::Api {
            cause: kube::Error::Api(status),
            ..
        } if status.code == 422 || status.code == 403 => EngineError::Refused {
            op,
            name: name.into(),
            message: status.message.clone(),
        },
        // The server's own words, which say what went wrong.
        KubeError::Api {
            cause: kube::Error::Api(status),
            ..
        } => EngineError::Api {
            op,
            name: name.into(),
            message: status.message.clone(),
        },
        KubeError::Api { cause, .. } => {
            EngineError::Unreachable(format!("the Kubernetes API server: {e}: {cause}"))
        }
        _ => EngineError::Api {
            op,
            name: name.into(),
            message: e.to_string(),
        },
    }
}

fn render_error(op: &'static str, name: &str, e: render::RenderError) -> EngineError {
    EngineError::Api {
        op,
        name: name.into(),
        message: e.to_string(),
    }
}

impl<I> KubeEngine<I> {
    /// The engine for `project` on `cluster`: checks that the API server answers and
    /// makes (or finds, if ours) the project's namespace. `images` builds and pushes.
    pub async fn connect(
        cluster: Cluster,
        project: &str,
        settings: Settings,
        images: I,
    ) -> Result<Self, KubeError> {
        let engine = Self::open(cluster, project, settings, images).await?;
        engine.cluster.ensure_namespace(project).await?;
        engine
            .cluster
            .wait_service_account(&engine.namespace)
            .await?;
        Ok(engine)
    }

    /// The engine for `project` without making its namespace (`diff`, `get`, `delete`
    /// change nothing that is not there): checks that the API server answers, and that a
    /// namespace of that name, if any, is ours.
    pub async fn open(
        cluster: Cluster,
        project: &str,
        settings: Settings,
        images: I,
    ) -> Result<Self, KubeError> {
        let server_version = cluster.version().await?;
        let namespace = crate::namespace_name(project);
        cluster.check_namespace(project).await?;
        Ok(KubeEngine {
            cluster,
            namespace,
            project: project.to_owned(),
            settings,
            images,
            stream_close: session::closes_stdin(&server_version),
            server_version,
        })
    }

    /// The project's namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The client.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    fn api<K: Namespaced>(&self) -> Api<K> {
        Api::namespaced(self.cluster.client().clone(), &self.namespace)
    }

    async fn list<K: Namespaced>(&self, object: &str) -> Result<Vec<K>, EngineError> {
        self.cluster
            .list_ours_where(
                &self.namespace,
                &self.project,
                &[format!("{}={object}", render::OBJECT)],
            )
            .await
            .map(live)
            .map_err(|e| api_error("list", object, e))
    }

    async fn create<K: Namespaced + serde::Serialize>(
        &self,
        op: &'static str,
        object: &K,
    ) -> Result<K, EngineError> {
        let name = object.name_any();
        self.cluster
            .create(&self.namespace, &self.project, object)
            .await
            .map_err(|e| api_error(op, &name, e))
    }

    async fn delete<K: Namespaced>(&self, name: &str, now: bool) -> Result<Deleted, EngineError> {
        let r = if now {
            self.cluster
                .delete_ours_now::<K>(&self.namespace, name, &self.project)
                .await
        } else {
            self.cluster
                .delete_ours::<K>(&self.namespace, name, &self.project)
                .await
        };
        r.map_err(|e| api_error("delete", name, e))
    }

    /// The pods of the project.
    async fn pods(&self) -> Result<Vec<Pod>, EngineError> {
        self.cluster
            .list_ours::<Pod>(&self.namespace, &self.project)
            .await
            .map(live)
            .map_err(|e| api_error("list", "pods", e))
    }

    /// The pod that holds the seam's container `name`, of those listed (one list serves
    /// both it and the peers a new pod names).
    async fn pod_of(&self, name: &str) -> Result<(Pod, Vec<Pod>), EngineError> {
        let pods = self.pods().await?;
        pods.iter()
            .find(|p| render::records(p).iter().any(|r| r.name == name))
            .cloned()
            .map(|p| (p, pods))
            .ok_or_else(|| EngineError::NotFound {
                kind: "container",
                name: name.into(),
            })
    }

    /// How each volume `spec` mounts is backed in the namespace.
    async fn backing(
        &self,
        spec: &ContainerSpec,
    ) -> Result<BTreeMap<String, Backing>, EngineError> {
        let mut out = BTreeMap::new();
        let secrets: Api<Secret> = self.api();
        let claims: Api<PersistentVolumeClaim> = self.api();
        for m in &spec.mounts {
            let bottle_engine::Mount::Volume { name, .. } = m else {
                continue;
            };
            if out.contains_key(name) {
                continue;
            }
            let read = |e: kube::Error| {
                api_error(
                    "read",
                    name,
                    KubeError::Api {
                        what: format!("reading volume {name}"),
                        cause: e,
                    },
                )
            };
            if let Some(s) = secrets.get_opt(name).await.map_err(read)? {
                out.insert(name.clone(), Backing::Files(render::secret_items(&s)));
            } else if claims.get_opt(name).await.map_err(read)?.is_some() {
                out.insert(name.clone(), Backing::Claim);
            }
        }
        Ok(out)
    }

    /// Create `pod` (after `env`, its containers' environment Secrets) and wait until it
    /// runs with an address; a pod that fails says why.
    async fn run_pod(&self, pod: Pod, env: Vec<Secret>) -> Result<(), EngineError> {
        let name = pod.name_any();
        for s in &env {
            // A left-over of an interrupted run is replaced.
            self.delete::<Secret>(&s.name_any(), false).await?;
            self.create("create secret", s).await?;
        }
        self.create("create pod", &pod).await?;
        self.wait_running(&name).await
    }

    async fn wait_running(&self, name: &str) -> Result<(), EngineError> {
        self.wait_pod(name, "run pod", |p| {
            let status = p.status.clone().unwrap_or_default();
            let all_up = status.container_statuses.as_ref().is_some_and(|cs| {
                !cs.is_empty()
                    && cs
                        .iter()
                        .all(|c| c.state.as_ref().is_some_and(|st| st.running.is_some()))
            });
            match status.phase.as_deref() {
                Some("Running") if status.pod_ip.is_some() && all_up => Some(true),
                // A container that ended, or waits for a reason other than being made.
                Some("Running" | "Pending") if pod_problem(p).is_some() => Some(false),
                Some("Failed" | "Succeeded") => Some(false),
                _ => None,
            }
        })
        .await
    }

    /// Wait until the pod `name` has ended: success, or its failure with the kubelet's
    /// words.
    async fn wait_ended(&self, name: &str) -> Result<(), EngineError> {
        self.wait_pod(name, "seed volumes", |p| {
            match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
                Some("Succeeded") => Some(true),
                Some("Failed") => Some(false),
                _ => None,
            }
        })
        .await
    }

    /// Read the pod `name` every half second until `settled` says it is done (`true`) or
    /// failed (`false`), at most the pod timeout; a failure says why.
    async fn wait_pod(
        &self,
        name: &str,
        op: &'static str,
        settled: impl Fn(&Pod) -> Option<bool>,
    ) -> Result<(), EngineError> {
        let api: Api<Pod> = self.api();
        let deadline = tokio::time::Instant::now() + self.settings.pod_timeout;
        loop {
            let p = api.get(name).await.map_err(|e| {
                api_error(
                    "read pod",
                    name,
                    KubeError::Api {
                        what: format!("reading pod {name}"),
                        cause: e,
                    },
                )
            })?;
            let failed = |message| EngineError::Api {
                op,
                name: name.into(),
                message,
            };
            match settled(&p) {
                Some(true) => return Ok(()),
                Some(false) => return Err(failed(self.explain(&p).await)),
                None if tokio::time::Instant::now() >= deadline => {
                    let why = self.explain(&p).await;
                    return Err(failed(format!(
                        "not done after {} s: {why}",
                        self.settings.pod_timeout.as_secs()
                    )));
                }
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }

    /// Why the pod `p` does not run: [`pod_problem`] and the last lines its failing
    /// container wrote.
    async fn explain(&self, p: &Pod) -> String {
        let problem = pod_problem(p).unwrap_or_else(|| format!("{:?}", p.status));
        let Some(container) = failed_container(p) else {
            return problem;
        };
        let api: Api<Pod> = self.api();
        let params = kube::api::LogParams {
            container: Some(container),
            tail_lines: Some(5),
            ..Default::default()
        };
        match api.logs(&p.name_any(), &params).await {
            Ok(log) if !log.trim().is_empty() => format!("{problem}; its log ends: {}", log.trim()),
            _ => problem,
        }
    }

    /// Delete the pod `name` at once and wait until the API no longer has it.
    async fn delete_pod_now(&self, name: &str) -> Result<(), EngineError> {
        self.delete::<Pod>(name, true).await?;
        self.gone::<Pod>(name, "pod").await
    }

    /// Wait (up to 30 s) until the `what` `name`, whose deletion was asked, is gone: a
    /// pod past its grace period, a claim once no pod holds it (its protection
    /// finalizer). Only then can one of the same name be made again.
    async fn gone<K: Namespaced>(&self, name: &str, what: &str) -> Result<(), EngineError> {
        let api: Api<K> = self.api();
        let step = Duration::from_millis(250);
        match crate::wait_gone(&api, name, Duration::from_secs(30), step).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(EngineError::Api {
                op: "remove",
                name: name.into(),
                message: format!("{what} still there 30 s after its deletion"),
            }),
            Err(e) => Err(api_error(
                "read",
                name,
                KubeError::Api {
                    what: format!("reading {what} {name}"),
                    cause: e,
                },
            )),
        }
    }
}

impl<I> KubeEngine<I> {
    /// Have the kubelet write Secret `secret` (now at `version`) into the pods that
    /// mount it now, not at its next periodic sync (up to a minute and more): an update
    /// of a pod makes the kubelet sync it, which remounts its Secret volumes. The update
    /// is one annotation ([`render::NUDGED`]).
    async fn nudge(&self, secret: &str, version: &str) -> Result<(), EngineError> {
        let api: Api<Pod> = self.api();
        for pod in render::mounting(&self.pods().await?, secret) {
            let patch = serde_json::json!({"metadata": {"annotations": {
                render::NUDGED: format!("{secret}:{version}"),
            }}});
            api.patch(&pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| {
                    api_error(
                        "rewrite volume",
                        secret,
                        KubeError::Api {
                            what: format!("marking pod {pod} for its new files"),
                            cause: e,
                        },
                    )
                })?;
        }
        Ok(())
    }

    /// What `verify` reads of the seam's container `name` on the host side: the runtime
    /// its pod runs under and the volumes it mounts ([`render::container_details`]).
    pub async fn container_details(
        &self,
        name: &str,
    ) -> Result<bottle_docker::ContainerDetails, EngineError> {
        let (pod, _) = self.pod_of(name).await?;
        let inner = render::container_in(&pod, name).unwrap_or_default();
        let (runtime, volumes) = render::container_details(&pod, &inner);
        Ok(bottle_docker::ContainerDetails {
            runtime: Some(runtime),
            volumes,
        })
    }

    /// Start seeding `claims` through one helper pod (section 9.10): the pod first,
    /// labelled with the claims it seeds (it waits for them: the caller makes them
    /// next), then the Secret it reads. A helper left by an interrupted run goes first.
    /// The helper's name; on an error nothing of it is left.
    async fn seed_begin(
        &self,
        claims: &[&VolumeSpec],
        trees: Option<render::Trees>,
    ) -> Result<Option<String>, EngineError> {
        let Some(first) = claims.first() else {
            return Ok(None);
        };
        let name = render::seed_name(&first.name);
        let image = render::pushed_reference(&self.settings.registry, &first.seed_image);
        self.delete_pod_now(&name).await?;
        self.delete::<Secret>(&name, false).await?;
        let made = async {
            self.create(
                "create pod",
                &render::seed_pod(&name, &first.labels, &image, claims, trees),
            )
            .await?;
            self.create(
                "create secret",
                &render::seed_secret(&name, &first.labels, claims),
            )
            .await
        }
        .await;
        match made {
            Ok(_) => Ok(Some(name)),
            Err(e) => {
                // The creation's error is the one to give; a cleanup that fails too
                // leaves a helper the next run finds and removes.
                let _ = self.delete_pod_now(&name).await;
                let _ = self.delete::<Secret>(&name, false).await;
                Err(e)
            }
        }
    }

    /// How the helper takes `archive`: its main process waits for it as long as the
    /// helper may take to start, a minute, and a second per MiB (1 MiB/s at least).
    fn trees_of(&self, archive: &TreesArchive) -> render::Trees {
        render::Trees {
            bytes: archive.bytes,
            await_secs: self.settings.pod_timeout.as_secs() + 60 + (archive.bytes >> 20),
        }
    }

    /// Send the host trees into the running helper `name`: `bottle sidecar seed-trees`
    /// exec'd with the tar's exact length and digest, fed the tar (its input is never
    /// ended: before Kubernetes 1.30 that would end the session). Unpacked, it lets the
    /// helper's main process go on.
    async fn send_trees(&self, name: &str, archive: TreesArchive) -> Result<(), EngineError> {
        self.wait_running(name).await?;
        let cmd: Vec<String> = [
            "/bottle",
            "sidecar",
            "seed-trees",
            "--bytes",
            &archive.bytes.to_string(),
            "--sha256",
            &archive.sha256,
        ]
        .map(String::from)
        .into();
        let input = tokio::fs::File::from_std(archive.file);
        self.exec_fed(name, &cmd, input)
            .await?
            .succeeded(
                "seed volumes",
                name,
                "copying the host trees in (`seed-trees`)",
            )
            .map(drop)
    }

    /// Wait for helper `name` to end when `so_far` is fine; then remove it and its
    /// Secret whatever the outcome. The first error.
    async fn seed_end(
        &self,
        name: &str,
        so_far: Result<(), EngineError>,
    ) -> Result<(), EngineError> {
        let result = match so_far {
            Ok(()) => self.wait_ended(name).await,
            e => e,
        };
        let cleaned = async {
            self.delete_pod_now(name).await?;
            self.delete::<Secret>(name, false).await.map(drop)
        }
        .await;
        result.and(cleaned)
    }
}

/// The host trees of a batch of claims as one tar (`bottle_engine::seed_tar`, the
/// Docker backend's archive without the files: those come in the helper's Secret), in
/// an unnamed temporary file, with its length and SHA-256.
struct TreesArchive {
    file: std::fs::File,
    bytes: u64,
    sha256: String,
}

async fn trees_archive(claims: &[&VolumeSpec]) -> Result<TreesArchive, EngineError> {
    use bottle_engine::seed_tar;
    use std::io::Seek as _;
    seed_tar::check_seed(claims, seed_tar::Links::Inside)?;
    let owned: Vec<VolumeSpec> = claims.iter().map(|s| (*s).clone()).collect();
    let first = owned.first().map(|s| s.name.clone()).unwrap_or_default();
    let failed = |message: String| EngineError::Api {
        op: "seed volume",
        name: first.clone(),
        message,
    };
    let written = tokio::task::spawn_blocking(move || {
        let file = tempfile::tempfile().map_err(|e| format!("a temporary file: {e}"))?;
        let mut w = bottle_contract::seed::Hashing::new(std::io::BufWriter::new(file));
        let refs: Vec<&VolumeSpec> = owned.iter().collect();
        seed_tar::write_seed(
            &refs,
            std::path::Path::new(""),
            seed_tar::Content::Trees,
            &mut w,
        )
        .map_err(|e| e.to_string())?;
        let (buffered, bytes, digest) = w.finish();
        let mut file = buffered.into_inner().map_err(|e| e.to_string())?;
        file.rewind().map_err(|e| e.to_string())?;
        Ok::<_, String>(TreesArchive {
            file,
            bytes,
            sha256: hex::encode(digest),
        })
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(&failed)?;
    if written.bytes > bottle_contract::seed::MAX_TREES_BYTES {
        return Err(failed(format!(
            "the host trees make {} bytes, more than the {} one seeding takes",
            written.bytes,
            bottle_contract::seed::MAX_TREES_BYTES
        )));
    }
    Ok(written)
}

/// The name of the first container of `p` that ended with a failure or waits for a
/// reason, for its log.
fn failed_container(p: &Pod) -> Option<String> {
    let s = p.status.as_ref()?;
    s.init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten())
        .find(|c| {
            c.state.as_ref().is_some_and(|st| {
                st.terminated.as_ref().is_some_and(|t| t.exit_code != 0) || st.waiting.is_some()
            })
        })
        .map(|c| c.name.clone())
}

/// The objects not being deleted: one on its way out (a claim held by a pod's
/// protection, a pod in its grace period) is gone as far as the plan is concerned.
fn live<K: Resource>(objects: Vec<K>) -> Vec<K> {
    objects
        .into_iter()
        .filter(|o| o.meta().deletion_timestamp.is_none())
        .collect()
}

/// Does a container that waits for `reason` (`message`) wait only for being made? The
/// kubelet's own steps, and a `CreateContainerConfigError` that says the kubelet's
/// cache of Secrets or ConfigMaps was not in sync yet (it retries; seen when a pod is
/// made again at once with its Secret made anew), are; any other reason is a problem.
fn being_made(reason: &str, message: &str) -> bool {
    match reason {
        "ContainerCreating" | "PodInitializing" => true,
        "CreateContainerConfigError" => {
            message.starts_with("failed to sync secret cache")
                || message.starts_with("failed to sync configmap cache")
        }
        _ => false,
    }
}

/// What keeps a pod from running: a container waiting for a reason, or one that ended.
fn pod_problem(p: &Pod) -> Option<String> {
    let s = p.status.as_ref()?;
    let all = s
        .init_container_statuses
        .iter()
        .flatten()
        .chain(s.container_statuses.iter().flatten());
    for c in all {
        let Some(state) = &c.state else { continue };
        if let Some(w) = &state.waiting
            && let Some(reason) = &w.reason
            && !being_made(reason, w.message.as_deref().unwrap_or_default())
        {
            return Some(format!(
                "container {} waiting: {reason}: {}",
                c.name,
                w.message.clone().unwrap_or_default()
            ));
        }
        if let Some(t) = &state.terminated
            && !(t.exit_code == 0
                && s.init_container_statuses
                    .iter()
                    .flatten()
                    .any(|i| i.name == c.name))
        {
            return Some(format!(
                "container {} ended with {}: {} {}",
                c.name,
                t.exit_code,
                t.reason.clone().unwrap_or_default(),
                t.message.clone().unwrap_or_default()
            ));
        }
    }
    s.message.clone().filter(|m| !m.is_empty())
}

/// Through the pod `exec` subresource ([`session`]): a command runs as its container's
/// user only, and a signal is the `kill` of its shell.
impl<I> bottle_engine::Exec for KubeEngine<I> {
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        user: Option<&str>,
        stdin: &[u8],
    ) -> Result<bottle_engine::ExecOutput, EngineError> {
        self.exec_captured(container, cmd, user, stdin).await
    }

    async fn signal(&self, container: &str, signal: &str) -> Result<(), EngineError> {
        KubeEngine::signal(self, container, signal).await
    }
}

impl<I: Engine + Push> Engine for KubeEngine<I> {
    // Lists are of the project's namespace, selected by its labels server-side; the
    // caller's `labels` filters (the seam's labels, some of them annotations here) are
    // then applied to what the seam sees, as Docker applies them.
    async fn list_networks(&self, labels: &[String]) -> Result<Vec<NetworkInfo>, EngineError> {
        Ok(self
            .list::<ConfigMap>(render::NETWORK)
            .await?
            .iter()
            .map(render::network_info)
            .filter(|n| matches_labels(&n.labels, labels))
            .collect())
    }

    async fn list_volumes(&self, labels: &[String]) -> Result<Vec<VolumeInfo>, EngineError> {
        let secrets = self.list::<Secret>(render::VOLUME).await?;
        let claims = self.list::<PersistentVolumeClaim>(render::VOLUME).await?;
        Ok(secrets
            .iter()
            .map(|s| render::volume_info(&s.metadata))
            .chain(claims.iter().map(|c| render::volume_info(&c.metadata)))
            .filter(|v| matches_labels(&v.labels, labels))
            .collect())
    }

    async fn list_containers(&self, labels: &[String]) -> Result<Vec<ContainerInfo>, EngineError> {
        Ok(render::all_container_infos(&self.pods().await?)
            .into_iter()
            .filter(|c| matches_labels(&c.labels, labels))
            .collect())
    }

    /// The local images that the registry holds (pushed and still there), under their
    /// local tag: one registry lookup per image pushed from here.
    async fn list_images(&self, labels: &[String]) -> Result<Vec<ImageInfo>, EngineError> {
        let local = self.images.list_images(labels).await?;
        let prefix = format!("{}/", self.settings.registry.trim_end_matches('/'));
        let mut pushed = std::collections::BTreeSet::new();
        for reference in local.iter().filter(|i| i.tag.starts_with(&prefix)) {
            if self.images.in_registry(&reference.tag).await {
                pushed.insert(&reference.tag[prefix.len()..]);
            }
        }
        Ok(local
            .iter()
            .filter(|i| pushed.contains(i.tag.as_str()))
            .cloned()
            .collect())
    }

    /// Its NetworkPolicy (the second layer, 9.2), then its marker: the marker says the
    /// network is made. A policy left by a run stopped in between is made anew.
    async fn create_network(&self, spec: &NetworkSpec) -> Result<(), EngineError> {
        self.delete::<NetworkPolicy>(&spec.name, false).await?;
        self.create("create network", &render::network_policy(spec))
            .await?;
        self.create("create network", &render::network_marker(spec))
            .await
            .map(drop)
    }

    async fn remove_network(&self, name: &str) -> Result<(), EngineError> {
        self.delete::<NetworkPolicy>(name, false).await?;
        self.delete::<ConfigMap>(name, false).await.map(drop)
    }

    async fn create_volumes(&self, specs: &[VolumeSpec]) -> Result<(), EngineError> {
        // The helper first: a claim never exists without it until it is seeded.
        let seeded: Vec<&VolumeSpec> = specs
            .iter()
            .filter(|s| render::is_claim(s) && s.has_content())
            .collect();
        // Host trees: one tar, written and measured before anything is made.
        let trees = if seeded.iter().any(|s| !s.seed_dirs.is_empty()) {
            Some(trees_archive(&seeded).await?)
        } else {
            None
        };
        let helper = self
            .seed_begin(&seeded, trees.as_ref().map(|t| self.trees_of(t)))
            .await?;
        let mut made: Vec<(&str, bool)> = Vec::new();
        let mut result = Ok(());
        for spec in specs {
            let claim = render::is_claim(spec);
            let r = if claim {
                let claim = render::volume_claim(
                    spec,
                    self.settings.storage_class.as_deref(),
                    &self.settings.claim_size,
                );
                self.create("create volume", &claim).await.map(drop)
            } else {
                self.create("create volume", &render::volume_secret(spec))
                    .await
                    .map(drop)
            };
            match r {
                Ok(()) => made.push((&spec.name, claim)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if let Some(helper) = helper {
            if result.is_ok()
                && let Some(t) = trees
            {
                result = self.send_trees(&helper, t).await;
            }
            result = self.seed_end(&helper, result).await;
        }
        if result.is_err() {
            for (name, claim) in made {
                let _ = if claim {
                    self.delete::<PersistentVolumeClaim>(name, false).await
                } else {
                    self.delete::<Secret>(name, false).await
                };
            }
        }
        result
    }

    async fn rewrite_volume(&self, spec: &VolumeSpec) -> Result<(), EngineError> {
        let api: Api<Secret> = self.api();
        let current = api.get_opt(&spec.name).await.map_err(|e| {
            api_error(
                "rewrite volume",
                &spec.name,
                KubeError::Api {
                    what: format!("reading volume {}", spec.name),
                    cause: e,
                },
            )
        })?;
        let Some(current) = current else {
            return Err(EngineError::NotFound {
                kind: "volume",
                name: spec.name.clone(),
            });
        };
        if !bottle_contract::labels::is_ours(current.labels(), &self.project) {
            return Err(EngineError::Api {
                op: "rewrite volume",
                name: spec.name.clone(),
                message: "not bottle's: left alone".into(),
            });
        }
        let mut next = render::volume_secret(spec);
        next.metadata.resource_version = current.meta().resource_version.clone();
        let replaced = api
            .replace(&spec.name, &PostParams::default(), &next)
            .await
            .map_err(|e| {
                api_error(
                    "rewrite volume",
                    &spec.name,
                    KubeError::Api {
                        what: format!("replacing volume {}", spec.name),
                        cause: e,
                    },
                )
            })?;
        self.nudge(&spec.name, &replaced.resource_version().unwrap_or_default())
            .await
    }

    /// Removed when it returns: a claim made anew next (a recreate) must not meet the
    /// old one still finalizing.
    async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.delete::<Secret>(name, false).await?;
        if self.delete::<PersistentVolumeClaim>(name, false).await? == Deleted::Deleted {
            self.gone::<PersistentVolumeClaim>(name, "claim").await?;
        }
        Ok(())
    }

    async fn run_container(&self, spec: &ContainerSpec) -> Result<(), EngineError> {
        let backing = self.backing(spec).await?;
        let bottle = spec
            .labels
            .get(bottle_contract::labels::BOTTLE)
            .cloned()
            .unwrap_or_default();
        let env: Vec<Secret> = (!spec.env.is_empty())
            .then(|| {
                render::env_secret(
                    &render::env_secret_name(&spec.name),
                    &render::on_kubernetes(spec),
                )
            })
            .into_iter()
            .collect();
        match &spec.network_of {
            None => {
                let peers = render::peers_of(&self.pods().await?, &bottle, &spec.name);
                let pod = render::render_pod(spec, &self.settings.registry, &backing, &peers)
                    .map_err(|e| render_error("create container", &spec.name, e))?;
                self.run_pod(pod, env).await
            }
            Some(holder) => {
                let (current, pods) = self.pod_of(holder).await?;
                let pod_name = current.name_any();
                let peers = render::peers_of(&pods, &bottle, &pod_name);
                let pod =
                    render::join_pod(&current, spec, &self.settings.registry, &backing, &peers)
                        .map_err(|e| render_error("create container", &spec.name, e))?;
                self.delete_pod_now(&pod_name).await?;
                self.run_pod(pod, env).await
            }
        }
    }

    /// A pod is never restarted in place (`restartPolicy: Never`): starting a stopped
    /// container makes its pod anew from the same spec, with its peers' addresses as
    /// they are now.
    async fn start_container(&self, name: &str) -> Result<(), EngineError> {
        let (current, pods) = self.pod_of(name).await?;
        let pod_name = current.name_any();
        let bottle = current
            .labels()
            .get(bottle_contract::labels::BOTTLE)
            .cloned()
            .unwrap_or_default();
        let peers = render::peers_of(&pods, &bottle, &pod_name);
        self.delete_pod_now(&pod_name).await?;
        self.run_pod(render::refresh(&current, &peers), Vec::new())
            .await
    }

    async fn remove_container(&self, name: &str) -> Result<(), EngineError> {
        let current = match self.pod_of(name).await {
            Ok((current, _)) => current,
            Err(EngineError::NotFound { .. }) => {
                // Nothing holds it; its environment may be left over.
                self.delete::<Secret>(&render::env_secret_name(name), false)
                    .await?;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let pod_name = current.name_any();
        if render::is_seed_pod(&current) {
            // A seeding helper left by an interrupted run, and the Secret it reads.
            self.delete_pod_now(&pod_name).await?;
            return self.delete::<Secret>(&pod_name, false).await.map(drop);
        }
        let rest = render::strip_pod(&current, name)
            .map_err(|e| render_error("remove container", name, e))?;
        self.delete_pod_now(&pod_name).await?;
        self.delete::<Secret>(&render::env_secret_name(name), false)
            .await?;
        match rest {
            Some(pod) => {
                // The containers left keep running in a pod of their own again.
                self.create("create pod", &pod).await?;
                self.wait_running(&pod_name).await
            }
            None => {
                // The pod's other containers (a joiner) go with it.
                for r in render::records(&current).iter().filter(|r| r.name != name) {
                    self.delete::<Secret>(&render::env_secret_name(&r.name), false)
                        .await?;
                }
                Ok(())
            }
        }
    }

    async fn build_image(&self, spec: &BuildSpec) -> Result<(), EngineError> {
        self.images.build_image(spec).await?;
        let reference = render::pushed_reference(&self.settings.registry, &spec.tag);
        self.images.push(&spec.tag, &reference).await
    }

    /// Removes the local image and its pushed tag; the registry keeps its copy.
    async fn remove_image(&self, tag: &str) -> Result<(), EngineError> {
        let reference = render::pushed_reference(&self.settings.registry, tag);
        self.images.remove_image(&reference).await?;
        self.images.remove_image(tag).await
    }

    /// `runc`, and `runsc` when the cluster has the RuntimeClass `runsc` labelled
    /// [`pod::LOCKED_BY_NODE`]: the operator's word that its nodes chain the netlock CNI
    /// plugin, which writes a gVisor agent pod's lock (section 9.5; the pod proves it
    /// before its agent starts, so a node without the plugin fails closed). Without it
    /// `runtime: runsc` is refused before anything changes and `auto` resolves to runc;
    /// so too for a context that may not read RuntimeClasses.
    async fn runtimes(&self) -> Result<Vec<String>, EngineError> {
        use k8s_openapi::api::node::v1::RuntimeClass;
        let classes: Api<RuntimeClass> = Api::all(self.cluster.client().clone());
        let mut out = vec!["runc".to_string()];
        match classes.get_opt(pod::RUNSC).await {
            Ok(Some(rc)) if pod::locked_by_node(&rc.metadata) => out.push(pod::RUNSC.into()),
            // Unlabelled, absent, or not ours to read: gVisor is not offered.
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 403 => {}
            Err(e) => {
                return Err(EngineError::Api {
                    op: "read",
                    name: format!("runtimeclass/{}", pod::RUNSC),
                    message: e.to_string(),
                });
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn workspace(host: &std::path::Path) -> VolumeSpec {
        VolumeSpec {
            name: "w".into(),
            labels: Default::default(),
            files: Vec::new(),
            seed_dirs: vec![bottle_engine::SeedDir {
                host: host.to_path_buf(),
                target: String::new(),
                uid: 1000,
                gid: 1000,
            }],
            owner: Some((1000, 1000)),
            seed_image: "i".into(),
        }
    }

    #[test]
    fn a_kubelet_cache_not_yet_in_sync_is_waited_out_other_config_errors_are_not() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateWaiting, ContainerStatus, PodStatus,
        };
        let waiting = |reason: &str, message: &str| Pod {
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                container_statuses: Some(vec![ContainerStatus {
                    name: "agent-net".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some(reason.into()),
                            message: Some(message.into()),
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        // What CI's kubelet said once, for a pod made again at once with its Secret.
        let sync = "failed to sync secret cache: timed out waiting for the condition";
        assert_eq!(
            pod_problem(&waiting("CreateContainerConfigError", sync)),
            None
        );
        assert_eq!(pod_problem(&waiting("ContainerCreating", "")), None);
        let missing = r#"secret "bottle-x-env" not found"#;
        assert_eq!(
            pod_problem(&waiting("CreateContainerConfigError", missing)).as_deref(),
            Some(
                r#"container agent-net waiting: CreateContainerConfigError: secret "bottle-x-env" not found"#
            )
        );
        assert!(pod_problem(&waiting("ErrImagePull", sync)).is_some());
    }

    #[tokio::test]
    async fn the_trees_archive_has_its_length_and_digest_and_no_link_out() {
        use sha2::Digest as _;
        let host = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(host.path().join("sub")).expect("dir");
        std::fs::write(host.path().join("sub/a.txt"), b"a").expect("file");
        std::os::unix::fs::symlink("sub/a.txt", host.path().join("inside")).expect("link");
        let spec = workspace(host.path());
        let mut archive = trees_archive(&[&spec]).await.expect("archive");
        let mut bytes = Vec::new();
        archive.file.read_to_end(&mut bytes).expect("read");
        assert_eq!(bytes.len() as u64, archive.bytes);
        assert_eq!(archive.sha256, hex::encode(sha2::Sha256::digest(&bytes)));
        std::os::unix::fs::symlink("/etc/passwd", host.path().join("sub/out")).expect("link");
        let Err(EngineError::Api { message, .. }) = trees_archive(&[&spec]).await else {
            panic!("a link out of the volume is not refused");
        };
        assert!(
            message.contains("sub/out") && message.contains("/etc/passwd"),
            "{message}"
        );
    }
}
