//! The worker's HTTP server: serves [`crate::protocol`] until told to stop.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::Bytes;
use alloy_signer_local::PrivateKeySigner;
use axum::{
    Router,
    body::Bytes as Body,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use parking_lot::Mutex;
use pipe_abi::{decode_encoded_request, requested_model};
// Language models kept in memory: LOADED_LLMS (a run in progress keeps its model alive past
// eviction).
use pipe_primitives::inference::{LOADED_LLMS, ModelId, ModelKind, ModelMeta};
use serde::Serialize;
use tokio::sync::{OnceCell, Semaphore};
use tracing::{info, warn};

use crate::{
    protocol::{InferRequest, WorkerInfo},
    run::{Runtime, run_call},
};

/// Bytes of a model file asked for at once (the node's chunk bound).
const FETCH_CHUNK: usize = 2 << 20;

/// Largest request body accepted: a request the precompile accepts is at most 1 MiB.
const MAX_BODY: usize = 2 << 20;

/// How `pipe worker` runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub name: String,
    /// JSON-RPC URL of the node models are fetched from.
    pub node: String,
    pub listen: SocketAddr,
    /// Requests run at once.
    pub capacity: usize,
    /// Signs TEE results.
    pub key: Option<PrivateKeySigner>,
    /// Added to every model run (the heavy-model stand-in, as on the node).
    pub latency: Duration,
    /// A run still going after this long stops (the node has stopped waiting for it) and the
    /// request is answered `503`, so the node retries it elsewhere.
    pub run_timeout: Duration,
    /// The kinds of model it runs; a request for another kind is refused before its model is
    /// fetched.
    pub kinds: Vec<ModelKind>,
    /// Language-model runs at once, within `capacity`.
    pub llm_capacity: usize,
}

#[derive(Debug)]
struct Loaded {
    meta: ModelMeta,
    model: Runtime,
}

struct Worker {
    options: WorkerOptions,
    client: reqwest::Client,
    /// One cell per model: concurrent first requests share one fetch.
    models: Mutex<HashMap<ModelId, Arc<OnceCell<Arc<Loaded>>>>>,
    /// The language models in `models`, the most recently used last.
    llms: Mutex<Vec<ModelId>>,
    /// Bounds the runs at once to the advertised capacity.
    slots: Semaphore,
    /// Bounds the language-model runs at once to the advertised `llm_capacity`.
    llm_slots: Semaphore,
}

/// Why a request got no result.
#[derive(Debug, thiserror::Error)]
enum ServeError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match self {
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, self.to_string()).into_response()
    }
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

impl Worker {
    fn info(&self) -> WorkerInfo {
        WorkerInfo {
            name: self.options.name.clone(),
            capacity: self.options.capacity,
            signer: self.options.key.as_ref().map(|k| k.address()),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kinds: self.options.kinds.clone(),
            llm_capacity: self.options.llm_capacity,
            loaded: self.llms.lock().clone(),
        }
    }

    async fn model(&self, id: ModelId) -> Result<Arc<Loaded>, ServeError> {
        let cell = self.models.lock().entry(id).or_default().clone();
        // A failed fetch leaves the cell empty: the next request tries again.
        let loaded = cell
            .get_or_try_init(|| self.fetch(id))
            .await
            .cloned()
            .map_err(ServeError::Unavailable)?;
        if loaded.meta.kind == ModelKind::Llm {
            self.used_llm(id);
        }
        Ok(loaded)
    }

    /// Language model `id` was just used: the least recently used beyond [`LOADED_LLMS`]
    /// leaves memory.
    fn used_llm(&self, id: ModelId) {
        let mut llms = self.llms.lock();
        llms.retain(|m| *m != id);
        llms.push(id);
        while llms.len() > LOADED_LLMS {
            let old = llms.remove(0);
            self.models.lock().remove(&old);
            info!(target: "pipe::worker", id = %old, "language model unloaded");
        }
    }

    /// Fetches, checks and compiles model `id` from the node.
    async fn fetch(&self, id: ModelId) -> Result<Arc<Loaded>, String> {
        let meta: Option<ModelMeta> = self.rpc("pipe_getModel", serde_json::json!([id])).await?;
        let meta = meta.ok_or_else(|| format!("the node has no model {id}"))?;
        if !self.options.kinds.contains(&meta.kind) {
            return Err(format!(
                "model {id} is {} and this worker runs {}",
                meta.kind.as_str(),
                kinds_text(&self.options.kinds)
            ));
        }
        // In chunks: a language model is hundreds of MB, more than one response should carry.
        let size = usize::try_from(meta.size_bytes)
            .map_err(|_| format!("model {id} is too large for this machine"))?;
        let mut bytes = Vec::with_capacity(size.min(1 << 30));
        while bytes.len() < size {
            let chunk: Option<Bytes> = self
                .rpc(
                    "pipe_getModelFileChunk",
                    serde_json::json!([
                        id,
                        format!("{:#x}", bytes.len()),
                        format!("{FETCH_CHUNK:#x}")
                    ]),
                )
                .await?;
            let chunk = chunk.ok_or_else(|| format!("the node has no file for model {id}"))?;
            if chunk.is_empty() {
                return Err(format!(
                    "the node's file for model {id} ends at {} of {size} bytes",
                    bytes.len()
                ));
            }
            bytes.extend_from_slice(&chunk);
        }
        if ModelId::of(&bytes) != id {
            return Err(format!(
                "the node sent bytes for model {id} that hash to {}",
                ModelId::of(&bytes)
            ));
        }
        let load_meta = meta.clone();
        let model = tokio::task::spawn_blocking(move || Runtime::load(&load_meta, &bytes))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("model {id}: {e}"))?;
        info!(target: "pipe::worker", %id, name = %meta.name, "model fetched");
        Ok(Arc::new(Loaded { meta, model }))
    }

    async fn rpc<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> Result<T, String> {
        let body = serde_json::json!({
            "jsonrpc": "2.0", "id": 1, "method": method, "params": params
        });
        let response: serde_json::Value = self
            .client
            .post(&self.options.node)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach the node at {}: {e}", self.options.node))?
            .json()
            .await
            .map_err(|e| format!("{method}: unreadable answer: {e}"))?;
        if let Some(err) = response.get("error") {
            return Err(format!("{method}: {err}"));
        }
        serde_json::from_value(response.get("result").cloned().unwrap_or_default())
            .map_err(|e| format!("{method}: {e}"))
    }

    async fn infer(&self, body: &[u8]) -> Result<Response, ServeError> {
        let request: InferRequest = serde_json::from_slice(body)
            .map_err(|e| ServeError::BadRequest(format!("body: {e}")))?;
        let id = requested_model(&request.request).map_err(ServeError::BadRequest)?;
        let loaded = self.model(id).await?;
        let meta = loaded.meta.clone();
        let call =
            decode_encoded_request(&request.request, &|m| (*m == meta.id).then(|| meta.clone()))
                .map_err(ServeError::BadRequest)?;
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        let _llm_slot = match meta.kind {
            ModelKind::Llm => Some(
                self.llm_slots
                    .acquire()
                    .await
                    .map_err(|e| ServeError::Unavailable(e.to_string()))?,
            ),
            ModelKind::Onnx => None,
        };
        let (latency, key) = (self.options.latency, self.options.key.clone());
        let started = Instant::now();
        let deadline = started + self.options.run_timeout;
        let result = tokio::task::spawn_blocking(move || {
            run_call(&loaded.model, &call, latency, key.as_ref(), Some(deadline))
        })
        .await
        .map_err(|e| ServeError::Unavailable(format!("run: {e}")))?
        .map_err(|e| ServeError::Unavailable(e.to_string()))?;
        tracing::debug!(target: "pipe::worker", key = %result.key, ms = started.elapsed().as_millis() as u64, "computed");
        Ok(json(&result))
    }
}

/// `onnx and llm`, for messages.
pub fn kinds_text(kinds: &[ModelKind]) -> String {
    let names: Vec<&str> = kinds.iter().map(ModelKind::as_str).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(" and ")
    }
}

/// Binds `options.listen` and serves until `shutdown` resolves; returns the bound address.
pub async fn serve(
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let mut options = options;
    // Bounds as served and as `/v1/info` reports them: at least one slot, and no more
    // language-model slots than slots.
    options.capacity = options.capacity.max(1);
    options.llm_capacity = options.llm_capacity.clamp(1, options.capacity);
    let worker = Arc::new(Worker {
        slots: Semaphore::new(options.capacity),
        llm_slots: Semaphore::new(options.llm_capacity),
        llms: Mutex::default(),
        client: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
        models: Mutex::default(),
        options,
    });
    let app = Router::new()
        .route(
            "/v1/info",
            get(|State(w): State<Arc<Worker>>| async move { json(&w.info()) }),
        )
        .route(
            "/v1/infer",
            post(|State(w): State<Arc<Worker>>, body: Body| async move {
                match w.infer(&body).await {
                    Ok(r) => r,
                    Err(e) => {
                        warn!(target: "pipe::worker", error = %e, "request failed");
                        e.into_response()
                    }
                }
            }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(worker.clone());
    let listener = tokio::net::TcpListener::bind(worker.options.listen).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            warn!(target: "pipe::worker", error = %e, "server stopped");
        }
    });
    Ok((bound, handle))
}
