//! Avro payloads, decoded in batches by `arrow-avro`.
//!
//! Two framings:
//! * **Confluent** (with a schema registry): magic byte 0, the writer schema's id as 4 bytes
//!   big-endian, then the Avro body. Each id's writer schema is fetched from the registry once
//!   and kept.
//! * **Raw** (an inline schema, no registry): the message is the bare Avro body written with
//!   that schema.
//!
//! Every message is decoded against one *reader schema*, so batches keep one shape while the
//! writers' schemas evolve: Avro's resolution rules fill a field a writer lacks with the
//! reader's default, skip writer fields the reader lacks and promote numbers (int → long →
//! float → double). The reader schema is the *reference* schema (the subject's latest when the
//! source was created, or the inline one) cut down to the declared columns, each made nullable
//! with a `null` default unless it has a default of its own, so a field one writer lacks reads
//! as its default or NULL instead of making the message undecodable.
//!
//! A message is malformed when it lacks the framing, names an id the registry does not know,
//! was written with a schema that cannot be resolved against the reader schema, or has a body
//! that does not decode to exactly one record. A registry that cannot be reached is an error of
//! the read, not a malformed message: skipping would silently drop good data.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, StringArray};
use arrow::compute::{can_cast_types, cast, concat_batches};
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};
use serde_json::{json, Value};

use super::registry::SchemaRegistry;
use crate::source::ConnectorError;

/// Rows a decoder holds before it must be flushed; batches of messages larger than this are
/// flushed in several pieces.
const DECODER_ROWS: usize = 8192;

/// Decoders kept ready per column set (one per partition read running at once).
const IDLE_DECODERS: usize = 4;

/// The field-metadata key and value Freshet uses for JSON text columns.
const EXTENSION_NAME_KEY: &str = "ARROW:extension:name";
const JSON_EXTENSION: &str = "arrow.json";

/// How messages carry (or not) their writer schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Magic byte 0, a 4-byte big-endian schema id, the body.
    Confluent,
    /// The bare body, written with the reference schema.
    Raw,
}

/// Where an Avro decoder's schemas come from.
#[derive(Debug, Clone)]
pub struct AvroConfig {
    pub framing: Framing,
    /// Needed for Confluent framing: writer schemas are fetched from it by id.
    pub registry: Option<SchemaRegistry>,
    /// The reference schema (JSON text of an Avro record) the reader schema is made from.
    pub reference: String,
    /// Writer schemas known without asking a registry, by id (Confluent framing).
    pub known_writers: Vec<(u32, String)>,
}

/// A decoder of Avro messages into batches of fixed columns. Clones share the schema cache.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    shared: Arc<Shared>,
    plan: Arc<Plan>,
}

#[derive(Debug)]
struct Shared {
    framing: Framing,
    registry: Option<SchemaRegistry>,
    /// The reference record schema, parsed.
    reference: Value,
    /// Writer schemas by id: the schema's JSON text, or why there is none (unknown id).
    writers: Mutex<HashMap<u32, Result<Arc<str>, String>>>,
    /// Plans by column set: a continuous query reads the same projection many times a second,
    /// and a plan keeps its resolved writers and idle decoders.
    plans: Mutex<HashMap<String, Arc<Plan>>>,
}

/// Column sets whose plans are kept at most.
const KEPT_PLANS: usize = 64;

/// The reader side for one set of output columns.
#[derive(Debug)]
struct Plan {
    reader: AvroSchema,
    /// What the reader schema decodes to.
    decoded: SchemaRef,
    /// For each output column, its index in `decoded`.
    positions: Vec<usize>,
    /// For each output column, whether it is an Avro uuid (decoded as 16 bytes).
    uuids: Vec<bool>,
    target: SchemaRef,
    state: Mutex<PlanState>,
}

#[derive(Debug, Default)]
struct PlanState {
    /// Whether each writer id seen resolves against the reader schema (and why not).
    resolved: HashMap<u32, Result<(), String>>,
    /// Idle decoders, each with the writer ids its store holds.
    idle: Vec<(BTreeSet<u32>, Decoder)>,
}

fn schema_error(message: impl Into<String>) -> ConnectorError {
    ConnectorError::Schema(message.into())
}

impl AvroDecoder {
    /// A decoder for `columns` (the declared payload columns), or for every field of the
    /// reference schema when none are declared.
    pub fn new(config: AvroConfig, columns: Option<SchemaRef>) -> Result<Self, ConnectorError> {
        let reference: Value = serde_json::from_str(&config.reference)
            .map_err(|e| schema_error(format!("the Avro schema is not valid JSON: {e}")))?;
        if reference.get("type").and_then(Value::as_str) != Some("record")
            || !reference.get("fields").is_some_and(Value::is_array)
        {
            return Err(schema_error(
                "the Avro schema must be a record (\"type\": \"record\" with \"fields\"): each field is a column",
            ));
        }
        if config.framing == Framing::Confluent
            && config.registry.is_none()
            && config.known_writers.is_empty()
        {
            return Err(schema_error(
                "Confluent-framed Avro needs a schema registry (schema_registry_url)",
            ));
        }
        let mut writers = HashMap::new();
        if config.framing == Framing::Raw {
            writers.insert(0, Ok(Arc::from(config.reference.as_str())));
        }
        for (id, text) in &config.known_writers {
            writers.insert(*id, Ok(Arc::from(text.as_str())));
        }
        let shared = Arc::new(Shared {
            framing: config.framing,
            registry: config.registry,
            reference,
            writers: Mutex::new(writers),
            plans: Mutex::new(HashMap::new()),
        });
        let plan = Arc::new(Plan::new(&shared.reference, columns.as_ref())?);
        Ok(Self { shared, plan })
    }

    /// The same decoder for other columns (a projection), sharing the writer schemas.
    pub fn with_columns(&self, columns: SchemaRef) -> Result<Self, ConnectorError> {
        let key = format!("{:?}", columns.fields());
        let kept = self
            .shared
            .plans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let plan = match kept {
            Some(plan) => plan,
            None => {
                let plan = Arc::new(Plan::new(&self.shared.reference, Some(&columns))?);
                let mut plans = self.shared.plans.lock().unwrap_or_else(|p| p.into_inner());
                if plans.len() >= KEPT_PLANS {
                    plans.clear();
                }
                plans.insert(key, plan.clone());
                plan
            }
        };
        Ok(Self {
            shared: self.shared.clone(),
            plan,
        })
    }

    /// The schema of decoded batches.
    pub fn schema(&self) -> SchemaRef {
        self.plan.target.clone()
    }

    /// The reader schema's JSON text (what each writer schema is resolved against).
    pub fn reader_schema(&self) -> &str {
        &self.plan.reader.json_string
    }

    /// Decodes `messages`; returns the rows of the good ones, in order, and for each malformed
    /// one its index and the reason. Fails only when the schema registry cannot be reached.
    pub fn decode(
        &self,
        messages: &[&[u8]],
    ) -> Result<(RecordBatch, Vec<(usize, String)>), ConnectorError> {
        let mut malformed: Vec<(usize, String)> = Vec::new();
        let mut good: Vec<(usize, u32)> = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match self.writer_id(message) {
                Ok(id) => good.push((index, id)),
                Err(reason) => malformed.push((index, reason)),
            }
        }
        let ids: BTreeSet<u32> = good.iter().map(|(_, id)| *id).collect();
        self.resolve(&ids)?;
        let usable: BTreeSet<u32> = {
            let state = self.plan.lock();
            good.retain(|(index, id)| match state.resolved.get(id) {
                Some(Ok(())) => true,
                Some(Err(reason)) => {
                    malformed.push((*index, reason.clone()));
                    false
                }
                None => {
                    malformed.push((*index, format!("writer schema id {id} was not resolved")));
                    false
                }
            });
            good.iter().map(|(_, id)| *id).collect()
        };
        let batches = if good.is_empty() {
            Vec::new()
        } else {
            let mut decoder = self.take_decoder(&usable)?;
            match self.decode_all(&mut decoder, messages, &good) {
                Ok(batches) => {
                    self.give_decoder(usable, decoder);
                    batches
                }
                // Slow path: one message at a time, to find the bad bodies.
                Err(_) => self.decode_each(&usable, messages, &good, &mut malformed)?,
            }
        };
        malformed.sort_by_key(|(index, _)| *index);
        let decoded = concat_batches(&self.plan.decoded, &batches)?;
        Ok((self.plan.output(&decoded)?, malformed))
    }

    fn writer_id(&self, message: &[u8]) -> Result<u32, String> {
        match self.shared.framing {
            Framing::Raw if message.is_empty() => Err("empty message".to_string()),
            Framing::Raw => Ok(0),
            Framing::Confluent => {
                if message.len() < 5 {
                    return Err(format!(
                        "{} bytes: shorter than the 5-byte schema-registry header",
                        message.len()
                    ));
                }
                if message[0] != 0 {
                    return Err(format!(
                        "first byte {:#04x}, not the schema-registry magic byte 0",
                        message[0]
                    ));
                }
                Ok(u32::from_be_bytes([
                    message[1], message[2], message[3], message[4],
                ]))
            }
        }
    }

    /// Fetches the writer schemas of `ids` not seen yet and checks each resolves against the
    /// reader schema.
    fn resolve(&self, ids: &BTreeSet<u32>) -> Result<(), ConnectorError> {
        let missing: Vec<u32> = {
            let state = self.plan.lock();
            ids.iter()
                .copied()
                .filter(|id| !state.resolved.contains_key(id))
                .collect()
        };
        for id in missing {
            let result = match self.shared.writer(id)? {
                Err(reason) => Err(reason),
                Ok(text) => self
                    .plan
                    .build_decoder(&[(id, text.as_ref())])
                    .map(|_| ())
                    .map_err(|e| {
                        format!(
                            "writer schema id {id} does not resolve against the reader schema: {e}"
                        )
                    }),
            };
            self.plan.lock().resolved.insert(id, result);
        }
        Ok(())
    }

    fn take_decoder(&self, ids: &BTreeSet<u32>) -> Result<Decoder, ConnectorError> {
        {
            let mut state = self.plan.lock();
            if let Some(i) = state.idle.iter().position(|(have, _)| ids.is_subset(have)) {
                return Ok(state.idle.swap_remove(i).1);
            }
        }
        let writers = self
            .shared
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut schemas = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(Ok(text)) = writers.get(id) {
                schemas.push((*id, text.clone()));
            }
        }
        drop(writers);
        let borrowed: Vec<(u32, &str)> = schemas.iter().map(|(id, t)| (*id, t.as_ref())).collect();
        self.plan
            .build_decoder(&borrowed)
            .map_err(|e| schema_error(format!("Avro decoder: {e}")))
    }

    fn give_decoder(&self, ids: BTreeSet<u32>, decoder: Decoder) {
        let mut state = self.plan.lock();
        if state.idle.len() < IDLE_DECODERS {
            state.idle.push((ids, decoder));
        }
    }

    /// All good messages through one decoder; any bad body fails the whole call.
    fn decode_all(
        &self,
        decoder: &mut Decoder,
        messages: &[&[u8]],
        good: &[(usize, u32)],
    ) -> Result<Vec<RecordBatch>, String> {
        let mut batches = Vec::new();
        for (index, _) in good {
            self.feed(decoder, messages[*index], &mut batches)?;
        }
        if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
            batches.push(batch);
        }
        Ok(batches)
    }

    /// One message at a time: a decoder that failed mid-record is replaced.
    fn decode_each(
        &self,
        ids: &BTreeSet<u32>,
        messages: &[&[u8]],
        good: &[(usize, u32)],
        malformed: &mut Vec<(usize, String)>,
    ) -> Result<Vec<RecordBatch>, ConnectorError> {
        let mut decoder = self.take_decoder(ids)?;
        let mut batches = Vec::new();
        for (index, _) in good {
            let mut one = Vec::new();
            let result = self
                .feed(&mut decoder, messages[*index], &mut one)
                .and_then(|()| {
                    decoder
                        .flush()
                        .map_err(|e| e.to_string())
                        .map(|b| one.extend(b))
                });
            match result {
                Ok(()) => batches.extend(one),
                Err(reason) => {
                    malformed.push((*index, reason));
                    decoder = self.take_decoder(ids)?;
                }
            }
        }
        self.give_decoder(ids.clone(), decoder);
        Ok(batches)
    }

    /// Feeds one message; it must hold exactly one record.
    fn feed(
        &self,
        decoder: &mut Decoder,
        message: &[u8],
        batches: &mut Vec<RecordBatch>,
    ) -> Result<(), String> {
        // The raw framing is given the header of writer id 0, so one decoder serves both.
        const RAW_HEADER: [u8; 5] = [0, 0, 0, 0, 0];
        let parts: [&[u8]; 2] = match self.shared.framing {
            Framing::Raw => [&RAW_HEADER, message],
            Framing::Confluent => [message, &[]],
        };
        let pending = |d: &Decoder| DECODER_ROWS - d.capacity();
        let mut flushed = 0usize;
        let before = pending(decoder);
        for part in parts {
            let mut offset = 0;
            while offset < part.len() {
                let used = decoder.decode(&part[offset..]).map_err(|e| e.to_string())?;
                offset += used;
                if decoder.batch_is_full() {
                    // Full, or switching to another writer schema: the rows so far go first.
                    if let Some(batch) = decoder.flush().map_err(|e| e.to_string())? {
                        flushed += batch.num_rows();
                        batches.push(batch);
                    }
                } else if used == 0 {
                    return Err("truncated Avro body".to_string());
                }
            }
        }
        match (flushed + pending(decoder)).checked_sub(before) {
            Some(1) => Ok(()),
            Some(0) => Err("truncated Avro body (no complete record)".to_string()),
            _ => Err("trailing bytes after the Avro record".to_string()),
        }
    }
}

impl Shared {
    /// The writer schema of `id`, fetched from the registry the first time.
    fn writer(&self, id: u32) -> Result<Result<Arc<str>, String>, ConnectorError> {
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = writers.get(&id) {
            return Ok(known.clone());
        }
        let Some(registry) = &self.registry else {
            return Ok(Err(format!("unknown writer schema id {id}")));
        };
        // Held across the fetch so that partitions reading at once fetch an id only once.
        let fetched = block_on(registry.schema_by_id(id))??;
        let entry = match fetched {
            Some(text) => Ok(Arc::from(text.as_str())),
            None => Err(format!(
                "schema id {id} is not in the schema registry {}",
                registry.url()
            )),
        };
        writers.insert(id, entry.clone());
        Ok(entry)
    }
}

/// Runs `future` to completion from synchronous code, whether or not the caller is inside a
/// Tokio runtime: on a scoped thread with its own runtime (registry fetches are rare, once per
/// schema id, so the thread costs nothing that matters).
fn block_on<F>(future: F) -> Result<F::Output, ConnectorError>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
    })
    .map_err(|_| schema_error("the schema registry request panicked"))?
    .map_err(|e| schema_error(format!("could not start the schema registry request: {e}")))
}

impl Plan {
    fn new(reference: &Value, columns: Option<&SchemaRef>) -> Result<Self, ConnectorError> {
        let fields = reference["fields"].as_array().cloned().unwrap_or_default();
        let field_name = |f: &Value| f.get("name").and_then(Value::as_str).map(str::to_string);
        // The wanted columns: (name to find in the Avro record, declared field if any).
        let wanted: Vec<(String, Option<FieldRef>)> = match columns {
            Some(schema) => schema
                .fields()
                .iter()
                .map(|f| (f.name().clone(), Some(f.clone())))
                .collect(),
            None => fields
                .iter()
                .filter_map(field_name)
                .map(|n| (n, None))
                .collect(),
        };
        // Each wanted column's field in the reference: the exact name, else the only one that
        // matches ignoring case (SQL folds unquoted names to lower case, Avro names often are
        // camelCase).
        let find = |name: &str| -> Option<usize> {
            let names: Vec<Option<String>> = fields.iter().map(field_name).collect();
            names
                .iter()
                .position(|n| n.as_deref() == Some(name))
                .or_else(|| {
                    let matches: Vec<usize> = names
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(name)))
                        .map(|(i, _)| i)
                        .collect();
                    (matches.len() == 1).then(|| matches[0])
                })
        };
        let found: Vec<Option<usize>> = wanted.iter().map(|(name, _)| find(name)).collect();
        // Reader fields: the wanted ones, plus any that defines a named type a kept field may
        // refer to (dropping it would leave the name undefined).
        let mut reader_fields = Vec::new();
        let mut reader_index: HashMap<usize, usize> = HashMap::new();
        for (i, field) in fields.iter().enumerate() {
            if found.contains(&Some(i)) || defines_named_type(&field["type"]) {
                reader_index.insert(i, reader_fields.len());
                reader_fields.push(nullable(field));
            }
        }
        let mut positions = Vec::with_capacity(wanted.len());
        for ((name, declared), at) in wanted.iter().zip(&found) {
            match at {
                Some(i) => positions.push(reader_index[i]),
                None => {
                    // Not in the reference schema (a field yet to be added, or dropped): NULL
                    // unless a writer has it.
                    let declared = declared
                        .as_ref()
                        .expect("undeclared columns come from the schema");
                    if !is_avro_name(name) {
                        return Err(schema_error(format!(
                            "column {name} is not in the Avro schema and is not a valid Avro field name"
                        )));
                    }
                    positions.push(reader_fields.len());
                    reader_fields.push(json!({
                        "name": name,
                        "type": ["null", avro_type_for(declared.data_type())],
                        "default": null,
                    }));
                }
            }
        }
        let uuids: Vec<bool> = positions
            .iter()
            .map(|p| is_uuid_type(&reader_fields[*p]["type"]))
            .collect();
        let mut reader = reference.clone();
        reader["fields"] = Value::Array(reader_fields);
        let reader = AvroSchema::new(reader.to_string());
        let decoded = {
            let decoder = build_decoder(&reader, &[(0, &reader.json_string)])
                .map_err(|e| schema_error(format!("the Avro schema: {e}")))?;
            decoder.schema()
        };
        let mut target_fields = Vec::with_capacity(wanted.len());
        for (((name, declared), position), uuid) in wanted.iter().zip(&positions).zip(&uuids) {
            let from = decoded.field(*position);
            let field = match declared {
                Some(declared) => {
                    if !convertible(from, *uuid, declared.data_type()) {
                        return Err(schema_error(format!(
                            "column {name}: the Avro field decodes to {} which cannot be read as {}",
                            from.data_type(),
                            declared.data_type()
                        )));
                    }
                    declared.as_ref().clone()
                }
                None => natural(from, *uuid)?,
            };
            target_fields.push(field.with_nullable(true));
        }
        Ok(Self {
            reader,
            decoded,
            positions,
            uuids,
            target: Arc::new(Schema::new(target_fields)),
            state: Mutex::new(PlanState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PlanState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn build_decoder(&self, writers: &[(u32, &str)]) -> Result<Decoder, String> {
        build_decoder(&self.reader, writers)
    }

    /// The output columns of a decoded batch, converted to their target types.
    fn output(&self, decoded: &RecordBatch) -> Result<RecordBatch, ConnectorError> {
        let columns = self
            .positions
            .iter()
            .zip(&self.uuids)
            .zip(self.target.fields())
            .map(|((position, uuid), target)| convert(decoded.column(*position), *uuid, target))
            .collect::<Result<Vec<_>, _>>()?;
        let options =
            arrow::array::RecordBatchOptions::new().with_row_count(Some(decoded.num_rows()));
        Ok(RecordBatch::try_new_with_options(
            self.target.clone(),
            columns,
            &options,
        )?)
    }
}

fn build_decoder(reader: &AvroSchema, writers: &[(u32, &str)]) -> Result<Decoder, String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    for (id, text) in writers {
        store
            .set(Fingerprint::Id(*id), AvroSchema::new(text.to_string()))
            .map_err(|e| e.to_string())?;
    }
    ReaderBuilder::new()
        .with_batch_size(DECODER_ROWS)
        .with_reader_schema(reader.clone())
        .with_writer_schema_store(store)
        .build_decoder()
        .map_err(|e| e.to_string())
}

/// A reader field that a writer may lack: its own default, else NULL.
fn nullable(field: &Value) -> Value {
    let mut field = field.clone();
    if field.get("default").is_some() {
        return field;
    }
    let branches = match field["type"].take() {
        Value::Array(mut branches) => {
            // A union's default must be of its first branch: null goes first.
            if let Some(i) = branches.iter().position(|b| b == "null") {
                let null = branches.remove(i);
                branches.insert(0, null);
            } else {
                branches.insert(0, json!("null"));
            }
            branches
        }
        Value::String(s) if s == "null" => vec![json!("null")],
        other => vec![json!("null"), other],
    };
    field["type"] = if branches.len() == 1 {
        branches[0].clone()
    } else {
        Value::Array(branches)
    };
    field["default"] = Value::Null;
    field
}

/// Whether an Avro type defines a named type (record, enum, fixed) somewhere inside.
fn defines_named_type(ty: &Value) -> bool {
    match ty {
        Value::Array(branches) => branches.iter().any(defines_named_type),
        Value::Object(object) => {
            matches!(
                object.get("type").and_then(Value::as_str),
                Some("record" | "error" | "enum" | "fixed")
            ) || object.get("items").is_some_and(defines_named_type)
                || object.get("values").is_some_and(defines_named_type)
                || object
                    .get("type")
                    .is_some_and(|t| t.is_object() && defines_named_type(t))
        }
        _ => false,
    }
}

fn is_avro_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Avro type a declared column absent from the schema is read as (always NULL unless a
/// writer has the field, then resolved by Avro's promotion rules).
fn avro_type_for(data_type: &DataType) -> Value {
    match data_type {
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => json!("long"),
        DataType::Float16 | DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => json!("bytes"),
        DataType::Date32 | DataType::Date64 => json!({"type": "int", "logicalType": "date"}),
        DataType::Timestamp(..) => json!({"type": "long", "logicalType": "timestamp-micros"}),
        _ => json!("string"),
    }
}

/// Whether an Avro field type is a uuid (or a union holding one), which `arrow-avro`
/// decodes to 16 bytes.
fn is_uuid_type(ty: &Value) -> bool {
    match ty {
        Value::Array(branches) => branches.iter().any(is_uuid_type),
        Value::Object(object) => object.get("logicalType").and_then(Value::as_str) == Some("uuid"),
        _ => false,
    }
}

fn json_field(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
        .with_metadata([(EXTENSION_NAME_KEY.to_string(), JSON_EXTENSION.to_string())].into())
}

/// The column type an Avro field is shown as when no columns are declared: what PostgreSQL
/// clients can read (enum → text, uuid → text, fixed → bytea, map → json).
fn natural(field: &Field, uuid: bool) -> Result<Field, ConnectorError> {
    let name = field.name();
    let data_type = match field.data_type() {
        DataType::FixedSizeBinary(16) if uuid => DataType::Utf8,
        DataType::Map(..) => return Ok(json_field(name)),
        DataType::Union(..) => {
            return Err(schema_error(format!(
                "field {name}: a union of several non-null types has no column type; declare the columns without it"
            )))
        }
        other => nested_natural(other),
    };
    Ok(Field::new(name, data_type, true))
}

fn nested_natural(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Dictionary(_, value) => nested_natural(value),
        DataType::FixedSizeBinary(_) => DataType::Binary,
        DataType::List(element) => DataType::List(Arc::new(
            element
                .as_ref()
                .clone()
                .with_data_type(nested_natural(element.data_type())),
        )),
        DataType::Struct(fields) => DataType::Struct(Fields::from(
            fields
                .iter()
                .map(|f| {
                    f.as_ref()
                        .clone()
                        .with_data_type(nested_natural(f.data_type()))
                })
                .collect::<Vec<_>>(),
        )),
        other => other.clone(),
    }
}

fn is_text(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn convertible(from: &Field, uuid: bool, to: &DataType) -> bool {
    from.data_type() == to
        || (is_text(to) && (uuid || matches!(from.data_type(), DataType::Map(..))))
        || can_cast_types(from.data_type(), to)
}

/// Converts a decoded column to its output type: uuids and maps to text by hand, the rest by
/// Arrow's cast.
fn convert(column: &ArrayRef, uuid: bool, to: &Field) -> Result<ArrayRef, ConnectorError> {
    if column.data_type() == to.data_type() {
        return Ok(column.clone());
    }
    let text: Option<ArrayRef> = if is_text(to.data_type()) && uuid {
        Some(uuid_text(column))
    } else if is_text(to.data_type()) && matches!(column.data_type(), DataType::Map(..)) {
        Some(map_json(column)?)
    } else {
        None
    };
    match text {
        Some(text) if text.data_type() == to.data_type() => Ok(text),
        Some(text) => Ok(cast(&text, to.data_type())?),
        None => Ok(cast(column, to.data_type())?),
    }
}

fn uuid_text(column: &ArrayRef) -> ArrayRef {
    let Some(bytes) = column.as_any().downcast_ref::<FixedSizeBinaryArray>() else {
        return column.clone();
    };
    let text: StringArray = (0..bytes.len())
        .map(|i| {
            bytes.is_valid(i).then(|| {
                let b = bytes.value(i);
                let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                format!(
                    "{}-{}-{}-{}-{}",
                    &hex[0..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..32]
                )
            })
        })
        .collect();
    Arc::new(text)
}

/// A map column as JSON objects, one per row (NULL stays NULL).
fn map_json(column: &ArrayRef) -> Result<ArrayRef, ConnectorError> {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "v",
        column.data_type().clone(),
        true,
    )]));
    let batch = RecordBatch::try_new(schema, vec![column.clone()])?;
    let mut buffer = Vec::new();
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buffer);
        writer.write(&batch)?;
        writer.finish()?;
    }
    let text = String::from_utf8(buffer).map_err(|e| schema_error(format!("map as JSON: {e}")))?;
    let values: StringArray = text
        .lines()
        .map(|line| {
            // Each line is {"v":<value>}.
            let value = line
                .strip_prefix("{\"v\":")
                .and_then(|rest| rest.strip_suffix('}'))
                .unwrap_or("null");
            (value != "null").then(|| value.to_string())
        })
        .collect();
    if values.len() != column.len() {
        return Err(schema_error("map as JSON: row count changed"));
    }
    Ok(Arc::new(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_fields_are_nullable_with_defaults_kept() {
        assert_eq!(
            nullable(&json!({"name": "a", "type": "long"})),
            json!({"name": "a", "type": ["null", "long"], "default": null})
        );
        assert_eq!(
            nullable(&json!({"name": "a", "type": ["string", "null"]})),
            json!({"name": "a", "type": ["null", "string"], "default": null})
        );
        let with_default = json!({"name": "a", "type": "int", "default": 7});
        assert_eq!(nullable(&with_default), with_default);
    }

    #[test]
    fn named_type_definitions_are_found_inside_unions_and_arrays() {
        assert!(defines_named_type(
            &json!(["null", {"type": "array", "items": {"type": "enum", "name": "E", "symbols": ["A"]}}])
        ));
        assert!(!defines_named_type(&json!(["null", "E"])));
        assert!(!defines_named_type(
            &json!({"type": "long", "logicalType": "timestamp-millis"})
        ));
    }

    #[test]
    fn a_reference_that_is_not_a_record_is_refused() {
        let err = AvroDecoder::new(
            AvroConfig {
                framing: Framing::Raw,
                registry: None,
                reference: "\"long\"".to_string(),
                known_writers: Vec::new(),
            },
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("record"), "{err}");
    }
}
