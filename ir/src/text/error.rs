//! Diagnostics of the text-form parsers.
//!
//! Contract: a [`TextError`] carries the source text, the byte span of the
//! offending token, its 1-based line and column, what was found and what was
//! expected; rendered by miette it shows the line with a caret label.

use miette::{NamedSource, SourceSpan};
use std::ops::Range;
use std::sync::Arc;

/// A lexing or parsing error in a `.tir` or `.he` text.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("{line}:{column}: {message}")]
#[diagnostic(code(hecc::text::parse))]
pub struct TextError {
    /// What went wrong (e.g. "expected `=`, found `:`").
    pub message: String,
    /// 1-based line of the offending token.
    pub line: usize,
    /// 1-based column (in characters) of the offending token.
    pub column: usize,
    /// Byte span of the offending token.
    #[label("{label}")]
    pub span: SourceSpan,
    /// Short label shown under the token.
    pub label: String,
    /// The source text (shared, so the error stays small).
    #[source_code]
    pub src: Arc<NamedSource<String>>,
}

impl TextError {
    /// An error at `span` of `src`.
    pub fn new(
        src: &str,
        span: Range<usize>,
        message: impl Into<String>,
        label: impl Into<String>,
    ) -> TextError {
        let start = span.start.min(src.len());
        let end = span.end.clamp(start, src.len());
        let (line, column) = line_col(src, start);
        TextError {
            message: message.into(),
            line,
            column,
            span: SourceSpan::new(start.into(), end - start),
            label: label.into(),
            src: Arc::new(NamedSource::new("<input>", src.to_string())),
        }
    }

    /// Renames the source (a file name) shown by miette.
    pub fn with_name(mut self, name: &str) -> TextError {
        let text = self.src.inner().clone();
        self.src = Arc::new(NamedSource::new(name, text));
        self
    }
}

/// The largest char boundary of `src` at or below `offset`.
pub fn floor_boundary(src: &str, offset: usize) -> usize {
    let mut offset = offset.min(src.len());
    while offset > 0 && !src.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = floor_boundary(src, offset);
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl TextError {
    /// A colour-free, dependency-free rendering: message, `line:column`, the
    /// source line and a caret under the offending token.
    pub fn render_plain(&self) -> String {
        let src = self.src.inner();
        let start = floor_boundary(src, self.span.offset());
        let line_start = src[..start].rfind('\n').map(|i| i + 1).unwrap_or(0);
        let line_end = src[start..]
            .find('\n')
            .map(|i| start + i)
            .unwrap_or(src.len());
        let text = &src[line_start..line_end];
        let width = self.span.len().min(line_end.saturating_sub(start)).max(1);
        let carets = src
            .get(start..floor_boundary(src, start + width))
            .map(|s| s.chars().count().max(1))
            .unwrap_or(1);
        let gutter = self.line.to_string().len();
        format!(
            "error: {}\n{:gutter$}--> {}:{}\n{:gutter$} |\n{} | {}\n{:gutter$} | {}{} {}\n",
            self.message,
            "",
            self.line,
            self.column,
            "",
            self.line,
            text,
            "",
            " ".repeat(self.column.saturating_sub(1)),
            "^".repeat(carets),
            self.label,
        )
    }
}
