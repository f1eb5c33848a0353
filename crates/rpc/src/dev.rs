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
//! until its clock gets there.
//!
//! State edits (`anvil_setBalance`, `anvil_setCode`, `anvil_setStorageAt`, `anvil_setNonce`
//! and their `hardhat_` names, `evm_snapshot` / `evm_revert`, `anvil_reset`,
//! `anvil_dumpState` / `anvil_loadState`) are committed, not applied in place: each call seals
//! a block that carries the edits and no transaction, whatever the mining mode, and whose
//! header commits to them ([`pipe_primitives::edits`]). A follower and `pipe replay` apply
//! the same edits from the block and check the same state root. The chain only grows: a
//! revert is a block that puts the old values back (read from the archive), so block numbers
//! and mined transactions stay, unlike anvil, which forgets the blocks after the snapshot.
//!
//! Impersonation (`anvil_impersonateAccount`, `anvil_stopImpersonatingAccount`,
//! `anvil_autoImpersonateAccount`): `eth_sendTransaction` from an impersonated address sends
//! a transaction that carries no real signature; the block that includes it lists its sender
//! (see [`pipe_primitives::edits`]), so replay knows who sent it and the header commits to it.

use std::io::{Read, Write};

use alloy_primitives::{Address, B256, Bytes, U256};
use jsonrpsee::proc_macros::rpc;
use pipe_primitives::{StateEdit, StateEdits};
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
    /// Commits `edits` now, in a block of their own; its number.
    fn edit(&self, edits: StateEdits) -> Result<u64, String>;
    /// Remembers the head's state; the snapshot's id.
    fn snapshot(&self) -> u64;
    /// Puts the state back as it was at snapshot `id` (which is used up, with later ones);
    /// false when there is no such snapshot.
    fn revert(&self, id: u64) -> Result<bool, String>;
    /// Puts genesis's state back and forgets every snapshot.
    fn reset(&self) -> Result<(), String>;
}

/// Most accounts and slots `anvil_dumpState` answers with.
pub const MAX_DUMP: usize = 1_000_000;
/// Largest decompressed state `anvil_loadState` reads.
pub const MAX_LOAD_BYTES: u64 = 64 * 1024 * 1024;

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
    #[method(name = "anvil_setBalance", aliases = ["hardhat_setBalance"])]
    async fn set_balance(&self, address: Address, balance: U256) -> RpcResult<()>;
    #[method(name = "anvil_setCode", aliases = ["hardhat_setCode"])]
    async fn set_code(&self, address: Address, code: Bytes) -> RpcResult<()>;
    /// anvil answers `true`.
    #[method(name = "anvil_setStorageAt", aliases = ["hardhat_setStorageAt"])]
    async fn set_storage_at(&self, address: Address, slot: U256, value: B256) -> RpcResult<bool>;
    #[method(name = "anvil_setNonce", aliases = ["hardhat_setNonce"])]
    async fn set_nonce(&self, address: Address, nonce: U256) -> RpcResult<()>;
    /// The snapshot's id, as a hex quantity.
    #[method(name = "evm_snapshot", aliases = ["anvil_snapshot"])]
    async fn snapshot(&self) -> RpcResult<U256>;
    #[method(name = "evm_revert", aliases = ["anvil_revert"])]
    async fn revert(&self, id: U256) -> RpcResult<bool>;
    /// Genesis's state again; forking options are refused (this node never forks).
    #[method(name = "anvil_reset", aliases = ["hardhat_reset"])]
    async fn reset(&self, options: Option<Value>) -> RpcResult<()>;
    /// The head's state in anvil's format: gzip-compressed JSON, hex.
    #[method(name = "anvil_dumpState", aliases = ["hardhat_dumpState"])]
    async fn dump_state(&self) -> RpcResult<Bytes>;
    /// `eth_sendTransaction` from `address` is sent without a signature from now on.
    #[method(name = "anvil_impersonateAccount", aliases = ["hardhat_impersonateAccount"])]
    async fn impersonate(&self, address: Address) -> RpcResult<()>;
    #[method(
        name = "anvil_stopImpersonatingAccount",
        aliases = ["hardhat_stopImpersonatingAccount"]
    )]
    async fn stop_impersonating(&self, address: Address) -> RpcResult<()>;
    /// Every address impersonated (`true`), or only the ones asked for.
    #[method(name = "anvil_autoImpersonateAccount")]
    async fn auto_impersonate(&self, on: bool) -> RpcResult<()>;
    /// Loads a state in anvil's format (gzip-compressed or plain JSON): each account's
    /// balance, nonce, code and the slots given are set; other accounts stay.
    #[method(name = "anvil_loadState", aliases = ["hardhat_loadState"])]
    async fn load_state(&self, state: Bytes) -> RpcResult<bool>;
}

/// One account of anvil's state dump.
#[derive(serde::Serialize, serde::Deserialize)]
struct DumpAccount {
    nonce: u64,
    balance: U256,
    #[serde(default)]
    code: Bytes,
    #[serde(default)]
    storage: std::collections::BTreeMap<U256, U256>,
}

/// anvil's state dump (`SerializableState`): the accounts are what a load reads; blocks and
/// transactions are left empty, since this node's history is its chain.
#[derive(serde::Serialize, serde::Deserialize)]
struct DumpState {
    #[serde(default)]
    block: Option<Value>,
    accounts: std::collections::BTreeMap<Address, DumpAccount>,
    #[serde(default)]
    best_block_number: Option<u64>,
    #[serde(default)]
    blocks: Vec<Value>,
    #[serde(default)]
    transactions: Vec<Value>,
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

    /// Commits `edits` in a block of their own, off the async workers.
    async fn edit(&self, edits: Vec<StateEdit>) -> Result<(), RpcError> {
        let controls = self.controls()?;
        let edits = StateEdits::new(edits).map_err(|e| RpcError::InvalidParams(e.to_string()))?;
        self.node
            .tasks
            .blocking(move || controls.edit(edits))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(|e| RpcError::Internal(format!("state edit failed: {e}")))?;
        Ok(())
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

    async fn set_balance(&self, address: Address, balance: U256) -> RpcResult<()> {
        Ok(self
            .edit(vec![StateEdit::Balance { address, balance }])
            .await?)
    }

    async fn set_code(&self, address: Address, code: Bytes) -> RpcResult<()> {
        Ok(self.edit(vec![StateEdit::Code { address, code }]).await?)
    }

    async fn set_storage_at(&self, address: Address, slot: U256, value: B256) -> RpcResult<bool> {
        self.edit(vec![StateEdit::Storage {
            address,
            slot: slot.into(),
            value: value.into(),
        }])
        .await?;
        Ok(true)
    }

    async fn set_nonce(&self, address: Address, nonce: U256) -> RpcResult<()> {
        let nonce = u64::try_from(nonce)
            .map_err(|_| RpcError::InvalidParams(format!("nonce {nonce} is over 64 bits")))?;
        Ok(self.edit(vec![StateEdit::Nonce { address, nonce }]).await?)
    }

    async fn snapshot(&self) -> RpcResult<U256> {
        let controls = self.controls()?;
        // It waits for a seal under way: off the async workers.
        let id = self
            .node
            .tasks
            .blocking(move || controls.snapshot())
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        Ok(U256::from(id))
    }

    async fn revert(&self, id: U256) -> RpcResult<bool> {
        let controls = self.controls()?;
        let Ok(id) = u64::try_from(id) else {
            return Ok(false);
        };
        Ok(self
            .node
            .tasks
            .blocking(move || controls.revert(id))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(RpcError::Unsupported)?)
    }

    async fn reset(&self, options: Option<Value>) -> RpcResult<()> {
        let controls = self.controls()?;
        if options
            .as_ref()
            .and_then(|o| o.get("forking"))
            .is_some_and(|f| !f.is_null())
        {
            return Err(RpcError::Unsupported(
                "anvil_reset with forking: this node does not fork other chains".into(),
            )
            .into());
        }
        self.node
            .tasks
            .blocking(move || controls.reset())
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(RpcError::Unsupported)?;
        Ok(())
    }

    async fn dump_state(&self) -> RpcResult<Bytes> {
        self.controls()?;
        let store = self.node.store.clone();
        let (head, accounts) = self
            .node
            .tasks
            .blocking(move || store.dump_state(MAX_DUMP))
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(|e| RpcError::LimitExceeded(e.to_string()))?;
        let state = DumpState {
            block: None,
            accounts: accounts
                .into_iter()
                .map(|a| {
                    let storage = a
                        .storage
                        .into_iter()
                        .map(|(k, v)| (U256::from_be_bytes(k.0), v))
                        .collect();
                    let account = DumpAccount {
                        nonce: a.nonce,
                        balance: a.balance,
                        code: a.code,
                        storage,
                    };
                    (a.address, account)
                })
                .collect(),
            best_block_number: Some(head),
            blocks: Vec::new(),
            transactions: Vec::new(),
        };
        let json = serde_json::to_vec(&state).map_err(|e| RpcError::Internal(e.to_string()))?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&json)
            .and_then(|_| gz.finish())
            .map(Bytes::from)
            .map_err(|e| RpcError::Internal(e.to_string()).into())
    }

    async fn load_state(&self, state: Bytes) -> RpcResult<bool> {
        self.controls()?;
        let mut json = Vec::new();
        let read = if state.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(state.as_ref())
                .take(MAX_LOAD_BYTES + 1)
                .read_to_end(&mut json)
        } else {
            json.extend_from_slice(&state);
            Ok(json.len())
        };
        read.map_err(|e| RpcError::InvalidParams(format!("state: not gzip: {e}")))?;
        if json.len() as u64 > MAX_LOAD_BYTES {
            return Err(RpcError::LimitExceeded(format!(
                "state: over {MAX_LOAD_BYTES} bytes decompressed"
            ))
            .into());
        }
        let state: DumpState = serde_json::from_slice(&json)
            .map_err(|e| RpcError::InvalidParams(format!("state: {e}")))?;
        // The chain's own history contracts record this chain's blocks: another chain's
        // records do not belong in them.
        let history = pipe_primitives::CHAIN_HISTORY_CONTRACTS;
        let mut edits = Vec::new();
        for (address, a) in state
            .accounts
            .into_iter()
            .filter(|(a, _)| !history.contains(a))
        {
            edits.push(StateEdit::Balance {
                address,
                balance: a.balance,
            });
            edits.push(StateEdit::Nonce {
                address,
                nonce: a.nonce,
            });
            edits.push(StateEdit::Code {
                address,
                code: a.code,
            });
            for (slot, value) in a.storage {
                edits.push(StateEdit::Storage {
                    address,
                    slot: slot.into(),
                    value,
                });
            }
        }
        if !edits.is_empty() {
            self.edit(edits).await?;
        }
        Ok(true)
    }

    async fn impersonate(&self, address: Address) -> RpcResult<()> {
        self.controls()?;
        self.impersonation(self.node.pool.impersonate(address, true))
    }

    async fn stop_impersonating(&self, address: Address) -> RpcResult<()> {
        self.controls()?;
        self.impersonation(self.node.pool.impersonate(address, false))
    }

    async fn auto_impersonate(&self, on: bool) -> RpcResult<()> {
        self.controls()?;
        self.impersonation(self.node.pool.impersonate_all(on))
    }
}

impl Api {
    fn impersonation(&self, taken: bool) -> RpcResult<()> {
        if taken {
            Ok(())
        } else {
            Err(RpcError::Unsupported(
                "impersonation is served on the dev chain only (pipe node --dev)".into(),
            )
            .into())
        }
    }
}
