//! `bottle diff`: what `apply` would do, per object, with the fields that changed.

use super::{ManifestArgs, Output, connect, desired_state, load_manifest, render};
use crate::apply::observe;
use crate::plan::{self, Observed};

pub async fn run(args: ManifestArgs) -> anyhow::Result<i32> {
    let manifest = load_manifest(&args.file)?;
    let desired = desired_state(&manifest)?;
    let docker = connect().await?;
    let snap = observe(&docker, &desired.project).await?;
    let p = plan::plan(&desired, &Observed::from_snapshot(&desired.project, &snap));
    match args.output {
        Output::Json => println!("{}", render::plan_json(&p)),
        Output::Text if p.is_empty() => {
            eprintln!("in sync: {} objects unchanged", p.unchanged.len())
        }
        Output::Text => print!("{}", render::plan_text(&p)),
    }
    Ok(if p.is_empty() { 0 } else { 1 })
}
