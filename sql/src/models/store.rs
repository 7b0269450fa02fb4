//! Models on disk, under `<data-dir>/models/<name>/`.
//!
//! A trained version `v` is three Arrow IPC files — `users-v.arrow` and `items-v.arrow` (id,
//! factor vector) and `ratings-v.arrow` (the training pairs, for excluding rated items and
//! folding in) — and `meta.json` naming `v`, written last through a temporary file and a
//! rename. A crash leaves the previous version or the new one; files of other versions are
//! deleted after the switch.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use serde::{Deserialize, Serialize};

use super::als::{AlsModel, AlsParams};
use super::{Id, IdKind, TrainedModel, TrainingStats};
use crate::error::{EngineError, ErrorKind};

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    version: u64,
    params: AlsParams,
    user_kind: IdKind,
    item_kind: IdKind,
    columns: [String; 3],
    stats: TrainingStats,
    rank: usize,
    /// Absent in models saved before it existed.
    #[serde(default)]
    fold_in_from: BTreeMap<i32, i64>,
}

fn io(what: &str, path: &Path, err: impl std::fmt::Display) -> EngineError {
    EngineError::new(
        ErrorKind::Io,
        format!("could not {what} {}: {err}", path.display()),
    )
}

fn write_ipc(path: &Path, batch: &RecordBatch) -> Result<(), EngineError> {
    let file = File::create(path).map_err(|e| io("create", path, e))?;
    let mut writer =
        FileWriter::try_new(file, &batch.schema()).map_err(|e| io("write", path, e))?;
    writer.write(batch).map_err(|e| io("write", path, e))?;
    writer.finish().map_err(|e| io("write", path, e))?;
    writer.get_ref().sync_all().map_err(|e| io("sync", path, e))
}

fn read_ipc(path: &Path) -> Result<RecordBatch, EngineError> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    let reader = FileReader::try_new(file, None).map_err(|e| io("read", path, e))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io("read", path, e))?;
    datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(|e| io("read", path, e))
}

fn factors_batch(
    kind: IdKind,
    ids: &[Id],
    factors: &[f32],
    rank: usize,
) -> Result<RecordBatch, EngineError> {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let values = Float32Array::from(factors.to_vec());
    let list = FixedSizeListArray::try_new(item.clone(), rank as i32, Arc::new(values), None)?;
    let schema = Schema::new(vec![
        Field::new("id", kind.data_type(), false),
        Field::new("factor", DataType::FixedSizeList(item, rank as i32), false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![kind.array(ids.iter()), Arc::new(list) as ArrayRef],
    )?)
}

fn read_factors(path: &Path, kind: IdKind) -> Result<(Vec<Id>, Vec<f32>), EngineError> {
    let batch = read_ipc(path)?;
    let ids = kind
        .ids(batch.column(0))?
        .into_iter()
        .map(|id| id.ok_or_else(|| io("read", path, "NULL id")))
        .collect::<Result<Vec<_>, _>>()?;
    let list = batch
        .column(1)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .ok_or_else(|| io("read", path, "factor column is not a list"))?;
    let values = list
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| io("read", path, "factors are not float32"))?;
    Ok((ids, values.values().to_vec()))
}

/// The directory of model `name`.
pub fn dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("models").join(name)
}

/// Writes a trained model as a new version.
pub fn save(dir: &Path, model: &TrainedModel) -> Result<(), EngineError> {
    fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
    let old = fs::read(dir.join("meta.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
        .map(|m| m.version)
        .unwrap_or(0);
    let version = old + 1;
    let rank = model.model.rank;
    write_ipc(
        &dir.join(format!("users-{version}.arrow")),
        &factors_batch(
            model.user_kind,
            &model.user_ids,
            &model.model.user_factors,
            rank,
        )?,
    )?;
    write_ipc(
        &dir.join(format!("items-{version}.arrow")),
        &factors_batch(
            model.item_kind,
            &model.item_ids,
            &model.model.item_factors,
            rank,
        )?,
    )?;
    let (mut users, mut items, mut values) = (Vec::new(), Vec::new(), Vec::new());
    for (user, rated) in model.rated.iter().enumerate() {
        for (item, value) in rated {
            users.push(user as u32);
            items.push(*item);
            values.push(*value);
        }
    }
    let schema = Schema::new(vec![
        Field::new("user", DataType::UInt32, false),
        Field::new("item", DataType::UInt32, false),
        Field::new("value", DataType::Float32, false),
    ]);
    let ratings = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(UInt32Array::from(users)),
            Arc::new(UInt32Array::from(items)),
            Arc::new(Float32Array::from(values)),
        ],
    )?;
    write_ipc(&dir.join(format!("ratings-{version}.arrow")), &ratings)?;
    let meta = Meta {
        version,
        params: model.params.clone(),
        user_kind: model.user_kind,
        item_kind: model.item_kind,
        columns: model.columns.clone(),
        stats: model.stats.clone(),
        rank,
        fold_in_from: model.fold_in_from.clone(),
    };
    let temp = dir.join("meta.json.tmp");
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| io("encode", &temp, e))?;
    let mut file = File::create(&temp).map_err(|e| io("create", &temp, e))?;
    file.write_all(&bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| io("write", &temp, e))?;
    fs::rename(&temp, dir.join("meta.json")).map_err(|e| io("rename", &temp, e))?;
    // Older versions are no longer referenced.
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".arrow") && !name.ends_with(&format!("-{version}.arrow")) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(())
}

/// Reads the current version, if the model was ever saved.
pub fn load(dir: &Path) -> Result<Option<TrainedModel>, EngineError> {
    let meta_path = dir.join("meta.json");
    let bytes = match fs::read(&meta_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", &meta_path, e)),
    };
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| io("parse", &meta_path, e))?;
    let v = meta.version;
    let (user_ids, user_factors) =
        read_factors(&dir.join(format!("users-{v}.arrow")), meta.user_kind)?;
    let (item_ids, item_factors) =
        read_factors(&dir.join(format!("items-{v}.arrow")), meta.item_kind)?;
    let ratings = read_ipc(&dir.join(format!("ratings-{v}.arrow")))?;
    let column = |i: usize| -> Result<&UInt32Array, EngineError> {
        ratings
            .column(i)
            .as_any()
            .downcast_ref::<UInt32Array>()
            .ok_or_else(|| io("read", dir, "ratings file has the wrong types"))
    };
    let (users, items) = (column(0)?, column(1)?);
    let values = ratings
        .column(2)
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| io("read", dir, "ratings file has the wrong types"))?;
    let mut rated = vec![Vec::new(); user_ids.len()];
    for i in 0..ratings.num_rows() {
        if let Some(list) = rated.get_mut(users.value(i) as usize) {
            list.push((items.value(i), values.value(i)));
        }
    }
    let index = |ids: &[Id]| -> HashMap<Id, u32> {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect()
    };
    Ok(Some(TrainedModel {
        model: AlsModel {
            rank: meta.rank,
            n_users: user_ids.len(),
            n_items: item_ids.len(),
            user_factors,
            item_factors,
        },
        params: meta.params,
        user_kind: meta.user_kind,
        item_kind: meta.item_kind,
        user_index: index(&user_ids),
        item_index: index(&item_ids),
        user_ids,
        item_ids,
        rated,
        columns: meta.columns,
        stats: meta.stats,
        fold_in_from: meta.fold_in_from,
    }))
}

/// Removes a dropped model's files.
pub fn remove(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_model_loads_back_identically() {
        let tmp = tempfile::tempdir().unwrap();
        let ids = |v: &[&str]| {
            v.iter()
                .map(|s| Id::Text(s.to_string()))
                .collect::<Vec<_>>()
        };
        let user_ids = ids(&["ann", "bob"]);
        let item_ids = vec![Id::Int(7), Id::Int(9), Id::Int(11)];
        let model = TrainedModel {
            params: AlsParams::default(),
            model: AlsModel {
                rank: 2,
                n_users: 2,
                n_items: 3,
                user_factors: vec![0.1, 0.2, 0.3, 0.4],
                item_factors: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            },
            user_kind: IdKind::Text,
            item_kind: IdKind::Int,
            user_index: user_ids.iter().cloned().zip(0..).collect(),
            item_index: item_ids.iter().cloned().zip(0..).collect(),
            user_ids,
            item_ids,
            rated: vec![vec![(0, 4.0), (2, 1.0)], vec![(1, 5.0)]],
            columns: ["u".into(), "i".into(), "r".into()],
            fold_in_from: BTreeMap::from([(0, 41), (3, 7)]),
            stats: TrainingStats {
                ratings: 3,
                trained_at_ms: 5,
                training_seconds: 0.5,
                training_rmse: 0.25,
            },
        };
        save(tmp.path(), &model).unwrap();
        save(tmp.path(), &model).unwrap();
        let loaded = load(tmp.path()).unwrap().unwrap();
        assert_eq!(loaded.model.user_factors, model.model.user_factors);
        assert_eq!(loaded.model.item_factors, model.model.item_factors);
        assert_eq!(loaded.user_ids, model.user_ids);
        assert_eq!(loaded.item_ids, model.item_ids);
        assert_eq!(loaded.rated, model.rated);
        assert_eq!(loaded.fold_in_from, model.fold_in_from);
        assert_eq!(loaded.user(&Id::Text("bob".to_string())), Some(1));
        // Only the current version's files remain.
        let files = fs::read_dir(tmp.path()).unwrap().count();
        assert_eq!(files, 4);
        assert!(load(&tmp.path().join("none")).unwrap().is_none());
    }
}
