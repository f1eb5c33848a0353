//! Dev-node controls, as anvil and hardhat name them: on the dev chain only, refused
//! elsewhere with a clear error.
//!
//! Served: mining on request (`evm_mine` with an optional timestamp, `anvil_mine` /
//! `hardhat_mine` with an optional interval), the clock (`evm_increaseTime`,
//! `evm_setNextBlockTimestamp`), when blocks are sealed (`anvil_setAutomine` /
//! `evm_setAutomine`, `anvil_getAutomine` / `hardhat_getAutomine`, `anvil_setIntervalMining`)
//! and `anvil_nodeInfo`. Every block they make is an ordinary block, proposed and finalized
//! like the sealer's own: a timestamp is a header field that replay checks only to be after
//! the parent's, so `pipe replay` verifies these blocks as any other. A follower also refuses
//! blocks more than 15 s ahead of its own clock: after the clock is moved forward, it waits
//! until its clock gets there. Controls
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

/// The timestamp of a block mined on request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MineAt {
    /// The dev clock.
    Clock,
    /// This timestamp (after the head's).
    Exactly(u64),
    /// This many seconds after the parent's.
    AfterParent(u64),
}

/// Largest timestamp or number of seconds the controls take (about 8 900 years): no
/// arithmetic on it overflows, in seconds or in milliseconds.
pub const MAX_SECONDS: u64 = 1 << 38;

/// What the dev chain's driver offers the RPC.
pub trait DevControls: Send + Sync {
    /// Seals one block now, with what is ready, at `at`; its number.
    fn mine(&self, at: MineAt) -> Result<u64, String>;
    /// Moves the clock forward (at most [`MAX_SECONDS`]); the total offset in seconds.
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

/// A number of seconds or a timestamp, at most [`MAX_SECONDS`].
fn bounded_seconds(v: &Value, what: &str) -> Result<u64, RpcError> {
    let n = whole(v, what)?;
    if n > MAX_SECONDS {
        return Err(RpcError::InvalidParams(format!(
            "{what}: {n} is past {MAX_SECONDS}"
        )));
    }
    Ok(n)
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

    /// Seals `blocks` blocks, the first at `first`, each later one `interval` seconds after
    /// the one before when given.
    /// Switches how blocks are sealed, off the async workers: the switch waits for a seal
    /// under way to end.
    async fn set_mining(
        &self,
        controls: std::sync::Arc<dyn DevControls>,
        mining: Mining,
    ) -> Result<(), RpcError> {
        self.node
            .tasks
            .blocking(move || controls.set_mining(mining))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))
    }

    async fn mine(
        &self,
        blocks: u64,
        first: MineAt,
        interval: Option<u64>,
    ) -> Result<(), RpcError> {
        let controls = self.controls()?;
        self.node
            .tasks
            .blocking(move || {
                for i in 0..blocks {
                    let at = match interval {
                        Some(step) if i > 0 => MineAt::AfterParent(step.max(1)),
                        _ if i == 0 => first,
                        _ => MineAt::Clock,
                    };
                    controls.mine(at)?;
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
        let at = match optional(timestamp, "timestamp")? {
            Some(t) if t > MAX_SECONDS => {
                return Err(RpcError::InvalidParams(format!(
                    "timestamp {t} is past {MAX_SECONDS}"
                ))
                .into());
            }
            Some(t) if t <= controls.head_timestamp() => {
                return Err(RpcError::InvalidParams(format!(
                    "timestamp {t} is not after the head block's timestamp {}",
                    controls.head_timestamp()
                ))
                .into());
            }
            Some(t) => MineAt::Exactly(t),
            None => MineAt::Clock,
        };
        self.mine(1, at, None).await?;
        Ok("0x0".into())
    }

    async fn anvil_mine(&self, blocks: Option<Value>, interval: Option<Value>) -> RpcResult<()> {
        let blocks = optional(blocks, "blocks")?.unwrap_or(1);
        let interval = interval
            .filter(|v| !v.is_null())
            .map(|v| bounded_seconds(&v, "interval"))
            .transpose()?
            .filter(|i| *i > 0);
        if blocks > MAX_MINE {
            return Err(
                RpcError::LimitExceeded(format!("at most {MAX_MINE} blocks per call")).into(),
            );
        }
        self.mine(blocks, MineAt::Clock, interval).await?;
        Ok(())
    }

    async fn increase_time(&self, seconds: Value) -> RpcResult<i64> {
        let seconds = bounded_seconds(&seconds, "seconds")?;
        Ok(self.controls()?.increase_time(seconds))
    }

    async fn set_next_block_timestamp(&self, timestamp: Value) -> RpcResult<()> {
        let t = bounded_seconds(&timestamp, "timestamp")?;
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
        let next = match (on, controls.mining()) {
            (true, _) => Some(Mining::Auto),
            // Interval mining goes on without automine, as on anvil.
            (false, Mining::Auto) => Some(Mining::Manual),
            (false, _) => None,
        };
        if let Some(mining) = next {
            self.set_mining(controls, mining).await?;
        }
        Ok(())
    }

    async fn set_interval_mining(&self, seconds: Value) -> RpcResult<()> {
        let s = whole(&seconds, "seconds")?;
        if s > u64::from(u32::MAX) {
            return Err(RpcError::InvalidParams(format!("interval {s} s is too long")).into());
        }
        let controls = self.controls()?;
        let mining = if s == 0 {
            Mining::Manual
        } else {
            Mining::Interval(s)
        };
        self.set_mining(controls, mining).await?;
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
