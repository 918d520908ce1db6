//! `bottle diff`: what `apply` would do, per object, with the fields that changed; and
//! the operator's grants (`bottle queue approve`) as their own layer on top of the
//! manifest. A bottle whose gVisor runtime is missing or broken is warned about on
//! stderr (`bottle_core::runtime`).

use super::{
    Backend, DiffArgs, Output, connect, connect_kube, desired_state, load_manifest, render,
    with_runtime_facts,
};
use crate::apply::{grants_of, observe, plan_observed};
use crate::engine::Engine;
use crate::graph::DesiredState;

pub async fn run(args: DiffArgs) -> anyhow::Result<i32> {
    let manifest = load_manifest(&args.manifest.file)?;
    let desired = desired_state(&manifest)?;
    match args.backend.backend {
        Backend::Docker => {
            let docker = connect().await?;
            let desired = with_runtime_facts(&docker, desired).await?;
            show(&docker, &desired, args.manifest.output).await
        }
        Backend::Kubernetes => {
            let kube = connect_kube(&manifest.project, &args.backend, false).await?;
            show(&kube, &desired, args.manifest.output).await
        }
    }
}

async fn show<E: Engine>(
    engine: &E,
    desired: &DesiredState,
    output: Output,
) -> anyhow::Result<i32> {
    let snap = observe(engine, &desired.project).await?;
    let now = bottle_contract::supervise::now();
    let grants = grants_of(&desired.project, &snap, now);
    let (_, p) = plan_observed(desired, &snap, &grants)?;
    match output {
        Output::Json => {
            let mut v = render::plan_json(&p);
            v["grants"] = render::grants_json(&grants, now);
            println!("{v}")
        }
        Output::Text => {
            if p.is_empty() {
                eprintln!("in sync: {} objects unchanged", p.unchanged.len())
            } else {
                print!("{}", render::plan_text(&p))
            }
            print!("{}", render::grants_text(&grants, now));
        }
    }
    Ok(if p.is_empty() { 0 } else { 1 })
}
