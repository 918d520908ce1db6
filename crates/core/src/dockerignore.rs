//! A build context's `.dockerignore`, applied the way Docker applies it (moby's
//! `patternmatcher`): each line trimmed; blank lines and `#` comments skipped; `!`
//! re-includes; a pattern is cleaned (`./a`, `a/`, `/a` all mean `a`) and matches a path
//! relative to the context root, or any of its parent directories, so `node_modules`
//! leaves out everything under it; the last matching line decides. Globs are `globset`'s
//! with `*` and `?` stopping at `/`, `**` across directories and `\` escaping, which is
//! Docker's `filepath.Match` plus `**`.

use globset::{GlobBuilder, GlobMatcher};

/// One line of a `.dockerignore`.
#[derive(Debug)]
struct Rule {
    glob: GlobMatcher,
    /// A `!` line: it re-includes what it matches.
    include: bool,
}

/// The rules of one `.dockerignore`.
#[derive(Debug, Default)]
pub struct Ignore {
    rules: Vec<Rule>,
}

/// A line Docker would refuse too.
#[derive(Debug, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IgnoreError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl Ignore {
    /// Parse a `.dockerignore`'s text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let mut rules = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (include, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            let err = |message: String| IgnoreError {
                line: i + 1,
                message,
            };
            if pattern.is_empty() {
                return Err(err("an exception (`!`) with no pattern".into()));
            }
            let cleaned = clean(pattern);
            if cleaned.is_empty() {
                // `/` or `.`: the whole context.
                continue;
            }
            let glob = GlobBuilder::new(&cleaned)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| err(format!("pattern {pattern:?}: {}", e.kind())))?
                .compile_matcher();
            rules.push(Rule { glob, include });
        }
        Ok(Ignore { rules })
    }

    /// Whether `path` (relative to the context root, `/`-separated) is left out.
    pub fn excludes(&self, path: &str) -> bool {
        let mut excluded = false;
        for r in &self.rules {
            if r.include == excluded && matches_or_parent(&r.glob, path) {
                excluded = !r.include;
            }
        }
        excluded
    }

    /// Whether any line re-includes: then an excluded directory must still be walked.
    pub fn has_exceptions(&self) -> bool {
        self.rules.iter().any(|r| r.include)
    }
}

/// The pattern matches the path or one of its parent directories.
fn matches_or_parent(glob: &GlobMatcher, path: &str) -> bool {
    if glob.is_match(path) {
        return true;
    }
    let mut end = path.len();
    while let Some(i) = path[..end].rfind('/') {
        if glob.is_match(&path[..i]) {
            return true;
        }
        end = i;
    }
    false
}

/// Go's `filepath.Clean` on a `/`-separated pattern, without a leading `/`.
fn clean(pattern: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in pattern.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> Ignore {
        Ignore::parse(text).unwrap()
    }

    #[test]
    fn docker_semantics() {
        let r = rules("# deps\nnode_modules\n*.log\n!keep.log\n/build/\n**/*.tmp\ndocs/*.md\n");
        for out in [
            "node_modules",
            "node_modules/a/b.js",
            "app.log",
            "build",
            "build/x",
            "a/b/c.tmp",
            "x.tmp",
            "docs/a.md",
        ] {
            assert!(r.excludes(out), "{out} is left out");
        }
        for kept in [
            "keep.log",
            "src/app.log",
            "docs/sub/a.md",
            "Dockerfile",
            "src/node_modules_x",
        ] {
            assert!(!r.excludes(kept), "{kept} is sent");
        }
        assert!(r.has_exceptions());
    }

    #[test]
    fn the_last_matching_line_decides_and_cleaning_is_gos() {
        let r = rules("a\n!a/keep\n./b/../c/\n");
        assert!(r.excludes("a/x"));
        assert!(!r.excludes("a/keep"));
        assert!(r.excludes("c/d"));
        assert!(!r.excludes("b"));
        let r = rules("!a\na\n");
        assert!(r.excludes("a"));
        assert!(!rules("/\n").excludes("a"), "the root pattern is no rule");
    }

    #[test]
    fn bad_lines_are_located() {
        let e = Ignore::parse("ok\n\n!\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = Ignore::parse("a[b\n").unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.to_string().contains("a[b"), "{e}");
    }
}
