//! `bottle logs NAME [--node NODE] [-f]`: the logs of a bottle's agent or of one of its
//! sidecars.

use super::{LogsArgs, connect, find_agent};
use crate::labels;

pub async fn run(args: LogsArgs) -> anyhow::Result<i32> {
    let docker = connect().await?;
    let agent = find_agent(&docker, &args.target).await?;
    let container = labels::object_name(&agent.project, &args.target.name, &args.node);
    docker.stream_logs(&container, args.follow).await?;
    Ok(0)
}
