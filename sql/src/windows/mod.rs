//! Window table functions: `TUMBLE(table, time_col, size)` and `HOP(table, time_col, slide,
//! size)`, over any table or view with a timestamp column, bounded or not.
//!
//! ```sql
//! SELECT window_start, window_end, count(*)
//! FROM TUMBLE(clicks, ts, INTERVAL '1 minute')
//! GROUP BY window_start, window_end;
//! -- Flink's form is accepted too:
//! SELECT … FROM TABLE(HOP(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '5' MINUTE));
//! ```
//!
//! This module owns the functions (written with DataFusion's public `TableFunctionImpl`, like a
//! user's would be), the window arithmetic ([`WindowSpec`]), the expanded plan
//! ([`WindowTable`]) and the rewrite of Flink's syntax. It does not run anything continuously:
//! the streaming runtime recognises windows in a planned query with [`find_windows`] and
//! [`window_column`] (see [`WindowTable`] for that contract) and keeps the window state itself.

mod function;
mod plan;
mod rewrite;
mod spec;

use std::sync::Arc;

use datafusion::execution::context::SessionContext;

pub use plan::{find_windows, WindowTable, WINDOW_END, WINDOW_START};
pub(crate) use rewrite::rewrite_flink_window_syntax;
pub use spec::{window_column, WindowColumn, WindowKind, WindowRole, WindowSpec};

/// Registers `tumble` and `hop` in `context`. The names are lower-case because DataFusion looks
/// table functions up by the name as written; [`rewrite_flink_window_syntax`] lower-cases
/// `TUMBLE(` and `HOP(` in statements before they are parsed.
pub(crate) fn register(context: &SessionContext) {
    context.register_udtf(
        "tumble",
        Arc::new(function::WindowFunction::new(WindowKind::Tumble)),
    );
    context.register_udtf(
        "hop",
        Arc::new(function::WindowFunction::new(WindowKind::Hop)),
    );
}

#[cfg(test)]
mod tests;
