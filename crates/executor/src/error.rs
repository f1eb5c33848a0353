use alloy_primitives::{B256, Bytes};
use thiserror::Error;

/// Why the executor could not do its job at all (as opposed to a transaction failing).
#[derive(Debug, Error)]
pub enum ExecError {
    #[error("storage: {0}")]
    Storage(#[from] pipe_storage::StoreError),
    #[error("block execution: {0}")]
    Block(String),
}

/// Why a transaction cannot go into the block being built. The transaction is left out and the
/// block goes on without it.
#[derive(Debug, Error)]
pub enum TxRejected {
    /// Not enough gas left in the block; it may fit in the next one.
    #[error("transaction gas limit {tx_gas} exceeds the {available} gas left in the block")]
    BlockFull { tx_gas: u64, available: u64 },
    /// Invalid against the current state (nonce, balance, fee below base fee, ...).
    #[error("invalid transaction {hash}: {reason}")]
    Invalid { hash: B256, reason: String },
    /// The transaction asked for an inference result the block has no result for (under
    /// PIPE: its inputs changed since it was simulated). Left out, never run with a wrong
    /// result.
    #[error("no inference result for request {} of transaction {hash}", call.key)]
    MissingResult {
        hash: B256,
        call: Box<crate::InferenceCall>,
    },
    /// The result offered for a TEE request is not signed by a registered worker
    /// ([`crate::attest`]). Left out like a stale transaction; a replaying node rejects the
    /// block.
    #[error("inference request {} of transaction {hash} has no attested result: {reason}", call.key)]
    Unattested {
        hash: B256,
        call: Box<crate::InferenceCall>,
        reason: crate::attest::AttestError,
    },
    /// The database failed under the EVM; the block must be abandoned.
    #[error("internal: {0}")]
    Internal(String),
}

/// Why `eth_call` / `eth_estimateGas` failed.
#[derive(Debug, Error)]
pub enum CallError {
    /// The call reverted; `output` is the revert data.
    #[error("execution reverted{}", reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default())]
    Reverted {
        reason: Option<String>,
        output: Bytes,
    },
    /// The call halted (out of gas, invalid opcode, ...).
    #[error("{0}")]
    Halted(String),
    /// The request itself is invalid (fees, nonce, funds, gas).
    #[error("{0}")]
    Invalid(String),
    #[error("storage: {0}")]
    Storage(#[from] pipe_storage::StoreError),
    #[error("internal: {0}")]
    Internal(String),
}
