//! The node's model service: its model store and inline inference, which answer the
//! precompile (as the executor's [`InferenceProvider`]) and the `pipe_` RPC namespace (as its
//! [`ModelRegistry`]).
//!
//! Files and metadata live in redb beside the chain ([`Store::put_model`]); metadata is also
//! kept in memory because the precompile looks a model up on every call. Compiled tract plans
//! are cached by id ([`ModelCache`]) so a model is compiled once, at upload or first use.
//!
//! Inline mode runs the model inside execution. For blocks it runs to completion: a block
//! must come out the same on every node, and the model's cost units (charged as gas before it
//! runs) and the operator allowlist (no loops) bound the work. For `eth_call` and
//! `eth_estimateGas` the run is bounded by a timeout and reverts when it expires.
//!
//! Faults are not facts: only what the model did with these inputs (an output, or its failure
//! on them) is committed. A model that cannot be had right now (its file unreadable, its plan
//! not compiled for lack of memory) gives no answer, so the transaction is left out of this
//! block and tried again in a later one, instead of reverting for good.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_signer_local::PrivateKeySigner;
use parking_lot::RwLock;
use pipe_executor::{InferenceCall, InferenceFailure, InferenceProvider, Purpose, failure_result};
use pipe_inference::{InferenceError, ModelCache};
use pipe_llm::LlmModel;
use pipe_primitives::{
    InferenceResult,
    inference::{MAX_OUTPUT_DECIMALS, ModelId, ModelKind, ModelMeta},
};
use pipe_rpc::{ModelRegistry, UploadError, UploadOptions};
use pipe_storage::Store;
use pipe_worker::run::{Runtime, failure, run_call};

pub mod offline;

/// Compiled models kept in memory.
const CACHE_MODELS: usize = 64;
/// Simulations whose timed-out runs may still be finishing in the background.
const MAX_DETACHED_RUNS: usize = 16;

/// The example models a dev chain starts with: (name, file).
pub const EXAMPLE_MODELS: &[(&str, &[u8])] = &[
    (
        "risk_logreg",
        include_bytes!("../../../fixtures/models/risk_logreg.onnx"),
    ),
    (
        "forecast_gbr",
        include_bytes!("../../../fixtures/models/forecast_gbr.onnx"),
    ),
    (
        "rf_classifier",
        include_bytes!("../../../fixtures/models/rf_classifier.onnx"),
    ),
    (
        "gb_classifier",
        include_bytes!("../../../fixtures/models/gb_classifier.onnx"),
    ),
    (
        "rf_regressor",
        include_bytes!("../../../fixtures/models/rf_regressor.onnx"),
    ),
    (
        "linreg",
        include_bytes!("../../../fixtures/models/linreg.onnx"),
    ),
    (
        "svr_rbf",
        include_bytes!("../../../fixtures/models/svr_rbf.onnx"),
    ),
    (
        "label_encoder",
        include_bytes!("../../../fixtures/models/label_encoder.onnx"),
    ),
    ("mlp", include_bytes!("../../../fixtures/models/mlp.onnx")),
    ("cnn", include_bytes!("../../../fixtures/models/cnn.onnx")),
    // A 1 M-parameter Llama trained on the King James Bible (scripts/make-dev-llm.sh), for
    // runLLMCompletion and runLLMChat out of the box.
    ("kjv", include_bytes!("../../../fixtures/models/kjv.gguf")),
];

/// The model store plus the inline runtime.
#[derive(Debug)]
pub struct NodeModels {
    store: Arc<Store>,
    metas: RwLock<HashMap<ModelId, ModelMeta>>,
    cache: ModelCache,
    /// Loaded language models, the most recently used last.
    llms: parking_lot::Mutex<Vec<(ModelId, Arc<LlmModel>)>>,
    simulation_timeout: Duration,
    /// How long a worker's run may take before it stops ([`NodeModels::compute_for_worker`]).
    run_timeout: Duration,
    /// Most bytes of model files the store may hold in all.
    store_limit: u64,
    detached: Arc<AtomicUsize>,
    /// Added to every model run: a stand-in for heavy models in tests and benchmarks, applied
    /// alike in inline mode and on workers.
    latency: Duration,
    /// Signs TEE results (inline mode and in-process workers); `None`: TEE is not served.
    signer: Option<PrivateKeySigner>,
}

impl NodeModels {
    /// Loads the metadata of every stored model.
    pub fn open(store: Arc<Store>, simulation_timeout: Duration) -> anyhow::Result<Self> {
        let metas = store.models()?.into_iter().map(|m| (m.id, m)).collect();
        Ok(Self {
            store,
            metas: RwLock::new(metas),
            cache: ModelCache::new(CACHE_MODELS),
            llms: Default::default(),
            simulation_timeout,
            run_timeout: Duration::from_secs(30),
            store_limit: u64::MAX,
            detached: Arc::default(),
            latency: Duration::ZERO,
            signer: None,
        })
    }

    /// Signs TEE results with `signer`, whose address the worker registry must list.
    pub fn with_signer(mut self, signer: Option<PrivateKeySigner>) -> Self {
        self.signer = signer;
        self
    }

    /// The address TEE results are signed by.
    pub fn signer(&self) -> Option<alloy_primitives::Address> {
        self.signer.as_ref().map(|s| s.address())
    }

    /// Worker runs stop after `timeout` ([`NodeModels::compute_for_worker`]); PIPE stops
    /// waiting for a worker then too (`--worker-timeout-ms`).
    pub fn with_run_timeout(mut self, timeout: Duration) -> Self {
        self.run_timeout = timeout;
        self
    }

    /// The store holds at most `bytes` of model files; an upload past it is refused.
    pub fn with_store_limit(mut self, bytes: u64) -> Self {
        self.store_limit = bytes;
        self
    }

    /// Makes every model run take `latency` longer (a stand-in for heavy models).
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Stores the example models that are not stored yet; returns their metadata by name.
    pub fn add_examples(&self) -> anyhow::Result<Vec<(String, ModelMeta)>> {
        let mut out = Vec::new();
        for (name, bytes) in EXAMPLE_MODELS {
            let options = UploadOptions {
                name: Some((*name).to_string()),
                ..Default::default()
            };
            let (meta, _) = self
                .upload(bytes, &options)
                .map_err(|e| anyhow::anyhow!("example model {name}: {e}"))?;
            out.push(((*name).to_string(), meta));
        }
        Ok(out)
    }

    /// The runtime for stored model `id`, loaded on first use.
    fn load(&self, id: &ModelId) -> Result<Runtime, InferenceFailure> {
        let unavailable = |e: String| InferenceFailure::Unavailable(e);
        let kind = self.model(id).map(|m| m.kind).unwrap_or_default();
        match kind {
            ModelKind::Onnx => self
                .cache
                .get_or_load(id, || self.store.model_bytes(id).ok().flatten())
                .map_err(|e| unavailable(e.to_string()))?
                .map(Runtime::Onnx)
                .ok_or_else(|| unavailable(format!("model {id} is not stored"))),
            ModelKind::Llm => self.load_llm(id).map(Runtime::Llm),
        }
    }

    fn load_llm(&self, id: &ModelId) -> Result<Arc<LlmModel>, InferenceFailure> {
        {
            let mut llms = self.llms.lock();
            if let Some(at) = llms.iter().position(|(m, _)| m == id) {
                let entry = llms.remove(at);
                let model = entry.1.clone();
                llms.push(entry);
                return Ok(model);
            }
        }
        // Loaded outside the lock: a large file takes seconds, and other models go on.
        let bytes = self
            .store
            .model_bytes(id)
            .map_err(|e| InferenceFailure::Unavailable(e.to_string()))?
            .ok_or_else(|| InferenceFailure::Unavailable(format!("model {id} is not stored")))?;
        let model = Arc::new(
            LlmModel::load(&bytes).map_err(|e| InferenceFailure::Unavailable(e.to_string()))?,
        );
        self.keep_llm(*id, model.clone());
        Ok(model)
    }

    fn keep_llm(&self, id: ModelId, model: Arc<LlmModel>) {
        let mut llms = self.llms.lock();
        llms.retain(|(m, _)| *m != id);
        if llms.len() >= pipe_primitives::inference::LOADED_LLMS {
            llms.remove(0);
        }
        llms.push((id, model));
    }

    /// Describes and stores a GGUF upload: a language model.
    fn upload_llm(
        &self,
        bytes: &[u8],
        options: &UploadOptions,
    ) -> Result<(ModelMeta, bool), UploadError> {
        if options.decimals.is_some() {
            return Err(UploadError::Invalid(
                "decimals do not apply to a language model (its answers are text)".into(),
            ));
        }
        let name = options.name.clone().unwrap_or_default();
        if name.len() > 256 {
            return Err(UploadError::Invalid("name longer than 256 bytes".into()));
        }
        let (model, meta) = pipe_llm::describe(bytes, &name, options.cost_units)
            .map_err(|e| UploadError::Invalid(e.to_string()))?;
        let fresh = self
            .store
            .put_model(&meta, bytes)
            .map_err(|e| UploadError::Storage(e.to_string()))?;
        self.keep_llm(meta.id, Arc::new(model));
        self.metas.write().insert(meta.id, meta.clone());
        Ok((meta, fresh))
    }
}

impl NodeModels {
    /// Runs `call` to completion: the committed result (an output, or the model's failure).
    /// `Err` only when the model cannot be had at all, which is not a fact about the request
    /// and must not be committed under PIPE (a worker retries elsewhere).
    pub fn compute(&self, call: &InferenceCall) -> Result<InferenceResult, InferenceFailure> {
        let model = self.load(&call.model.id)?;
        run_call(&model, call, self.latency, self.signer.as_ref(), None).map_err(failure)
    }

    /// [`NodeModels::compute`] for a worker: the run stops at [`NodeModels::run_timeout`]
    /// after it starts, between two nodes of its plan, so a run nobody waits for any more
    /// frees its core instead of running to its end. `Err(Timeout)` then: not a fact about
    /// the request, never committed (PIPE retries or gives up with the reason).
    pub fn compute_for_worker(
        &self,
        call: &InferenceCall,
    ) -> Result<InferenceResult, InferenceFailure> {
        let model = self.load(&call.model.id)?;
        let deadline = Instant::now() + self.run_timeout;
        run_call(
            &model,
            call,
            self.latency,
            self.signer.as_ref(),
            Some(deadline),
        )
        .map_err(|e| match e {
            InferenceError::Cancelled(_) => {
                InferenceFailure::Timeout(self.run_timeout.as_millis() as u64)
            }
            other => failure(other),
        })
    }

    /// How long a worker's run may take ([`NodeModels::with_run_timeout`]).
    pub fn run_timeout(&self) -> Duration {
        self.run_timeout
    }

    /// `compute` on a thread of its own, stopped at the simulation timeout.
    fn compute_bounded(&self, call: &InferenceCall) -> Result<InferenceResult, InferenceFailure> {
        // The caller stops waiting at the deadline, and the run stops itself there too
        // (between two nodes of its plan), so the thread ends soon after; a bounded number
        // of runs may still be finishing their last node.
        if self.detached.load(Ordering::Relaxed) >= MAX_DETACHED_RUNS {
            return Err(InferenceFailure::Model(
                "too many inferences still running".into(),
            ));
        }
        let runtime = self.load(&call.model.id)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = call.clone();
        let detached = self.detached.clone();
        let deadline = Instant::now() + self.simulation_timeout;
        detached.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name("pipe-simulate".into())
            .spawn(move || {
                let _ = tx.send(run_call(
                    &runtime,
                    &job,
                    Duration::ZERO,
                    None,
                    Some(deadline),
                ));
                detached.fetch_sub(1, Ordering::Relaxed);
            })
            .map_err(|e| InferenceFailure::Model(e.to_string()))?;
        let timeout = InferenceFailure::Timeout(self.simulation_timeout.as_millis() as u64);
        match rx.recv_timeout(self.simulation_timeout) {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(InferenceError::Cancelled(_))) | Err(_) => Err(timeout),
            Ok(Err(e)) => Err(failure(e)),
        }
    }

    /// Runs still going on their own threads after their caller stopped waiting.
    pub fn detached_runs(&self) -> usize {
        self.detached.load(Ordering::Relaxed)
    }
}

/// Inline inference: every request is answered by running the model now. For blocks a model
/// that cannot be loaded gives no answer (the transaction waits for a later block); for
/// `eth_call` the run is bounded in time and every failure is the call's revert reason.
impl InferenceProvider for NodeModels {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.metas.read().get(id).cloned()
    }

    fn infer(&self, call: &InferenceCall, purpose: Purpose) -> Option<InferenceResult> {
        match purpose {
            Purpose::Block => match self.compute(call) {
                Ok(result) => Some(result),
                // Not a fact about the request: never committed.
                Err(InferenceFailure::Unavailable(reason)) => {
                    tracing::warn!(target: "pipe::models", key = %call.key, %reason, "model unavailable; the transaction waits");
                    None
                }
                Err(e) => Some(failure_result(call.key, &e)),
            },
            Purpose::Simulation => Some(
                self.compute_bounded(call)
                    .unwrap_or_else(|e| failure_result(call.key, &e)),
            ),
        }
    }
}

impl NodeModels {
    fn stored_bytes(&self) -> u64 {
        self.metas.read().values().map(|m| m.size_bytes).sum()
    }

    /// Refuses a file the store has no room for.
    fn check_room(&self, len: usize) -> Result<(), UploadError> {
        let stored = self.stored_bytes();
        if stored.saturating_add(len as u64) > self.store_limit {
            return Err(UploadError::Invalid(format!(
                "the model store holds {stored} bytes and this file is {len}: the limit is {} (--max-model-store-mb)",
                self.store_limit
            )));
        }
        Ok(())
    }
}

impl ModelRegistry for NodeModels {
    fn upload(
        &self,
        bytes: &[u8],
        options: &UploadOptions,
    ) -> Result<(ModelMeta, bool), UploadError> {
        let id = ModelId::of(bytes);
        if pipe_llm::is_gguf(bytes) && self.model(&id).is_none() {
            return self
                .check_room(bytes.len())
                .and_then(|_| self.upload_llm(bytes, options));
        }
        if let Some(d) = options.decimals.filter(|&d| d > MAX_OUTPUT_DECIMALS) {
            return Err(UploadError::Invalid(format!(
                "decimals {d} above {MAX_OUTPUT_DECIMALS}"
            )));
        }
        if let Some(meta) = self.model(&id) {
            // The id is the content: a stored model's terms never change under its users.
            if options.decimals.is_some_and(|d| d != meta.decimals)
                || options.cost_units.is_some_and(|c| c > meta.cost_units)
            {
                return Err(UploadError::Invalid(format!(
                    "model {id} is already stored with decimals {} and {} cost units; a stored model's terms cannot change",
                    meta.decimals, meta.cost_units
                )));
            }
            return Ok((meta, false));
        }
        self.check_room(bytes.len())?;
        let opts = pipe_inference::UploadOptions {
            name: options.name.clone().unwrap_or_default(),
            decimals: options.decimals,
            cost_units: options.cost_units,
        };
        let (model, meta) = pipe_inference::describe(bytes, &opts)
            .map_err(|e| UploadError::Invalid(e.to_string()))?;
        let fresh = self
            .store
            .put_model(&meta, bytes)
            .map_err(|e| UploadError::Storage(e.to_string()))?;
        self.cache.insert(id, Arc::new(model));
        self.metas.write().insert(id, meta.clone());
        Ok((meta, fresh))
    }

    fn list(&self) -> Vec<ModelMeta> {
        let mut all: Vec<ModelMeta> = self.metas.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        all
    }

    fn get(&self, id: &ModelId) -> Option<ModelMeta> {
        self.model(id)
    }

    fn file_range(
        &self,
        id: &ModelId,
        offset: u64,
        len: usize,
    ) -> Result<Option<alloy_primitives::Bytes>, UploadError> {
        self.store
            .model_bytes_range(id, offset, len)
            .map(|b| b.map(Into::into))
            .map_err(|e| UploadError::Storage(e.to_string()))
    }

    fn room(&self) -> u64 {
        self.store_limit.saturating_sub(self.stored_bytes())
    }

    fn file(&self, id: &ModelId) -> Result<Option<alloy_primitives::Bytes>, UploadError> {
        self.store
            .model_bytes(id)
            .map(|b| b.map(Into::into))
            .map_err(|e| UploadError::Storage(e.to_string()))
    }
}

/// Calls a JSON-RPC method on a node.
async fn rpc_call(
    url: &str,
    method: &str,
    params: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let response: serde_json::Value = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the node at {url}: {e}"))?
        .json()
        .await?;
    if let Some(err) = response.get("error") {
        anyhow::bail!(
            "{}",
            err.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("node returned an error")
        );
    }
    Ok(response.get("result").cloned().unwrap_or_default())
}

/// `pipe model add`: uploads a file over `pipe_uploadModel`, or in chunks
/// (`pipe_uploadModelChunk`, `pipe_finishModelUpload`) when it is larger than one chunk.
pub async fn upload(url: &str, bytes: &[u8], options: &UploadOptions) -> anyhow::Result<ModelMeta> {
    use pipe_rpc::MAX_CHUNK_BYTES;
    if bytes.len() <= MAX_CHUNK_BYTES {
        let hex = alloy_primitives::hex::encode_prefixed(bytes);
        let result = rpc_call(url, "pipe_uploadModel", serde_json::json!([hex, options])).await?;
        return Ok(serde_json::from_value(result)?);
    }
    // A session id nobody else picks: the file's hash and this moment.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut seed = alloy_primitives::keccak256(bytes).to_vec();
    seed.extend_from_slice(&nanos.to_be_bytes());
    let session = alloy_primitives::keccak256(seed);
    for (i, chunk) in bytes.chunks(MAX_CHUNK_BYTES).enumerate() {
        let offset = (i * MAX_CHUNK_BYTES) as u64;
        let hex = alloy_primitives::hex::encode_prefixed(chunk);
        rpc_call(
            url,
            "pipe_uploadModelChunk",
            serde_json::json!([session, format!("{offset:#x}"), hex]),
        )
        .await?;
    }
    let result = rpc_call(
        url,
        "pipe_finishModelUpload",
        serde_json::json!([session, options]),
    )
    .await?;
    Ok(serde_json::from_value(result)?)
}

/// `pipe model list`.
pub async fn list(url: &str) -> anyhow::Result<Vec<ModelMeta>> {
    Ok(serde_json::from_value(
        rpc_call(url, "pipe_listModels", serde_json::json!([])).await?,
    )?)
}

/// A few human-readable lines about a model.
pub fn describe_meta(meta: &ModelMeta) -> String {
    let io = |specs: &[pipe_primitives::inference::IoSpec]| {
        specs
            .iter()
            .map(|s| {
                let dims: Vec<String> = s
                    .shape
                    .iter()
                    .map(|d| d.map(|n| n.to_string()).unwrap_or_else(|| "N".into()))
                    .collect();
                format!("{} {:?}[{}]", s.name, s.dtype, dims.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if let Some(llm) = &meta.llm {
        return format!(
            "id:         {}\nname:       {}\nkind:       llm ({})\nsize:       {} bytes\ncontext:    {} tokens\nmax tokens: {}\nparameters: {}\ncost units: {} per token",
            meta.id,
            meta.name,
            llm.architecture,
            meta.size_bytes,
            llm.context_length,
            llm.max_tokens,
            llm.parameters,
            meta.cost_units,
        );
    }
    format!(
        "id:         {}\nname:       {}\nkind:       onnx\nsize:       {} bytes\ninputs:     {}\noutputs:    {}\ndecimals:   {}\ncost units: {}\noperators:  {}",
        meta.id,
        meta.name,
        meta.size_bytes,
        io(&meta.inputs),
        io(&meta.outputs),
        meta.decimals,
        meta.cost_units,
        meta.operators.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model whose metadata is known but whose file cannot be had: a block gets no answer
    /// (the transaction waits), never a committed failure; `eth_call` reverts with the reason.
    #[test]
    fn an_unavailable_model_is_not_committed_as_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("chain.redb")).unwrap());
        let models = NodeModels::open(store, Duration::from_secs(1)).unwrap();
        let meta = ModelMeta {
            id: ModelId::of(b"never stored"),
            name: "ghost".into(),
            size_bytes: 12,
            inputs: vec![],
            outputs: vec![],
            decimals: 4,
            cost_units: 1,
            operators: vec![],
            kind: pipe_primitives::ModelKind::Onnx,
            llm: None,
        };
        models.metas.write().insert(meta.id, meta.clone());
        let call = InferenceCall {
            key: alloy_primitives::B256::repeat_byte(3),
            request: Default::default(),
            mode: pipe_primitives::inference::InferenceMode::Vanilla,
            model: meta,
            task: pipe_executor::inference::Task::Model {
                request: Default::default(),
                inputs: vec![],
            },
        };
        assert!(models.infer(&call, Purpose::Block).is_none());
        let simulated = models.infer(&call, Purpose::Simulation).unwrap();
        let reason = simulated.as_result().unwrap_err();
        assert!(reason.contains("not stored"), "{reason}");
    }

    /// A worker's run past its timeout stops and is a timeout, not the model's failure: it is
    /// never committed, and the run does not go on to its end (the stand-in latency here is
    /// 30 s; the answer comes at the 100 ms timeout).
    #[test]
    fn a_worker_run_past_its_timeout_stops_and_is_not_a_result() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("chain.redb")).unwrap());
        let models = NodeModels::open(store, Duration::from_secs(1))
            .unwrap()
            .with_latency(Duration::from_secs(30))
            .with_run_timeout(Duration::from_millis(100));
        let examples = models.add_examples().unwrap();
        let (_, linreg) = examples.iter().find(|(n, _)| n == "linreg").unwrap();
        let call = InferenceCall {
            key: alloy_primitives::B256::repeat_byte(4),
            request: Default::default(),
            mode: pipe_primitives::inference::InferenceMode::Vanilla,
            model: linreg.clone(),
            task: pipe_executor::inference::Task::Model {
                request: Default::default(),
                inputs: vec![pipe_primitives::inference::Tensor {
                    name: linreg.inputs[0].name.clone(),
                    shape: vec![1, 3],
                    data: pipe_primitives::inference::TensorData::Float32(vec![1.0, 2.0, 3.0]),
                }],
            },
        };
        let started = Instant::now();
        let err = models.compute_for_worker(&call).unwrap_err();
        assert!(matches!(err, InferenceFailure::Timeout(100)), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    /// The store is bounded in all: an upload that would take it past its limit is refused,
    /// and what is stored stays usable.
    #[test]
    fn the_model_store_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("chain.redb")).unwrap());
        let (_, linreg) = EXAMPLE_MODELS.iter().find(|(n, _)| *n == "linreg").unwrap();
        let (_, mlp) = EXAMPLE_MODELS.iter().find(|(n, _)| *n == "mlp").unwrap();
        let models = NodeModels::open(store, Duration::from_secs(1))
            .unwrap()
            .with_store_limit(linreg.len() as u64 + 16);
        let options = UploadOptions::default();
        assert_eq!(models.room(), linreg.len() as u64 + 16);
        let (meta, fresh) = models.upload(linreg, &options).unwrap();
        assert!(fresh);
        // What a chunked upload may still grow to.
        assert_eq!(models.room(), 16);
        let err = models.upload(mlp, &options).unwrap_err().to_string();
        assert!(err.contains("the limit is"), "{err}");
        assert_eq!(models.list(), vec![meta]);
        // The same file again is not a new byte.
        assert!(!models.upload(linreg, &options).unwrap().1);
    }

    /// A GGUF upload is a language model: stored with kind `llm` and its terms, answered
    /// through the same provider seam as ONNX models (blocks and simulations alike, the same
    /// bytes every run and after a restart), with a chat's tool calls read back out, and a
    /// prompt over the context a committed failure with the reason.
    #[test]
    fn language_models_store_answer_and_repeat() {
        use alloy_sol_types::SolCall;
        use pipe_executor::inference::{
            ChatMessage, LLMChatRequest, LLMCompletionRequest, ToolDefinition, decode_request,
            runLLMChatCall, runLLMCompletionCall,
        };
        use pipe_llm::test_utils::{CHATML_TEMPLATE, TinyShape, tiny_llama_gguf};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chain.redb");
        let shape = TinyShape {
            context: 512,
            ..Default::default()
        };
        let bytes = tiny_llama_gguf(shape, Some(CHATML_TEMPLATE));
        let models = NodeModels::open(
            Arc::new(Store::open(&path).unwrap()),
            Duration::from_secs(5),
        )
        .unwrap();
        let refused = models.upload(
            &bytes,
            &UploadOptions {
                decimals: Some(2),
                ..Default::default()
            },
        );
        assert!(matches!(refused, Err(UploadError::Invalid(e)) if e.contains("decimals")));
        let options = UploadOptions {
            name: Some("tiny".into()),
            ..Default::default()
        };
        let (meta, fresh) = models.upload(&bytes, &options).unwrap();
        assert!(fresh);
        assert_eq!(meta.kind, ModelKind::Llm);
        assert_eq!(meta.llm.as_ref().unwrap().context_length, 512);
        assert_eq!(models.list()[0].kind, ModelKind::Llm);
        let described = describe_meta(&meta);
        assert!(described.contains("kind:       llm (llama)"), "{described}");
        assert!(described.contains("context:    512 tokens"), "{described}");

        let completion = |prompt: &str, max_tokens: u32| {
            let data = runLLMCompletionCall {
                request: LLMCompletionRequest {
                    mode: 0,
                    modelCID: meta.id.to_string(),
                    prompt: prompt.into(),
                    max_tokens,
                    stop_sequence: vec![],
                    temperature: 0,
                },
            }
            .abi_encode();
            decode_request(&data, &|id| models.model(id)).unwrap()
        };
        let call = completion("hello world", 8);
        let block = models.infer(&call, Purpose::Block).unwrap();
        assert_eq!(models.infer(&call, Purpose::Simulation).unwrap(), block);
        let answer = runLLMCompletionCall::abi_decode_returns_validate(block.as_result().unwrap())
            .unwrap()
            .answer;
        assert!(!answer.is_empty());
        let long = completion(&"word ".repeat(600), 8);
        let over = models.infer(&long, Purpose::Block).unwrap();
        assert!(
            over.as_result().unwrap_err().contains("context"),
            "{over:?}"
        );

        let data = runLLMChatCall {
            request: LLMChatRequest {
                mode: 0,
                modelCID: meta.id.to_string(),
                messages: vec![ChatMessage {
                    role: "user".into(),
                    content: "What is the price of ETH?".into(),
                    name: String::new(),
                    tool_call_id: String::new(),
                    tool_calls: vec![],
                }],
                tools: vec![ToolDefinition {
                    description: "price".into(),
                    name: "price".into(),
                    parameters: "{}".into(),
                }],
                tool_choice: "auto".into(),
                max_tokens: 6,
                stop_sequence: vec![],
                temperature: 50,
            },
        }
        .abi_encode();
        let chat = decode_request(&data, &|id| models.model(id)).unwrap();
        let chatted = models.infer(&chat, Purpose::Block).unwrap();
        let response =
            runLLMChatCall::abi_decode_returns_validate(chatted.as_result().unwrap()).unwrap();
        assert_eq!(response.message.role, "assistant");
        assert!(["stop", "length"].contains(&response.finish_reason.as_str()));

        // Reopened: the model comes back from the store and answers the same.
        drop(models);
        let models = NodeModels::open(
            Arc::new(Store::open(&path).unwrap()),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(models.model(&meta.id).unwrap(), meta);
        assert_eq!(models.infer(&call, Purpose::Block).unwrap(), block);
        assert_eq!(models.infer(&chat, Purpose::Block).unwrap(), chatted);
    }
}
