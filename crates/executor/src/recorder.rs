//! The recorder: what an execution asked the precompile, and which request it lacked.
//!
//! Every EVM the executor runs for PIPE answers inference through a [`Recorder`] wrapped
//! around the real source. Per transaction it keeps the results used (the block's sidecar is
//! the union over the transactions it keeps) and the first request that had no result (the
//! one discovery must dispatch, or the reason the builder leaves a transaction out as stale).

use std::sync::Arc;

use parking_lot::Mutex;
use pipe_primitives::{InferenceResult, ModelId, ModelMeta};

use crate::{InferenceCall, InferenceProvider, Purpose};

/// What one transaction's execution did with inference.
#[derive(Debug, Default)]
pub struct TxInference {
    /// Results the execution used, in call order (a key may repeat).
    pub used: Vec<InferenceResult>,
    /// The request that had no result; the execution stopped there.
    pub missing: Option<InferenceCall>,
    /// Cost units of the results used (what the transaction was charged for).
    pub units: u64,
    /// A request the transaction could not pay for at the block's inference price: the
    /// call and the gas it needed (the call halted out of gas; no result was asked for).
    pub underpaid: Option<(InferenceCall, u64)>,
    /// The first call the precompile refused before any model ran, with its reason.
    pub refused: Option<String>,
}

/// Wraps a source and records its use. One per EVM; not meant to be shared across threads'
/// concurrent executions (each execution takes its own record).
#[derive(Debug)]
pub struct Recorder {
    source: Arc<dyn InferenceProvider>,
    record: Mutex<TxInference>,
}

impl Recorder {
    pub fn new(source: Arc<dyn InferenceProvider>) -> Self {
        Self {
            source,
            record: Mutex::default(),
        }
    }

    /// The record since the last call, leaving it empty for the next transaction.
    pub fn take(&self) -> TxInference {
        std::mem::take(&mut *self.record.lock())
    }
}

impl InferenceProvider for Recorder {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.source.model(id)
    }

    fn infer(&self, call: &InferenceCall, purpose: Purpose) -> Option<InferenceResult> {
        let mut record = self.record.lock();
        if record.missing.is_some() {
            // The execution is already failing; nothing after the first miss counts.
            return None;
        }
        match self.source.infer(call, purpose) {
            Some(result) => {
                record.used.push(result.clone());
                record.units = record.units.saturating_add(call.units());
                Some(result)
            }
            None => {
                record.missing = Some(call.clone());
                None
            }
        }
    }

    fn underpaid(&self, call: &InferenceCall, cost: u64) {
        let mut record = self.record.lock();
        if record.underpaid.is_none() {
            record.underpaid = Some((call.clone(), cost));
        }
    }

    fn refused(&self, reason: &str) {
        let mut record = self.record.lock();
        if record.refused.is_none() {
            record.refused = Some(reason.to_string());
        }
    }
}
