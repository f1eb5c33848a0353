//! The `pipe_` namespace: the model store.
//!
//! - `pipe_uploadModel(bytes, options?)` stores an ONNX file and returns its metadata (the
//!   `id` is the `modelCID` contracts pass). Uploading a stored file again returns the stored
//!   metadata (name included); asking for other decimals or more cost units than stored is
//!   refused, since a model's terms never change under its users.
//!   `options`: `{ "name": string, "decimals": 0..=18, "costUnits": n }`.
//! - `pipe_listModels()` lists every stored model's metadata.
//! - `pipe_getModel(id)` returns one model's metadata, or `null`.
//! - `pipe_getModelFile(id)` returns a model's ONNX bytes, or `null`: remote workers fetch
//!   models they lack this way and check the bytes hash to the id.
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
        }
    }

    /// Decodes strictly and recovers every sender; nothing is trusted but the encodings.
    pub fn into_block(self) -> Result<SealedBlock, WireError> {
        let header = alloy_consensus::Header::decode(&mut self.header.as_ref())
            .map_err(|e| WireError::Header(e.to_string()))?;
        let transactions = self
            .transactions
            .iter()
            .enumerate()
            .map(|(index, raw)| {
                let bad = |reason: String| WireError::Transaction { index, reason };
                let tx =
                    TxEnvelope::decode_2718_exact(raw.as_ref()).map_err(|e| bad(e.to_string()))?;
                let sender = tx.recover_signer().map_err(|e| bad(e.to_string()))?;
                Ok(StoredTx {
                    hash: *tx.tx_hash(),
                    sender,
                    tx,
                })
            })
            .collect::<Result<Vec<_>, WireError>>()?;
        let sidecar = Sidecar::decode(&self.sidecar)?;
        Ok(SealedBlock::new(header, transactions, Vec::new()).with_sidecar(sidecar))
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
    #[method(name = "getModelFile")]
    fn get_model_file(&self, id: String) -> RpcResult<Option<Bytes>>;
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
}

#[jsonrpsee::core::async_trait]
impl PipeApiServer for PipeRpc {
    async fn upload_model(
        &self,
        ext: &jsonrpsee::Extensions,
        bytes: Bytes,
        options: Option<UploadOptions>,
    ) -> RpcResult<ModelMeta> {
        let peer = ext.get::<crate::PeerAddr>().map(|p| p.0);
        if !self.uploads.allows(peer) {
            return Err(RpcError::Unsupported(format!(
                "model uploads are {} on this node (--model-uploads): store models from the node's own machine, e.g. with `pipe model add`",
                match self.uploads {
                    ModelUploads::Local => "limited to local connections",
                    _ => "off",
                }
            ))
            .into());
        }
        let models = self.models.clone();
        // Compiling a model takes milliseconds of CPU: keep it off the RPC reactor.
        let result = self
            .tasks
            .blocking(move || models.upload(&bytes, &options.unwrap_or_default()))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        match result {
            Ok((meta, fresh)) => {
                if fresh {
                    tracing::info!(id = %meta.id, name = %meta.name, "model stored");
                }
                Ok(meta)
            }
            Err(UploadError::Invalid(why)) => {
                Err(RpcError::InvalidParams(format!("model rejected: {why}")).into())
            }
            Err(UploadError::Storage(why)) => Err(RpcError::Internal(why).into()),
        }
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
