//! The ONNX runtime of pipe: tract, plus the `ai.onnx.ml` operators scikit-learn exports.
//!
//! This crate is the only one that depends on tract, which is most of the node's cold build;
//! everything else talks to models through [`pipe_primitives::inference`] types, so editing
//! the rest of the node never rebuilds it.
//!
//! - [`Model`] checks a file (size, operator allowlist, no external data, limits), compiles it
//!   once into an optimized tract plan with a symbolic batch dimension, and runs it on named
//!   tensors from any thread.
//! - [`ops`] holds our operators, each tested against onnxruntime on the fixture models.
//! - [`describe`] derives a model's metadata (inputs, outputs, operators, cost units).
//! - [`ModelCache`] keeps compiled plans by model id so a model is compiled once, not per call.
//!
//! # Determinism
//! tract runs single-threaded here and picks kernels by CPU features, so a model gives the
//! same bits on every run and at every thread count of the node on one machine, but not
//! necessarily across CPU kinds. That is why blocks carry inference results and replay uses
//! them (see `docs/spec.md`); this crate is what computes them.
//!
//! # Cost units
//! `cost_units = 1000 + ⌈parameters / 10⌉ + ⌊multiply-adds / 1000⌋`, where parameters counts
//! every element of the initializers plus every number in operator attributes (tree nodes,
//! support vectors, coefficients), and multiply-adds are what one batch-1 run computes, as
//! tract's operators count them on the compiled graph (matrix products, convolutions,
//! element-wise arithmetic). Both are known from the file alone, before any run, and the same
//! on every machine. Size alone let a 1.5 KB graph of repeated matrix products cost 19 s of
//! CPU per run at the price of a linear regression; counting the work prices it, and a model
//! over [`MAX_COST_UNITS`] is refused at upload. An uploader may declare more units than that
//! (never fewer).
//!
//! # Deadlines
//! [`Model::run_until`] asks before each node whether to stop, so a run past its deadline
//! stops using its core within one node instead of running to its end
//! ([`InferenceError::Cancelled`], a fault of the moment, never a model's failure).

pub mod model;
pub mod ops;

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use pipe_primitives::inference::{
    DEFAULT_OUTPUT_DECIMALS, MAX_OUTPUT_DECIMALS, ModelId, ModelMeta,
};

pub use model::{MAX_MODEL_BYTES, Model};

/// Why a model could not be loaded or run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    #[error("model is {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid model: {0}")]
    InvalidModel(String),
    #[error("unsupported operator {0}")]
    UnsupportedOperator(String),
    #[error("invalid model metadata: {0}")]
    InvalidMeta(String),
    #[error("bad input: {0}")]
    BadInput(String),
    #[error("model error: {0}")]
    Runtime(String),
    /// tract panicked (and we caught it): the file is one the runtime cannot handle.
    #[error("model error: {0}")]
    RuntimeFault(String),
    /// The run reached its deadline and stopped: a fact about this machine's load, not about
    /// the model or the input, so it is never committed (the request is retried or given up).
    #[error("run cancelled: {0}")]
    Cancelled(String),
}

/// tract's ONNX front end with our operators registered.
pub fn onnx() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    ops::register(&mut onnx.op_register);
    onnx
}

/// Cost units derived from a model's size and work (see the crate docs): a base, a unit per
/// ten parameters (memory touched), and a unit per thousand multiply-adds of a batch-1 run
/// (compute), so a small file that is a lot of work is priced by the work.
pub fn derived_cost_units(parameters: u64, multiply_adds: u64) -> u64 {
    1000u64
        .saturating_add(parameters.div_ceil(10))
        .saturating_add(multiply_adds / 1000)
}

/// Most cost units a model may be worth (a chain rule): about a billion multiply-adds per run,
/// a few hundred milliseconds of one core. A model over it is refused at upload.
pub const MAX_COST_UNITS: u64 = 1_000_000;

/// What an uploader may choose about a model; everything else is derived from the file.
#[derive(Debug, Clone, Default)]
pub struct UploadOptions {
    /// A label for humans.
    pub name: String,
    /// Decimals of float outputs; [`DEFAULT_OUTPUT_DECIMALS`] when `None`.
    pub decimals: Option<u32>,
    /// Declared cost units; raised to the derived value when lower.
    pub cost_units: Option<u64>,
}

/// Loads a model file and derives its metadata.
pub fn describe(
    bytes: &[u8],
    options: &UploadOptions,
) -> Result<(Model, ModelMeta), InferenceError> {
    let decimals = options.decimals.unwrap_or(DEFAULT_OUTPUT_DECIMALS);
    if decimals > MAX_OUTPUT_DECIMALS {
        return Err(InferenceError::InvalidMeta(format!(
            "decimals {decimals} above {MAX_OUTPUT_DECIMALS}"
        )));
    }
    if options.name.len() > 256 {
        return Err(InferenceError::InvalidMeta(
            "name longer than 256 bytes".into(),
        ));
    }
    let model = Model::load(bytes)?;
    let derived = derived_cost_units(model.parameters(), model.multiply_adds());
    if derived > MAX_COST_UNITS {
        return Err(InferenceError::InvalidModel(format!(
            "one run is {} multiply-adds over {} parameters, {derived} cost units: the limit is {MAX_COST_UNITS}",
            model.multiply_adds(),
            model.parameters()
        )));
    }
    // Trial runs on zeros at upload: some files make tract fault at run time (found by the
    // model_load fuzzer: a LinearClassifier without intercepts, on a symbolic batch); refuse
    // them now rather than fail at every call.
    // Other errors on zeros are the model's business (it may reject them by design).
    // Batch 1 and 2 exercise both compiled plans (fixed-size and symbolic).
    for batch in [1, 2] {
        if let Err(InferenceError::RuntimeFault(why)) = model.run(&model.zero_inputs(batch)) {
            return Err(InferenceError::InvalidModel(format!(
                "trial run on zeros failed: {why}"
            )));
        }
    }
    let meta = ModelMeta {
        id: ModelId::of(bytes),
        name: options.name.clone(),
        size_bytes: bytes.len() as u64,
        inputs: model.inputs().to_vec(),
        outputs: model.outputs().to_vec(),
        decimals,
        cost_units: options.cost_units.unwrap_or(0).max(derived),
        operators: model.operators().to_vec(),
        kind: pipe_primitives::ModelKind::Onnx,
        llm: None,
    };
    Ok((model, meta))
}

/// Compiled models by id, bounded; the least recently used one is dropped when full.
#[derive(Debug)]
pub struct ModelCache {
    capacity: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    models: HashMap<ModelId, (Arc<Model>, u64)>,
    tick: u64,
}

impl ModelCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::default(),
        }
    }

    /// The compiled model for `id`, compiling `bytes()` on a miss. Compilation happens outside
    /// the lock, so a slow compile does not block runs of other models.
    pub fn get_or_load(
        &self,
        id: &ModelId,
        bytes: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Result<Option<Arc<Model>>, InferenceError> {
        {
            let mut inner = self.inner.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some((model, used)) = inner.models.get_mut(id) {
                *used = tick;
                return Ok(Some(model.clone()));
            }
        }
        let Some(bytes) = bytes() else {
            return Ok(None);
        };
        let model = Arc::new(Model::load(&bytes)?);
        self.insert(*id, model.clone());
        Ok(Some(model))
    }

    /// Puts an already compiled model in the cache (after an upload).
    pub fn insert(&self, id: ModelId, model: Arc<Model>) {
        let mut inner = self.inner.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if inner.models.len() >= self.capacity
            && !inner.models.contains_key(&id)
            && let Some(oldest) = inner
                .models
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k)
        {
            inner.models.remove(&oldest);
        }
        inner.models.insert(id, (model, tick));
    }
}
