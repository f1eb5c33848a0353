//! The one place node errors become JSON-RPC errors (codes and texts as geth's).

use jsonrpsee::types::ErrorObjectOwned;
use pipe_executor::CallError;
use pipe_mempool::PoolError;
use pipe_storage::StoreError;

/// geth: a transaction or call that is invalid for the state.
const SERVER_ERROR: i32 = -32000;
const INVALID_PARAMS: i32 = -32602;
const INTERNAL: i32 = -32603;
/// geth: execution reverted, with the revert data in `data`.
const EXECUTION_REVERTED: i32 = 3;

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("{0}")]
    InvalidParams(String),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("header not found")]
    UnknownBlock,
    /// Neither among the recent snapshots nor archived.
    #[error("historical state for block {0} is not available: this node keeps the state of the last {history} blocks, and of the blocks since archive mode was turned on (--archive)", history = pipe_storage::STATE_HISTORY)]
    HistoricalState(u64),
    #[error("{0}")]
    LimitExceeded(String),
    /// `eth_sendRawTransaction` refused a transaction for its inference (the reason says why).
    #[error("{0}")]
    InferenceRefused(String),
    /// This node does not do that (a follower sending transactions, say); the message says
    /// where to go instead.
    #[error("{0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(e: RpcError) -> Self {
        let msg = e.to_string();
        match e {
            RpcError::InvalidParams(_) => ErrorObjectOwned::owned(INVALID_PARAMS, msg, None::<()>),
            RpcError::Call(CallError::Reverted { output, .. }) => {
                ErrorObjectOwned::owned(EXECUTION_REVERTED, msg, Some(output))
            }
            // A proof of state the node has no tries for: the request's limit, not a fault.
            RpcError::Store(
                StoreError::ArchivedProofTooLarge { .. } | StoreError::UnfinalizedProof(_),
            ) => ErrorObjectOwned::owned(SERVER_ERROR, msg, None::<()>),
            RpcError::Store(_) | RpcError::Internal(_) | RpcError::Call(CallError::Internal(_)) => {
                ErrorObjectOwned::owned(INTERNAL, msg, None::<()>)
            }
            RpcError::Pool(_)
            | RpcError::Call(_)
            | RpcError::UnknownBlock
            | RpcError::HistoricalState(_)
            | RpcError::LimitExceeded(_)
            | RpcError::InferenceRefused(_)
            | RpcError::Unsupported(_) => ErrorObjectOwned::owned(SERVER_ERROR, msg, None::<()>),
        }
    }
}

pub(crate) type RpcResult<T> = Result<T, ErrorObjectOwned>;
