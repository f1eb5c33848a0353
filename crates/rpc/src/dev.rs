//! Dev-node controls, as anvil and hardhat name them: on the dev chain only, refused
//! elsewhere with a clear error.
//!
//! Served so far: mining on request (`evm_mine`, `anvil_mine`, `hardhat_mine`). A mined block
//! is an ordinary block, proposed and finalized like the sealer's own, so a follower and
//! `pipe replay` verify it as any other. Controls that edit state or time (`anvil_setBalance`,
//! `evm_increaseTime`, snapshots) are not served yet: each needs a way to commit its edit that
//! replay can check.

use alloy_primitives::U256;
use jsonrpsee::proc_macros::rpc;

use crate::{RpcError, error::RpcResult, eth::Api};

/// Most blocks one `anvil_mine` / `hardhat_mine` may seal.
pub const MAX_MINE: u64 = 1_000;

/// What the dev chain's driver offers the RPC.
pub trait DevControls: Send + Sync {
    /// Seals one block now, with what is ready; its number.
    fn mine(&self) -> Result<u64, String>;
}

#[rpc(server)]
pub trait DevApi {
    /// One block now (anvil's answer: `"0x0"`). A timestamp argument is refused.
    #[method(name = "evm_mine")]
    async fn evm_mine(&self, timestamp: Option<serde_json::Value>) -> RpcResult<String>;
    /// `blocks` blocks now (default 1); the interval between their timestamps is refused.
    #[method(name = "anvil_mine", aliases = ["hardhat_mine"])]
    async fn anvil_mine(&self, blocks: Option<U256>, interval: Option<U256>) -> RpcResult<()>;
}

impl Api {
    fn controls(&self) -> Result<std::sync::Arc<dyn DevControls>, RpcError> {
        self.node.dev.get().cloned().ok_or_else(|| {
            RpcError::Unsupported(
                "dev-node controls are served on the dev chain only (pipe node --dev)".into(),
            )
        })
    }

    async fn mine(&self, blocks: u64) -> Result<(), RpcError> {
        let controls = self.controls()?;
        self.node
            .tasks
            .blocking(move || {
                for _ in 0..blocks {
                    controls.mine()?;
                }
                Ok::<_, String>(())
            })
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(|e| RpcError::Internal(format!("mining failed: {e}")))
    }
}

#[jsonrpsee::core::async_trait]
impl DevApiServer for Api {
    async fn evm_mine(&self, timestamp: Option<serde_json::Value>) -> RpcResult<String> {
        if timestamp.is_some_and(|t| !t.is_null()) {
            return Err(RpcError::Unsupported(
                "evm_mine with a timestamp is not supported: blocks take the node's clock".into(),
            )
            .into());
        }
        self.mine(1).await?;
        Ok("0x0".into())
    }

    async fn anvil_mine(&self, blocks: Option<U256>, interval: Option<U256>) -> RpcResult<()> {
        if interval.is_some_and(|i| !i.is_zero()) {
            return Err(RpcError::Unsupported(
                "anvil_mine with an interval is not supported: blocks take the node's clock (one second apart at least)".into(),
            )
            .into());
        }
        let blocks = blocks.unwrap_or(U256::from(1));
        if blocks > U256::from(MAX_MINE) {
            return Err(
                RpcError::LimitExceeded(format!("at most {MAX_MINE} blocks per call")).into(),
            );
        }
        self.mine(blocks.to()).await?;
        Ok(())
    }
}
