//! A node's connection to a remote worker.

use std::time::Duration;

use alloy_primitives::{Address, Bytes};
use pipe_primitives::InferenceResult;

use crate::protocol::{InferRequest, WorkerInfo};

/// Why a remote worker gave no result. Either way the node retries elsewhere; the difference
/// is only in its logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The connection failed: refused, reset, timed out.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The worker answered, but not with a result.
    #[error("{0}")]
    Failed(String),
}

/// A remote worker, as `GET /v1/info` described it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    /// Base URL, without a trailing slash.
    url: String,
    info: WorkerInfo,
    client: reqwest::Client,
}

impl WorkerClient {
    /// Asks the worker at `url` what it is.
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
        Ok(Self { url, info, client })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn info(&self) -> &WorkerInfo {
        &self.info
    }

    /// The address TEE results are signed with, if the worker serves TEE.
    pub fn signer(&self) -> Option<Address> {
        self.info.signer
    }

    /// Sends `abi.encode(request)` and reads the result. The caller checks the result (its
    /// key, its attestation): a worker's word is not taken on trust.
    pub fn infer(
        &self,
        request: Bytes,
    ) -> impl Future<Output = Result<InferenceResult, ClientError>> + Send + 'static {
        let request = self
            .client
            .post(format!("{}/v1/infer", self.url))
            .json(&InferRequest { request });
        async move {
            let response = request
                .send()
                .await
                .map_err(|e| ClientError::Unreachable(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                let body = response.text().await.unwrap_or_default();
                return Err(ClientError::Failed(format!("HTTP {status}: {body}")));
            }
            response
                .json::<InferenceResult>()
                .await
                .map_err(|e| ClientError::Failed(format!("unreadable result: {e}")))
        }
    }
}
