//! Rewrites of PostgreSQL syntax clients send in catalog queries that DataFusion does not
//! plan, applied to the parsed statement before planning.
//!
//! - `x LIKE p ESCAPE 'c'` (SQLAlchemy escapes with `/`): DataFusion only accepts a backslash,
//!   so the pattern becomes `pg_like_escape(p, 'c')`, which re-escapes it with backslashes.
//! - `generate_subscripts(a, 1)` (SQLAlchemy's index and constraint reflection, next to
//!   `unnest(a)`): a set-returning function DataFusion lacks; it becomes
//!   `unnest(pg_array_subscripts(a, 1))`, which DataFusion zips with the other `unnest` as
//!   PostgreSQL does.
//! - A correlated scalar subquery that is not an aggregate (`(SELECT typcollation FROM pg_type
//!   WHERE oid = a.atttypid)`, SQLAlchemy's column reflection): DataFusion only decorrelates
//!   aggregates, so its one column becomes `first_value(column)`. PostgreSQL would fail if such
//!   a subquery found several rows; catalog lookups by key find at most one.
//! - `CASE WHEN c THEN (scalar subquery) [ELSE NULL] END`: DataFusion does not decorrelate a
//!   subquery in a CASE branch, so it becomes `pg_when(c, (subquery))`, which is NULL where
//!   `c` is not true. The subquery is then computed for every row (as a join), not only where
//!   `c` holds; it has no side effects, so only the work differs. When the subquery repeats
//!   `c` in its WHERE (SQLAlchemy does), that copy is dropped: a predicate on outer columns
//!   alone stops DataFusion's decorrelation, and `pg_when` already applies it.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, ObjectName, Query, SelectItem,
    SetExpr, Statement, Value,
};

/// Aggregate functions clients use in scalar subqueries; a subquery computing one of them
/// needs no rewrite.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "first_value",
    "last_value",
];

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
                vec![
                    original,
                    Expr::value(Value::SingleQuotedString(escape_text)),
                ],
            );
        }
        Expr::Subquery(query) => aggregate_scalar_subquery(query),
        Expr::Case {
            operand: None,
            conditions,
            else_result,
            ..
        } if conditions.len() == 1
            && is_subquery(&conditions[0].result)
            && else_result.as_deref().is_none_or(is_null) =>
        {
            let mut when = conditions.remove(0);
            drop_repeated_condition(&mut when.result, &when.condition);
            *expr = call("pg_when", vec![when.condition, when.result]);
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

/// Wraps the one column of a filtered, ungrouped, unordered scalar subquery in `first_value`.
fn aggregate_scalar_subquery(query: &mut Query) {
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if !ungrouped
        || select.having.is_some()
        || select.selection.is_none()
        || select.distinct.is_some()
        || select.projection.len() != 1
    {
        return;
    }
    let column = match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) => e,
        SelectItem::ExprWithAlias { expr, .. } => expr,
        _ => return,
    };
    if let Expr::Function(f) = column {
        if AGGREGATES.iter().any(|name| is_named(f, name)) {
            return;
        }
    }
    let original = std::mem::replace(column, Expr::value(Value::Null));
    *column = call("first_value", vec![original]);
}

/// Removes the conjuncts equal to `condition` from the WHERE of subquery `result`.
fn drop_repeated_condition(result: &mut Expr, condition: &Expr) {
    let query = match result {
        Expr::Subquery(query) => query,
        Expr::Nested(inner) => return drop_repeated_condition(inner, condition),
        _ => return,
    };
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let Some(selection) = select.selection.take() else {
        return;
    };
    let condition = unnested(condition);
    let mut kept = Vec::new();
    split_conjuncts(selection, &mut kept);
    kept.retain(|c| unnested(c) != condition);
    select.selection = kept.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    });
}

fn split_conjuncts(expr: Expr, out: &mut Vec<Expr>) {
    match expr {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            split_conjuncts(*left, out);
            split_conjuncts(*right, out);
        }
        other => out.push(other),
    }
}

fn unnested(expr: &Expr) -> &Expr {
    match expr {
        Expr::Nested(inner) => unnested(inner),
        other => other,
    }
}

fn is_subquery(expr: &Expr) -> bool {
    match expr {
        Expr::Subquery(_) => true,
        Expr::Nested(inner) => is_subquery(inner),
        _ => false,
    }
}

fn is_null(expr: &Expr) -> bool {
    matches!(expr, Expr::Value(v) if v.value == Value::Null)
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

    #[test]
    fn correlated_lookups_become_aggregates() {
        assert_eq!(
            rewritten("SELECT (SELECT t.x FROM t WHERE t.id = u.id) AS x FROM u"),
            "SELECT (SELECT first_value(t.x) FROM t WHERE t.id = u.id) AS x FROM u"
        );
        let unchanged = "SELECT (SELECT max(t.x) FROM t WHERE t.id = u.id) FROM u";
        assert_eq!(rewritten(unchanged), unchanged);
        assert_eq!(
            rewritten("SELECT CASE WHEN u.a THEN (SELECT t.x FROM t WHERE t.id = u.id) ELSE NULL END FROM u"),
            "SELECT pg_when(u.a, (SELECT first_value(t.x) FROM t WHERE t.id = u.id)) FROM u"
        );
        assert_eq!(
            rewritten("SELECT CASE WHEN (u.a != '') THEN (SELECT t.x FROM t WHERE u.a != '' AND t.id = u.id AND t.k = 1) END FROM u"),
            "SELECT pg_when((u.a <> ''), (SELECT first_value(t.x) FROM t WHERE t.id = u.id AND t.k = 1)) FROM u"
        );
        let ordered = "SELECT (SELECT t.x FROM t WHERE t.id = u.id ORDER BY t.y LIMIT 1) FROM u";
        assert_eq!(rewritten(ordered), ordered);
    }
}
