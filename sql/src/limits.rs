//! Bounds on what one statement may ask of the server.
//!
//! Everything here is checked before a statement is parsed into a syntax tree, so a hostile
//! statement costs one pass over its text and is refused in milliseconds, with an error a
//! client can read, instead of holding a core and gigabytes of memory while it is planned.
//! The checks are:
//!
//! - the length of the statement text ([`StatementLimits::text_bytes_max`]);
//! - placeholder numbers: `$n` with `n` ≤ [`PARAMETER_NUMBER_MAX`], as in PostgreSQL, so no
//!   placeholder number can size an allocation;
//! - the longest chain of operators in one expression
//!   ([`StatementLimits::expression_depth_max`]). The SQL parser builds `a + b + … + z` (and
//!   `AND` / `OR` chains, `::` casts …) in a loop, so nothing bounds the depth of the tree it
//!   makes, and every later pass (planning, optimising, dropping the tree) walks that depth.
//!   Nesting by parentheses and subqueries is bounded by the parser's own recursion limit.
//!
//! This module owns the limits and their errors; it does not recognise statements.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{EngineError, ErrorKind};

/// The largest placeholder number (`$65535`), as PostgreSQL: a Bind message counts its
/// parameters in 16 bits.
pub const PARAMETER_NUMBER_MAX: usize = 65_535;

/// Limits on one statement; each is a server setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementLimits {
    /// The longest statement text accepted, in bytes (`max_statement_bytes`).
    pub text_bytes_max: usize,
    /// The most operators one expression may chain (`max_expression_depth`).
    pub expression_depth_max: usize,
}

impl Default for StatementLimits {
    fn default() -> Self {
        Self {
            text_bytes_max: 4 * 1024 * 1024,
            // DataFusion's planning time grows faster than linearly with the depth of an
            // expression (a 1 000-operator chain takes about a second in a release build, 2 000
            // several), and its recursion needs stack in proportion: so the bound is far below
            // what PostgreSQL accepts, and well above what generated SQL chains in practice.
            expression_depth_max: 1_000,
        }
    }
}

impl StatementLimits {
    /// Refuses a text longer than the limit, before anything else reads it.
    pub fn check_text(&self, sql: &str) -> Result<(), EngineError> {
        if sql.len() > self.text_bytes_max {
            return Err(EngineError::new(
                ErrorKind::ProgramLimitExceeded,
                format!(
                    "statement is too long: {} bytes, the limit is {} (setting max_statement_bytes)",
                    sql.len(),
                    self.text_bytes_max
                ),
            ));
        }
        Ok(())
    }

    /// Checks the placeholders and operator chains of one statement's tokens.
    pub(crate) fn check_tokens<'a>(
        &self,
        tokens: impl IntoIterator<Item = &'a Token>,
    ) -> Result<(), EngineError> {
        // One counter per level of parentheses or brackets: operators seen since the last
        // point where a new expression starts at that level.
        let mut chains: Vec<usize> = vec![0];
        for token in tokens {
            match token {
                Token::Placeholder(text) => check_placeholder(text)?,
                Token::LParen | Token::LBracket | Token::LBrace => chains.push(0),
                Token::RParen | Token::RBracket | Token::RBrace => {
                    if chains.len() > 1 {
                        chains.pop();
                    }
                }
                Token::Comma | Token::SemiColon => reset(&mut chains),
                Token::Word(word) if word.quote_style.is_none() => {
                    if starts_expression(word.keyword) {
                        reset(&mut chains);
                    } else if chains_expression(word.keyword) {
                        self.count(&mut chains)?;
                    }
                }
                token if is_operator(token) => self.count(&mut chains)?,
                _ => {}
            }
        }
        Ok(())
    }

    fn count(&self, chains: &mut [usize]) -> Result<(), EngineError> {
        let Some(current) = chains.last_mut() else {
            return Ok(());
        };
        *current += 1;
        if *current > self.expression_depth_max {
            return Err(EngineError::new(
                ErrorKind::StatementTooComplex,
                format!(
                    "stack depth limit exceeded: an expression chains more than {} operators \
                     (setting max_expression_depth)",
                    self.expression_depth_max
                ),
            ));
        }
        Ok(())
    }
}

fn reset(chains: &mut [usize]) {
    if let Some(current) = chains.last_mut() {
        *current = 0;
    }
}

/// `$n` must name a parameter PostgreSQL could bind: 1 ≤ n ≤ 65 535.
fn check_placeholder(text: &str) -> Result<(), EngineError> {
    let Some(digits) = text.strip_prefix('$') else {
        // `?` (Flight SQL clients) and named placeholders are numbered by position.
        return Ok(());
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        // A named placeholder (`$name`) is the planner's to judge.
        return Ok(());
    }
    let number = (digits.len() <= 5)
        .then(|| digits.parse::<usize>().ok())
        .flatten();
    if number.is_some_and(|n| (1..=PARAMETER_NUMBER_MAX).contains(&n)) {
        return Ok(());
    }
    let shown: String = digits.chars().take(20).collect();
    Err(EngineError::new(
        ErrorKind::UndefinedParameter,
        format!(
            "there is no parameter ${shown}: parameters are numbered $1 to ${PARAMETER_NUMBER_MAX}"
        ),
    ))
}

/// Keywords after which a new expression begins, so the chain before them has ended.
fn starts_expression(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::SELECT
            | Keyword::FROM
            | Keyword::WHERE
            | Keyword::GROUP
            | Keyword::HAVING
            | Keyword::ORDER
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::CASE
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::END
            | Keyword::VALUES
            | Keyword::ON
            | Keyword::USING
            | Keyword::JOIN
            | Keyword::UNION
            | Keyword::INTERSECT
            | Keyword::EXCEPT
            | Keyword::SET
            | Keyword::RETURNING
            | Keyword::AS
    )
}

/// Keywords that join two operands into one deeper expression.
fn chains_expression(keyword: Keyword) -> bool {
    matches!(
        keyword,
        Keyword::AND
            | Keyword::OR
            | Keyword::IS
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::SIMILAR
            | Keyword::BETWEEN
            | Keyword::IN
            | Keyword::COLLATE
            | Keyword::AT
    )
}

/// Symbols the parser folds into a deeper tree (infix and postfix operators).
fn is_operator(token: &Token) -> bool {
    !matches!(
        token,
        Token::EOF
            | Token::Word(_)
            | Token::Number(..)
            | Token::Char(_)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::Whitespace(_)
            | Token::Placeholder(_)
            | Token::Period
            | Token::Colon
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statement::split;

    fn check(sql: &str, limits: &StatementLimits) -> Result<(), EngineError> {
        limits.check_text(sql)?;
        for statement in split(sql)? {
            limits.check_tokens(statement.token_list())?;
        }
        Ok(())
    }

    fn chain(terms: usize, operator: &str) -> String {
        format!("SELECT {}", vec!["1"; terms].join(operator))
    }

    #[test]
    fn placeholder_numbers_are_bounded_as_in_postgresql() {
        let limits = StatementLimits::default();
        assert!(check("SELECT $1, $65535", &limits).is_ok());
        for bad in [
            "SELECT $2000000000",
            "SELECT $65536",
            "SELECT $0",
            "SELECT $99999999999999999999999",
        ] {
            let err = check(bad, &limits).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::UndefinedParameter, "{bad}");
            assert!(err.message().contains("there is no parameter $"), "{err}");
        }
    }

    #[test]
    fn a_long_operator_chain_is_refused_and_a_long_list_is_not() {
        let limits = StatementLimits {
            expression_depth_max: 100,
            ..Default::default()
        };
        assert!(check(&chain(101, " + "), &limits).is_ok());
        for operator in [" + ", " || ", " AND ", " OR ", "::"] {
            let err = check(&chain(102, operator), &limits).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::StatementTooComplex, "{operator}");
        }
        // Lists and separate clauses do not chain.
        let list = format!("SELECT x IN ({}) FROM t", vec!["1"; 500].join(", "));
        assert!(check(&list, &limits).is_ok());
        let columns = vec!["a + b"; 500].join(", ");
        assert!(check(&format!("SELECT {columns} FROM t"), &limits).is_ok());
        let cases = vec!["WHEN a = 1 THEN 2"; 200].join(" ");
        assert!(check(&format!("SELECT CASE {cases} END FROM t"), &limits).is_ok());
    }

    #[test]
    fn text_longer_than_the_limit_is_refused_before_it_is_read() {
        let limits = StatementLimits {
            text_bytes_max: 10,
            ..Default::default()
        };
        assert!(check("SELECT 1", &limits).is_ok());
        let err = check("SELECT 1 + 1", &limits).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ProgramLimitExceeded);
        assert!(err.message().contains("max_statement_bytes"), "{err}");
    }
}
