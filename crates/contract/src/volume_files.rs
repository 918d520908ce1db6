//! Small files in a running sidecar's volume, read and written through exec on
//! Kubernetes (docs/design.md section 9.10): how `bottle queue` reaches supervise's state
//! volume there, where the sidecar image has no shell and no `tar`. The engine execs
//! the hidden `bottle sidecar read-files --dir DIR [--after NAME]` (a [`Listing`] of the
//! regular files directly in `DIR`, printed on stdout) and `bottle sidecar write-file
//! --dir DIR --name NAME --bytes N --sha256 HEX` (exactly `N` bytes read from stdin:
//! before Kubernetes 1.30 an exec's input cannot be ended without ending the session),
//! in the container, as its own user.
//!
//! Both sides call this module: the commands ([`read_command`], [`write_command`]),
//! names ([`valid_name`], [`valid_dir`]), the listing's framing and bounds
//! ([`Listing::encode`], [`Listing::decode`]) and the checked input ([`read_input`]).
//! A listing is one line of JSON (contents in base64, so it is UTF-8 whatever the files
//! hold), so the exec's output, taken as text and cut at `MAX_EXEC_OUTPUT` (1 MiB),
//! carries it whole: it holds at most [`MAX_BATCH`] bytes of contents in
//! [`MAX_BATCH_FILES`] files (base64 and escaped names stay under 1 MiB), and says when
//! there are more (the next call starts `--after` its last name).

use std::io::Read;

use serde::{Deserialize, Serialize};

/// The largest file read or written (a queue record is at most a bounded Dockerfile).
pub const MAX_FILE: u64 = 256 << 10;
/// The most contents one listing holds (base64 and names stay under 1 MiB).
pub const MAX_BATCH: usize = 512 << 10;
/// The most files one listing holds.
pub const MAX_BATCH_FILES: usize = 512;
/// The most contents the engine reads back from one directory, over all its listings.
pub const MAX_TOTAL: usize = 16 << 20;
/// The longest file name.
pub const MAX_NAME: usize = 255;
/// The version a listing says it is.
pub const VERSION: u32 = 1;

/// Why a listing, a name or an input was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// Not a file name directly in a directory.
    #[error("{0:?} is not a plain file name")]
    BadName(String),
    /// Not an absolute path of plain components.
    #[error("{0:?} is not an absolute directory path")]
    BadDir(String),
    /// Larger than [`MAX_FILE`].
    #[error("{0} bytes is more than a file may hold ({MAX_FILE})")]
    TooLarge(u64),
    /// The input ended early.
    #[error("the input ended after {got} of {want} bytes")]
    Short {
        /// Bytes read.
        got: u64,
        /// Bytes announced.
        want: u64,
    },
    /// The input's SHA-256 is not the announced one (or that is not 64 hex digits).
    #[error("the input's SHA-256 is not the one announced")]
    Digest,
    /// The input could not be read.
    #[error("reading the input: {0}")]
    Read(String),
    /// Not a listing (cut, or not one at all).
    #[error("not a file listing: {0}")]
    NotAListing(String),
    /// A listing beyond its bounds, out of order, or with a bad name.
    #[error("a file listing out of bounds: {0}")]
    OutOfBounds(String),
}

/// Is `name` a plain file name: not empty, at most [`MAX_NAME`] bytes, not `.` or `..`,
/// no `/`, no control character?
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Is `dir` an absolute path of plain components (no `.`, no `..`, no empty one)?
pub fn valid_dir(dir: &str) -> bool {
    let Some(rest) = dir.strip_prefix('/') else {
        return false;
    };
    dir.len() <= 4096
        && !dir.chars().any(char::is_control)
        && (rest.is_empty()
            || rest
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// One file of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// Its name in the directory.
    pub name: String,
    /// Its contents, base64 in the frame.
    #[serde(with = "b64")]
    pub contents: Vec<u8>,
}

/// The regular files of a directory, by name, one batch of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// [`VERSION`].
    pub v: u32,
    /// The files, in ascending name order.
    pub files: Vec<File>,
    /// More files follow the last one: list again `--after` its name.
    pub more: bool,
}

impl Listing {
    /// An empty listing.
    pub fn new() -> Listing {
        Listing {
            v: VERSION,
            ..Listing::default()
        }
    }

    /// Add a file (names must come in ascending order) when it fits the batch; else
    /// mark the listing as having more and give `false`.
    pub fn push(&mut self, name: String, contents: Vec<u8>) -> bool {
        let held: usize = self.files.iter().map(|f| f.contents.len()).sum();
        if self.more || self.files.len() >= MAX_BATCH_FILES || held + contents.len() > MAX_BATCH {
            self.more = true;
            return false;
        }
        self.files.push(File { name, contents });
        true
    }

    /// The frame: one line of JSON (ASCII but for the names).
    pub fn encode(&self) -> String {
        let mut s = serde_json::to_string(self).expect("a listing serializes");
        s.push('\n');
        s
    }

    /// Read a frame a listing `--after` `after` printed, checking every bound: the
    /// version, each name valid and after the previous one (and after `after`), each
    /// file at most [`MAX_FILE`], the batch at most [`MAX_BATCH`] in [`MAX_BATCH_FILES`]
    /// files, and `more` only with a file to go on from.
    pub fn decode(text: &str, after: Option<&str>) -> Result<Listing, FramingError> {
        let l: Listing = serde_json::from_str(text.trim_end())
            .map_err(|e| FramingError::NotAListing(e.to_string()))?;
        let bad = |m: String| Err(FramingError::OutOfBounds(m));
        if l.v != VERSION {
            return bad(format!("version {}, not {VERSION}", l.v));
        }
        if l.files.len() > MAX_BATCH_FILES {
            return bad(format!("{} files", l.files.len()));
        }
        let mut held = 0usize;
        let mut last = after;
        for f in &l.files {
            if !valid_name(&f.name) {
                return bad(format!("the name {:?}", f.name));
            }
            if last.is_some_and(|p| f.name.as_str() <= p) {
                return bad(format!("{:?} out of order", f.name));
            }
            if f.contents.len() as u64 > MAX_FILE {
                return bad(format!("{} of {} bytes", f.name, f.contents.len()));
            }
            held += f.contents.len();
            last = Some(&f.name);
        }
        if held > MAX_BATCH {
            return bad(format!("{held} bytes in one batch"));
        }
        if l.more && l.files.is_empty() {
            return bad("more files, but none to go on from".into());
        }
        Ok(l)
    }
}

/// The command that lists the regular files directly in `dir` (after `after`).
pub fn read_command(dir: &str, after: Option<&str>) -> Result<Vec<String>, FramingError> {
    if !valid_dir(dir) {
        return Err(FramingError::BadDir(dir.into()));
    }
    let mut cmd: Vec<String> = ["/bottle", "sidecar", "read-files", "--dir", dir]
        .map(String::from)
        .into();
    if let Some(a) = after {
        if !valid_name(a) {
            return Err(FramingError::BadName(a.into()));
        }
        cmd.extend(["--after".into(), a.into()]);
    }
    Ok(cmd)
}

/// The command that writes `contents` (fed on its stdin) as `dir/name`.
pub fn write_command(dir: &str, name: &str, contents: &[u8]) -> Result<Vec<String>, FramingError> {
    use sha2::Digest as _;
    if !valid_dir(dir) {
        return Err(FramingError::BadDir(dir.into()));
    }
    if !valid_name(name) {
        return Err(FramingError::BadName(name.into()));
    }
    let len = contents.len() as u64;
    if len > MAX_FILE {
        return Err(FramingError::TooLarge(len));
    }
    let digest = sha2::Sha256::digest(contents);
    let sha: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok([
        "/bottle",
        "sidecar",
        "write-file",
        "--dir",
        dir,
        "--name",
        name,
        "--bytes",
        &len.to_string(),
        "--sha256",
        &sha,
    ]
    .map(String::from)
    .into())
}

/// Exactly `bytes` bytes of `input` (never more: what follows is not read), checked
/// against `sha256` (hex): what `write-file` writes.
pub fn read_input(input: impl Read, bytes: u64, sha256: &str) -> Result<Vec<u8>, FramingError> {
    if bytes > MAX_FILE {
        return Err(FramingError::TooLarge(bytes));
    }
    let want = parse_sha(sha256).ok_or(FramingError::Digest)?;
    let mut hashing = crate::seed::Hashing::new(Vec::with_capacity(bytes as usize));
    std::io::copy(&mut input.take(bytes), &mut hashing)
        .map_err(|e| FramingError::Read(e.to_string()))?;
    let (data, got, digest) = hashing.finish();
    if got < bytes {
        return Err(FramingError::Short { got, want: bytes });
    }
    if digest != want {
        return Err(FramingError::Digest);
    }
    Ok(data)
}

fn parse_sha(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        // Never more than a file may hold: decoded only when the text is short enough.
        if s.len() as u64 > (super::MAX_FILE / 3 + 1) * 4 {
            return Err(serde::de::Error::custom(
                "contents longer than a file may hold",
            ));
        }
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use proptest::prelude::*;

    fn sha(b: &[u8]) -> String {
        use sha2::Digest as _;
        sha2::Sha256::digest(b)
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect()
    }

    #[test]
    fn names_are_plain_and_dirs_absolute() {
        for ok in ["p0000000001.json", ".p1.tmp", "a b", "é"] {
            assert!(valid_name(ok), "{ok}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "/x",
            "a\nb",
            "a\0b",
            long.as_str(),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
        assert!(valid_dir("/state/decisions"));
        assert!(valid_dir("/"));
        for bad in [
            "state",
            "/state/../etc",
            "/state/./x",
            "/s//x",
            "/s/",
            "",
            "/a\nb",
        ] {
            assert!(!valid_dir(bad), "{bad:?}");
        }
        assert!(matches!(
            write_command("/state/decisions", "../x", b""),
            Err(FramingError::BadName(_))
        ));
        assert!(matches!(
            write_command("/state/../etc", "x", b""),
            Err(FramingError::BadDir(_))
        ));
        assert!(matches!(
            read_command("/s", Some("a/b")),
            Err(FramingError::BadName(_))
        ));
    }

    #[test]
    fn the_command_carries_length_and_digest() {
        let cmd = write_command("/state/decisions", "p1.json", b"{}").unwrap();
        assert_eq!(
            cmd[2..9],
            [
                "write-file",
                "--dir",
                "/state/decisions",
                "--name",
                "p1.json",
                "--bytes",
                "2"
            ]
        );
        assert_eq!(cmd[10], sha(b"{}"));
        let big = vec![0u8; MAX_FILE as usize + 1];
        assert!(matches!(
            write_command("/d", "n", &big),
            Err(FramingError::TooLarge(_))
        ));
    }

    #[test]
    fn input_is_exact_and_checked() {
        let data = b"hello world";
        // Only the announced bytes are taken, what follows stays unread.
        let mut r: &[u8] = b"hello worldTRAILING";
        assert_eq!(read_input(&mut r, 11, &sha(data)).unwrap(), data);
        assert_eq!(r, b"TRAILING");
        assert_eq!(
            read_input(&b"hello"[..], 11, &sha(data)),
            Err(FramingError::Short { got: 5, want: 11 })
        );
        assert_eq!(
            read_input(&b"hello worle"[..], 11, &sha(data)),
            Err(FramingError::Digest)
        );
        assert_eq!(read_input(&data[..], 11, "zz"), Err(FramingError::Digest));
        assert_eq!(
            read_input(&data[..], MAX_FILE + 1, &sha(data)),
            Err(FramingError::TooLarge(MAX_FILE + 1))
        );
    }

    #[test]
    fn a_batch_is_bounded_and_says_when_more_follow() {
        let mut l = Listing::new();
        let half = vec![7u8; MAX_BATCH / 2];
        assert!(l.push("a".into(), half.clone()));
        assert!(l.push("b".into(), half.clone()));
        assert!(!l.push("c".into(), vec![1]));
        // Once full, nothing more goes in, even a file that would fit.
        assert!(!l.push("d".into(), Vec::new()));
        assert!(l.more);
        let back = Listing::decode(&l.encode(), None).unwrap();
        assert_eq!(back, l);
        assert!(l.encode().is_ascii());

        let mut many = Listing::new();
        for i in 0..=MAX_BATCH_FILES {
            many.push(format!("f{i:05}"), Vec::new());
        }
        assert_eq!((many.files.len(), many.more), (MAX_BATCH_FILES, true));
    }

    #[test]
    fn a_frame_out_of_bounds_or_cut_is_refused() {
        let mut l = Listing::new();
        l.push("b".into(), b"x".to_vec());
        let text = l.encode();
        // Cut anywhere: not a listing.
        for cut in [0, 1, text.len() / 2, text.len() - 2] {
            assert!(
                matches!(
                    Listing::decode(&text[..cut], None),
                    Err(FramingError::NotAListing(_))
                ),
                "cut at {cut}"
            );
        }
        // Not after the name the call started from.
        assert!(matches!(
            Listing::decode(&text, Some("b")),
            Err(FramingError::OutOfBounds(_))
        ));
        let forge = |json: serde_json::Value| Listing::decode(&json.to_string(), None);
        for bad in [
            serde_json::json!({"v": 1, "files": [{"name": "../x", "contents": ""}], "more": false}),
            serde_json::json!({"v": 1, "files": [{"name": "a/b", "contents": ""}], "more": false}),
            serde_json::json!({"v": 1, "files": [{"name": "b", "contents": ""}, {"name": "a", "contents": ""}], "more": false}),
            serde_json::json!({"v": 1, "files": [{"name": "a", "contents": ""}, {"name": "a", "contents": ""}], "more": false}),
            serde_json::json!({"v": 1, "files": [], "more": true}),
            serde_json::json!({"v": 2, "files": [], "more": false}),
        ] {
            assert!(
                matches!(forge(bad.clone()), Err(FramingError::OutOfBounds(_))),
                "{bad}"
            );
        }
        let huge =
            base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_FILE as usize + 3]);
        assert!(matches!(
            forge(
                serde_json::json!({"v": 1, "files": [{"name": "a", "contents": huge}], "more": false})
            ),
            Err(FramingError::NotAListing(_))
        ));
        let files: Vec<_> = (0..3)
            .map(|i| {
                serde_json::json!({"name": format!("f{i}"), "contents": base64::engine::general_purpose::STANDARD.encode(vec![0u8; MAX_FILE as usize])})
            })
            .collect();
        assert!(matches!(
            forge(serde_json::json!({"v": 1, "files": files, "more": false})),
            Err(FramingError::OutOfBounds(_))
        ));
        assert!(matches!(
            forge(
                serde_json::json!({"v": 1, "files": [{"name": "a", "contents": "!!"}], "more": false})
            ),
            Err(FramingError::NotAListing(_))
        ));
    }

    proptest! {
        #[test]
        fn listings_round_trip(
            files in proptest::collection::btree_map(
                "[A-Za-z0-9._-]{1,40}",
                proptest::collection::vec(any::<u8>(), 0..2048),
                0..20,
            ),
            after in proptest::option::of("[A-Za-z0-9._-]{1,4}"),
        ) {
            let mut l = Listing::new();
            for (name, contents) in files {
                if valid_name(&name) && after.as_deref().is_none_or(|a| name.as_str() > a) {
                    l.push(name, contents);
                }
            }
            let text = l.encode();
            prop_assert!(text.is_ascii());
            prop_assert_eq!(Listing::decode(&text, after.as_deref()).unwrap(), l);
        }

        #[test]
        fn any_input_round_trips(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let cmd = write_command("/d", "n", &data).unwrap();
            let bytes: u64 = cmd[8].parse().unwrap();
            prop_assert_eq!(read_input(&data[..], bytes, &cmd[10]).unwrap(), data);
        }
    }
}
