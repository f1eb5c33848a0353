//! The wire types of the worker protocol (see the crate docs).

use alloy_primitives::{Address, Bytes};
use serde::{Deserialize, Serialize};

/// `GET /v1/info`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub name: String,
    pub capacity: usize,
    pub signer: Option<Address>,
    pub version: String,
}

/// `POST /v1/infer`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferRequest {
    /// `abi.encode(ModelInferenceRequest)`.
    pub request: Bytes,
}
