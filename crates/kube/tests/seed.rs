//! End-to-end test of copying a host tree into a volume claim on the Kubernetes engine
//! (feature `kube-e2e`; docs/design.md section 9.10) on the test cluster of
//! scripts/kube/cluster.sh: an agent with `workspace:` naming a small host tree.
//!
//! Shows: the bottle converges, the tree going into the workspace claim through the
//! seeding helper (`bottle sidecar seed-trees` exec'd in, its length and digest
//! checked); the agent's container sees the files with their contents, the agent's
//! owner, their modes and a link; a second pass plans nothing; a helper left by an
//! interrupted seeding makes the next pass make the claim anew, seeded again.
#![cfg(feature = "kube-e2e")]

mod common;

use bottle_core::graph::DesiredState;
use bottle_core::nodes::ObjectSpec;
use bottle_engine::{Exec, VolumeSpec};
use bottle_kube::engine::render;
use common::{down_if_started, pass};

const PROJECT: &str = "kseed";

fn name(node: &str) -> String {
    bottle_contract::labels::object_name(PROJECT, "hello", node)
}

/// A manifest whose agent `hello` copies the host tree `ws` (three files, one of them
/// executable and one in a subdirectory, and a link) into its workspace.
fn manifest_dir() -> std::path::PathBuf {
    let d = common::manifest_dir(PROJECT, "seed");
    let ws = d.join("ws");
    std::fs::create_dir_all(ws.join("sub")).expect("tree");
    std::fs::write(ws.join("hello.txt"), "hello from the host\n").expect("file");
    std::fs::write(ws.join("sub/deep.txt"), "deep\n").expect("file");
    std::fs::write(ws.join("run.sh"), "#!/bin/sh\necho ran\n").expect("file");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ws.join("run.sh"), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    std::fs::set_permissions(ws.join("hello.txt"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");
    std::os::unix::fs::symlink("sub/deep.txt", ws.join("link")).expect("link");
    let manifest = std::fs::read_to_string(d.join("bottles.yaml")).expect("manifest");
    std::fs::write(
        d.join("bottles.yaml"),
        format!("{manifest}    workspace: {}\n", ws.display()),
    )
    .expect("manifest");
    d
}

/// What the agent sees of its workspace (`find -printf`, not `stat`: the agent may run
/// under gVisor, where this machine's old runsc fails `stat`'s statx, README "gVisor").
async fn seen<E: Exec>(engine: &E) -> String {
    let script = "cd /home/node/workspace && cat hello.txt sub/deep.txt && \
                  find . hello.txt run.sh sub sub/deep.txt -maxdepth 0 -printf '%U:%G %m %p\n' && \
                  readlink link && cat link && ./run.sh";
    let out = engine
        .exec(
            &name("agent"),
            &["sh".to_string(), "-c".into(), script.into()],
            None,
            &[],
        )
        .await
        .expect("exec in the agent");
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
}

const EXPECTED: &str = "hello from the host\ndeep\n\
                        1000:1000 755 .\n1000:1000 640 hello.txt\n1000:1000 755 run.sh\n\
                        1000:1000 755 sub\n1000:1000 644 sub/deep.txt\n\
                        sub/deep.txt\ndeep\nran\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_is_copied_into_its_claim_and_an_interrupted_copy_is_redone() {
    let (cluster, engine, started) = common::engine(PROJECT).await;
    let dir = manifest_dir();
    let desired = common::desired_state(&dir);

    // What an interrupted run left goes first: everything below is made anew.
    pass(&engine, &DesiredState::empty(PROJECT), "clean start").await;

    // 1. Converges, the tree in the workspace, as the agent's.
    pass(&engine, &desired, "apply").await;
    assert_eq!(seen(&engine).await, EXPECTED);
    let again = pass(&engine, &desired, "second pass").await;
    assert!(again.plan.steps.is_empty(), "{:?}", again.plan.steps);

    // 2. An interrupted seeding: everything gone, then a claim made beside its helper
    //    that never got the trees (as a run killed while sending them leaves it).
    pass(&engine, &DesiredState::empty(PROJECT), "removed").await;
    let workspace: VolumeSpec = desired
        .objects
        .values()
        .find_map(|o| match &o.spec {
            ObjectSpec::Volume(v) if !v.seed_dirs.is_empty() => Some(v.clone()),
            _ => None,
        })
        .expect("the workspace volume");
    let (_, registry, _) = common::cluster_up();
    let image = render::pushed_reference(&registry, &workspace.seed_image);
    let helper = render::seed_name(&workspace.name);
    let ns = engine.namespace().to_owned();
    let trees = render::Trees {
        bytes: 1 << 20,
        await_secs: 5,
    };
    cluster
        .create(
            &ns,
            PROJECT,
            &render::seed_pod(
                &helper,
                &workspace.labels,
                &image,
                &[&workspace],
                Some(trees),
            ),
        )
        .await
        .expect("a helper left behind");
    cluster
        .create(&ns, PROJECT, &render::volume_claim(&workspace, None, "1Gi"))
        .await
        .expect("its claim, never seeded");
    let redone = pass(&engine, &desired, "after the interruption").await;
    let steps: Vec<String> = redone
        .plan
        .steps
        .iter()
        .map(|s| format!("{:?} {}", s.action, s.key))
        .collect();
    assert!(
        steps.iter().any(|s| s.contains(&workspace.name)),
        "the half-seeded claim is not made anew: {steps:?}"
    );
    assert_eq!(seen(&engine).await, EXPECTED);
    let settled = pass(&engine, &desired, "settled").await;
    assert!(settled.plan.steps.is_empty(), "{:?}", settled.plan.steps);

    // Gone again.
    pass(&engine, &DesiredState::empty(PROJECT), "garbage collection").await;
    cluster.delete_namespace(PROJECT).await.expect("namespace");
    let _ = std::fs::remove_dir_all(&dir);
    down_if_started(started);
}
