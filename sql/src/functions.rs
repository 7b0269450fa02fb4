//! Functions Freshet adds to every session, written with DataFusion's public UDF API.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};

use crate::session::PG_SERVER_VERSION;

/// The `version()` string. Clients parse "PostgreSQL <major>.<minor>" out of it, so it starts
/// like PostgreSQL's and names Freshet after.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_SERVER_VERSION} (Freshet {}) on {}-{}, a real-time analytics SQL server",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH,
        std::env::consts::OS
    )
}

/// `version()`, replacing DataFusion's own.
pub fn version_udf() -> ScalarUDF {
    let text = version_string();
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_args: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))
        }),
    )
}

/// `pg_advisory_unlock_all()`: Freshet takes no advisory locks, so there is none to release.
/// Connection pools (asyncpg) call it when a connection is given back.
pub fn advisory_unlock_all_udf() -> ScalarUDF {
    create_udf(
        "pg_advisory_unlock_all",
        vec![],
        DataType::Null,
        Volatility::Volatile,
        Arc::new(|_args: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Null))),
    )
}
