//! `pipe bench llm`: the language-model runtime on this machine. Decoding speed (tokens per
//! second) at each thread count asked for, and whether answers are bit-identical across
//! thread counts and across runs: the determinism `docs/llm.md` promises rests on it for
//! anything but replay (which uses the committed answer).
//!
//! candle reads its thread count from `RAYON_NUM_THREADS` once per process, so each thread
//! count runs in a child process of this binary (`pipe-bench llm-run`), twice. Each run loads
//! the model, answers the same prompts greedily and with seeded sampling, and prints the
//! tokens of every answer and its timings.
//!
//! The model is a GGUF file given with `--model`, or the test kit's random Llama of a shape
//! large enough for the matrix products to run threaded (random weights decode as fast as
//! trained ones; their answers are noise, which is as good as text for comparing bits).
//!
//! With `--llama-cpp PYTHON`, llama.cpp (through llama-cpp-python,
//! `tools/py/bench_llama_cpp.py`) answers the same prompts greedily on the same file at each
//! thread count, in the same invocation, and each row gets `ratio_vs_llama_cpp`: our greedy
//! tokens per second ÷ llama.cpp's (the goal is ≥ 0.8), and whether the two engines chose the
//! same tokens.

use std::{path::Path, process::Command, time::Instant};

use anyhow::Context;
use pipe_llm::{LlmModel, Request, Sampling};
use serde_json::{Value, json};

/// The prompts every run answers.
const PROMPTS: &[&str] = &[
    "In the beginning God created the heaven and the earth.",
    "The quick brown fox jumps over the lazy dog, and then",
    "Once upon a time, in a land far away, there lived",
    "A smart contract calls a language model and",
];

/// One child run: loads `model`, answers every prompt at temperature 0 and 70 with
/// `max_tokens`, and returns the tokens and timings as JSON.
pub fn child(model: &Path, max_tokens: u32) -> anyhow::Result<Value> {
    let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
    let model = LlmModel::load(&bytes)?;
    let mut answers = Vec::new();
    let (mut tokens, mut seconds) = (0usize, 0f64);
    let (mut greedy, mut greedy_tokens, mut greedy_seconds) = (Vec::new(), 0usize, 0f64);
    for (i, prompt) in PROMPTS.iter().enumerate() {
        for temperature in [0u32, 70] {
            let seed = alloy_primitives::keccak256(format!("{i}/{temperature}"));
            let request = Request {
                prompt,
                max_tokens,
                stop: &[],
                sampling: Sampling::new(temperature, seed),
            };
            let started = Instant::now();
            let answer = model.generate(&request)?;
            let took = started.elapsed().as_secs_f64();
            seconds += took;
            tokens += answer.tokens.len();
            if temperature == 0 {
                greedy_seconds += took;
                greedy_tokens += answer.tokens.len();
                greedy.push(answer.tokens.clone());
            }
            answers.push(answer.tokens);
        }
    }
    Ok(json!({
        "threads": candle_threads(),
        "answers": answers,
        "tokens": tokens,
        "seconds": seconds,
        "greedy": {"answers": greedy, "tokens": greedy_tokens, "seconds": greedy_seconds},
    }))
}

fn candle_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// llama.cpp's greedy answers and speed on `model` at `threads` threads, from `python`.
fn llama_cpp(
    python: &Path,
    model: &Path,
    threads: usize,
    max_tokens: u32,
) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/py/bench_llama_cpp.py");
    let out = Command::new(python)
        .arg(script)
        .arg(model)
        .args([threads.to_string(), max_tokens.to_string()])
        .args(PROMPTS)
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "llama.cpp at {threads} threads failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Tokens per second of a run's `tokens` and `seconds`.
fn rate(r: &Value) -> f64 {
    r["tokens"].as_f64().unwrap_or(0.0) / r["seconds"].as_f64().unwrap_or(1.0).max(1e-9)
}

/// Runs [`child`] in child processes at each of `threads`, twice each, and compares; and
/// llama.cpp at the same thread counts when `python` has it.
pub fn run(
    model: Option<&Path>,
    threads: &[usize],
    max_tokens: u32,
    python: Option<&Path>,
    quantize: Option<&str>,
) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let quantize = quantize
        .map(|q| match q {
            "q8_0" => Ok(candle_core::quantized::GgmlDType::Q8_0),
            "q4k" => Ok(candle_core::quantized::GgmlDType::Q4K),
            other => Err(anyhow::anyhow!("--quantize {other}: q8_0 or q4k")),
        })
        .transpose()?;
    anyhow::ensure!(
        quantize.is_none() || model.is_none(),
        "--quantize applies to the default model"
    );
    let (path, source) = match model {
        Some(p) => (p.to_path_buf(), p.display().to_string()),
        None => {
            let shape = pipe_llm::test_utils::TinyShape {
                dim: 512,
                hidden: 1536,
                layers: 6,
                heads: 8,
                kv_heads: 4,
                context: 1024,
                seed: 11,
            };
            let path = dir.path().join("bench.gguf");
            let mut bytes = pipe_llm::test_utils::tiny_llama_gguf(shape, None);
            let mut kind = "f32".to_string();
            if let Some(dtype) = quantize {
                bytes = quantized(&bytes, dtype)?;
                kind = format!("matrices {dtype:?}");
            }
            std::fs::write(&path, bytes)?;
            (
                path,
                format!("the test kit's random Llama (dim 512, 6 layers, {kind})"),
            )
        }
    };
    let parameters = LlmModel::load(&std::fs::read(&path)?)?.meta().parameters;
    let exe = std::env::current_exe()?;
    let mut by_threads = Vec::new();
    for &t in threads {
        let mut runs = Vec::new();
        for _ in 0..2 {
            let out = Command::new(&exe)
                .args(["llm-run", "--model"])
                .arg(&path)
                .args(["--max-tokens", &max_tokens.to_string()])
                .env("RAYON_NUM_THREADS", t.to_string())
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "llm-run at {t} threads failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            runs.push(serde_json::from_slice::<Value>(&out.stdout)?);
        }
        by_threads.push((t, runs));
    }
    let answers = |run: &Value| run["answers"].clone();
    let reference = answers(&by_threads[0].1[0]);
    let across_runs = by_threads
        .iter()
        .all(|(_, runs)| answers(&runs[0]) == answers(&runs[1]));
    let across_threads = by_threads
        .iter()
        .all(|(_, runs)| answers(&runs[0]) == reference);
    let mut rows = Vec::new();
    for (t, runs) in &by_threads {
        let mut row = json!({
            "threads": t,
            "tokens": runs[0]["tokens"],
            "tokens_per_s": [rate(&runs[0]), rate(&runs[1])],
        });
        if let Some(python) = python {
            let theirs = llama_cpp(python, &path, *t, max_tokens)?;
            // Ours: the better of the two runs' greedy halves, as llama.cpp gets one run.
            let ours = rate(&runs[0]["greedy"]).max(rate(&runs[1]["greedy"]));
            row["greedy_tokens_per_s"] = json!(ours);
            row["llama_cpp_tokens_per_s"] = json!(rate(&theirs));
            row["ratio_vs_llama_cpp"] = json!(ours / rate(&theirs).max(1e-9));
            row["same_tokens_as_llama_cpp"] =
                json!(runs[0]["greedy"]["answers"] == theirs["answers"]);
            row["llama_cpp"] = theirs["engine"].clone();
        }
        rows.push(row);
    }
    Ok(json!({
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "model": source,
        "parameters": parameters,
        "prompts": PROMPTS.len(),
        "temperatures": [0, 70],
        "max_tokens": max_tokens,
        "runs": rows,
        "identical_across_runs": across_runs,
        "identical_across_threads": across_threads,
    }))
}

/// `gguf` with every matrix quantized to `dtype` (vectors, the norms, stay f32), as llama.cpp's
/// quantizer leaves a file.
fn quantized(gguf: &[u8], dtype: candle_core::quantized::GgmlDType) -> anyhow::Result<Vec<u8>> {
    use candle_core::{
        Device,
        quantized::{QTensor, gguf_file},
    };
    let mut r = std::io::Cursor::new(gguf);
    let content = gguf_file::Content::read(&mut r)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = Vec::new();
    for name in names {
        let t = content.tensor(&mut r, name, &Device::Cpu)?;
        let t = if t.shape().rank() == 2 {
            QTensor::quantize(&t.dequantize(&Device::Cpu)?, dtype)?
        } else {
            t
        };
        tensors.push((name.clone(), t));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors)?;
    Ok(out.into_inner())
}
