//! The engine's handling of model statements: training from a query, the registry, refresh
//! schedules and the fold-in reader.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    Array, ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::TableReference;
use freshet_connectors::source::Split;
use futures::TryStreamExt;

use super::als::{self, Ratings};
use super::statements::{parse_model_statement, CreateModel, ModelStatement};
use super::{store, Id, IdKind, ModelSlot, TrainedModel, TrainingStats};
use crate::catalog::{Entry, EntryKind};
use crate::engine::{table_key, Engine, Output};
use crate::error::{EngineError, ErrorKind};
use crate::session::Session;

impl Engine {
    /// Runs a statement about models.
    pub(crate) async fn execute_model(
        &self,
        session: &Session,
        statement: &ModelStatement,
        sql: &str,
    ) -> Result<Output, EngineError> {
        match statement {
            ModelStatement::Create(create) => self.create_model(session, create, sql).await,
            ModelStatement::Drop { name, if_exists } => self.drop_model(name, *if_exists).await,
            ModelStatement::Refresh { name } => {
                let slot = self.models().get(name).ok_or_else(|| unknown_model(name))?;
                self.train(session, &slot).await?;
                Ok(Output::command("REFRESH MODEL"))
            }
            ModelStatement::Show => self.show_models(),
        }
    }

    pub(crate) fn model_statement_schema(&self, statement: &ModelStatement) -> Option<SchemaRef> {
        matches!(statement, ModelStatement::Show).then(show_models_schema)
    }

    async fn create_model(
        &self,
        session: &Session,
        create: &CreateModel,
        sql: &str,
    ) -> Result<Output, EngineError> {
        let name = create.name.to_ascii_lowercase();
        let exists = self.models().get(&name).is_some();
        if exists && create.if_not_exists {
            return Ok(Output::command("CREATE MODEL"));
        }
        if exists && !create.or_replace {
            return Err(EngineError::new(
                ErrorKind::DuplicateObject,
                format!("model \"{name}\" already exists (use CREATE OR REPLACE MODEL or REFRESH MODEL)"),
            ));
        }
        if let Some(source) = &create.definition.fold_in_source {
            let key = table_key(&TableReference::from(source.as_str()));
            if self.source(&key).is_none() {
                return Err(EngineError::new(
                    ErrorKind::UndefinedTable,
                    format!("fold_in_source: source \"{source}\" does not exist"),
                ));
            }
        }
        let slot = Arc::new(ModelSlot::new(&name, create.definition.clone()));
        // Train first: a model that cannot be trained is not created.
        self.train(session, &slot).await?;
        {
            let mut catalog = self.catalog().lock().await;
            catalog.upsert(Entry {
                id: 0,
                name: format!("model:{name}"),
                kind: EntryKind::Model,
                sql: Some(sql.to_string()),
                schema: None,
                location: None,
                base_dir: None,
                state: Default::default(),
            })?;
        }
        self.models().insert(slot.clone());
        self.start_model_tasks(&slot);
        Ok(Output::command("CREATE MODEL"))
    }

    /// Runs the model's query, trains on a blocking thread (other queries go on), saves the
    /// result and swaps it in.
    async fn train(
        &self,
        session: &Session,
        slot: &Arc<ModelSlot>,
    ) -> Result<Arc<TrainedModel>, EngineError> {
        {
            let mut state = slot.state();
            if state.training {
                return Err(EngineError::new(
                    ErrorKind::InvalidStatement,
                    format!("model \"{}\" is already being trained", slot.name),
                ));
            }
            state.training = true;
        }
        let result = self.train_inner(session, slot).await;
        let mut state = slot.state();
        state.training = false;
        state.last_error = result.as_ref().err().map(|e| e.message().to_string());
        result
    }

    async fn train_inner(
        &self,
        session: &Session,
        slot: &Arc<ModelSlot>,
    ) -> Result<Arc<TrainedModel>, EngineError> {
        let definition = &slot.definition;
        // Where fresh interactions start: the fold-in source's end now, before the query reads.
        let fold_in_from = match &definition.fold_in_source {
            Some(source) => {
                let key = table_key(&TableReference::from(source.as_str()));
                match self.source(&key) {
                    Some(handle) => handle
                        .source
                        .positions()
                        .await?
                        .iter()
                        .map(|s| (s.partition, s.end))
                        .collect(),
                    None => BTreeMap::new(),
                }
            }
            None => BTreeMap::new(),
        };
        let plan = self.plan_query(session, &definition.query).await?;
        let frame = session.context().execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        let name = slot.name.clone();
        let params = definition.params.clone();
        let dir = store::dir(self.data_dir(), &name);
        let saved_from = fold_in_from.clone();
        let trained = tokio::task::spawn_blocking(move || -> Result<TrainedModel, EngineError> {
            let started = Instant::now();
            let mut model = ratings_model(&schema, &batches, &params)?;
            model.fold_in_from = saved_from;
            let ratings = model_ratings(&model);
            let mut last_rmse = f64::NAN;
            let factors = als::train(&ratings, &params, &mut |report| {
                last_rmse = report.rmse;
                tracing::info!(
                    model = %name,
                    iteration = report.iteration,
                    loss = report.rmse,
                    seconds = format!("{:.2}", report.seconds),
                    "training"
                );
            })
            .map_err(|e| {
                EngineError::new(
                    ErrorKind::InvalidParameterValue,
                    format!("model {name}: {e}"),
                )
            })?;
            model.model = factors;
            model.stats = TrainingStats {
                ratings: ratings.values.len() as u64,
                trained_at_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0),
                training_seconds: started.elapsed().as_secs_f64(),
                training_rmse: if params.implicit {
                    last_rmse
                } else {
                    model.model.rmse(&ratings)
                },
            };
            store::save(&dir, &model)?;
            tracing::info!(
                model = %name,
                users = model.user_ids.len(),
                items = model.item_ids.len(),
                ratings = model.stats.ratings,
                seconds = format!("{:.2}", model.stats.training_seconds),
                rmse = model.stats.training_rmse,
                "model trained"
            );
            Ok(model)
        })
        .await
        .map_err(|e| EngineError::internal(format!("training task failed: {e}")))??;
        let trained = Arc::new(trained);
        *slot.fold_in_from.lock().unwrap_or_else(|p| p.into_inner()) = fold_in_from;
        slot.install(trained.clone());
        Ok(trained)
    }

    async fn drop_model(&self, name: &str, if_exists: bool) -> Result<Output, EngineError> {
        let key = name.to_ascii_lowercase();
        let mut catalog = self.catalog().lock().await;
        if self.models().get(&key).is_none() {
            if if_exists {
                return Ok(Output::command("DROP MODEL"));
            }
            return Err(unknown_model(name));
        }
        catalog.remove(&format!("model:{key}"))?;
        self.models().remove(&key);
        store::remove(&store::dir(self.data_dir(), &key));
        Ok(Output::command("DROP MODEL"))
    }

    fn show_models(&self) -> Result<Output, EngineError> {
        let slots = self.models().all();
        let trained: Vec<Option<Arc<TrainedModel>>> = slots.iter().map(|s| s.current()).collect();
        let states: Vec<_> = slots.iter().map(|s| s.state().clone()).collect();
        let schema = show_models_schema();
        let stat = |f: &dyn Fn(&TrainedModel) -> i64| -> Int64Array {
            trained.iter().map(|t| t.as_ref().map(|t| f(t))).collect()
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                slots.iter().map(|s| s.name.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(slots.iter().map(|s| {
                if s.definition.params.implicit {
                    "als (implicit)"
                } else {
                    "als"
                }
            }))),
            Arc::new(Int64Array::from_iter_values(
                slots.iter().map(|s| s.definition.params.rank as i64),
            )),
            Arc::new(stat(&|t| t.user_ids.len() as i64)),
            Arc::new(stat(&|t| t.item_ids.len() as i64)),
            Arc::new(stat(&|t| t.stats.ratings as i64)),
            Arc::new(
                trained
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.stats.trained_at_ms))
                    .collect::<TimestampMillisecondArray>(),
            ),
            Arc::new(
                trained
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.stats.training_seconds))
                    .collect::<Float64Array>(),
            ),
            Arc::new(
                trained
                    .iter()
                    .map(|t| t.as_ref().map(|t| t.stats.training_rmse))
                    .collect::<Float64Array>(),
            ),
            Arc::new(StringArray::from_iter_values(
                slots
                    .iter()
                    .zip(&states)
                    .zip(&trained)
                    .map(|((_, state), trained)| {
                        match (state.training, trained, &state.last_error) {
                            (true, _, _) => "training",
                            (false, Some(_), None) => "ready",
                            (false, Some(_), Some(_)) => "ready (last refresh failed)",
                            (false, None, Some(_)) => "failed",
                            (false, None, None) => "not trained",
                        }
                    }),
            )),
            Arc::new(StringArray::from_iter(slots.iter().map(|s| {
                s.definition
                    .refresh_interval_ms
                    .map(|ms| format!("{}s", ms as f64 / 1000.0))
            }))),
            Arc::new(StringArray::from_iter(
                slots.iter().map(|s| s.definition.fold_in_source.clone()),
            )),
            Arc::new(StringArray::from_iter(
                states.iter().map(|s| s.last_error.clone()),
            )),
        ];
        Output::rows(schema.clone(), vec![RecordBatch::try_new(schema, columns)?])
    }

    /// Restores a model at start-up: its last saved version, or a training if it has none.
    pub(crate) async fn restore_model(
        &self,
        _session: &Session,
        entry: &Entry,
    ) -> Result<(), EngineError> {
        let sql = entry.sql.as_deref().unwrap_or_default();
        let Some(ModelStatement::Create(create)) =
            parse_model_statement(&crate::statement::tokens::RawStatement::from_text(sql)?)?
        else {
            return Err(EngineError::internal("catalog entry is not CREATE MODEL"));
        };
        let name = create.name.to_ascii_lowercase();
        let slot = Arc::new(ModelSlot::new(&name, create.definition.clone()));
        let dir = store::dir(self.data_dir(), &name);
        let loaded = tokio::task::spawn_blocking(move || store::load(&dir))
            .await
            .map_err(|e| EngineError::internal(e.to_string()))??;
        self.models().insert(slot.clone());
        match loaded {
            Some(model) => {
                // Fold in from where the saved model's training query started; a model saved
                // without those positions folds in from now on (the next refresh includes
                // everything).
                if !model.fold_in_from.is_empty() {
                    *slot.fold_in_from.lock().unwrap_or_else(|p| p.into_inner()) =
                        model.fold_in_from.clone();
                } else if let Some(source) = &create.definition.fold_in_source {
                    let key = table_key(&TableReference::from(source.as_str()));
                    if let Some(handle) = self.source(&key) {
                        if let Ok(splits) = handle.source.positions().await {
                            *slot.fold_in_from.lock().unwrap_or_else(|p| p.into_inner()) =
                                splits.iter().map(|s| (s.partition, s.end)).collect();
                        }
                    }
                }
                slot.install(Arc::new(model))
            }
            None => {
                let engine = self.clone();
                let slot = slot.clone();
                tokio::spawn(async move {
                    let session = engine.new_session("freshet");
                    if let Err(err) = engine.train(&session, &slot).await {
                        tracing::error!(model = %slot.name, error = %err, "training at start-up failed");
                    }
                });
            }
        }
        self.start_model_tasks(&slot);
        Ok(())
    }

    /// The refresh schedule and the fold-in reader of a model.
    fn start_model_tasks(&self, slot: &Arc<ModelSlot>) {
        let mut tasks = slot.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ms) = slot.definition.refresh_interval_ms {
            let engine = self.clone();
            let slot = slot.clone();
            tasks.push(tokio::spawn(async move {
                let session = engine.new_session("freshet");
                loop {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    match engine.train(&session, &slot).await {
                        Ok(_) => tracing::info!(model = %slot.name, "model refreshed"),
                        Err(err) => {
                            tracing::warn!(model = %slot.name, error = %err, "scheduled refresh failed; the previous model stays")
                        }
                    }
                }
            }));
        }
        if let Some(source) = slot.definition.fold_in_source.clone() {
            let engine = self.clone();
            let slot = slot.clone();
            tasks.push(tokio::spawn(async move {
                fold_in_reader(engine, slot, source).await;
            }));
        }
    }
}

fn unknown_model(name: &str) -> EngineError {
    EngineError::new(
        ErrorKind::UndefinedObject,
        format!("model \"{name}\" does not exist"),
    )
}

/// Reads the fold-in source continuously and keeps, per user, the interactions that arrived
/// after the current model was trained. The source needs the training query's user and item
/// column names; a rating column of the same name is used when present, 1 otherwise.
async fn fold_in_reader(engine: Engine, slot: Arc<ModelSlot>, source: String) {
    let key = table_key(&TableReference::from(source.as_str()));
    let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
    let mut generation = u64::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (Some(handle), Some(model)) = (engine.source(&key), slot.current()) else {
            continue;
        };
        let splits = match handle.source.positions().await {
            Ok(splits) => splits,
            Err(err) => {
                tracing::warn!(model = %slot.name, error = %err, "fold-in source unreadable");
                continue;
            }
        };
        if slot.generation() != generation {
            // A new model: what arrived after its query started is fresh.
            generation = slot.generation();
            positions = slot
                .fold_in_from
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
        }
        for split in splits {
            let start = *positions.entry(split.partition).or_insert(split.start);
            if split.end <= start {
                continue;
            }
            let read = Split {
                partition: split.partition,
                start,
                end: split.end,
            };
            let batches: Result<Vec<RecordBatch>, _> =
                handle.source.read(read, None, 8192).try_collect().await;
            match batches {
                Ok(batches) => {
                    positions.insert(split.partition, split.end);
                    if let Err(err) = fold_in(&slot, &model, &batches) {
                        tracing::warn!(model = %slot.name, error = %err, "fold-in skipped a batch");
                    }
                }
                Err(err) => {
                    tracing::warn!(model = %slot.name, error = %err, "fold-in source unreadable");
                    break;
                }
            }
        }
    }
}

fn fold_in(
    slot: &ModelSlot,
    model: &TrainedModel,
    batches: &[RecordBatch],
) -> Result<(), EngineError> {
    let mut fresh = slot.fresh.lock().unwrap_or_else(|p| p.into_inner());
    for batch in batches {
        let column = |name: &str| batch.column_by_name(name).cloned();
        let (Some(users), Some(items)) = (column(&model.columns[0]), column(&model.columns[1]))
        else {
            return Err(EngineError::new(
                ErrorKind::UndefinedColumn,
                format!(
                    "the fold-in source has no columns {} and {}",
                    model.columns[0], model.columns[1]
                ),
            ));
        };
        let users = model.user_kind.ids(&users)?;
        let items = model.item_kind.ids(&items)?;
        let values: Vec<Option<f32>> = match column(&model.columns[2]) {
            Some(values) => {
                let values = cast(&values, &DataType::Float32)?;
                let values = values
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or_else(|| EngineError::internal("rating cast"))?
                    .clone();
                values.iter().collect()
            }
            None => vec![Some(1.0); batch.num_rows()],
        };
        for ((user, item), value) in users.into_iter().zip(items).zip(values) {
            let (Some(user), Some(item), Some(value)) = (user, item, value) else {
                continue;
            };
            match model.item(&item) {
                Some(item) => fresh.by_user.entry(user).or_default().push((item, value)),
                None => fresh.unknown_items += 1,
            }
        }
    }
    Ok(())
}

/// Builds ids, indices and per-user interactions from the training query's rows. The factors
/// are filled in by the training.
fn ratings_model(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    params: &als::AlsParams,
) -> Result<TrainedModel, EngineError> {
    let fields = schema.fields();
    let needed = if params.implicit { 2 } else { 3 };
    if fields.len() < needed {
        return Err(EngineError::new(
            ErrorKind::InvalidStatement,
            format!(
                "the training query must return user, item{} columns, found {}",
                if params.implicit {
                    " (and a count or confidence)"
                } else {
                    " and rating"
                },
                fields.len()
            ),
        ));
    }
    let user_kind = IdKind::of(fields[0].data_type(), "user (first)")?;
    let item_kind = IdKind::of(fields[1].data_type(), "item (second)")?;
    if fields.len() > 2 && !fields[2].data_type().is_numeric() {
        return Err(EngineError::new(
            ErrorKind::InvalidStatement,
            format!(
                "the rating (third) column must be numeric, not {}",
                fields[2].data_type()
            ),
        ));
    }
    let mut user_ids = Vec::new();
    let mut item_ids = Vec::new();
    let mut user_index: HashMap<Id, u32> = HashMap::new();
    let mut item_index: HashMap<Id, u32> = HashMap::new();
    let mut pairs: HashMap<(u32, u32), f32> = HashMap::new();
    let mut order: Vec<(u32, u32)> = Vec::new();
    for batch in batches {
        let users = user_kind.ids(batch.column(0))?;
        let items = item_kind.ids(batch.column(1))?;
        let values: Vec<Option<f32>> = if fields.len() > 2 {
            let values = cast(batch.column(2), &DataType::Float64)?;
            let values = values
                .as_any()
                .downcast_ref::<Float64Array>()
                .ok_or_else(|| EngineError::internal("rating cast"))?
                .clone();
            values.iter().map(|v| v.map(|v| v as f32)).collect()
        } else {
            vec![Some(1.0); batch.num_rows()]
        };
        for ((user, item), value) in users.into_iter().zip(items).zip(values) {
            let (Some(user), Some(item), Some(value)) = (user, item, value) else {
                continue;
            };
            if !value.is_finite() {
                return Err(EngineError::new(
                    ErrorKind::DataException,
                    format!("rating {value} is not a finite number"),
                ));
            }
            let u = *user_index.entry(user.clone()).or_insert_with(|| {
                user_ids.push(user);
                (user_ids.len() - 1) as u32
            });
            let i = *item_index.entry(item.clone()).or_insert_with(|| {
                item_ids.push(item);
                (item_ids.len() - 1) as u32
            });
            match pairs.get_mut(&(u, i)) {
                // Implicit feedback adds up; an explicit rating given again replaces the old.
                Some(old) if params.implicit => *old += value,
                Some(old) => *old = value,
                None => {
                    pairs.insert((u, i), value);
                    order.push((u, i));
                }
            }
        }
    }
    if order.is_empty() {
        return Err(EngineError::new(
            ErrorKind::InvalidStatement,
            "the training query returned no ratings (rows with NULL ids or ratings are skipped)",
        ));
    }
    // Indexes follow the ids' order, not the order the query returned them in (which a
    // parallel scan does not fix): the seed then gives the same model for the same ratings.
    let (user_ids, new_user, user_index) = sorted_ids(user_ids);
    let (item_ids, new_item, item_index) = sorted_ids(item_ids);
    let mut rated = vec![Vec::new(); user_ids.len()];
    for (u, i) in &order {
        rated[new_user[*u as usize] as usize].push((new_item[*i as usize], pairs[&(*u, *i)]));
    }
    for list in &mut rated {
        list.sort_by_key(|(i, _)| *i);
    }
    let columns = [
        fields[0].name().clone(),
        fields[1].name().clone(),
        fields.get(2).map(|f| f.name().clone()).unwrap_or_default(),
    ];
    Ok(TrainedModel {
        params: params.clone(),
        model: als::AlsModel {
            rank: params.rank,
            n_users: user_ids.len(),
            n_items: item_ids.len(),
            user_factors: Vec::new(),
            item_factors: Vec::new(),
        },
        user_kind,
        item_kind,
        user_index,
        item_index,
        user_ids,
        item_ids,
        rated,
        columns,
        stats: TrainingStats::default(),
        fold_in_from: BTreeMap::new(),
    })
}

/// The solver's input: every (user, item, value) once.
/// `ids` sorted, the new index of each old one, and the index of each id.
fn sorted_ids(ids: Vec<Id>) -> (Vec<Id>, Vec<u32>, HashMap<Id, u32>) {
    let mut by_id: Vec<(Id, u32)> = ids.into_iter().zip(0..).collect();
    by_id.sort_unstable();
    let mut new_of_old = vec![0u32; by_id.len()];
    for (new, (_, old)) in by_id.iter().enumerate() {
        new_of_old[*old as usize] = new as u32;
    }
    let ids: Vec<Id> = by_id.into_iter().map(|(id, _)| id).collect();
    let index = ids.iter().cloned().zip(0..).collect();
    (ids, new_of_old, index)
}

fn model_ratings(model: &TrainedModel) -> Ratings {
    let mut ratings = Ratings {
        n_users: model.user_ids.len(),
        n_items: model.item_ids.len(),
        users: Vec::new(),
        items: Vec::new(),
        values: Vec::new(),
    };
    for (user, rated) in model.rated.iter().enumerate() {
        for (item, value) in rated {
            ratings.users.push(user as u32);
            ratings.items.push(*item);
            ratings.values.push(*value);
        }
    }
    ratings
}

fn show_models_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("algorithm", DataType::Utf8, false),
        Field::new("rank", DataType::Int64, false),
        Field::new("users", DataType::Int64, true),
        Field::new("items", DataType::Int64, true),
        Field::new("ratings", DataType::Int64, true),
        Field::new(
            "trained_at",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        Field::new("training_seconds", DataType::Float64, true),
        Field::new("training_rmse", DataType::Float64, true),
        Field::new("state", DataType::Utf8, false),
        Field::new("refresh_interval", DataType::Utf8, true),
        Field::new("fold_in_source", DataType::Utf8, true),
        Field::new("last_error", DataType::Utf8, true),
    ]))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float64Array, Int64Array};

    use super::*;

    fn batch(rows: &[(i64, i64, f64)]) -> (SchemaRef, RecordBatch) {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Int64, false),
            Field::new("item_id", DataType::Int64, false),
            Field::new("rating", DataType::Float64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ],
        )
        .unwrap();
        (schema, batch)
    }

    /// The same ratings in another row order (a parallel scan gives no fixed order) train the
    /// same model for a seed.
    #[test]
    fn the_order_of_the_rows_does_not_change_the_model() {
        let rows: Vec<(i64, i64, f64)> = (0..300)
            .map(|n| (n % 17 * 3, (n * 7) % 23 + 100, (1 + n % 5) as f64))
            .collect();
        let mut reversed = rows.clone();
        reversed.reverse();
        let params = als::AlsParams {
            rank: 4,
            iterations: 3,
            ..Default::default()
        };
        let train = |rows: &[(i64, i64, f64)]| {
            let (schema, batch) = batch(rows);
            let mut model = ratings_model(&schema, &[batch], &params).unwrap();
            let factors = als::train(&model_ratings(&model), &params, &mut |_| {}).unwrap();
            model.model = factors;
            model
        };
        let (forward, backward) = (train(&rows), train(&reversed));
        assert_eq!(forward.user_ids, backward.user_ids);
        assert_eq!(forward.item_ids, backward.item_ids);
        assert_eq!(forward.rated, backward.rated);
        assert_eq!(forward.model.user_factors, backward.model.user_factors);
        assert_eq!(forward.model.item_factors, backward.model.item_factors);
    }
}
