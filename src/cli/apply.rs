//! `bottle apply`: converge Docker to the manifest. Progress per operation on stderr,
//! the summary on stdout.

use super::{ApplyArgs, Output, connect, desired_state, load_manifest, render};
use crate::apply::{Outcome, execute, observe, schedule};
use crate::plan::{self, Action, Observed};

pub async fn run(args: ApplyArgs) -> anyhow::Result<i32> {
    let manifest = load_manifest(&args.manifest.file)?;
    let desired = desired_state(&manifest)?;
    let docker = connect().await?;
    let snap = observe(&docker, &desired.project).await?;
    let mut p = plan::plan(&desired, &Observed::from_snapshot(&desired.project, &snap));
    if !args.prune {
        p.steps.retain(|s| s.action != Action::Delete);
    }
    if p.is_empty() {
        eprintln!("in sync: {} objects unchanged", p.unchanged.len());
    } else {
        eprint!("{}", render::plan_text(&p));
    }
    let ops = schedule(&p, &desired);
    let reports = execute(&docker, &desired, ops, args.concurrency, &mut |r| {
        eprintln!("{}", render::progress_line(r));
    })
    .await?;
    let failed = reports.iter().any(|r| !matches!(r.outcome, Outcome::Done));
    match args.manifest.output {
        Output::Json => println!("{}", render::report_json(&reports)),
        Output::Text => println!("{}", render::summary(&reports)),
    }
    Ok(if failed { 2 } else { 0 })
}
