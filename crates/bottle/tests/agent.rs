//! Issue 3 acceptance: the agent inside (workspace, prompt, skills, exec, logs, get,
//! gVisor); issue 17: a gVisor whose `ls` fails is not given to an `auto` agent.

use std::process::Command;

use crate::util::*;

/// An agent image with git, built from the local Debian base.
const GIT_DOCKERFILE: &str = "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*\nCMD [\"sleep\", \"infinity\"]\n";

/// A workspace with one file and two commits, a skill, and a manifest using them.
fn setup(p: &Project, prompt: &str, runtime: &str) -> String {
    std::fs::write(p.path("Dockerfile"), GIT_DOCKERFILE).expect("Dockerfile");
    let ws = p.path("ws");
    std::fs::create_dir_all(&ws).expect("ws");
    if !ws.join(".git").exists() {
        std::fs::write(ws.join("file.txt"), "hello\n").expect("file");
        for args in [
            &["init", "-q"][..],
            &["add", "."],
            &[
                "-c",
                "user.email=t@t",
                "-c",
                "user.name=t",
                "commit",
                "-qm",
                "first",
            ],
            &[
                "-c",
                "user.email=t@t",
                "-c",
                "user.name=t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "second",
            ],
        ] {
            let ok = Command::new("git")
                .args(args)
                .current_dir(&ws)
                .status()
                .expect("git");
            assert!(ok.success());
        }
    }
    let skill = p.path("skills/code-review");
    std::fs::create_dir_all(&skill).expect("skill dir");
    std::fs::write(skill.join("SKILL.md"), "# Code review skill\n").expect("skill");
    let m = p.manifest(&format!(
        "bottles:\n  dev:\n    image: {{dockerfile: Dockerfile}}\n    runtime: {runtime}\nagents:\n  rev:\n    bottle: dev\n    prompt: \"{prompt}\"\n    skills: [code-review]\n    workspace: ws\n"
    ));
    m.to_str().expect("utf-8").to_string()
}

fn skills_env(p: &Project) -> String {
    p.path("skills").to_str().expect("utf-8").to_string()
}

#[test]
fn workspace_prompt_and_skills_are_provisioned_and_exec_passes_status() {
    let p = Project::new("ag");
    let m = setup(&p, "You review pull requests.", "runc");
    let skills = skills_env(&p);
    let env = [("BOTTLE_SKILLS_DIR", skills.as_str())];
    p.bottle_env(&["apply", "-f", &m], &env).expect(0);

    // The same commits inside; writing inside leaves the host folder alone.
    let host_log = Command::new("git")
        .args(["log", "--format=%H"])
        .current_dir(p.path("ws"))
        .output()
        .expect("git log");
    let host_log = String::from_utf8_lossy(&host_log.stdout).to_string();
    let inside = p
        .bottle_env(
            &[
                "exec",
                "rev",
                "-p",
                &p.name,
                "--",
                "git",
                "log",
                "--format=%H",
            ],
            &env,
        )
        .expect(0);
    assert_eq!(inside.stdout, host_log);
    p.bottle_env(
        &[
            "exec",
            "rev",
            "-p",
            &p.name,
            "--",
            "sh",
            "-c",
            "echo agent > written.txt && echo more >> file.txt",
        ],
        &env,
    )
    .expect(0);
    assert!(!p.path("ws/written.txt").exists());
    assert_eq!(
        std::fs::read_to_string(p.path("ws/file.txt")).expect("read"),
        "hello\n"
    );

    // Prompt and skill are there, owned by the agent; the exit status passes through.
    let out = p
        .bottle_env(
            &[
                "exec", "rev", "-p", &p.name, "--", "sh", "-c",
                "cat $BOTTLE_PROMPT_FILE; ls ~/.claude/skills/code-review; stat -c %u ~/.claude/skills/code-review/SKILL.md",
            ],
            &env,
        )
        .expect(0);
    assert!(
        out.stdout.contains("You review pull requests."),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("SKILL.md"), "{}", out.stdout);
    assert!(out.stdout.contains("1000"), "{}", out.stdout);
    let seven = p.bottle_env(
        &["exec", "rev", "-p", &p.name, "--", "sh", "-c", "exit 7"],
        &env,
    );
    assert_eq!(seven.code, 7, "{}", seven.stderr);

    // Plain pipes when stdin is not a terminal: input reaches the command.
    let mut child = Command::new(env!("CARGO_BIN_EXE_bottle"))
        .args(["exec", "rev", "-p", &p.name, "--", "tr", "a-z", "A-Z"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"piped input\n").expect("write");
    }
    let out = child.wait_with_output().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED INPUT\n");

    // get shows provider, image, runtime, node states and the workspace volume.
    let get = p.bottle_env(&["get", "-f", &m], &env).expect(0);
    for want in [
        "provider claude",
        "runtime runc",
        "-agent:",
        "-rev-workspace",
        "running",
        "-rev-pipelock  ready",
        "-rev-egress  ready",
        "-rev-agent-net  ready",
    ] {
        assert!(
            get.stdout.contains(want),
            "get lacks {want}: {}",
            get.stdout
        );
    }
    // logs of a sidecar.
    let logs = p
        .bottle_env(&["logs", "rev", "-p", &p.name, "--node", "egress"], &env)
        .expect(0);
    let text = format!("{}{}", logs.stdout, logs.stderr);
    assert!(text.contains("egress proxy listening"), "{text}");
}

#[test]
fn a_changed_prompt_recreates_only_the_agent_and_keeps_the_workspace() {
    let p = Project::new("pr");
    let m = setup(&p, "First prompt.", "runc");
    let skills = skills_env(&p);
    let env = [("BOTTLE_SKILLS_DIR", skills.as_str())];
    p.bottle_env(&["apply", "-f", &m], &env).expect(0);
    let target = ["-p", p.name.as_str()];
    p.bottle_env(
        &[
            "exec",
            "rev",
            target[0],
            target[1],
            "--",
            "sh",
            "-c",
            "echo kept > mine.txt",
        ],
        &env,
    )
    .expect(0);
    let egress = inspect(&p.obj("rev", "egress"), "{{.Id}}");
    let agent = inspect(&p.obj("rev", "agent"), "{{.Id}}");

    setup(&p, "Second prompt.", "runc");
    let d = p.bottle_env(&["diff", "-f", &m], &env).expect(1);
    assert!(d.stdout.contains("prompt changed"), "{}", d.stdout);
    assert!(!d.stdout.contains("workspace"), "{}", d.stdout);
    p.bottle_env(&["apply", "-f", &m], &env).expect(0);

    assert_ne!(inspect(&p.obj("rev", "agent"), "{{.Id}}"), agent);
    assert_eq!(inspect(&p.obj("rev", "egress"), "{{.Id}}"), egress);
    let out = p
        .bottle_env(
            &[
                "exec",
                "rev",
                target[0],
                target[1],
                "--",
                "sh",
                "-c",
                "cat mine.txt; cat $BOTTLE_PROMPT_FILE",
            ],
            &env,
        )
        .expect(0);
    assert!(out.stdout.contains("kept"), "{}", out.stdout);
    assert!(out.stdout.contains("Second prompt."), "{}", out.stdout);

    // delete --keep-workspace keeps the volume; delete removes it.
    p.bottle(&["delete", "-p", &p.name, "--keep-workspace"])
        .expect(0);
    assert_eq!(
        p.objects("volume"),
        vec![format!("bottle-{}-rev-workspace", p.name)]
    );
    p.bottle(&["delete", "-p", &p.name]).expect(0);
    assert!(p.objects("volume").is_empty());
}

#[test]
fn a_missing_skill_is_a_manifest_error_and_exec_needs_a_running_bottle() {
    let p = Project::new("sk");
    let m = setup(&p, "x", "runc");
    let out = p
        .bottle_env(
            &["diff", "-f", &m],
            &[
                ("BOTTLE_SKILLS_DIR", "/nonexistent"),
                ("DOCKER_HOST", "unix:///nonexistent.sock"),
            ],
        )
        .expect(2);
    assert!(
        out.stderr.contains("skill `code-review` not found"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("bottles.yaml:"), "{}", out.stderr);
    let out = p
        .bottle(&["exec", "nosuchbottle", "-p", &p.name, "--", "true"])
        .expect(2);
    assert!(out.stderr.contains("bottle apply"), "{}", out.stderr);
}

/// Register runsc with the engine (idempotent; scripts/setup.sh does the same), and say
/// whether `ls` works under it, asked directly of the engine.
fn runsc_registered_and_working() -> bool {
    let script = crate::util::repo_root().join("scripts/runsc.sh");
    let ok = Command::new(&script)
        .status()
        .expect("run scripts/runsc.sh");
    assert!(ok.success(), "registering runsc failed");
    assert!(docker(&["info", "--format", "{{json .Runtimes}}"]).contains("runsc"));
    Command::new("docker")
        .args(["run", "--rm", "--runtime", "runsc", "debian:bookworm-slim"])
        .args(["ls", "-d", "/"])
        .output()
        .expect("run docker")
        .status
        .success()
}

#[test]
fn runtime_auto_avoids_a_broken_gvisor_and_runtime_runsc_keeps_it_with_a_warning() {
    // On this machine (Debian's runsc 0.0~20221219) `ls` fails under gVisor: statx
    // with AT_NO_AUTOMOUNT is refused with EINVAL. A fresh cache: bottle probes.
    let works = runsc_registered_and_working();
    let p = Project::new("gv");
    // Outside the project: the project directory is the agent's build context.
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().join("cache");
    let env = [("XDG_CACHE_HOME", cache.to_str().expect("utf-8"))];
    let body = |rt: &str| {
        format!(
            "bottles:\n  dev: {{image: {{dockerfile: Dockerfile}}, runtime: {rt}}}\nagents:\n  x: {{bottle: dev}}\n"
        )
    };
    let m = p.manifest(&body("auto"));
    let m = m.to_str().expect("utf-8");
    let out = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    let agent = p.obj("x", "agent");
    if works {
        assert_eq!(inspect(&agent, "{{.HostConfig.Runtime}}"), "runsc");
        assert!(!out.stderr.contains("warning: bottle x"), "{}", out.stderr);
    } else {
        assert_eq!(inspect(&agent, "{{.HostConfig.Runtime}}"), "runc");
        assert!(
            out.stderr
                .contains("warning: bottle x: runtime auto: using runc")
                && out.stderr.contains("AT_NO_AUTOMOUNT")
                && out.stderr.contains("a newer runsc"),
            "{}",
            out.stderr
        );
    }
    // Whatever the engine's gVisor, the agent's `ls` works.
    assert_eq!(docker(&["exec", &agent, "ls", "-d", "/"]).trim(), "/");

    // `runtime: runsc` keeps gVisor, broken or not; diff and apply say so.
    p.manifest(&body("runsc"));
    let diff = p.bottle_env(&["diff", "-f", m], &env).expect(1);
    let apply = p.bottle_env(&["apply", "-f", m], &env).expect(0);
    let again = p.bottle_env(&["diff", "-f", m], &env).expect(0);
    if !works {
        for out in [&diff, &apply, &again] {
            assert!(
                out.stderr.contains("warning: bottle x: runtime runsc")
                    && out.stderr.contains("a newer runsc"),
                "{}",
                out.stderr
            );
        }
    }
    assert_eq!(inspect(&agent, "{{.HostConfig.Runtime}}"), "runsc");
    let dmesg = docker(&["exec", &agent, "dmesg"]);
    assert!(dmesg.contains("gVisor"), "{dmesg}");
    // Still no route out under gVisor.
    let out = docker_try(&[
        "exec",
        &agent,
        "bash",
        "-c",
        "timeout 5 bash -c 'echo > /dev/tcp/1.1.1.1/53' && echo REACHED || echo BLOCKED",
    ]);
    assert!(out.contains("BLOCKED"), "{out}");
    let get = p.bottle_env(&["get", "-p", &p.name], &env).expect(0);
    assert!(get.stdout.contains("runtime runsc"), "{}", get.stdout);
}

#[test]
fn the_runsc_verdict_is_probed_once_and_cached() {
    runsc_registered_and_working();
    let p = Project::new("gc");
    // Outside the project: the project directory is the agent's build context.
    let cache_dir = tempfile::tempdir().expect("temp dir");
    let cache = cache_dir.path().join("cache");
    let env = [("XDG_CACHE_HOME", cache.to_str().expect("utf-8"))];
    let m = p.manifest(
        "bottles:\n  dev: {image: {dockerfile: Dockerfile}}\nagents:\n  x: {bottle: dev}\n",
    );
    let m = m.to_str().expect("utf-8");
    p.bottle_env(&["diff", "-f", m], &env).expect(1);
    let file = cache.join("bottle/runsc-probe.json");
    let text = std::fs::read_to_string(&file).expect("the verdict is cached");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let entry = &mut v["entries"][0];
    assert!(
        entry["key"]["engine"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{text}"
    );
    assert!(entry["verdict"].is_string(), "{text}");
    // A verdict only the cache knows: the next run must take it from there, not probe.
    entry["verdict"] = "broken".into();
    entry["defect"] = "CACHED-MARKER".into();
    std::fs::write(&file, v.to_string()).expect("write cache");
    let out = p.bottle_env(&["diff", "-f", m], &env).expect(1);
    assert!(out.stderr.contains("CACHED-MARKER"), "{}", out.stderr);
    assert!(
        std::fs::read_to_string(&file)
            .expect("cache")
            .contains("CACHED-MARKER"),
        "the cache was probed over"
    );
    // Deleting the file forgets the verdict: the next run probes again.
    std::fs::remove_file(&file).expect("rm");
    let out = p.bottle_env(&["diff", "-f", m], &env).expect(1);
    assert!(!out.stderr.contains("CACHED-MARKER"), "{}", out.stderr);
    assert!(file.exists());
}
