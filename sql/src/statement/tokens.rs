//! The one tokenisation of a request, and the cursor Freshet's own grammars read it with.
//!
//! A request (a simple-query string, a Parse message, a Flight command) is tokenised once by
//! sqlparser's tokenizer with PostgreSQL's dialect. [`split`] cuts the tokens at semicolons into
//! [`RawStatement`]s, each keeping its original text (what the catalog stores) and its
//! significant tokens with byte ranges in that text. Everything later — compatibility rules,
//! recognition, Freshet's grammars and sqlparser's own parser — reads those tokens; the text is
//! tokenised again only when a compatibility rule rewrote it.

use std::collections::BTreeMap;
use std::ops::Range;

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Location, Span, Token, TokenWithSpan, Tokenizer};

use crate::error::EngineError;

/// A significant token (no whitespace, comment or semicolon) with its byte range.
#[derive(Debug, Clone)]
pub struct Tok {
    pub token: Token,
    /// The tokenizer's line/column span, for sqlparser's error positions.
    pub span: Span,
    /// Byte offsets in the statement's text.
    pub start: usize,
    pub end: usize,
}

/// One statement of a request: its text and its tokens.
#[derive(Debug, Clone)]
pub struct RawStatement {
    /// The statement as the client wrote it, trimmed, without the semicolon.
    pub text: String,
    /// Where the text is in the request (bytes).
    pub span: Range<usize>,
    /// Significant tokens; byte offsets are relative to `text`.
    pub tokens: Vec<Tok>,
}

impl RawStatement {
    /// Tokenises one statement's text (used when a rule rewrote it, and for statements that
    /// come as one text, such as a stored view). A text of several statements is refused.
    pub fn from_text(text: &str) -> Result<Self, EngineError> {
        let mut statements = split(text)?;
        match statements.len() {
            0 => Ok(Self {
                text: String::new(),
                span: 0..0,
                tokens: Vec::new(),
            }),
            1 => Ok(statements.remove(0)),
            n => Err(EngineError::syntax(format!(
                "expected one statement, found {n}"
            ))),
        }
    }

    /// Whether the statement has no tokens (only comments or whitespace).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The bare tokens.
    pub fn token_list(&self) -> impl Iterator<Item = &Token> {
        self.tokens.iter().map(|t| &t.token)
    }

    /// Whether an unquoted word with this (case-insensitive) value appears anywhere.
    pub fn has_word(&self, word: &str) -> bool {
        self.tokens.iter().any(
            |t| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word)),
        )
    }

    /// sqlparser's parser over these tokens (from token `from` on).
    pub fn sqlparser(&self, from: usize) -> Parser<'static> {
        static DIALECT: PostgreSqlDialect = PostgreSqlDialect {};
        Parser::new(&DIALECT).with_tokens_with_locations(self.tokens_with_spans(from))
    }

    /// The tokens in sqlparser's form, from token `from` on.
    pub fn tokens_with_spans(&self, from: usize) -> Vec<TokenWithSpan> {
        self.tokens
            .get(from..)
            .unwrap_or_default()
            .iter()
            .map(|t| TokenWithSpan {
                token: t.token.clone(),
                span: t.span,
            })
            .collect()
    }
}

fn tokenize(sql: &str) -> Result<Vec<TokenWithSpan>, EngineError> {
    let dialect = PostgreSqlDialect {};
    Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| EngineError::syntax(e.to_string()))
}

/// Turns tokenizer locations (1-based line and character column) into byte offsets, walking
/// forward from the last location asked: tokens come in order, so a whole request costs one
/// pass over its text (asking each location from the start of its line would be quadratic on
/// a long one-line statement).
struct Locator<'a> {
    sql: &'a str,
    line: u64,
    column: u64,
    byte: usize,
}

impl<'a> Locator<'a> {
    fn new(sql: &'a str) -> Self {
        Self {
            sql,
            line: 1,
            column: 1,
            byte: 0,
        }
    }

    fn offset(&mut self, location: Location) -> usize {
        if (location.line, location.column) < (self.line, self.column) {
            // Not expected (locations only grow); start again from the beginning.
            *self = Self::new(self.sql);
        }
        let mut chars = self.sql[self.byte..].chars();
        while (self.line, self.column) < (location.line, location.column) {
            let Some(c) = chars.next() else {
                return self.sql.len();
            };
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.byte
    }
}

/// Tokenises `sql` once and cuts it into statements at semicolons (the tokenizer has already
/// kept semicolons inside strings, comments and dollar quotes). Empty statements are dropped.
pub fn split(sql: &str) -> Result<Vec<RawStatement>, EngineError> {
    let tokens = tokenize(sql)?;
    let mut locator = Locator::new(sql);
    let mut statements = Vec::new();
    let mut current: Vec<(Token, Span, usize, usize)> = Vec::new();
    for token in tokens {
        match token.token {
            Token::SemiColon => push_statement(sql, std::mem::take(&mut current), &mut statements),
            Token::EOF | Token::Whitespace(_) => {}
            other => {
                let start = locator.offset(token.span.start);
                let end = locator.offset(token.span.end).max(start);
                current.push((other, token.span, start, end));
            }
        }
    }
    push_statement(sql, current, &mut statements);
    Ok(statements)
}

fn push_statement(
    sql: &str,
    tokens: Vec<(Token, Span, usize, usize)>,
    out: &mut Vec<RawStatement>,
) {
    let (Some(first), Some(last)) = (tokens.first(), tokens.last()) else {
        return;
    };
    let (from, to) = (first.2, last.3);
    out.push(RawStatement {
        text: sql[from..to].to_string(),
        span: from..to,
        tokens: tokens
            .into_iter()
            .map(|(token, span, start, end)| Tok {
                token,
                span,
                start: start - from,
                end: end - from,
            })
            .collect(),
    });
}

/// Reads a statement's tokens for Freshet's own grammars (sessions, sources, streams, models).
pub(crate) struct Cursor<'a> {
    raw: &'a RawStatement,
    at: usize,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(raw: &'a RawStatement) -> Self {
        Self { raw, at: 0 }
    }

    /// The upper-cased unquoted word `offset` tokens ahead.
    pub(crate) fn peek_keyword(&self, offset: usize) -> Option<String> {
        match self.raw.tokens.get(self.at + offset).map(|t| &t.token) {
            Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
            _ => None,
        }
    }

    /// Whether the statement (from the cursor) starts with these keywords; reads nothing.
    pub(crate) fn looking_at(&self, keywords: &[&str]) -> bool {
        keywords
            .iter()
            .enumerate()
            .all(|(i, k)| self.peek_keyword(i).as_deref() == Some(*k))
    }

    pub(crate) fn keyword(&mut self, keyword: &str) -> bool {
        if self.peek_keyword(0).as_deref() == Some(keyword) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    pub(crate) fn keywords(&mut self, keywords: &[&str]) -> bool {
        let matches = self.looking_at(keywords);
        if matches {
            self.at += keywords.len();
        }
        matches
    }

    pub(crate) fn expect_keyword(
        &mut self,
        keyword: &str,
        context: &str,
    ) -> Result<(), EngineError> {
        if self.keyword(keyword) {
            Ok(())
        } else {
            Err(self.error(format!(
                "expected {keyword} {context}, found {}",
                self.describe_next()
            )))
        }
    }

    /// A syntax error at the next token's position.
    pub(crate) fn error(&self, message: impl Into<String>) -> EngineError {
        let message = message.into();
        match self.raw.tokens.get(self.at) {
            Some(t) => EngineError::syntax(format!(
                "{message} at line {}, column {}",
                t.span.start.line, t.span.start.column
            )),
            None => EngineError::syntax(message),
        }
    }

    pub(crate) fn describe_next(&self) -> String {
        match self.token() {
            Some(token) => format!("'{token}'"),
            None => "the end of the statement".to_string(),
        }
    }

    pub(crate) fn token(&self) -> Option<&'a Token> {
        self.raw.tokens.get(self.at).map(|t| &t.token)
    }

    /// Moves past one token.
    pub(crate) fn skip(&mut self) {
        if self.at < self.raw.tokens.len() {
            self.at += 1;
        }
    }

    pub(crate) fn next_is(&self, token: &Token) -> bool {
        self.token() == Some(token)
    }

    pub(crate) fn done(&self) -> bool {
        self.at >= self.raw.tokens.len()
    }

    pub(crate) fn expect_end(&self, statement: &str) -> Result<(), EngineError> {
        if self.done() {
            Ok(())
        } else {
            Err(self.error(format!(
                "unexpected {} at the end of {statement}",
                self.describe_next()
            )))
        }
    }

    /// A possibly qualified name, as written (unquoted parts lower-cased).
    pub(crate) fn name(&mut self, what: &str) -> Result<String, EngineError> {
        let mut parts = Vec::new();
        loop {
            match self.token() {
                Some(Token::Word(w)) => {
                    parts.push(if w.quote_style.is_some() {
                        w.value.clone()
                    } else {
                        w.value.to_ascii_lowercase()
                    });
                    self.at += 1;
                }
                _ => {
                    return Err(
                        self.error(format!("expected {what}, found {}", self.describe_next()))
                    )
                }
            }
            if self.next_is(&Token::Period) {
                self.at += 1;
            } else {
                return Ok(parts.join("."));
            }
        }
    }

    /// The text from the current token to the end of the statement.
    pub(crate) fn rest_text(&self) -> String {
        match self.raw.tokens.get(self.at) {
            Some(t) => self.raw.text[t.start..].trim().to_string(),
            None => String::new(),
        }
    }

    /// `( key = value, … )`: keys may be dotted or quoted; values strings, numbers or words.
    pub(crate) fn options(&mut self) -> Result<BTreeMap<String, String>, EngineError> {
        let mut options = BTreeMap::new();
        if !self.next_is(&Token::LParen) {
            return Err(self.error("expected ( after WITH"));
        }
        self.at += 1;
        loop {
            if self.next_is(&Token::RParen) {
                self.at += 1;
                return Ok(options);
            }
            let mut key = String::new();
            loop {
                match self.token() {
                    Some(Token::Word(w)) => key.push_str(&w.value.to_ascii_lowercase()),
                    Some(Token::SingleQuotedString(s)) => key.push_str(&s.to_ascii_lowercase()),
                    _ => {
                        return Err(self.error(format!(
                            "expected an option name, found {}",
                            self.describe_next()
                        )))
                    }
                }
                self.at += 1;
                if self.next_is(&Token::Period) {
                    key.push('.');
                    self.at += 1;
                } else {
                    break;
                }
            }
            if !self.next_is(&Token::Eq) {
                return Err(self.error(format!("expected = after option {key}")));
            }
            self.at += 1;
            let mut value = String::new();
            if self.next_is(&Token::Minus) {
                value.push('-');
                self.at += 1;
            }
            match self.token() {
                Some(Token::SingleQuotedString(s)) | Some(Token::DoubleQuotedString(s)) => {
                    value.push_str(s)
                }
                Some(Token::Number(n, _)) => value.push_str(n),
                Some(Token::Word(w)) => value.push_str(&w.value),
                _ => {
                    return Err(self.error(format!(
                        "expected a value for option {key}, found {}",
                        self.describe_next()
                    )))
                }
            }
            self.at += 1;
            if options.insert(key.clone(), value).is_some() {
                return Err(self.error(format!("option {key} is given twice")));
            }
            if self.next_is(&Token::Comma) {
                self.at += 1;
            } else if !self.next_is(&Token::RParen) {
                return Err(self.error(format!(
                    "expected , or ) after option {key}, found {}",
                    self.describe_next()
                )));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<String> {
        split(sql).unwrap().into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn split_keeps_semicolons_inside_strings_and_comments() {
        let sql = "SELECT 'a;b' AS x; -- c;d\nSELECT $$e;f$$;\n\n;  ; SELECT 3";
        assert_eq!(
            texts(sql),
            vec!["SELECT 'a;b' AS x", "SELECT $$e;f$$", "SELECT 3"]
        );
    }

    #[test]
    fn split_handles_multibyte_text_and_lines() {
        let sql = "SELECT 'héllo';\nSELECT\n  'wörld' AS w";
        assert_eq!(texts(sql), vec!["SELECT 'héllo'", "SELECT\n  'wörld' AS w"]);
    }

    #[test]
    fn spans_point_into_the_request_and_tokens_into_the_statement() {
        let sql = "  SELECT 1 ;  SHOW  ALL";
        let statements = split(sql).unwrap();
        assert_eq!(&sql[statements[1].span.clone()], "SHOW  ALL");
        let all = &statements[1].tokens[1];
        assert_eq!(&statements[1].text[all.start..all.end], "ALL");
    }

    #[test]
    fn comment_only_text_has_no_statements() {
        assert!(split("-- nothing\n/* at all */ ;").unwrap().is_empty());
        assert!(RawStatement::from_text("  ").unwrap().is_empty());
        assert!(RawStatement::from_text("SELECT 1; SELECT 2").is_err());
    }
}
