//! Calldata of the inference precompile: strict ABI decoding and request validation against
//! a model with float, integer and string inputs. The first byte picks whether the
//! `runModelInference` selector is put in front, so the fuzzer reaches the decoder at once.
#![no_main]

use alloy_primitives::hex;
use libfuzzer_sys::fuzz_target;
use pipe_executor::inference::decode_request;
use pipe_primitives::inference::{DType, IoSpec, ModelId, ModelMeta};
use std::sync::OnceLock;

fn meta() -> &'static ModelMeta {
    static META: OnceLock<ModelMeta> = OnceLock::new();
    META.get_or_init(|| ModelMeta {
        id: ModelId::of(b"fuzz"),
        name: "fuzz".into(),
        size_bytes: 4,
        inputs: vec![
            IoSpec { name: "input".into(), dtype: DType::Float32, shape: vec![None, Some(4)] },
            IoSpec { name: "k".into(), dtype: DType::Int64, shape: vec![None] },
            IoSpec { name: "s".into(), dtype: DType::String, shape: vec![None, Some(1)] },
        ],
        outputs: vec![],
        decimals: 8,
        cost_units: 1000,
        operators: vec![],
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else { return };
    let mut input = Vec::with_capacity(rest.len() + 4);
    if flag & 1 == 1 {
        input.extend_from_slice(&hex!("7289e9c2"));
    }
    input.extend_from_slice(rest);
    let m = meta();
    let _ = decode_request(&input, &|id| (*id == m.id).then(|| m.clone()));
});
