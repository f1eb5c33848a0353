//! Admission's look at a transaction's inference: what can be known about it when it arrives,
//! so that `eth_sendRawTransaction` answers with the reason instead of acknowledging a
//! transaction that discovery would reject a moment later.
//!
//! It is discovery's first step, run once at the RPC: the transaction, after its sender's
//! pending ones before it, simulated on the head state with no inference results at all. The
//! simulation runs until the first request that would need a model; by then the precompile
//! has already checked what does not depend on any answer:
//! - the gas left at the call covers the request at the next block's inference price;
//! - the request decodes, names a model the node stores, and is within the request bounds.
//!
//! A failure of the first kind refuses the transaction. A failure of the second kind refuses
//! it only when the transaction fails as a whole: a contract may try a request and recover
//! from its revert, and then the transaction is fine. Anything after the first request
//! (a second call made with the first one's answer) needs that answer, so only discovery's
//! later rounds can judge it; those end the transaction with a status and a reason.

use std::sync::Arc;

use pipe_primitives::{InferenceResult, ModelId, ModelMeta, StoredTx};
use pipe_storage::StateView;

use crate::{
    BlockAttributes, ExecError, Executor, InferenceCall, InferenceProvider, Purpose, SimOutcome,
};

/// Why a transaction is refused at admission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceRefusal {
    /// Its gas limit cannot cover a request it makes.
    #[error(
        "gas cannot cover inference: request {key} on model {model} costs {cost} gas at inference gas price {price} ({units} cost units); raise the gas limit (eth_estimateGas includes it)"
    )]
    Underpaid {
        key: alloy_primitives::B256,
        model: String,
        cost: u64,
        price: u64,
        units: u64,
    },
    /// It fails because the precompile refuses one of its requests.
    #[error("inference request refused: {0}")]
    Request(String),
}

/// Model metadata from the node's source, and no result for anything: the simulation stops at
/// the first request a model would have to answer.
#[derive(Debug)]
struct ModelsOnly(Arc<dyn InferenceProvider>);

impl InferenceProvider for ModelsOnly {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.0.model(id)
    }

    fn infer(&self, _call: &InferenceCall, _purpose: Purpose) -> Option<InferenceResult> {
        None
    }
}

impl Executor {
    /// Checks the last of `run` (a sender's transactions in nonce order, the new one last) as
    /// described in the module doc, on `view` in a block with `attrs`. `Ok` when nothing
    /// knowable now stands against it, including when an earlier transaction of the run stops
    /// at a request first.
    pub fn check_admission(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        run: &[StoredTx],
    ) -> Result<Result<(), InferenceRefusal>, ExecError> {
        let Some(source) = &self.inference else {
            return Ok(Ok(()));
        };
        let outcomes = self.simulate(view, attrs, run, Arc::new(ModelsOnly(source.clone())))?;
        if outcomes.len() != run.len() {
            // An earlier transaction stopped the simulation: the new one was not reached.
            return Ok(Ok(()));
        }
        Ok(match outcomes.into_iter().last() {
            Some(SimOutcome::Underpaid { call, cost, price }) => Err(InferenceRefusal::Underpaid {
                key: call.key,
                model: call.model.id.to_string(),
                cost,
                price,
                units: call.units(),
            }),
            Some(SimOutcome::Complete {
                refused: Some(reason),
                ..
            }) => Err(InferenceRefusal::Request(reason)),
            _ => Ok(()),
        })
    }
}
