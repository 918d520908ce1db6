//! How an error is printed where only one line fits (a log field, an audit detail, an
//! HTTP reason): the error and each of its sources once, `: `-joined.
//!
//! The house rule: an error's own message never repeats its `#[source]` (so `{:#}` on an
//! `anyhow::Error` and [`ErrorChain`] print every cause exactly once); a cause that a
//! foreign error does repeat in its message is skipped here.

use std::fmt;

/// Displays an error and its sources, `: `-joined, each once.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            let text = s.to_string();
            if !text.is_empty() && !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown.push_str(&text);
            }
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("bottle dev")]
    struct Top(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("reading build context /nonexistent/ctx")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn each_cause_is_printed_once() {
        let e = Top(Middle(std::io::Error::from(std::io::ErrorKind::NotFound)));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "bottle dev: reading build context /nonexistent/ctx: entity not found"
        );
    }
}
