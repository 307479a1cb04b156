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
    /// The byte offset where each line starts: a location is a binary search, not a scan
    /// from the start of the file (a file with thousands of errors stays fast).
    line_starts: Vec<usize>,
}

impl<'a> Source<'a> {
    pub(crate) fn new(text: &'a str, file: &'a Path) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Source {
            text,
            file,
            line_starts,
        }
    }

    /// Line `index` (0-based) without its line ending.
    fn line(&self, index: usize) -> &'a str {
        let start = self
            .line_starts
            .get(index)
            .copied()
            .unwrap_or(self.text.len());
        let end = self
            .line_starts
            .get(index + 1)
            .map_or(self.text.len(), |next| next - 1);
        let line = &self.text[start..end.max(start)];
        line.strip_suffix('\r').unwrap_or(line)
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
        // The last line starting at or before `offset`.
        let index = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let line_start = self.line_starts[index];
        Location {
            line: index + 1,
            column: self.text[line_start..offset].chars().count() + 1,
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
        let line = self.line(at.line - 1);
        // A very long line is quoted around the column only: one error stays one screen, and
        // a file with thousands of errors on one line stays fast.
        let (line, indent, cut) = window(line, at.column - 1);
        // Underline to the end of the span or of the quoted line, whichever comes first.
        let rest = line.chars().skip(indent).count();
        let span_chars = self
            .text
            .get(span.start.min(self.text.len())..span.end.min(self.text.len()))
            .map_or(1, |s| s.chars().take(rest.max(1)).count());
        let width = span_chars.min(rest).max(1);
        Diagnostic {
            message: message.into(),
            file: self.file.to_path_buf(),
            at: Some(at),
            help,
            quote: Some(Quote {
                // A tab would shift the underline; one space keeps the columns aligned.
                text: format!(
                    "{}{}{}",
                    if cut.0 { "..." } else { "" },
                    line.replace('\t', " "),
                    if cut.1 { "..." } else { "" }
                ),
                indent: indent + if cut.0 { 3 } else { 0 },
                width,
            }),
        }
    }
}

/// The part of `line` quoted for an error at character `column` (0-based): the whole line
/// unless it is longer than `QUOTE_CHARS`, then `QUOTE_CHARS` around the column. Returns the
/// part, the column within it, and whether it was cut at the start and at the end.
fn window(line: &str, column: usize) -> (&str, usize, (bool, bool)) {
    const QUOTE_CHARS: usize = 160;
    if line.len() <= QUOTE_CHARS {
        return (line, column, (false, false));
    }
    let first = column.saturating_sub(QUOTE_CHARS / 4);
    let mut chars = line.char_indices().skip(first);
    let start = chars.next().map_or(line.len(), |(i, _)| i);
    let end = chars.nth(QUOTE_CHARS - 2).map_or(line.len(), |(i, _)| i);
    (
        &line[start..end],
        column - first,
        (start > 0, end < line.len()),
    )
}

/// The source line a diagnostic points into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Quote {
    text: String,
    /// How many characters of `text` come before the column.
    indent: usize,
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
                    " ".repeat(quote.indent),
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

#[cfg(test)]
mod window_tests {
    use super::*;

    #[test]
    fn a_long_line_is_quoted_around_the_column_with_the_underline_on_it() {
        let line = format!("{}KEY{}", "a".repeat(500), "b".repeat(500));
        let text = format!("first\n{line}\n");
        let source = Source::new(&text, Path::new("p.toml"));
        let start = text.find("KEY").unwrap_or_default();
        let shown = source.error(start..start + 3, "bad", None).to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[1].ends_with("p.toml:2:501"), "{shown}");
        let quoted = lines[3].trim_start_matches("2 | ");
        assert!(
            quoted.starts_with("...") && quoted.ends_with("..."),
            "{shown}"
        );
        assert!(quoted.chars().count() < 200, "{shown}");
        let underline = lines[4].trim_start_matches("  | ");
        let at = underline.find('^').unwrap_or_default();
        assert_eq!(&quoted[at..at + 3], "KEY", "{shown}");
        assert_eq!(underline.trim(), "^^^", "{shown}");
    }

    #[test]
    fn locations_count_lines_and_characters_with_crlf() {
        let text = "a = 1\r\nbé = 2\n\nc";
        let source = Source::new(text, Path::new("p.toml"));
        let at = source.locate(text.find('=').unwrap_or_default());
        assert_eq!((at.line, at.column), (1, 3));
        let at = source.locate(text.rfind('=').unwrap_or_default());
        assert_eq!((at.line, at.column), (2, 4));
        let at = source.locate(text.len() - 1);
        assert_eq!((at.line, at.column), (4, 1));
        assert_eq!(source.line(0), "a = 1");
    }
}
