//! The benchmarks' baselines are what they claim to be: the oracle contract is the compiled
//! source, and onnxruntime in process agrees with tract on every fixture model.
//!
//! Needs `npm ci` in tools/js and the fixture venv (`scripts/fixtures.sh`); the README's test
//! command makes both.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The solc artifact of contract `name`, compiled afresh into a directory of its own.
fn compiled_artifact(name: &str) -> serde_json::Value {
    let out = tempfile::tempdir().unwrap();
    let root = repo_root();
    let status = Command::new("node")
        .arg(root.join("tools/js/compile.js"))
        .arg(root.join("contracts"))
        .arg(out.path())
        .status()
        .expect("node runs");
    assert!(status.success(), "contracts compile");
    serde_json::from_str(&std::fs::read_to_string(out.path().join(format!("{name}.json"))).unwrap())
        .unwrap()
}

/// The two-transaction oracle the benchmark deploys as its baseline is what
/// `contracts/src/bench/InferenceOracle.sol` compiles to (regenerate
/// `bin/pipe-bench/src/inference_oracle.hex` from the artifact's `bytecode` when the contract changes;
/// comments count too, as solc appends a hash of the source metadata).
#[test]
fn the_benchmark_oracle_is_the_compiled_contract() {
    let artifact = compiled_artifact("InferenceOracle");
    let compiled: alloy_primitives::Bytes = artifact["bytecode"].as_str().unwrap().parse().unwrap();
    let embedded =
        alloy_primitives::hex::decode(include_str!("../src/inference_oracle.hex").trim()).unwrap();
    assert_eq!(
        alloy_primitives::Bytes::from(embedded),
        compiled,
        "inference_oracle.hex is stale: copy InferenceOracle.json's bytecode into it"
    );
}

/// The inference benchmark's baselines run the fixture models for real: onnxruntime in this
/// process through its C API (the library of the fixture venv's wheel) agrees with tract on
/// every model before anything is timed, and the Python baseline answers for every model.
/// Needs the venv `scripts/fixtures.sh` makes (the README's test command makes it).
#[test]
fn the_inference_benchmark_runs_onnxruntime_in_process_on_every_fixture() {
    let root = repo_root();
    let python = root.join("tools/py/.venv/bin/python");
    assert!(
        python.exists(),
        "the fixture venv is missing: run scripts/fixtures.sh (or the README's test command)"
    );
    let baselines = pipe_bench::bench_inference::Baselines {
        python: Some(&python),
        onnxruntime_lib: None,
    };
    let out =
        pipe_bench::bench_inference::run(&root.join("fixtures/models"), 20, 2, baselines).unwrap();
    let models = out["models"].as_object().unwrap();
    assert_eq!(models.len(), 14);
    for (name, m) in models {
        assert!(m["outputs_compared"].as_u64().unwrap() >= 1, "{name}");
        assert!(
            m["max_relative_output_difference"].as_f64().unwrap() <= 1e-4,
            "{name}"
        );
        for key in [
            "tract_median_us",
            "onnxruntime_in_process_run_median_us",
            "onnxruntime_in_process_call_median_us",
            "onnxruntime_median_us",
        ] {
            assert!(m[key].as_f64().unwrap() > 0.0, "{name} {key}");
        }
    }
    assert!(
        out["onnxruntime_library"]
            .as_str()
            .unwrap()
            .contains("libonnxruntime.so")
    );
}
