//! The precise pass of the push scan: `git log -p` of the new commits, parsed, with
//! the lines each commit adds and its message fed to the scanner.
//!
//! Added lines are fed per file to a [`StreamScanner`], so a rule's window never spans
//! two files; memory stays bounded by the scanner's overlap and the line map kept for
//! it. Merges are diffed with `--cc`: only lines that are in none of the parents (an
//! "evil merge") are new; the rest belong to commits scanned on their own.
//!
//! Producing and parsing the whole patch text is slow (see `BENCHMARKS.md`), so the gate
//! runs this only over the commits that touch a blob the object pass flagged
//! (`--find-object`), to name commit, file and line and to drop secrets the file already
//! had upstream. Unrestricted, it is the reference the object pass is measured against.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use super::scan::{Place, PushFinding, ScanError, ScanReport, line_at};
use bottle_secretscan::{RuleSet, StreamScanner};

/// Bytes of added lines collected before they are fed to the scanner.
const BATCH: usize = 64 << 10;

/// Scan the commits reachable from `tips` and from none of `exclude` (rev-list
/// arguments such as `--all`) in the repository `git_dir`: their messages and the lines
/// they add. With `find_objects`, only the commits and files that add or remove one of
/// those blobs (and those commits' messages).
pub fn scan_log(
    rules: &RuleSet,
    git_dir: &Path,
    tips: &[String],
    exclude: &[&str],
    find_objects: &[String],
) -> Result<ScanReport, ScanError> {
    let mut report = ScanReport::default();
    if tips.is_empty() {
        return Ok(report);
    }
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir")
        .arg(git_dir)
        .args([
            "-c",
            "core.quotePath=false",
            "log",
            "--reverse",
            "--no-color",
            "--no-ext-diff",
            "--no-renames",
            "--no-textconv",
            "--text",
            "--cc",
            "-U0",
            "--format=%x00%H%n%B%x00",
        ])
        .args(find_objects.iter().map(|o| format!("--find-object={o}")))
        .args(tips);
    if !exclude.is_empty() {
        cmd.arg("--not").args(exclude);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(ScanError::Protocol("git log without its pipes".into()));
    };
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut BufReader::new(stderr), &mut buf);
        let tail = buf.len().saturating_sub(4096);
        String::from_utf8_lossy(&buf[tail..]).into_owned()
    });
    let parsed = parse_log(
        rules,
        BufReader::with_capacity(1 << 20, stdout),
        &mut report,
    );
    if parsed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let stderr = err_reader.join().unwrap_or_default();
    parsed?;
    if !status.success() {
        return Err(ScanError::Git {
            what: "git log",
            status: status.to_string(),
            stderr: stderr.trim().to_string(),
        });
    }
    Ok(report)
}

enum State {
    /// Before the first commit.
    Start,
    /// In a commit message; lines so far.
    Message(u64),
    /// Between a `diff` line and the first hunk of a file.
    FileHeader,
    Hunk,
}

/// Parse `git log` output (format above) and scan it.
fn parse_log<R: BufRead>(
    rules: &RuleSet,
    mut input: R,
    report: &mut ScanReport,
) -> Result<(), std::io::Error> {
    let mut state = State::Start;
    let mut commit = String::new();
    let mut message = Vec::new();
    let mut file: Option<FileScan<'_>> = None;
    let mut path: Option<String> = None;
    // Parents of the current file's diff: 1, or more for a combined diff.
    let mut parents = 1usize;
    let mut next_line = 0u64;
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        if let Some(rest) = body.strip_prefix(b"\0") {
            match state {
                State::Message(_) if rest.is_empty() => {
                    scan_message(rules, &commit, &message, report);
                    message.clear();
                    state = State::FileHeader;
                    continue;
                }
                _ => {
                    if let Some(f) = file.take() {
                        f.finish(report);
                    }
                    commit = String::from_utf8_lossy(rest).into_owned();
                    report.commits += 1;
                    state = State::Message(0);
                    continue;
                }
            }
        }
        match state {
            State::Start => {}
            State::Message(_) if body.ends_with(b"\0") => {
                // A message without a final newline: its end marker closes this line.
                message.extend_from_slice(&body[..body.len() - 1]);
                scan_message(rules, &commit, &message, report);
                message.clear();
                state = State::FileHeader;
            }
            State::Message(n) => {
                message.extend_from_slice(&line);
                state = State::Message(n + 1);
            }
            State::FileHeader | State::Hunk if body.starts_with(b"diff ") => {
                if let Some(f) = file.take() {
                    f.finish(report);
                }
                path = None;
                parents =
                    if body.starts_with(b"diff --cc ") || body.starts_with(b"diff --combined ") {
                        2
                    } else {
                        1
                    };
                state = State::FileHeader;
            }
            State::FileHeader => {
                if let Some(p) = body.strip_prefix(b"+++ ") {
                    path = Some(target_path(p));
                } else if body.starts_with(b"@@") {
                    state = State::Hunk;
                    hunk_header(body, &mut parents, &mut next_line);
                }
            }
            State::Hunk => {
                if body.starts_with(b"@@") {
                    hunk_header(body, &mut parents, &mut next_line);
                    continue;
                }
                if body.len() < parents || body.starts_with(b"\\") {
                    continue;
                }
                let (cols, text) = body.split_at(parents);
                if cols.contains(&b'-') {
                    continue;
                }
                let n = next_line;
                next_line += 1;
                if cols.iter().all(|&c| c == b'+') {
                    let f = file.get_or_insert_with(|| {
                        FileScan::new(rules, &commit, path.clone().unwrap_or_default())
                    });
                    f.add(n, text, report);
                }
            }
        }
    }
    if let State::Message(_) = state {
        scan_message(rules, &commit, &message, report);
    }
    if let Some(f) = file.take() {
        f.finish(report);
    }
    Ok(())
}

/// `+++ b/path` (possibly C-quoted) to `path`.
fn target_path(p: &[u8]) -> String {
    let s = String::from_utf8_lossy(p);
    let s = s.trim_end_matches('\t');
    let unquoted = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    unquoted.strip_prefix("b/").unwrap_or(unquoted).to_string()
}

/// `@@ -a,b +c,d @@` or `@@@ -a,b -c,d +e,f @@@`: the number of parents and the first
/// line of the result.
fn hunk_header(body: &[u8], parents: &mut usize, next_line: &mut u64) {
    let ats = body.iter().take_while(|&&b| b == b'@').count();
    *parents = ats.saturating_sub(1).max(1);
    let text = String::from_utf8_lossy(body);
    let start = text
        .split_whitespace()
        .find_map(|t| t.strip_prefix('+'))
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    *next_line = start;
}

fn scan_message(rules: &RuleSet, commit: &str, message: &[u8], report: &mut ScanReport) {
    report.bytes += message.len() as u64;
    for f in rules.scan(message) {
        let line = line_at(message, f.offset);
        report.findings.push(PushFinding {
            object: commit.to_string(),
            place: Place::CommitMessage,
            line,
            rule_id: f.rule_id,
        });
    }
}

/// The added lines of one file in one commit, streamed through a scanner.
struct FileScan<'r> {
    scanner: StreamScanner<'r>,
    commit: String,
    path: String,
    /// Added lines not yet fed.
    batch: Vec<u8>,
    /// (stream offset where a line starts, its line number), for every line that a
    /// finding may still point into.
    lines: VecDeque<(u64, u64)>,
    /// Stream offset of the end of what was added so far.
    end: u64,
}

impl<'r> FileScan<'r> {
    fn new(rules: &'r RuleSet, commit: &str, path: String) -> Self {
        FileScan {
            scanner: StreamScanner::new(rules),
            commit: commit.to_string(),
            path,
            batch: Vec::with_capacity(BATCH),
            lines: VecDeque::new(),
            end: 0,
        }
    }

    fn add(&mut self, line_no: u64, text: &[u8], report: &mut ScanReport) {
        self.lines.push_back((self.end, line_no));
        self.batch.extend_from_slice(text);
        self.batch.push(b'\n');
        self.end += text.len() as u64 + 1;
        if self.batch.len() >= BATCH {
            self.feed(report);
        }
    }

    fn feed(&mut self, report: &mut ScanReport) {
        report.bytes += self.batch.len() as u64;
        let found = self.scanner.push(&self.batch);
        self.batch.clear();
        self.record(found, report);
        // Findings reported later start at or after the safe offset.
        let safe = self.scanner.safe_offset();
        while self.lines.len() > 1 && self.lines[1].0 <= safe {
            self.lines.pop_front();
        }
    }

    fn record(&self, found: Vec<bottle_secretscan::Finding>, report: &mut ScanReport) {
        for f in found {
            let idx = self.lines.partition_point(|&(o, _)| o <= f.offset);
            let line = self.lines.get(idx.saturating_sub(1)).map_or(0, |l| l.1);
            report.findings.push(PushFinding {
                object: self.commit.clone(),
                place: Place::File(self.path.clone()),
                line,
                rule_id: f.rule_id,
            });
        }
    }

    fn finish(mut self, report: &mut ScanReport) {
        if !self.batch.is_empty() {
            self.feed(report);
        }
        let found = self.scanner.finish();
        self.record(found, report);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(log: &str) -> ScanReport {
        let rules = RuleSet::builtin();
        let mut r = ScanReport::default();
        parse_log(&rules, log.as_bytes(), &mut r).unwrap();
        r
    }

    const KEY: &str = "AKIAZ7VRSQ5CXMPLW3QD";

    #[test]
    fn finds_added_lines_with_file_and_line_not_removed_ones() {
        let log = format!(
            "\0aaaa\nfirst\n\0\n\ndiff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n@@ -3,1 +3,2 @@\n-old {KEY}\n+fine\n+key = {KEY}\n\0bbbb\nsecond {KEY}\n\0\n"
        );
        let r = scan(&log);
        assert_eq!(r.commits, 2);
        assert_eq!(
            r.findings,
            vec![
                PushFinding {
                    object: "aaaa".into(),
                    place: Place::File("x.txt".into()),
                    line: 4,
                    rule_id: "aws-access-key-id".into()
                },
                PushFinding {
                    object: "bbbb".into(),
                    place: Place::CommitMessage,
                    line: 1,
                    rule_id: "aws-access-key-id".into()
                },
            ]
        );
    }

    #[test]
    fn combined_diffs_scan_only_lines_new_to_every_parent() {
        let log = format!(
            "\0cccc\nmerge\n\0\n\ndiff --cc m.txt\nindex 1,2..3\n--- a/m.txt\n+++ b/m.txt\n@@@ -1,1 -1,1 +1,3 @@@\n  same\n+ from-one {KEY}\n++evil {KEY}\n"
        );
        let r = scan(&log);
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(r.findings[0].line, 3);
        assert_eq!(r.findings[0].place, Place::File("m.txt".into()));
    }

    #[test]
    fn display_never_holds_the_secret() {
        let r = scan(&format!(
            "\0dddd\nm\n\0\n\ndiff --git a/k b/k\n--- /dev/null\n+++ b/k\n@@ -0,0 +1 @@\n+{KEY}\n"
        ));
        let s = r.findings[0].to_string();
        assert_eq!(s, "commit dddd: k:1: aws-access-key-id");
        assert!(!s.contains("AKIA"));
    }
}
