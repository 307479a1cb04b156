//! Where in a policy file something is wrong, and how to say so: compiler-style messages
//! with the file, line, column, the offending line and a hint at what would be valid.
//!
//! This module only formats; it must never decide whether something is an error.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// A 1-based line and column (in characters) in a policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// The text of a policy file, with what it takes to turn byte offsets into locations.
pub(crate) struct Source<'a> {
    text: &'a str,
    file: &'a Path,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        Source { text, file }
    }

    pub(crate) fn file(&self) -> &Path {
        self.file
    }

    /// The location of byte `offset` (clamped to the text, rounded down to a character).
    pub(crate) fn locate(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Location {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// An error at `span` (byte offsets), quoting the line it starts on.
    pub(crate) fn error(
        &self,
        span: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Diagnostic {
        let at = self.locate(span.start);
        let line = self.text.lines().nth(at.line - 1).unwrap_or("");
        // Underline to the end of the span or of its first line, whichever comes first.
        let rest: String = line.chars().skip(at.column - 1).collect();
        let span_chars = self
            .text
            .get(span.start.min(self.text.len())..span.end.min(self.text.len()))
            .map_or(1, |s| s.chars().count());
        let width = span_chars.min(rest.chars().count()).max(1);
        Diagnostic {
            message: message.into(),
            file: self.file.to_path_buf(),
            at: Some(at),
            help,
            quote: Some(Quote {
                // A tab would shift the underline; one space keeps the columns aligned.
                text: line.replace('\t', " "),
                width,
            }),
        }
    }
}

/// The source line a diagnostic points into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quote {
    text: String,
    /// How many characters from the column to underline.
    width: usize,
}

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
    pub file: PathBuf,
    /// Where, when the problem has a place in the file.
    pub at: Option<Location>,
    /// What would be valid.
    pub help: Option<String>,
    #[serde(skip)]
    quote: Option<Quote>,
}

impl Diagnostic {
    /// A problem with the file as a whole (it cannot be read, it names no tools).
    pub(crate) fn whole_file(
        file: &Path,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        Diagnostic {
            message: message.into(),
            file: file.to_path_buf(),
            at: None,
            help,
            quote: None,
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "error: {}", self.message)?;
        let file = self.file.display();
        match (self.at, &self.quote) {
            (Some(at), Some(quote)) => {
                let number = at.line.to_string();
                let pad = " ".repeat(number.len());
                writeln!(f, "{pad}--> {file}:{}:{}", at.line, at.column)?;
                writeln!(f, "{pad} |")?;
                writeln!(f, "{number} | {}", quote.text)?;
                writeln!(
                    f,
                    "{pad} | {}{}",
                    " ".repeat(at.column - 1),
                    "^".repeat(quote.width)
                )?;
                if let Some(help) = &self.help {
                    writeln!(f, "{pad} = help: {help}")?;
                }
            }
            (Some(at), None) => {
                writeln!(f, " --> {file}:{}:{}", at.line, at.column)?;
                if let Some(help) = &self.help {
                    writeln!(f, "  = help: {help}")?;
                }
            }
            (None, _) => {
                writeln!(f, " --> {file}")?;
                if let Some(help) = &self.help {
                    writeln!(f, "  = help: {help}")?;
                }
            }
        }
        Ok(())
    }
}

/// Everything wrong with a policy file that does not parse, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(transparent)]
#[error("{}", render(.0))]
pub struct Diagnostics(pub Vec<Diagnostic>);

fn render(diagnostics: &[Diagnostic]) -> String {
    let mut out: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    let count = diagnostics.len();
    out.push(format!(
        "policy refused: {count} error{}",
        if count == 1 { "" } else { "s" }
    ));
    out.join("\n")
}

impl Diagnostics {
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let file = PathBuf::from("p.toml");
        let source = Source::new("a = 1\nbé = 2\n", &file);
        assert_eq!(source.locate(0), Location { line: 1, column: 1 });
        assert_eq!(source.locate(6), Location { line: 2, column: 1 });
        // "é" is two bytes: the `=` at byte 10 is the fourth character.
        assert_eq!(source.locate(10), Location { line: 2, column: 4 });
        // Inside a character and past the end do not panic.
        assert_eq!(source.locate(8).line, 2);
        assert_eq!(source.locate(999).line, 3);
    }

    #[test]
    fn renders_like_a_compiler() {
        let file = PathBuf::from("tools.toml");
        let source = Source::new("[tools.fmt]\nmemroy = 1\n", &file);
        let d = source.error(
            12..18,
            "unknown key `memroy`",
            Some("valid keys: memory".into()),
        );
        let text = d.to_string();
        assert!(text.starts_with("error: unknown key `memroy`\n"), "{text}");
        assert!(text.contains("--> tools.toml:2:1"), "{text}");
        assert!(text.contains("2 | memroy = 1\n  | ^^^^^^\n"), "{text}");
        assert!(text.contains("= help: valid keys: memory"), "{text}");
    }
}
