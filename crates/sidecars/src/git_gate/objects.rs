//! The object pass of the push scan: `git rev-list --objects` lists the new objects
//! (commits, annotated tags, trees, blobs); `git cat-file` streams them, and its output
//! is read in large buffers: every blob is scanned whole (no diff, no per-line work),
//! every commit's and tag's message too, trees are skipped.
//! (`--filter=object:type=blob` would spare listing the trees, but it drops the commits
//! and nested tags too.)
//!
//! git's inflating and un-deltifying is the costly stage, and it depends on the order:
//! in pack order it is about twice as cheap as in rev-list order. So when the objects
//! the push sent are in a directory of their own (receive-pack's quarantine), that
//! directory is read whole with `--batch-all-objects --unordered`, keeping the objects
//! rev-list listed; whatever listed object is not found there is then read with
//! `cat-file --batch`.
//!
//! Blobs are scanned on a pool of worker threads, one per core: the reading thread
//! parses `cat-file`'s output and hands each blob of up to [`WHOLE_BLOB`] bytes whole to
//! the pool through a bounded channel (memory stays bounded); a larger blob is streamed
//! through a scanner on the reading thread itself, in [`READ_BUF`] chunks. A blob that
//! matches is only a candidate here ([`BlobHit`]); [`super::scan`] decides what it means.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::scan::{Place, PushFinding, ScanError, line_at};
use bottle_secretscan::{RuleSet, StreamScanner};

/// Read buffer on `cat-file`'s output: the chunk size a streamed blob is scanned in.
const READ_BUF: usize = 1 << 20;
/// Blobs up to this size go whole to the worker pool; larger ones are streamed.
const WHOLE_BLOB: u64 = 8 << 20;
/// Blobs queued per worker at most.
const QUEUE_PER_WORKER: usize = 4;

/// A rule matched in a new blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct BlobHit {
    pub blob: String,
    /// The path rev-list first saw it under (relative to the walked tree; may be
    /// truncated at a newline, so only for messages).
    pub path: String,
    /// Byte offset of the secret in the blob.
    pub offset: u64,
    pub rule_id: String,
}

/// What the object pass saw.
#[derive(Debug, Default)]
pub(super) struct ObjectScan {
    pub commits: u64,
    /// Blob and message bytes scanned.
    pub bytes: u64,
    /// Findings in commit and tag messages: final.
    pub messages: Vec<PushFinding>,
    pub blobs: Vec<BlobHit>,
}

impl ObjectScan {
    fn merge(&mut self, other: ObjectScan) {
        self.commits += other.commits;
        self.bytes += other.bytes;
        self.messages.extend(other.messages);
        self.blobs.extend(other.blobs);
    }
}

/// A git child process: its stderr tail is kept on a thread; killed if dropped while
/// still running (a reader that gave up must not leave git blocked on a full pipe).
struct Git {
    what: &'static str,
    child: Child,
    stderr: Option<JoinHandle<String>>,
}

impl Git {
    fn spawn(what: &'static str, cmd: &mut Command) -> Result<Git, ScanError> {
        let mut child = cmd.stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().map(|s| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = BufReader::new(s).read_to_end(&mut buf);
                let tail = buf.len().saturating_sub(4096);
                String::from_utf8_lossy(&buf[tail..]).trim().to_string()
            })
        });
        Ok(Git {
            what,
            child,
            stderr,
        })
    }

    fn finish(mut self) -> Result<(), ScanError> {
        let status = self.child.wait()?;
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(ScanError::Git {
                what: self.what,
                status: status.to_string(),
                stderr,
            })
        }
    }
}

impl Drop for Git {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn git(git_dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("--git-dir").arg(git_dir);
    cmd
}

/// Scan every new commit message, annotated tag message and blob reachable from
/// `revs` and from none of `exclude`. `pushed` is an object directory that holds what
/// the push sent (the receive-pack quarantine): read first, whole, in pack order.
pub(super) fn scan_objects(
    rules: &RuleSet,
    git_dir: &Path,
    revs: &[String],
    exclude: &[&str],
    pushed: Option<&Path>,
) -> Result<ObjectScan, ScanError> {
    let listed = list_new(git_dir, revs, exclude)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut scan = ObjectScan::default();
    let mut rest = listed;
    if let Some(dir) = pushed {
        let mut wanted: HashMap<String, String> = rest
            .iter()
            .map(|l| match l.split_once(' ') {
                Some((id, path)) => (id.to_string(), path.to_string()),
                None => (l.clone(), String::new()),
            })
            .collect();
        let mut cmd = git(git_dir);
        cmd.args([
            "cat-file",
            "--batch-all-objects",
            "--unordered",
            BATCH_FORMAT,
        ])
        .env("GIT_OBJECT_DIRECTORY", dir)
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
        let mut cat_file = Git::spawn("git cat-file --batch-all-objects", &mut cmd)?;
        let out = cat_file
            .child
            .stdout
            .take()
            .ok_or_else(|| ScanError::Protocol("git cat-file without its pipe".into()))?;
        let part = scan_stream(
            rules,
            BufReader::with_capacity(READ_BUF, out),
            workers,
            Some(&mut wanted),
        )?;
        cat_file.finish()?;
        scan.merge(part);
        rest.retain(|l| wanted.contains_key(l.split_once(' ').map_or(l.as_str(), |(id, _)| id)));
    }
    if rest.is_empty() {
        return Ok(scan);
    }
    let mut cmd = git(git_dir);
    cmd.args(["cat-file", BATCH_FORMAT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut cat_file = Git::spawn("git cat-file", &mut cmd)?;
    let (Some(mut stdin), Some(out)) = (cat_file.child.stdin.take(), cat_file.child.stdout.take())
    else {
        return Err(ScanError::Protocol("git cat-file without its pipes".into()));
    };
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::with_capacity(1 << 16, &mut stdin);
        for l in &rest {
            w.write_all(l.as_bytes())?;
            w.write_all(b"\n")?;
        }
        w.flush()
    });
    let part = scan_stream(
        rules,
        BufReader::with_capacity(READ_BUF, out),
        workers,
        None,
    );
    let written = writer
        .join()
        .map_err(|_| ScanError::Protocol("the cat-file writer panicked".into()))?;
    let part = part?;
    written?;
    cat_file.finish()?;
    scan.merge(part);
    Ok(scan)
}

/// `--batch` format: `%(rest)` carries rev-list's path through.
const BATCH_FORMAT: &str = "--batch=%(objectname) %(objecttype) %(objectsize) %(rest)";

/// `git rev-list --objects`: every new object, `<id>[ <path>]` a line, newest first.
fn list_new(git_dir: &Path, revs: &[String], exclude: &[&str]) -> Result<Vec<String>, ScanError> {
    let mut cmd = git(git_dir);
    cmd.args(["rev-list", "--objects"]).args(revs);
    if !exclude.is_empty() {
        cmd.arg("--not").args(exclude);
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped());
    let mut rev_list = Git::spawn("git rev-list", &mut cmd)?;
    let out = rev_list
        .child
        .stdout
        .take()
        .ok_or_else(|| ScanError::Protocol("git rev-list without its pipe".into()))?;
    let mut lines = Vec::new();
    for line in BufReader::with_capacity(1 << 16, out).split(b'\n') {
        lines.push(String::from_utf8_lossy(&line?).into_owned());
    }
    rev_list.finish()?;
    Ok(lines)
}

/// One `--batch` header: `<id> <type> <size> <rest>`.
struct Header {
    id: String,
    kind: String,
    size: u64,
    rest: String,
}

fn parse_header(line: &[u8]) -> Result<Header, ScanError> {
    let text = String::from_utf8_lossy(line);
    let mut it = text.splitn(4, ' ');
    let bad = || ScanError::Protocol(format!("cat-file header {text:?}"));
    let id = it.next().ok_or_else(bad)?.to_string();
    let kind = it.next().ok_or_else(bad)?.to_string();
    let size = it
        .next()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let rest = it.next().unwrap_or("").to_string();
    Ok(Header {
        id,
        kind,
        size,
        rest,
    })
}

/// A blob for the pool.
struct Job {
    id: String,
    path: String,
    data: Vec<u8>,
}

/// Scan `cat-file --batch` output with `workers` threads for the blobs. With
/// `wanted`, only the objects it lists, which are taken out of it (their path is
/// there); without, every object (its path is the header's rest).
fn scan_stream<R: BufRead>(
    rules: &RuleSet,
    input: R,
    workers: usize,
    wanted: Option<&mut HashMap<String, String>>,
) -> Result<ObjectScan, ScanError> {
    let mut scan = ObjectScan::default();
    let (tx, rx) = sync_channel::<Job>(workers * QUEUE_PER_WORKER);
    let rx = Mutex::new(rx);
    std::thread::scope(|s| {
        let pool: Vec<_> = (0..workers.max(1))
            .map(|_| s.spawn(|| worker(rules, &rx)))
            .collect();
        let read = read_objects(rules, input, &mut scan, &tx, wanted);
        drop(tx);
        for handle in pool {
            match handle.join() {
                Ok(hits) => scan.blobs.extend(hits),
                Err(_) => return Err(ScanError::Protocol("a scan worker panicked".into())),
            }
        }
        read
    })?;
    scan.blobs
        .sort_by(|a, b| (&a.blob, a.offset).cmp(&(&b.blob, b.offset)));
    Ok(scan)
}

/// Scan blobs from the queue until it closes.
fn worker(rules: &RuleSet, queue: &Mutex<Receiver<Job>>) -> Vec<BlobHit> {
    let mut hits = Vec::new();
    loop {
        let job = match queue.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return hits,
        };
        let Ok(job) = job else {
            return hits;
        };
        hits.extend(rules.scan(&job.data).into_iter().map(|f| BlobHit {
            blob: job.id.clone(),
            path: job.path.clone(),
            offset: f.offset,
            rule_id: f.rule_id,
        }));
    }
}

/// Read `cat-file --batch` output to its end: messages scanned here, blobs sent to the
/// pool or streamed here.
fn read_objects<R: BufRead>(
    rules: &RuleSet,
    mut input: R,
    scan: &mut ObjectScan,
    pool: &SyncSender<Job>,
    mut wanted: Option<&mut HashMap<String, String>>,
) -> Result<(), ScanError> {
    let mut line = Vec::with_capacity(256);
    let mut content = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let mut h = parse_header(line.strip_suffix(b"\n").unwrap_or(&line))?;
        let kind = match wanted.as_deref_mut() {
            None => h.kind.as_str(),
            Some(w) => match w.remove(&h.id) {
                Some(path) => {
                    h.rest = path;
                    h.kind.as_str()
                }
                None => "skip",
            },
        };
        match kind {
            "blob" if h.size <= WHOLE_BLOB => {
                let mut data = Vec::with_capacity(h.size as usize);
                (&mut input).take(h.size).read_to_end(&mut data)?;
                if data.len() as u64 != h.size {
                    return Err(truncated(&h));
                }
                scan.bytes += h.size;
                let job = Job {
                    id: h.id,
                    path: h.rest,
                    data,
                };
                if pool.send(job).is_err() {
                    return Err(ScanError::Protocol("the scan workers stopped".into()));
                }
            }
            "blob" => scan_blob(rules, &mut input, &h, scan)?,
            "commit" | "tag" => {
                content.clear();
                (&mut input).take(h.size).read_to_end(&mut content)?;
                if content.len() as u64 != h.size {
                    return Err(truncated(&h));
                }
                scan_message(rules, &h, &content, scan);
            }
            _ => {
                let skipped = std::io::copy(&mut (&mut input).take(h.size), &mut std::io::sink())?;
                if skipped != h.size {
                    return Err(truncated(&h));
                }
            }
        }
        let mut nl = [0u8; 1];
        input.read_exact(&mut nl)?;
    }
}

fn truncated(h: &Header) -> ScanError {
    ScanError::Protocol(format!("object {} cut short", h.id))
}

/// Stream one blob's `h.size` bytes from `input` through a scanner.
fn scan_blob<R: BufRead>(
    rules: &RuleSet,
    input: &mut R,
    h: &Header,
    scan: &mut ObjectScan,
) -> Result<(), ScanError> {
    let mut scanner = StreamScanner::new(rules);
    let mut left = h.size;
    let mut found = Vec::new();
    while left > 0 {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            return Err(truncated(h));
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        found.extend(scanner.push(&buf[..n]));
        input.consume(n);
        left -= n as u64;
    }
    found.extend(scanner.finish());
    scan.bytes += h.size;
    scan.blobs.extend(found.into_iter().map(|f| BlobHit {
        blob: h.id.clone(),
        path: h.rest.clone(),
        offset: f.offset,
        rule_id: f.rule_id,
    }));
    Ok(())
}

/// Scan the message of a commit or tag object (what follows the headers).
fn scan_message(rules: &RuleSet, h: &Header, object: &[u8], scan: &mut ObjectScan) {
    let split = object.windows(2).position(|w| w == b"\n\n");
    let (headers, message) = match split {
        Some(i) => (&object[..i], &object[i + 2..]),
        None => (object, &[][..]),
    };
    let place = if h.kind == "tag" {
        let name = headers
            .split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"tag "))
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        Place::TagMessage(name)
    } else {
        scan.commits += 1;
        Place::CommitMessage
    };
    scan.bytes += message.len() as u64;
    for f in rules.scan(message) {
        scan.messages.push(PushFinding {
            object: h.id.clone(),
            place: place.clone(),
            line: line_at(message, f.offset),
            rule_id: f.rule_id,
        });
    }
}

/// The 1-based line of `offset` in blob `blob`.
pub(super) fn line_of(git_dir: &Path, blob: &str, offset: u64) -> Result<u64, ScanError> {
    let out = git(git_dir)
        .args(["cat-file", "blob", blob])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    if !out.status.success() {
        return Err(ScanError::Git {
            what: "git cat-file blob",
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(line_at(&out.stdout, offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIAZ7VRSQ5CXMPLW3QD";

    fn batch(objects: &[(&str, &str, &str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (id, kind, rest, body) in objects {
            out.extend_from_slice(format!("{id} {kind} {} {rest}\n", body.len()).as_bytes());
            out.extend_from_slice(body.as_bytes());
            out.push(b'\n');
        }
        out
    }

    #[test]
    fn blobs_and_messages_are_scanned_trees_skipped() {
        let rules = RuleSet::builtin();
        let input = batch(&[
            (
                "c1",
                "commit",
                "",
                &format!("tree t\nauthor a\n\nsubject\n\nbody {KEY}\n"),
            ),
            ("t1", "tree", "", &format!("100644 x\0{KEY}")),
            ("b1", "blob", "dir/a file.txt", &format!("one\ntwo {KEY}\n")),
            (
                "g1",
                "tag",
                "",
                &format!("object c1\ntype commit\ntag v1\ntagger t\n\n{KEY}\n"),
            ),
            ("b2", "blob", "clean.txt", "nothing here\n"),
        ]);
        let scan = scan_stream(&rules, &input[..], 2, None).unwrap();
        assert_eq!(scan.commits, 1);
        assert_eq!(
            scan.messages,
            vec![
                PushFinding {
                    object: "c1".into(),
                    place: Place::CommitMessage,
                    line: 3,
                    rule_id: "aws-access-key-id".into()
                },
                PushFinding {
                    object: "g1".into(),
                    place: Place::TagMessage("v1".into()),
                    line: 1,
                    rule_id: "aws-access-key-id".into()
                },
            ]
        );
        assert_eq!(
            scan.blobs,
            vec![BlobHit {
                blob: "b1".into(),
                path: "dir/a file.txt".into(),
                offset: 8,
                rule_id: "aws-access-key-id".into()
            }]
        );
    }

    #[test]
    fn a_large_blob_is_streamed_and_unlisted_objects_are_skipped() {
        let rules = RuleSet::builtin();
        let mut big = "x = 1;\n".repeat((WHOLE_BLOB as usize) / 7 + 1000);
        big.push_str(&format!("k = {KEY}\n"));
        let input = batch(&[
            ("b1", "blob", "", &big),
            ("b2", "blob", "", &format!("{KEY}\n")),
            ("c1", "commit", "", &format!("tree t\n\n{KEY}\n")),
        ]);
        let mut wanted: HashMap<String, String> = [("b1".to_string(), "big.txt".to_string())]
            .into_iter()
            .collect();
        let scan = scan_stream(&rules, &input[..], 2, Some(&mut wanted)).unwrap();
        assert!(wanted.is_empty());
        assert_eq!(scan.commits, 0);
        assert_eq!(scan.messages, vec![]);
        assert_eq!(scan.bytes, big.len() as u64);
        assert_eq!(
            scan.blobs,
            vec![BlobHit {
                blob: "b1".into(),
                path: "big.txt".into(),
                offset: (big.len() - KEY.len() - 1) as u64,
                rule_id: "aws-access-key-id".into()
            }]
        );
    }

    #[test]
    fn a_blob_cut_short_is_an_error() {
        let rules = RuleSet::builtin();
        let r = scan_stream(&rules, &b"b1 blob 100 x\nshort"[..], 2, None);
        assert!(matches!(r, Err(ScanError::Protocol(_))), "{r:?}");
    }
}
