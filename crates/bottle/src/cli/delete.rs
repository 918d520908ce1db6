//! `bottle delete`: remove a project's bottles (or only the named ones), dependents
//! first. Only objects labelled with the project are touched. On Kubernetes a whole
//! project's delete also removes its namespace, when nothing but bottle's was in it.

use super::{Backend, DeleteArgs, connect, connect_kube, lock_project, project_of, render};
use crate::apply::{Outcome, execute, observe, schedule};
use crate::engine::Engine;
use crate::graph::DesiredState;
use crate::nodes::ObjectKind;
use crate::plan::{self, Observed};
use bottle_kube::{NamespaceOutcome, namespace_name};

/// How long `delete` waits for the project's namespace to be gone (its objects' own
/// deletion, the namespace controller's pass), so the next `apply` can make it anew.
const NAMESPACE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn run(args: DeleteArgs) -> anyhow::Result<i32> {
    let project = project_of(args.file.as_deref(), args.project.as_deref())?;
    let _lock = lock_project(&project, args.wait_lock).await?;
    match args.backend.backend {
        Backend::Docker => remove(&connect().await?, &project, &args).await,
        Backend::Kubernetes => {
            let kube = connect_kube(&project, &args.backend, false).await?;
            let code = remove(&kube, &project, &args).await?;
            // The whole project went: its namespace goes too, unless something not
            // bottle's is in it.
            if code == 0 && args.names.is_empty() && !args.keep_workspace {
                match kube
                    .cluster()
                    .remove_namespace(&project, NAMESPACE_WAIT)
                    .await?
                {
                    NamespaceOutcome::Removed => {
                        eprintln!("  ok      delete namespace {}", namespace_name(&project))
                    }
                    NamespaceOutcome::Absent => {}
                    NamespaceOutcome::Kept(why) => eprintln!("  kept    {why}"),
                }
            }
            Ok(code)
        }
    }
}

async fn remove<E: Engine>(engine: &E, project: &str, args: &DeleteArgs) -> anyhow::Result<i32> {
    let snap = observe(engine, project).await?;
    let nothing = DesiredState::empty(project);
    let mut p = plan::plan(&nothing, &Observed::from_snapshot(project, &snap));
    if !args.names.is_empty() {
        p.steps.retain(|s| args.names.contains(&s.bottle));
    }
    if args.keep_workspace {
        p.steps.retain(|s| {
            s.key.kind != ObjectKind::Volume
                || s.key.name != crate::labels::workspace_volume(project, &s.bottle)
        });
    }
    if !args.images {
        // Images hold no state and are slow to rebuild: kept unless asked.
        p.steps.retain(|s| s.key.kind != ObjectKind::Image);
    }
    let ops = schedule(&p, &nothing);
    let reports = execute(
        engine,
        &nothing,
        ops,
        crate::apply::DEFAULT_CONCURRENCY,
        &mut |r| {
            eprintln!("{}", render::progress_line(r));
        },
    )
    .await?;
    println!("{}", render::summary(&reports));
    Ok(if reports.iter().all(|r| r.outcome == Outcome::Done) {
        0
    } else {
        2
    })
}
