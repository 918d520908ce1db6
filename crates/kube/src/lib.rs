//! bottle's Kubernetes client (docs/design.md section 9): connects through a kubeconfig
//! (`KUBECONFIG` or a named file, and an optional context), keeps one namespace per
//! project, and lists, creates and deletes objects that carry bottle's ownership labels.
//!
//! Ownership is `bottle_contract::labels::is_ours`, as for Docker (section 1.5): lists
//! select by label server-side, [`Cluster::create`] refuses an object without our labels,
//! and [`Cluster::delete_ours`] reads an object's labels before it deletes it, so nothing
//! unlabelled in a namespace is touched, and a namespace of the same name that is not ours
//! is refused rather than adopted.

pub mod engine;
pub mod pod;

use std::fmt::Debug;
use std::path::PathBuf;

use bottle_contract::{Labels, labels};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where the cluster is: a kubeconfig file (else `KUBECONFIG`, else `~/.kube/config`, else
/// the in-cluster service account) and a context in it (else its current context).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// A kubeconfig file to read instead of the environment's.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig (`--context`).
    pub context: Option<String>,
}

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or names no usable cluster.
    #[error("reading the kubeconfig{}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Kubeconfig {
        /// The file given, if any.
        path: Option<PathBuf>,
        /// Why.
        #[source]
        cause: kube::config::KubeconfigError,
    },
    /// No kubeconfig and no in-cluster configuration.
    #[error("finding a kubeconfig (KUBECONFIG, ~/.kube/config or in-cluster)")]
    Infer(#[source] kube::config::InferConfigError),
    /// The client could not be built from the configuration (TLS, proxy settings).
    #[error("building the Kubernetes client")]
    Client(#[source] kube::Error),
    /// A call to the API server failed; `what` names the call and the object.
    #[error("{what}")]
    Api {
        /// The call, e.g. `creating ConfigMap bottle-demo-a-config in bottle-demo`.
        what: String,
        /// The API server's answer or the transport error.
        #[source]
        cause: kube::Error,
    },
    /// An object exists under our name but without our labels: it is left alone.
    #[error("{kind} {name} exists and is not bottle's (project {project}): left alone")]
    NotOurs {
        /// The object's kind.
        kind: String,
        /// Its name (namespaced objects: `namespace/name`).
        name: String,
        /// The project that wanted it.
        project: String,
    },
    /// The project's namespace is being deleted: nothing can be made in it until it is
    /// gone.
    #[error("namespace {name} is being deleted: try again once it is gone")]
    Terminating {
        /// The namespace.
        name: String,
    },
    /// An object given to [`Cluster::create`] lacks the project's ownership labels.
    #[error("{kind} {name} lacks the ownership labels of project {project}: not created")]
    Unlabelled {
        /// The object's kind.
        kind: String,
        /// Its name.
        name: String,
        /// The project.
        project: String,
    },
}

/// The result of [`Cluster::delete_ours`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// Deletion was accepted (it may finish later, e.g. a pod's grace period).
    Deleted,
    /// There was nothing of that name: removing a missing object succeeds (section 1.6).
    Absent,
}

/// The namespace that holds a project's objects.
pub fn namespace_name(project: &str) -> String {
    format!("{}-{project}", labels::PREFIX)
}

/// The label selector of a project's objects, the same filter Docker lists use.
pub fn project_selector(project: &str) -> String {
    labels::project_filter(project).join(",")
}

/// A namespaced kind of object (`ConfigMap`, `Pod`...), as the calls below read it.
pub trait Namespaced:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug
{
}

impl<K> Namespaced for K where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
{
}

fn kind_of<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).into_owned()
}

fn api_err(what: String) -> impl FnOnce(kube::Error) -> KubeError {
    move |cause| KubeError::Api { what, cause }
}

/// A connected client.
#[derive(Clone)]
pub struct Cluster {
    client: Client,
    /// The API server's address, for messages.
    server: String,
}

impl Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a client for `target`. Makes no request: [`Cluster::version`] checks reach.
    pub async fn connect(target: &Target) -> Result<Self, KubeError> {
        let options = KubeConfigOptions {
            context: target.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &target.kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|cause| KubeError::Kubeconfig {
                    path: Some(path.clone()),
                    cause,
                })?;
                Config::from_custom_kubeconfig(file, &options)
                    .await
                    .map_err(|cause| KubeError::Kubeconfig {
                        path: Some(path.clone()),
                        cause,
                    })?
            }
            None if target.context.is_some() => Config::from_kubeconfig(&options)
                .await
                .map_err(|cause| KubeError::Kubeconfig { path: None, cause })?,
            None => Config::infer().await.map_err(KubeError::Infer)?,
        };
        let server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(KubeError::Client)?;
        Ok(Self { client, server })
    }

    /// The API server's version (`v1.20.2`): the first request, so it says whether the
    /// cluster answers and accepts our credentials.
    pub async fn version(&self) -> Result<String, KubeError> {
        let info = self
            .client
            .apiserver_version()
            .await
            .map_err(api_err(format!(
                "asking the API server at {} for its version",
                self.server
            )))?;
        Ok(info.git_version)
    }

    /// Makes the project's namespace, labelled as ours, unless it exists; one that exists
    /// without our labels is refused ([`KubeError::NotOurs`]). Returns its name.
    pub async fn ensure_namespace(&self, project: &str) -> Result<String, KubeError> {
        let name = namespace_name(project);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let existing = api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("reading namespace {name}")))?;
        if let Some(ns) = existing {
            let terminating =
                ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
            return if terminating {
                Err(KubeError::Terminating { name })
            } else if labels::is_ours(ns.labels(), project) {
                Ok(name)
            } else {
                Err(KubeError::NotOurs {
                    kind: "Namespace".into(),
                    name,
                    project: project.into(),
                })
            };
        }
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(namespace_labels(project)),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        match api.create(&PostParams::default(), &ns).await {
            Ok(_) => Ok(name),
            // Made by a concurrent run between our read and our create: check it again.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Box::pin(self.ensure_namespace(project)).await
            }
            Err(cause) => Err(KubeError::Api {
                what: format!("creating namespace {name}"),
                cause,
            }),
        }
    }

    /// Waits (at most 30 s) for the `default` ServiceAccount the controller-manager makes
    /// in a new namespace: the API server admits no pod before it exists (ours mount no
    /// token, but the admission check is the same).
    pub async fn wait_service_account(&self, namespace: &str) -> Result<(), KubeError> {
        let api: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(self.client.clone(), namespace);
        for _ in 0..60 {
            let found = api.get_opt("default").await.map_err(api_err(format!(
                "reading serviceaccount {namespace}/default"
            )))?;
            if found.is_some() {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        Ok(())
    }

    /// Checks that the project's namespace, if it exists, is ours; makes nothing.
    pub async fn check_namespace(&self, project: &str) -> Result<(), KubeError> {
        let name = namespace_name(project);
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("reading namespace {name}")))?
        {
            Some(ns) if !labels::is_ours(ns.labels(), project) => Err(KubeError::NotOurs {
                kind: "Namespace".into(),
                name,
                project: project.into(),
            }),
            _ => Ok(()),
        }
    }

    /// Deletes the project's namespace (and so everything in it) if it is ours.
    pub async fn delete_namespace(&self, project: &str) -> Result<Deleted, KubeError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        delete_checked(&api, &namespace_name(project), project, "", None).await
    }

    /// Removes the project's namespace once nothing is left in it but what Kubernetes
    /// itself puts in every namespace, and waits (at most `wait`) until it is gone, so a
    /// next `apply` can make it anew. A namespace that is not ours, or that holds an object
    /// that is not bottle's (the operator's LimitRange, say), is kept: deleting a namespace
    /// deletes everything in it, and nothing unlabelled is bottle's to touch.
    pub async fn remove_namespace(
        &self,
        project: &str,
        wait: std::time::Duration,
    ) -> Result<NamespaceOutcome, KubeError> {
        use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
        use k8s_openapi::api::batch::v1::Job;
        use k8s_openapi::api::core::v1::{
            ConfigMap, LimitRange, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
            ServiceAccount,
        };
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
        let name = namespace_name(project);
        let api: Api<Namespace> = Api::all(self.client.clone());
        let Some(ns) = api
            .get_opt(&name)
            .await
            .map_err(api_err(format!("reading namespace {name}")))?
        else {
            return Ok(NamespaceOutcome::Absent);
        };
        if !labels::is_ours(ns.labels(), project) {
            return Ok(NamespaceOutcome::Kept(format!(
                "namespace {name} is not bottle's"
            )));
        }
        let found = [
            self.foreign::<Pod>(&name, project).await?,
            self.foreign::<Service>(&name, project).await?,
            self.foreign::<ConfigMap>(&name, project).await?,
            self.foreign::<Secret>(&name, project).await?,
            self.foreign::<PersistentVolumeClaim>(&name, project)
                .await?,
            self.foreign::<ServiceAccount>(&name, project).await?,
            self.foreign::<NetworkPolicy>(&name, project).await?,
            self.foreign::<LimitRange>(&name, project).await?,
            self.foreign::<ResourceQuota>(&name, project).await?,
            self.foreign::<Role>(&name, project).await?,
            self.foreign::<RoleBinding>(&name, project).await?,
            self.foreign::<Deployment>(&name, project).await?,
            self.foreign::<StatefulSet>(&name, project).await?,
            self.foreign::<DaemonSet>(&name, project).await?,
            self.foreign::<ReplicaSet>(&name, project).await?,
            self.foreign::<Job>(&name, project).await?,
        ];
        if let Some(other) = found.into_iter().flatten().next() {
            return Ok(NamespaceOutcome::Kept(format!(
                "namespace {name} holds {other}, which is not bottle's"
            )));
        }
        delete_checked(&api, &name, project, "", None).await?;
        let gone = wait_gone(&api, &name, wait, std::time::Duration::from_millis(500))
            .await
            .map_err(api_err(format!("reading namespace {name}")))?;
        Ok(if gone {
            NamespaceOutcome::Removed
        } else {
            NamespaceOutcome::Kept(format!(
                "namespace {name} is still being deleted after {}s",
                wait.as_secs()
            ))
        })
    }

    /// The first object of kind `K` in `namespace` that is neither the project's nor one
    /// Kubernetes makes in every namespace, as `Kind/name`; a kind the server does not
    /// serve has none. Read a page of 100 at a time, to the last page: a foreign object
    /// behind a hundred of ours must keep the namespace too.
    async fn foreign<K: Namespaced>(
        &self,
        namespace: &str,
        project: &str,
    ) -> Result<Option<String>, KubeError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let kind = kind_of::<K>();
        let mut params = ListParams::default().limit(100);
        loop {
            let list = match api.list_metadata(&params).await {
                Ok(list) => list,
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(None),
                Err(cause) => {
                    return Err(KubeError::Api {
                        what: format!("listing {kind}s in {namespace}"),
                        cause,
                    });
                }
            };
            if let Some(o) = list.items.iter().find(|o| {
                !labels::is_ours(o.labels(), project) && !made_by_kubernetes(&kind, &o.metadata)
            }) {
                return Ok(Some(format!("{kind}/{}", o.name_any())));
            }
            match list.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => return Ok(None),
            }
        }
    }

    /// The project's objects of kind `K` in `namespace`, selected by label server-side
    /// and checked again with `is_ours`.
    pub async fn list_ours<K: Namespaced>(
        &self,
        namespace: &str,
        project: &str,
    ) -> Result<Vec<K>, KubeError> {
        self.list_ours_where(namespace, project, &[]).await
    }

    /// [`Cluster::list_ours`] narrowed by more `key=value` label selectors.
    pub async fn list_ours_where<K: Namespaced>(
        &self,
        namespace: &str,
        project: &str,
        more: &[String],
    ) -> Result<Vec<K>, KubeError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let mut selector = project_selector(project);
        for m in more {
            selector.push(',');
            selector.push_str(m);
        }
        let params = ListParams::default().labels(&selector);
        let list = api.list(&params).await.map_err(api_err(format!(
            "listing {}s of project {project} in {namespace}",
            kind_of::<K>()
        )))?;
        Ok(list
            .items
            .into_iter()
            .filter(|o| labels::is_ours(o.labels(), project))
            .collect())
    }

    /// Creates `object` in `namespace`; it must carry the project's ownership labels.
    pub async fn create<K: Namespaced + Serialize>(
        &self,
        namespace: &str,
        project: &str,
        object: &K,
    ) -> Result<K, KubeError> {
        let name = object.name_any();
        if !labels::is_ours(object.labels(), project) {
            return Err(KubeError::Unlabelled {
                kind: kind_of::<K>(),
                name,
                project: project.into(),
            });
        }
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), object)
            .await
            .map_err(api_err(format!(
                "creating {} {namespace}/{name}",
                kind_of::<K>()
            )))
    }

    /// Deletes `name` in `namespace` if it carries the project's labels; one without them
    /// is left alone ([`KubeError::NotOurs`]); a missing one is [`Deleted::Absent`].
    pub async fn delete_ours<K: Namespaced>(
        &self,
        namespace: &str,
        name: &str,
        project: &str,
    ) -> Result<Deleted, KubeError> {
        self.delete_graced::<K>(namespace, name, project, None)
            .await
    }

    /// [`Cluster::delete_ours`] with no grace period: a pod is gone from the API at once
    /// (its containers are killed by the kubelet), so one of the same name can follow.
    pub async fn delete_ours_now<K: Namespaced>(
        &self,
        namespace: &str,
        name: &str,
        project: &str,
    ) -> Result<Deleted, KubeError> {
        self.delete_graced::<K>(namespace, name, project, Some(0))
            .await
    }

    async fn delete_graced<K: Namespaced>(
        &self,
        namespace: &str,
        name: &str,
        project: &str,
        grace: Option<u32>,
    ) -> Result<Deleted, KubeError> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        delete_checked(&api, name, project, &format!("{namespace}/"), grace).await
    }

    /// Deletes every object of kind `K` in `namespace` that carries the project's labels;
    /// returns their names.
    pub async fn delete_all_ours<K: Namespaced>(
        &self,
        namespace: &str,
        project: &str,
    ) -> Result<Vec<String>, KubeError> {
        let mut deleted = Vec::new();
        for object in self.list_ours::<K>(namespace, project).await? {
            let name = object.name_any();
            if self.delete_ours::<K>(namespace, &name, project).await? == Deleted::Deleted {
                deleted.push(name);
            }
        }
        Ok(deleted)
    }

    /// The underlying kube-rs client, for calls this crate does not wrap yet.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Asks `api` for `name` every `step` until it is gone (`true`) or `wait` has passed
/// (`false`): an object whose deletion was asked, before one of its name is made again.
pub async fn wait_gone<K>(
    api: &Api<K>,
    name: &str,
    wait: std::time::Duration,
    step: std::time::Duration,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let end = tokio::time::Instant::now() + wait;
    loop {
        if api.get_opt(name).await?.is_none() {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= end {
            return Ok(false);
        }
        tokio::time::sleep(step).await;
    }
}

/// What [`Cluster::remove_namespace`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceOutcome {
    /// Deleted, and gone.
    Removed,
    /// There was none.
    Absent,
    /// Left in place, for the reason given.
    Kept(String),
}

/// Whether `object` of `kind` is one Kubernetes makes in every namespace: the `default`
/// ServiceAccount and its token Secret, and the `kube-root-ca.crt` ConfigMap.
fn made_by_kubernetes(kind: &str, meta: &ObjectMeta) -> bool {
    let name = meta.name.as_deref().unwrap_or_default();
    match kind {
        "ServiceAccount" => name == "default",
        "ConfigMap" => name == "kube-root-ca.crt",
        "Secret" => {
            meta.annotations
                .as_ref()
                .and_then(|a| a.get("kubernetes.io/service-account.name"))
                .map(String::as_str)
                == Some("default")
        }
        _ => false,
    }
}

/// A project namespace's labels: managed and the project (no bottle, node or hash: it is
/// the project's, not one bottle's).
pub fn namespace_labels(project: &str) -> Labels {
    let mut l = Labels::new();
    l.insert(labels::MANAGED.into(), "true".into());
    l.insert(labels::PROJECT.into(), project.into());
    l
}

/// Reads `name`, checks our labels, deletes with a precondition on the UID read, so an
/// object replaced in between (by someone else, without our labels) is not deleted.
async fn delete_checked<K>(
    api: &Api<K>,
    name: &str,
    project: &str,
    prefix: &str,
    grace: Option<u32>,
) -> Result<Deleted, KubeError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = kind_of::<K>();
    let Some(object) = api
        .get_opt(name)
        .await
        .map_err(api_err(format!("reading {kind} {prefix}{name}")))?
    else {
        return Ok(Deleted::Absent);
    };
    if !labels::is_ours(object.labels(), project) {
        return Err(KubeError::NotOurs {
            kind,
            name: format!("{prefix}{name}"),
            project: project.into(),
        });
    }
    let mut params = DeleteParams::background();
    if let Some(secs) = grace {
        params = params.grace_period(secs);
    }
    if let Some(uid) = object.uid() {
        params = params.preconditions(kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        });
    }
    match api.delete(name, &params).await {
        Ok(_) => Ok(Deleted::Deleted),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(Deleted::Absent),
        Err(cause) => Err(KubeError::Api {
            what: format!("deleting {kind} {prefix}{name}"),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_kubernetes_puts_in_every_namespace_counts_as_its_own() {
        let meta = |name: &str, sa: Option<&str>| ObjectMeta {
            name: Some(name.into()),
            annotations: sa.map(|sa| {
                [(
                    "kubernetes.io/service-account.name".to_owned(),
                    sa.to_owned(),
                )]
                .into()
            }),
            ..ObjectMeta::default()
        };
        assert!(made_by_kubernetes("ServiceAccount", &meta("default", None)));
        assert!(made_by_kubernetes(
            "ConfigMap",
            &meta("kube-root-ca.crt", None)
        ));
        assert!(made_by_kubernetes(
            "Secret",
            &meta("default-token-x", Some("default"))
        ));
        assert!(!made_by_kubernetes("ServiceAccount", &meta("ci", None)));
        assert!(!made_by_kubernetes("Secret", &meta("ci-token", Some("ci"))));
        assert!(!made_by_kubernetes("Secret", &meta("default", None)));
        assert!(!made_by_kubernetes("LimitRange", &meta("default", None)));
    }

    #[test]
    fn names_and_selectors_follow_the_contract() {
        assert_eq!(namespace_name("demo"), "bottle-demo");
        assert_eq!(
            project_selector("demo"),
            "bottle.managed=true,bottle.project=demo"
        );
        assert!(labels::is_ours(&namespace_labels("demo"), "demo"));
        assert!(!labels::is_ours(&namespace_labels("demo"), "other"));
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_file_is_a_clear_error() {
        let target = Target {
            kubeconfig: Some("/nonexistent/kubeconfig".into()),
            context: None,
        };
        let err = Cluster::connect(&target).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/kubeconfig"), "{err}");
    }
}
