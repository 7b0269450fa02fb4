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
//! - A scalar subquery whose WHERE has conjuncts on outer columns alone (`WHERE a.atthasdef AND
//!   d.adrelid = a.attrelid`): such a predicate stops DataFusion's decorrelation, so it moves
//!   out, `pg_when(a.atthasdef, (SELECT … WHERE d.adrelid = a.attrelid))`. Both are NULL where
//!   it is not true, as the subquery finds no row then.
//! - A scalar subquery whose select list reads outer columns (`(SELECT json_build_object('always',
//!   a.attidentity = 'a', 'start', s.seqstart) FROM pg_sequence s WHERE …)`, SQLAlchemy's
//!   identity options): DataFusion decorrelates only subqueries whose outer references are in
//!   their WHERE. The parts that read only the subquery's own tables are computed by the
//!   subquery, as fields of one struct, and the expression is rebuilt outside around them:
//!   `pg_when(S IS NOT NULL, json_build_object('always', a.attidentity = 'a', 'start',
//!   get_field(S, 'v0')))`. It stays NULL when the subquery finds no row.
//! - `CASE WHEN c THEN (scalar subquery) [ELSE NULL] END`: DataFusion does not decorrelate a
//!   subquery in a CASE branch, so it becomes `pg_when(c, (subquery))`, which is NULL where
//!   `c` is not true. The subquery is then computed for every row (as a join), not only where
//!   `c` holds; it has no side effects, so only the work differs.
//! - `CAST(x AS regclass)` of anything but a literal (Metabase casts `format('%I.%I', schema,
//!   table)`): `pg_regclass(x)`, which looks a name up in the catalog and keeps a number.
//!   Literals were already resolved by `datafusion-pg-catalog`'s rewrite.
//! - `ARRAY(subquery)` (psql's `\du` and `\d+`): DataFusion has no array constructor from a
//!   subquery. `ARRAY(SELECT f(x) FROM unnest(a) x)` becomes `array_transform(a, x -> f(x))`;
//!   any other becomes `coalesce((SELECT array_agg(e) …), [])`, empty rather than NULL when
//!   the subquery finds no row, as PostgreSQL's is.

use std::collections::HashSet;
use std::ops::ControlFlow;

use crate::compat::{self, ActiveRules};

use datafusion::sql::sqlparser::ast::{
    visit_expressions_mut, BinaryOperator, DataType, Expr, Function, FunctionArg, FunctionArgExpr,
    FunctionArgumentList, FunctionArguments, GroupByExpr, Ident, LambdaFunction,
    LambdaFunctionParameter, LambdaSyntax, ObjectName, OneOrManyWithParens, OrderByKind, Query,
    Select, SelectItem, SetExpr, Statement, TableFactor, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};

/// Aggregate functions clients use in scalar subqueries; a subquery computing one of them
/// needs no `first_value`.
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

/// The name hoisted parts of a subquery's select list are known by until they are replaced.
const HOISTED: &str = "__freshet_hoisted_";

/// Applies the rewrites whose rules are on (each arm below is one rule of
/// [`crate::compat::RULES`]) to `statement`.
pub(crate) fn rewrite(statement: &mut Statement, rules: &ActiveRules) {
    // Expressions are visited bottom-up: a subquery is rewritten before the CASE around it.
    let _ = visit_expressions_mut(statement, |expr| {
        rewrite_expr(expr, rules);
        ControlFlow::<()>::Continue(())
    });
}

fn rewrite_expr(expr: &mut Expr, rules: &ActiveRules) {
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
        } if rules.on(compat::LIKE_ESCAPE) => {
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
        Expr::Subquery(query) if rules.on(compat::CORRELATED_SCALAR_SUBQUERIES) => {
            if let Some(rewritten) = scalar_subquery(query) {
                *expr = rewritten;
            }
        }
        Expr::Case {
            operand: None,
            conditions,
            else_result,
            ..
        } if rules.on(compat::CASE_SUBQUERY)
            && conditions.len() == 1
            && contains_subquery(&conditions[0].result)
            && else_result.as_deref().is_none_or(is_null) =>
        {
            let when = conditions.remove(0);
            *expr = call("pg_when", vec![when.condition, when.result]);
        }
        // `current_role` is a keyword like `current_user`, which the parser does not know:
        // it would be read as a column.
        Expr::Identifier(ident)
            if rules.on(compat::CURRENT_ROLE)
                && ident.quote_style.is_none()
                && ident.value.eq_ignore_ascii_case("current_role") =>
        {
            *expr = call("current_role", vec![]);
        }
        // `'\x0102'::bytea` is hex in PostgreSQL; DataFusion's cast would keep the text's bytes.
        Expr::Cast {
            data_type: DataType::Bytea,
            expr: value,
            ..
        } if rules.on(compat::BYTEA_HEX_LITERAL)
            && matches!(value.as_ref(), Expr::Value(v)
            if matches!(&v.value, Value::SingleQuotedString(text) if text.starts_with("\\x"))) =>
        {
            let Expr::Value(v) = value.as_ref() else {
                return;
            };
            let Value::SingleQuotedString(text) = &v.value else {
                return;
            };
            let hex = text[2..].to_string();
            *expr = call(
                "decode",
                vec![
                    Expr::value(Value::SingleQuotedString(hex)),
                    Expr::value(Value::SingleQuotedString("hex".to_string())),
                ],
            );
        }
        Expr::Cast {
            data_type: DataType::Regclass,
            expr: value,
            ..
        } if rules.on(compat::REGCLASS_CAST) => {
            let value = std::mem::replace(value.as_mut(), Expr::value(Value::Null));
            *expr = call("pg_regclass", vec![value]);
        }
        Expr::Function(function)
            if rules.on(compat::GENERATE_SUBSCRIPTS)
                && is_named(function, "generate_subscripts") =>
        {
            let inner = Expr::Function(Function {
                name: ObjectName::from(vec![Ident::new("pg_array_subscripts")]),
                ..function.clone()
            });
            *expr = call("unnest", vec![inner]);
        }
        Expr::Function(function)
            if rules.on(compat::ARRAY_SUBQUERY) && is_named(function, "array") =>
        {
            if let FunctionArguments::Subquery(query) = &function.args {
                if let Some(rewritten) = array_of_subquery(query) {
                    *expr = rewritten;
                }
            }
        }
        _ => {}
    }
}

/// A plain `SELECT e FROM … WHERE …` with one column, no grouping, ordering or limit: the
/// shape of the catalog lookups clients write as scalar subqueries.
fn plain_select(query: &mut Query) -> Option<&mut Select> {
    if query.with.is_some()
        || query.order_by.is_some()
        || query.limit_clause.is_some()
        || query.fetch.is_some()
    {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    let ungrouped = matches!(&select.group_by, GroupByExpr::Expressions(e, _) if e.is_empty());
    if !ungrouped
        || select.having.is_some()
        || select.distinct.is_some()
        || select.projection.len() != 1
    {
        return None;
    }
    Some(select)
}

fn selected(select: &mut Select) -> Option<&mut Expr> {
    match &mut select.projection[0] {
        SelectItem::UnnamedExpr(e) => Some(e),
        SelectItem::ExprWithAlias { expr, .. } => Some(expr),
        _ => None,
    }
}

/// Rewrites a scalar subquery into a form DataFusion decorrelates (see the module doc).
/// Returns the expression to put in its place, or `None` when the subquery itself stays
/// (possibly changed in place).
fn scalar_subquery(query: &mut Query) -> Option<Expr> {
    let select = plain_select(query)?;
    let own = own_names(select);
    let lifted = lift_outer_conjuncts(select, &own);
    let column = selected(select)?;
    let replacement = if references(column, &own).outer {
        hoist_outer_references(query, &own)
    } else {
        if select_has_filter(query) && !contains_aggregate(selected_of(query)?) {
            let column = selected_of(query)?;
            let original = std::mem::replace(column, Expr::value(Value::Null));
            *column = call("first_value", vec![original]);
        }
        None
    };
    if lifted.is_empty() {
        return replacement;
    }
    let inner = replacement.unwrap_or_else(|| Expr::Subquery(Box::new(query.clone())));
    Some(call("pg_when", vec![and_all(lifted), inner]))
}

fn select_has_filter(query: &Query) -> bool {
    matches!(query.body.as_ref(), SetExpr::Select(s) if s.selection.is_some())
}

fn selected_of(query: &mut Query) -> Option<&mut Expr> {
    match query.body.as_mut() {
        SetExpr::Select(select) => selected(select),
        _ => None,
    }
}

/// Removes from the WHERE of `select` the conjuncts that read outer columns only, and returns
/// them.
fn lift_outer_conjuncts(select: &mut Select, own: &HashSet<String>) -> Vec<Expr> {
    let Some(selection) = select.selection.take() else {
        return Vec::new();
    };
    let mut conjuncts = Vec::new();
    split_conjuncts(selection, &mut conjuncts);
    let (lifted, kept): (Vec<Expr>, Vec<Expr>) = conjuncts.into_iter().partition(|c| {
        let found = references(c, own);
        found.outer && !found.inner && !contains_subquery(c)
    });
    select.selection = and_all_opt(kept);
    lifted
}

/// Replaces a subquery whose select list reads outer columns by the expression rebuilt
/// outside it around the parts it computes (see the module doc).
fn hoist_outer_references(query: &mut Query, own: &HashSet<String>) -> Option<Expr> {
    let mut rebuilt = selected_of(query)?.clone();
    if contains_subquery(&rebuilt) {
        return None;
    }
    let mut hoister = Hoister {
        own,
        parts: Vec::new(),
    };
    let _ = VisitMut::visit(&mut rebuilt, &mut hoister);
    let mut parts = hoister.parts;
    let aggregated = parts.iter().any(contains_aggregate);
    if parts.is_empty() {
        // Nothing of the subquery's own is read: it only says whether a row exists.
        parts.push(Expr::value(Value::Boolean(true)));
    }
    let mut fields = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        fields.push(text_literal(&format!("v{i}")));
        fields.push(part);
    }
    let mut record = call("named_struct", fields);
    if !aggregated {
        record = call("first_value", vec![record]);
    }
    *selected_of(query)? = record;
    let subquery = Expr::Subquery(Box::new(query.clone()));
    let _ = visit_expressions_mut(&mut rebuilt, |e| {
        if let Expr::Identifier(ident) = e {
            if let Some(i) = ident.value.strip_prefix(HOISTED) {
                *e = call(
                    "get_field",
                    vec![subquery.clone(), text_literal(&format!("v{i}"))],
                );
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if aggregated {
        // An aggregate subquery always has one row.
        return Some(rebuilt);
    }
    let found = Expr::IsNotNull(Box::new(subquery));
    Some(call("pg_when", vec![found, rebuilt]))
}

/// Replaces, top-down, each largest part of an expression that reads the subquery's own
/// columns (or aggregates its rows) and no outer column by a placeholder, collecting the
/// parts.
struct Hoister<'a> {
    own: &'a HashSet<String>,
    parts: Vec<Expr>,
}

impl VisitorMut for Hoister<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let found = references(expr, self.own);
        if (found.inner || contains_aggregate(expr)) && !found.outer {
            let placeholder =
                Expr::Identifier(Ident::new(format!("{HOISTED}{}", self.parts.len())));
            self.parts.push(std::mem::replace(expr, placeholder));
        }
        ControlFlow::Continue(())
    }
}

/// The names the subquery's own tables are known by: their aliases, or the last part of their
/// names.
fn own_names(select: &Select) -> HashSet<String> {
    let mut names = HashSet::new();
    for table in &select.from {
        for factor in
            std::iter::once(&table.relation).chain(table.joins.iter().map(|j| &j.relation))
        {
            let alias = match factor {
                TableFactor::Table { name, alias, .. } => match alias {
                    Some(alias) => Some(alias.name.value.clone()),
                    None => name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.clone()),
                },
                TableFactor::Derived { alias, .. }
                | TableFactor::TableFunction { alias, .. }
                | TableFactor::Function { alias, .. }
                | TableFactor::UNNEST { alias, .. }
                | TableFactor::NestedJoin { alias, .. } => {
                    alias.as_ref().map(|a| a.name.value.clone())
                }
                _ => None,
            };
            if let Some(alias) = alias {
                names.insert(alias.to_ascii_lowercase());
            }
        }
    }
    names
}

/// Which columns an expression reads: the subquery's own (`inner`, unqualified ones included)
/// and outer ones (`outer`, qualified by a name the subquery does not define).
#[derive(Default)]
struct References {
    inner: bool,
    outer: bool,
}

fn references(expr: &Expr, own: &HashSet<String>) -> References {
    struct Collect<'a> {
        own: &'a HashSet<String>,
        found: References,
    }
    impl Visitor for Collect<'_> {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(ident) if !ident.value.starts_with(HOISTED) => {
                    self.found.inner = true
                }
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    let qualifier = parts[parts.len() - 2].value.to_ascii_lowercase();
                    if self.own.contains(&qualifier) {
                        self.found.inner = true;
                    } else {
                        self.found.outer = true;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut collect = Collect {
        own,
        found: References::default(),
    };
    let _ = expr.visit(&mut collect);
    collect.found
}

/// Rewrites `ARRAY(subquery)` (see the module doc).
fn array_of_subquery(query: &Query) -> Option<Expr> {
    let mut query = query.clone();
    let order_by = query.order_by.take();
    if query.with.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return None;
    }
    let SetExpr::Select(select) = query.body.as_mut() else {
        return None;
    };
    if select.projection.len() != 1 || select.distinct.is_some() {
        return None;
    }
    let element = selected(select)?.clone();
    if order_by.is_none() {
        if let Some(mapped) = mapped_unnest(select, &element) {
            return Some(mapped);
        }
    }
    let mut aggregate = call("array_agg", vec![element.clone()]);
    if let (Some(order_by), Expr::Function(function)) = (order_by, &mut aggregate) {
        let OrderByKind::Expressions(mut keys) = order_by.kind else {
            return None;
        };
        for key in &mut keys {
            // `ORDER BY 1` names the one selected column.
            if matches!(&key.expr, Expr::Value(v) if v.value == Value::Number("1".into(), false)) {
                key.expr = element.clone();
            }
        }
        if let FunctionArguments::List(list) = &mut function.args {
            list.clauses
                .push(datafusion::sql::sqlparser::ast::FunctionArgumentClause::OrderBy(keys));
        }
    }
    *selected(select)? = aggregate;
    let empty = call("make_array", vec![]);
    Some(call(
        "coalesce",
        vec![Expr::Subquery(Box::new(query)), empty],
    ))
}

/// `ARRAY(SELECT f(x) FROM unnest(a) x)` as `array_transform(a, x -> f(x))`.
fn mapped_unnest(select: &Select, element: &Expr) -> Option<Expr> {
    if select.from.len() != 1 || !select.from[0].joins.is_empty() || select.selection.is_some() {
        return None;
    }
    let (array, alias) = match &select.from[0].relation {
        TableFactor::UNNEST {
            alias: Some(alias),
            array_exprs,
            with_offset: false,
            with_ordinality: false,
            ..
        } if array_exprs.len() == 1 => (array_exprs[0].clone(), alias),
        TableFactor::Table {
            name,
            alias: Some(alias),
            args: Some(args),
            ..
        } if name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .is_some_and(|i| i.value.eq_ignore_ascii_case("unnest"))
            && args.args.len() == 1 =>
        {
            match &args.args[0] {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => (e.clone(), alias),
                _ => return None,
            }
        }
        _ => return None,
    };
    // In PostgreSQL the table alias of a one-column function names its column too.
    let name = match alias.columns.as_slice() {
        [] => alias.name.clone(),
        [column] => column.name.clone(),
        _ => return None,
    };
    let lambda = Expr::Lambda(LambdaFunction {
        params: OneOrManyWithParens::One(LambdaFunctionParameter {
            name,
            data_type: None,
        }),
        body: Box::new(element.clone()),
        syntax: LambdaSyntax::Arrow,
    });
    Some(call("array_transform", vec![array, lambda]))
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
        Expr::Nested(inner)
            if matches!(
                inner.as_ref(),
                Expr::BinaryOp {
                    op: BinaryOperator::And,
                    ..
                }
            ) =>
        {
            split_conjuncts(*inner, out)
        }
        other => out.push(other),
    }
}

fn and_all_opt(conjuncts: Vec<Expr>) -> Option<Expr> {
    conjuncts.into_iter().reduce(|a, b| Expr::BinaryOp {
        left: Box::new(a),
        op: BinaryOperator::And,
        right: Box::new(b),
    })
}

fn and_all(conjuncts: Vec<Expr>) -> Expr {
    and_all_opt(conjuncts).unwrap_or_else(|| Expr::value(Value::Boolean(true)))
}

fn contains_subquery(expr: &Expr) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
        if matches!(
            e,
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. }
        ) {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    found
}

fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = datafusion::sql::sqlparser::ast::visit_expressions(expr, |e| {
        if let Expr::Function(f) = e {
            if f.over.is_none() && AGGREGATES.iter().any(|name| is_named(f, name)) {
                found = true;
            }
        }
        ControlFlow::<()>::Continue(())
    });
    found
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

fn text_literal(text: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(text.to_string()))
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
        rewrite(&mut statements[0], &ActiveRules::default());
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
    fn current_role_and_hex_bytea_literals() {
        assert_eq!(
            rewritten("SELECT current_role, \"current_role\" FROM t"),
            "SELECT current_role(), \"current_role\" FROM t"
        );
        assert_eq!(
            rewritten("SELECT '\\x0102'::bytea, 'ab'::bytea"),
            "SELECT decode('0102', 'hex'), 'ab'::BYTEA"
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
            rewritten("SELECT x = (SELECT t.x FROM t WHERE t.id = u.id) FROM u"),
            "SELECT x = (SELECT first_value(t.x) FROM t WHERE t.id = u.id) FROM u"
        );
        let unchanged = "SELECT 1 = (SELECT max(t.x) + 1 FROM t WHERE t.id = u.id) FROM u";
        assert_eq!(rewritten(unchanged), unchanged);
        assert_eq!(
            rewritten("SELECT CASE WHEN u.a THEN (SELECT t.x FROM t WHERE t.id = u.id) ELSE NULL END FROM u"),
            "SELECT pg_when(u.a, (SELECT first_value(t.x) FROM t WHERE t.id = u.id)) FROM u"
        );
        let ordered =
            "SELECT 1 = (SELECT t.x FROM t WHERE t.id = u.id ORDER BY t.y LIMIT 1) FROM u";
        assert_eq!(rewritten(ordered), ordered);
    }

    #[test]
    fn outer_only_conditions_move_out_of_the_subquery() {
        assert_eq!(
            rewritten("SELECT CASE WHEN (u.a != $1) THEN (SELECT t.x FROM t WHERE u.a != $2 AND t.id = u.id AND t.k = 1) END FROM u"),
            "SELECT pg_when((u.a <> $1), pg_when(u.a <> $2, (SELECT first_value(t.x) FROM t WHERE t.id = u.id AND t.k = 1))) FROM u"
        );
        // Schema-qualified names, as SQLAlchemy writes them.
        assert_eq!(
            rewritten("SELECT 1 = (SELECT pg_catalog.d.x FROM pg_catalog.d WHERE pg_catalog.a.h AND pg_catalog.d.r = pg_catalog.a.r) FROM pg_catalog.a"),
            "SELECT 1 = pg_when(pg_catalog.a.h, (SELECT first_value(pg_catalog.d.x) FROM pg_catalog.d WHERE pg_catalog.d.r = pg_catalog.a.r)) FROM pg_catalog.a"
        );
    }

    #[test]
    fn outer_columns_in_the_select_list_are_read_outside() {
        assert_eq!(
            rewritten("SELECT 1 = (SELECT f('k', u.a = 'a', 's', s.start) FROM s WHERE s.id = g(u.id)) FROM u"),
            "SELECT 1 = pg_when((SELECT first_value(named_struct('v0', s.start)) FROM s WHERE s.id = g(u.id)) IS NOT NULL, \
             f('k', u.a = 'a', 's', get_field((SELECT first_value(named_struct('v0', s.start)) FROM s WHERE s.id = g(u.id)), 'v0'))) FROM u"
        );
        assert_eq!(
            rewritten("SELECT 1 = (SELECT count(*) + u.b FROM s WHERE s.id = u.id) FROM u"),
            "SELECT 1 = get_field((SELECT named_struct('v0', count(*)) FROM s WHERE s.id = u.id), 'v0') + u.b FROM u"
        );
    }

    #[test]
    fn regclass_casts_of_values_look_names_up() {
        assert_eq!(
            rewritten("SELECT CAST(CAST(format('%I.%I', s, t) AS REGCLASS) AS OID) FROM x"),
            "SELECT CAST(pg_regclass(format('%I.%I', s, t)) AS OID) FROM x"
        );
    }

    #[test]
    fn array_of_a_subquery_becomes_an_aggregate_or_a_transform() {
        assert_eq!(
            rewritten("SELECT ARRAY(SELECT b.name FROM m JOIN b ON m.r = b.oid WHERE m.member = r.oid) AS memberof FROM r"),
            "SELECT coalesce((SELECT array_agg(b.name) FROM m JOIN b ON m.r = b.oid WHERE m.member = r.oid), make_array()) AS memberof FROM r"
        );
        assert_eq!(
            rewritten("SELECT ARRAY(SELECT b.name FROM b WHERE b.r = r.oid ORDER BY 1) FROM r"),
            "SELECT coalesce((SELECT array_agg(b.name ORDER BY b.name) FROM b WHERE b.r = r.oid), make_array()) FROM r"
        );
        assert_eq!(
            rewritten("SELECT array(select 'toast.' || x from pg_catalog.unnest(tc.reloptions) x) FROM tc"),
            "SELECT array_transform(tc.reloptions, x -> 'toast.' || x) FROM tc"
        );
    }
}
