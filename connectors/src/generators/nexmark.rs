//! `connector = 'nexmark'`: the Nexmark benchmark's person, auction and bid streams.
//!
//! Events are numbered globally; out of every 50, one is a person, three are auctions and 46
//! are bids, as in the Nexmark generator. Ids, hot auctions and bidders, prices and times
//! follow its rules; every value is derived from (seed, event number). Options: `stream`
//! (`person` | `auction` | `bid`, required), `rate` (events per second, all streams together;
//! default 10000), `events` (total events), `seed`, `start_time_ms`, `splits`.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::{random, Timing};
use crate::source::{
    ConnectorError, Options, Source, SourceConfig, SourceConnector, SourceCounters, Split,
};

const PROPORTION_TOTAL: u64 = 50;
const FIRST_PERSON_ID: i64 = 1000;
const FIRST_AUCTION_ID: i64 = 1000;
const HOT_AUCTION_RATIO: i64 = 100;
const HOT_BIDDER_RATIO: i64 = 100;
const HOT_SELLER_RATIO: i64 = 100;
const ACTIVE_PEOPLE: i64 = 1000;
const IN_FLIGHT_AUCTIONS: i64 = 100;

const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
const CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Which Nexmark stream a source produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Person,
    Auction,
    Bid,
}

fn event_kind(event: u64) -> Stream {
    match event % PROPORTION_TOTAL {
        0 => Stream::Person,
        1..=3 => Stream::Auction,
        _ => Stream::Bid,
    }
}

fn schema_of(stream: Stream) -> SchemaRef {
    let ts = || DataType::Timestamp(TimeUnit::Nanosecond, None);
    let fields = match stream {
        Stream::Person => vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("email_address", DataType::Utf8, false),
            Field::new("credit_card", DataType::Utf8, false),
            Field::new("city", DataType::Utf8, false),
            Field::new("state", DataType::Utf8, false),
            Field::new("date_time", ts(), false),
            Field::new("extra", DataType::Utf8, false),
        ],
        Stream::Auction => vec![
            Field::new("id", DataType::Int64, false),
            Field::new("item_name", DataType::Utf8, false),
            Field::new("description", DataType::Utf8, false),
            Field::new("initial_bid", DataType::Int64, false),
            Field::new("reserve", DataType::Int64, false),
            Field::new("date_time", ts(), false),
            Field::new("expires", ts(), false),
            Field::new("seller", DataType::Int64, false),
            Field::new("category", DataType::Int64, false),
            Field::new("extra", DataType::Utf8, false),
        ],
        Stream::Bid => vec![
            Field::new("auction", DataType::Int64, false),
            Field::new("bidder", DataType::Int64, false),
            Field::new("price", DataType::Int64, false),
            Field::new("channel", DataType::Utf8, false),
            Field::new("url", DataType::Utf8, false),
            Field::new("date_time", ts(), false),
            Field::new("extra", DataType::Utf8, false),
        ],
    };
    Arc::new(Schema::new(fields))
}

/// The `connector = 'nexmark'` factory.
pub struct NexmarkConnector;

#[async_trait]
impl SourceConnector for NexmarkConnector {
    fn name(&self) -> &'static str {
        "nexmark"
    }

    async fn create(
        &self,
        config: SourceConfig,
        _validate: bool,
    ) -> Result<Arc<dyn Source>, ConnectorError> {
        let mut options = Options::new("nexmark", &config.options);
        let stream = match options.required("stream")?.to_ascii_lowercase().as_str() {
            "person" | "people" => Stream::Person,
            "auction" | "auctions" => Stream::Auction,
            "bid" | "bids" => Stream::Bid,
            other => {
                return Err(ConnectorError::InvalidOption {
                    option: "stream".to_string(),
                    value: other.to_string(),
                    reason: "use 'person', 'auction' or 'bid'".to_string(),
                })
            }
        };
        let seed: u64 = options.parsed("seed", 0)?;
        let timing = Timing::from_options(&mut options, &config.state, 10_000.0)?;
        options.finish(&[])?;
        let generated = schema_of(stream);
        if let Some(declared) = &config.schema {
            for field in declared.fields() {
                if generated.field_with_name(field.name()).is_err() {
                    let names: Vec<&str> = generated
                        .fields()
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect();
                    return Err(ConnectorError::Schema(format!(
                        "nexmark {stream:?} events have no column {} (they have: {})",
                        field.name(),
                        names.join(", ")
                    )));
                }
            }
        }
        Ok(Arc::new(NexmarkSource {
            stream,
            schema: generated,
            seed,
            timing,
            counters: Arc::new(SourceCounters::default()),
        }))
    }
}

/// A Nexmark stream.
#[derive(Debug)]
pub struct NexmarkSource {
    stream: Stream,
    schema: SchemaRef,
    seed: u64,
    timing: Timing,
    counters: Arc<SourceCounters>,
}

/// A Nexmark price: 10^(6·u) dollars in cents, from 1 dollar to a million.
fn price(r: u64) -> i64 {
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    (10f64.powf(unit * 6.0) * 100.0).round() as i64
}

fn last_person(event: u64) -> i64 {
    (event / PROPORTION_TOTAL) as i64
}

fn last_auction(event: u64) -> i64 {
    let epoch = (event / PROPORTION_TOTAL) as i64;
    let offset = (event % PROPORTION_TOTAL) as i64;
    epoch * 3 + offset.clamp(1, 3) - 1
}

struct Generator<'a> {
    seed: u64,
    timing: &'a Timing,
}

impl Generator<'_> {
    fn r(&self, stream: u64, event: u64) -> u64 {
        random(self.seed, stream, event)
    }

    fn text(&self, stream: u64, event: u64, length: usize) -> String {
        (0..length)
            .map(|k| (b'a' + (self.r(stream + k as u64 * 97, event) % 26) as u8) as char)
            .collect()
    }

    fn person_id(&self, stream: u64, event: u64, hot_ratio: i64) -> i64 {
        let last = last_person(event);
        if !self.r(stream, event).is_multiple_of(4) {
            FIRST_PERSON_ID + (last / hot_ratio) * hot_ratio
        } else {
            let window = last.clamp(1, ACTIVE_PEOPLE);
            FIRST_PERSON_ID + (last - (self.r(stream + 1, event) % window as u64) as i64).max(0)
        }
    }

    fn auction_id(&self, event: u64) -> i64 {
        let last = last_auction(event);
        if !self.r(10, event).is_multiple_of(2) {
            FIRST_AUCTION_ID + (last / HOT_AUCTION_RATIO) * HOT_AUCTION_RATIO
        } else {
            let window = last.clamp(1, IN_FLIGHT_AUCTIONS);
            FIRST_AUCTION_ID + (last - (self.r(11, event) % window as u64) as i64).max(0)
        }
    }
}

#[async_trait]
impl Source for NexmarkSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn describe(&self) -> String {
        let extent = match self.timing.events {
            Some(n) => format!("{n} events"),
            None => "unbounded".to_string(),
        };
        format!(
            "nexmark {:?} stream, {extent}, seed {}",
            self.stream, self.seed
        )
        .to_lowercase()
    }

    fn state(&self) -> BTreeMap<String, String> {
        self.timing.state()
    }

    async fn snapshot(&self) -> Result<Vec<Split>, ConnectorError> {
        Ok(self.timing.splits_of(self.timing.available()))
    }

    async fn positions(&self) -> Result<Vec<Split>, ConnectorError> {
        Ok(self.timing.continuous_split(self.timing.available()))
    }

    fn read(
        &self,
        split: Split,
        projection: Option<Vec<usize>>,
        batch_rows: usize,
    ) -> BoxStream<'static, Result<RecordBatch, ConnectorError>> {
        // Batches are cut by event numbers; a bid batch of `batch_rows` events holds ~92% bids.
        let (kind, schema, seed, timing, counters) = (
            self.stream,
            self.schema.clone(),
            self.seed,
            self.timing,
            self.counters.clone(),
        );
        let step = batch_rows.max(1) as i64;
        stream::iter((split.start..split.end).step_by(step as usize))
            .map(move |start| {
                let end = (start + step).min(split.end);
                let generator = Generator {
                    seed,
                    timing: &timing,
                };
                let columns = build(kind, &generator, start as u64..end as u64)?;
                let batch = RecordBatch::try_new(schema.clone(), columns)?;
                counters.messages_read.fetch_add(
                    batch.num_rows() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                match &projection {
                    Some(p) => Ok(batch.project(p)?),
                    None => Ok(batch),
                }
            })
            .boxed()
    }

    fn counters(&self) -> Arc<SourceCounters> {
        self.counters.clone()
    }
}

fn build(
    kind: Stream,
    g: &Generator<'_>,
    events: std::ops::Range<u64>,
) -> Result<Vec<ArrayRef>, ConnectorError> {
    let events: Vec<u64> = events.filter(|e| event_kind(*e) == kind).collect();
    Ok(match kind {
        Stream::Person => persons(g, &events),
        Stream::Auction => auctions(g, &events),
        Stream::Bid => bids(g, &events),
    })
}

fn persons(g: &Generator<'_>, events: &[u64]) -> Vec<ArrayRef> {
    let (mut id, mut name, mut email, mut card, mut city, mut state, mut time, mut extra) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        TimestampNanosecondBuilder::new(),
        StringBuilder::new(),
    );
    for &e in events {
        id.append_value(FIRST_PERSON_ID + last_person(e));
        let first = FIRST_NAMES[(g.r(1, e) % FIRST_NAMES.len() as u64) as usize];
        let last = LAST_NAMES[(g.r(2, e) % LAST_NAMES.len() as u64) as usize];
        name.append_value(format!("{first} {last}"));
        email.append_value(format!("{}@{}.com", g.text(3, e, 7), g.text(4, e, 5)));
        card.append_value(format!(
            "{:04} {:04} {:04} {:04}",
            g.r(5, e) % 10000,
            g.r(6, e) % 10000,
            g.r(7, e) % 10000,
            g.r(8, e) % 10000
        ));
        city.append_value(CITIES[(g.r(9, e) % CITIES.len() as u64) as usize]);
        state.append_value(STATES[(g.r(12, e) % STATES.len() as u64) as usize]);
        time.append_value(g.timing.event_time_ns(e));
        extra.append_value("");
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(name.finish()),
        Arc::new(email.finish()),
        Arc::new(card.finish()),
        Arc::new(city.finish()),
        Arc::new(state.finish()),
        Arc::new(time.finish()),
        Arc::new(extra.finish()),
    ]
}

fn auctions(g: &Generator<'_>, events: &[u64]) -> Vec<ArrayRef> {
    let (
        mut id,
        mut item,
        mut description,
        mut initial,
        mut reserve,
        mut time,
        mut expires,
        mut seller,
        mut category,
        mut extra,
    ) = (
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        TimestampNanosecondBuilder::new(),
        TimestampNanosecondBuilder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
    );
    for &e in events {
        id.append_value(FIRST_AUCTION_ID + last_auction(e));
        item.append_value(g.text(20, e, 12));
        description.append_value(g.text(21, e, 30));
        let first_bid = price(g.r(22, e));
        initial.append_value(first_bid);
        reserve.append_value(first_bid + price(g.r(23, e)));
        let now = g.timing.event_time_ns(e);
        time.append_value(now);
        // Auctions stay open for a stretch of event time of up to ~20 s worth of events.
        expires.append_value(
            now + g
                .timing
                .interval_ns
                .saturating_mul(1 + (g.r(24, e) % 200_000) as i64),
        );
        seller.append_value(g.person_id(25, e, HOT_SELLER_RATIO));
        category.append_value(10 + (g.r(27, e) % 5) as i64);
        extra.append_value("");
    }
    vec![
        Arc::new(id.finish()),
        Arc::new(item.finish()),
        Arc::new(description.finish()),
        Arc::new(initial.finish()),
        Arc::new(reserve.finish()),
        Arc::new(time.finish()),
        Arc::new(expires.finish()),
        Arc::new(seller.finish()),
        Arc::new(category.finish()),
        Arc::new(extra.finish()),
    ]
}

fn bids(g: &Generator<'_>, events: &[u64]) -> Vec<ArrayRef> {
    let (mut auction, mut bidder, mut amount, mut channel, mut url, mut time, mut extra) = (
        Int64Builder::new(),
        Int64Builder::new(),
        Int64Builder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        TimestampNanosecondBuilder::new(),
        StringBuilder::new(),
    );
    for &e in events {
        auction.append_value(g.auction_id(e));
        bidder.append_value(g.person_id(30, e, HOT_BIDDER_RATIO));
        amount.append_value(price(g.r(32, e)));
        let name = CHANNELS[(g.r(33, e) % CHANNELS.len() as u64) as usize];
        channel.append_value(name);
        url.append_value(format!(
            "https://www.nexmark.com/{}/item.htm?query=1&channel_id={}",
            name.to_lowercase(),
            g.r(34, e) % 1000
        ));
        time.append_value(g.timing.event_time_ns(e));
        extra.append_value("");
    }
    vec![
        Arc::new(auction.finish()),
        Arc::new(bidder.finish()),
        Arc::new(amount.finish()),
        Arc::new(channel.finish()),
        Arc::new(url.finish()),
        Arc::new(time.finish()),
        Arc::new(extra.finish()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Int64Array};
    use futures::TryStreamExt;

    async fn read(stream: &str, events: &str, splits: &str) -> RecordBatch {
        let config = SourceConfig {
            name: "n".to_string(),
            schema: None,
            options: [
                ("stream", stream),
                ("events", events),
                ("seed", "42"),
                ("start_time_ms", "0"),
                ("splits", splits),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            state: BTreeMap::new(),
            storage_dir: None,
        };
        let source = NexmarkConnector.create(config, true).await.unwrap();
        let mut batches = Vec::new();
        for split in source.snapshot().await.unwrap() {
            batches.extend(
                source
                    .read(split, None, 1000)
                    .try_collect::<Vec<_>>()
                    .await
                    .unwrap(),
            );
        }
        arrow::compute::concat_batches(&source.schema(), &batches).unwrap()
    }

    #[tokio::test]
    async fn proportions_and_ids_follow_nexmark() {
        let bids = read("bid", "5000", "1").await;
        let auctions = read("auction", "5000", "1").await;
        let people = read("person", "5000", "1").await;
        assert_eq!(
            (people.num_rows(), auctions.num_rows(), bids.num_rows()),
            (100, 300, 4600)
        );
        let ids = people
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(ids.value(0), 1000);
        assert_eq!(ids.value(99), 1099);
        let auction_ids = auctions
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert_eq!(
            auction_ids.values().to_vec(),
            (1000..1300).collect::<Vec<i64>>()
        );
        // Bids refer to auctions and people that exist.
        let bid_auctions = bids
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(bid_auctions
            .values()
            .iter()
            .all(|a| (1000..1300).contains(a)));
        let bidders = bids
            .column(1)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(bidders.values().iter().all(|b| (1000..1100).contains(b)));
        let prices = bids
            .column(2)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        assert!(prices
            .values()
            .iter()
            .all(|p| (100..=100_000_000).contains(p)));
    }

    #[tokio::test]
    async fn the_same_seed_gives_the_same_events_in_any_number_of_splits() {
        let one = read("bid", "3000", "1").await;
        let many = read("bid", "3000", "7").await;
        assert_eq!(one, many);
        assert_eq!(one.column(5).null_count(), 0);
    }
}
