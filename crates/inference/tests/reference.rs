//! Every fixture model against onnxruntime's outputs (`fixtures/models/reference.json`, made by
//! `scripts/fixtures.sh`), and the determinism the chain relies on.

use std::path::PathBuf;
use std::sync::Arc;

use pipe_inference::{InferenceError, Model, UploadOptions, describe};
use pipe_primitives::inference::{Tensor, TensorData};
use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models")
}

fn reference() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixtures().join("reference.json")).expect("reference.json");
    serde_json::from_str::<Value>(&text)
        .unwrap()
        .as_object()
        .unwrap()
        .clone()
}

fn shape(v: &Value) -> Vec<usize> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect()
}

fn float(v: &Value) -> f32 {
    match v {
        Value::String(s) if s == "nan" => f32::NAN,
        v => v.as_f64().unwrap() as f32,
    }
}

fn tensor(name: &str, dtype: &str, v: &Value) -> Tensor {
    let values = v["values"].as_array().unwrap();
    let data = match dtype {
        "float32" => TensorData::Float32(values.iter().map(float).collect()),
        "int64" => TensorData::Int64(values.iter().map(|x| x.as_i64().unwrap()).collect()),
        "string" => TensorData::String(
            values
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect(),
        ),
        other => panic!("dtype {other}"),
    };
    Tensor {
        name: name.to_string(),
        shape: shape(v),
        data,
    }
}

fn case_inputs(spec: &Value, case: &Value) -> Vec<Tensor> {
    spec["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let name = i["name"].as_str().unwrap();
            tensor(name, i["dtype"].as_str().unwrap(), &case["inputs"][name])
        })
        .collect()
}

fn load(name: &str) -> Model {
    Model::load(&std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap()).unwrap()
}

#[test]
fn every_fixture_matches_onnxruntime() {
    let reference = reference();
    assert!(reference.len() >= 14, "fixture set shrank");
    let mut checked = 0;
    for (name, spec) in &reference {
        let model = load(name);
        let outputs = spec["outputs"].as_array().unwrap();
        assert_eq!(model.outputs().len(), outputs.len(), "{name}: output count");
        for (c, case) in spec["cases"].as_array().unwrap().iter().enumerate() {
            let got = model
                .run(&case_inputs(spec, case))
                .unwrap_or_else(|e| panic!("{name} case {c}: {e}"));
            for (o, out_spec) in outputs.iter().enumerate() {
                let oname = out_spec["name"].as_str().unwrap();
                let want = tensor(
                    oname,
                    out_spec["dtype"].as_str().unwrap(),
                    &case["outputs"][oname],
                );
                let got = &got[o];
                assert_eq!(got.name, oname);
                assert_eq!(got.shape, want.shape, "{name} case {c} {oname}: shape");
                match (&got.data, &want.data) {
                    (TensorData::Float32(g), TensorData::Float32(w)) => {
                        for (i, (g, w)) in g.iter().zip(w).enumerate() {
                            let tol = 1e-4 * w.abs().max(1.0);
                            assert!(
                                (g - w).abs() <= tol,
                                "{name} case {c} {oname}[{i}]: tract {g} vs onnxruntime {w}"
                            );
                        }
                    }
                    (g, w) => assert_eq!(g, w, "{name} case {c} {oname}"),
                }
                checked += 1;
            }
        }
    }
    eprintln!("{checked} outputs checked");
}

#[test]
fn metadata_is_derived_from_the_file() {
    let bytes = std::fs::read(fixtures().join("risk_logreg.onnx")).unwrap();
    let (_, meta) = describe(
        &bytes,
        &UploadOptions {
            name: "risk".into(),
            decimals: Some(6),
            cost_units: None,
        },
    )
    .unwrap();
    assert_eq!(meta.id.to_string().len(), 59);
    assert!(meta.id.to_string().starts_with("bafkrei"));
    assert_eq!(meta.inputs[0].name, "input");
    assert_eq!(meta.inputs[0].shape, vec![None, Some(4)]);
    assert_eq!(
        meta.outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["label", "probabilities"]
    );
    assert!(
        meta.operators.contains(&"ai.onnx.ml:Scaler".to_string()),
        "{:?}",
        meta.operators
    );
    assert_eq!(meta.decimals, 6);
    assert!(meta.cost_units > 1000);
    // A declared cost below the derived one is raised; above it is kept.
    let (_, low) = describe(
        &bytes,
        &UploadOptions {
            cost_units: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(low.cost_units, meta.cost_units);
    let (_, high) = describe(
        &bytes,
        &UploadOptions {
            cost_units: Some(1 << 40),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(high.cost_units, 1 << 40);
    assert!(
        describe(
            &bytes,
            &UploadOptions {
                decimals: Some(19),
                ..Default::default()
            }
        )
        .is_err()
    );
}

/// The same model and input give the same bits on every run and at every thread count.
#[test]
fn runs_are_bit_identical_across_threads() {
    let reference = reference();
    for name in ["forecast_gbr", "mlp", "cnn", "svr_rbf", "risk_logreg"] {
        let spec = &reference[name];
        let case = &spec["cases"][3];
        let inputs = Arc::new(case_inputs(spec, case));
        let model = Arc::new(load(name));
        let first = model.run(&inputs).unwrap();
        for threads in [1, 2, 4, 8] {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let (model, inputs) = (model.clone(), inputs.clone());
                    std::thread::spawn(move || {
                        (0..20)
                            .map(|_| model.run(&inputs).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for h in handles {
                for out in h.join().unwrap() {
                    for (a, b) in out.iter().zip(&first) {
                        let bits = |t: &Tensor| match &t.data {
                            TensorData::Float32(v) => {
                                v.iter().map(|f| f.to_bits() as i64).collect::<Vec<_>>()
                            }
                            TensorData::Int64(v) => v.clone(),
                            TensorData::String(v) => v.iter().map(|s| s.len() as i64).collect(),
                        };
                        assert_eq!(bits(a), bits(b), "{name} differs at {threads} threads");
                    }
                }
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let model = load("risk_logreg");
    let t = |name: &str, shape: Vec<usize>, v: Vec<f32>| Tensor {
        name: name.into(),
        shape,
        data: TensorData::Float32(v),
    };
    let cases = [
        (vec![t("input", vec![1, 3], vec![0.0; 3])], "does not match"),
        (vec![t("x", vec![1, 4], vec![0.0; 4])], "missing input"),
        (
            vec![t("input", vec![1, 4], vec![0.0; 3])],
            "values for shape",
        ),
        (vec![t("input", vec![0, 4], vec![])], "zero"),
        (vec![t("input", vec![4], vec![0.0; 4])], "does not match"),
        (vec![], "takes 1 input"),
        (
            vec![Tensor {
                name: "input".into(),
                shape: vec![1, 4],
                data: TensorData::String(vec!["a".into(); 4]),
            }],
            "expects numbers",
        ),
    ];
    for (inputs, why) in cases {
        match model.run(&inputs) {
            Err(InferenceError::BadInput(msg)) => {
                assert!(msg.contains(why), "{msg:?} lacks {why:?}")
            }
            other => panic!("expected bad input ({why}), got {other:?}"),
        }
    }
}

#[test]
fn hostile_files_are_rejected() {
    assert!(matches!(
        Model::load(b"not a model"),
        Err(InferenceError::InvalidModel(_))
    ));
    assert!(matches!(
        Model::load(&[]),
        Err(InferenceError::InvalidModel(_))
    ));
    assert!(matches!(
        Model::load(&vec![0u8; pipe_inference::MAX_MODEL_BYTES + 1]),
        Err(InferenceError::TooLarge { .. })
    ));
    // Files the model_load fuzzer found making tract panic (the node caught each; the upload
    // path now refuses them with its own reason).
    for (file, reason) in [
        // A graph output no node produces.
        ("fuzz-unproduced-output.onnx", "not produced"),
        // A LinearClassifier without intercepts: tract asserted at run time on a symbolic batch;
        // onnxruntime refuses it, and so does our operator.
        (
            "fuzz-linear-no-intercepts.onnx",
            "intercepts must not be empty",
        ),
        // Raw initializer bytes of an element type tract cannot read.
        ("fuzz-raw-data-type.onnx", "raw data of element type"),
        // A MaxPool with two pads for two spatial axes (tract indexes them).
        ("fuzz-pool-pads.onnx", "pads has 2 entries"),
    ] {
        let bytes = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(file),
        )
        .unwrap();
        match describe(&bytes, &UploadOptions::default()) {
            Err(InferenceError::InvalidModel(msg)) => {
                assert!(msg.contains(reason), "{file}: {msg}")
            }
            other => panic!(
                "{file}: expected a rejection, got {:?}",
                other.map(|(_, m)| m)
            ),
        }
    }
    // Truncations and byte flips of a real model: errors or working models, never a panic.
    let bytes = std::fs::read(fixtures().join("forecast_gbr.onnx")).unwrap();
    for cut in (0..bytes.len()).step_by(97) {
        let _ = Model::load(&bytes[..cut]);
    }
    let mut state = 0x9e3779b97f4a7c15u64;
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state as usize) % b.len();
            b[i] = (state >> 32) as u8;
        }
        if let Ok(m) = Model::load(&b) {
            let _ = m.run(&[Tensor {
                name: "input".into(),
                shape: vec![1, 8],
                data: TensorData::Float32(vec![1.0; 8]),
            }]);
        }
    }
}
