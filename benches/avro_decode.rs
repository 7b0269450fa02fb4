//! Events per second per core decoding Nexmark bid records into Arrow: schema-registry framed
//! Avro (arrow-avro, through Freshet's Avro decoder) against JSON (Arrow's vectorised decoder,
//! through Freshet's JSON decoder) on the same events, one thread, batches of 8192 messages.
//!
//! The Avro messages are written by arrow-avro's encoder (Confluent framing, schema id 1), the
//! JSON ones by Arrow's JSON writer, both from the same Arrow batch.
//!
//! Run: `cargo bench -p freshet-connectors --bench avro_decode -- [EVENTS]`

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow_avro::schema::{AvroSchema, FingerprintStrategy};
use arrow_avro::writer::format::AvroSoeFormat;
use arrow_avro::writer::WriterBuilder;
use freshet_connectors::formats::avro::{AvroConfig, AvroDecoder, Framing};
use freshet_connectors::formats::{Format, PayloadDecoder};

const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// The Nexmark bid record: auction, bidder, price, channel, url, date_time, extra.
fn bids(events: usize) -> RecordBatch {
    let n = events as i64;
    let auction = Int64Array::from_iter_values((0..n).map(|i| 1000 + (i * 7919) % 10_000));
    let bidder = Int64Array::from_iter_values((0..n).map(|i| 1000 + (i * 104_729) % 50_000));
    let price = Int64Array::from_iter_values((0..n).map(|i| 100 + (i * 31) % 9_900_000));
    let channel: StringArray = (0..n).map(|i| Some(CHANNELS[(i % 4) as usize])).collect();
    let url: StringArray = (0..n)
        .map(|i| {
            Some(format!(
                "https://www.nexmark.com/{}/item.htm?query=1&channel_id={}",
                ["hrz", "vbc", "kdc", "qpx"][(i % 4) as usize],
                (i * 13) % 1_048_576
            ))
        })
        .collect();
    let date_time =
        TimestampMillisecondArray::from_iter_values((0..n).map(|i| 1_793_527_200_000 + i * 3))
            .with_timezone("+00:00");
    let extra: StringArray = (0..n).map(|_| Some("")).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, false),
        Field::new("bidder", DataType::Int64, false),
        Field::new("price", DataType::Int64, false),
        Field::new("channel", DataType::Utf8, false),
        Field::new("url", DataType::Utf8, false),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            false,
        ),
        Field::new("extra", DataType::Utf8, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(auction),
        Arc::new(bidder),
        Arc::new(price),
        Arc::new(channel),
        Arc::new(url),
        Arc::new(date_time),
        Arc::new(extra),
    ];
    RecordBatch::try_new(schema, columns).expect("batch")
}

/// The columns a query declares for the bid stream.
fn declared() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("auction", DataType::Int64, true),
        Field::new("bidder", DataType::Int64, true),
        Field::new("price", DataType::Int64, true),
        Field::new("channel", DataType::Utf8, true),
        Field::new("url", DataType::Utf8, true),
        Field::new(
            "date_time",
            DataType::Timestamp(TimeUnit::Millisecond, Some("+00:00".into())),
            true,
        ),
        Field::new("extra", DataType::Utf8, true),
    ]))
}

fn time(decoder: &PayloadDecoder, messages: &[Vec<u8>]) -> f64 {
    let started = Instant::now();
    for chunk in messages.chunks(8192) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        let (batch, bad) = decoder.decode(&slices).expect("decode");
        assert!(bad.is_empty(), "{:?}", bad.first());
        assert_eq!(batch.num_rows(), chunk.len());
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let events: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let batch = bids(events);

    let mut encoder = WriterBuilder::new(batch.schema().as_ref().clone())
        .with_fingerprint_strategy(FingerprintStrategy::Id(1))
        .build_encoder::<AvroSoeFormat>()
        .expect("encoder");
    encoder.encode(&batch).expect("encode");
    let rows = encoder.flush();
    let avro: Vec<Vec<u8>> = rows.iter().map(|row| row.to_vec()).collect();
    let writer_schema = AvroSchema::try_from(batch.schema().as_ref())
        .expect("avro schema")
        .json_string;

    let mut json_text = Vec::new();
    {
        let mut writer = arrow::json::LineDelimitedWriter::new(&mut json_text);
        writer.write(&batch).expect("json");
        writer.finish().expect("json");
    }
    let json: Vec<Vec<u8>> = json_text
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    assert_eq!(json.len(), events);

    let avro_decoder = PayloadDecoder::avro(
        AvroDecoder::new(
            AvroConfig {
                framing: Framing::Confluent,
                registry: None,
                reference: writer_schema.clone(),
                known_writers: vec![(1, writer_schema)],
            },
            Some(declared()),
        )
        .expect("avro decoder"),
    );
    let json_decoder = PayloadDecoder::new(Format::Json, declared()).expect("json decoder");

    // Warm up once, then measure.
    time(&avro_decoder, &avro[..avro.len().min(50_000)]);
    time(&json_decoder, &json[..json.len().min(50_000)]);
    let avro_s = time(&avro_decoder, &avro);
    let json_s = time(&json_decoder, &json);
    let avg = |m: &[Vec<u8>]| m.iter().map(Vec::len).sum::<usize>() as f64 / m.len() as f64;
    println!(
        "{{\"events\": {events}, \"avro\": {{\"avg_event_bytes\": {:.0}, \"events_per_s\": {:.0}}}, \"json\": {{\"avg_event_bytes\": {:.0}, \"events_per_s\": {:.0}}}}}",
        avg(&avro),
        events as f64 / avro_s,
        avg(&json),
        events as f64 / json_s,
    );
}
