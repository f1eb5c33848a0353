//! One request on one model: what an in-process worker, a remote worker and inline inference
//! all do, so a result is the same wherever it was computed.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pipe_abi::{InferenceCall, InferenceFailure, failure_result, output_result};
use pipe_inference::{InferenceError, Model};
use pipe_llm::LlmModel;
use pipe_primitives::{
    InferenceResult,
    inference::{InferenceMode, ModelKind, ModelMeta},
};

/// A stored model ready to run, of either kind.
#[derive(Clone, Debug)]
pub enum Runtime {
    /// An ONNX graph compiled by tract.
    Onnx(Arc<Model>),
    /// A GGUF language model.
    Llm(Arc<LlmModel>),
}

impl Runtime {
    /// Loads a stored model's file as its metadata says it is (a worker fetching a model; a
    /// node loading one it stored). `Err` is why it cannot run.
    pub fn load(meta: &ModelMeta, bytes: &[u8]) -> Result<Self, String> {
        match meta.kind {
            ModelKind::Onnx => {
                let options = pipe_inference::UploadOptions {
                    name: meta.name.clone(),
                    decimals: Some(meta.decimals),
                    cost_units: Some(meta.cost_units),
                };
                pipe_inference::describe(bytes, &options)
                    .map(|(model, _)| Self::Onnx(Arc::new(model)))
                    .map_err(|e| e.to_string())
            }
            ModelKind::Llm => LlmModel::load(bytes)
                .map(|model| Self::Llm(Arc::new(model)))
                .map_err(|e| e.to_string()),
        }
    }
}

/// Runs `call` on `runtime` (after `latency`, the heavy-model stand-in) into the result to
/// commit; a TEE result is signed by `signer` over
/// [`InferenceResult::signing_hash`], which the chain checks against its worker registry.
///
/// With a `deadline` the run stops once it has passed (between two nodes of the plan, or two
/// tokens of an answer) and the answer is `Err(InferenceError::Cancelled)`: no result, since
/// a run cut short says nothing about the model. Every other outcome, the model's failure on
/// this input included, is a result.
pub fn run_call(
    runtime: &Runtime,
    call: &InferenceCall,
    latency: Duration,
    signer: Option<&PrivateKeySigner>,
    deadline: Option<Instant>,
) -> Result<InferenceResult, InferenceError> {
    if !latency.is_zero() {
        let left = deadline.map_or(latency, |d| d.saturating_duration_since(Instant::now()));
        std::thread::sleep(latency.min(left));
        if left < latency {
            return Err(InferenceError::Cancelled("stopped at its deadline".into()));
        }
    }
    let past = |d: Instant| move || Instant::now() >= d;
    let stop = deadline.map(past);
    let stop = stop.as_ref().map(|f| f as &dyn Fn() -> bool);
    let mut result = match runtime {
        Runtime::Onnx(model) => match model.run_until(call.inputs(), stop) {
            Ok(outputs) => output_result(call.key, &outputs, call.model.decimals),
            Err(e @ InferenceError::Cancelled(_)) => return Err(e),
            Err(e) => failure_result(call.key, &failure(e)),
        },
        Runtime::Llm(model) => crate::llm::answer(model, call, stop)?,
    };
    if call.mode == InferenceMode::Tee
        && let Some(signer) = signer
    {
        // A local key cannot fail to sign; if it did, the result stays unsigned and the
        // node's attestation check sends the request elsewhere.
        if let Ok(signature) = signer.sign_hash_sync(&result.signing_hash()) {
            result.signature = signature.as_bytes().to_vec().into();
        }
    }
    Ok(result)
}

/// A runtime error as the precompile's failure: bad inputs are the caller's, the rest the
/// model's.
pub fn failure(e: InferenceError) -> InferenceFailure {
    match e {
        InferenceError::BadInput(m) => InferenceFailure::BadInput(m),
        other => InferenceFailure::Model(other.to_string()),
    }
}

/// The key of the dev chain's inference worker: in-process workers (and `pipe worker
/// --dev-key`) sign TEE results with it, and the dev genesis registers its address in the
/// worker registry. It is public, like the dev accounts' keys: for dev chains only.
pub fn dev_worker_signer() -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&alloy_primitives::keccak256(b"pipe dev inference worker"))
        .expect("a keccak hash is a valid secp256k1 key")
}
