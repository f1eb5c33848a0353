//! Compute bounds: a small file that is a lot of work ("compute bomb") is priced by the work
//! its graph does and refused over the chain's cap, and a run past its deadline stops
//! promptly instead of running to its end.

use std::time::{Duration, Instant};

use pipe_inference::{InferenceError, MAX_COST_UNITS, Model, UploadOptions, describe};
use pipe_primitives::inference::{Tensor, TensorData};
use prost::Message;
use tract_onnx::pb;

/// `x` (n×n) multiplied `depth` times by one shared n×n weight: a file of n² floats whose run
/// costs `depth · n³` multiply-adds.
fn matmul_chain(n: i64, depth: usize) -> Vec<u8> {
    chain(n, depth, false)
}

/// As [`matmul_chain`]; with `square`, each product multiplies the previous result by itself
/// (no constant operand).
fn chain(n: i64, depth: usize, square: bool) -> Vec<u8> {
    let dim = |v: i64| pb::tensor_shape_proto::Dimension {
        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(v)),
        ..Default::default()
    };
    let tensor = |name: &str| pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: vec![dim(n), dim(n)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let weights: Vec<u8> = (0..n * n)
        .flat_map(|i| (((i % 7) as f32 - 3.0) / (n as f32)).to_le_bytes())
        .collect();
    let mut nodes = Vec::new();
    let mut prev = "x".to_string();
    for i in 0..depth {
        let out = if i + 1 == depth {
            "y".to_string()
        } else {
            format!("h{i}")
        };
        nodes.push(pb::NodeProto {
            op_type: "MatMul".into(),
            input: vec![prev.clone(), if square { prev.clone() } else { "w".into() }],
            output: vec![out.clone()],
            name: format!("mm{i}"),
            ..Default::default()
        });
        prev = out;
    }
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            name: "bomb".into(),
            node: nodes,
            initializer: vec![pb::TensorProto {
                name: "w".into(),
                dims: vec![n, n],
                data_type: pb::tensor_proto::DataType::Float as i32,
                raw_data: weights,
                ..Default::default()
            }],
            input: vec![tensor("x")],
            output: vec![tensor("y")],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}

fn ones(n: usize) -> Vec<Tensor> {
    vec![Tensor {
        name: "x".into(),
        shape: vec![n, n],
        data: TensorData::Float32(vec![1.0; n * n]),
    }]
}

#[test]
fn cost_units_follow_the_graphs_work_and_a_bomb_is_refused() {
    // A few multiply-adds: priced as before, by size.
    let small = matmul_chain(4, 2);
    let (_, meta) = describe(&small, &UploadOptions::default()).unwrap();
    assert!(meta.cost_units < 1100, "{}", meta.cost_units);
    // 64³ × 8 = 2.1M multiply-adds in a 16 KB file: the work sets the price.
    let medium = matmul_chain(64, 8);
    let (model, meta) = describe(&medium, &UploadOptions::default()).unwrap();
    assert_eq!(model.multiply_adds(), 64 * 64 * 64 * 8);
    assert!(meta.cost_units >= 1000 + 2_097, "{}", meta.cost_units);
    // 256³ × 64 = 1.07G multiply-adds in a 256 KB file: over the chain's cap, refused before
    // any trial run.
    let bomb = matmul_chain(256, 64);
    let started = Instant::now();
    let err = describe(&bomb, &UploadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, InferenceError::InvalidModel(m) if m.contains(&MAX_COST_UNITS.to_string())),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused quickly"
    );
}

#[test]
fn a_run_told_to_stop_stops_before_the_next_node() {
    let model = Model::load(&matmul_chain(256, 12)).unwrap();
    // Never told to stop: it runs through, asked once per node of the plan.
    let checks = std::cell::Cell::new(0);
    let never = || {
        checks.set(checks.get() + 1);
        false
    };
    let full = model.run_until(&ones(256), Some(&never)).unwrap();
    let nodes = checks.get();
    assert!(nodes >= 3, "{nodes}");
    assert_eq!(full, model.run(&ones(256)).unwrap(), "same outputs");
    // "Time is up" at the second check: one node ran, the second never starts.
    let checks = std::cell::Cell::new(0);
    let stop = || {
        checks.set(checks.get() + 1);
        checks.get() >= 2
    };
    let err = model.run_until(&ones(256), Some(&stop)).unwrap_err();
    assert!(matches!(err, InferenceError::Cancelled(_)), "{err}");
    assert_eq!(checks.get(), 2);
    // The model still runs afterwards (the stopped state was not reused).
    assert_eq!(model.run(&ones(256)).unwrap(), full);
}

/// Compiling is bounded by the node count: a long chain of products compiles in well under a
/// second at the bound, and one past it is refused before tract sees it.
#[test]
fn a_graph_past_the_node_bound_is_refused_before_compiling() {
    let at = chain(4, pipe_inference::model::MAX_GRAPH_NODES, true);
    Model::load(&at).unwrap();
    let started = Instant::now();
    let err = Model::load(&chain(4, 4000, true)).unwrap_err();
    assert!(
        matches!(&err, InferenceError::InvalidModel(m) if m.contains("4000 nodes")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
