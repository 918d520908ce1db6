//! Problems found in a manifest and how they are reported.
//!
//! The plain `Display` form (`FILE:LINE:COLUMN: FIELD: MESSAGE`, one per line, then a
//! count) is the stable format that tests, CI and editors rely on. The
//! [`miette::Diagnostic`] implementation lets the CLI render source snippets instead.

use std::fmt;
use std::path::PathBuf;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceCode};

/// Field name used for problems that concern the whole document (syntax errors, an
/// empty file, a document that is not a map).
pub const DOCUMENT: &str = "<document>";

/// One thing wrong with a manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line of the offending node.
    pub line: usize,
    /// 1-based column (in characters) of the offending node.
    pub column: usize,
    /// Dotted path of the field, e.g. `bottles.dev.resources.cpus` or
    /// `bottles.dev.egress.routes[0].host`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in one manifest, with the text they point into.
#[derive(Clone, Debug)]
pub struct Diagnostics {
    /// The manifest file as given.
    pub path: PathBuf,
    /// The manifest text (lossily decoded if it was not UTF-8).
    pub source: String,
    /// Sorted by position.
    pub problems: Vec<Problem>,
    /// What miette needs; boxed to keep `Result<_, ManifestError>` small.
    render: Box<Render>,
}

/// Problems and source prepared for miette.
#[derive(Clone, Debug)]
struct Render {
    /// One miette diagnostic per problem, with its byte span resolved.
    labelled: Vec<LabelledProblem>,
    /// The source under the file's name, for snippet headers.
    named: NamedSource<String>,
}

impl Diagnostics {
    /// Bundle `problems` (sorted here by position) with their source.
    pub fn new(
        path: impl Into<PathBuf>,
        source: impl Into<String>,
        mut problems: Vec<Problem>,
    ) -> Self {
        let source = source.into();
        problems.sort_by_key(|p| (p.line, p.column));
        let labelled = problems
            .iter()
            .map(|p| {
                let (offset, len) = byte_span(&source, p.line, p.column);
                LabelledProblem {
                    problem: p.clone(),
                    offset,
                    len,
                }
            })
            .collect();
        let path = path.into();
        let named = NamedSource::new(path.display().to_string(), source.clone());
        Diagnostics {
            path,
            source,
            problems,
            render: Box::new(Render { labelled, named }),
        }
    }

    /// A view for miette rendering: a one-line summary as the headline and one
    /// snippet per problem (the `Diagnostic` impl on `Diagnostics` itself has the full
    /// plain listing as its headline).
    pub fn snippets(&self) -> Snippets<'_> {
        Snippets(self)
    }
}

/// See [`Diagnostics::snippets`].
#[derive(Debug)]
pub struct Snippets<'a>(&'a Diagnostics);

impl fmt::Display for Snippets<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.problems.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        write!(f, "{n} {noun} in {}", self.0.path.display())
    }
}

impl std::error::Error for Snippets<'_> {}

impl Diagnostic for Snippets<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.0.code()
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        self.0.source_code()
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        self.0.related()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let file = self.path.display();
        for p in &self.problems {
            writeln!(
                f,
                "{file}:{}:{}: {}: {}",
                p.line, p.column, p.field, p.message
            )?;
        }
        let n = self.problems.len();
        let noun = if n == 1 { "problem" } else { "problems" };
        write!(f, "{n} {noun} in {file}")
    }
}

impl std::error::Error for Diagnostics {}

impl Diagnostic for Diagnostics {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("bottle::manifest"))
    }

    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.render.named)
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        Some(Box::new(
            self.render.labelled.iter().map(|p| p as &'a dyn Diagnostic),
        ))
    }
}

/// A problem as a miette diagnostic; its source is the parent's.
#[derive(Clone, Debug)]
struct LabelledProblem {
    problem: Problem,
    offset: usize,
    len: usize,
}

impl fmt::Display for LabelledProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.problem)
    }
}

impl std::error::Error for LabelledProblem {}

impl Diagnostic for LabelledProblem {
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(LabeledSpan::new(
            Some(self.problem.field.clone()),
            self.offset,
            self.len,
        ))))
    }
}

/// Byte offset of (line, column) in `source` and the length of the token there, both
/// clamped to the text.
fn byte_span(source: &str, line: usize, column: usize) -> (usize, usize) {
    let mut offset = 0;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            let within: usize = l
                .chars()
                .take(column.saturating_sub(1))
                .map(char::len_utf8)
                .sum();
            let start = offset + within;
            let len = source[start..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ':' | ']' | '}' | '#'))
                .map(char::len_utf8)
                .sum::<usize>()
                .max(usize::from(start < source.len()));
            return (start, len);
        }
        offset += l.len();
    }
    (source.len(), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: usize, column: usize, field: &str, message: &str) -> Problem {
        Problem {
            line,
            column,
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn display_lists_every_problem_then_a_count() {
        let d = Diagnostics::new(
            "bottles.yaml",
            "a: 1\nb: 2\n",
            vec![problem(2, 4, "b", "bad"), problem(1, 1, "a", "unknown")],
        );
        assert_eq!(
            d.to_string(),
            "bottles.yaml:1:1: a: unknown\nbottles.yaml:2:4: b: bad\n2 problems in bottles.yaml"
        );
        let one = Diagnostics::new("m.yaml", "", vec![problem(1, 1, DOCUMENT, "empty")]);
        assert!(one.to_string().ends_with("\n1 problem in m.yaml"));
    }

    #[test]
    fn spans_point_at_the_token() {
        let src = "é: 1\nkey: value here\n";
        assert_eq!(byte_span(src, 2, 6), (11, 5));
        assert_eq!(byte_span(src, 1, 4), (4, 1));
        assert_eq!(byte_span(src, 9, 1), (src.len(), 0));
    }

    #[test]
    fn miette_renders_with_snippets() {
        let d = Diagnostics::new(
            "m.yaml",
            "a: 1\nb: 2\n",
            vec![problem(2, 4, "b", "bad value")],
        );
        let handler =
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor());
        let mut out = String::new();
        handler.render_report(&mut out, &d).expect("renders");
        assert!(out.contains("bad value"), "{out}");
        assert!(out.contains("b: 2"), "{out}");
        let mut short = String::new();
        handler
            .render_report(&mut short, &d.snippets())
            .expect("renders");
        assert!(short.contains("1 problem in m.yaml"), "{short}");
        assert!(short.contains("[m.yaml:2:4]"), "{short}");
        assert!(short.contains("b: bad value"), "{short}");
    }
}
