//! `bottle logs NAME [--node NODE] [-f]`: the logs of a bottle's agent or of one of its
//! sidecars. On Kubernetes through the pod `log` subresource: one log per container
//! (stdout and stderr as the kubelet keeps them), printed on stdout.

use super::{Backend, LogsArgs, connect, connect_kube_sessions, find_agent, target_project};
use crate::labels;

pub async fn run(args: LogsArgs) -> anyhow::Result<i32> {
    let project = target_project(&args.target)?;
    let node = &args.node;
    match args.backend.backend {
        Backend::Docker => {
            let docker = connect().await?;
            let agent = find_agent(&docker, &args.target, project.as_deref()).await?;
            let container = labels::object_name(&agent.project, &args.target.name, node);
            docker.stream_logs(&container, args.follow).await?;
        }
        Backend::Kubernetes => {
            let kube = connect_kube_sessions(project.as_deref(), &args.backend).await?;
            let agent = find_agent(&kube, &args.target, project.as_deref()).await?;
            let container = labels::object_name(&agent.project, &args.target.name, node);
            kube.stream_logs(&container, args.follow).await?;
        }
    }
    Ok(0)
}
