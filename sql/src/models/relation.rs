//! Models as relations, so catalog browsers (psql, BI tools, SQLAlchemy) see them.
//!
//! Schema `models` holds one read-only view per trained model: `models.<name>` has the
//! columns `user_id, item_id, score` (the ids typed as the model was trained on, `score` a
//! `real`) and its rows are the top [`RELATION_TOP_K`] items of every user, exactly
//! `SELECT * FROM recommend_all('<name>', 10)`. The rows are computed when the relation is
//! scanned, from the model installed at that moment. A model still in its first training is
//! not listed (its id types are not known yet).
//!
//! The schema is computed from the model registry on every lookup, so a created or dropped
//! model appears or disappears at once. Tables cannot be created in it.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{MemTable, SchemaProvider, Session as DfSession, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use super::functions::{recommend_all, recommendation_schema};
use super::{Models, TrainedModel};
use crate::error::{EngineError, ErrorKind};

/// The schema models are listed in.
pub(crate) const MODELS_SCHEMA: &str = "models";

/// How many items per user a model's relation holds.
pub(crate) const RELATION_TOP_K: usize = 10;

/// The `models` schema: one view per trained model.
#[derive(Debug)]
pub(crate) struct ModelsSchema {
    models: Arc<Models>,
}

impl ModelsSchema {
    pub(crate) fn new(models: Arc<Models>) -> Self {
        Self { models }
    }

    fn read_only(&self, name: &str) -> datafusion::error::DataFusionError {
        EngineError::new(
            ErrorKind::InvalidStatement,
            format!(
                "schema \"{MODELS_SCHEMA}\" lists the recommendation models and is read-only; \"{name}\" cannot be created or dropped there (use CREATE MODEL / DROP MODEL)"
            ),
        )
        .into()
    }
}

#[async_trait]
impl SchemaProvider for ModelsSchema {
    fn table_names(&self) -> Vec<String> {
        self.models
            .names()
            .into_iter()
            .filter(|name| self.models.get(name).and_then(|s| s.current()).is_some())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(model) = self.models.get(name).and_then(|slot| slot.current()) else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ModelRelation::new(name, model))))
    }

    fn register_table(
        &self,
        name: String,
        _table: Arc<dyn TableProvider>,
    ) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(self.read_only(&name))
    }

    fn deregister_table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(self.read_only(name))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.models
            .get(name)
            .and_then(|slot| slot.current())
            .is_some()
    }
}

/// `models.<name>`: the top recommendations of every user of one trained model.
#[derive(Debug)]
struct ModelRelation {
    model: Arc<TrainedModel>,
    schema: SchemaRef,
    definition: String,
}

impl ModelRelation {
    fn new(name: &str, model: Arc<TrainedModel>) -> Self {
        let schema = recommendation_schema(&model);
        let quoted = name.replace('\'', "''");
        Self {
            model,
            schema,
            definition: format!("SELECT * FROM recommend_all('{quoted}', {RELATION_TOP_K})"),
        }
    }
}

#[async_trait]
impl TableProvider for ModelRelation {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    fn get_table_definition(&self) -> Option<&str> {
        Some(&self.definition)
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // Computed here, not when the relation is looked up: catalog queries look every
        // relation up and must stay cheap.
        let batch = recommend_all(&self.model, RELATION_TOP_K, true)?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}
