//! PostgreSQL functions that clients call on the catalog, as DataFusion scalar UDFs.
//!
//! `datafusion-pg-catalog` registers several of them with exact `int4` / `text` signatures, so
//! a literal (`pg_get_userbyid(10)` is `int8` to DataFusion) or an OID column of another width
//! fails to plan. Freshet registers its own versions, accepting any argument type, after the
//! crate's, and adds the ones it lacks. What a function answers follows from Freshet having
//! one owner role, no indexes, constraints, comments or sequences, and every privilege.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int32Builder, Int64Array, ListBuilder, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    create_udf, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, Volatility,
};

use super::catalog::{CatalogSource, StaticTypes, OWNER_OID, OWNER_ROLE};
use crate::pg_types::{format_type, internal_name};
use crate::session::SettingReader;

/// What a function computes from its arguments (as arrays of `rows` rows).
type Body = Arc<dyn Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync>;

/// A catalog function: a name, how many arguments of any type, a result type and a body.
struct PgFunction {
    name: &'static str,
    signature: Signature,
    return_type: DataType,
    body: Body,
}

impl std::fmt::Debug for PgFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFunction")
            .field("name", &self.name)
            .finish()
    }
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.body, &other.body)
    }
}

impl Eq for PgFunction {}

impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(self.return_type.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let rows = if scalar { 1 } else { rows };
        let result = (self.body)(&arrays, rows)?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

/// A function taking between `min` and `max` arguments of any type.
fn function(
    name: &'static str,
    arguments: std::ops::RangeInclusive<usize>,
    return_type: DataType,
    body: impl Fn(&[ArrayRef], usize) -> DfResult<ArrayRef> + Send + Sync + 'static,
) -> ScalarUDF {
    let signatures = arguments
        .map(|n| {
            if n == 0 {
                TypeSignature::Nullary
            } else {
                TypeSignature::Any(n)
            }
        })
        .collect();
    ScalarUDF::new_from_impl(PgFunction {
        name,
        signature: Signature::one_of(signatures, Volatility::Stable),
        return_type,
        body: Arc::new(body),
    })
}

/// The first argument as OIDs (NULL stays NULL).
fn oids(arrays: &[ArrayRef]) -> DfResult<Vec<Option<i64>>> {
    let first = arrays
        .first()
        .ok_or_else(|| DataFusionError::Plan("an OID argument is required".into()))?;
    let converted = cast(first, &DataType::Int64)?;
    let ints = converted
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("OID cast to Int64".into()))?;
    Ok(ints.iter().collect())
}

fn texts(array: &ArrayRef) -> DfResult<Vec<Option<String>>> {
    let converted = cast(array, &DataType::Utf8)?;
    let strings = converted
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("text cast to Utf8".into()))?;
    Ok(strings.iter().map(|s| s.map(str::to_string)).collect())
}

fn nulls(data_type: &DataType, rows: usize) -> ArrayRef {
    datafusion::arrow::array::new_null_array(data_type, rows)
}

/// Registers the catalog functions in the engine's context (sessions inherit them).
pub(crate) fn register(context: &SessionContext, source: &Arc<CatalogSource>, types: StaticTypes) {
    for udf in functions(source) {
        context.register_udf(udf);
    }
    context.register_udf(ScalarUDF::new_from_impl(When {
        signature: Signature::any(2, Volatility::Immutable),
    }));
    let types = Arc::new(types);
    let by_name = types.clone();
    context.register_udf(function(
        "to_regtype",
        1..=1,
        DataType::Int32,
        move |a, _| {
            let found: Int32Array = texts(&a[0])?
                .into_iter()
                .map(|name| {
                    name.and_then(|name| by_name.by_name.get(&internal_name(&name)).copied())
                })
                .collect();
            Ok(Arc::new(found))
        },
    ));
    context.register_udf(function(
        "format_type",
        2..=2,
        DataType::Utf8,
        move |a, _| {
            let typmods = ints(&a[1])?;
            let names: StringArray = oids(a)?
                .into_iter()
                .zip(typmods)
                .map(|(oid, typmod)| {
                    oid.map(|oid| type_display_name(&types, oid, typmod.unwrap_or(-1)))
                })
                .collect();
            Ok(Arc::new(names))
        },
    ));
}

/// `format_type(oid, typmod)`: the SQL name [`crate::pg_types`] gives a type, else its
/// `pg_type` name (arrays: the element's name and `[]`), else `???` as PostgreSQL shows an OID
/// that names no type.
fn type_display_name(types: &StaticTypes, oid: i64, typmod: i64) -> String {
    let typmod = i32::try_from(typmod).unwrap_or(-1);
    let Ok(oid) = u32::try_from(oid) else {
        return "???".to_string();
    };
    if let Some(name) = format_type(oid, typmod) {
        return name;
    }
    match types.by_oid.get(&(oid as i32)) {
        Some((name, element)) if *element != 0 && name.starts_with('_') => {
            format!("{}[]", type_display_name(types, i64::from(*element), -1))
        }
        Some((name, _)) => name.clone(),
        None => "???".to_string(),
    }
}

/// An argument as integers (NULL stays NULL).
fn ints(array: &ArrayRef) -> DfResult<Vec<Option<i64>>> {
    oids(std::slice::from_ref(array))
}

fn functions(source: &Arc<CatalogSource>) -> Vec<ScalarUDF> {
    let mut all = vec![
        function("pg_get_userbyid", 1..=1, DataType::Utf8, |a, _| {
            let names: StringArray = oids(a)?
                .into_iter()
                .map(|oid| {
                    oid.map(|oid| match oid {
                        o if o == i64::from(OWNER_OID) => OWNER_ROLE.to_string(),
                        // What PostgreSQL answers for an OID that names no role.
                        o => format!("unknown (OID={o})"),
                    })
                })
                .collect();
            Ok(Arc::new(names))
        }),
        function("pg_encoding_to_char", 1..=1, DataType::Utf8, |a, _| {
            let names: StringArray = oids(a)?
                .into_iter()
                .map(|code| {
                    code.map(|code| match code {
                        0 => "SQL_ASCII",
                        6 => "UTF8",
                        _ => "",
                    })
                })
                .collect();
            Ok(Arc::new(names))
        }),
        function("pg_is_in_recovery", 0..=0, DataType::Boolean, |_, rows| {
            Ok(Arc::new(BooleanArray::from(vec![false; rows])))
        }),
        function(
            "json_build_object",
            0..=32,
            DataType::Utf8,
            json_build_object,
        ),
        function(
            "pg_array_subscripts",
            1..=2,
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            array_subscripts,
        ),
        function("format", 1..=32, DataType::Utf8, |a, rows| {
            let columns = a.iter().map(texts).collect::<DfResult<Vec<_>>>()?;
            let mut out = StringBuilder::new();
            for row in 0..rows {
                let values: Vec<Option<&str>> = columns
                    .iter()
                    .map(|c| c.get(row).and_then(|v| v.as_deref()))
                    .collect();
                match values.first() {
                    Some(Some(template)) => out.append_value(format_text(template, &values[1..])?),
                    _ => out.append_null(),
                }
            }
            Ok(Arc::new(out.finish()))
        }),
        function("pg_like_escape", 2..=2, DataType::Utf8, |a, _| {
            let patterns = texts(&a[0])?;
            let escapes = texts(&a[1])?;
            let converted: StringArray = patterns
                .iter()
                .zip(&escapes)
                .map(|(p, e)| match (p, e) {
                    (Some(p), Some(e)) => Some(backslash_escaped(p, e)),
                    _ => None,
                })
                .collect();
            Ok(Arc::new(converted))
        }),
    ];
    // Every privilege is granted: Freshet has no privilege system.
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_column_privilege",
        "has_any_column_privilege",
        "has_function_privilege",
        "has_sequence_privilege",
        "has_type_privilege",
        "has_language_privilege",
        "has_tablespace_privilege",
        "has_foreign_data_wrapper_privilege",
        "has_server_privilege",
        "pg_has_role",
    ] {
        all.push(function(name, 1..=4, DataType::Boolean, |a, rows| {
            Ok(not_null_of_first(a, rows))
        }));
    }
    // Objects other than relations are all in pg_catalog, which is always on the path.
    for name in [
        "pg_function_is_visible",
        "pg_type_is_visible",
        "pg_collation_is_visible",
        "pg_operator_is_visible",
        "pg_opclass_is_visible",
        "pg_opfamily_is_visible",
        "pg_conversion_is_visible",
        "pg_ts_config_is_visible",
    ] {
        all.push(function(name, 1..=1, DataType::Boolean, |a, rows| {
            Ok(not_null_of_first(a, rows))
        }));
    }
    let visible = source.clone();
    all.push(function(
        "pg_table_is_visible",
        1..=1,
        DataType::Boolean,
        move |a, _| {
            let answers: BooleanArray = oids(a)?
                .into_iter()
                .map(|oid| oid.map(|oid| visible.is_visible(oid)))
                .collect();
            Ok(Arc::new(answers))
        },
    ));
    let relations = source.clone();
    // `CAST(x AS regclass)` of a value rather than a literal (see `rewrite`): a number is
    // already an OID, a name is looked up.
    all.push(function(
        "pg_regclass",
        1..=1,
        DataType::Int32,
        move |a, _| {
            if a[0].data_type().is_integer() {
                return Ok(cast(&a[0], &DataType::Int32)?);
            }
            let found: Int32Array = texts(&a[0])?
                .into_iter()
                .map(|name| {
                    name.and_then(|name| relations.relation_oid(&name))
                        .map(|oid| oid as i32)
                })
                .collect();
            Ok(Arc::new(found))
        },
    ));
    let views = source.clone();
    all.push(function(
        "pg_get_viewdef",
        1..=2,
        DataType::Utf8,
        move |a, _| {
            let definitions: StringArray = oids(a)?
                .into_iter()
                .map(|oid| oid.and_then(|oid| views.definition(oid)))
                .collect();
            Ok(Arc::new(definitions))
        },
    ));
    // No comments, indexes, constraints, triggers, rules, sequences or user functions: NULL,
    // as PostgreSQL answers for an object without one.
    for (name, arguments) in [
        ("obj_description", 1..=2),
        ("col_description", 2..=2),
        ("shobj_description", 2..=2),
        ("pg_get_indexdef", 1..=3),
        ("pg_get_constraintdef", 1..=2),
        ("pg_get_triggerdef", 1..=2),
        ("pg_get_ruledef", 1..=2),
        ("pg_get_serial_sequence", 2..=2),
        ("pg_get_function_result", 1..=1),
        ("pg_get_function_arguments", 1..=1),
        ("pg_get_function_identity_arguments", 1..=1),
        ("pg_tablespace_location", 1..=1),
    ] {
        all.push(function(name, arguments, DataType::Utf8, |_, rows| {
            Ok(nulls(&DataType::Utf8, rows))
        }));
    }
    // Sizes on disk are not tracked per relation.
    for name in [
        "pg_relation_size",
        "pg_total_relation_size",
        "pg_table_size",
        "pg_indexes_size",
    ] {
        all.push(function(name, 1..=2, DataType::Int64, |_, rows| {
            Ok(Arc::new(Int64Array::from(vec![0i64; rows])))
        }));
    }
    all
}

/// `true` where the first argument is not NULL, NULL where it is (PostgreSQL's answer for a
/// NULL object).
fn not_null_of_first(arrays: &[ArrayRef], rows: usize) -> ArrayRef {
    match arrays.first() {
        Some(first) => Arc::new(BooleanArray::from_iter(
            (0..first.len()).map(|i| first.is_valid(i).then_some(true)),
        )),
        None => Arc::new(BooleanArray::from(vec![true; rows])),
    }
}

/// `json_build_object(k1, v1, k2, v2, …)` as JSON text.
fn json_build_object(arrays: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    if !arrays.len().is_multiple_of(2) {
        return Err(DataFusionError::Plan(
            "json_build_object takes an even number of arguments (key, value, …)".into(),
        ));
    }
    let mut out = StringBuilder::new();
    for row in 0..rows {
        let mut object = serde_json::Map::new();
        for pair in arrays.chunks(2) {
            let key = ScalarValue::try_from_array(&pair[0], row)?;
            if key.is_null() {
                return Err(DataFusionError::Execution(
                    "json_build_object: a key cannot be NULL".into(),
                ));
            }
            let key = key_text(&key);
            object.insert(
                key,
                json_value(&ScalarValue::try_from_array(&pair[1], row)?),
            );
        }
        out.append_value(serde_json::Value::Object(object).to_string());
    }
    Ok(Arc::new(out.finish()))
}

fn key_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => s.clone(),
        other => other.to_string(),
    }
}

fn json_value(value: &ScalarValue) -> serde_json::Value {
    use serde_json::Value as J;
    if value.is_null() {
        return J::Null;
    }
    match value {
        ScalarValue::Boolean(Some(b)) => J::Bool(*b),
        ScalarValue::Int8(Some(v)) => J::from(*v),
        ScalarValue::Int16(Some(v)) => J::from(*v),
        ScalarValue::Int32(Some(v)) => J::from(*v),
        ScalarValue::Int64(Some(v)) => J::from(*v),
        ScalarValue::UInt8(Some(v)) => J::from(*v),
        ScalarValue::UInt16(Some(v)) => J::from(*v),
        ScalarValue::UInt32(Some(v)) => J::from(*v),
        ScalarValue::UInt64(Some(v)) => J::from(*v),
        ScalarValue::Float32(Some(v)) => serde_json::Number::from_f64(f64::from(*v))
            .map(J::Number)
            .unwrap_or(J::Null),
        ScalarValue::Float64(Some(v)) => serde_json::Number::from_f64(*v)
            .map(J::Number)
            .unwrap_or(J::Null),
        other => J::String(key_text(other)),
    }
}

/// The subscripts of an array, 1-based: what `generate_subscripts(array, 1)` yields.
fn array_subscripts(arrays: &[ArrayRef], rows: usize) -> DfResult<ArrayRef> {
    let lengths: Vec<Option<usize>> = match arrays[0].data_type() {
        DataType::List(_) => {
            let list = arrays[0]
                .as_any()
                .downcast_ref::<datafusion::arrow::array::ListArray>()
                .ok_or_else(|| DataFusionError::Internal("list downcast".into()))?;
            (0..list.len())
                .map(|i| list.is_valid(i).then(|| list.value_length(i) as usize))
                .collect()
        }
        DataType::Null => vec![None; rows],
        other => {
            return Err(DataFusionError::Plan(format!(
                "generate_subscripts needs an array, found {other}"
            )))
        }
    };
    let mut builder = ListBuilder::new(Int32Builder::new());
    for length in lengths {
        match length {
            Some(n) => {
                for i in 1..=n {
                    builder.values().append_value(i as i32);
                }
                builder.append(true);
            }
            None => builder.append(false),
        }
    }
    Ok(Arc::new(builder.finish()))
}

/// Rewrites a LIKE pattern written with escape character `escape` into one escaped with a
/// backslash, the only escape DataFusion knows.
pub(crate) fn backslash_escaped(pattern: &str, escape: &str) -> String {
    let mut escape_chars = escape.chars();
    let escape = match (escape_chars.next(), escape_chars.next()) {
        (Some(c), None) => Some(c),
        // ESCAPE '' turns escaping off.
        _ => None,
    };
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if Some(c) == escape {
            match chars.next() {
                Some(next) => {
                    out.push('\\');
                    out.push(next);
                }
                None => out.push('\\'),
            }
        } else if c == '\\' {
            out.push_str("\\\\");
        } else {
            out.push(c);
        }
    }
    out
}

/// PostgreSQL's `format(template, args…)`: `%s` is an argument as text (NULL as nothing),
/// `%I` an identifier quoted where needed, `%L` a literal quoted (NULL as `NULL`), `%%` a `%`.
fn format_text(template: &str, arguments: &[Option<&str>]) -> DfResult<String> {
    let mut out = String::new();
    let mut next = 0;
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let conversion = chars.next();
        if conversion == Some('%') {
            out.push('%');
            continue;
        }
        let argument = arguments
            .get(next)
            .copied()
            .ok_or_else(|| DataFusionError::Execution("too few arguments for format()".into()))?;
        next += 1;
        match (conversion, argument) {
            (Some('s'), value) => out.push_str(value.unwrap_or("")),
            (Some('I'), Some(value)) => out.push_str(&quoted_identifier(value)),
            (Some('I'), None) => {
                return Err(DataFusionError::Execution(
                    "null values cannot be formatted as an SQL identifier".into(),
                ))
            }
            (Some('L'), Some(value)) => {
                out.push('\'');
                out.push_str(&value.replace('\'', "''"));
                out.push('\'');
            }
            (Some('L'), None) => out.push_str("NULL"),
            (other, _) => {
                return Err(DataFusionError::Execution(format!(
                    "unrecognized format() type specifier \"{}\"",
                    other.map(String::from).unwrap_or_default()
                )))
            }
        }
    }
    Ok(out)
}

/// An identifier as PostgreSQL's `quote_ident` writes it: bare when it is lower-case letters,
/// digits and underscores not starting with a digit, double-quoted otherwise.
fn quoted_identifier(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// `pg_when(condition, value)`: `value` where `condition` is true, else NULL — a CASE with
/// one branch, as a function (see `rewrite`).
#[derive(Debug, PartialEq, Eq, Hash)]
struct When {
    signature: Signature,
}

impl ScalarUDFImpl for When {
    fn name(&self) -> &str {
        "pg_when"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> DfResult<DataType> {
        Ok(args[1].clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let condition = args.args[0].to_array(rows)?;
        let condition = cast(&condition, &DataType::Boolean)?;
        let condition = condition
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("condition cast".into()))?;
        let value = args.args[1].to_array(rows)?;
        let nulls = nulls(value.data_type(), rows);
        // Where the condition is NULL it is not true: the CASE falls through to NULL.
        let keep: BooleanArray = condition.iter().map(|c| Some(c == Some(true))).collect();
        Ok(ColumnarValue::Array(
            datafusion::arrow::compute::kernels::zip::zip(&keep, &value, &nulls)?,
        ))
    }
}

/// Functions whose answer depends on the session: its settings, its user and its number
/// (`pg_backend_pid()`, which clients use to tell connections apart).
pub(crate) fn register_session_functions(
    context: &SessionContext,
    user: &str,
    backend_pid: i32,
    setting: SettingReader,
) {
    context.register_udf(create_udf(
        "pg_backend_pid",
        vec![],
        DataType::Int32,
        Volatility::Stable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(backend_pid))))),
    ));
    context.register_udf(ScalarUDF::new_from_impl(CurrentSetting {
        setting,
        signature: Signature::one_of(
            vec![TypeSignature::Any(1), TypeSignature::Any(2)],
            Volatility::Stable,
        ),
    }));
    for name in ["current_user", "session_user", "user", "current_role"] {
        let user = user.to_string();
        context.register_udf(create_udf(
            name,
            vec![],
            DataType::Utf8,
            Volatility::Stable,
            Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(user.clone()))))),
        ));
    }
}

/// `current_setting(name [, missing_ok])`.
struct CurrentSetting {
    setting: SettingReader,
    signature: Signature,
}

impl std::fmt::Debug for CurrentSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CurrentSetting")
    }
}

impl PartialEq for CurrentSetting {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.setting, &other.setting)
    }
}

impl Eq for CurrentSetting {}

impl std::hash::Hash for CurrentSetting {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        "current_setting".hash(state);
    }
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let scalar = args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = texts(&arrays[0])?;
        let missing_ok: Vec<bool> = match arrays.get(1) {
            Some(flags) => {
                let flags = cast(flags, &DataType::Boolean)?;
                let flags = flags
                    .as_any()
                    .downcast_ref::<BooleanArray>()
                    .ok_or_else(|| DataFusionError::Internal("flag cast".into()))?;
                (0..flags.len())
                    .map(|i| flags.is_valid(i) && flags.value(i))
                    .collect()
            }
            None => vec![false; names.len()],
        };
        let mut out = StringBuilder::new();
        for (name, missing_ok) in names.iter().zip(missing_ok) {
            let Some(name) = name else {
                out.append_null();
                continue;
            };
            let key = name.to_ascii_lowercase();
            let value = if key.starts_with("datafusion.") {
                args.config_options
                    .entries()
                    .into_iter()
                    .find(|entry| entry.key == key)
                    .map(|entry| entry.value.unwrap_or_default())
            } else {
                (self.setting)(&key)
            };
            match value {
                Some(v) => out.append_value(v),
                None if missing_ok => out.append_null(),
                None => {
                    return Err(DataFusionError::Execution(format!(
                        "unrecognized configuration parameter \"{name}\""
                    )))
                }
            }
        }
        let result: ArrayRef = Arc::new(out.finish());
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &result, 0,
            )?))
        } else {
            Ok(ColumnarValue::Array(result))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_quotes_identifiers_and_literals() {
        assert_eq!(
            format_text("%I.%I", &[Some("public"), Some("My Table")]).unwrap(),
            "public.\"My Table\""
        );
        assert_eq!(
            format_text("%s-%L-%L-%%", &[None, Some("it's"), None]).unwrap(),
            "-'it''s'-NULL-%"
        );
        assert!(format_text("%s %s", &[Some("a")]).is_err());
    }

    #[test]
    fn like_patterns_get_backslash_escapes() {
        assert_eq!(backslash_escaped("pg/_%", "/"), "pg\\_%");
        assert_eq!(backslash_escaped("a\\b", "/"), "a\\\\b");
        assert_eq!(backslash_escaped("a//b", "/"), "a\\/b");
        assert_eq!(backslash_escaped("a_b", ""), "a_b");
    }

    #[test]
    fn subscripts_count_from_one() {
        let mut lists = ListBuilder::new(datafusion::arrow::array::Int16Builder::new());
        lists.values().append_value(5);
        lists.values().append_value(7);
        lists.append(true);
        lists.append(false);
        let lists: ArrayRef = Arc::new(lists.finish());
        let subscripts = array_subscripts(&[lists], 2).unwrap();
        let subscripts = subscripts
            .as_any()
            .downcast_ref::<datafusion::arrow::array::ListArray>()
            .unwrap();
        let first = subscripts.value(0);
        let first = first
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Int32Array>()
            .unwrap();
        assert_eq!(first.values().to_vec(), vec![1, 2]);
        assert!(subscripts.is_null(1));
    }
}
