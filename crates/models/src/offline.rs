//! `pipe infer`: one request answered on this machine, without a node, exactly as the
//! precompile would answer it in a block.
//!
//! Solidity tests need this: forge's EVM has no precompile at `0x…F4`, so a test asks `pipe
//! infer` (through `vm.ffi`) for the real output and makes `0x…F4` return it (`vm.mockCall`);
//! `contracts/src/PipeForge.sol` does both. The request goes through the precompile's own
//! decoder and validation, the model through the same runtime and output encoding as a
//! worker's, so the bytes are those a contract would receive on the chain.
//!
//! Models are found by id (the request's `modelCID`) among the example models the dev chain
//! ships and any files given. Only the model the request names is loaded.

use std::cell::RefCell;

use alloy_primitives::Bytes;
use pipe_executor::inference::decode_request;
use pipe_primitives::inference::{ModelId, ModelMeta};
use pipe_worker::run::{Runtime, run_call};

use crate::EXAMPLE_MODELS;

/// Why `pipe infer` gave no output.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// The precompile would revert before running anything (unknown model, bad request).
    #[error("request refused: {0}")]
    Refused(String),
    /// The model ran and failed on these inputs; the precompile would revert with this.
    #[error("the model failed: {0}")]
    ModelFailed(String),
    /// A model file given could not be read as a model.
    #[error("model {name}: {reason}")]
    BadModel { name: String, reason: String },
}

/// A model file known by id, loaded only when a request names it.
struct Candidate {
    name: String,
    bytes: Vec<u8>,
    options: pipe_inference::UploadOptions,
}

impl Candidate {
    fn new(name: &str, bytes: Vec<u8>, decimals: Option<u32>, cost_units: Option<u64>) -> Self {
        Self {
            name: name.to_string(),
            bytes,
            options: pipe_inference::UploadOptions {
                name: name.to_string(),
                decimals,
                cost_units,
            },
        }
    }
}

impl Candidate {
    /// The file as its runtime loads it (a GGUF file is a language model), and its metadata.
    fn describe(&self) -> Result<(Runtime, ModelMeta), String> {
        if pipe_llm::is_gguf(&self.bytes) {
            pipe_llm::describe(&self.bytes, &self.name, self.options.cost_units)
                .map(|(model, meta)| (Runtime::Llm(std::sync::Arc::new(model)), meta))
                .map_err(|e| e.to_string())
        } else {
            pipe_inference::describe(&self.bytes, &self.options)
                .map(|(model, meta)| (Runtime::Onnx(std::sync::Arc::new(model)), meta))
                .map_err(|e| e.to_string())
        }
    }
}

/// The models `pipe infer` can answer with.
pub struct OfflineModels {
    candidates: Vec<(ModelId, Candidate)>,
}

impl OfflineModels {
    /// The dev chain's example models, with the terms the dev chain stores them with.
    pub fn with_examples() -> Self {
        let candidates = EXAMPLE_MODELS
            .iter()
            .map(|(name, bytes)| {
                (
                    ModelId::of(bytes),
                    Candidate::new(name, bytes.to_vec(), None, None),
                )
            })
            .collect();
        Self { candidates }
    }

    /// Adds a model file with the terms it is (or will be) uploaded with: the same decimals
    /// give the same output encoding. Returns its id. A file already known (an example model)
    /// takes the terms given here.
    pub fn add(
        &mut self,
        name: &str,
        bytes: Vec<u8>,
        decimals: Option<u32>,
        cost_units: Option<u64>,
    ) -> ModelId {
        let id = ModelId::of(&bytes);
        let candidate = Candidate::new(name, bytes, decimals, cost_units);
        self.candidates.retain(|(known, _)| *known != id);
        self.candidates.push((id, candidate));
        id
    }

    /// Answers `calldata` (a `runModelInference`, `runLLMCompletion` or `runLLMChat` call as
    /// a contract sends it to `0x…F4`) with the ABI-encoded output the precompile would
    /// return.
    pub fn infer(&self, calldata: &[u8]) -> Result<Bytes, OfflineError> {
        // The decoder looks the model up by id; the first lookup of a known id loads it.
        let loaded: RefCell<Option<(Runtime, ModelMeta)>> = RefCell::new(None);
        let bad: RefCell<Option<OfflineError>> = RefCell::new(None);
        let lookup = |id: &ModelId| -> Option<ModelMeta> {
            if let Some((_, meta)) = loaded.borrow().as_ref().filter(|(_, m)| m.id == *id) {
                return Some(meta.clone());
            }
            let (_, c) = self.candidates.iter().find(|(known, _)| known == id)?;
            match c.describe() {
                Ok((model, meta)) => {
                    *loaded.borrow_mut() = Some((model, meta.clone()));
                    Some(meta)
                }
                Err(e) => {
                    *bad.borrow_mut() = Some(OfflineError::BadModel {
                        name: c.name.clone(),
                        reason: e,
                    });
                    None
                }
            }
        };
        let decoded = decode_request(calldata, &lookup);
        if let Some(e) = bad.into_inner() {
            return Err(e);
        }
        let call = decoded.map_err(OfflineError::Refused)?;
        let (model, _) = loaded
            .into_inner()
            .expect("a decoded request's model was loaded by the lookup");
        let result = run_call(&model, &call, std::time::Duration::ZERO, None, None)
            .map_err(|e| OfflineError::ModelFailed(e.to_string()))?;
        result
            .as_result()
            .cloned()
            .map_err(OfflineError::ModelFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_sol_types::SolCall;
    use pipe_executor::inference::{
        ModelInferenceRequest, ModelInput, MultiDimensionalNumberTensor, Number,
        runModelInferenceCall,
    };

    fn linreg_call(model: &str, values: &[i128]) -> Vec<u8> {
        runModelInferenceCall {
            request: ModelInferenceRequest {
                mode: 0,
                modelCID: model.into(),
                input: ModelInput {
                    numbers: vec![MultiDimensionalNumberTensor {
                        name: "input".into(),
                        values: values
                            .iter()
                            .map(|v| Number {
                                value: *v,
                                decimals: 0,
                            })
                            .collect(),
                        shape: vec![1, values.len() as u32],
                    }],
                    strings: vec![],
                },
            },
        }
        .abi_encode()
    }

    /// The offline answer is the precompile's: the same bytes a node's inline runtime
    /// commits for the same request.
    #[test]
    fn answers_as_the_node_does_and_refuses_what_the_precompile_refuses() {
        let offline = OfflineModels::with_examples();
        let (_, linreg) = EXAMPLE_MODELS.iter().find(|(n, _)| *n == "linreg").unwrap();
        let id = ModelId::of(linreg).to_string();
        let calldata = linreg_call(&id, &[1, 2, 3]);
        let answer = offline.infer(&calldata).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let store =
            std::sync::Arc::new(pipe_storage::Store::open(&dir.path().join("chain.redb")).unwrap());
        let node = crate::NodeModels::open(store, std::time::Duration::from_secs(5)).unwrap();
        node.add_examples().unwrap();
        let call = decode_request(&calldata, &|id| {
            pipe_executor::InferenceProvider::model(&node, id)
        })
        .unwrap();
        let committed = node.compute(&call).unwrap();
        assert_eq!(committed.as_result().unwrap(), &answer);
        runModelInferenceCall::abi_decode_returns_validate(&answer).unwrap();

        let unknown = ModelId::of(b"not a model").to_string();
        assert!(matches!(
            offline.infer(&linreg_call(&unknown, &[1, 2, 3])),
            Err(OfflineError::Refused(r)) if r.contains("unknown model")
        ));
        assert!(matches!(
            offline.infer(&linreg_call(&id, &[1, 2])),
            Err(OfflineError::ModelFailed(_)) | Err(OfflineError::Refused(_))
        ));
    }
}
