//! Issue 7 acceptance: the git-gate is the agent's only git remote; pushes are
//! secret-scanned and forwarded over SSH to a real OpenSSH upstream.
//!
//! The upstream is an `openssh-server` container holding a bare repository, on the
//! bottle's net-egress network as `git.example.test`, with a host key and a client key
//! generated here. The agent uses the `.gitconfig` of `git_gate::agent_gitconfig`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

/// An agent image with git, built from the local Debian base.
const GIT_DOCKERFILE: &str = "FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*\nCMD [\"sleep\", \"infinity\"]\n";

const SSHD_DOCKERFILE: &str = "FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-server git && rm -rf /var/lib/apt/lists/*
RUN useradd -m -s /bin/sh git && usermod -p '*' git && mkdir -p /run/sshd \\
 && git init -q --bare -b main /srv/repo.git \\
 && git init -q -b main /tmp/w && git -C /tmp/w -c user.email=u@u -c user.name=u commit -q --allow-empty -m initial \\
 && git -C /tmp/w push -q /srv/repo.git main && rm -rf /tmp/w && chown -R git:git /srv
COPY start.sh /start.sh
CMD [\"/bin/sh\", \"/start.sh\"]
";

/// Writes the keys handed in by environment, then runs sshd.
const SSHD_START: &str = r#"set -e
mkdir -p /home/git/.ssh
printf '%s\n' "$AUTHORIZED_KEY" > /home/git/.ssh/authorized_keys
chown -R git:git /home/git/.ssh && chmod 700 /home/git/.ssh && chmod 600 /home/git/.ssh/authorized_keys
printf '%s' "$HOST_KEY_B64" | base64 -d > /etc/ssh/bottle_host_key
chmod 600 /etc/ssh/bottle_host_key
exec /usr/sbin/sshd -D -e -h /etc/ssh/bottle_host_key
"#;

const AWS_KEY: &str = "AKIAZ7VRSQ5CXMPLW3QD";

/// The upstream image, built once (cached by its tag).
fn sshd_image(dir: &Path) -> String {
    let tag = "bottle-test-sshd:1".to_string();
    if docker_try(&["image", "inspect", "-f", "{{.Id}}", &tag])
        .trim()
        .is_empty()
    {
        let ctx = dir.join("sshd");
        std::fs::create_dir_all(&ctx).expect("ctx");
        std::fs::write(ctx.join("Dockerfile"), SSHD_DOCKERFILE).expect("Dockerfile");
        std::fs::write(ctx.join("start.sh"), SSHD_START).expect("start.sh");
        docker(&["build", "-q", "-t", &tag, ctx.to_str().expect("utf-8")]);
    }
    tag
}

/// `ssh-keygen` an ed25519 key pair at `path`; returns the public key line.
fn keygen(path: &Path) -> String {
    let ok = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "test", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen");
    assert!(ok.success());
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
    // "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..."
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The upstream container; removed on drop (before the project's networks go).
struct Upstream {
    name: String,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", &self.name]);
    }
}

impl Upstream {
    fn git(&self, args: &str) -> String {
        docker(&[
            "exec",
            "-u",
            "git",
            &self.name,
            "sh",
            "-c",
            &format!("git --git-dir /srv/repo.git {args}"),
        ])
    }
}

/// Run a shell script in the agent as the agent user, with the gate's gitconfig.
fn agent_sh(agent: &str, script: &str) -> (bool, String) {
    let o = Command::new("docker")
        .args([
            "exec",
            "-e",
            "GIT_CONFIG_GLOBAL=/tmp/gitconfig",
            "-e",
            "HOME=/tmp",
            "-e",
            "GIT_AUTHOR_NAME=agent",
            "-e",
            "GIT_AUTHOR_EMAIL=agent@bottle",
            "-e",
            "GIT_COMMITTER_NAME=agent",
            "-e",
            "GIT_COMMITTER_EMAIL=agent@bottle",
            "-w",
            "/tmp",
            agent,
            "sh",
            "-c",
            script,
        ])
        .output()
        .expect("docker exec");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), out)
}

/// A container's logs, both streams.
fn logs(name: &str) -> String {
    let o = Command::new("docker")
        .args(["logs", name])
        .output()
        .expect("docker logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write_into(container: &str, path: &str, contents: &str) {
    let mut child = Command::new("docker")
        .args([
            "exec",
            "-i",
            container,
            "sh",
            "-c",
            &format!("cat > {path}"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("docker exec");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(contents.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

/// The agent's `.gitconfig`, from the library, for the manifest at `m`.
fn gitconfig(m: &Path, bottle: &str) -> String {
    let env = |k: &str| std::env::var(k).ok();
    let manifest = bottle::manifest::load(m, &env).expect("manifest");
    let agent = &manifest.agents[bottle];
    let key = bottle::hash::DigestKey::fixed(0);
    let contexts = bottle::images::ContextCache::default();
    let ctx = bottle::nodes::BottleCtx {
        project: &manifest.project,
        manifest_path: &manifest.path,
        bottle,
        agent,
        policy: &manifest.bottles[&agent.bottle],
        key: &key,
        sidecar_image: "unused",
        contexts: &contexts,
    };
    bottle::nodes::git_gate::agent_gitconfig(&ctx).expect("a gitconfig")
}

#[test]
fn pushes_are_scanned_and_forwarded_over_ssh_and_the_agent_has_no_other_way() {
    let p = Project::new("gg");
    std::fs::write(p.path("Dockerfile"), GIT_DOCKERFILE).expect("Dockerfile");
    let image = sshd_image(p.dir.path());
    let host_key = p.path("host_key");
    let host_pub = keygen(&host_key);
    let client_key = p.path("client_key");
    let client_pub = keygen(&client_key);
    let wrong_pub = keygen(&p.path("wrong_host_key"));
    let m = p.manifest(&format!(
        "bottles:
  dev:
    image: {{dockerfile: Dockerfile}}
    runtime: runc
    git:
      - name: origin
        upstream: ssh://git@git.example.test/srv/repo.git
        identity_file: {key}
        known_host_key: \"git.example.test {host_pub}\"
      - name: pinned-wrong
        upstream: ssh://git@git.example.test/srv/other.git
        identity_file: {key}
        known_host_key: \"git.example.test {wrong_pub}\"
agents:
  dev: {{bottle: dev}}
",
        key = client_key.display()
    ));
    let ms = m.to_str().expect("utf-8");
    // The gate starts before its upstream exists: it retries.
    let applied = p.bottle(&["apply", "-f", ms]).expect(0);
    p.bottle(&["verify", "-f", ms]).expect(0);
    // The upstream does not exist yet: apply returns once the gate has tried, naming it.
    assert!(
        applied.stderr.contains("ready")
            && applied
                .stderr
                .contains("upstream unreachable, retried: origin"),
        "{}",
        applied.stderr
    );
    let upstream = Upstream {
        name: format!("{}-upstream", p.obj("dev", "test")),
    };
    let host_b64 = {
        use std::io::Read;
        let mut s = String::new();
        std::fs::File::open(&host_key)
            .expect("host key")
            .read_to_string(&mut s)
            .expect("read");
        let o = Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("stdin").write_all(s.as_bytes())?;
                c.wait_with_output()
            })
            .expect("base64");
        String::from_utf8(o.stdout).expect("utf-8")
    };
    docker(&[
        "run",
        "-d",
        "--name",
        &upstream.name,
        "--network",
        &p.obj("dev", "net-egress"),
        "--network-alias",
        "git.example.test",
        "-e",
        &format!("AUTHORIZED_KEY={client_pub}"),
        "-e",
        &format!("HOST_KEY_B64={host_b64}"),
        &image,
    ]);
    let initial = upstream.git("rev-parse main");

    let agent = p.obj("dev", "agent");
    let gate = p.obj("dev", "git-gate");
    write_into(&agent, "/tmp/gitconfig", &gitconfig(&m, "dev"));

    // The agent clones with the upstream's own URL, once the gate's mirror is ready.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, out) = agent_sh(
            &agent,
            "rm -rf w && git clone -q ssh://git@git.example.test/srv/repo.git w",
        );
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clone never worked: {out}\n{}",
            logs(&gate)
        );
        assert!(out.contains("remote error: git-gate"), "{out}");
        std::thread::sleep(Duration::from_secs(2));
    }

    // A clean commit lands upstream.
    let (ok, out) = agent_sh(
        &agent,
        "cd w && echo hello > hello.txt && git add hello.txt && git commit -qm 'clean change' && git push origin HEAD:main 2>&1",
    );
    assert!(ok, "{out}");
    assert_eq!(
        upstream.git("log -1 --format=%s main").trim(),
        "clean change"
    );
    let landed = upstream.git("rev-parse main");
    assert_ne!(landed, initial);

    // A commit adding an AWS key is refused, naming commit, file, line and rule only.
    let (ok, out) = agent_sh(
        &agent,
        &format!(
            "cd w && printf 'one\\naws_key = {AWS_KEY}\\n' > config.ini && git add config.ini && git commit -qm 'add config' && git push origin HEAD:main 2>&1"
        ),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("config.ini:2: aws-access-key-id"), "{out}");
    assert!(out.contains("commit "), "{out}");
    assert!(!out.contains(AWS_KEY), "the secret is echoed: {out}");
    assert_eq!(upstream.git("rev-parse main"), landed);

    // Removing it in a later commit does not help: the history still carries it.
    let (ok, out) = agent_sh(
        &agent,
        "cd w && git rm -q config.ini && git commit -qm 'remove config' && git push origin HEAD:main 2>&1",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("config.ini:2: aws-access-key-id"), "{out}");
    assert!(!out.contains(AWS_KEY), "{out}");
    assert_eq!(upstream.git("rev-parse main"), landed);

    // Annotated tags: one whose message holds a key (on a commit upstream has), and a
    // clean one on a new commit that adds a key: both refused; a clean one lands.
    let (ok, out) = agent_sh(
        &agent,
        &format!(
            "cd w && git reset -q --hard origin/main && git tag -a v1 -m 'release

aws {AWS_KEY}' && git push origin v1 2>&1"
        ),
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("tag v1 (") && out.contains("tag message line 3: aws-access-key-id"),
        "{out}"
    );
    assert!(!out.contains(AWS_KEY), "{out}");
    let (ok, out) = agent_sh(
        &agent,
        &format!(
            "cd w && printf 'k={AWS_KEY}\\n' > tagged.ini && git add tagged.ini && git commit -qm tagged && git tag -a v2 -m 'clean message' && git push origin v2 2>&1"
        ),
    );
    assert!(!ok, "{out}");
    assert!(out.contains("tagged.ini:1: aws-access-key-id"), "{out}");
    assert!(!out.contains(AWS_KEY), "{out}");
    assert_eq!(upstream.git("tag -l").trim(), "", "a tag landed");
    let (ok, out) = agent_sh(
        &agent,
        "cd w && git tag -a v3 -m 'clean release' origin/main && git push origin v3 2>&1",
    );
    assert!(ok, "{out}");
    assert_eq!(upstream.git("cat-file -t v3").trim(), "tag");
    assert_eq!(upstream.git("rev-parse v3^{commit}"), landed);
    assert_eq!(upstream.git("rev-parse main"), landed);

    // Rewriting history is a force push: refused (allow_force is false), and so is a
    // deletion.
    let (ok, out) = agent_sh(
        &agent,
        "cd w && git reset -q --hard origin/main~1 && git commit -q --allow-empty -m rewrite && git push -f origin HEAD:main 2>&1",
    );
    assert!(!ok, "{out}");
    assert!(out.contains("not a fast-forward"), "{out}");
    let (ok, out) = agent_sh(&agent, "cd w && git push origin :main 2>&1");
    assert!(!ok, "{out}");
    assert!(
        out.contains("deleting refs/heads/main is not allowed"),
        "{out}"
    );
    assert_eq!(upstream.git("rev-parse main"), landed);

    // A remote whose pinned host key is wrong fails loudly; nothing lands anywhere.
    // (Its first attempts may predate the upstream: wait for one that reached it.)
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (ok, out) = agent_sh(
            &agent,
            "git clone -q ssh://git@git.example.test/srv/other.git o 2>&1",
        );
        assert!(!ok, "{out}");
        assert!(out.contains("remote error: git-gate"), "{out}");
        // ssh's verdict on a pinned key that does not match.
        if out.contains("Host key verification failed")
            || out.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        std::thread::sleep(Duration::from_secs(2));
    }
    assert!(
        docker_try(&["exec", &upstream.name, "ls", "/srv"])
            .trim()
            .eq("repo.git")
    );
    assert_eq!(upstream.git("rev-parse main"), landed);

    // The agent cannot reach the upstream itself, by name or by address.
    let ip = inspect(
        &upstream.name,
        &format!(
            "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
            p.obj("dev", "net-egress")
        ),
    );
    assert!(!ip.is_empty());
    for target in [ip.as_str(), "git.example.test"] {
        let out = docker_try(&[
            "exec",
            &agent,
            "bash",
            "-c",
            &format!(
                "timeout 5 bash -c 'echo > /dev/tcp/{target}/22' 2>/dev/null && echo REACHED || echo BLOCKED"
            ),
        ]);
        assert!(out.contains("BLOCKED"), "{target}: {out}");
    }

    // The key is in the gate only (0400, the gate user's), never in the agent or in the
    // gate's configuration.
    let key_text = std::fs::read_to_string(&client_key).expect("key");
    let key_line = key_text
        .lines()
        .find(|l| l.len() > 40 && !l.starts_with("-----"))
        .expect("a key body line");
    assert_eq!(
        docker(&[
            "exec",
            &gate,
            "stat",
            "-c",
            "%a %u",
            "/etc/bottle/git/origin.key"
        ])
        .trim(),
        "400 65534"
    );
    let found = docker_try(&[
        "exec",
        &agent,
        "sh",
        "-c",
        &format!(
            "grep -rlsF -e '{key_line}' / --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev; true"
        ),
    ]);
    assert!(found.trim().is_empty(), "key found in the agent: {found}");
    let inspected = docker(&["inspect", &gate, &agent]);
    assert!(!inspected.contains(key_line));
    let gate_logs = logs(&gate);
    assert!(gate_logs.contains("mirror ready"), "{gate_logs}");
    assert!(!gate_logs.contains(key_line) && !gate_logs.contains(AWS_KEY));
    drop(upstream);
}
