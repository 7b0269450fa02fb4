//! Reading one partition's offset range into Arrow batches.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    ArrayRef, Int32Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
    TimestampMillisecondArray,
};
use arrow::compute::cast;
use arrow::datatypes::{Schema, SchemaRef};
use futures::stream::{self, BoxStream};
use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::Settings;
use crate::formats::PayloadDecoder;
use crate::source::{ConnectorError, SourceCounters, Split};

/// Batches buffered between the consumer thread and the query: small, so a slow query
/// slows the consumer instead of growing memory.
const CHANNEL_BATCHES: usize = 2;

/// How long a read may see no message before it gives up on reaching the end offset.
const STALL_LIMIT: Duration = Duration::from_secs(30);

pub(crate) struct ReadRequest {
    pub settings: Settings,
    pub schema: SchemaRef,
    pub decoder: PayloadDecoder,
    pub counters: Arc<SourceCounters>,
    pub pool: super::ConsumerPool,
    pub split: Split,
    pub projection: Option<Vec<usize>>,
    pub batch_rows: usize,
}

/// Messages collected for one batch.
#[derive(Default)]
struct Pending {
    payloads: Vec<Vec<u8>>,
    partitions: Vec<i32>,
    offsets: Vec<i64>,
    timestamps: Vec<Option<i64>>,
    keys: Vec<Option<String>>,
}

impl Pending {
    fn len(&self) -> usize {
        self.payloads.len()
    }

    fn push(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) {
        self.payloads
            .push(message.payload().map(<[u8]>::to_vec).unwrap_or_default());
        self.partitions.push(message.partition());
        self.offsets.push(message.offset());
        self.timestamps.push(message.timestamp().to_millis());
        self.keys.push(
            message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
        );
    }

    /// Drops the entries at `indices` (sorted).
    fn remove(&mut self, indices: &[usize]) {
        let keep = |i: &usize| indices.binary_search(i).is_err();
        fn filter<T>(items: &mut Vec<T>, keep: impl Fn(&usize) -> bool) {
            let mut index = 0;
            items.retain(|_| {
                let kept = keep(&index);
                index += 1;
                kept
            });
        }
        filter(&mut self.payloads, keep);
        filter(&mut self.partitions, keep);
        filter(&mut self.offsets, keep);
        filter(&mut self.timestamps, keep);
        filter(&mut self.keys, keep);
    }
}

/// Streams the batches of one split; the consumer runs on a blocking thread.
pub(crate) fn read_split(
    request: ReadRequest,
) -> BoxStream<'static, Result<RecordBatch, ConnectorError>> {
    let (sender, receiver) = mpsc::channel(CHANNEL_BATCHES);
    tokio::task::spawn_blocking(move || {
        if let Err(err) = consume(&request, &sender) {
            let _ = sender.blocking_send(Err(err));
        }
    });
    stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

fn consume(
    request: &ReadRequest,
    sender: &mpsc::Sender<Result<RecordBatch, ConnectorError>>,
) -> Result<(), ConnectorError> {
    let settings = &request.settings;
    let split = request.split;
    let consumer: BaseConsumer = request.pool.take(settings)?;
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(
            &settings.topic,
            split.partition,
            Offset::Offset(split.start),
        )
        .map_err(|e| kafka_error(settings, e))?;
    consumer
        .assign(&assignment)
        .map_err(|e| kafka_error(settings, e))?;

    let mut pending = Pending::default();
    let mut next = split.start;
    let mut last_progress = Instant::now();
    while next < split.end {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                if message.partition() != split.partition || message.offset() < next {
                    // Left over from an earlier assignment of a pooled consumer.
                    continue;
                }
                next = message.offset() + 1;
                if message.offset() >= split.end {
                    break;
                }
                pending.push(&message);
                if pending.len() >= request.batch_rows
                    && !emit(request, std::mem::take(&mut pending), sender)?
                {
                    return Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // The end of the partition: done once the consumer's position reached the
                // split's end (transaction markers can take the last offsets). An end event
                // left over from an earlier use of a pooled consumer is not.
                if partition == split.partition
                    && fetch_position(&consumer, settings, split)? >= split.end
                {
                    break;
                }
            }
            Some(Err(err)) => return Err(kafka_error(settings, err)),
            None => {
                if last_progress.elapsed() > STALL_LIMIT {
                    return Err(ConnectorError::Kafka {
                        topic: settings.topic.clone(),
                        message: format!(
                            "no message from partition {} for {}s while reading offsets {}..{}",
                            split.partition,
                            STALL_LIMIT.as_secs(),
                            next,
                            split.end
                        ),
                    });
                }
            }
        }
    }
    if pending.len() > 0 && !emit(request, pending, sender)? {
        return Ok(());
    }
    request.pool.give(consumer);
    Ok(())
}

/// The consumer's next offset in the split's partition.
fn fetch_position(
    consumer: &BaseConsumer,
    settings: &Settings,
    split: Split,
) -> Result<i64, ConnectorError> {
    let positions = consumer.position().map_err(|e| kafka_error(settings, e))?;
    Ok(positions
        .find_partition(&settings.topic, split.partition)
        .and_then(|p| match p.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .unwrap_or(-1))
}

fn kafka_error(settings: &Settings, err: KafkaError) -> ConnectorError {
    ConnectorError::Kafka {
        topic: settings.topic.clone(),
        message: err.to_string(),
    }
}

/// Decodes and sends one batch; false when the reader went away.
fn emit(
    request: &ReadRequest,
    mut pending: Pending,
    sender: &mpsc::Sender<Result<RecordBatch, ConnectorError>>,
) -> Result<bool, ConnectorError> {
    let messages: Vec<&[u8]> = pending.payloads.iter().map(Vec::as_slice).collect();
    let (payload, malformed) = request.decoder.decode(&messages)?;
    request
        .counters
        .messages_read
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    if let Some((index, reason)) = malformed.first() {
        if request.settings.fail_on_error {
            return Err(ConnectorError::Malformed {
                source_name: request.settings.name.clone(),
                partition: pending.partitions[*index],
                offset: pending.offsets[*index],
                message: reason.clone(),
            });
        }
        for (index, reason) in &malformed {
            request.counters.malformed(&format!(
                "partition {} offset {}: {reason}",
                pending.partitions[*index], pending.offsets[*index]
            ));
        }
        let indices: Vec<usize> = malformed.iter().map(|(i, _)| *i).collect();
        pending.remove(&indices);
    }
    let batch = assemble(request, &pending, &payload)?;
    Ok(sender.blocking_send(Ok(batch)).is_ok())
}

/// Builds the output batch: projected columns, metadata ones from the messages.
fn assemble(
    request: &ReadRequest,
    pending: &Pending,
    payload: &RecordBatch,
) -> Result<RecordBatch, ConnectorError> {
    let indices: Vec<usize> = match &request.projection {
        Some(p) => p.clone(),
        None => (0..request.schema.fields().len()).collect(),
    };
    let mut fields = Vec::with_capacity(indices.len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(indices.len());
    for index in indices {
        let field = request.schema.field(index);
        let column: ArrayRef = match field.name().as_str() {
            "_partition" => Arc::new(Int32Array::from(pending.partitions.clone())),
            "_offset" => Arc::new(Int64Array::from(pending.offsets.clone())),
            "_timestamp" => Arc::new(TimestampMillisecondArray::from(pending.timestamps.clone())),
            "_key" => Arc::new(StringArray::from(pending.keys.clone())),
            name => payload.column_by_name(name).cloned().ok_or_else(|| {
                ConnectorError::Schema(format!("column {name} missing from decoded payload"))
            })?,
        };
        let column = if column.data_type() == field.data_type() {
            column
        } else {
            cast(&column, field.data_type())?
        };
        fields.push(field.clone().with_nullable(true));
        columns.push(column);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(pending.len()));
    Ok(RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns,
        &options,
    )?)
}
