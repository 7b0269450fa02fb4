//! PostgreSQL compatibility of the catalog: what clients (psql, JDBC, SQLAlchemy, BI tools)
//! read to list and describe objects.
//!
//! - [`catalog`]: the `pg_catalog` tables built from the live catalog (`pg_class`,
//!   `pg_attribute`, `pg_namespace`, `pg_views` …) in front of `datafusion-pg-catalog`'s
//!   static tables.
//! - [`functions`]: catalog functions (`pg_get_userbyid`, `has_*_privilege`,
//!   `current_setting` …).
//! - [`information_schema`]: `information_schema` as PostgreSQL shapes it, from the same
//!   catalog and with the same column types.
//! - [`rewrite`]: rewrites of syntax DataFusion does not plan (`LIKE … ESCAPE`,
//!   `generate_subscripts`, correlated subqueries it does not decorrelate, `ARRAY(subquery)`).

mod catalog;
mod functions;
mod information_schema;
pub(crate) mod rewrite;

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};

pub(crate) use functions::register_session_functions;

use crate::error::EngineError;

/// Installs `pg_catalog` and the catalog functions in `context` for database `database`.
pub(crate) fn setup(context: &SessionContext, database: &str) -> Result<(), EngineError> {
    // The crate registers its functions, type planner and rewrites; its schema is then
    // replaced by Freshet's, which serves the crate's static tables unchanged.
    datafusion_pg_catalog::setup_pg_catalog(context, database, EmptyContextProvider)
        .map_err(|e| EngineError::from(*e))?;
    let catalogs = context.state().catalog_list().clone();
    let catalog = catalogs
        .catalog(database)
        .ok_or_else(|| EngineError::internal(format!("catalog {database} is missing")))?;
    let static_tables = Arc::new(PgCatalogStaticTables::try_new()?);
    let inner = Arc::new(PgCatalogSchemaProvider::try_new(
        catalogs.clone(),
        static_tables.clone(),
        EmptyContextProvider,
    )?);
    let static_types = catalog::static_types(&static_tables)?;
    let source = Arc::new(catalog::CatalogSource::new(catalogs.clone(), database));
    catalog.register_schema(
        "pg_catalog",
        Arc::new(catalog::PgCatalogSchema::new(
            inner,
            source.clone(),
            static_tables,
        )),
    )?;
    // DataFusion's own information_schema is turned off (see `build_context`), so this one is
    // found under the name.
    catalog.register_schema(
        datafusion::catalog::information_schema::INFORMATION_SCHEMA,
        Arc::new(information_schema::InformationSchema::new(
            source.clone(),
            catalogs.clone(),
        )),
    )?;
    functions::register(context, &source, static_types);
    Ok(())
}
