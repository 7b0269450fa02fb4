//! Result column names as PostgreSQL gives them.
//!
//! DataFusion names an unaliased select item after its whole expression (`Int64(1)`,
//! `count(*)`, `CAST(Float64(2) AS Float64)`); PostgreSQL names it after what the item is: a
//! column reference → the column, a function call → the function (`count`, `now`), a cast →
//! the type (`float8`) unless what is cast has a name, `CASE` → `case`, `ARRAY[…]` → `array`,
//! anything else → `?column?`. Clients show these names and look columns up by them.
//!
//! Names are worked out from the statement as the user wrote it (before any rewrite) and put
//! on the result schema after planning, so ORDER BY and other references to output names are
//! planned exactly as before. Duplicates are kept, as PostgreSQL keeps them.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, ArrayElemTypeDef, DataType as SqlType, Expr, Function, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TimezoneInfo, TrimWhereField,
};
use futures::StreamExt;

/// PostgreSQL's name for a select item it cannot name otherwise.
pub const UNNAMED: &str = "?column?";

/// The output names of a query's columns as PostgreSQL gives them, one per column of the
/// planned schema, from the statement as the client wrote it (before compatibility rewrites).
/// `None` when it is not a query, or its select list cannot be matched with the planned
/// columns (then the planner's names stay).
pub fn output_names(statement: &Statement, planned: &Schema) -> Option<Vec<String>> {
    let Statement::Query(query) = statement else {
        return None;
    };
    let items = select_items(query)?;
    let mut names: Vec<String> = planned.fields().iter().map(|f| f.name().clone()).collect();
    let first_wildcard = items.iter().position(Option::is_none);
    let last_wildcard = items.iter().rposition(Option::is_none);
    match (first_wildcard, last_wildcard) {
        (None, _) | (_, None) => {
            if items.len() != names.len() {
                return None;
            }
            for (name, item) in names.iter_mut().zip(items) {
                *name = item?;
            }
        }
        (Some(first), Some(last)) => {
            // Columns a wildcard expands to keep their planned names (the column names);
            // items before the first and after the last wildcard are matched from each end.
            let after = items.len() - last - 1;
            if first + after > names.len() {
                return None;
            }
            let end = names.len();
            for (i, item) in items.iter().take(first).enumerate() {
                names[i] = item.clone()?;
            }
            for (i, item) in items.iter().skip(last + 1).enumerate() {
                names[end - after + i] = item.clone()?;
            }
        }
    }
    Some(names)
}

/// The name of each item of a query's select list (its leftmost SELECT for set operations,
/// as PostgreSQL does); `None` for a wildcard.
fn select_items(query: &Query) -> Option<Vec<Option<String>>> {
    let select = match leftmost(&query.body)? {
        SetExpr::Select(select) => select,
        _ => return None,
    };
    Some(
        select
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(expr) => {
                    Some(figure(expr).0.unwrap_or_else(|| UNNAMED.to_string()))
                }
                SelectItem::ExprWithAlias { alias, .. } => Some(ident_name(alias)),
                SelectItem::ExprWithAliases { aliases, .. } => aliases
                    .first()
                    .map(ident_name)
                    .or(Some(UNNAMED.to_string())),
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => None,
            })
            .collect(),
    )
}

fn leftmost(body: &SetExpr) -> Option<&SetExpr> {
    match body {
        SetExpr::Select(_) => Some(body),
        SetExpr::Query(query) => leftmost(&query.body),
        SetExpr::SetOperation { left, .. } => leftmost(left),
        _ => None,
    }
}

/// An identifier as PostgreSQL keeps it: folded to lower case unless quoted.
fn ident_name(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

fn last_name(name: &ObjectName) -> Option<String> {
    match name.0.last()? {
        ObjectNamePart::Identifier(ident) => Some(ident_name(ident)),
        ObjectNamePart::Function(_) => None,
    }
}

fn function_name(function: &Function) -> Option<String> {
    last_name(&function.name)
}

/// PostgreSQL's name for an expression and how strong the name is, as its parser decides it:
/// 0 no name, 1 a fallback (a cast's type name, `case`), 2 a real name. A cast keeps the name
/// of what it casts when that one is strong.
fn figure(expr: &Expr) -> (Option<String>, u8) {
    let named = |name: &str| (Some(name.to_string()), 2);
    match expr {
        Expr::Identifier(ident) => (Some(ident_name(ident)), 2),
        Expr::CompoundIdentifier(parts) => (parts.last().map(ident_name), 2),
        Expr::Function(function) => (function_name(function), 2),
        Expr::Cast {
            expr, data_type, ..
        } => {
            let (name, strength) = figure(expr);
            if strength > 1 {
                (name, strength)
            } else {
                (Some(type_name(data_type)), 1)
            }
        }
        Expr::TypedString(typed) => (Some(type_name(&typed.data_type)), 1),
        Expr::Interval(_) => (Some("interval".to_string()), 1),
        Expr::Nested(inner) | Expr::Collate { expr: inner, .. } => figure(inner),
        Expr::Case { else_result, .. } => match else_result.as_deref().map(figure) {
            Some((name, 2)) => (name, 2),
            _ => (Some("case".to_string()), 1),
        },
        Expr::Array(_) => named("array"),
        Expr::Tuple(_) => named("row"),
        Expr::Exists { .. } => named("exists"),
        Expr::Subquery(query) => {
            let first = select_items(query).and_then(|items| items.into_iter().next());
            (
                Some(first.flatten().unwrap_or_else(|| UNNAMED.to_string())),
                2,
            )
        }
        Expr::Ceil { .. } => named("ceil"),
        Expr::Floor { .. } => named("floor"),
        Expr::Position { .. } => named("position"),
        Expr::Substring { .. } => named("substring"),
        Expr::Overlay { .. } => named("overlay"),
        Expr::Extract { .. } => named("extract"),
        Expr::AtTimeZone { .. } => named("timezone"),
        Expr::Trim { trim_where, .. } => match trim_where {
            Some(TrimWhereField::Leading) => named("ltrim"),
            Some(TrimWhereField::Trailing) => named("rtrim"),
            _ => named("btrim"),
        },
        Expr::CompoundFieldAccess { root, access_chain } => match access_chain.last() {
            Some(AccessExpr::Dot(field)) => figure(field),
            _ => figure(root),
        },
        _ => (None, 0),
    }
}

/// The name PostgreSQL gives a type in a cast: its internal name (`int4`, `float8`,
/// `timestamptz`); the element type for arrays.
fn type_name(data_type: &SqlType) -> String {
    let name = match data_type {
        SqlType::SmallInt(_) | SqlType::Int2(_) => "int2",
        SqlType::Int(_) | SqlType::Integer(_) | SqlType::Int4(_) => "int4",
        SqlType::BigInt(_) | SqlType::Int8(_) => "int8",
        SqlType::Real | SqlType::Float4 => "float4",
        SqlType::Double(_) | SqlType::DoublePrecision | SqlType::Float8 => "float8",
        SqlType::Float(info) => match info {
            datafusion::sql::sqlparser::ast::ExactNumberInfo::Precision(p) if *p <= 24 => "float4",
            _ => "float8",
        },
        SqlType::Numeric(_) | SqlType::Decimal(_) | SqlType::Dec(_) => "numeric",
        SqlType::Bool | SqlType::Boolean => "bool",
        SqlType::Text | SqlType::String(_) => "text",
        SqlType::Varchar(_) | SqlType::CharacterVarying(_) | SqlType::CharVarying(_) => "varchar",
        SqlType::Char(_) | SqlType::Character(_) => "bpchar",
        SqlType::Date => "date",
        SqlType::Time(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timetz",
        SqlType::Time(..) => "time",
        SqlType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => "timestamptz",
        SqlType::Timestamp(..) => "timestamp",
        SqlType::Interval { .. } => "interval",
        SqlType::Bytea => "bytea",
        SqlType::JSON => "json",
        SqlType::JSONB => "jsonb",
        SqlType::Uuid => "uuid",
        SqlType::Regclass => "regclass",
        SqlType::Array(
            ArrayElemTypeDef::SquareBracket(element, _)
            | ArrayElemTypeDef::AngleBracket(element)
            | ArrayElemTypeDef::Parenthesis(element),
        ) => return type_name(element),
        SqlType::Custom(name, _) => {
            return last_name(name).unwrap_or_else(|| UNNAMED.to_string());
        }
        other => return other.to_string().to_lowercase(),
    };
    name.to_string()
}

/// Gives every unaliased, non-column select item of a query a distinct alias. DataFusion
/// refuses two select items with the same expression name (`SELECT 1, 1`), which PostgreSQL
/// accepts; the engine plans such a query again after this. The aliases never reach the
/// client: [`output_names`] names the columns from the statement as written.
pub fn alias_unnamed_items(statement: &mut Statement) -> bool {
    let Statement::Query(query) = statement else {
        return false;
    };
    let mut changed = false;
    alias_in(&mut query.body, &mut changed);
    changed
}

fn alias_in(body: &mut SetExpr, changed: &mut bool) {
    match body {
        SetExpr::Select(select) => {
            // Column references and aliases keep their names (ORDER BY may use them) unless
            // an earlier item has the same name.
            let mut seen = std::collections::HashSet::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                let (expr, name) = match item {
                    SelectItem::UnnamedExpr(expr) => {
                        let name = match expr {
                            Expr::Identifier(ident) => Some(ident_name(ident)),
                            Expr::CompoundIdentifier(parts) => parts.last().map(ident_name),
                            _ => None,
                        };
                        (expr.clone(), name)
                    }
                    SelectItem::ExprWithAlias { expr, alias } => {
                        (expr.clone(), Some(ident_name(alias)))
                    }
                    _ => continue,
                };
                if let Some(name) = name {
                    if seen.insert(name) {
                        continue;
                    }
                }
                *item = SelectItem::ExprWithAlias {
                    expr,
                    alias: Ident::new(format!("__freshet_column_{}", i + 1)),
                };
                *changed = true;
            }
        }
        SetExpr::Query(query) => alias_in(&mut query.body, changed),
        SetExpr::SetOperation { left, right, .. } => {
            alias_in(left, changed);
            alias_in(right, changed);
        }
        _ => {}
    }
}

/// `schema` with its fields renamed, in order.
pub fn rename_schema(schema: &Schema, names: &[String]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .zip(names)
        .map(|(field, name)| field.as_ref().clone().with_name(name))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// A stream whose batches carry the given column names; the data is untouched. The stream is
/// returned as it is when the names do not fit its columns.
pub fn rename_stream(
    stream: SendableRecordBatchStream,
    names: &[String],
) -> SendableRecordBatchStream {
    let schema = stream.schema();
    if schema.fields().len() != names.len()
        || schema
            .fields()
            .iter()
            .zip(names)
            .all(|(f, n)| f.name() == n)
    {
        return stream;
    }
    let renamed = rename_schema(&schema, names);
    let target = renamed.clone();
    let batches = stream.map(move |batch| {
        let batch = batch?;
        let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
        RecordBatch::try_new_with_options(target.clone(), batch.columns().to_vec(), &options)
            .map_err(DataFusionError::from)
    });
    Box::pin(RecordBatchStreamAdapter::new(renamed, batches))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn names(sql: &str, columns: usize) -> Option<Vec<String>> {
        let fields: Vec<Field> = (0..columns)
            .map(|i| Field::new(format!("planned{i}"), DataType::Int64, true))
            .collect();
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
        output_names(&statements[0], &Schema::new(fields))
    }

    fn strings(names: &[&str]) -> Option<Vec<String>> {
        Some(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn names_follow_postgresql() {
        assert_eq!(
            names("select 1, 2.0::float8, now(), version()", 4),
            strings(&["?column?", "float8", "now", "version"])
        );
        assert_eq!(
            names(
                "SELECT t.a, b, COUNT(*), a::int, 'x'::text, CAST(1 AS BIGINT), a + 1 FROM t",
                7
            ),
            strings(&["a", "b", "count", "a", "text", "int8", "?column?"])
        );
        assert_eq!(
            names(
                "select current_user, session_user, current_schema, current_timestamp, pg_catalog.version()",
                5
            ),
            strings(&[
                "current_user",
                "session_user",
                "current_schema",
                "current_timestamp",
                "version"
            ])
        );
        assert_eq!(
            names(
                "select case when x then 1 end, case when x then 1 else y end, array[1], (select 1), (select a from t), exists (select 1)",
                6
            ),
            strings(&["case", "y", "array", "?column?", "a", "exists"])
        );
        assert_eq!(
            names(
                "select timestamp '2020-01-01', interval '1 day', 1::timestamptz, '{1}'::int[], x as \"Quoted\", y AS Folded",
                6
            ),
            strings(&["timestamp", "interval", "timestamptz", "int4", "Quoted", "folded"])
        );
        assert_eq!(
            names(
                "select extract(year from d), trim(s), substring(s from 2), arr[1] from t",
                4
            ),
            strings(&["extract", "btrim", "substring", "arr"])
        );
    }

    #[test]
    fn wildcards_keep_planned_names_and_set_operations_use_the_left_side() {
        assert_eq!(
            names("select 1, *, 2 from t", 5),
            strings(&["?column?", "planned1", "planned2", "planned3", "?column?"])
        );
        assert_eq!(
            names("select a from t union all select 1 from u order by 1", 1),
            strings(&["a"])
        );
        // Duplicates stay, as in PostgreSQL.
        assert_eq!(names("select 1, 2", 2), strings(&["?column?", "?column?"]));
        // Not a query, or a mismatch with the plan: the planner's names stay.
        assert_eq!(names("insert into t values (1)", 0), None);
        assert_eq!(names("select 1, 2", 3), None);
        assert_eq!(names("values (1, 2)", 2), None);
    }
}
