//! Scanning what a push adds: every object the push brings that the upstream lacks
//! (not reachable from the mirror's refs), with the same scanner as pipelock's DLP.
//!
//! Two passes, so that the common case (no secret) costs one streaming read of the new
//! objects and nothing else:
//!
//! 1. The object pass ([`super::objects`]): `git rev-list --objects` of the pushed tips
//!    lists the new objects, `git cat-file` streams them (from the pushed pack in pack
//!    order when there is one); every new blob is scanned whole, and every new commit's
//!    and annotated tag's message too. No diff is produced or parsed.
//! 2. Only when a blob matched: the precise pass ([`super::log`]), `git log -p` over the
//!    commits that add or remove a flagged blob (`--find-object`), which scans the lines
//!    those commits add, to name commit, file and line, and to drop a secret the file
//!    already had upstream (a line the push does not add).
//!
//! So a push is refused exactly when one of its new commits adds a line, or has a
//! message, that the scanner flags (as a scan of every commit's added lines would), or
//! an annotated tag it brings has such a message. One difference with a full scan of
//! added lines: content the upstream already holds as a blob (a revert to an old
//! upstream version, a copy of an upstream file) is not scanned again; it cannot leak.
//! A tag that points at a tree or blob (not a commit) has every new blob under it
//! scanned and reported whole (there is no commit to compare with).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use bottle_secretscan::RuleSet;

/// Flagged blobs passed to `git log --find-object` at most; beyond, the precise pass
/// runs over every new commit.
const MAX_FIND_OBJECTS: usize = 256;

/// Where a finding is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    /// A file that the commit changes; the line is in the file as of the commit.
    File(String),
    /// The commit's message.
    CommitMessage,
    /// An annotated tag's message (the tag's name).
    TagMessage(String),
    /// A blob under a tag that points at a tree or blob (its path in that tree, empty
    /// for the tagged blob itself).
    Tagged(String),
}

/// A secret found in a push: where, which rule. Never the secret.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PushFinding {
    /// The commit (file, commit message), tag (tag message) or blob (tagged) id.
    pub object: String,
    pub place: Place,
    /// 1-based line number in the file as of this commit, or in the message.
    pub line: u64,
    pub rule_id: String,
}

impl std::fmt::Display for PushFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = &self.object[..self.object.len().min(12)];
        let (line, rule) = (self.line, &self.rule_id);
        match &self.place {
            Place::File(p) => write!(f, "commit {short}: {p}:{line}: {rule}"),
            Place::CommitMessage => {
                write!(f, "commit {short}: commit message line {line}: {rule}")
            }
            Place::TagMessage(name) => {
                write!(f, "tag {name} ({short}): tag message line {line}: {rule}")
            }
            Place::Tagged(p) if p.is_empty() => {
                write!(f, "tagged blob {short}: line {line}: {rule}")
            }
            Place::Tagged(p) => write!(f, "tagged tree, blob {short}: {p}:{line}: {rule}"),
        }
    }
}

/// What a scan saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanReport {
    /// New commits.
    pub commits: u64,
    /// Bytes scanned: new blobs and messages (the object pass), or added lines and
    /// messages (a full [`scan_with_git_log`]).
    pub bytes: u64,
    pub findings: Vec<PushFinding>,
}

/// The scan could not run: the push must then be refused.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("running git")]
    Io(#[from] std::io::Error),
    #[error("{what} failed ({status}): {stderr}")]
    Git {
        what: &'static str,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from git: {0}")]
    Protocol(String),
}

/// Scan what pushing `tips` (object ids or revisions) brings to a repository whose
/// upstream state is everything reachable from `exclude` (rev-list arguments such as
/// `--all`; empty: nothing is upstream). `pushed`: the object directory that holds what
/// the push sent, if there is one (a pre-receive hook's `GIT_QUARANTINE_PATH`); its
/// objects are read in pack order, which spares git most of its delta work.
pub fn scan_push(
    rules: &RuleSet,
    git_dir: &Path,
    tips: &[String],
    exclude: &[&str],
    pushed: Option<&Path>,
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    if tips.is_empty() {
        return Ok(report);
    }
    let (commit_tips, tagged_tips) = peel(git_dir, tips)?;
    if !commit_tips.is_empty() {
        let pass = super::objects::scan_objects(rules, git_dir, &commit_tips, exclude, pushed)?;
        report.commits += pass.commits;
        report.bytes += pass.bytes;
        report.findings.extend(pass.messages);
        if !pass.blobs.is_empty() {
            let mut flagged: Vec<String> = pass.blobs.into_iter().map(|b| b.blob).collect();
            flagged.sort();
            flagged.dedup();
            if flagged.len() > MAX_FIND_OBJECTS {
                flagged.clear();
            }
            let precise = super::log::scan_log(rules, git_dir, &commit_tips, exclude, &flagged)?;
            report.findings.extend(
                precise
                    .findings
                    .into_iter()
                    .filter(|f| matches!(f.place, Place::File(_))),
            );
        }
    }
    if !tagged_tips.is_empty() {
        let pass = super::objects::scan_objects(rules, git_dir, &tagged_tips, exclude, pushed)?;
        report.commits += pass.commits;
        report.bytes += pass.bytes;
        report.findings.extend(pass.messages);
        for hit in pass.blobs {
            let line = super::objects::line_of(git_dir, &hit.blob, hit.offset)?;
            report.findings.push(PushFinding {
                object: hit.blob,
                place: Place::Tagged(hit.path),
                line,
                rule_id: hit.rule_id,
            });
        }
    }
    Ok(report)
}

/// The reference scan, one `git log -p` of every new commit, parsed: the lines each
/// commit adds and its message. Slower than [`scan_push`]; the benchmark's baseline.
pub fn scan_with_git_log(
    rules: &RuleSet,
    git_dir: &Path,
    tips: &[String],
    exclude: &[&str],
) -> Result<ScanReport, ScanError> {
    super::log::scan_log(rules, git_dir, tips, exclude, &[])
}

/// 1-based line of `offset` in `text`.
pub(super) fn line_at(text: &[u8], offset: u64) -> u64 {
    let end = (offset as usize).min(text.len());
    1 + text[..end].iter().filter(|&&b| b == b'\n').count() as u64
}

/// Split `tips` by what they peel to: commits (annotated tags of commits included),
/// and the rest (tags of trees or blobs, or bare trees and blobs).
fn peel(git_dir: &Path, tips: &[String]) -> Result<(Vec<String>, Vec<String>), ScanError> {
    let mut child = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["cat-file", "--batch-check=%(objecttype)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(ScanError::Protocol("git cat-file without its pipes".into()));
    };
    let input: Vec<u8> = tips
        .iter()
        .flat_map(|t| format!("{t}^{{}}\n").into_bytes())
        .collect();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let mut kinds = Vec::with_capacity(tips.len());
    for line in BufReader::new(stdout).lines() {
        kinds.push(line?);
    }
    let written = writer
        .join()
        .map_err(|_| ScanError::Protocol("the cat-file writer panicked".into()))?;
    let status = child.wait()?;
    written?;
    if !status.success() || kinds.len() != tips.len() {
        return Err(ScanError::Git {
            what: "git cat-file --batch-check",
            status: status.to_string(),
            stderr: String::new(),
        });
    }
    let mut commits = Vec::new();
    let mut others = Vec::new();
    for (tip, kind) in tips.iter().zip(kinds) {
        match kind.as_str() {
            "commit" => commits.push(tip.clone()),
            "tree" | "blob" => others.push(tip.clone()),
            _ => {
                return Err(ScanError::Protocol(format!(
                    "cannot resolve the pushed object {tip}: {kind}"
                )));
            }
        }
    }
    Ok((commits, others))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIAZ7VRSQ5CXMPLW3QD";
    const RULE: &str = "aws-access-key-id";

    /// A work repository with real git; `up` marks what the upstream has.
    struct Repo(tempfile::TempDir);

    impl Repo {
        fn new() -> Repo {
            let r = Repo(tempfile::tempdir().expect("temp dir"));
            r.git(&["init", "-q", "-b", "main"]);
            r
        }
        fn git(&self, args: &[&str]) -> String {
            let o = Command::new("git")
                .arg("-C")
                .arg(self.0.path())
                .args([
                    "-c",
                    "user.name=t",
                    "-c",
                    "user.email=t@t",
                    "-c",
                    "tag.gpgSign=false",
                ])
                .args(args)
                .output()
                .expect("git");
            assert!(o.status.success(), "git {args:?}: {o:?}");
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        }
        fn commit(&self, path: &str, content: &str, message: &str) -> String {
            let p = self.0.path().join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
            self.git(&["add", "-A"]);
            self.git(&["commit", "-qm", message]);
            self.git(&["rev-parse", "HEAD"])
        }
        /// What is committed so far is upstream.
        fn upstream_has_it(&self) {
            self.git(&["update-ref", "refs/remotes/up/main", "HEAD"]);
        }
        fn scan(&self, tips: &[&str]) -> ScanReport {
            let tips: Vec<String> = tips.iter().map(|t| t.to_string()).collect();
            let dir = self.0.path().join(".git");
            let rules = RuleSet::builtin();
            let fast = scan_push(&rules, &dir, &tips, &["--remotes"], None).expect("scan");
            // Reading the objects from a directory of what was pushed (here: every
            // object, upstream's too) changes nothing.
            let objects = dir.join("objects");
            let pushed =
                scan_push(&rules, &dir, &tips, &["--remotes"], Some(&objects)).expect("scan");
            assert_eq!(pushed, fast);
            // Where only commits are pushed, the reference scan agrees on every finding.
            let commits_only = tips.iter().all(|t| !t.starts_with('v'));
            if commits_only {
                let mut reference =
                    scan_with_git_log(&rules, &dir, &tips, &["--remotes"]).expect("log scan");
                let mut got = fast.findings.clone();
                got.sort();
                reference.findings.sort();
                assert_eq!(got, reference.findings);
                assert_eq!(fast.commits, reference.commits);
            }
            fast
        }
    }

    fn finding(object: &str, place: Place, line: u64) -> PushFinding {
        PushFinding {
            object: object.into(),
            place,
            line,
            rule_id: RULE.into(),
        }
    }

    #[test]
    fn a_key_added_then_removed_is_found_in_the_commit_that_added_it() {
        let r = Repo::new();
        r.commit("a.txt", "one\n", "base");
        r.upstream_has_it();
        let added = r.commit(
            "src/conf.ini",
            "x\ny\nkey = KEY\n".replace("KEY", KEY).as_str(),
            "add",
        );
        r.commit("src/conf.ini", "x\ny\n", "remove");
        let report = r.scan(&["HEAD"]);
        assert_eq!(report.commits, 2);
        assert_eq!(
            report.findings,
            vec![finding(&added, Place::File("src/conf.ini".into()), 3)]
        );
    }

    #[test]
    fn a_secret_upstream_already_has_is_not_the_push_s() {
        let r = Repo::new();
        r.commit("legacy.ini", &format!("a\nold = {KEY}\nb\n"), "legacy");
        r.upstream_has_it();
        r.commit(
            "legacy.ini",
            &format!("a\nold = {KEY}\nb\nc\n"),
            "edit nearby",
        );
        let report = r.scan(&["HEAD"]);
        assert_eq!(report.findings, vec![]);
        assert_eq!(report.commits, 1);
    }

    #[test]
    fn messages_and_merges() {
        let r = Repo::new();
        r.commit("a.txt", "one\n", "base");
        r.upstream_has_it();
        let msg = r.commit("b.txt", "two\n", &format!("subject\n\ncreds {KEY}"));
        r.git(&["checkout", "-q", "-b", "side", "HEAD~1"]);
        let side = r.commit("side.txt", &format!("s\n{KEY}\n"), "side");
        r.git(&["checkout", "-q", "main"]);
        r.git(&["merge", "-q", "--no-edit", "side"]);
        let report = r.scan(&["HEAD"]);
        let mut got = report.findings.clone();
        got.sort();
        let mut want = vec![
            finding(&side, Place::File("side.txt".into()), 2),
            finding(&msg, Place::CommitMessage, 3),
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(report.commits, 3);
    }

    #[test]
    fn annotated_tags_messages_and_targets() {
        let r = Repo::new();
        r.commit("a.txt", "one\n", "base");
        r.upstream_has_it();
        r.git(&["tag", "-a", "v1", "-m", &format!("release\n\n{KEY}")]);
        let v1 = r.git(&["rev-parse", "v1"]);
        let report = r.scan(&["v1"]);
        assert_eq!(
            report.findings,
            vec![finding(&v1, Place::TagMessage("v1".into()), 3)]
        );
        assert_eq!(report.commits, 0);

        // A clean tag on a new commit that adds a key.
        let c = r.commit("k.txt", &format!("{KEY}\n"), "key");
        r.git(&["tag", "-a", "v2", "-m", "clean"]);
        let report = r.scan(&["v2"]);
        assert_eq!(
            report.findings,
            vec![finding(&c, Place::File("k.txt".into()), 1)]
        );

        // A tag of a blob, and of a tree, that nothing upstream has.
        let blob = r.git(&["rev-parse", "HEAD:k.txt"]);
        r.git(&["tag", "-a", "vb", "-m", "blob", &blob]);
        let report = r.scan(&["vb"]);
        assert_eq!(
            report.findings,
            vec![finding(&blob, Place::Tagged(String::new()), 1)]
        );
        let tree = r.git(&["rev-parse", "HEAD^{tree}"]);
        r.git(&["tag", "-a", "vt", "-m", "tree", &tree]);
        let report = r.scan(&["vt"]);
        assert_eq!(
            report.findings,
            vec![finding(&blob, Place::Tagged("k.txt".into()), 1)]
        );
        assert!(!report.findings[0].to_string().contains(KEY));

        // A clean tag on a clean upstream commit.
        r.git(&["tag", "-a", "v3", "-m", "fine", "HEAD~1"]);
        assert_eq!(r.scan(&["v3"]).findings, vec![]);
    }

    #[test]
    fn an_unknown_tip_is_an_error_not_a_clean_push() {
        let r = Repo::new();
        r.commit("a.txt", "one\n", "base");
        let rules = RuleSet::builtin();
        let tips = vec!["0123456789012345678901234567890123456789".to_string()];
        let res = scan_push(&rules, &r.0.path().join(".git"), &tips, &[], None);
        assert!(res.is_err(), "{res:?}");
    }

    #[test]
    fn display_names_place_and_rule_never_the_secret() {
        let f = finding("0123456789abcdef", Place::File("k".into()), 1);
        assert_eq!(f.to_string(), "commit 0123456789ab: k:1: aws-access-key-id");
        let f = finding("0123456789abcdef", Place::TagMessage("v1".into()), 2);
        assert_eq!(
            f.to_string(),
            "tag v1 (0123456789ab): tag message line 2: aws-access-key-id"
        );
    }
}
