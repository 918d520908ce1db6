//! Throughput of the git-gate's push scan on a generated push of thousands of commits
//! (`GITGATE_BENCH_MB`, default 200 MiB, in `GITGATE_BENCH_COMMITS`, default 3000), in
//! one run:
//! - the gate's scan (`scan_push`: the new objects, listed by `rev-list --objects`, read
//!   in pack order from the pushed objects' directory as the pre-receive hook does
//!   with receive-pack's quarantine (`cat-file --batch-all-objects --unordered`; here
//!   the generated repository holds only the push), blobs and messages scanned whole
//!   on a thread per core, then `git log -p --find-object` over the commits of the
//!   blobs that matched), and the same without the pushed directory (objects read in
//!   rev-list order through `cat-file --batch`);
//! - the reference scan it replaced (`scan_with_git_log`: `git log -p` of every new
//!   commit, parsed, added lines and messages scanned), on the same push;
//! - git alone (`cat-file --batch-all-objects --unordered` into /dev/null) and the scanner alone
//!   (`RuleSet::scan` of each file's content from memory, one thread): the two stages;
//! - PyPI `detect-secrets scan --all-files` over the same file contents written out as
//!   files: every file that holds a planted secret and an even sample of the others, up
//!   to `GITGATE_BENCH_DS_MB` (default 10; it runs at well under 1 MiB/s), compared per
//!   MiB. It runs with its working directory at the files (it ignores paths outside
//!   it) and its default plugins, on every core (its default).
//!
//! detect-secrets is `$DETECT_SECRETS` or `detect-secrets` on PATH; the bench fails
//! when it is missing. Install it in a venv, e.g.
//! `python3 -m venv /work/venv-ds && /work/venv-ds/bin/pip install detect-secrets`, then
//! `DETECT_SECRETS=/work/venv-ds/bin/detect-secrets cargo bench --bench gitgate`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use bottle_secretscan::RuleSet;
use bottle_sidecars::git_gate::scan::{ScanReport, scan_push, scan_with_git_log};

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

/// What was generated.
struct Generated {
    planted: usize,
    /// Bytes and planted secrets in the files written for detect-secrets.
    ds_bytes: usize,
    ds_planted: usize,
    /// Every added file's content, for the scanner-alone figure.
    contents: Vec<Vec<u8>>,
}

/// A repository whose `main` has `commits` commits adding `total` bytes, built with
/// `git fast-import`; the files with a planted secret and an even sample of the others,
/// about `ds_cap` bytes, are also written under `files/` for detect-secrets.
fn generate(dir: &Path, commits: usize, total: usize, ds_cap: usize) -> Generated {
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
    let stride = total.div_ceil(ds_cap.max(1)).max(1);
    let mut g = Generated {
        planted: 0,
        ds_bytes: 0,
        ds_planted: 0,
        contents: Vec::with_capacity(commits),
    };
    for i in 0..commits {
        let plant = (i % (commits / 10).max(1) == 7).then(|| PLANTED[g.planted % PLANTED.len()]);
        if plant.is_some() {
            g.planted += 1;
        }
        let content = file_content(&mut rng, per, plant);
        let path = format!("src/m{}/f{i}.rs", i % 50);
        if plant.is_some() || i % stride == 0 {
            let p = files.join(&path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, &content).expect("write");
            g.ds_bytes += content.len();
            g.ds_planted += usize::from(plant.is_some());
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
        g.contents.push(content);
    }
    drop(w);
    assert!(fi.wait().expect("fast-import").success());
    g
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const MIB: f64 = (1 << 20) as f64;

/// Run `scan` twice (the first warms the page cache as much as the second), keep the
/// faster; print and return (report, seconds).
fn timed(label: &str, mut scan: impl FnMut() -> ScanReport) -> (ScanReport, f64) {
    let mut best: Option<(ScanReport, f64)> = None;
    for _ in 0..2 {
        let t = Instant::now();
        let r = scan();
        let secs = t.elapsed().as_secs_f64();
        if best.as_ref().is_none_or(|b| secs < b.1) {
            best = Some((r, secs));
        }
    }
    let (r, secs) = best.expect("two runs");
    let mib = r.bytes as f64 / MIB;
    println!(
        "{label}: {} commits, {mib:.1} MiB in {secs:.2} s = {:.1} MiB/s; {} findings",
        r.commits,
        mib / secs,
        r.findings.len()
    );
    for f in r.findings.iter().take(2) {
        println!("  {f}");
    }
    (r, secs)
}

/// `cat-file --batch-all-objects --unordered --batch` into /dev/null: what git alone
/// costs on the gate's path (every object of the push, in pack order).
fn git_alone(repo: &Path) -> f64 {
    let t = Instant::now();
    let cat = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["cat-file", "--batch-all-objects", "--unordered", "--batch"])
        .stdout(Stdio::null())
        .status()
        .expect("git cat-file");
    assert!(cat.success());
    t.elapsed().as_secs_f64()
}

/// What detect-secrets found: all findings, and those of the planted kinds.
fn detect_secrets(dir: &Path) -> (f64, usize, usize) {
    let bin = std::env::var_os("DETECT_SECRETS").unwrap_or_else(|| "detect-secrets".into());
    let t = Instant::now();
    let o = Command::new(&bin)
        .args(["scan", "--all-files", "files"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output();
    let secs = t.elapsed().as_secs_f64();
    let o = match o {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!(
            "{} failed: {}",
            bin.to_string_lossy(),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!(
            "detect-secrets is needed as the baseline and could not be run as {:?} ({e}): \
             python3 -m venv /work/venv-ds && /work/venv-ds/bin/pip install detect-secrets, \
             then set DETECT_SECRETS=/work/venv-ds/bin/detect-secrets",
            bin
        ),
    };
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).expect("detect-secrets JSON");
    let results: Vec<&serde_json::Value> = out["results"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_array()).flatten().collect())
        .unwrap_or_default();
    let planted_kinds = results
        .iter()
        .filter(|r| matches!(r["type"].as_str(), Some("AWS Access Key" | "GitHub Token")))
        .count();
    (secs, results.len(), planted_kinds)
}

fn main() {
    let mb = env_usize("GITGATE_BENCH_MB", 200);
    let commits = env_usize("GITGATE_BENCH_COMMITS", 3000);
    let ds_cap = env_usize("GITGATE_BENCH_DS_MB", 10) << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let repo = dir.path().join("repo.git");
    let t = Instant::now();
    let g = generate(dir.path(), commits, mb << 20, ds_cap);
    println!(
        "generated {commits} commits, {mb} MiB added, {} planted secrets in {:.1} s",
        g.planted,
        t.elapsed().as_secs_f64()
    );

    let rules = RuleSet::builtin();
    let tips = ["refs/heads/main".to_string()];
    let (before, before_s) = timed("reference scan (git log -p, parsed)", || {
        scan_with_git_log(&rules, &repo, &tips, &[]).expect("log scan")
    });
    let (unordered, _) = timed(
        "object pass without the pushed pack (rev-list order)",
        || scan_push(&rules, &repo, &tips, &[], None).expect("scan"),
    );
    let objects = repo.join("objects");
    let (after, after_s) = timed("git-gate push scan (pushed pack in pack order)", || {
        scan_push(&rules, &repo, &tips, &[], Some(&objects)).expect("scan")
    });
    assert_eq!(unordered.findings, after.findings);
    let mut a = after.findings.clone();
    let mut b = before.findings.clone();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the two scans disagree");
    assert_eq!(
        after.findings.len(),
        g.planted,
        "not every planted secret was found"
    );
    let floor = (0..2).map(|_| git_alone(&repo)).fold(f64::MAX, f64::min);
    println!(
        "git alone (cat-file --batch-all-objects --unordered > /dev/null): {floor:.2} s = {:.1} MiB/s",
        after.bytes as f64 / MIB / floor
    );
    let t = Instant::now();
    let found: usize = g.contents.iter().map(|c| rules.scan(c).len()).sum();
    let alone = t.elapsed().as_secs_f64();
    let total: usize = g.contents.iter().map(Vec::len).sum();
    drop(g.contents);
    println!(
        "scanner alone (one thread, from memory): {:.1} MiB in {alone:.2} s = {:.1} MiB/s; {found} findings",
        total as f64 / MIB,
        total as f64 / MIB / alone
    );
    let ours = after.bytes as f64 / MIB / after_s;
    println!(
        "speedup over the reference scan: {:.1}x",
        ours / (before.bytes as f64 / MIB / before_s)
    );

    let (secs, found, planted_kinds) = detect_secrets(dir.path());
    let ds_mib = g.ds_bytes as f64 / MIB;
    println!(
        "detect-secrets {} scan --all-files: {ds_mib:.1} MiB in {secs:.2} s = {:.2} MiB/s; \
         {found} findings, {planted_kinds} of the planted kinds ({} planted in its files)",
        ds_version(),
        ds_mib / secs,
        g.ds_planted
    );
    println!(
        "ratio (git-gate MiB/s / detect-secrets MiB/s): {:.1}x",
        ours / (ds_mib / secs)
    );
}

fn ds_version() -> String {
    let bin = std::env::var_os("DETECT_SECRETS").unwrap_or_else(|| "detect-secrets".into());
    Command::new(bin)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
