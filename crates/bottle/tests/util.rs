//! Helpers for the integration tests: a project per test with its own temp directory,
//! `bottle` runs, Docker CLI queries, and cleanup of everything the project labels.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

/// The agent image every test bottle builds: the local Debian base, nothing else.
pub const TEST_DOCKERFILE: &str = "FROM debian:bookworm-slim\nCMD [\"sleep\", \"infinity\"]\n";

/// A test project: a unique name, a temp dir holding its manifest, cleaned up on drop.
pub struct Project {
    pub name: String,
    pub dir: tempfile::TempDir,
}

impl Project {
    pub fn new(tag: &str) -> Project {
        let n: u32 = rand::random();
        let name = format!("t{tag}{:06x}", n & 0xff_ffff);
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("Dockerfile"), TEST_DOCKERFILE).expect("write Dockerfile");
        Project { name, dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Write `bottles.yaml` (with `project:` set) and return its path.
    pub fn manifest(&self, body: &str) -> PathBuf {
        let p = self.path("bottles.yaml");
        std::fs::write(&p, format!("project: {}\n{body}", self.name)).expect("write manifest");
        p
    }

    /// Run `bottle ARGS` in the project directory.
    pub fn bottle(&self, args: &[&str]) -> Run {
        bottle_in(self.dir.path(), args, &[])
    }

    pub fn bottle_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        bottle_in(self.dir.path(), args, env)
    }

    /// `bottle-<project>-<bottle>-<node>`.
    pub fn obj(&self, bottle: &str, node: &str) -> String {
        format!("bottle-{}-{bottle}-{node}", self.name)
    }

    /// Names of this project's objects of one type (`container`, `network`, `volume`).
    pub fn objects(&self, kind: &str) -> Vec<String> {
        let label = format!("label=bottle.project={}", self.name);
        let args: Vec<&str> = match kind {
            "container" => vec!["ps", "-a", "--filter", &label, "--format", "{{.Names}}"],
            "network" => vec!["network", "ls", "--filter", &label, "--format", "{{.Name}}"],
            "volume" => vec!["volume", "ls", "--filter", &label, "--format", "{{.Name}}"],
            other => panic!("unknown kind {other}"),
        };
        let mut v: Vec<String> = docker(&args)
            .lines()
            .map(str::to_string)
            .filter(|l| !l.is_empty())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = bottle_in(
            self.dir.path(),
            &["delete", "--images", "-p", &self.name],
            &[],
        );
        // Images are per bottle and labelled with the project.
        let imgs = docker_try(&[
            "images",
            "-q",
            "--filter",
            &format!("label=bottle.project={}", self.name),
        ]);
        for id in imgs.lines().filter(|l| !l.is_empty()) {
            let _ = docker_try(&["rmi", "-f", id]);
        }
    }
}

/// The result of a `bottle` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panic with the output unless the exit status is `code`.
    pub fn expect(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit {} (wanted {code})\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// The repository's root (the workspace), where `target/`, `scripts/` and `examples/` are.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Path of the static sidecar binary that `scripts/test.sh` builds.
pub fn sidecar_binary() -> PathBuf {
    let p = std::env::var_os("BOTTLE_SIDECAR_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/x86_64-unknown-linux-gnu/release/bottle"));
    assert!(
        p.exists(),
        "no static sidecar binary at {}: run the tests with scripts/test.sh",
        p.display()
    );
    p
}

pub fn bottle_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bottle"));
    c.args(args)
        .current_dir(dir)
        .env("BOTTLE_SIDECAR_BINARY", sidecar_binary())
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("bottle-test-state"),
        )
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("bottle-test-cache"),
        );
    for (k, v) in env {
        c.env(k, v);
    }
    Run::from(c.output().expect("run bottle"))
}

/// Run the docker CLI; panic on failure.
pub fn docker(args: &[&str]) -> String {
    let o = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        o.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Run the docker CLI; return stdout, or empty on failure.
pub fn docker_try(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `docker inspect -f FORMAT NAME`, trimmed.
pub fn inspect(name: &str, format: &str) -> String {
    docker(&["inspect", "-f", format, name]).trim().to_string()
}

/// The Docker engine's clock, as `docker events --since` takes it.
pub fn engine_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    format!("{secs:.3}")
}

/// Events between `since` and now that name an object of `prefix`.
pub fn events_since(since: &str, prefix: &str) -> Vec<String> {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let until = engine_now();
    docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--format",
        "{{.Type}} {{.Action}} {{.Actor.Attributes.name}}",
    ])
    .lines()
    .filter(|l| l.contains(prefix))
    .map(str::to_string)
    .collect()
}

/// A container the test starts itself (a fake upstream), removed on drop.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_try(&["rm", "-f", &self.0]);
    }
}

/// A test PKI for a fake TLS upstream answering as `names`: writes the CA to
/// `upstream-ca.pem` in the project directory (for `egress.upstream_ca`) and the leaf
/// and its key to a world-readable `certs/` directory (to mount into the upstream's
/// container, as `/certs/leaf.pem` and `/certs/leaf.key`); returns that directory.
pub fn upstream_certs(p: &Project, names: &[&str]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let pki = bottle::sidecar::egress::testkit::TestPki::new(names);
    std::fs::write(p.path("upstream-ca.pem"), &pki.ca_pem).expect("ca");
    let certs = p.path("certs");
    std::fs::create_dir(&certs).expect("certs dir");
    std::fs::write(certs.join("leaf.pem"), &pki.leaf_pem).expect("leaf");
    std::fs::write(certs.join("leaf.key"), &pki.leaf_key_pem).expect("key");
    for f in ["leaf.pem", "leaf.key"] {
        std::fs::set_permissions(certs.join(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
    std::fs::set_permissions(&certs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    certs
}

/// Build image `tag` from `dockerfile` unless this engine has it already (apt works at
/// build time, so test clients get their tools once per machine).
pub fn ensure_image(tag: &str, dockerfile: &str) {
    if !docker_try(&["image", "inspect", "--format", "{{.Id}}", tag])
        .trim()
        .is_empty()
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
    docker(&[
        "build",
        "-q",
        "-t",
        tag,
        dir.path().to_str().expect("utf-8"),
    ]);
}

/// The image of the test servers (`bottle-testkit`, built static by `scripts/test.sh`):
/// `FROM scratch` with the binary as its entry point, tagged by the binary's digest and
/// built once per engine.
pub fn testkit_image() -> String {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| {
        let bin = std::env::var_os("BOTTLE_TESTKIT_BINARY")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                repo_root().join("target/x86_64-unknown-linux-gnu/release/bottle-testkit")
            });
        let bytes = std::fs::read(&bin).unwrap_or_else(|e| {
            panic!(
                "no static test server binary at {}: run the tests with scripts/test.sh ({e})",
                bin.display()
            )
        });
        use sha2::Digest as _;
        use std::os::unix::fs::PermissionsExt;
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        let tag = format!("bottle-testkit:{}", &digest[..16]);
        if docker_try(&["image", "inspect", "--format", "{{.Id}}", &tag])
            .trim()
            .is_empty()
        {
            let dir = tempfile::tempdir().expect("temp dir");
            std::fs::write(dir.path().join("bottle-testkit"), &bytes).expect("copy binary");
            std::fs::set_permissions(
                dir.path().join("bottle-testkit"),
                std::fs::Permissions::from_mode(0o755),
            )
            .expect("chmod");
            std::fs::write(
                dir.path().join("Dockerfile"),
                "FROM scratch\nCOPY bottle-testkit /bottle-testkit\nENTRYPOINT [\"/bottle-testkit\"]\n",
            )
            .expect("write Dockerfile");
            docker(&["build", "-q", "-t", &tag, dir.path().to_str().expect("utf-8")]);
        }
        tag
    })
    .clone()
}

/// Start an upstream for bottle `bottle` of `p`: a container of the test servers' image
/// ([`testkit_image`]) on the bottle's net-egress, answering as each of `aliases`. With `certs` (from
/// [`upstream_certs`]) it is the TLS `fake-upstream` on 443, which echoes what it got;
/// without, the plain-HTTP `health` server on 80. Removed on drop.
pub fn start_upstream(
    p: &Project,
    bottle: &str,
    aliases: &[&str],
    certs: Option<&Path>,
) -> Container {
    let upstream = Container(format!("{}-upstream", p.obj(bottle, "t")));
    let mut run: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        upstream.0.clone(),
        "--user".into(),
        "0:0".into(),
        "--network".into(),
        p.obj(bottle, "net-egress"),
    ];
    for a in aliases {
        run.extend(["--network-alias".into(), a.to_string()]);
    }
    let kind = match certs {
        Some(dir) => {
            run.extend([
                "-v".into(),
                format!("{}:/certs:ro", dir.display()),
                "-e".into(),
                "BOTTLE_FAKE_CERT=/certs/leaf.pem".into(),
                "-e".into(),
                "BOTTLE_FAKE_KEY=/certs/leaf.key".into(),
                "-e".into(),
                "BOTTLE_LISTEN=0.0.0.0:443".into(),
            ]);
            "fake-upstream"
        }
        None => {
            run.extend(["-e".into(), "BOTTLE_LISTEN=0.0.0.0:80".into()]);
            "health"
        }
    };
    run.extend([testkit_image(), kind.into()]);
    docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    upstream
}

/// Start the recording upstream (`bottle-testkit recorder`) for bottle `bottle` of `p`:
/// on the bottle's net-egress, answering as each of `aliases`, TLS on 443 with the leaf of
/// `certs` (from [`upstream_certs`]) and plain HTTP on 80. Every server name, request and
/// WebSocket frame it sees is a JSON line in its `docker logs` ([`recorded`]). Removed on
/// drop.
pub fn start_recorder(p: &Project, bottle: &str, aliases: &[&str], certs: &Path) -> Container {
    let rec = Container(format!("{}-recorder", p.obj(bottle, "t")));
    let mut run: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--name".into(),
        rec.0.clone(),
        "--user".into(),
        "0:0".into(),
        "--network".into(),
        p.obj(bottle, "net-egress"),
    ];
    for a in aliases {
        run.extend(["--network-alias".into(), a.to_string()]);
    }
    run.extend([
        "-v".into(),
        format!("{}:/certs:ro", certs.display()),
        "-e".into(),
        "BOTTLE_FAKE_CERT=/certs/leaf.pem".into(),
        "-e".into(),
        "BOTTLE_FAKE_KEY=/certs/leaf.key".into(),
        testkit_image(),
        "recorder".into(),
    ]);
    docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    rec
}

/// The records a [`start_recorder`] upstream wrote so far, parsed.
pub fn recorded(rec: &Container) -> Vec<serde_json::Value> {
    let o = Command::new("docker")
        .args(["logs", &rec.0])
        .output()
        .expect("docker logs");
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `docker logs --timestamps NAME` (both streams), each line with the engine's time of
/// it as seconds since the epoch.
pub fn timed_logs(name: &str) -> Vec<(f64, String)> {
    let o = Command::new("docker")
        .args(["logs", "--timestamps", name])
        .output()
        .expect("docker logs");
    let mut out: Vec<(f64, String)> = [o.stdout, o.stderr]
        .iter()
        .flat_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .filter_map(|l| {
                    let (ts, rest) = l.split_once(' ')?;
                    Some((rfc3339_secs(ts)?, rest.to_string()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// `2026-05-01T04:50:12.123456789Z` as seconds since the epoch (UTC only, as Docker
/// writes it).
pub fn rfc3339_secs(ts: &str) -> Option<f64> {
    let ts = ts.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac)
}
