//! The node's side of the inference network.
//!
//! - [`LocalWorker`]: in-process workers, the default, so one command runs everything. Each
//!   runs a request on the blocking pool with the node's model runtime.
//! - [`RemoteWorker`]: a `pipe worker` process reached over HTTP (the protocol is documented
//!   in `pipe_worker`). Any failure to get a result (connection refused or reset,
//!   a non-200 answer, an unreadable body) is a [`WorkerError`], so the dispatcher retries the
//!   request on another worker and benches one that keeps failing.

use std::sync::Arc;

use alloy_primitives::Address;
use futures::future::BoxFuture;
use pipe_executor::InferenceCall;
use pipe_inference_pool::{Worker, WorkerError};
use pipe_primitives::{InferenceResult, Tasks, inference::ModelKind};

use pipe_worker::{ClientError, WorkerClient};

use crate::models::NodeModels;

/// One in-process worker.
#[derive(Debug)]
pub struct LocalWorker {
    name: String,
    models: Arc<NodeModels>,
    capacity: usize,
    /// Where model runs go: blocking work the node's shutdown waits for.
    tasks: Tasks,
}

impl LocalWorker {
    pub fn new(name: String, models: Arc<NodeModels>, capacity: usize, tasks: Tasks) -> Self {
        Self {
            name,
            models,
            capacity: capacity.max(1),
            tasks,
        }
    }

    /// `count` workers named `local-0`, `local-1`, ….
    pub fn pool(
        count: usize,
        models: &Arc<NodeModels>,
        capacity: usize,
        tasks: &Tasks,
    ) -> Vec<Arc<dyn Worker>> {
        (0..count)
            .map(|i| {
                Arc::new(Self::new(
                    format!("local-{i}"),
                    models.clone(),
                    capacity,
                    tasks.clone(),
                )) as Arc<dyn Worker>
            })
            .collect()
    }
}

impl Worker for LocalWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// One: the node holds one copy of each language model, which answers one run at a
    /// time, and the other slots stay free for model requests.
    fn llm_capacity(&self) -> usize {
        1
    }

    fn signer(&self) -> Option<Address> {
        self.models.signer()
    }

    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
        let models = self.models.clone();
        let run = self
            .tasks
            .blocking(move || models.compute_for_worker(&call));
        Box::pin(async move {
            run.await
                .map_err(|e| WorkerError::Failed(format!("worker task: {e}")))?
                .map_err(|e| WorkerError::Failed(e.to_string()))
        })
    }
}

/// A remote `pipe worker`, through the worker protocol's client.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    name: String,
    capacity: usize,
    client: WorkerClient,
}

impl RemoteWorker {
    /// Asks the worker at `url` what it is (`GET /v1/info`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = WorkerClient::connect(url).await?;
        Ok(Self {
            name: format!("{}@{}", client.info().name, client.url()),
            capacity: client.info().capacity.max(1),
            client,
        })
    }
}

impl Worker for RemoteWorker {
    fn name(&self) -> &str {
        &self.name
    }

    /// Another machine's word: sampled VANILLA results are run again on the node.
    fn audited(&self) -> bool {
        true
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// What it said it runs (`GET /v1/info`).
    fn runs(&self, kind: ModelKind) -> bool {
        self.client.info().kinds.contains(&kind)
    }

    fn llm_capacity(&self) -> usize {
        self.client.info().llm_capacity.clamp(1, self.capacity)
    }

    fn signer(&self) -> Option<Address> {
        self.client.signer()
    }

    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
        let result = self.client.infer(call.request.clone());
        Box::pin(async move {
            result.await.map_err(|e| match e {
                ClientError::Unreachable(m) => WorkerError::Unreachable(m),
                ClientError::Failed(m) => WorkerError::Failed(m),
            })
        })
    }
}

/// Audits remote workers' results by running the request on the node's own runtime (tract
/// is deterministic: same model and inputs, same bytes).
#[derive(Debug)]
pub struct LocalAuditor(pub Arc<NodeModels>);

impl pipe_inference_pool::Auditor for LocalAuditor {
    fn recompute(&self, call: &InferenceCall) -> Result<InferenceResult, String> {
        self.0.compute_for_worker(call).map_err(|e| e.to_string())
    }
}
