//! Recommendation models trained and served in SQL.
//!
//! ```sql
//! CREATE MODEL movie_recs USING als
//!   WITH (rank = 10, iterations = 10, regularization = 0.1, implicit = false, alpha = 1.0, seed = 42)
//!   AS SELECT user_id, item_id, rating FROM ratings;
//! SELECT * FROM recommend('movie_recs', 196, 5);
//! SELECT predict_rating('movie_recs', user_id, item_id) FROM test;
//! ```
//!
//! - [`als`]: the solver (no SQL in it).
//! - [`statements`]: `CREATE/DROP/SHOW MODEL(S)`, `REFRESH MODEL`.
//! - [`ops`]: training from a query, the model registry, refresh schedules, fold-in.
//! - [`functions`]: `recommend`, `recommend_users`, `recommend_all`, `predict_rating`.
//! - [`store`]: models on disk, under `<data-dir>/models/<name>/`.

pub mod als;
mod functions;
mod ops;
mod relation;
pub mod statements;
mod store;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use self::als::{AlsModel, AlsParams};
use crate::error::{EngineError, ErrorKind};

pub(crate) use functions::register;
pub(crate) use relation::{ModelsSchema, MODELS_SCHEMA};

/// A user or item id as the training query gave it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Id {
    Int(i64),
    Text(String),
}

/// Whether a model's ids are integers or text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IdKind {
    Int,
    Text,
}

impl IdKind {
    /// The kind of ids a column of `data_type` holds.
    pub fn of(data_type: &DataType, what: &str) -> Result<Self, EngineError> {
        if data_type.is_integer() {
            Ok(IdKind::Int)
        } else if matches!(
            data_type,
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            Ok(IdKind::Text)
        } else {
            Err(EngineError::new(
                ErrorKind::InvalidStatement,
                format!("the {what} column must hold integer or text ids, not {data_type}"),
            ))
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            IdKind::Int => DataType::Int64,
            IdKind::Text => DataType::Utf8,
        }
    }

    /// The ids of `array` (NULL → None); integers and text are converted to this kind.
    pub fn ids(self, array: &ArrayRef) -> Result<Vec<Option<Id>>, EngineError> {
        let converted = cast(array, &self.data_type()).map_err(|e| {
            EngineError::new(
                ErrorKind::DataException,
                format!("ids of type {} cannot be used: {e}", array.data_type()),
            )
        })?;
        Ok(match self {
            IdKind::Int => {
                let ints = converted
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .ok_or_else(|| EngineError::internal("id cast to Int64"))?;
                ints.iter().map(|v| v.map(Id::Int)).collect()
            }
            IdKind::Text => {
                let text = converted
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| EngineError::internal("id cast to Utf8"))?;
                text.iter()
                    .map(|v| v.map(|s| Id::Text(s.to_string())))
                    .collect()
            }
        })
    }

    /// An Arrow array of `ids` (all of this kind).
    pub fn array<'a>(self, ids: impl Iterator<Item = &'a Id>) -> ArrayRef {
        match self {
            IdKind::Int => Arc::new(Int64Array::from_iter_values(ids.map(|id| match id {
                Id::Int(v) => *v,
                Id::Text(_) => 0,
            }))),
            IdKind::Text => Arc::new(StringArray::from_iter_values(ids.map(|id| match id {
                Id::Text(v) => v.as_str(),
                Id::Int(_) => "",
            }))),
        }
    }
}

/// What SHOW MODELS reports about a training.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TrainingStats {
    pub ratings: u64,
    pub trained_at_ms: i64,
    pub training_seconds: f64,
    pub training_rmse: f64,
}

/// A trained model with its id mappings: what queries use. Replaced whole by a retraining.
#[derive(Debug)]
pub struct TrainedModel {
    pub params: AlsParams,
    pub model: AlsModel,
    pub user_kind: IdKind,
    pub item_kind: IdKind,
    pub user_ids: Vec<Id>,
    pub item_ids: Vec<Id>,
    pub user_index: HashMap<Id, u32>,
    pub item_index: HashMap<Id, u32>,
    /// Per user, the (item, value) pairs it was trained on, sorted by item.
    pub rated: Vec<Vec<(u32, f32)>>,
    /// Column names of the training query (user, item, rating).
    pub columns: [String; 3],
    pub stats: TrainingStats,
    /// The fold-in source's read positions (partition → offset) when the training query
    /// started: interactions after them are fresh for this model. Saved with it, so after a
    /// restart fold-in resumes from there. Empty without `fold_in_source`.
    pub fold_in_from: BTreeMap<i32, i64>,
}

impl TrainedModel {
    pub fn user(&self, id: &Id) -> Option<u32> {
        self.user_index.get(id).copied()
    }

    pub fn item(&self, id: &Id) -> Option<u32> {
        self.item_index.get(id).copied()
    }
}

/// CREATE MODEL's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDefinition {
    pub params: AlsParams,
    /// The training query.
    pub query: String,
    /// Retrain every this many milliseconds.
    pub refresh_interval_ms: Option<u64>,
    /// A source whose new interactions are folded in at recommendation time.
    pub fold_in_source: Option<String>,
}

/// Interactions that arrived after the model was trained, per user (fold-in).
#[derive(Debug, Default)]
pub struct Fresh {
    /// Per user id, (item index, value) in arrival order.
    pub by_user: HashMap<Id, Vec<(u32, f32)>>,
    /// Interactions with an item the model does not know (they cannot be folded in).
    pub unknown_items: u64,
}

/// A model: its definition, the current trained version, and its background work.
#[derive(Debug)]
pub struct ModelSlot {
    pub name: String,
    pub definition: ModelDefinition,
    current: RwLock<Option<Arc<TrainedModel>>>,
    pub state: Mutex<SlotState>,
    pub fresh: Mutex<Fresh>,
    /// Bumped at every install, so the fold-in reader restarts from `fold_in_from`.
    generation: std::sync::atomic::AtomicU64,
    /// The fold-in source's read positions when the installed model's query started: the
    /// interactions from there on are the fresh ones.
    fold_in_from: Mutex<BTreeMap<i32, i64>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Training state for SHOW MODELS.
#[derive(Debug, Clone, Default)]
pub struct SlotState {
    pub training: bool,
    pub last_error: Option<String>,
}

impl ModelSlot {
    fn new(name: &str, definition: ModelDefinition) -> Self {
        Self {
            name: name.to_string(),
            definition,
            current: RwLock::new(None),
            state: Mutex::new(SlotState::default()),
            fresh: Mutex::new(Fresh::default()),
            generation: std::sync::atomic::AtomicU64::new(0),
            fold_in_from: Mutex::new(BTreeMap::new()),
            tasks: Mutex::new(Vec::new()),
        }
    }

    /// The model queries see now.
    pub fn current(&self) -> Option<Arc<TrainedModel>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a newly trained model: queries see the old one or the new one, never a mix.
    fn install(&self, model: Arc<TrainedModel>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(model);
        // Interactions before this training are in it (or were never meant to be).
        *self.fresh.lock().unwrap_or_else(|p| p.into_inner()) = Fresh::default();
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The interactions of `user` since the training, if any (fold-in).
    pub fn fresh_for(&self, user: &Id) -> Option<Vec<(u32, f32)>> {
        self.fresh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .by_user
            .get(user)
            .cloned()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stop_tasks(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// Every model, by name (lower-case).
#[derive(Debug, Default)]
pub struct Models {
    slots: RwLock<BTreeMap<String, Arc<ModelSlot>>>,
    /// Counts models added and removed.
    changes: std::sync::atomic::AtomicU64,
}

impl Models {
    /// Changes whenever a model is added, removed or retrained: plans capture the trained
    /// model they score, so a plan made before a change is made again.
    pub(crate) fn version(&self) -> (u64, u64) {
        let slots = self.slots.read().unwrap_or_else(|p| p.into_inner());
        (
            self.changes.load(std::sync::atomic::Ordering::SeqCst),
            slots.values().map(|slot| slot.generation()).sum(),
        )
    }

    pub fn get(&self, name: &str) -> Option<Arc<ModelSlot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The trained model `name`, or a clear error.
    pub fn trained(&self, name: &str) -> Result<Arc<TrainedModel>, EngineError> {
        let slot = self.get(name).ok_or_else(|| {
            EngineError::new(
                ErrorKind::UndefinedObject,
                format!("model \"{name}\" does not exist (SHOW MODELS lists the models)"),
            )
        })?;
        slot.current().ok_or_else(|| {
            EngineError::new(
                ErrorKind::UndefinedObject,
                format!("model \"{name}\" has not finished its first training yet"),
            )
        })
    }

    fn insert(&self, slot: Arc<ModelSlot>) {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(old) = self
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot.name.clone(), slot)
        {
            old.stop_tasks();
        }
    }

    fn remove(&self, name: &str) -> Option<Arc<ModelSlot>> {
        self.changes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let slot = self
            .slots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(slot) = &slot {
            slot.stop_tasks();
        }
        slot
    }

    /// The names of the models, sorted.
    pub fn names(&self) -> Vec<String> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn all(&self) -> Vec<Arc<ModelSlot>> {
        self.slots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}
