//! What a logical plan says about a statement's parameters and result: the types of `$1 …
//! $n` in order, the types untyped parameters are cast to, the result columns, and the casting
//! of bound values to the inferred types.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;

use crate::error::{EngineError, ErrorKind};

/// The columns a plan returns; `None` for a command without rows.
pub(crate) fn result_schema(plan: &LogicalPlan) -> Option<SchemaRef> {
    match plan {
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => None,
        LogicalPlan::Statement(s)
            if !matches!(s, datafusion::logical_expr::Statement::Execute(_)) =>
        {
            None
        }
        other => Some(Arc::new(other.schema().as_arrow().clone())),
    }
}

/// The name of the PREPARE a statement is wrapped in to plan it with declared parameter types.
pub(crate) const TYPED_PARAMETERS: &str = "__freshet_typed_parameters";

/// The query inside the PREPARE of [`Engine::prepare_with_types`]; any other plan unchanged.
pub(crate) fn unwrap_typed_parameters(plan: LogicalPlan) -> LogicalPlan {
    match plan {
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(prepare))
            if prepare.name == TYPED_PARAMETERS =>
        {
            prepare.input.as_ref().clone()
        }
        other => other,
    }
}

/// The types untyped parameters are cast to in a plan (`$1::int8`), by parameter number.
pub(crate) fn placeholder_cast_types(
    plan: &LogicalPlan,
) -> Result<HashMap<usize, DataType>, EngineError> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::{Cast, Expr};
    let mut types = HashMap::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::Cast(Cast { expr, field }) = e {
                    if let Expr::Placeholder(placeholder) = expr.as_ref() {
                        let index = placeholder
                            .id
                            .strip_prefix('$')
                            .and_then(|n| n.parse::<usize>().ok());
                        if let (None, Some(index)) = (&placeholder.field, index) {
                            types
                                .entry(index)
                                .or_insert_with(|| field.data_type().clone());
                        }
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })?;
    Ok(types)
}

pub(crate) fn ordered_param_types(
    plan: &LogicalPlan,
) -> Result<Vec<Option<DataType>>, EngineError> {
    let types: HashMap<String, Option<DataType>> = plan.get_parameter_types()?;
    let mut indexed: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
    for (name, data_type) in types {
        let index = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                EngineError::syntax(format!("parameter {name} must be written $1, $2, …"))
            })?;
        // The placeholder number sizes the vector below: never trust it unbounded.
        if index > crate::limits::PARAMETER_NUMBER_MAX {
            return Err(EngineError::new(
                ErrorKind::UndefinedParameter,
                format!(
                    "there is no parameter {name}: parameters are numbered $1 to ${}",
                    crate::limits::PARAMETER_NUMBER_MAX
                ),
            ));
        }
        indexed.push((index, data_type));
    }
    let count = indexed.iter().map(|(i, _)| *i).max().unwrap_or(0);
    let mut ordered = vec![None; count];
    for (index, data_type) in indexed {
        ordered[index - 1] = data_type;
    }
    Ok(ordered)
}

/// Casts parameter values to the types the planner inferred for them. A client sends `text` for
/// a column the planner holds as `Utf8View`, `int8` where it expects `int4` …; the plan was
/// type-checked against the inferred types, so the values must match them exactly.
pub(crate) fn coerce_params(
    params: ParamValues,
    types: &[Option<DataType>],
) -> Result<ParamValues, EngineError> {
    let ParamValues::List(values) = params else {
        return Ok(params);
    };
    let mut coerced = Vec::with_capacity(values.len());
    for (index, mut item) in values.into_iter().enumerate() {
        if let Some(Some(target)) = types.get(index) {
            if item.value.data_type() != *target {
                item.value = item.value.cast_to(target).map_err(|e| {
                    EngineError::new(
                        ErrorKind::InvalidParameterValue,
                        format!("parameter ${} cannot be used as {target}: {e}", index + 1),
                    )
                })?;
            }
        }
        coerced.push(item);
    }
    Ok(ParamValues::List(coerced))
}
