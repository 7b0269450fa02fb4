//! Rewrites of PostgreSQL syntax clients send in catalog queries that DataFusion does not
//! plan, applied to the parsed statement before planning.
//!
//! - `x LIKE p ESCAPE 'c'` (SQLAlchemy escapes with `/`): DataFusion only accepts a backslash,
//!   so the pattern becomes `pg_like_escape(p, 'c')`, which re-escapes it with backslashes.
//! - `generate_subscripts(a, 1)` (SQLAlchemy's index and constraint reflection, next to
//!   `unnest(a)`): a set-returning function DataFusion lacks; it becomes
//!   `unnest(pg_array_subscripts(a, 1))`, which DataFusion zips with the other `unnest` as
//!   PostgreSQL does.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, Statement, Value,
};

/// Applies every rewrite to `statement`.
pub(crate) fn rewrite(statement: &mut Statement) {
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr);
        ControlFlow::<()>::Continue(())
    });
}

fn rewrite_expr(expr: &mut Expr) {
    match expr {
        Expr::Like {
            pattern,
            escape_char,
            ..
        }
        | Expr::ILike {
            pattern,
            escape_char,
            ..
        } => {
            let Some(escape) = escape_char.take() else {
                return;
            };
            let escape_text = match &escape.value {
                Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            };
            if escape_text == "\\" {
                *escape_char = Some(escape);
                return;
            }
            let original = std::mem::replace(pattern.as_mut(), Expr::value(Value::Null));
            **pattern = call(
                "pg_like_escape",
                vec![original, Expr::value(Value::SingleQuotedString(escape_text))],
            );
        }
        Expr::Function(function) if is_named(function, "generate_subscripts") => {
            let inner = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("pg_array_subscripts")]),
                ..function.clone()
            });
            *expr = call("unnest", vec![inner]);
        }
        _ => {}
    }
}

fn is_named(function: &Function, name: &str) -> bool {
    function
        .name
        .0
        .last()
        .and_then(|part| part.as_ident())
        .is_some_and(|ident| ident.value.eq_ignore_ascii_case(name))
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        rewrite(&mut statements[0]);
        statements[0].to_string()
    }

    #[test]
    fn like_escape_becomes_a_backslash_pattern() {
        assert_eq!(
            rewritten("SELECT 1 WHERE a NOT LIKE 'pg' || '%' ESCAPE '/'"),
            "SELECT 1 WHERE a NOT LIKE pg_like_escape('pg' || '%', '/')"
        );
        assert_eq!(
            rewritten("SELECT 1 WHERE a LIKE 'x' ESCAPE '\\'"),
            "SELECT 1 WHERE a LIKE 'x' ESCAPE '\\'"
        );
    }

    #[test]
    fn generate_subscripts_becomes_unnest() {
        assert_eq!(
            rewritten("SELECT unnest(k), generate_subscripts(k, 1) FROM t"),
            "SELECT unnest(k), unnest(pg_array_subscripts(k, 1)) FROM t"
        );
    }
}
