//! Loading an ONNX file into a runnable tract plan, and running it on named tensors.
//!
//! A model file is hostile until checked. Before tract sees the graph we decode the protobuf
//! ourselves and check: the size, the operator allowlist ([`ALLOWED_OPS`]; no control flow, so
//! no unbounded loops), no external or oversized initializers (an external reference would
//! make tract read a file of the node's disk), the input and output types. tract is then
//! called under `catch_unwind`, so a bug it hits on a strange file is an error, not a crash.
//!
//! Dynamic dimensions (skl2onnx's `None`, torch's `batch`) become the symbol `N`, and the
//! plan is optimized once with it; a run binds `N` from the actual input shape.
//!
//! Execution states are pooled: building a tract state allocates a slot per node, which for
//! the small models contracts use costs more than the arithmetic. A state clears its values and
//! symbol bindings at the end of every run (`reset_turn`), so reusing one cannot leak anything
//! from one call into the next; the pool only saves the allocations.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use parking_lot::Mutex;

use pipe_primitives::inference::{DType, IoSpec, Tensor, TensorData};
use tract_onnx::pb;
use tract_onnx::prelude::tract_ndarray::{ArrayD, IxDyn};
use tract_onnx::prelude::*;

use crate::InferenceError;

/// Largest model file the node accepts.
pub const MAX_MODEL_BYTES: usize = 2 << 20;
/// Most graph nodes a model may have. tract's optimizer takes time that grows faster than the
/// node count on long chains (products of a value by itself: 0.7 s at 1000 nodes, 3.3 s at
/// 2000, and an upload of 4000 was still compiling after 300 s), so the bound is what keeps
/// compiling an upload short; the models contracts call have tens of nodes.
pub const MAX_GRAPH_NODES: usize = 1024;
/// Most elements in one initializer, and in all of them together.
pub const MAX_INITIALIZER_ELEMENTS: u64 = 1 << 24;
/// Most elements a single input tensor may have.
pub const MAX_INPUT_ELEMENTS: usize = 1 << 16;

/// The operators a model may use: what scikit-learn (skl2onnx) and small PyTorch networks
/// (MLP, CNN) export. Domain `""` is the default ONNX domain.
pub const ALLOWED_OPS: &[(&str, &[&str])] = &[
    (
        "",
        &[
            "Abs",
            "Add",
            "ArgMax",
            "ArgMin",
            "AveragePool",
            "BatchNormalization",
            "Cast",
            "Ceil",
            "Clip",
            "Concat",
            "Constant",
            "Conv",
            "Div",
            "Dropout",
            "Elu",
            "Equal",
            "Erf",
            "Exp",
            "Expand",
            "Flatten",
            "Floor",
            "Gather",
            "Gemm",
            "GlobalAveragePool",
            "GlobalMaxPool",
            "Greater",
            "HardSigmoid",
            "Identity",
            "LeakyRelu",
            "Less",
            "Log",
            "LogSoftmax",
            "MatMul",
            "Max",
            "MaxPool",
            "Mean",
            "Min",
            "Mul",
            "Neg",
            "Not",
            "Pow",
            "Reciprocal",
            "ReduceL2",
            "ReduceLogSumExp",
            "ReduceMax",
            "ReduceMean",
            "ReduceMin",
            "ReduceProd",
            "ReduceSum",
            "ReduceSumSquare",
            "Relu",
            "Reshape",
            "Round",
            "Selu",
            "Shape",
            "Sigmoid",
            "Sign",
            "Slice",
            "Softmax",
            "Softplus",
            "Split",
            "Sqrt",
            "Squeeze",
            "Sub",
            "Sum",
            "Tanh",
            "TopK",
            "Transpose",
            "Unsqueeze",
            "Where",
        ],
    ),
    (
        "ai.onnx.ml",
        &[
            "ArrayFeatureExtractor",
            "Binarizer",
            "CategoryMapper",
            "Imputer",
            "LabelEncoder",
            "LinearClassifier",
            "LinearRegressor",
            "Normalizer",
            "SVMClassifier",
            "SVMRegressor",
            "Scaler",
            "TreeEnsembleClassifier",
            "TreeEnsembleRegressor",
            "ZipMap",
        ],
    ),
];

fn allowed(domain: &str, op: &str) -> bool {
    let domain = if domain == "ai.onnx" { "" } else { domain };
    ALLOWED_OPS
        .iter()
        .any(|(d, ops)| *d == domain && ops.contains(&op))
}

/// Idle execution states kept per model (one per concurrently running thread is enough).
const MAX_IDLE_STATES: usize = 8;

/// A loaded model, ready to run from any thread.
#[derive(Debug, Clone)]
pub struct Model {
    plan: Arc<TypedRunnableModel>,
    /// The plan with every dynamic dimension set to 1 (batch 1).
    single: Arc<TypedRunnableModel>,
    /// Idle execution states of each plan, reused across runs (see the module docs).
    states: Arc<Mutex<Vec<TypedSimpleState>>>,
    single_states: Arc<Mutex<Vec<TypedSimpleState>>>,
    inputs: Vec<IoSpec>,
    input_types: Vec<DatumType>,
    outputs: Vec<IoSpec>,
    operators: Vec<String>,
    parameters: u64,
    /// Multiply-adds (and divisions) one batch-1 run performs, counted from the graph.
    multiply_adds: u64,
}

/// Maps an ONNX element type to the tract type we feed and what contracts see.
fn elem_type(t: i32) -> Result<(DatumType, DType), String> {
    use pb::tensor_proto::DataType as D;
    Ok(
        match D::try_from(t).map_err(|_| format!("unknown element type {t}"))? {
            D::Float => (f32::datum_type(), DType::Float32),
            D::Double => (f64::datum_type(), DType::Float32),
            D::Float16 => (f16::datum_type(), DType::Float32),
            D::Int64 => (i64::datum_type(), DType::Int64),
            D::Int32 => (i32::datum_type(), DType::Int64),
            D::Bool => (bool::datum_type(), DType::Int64),
            D::String => (String::datum_type(), DType::String),
            other => return Err(format!("element type {other:?} is not supported")),
        },
    )
}

fn io_spec(
    v: &pb::ValueInfoProto,
    zipmap_outputs: &[String],
) -> Result<(IoSpec, Option<DatumType>), String> {
    use pb::type_proto::Value;
    if zipmap_outputs.contains(&v.name) {
        // A ZipMap output is exposed as its probability tensor (see ops::zipmap).
        let spec = IoSpec {
            name: v.name.clone(),
            dtype: DType::Float32,
            shape: vec![None, None],
        };
        return Ok((spec, None));
    }
    let Some(Value::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
        return Err(format!("`{}` is not a tensor", v.name));
    };
    let (dt, dtype) = elem_type(t.elem_type)?;
    let shape = match &t.shape {
        None => return Err(format!("`{}` has no shape", v.name)),
        Some(s) => s
            .dim
            .iter()
            .map(|d| match d.value {
                Some(pb::tensor_shape_proto::dimension::Value::DimValue(n)) if n > 0 => {
                    usize::try_from(n)
                        .map(Some)
                        .map_err(|_| format!("dimension {n} too large"))
                }
                _ => Ok(None),
            })
            .collect::<Result<Vec<_>, _>>()?,
    };
    if shape.len() > 8 {
        return Err(format!("`{}` has rank {}", v.name, shape.len()));
    }
    Ok((
        IoSpec {
            name: v.name.clone(),
            dtype,
            shape,
        },
        Some(dt),
    ))
}

/// ONNX element types tract can read from `raw_data` (it panics on the others).
const RAW_LOADABLE: &[i32] = &[1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13];

/// Elements of an initializer (or a tensor attribute), checked against the limits.
fn initializer_elements(t: &pb::TensorProto) -> Result<u64, String> {
    if !t.external_data.is_empty() || t.data_location == Some(1) {
        return Err(format!("initializer `{}` refers to external data", t.name));
    }
    if !t.raw_data.is_empty() && !RAW_LOADABLE.contains(&t.data_type) {
        return Err(format!(
            "initializer `{}` has raw data of element type {}",
            t.name, t.data_type
        ));
    }
    let mut n: u64 = 1;
    for &d in &t.dims {
        let d = u64::try_from(d)
            .map_err(|_| format!("initializer `{}` has a negative dimension", t.name))?;
        n = n
            .checked_mul(d)
            .filter(|&n| n <= MAX_INITIALIZER_ELEMENTS)
            .ok_or_else(|| {
                format!(
                    "initializer `{}` is larger than {MAX_INITIALIZER_ELEMENTS} elements",
                    t.name
                )
            })?;
    }
    Ok(n)
}

/// Numeric elements carried by a node's attributes (tree nodes, SVM vectors, coefficients).
fn attribute_elements(node: &pb::NodeProto) -> u64 {
    node.attribute
        .iter()
        .map(|a| {
            (a.floats.len() + a.ints.len() + a.strings.len()) as u64 + u64::from(a.t.is_some())
        })
        .sum()
}

/// Sliding-window operators (Conv, pools): `pads` has two entries per spatial axis and
/// `strides`, `dilations`, `kernel_shape` one, all within sane bounds. tract indexes these
/// without checking (found by the model_load fuzzer: a MaxPool with two pads for two axes).
fn check_window_attributes(node: &pb::NodeProto) -> Result<(), String> {
    const WINDOWED: &[&str] = &["Conv", "MaxPool", "AveragePool", "ConvTranspose"];
    if !WINDOWED.contains(&node.op_type.as_str()) {
        return Ok(());
    }
    let ints = |name: &str| {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.ints.as_slice())
    };
    let bad = |why: String| format!("{} node `{}`: {why}", node.op_type, node.name);
    let axes = ints("kernel_shape")
        .map(|k| k.len())
        .or_else(|| ints("strides").map(|s| s.len()))
        .or_else(|| ints("dilations").map(|d| d.len()))
        .or_else(|| ints("pads").map(|p| p.len() / 2));
    let Some(axes) = axes else { return Ok(()) };
    if axes == 0 || axes > 3 {
        return Err(bad(format!("{axes} spatial axes")));
    }
    for (name, per_axis) in [
        ("kernel_shape", 1),
        ("strides", 1),
        ("dilations", 1),
        ("pads", 2),
    ] {
        if let Some(v) = ints(name) {
            if v.len() != axes * per_axis {
                return Err(bad(format!(
                    "{name} has {} entries for {axes} spatial axes",
                    v.len()
                )));
            }
            let lowest = if name == "pads" { 0 } else { 1 };
            if v.iter().any(|&x| x < lowest || x > 4096) {
                return Err(bad(format!("{name} {v:?} out of range")));
            }
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic inside tract into an error.
/// What a caught panic inside tract reads as.
pub(crate) const RUNTIME_FAULT: &str = "the runtime faulted on this model";

/// The compute operations of one run of `model` (every dimension known).
fn multiply_adds(model: &TypedModel) -> TractResult<u64> {
    let mut total: u64 = 0;
    for node in model.nodes() {
        let inputs = model.node_input_facts(node.id)?;
        for (cost, count) in node.op.cost(&inputs)? {
            if cost.is_compute() {
                let count = count.to_i64().map_or(u64::MAX, |c| c.max(0) as u64);
                total = total.saturating_add(count);
            }
        }
    }
    Ok(total)
}

fn guarded<T>(what: &str, f: impl FnOnce() -> TractResult<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e:#}")),
        Err(_) => Err(format!("{what}: {RUNTIME_FAULT}")),
    }
}

impl Model {
    /// Checks and compiles an ONNX file.
    pub fn load(bytes: &[u8]) -> Result<Self, InferenceError> {
        let invalid = InferenceError::InvalidModel;
        if bytes.len() > MAX_MODEL_BYTES {
            return Err(InferenceError::TooLarge {
                size: bytes.len(),
                limit: MAX_MODEL_BYTES,
            });
        }
        let onnx = crate::onnx();
        let proto =
            guarded("decoding", || onnx.proto_model_for_read(&mut &bytes[..])).map_err(invalid)?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| invalid("no graph".into()))?;
        if graph.node.is_empty() || graph.node.len() > MAX_GRAPH_NODES {
            return Err(invalid(format!(
                "graph has {} nodes (1..={MAX_GRAPH_NODES})",
                graph.node.len()
            )));
        }
        if !graph.sparse_initializer.is_empty() {
            return Err(invalid("sparse initializers are not supported".into()));
        }
        let mut operators: Vec<String> = Vec::new();
        let mut zipmap_outputs = Vec::new();
        let mut parameters: u64 = 0;
        for node in &graph.node {
            let domain = if node.domain.is_empty() {
                "ai.onnx"
            } else {
                &node.domain
            };
            if !allowed(domain, &node.op_type) {
                return Err(InferenceError::UnsupportedOperator(format!(
                    "{domain}:{}",
                    node.op_type
                )));
            }
            check_window_attributes(node).map_err(invalid)?;
            let tensors = node
                .attribute
                .iter()
                .flat_map(|a| a.t.iter().chain(a.tensors.iter()));
            for t in tensors {
                initializer_elements(t).map_err(invalid)?;
            }
            if node
                .attribute
                .iter()
                .any(|a| a.g.is_some() || !a.graphs.is_empty())
            {
                return Err(invalid(format!("node `{}` carries a subgraph", node.name)));
            }
            if node.op_type == "ZipMap" {
                zipmap_outputs.extend(node.output.iter().cloned());
            }
            operators.push(format!("{domain}:{}", node.op_type));
            parameters = parameters.saturating_add(attribute_elements(node));
        }
        operators.sort();
        operators.dedup();
        let mut total: u64 = 0;
        for t in &graph.initializer {
            total = total.saturating_add(initializer_elements(t).map_err(invalid)?);
        }
        if total > MAX_INITIALIZER_ELEMENTS {
            return Err(invalid(format!(
                "initializers hold {total} elements (limit {MAX_INITIALIZER_ELEMENTS})"
            )));
        }
        parameters = parameters.saturating_add(total);

        let initialized: Vec<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        // Every graph output must be produced by something (tract indexes its name map with it).
        let produced: std::collections::HashSet<&str> = graph
            .input
            .iter()
            .map(|v| v.name.as_str())
            .chain(initialized.iter().copied())
            .chain(
                graph
                    .node
                    .iter()
                    .flat_map(|n| n.output.iter().map(String::as_str)),
            )
            .collect();
        if let Some(v) = graph
            .output
            .iter()
            .find(|v| !produced.contains(v.name.as_str()))
        {
            return Err(invalid(format!(
                "output `{}` is not produced by any node",
                v.name
            )));
        }
        let mut inputs = Vec::new();
        let mut input_types = Vec::new();
        for v in graph
            .input
            .iter()
            .filter(|v| !initialized.contains(&v.name.as_str()))
        {
            let (spec, dt) = io_spec(v, &[]).map_err(|e| invalid(format!("input {e}")))?;
            inputs.push(spec);
            input_types.push(dt.expect("inputs are never ZipMap outputs"));
        }
        if inputs.is_empty() {
            return Err(invalid("the model has no inputs".into()));
        }
        let outputs = graph
            .output
            .iter()
            .map(|v| io_spec(v, &zipmap_outputs).map(|(s, _)| s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("output {e}")))?;

        let plan = guarded("compiling", || {
            let mut model = onnx.model_for_proto_model(&proto)?;
            let n = model.symbols.sym("N");
            let batch: TDim = n.clone().into();
            for (i, (spec, dt)) in inputs.iter().zip(&input_types).enumerate() {
                let shape: TVec<TDim> = spec
                    .shape
                    .iter()
                    .map(|d| d.map(|n| n.to_dim()).unwrap_or_else(|| batch.clone()))
                    .collect();
                model.set_input_fact(i, InferenceFact::dt_shape(*dt, shape))?;
            }
            let typed = model.into_typed()?.into_decluttered()?;
            // The work is counted on tract's own operators, before ours replace some of them.
            let work = {
                let mut one = std::collections::HashMap::new();
                one.insert(n.clone(), 1.to_dim());
                multiply_adds(&typed.set_symbols(&one)?)?
            };
            let typed = crate::ops::conv::direct_small_convs(typed)?;
            let typed = crate::ops::dense::direct_dense_stacks(typed)?;
            // The same graph with N = 1, optimized for the shapes contracts nearly always send:
            // with every dimension known tract picks fixed-size kernels.
            let mut one = std::collections::HashMap::new();
            one.insert(n, 1.to_dim());
            let single = typed.set_symbols(&one)?.into_optimized()?.into_runnable()?;
            Ok((typed.into_optimized()?.into_runnable()?, single, work))
        })
        .map_err(invalid)?;
        let (plan, single, multiply_adds) = plan;
        Ok(Self {
            plan,
            single,
            states: Arc::default(),
            single_states: Arc::default(),
            inputs,
            input_types,
            outputs,
            operators,
            parameters,
            multiply_adds,
        })
    }

    /// Zeros (empty strings) of every input's declared shape, dynamic dimensions set to
    /// `batch`: the inputs a model is tried on at upload.
    pub fn zero_inputs(&self, batch: usize) -> Vec<Tensor> {
        self.inputs
            .iter()
            .map(|spec| {
                let shape: Vec<usize> = spec.shape.iter().map(|d| d.unwrap_or(batch)).collect();
                let n = shape.iter().product::<usize>().min(MAX_INPUT_ELEMENTS);
                let data = match spec.dtype {
                    DType::Float32 => TensorData::Float32(vec![0.0; n]),
                    DType::Int64 => TensorData::Int64(vec![0; n]),
                    DType::String => TensorData::String(vec![String::new(); n]),
                };
                Tensor {
                    name: spec.name.clone(),
                    shape,
                    data,
                }
            })
            .collect()
    }

    /// The model's inputs, in graph order.
    pub fn inputs(&self) -> &[IoSpec] {
        &self.inputs
    }

    /// The model's outputs, in graph order.
    pub fn outputs(&self) -> &[IoSpec] {
        &self.outputs
    }

    /// `domain:op_type` of every operator used, sorted.
    pub fn operators(&self) -> &[String] {
        &self.operators
    }

    /// Numeric elements in initializers and operator attributes: the size of the model.
    pub fn parameters(&self) -> u64 {
        self.parameters
    }

    /// Multiply-adds and divisions of one run at batch 1, as tract's operators count them
    /// (matrix products, convolutions, element-wise arithmetic, reductions). Our ai.onnx.ml
    /// operators count nothing here; their work is bounded by their parameters instead.
    pub fn multiply_adds(&self) -> u64 {
        self.multiply_adds
    }

    /// Runs the model. `inputs` are matched to the model's inputs by name, and each must have
    /// the declared shape (any size ≥ 1 on dynamic dimensions). Outputs come in graph order.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferenceError> {
        self.run_until(inputs, None)
    }

    /// [`Model::run`], stopped when `stop` says so: the run asks before each node of the plan
    /// and gives up with [`InferenceError::Cancelled`] at the first yes, so a run nobody waits
    /// for any more (past its deadline) stops using its core within one node's time, bounded
    /// by the model's compute cap, instead of running to its end.
    pub fn run_until(
        &self,
        inputs: &[Tensor],
        stop: Option<&dyn Fn() -> bool>,
    ) -> Result<Vec<Tensor>, InferenceError> {
        let bad = InferenceError::BadInput;
        if inputs.len() != self.inputs.len() {
            let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
            return Err(bad(format!(
                "the model takes {} input(s) {names:?}, got {}",
                names.len(),
                inputs.len()
            )));
        }
        let mut batch: Option<usize> = None;
        let mut values = TVec::new();
        for (spec, dt) in self.inputs.iter().zip(&self.input_types) {
            let t = inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| bad(format!("missing input `{}`", spec.name)))?;
            check_shape(spec, &t.shape, &mut batch)?;
            let count: usize = t.shape.iter().product();
            if count != t.data.len() {
                return Err(bad(format!(
                    "input `{}` has {} values for shape {:?}",
                    t.name,
                    t.data.len(),
                    t.shape
                )));
            }
            if count > MAX_INPUT_ELEMENTS {
                return Err(bad(format!(
                    "input `{}` has more than {MAX_INPUT_ELEMENTS} values",
                    t.name
                )));
            }
            values.push(to_tract(t, *dt)?.into_tvalue());
        }
        let (plan, pool) = if batch.unwrap_or(1) == 1 {
            (&self.single, &self.single_states)
        } else {
            (&self.plan, &self.states)
        };
        let state = pool.lock().pop();
        let stopped = std::cell::Cell::new(false);
        let (outputs, state) = guarded("inference", || {
            let mut state = match state {
                Some(s) => s,
                None => plan.spawn()?,
            };
            let outputs = match stop {
                None => state.run(values)?,
                Some(stop) => state.run_plan_with_eval(values, |ctx, op, node, input| {
                    if stop() {
                        stopped.set(true);
                        return Err(TractError::msg("stopped at its deadline"));
                    }
                    tract_onnx::tract_core::plan::eval(ctx, op, node, input)
                })?,
            };
            Ok((outputs, state))
        })
        .map_err(|e| {
            if stopped.get() {
                InferenceError::Cancelled(e)
            } else if e.ends_with(RUNTIME_FAULT) {
                InferenceError::RuntimeFault(e)
            } else {
                InferenceError::Runtime(e)
            }
        })?;
        // A state whose run failed was dropped above, never put back.
        let mut idle = pool.lock();
        if idle.len() < MAX_IDLE_STATES {
            idle.push(state);
        }
        drop(idle);
        outputs
            .into_iter()
            .zip(&self.outputs)
            .map(|(v, spec)| from_tract(&spec.name, &v))
            .collect()
    }
}

fn check_shape(
    spec: &IoSpec,
    shape: &[usize],
    batch: &mut Option<usize>,
) -> Result<(), InferenceError> {
    let bad = |why: String| InferenceError::BadInput(format!("input `{}`: {why}", spec.name));
    let want: Vec<String> = spec
        .shape
        .iter()
        .map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "N".into()))
        .collect();
    if shape.len() != spec.shape.len() {
        return Err(bad(format!(
            "shape {shape:?} does not match [{}]",
            want.join(", ")
        )));
    }
    for (got, declared) in shape.iter().zip(&spec.shape) {
        match declared {
            Some(n) if n != got => {
                return Err(bad(format!(
                    "shape {shape:?} does not match [{}]",
                    want.join(", ")
                )));
            }
            None if *got == 0 => return Err(bad("a dimension is zero".into())),
            // All dynamic dimensions share the one symbol N.
            None if batch.replace(*got).is_some_and(|b| b != *got) => {
                return Err(bad(format!("dynamic dimensions disagree ({shape:?})")));
            }
            _ => {}
        }
    }
    Ok(())
}

fn to_tract(t: &Tensor, dt: DatumType) -> Result<tract_onnx::prelude::Tensor, InferenceError> {
    let bad = |e: String| InferenceError::BadInput(format!("input `{}`: {e}", t.name));
    let shape = IxDyn(&t.shape);
    let tensor = match &t.data {
        TensorData::Float32(v) => ArrayD::from_shape_vec(shape, v.clone()).map(|a| a.into_tensor()),
        TensorData::Int64(v) => ArrayD::from_shape_vec(shape, v.clone()).map(|a| a.into_tensor()),
        TensorData::String(v) => ArrayD::from_shape_vec(shape, v.clone()).map(|a| a.into_tensor()),
    }
    .map_err(|e| bad(e.to_string()))?;
    let numeric = |d: DatumType| d != String::datum_type();
    if numeric(tensor.datum_type()) != numeric(dt) {
        let want = if numeric(dt) { "numbers" } else { "strings" };
        return Err(bad(format!("the model expects {want}")));
    }
    if tensor.datum_type() == dt {
        return Ok(tensor);
    }
    tensor
        .cast_to_dt(dt)
        .map(|c| c.into_owned())
        .map_err(|e| bad(e.to_string()))
}

fn from_tract(name: &str, v: &TValue) -> Result<Tensor, InferenceError> {
    let err = |e: String| InferenceError::Runtime(format!("output `{name}`: {e}"));
    let shape = v.shape().to_vec();
    let dt = v.datum_type();
    let data = if dt == String::datum_type() {
        TensorData::String(
            v.to_plain_array_view::<String>()
                .map_err(|e| err(e.to_string()))?
                .iter()
                .cloned()
                .collect(),
        )
    } else if dt.is_float() {
        let c = v.cast_to::<f32>().map_err(|e| err(e.to_string()))?;
        TensorData::Float32(
            c.to_plain_array_view::<f32>()
                .map_err(|e| err(e.to_string()))?
                .iter()
                .copied()
                .collect(),
        )
    } else if dt.is_integer() || dt == bool::datum_type() || dt == TDim::datum_type() {
        let c = v.cast_to::<i64>().map_err(|e| err(e.to_string()))?;
        TensorData::Int64(
            c.to_plain_array_view::<i64>()
                .map_err(|e| err(e.to_string()))?
                .iter()
                .copied()
                .collect(),
        )
    } else {
        return Err(err(format!("type {dt:?} is not supported")));
    };
    Ok(Tensor {
        name: name.to_string(),
        shape,
        data,
    })
}
