//! In-process inference workers: the default inference network, so one command runs
//! everything. Each runs a request on the blocking pool with the node's model runtime.

use std::sync::Arc;

use futures::future::BoxFuture;
use pipe_dispatcher::{Worker, WorkerError};
use pipe_executor::InferenceCall;
use pipe_primitives::InferenceResult;

use crate::models::NodeModels;

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
