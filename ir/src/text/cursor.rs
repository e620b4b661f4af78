//! Token cursor shared by the recursive-descent parsers.
//!
//! Contract: every accessor either consumes the expected token or returns a
//! [`TextError`] at the current token ("expected X, found Y"); at end of
//! input the span is the empty range at the end of the source. No method
//! panics.

use super::error::TextError;
use super::lexer::{lex, unquote, Spanned, Tok};
use std::ops::Range;

/// A position in a token stream.
pub(crate) struct Cursor<'s> {
    src: &'s str,
    toks: Vec<Spanned<'s>>,
    pos: usize,
}

impl<'s> Cursor<'s> {
    /// Lexes `src`.
    pub(crate) fn new(src: &'s str) -> Result<Self, TextError> {
        Ok(Cursor {
            src,
            toks: lex(src)?,
            pos: 0,
        })
    }

    /// The current token.
    pub(crate) fn peek(&self) -> Option<Tok<'s>> {
        self.toks.get(self.pos).map(|t| t.0)
    }

    /// The span of the current token (empty at end of input).
    pub(crate) fn span(&self) -> Range<usize> {
        self.toks
            .get(self.pos)
            .map(|t| t.1.clone())
            .unwrap_or(self.src.len()..self.src.len())
    }

    /// The end of the previous token.
    pub(crate) fn prev_end(&self) -> usize {
        self.pos
            .checked_sub(1)
            .and_then(|p| self.toks.get(p))
            .map(|t| t.1.end)
            .unwrap_or(0)
    }

    /// True at end of input.
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }

    /// Consumes the current token.
    pub(crate) fn bump(&mut self) -> Option<Spanned<'s>> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    /// An "expected X, found Y" error at the current token.
    pub(crate) fn expected(&self, what: &str) -> TextError {
        let found = match self.peek() {
            Some(t) => t.describe(),
            None => "end of input".to_string(),
        };
        TextError::new(
            self.src,
            self.span(),
            format!("expected {what}, found {found}"),
            format!("expected {what}"),
        )
    }

    /// An error with a custom message at `span`.
    pub(crate) fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> TextError {
        let message = message.into();
        let label = if message.len() <= 40 {
            message.clone()
        } else {
            "here".to_string()
        };
        TextError::new(self.src, span, message, label)
    }

    /// Consumes `tok` if it is next.
    pub(crate) fn eat(&mut self, tok: Tok<'_>) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes `tok` or fails.
    pub(crate) fn expect(&mut self, tok: Tok<'_>) -> Result<Range<usize>, TextError> {
        if self.peek() == Some(tok) {
            let span = self.span();
            self.pos += 1;
            Ok(span)
        } else {
            Err(self.expected(&tok.describe()))
        }
    }

    /// True if the next token is the identifier `kw`.
    pub(crate) fn at_keyword(&self, kw: &str) -> bool {
        self.peek() == Some(Tok::Ident(kw))
    }

    /// Consumes the identifier `kw` if it is next.
    pub(crate) fn eat_keyword(&mut self, kw: &str) -> bool {
        if self.at_keyword(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the identifier `kw` or fails.
    pub(crate) fn keyword(&mut self, kw: &str) -> Result<Range<usize>, TextError> {
        if self.at_keyword(kw) {
            let span = self.span();
            self.pos += 1;
            Ok(span)
        } else {
            Err(self.expected(&format!("`{kw}`")))
        }
    }

    /// Consumes an identifier.
    pub(crate) fn ident(&mut self, what: &str) -> Result<(&'s str, Range<usize>), TextError> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let span = self.span();
                self.pos += 1;
                Ok((s, span))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Consumes a string literal and unescapes it.
    pub(crate) fn string(&mut self, what: &str) -> Result<(String, Range<usize>), TextError> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let span = self.span();
                let value = unquote(s).map_err(|m| self.error_at(span.clone(), m))?;
                self.pos += 1;
                Ok((value, span))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Consumes a number token and returns its text.
    fn number_text(&mut self, what: &str) -> Result<(&'s str, Range<usize>), TextError> {
        match self.peek() {
            Some(Tok::Number(s)) => {
                let span = self.span();
                self.pos += 1;
                Ok((s, span))
            }
            _ => Err(self.expected(what)),
        }
    }

    /// Consumes a float (any number token).
    pub(crate) fn f64(&mut self, what: &str) -> Result<f64, TextError> {
        let (text, span) = self.number_text(what)?;
        text.parse::<f64>()
            .map_err(|_| self.error_at(span, format!("`{text}` is not a valid float")))
    }

    /// Consumes an integer of type `T` (no fraction or exponent).
    pub(crate) fn int<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, TextError> {
        let (text, span) = self.number_text(what)?;
        text.parse::<T>().map_err(|_| {
            self.error_at(
                span,
                format!("`{text}` is not a valid {what} (integer out of range?)"),
            )
        })
    }

    /// Consumes a value reference `%N`.
    pub(crate) fn value_ref(&mut self) -> Result<(u32, Range<usize>), TextError> {
        match self.peek() {
            Some(Tok::Value(n)) => {
                let span = self.span();
                self.pos += 1;
                Ok((n, span))
            }
            _ => Err(self.expected("a value `%N`")),
        }
    }

    /// Consumes `key =` (an identifier key followed by `=`).
    pub(crate) fn key(&mut self, key: &str) -> Result<(), TextError> {
        self.keyword(key)?;
        self.expect(Tok::Eq)?;
        Ok(())
    }
}
