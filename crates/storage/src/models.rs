//! The model store: ONNX files by content id, with their metadata, in the same redb file as
//! the chain so models persist (and back up) with the chain data.
//!
//! Two tables: `model_bytes` (id → file) and `model_meta` (id → JSON [`ModelMeta`]). Both rows
//! are written in one fsynced transaction, so a model is either fully stored or absent. Ids
//! are content hashes, so storing the same file twice is a no-op that keeps the first
//! metadata: a model's decimals and cost units never change under the contracts using it.

use pipe_primitives::inference::{ModelId, ModelMeta};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::{Store, StoreError};

pub(crate) const MODEL_BYTES: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("model_bytes");
pub(crate) const MODEL_META: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("model_meta");

fn decode(id: &ModelId, raw: &[u8]) -> Result<ModelMeta, StoreError> {
    serde_json::from_slice(raw)
        .map_err(|e| StoreError::Corrupt(format!("model {id} metadata: {e}")))
}

impl Store {
    /// Stores a model. Returns `false` (and changes nothing) when the id is already stored.
    pub fn put_model(&self, meta: &ModelMeta, bytes: &[u8]) -> Result<bool, StoreError> {
        let mut tx = self.db()?.begin_write()?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Corrupt(format!("durability: {e}")))?;
        let fresh = {
            let mut files = tx.open_table(MODEL_BYTES)?;
            if files.get(&meta.id.0)?.is_some() {
                false
            } else {
                files.insert(&meta.id.0, bytes)?;
                let json =
                    serde_json::to_vec(meta).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                tx.open_table(MODEL_META)?
                    .insert(&meta.id.0, json.as_slice())?;
                true
            }
        };
        tx.commit()?;
        Ok(fresh)
    }

    /// A model's metadata.
    pub fn model_meta(&self, id: &ModelId) -> Result<Option<ModelMeta>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(MODEL_META)?;
        table.get(&id.0)?.map(|v| decode(id, v.value())).transpose()
    }

    /// A model's file.
    pub fn model_bytes(&self, id: &ModelId) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(MODEL_BYTES)?;
        Ok(table.get(&id.0)?.map(|v| v.value().to_vec()))
    }

    /// Up to `len` bytes of a stored file from `offset` (fewer at its end; none past it).
    pub fn model_bytes_range(
        &self,
        id: &ModelId,
        offset: u64,
        len: usize,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(MODEL_BYTES)?;
        Ok(table.get(&id.0)?.map(|v| {
            let bytes = v.value();
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(len).min(bytes.len());
            bytes[start..end].to_vec()
        }))
    }

    /// Every stored model's metadata, in id order.
    pub fn models(&self) -> Result<Vec<ModelMeta>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let table = tx.open_table(MODEL_META)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (k, v) = row?;
            out.push(decode(&ModelId(*k.value()), v.value())?);
        }
        Ok(out)
    }
}
