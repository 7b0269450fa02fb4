//! Sources in the engine: `CREATE SOURCE`, the table provider that reads a source's snapshot,
//! and `SHOW SOURCES`.
//!
//! A source is registered in the DataFusion catalog as a table, so any query can read it; a
//! scan asks the source for its splits when the query starts (a bounded snapshot) and reads
//! each split as one partition of the plan.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session as DfSession, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning,
    PlanProperties, ReplaceChildrenOptions,
};
use datafusion::sql::sqlparser::ast::{ColumnDef, Expr as SqlExpr, ObjectName, Value};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;
use freshet_connectors::source::{ConnectorError, Source, Split};
use futures::StreamExt;

use crate::error::{EngineError, ErrorKind};

/// `WATERMARK FOR column AS column - INTERVAL '…'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The event-time column.
    pub column: String,
    /// How far behind the largest event time seen the watermark trails.
    pub delay_ms: i64,
}

/// A parsed `CREATE SOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSource {
    pub name: ObjectName,
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<Watermark>,
    /// WITH options, keys lower-case (including `connector`).
    pub options: BTreeMap<String, String>,
}

impl From<ConnectorError> for EngineError {
    fn from(err: ConnectorError) -> Self {
        let kind = match &err {
            ConnectorError::UnknownConnector { .. } | ConnectorError::UnknownOption { .. } => {
                ErrorKind::UndefinedObject
            }
            ConnectorError::MissingOption { .. }
            | ConnectorError::InvalidOption { .. }
            | ConnectorError::Schema(_) => ErrorKind::InvalidParameterValue,
            ConnectorError::TopicNotFound { .. } => ErrorKind::UndefinedObject,
            ConnectorError::Malformed { .. } => ErrorKind::DataException,
            ConnectorError::BrokerUnreachable { .. }
            | ConnectorError::Kafka { .. }
            | ConnectorError::SchemaRegistry { .. }
            | ConnectorError::Sink { .. }
            | ConnectorError::Storage { .. }
            | ConnectorError::Arrow(_) => ErrorKind::Io,
        };
        EngineError::new(kind, err.to_string())
    }
}

fn parse_error(err: impl fmt::Display) -> EngineError {
    EngineError::syntax(format!("CREATE SOURCE: {err}"))
}

/// Parses `CREATE SOURCE [IF NOT EXISTS] name [( columns [, WATERMARK FOR c AS expr] )] WITH (k = v, …)`.
pub(crate) fn parse_create_source(
    raw: &crate::statement::tokens::RawStatement,
) -> Result<CreateSource, EngineError> {
    let mut parser = raw.sqlparser(0);
    if !parser.parse_keyword(Keyword::CREATE) || !parser.parse_keyword(Keyword::SOURCE) {
        return Err(parse_error("expected CREATE SOURCE"));
    }
    let if_not_exists = parser.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
    let name = parser.parse_object_name(false).map_err(parse_error)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    if parser.consume_token(&Token::LParen) {
        loop {
            let is_watermark = matches!(&parser.peek_token().token, Token::Word(w) if w.value.eq_ignore_ascii_case("WATERMARK"));
            if is_watermark {
                parser.next_token();
                parser
                    .expect_keyword_is(Keyword::FOR)
                    .map_err(parse_error)?;
                let column = parser.parse_identifier().map_err(parse_error)?.value;
                parser.expect_keyword_is(Keyword::AS).map_err(parse_error)?;
                let expr = parser.parse_expr().map_err(parse_error)?;
                watermark = Some(watermark_of(&column, &expr)?);
            } else {
                columns.push(parser.parse_column_def().map_err(parse_error)?);
            }
            if parser.consume_token(&Token::RParen) {
                break;
            }
            parser.expect_token(&Token::Comma).map_err(parse_error)?;
        }
    }
    parser
        .expect_keyword_is(Keyword::WITH)
        .map_err(parse_error)?;
    let options = parse_options(&mut parser)?;
    if parser.peek_token().token != Token::EOF && !parser.consume_token(&Token::SemiColon) {
        return Err(parse_error(format!(
            "unexpected {}",
            parser.peek_token().token
        )));
    }
    Ok(CreateSource {
        name,
        if_not_exists,
        columns,
        watermark,
        options,
    })
}

fn parse_options(
    parser: &mut datafusion::sql::sqlparser::parser::Parser<'_>,
) -> Result<BTreeMap<String, String>, EngineError> {
    parser.expect_token(&Token::LParen).map_err(parse_error)?;
    let mut options = BTreeMap::new();
    loop {
        let key = match parser.next_token().token {
            Token::Word(word) => {
                let mut key = word.value;
                while parser.consume_token(&Token::Period) {
                    let part = parser.parse_identifier().map_err(parse_error)?;
                    key = format!("{key}.{}", part.value);
                }
                key
            }
            Token::SingleQuotedString(s) => s,
            other => {
                return Err(parse_error(format!(
                    "expected an option name, found {other}"
                )))
            }
        };
        parser.expect_token(&Token::Eq).map_err(parse_error)?;
        let value = match parser.parse_value().map_err(parse_error)?.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s,
            Value::Number(n, _) => n.to_string(),
            Value::Boolean(b) => b.to_string(),
            other => other.to_string(),
        };
        let key = key.to_ascii_lowercase();
        if options.insert(key.clone(), value).is_some() {
            return Err(parse_error(format!("option '{key}' given twice")));
        }
        if parser.consume_token(&Token::RParen) {
            return Ok(options);
        }
        parser.expect_token(&Token::Comma).map_err(parse_error)?;
    }
}

/// Accepts `c` and `c - INTERVAL '…'`: the watermark trails the largest event time by a fixed delay.
fn watermark_of(column: &str, expr: &SqlExpr) -> Result<Watermark, EngineError> {
    let unsupported = || {
        EngineError::unsupported(format!(
            "WATERMARK FOR {column} AS {expr}: use `{column}` or `{column} - INTERVAL '<n> <unit>'`"
        ))
    };
    let delay_ms = match expr {
        SqlExpr::Identifier(ident) if ident.value.eq_ignore_ascii_case(column) => 0,
        SqlExpr::BinaryOp { left, op, right } if op.to_string() == "-" => {
            match left.as_ref() {
                SqlExpr::Identifier(ident) if ident.value.eq_ignore_ascii_case(column) => {}
                _ => return Err(unsupported()),
            }
            let SqlExpr::Interval(interval) = right.as_ref() else {
                return Err(unsupported());
            };
            let text = match interval.value.as_ref() {
                SqlExpr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) => s.clone(),
                    other => other.to_string(),
                },
                _ => return Err(unsupported()),
            };
            let unit = interval
                .leading_field
                .as_ref()
                .map(|f| f.to_string())
                .unwrap_or_default();
            interval_ms(&format!("{text} {unit}")).ok_or_else(unsupported)?
        }
        _ => return Err(unsupported()),
    };
    Ok(Watermark {
        column: column.to_string(),
        delay_ms,
    })
}

/// Milliseconds in a simple interval text such as `2 seconds`, `500 ms`, `1 minute`.
pub(crate) fn interval_ms(text: &str) -> Option<i64> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    let mut total = 0f64;
    let mut index = 0;
    while index < words.len() {
        let number: f64 = words[index].parse().ok()?;
        let unit = words.get(index + 1).map(String::as_str).unwrap_or("second");
        let factor = match unit {
            "ms" | "msec" | "millisecond" | "milliseconds" => 1.0,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000.0,
            "min" | "mins" | "minute" | "minutes" => 60_000.0,
            "h" | "hour" | "hours" => 3_600_000.0,
            "d" | "day" | "days" => 86_400_000.0,
            _ => return None,
        };
        total += number * factor;
        index += 2;
    }
    (total >= 0.0 && !words.is_empty()).then_some(total as i64)
}

/// A registered source.
#[derive(Debug, Clone)]
pub struct SourceHandle {
    pub name: String,
    pub connector: String,
    pub source: Arc<dyn Source>,
    pub watermark: Option<Watermark>,
}

/// Checks the declared event-time column: it must exist and be a timestamp.
pub fn check_watermark(watermark: &Watermark, schema: &SchemaRef) -> Result<(), EngineError> {
    let field = schema.field_with_name(&watermark.column).map_err(|_| {
        EngineError::new(
            ErrorKind::UndefinedColumn,
            format!("WATERMARK FOR {}: no such column", watermark.column),
        )
    })?;
    if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
        return Err(EngineError::new(
            ErrorKind::InvalidStatement,
            format!(
                "WATERMARK FOR {}: the column must be a TIMESTAMP, not {}",
                watermark.column,
                field.data_type()
            ),
        ));
    }
    Ok(())
}

/// A source as a DataFusion table: each scan reads a fresh snapshot.
#[derive(Debug)]
pub struct SourceTable {
    handle: SourceHandle,
}

impl SourceTable {
    pub fn new(handle: SourceHandle) -> Self {
        Self { handle }
    }

    /// The source behind the table (for the streaming runtime).
    pub fn handle(&self) -> &SourceHandle {
        &self.handle
    }
}

#[async_trait]
impl TableProvider for SourceTable {
    fn schema(&self) -> SchemaRef {
        self.handle.source.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn DfSession,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let splits = self.handle.source.snapshot().await.map_err(to_datafusion)?;
        let schema = match projection {
            Some(p) => Arc::new(self.schema().project(p)?),
            None => self.schema(),
        };
        let batch_rows = usize::from(state.config_options().execution.batch_size);
        Ok(Arc::new(SourceScanExec::new(
            self.handle.clone(),
            splits,
            projection.cloned(),
            schema,
            batch_rows,
        )))
    }
}

fn to_datafusion(err: ConnectorError) -> DataFusionError {
    DataFusionError::from(EngineError::from(err))
}

/// Reads a snapshot's splits, one per output partition.
#[derive(Debug)]
pub struct SourceScanExec {
    handle: SourceHandle,
    splits: Vec<Split>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    batch_rows: usize,
    properties: Arc<PlanProperties>,
}

impl SourceScanExec {
    fn new(
        handle: SourceHandle,
        splits: Vec<Split>,
        projection: Option<Vec<usize>>,
        schema: SchemaRef,
        batch_rows: usize,
    ) -> Self {
        let partitions = splits.len().max(1);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            handle,
            splits,
            projection,
            schema,
            batch_rows,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for SourceScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "SourceScanExec: source={}, splits={}",
            self.handle.name,
            self.splits.len()
        )
    }
}

impl ExecutionPlan for SourceScanExec {
    fn name(&self) -> &'static str {
        "SourceScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _: Vec<Arc<dyn ExecutionPlan>>,
        _: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = self.schema.clone();
        let Some(split) = self.splits.get(partition).copied() else {
            // An empty snapshot still has one (empty) partition.
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                schema,
                futures::stream::empty(),
            )));
        };
        let stream = self
            .handle
            .source
            .read(split, self.projection.clone(), self.batch_rows)
            .map(|item| item.map_err(to_datafusion));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_create_source_text(sql: &str) -> Result<CreateSource, EngineError> {
        use crate::statement::tokens::RawStatement;
        parse_create_source(&RawStatement::from_text(sql)?)
    }

    #[test]
    fn create_source_with_watermark_and_dotted_options() {
        let sql = "CREATE SOURCE IF NOT EXISTS clicks (user_id BIGINT, ts TIMESTAMP, \
                   WATERMARK FOR ts AS ts - INTERVAL '2 seconds') \
                   WITH (connector = 'kafka', topic = 'clicks', 'kafka.client.id' = 'x', kafka.fetch.min.bytes = 10)";
        let create = parse_create_source_text(sql).unwrap();
        assert!(create.if_not_exists);
        assert_eq!(create.columns.len(), 2);
        assert_eq!(
            create.watermark,
            Some(Watermark {
                column: "ts".to_string(),
                delay_ms: 2000
            })
        );
        assert_eq!(create.options["kafka.client.id"], "x");
        assert_eq!(create.options["kafka.fetch.min.bytes"], "10");
        assert_eq!(create.options["connector"], "kafka");
    }

    #[test]
    fn flink_style_interval_and_bad_watermarks() {
        let sql = "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND) WITH (connector = 'datagen')";
        assert_eq!(
            parse_create_source_text(sql)
                .unwrap()
                .watermark
                .unwrap()
                .delay_ms,
            5000
        );
        let sql = "CREATE SOURCE s (ts TIMESTAMP, WATERMARK FOR ts AS other - INTERVAL '5' SECOND) WITH (connector = 'datagen')";
        assert_eq!(
            parse_create_source_text(sql).unwrap_err().kind(),
            ErrorKind::FeatureNotSupported
        );
        let sql = "CREATE SOURCE s (ts TIMESTAMP) WITH (connector = 'a', connector = 'b')";
        assert!(parse_create_source_text(sql)
            .unwrap_err()
            .message()
            .contains("twice"));
    }

    #[test]
    fn interval_texts() {
        assert_eq!(interval_ms("2 seconds"), Some(2000));
        assert_eq!(interval_ms("1 minute 30 seconds"), Some(90_000));
        assert_eq!(interval_ms("500 milliseconds"), Some(500));
        assert_eq!(interval_ms("3 fortnights"), None);
    }
}
