//! Replay: re-executing a block from the block alone, as a follower or validator does.
//!
//! The block's sidecar answers every inference request; nothing is computed. The block is
//! accepted only if
//! - its header commits to exactly the sidecar it carries (the results root in `extra_data`),
//! - its attributes follow from its parent (number, parent hash, base fee, gas limit, and the
//!   inference gas price from the parent's price and units: [`pipe_primitives::header`]),
//! - every transaction executes (a request whose key the sidecar lacks makes it invalid, and so
//!   does a TEE request whose result is not signed by a worker registered in the parent state:
//!   [`pipe_executor::attest`]),
//! - the sidecar carries nothing the transactions did not use,
//! - transactions root, receipts root, logs bloom, gas used and inference units equal the
//!   header's, and
//! - the state root the caller's store computes equals the header's
//!   ([`pipe_storage::Store::state_root_after`], which the chain's verify compares).
//!
//! Because replay executes with the committed bytes, it is bit-exact on any CPU, whatever the
//! ONNX runtime would compute there.

use std::sync::Arc;

use alloy_primitives::B256;
use pipe_executor::{
    BlockAttributes, ExecutedBlock, Executor, InferenceCall, InferenceProvider, Purpose, TxRejected,
};
use pipe_primitives::{InferenceFields, InferenceResult, ModelId, ModelMeta, SealedBlock, Sidecar};
use pipe_storage::StateView;

/// Why a block is not valid.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "block {number}: header commits to sidecar root {header:?} but the sidecar's root is {sidecar:?}"
    )]
    SidecarRoot {
        number: u64,
        header: Option<B256>,
        sidecar: Option<B256>,
    },
    #[error(
        "block {number}: transaction {hash} uses inference request {key}, which the block does not carry"
    )]
    MissingResult { number: u64, hash: B256, key: B256 },
    #[error(
        "block {number}: transaction {hash} uses inference request {key}, whose result is not attested: {reason}"
    )]
    Unattested {
        number: u64,
        hash: B256,
        key: B256,
        reason: pipe_executor::attest::AttestError,
    },
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
    /// A header field differs from what the parent (attributes) or re-execution gives.
    #[error("block {number}: {field} mismatch: header {header}, replay {replay}")]
    Mismatch {
        number: u64,
        field: &'static str,
        header: String,
        replay: String,
    },
    #[error("execution: {0}")]
    Exec(#[from] pipe_executor::ExecError),
    /// Replay could not run to the end for a local reason (a storage fault under the EVM or
    /// under the attestation check): says nothing about the block.
    #[error("block {number}: replay failed locally: {reason}")]
    Local { number: u64, reason: String },
}

impl ReplayError {
    /// Whether the block is invalid on every honest node; false for local faults.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Exec(_) | Self::Local { .. })
    }
}

/// Answers inference from one block's sidecar, and remembers the requests it answered (a
/// validator checks their results against its own).
#[derive(Debug)]
pub struct SidecarResults {
    sidecar: Sidecar,
    /// Model metadata (inputs, decimals, cost units) for decoding and gas.
    models: Arc<dyn InferenceProvider>,
    answered: parking_lot::Mutex<Vec<InferenceCall>>,
}

impl SidecarResults {
    pub fn new(sidecar: Sidecar, models: Arc<dyn InferenceProvider>) -> Self {
        Self {
            sidecar,
            models,
            answered: Default::default(),
        }
    }

    /// The requests answered from the sidecar, one per key, in the order first asked.
    pub fn answered(&self) -> Vec<InferenceCall> {
        self.answered.lock().clone()
    }
}

impl InferenceProvider for SidecarResults {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.models.model(id)
    }

    fn infer(&self, call: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        let found = self.sidecar.get(&call.key).cloned();
        if found.is_some() {
            let mut answered = self.answered.lock();
            if !answered.iter().any(|c| c.key == call.key) {
                answered.push(call.clone());
            }
        }
        found
    }
}

/// `Ok` when the header's `claimed` value is the `derived` one.
fn expect_eq<T: PartialEq + std::fmt::Debug>(
    number: u64,
    field: &'static str,
    claimed: T,
    derived: T,
) -> Result<(), ReplayError> {
    if claimed == derived {
        return Ok(());
    }
    Err(ReplayError::Mismatch {
        number,
        field,
        header: format!("{claimed:?}"),
        replay: format!("{derived:?}"),
    })
}

/// The attributes `block` claims, checked against its parent, and its pipe header fields.
fn attributes(
    executor: &Executor,
    parent: &SealedBlock,
    block: &SealedBlock,
) -> Result<(BlockAttributes, InferenceFields), ReplayError> {
    let h = &block.header;
    let n = h.number;
    let mut expected =
        executor.next_attributes(parent, h.timestamp.saturating_mul(1000), h.beneficiary);
    // The dev chain's state edits come with the block; the header must commit to exactly
    // these (a block whose carrier dropped them, as the validators' codec does, fails here).
    // Its impersonated senders are not applied: execution lists them again, checked below.
    expected.edits = block.edits.state_only();
    expect_eq(n, "number", n, expected.number)?;
    expect_eq(n, "parent hash", h.parent_hash, expected.parent_hash)?;
    expect_eq(n, "timestamp", h.timestamp, expected.timestamp)?;
    expect_eq(n, "base fee", h.base_fee_per_gas, Some(expected.base_fee))?;
    expect_eq(n, "gas limit", h.gas_limit, expected.gas_limit)?;
    expect_eq(n, "mix hash", h.mix_hash, expected.prevrandao)?;
    let claimed = InferenceFields::decode(&h.extra_data).map_err(|e| ReplayError::Mismatch {
        number: n,
        field: "extra data",
        header: e.to_string(),
        replay: "inference price, units and results root".into(),
    })?;
    expect_eq(
        n,
        "inference gas price",
        claimed.gas_price,
        expected.inference_gas_price,
    )?;
    expect_eq(
        n,
        "state edits hash",
        claimed.edits_root,
        block.edits.commitment(),
    )?;
    if claimed.edits_root.is_some() && !executor.config().dev_controls {
        return Err(ReplayError::Mismatch {
            number: n,
            field: "state edits",
            header: "present".into(),
            replay: "refused: only a dev chain's blocks carry state edits or unsigned senders"
                .into(),
        });
    }
    Ok((expected, claimed))
}

/// Re-executes `block` on `view` (the state after `parent`). Returns the executed block; the
/// caller (the chain's verify) computes its state root and compares it with the header's.
pub fn replay_block(
    executor: &Executor,
    view: impl Into<Arc<StateView>>,
    parent: &SealedBlock,
    block: &SealedBlock,
    models: Arc<dyn InferenceProvider>,
) -> Result<ExecutedBlock, ReplayError> {
    replay_block_calls(executor, view, parent, block, models).map(|(executed, _)| executed)
}

/// [`replay_block`], also returning the inference requests the sidecar answered (each with
/// its model and inputs), for a check of the results themselves.
pub fn replay_block_calls(
    executor: &Executor,
    view: impl Into<Arc<StateView>>,
    parent: &SealedBlock,
    block: &SealedBlock,
    models: Arc<dyn InferenceProvider>,
) -> Result<(ExecutedBlock, Vec<InferenceCall>), ReplayError> {
    let number = block.number();
    let (attrs, claimed) = attributes(executor, parent, block)?;
    let commitment = block.sidecar.commitment();
    if claimed.results_root != commitment {
        return Err(ReplayError::SidecarRoot {
            number,
            header: claimed.results_root,
            sidecar: commitment,
        });
    }
    let source = Arc::new(SidecarResults::new(block.sidecar.clone(), models));
    let mut builder = executor.build_block_with(view, attrs, Some(source.clone()))?;
    for tx in &block.transactions {
        // The block keeps its own copy; the executor takes each transaction shared.
        match builder.execute(Arc::new(tx.clone())) {
            Ok(_) => {}
            Err(TxRejected::MissingResult { hash, call }) => {
                return Err(ReplayError::MissingResult {
                    number,
                    hash,
                    key: call.key,
                });
            }
            Err(TxRejected::Unattested {
                reason: pipe_executor::attest::AttestError::Storage(reason),
                ..
            }) => return Err(ReplayError::Local { number, reason }),
            Err(TxRejected::Internal(reason)) => return Err(ReplayError::Local { number, reason }),
            Err(TxRejected::Unattested { hash, call, reason }) => {
                return Err(ReplayError::Unattested {
                    number,
                    hash,
                    key: call.key,
                    reason,
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
    expect_eq(
        number,
        "state edits and impersonated senders",
        &block.edits,
        &executed.edits,
    )?;
    let (h, r) = (&block.header, &executed.header);
    let n = number;
    expect_eq(
        n,
        "transactions root",
        h.transactions_root,
        r.transactions_root,
    )?;
    expect_eq(n, "receipts root", h.receipts_root, r.receipts_root)?;
    expect_eq(n, "logs bloom", h.logs_bloom, r.logs_bloom)?;
    expect_eq(n, "gas used", h.gas_used, r.gas_used)?;
    expect_eq(n, "requests hash", h.requests_hash, r.requests_hash)?;
    // Price and results root were checked above; this checks the inference units.
    expect_eq(n, "extra data", &h.extra_data, &r.extra_data)?;
    Ok((executed, source.answered()))
}
