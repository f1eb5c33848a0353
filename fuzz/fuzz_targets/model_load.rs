//! Uploaded model files: protobuf decoding, our checks, tract compilation, and one run on a
//! small input when a file loads. Seeds: fixtures/models/*.onnx.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipe_inference::Model;
use pipe_primitives::inference::{DType, Tensor, TensorData};

fuzz_target!(|data: &[u8]| {
    let Ok(model) = Model::load(data) else { return };
    let inputs: Vec<Tensor> = model
        .inputs()
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(1).min(64)).collect();
            let n: usize = shape.iter().product();
            let data = match spec.dtype {
                DType::Float32 => TensorData::Float32(vec![0.5; n]),
                DType::Int64 => TensorData::Int64(vec![1; n]),
                DType::String => TensorData::String(vec!["a".into(); n]),
            };
            Tensor { name: spec.name.clone(), shape, data }
        })
        .collect();
    if inputs.iter().map(|t| t.data.len()).sum::<usize>() <= 4096 {
        let _ = model.run(&inputs);
    }
});
