//! Dev-node controls, as anvil and hardhat name them: on the dev chain only, refused
//! elsewhere with a clear error.
//!
//! Served: mining on request (`evm_mine` with an optional timestamp, `anvil_mine` /
//! `hardhat_mine` with an optional interval), the clock (`evm_increaseTime`,
//! `evm_setNextBlockTimestamp`), when blocks are sealed (`anvil_setAutomine` /
//! `evm_setAutomine`, `anvil_getAutomine` / `hardhat_getAutomine`, `anvil_setIntervalMining`)
//! and `anvil_nodeInfo`. Every block they make is an ordinary block, proposed and finalized
//! like the sealer's own: a timestamp is a header field that replay checks only to be after
//! the parent's, so a follower and `pipe replay` verify these blocks as any other. Controls
//! that edit state (`anvil_setBalance`, `anvil_setCode`, snapshots) are not served: each
//! needs its edit committed in a block that replay can check, which the block format has no
//! place for yet.

use jsonrpsee::proc_macros::rpc;
use serde_json::Value;

use crate::{RpcError, error::RpcResult, eth::Api};

/// Most blocks one `anvil_mine` / `hardhat_mine` may seal.
pub const MAX_MINE: u64 = 1_000;

/// When the dev chain seals, as the controls see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mining {
    /// As soon as transactions are ready (anvil's automine).
    Auto,
    /// Every this many seconds.
    Interval(u64),
    /// Only on `evm_mine`.
    Manual,
}

/// What the dev chain's driver offers the RPC.
pub trait DevControls: Send + Sync {
    /// Seals one block now, with what is ready; its number.
    fn mine(&self) -> Result<u64, String>;
    /// Moves the clock forward; the total offset in seconds.
    fn increase_time(&self, seconds: u64) -> i64;
    /// The next block's timestamp; refused unless after the head's.
    fn set_next_timestamp(&self, timestamp: u64) -> Result<(), String>;
    /// The head block's timestamp.
    fn head_timestamp(&self) -> u64;
    fn mining(&self) -> Mining;
    fn set_mining(&self, mining: Mining);
}

#[rpc(server)]
pub trait DevApi {
    /// One block now, at `timestamp` if given (anvil's answer: `"0x0"`).
    #[method(name = "evm_mine")]
    async fn evm_mine(&self, timestamp: Option<Value>) -> RpcResult<String>;
    /// `blocks` blocks now (default 1), each `interval` seconds after the one before if given.
    #[method(name = "anvil_mine", aliases = ["hardhat_mine"])]
    async fn anvil_mine(&self, blocks: Option<Value>, interval: Option<Value>) -> RpcResult<()>;
    /// Moves the chain's clock forward by `seconds`; the total offset (a JSON number).
    #[method(name = "evm_increaseTime", aliases = ["anvil_increaseTime"])]
    async fn increase_time(&self, seconds: Value) -> RpcResult<i64>;
    /// The next block's timestamp (after the head's).
    #[method(name = "evm_setNextBlockTimestamp", aliases = ["anvil_setNextBlockTimestamp"])]
    async fn set_next_block_timestamp(&self, timestamp: Value) -> RpcResult<()>;
    #[method(name = "anvil_getAutomine", aliases = ["hardhat_getAutomine"])]
    async fn get_automine(&self) -> RpcResult<bool>;
    /// Automine on: a block as soon as transactions are ready. Off: blocks on `evm_mine`
    /// only (or on the interval, if interval mining is on).
    #[method(name = "anvil_setAutomine", aliases = ["evm_setAutomine"])]
    async fn set_automine(&self, on: bool) -> RpcResult<()>;
    /// A block every `seconds` (0: off, blocks on `evm_mine` only).
    #[method(name = "anvil_setIntervalMining", aliases = ["evm_setIntervalMining"])]
    async fn set_interval_mining(&self, seconds: Value) -> RpcResult<()>;
    /// The head, the hardfork and the fee environment, in anvil's shape.
    #[method(name = "anvil_nodeInfo")]
    async fn node_info(&self) -> RpcResult<Value>;
}

/// A whole number as clients send it: a JSON number, or a hex (`0x…`) or decimal string.
fn whole(v: &Value, what: &str) -> Result<u64, RpcError> {
    let bad = || RpcError::InvalidParams(format!("{what}: expected a whole number, got {v}"));
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16).map_err(|_| bad()),
            None => s.parse().map_err(|_| bad()),
        },
        _ => Err(bad()),
    }
}

/// `v` as a whole number, unless it is absent or null.
fn optional(v: Option<Value>, what: &str) -> Result<Option<u64>, RpcError> {
    v.filter(|v| !v.is_null())
        .map(|v| whole(&v, what))
        .transpose()
}

impl Api {
    fn controls(&self) -> Result<std::sync::Arc<dyn DevControls>, RpcError> {
        self.node.dev.get().cloned().ok_or_else(|| {
            RpcError::Unsupported(
                "dev-node controls are served on the dev chain only (pipe node --dev)".into(),
            )
        })
    }

    /// Seals `blocks` blocks, each `interval` seconds after the one before when given.
    async fn mine(&self, blocks: u64, interval: Option<u64>) -> Result<(), RpcError> {
        let controls = self.controls()?;
        self.node
            .tasks
            .blocking(move || {
                for i in 0..blocks {
                    if let Some(step) = interval
                        && i > 0
                    {
                        controls.set_next_timestamp(controls.head_timestamp() + step.max(1))?;
                    }
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
    async fn evm_mine(&self, timestamp: Option<Value>) -> RpcResult<String> {
        let controls = self.controls()?;
        if let Some(t) = optional(timestamp, "timestamp")? {
            controls
                .set_next_timestamp(t)
                .map_err(RpcError::InvalidParams)?;
        }
        self.mine(1, None).await?;
        Ok("0x0".into())
    }

    async fn anvil_mine(&self, blocks: Option<Value>, interval: Option<Value>) -> RpcResult<()> {
        let blocks = optional(blocks, "blocks")?.unwrap_or(1);
        let interval = optional(interval, "interval")?.filter(|i| *i > 0);
        if blocks > MAX_MINE {
            return Err(
                RpcError::LimitExceeded(format!("at most {MAX_MINE} blocks per call")).into(),
            );
        }
        self.mine(blocks, interval).await?;
        Ok(())
    }

    async fn increase_time(&self, seconds: Value) -> RpcResult<i64> {
        let seconds = whole(&seconds, "seconds")?;
        Ok(self.controls()?.increase_time(seconds))
    }

    async fn set_next_block_timestamp(&self, timestamp: Value) -> RpcResult<()> {
        let t = whole(&timestamp, "timestamp")?;
        self.controls()?
            .set_next_timestamp(t)
            .map_err(RpcError::InvalidParams)?;
        Ok(())
    }

    async fn get_automine(&self) -> RpcResult<bool> {
        Ok(self.controls()?.mining() == Mining::Auto)
    }

    async fn set_automine(&self, on: bool) -> RpcResult<()> {
        let controls = self.controls()?;
        match (on, controls.mining()) {
            (true, _) => controls.set_mining(Mining::Auto),
            // Interval mining goes on without automine, as on anvil.
            (false, Mining::Auto) => controls.set_mining(Mining::Manual),
            (false, _) => {}
        }
        Ok(())
    }

    async fn set_interval_mining(&self, seconds: Value) -> RpcResult<()> {
        let seconds = whole(&seconds, "seconds")?;
        self.controls()?.set_mining(if seconds == 0 {
            Mining::Manual
        } else {
            Mining::Interval(seconds)
        });
        Ok(())
    }

    async fn node_info(&self) -> RpcResult<Value> {
        self.controls()?;
        let head = self.head();
        let h = &head.header;
        let base_fee = self.next_base_fee();
        Ok(serde_json::json!({
            "currentBlockNumber": format!("{:#x}", h.number),
            "currentBlockTimestamp": h.timestamp,
            "currentBlockHash": head.hash,
            "hardFork": "Osaka",
            "transactionOrder": "fees",
            "environment": {
                "baseFee": format!("{base_fee:#x}"),
                "chainId": self.node.executor.config().chain_id,
                "gasLimit": format!("{:#x}", h.gas_limit),
                "gasPrice": format!("{:#x}", base_fee + crate::eth::SUGGESTED_TIP),
            },
            "forkConfig": {"forkUrl": null, "forkBlockNumber": null, "forkRetryBackoff": null},
        }))
    }
}
