//! The inference precompile at `0x00000000000000000000000000000000000000F4`: OpenGradient's
//! `runModelInference(ModelInferenceRequest) returns (ModelOutput)`, `runLLMCompletion` and
//! `runLLMChat`, byte for byte.
//!
//! The ABI itself (types, strict decoding, validation, request keys, output encoding) lives in
//! `pipe-abi`, which a remote worker uses without the EVM, and is re-exported here; this
//! module adds what needs revm: gas charging, the provider seam and the precompile itself.
//!
//! # A call, step by step
//! 1. **Decode, strictly.** The calldata must be the selector and a canonical ABI encoding
//!    (alloy's validating decoder: no dirty high bits, `mode` ≤ 255, lengths checked against
//!    the data before anything is allocated, so attacker-chosen lengths cannot reserve memory).
//!    `runLLMInference` and unknown selectors revert with a reason; the language-model
//!    functions have their own checks (`pipe_abi::llm`).
//! 2. **Validate.** Mode (ZKML is not supported), model id (a CIDv1 the store knows), tensors:
//!    names unique and known to the model, rank 1..=8, no zero dimension, value count equal to
//!    the product of the shape, at most [`MAX_REQUEST_VALUES`] values in all, decimals within
//!    [-38, 38], integer inputs given as whole numbers. Every failure reverts with a readable
//!    `Error(string)` reason.
//! 3. **Bound the work per transaction.** A transaction makes at most
//!    [`MAX_REQUESTS_PER_TX`] distinct requests (a repeated request is free to repeat): the
//!    call that would be one more reverts, charged the base, before a model runs. The calls
//!    before it ran and were charged, so such a transaction is included as a revert that pays
//!    for its work, never dropped with the work unpaid. The count is per transaction and per
//!    EVM ([`TxRequests`]), so blocks, discovery, replay and `eth_call` apply the same rule.
//! 4. **Charge gas, before running.** `INFERENCE_BASE_GAS + units × gas_per_unit +
//!    INFERENCE_WORD_GAS × ⌈calldata / 32⌉`. `units` ([`InferenceCall::units`]) is the model's
//!    `cost_units` (per token for a language model, times the prompt's bytes and `max_tokens`),
//!    fixed by the model's metadata and the request, and
//!    `gas_per_unit` is the block's inference gas price (a header field that load moves:
//!    [`pipe_primitives::header`]), so the charge never depends on the output. Too little gas
//!    halts with out-of-gas, as any precompile, before a result is asked for (and tells the
//!    provider, so discovery can reject the transaction before a model runs). Validation
//!    failures before step 3 charge only the base; a model that fails after running is charged
//!    in full (it ran). Gas a call used stays paid when the transaction reverts afterwards, as
//!    all EVM gas does: inference that ran is paid for.
//! 5. **Answer** through the [`InferenceProvider`] seam: inline on the node's runtime, from
//!    pre-computed results under PIPE, from the block's sidecar in replay. A provider with no
//!    result for the key makes the call fail fatally: the transaction stops, nothing of it is
//!    kept, and the caller (discovery or the builder) knows which request to compute.
//! 6. **Encode** outputs in graph order: float tensors as `Number`s at the model's decimals by
//!    the rule in [`pipe_primitives::inference`], integer tensors as `Number(v, 0)`, strings as
//!    `StringTensor`s; `is_simulation_result` is always false because a contract never sees a
//!    placeholder. The precompile emits `ModelInferenceEvent(inferenceID, request, response)`
//!    from its own address (not in a static call, where logs are forbidden); the inference id
//!    is the request key in hex.
//!
//! # Request keys
//! The key of a request is `keccak256(abi.encode(request))` over the decoded request, i.e. its
//! canonical encoding: equal keys mean equal mode, model and inputs, hence equal work.

use std::fmt;
use std::sync::Arc;

use alloy_primitives::{B256, Bytes, Log};
use alloy_sol_types::SolError;
use pipe_primitives::{
    InferenceResult,
    inference::{ModelId, ModelMeta},
};
use revm::precompile::{PrecompileError, PrecompileHalt, PrecompileOutput};

pub use pipe_abi::*;

/// Why the precompile is being called: blocks must be deterministic, simulations are bounded
/// in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Executing a transaction into a block.
    Block,
    /// `eth_call` / `eth_estimateGas`.
    Simulation,
}

/// The seam between the precompile and whatever answers inference: the node's runtime in
/// inline mode, the PIPE result cache while building, a block's sidecar in replay, a fixed
/// table in tests.
pub trait InferenceProvider: Send + Sync + fmt::Debug {
    /// Metadata of a stored model.
    fn model(&self, id: &ModelId) -> Option<ModelMeta>;
    /// The answer to `call`: an output or the model's failure (both are results, and both
    /// are committed), or `None` when no result is known. `None` halts the execution with a
    /// fatal error, so nothing of the transaction is kept; the caller fetches the result and
    /// runs it again. A contract never sees a placeholder.
    fn infer(&self, call: &InferenceCall, purpose: Purpose) -> Option<InferenceResult>;
    /// `call` halted out of gas: it needed `cost` at this block's price and was given less.
    /// Nothing was asked of the source. Discovery uses this to reject such a transaction
    /// before any model runs for it.
    fn underpaid(&self, _call: &InferenceCall, _cost: u64) {}
    /// A call reverted before any model could run, for `reason` (an unknown model, a
    /// malformed request, one request too many): the request itself is refused, whatever
    /// the state. Admission uses this to refuse a transaction that fails for it.
    fn refused(&self, _reason: &str) {}
}

/// What one precompile invocation produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Gas used, ABI-encoded `ModelOutput`, and the event to emit.
    Success {
        gas: u64,
        output: Bytes,
        log: Log,
    },
    /// Gas used and the revert reason.
    Revert {
        gas: u64,
        reason: String,
    },
    OutOfGas,
    /// No result is known for this key: the execution must stop, uncommitted.
    Missing(B256),
    /// The result offered for this key is not a valid `ModelOutput` (a corrupt sidecar).
    InvalidResult(B256, String),
}

impl Outcome {
    /// As revm wants it. `Missing` and `InvalidResult` are fatal: they abort the whole
    /// transaction instead of reverting a frame a contract could catch.
    pub fn into_output(
        self,
        reservoir: u64,
    ) -> Result<(PrecompileOutput, Option<Log>), PrecompileError> {
        Ok(match self {
            Outcome::Success { gas, output, log } => {
                (PrecompileOutput::new(gas, output, reservoir), Some(log))
            }
            Outcome::Revert { gas, reason } => (
                PrecompileOutput::revert(
                    gas,
                    alloy_sol_types::Revert::from(reason).abi_encode().into(),
                    reservoir,
                ),
                None,
            ),
            Outcome::OutOfGas => (
                PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir),
                None,
            ),
            Outcome::Missing(key) => {
                return Err(PrecompileError::Fatal(format!(
                    "no inference result for request {key}"
                )));
            }
            Outcome::InvalidResult(key, e) => {
                return Err(PrecompileError::Fatal(format!(
                    "invalid inference result for request {key}: {e}"
                )));
            }
        })
    }
}

/// A readable revert before the model ran: only the base gas is charged.
fn early(gas: &InferenceGas, gas_limit: u64, reason: String) -> Outcome {
    if gas_limit < gas.base {
        Outcome::OutOfGas
    } else {
        Outcome::Revert {
            gas: gas.base,
            reason,
        }
    }
}

/// The distinct requests the transaction being executed has made, for the bound
/// [`MAX_REQUESTS_PER_TX`]. One per EVM; it starts over when the transaction changes.
#[derive(Debug, Default)]
pub struct TxRequests {
    /// The transaction counted: sender, nonce and gas limit. The gas limit tells apart the
    /// probes of `eth_estimateGas`, which run the same call with different limits.
    tx: Option<(alloy_primitives::Address, u64, u64)>,
    keys: Vec<B256>,
}

impl TxRequests {
    /// Moves the count to transaction `tx`, starting over if it is not the one counted.
    pub fn enter(&mut self, tx: (alloy_primitives::Address, u64, u64)) {
        if self.tx != Some(tx) {
            self.tx = Some(tx);
            self.keys.clear();
        }
    }

    /// Counts `key`; false when it would be one distinct request too many.
    pub fn admit(&mut self, key: B256) -> bool {
        if self.keys.contains(&key) {
            return true;
        }
        if self.keys.len() >= MAX_REQUESTS_PER_TX {
            return false;
        }
        self.keys.push(key);
        true
    }
}

/// One invocation of the precompile, within the transaction `requests` counts.
pub fn run(
    provider: &dyn InferenceProvider,
    gas: &InferenceGas,
    data: &[u8],
    gas_limit: u64,
    purpose: Purpose,
    requests: &mut TxRequests,
) -> Outcome {
    let call = match decode_request(data, &|id| provider.model(id)) {
        Ok(v) => v,
        Err(reason) => {
            provider.refused(&reason);
            return early(gas, gas_limit, reason);
        }
    };
    if !requests.admit(call.key) {
        let reason = too_many_requests();
        provider.refused(&reason);
        return early(gas, gas_limit, reason);
    }
    let cost = gas.cost(call.units(), data.len());
    if gas_limit < cost {
        provider.underpaid(&call, cost);
        return Outcome::OutOfGas;
    }
    let Some(result) = provider.infer(&call, purpose) else {
        return Outcome::Missing(call.key);
    };
    if result.key != call.key {
        return Outcome::InvalidResult(call.key, format!("answered for {}", result.key));
    }
    let returndata = match result.as_result() {
        Ok(data) => data.clone(),
        Err(reason) => return Outcome::Revert { gas: cost, reason },
    };
    let log = match call.event(&returndata) {
        Ok(data) => Log {
            address: INFERENCE_PRECOMPILE,
            data,
        },
        Err(e) => return Outcome::InvalidResult(call.key, e),
    };
    Outcome::Success {
        gas: cost,
        output: returndata,
        log,
    }
}

/// Installs the precompile into an EVM's precompile map.
pub(crate) fn install(
    precompiles: &mut alloy_evm::precompiles::PrecompilesMap,
    provider: Arc<dyn InferenceProvider>,
    gas: InferenceGas,
    purpose: Purpose,
) {
    use alloy_evm::precompiles::{DynPrecompile, PrecompileInput};
    use revm::precompile::PrecompileId;
    let requests = parking_lot::Mutex::new(TxRequests::default());
    let precompile = DynPrecompile::new_stateful(
        PrecompileId::custom("pipe-inference"),
        move |mut input: PrecompileInput<'_>| {
            let mut requests = requests.lock();
            let tx = input.internals.tx_env();
            requests.enter((tx.caller(), tx.nonce(), tx.gas_limit()));
            let outcome = run(
                provider.as_ref(),
                &gas,
                input.data,
                input.gas,
                purpose,
                &mut requests,
            );
            let (output, log) = outcome.into_output(input.reservoir)?;
            if let Some(log) = log
                && !input.is_static
            {
                input.internals_mut().log(log);
            }
            Ok(output)
        },
    );
    precompiles.apply_precompile(&INFERENCE_PRECOMPILE, move |_| Some(precompile));
}
