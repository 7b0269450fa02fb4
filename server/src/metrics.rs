//! Counters the HTTP endpoint exposes in Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Server-wide counters. Updated with relaxed atomics: they are statistics, not invariants.
#[derive(Debug, Default)]
pub struct Metrics {
    pub pg_connections_active: AtomicU64,
    pub pg_connections_total: AtomicU64,
    pub pg_connections_refused: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition of every counter; statement counts are the engine's,
    /// over every frontend.
    pub fn render(&self, engine: &freshet_sql::Engine) -> String {
        let (statements, statement_errors) = engine.statement_counts();
        let (statements, statement_errors, plans) = (
            AtomicU64::new(statements),
            AtomicU64::new(statement_errors),
            AtomicU64::new(engine.plans_made()),
        );
        let rows: [(&str, &str, &str, &AtomicU64); 6] = [
            (
                "freshet_pg_connections_active",
                "gauge",
                "Open PostgreSQL wire protocol connections.",
                &self.pg_connections_active,
            ),
            (
                "freshet_pg_connections_total",
                "counter",
                "PostgreSQL wire protocol connections served.",
                &self.pg_connections_total,
            ),
            (
                "freshet_pg_connections_refused_total",
                "counter",
                "Connections refused at the connection limit.",
                &self.pg_connections_refused,
            ),
            (
                "freshet_statements_total",
                "counter",
                "Statements run.",
                &statements,
            ),
            (
                "freshet_statement_errors_total",
                "counter",
                "Statements that failed before producing a result.",
                &statement_errors,
            ),
            (
                "freshet_statement_plans_total",
                "counter",
                "Logical plans made (a prepared statement run again reuses its plan).",
                &plans,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}
