//! The `pipe_` namespace: the model store.
//!
//! - `pipe_uploadModel(bytes, options?)` stores an ONNX or GGUF file and returns its metadata (the
//!   `id` is the `modelCID` contracts pass). Uploading a stored file again returns the stored
//!   metadata (name included); asking for other decimals or more cost units than stored is
//!   refused, since a model's terms never change under its users.
//!   `options`: `{ "name": string, "decimals": 0..=18, "costUnits": n }`.
//! - `pipe_listModels()` lists every stored model's metadata.
//! - `pipe_getModel(id)` returns one model's metadata, or `null`.
//! - `pipe_uploadModelChunk(session, offset, bytes)` and `pipe_finishModelUpload(session,
//!   options?)`: the same upload for files too large for one request body (language models
//!   of hundreds of MB), in chunks of at most [`MAX_CHUNK_BYTES`] sent in order under a
//!   session id the uploader chooses; at most [`MAX_UPLOAD_SESSIONS`] are open at once.
//! - `pipe_getModelFile(id)` returns a model's file, or `null`;
//!   `pipe_getModelFileChunk(id, offset, length)` a part of it: remote workers fetch models
//!   they lack this way, in chunks, and check the bytes hash to the id.
//! - `pipe_getBlockWithSidecar(number)` returns block `number` as a follower needs it
//!   ([`WireBlock`]: the RLP header, the EIP-2718 transactions and the RLP sidecar), or
//!   `null` past the head. Receipts are not sent: a follower computes them by replay.
//! - `pipe_getTransactionStatus(hash)` returns a transaction's lifecycle
//!   ([`pipe_primitives::status::TxStatus`]): pending, simulating, awaiting inference (with its
//!   requests and their states), ready, deferred (with the reason), included (with the block),
//!   expired or rejected (with the reason); `null` for a hash the node never saw.
//!
//! The handlers reach the store through [`ModelRegistry`], so this crate never links the ONNX
//! runtime; the node implements it.

use std::sync::Arc;

use alloy_consensus::{TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::{Decodable2718, Encodable2718};
use alloy_primitives::{B256, Bytes, U64};
use alloy_rlp::Decodable;
use jsonrpsee::proc_macros::rpc;
use pipe_mempool::Pool;
use pipe_primitives::{
    InferenceFields, SealedBlock, Sidecar, StoredTx,
    inference::{ModelId, ModelMeta},
    status::{Lifecycle, TxStatus},
};
use pipe_storage::Store;
use serde::{Deserialize, Serialize};

use crate::error::{RpcError, RpcResult};

/// What an uploader may choose; the rest is derived from the file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadOptions {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub decimals: Option<u32>,
    #[serde(default)]
    pub cost_units: Option<u64>,
}

/// Why an upload was refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UploadError {
    /// The file or the options are not acceptable; the message says why.
    #[error("{0}")]
    Invalid(String),
    #[error("storing the model failed: {0}")]
    Storage(String),
}

/// The node's model store as the RPC sees it.
pub trait ModelRegistry: Send + Sync {
    /// Stores a model; `Ok((meta, true))` when it is new, `(meta, false)` when already stored.
    fn upload(
        &self,
        bytes: &[u8],
        options: &UploadOptions,
    ) -> Result<(ModelMeta, bool), UploadError>;
    fn list(&self) -> Vec<ModelMeta>;
    fn get(&self, id: &ModelId) -> Option<ModelMeta>;
    /// The stored file.
    fn file(&self, id: &ModelId) -> Result<Option<Bytes>, UploadError>;
    /// Up to `len` bytes of the stored file from `offset`.
    fn file_range(
        &self,
        id: &ModelId,
        offset: u64,
        len: usize,
    ) -> Result<Option<Bytes>, UploadError>;
    /// Bytes of model files the store can still take.
    fn room(&self) -> u64 {
        u64::MAX
    }
}

/// Most bytes one chunk of an upload or a file may carry (hex doubles it on the wire, inside
/// the default 5 MiB request body).
pub const MAX_CHUNK_BYTES: usize = 2 << 20;
/// Most bytes of one chunked upload.
pub const MAX_UPLOAD_BYTES: usize = 4 << 30;
/// Chunked uploads open at once; opening one more drops the oldest.
pub const MAX_UPLOAD_SESSIONS: usize = 2;

/// Chunked uploads in progress, by the session id their uploader chose; the oldest first.
#[derive(Debug, Default)]
pub(crate) struct Uploads(parking_lot::Mutex<Vec<(B256, Vec<u8>)>>);

impl Uploads {
    /// Appends `chunk` at `offset` of session `session` (offset 0 opens, or restarts, it);
    /// the bytes received so far. An upload may not outgrow `room` (what the store could
    /// take), so a file that could never be stored is not held in memory first.
    fn append(&self, session: B256, offset: u64, chunk: &[u8], room: u64) -> Result<u64, String> {
        if chunk.len() > MAX_CHUNK_BYTES {
            return Err(format!(
                "a chunk of {} bytes: at most {MAX_CHUNK_BYTES}",
                chunk.len()
            ));
        }
        let mut open = self.0.lock();
        if offset == 0 {
            open.retain(|(s, _)| *s != session);
            if open.len() >= MAX_UPLOAD_SESSIONS {
                open.remove(0);
            }
            open.push((session, Vec::new()));
        }
        let Some((_, bytes)) = open.iter_mut().find(|(s, _)| *s == session) else {
            return Err(format!(
                "no upload {session} in progress (start it at offset 0)"
            ));
        };
        if offset != bytes.len() as u64 {
            return Err(format!(
                "upload {session} has {} bytes: the next chunk starts there, not at {offset}",
                bytes.len()
            ));
        }
        let len = bytes.len() + chunk.len();
        if len > MAX_UPLOAD_BYTES {
            return Err(format!("an upload of more than {MAX_UPLOAD_BYTES} bytes"));
        }
        if len as u64 > room {
            return Err(format!(
                "an upload of {len} bytes: the model store has room for {room} (--max-model-store-mb)"
            ));
        }
        bytes.extend_from_slice(chunk);
        Ok(bytes.len() as u64)
    }

    fn take(&self, session: B256) -> Option<Vec<u8>> {
        let mut open = self.0.lock();
        let at = open.iter().position(|(s, _)| *s == session)?;
        Some(open.remove(at).1)
    }
}

/// PIPE's view of a transaction's life (absent in inline mode).
pub trait TxLifecycle: Send + Sync {
    /// The status of a transaction PIPE tracks or remembers.
    fn status(&self, hash: &B256) -> Option<TxStatus>;
}

/// A block as `pipe_getBlockWithSidecar` carries it: exactly what replay needs, in the
/// encodings whose hashes the header commits to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WireBlock {
    /// RLP of the header (its keccak256 is the block hash).
    pub header: Bytes,
    /// EIP-2718 encodings, in block order.
    pub transactions: Vec<Bytes>,
    /// RLP of the sidecar (its root is the header's `extra_data`).
    pub sidecar: Bytes,
    /// RLP of the dev chain's state edits (their hash is in the header's `extra_data`);
    /// absent for blocks without any.
    #[serde(default, skip_serializing_if = "no_bytes")]
    pub edits: Bytes,
}

fn no_bytes(b: &Bytes) -> bool {
    b.is_empty()
}

/// Why a [`WireBlock`] is not a block.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WireError {
    #[error("header: {0}")]
    Header(String),
    #[error("transaction {index}: {reason}")]
    Transaction { index: usize, reason: String },
    #[error("sidecar: {0}")]
    Sidecar(#[from] pipe_primitives::sidecar::SidecarError),
    #[error(transparent)]
    Edits(#[from] pipe_primitives::EditsError),
}

impl WireBlock {
    pub fn from_block(block: &SealedBlock) -> Self {
        Self {
            header: alloy_rlp::encode(&block.header).into(),
            transactions: block
                .transactions
                .iter()
                .map(|t| t.tx.encoded_2718().into())
                .collect(),
            sidecar: block.sidecar.encode().into(),
            edits: if block.edits.is_empty() {
                Bytes::new()
            } else {
                block.edits.encode().into()
            },
        }
    }

    /// Decodes strictly and recovers every sender; nothing is trusted but the encodings.
    pub fn into_block(self) -> Result<SealedBlock, WireError> {
        let header = alloy_consensus::Header::decode(&mut self.header.as_ref())
            .map_err(|e| WireError::Header(e.to_string()))?;
        let edits = if self.edits.is_empty() {
            Default::default()
        } else {
            pipe_primitives::StateEdits::decode(&self.edits)?
        };
        let unsigned = edits.impersonated_senders();
        let transactions = self
            .transactions
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let bad = |reason: String| WireError::Transaction { index, reason };
                let tx =
                    TxEnvelope::decode_2718_exact(raw.as_ref()).map_err(|e| bad(e.to_string()))?;
                // A dev chain block names the senders it took without a signature; replay
                // checks the list is exactly the block's.
                let listed = unsigned
                    .get(tx.tx_hash())
                    .copied()
                    .filter(|a| pipe_primitives::edits::impersonated_sender(&tx) == Some(*a));
                let sender = match listed {
                    Some(a) => a,
                    None => tx.recover_signer().map_err(|e| bad(e.to_string()))?,
                };
                Ok(StoredTx {
                    hash: *tx.tx_hash(),
                    sender,
                    tx,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let sidecar = Sidecar::decode(&self.sidecar)?;
        Ok(SealedBlock::new(header, transactions, Vec::new())
            .with_sidecar(sidecar)
            .with_edits(edits))
    }
}

/// Who may store models through `pipe_uploadModel`. A stored model is kept for good and every
/// node of a chain needs it, so outside a dev chain this is the operator's method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelUploads {
    /// Anyone who can reach the RPC (the dev chain).
    Open,
    /// Connections from this machine only (loopback): the operator, e.g. `pipe model add`.
    #[default]
    Local,
    /// Nobody.
    Off,
}

impl ModelUploads {
    /// Whether a request from `peer` may upload (`None`: not known, treated as remote).
    pub fn allows(&self, peer: Option<std::net::SocketAddr>) -> bool {
        match self {
            ModelUploads::Open => true,
            ModelUploads::Local => peer.is_some_and(|p| p.ip().is_loopback()),
            ModelUploads::Off => false,
        }
    }
}

#[rpc(server, namespace = "pipe")]
pub trait PipeApi {
    #[method(name = "uploadModel", with_extensions)]
    async fn upload_model(
        &self,
        bytes: Bytes,
        options: Option<UploadOptions>,
    ) -> RpcResult<ModelMeta>;
    #[method(name = "listModels")]
    fn list_models(&self) -> RpcResult<Vec<ModelMeta>>;
    #[method(name = "getModel")]
    fn get_model(&self, id: String) -> RpcResult<Option<ModelMeta>>;
    /// One chunk of a file too large for one request body: `offset` 0 opens session
    /// `session`; each next chunk starts where the last ended. Returns the bytes received.
    #[method(name = "uploadModelChunk", with_extensions)]
    async fn upload_model_chunk(&self, session: B256, offset: U64, chunk: Bytes) -> RpcResult<U64>;
    /// Stores the file uploaded in chunks under `session`, as `pipe_uploadModel` would.
    #[method(name = "finishModelUpload", with_extensions)]
    async fn finish_model_upload(
        &self,
        session: B256,
        options: Option<UploadOptions>,
    ) -> RpcResult<ModelMeta>;
    #[method(name = "getModelFile")]
    fn get_model_file(&self, id: String) -> RpcResult<Option<Bytes>>;
    /// Up to `length` (at most 2 MiB) bytes of a stored file from `offset`.
    #[method(name = "getModelFileChunk")]
    fn get_model_file_chunk(
        &self,
        id: String,
        offset: U64,
        length: U64,
    ) -> RpcResult<Option<Bytes>>;
    #[method(name = "getTransactionStatus")]
    fn transaction_status(&self, hash: B256) -> RpcResult<Option<TxStatus>>;
    #[method(name = "getBlockWithSidecar")]
    fn block_with_sidecar(&self, number: U64) -> RpcResult<Option<WireBlock>>;
    /// The inference gas price of the head block and of the next one, and what moves it.
    #[method(name = "inferenceGasPrice")]
    fn inference_gas_price(&self) -> RpcResult<InferencePrice>;
}

/// `pipe_inferenceGasPrice`: the price the precompile charges per model cost unit.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferencePrice {
    /// The head block.
    pub block: U64,
    /// Gas per cost unit the head block charged.
    pub price: U64,
    /// Cost units the head block's transactions were charged for.
    pub units: U64,
    /// Gas per cost unit the next block will charge (what a transaction sent now pays).
    pub next_price: U64,
    /// Cost units per block the price steers toward.
    pub target_units: U64,
    /// The price moves by at most 1/this per block.
    pub max_change_denominator: U64,
}

pub(crate) struct PipeRpc {
    pub(crate) models: Arc<dyn ModelRegistry>,
    pub(crate) lifecycle: Option<Arc<dyn TxLifecycle>>,
    pub(crate) store: Arc<Store>,
    pub(crate) pool: Arc<Pool>,
    /// For the next block's inference price.
    pub(crate) executor: pipe_executor::Executor,
    pub(crate) tasks: pipe_primitives::Tasks,
    pub(crate) uploads: ModelUploads,
    pub(crate) chunked: Uploads,
}

impl PipeRpc {
    /// Refuses an upload from `ext`'s peer unless `--model-uploads` allows it.
    fn check_uploader(&self, ext: &jsonrpsee::Extensions) -> Result<(), RpcError> {
        let peer = ext.get::<crate::PeerAddr>().map(|p| p.0);
        if self.uploads.allows(peer) {
            return Ok(());
        }
        Err(RpcError::Unsupported(format!(
            "model uploads are {} on this node (--model-uploads): store models from the node's own machine, e.g. with `pipe model add`",
            match self.uploads {
                ModelUploads::Local => "limited to local connections",
                _ => "off",
            }
        )))
    }

    /// Stores `bytes` off the RPC reactor (loading a model takes CPU).
    async fn store_model(&self, bytes: Vec<u8>, options: UploadOptions) -> RpcResult<ModelMeta> {
        let models = self.models.clone();
        let result = self
            .tasks
            .blocking(move || models.upload(&bytes, &options))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        match result {
            Ok((meta, fresh)) => {
                if fresh {
                    tracing::info!(id = %meta.id, name = %meta.name, kind = meta.kind.as_str(), "model stored");
                }
                Ok(meta)
            }
            Err(UploadError::Invalid(why)) => {
                Err(RpcError::InvalidParams(format!("model rejected: {why}")).into())
            }
            Err(UploadError::Storage(why)) => Err(RpcError::Internal(why).into()),
        }
    }
}

#[jsonrpsee::core::async_trait]
impl PipeApiServer for PipeRpc {
    async fn upload_model(
        &self,
        ext: &jsonrpsee::Extensions,
        bytes: Bytes,
        options: Option<UploadOptions>,
    ) -> RpcResult<ModelMeta> {
        self.check_uploader(ext)?;
        self.store_model(bytes.into(), options.unwrap_or_default())
            .await
    }

    async fn upload_model_chunk(
        &self,
        ext: &jsonrpsee::Extensions,
        session: B256,
        offset: U64,
        chunk: Bytes,
    ) -> RpcResult<U64> {
        self.check_uploader(ext)?;
        self.chunked
            .append(session, offset.to(), &chunk, self.models.room())
            .map(U64::from)
            .map_err(|e| RpcError::InvalidParams(e).into())
    }

    async fn finish_model_upload(
        &self,
        ext: &jsonrpsee::Extensions,
        session: B256,
        options: Option<UploadOptions>,
    ) -> RpcResult<ModelMeta> {
        self.check_uploader(ext)?;
        let bytes = self
            .chunked
            .take(session)
            .ok_or_else(|| RpcError::InvalidParams(format!("no upload {session} in progress")))?;
        self.store_model(bytes, options.unwrap_or_default()).await
    }

    fn list_models(&self) -> RpcResult<Vec<ModelMeta>> {
        Ok(self.models.list())
    }

    fn get_model(&self, id: String) -> RpcResult<Option<ModelMeta>> {
        Ok(self.models.get(&parse_id(&id)?))
    }

    fn get_model_file(&self, id: String) -> RpcResult<Option<Bytes>> {
        self.models
            .file(&parse_id(&id)?)
            .map_err(|e| RpcError::Internal(e.to_string()).into())
    }

    fn get_model_file_chunk(
        &self,
        id: String,
        offset: U64,
        length: U64,
    ) -> RpcResult<Option<Bytes>> {
        let length = usize::try_from(length.to::<u64>())
            .unwrap_or(usize::MAX)
            .min(MAX_CHUNK_BYTES);
        self.models
            .file_range(&parse_id(&id)?, offset.to(), length)
            .map_err(|e| RpcError::Internal(e.to_string()).into())
    }

    fn block_with_sidecar(&self, number: U64) -> RpcResult<Option<WireBlock>> {
        Ok(self
            .store
            .block(number.to())
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map(|b| WireBlock::from_block(&b)))
    }

    fn inference_gas_price(&self) -> RpcResult<InferencePrice> {
        let internal = |e: pipe_storage::StoreError| RpcError::Internal(e.to_string());
        // The header alone: the block's transactions are not needed.
        let head = self
            .store
            .head()
            .map_err(internal)?
            .and_then(|n| self.store.header(n).transpose())
            .transpose()
            .map_err(internal)?
            .ok_or(RpcError::UnknownBlock)?;
        let fields = InferenceFields::decode(&head.extra_data).ok();
        let pricing = self.executor.config().inference_pricing;
        Ok(InferencePrice {
            block: U64::from(head.number),
            price: U64::from(fields.map_or(pricing.initial_price, |f| f.gas_price)),
            units: U64::from(fields.map_or(0, |f| f.units)),
            next_price: U64::from(self.executor.next_inference_gas_price(&head)),
            target_units: U64::from(pricing.target_units),
            max_change_denominator: U64::from(pricing.max_change_denominator),
        })
    }

    fn transaction_status(&self, hash: B256) -> RpcResult<Option<TxStatus>> {
        if let Some(status) = self.lifecycle.as_ref().and_then(|l| l.status(&hash)) {
            return Ok(Some(status));
        }
        if let Some((number, _)) = self
            .store
            .transaction_location(&hash)
            .map_err(|e| RpcError::Internal(e.to_string()))?
        {
            return Ok(Some(TxStatus::included(hash, number)));
        }
        // Inline mode: a pooled transaction is simply pending.
        Ok(self
            .pool
            .get(&hash)
            .map(|_| TxStatus::new(hash, Lifecycle::Pending)))
    }
}

fn parse_id(id: &str) -> Result<ModelId, RpcError> {
    id.parse()
        .map_err(|e: pipe_primitives::inference::ModelIdError| {
            RpcError::InvalidParams(e.to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunks come in order, and an upload never outgrows the store's room or its bound.
    #[test]
    fn chunked_uploads_are_ordered_and_bounded() {
        let uploads = Uploads::default();
        let s = B256::repeat_byte(1);
        assert!(
            uploads
                .append(s, 2, b"ab", 10)
                .unwrap_err()
                .contains("no upload")
        );
        assert_eq!(uploads.append(s, 0, b"ab", 10), Ok(2));
        assert!(
            uploads
                .append(s, 1, b"cd", 10)
                .unwrap_err()
                .contains("starts there")
        );
        let full = uploads.append(s, 2, b"cd", 3).unwrap_err();
        assert!(full.contains("room for 3"), "{full}");
        assert_eq!(uploads.append(s, 2, b"cd", 10), Ok(4));
        let big = vec![0u8; MAX_CHUNK_BYTES + 1];
        assert!(
            uploads
                .append(s, 4, &big, u64::MAX)
                .unwrap_err()
                .contains("a chunk of")
        );
        // A third session drops the oldest.
        for n in 2..=3 {
            uploads.append(B256::repeat_byte(n), 0, b"x", 10).unwrap();
        }
        assert!(uploads.take(s).is_none());
        assert_eq!(uploads.take(B256::repeat_byte(3)), Some(b"x".to_vec()));
    }
}
