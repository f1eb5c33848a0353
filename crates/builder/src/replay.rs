//! Replay: re-executing a block from the block alone, as a follower or validator does.
//!
//! The block's sidecar answers every inference request; nothing is computed. The block is
//! accepted only if
//! - its header commits to exactly the sidecar it carries (`extra_data` is the sidecar root),
//! - its attributes follow from its parent (number, parent hash, base fee, gas limit),
//! - every transaction executes (a request whose key the sidecar lacks makes it invalid),
//! - the sidecar carries nothing the transactions did not use,
//! - transactions root, receipts root, logs bloom and gas used equal the header's, and
//! - the state root the caller's store computes equals the header's
//!   ([`pipe_storage::Store::commit_verified`]).
//!
//! Because replay executes with the committed bytes, it is bit-exact on any CPU, whatever the
//! ONNX runtime would compute there.

use std::sync::Arc;

use alloy_primitives::B256;
use pipe_executor::{
    BlockAttributes, ExecutedBlock, Executor, InferenceCall, InferenceProvider, Purpose, TxRejected,
};
use pipe_primitives::{InferenceResult, ModelId, ModelMeta, SealedBlock, Sidecar};
use pipe_storage::StateView;

/// Why a block is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "block {number}: header commits to sidecar root {header} but the sidecar's root is {sidecar}"
    )]
    SidecarRoot {
        number: u64,
        header: alloy_primitives::Bytes,
        sidecar: alloy_primitives::Bytes,
    },
    #[error("block {number}: {field} is {got}, expected {want}")]
    Attribute {
        number: u64,
        field: &'static str,
        got: String,
        want: String,
    },
    #[error(
        "block {number}: transaction {hash} uses inference request {key}, which the block does not carry"
    )]
    MissingResult { number: u64, hash: B256, key: B256 },
    #[error("block {number}: transaction {hash} is invalid: {reason}")]
    InvalidTransaction {
        number: u64,
        hash: B256,
        reason: String,
    },
    #[error(
        "block {number}: the sidecar carries {carried} results but the transactions used {used}"
    )]
    UnusedResults {
        number: u64,
        carried: usize,
        used: usize,
    },
    #[error("block {number}: {field} mismatch: header {header}, replay {replay}")]
    Mismatch {
        number: u64,
        field: &'static str,
        header: String,
        replay: String,
    },
    #[error("execution: {0}")]
    Exec(#[from] pipe_executor::ExecError),
}

/// Answers inference from one block's sidecar.
#[derive(Debug)]
pub struct SidecarResults {
    sidecar: Sidecar,
    /// Model metadata (inputs, decimals, cost units) for decoding and gas.
    models: Arc<dyn InferenceProvider>,
}

impl SidecarResults {
    pub fn new(sidecar: Sidecar, models: Arc<dyn InferenceProvider>) -> Self {
        Self { sidecar, models }
    }
}

impl InferenceProvider for SidecarResults {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.models.model(id)
    }

    fn infer(&self, call: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        self.sidecar.get(&call.key).cloned()
    }
}

/// The attributes `block` claims, checked against its parent.
fn attributes(
    executor: &Executor,
    parent: &SealedBlock,
    block: &SealedBlock,
) -> Result<BlockAttributes, ReplayError> {
    let h = &block.header;
    let number = h.number;
    let expected = executor.next_attributes(parent, h.timestamp * 1000, h.beneficiary);
    let check = |field: &'static str, got: String, want: String| {
        if got == want {
            Ok(())
        } else {
            Err(ReplayError::Attribute {
                number,
                field,
                got,
                want,
            })
        }
    };
    check("number", number.to_string(), expected.number.to_string())?;
    check(
        "parent hash",
        h.parent_hash.to_string(),
        parent.hash.to_string(),
    )?;
    check(
        "timestamp",
        h.timestamp.to_string(),
        expected.timestamp.to_string(),
    )?;
    check(
        "base fee",
        h.base_fee_per_gas.unwrap_or_default().to_string(),
        expected.base_fee.to_string(),
    )?;
    check(
        "gas limit",
        h.gas_limit.to_string(),
        expected.gas_limit.to_string(),
    )?;
    check(
        "mix hash",
        h.mix_hash.to_string(),
        expected.prevrandao.to_string(),
    )?;
    Ok(expected)
}

/// Re-executes `block` on `view` (the state after `parent`). Returns the executed block for
/// the caller to commit with [`pipe_storage::Store::commit_verified`], which checks the state
/// root.
pub fn replay_block(
    executor: &Executor,
    view: impl Into<Arc<StateView>>,
    parent: &SealedBlock,
    block: &SealedBlock,
    models: Arc<dyn InferenceProvider>,
) -> Result<ExecutedBlock, ReplayError> {
    let number = block.number();
    let commitment = block.sidecar.header_commitment();
    if block.header.extra_data != commitment {
        return Err(ReplayError::SidecarRoot {
            number,
            header: block.header.extra_data.clone(),
            sidecar: commitment,
        });
    }
    let attrs = attributes(executor, parent, block)?;
    let source = Arc::new(SidecarResults::new(block.sidecar.clone(), models));
    let mut builder = executor.build_block_with(view, attrs, Some(source))?;
    for tx in &block.transactions {
        match builder.execute(tx) {
            Ok(_) => {}
            Err(TxRejected::MissingResult { hash, call }) => {
                return Err(ReplayError::MissingResult {
                    number,
                    hash,
                    key: call.key,
                });
            }
            Err(e) => {
                return Err(ReplayError::InvalidTransaction {
                    number,
                    hash: tx.hash,
                    reason: e.to_string(),
                });
            }
        }
    }
    let executed = builder.finish()?;
    if executed.sidecar != block.sidecar {
        return Err(ReplayError::UnusedResults {
            number,
            carried: block.sidecar.len(),
            used: executed.sidecar.len(),
        });
    }
    let (h, r) = (&block.header, &executed.header);
    let compare = |field: &'static str, header: String, replay: String| {
        if header == replay {
            Ok(())
        } else {
            Err(ReplayError::Mismatch {
                number,
                field,
                header,
                replay,
            })
        }
    };
    compare(
        "transactions root",
        h.transactions_root.to_string(),
        r.transactions_root.to_string(),
    )?;
    compare(
        "receipts root",
        h.receipts_root.to_string(),
        r.receipts_root.to_string(),
    )?;
    compare(
        "logs bloom",
        h.logs_bloom.to_string(),
        r.logs_bloom.to_string(),
    )?;
    compare("gas used", h.gas_used.to_string(), r.gas_used.to_string())?;
    compare(
        "requests hash",
        format!("{:?}", h.requests_hash),
        format!("{:?}", r.requests_hash),
    )?;
    Ok(executed)
}
