//! The node's side of the inference network.
//!
//! - [`LocalWorker`]: in-process workers, the default, so one command runs everything. Each
//!   runs a request on the blocking pool with the node's model runtime.
//! - [`RemoteWorker`]: a `pipe worker` process reached over HTTP (the protocol is documented
//!   in [`crate::worker_server`]). Any failure to get a result (connection refused or reset,
//!   a non-200 answer, an unreadable body) is a [`WorkerError`], so the dispatcher retries the
//!   request on another worker and benches one that keeps failing.

use std::{sync::Arc, time::Duration};

use alloy_primitives::Address;
use futures::future::BoxFuture;
use pipe_dispatcher::{Worker, WorkerError};
use pipe_executor::InferenceCall;
use pipe_primitives::InferenceResult;

use crate::{
    models::NodeModels,
    worker_server::{InferRequest, WorkerInfo},
};

/// One in-process worker.
#[derive(Debug)]
pub struct LocalWorker {
    name: String,
    models: Arc<NodeModels>,
    capacity: usize,
}

impl LocalWorker {
    pub fn new(name: String, models: Arc<NodeModels>, capacity: usize) -> Self {
        Self {
            name,
            models,
            capacity: capacity.max(1),
        }
    }

    /// `count` workers named `local-0`, `local-1`, ….
    pub fn pool(count: usize, models: &Arc<NodeModels>, capacity: usize) -> Vec<Arc<dyn Worker>> {
        (0..count)
            .map(|i| {
                Arc::new(Self::new(format!("local-{i}"), models.clone(), capacity))
                    as Arc<dyn Worker>
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

    fn signer(&self) -> Option<Address> {
        self.models.signer()
    }

    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
        let models = self.models.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || models.compute(&call))
                .await
                .map_err(|e| WorkerError::Failed(format!("worker task: {e}")))?
                .map_err(|e| WorkerError::Failed(e.to_string()))
        })
    }
}

/// A remote `pipe worker`.
#[derive(Debug, Clone)]
pub struct RemoteWorker {
    name: String,
    /// Base URL, without a trailing slash.
    url: String,
    capacity: usize,
    signer: Option<Address>,
    client: reqwest::Client,
}

impl RemoteWorker {
    /// Asks the worker at `url` what it is (`GET /v1/info`).
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let url = url.trim_end_matches('/').to_string();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let info: WorkerInfo = client
            .get(format!("{url}/v1/info"))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| anyhow::anyhow!("cannot reach the inference worker at {url}: {e}"))?
            .json()
            .await
            .map_err(|e| anyhow::anyhow!("inference worker at {url}: bad /v1/info: {e}"))?;
        Ok(Self {
            name: format!("{}@{url}", info.name),
            url,
            capacity: info.capacity.max(1),
            signer: info.signer,
            client,
        })
    }
}

impl Worker for RemoteWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn signer(&self) -> Option<Address> {
        self.signer
    }

    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
        let request = self
            .client
            .post(format!("{}/v1/infer", self.url))
            .json(&InferRequest {
                request: call.request.clone(),
            });
        Box::pin(async move {
            let response = request
                .send()
                .await
                .map_err(|e| WorkerError::Unreachable(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(WorkerError::Failed(format!("HTTP {status}: {body}")));
            }
            response
                .json::<InferenceResult>()
                .await
                .map_err(|e| WorkerError::Failed(format!("unreadable result: {e}")))
        })
    }
}
