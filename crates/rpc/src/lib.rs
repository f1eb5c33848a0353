//! JSON-RPC: the `eth_`, `net_` and `web3_` methods Ethereum tools use, geth's `debug_` traces
//! ([`trace`]), and the `pipe_` model store ([`pipe`]), over HTTP and WebSocket on one port
//! (jsonrpsee serves both).
//!
//! The handlers translate between wire types (alloy's RPC types, which serialise exactly as
//! geth does) and the node's crates. Errors are typed inside the node and mapped to JSON-RPC
//! codes and geth's messages only here, in [`error`].
//!
//! # Limits
//! Request bodies up to [`RpcConfig::max_request_body_size`], batches up to
//! [`RpcConfig::max_batch`] calls, connections bounded in all and per address with idle ones
//! closed or evicted for newcomers ([`connections`], [`ConnLimits`]),
//! `eth_getLogs` over at most [`MAX_LOG_RANGE`] blocks returning at most [`MAX_LOGS`] logs,
//! `eth_feeHistory` over at most [`MAX_FEE_HISTORY`] blocks.

mod accounts;
mod admission;
pub mod connections;
mod convert;
pub mod dev;
mod error;
mod eth;
pub mod filters;
pub mod geth;
pub mod metrics;
mod pipe;
mod proof;
mod trace;

use std::{net::SocketAddr, sync::Arc};

use jsonrpsee::server::{BatchRequestConfig, ServerConfig, ServerHandle};
use pipe_executor::Executor;
use pipe_mempool::Pool;
use pipe_primitives::SealedBlock;
use pipe_storage::Store;
use tokio::sync::watch;

pub use connections::{ConnLimits, PeerAddr};
pub use error::RpcError;
pub use eth::{EthApiServer, NetApiServer, Web3ApiServer};
pub use pipe::{
    MAX_CHUNK_BYTES, MAX_UPLOAD_BYTES, MAX_UPLOAD_SESSIONS, ModelRegistry, ModelUploads,
    PipeApiServer, TxLifecycle, UploadError, UploadOptions, WireBlock, WireError,
};

/// Widest block range one `eth_getLogs` may scan.
pub const MAX_LOG_RANGE: u64 = 10_000;
/// Most logs one `eth_getLogs` may return.
pub const MAX_LOGS: usize = 20_000;
/// Most blocks one `eth_feeHistory` may cover.
pub const MAX_FEE_HISTORY: u64 = 1024;

/// Server limits.
#[derive(Clone)]
pub struct RpcConfig {
    pub addr: SocketAddr,
    pub max_request_body_size: u32,
    pub max_response_body_size: u32,
    pub max_batch: u32,
    pub connections: ConnLimits,
    /// What connection idleness is measured on (the system clock; a test's manual one).
    pub clock: Arc<dyn pipe_primitives::Clock>,
}

impl std::fmt::Debug for RpcConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcConfig")
            .field("addr", &self.addr)
            .field("max_request_body_size", &self.max_request_body_size)
            .field("max_response_body_size", &self.max_response_body_size)
            .field("max_batch", &self.max_batch)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl RpcConfig {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            max_request_body_size: 5 * 1024 * 1024,
            max_response_body_size: 64 * 1024 * 1024,
            max_batch: 1000,
            connections: ConnLimits::default(),
            clock: Arc::new(pipe_primitives::SystemClock),
        }
    }
}

/// Everything the handlers need from the node.
#[derive(Clone)]
pub struct NodeHandle {
    pub store: Arc<Store>,
    pub pool: Arc<Pool>,
    pub executor: Executor,
    /// The newest sealed block, published by the builder.
    pub head: watch::Receiver<Arc<SealedBlock>>,
    /// Addresses `eth_accounts` reports (the dev accounts).
    pub accounts: Vec<alloy_primitives::Address>,
    pub client_version: String,
    /// The model store behind the `pipe_` namespace.
    pub models: Arc<dyn ModelRegistry>,
    /// PIPE's transaction lifecycle; `None` in inline mode.
    pub lifecycle: Option<Arc<dyn TxLifecycle>>,
    /// A follower's leader: transactions are refused with a pointer to it.
    pub follows: Option<String>,
    /// Where blocking work (EVM calls, model uploads) and subscriptions run, so shutdown
    /// knows when they ended.
    pub tasks: pipe_primitives::Tasks,
    /// Flips to `true` at shutdown: subscriptions end.
    pub shutdown: watch::Receiver<bool>,
    /// Who may call `pipe_uploadModel`.
    pub model_uploads: ModelUploads,
    /// Keys of the unlocked accounts (`eth_sendTransaction`, `eth_sign`): the dev accounts on
    /// the dev chain, none elsewhere.
    pub unlocked: Vec<alloy_signer_local::PrivateKeySigner>,
    /// The dev chain's controls (`evm_mine`, …), set once its driver exists; unset
    /// elsewhere, where they are refused.
    pub dev: Arc<std::sync::OnceLock<Arc<dyn dev::DevControls>>>,
    /// Calls and latency by method, rendered by the node's metrics endpoint.
    pub metrics: Arc<metrics::RpcMetrics>,
}

/// Starts the server. It runs until the handle is stopped.
pub async fn start(
    config: &RpcConfig,
    node: NodeHandle,
) -> Result<(SocketAddr, ServerHandle), std::io::Error> {
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_body_size)
        .max_response_body_size(config.max_response_body_size)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch))
        .set_id_provider(geth::HexIds::default())
        .build();
    let metrics = node.metrics.clone();
    let module = methods(node).map_err(std::io::Error::other)?;
    connections::serve(
        config.addr,
        server_config,
        config.connections,
        config.clock.clone(),
        module.into(),
        metrics,
    )
    .await
}

/// Every method the server serves, over `node`: the module [`start`] serves, and what
/// `docs/rpc.md` lists (a test checks they agree).
pub fn methods(
    node: NodeHandle,
) -> Result<jsonrpsee::RpcModule<()>, jsonrpsee::core::RegisterMethodError> {
    let pipe_api = pipe::PipeRpc {
        models: node.models.clone(),
        lifecycle: node.lifecycle.clone(),
        store: node.store.clone(),
        pool: node.pool.clone(),
        executor: node.executor.clone(),
        tasks: node.tasks.clone(),
        uploads: node.model_uploads,
        chunked: Default::default(),
    };
    let api = eth::Api::new(node);
    let mut module = jsonrpsee::RpcModule::new(());
    module.merge(EthApiServer::into_rpc(api.clone()))?;
    module.merge(NetApiServer::into_rpc(api.clone()))?;
    module.merge(eth::TxpoolApiServer::into_rpc(api.clone()))?;
    module.merge(accounts::AccountsApiServer::into_rpc(api.clone()))?;
    module.merge(accounts::PersonalApiServer::into_rpc(api.clone()))?;
    module.merge(dev::DevApiServer::into_rpc(api.clone()))?;
    module.merge(proof::ProofApiServer::into_rpc(api.clone()))?;
    module.merge(trace::DebugApiServer::into_rpc(api.clone()))?;
    module.merge(trace::AccessListApiServer::into_rpc(api.clone()))?;
    module.merge(Web3ApiServer::into_rpc(api))?;
    module.merge(PipeApiServer::into_rpc(pipe_api))?;
    Ok(module)
}
