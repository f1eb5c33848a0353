//! `pipe bench inference`: per-inference latency of the node's runtime (tract plus our
//! operators) against onnxruntime on the fixture models, and the precompile's own overhead.
//!
//! For each model in `fixtures/models/reference.json`, its first batch-1 case is run
//! `--iterations` times after a warm-up, each run timed alone; the median is reported. Two
//! onnxruntime baselines run in the same invocation, so all see the same machine state, each
//! with one intra-op thread and sequential execution:
//! - **in process** (the goal's baseline): onnxruntime's C API from this process
//!   ([`crate::onnxruntime`]), timed two ways: `run` on inputs made once (onnxruntime's best
//!   case, the headline ratio) and `call` (make the inputs from our tensors, run, copy the
//!   outputs out: the same work `Model::run` does). Its outputs are checked against tract's
//!   before anything is timed, so both run the same computation.
//! - **from Python**: `tools/py/bench_onnxruntime.py`, which includes the cost of a Python
//!   `sess.run` call (measured on an Identity model, `identity_baseline`).
//!
//! The precompile overhead is decode (ABI, validation, Number → f32) plus encode (f32 →
//! Number, ABI, event) of one call with that model's inputs and outputs, without the model.

use std::{path::Path, process::Command, time::Instant};

use alloy_sol_types::SolCall;
use anyhow::Context as _;
use pipe_executor::inference::{
    ModelInferenceRequest, ModelInput, MultiDimensionalNumberTensor, Number, StringTensor,
    decode_request, encode_output, runModelInferenceCall,
};
use pipe_inference::{Model, UploadOptions, describe};
use pipe_primitives::inference::{Tensor, TensorData};
use serde_json::{Value, json};

use crate::onnxruntime::{Onnxruntime, library_of};

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Times `f` `iterations` times after `warmup` untimed calls; (median, p90) in µs.
fn time(iterations: usize, warmup: usize, mut f: impl FnMut()) -> (f64, f64) {
    for _ in 0..warmup {
        f();
    }
    let samples: Vec<f64> = (0..iterations)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_nanos() as f64 / 1000.0
        })
        .collect();
    (percentile(samples.clone(), 0.5), percentile(samples, 0.9))
}

fn first_batch1_case(spec: &Value) -> &Value {
    let cases = spec["cases"].as_array().expect("cases");
    cases
        .iter()
        .find(|c| {
            c["inputs"]
                .as_object()
                .unwrap()
                .values()
                .all(|v| v["shape"][0] == 1)
        })
        .unwrap_or(&cases[0])
}

fn inputs(spec: &Value, case: &Value) -> Vec<Tensor> {
    spec["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            let v = &case["inputs"][name];
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let values = v["values"].as_array().unwrap();
            let data = match i["dtype"].as_str().unwrap() {
                "string" => {
                    TensorData::String(values.iter().map(|s| s.as_str().unwrap().into()).collect())
                }
                "int64" => TensorData::Int64(values.iter().map(|x| x.as_i64().unwrap()).collect()),
                _ => TensorData::Float32(
                    values
                        .iter()
                        .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                        .collect(),
                ),
            };
            Tensor {
                name: name.into(),
                shape,
                data,
            }
        })
        .collect()
}

/// The ABI request carrying these tensors (floats as 18-decimal Numbers).
fn request(cid: String, tensors: &[Tensor]) -> ModelInferenceRequest {
    let mut numbers = Vec::new();
    let mut strings = Vec::new();
    for t in tensors {
        match &t.data {
            TensorData::String(v) => strings.push(StringTensor {
                name: t.name.clone(),
                values: v.clone(),
            }),
            TensorData::Int64(v) => numbers.push(MultiDimensionalNumberTensor {
                name: t.name.clone(),
                values: v
                    .iter()
                    .map(|&x| Number {
                        value: x as i128,
                        decimals: 0,
                    })
                    .collect(),
                shape: t.shape.iter().map(|&d| d as u32).collect(),
            }),
            TensorData::Float32(v) => numbers.push(MultiDimensionalNumberTensor {
                name: t.name.clone(),
                values: v
                    .iter()
                    .map(|&x| Number {
                        value: if x.is_nan() {
                            0
                        } else {
                            (x as f64 * 1e18) as i128
                        },
                        decimals: 18,
                    })
                    .collect(),
                shape: t.shape.iter().map(|&d| d as u32).collect(),
            }),
        }
    }
    ModelInferenceRequest {
        mode: 0,
        modelCID: cid,
        input: ModelInput { numbers, strings },
    }
}

/// Largest difference between onnxruntime's numeric outputs and tract's of the same name,
/// relative to the value's size (`|a − b| / (1 + |b|)`), and how many outputs were compared.
fn output_difference(
    ort: &[crate::onnxruntime::Output],
    tract: &[Tensor],
) -> anyhow::Result<(f64, usize)> {
    let mut worst = 0f64;
    let mut compared = 0;
    for o in ort {
        let Some(t) = tract.iter().find(|t| t.name == o.name) else {
            continue;
        };
        let values: Vec<f64> = match &t.data {
            TensorData::Float32(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::Int64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::String(_) => continue,
        };
        anyhow::ensure!(
            values.len() == o.values.len(),
            "output `{}`: onnxruntime gives {} values, tract {}",
            o.name,
            o.values.len(),
            values.len()
        );
        for (a, b) in o.values.iter().zip(&values) {
            worst = worst.max((a - b).abs() / (1.0 + b.abs()));
        }
        compared += 1;
    }
    anyhow::ensure!(compared > 0, "no output to compare");
    Ok((worst, compared))
}

/// Where onnxruntime comes from: its C library (`onnxruntime_lib`, or found from `python`'s
/// onnxruntime package) and the Python benchmark (`python`).
pub struct Baselines<'a> {
    pub python: Option<&'a Path>,
    pub onnxruntime_lib: Option<&'a Path>,
}

pub fn run(
    dir: &Path,
    iterations: usize,
    warmup: usize,
    baselines: Baselines<'_>,
) -> anyhow::Result<Value> {
    let python = baselines.python;
    let reference: serde_json::Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(dir.join("reference.json")).context("reading reference.json")?,
    )?;
    let library = match (baselines.onnxruntime_lib, python) {
        (Some(lib), _) => Some(lib.to_path_buf()),
        (None, Some(python)) => Some(library_of(python)?),
        (None, None) => None,
    };
    let onnxruntime = library.as_deref().map(Onnxruntime::load).transpose()?;
    let ort: Option<Value> = match python {
        Some(python) => {
            let script = dir.join("../../tools/py/bench_onnxruntime.py");
            let out = Command::new(python)
                .arg(&script)
                .args([
                    "-n",
                    &iterations.to_string(),
                    "--warmup",
                    &warmup.to_string(),
                    "--dir",
                ])
                .arg(dir)
                .output()
                .with_context(|| format!("running {}", script.display()))?;
            anyhow::ensure!(
                out.status.success(),
                "onnxruntime bench failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(serde_json::from_slice(&out.stdout)?)
        }
        None => None,
    };
    let baseline = ort
        .as_ref()
        .and_then(|o| o["identity_baseline"]["median_us"].as_f64());
    let mut models = serde_json::Map::new();
    let mut raw_ratios = Vec::new();
    let mut adjusted_ratios = Vec::new();
    let mut in_process_ratios = Vec::new();
    let mut like_for_like_ratios = Vec::new();
    for (name, spec) in &reference {
        let bytes = std::fs::read(dir.join(spec["file"].as_str().unwrap()))?;
        let (model, meta): (Model, _) = describe(&bytes, &UploadOptions::default())?;
        let case = first_batch1_case(spec);
        let tensors = inputs(spec, case);
        let (tract_median, tract_p90) = time(iterations, warmup, || {
            model.run(&tensors).expect("model runs");
        });
        // Precompile overhead around the model: decode + encode, as one call does.
        let outputs = model.run(&tensors)?;
        let data = runModelInferenceCall {
            request: request(meta.id.to_string(), &tensors),
        }
        .abi_encode();
        let (overhead, _) = time(iterations, warmup, || {
            let call = decode_request(&data, &|_| Some(meta.clone())).expect("decodes");
            let response = encode_output(&outputs, meta.decimals).expect("encodes");
            let returndata = runModelInferenceCall::abi_encode_returns(&response);
            // The precompile checks the return data and builds the event from it.
            std::hint::black_box(call.event(&returndata).expect("a valid output"));
            std::hint::black_box(returndata);
        });
        let mut entry = json!({
            "tract_median_us": tract_median,
            "tract_p90_us": tract_p90,
            "precompile_overhead_us": overhead,
            "calldata_bytes": data.len(),
        });
        if let Some(ort) = &onnxruntime {
            let mut session = ort.session(&bytes)?;
            let (difference, compared) = output_difference(&session.call(&tensors)?, &outputs)
                .with_context(|| format!("{name}: onnxruntime and tract disagree"))?;
            anyhow::ensure!(
                difference <= 1e-4,
                "{name}: onnxruntime's outputs differ from tract's by {difference:e}"
            );
            let feeds = session.feeds(&tensors)?;
            let feeds: Vec<_> = feeds.iter().map(Into::into).collect();
            let (run_median, run_p90) = time(iterations, warmup, || {
                session.run(&feeds).expect("onnxruntime runs");
            });
            let (call_median, _) = time(iterations, warmup, || {
                std::hint::black_box(session.call(&tensors).expect("onnxruntime runs"));
            });
            entry["onnxruntime_in_process_run_median_us"] = json!(run_median);
            entry["onnxruntime_in_process_run_p90_us"] = json!(run_p90);
            entry["onnxruntime_in_process_call_median_us"] = json!(call_median);
            entry["ratio_vs_onnxruntime_in_process"] = json!(tract_median / run_median);
            entry["ratio_vs_onnxruntime_in_process_call"] = json!(tract_median / call_median);
            entry["outputs_compared"] = json!(compared);
            entry["max_relative_output_difference"] = json!(difference);
            in_process_ratios.push(tract_median / run_median);
            like_for_like_ratios.push(tract_median / call_median);
        }
        if let Some(o) = ort
            .as_ref()
            .and_then(|o| o["models"][name]["median_us"].as_f64())
        {
            entry["onnxruntime_median_us"] = json!(o);
            entry["ratio_vs_onnxruntime_python"] = json!(tract_median / o);
            raw_ratios.push(tract_median / o);
            if let Some(b) = baseline.filter(|&b| o > b) {
                entry["ratio_vs_onnxruntime_minus_call_overhead"] = json!(tract_median / (o - b));
                adjusted_ratios.push(tract_median / (o - b));
            }
        }
        models.insert(name.clone(), entry);
    }
    let mut out = json!({ "iterations": iterations, "warmup": warmup, "models": models });
    if let Some(ort) = &onnxruntime {
        out["onnxruntime_in_process_build"] = json!(ort.version);
        out["onnxruntime_library"] = json!(library);
        let worst = in_process_ratios.iter().copied().fold(0f64, f64::max);
        out["median_ratio_vs_onnxruntime_in_process"] = json!(percentile(in_process_ratios, 0.5));
        out["worst_ratio_vs_onnxruntime_in_process"] = json!(worst);
        out["median_ratio_vs_onnxruntime_in_process_call"] =
            json!(percentile(like_for_like_ratios, 0.5));
    }
    if let Some(o) = ort {
        out["onnxruntime_version"] = o["onnxruntime_version"].clone();
        out["onnxruntime_identity_baseline_us"] = json!(baseline);
        out["median_ratio_vs_onnxruntime_python"] = json!(percentile(raw_ratios, 0.5));
        if !adjusted_ratios.is_empty() {
            out["median_ratio_vs_onnxruntime_minus_call_overhead"] =
                json!(percentile(adjusted_ratios, 0.5));
        }
    }
    Ok(out)
}
