//! sqllogictest files (`tests/slt/*.slt`) run over pgwire against a real server.
//!
//! Each file gets its own server, data directory and scratch folder. In a file:
//! - `__SCRATCH__` is the server's working directory (an allowed root), with the fixtures of
//!   `tests/data` copied to `__SCRATCH__/data`;
//! - a line `# freshet: restart` stops the server (SIGTERM) and starts it again on the same
//!   data directory, to test what survives a restart.
//!
//! The type letters of a `query` record are checked against the column types the server
//! describes: `I` for integers, `R` for floating point and numeric, `B` for booleans, `T` for
//! everything else.
//!
//! `FRESHET_SLT_COMPLETE=1 cargo test slt` rewrites the expected output of files without a
//! restart marker (review the diff before committing).

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tokio_postgres::SimpleQueryMessage;

use crate::common::{copy_fixtures, tests_dir, Options, TestServer};

const RESTART_MARKER: &str = "# freshet: restart";

struct Postgres {
    client: tokio_postgres::Client,
}

impl Postgres {
    /// The type letter of each result column, from the types the server describes for the
    /// statement (prepared over the extended protocol): `I` integers, `R` floating point and
    /// numeric, `B` booleans, `T` everything else. `?` when the statement cannot be described, which fails
    /// any expected letter.
    async fn column_types(&self, sql: &str, columns: usize) -> Vec<DefaultColumnType> {
        use tokio_postgres::types::Type;
        let Ok(statement) = self.client.prepare(sql).await else {
            return vec![DefaultColumnType::Any; columns];
        };
        statement
            .columns()
            .iter()
            .map(|column| match *column.type_() {
                Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
                Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
                // sqllogictest's letters have none for booleans: `B` (read as "any") is theirs.
                Type::BOOL => DefaultColumnType::Any,
                _ => DefaultColumnType::Text,
            })
            .collect()
    }
}

#[derive(Debug)]
struct SltError(tokio_postgres::Error);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.as_db_error() {
            Some(db) => write!(f, "{}", db.message()),
            None => write!(f, "{}", self.0),
        }
    }
}

impl std::error::Error for SltError {}

#[async_trait]
impl sqllogictest::AsyncDB for Postgres {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let messages = self.client.simple_query(sql).await.map_err(SltError)?;
        let mut rows = Vec::new();
        let mut columns = None;
        let mut affected = 0;
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(description) => {
                    columns = Some(description.len())
                }
                SimpleQueryMessage::Row(row) => {
                    columns = Some(row.len());
                    rows.push(
                        (0..row.len())
                            .map(|i| match row.get(i) {
                                None => "NULL".to_string(),
                                Some("") => "(empty)".to_string(),
                                Some(text) => text.to_string(),
                            })
                            .collect(),
                    );
                }
                SimpleQueryMessage::CommandComplete(n) => affected = n,
                _ => {}
            }
        }
        match columns {
            Some(n) => Ok(DBOutput::Rows {
                types: self.column_types(sql, n).await,
                rows,
            }),
            None => Ok(DBOutput::StatementComplete(affected)),
        }
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "freshet"
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await
    }

    fn error_sql_state(err: &SltError) -> Option<String> {
        err.0.code().map(|c| c.code().to_string())
    }
}

fn runner(
    server: &TestServer,
) -> Runner<Postgres, impl sqllogictest::MakeConnection<Conn = Postgres>> {
    let conn = server.conn_string("slt", None);
    Runner::new(move || {
        let conn = conn.clone();
        async move {
            let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                .await
                .map_err(SltError)?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Postgres { client })
        }
    })
}

fn slt_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(tests_dir().join("slt"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    files
}

async fn run_file(path: &Path) -> Result<(), String> {
    let work = tempfile::tempdir().unwrap();
    copy_fixtures(work.path());
    let scratch = work.path().canonicalize().unwrap().display().to_string();
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("__SCRATCH__", &scratch);
    let name = path.file_name().unwrap().to_string_lossy().to_string();

    if std::env::var("FRESHET_SLT_COMPLETE").is_ok() && !text.contains(RESTART_MARKER) {
        // Complete a copy with the scratch path filled in, then put the placeholder back.
        let server = TestServer::start(work.path(), &Options::default());
        let copy = work.path().join(&name);
        std::fs::write(&copy, &text).unwrap();
        runner(&server)
            .update_test_file(
                &copy,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::strict_column_validator,
            )
            .await
            .map_err(|e| format!("{name}: {e}"))?;
        let completed = std::fs::read_to_string(&copy)
            .unwrap()
            .replace(&scratch, "__SCRATCH__");
        std::fs::write(path, completed).unwrap();
        return Ok(());
    }

    let mut server = TestServer::start(work.path(), &Options::default());
    for (index, part) in text.split(RESTART_MARKER).enumerate() {
        if index > 0 {
            server.stop();
            server = TestServer::start(work.path(), &Options::default());
        }
        let mut runner = runner(&server);
        // Column type letters are checked: `query IT` must return an integer and a text column.
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if let Err(err) = runner.run_script_async(part).await {
            return Err(format!(
                "{name} (part {} after {index} restart(s)): {err}\nserver log:\n{}",
                index + 1,
                server.logs()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqllogictest_files_pass() {
    let files = slt_files();
    assert!(!files.is_empty(), "no .slt files found under tests/slt");
    let mut failures = Vec::new();
    for file in &files {
        if let Err(err) = run_file(file).await {
            failures.push(err);
        }
    }
    assert!(
        failures.is_empty(),
        "{} slt file(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}
