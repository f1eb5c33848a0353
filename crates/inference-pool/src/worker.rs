//! The inference network as the dispatcher sees it: workers with a capacity that turn a request
//! into a result, or fail.

use std::sync::Arc;

use futures::future::BoxFuture;
use pipe_executor::InferenceCall;
use pipe_primitives::{
    InferenceResult,
    inference::{InferenceMode, ModelId, ModelKind},
};

/// Why a worker produced no result. None of these is a fact about the request (a model that
/// fails on its inputs gives a *result*, a committed failure): the request is retried on
/// another worker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerError {
    #[error("timed out after {0} ms")]
    Timeout(u64),
    #[error("worker unreachable: {0}")]
    Unreachable(String),
    #[error("worker failed: {0}")]
    Failed(String),
    #[error("the worker's result is not attested: {0}")]
    Unattested(String),
    #[error("worker answered for request {got}, asked {want}")]
    WrongKey {
        want: alloy_primitives::B256,
        got: alloy_primitives::B256,
    },
    /// An audit ran the request locally and got a different result: the worker lied (or
    /// runs a different model), and is quarantined.
    #[error("the worker's result differs from a local run: {0}")]
    Lied(String),
}

/// Runs a request on the node itself, to check a worker's word (see
/// [`crate::PipeConfig::audit_one_in`]). The node's model runtime is deterministic: the same
/// model and inputs give the same bytes on every machine.
pub trait Auditor: Send + Sync + 'static {
    /// The result the node computes for `call`; `Err` when it cannot run it (then the worker's
    /// result is taken unchecked).
    fn recompute(&self, call: &InferenceCall) -> Result<InferenceResult, String>;
}

/// What a request asks of the worker that runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Need {
    /// A TEE request: only a worker with a signing key.
    pub tee: bool,
    /// Only a worker that runs this kind of model.
    pub kind: ModelKind,
    /// The model: a language model is best sent where it is already loaded.
    pub model: ModelId,
}

impl Need {
    pub fn of(call: &InferenceCall) -> Self {
        Self {
            tee: call.mode == InferenceMode::Tee,
            kind: call.model.kind,
            model: call.model.id,
        }
    }
}

/// One worker: in-process threads, or a remote process.
pub trait Worker: Send + Sync + 'static {
    /// For logs and metrics.
    fn name(&self) -> &str;
    /// Requests it runs at once.
    fn capacity(&self) -> usize;
    /// Whether it runs models of `kind` (ONNX, language models). A worker is never sent a
    /// request it does not run.
    fn runs(&self, kind: ModelKind) -> bool {
        let _ = kind;
        true
    }
    /// Language-model runs it takes at once, within [`Worker::capacity`]. A loaded language
    /// model answers one run at a time (it holds one attention cache) and a run takes
    /// seconds, so without a bound of their own LLM requests would take every slot and model
    /// requests, which take milliseconds, would queue behind them.
    fn llm_capacity(&self) -> usize {
        self.capacity()
    }
    /// The address of the key it signs TEE results with; `None`: it serves VANILLA only.
    fn signer(&self) -> Option<alloy_primitives::Address> {
        None
    }
    /// Whether its VANILLA results are audited by sampling: true for workers outside the
    /// node's own process, whose word is not taken on trust.
    fn audited(&self) -> bool {
        false
    }
    /// Computes `call`. The dispatcher bounds the time it waits.
    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>>;
}
