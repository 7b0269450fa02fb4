//! The window functions planned and run by DataFusion, through the same registration and
//! rewrite the engine uses.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, TimestampMillisecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::catalog::MemTable;
use datafusion::execution::context::SessionContext;
use datafusion::physical_plan::displayable;

use super::*;
use crate::error::{EngineError, ErrorKind};

/// Events at 00:00:05, 23:59:59 the day before, 00:01:00, NULL and 00:02:30 (1970-01-01, UTC).
fn clicks() -> MemTable {
    let time_type = DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("ts", time_type, true),
    ]));
    let ids = Int64Array::from(vec![1, 2, 3, 4, 5]);
    let times = TimestampMillisecondArray::from(vec![
        Some(5_000),
        Some(-1_000),
        Some(60_000),
        None,
        Some(150_000),
    ])
    .with_timezone("+00:00");
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(times)])
        .expect("batch matches schema");
    MemTable::try_new(schema, vec![vec![batch]]).expect("one partition")
}

fn context() -> SessionContext {
    let context = SessionContext::new();
    register(&context);
    context
        .register_table("clicks", Arc::new(clicks()))
        .expect("register clicks");
    context
}

async fn run(context: &SessionContext, sql: &str) -> Result<String, EngineError> {
    let sql = rewrite_flink_window_syntax(sql)?;
    let batches = context.sql(&sql).await?.collect().await?;
    Ok(pretty_format_batches(&batches)?.to_string())
}

async fn plan_error(context: &SessionContext, sql: &str) -> EngineError {
    let sql = rewrite_flink_window_syntax(sql).expect("rewrite");
    match context.sql(&sql).await {
        Ok(frame) => panic!("planned: {}", frame.logical_plan().display_indent()),
        Err(err) => EngineError::from(err),
    }
}

/// The data rows of a pretty-printed table (no borders, no header).
fn rows(table: &str) -> Vec<&str> {
    table
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with('|'))
        .skip(1)
        .collect()
}

#[tokio::test]
async fn tumble_assigns_epoch_aligned_windows_and_drops_null_times() {
    let context = context();
    let table = run(
        &context,
        "SELECT id, window_start, window_end FROM TUMBLE(clicks, ts, INTERVAL '1 minute') ORDER BY id",
    )
    .await
    .unwrap();
    // Worked by hand: 00:00:05 → [00:00, 00:01); 23:59:59 the day before → [23:59, 00:00),
    // not [00:00, 00:01); 00:01:00 opens [00:01, 00:02); NULL is dropped; 00:02:30 → [00:02,
    // 00:03). The time zone of the column is kept.
    assert_eq!(
        rows(&table),
        vec![
            "| 1  | 1970-01-01T00:00:00Z | 1970-01-01T00:01:00Z |",
            "| 2  | 1969-12-31T23:59:00Z | 1970-01-01T00:00:00Z |",
            "| 3  | 1970-01-01T00:01:00Z | 1970-01-01T00:02:00Z |",
            "| 5  | 1970-01-01T00:02:00Z | 1970-01-01T00:03:00Z |",
        ]
    );
}

#[tokio::test]
async fn hop_puts_each_event_in_size_over_slide_windows() {
    let context = context();
    let table = run(
        &context,
        "SELECT window_start, count(*) AS n, string_agg(CAST(id AS VARCHAR), ',' ORDER BY id) AS ids \
         FROM HOP(clicks, ts, INTERVAL '1 minute', INTERVAL '2 minutes') \
         GROUP BY window_start ORDER BY window_start",
    )
    .await
    .unwrap();
    // By hand, windows of 2 minutes every minute: id 2 (23:59:59) is in the windows starting
    // 23:58 and 23:59; id 1 (00:00:05) in 23:59 and 00:00; id 3 (00:01:00) in 00:00 and 00:01;
    // id 5 (00:02:30) in 00:01 and 00:02. Eight rows for four events with a time.
    assert_eq!(
        rows(&table),
        vec![
            "| 1969-12-31T23:58:00Z | 1 | 2   |",
            "| 1969-12-31T23:59:00Z | 2 | 1,2 |",
            "| 1970-01-01T00:00:00Z | 2 | 1,3 |",
            "| 1970-01-01T00:01:00Z | 2 | 3,5 |",
            "| 1970-01-01T00:02:00Z | 1 | 5   |",
        ]
    );
}

#[tokio::test]
async fn hop_with_slide_equal_to_size_matches_tumble() {
    let context = context();
    let hop = run(
        &context,
        "SELECT id, window_start, window_end FROM HOP(clicks, ts, INTERVAL '1 minute', INTERVAL '60 seconds') ORDER BY id",
    )
    .await
    .unwrap();
    let tumble = run(
        &context,
        "SELECT id, window_start, window_end FROM TUMBLE(clicks, ts, INTERVAL '1 minute') ORDER BY id",
    )
    .await
    .unwrap();
    assert_eq!(hop, tumble);
}

#[tokio::test]
async fn flink_form_gives_the_same_rows_as_the_plain_form() {
    let context = context();
    let flink = run(
        &context,
        "SELECT window_start, count(*) FROM TABLE(HOP(TABLE clicks, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '2' MINUTE)) GROUP BY window_start ORDER BY 1",
    )
    .await
    .unwrap();
    let plain = run(
        &context,
        "SELECT window_start, count(*) FROM hop(clicks, ts, INTERVAL '1 minute', INTERVAL '2 minutes') GROUP BY window_start ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(flink, plain);
}

#[tokio::test]
async fn window_columns_have_the_time_column_type() {
    let context = context();
    let frame = context
        .sql("SELECT * FROM tumble(clicks, ts, INTERVAL '1 minute')")
        .await
        .unwrap();
    let schema = frame.schema().as_arrow().clone();
    let time_type = DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into()));
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, vec!["id", "ts", "window_start", "window_end"]);
    assert_eq!(schema.field(2).data_type(), &time_type);
    assert_eq!(schema.field(3).data_type(), &time_type);
}

#[tokio::test]
async fn planning_errors_name_what_is_wrong() {
    let context = context();
    let err = plan_error(
        &context,
        "SELECT * FROM HOP(clicks, ts, INTERVAL '2 minutes', INTERVAL '5 minutes')",
    )
    .await;
    assert_eq!(
        err.message(),
        "HOP size (INTERVAL '5 minutes') must be a multiple of slide (INTERVAL '2 minutes')"
    );
    assert_eq!(err.kind(), ErrorKind::InvalidParameterValue);

    let err = plan_error(
        &context,
        "SELECT * FROM tumble(clicks, id, INTERVAL '1 minute')",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::InvalidStatement);
    assert_eq!(
        err.message(),
        "TUMBLE time column 'id' of table 'clicks' must be a timestamp, found Int64"
    );

    let err = plan_error(
        &context,
        "SELECT * FROM tumble(nope, ts, INTERVAL '1 minute')",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::UndefinedTable);
    assert_eq!(err.message(), "table 'datafusion.public.nope' not found");

    let err = plan_error(
        &context,
        "SELECT * FROM tumble(clicks, nope, INTERVAL '1 minute')",
    )
    .await;
    assert_eq!(err.kind(), ErrorKind::UndefinedColumn);
    assert_eq!(
        err.message(),
        "TUMBLE time column 'nope' not found in table 'clicks'"
    );

    let err = plan_error(
        &context,
        "SELECT * FROM tumble(clicks, ts, INTERVAL '1 month')",
    )
    .await;
    assert!(
        err.message().contains("variable length"),
        "{}",
        err.message()
    );

    let err = plan_error(&context, "SELECT * FROM tumble(clicks, ts)").await;
    assert_eq!(
        err.message(),
        "TUMBLE takes 3 arguments, TUMBLE(table, time_column, size); found 2"
    );
}

#[tokio::test]
async fn a_view_and_a_qualified_name_can_be_windowed() {
    let context = context();
    context
        .sql("CREATE VIEW late AS SELECT id, ts FROM clicks WHERE id > 2")
        .await
        .unwrap();
    let table = run(
        &context,
        "SELECT w.id, w.window_start FROM TUMBLE(public.late, ts, INTERVAL '1 minute') AS w ORDER BY w.id",
    )
    .await
    .unwrap();
    // Ids 3 (00:01:00) and 5 (00:02:30); 4 has no time.
    assert_eq!(
        rows(&table),
        [
            "| 3  | 1970-01-01T00:01:00Z |",
            "| 5  | 1970-01-01T00:02:00Z |"
        ]
    );
}

#[tokio::test]
async fn aggregate_output_fields_tell_which_keys_are_windows() {
    let context = context();
    let frame = context
        .sql(
            "SELECT window_end AS closes, count(*) AS n FROM hop(clicks, ts, INTERVAL '1 minute', INTERVAL '3 minutes') GROUP BY window_end",
        )
        .await
        .unwrap();
    let windows = find_windows(frame.logical_plan());
    assert_eq!(windows.len(), 1);
    let spec = &windows[0];
    assert_eq!(spec.kind(), WindowKind::Hop);
    assert_eq!(spec.table().table(), "clicks");
    assert_eq!(spec.time_column(), "ts");
    assert_eq!(spec.slide_ns(), 60_000_000_000);
    assert_eq!(spec.size_ns(), 180_000_000_000);

    let schema = frame.schema().as_arrow().clone();
    let closes = window_column(schema.field(0)).expect("closes is a window bound");
    assert_eq!(closes.role, WindowRole::End);
    assert_eq!(&closes.spec, spec);
    assert!(window_column(schema.field(1)).is_none());

    // The optimizer keeps the marks too.
    let optimized = frame.into_optimized_plan().unwrap();
    assert_eq!(find_windows(&optimized), windows);
}

/// The line of the physical plan that reads the Parquet file.
async fn parquet_scan(context: &SessionContext, sql: &str) -> String {
    let sql = rewrite_flink_window_syntax(sql).unwrap();
    let frame = context.sql(&sql).await.unwrap();
    let physical = frame.create_physical_plan().await.unwrap();
    let shown = displayable(physical.as_ref()).indent(true).to_string();
    shown
        .lines()
        .find(|line| line.contains("file_type=parquet"))
        .unwrap_or_else(|| panic!("no Parquet scan in\n{shown}"))
        .to_string()
}

#[tokio::test]
async fn filters_reach_the_parquet_scan_and_results_stay_right() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clicks.parquet");
    let context = context();
    context
        .sql(&format!(
            "COPY (SELECT id, ts, CASE WHEN id % 2 = 0 THEN 'buy' ELSE 'view' END AS action FROM clicks) \
             TO '{}' STORED AS PARQUET",
            path.display()
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    context
        .register_parquet("stored", path.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    let tumble = "SELECT window_start, count(*) AS n FROM TUMBLE(stored, ts, INTERVAL '1 minute') \
                  WHERE action = 'view' GROUP BY window_start ORDER BY window_start";
    let hop = "SELECT window_start, count(*) AS n \
               FROM HOP(stored, ts, INTERVAL '1 minute', INTERVAL '2 minutes') \
               WHERE action = 'view' GROUP BY window_start ORDER BY window_start";
    for sql in [tumble, hop] {
        let scan = parquet_scan(&context, sql).await;
        // Only `ts` and `action` are read, and the filter (with the NULL-time filter) is handed
        // to the Parquet reader, through the HOP's unnest too.
        assert!(scan.contains("projection=[ts, action]"), "{scan}");
        assert!(scan.contains("IS NOT NULL AND action@"), "{scan}");
        assert!(scan.contains("= view"), "{scan}");
    }
    // 'view' rows are the odd ids, all with a time: 1 (00:00:05), 3 (00:01:00), 5 (00:02:30).
    assert_eq!(
        rows(&run(&context, tumble).await.unwrap()),
        [
            "| 1970-01-01T00:00:00Z | 1 |",
            "| 1970-01-01T00:01:00Z | 1 |",
            "| 1970-01-01T00:02:00Z | 1 |",
        ]
    );
    // HOP of 2 minutes every minute: id 1 is in the windows starting 23:59 and 00:00, id 3 in
    // 00:00 and 00:01, id 5 in 00:01 and 00:02.
    assert_eq!(
        rows(&run(&context, hop).await.unwrap()),
        [
            "| 1969-12-31T23:59:00Z | 1 |",
            "| 1970-01-01T00:00:00Z | 2 |",
            "| 1970-01-01T00:01:00Z | 2 |",
            "| 1970-01-01T00:02:00Z | 1 |",
        ]
    );
}
