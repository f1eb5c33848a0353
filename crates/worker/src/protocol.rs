//! The wire types of the worker protocol (see the crate docs).

use alloy_primitives::{Address, Bytes};
use pipe_primitives::inference::{ModelId, ModelKind};
use serde::{Deserialize, Serialize};

/// `GET /v1/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    /// Requests it runs at once.
    pub capacity: usize,
    pub signer: Option<Address>,
    pub version: String,
    /// The kinds of model it runs (`onnx`, `llm`); both when a worker does not say.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<ModelKind>,
    /// Language-model runs it takes at once, within `capacity`.
    #[serde(default = "one", rename = "llmCapacity")]
    pub llm_capacity: usize,
    /// The language models it holds in memory now.
    #[serde(default)]
    pub loaded: Vec<ModelId>,
}

fn all_kinds() -> Vec<ModelKind> {
    vec![ModelKind::Onnx, ModelKind::Llm]
}

fn one() -> usize {
    1
}

/// `POST /v1/infer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferRequest {
    /// The request's canonical encoding: `abi.encode(ModelInferenceRequest)`, or a language
    /// model function's selector followed by `abi.encode(request)`.
    pub request: Bytes,
}
