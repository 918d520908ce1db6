//! Throughput of the git-gate's push scan (`git log` of every new commit, parsed, added
//! lines and messages through `secretscan`) on a generated push of thousands of commits,
//! against PyPI `detect-secrets` over the same content (the added file contents written
//! out as files), in one run, printing the ratio.
//!
//! `GITGATE_BENCH_MB` sets the pushed size (default 200), `GITGATE_BENCH_COMMITS` the
//! number of commits (default 3000), `GITGATE_BENCH_DS_MB` caps what detect-secrets gets
//! (default: all of it; its throughput is compared per MiB).
//!
//! Run: `cargo bench --bench gitgate` (needs `git`, and `detect-secrets` on PATH:
//! `pip install detect-secrets`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bottle::secretscan::RuleSet;
use bottle::sidecar::git_gate::scan::scan_new_commits;

const WORDS: &[&str] = &[
    "let", "fn", "return", "self", "config", "value", "token", "key", "request", "response",
    "client", "server", "handle", "error", "result", "String", "Vec", "map", "iter", "into",
    "async", "await", "match", "Some", "None", "Ok", "Err", "impl", "struct", "pub", "use",
    "crate", "super", "data", "buffer", "len", "secret", "auth", "header", "body", "path",
];

const PLANTED: &[&str] = &[
    "AWS_ACCESS_KEY_ID=AKIAQ7RZ4TX2MBW6NC3P\n",
    "let gh = \"ghp_Zq8mW3xR7tY2vB9nK4pL6sD1fG5hJ0cA8eU3\";\n",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// One file's content: code-like lines, `size` bytes or a little more.
fn file_content(rng: &mut Rng, size: usize, plant: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 256);
    let mut lines = 0;
    while out.len() < size {
        lines += 1;
        if lines == 40
            && let Some(p) = plant
        {
            out.extend_from_slice(p.as_bytes());
            continue;
        }
        let n = 4 + (rng.next() % 8) as usize;
        out.extend_from_slice(b"    ");
        for i in 0..n {
            if i > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[(rng.next() % WORDS.len() as u64) as usize].as_bytes());
            if rng.next().is_multiple_of(5) {
                out.extend_from_slice(format!("_{}", rng.next() % 1000).as_bytes());
            }
        }
        out.extend_from_slice(b";\n");
    }
    out
}

/// A repository whose `main` has `commits` commits adding `total` bytes, built with
/// `git fast-import`; the same contents are written under `files/` for detect-secrets.
fn generate(dir: &Path, commits: usize, total: usize, ds_cap: usize) -> (usize, usize) {
    let repo = dir.join("repo.git");
    let files = dir.join("files");
    std::fs::create_dir_all(&files).expect("files dir");
    let ok = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&repo)
        .status()
        .expect("git init");
    assert!(ok.success());
    let mut fi = Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["fast-import", "--quiet"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("git fast-import");
    let mut w = std::io::BufWriter::with_capacity(1 << 20, fi.stdin.take().expect("stdin"));
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let per = total / commits;
    let mut planted = 0;
    let mut ds_bytes = 0;
    for i in 0..commits {
        let plant = (i % (commits / 10).max(1) == 7).then(|| PLANTED[planted % PLANTED.len()]);
        if plant.is_some() {
            planted += 1;
        }
        let content = file_content(&mut rng, per, plant);
        let path = format!("src/m{}/f{i}.rs", i % 50);
        if ds_bytes < ds_cap {
            let p = files.join(&path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &content).expect("write");
            ds_bytes += content.len();
        }
        let msg = format!("change {i}\n");
        write!(
            w,
            "commit refs/heads/main\ncommitter Bench <b@e.test> {} +0000\ndata {}\n{msg}",
            1_700_000_000 + i,
            msg.len()
        )
        .expect("write");
        writeln!(w, "M 100644 inline {path}\ndata {}", content.len()).expect("write");
        w.write_all(&content).expect("write");
        w.write_all(b"\n\n").expect("write");
    }
    drop(w);
    assert!(fi.wait().expect("fast-import").success());
    (planted, ds_bytes)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mb = env_usize("GITGATE_BENCH_MB", 200);
    let commits = env_usize("GITGATE_BENCH_COMMITS", 3000);
    let ds_cap = env_usize("GITGATE_BENCH_DS_MB", mb) << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let (planted, ds_bytes) = generate(dir.path(), commits, mb << 20, ds_cap);
    println!(
        "generated {commits} commits, {mb} MiB added, {planted} planted secrets in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let rules = RuleSet::builtin();
    let t = Instant::now();
    let report = scan_new_commits(
        &rules,
        &dir.path().join("repo.git"),
        &["refs/heads/main".to_string()],
        &[],
    )
    .expect("scan");
    let ours = t.elapsed().as_secs_f64();
    let mib = report.bytes as f64 / (1 << 20) as f64;
    println!(
        "git-gate push scan: {} commits, {mib:.1} MiB scanned in {ours:.2} s = {:.1} MiB/s; {} findings",
        report.commits,
        mib / ours,
        report.findings.len()
    );
    for f in report.findings.iter().take(4) {
        println!("  {f}");
    }

    let t = Instant::now();
    let ds = Command::new("detect-secrets")
        .args(["scan", "--all-files"])
        .arg(dir.path().join("files"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let theirs = t.elapsed().as_secs_f64();
    match ds {
        Ok(o) if o.status.success() => {
            let out: serde_json::Value =
                serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
            let found: usize = out["results"].as_object().map_or(0, |m| {
                m.values().filter_map(|v| v.as_array()).map(Vec::len).sum()
            });
            let ds_mib = ds_bytes as f64 / (1 << 20) as f64;
            println!(
                "detect-secrets 1.x scan --all-files: {ds_mib:.1} MiB in {theirs:.2} s = {:.2} MiB/s; {found} findings",
                ds_mib / theirs
            );
            println!(
                "ratio (git-gate MiB/s / detect-secrets MiB/s): {:.1}x",
                (mib / ours) / (ds_mib / theirs)
            );
        }
        Ok(o) => println!(
            "detect-secrets failed: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => println!("detect-secrets not run ({e}): pip install detect-secrets"),
    }
}
