//! The inference precompile's ABI, without the EVM: OpenGradient's
//! `runModelInference(ModelInferenceRequest) returns (ModelOutput)` at
//! `0x00000000000000000000000000000000000000F4`, byte for byte.
//!
//! Everyone who touches a request needs this and only this: the executor's precompile
//! (`pipe-executor`, which adds gas charging and revm's precompile plumbing), the node's
//! model service, and a remote worker, which must decode and check the requests it is sent
//! without linking an EVM.
//!
//! - **Strict decoding** ([`decode_request`], [`decode_encoded_request`]): the selector and a
//!   canonical ABI encoding (alloy's validating decoder: no dirty high bits, `mode` ≤ 255,
//!   lengths checked against the data before anything is allocated, so attacker-chosen
//!   lengths cannot reserve memory). OpenGradient's language-model functions
//!   (`runLLMCompletion`, `runLLMChat`) are decoded and checked by [`llm`]; the older
//!   `runLLMInference` and unknown selectors are refused with a reason.
//! - **Validation** against the model the request names: mode (ZKML is not supported), model
//!   id (a CIDv1 the caller knows), tensors: names unique and known to the model, rank
//!   1..=8, no zero dimension, value count equal to the product of the shape, at most
//!   [`MAX_REQUEST_VALUES`] values in all, decimals within [-38, 38], integer inputs given as
//!   whole numbers. Every failure is a readable reason the precompile reverts with.
//! - **Request keys**: the key of a request is the keccak256 of its canonical encoding
//!   ([`InferenceCall::request`]): `abi.encode(request)` for `runModelInference`, the selector
//!   and `abi.encode(request)` for the language-model functions. Equal keys mean equal
//!   function, mode, model and inputs, hence equal work.
//! - **Encoding outputs** ([`encode_output`], [`output_result`]): float tensors as `Number`s
//!   at the model's decimals by the rule in [`pipe_primitives::inference`], integer tensors
//!   as `Number(v, 0)`, strings as `StringTensor`s; `is_simulation_result` is always false
//!   because a contract never sees a placeholder.
//! - **Agreement** ([`tolerance::results_agree`]): when a leader's committed result and a
//!   validator's own agree (one unit in the last declared decimal).
//! - **The gas schedule** ([`InferenceGas`]): fixed by the model's cost units and the block's
//!   inference gas price, never by the output.

pub mod llm;
pub mod tolerance;

use alloy_primitives::{Address, B256, Bytes, address, keccak256};
use alloy_sol_types::{SolCall, SolValue, sol};
use pipe_primitives::{
    InferenceResult,
    inference::{
        DType, InferenceMode, ModelId, ModelKind, ModelMeta, Tensor, TensorData, f32_to_number,
        number_to_f32,
    },
};

/// Where contracts find the precompile.
pub const INFERENCE_PRECOMPILE: Address = address!("0x00000000000000000000000000000000000000F4");
/// Gas every call pays, covering decode, lookup and encode.
pub const INFERENCE_BASE_GAS: u64 = 25_000;
/// Gas per 32-byte word of calldata, as the identity precompile charges for copying.
pub const INFERENCE_WORD_GAS: u64 = 3;
/// Default gas per model cost unit: the first block's inference gas price. Each block carries
/// its own, moved by load ([`pipe_primitives::header`]).
pub const DEFAULT_GAS_PER_UNIT: u64 = pipe_primitives::header::DEFAULT_INFERENCE_GAS_PRICE;
/// Most input values (numbers and strings together) one request may carry.
pub const MAX_REQUEST_VALUES: usize = 8192;
/// Most bytes of calldata the precompile decodes.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Highest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Most distinct requests one transaction may make (a chain rule). The call that would be one
/// more reverts with [`too_many_requests`] before any model runs for it, charged only the base
/// gas; the requests before it ran and stay paid, so a transaction past the bound is included
/// as a revert that pays for what it used instead of being dropped with its work unpaid.
pub const MAX_REQUESTS_PER_TX: usize = 8;

/// The revert reason of a call past [`MAX_REQUESTS_PER_TX`].
pub fn too_many_requests() -> String {
    format!("a transaction may make at most {MAX_REQUESTS_PER_TX} distinct inference requests")
}

sol! {
    /// `value × 10^-decimals`.
    #[derive(Debug, PartialEq)]
    struct Number { int128 value; int128 decimals; }
    #[derive(Debug, PartialEq)]
    struct MultiDimensionalNumberTensor { string name; Number[] values; uint32[] shape; }
    #[derive(Debug, PartialEq)]
    struct StringTensor { string name; string[] values; }
    #[derive(Debug, PartialEq, Default)]
    struct ModelInput { MultiDimensionalNumberTensor[] numbers; StringTensor[] strings; }
    #[derive(Debug, PartialEq, Default)]
    struct ModelInferenceRequest { uint8 mode; string modelCID; ModelInput input; }
    #[derive(Debug, PartialEq)]
    struct JsonScalar { string name; string value; }
    #[derive(Debug, PartialEq)]
    struct ModelOutput {
        MultiDimensionalNumberTensor[] numbers;
        StringTensor[] strings;
        JsonScalar[] jsons;
        bool is_simulation_result;
    }
    function runModelInference(ModelInferenceRequest request) returns (ModelOutput);
    struct LlmInferenceRequest {
        uint8 mode;
        string modelCID;
        string prompt;
        uint32 max_tokens;
        string[] stop_sequence;
        uint32 temperature;
    }
    function runLLMInference(LlmInferenceRequest request) returns (string answer);
    event ModelInferenceEvent(string inferenceID, ModelInferenceRequest request, ModelOutput response);

    // OpenGradient's language-model functions (their `OGInference.sol`, January 2025).
    // `mode` is `LLMInferenceMode` (VANILLA 0, TEE 1); `temperature` is in hundredths.
    #[derive(Debug, PartialEq)]
    struct LLMCompletionRequest {
        uint8 mode;
        string modelCID;
        string prompt;
        uint32 max_tokens;
        string[] stop_sequence;
        uint32 temperature;
    }
    #[derive(Debug, PartialEq)]
    struct LLMCompletionResponse { string answer; }
    #[derive(Debug, PartialEq)]
    struct ToolDefinition { string description; string name; string parameters; }
    #[derive(Debug, PartialEq)]
    struct ToolCall { string id; string name; string arguments; }
    #[derive(Debug, PartialEq)]
    struct ChatMessage {
        string role;
        string content;
        string name;
        string tool_call_id;
        ToolCall[] tool_calls;
    }
    #[derive(Debug, PartialEq)]
    struct LLMChatRequest {
        uint8 mode;
        string modelCID;
        ChatMessage[] messages;
        ToolDefinition[] tools;
        string tool_choice;
        uint32 max_tokens;
        string[] stop_sequence;
        uint32 temperature;
    }
    #[derive(Debug, PartialEq)]
    struct LLMChatResponse { string finish_reason; ChatMessage message; }
    function runLLMCompletion(LLMCompletionRequest request) returns (LLMCompletionResponse);
    function runLLMChat(LLMChatRequest request) returns (LLMChatResponse);
    event LLMCompletionEvent(string inferenceID, LLMCompletionRequest request, LLMCompletionResponse response);
    event LLMChat(string inferenceID, LLMChatRequest request, LLMChatResponse response);
}

/// Why the engine behind the precompile could not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceFailure {
    /// The inputs do not fit the model (caught by the runtime).
    #[error("{0}")]
    BadInput(String),
    /// The model failed on these inputs.
    #[error("model error: {0}")]
    Model(String),
    /// `eth_call`'s time bound ran out.
    #[error("inference timed out after {0} ms")]
    Timeout(u64),
    /// The model's file is missing or cannot be loaded.
    #[error("model unavailable: {0}")]
    Unavailable(String),
}

/// One decoded, validated inference request.
#[derive(Debug, Clone)]
pub struct InferenceCall {
    /// `keccak256(request)`.
    pub key: B256,
    /// The request's canonical encoding, what a remote worker is sent (it checks the key
    /// itself): `abi.encode(request)` for `runModelInference`, the selector followed by
    /// `abi.encode(request)` for the language-model functions (see [`llm`]).
    pub request: Bytes,
    pub mode: InferenceMode,
    pub model: ModelMeta,
    pub task: Task,
}

/// What a request asks the model to do.
#[derive(Debug, Clone)]
pub enum Task {
    /// `runModelInference`: the request (for the event) and its tensors as the runtime takes
    /// them, in the order the request listed them (numbers, then strings).
    Model {
        request: ModelInferenceRequest,
        inputs: Vec<Tensor>,
    },
    /// `runLLMCompletion`.
    Completion(LLMCompletionRequest),
    /// `runLLMChat`.
    Chat(LLMChatRequest),
}

impl InferenceCall {
    /// The tensors of a model request; a language-model request has none.
    pub fn inputs(&self) -> &[Tensor] {
        match &self.task {
            Task::Model { inputs, .. } => inputs,
            Task::Completion(_) | Task::Chat(_) => &[],
        }
    }

    /// The cost units the precompile charges for, from the request alone: the model's for an
    /// ONNX model; per token for a language model, over the prompt's bound and `max_tokens`
    /// ([`llm::billed_tokens`]). Never a function of the answer.
    pub fn units(&self) -> u64 {
        match &self.task {
            Task::Model { .. } => self.model.cost_units,
            Task::Completion(_) | Task::Chat(_) => self
                .model
                .cost_units
                .saturating_mul(llm::billed_tokens(&self.task)),
        }
    }

    /// The event the precompile emits for this call and its committed return data, which is
    /// checked to be the function's canonical return encoding (a corrupt sidecar is caught
    /// here, not by a contract). `Err` is why the return data is not acceptable.
    pub fn event(&self, returndata: &[u8]) -> Result<alloy_primitives::LogData, String> {
        use alloy_sol_types::SolEvent;
        let id = self.key.to_string();
        Ok(match &self.task {
            Task::Model { request, .. } => ModelInferenceEvent {
                inferenceID: id,
                request: request.clone(),
                response: runModelInferenceCall::abi_decode_returns_validate(returndata)
                    .map_err(|e| e.to_string())?,
            }
            .encode_log_data(),
            Task::Completion(request) => LLMCompletionEvent {
                inferenceID: id,
                request: request.clone(),
                response: runLLMCompletionCall::abi_decode_returns_validate(returndata)
                    .map_err(|e| e.to_string())?,
            }
            .encode_log_data(),
            Task::Chat(request) => LLMChat {
                inferenceID: id,
                request: request.clone(),
                response: runLLMChatCall::abi_decode_returns_validate(returndata)
                    .map_err(|e| e.to_string())?,
            }
            .encode_log_data(),
        })
    }
}

/// The committed form of runtime outputs: the ABI return data of `runModelInference`, or the
/// model's failure when the outputs cannot be encoded (a NaN, say).
pub fn output_result(key: B256, outputs: &[Tensor], decimals: u32) -> InferenceResult {
    match encode_output(outputs, decimals) {
        Ok(out) => {
            InferenceResult::output(key, runModelInferenceCall::abi_encode_returns(&out).into())
        }
        Err(reason) => InferenceResult::failure(key, &format!("model error: {reason}")),
    }
}

/// A failure as the committed result the precompile reverts with.
pub fn failure_result(key: B256, failure: &InferenceFailure) -> InferenceResult {
    InferenceResult::failure(key, &failure.to_string())
}

/// Gas schedule of the precompile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InferenceGas {
    pub base: u64,
    pub per_unit: u64,
    pub per_word: u64,
}

impl Default for InferenceGas {
    fn default() -> Self {
        Self {
            base: INFERENCE_BASE_GAS,
            per_unit: DEFAULT_GAS_PER_UNIT,
            per_word: INFERENCE_WORD_GAS,
        }
    }
}

impl InferenceGas {
    /// Gas of a call with `calldata_len` bytes on a model of `cost_units`.
    pub fn cost(&self, cost_units: u64, calldata_len: usize) -> u64 {
        let words = (calldata_len as u64).div_ceil(32);
        self.base
            .saturating_add(cost_units.saturating_mul(self.per_unit))
            .saturating_add(words.saturating_mul(self.per_word))
    }
}

/// Decodes and validates a call; `Err` is the revert reason.
pub fn decode_request(
    data: &[u8],
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<InferenceCall, String> {
    if data.len() > MAX_REQUEST_BYTES {
        return Err(format!("request larger than {MAX_REQUEST_BYTES} bytes"));
    }
    if data.starts_with(&runLLMInferenceCall::SELECTOR) {
        return Err(
            "runLLMInference is not supported by this node: call runLLMCompletion or runLLMChat"
                .into(),
        );
    }
    if llm::is_llm_call(data) {
        return llm::decode(data, models);
    }
    if !data.starts_with(&runModelInferenceCall::SELECTOR) {
        return Err(
            "unknown function: the inference precompile serves runModelInference, runLLMCompletion and runLLMChat"
                .into(),
        );
    }
    let request = runModelInferenceCall::abi_decode_validate(data)
        .map_err(|e| format!("malformed runModelInference request: {e}"))?
        .request;
    check_request(request, models)
}

/// Decodes a request's canonical encoding ([`InferenceCall::request`], what a remote worker
/// receives) strictly and validates it.
pub fn decode_encoded_request(
    encoded: &[u8],
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<InferenceCall, String> {
    if encoded.len() > MAX_REQUEST_BYTES {
        return Err(format!("request larger than {MAX_REQUEST_BYTES} bytes"));
    }
    if llm::is_llm_call(encoded) {
        return llm::decode(encoded, models);
    }
    let request = <ModelInferenceRequest as SolValue>::abi_decode_validate(encoded)
        .map_err(|e| format!("malformed ModelInferenceRequest: {e}"))?;
    check_request(request, models)
}

/// The model a request's canonical encoding names, before anything else is checked (a
/// worker fetches it first).
pub fn requested_model(encoded: &[u8]) -> Result<ModelId, String> {
    let cid = if llm::is_llm_call(encoded) {
        llm::requested_model(encoded)?
    } else {
        <ModelInferenceRequest as SolValue>::abi_decode_validate(encoded)
            .map_err(|e| format!("malformed ModelInferenceRequest: {e}"))?
            .modelCID
    };
    cid.parse()
        .map_err(|e: pipe_primitives::inference::ModelIdError| e.to_string())
}

/// The stored model a request names, by its `modelCID`.
fn named_model(
    cid: &str,
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<ModelMeta, String> {
    let id: ModelId = cid
        .parse()
        .map_err(|e: pipe_primitives::inference::ModelIdError| e.to_string())?;
    models(&id).ok_or_else(|| format!("unknown model {id}"))
}

/// Step 2: validates a decoded request against the model it names.
fn check_request(
    request: ModelInferenceRequest,
    models: &dyn Fn(&ModelId) -> Option<ModelMeta>,
) -> Result<InferenceCall, String> {
    let mode = InferenceMode::from_u8(request.mode)
        .ok_or_else(|| format!("unknown mode {}", request.mode))?;
    if mode == InferenceMode::Zkml {
        return Err("ZKML mode is not supported".into());
    }
    let model = named_model(&request.modelCID, models)?;
    if model.kind != ModelKind::Onnx {
        return Err(format!(
            "model {} is a language model: call runLLMCompletion or runLLMChat",
            model.id
        ));
    }
    let inputs = tensors(&request.input, &model)?;
    let encoded = Bytes::from(request.abi_encode());
    Ok(InferenceCall {
        key: keccak256(&encoded),
        request: encoded,
        mode,
        model,
        task: Task::Model { request, inputs },
    })
}

/// The request's tensors as runtime tensors, checked against the model's declared inputs.
fn tensors(input: &ModelInput, model: &ModelMeta) -> Result<Vec<Tensor>, String> {
    let total: usize = input.numbers.iter().map(|t| t.values.len()).sum::<usize>()
        + input.strings.iter().map(|t| t.values.len()).sum::<usize>();
    if total > MAX_REQUEST_VALUES {
        return Err(format!(
            "request has {total} values, the limit is {MAX_REQUEST_VALUES}"
        ));
    }
    let mut out = Vec::with_capacity(input.numbers.len() + input.strings.len());
    let spec = |name: &str| {
        model.inputs.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = model.inputs.iter().map(|s| s.name.as_str()).collect();
            format!("model has no input `{name}` (inputs: {names:?})")
        })
    };
    for t in &input.numbers {
        let spec = spec(&t.name)?;
        if t.shape.is_empty() || t.shape.len() > MAX_RANK {
            return Err(format!(
                "tensor `{}` has rank {}, expected 1..={MAX_RANK}",
                t.name,
                t.shape.len()
            ));
        }
        let mut count: usize = 1;
        for &d in &t.shape {
            if d == 0 {
                return Err(format!("tensor `{}` has a zero dimension", t.name));
            }
            count = count
                .checked_mul(d as usize)
                .filter(|&c| c <= MAX_REQUEST_VALUES)
                .ok_or_else(|| {
                    format!(
                        "tensor `{}` shape {:?} holds more than {MAX_REQUEST_VALUES} values",
                        t.name, t.shape
                    )
                })?;
        }
        if count != t.values.len() {
            return Err(format!(
                "tensor `{}` has {} values for shape {:?} ({count} expected)",
                t.name,
                t.values.len(),
                t.shape
            ));
        }
        let data = match spec.dtype {
            DType::String => return Err(format!("input `{}` takes strings, got numbers", t.name)),
            DType::Float32 => TensorData::Float32(
                t.values
                    .iter()
                    .map(|n| {
                        number_to_f32(n.value, n.decimals)
                            .map_err(|e| format!("tensor `{}`: {e}", t.name))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DType::Int64 => TensorData::Int64(
                t.values
                    .iter()
                    .map(|n| whole(n).ok_or_else(|| format!("input `{}` takes integers", t.name)))
                    .collect::<Result<_, _>>()?,
            ),
        };
        out.push(Tensor {
            name: t.name.clone(),
            shape: t.shape.iter().map(|&d| d as usize).collect(),
            data,
        });
    }
    for t in &input.strings {
        let spec = spec(&t.name)?;
        if spec.dtype != DType::String {
            return Err(format!("input `{}` takes numbers, got strings", t.name));
        }
        if t.values.is_empty() {
            return Err(format!("tensor `{}` is empty", t.name));
        }
        // String tensors carry no shape: a column when the model wants [N, 1], else a vector.
        let shape = if spec.shape.len() == 2 && spec.shape[1] == Some(1) {
            vec![t.values.len(), 1]
        } else {
            vec![t.values.len()]
        };
        out.push(Tensor {
            name: t.name.clone(),
            shape,
            data: TensorData::String(t.values.clone()),
        });
    }
    let mut names: Vec<&str> = out.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err("two input tensors share a name".into());
    }
    Ok(out)
}

/// A Number as an exact i64, if it is a whole number in range.
fn whole(n: &Number) -> Option<i64> {
    if !(-38..=38).contains(&n.decimals) {
        return None;
    }
    let d = n.decimals as i32;
    let v = if d >= 0 {
        let p = 10i128.checked_pow(d as u32)?;
        (n.value % p == 0).then(|| n.value / p)?
    } else {
        n.value.checked_mul(10i128.checked_pow((-d) as u32)?)?
    };
    i64::try_from(v).ok()
}

/// Runtime outputs as the ABI's `ModelOutput`.
pub fn encode_output(outputs: &[Tensor], decimals: u32) -> Result<ModelOutput, String> {
    let mut numbers = Vec::new();
    let mut strings = Vec::new();
    for t in outputs {
        let shape = t
            .shape
            .iter()
            .map(|&d| {
                u32::try_from(d).map_err(|_| format!("output `{}` dimension {d} too large", t.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match &t.data {
            TensorData::Float32(v) => {
                let values = v
                    .iter()
                    .map(|&x| {
                        f32_to_number(x, decimals)
                            .map(|value| Number {
                                value,
                                decimals: decimals as i128,
                            })
                            .map_err(|e| format!("output `{}`: {e}", t.name))
                    })
                    .collect::<Result<_, _>>()?;
                numbers.push(MultiDimensionalNumberTensor {
                    name: t.name.clone(),
                    values,
                    shape,
                });
            }
            TensorData::Int64(v) => {
                let values = v
                    .iter()
                    .map(|&x| Number {
                        value: x as i128,
                        decimals: 0,
                    })
                    .collect();
                numbers.push(MultiDimensionalNumberTensor {
                    name: t.name.clone(),
                    values,
                    shape,
                });
            }
            TensorData::String(v) => strings.push(StringTensor {
                name: t.name.clone(),
                values: v.clone(),
            }),
        }
    }
    Ok(ModelOutput {
        numbers,
        strings,
        jsons: Vec::new(),
        is_simulation_result: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;
    use alloy_sol_types::SolEvent;
    use pipe_primitives::inference::IoSpec;

    #[test]
    fn interface_matches_opengradient() {
        assert_eq!(runModelInferenceCall::SELECTOR, hex!("7289e9c2"));
        assert_eq!(runLLMInferenceCall::SELECTOR, hex!("ea3dd516"));
        // OpenGradient's language-model functions and events, as their SDK's ABI has them.
        assert_eq!(runLLMCompletionCall::SELECTOR, hex!("14800c61"));
        assert_eq!(runLLMChatCall::SELECTOR, hex!("e39aa7e7"));
        let completion = LLMCompletionEvent::SIGNATURE_HASH;
        assert!(
            completion.0.starts_with(&hex!("51fe69d5")) && completion.0.ends_with(&hex!("27a3")),
            "{completion}"
        );
        let chat = LLMChat::SIGNATURE_HASH;
        assert!(
            chat.0.starts_with(&hex!("4c92d3df")) && chat.0.ends_with(&hex!("9c3b")),
            "{chat}"
        );
        assert_eq!(
            ModelInferenceEvent::SIGNATURE_HASH,
            B256::from(hex!(
                "1b283af3452f3718585ce100f80d9aa81fc60924db4a582a36db6aae3b109d87"
            ))
        );
    }

    fn meta() -> ModelMeta {
        ModelMeta {
            id: ModelId::of(b"m"),
            name: "m".into(),
            size_bytes: 1,
            inputs: vec![
                IoSpec {
                    name: "x".into(),
                    dtype: DType::Float32,
                    shape: vec![None, Some(2)],
                },
                IoSpec {
                    name: "k".into(),
                    dtype: DType::Int64,
                    shape: vec![None],
                },
                IoSpec {
                    name: "s".into(),
                    dtype: DType::String,
                    shape: vec![None],
                },
            ],
            outputs: vec![],
            decimals: 4,
            cost_units: 1000,
            operators: vec![],
            kind: pipe_primitives::ModelKind::Onnx,
            llm: None,
        }
    }

    fn num(value: i128, decimals: i128) -> Number {
        Number { value, decimals }
    }

    fn encode(
        mode: u8,
        cid: &str,
        numbers: Vec<MultiDimensionalNumberTensor>,
        strings: Vec<StringTensor>,
    ) -> Vec<u8> {
        runModelInferenceCall {
            request: ModelInferenceRequest {
                mode,
                modelCID: cid.into(),
                input: ModelInput { numbers, strings },
            },
        }
        .abi_encode()
    }

    fn x(values: Vec<Number>, shape: Vec<u32>) -> MultiDimensionalNumberTensor {
        MultiDimensionalNumberTensor {
            name: "x".into(),
            values,
            shape,
        }
    }

    fn decode(data: &[u8]) -> Result<InferenceCall, String> {
        let m = meta();
        decode_request(data, &|id| (*id == m.id).then(|| m.clone()))
    }

    #[test]
    fn decodes_a_good_request() {
        let cid = ModelId::of(b"m").to_string();
        let data = encode(
            0,
            &cid,
            vec![x(vec![num(15, 1), num(-2, 0)], vec![1, 2])],
            vec![],
        );
        let call = decode(&data).unwrap();
        assert_eq!(call.inputs()[0].data, TensorData::Float32(vec![1.5, -2.0]));
        assert_eq!(call.inputs()[0].shape, vec![1, 2]);
        // The key is a function of the request only.
        assert_eq!(decode(&data).unwrap().key, call.key);
        let other = encode(
            0,
            &cid,
            vec![x(vec![num(15, 1), num(-3, 0)], vec![1, 2])],
            vec![],
        );
        assert_ne!(decode(&other).unwrap().key, call.key);
    }

    #[test]
    fn every_bad_request_has_a_reason() {
        let cid = ModelId::of(b"m").to_string();
        let ok = || vec![x(vec![num(1, 0), num(2, 0)], vec![1, 2])];
        let k = |values: Vec<Number>| MultiDimensionalNumberTensor {
            name: "k".into(),
            values,
            shape: vec![1],
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (encode(1, &cid, ok(), vec![]), "ZKML mode is not supported"),
            (encode(7, &cid, ok(), vec![]), "unknown mode 7"),
            (
                encode(
                    0,
                    "QmbUqS93oc4JTLMHwpVxsE39mhNxy6hpf6Py3r9oANr8aZ",
                    ok(),
                    vec![],
                ),
                "invalid model id",
            ),
            (
                encode(0, &ModelId::of(b"other").to_string(), ok(), vec![]),
                "unknown model",
            ),
            (
                encode(0, &cid, vec![x(vec![num(1, 0)], vec![1, 2])], vec![]),
                "has 1 values for shape [1, 2]",
            ),
            (encode(0, &cid, vec![x(vec![], vec![])], vec![]), "rank 0"),
            (
                encode(0, &cid, vec![x(vec![num(1, 0)], vec![1, 0])], vec![]),
                "zero dimension",
            ),
            (
                encode(
                    0,
                    &cid,
                    vec![x(vec![num(1, 0)], vec![u32::MAX, u32::MAX])],
                    vec![],
                ),
                "more than",
            ),
            (
                encode(
                    0,
                    &cid,
                    vec![x(vec![num(1, 39), num(1, 0)], vec![1, 2])],
                    vec![],
                ),
                "decimals 39 out of range",
            ),
            (
                encode(
                    0,
                    &cid,
                    vec![x(vec![num(1, -40), num(1, 0)], vec![1, 2])],
                    vec![],
                ),
                "out of range",
            ),
            (
                encode(
                    0,
                    &cid,
                    vec![MultiDimensionalNumberTensor {
                        name: "y".into(),
                        values: vec![num(1, 0)],
                        shape: vec![1],
                    }],
                    vec![],
                ),
                "no input `y`",
            ),
            (
                encode(0, &cid, vec![k(vec![num(15, 1)])], vec![]),
                "takes integers",
            ),
            (
                encode(
                    0,
                    &cid,
                    ok(),
                    vec![StringTensor {
                        name: "x".into(),
                        values: vec!["a".into()],
                    }],
                ),
                "takes numbers",
            ),
            (
                encode(
                    0,
                    &cid,
                    vec![],
                    vec![StringTensor {
                        name: "s".into(),
                        values: vec![],
                    }],
                ),
                "is empty",
            ),
            (
                encode(0, &cid, vec![ok().remove(0), ok().remove(0)], vec![]),
                "share a name",
            ),
            (
                encode(0, &cid, vec![x(vec![num(0, 0); 9000], vec![9000])], vec![]),
                "the limit is",
            ),
            (
                hex!("ea3dd516").to_vec(),
                "runLLMInference is not supported",
            ),
            (
                runLLMCompletionCall::SELECTOR.to_vec(),
                "malformed runLLMCompletion request",
            ),
            (
                runLLMChatCall::SELECTOR.to_vec(),
                "malformed runLLMChat request",
            ),
            (hex!("12345678").to_vec(), "unknown function"),
            (vec![], "unknown function"),
            (runModelInferenceCall::SELECTOR.to_vec(), "malformed"),
        ];
        for (data, want) in cases {
            let err = decode(&data)
                .err()
                .unwrap_or_else(|| panic!("accepted, expected {want:?}"));
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        // Whole numbers for integer inputs may use any decimals.
        let call = decode(&encode(0, &cid, vec![k(vec![num(150, 1)])], vec![])).unwrap();
        assert_eq!(call.inputs()[0].data, TensorData::Int64(vec![15]));
    }

    #[test]
    fn hostile_lengths_do_not_allocate() {
        let cid = ModelId::of(b"m").to_string();
        let mut data = encode(
            0,
            &cid,
            vec![x(vec![num(1, 0), num(2, 0)], vec![1, 2])],
            vec![],
        );
        // Overwrite every 32-byte word in turn with a huge length/offset; each must fail fast.
        for w in 0..(data.len() - 4) / 32 {
            let mut d = data.clone();
            d[4 + w * 32..4 + (w + 1) * 32].copy_from_slice(&[0xff; 32]);
            let _ = decode(&d);
            d[4 + w * 32..4 + w * 32 + 28].copy_from_slice(&[0; 28]);
            let _ = decode(&d);
        }
        data.truncate(data.len() - 1);
        assert!(decode(&data).is_err());
    }

    #[test]
    fn outputs_encode_by_the_rule() {
        let out = encode_output(
            &[
                Tensor {
                    name: "label".into(),
                    shape: vec![1],
                    data: TensorData::Int64(vec![2]),
                },
                Tensor {
                    name: "p".into(),
                    shape: vec![1, 2],
                    data: TensorData::Float32(vec![0.25, 0.75]),
                },
                Tensor {
                    name: "s".into(),
                    shape: vec![1],
                    data: TensorData::String(vec!["hi".into()]),
                },
            ],
            1,
        )
        .unwrap();
        assert_eq!(out.numbers[0].values, vec![num(2, 0)]);
        assert_eq!(out.numbers[1].values, vec![num(2, 1), num(8, 1)]);
        assert_eq!(out.numbers[1].shape, vec![1, 2]);
        assert_eq!(out.strings[0].values, vec!["hi".to_string()]);
        assert!(!out.is_simulation_result);
        let nan = Tensor {
            name: "p".into(),
            shape: vec![1],
            data: TensorData::Float32(vec![f32::NAN]),
        };
        assert!(
            encode_output(&[nan], 2)
                .unwrap_err()
                .contains("not a finite number")
        );
    }

    #[test]
    fn gas_is_known_before_running() {
        let g = InferenceGas::default();
        assert_eq!(
            g.cost(1000, 0),
            INFERENCE_BASE_GAS + 1000 * DEFAULT_GAS_PER_UNIT
        );
        assert_eq!(
            g.cost(1000, 33),
            INFERENCE_BASE_GAS + 1000 * DEFAULT_GAS_PER_UNIT + 2 * INFERENCE_WORD_GAS
        );
        assert_eq!(g.cost(u64::MAX, usize::MAX), u64::MAX);
    }
}
