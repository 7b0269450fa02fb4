//! Token-level rewrites of statement text, for the client syntaxes that are recognised before
//! parsing (Flink's window table functions, Grafana's search-path subquery): the statement is
//! cut into significant tokens with their byte ranges, matched, and edited in place, so the
//! rest of the text (and the positions in error messages) stays as the client wrote it.

use std::borrow::Cow;

use datafusion::sql::sqlparser::tokenizer::Token;

/// A significant token (no whitespace or comment) with its byte range in the statement.
pub(crate) struct Piece {
    pub(crate) token: Token,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

/// A replacement of `sql[start..end]`.
pub(crate) struct Edit {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) text: String,
}

/// The significant tokens of `sql`, or `None` when it does not tokenize (the parser then
/// reports the error).
pub(crate) fn significant_pieces(sql: &str) -> Option<Vec<Piece>> {
    let statements = crate::statement::split(sql).ok()?;
    let pieces = statements
        .into_iter()
        .flat_map(|statement| {
            let base = statement.span.start;
            statement.tokens.into_iter().map(move |t| Piece {
                token: t.token,
                start: base + t.start,
                end: base + t.end,
            })
        })
        .collect();
    Some(pieces)
}

/// `sql` with `edits` (in order, not overlapping) applied; borrowed when there are none.
pub(crate) fn apply_edits(sql: &str, edits: Vec<Edit>) -> Cow<'_, str> {
    if edits.is_empty() {
        return Cow::Borrowed(sql);
    }
    let mut text = String::with_capacity(sql.len());
    let mut copied = 0;
    for edit in edits {
        text.push_str(&sql[copied..edit.start]);
        text.push_str(&edit.text);
        copied = edit.end;
    }
    text.push_str(&sql[copied..]);
    Cow::Owned(text)
}

/// Whether `piece` is the unquoted word `keyword` (any letter case).
pub(crate) fn is_word(piece: Option<&Piece>, keyword: &str) -> bool {
    matches!(piece, Some(Piece { token: Token::Word(w), .. })
        if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// Whether `piece` is `token`.
pub(crate) fn is_token(piece: Option<&Piece>, token: &Token) -> bool {
    piece.is_some_and(|p| &p.token == token)
}
