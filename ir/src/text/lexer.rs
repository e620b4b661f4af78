//! The logos lexer shared by the tensor (`.tir`) and HE (`.he`) text forms.
//!
//! Contract: [`lex`] turns any `&str` into tokens with byte spans, or a
//! [`TextError`] pointing at the first byte that starts no token; it never
//! panics. Whitespace and `//` line comments are skipped. Numbers keep their
//! source text so the parser decides between integer and float and reads
//! floats back exactly (the printer writes Rust's shortest round-trip form,
//! including `-0.0`, `1e-7`, `inf`, `-inf` and `NaN`).

use super::error::TextError;
use logos::Logos;
use std::ops::Range;

/// A token of the text forms.
#[derive(Logos, Clone, Copy, Debug, PartialEq)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip r"//[^\n]*")]
pub enum Tok<'s> {
    /// A value reference `%N`.
    #[regex(r"%[0-9]+", |lex| lex.slice()[1..].parse::<u32>().ok())]
    Value(u32),
    /// A constant-pool reference `@N`.
    #[regex(r"@[0-9]+", |lex| lex.slice()[1..].parse::<u32>().ok())]
    Const(u32),
    /// An identifier or keyword.
    #[regex(r"[A-Za-z_][A-Za-z0-9_]*")]
    Ident(&'s str),
    /// A number, as written (integer, decimal, exponent, `inf`, `-inf`, `NaN`).
    #[regex(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")]
    #[token("inf", priority = 10)]
    #[token("-inf")]
    #[token("NaN", priority = 10)]
    Number(&'s str),
    /// A double-quoted string, with its quotes and escapes as written.
    #[regex(r#""([^"\\]|\\.)*""#)]
    Str(&'s str),
    /// `=`
    #[token("=")]
    Eq,
    /// `,`
    #[token(",")]
    Comma,
    /// `:`
    #[token(":")]
    Colon,
    /// `<`
    #[token("<")]
    Lt,
    /// `>`
    #[token(">")]
    Gt,
    /// `[`
    #[token("[")]
    LBracket,
    /// `]`
    #[token("]")]
    RBracket,
    /// `{`
    #[token("{")]
    LBrace,
    /// `}`
    #[token("}")]
    RBrace,
    /// `(`
    #[token("(")]
    LParen,
    /// `)`
    #[token(")")]
    RParen,
    /// `*`
    #[token("*")]
    Star,
    /// `+`
    #[token("+")]
    Plus,
}

impl Tok<'_> {
    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Value(n) => format!("value `%{n}`"),
            Tok::Const(n) => format!("constant `@{n}`"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Number(s) => format!("number `{s}`"),
            Tok::Str(s) => format!("string {s}"),
            Tok::Eq => "`=`".into(),
            Tok::Comma => "`,`".into(),
            Tok::Colon => "`:`".into(),
            Tok::Lt => "`<`".into(),
            Tok::Gt => "`>`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LParen => "`(`".into(),
            Tok::RParen => "`)`".into(),
            Tok::Star => "`*`".into(),
            Tok::Plus => "`+`".into(),
        }
    }
}

/// A token and its byte range in the source.
pub type Spanned<'s> = (Tok<'s>, Range<usize>);

/// Lexes the whole source.
pub fn lex(src: &str) -> Result<Vec<Spanned<'_>>, TextError> {
    let mut out = Vec::new();
    let mut lexer = Tok::lexer(src);
    while let Some(tok) = lexer.next() {
        let span = lexer.span();
        match tok {
            Ok(t) => out.push((t, span)),
            Err(()) => {
                let text = src.get(span.clone()).unwrap_or("");
                let message = if text.starts_with('"') {
                    "unterminated or malformed string".to_string()
                } else if text.starts_with('%') || text.starts_with('@') {
                    format!("malformed reference `{text}` (number too large?)")
                } else {
                    format!("unexpected character(s) `{}`", text.escape_debug())
                };
                return Err(TextError::new(src, span, message, "not a token"));
            }
        }
    }
    Ok(out)
}

/// Writes `s` as a double-quoted string with `\\`, `\"`, `\n`, `\t`, `\r`
/// and `\u{..}` (other control characters) escapes.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Reads back a string token written by [`quote`] (the token text includes
/// the quotes). Returns a message on a bad escape.
pub fn unquote(tok: &str) -> Result<String, String> {
    let inner = tok
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .ok_or_else(|| "string is not quoted".to_string())?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('0') => out.push('\0'),
            Some('u') => {
                if chars.next() != Some('{') {
                    return Err("expected `{` after `\\u`".into());
                }
                let mut hex = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some(h) if h.is_ascii_hexdigit() && hex.len() < 6 => hex.push(h),
                        _ => return Err("malformed `\\u{..}` escape".into()),
                    }
                }
                let code = u32::from_str_radix(&hex, 16).map_err(|_| "empty `\\u{}` escape")?;
                out.push(char::from_u32(code).ok_or("`\\u{..}` is not a character")?);
            }
            Some(other) => return Err(format!("unknown escape `\\{other}`")),
            None => return Err("string ends with a backslash".into()),
        }
    }
    Ok(out)
}

/// Formats a float so that it parses back to the same bits (up to NaN payload):
/// Rust's shortest round-trip `Debug` form.
pub fn fmt_f64(x: f64) -> String {
    format!("{x:?}")
}
