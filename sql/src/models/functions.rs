//! Serving functions, registered in every session:
//!
//! - `recommend('model', user, k [, exclude_rated])` → `user_id, item_id, score`, best first;
//!   rated items are left out unless `exclude_rated` is false. An unknown user gets no rows —
//!   unless the model folds in a source and the user has interacted since the training.
//! - `recommend_users('model', item, k)` → `item_id, user_id, score`; an unknown item, no rows.
//! - `recommend_all('model', k [, exclude_rated])` → the top `k` of every user.
//! - `predict_rating('model', user, item)` → the predicted rating, NULL for an unknown user or
//!   item; usable anywhere in a query.
//!
//! An unknown model is an error naming it.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float32Array, Float64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::memory::MemorySourceConfig;
use datafusion::catalog::{
    Session as DfSession, TableFunctionArgs, TableFunctionImpl, TableProvider,
};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::physical_plan::ExecutionPlan;

use super::{Id, IdKind, ModelSlot, Models, TrainedModel};
use crate::error::{EngineError, ErrorKind};

/// Registers the serving functions in `context`.
pub(crate) fn register(context: &SessionContext, models: &Arc<Models>) {
    for kind in [Kind::Recommend, Kind::RecommendUsers, Kind::RecommendAll] {
        context.register_udtf(
            kind.name(),
            Arc::new(Recommend {
                kind,
                models: models.clone(),
            }),
        );
    }
    context.register_udf(ScalarUDF::from(PredictRating {
        models: models.clone(),
        signature: Signature::any(3, Volatility::Volatile),
    }));
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Recommend,
    RecommendUsers,
    RecommendAll,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Recommend => "recommend",
            Kind::RecommendUsers => "recommend_users",
            Kind::RecommendAll => "recommend_all",
        }
    }

    fn usage(self) -> &'static str {
        match self {
            Kind::Recommend => "recommend('model', user_id, k [, exclude_rated])",
            Kind::RecommendUsers => "recommend_users('model', item_id, k)",
            Kind::RecommendAll => "recommend_all('model', k [, exclude_rated])",
        }
    }
}

#[derive(Debug)]
struct Recommend {
    kind: Kind,
    models: Arc<Models>,
}

fn usage_error(kind: Kind, problem: &str) -> EngineError {
    EngineError::new(
        ErrorKind::InvalidStatement,
        format!("{problem}; usage: {}", kind.usage()),
    )
}

fn literal(kind: Kind, arg: &Expr) -> Result<&ScalarValue, EngineError> {
    match arg {
        Expr::Literal(value, _) => Ok(value),
        other => Err(usage_error(
            kind,
            &format!("arguments must be constants, found {other}"),
        )),
    }
}

fn model_name(kind: Kind, arg: &Expr) -> Result<String, EngineError> {
    match literal(kind, arg)? {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => Ok(s.clone()),
        other => Err(usage_error(
            kind,
            &format!("the model is named by a string, found {other}"),
        )),
    }
}

fn count(kind: Kind, arg: &Expr) -> Result<usize, EngineError> {
    let value = literal(kind, arg)?;
    match value.cast_to(&DataType::Int64) {
        Ok(ScalarValue::Int64(Some(k))) if k >= 0 => Ok(k as usize),
        _ => Err(usage_error(
            kind,
            &format!("k must be a non-negative integer, found {value}"),
        )),
    }
}

fn flag(kind: Kind, arg: Option<&Expr>) -> Result<bool, EngineError> {
    let Some(arg) = arg else {
        return Ok(true);
    };
    match literal(kind, arg)? {
        ScalarValue::Boolean(Some(b)) => Ok(*b),
        other => Err(usage_error(
            kind,
            &format!("exclude_rated must be true or false, found {other}"),
        )),
    }
}

/// The id a literal names, converted to the model's id kind.
fn id(kind: Kind, id_kind: IdKind, arg: &Expr) -> Result<Option<Id>, EngineError> {
    let value = literal(kind, arg)?;
    let array = value.to_array()?;
    Ok(id_kind.ids(&array)?.into_iter().next().flatten())
}

fn result_schema(first: (&str, IdKind), second: (&str, IdKind)) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(first.0, first.1.data_type(), false),
        Field::new(second.0, second.1.data_type(), false),
        Field::new("score", DataType::Float32, false),
    ]))
}

/// One call of a recommendation table function, its arguments checked when the query is
/// planned. The scores are computed when the plan runs ([`TableProvider::scan`]), not when it
/// is planned: a query is planned more than once (a simple query is planned at prepare to
/// learn its columns, then again to run), and scoring a large model is the expensive part.
struct RecommendCall {
    call: Call,
    name: String,
    model: Arc<TrainedModel>,
    slot: Option<Arc<ModelSlot>>,
    schema: SchemaRef,
}

#[derive(Debug)]
enum Call {
    Recommend {
        user: Option<Id>,
        k: usize,
        exclude: bool,
    },
    RecommendUsers {
        item: Option<Id>,
        k: usize,
    },
    RecommendAll {
        k: usize,
        exclude: bool,
    },
}

impl std::fmt::Debug for RecommendCall {
    // Not derived: the model's factors would be printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecommendCall")
            .field("model", &self.name)
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

impl Recommend {
    fn call(&self, args: &[Expr]) -> Result<RecommendCall, EngineError> {
        let kind = self.kind;
        let (min, max) = match kind {
            Kind::Recommend => (3, 4),
            Kind::RecommendUsers => (3, 3),
            Kind::RecommendAll => (2, 3),
        };
        if args.len() < min || args.len() > max {
            return Err(usage_error(
                kind,
                &format!(
                    "{} takes {min} to {max} arguments, found {}",
                    kind.name(),
                    args.len()
                ),
            ));
        }
        let name = model_name(kind, &args[0])?;
        let slot = self.models.get(&name);
        let model = self.models.trained(&name)?;
        let m: &TrainedModel = &model;
        let (call, schema) = match kind {
            Kind::Recommend => (
                Call::Recommend {
                    user: id(kind, m.user_kind, &args[1])?,
                    k: count(kind, &args[2])?,
                    exclude: flag(kind, args.get(3))?,
                },
                recommendation_schema(m),
            ),
            Kind::RecommendUsers => (
                Call::RecommendUsers {
                    item: id(kind, m.item_kind, &args[1])?,
                    k: count(kind, &args[2])?,
                },
                result_schema(("item_id", m.item_kind), ("user_id", m.user_kind)),
            ),
            Kind::RecommendAll => (
                Call::RecommendAll {
                    k: count(kind, &args[1])?,
                    exclude: flag(kind, args.get(2))?,
                },
                recommendation_schema(m),
            ),
        };
        Ok(RecommendCall {
            call,
            name,
            model,
            slot,
            schema,
        })
    }
}

impl RecommendCall {
    fn batch(&self) -> Result<RecordBatch, EngineError> {
        let m: &TrainedModel = &self.model;
        // (the id repeated on every row, the ids of the other side, their scores)
        let (key, key_kind, rows, others, other_kind) = match &self.call {
            Call::RecommendAll { k, exclude } => return recommend_all(m, *k, *exclude),
            Call::Recommend { user, k, exclude } => {
                let rows = match user {
                    Some(user) => {
                        let fresh = self
                            .slot
                            .as_ref()
                            .and_then(|s| s.fresh_for(user))
                            .unwrap_or_default();
                        recommend_for(m, user, &fresh, *k, *exclude)
                    }
                    None => Vec::new(),
                };
                (user, m.user_kind, rows, &m.item_ids, m.item_kind)
            }
            Call::RecommendUsers { item, k } => {
                let rows = match item.as_ref().and_then(|i| m.item(i)) {
                    Some(index) => m.model.recommend_users(index, *k),
                    None => Vec::new(),
                };
                (item, m.item_kind, rows, &m.user_ids, m.user_kind)
            }
        };
        // No rows without a known id, so `key` is only repeated when it is `Some`.
        let keys = key.iter().cycle().take(rows.len());
        let columns = vec![
            key_kind.array(keys),
            other_kind.array(rows.iter().map(|(i, _)| &others[*i as usize])),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|(_, s)| *s))) as ArrayRef,
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for RecommendCall {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.batch()?;
        let exec = MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?;
        Ok(exec)
    }
}

/// The top `k` items of every user, as `user_id, item_id, score` rows (best first per user).
pub(crate) fn recommend_all(
    m: &TrainedModel,
    k: usize,
    exclude: bool,
) -> Result<RecordBatch, EngineError> {
    let schema = result_schema(("user_id", m.user_kind), ("item_id", m.item_kind));
    let (mut users, mut items, mut scores) = (Vec::new(), Vec::new(), Vec::new());
    for (user, rated) in m.rated.iter().enumerate() {
        let excluded: Vec<u32> = if exclude {
            rated.iter().map(|(i, _)| *i).collect()
        } else {
            Vec::new()
        };
        for (item, score) in m.model.recommend(user as u32, k, &excluded) {
            users.push(&m.user_ids[user]);
            items.push(&m.item_ids[item as usize]);
            scores.push(score);
        }
    }
    let columns = vec![
        m.user_kind.array(users.into_iter()),
        m.item_kind.array(items.into_iter()),
        Arc::new(Float32Array::from(scores)) as ArrayRef,
    ];
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// The columns of a model's recommendations: `user_id, item_id, score`.
pub(crate) fn recommendation_schema(m: &TrainedModel) -> SchemaRef {
    result_schema(("user_id", m.user_kind), ("item_id", m.item_kind))
}

/// The top `k` items for `user`: its trained factor, or — when it interacted since the
/// training — a factor folded in from its trained and new interactions.
pub(crate) fn recommend_for(
    m: &TrainedModel,
    user: &Id,
    fresh: &[(u32, f32)],
    k: usize,
    exclude: bool,
) -> Vec<(u32, f32)> {
    let index = m.user(user);
    let trained: &[(u32, f32)] = index.map(|u| m.rated[u as usize].as_slice()).unwrap_or(&[]);
    let mut excluded: Vec<u32> = if exclude {
        trained.iter().chain(fresh).map(|(i, _)| *i).collect()
    } else {
        Vec::new()
    };
    excluded.sort_unstable();
    excluded.dedup();
    if fresh.is_empty() {
        return match index {
            Some(u) => m.model.recommend(u, k, &excluded),
            None => Vec::new(),
        };
    }
    // Later interactions with the same item replace earlier ones.
    let mut interactions: std::collections::BTreeMap<u32, f32> = trained.iter().copied().collect();
    for (item, value) in fresh {
        if m.params.implicit {
            *interactions.entry(*item).or_insert(0.0) += value;
        } else {
            interactions.insert(*item, *value);
        }
    }
    let items: Vec<u32> = interactions.keys().copied().collect();
    let values: Vec<f32> = interactions.values().copied().collect();
    let factor = m.model.fold_in_user(&items, &values, &m.params);
    m.model.recommend_for_vector(&factor, k, &excluded)
}

impl TableFunctionImpl for Recommend {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        Ok(Arc::new(self.call(args.exprs())?))
    }
}

/// `predict_rating('model', user, item)`.
#[derive(Debug)]
struct PredictRating {
    models: Arc<Models>,
    signature: Signature,
}

impl PartialEq for PredictRating {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.models, &other.models)
    }
}

impl Eq for PredictRating {}

impl Hash for PredictRating {
    fn hash<H: Hasher>(&self, state: &mut H) {
        "predict_rating".hash(state);
    }
}

impl ScalarUDFImpl for PredictRating {
    fn name(&self) -> &str {
        "predict_rating"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let ColumnarValue::Scalar(name) = &args.args[0] else {
            return Err(EngineError::new(
                ErrorKind::InvalidStatement,
                "predict_rating('model', user, item): the model must be a constant string",
            )
            .into());
        };
        let name = match name {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => s.clone(),
            other => {
                return Err(EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!("predict_rating: the model is named by a string, found {other}"),
                )
                .into())
            }
        };
        let m = self.models.trained(&name)?;
        let users = m.user_kind.ids(&args.args[1].to_array(rows)?)?;
        let items = m.item_kind.ids(&args.args[2].to_array(rows)?)?;
        let predictions: Float64Array = users
            .iter()
            .zip(&items)
            .map(|(u, i)| {
                let u = m.user(u.as_ref()?)?;
                let i = m.item(i.as_ref()?)?;
                Some(m.model.predict(u, i) as f64)
            })
            .collect();
        let array: ArrayRef = Arc::new(predictions);
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(
                &array, 0,
            )?));
        }
        Ok(ColumnarValue::Array(array))
    }
}
