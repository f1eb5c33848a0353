//! `pipe node --follow URL`: a follower. It builds no blocks and runs no model; it fetches
//! each block from the leader over JSON-RPC (`pipe_getBlockWithSidecar`) and imports it only
//! if replay from the block alone verifies ([`pipe_chain::Chain::import`]: verify, then
//! finalize): the sidecar root, every TEE attestation, every receipt and the state root. It serves the same
//! read-only RPC as the leader; transactions are refused with a pointer to the leader.
//!
//! A block that does not verify is not imported: the follower stays at its parent, reports
//! why ([`Follower::status`], and a warning in the log), and asks again on the next round, so
//! it moves on if the leader's block changes (it never skips a block). A block stamped too
//! far ahead of the follower's clock is not yet verifiable and is asked for again.
//!
//! A leader that stops producing blocks, or stops answering, is reported: a warning with the
//! time since the last block arrived, repeated each time that time doubles (from
//! [`STALL_WARN_MS`]), and [`FollowStatus::since_last_block_ms`].
//!
//! Models the leader stores and the follower lacks are fetched before each round's blocks
//! (`pipe_listModels`, then `pipe_getModelFile`, checked against the id and stored with the
//! leader's decimals and cost units): replay needs a model's metadata to decode a request and
//! to charge its gas, never to run it.

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use parking_lot::Mutex;
use pipe_chain::Chain;
use pipe_primitives::{Clock, Tasks};
use pipe_rpc::{ModelRegistry, UploadOptions, WireBlock};
use serde::{Deserialize, de::DeserializeOwned};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::models::NodeModels;

/// Most blocks fetched per round, so a far-behind follower still publishes progress.
const MAX_BLOCKS_PER_ROUND: u64 = 256;
/// How long without a new block from the leader before the follower says so.
pub const STALL_WARN_MS: u64 = 30_000;

/// Where a follower is.
#[derive(Debug, Clone, Default)]
pub struct FollowStatus {
    /// The leader's head when last asked.
    pub leader_head: u64,
    /// Blocks imported since start.
    pub imported: u64,
    /// Why the last round stopped early, if it did (cleared by a round that completes).
    pub last_error: Option<String>,
    /// Milliseconds, on the follower's clock, since a block last arrived from the leader (or
    /// since the follower started).
    pub since_last_block_ms: u64,
    /// Warnings logged that the leader has gone silent.
    pub stall_warnings: u64,
}

/// When blocks last arrived, and when the follower last said they had stopped.
#[derive(Debug, Default)]
struct Progress {
    last_block_ms: u64,
    /// The stall length that triggers the next warning.
    next_warn_ms: u64,
}

pub struct Follower {
    leader: String,
    client: reqwest::Client,
    chain: Arc<Chain>,
    models: Arc<NodeModels>,
    /// The follower's clock, for the future-timestamp bound.
    clock: Arc<dyn Clock>,
    /// Where imports and model uploads run.
    tasks: Tasks,
    status: Mutex<FollowStatus>,
    progress: Mutex<Progress>,
}

#[derive(Deserialize)]
struct RpcAnswer<T> {
    result: Option<T>,
    error: Option<serde_json::Value>,
}

impl Follower {
    pub fn new(
        leader: String,
        chain: Arc<Chain>,
        models: Arc<NodeModels>,
        clock: Arc<dyn Clock>,
        tasks: Tasks,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            leader,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            chain,
            models,
            progress: Mutex::new(Progress {
                last_block_ms: clock.now_ms(),
                next_warn_ms: STALL_WARN_MS,
            }),
            clock,
            tasks,
            status: Mutex::default(),
        })
    }

    pub fn status(&self) -> FollowStatus {
        let mut status = self.status.lock().clone();
        status.since_last_block_ms = self
            .clock
            .now_ms()
            .saturating_sub(self.progress.lock().last_block_ms);
        status
    }

    /// A block arrived.
    fn note_block(&self) {
        let mut p = self.progress.lock();
        p.last_block_ms = self.clock.now_ms();
        p.next_warn_ms = STALL_WARN_MS;
    }

    /// After a round: warns when the leader has been silent long enough (then again at
    /// twice that, and so on).
    fn check_stall(&self) {
        let now = self.clock.now_ms();
        let mut p = self.progress.lock();
        let silent = now.saturating_sub(p.last_block_ms);
        if silent >= p.next_warn_ms {
            // Next at twice the silence so far (a long round may have passed several steps).
            while p.next_warn_ms <= silent {
                p.next_warn_ms = p.next_warn_ms.saturating_mul(2);
            }
            self.status.lock().stall_warnings += 1;
            let last_error = self.status.lock().last_error.clone();
            warn!(
                target: "pipe::follow",
                leader = %self.leader,
                seconds_since_last_block = silent / 1000,
                head = self.chain.head().number(),
                last_error = last_error.as_deref().unwrap_or("none"),
                "no new block from the leader"
            );
        }
    }

    async fn rpc<T: DeserializeOwned>(
        &self,
        method: &str,
        params: serde_json::Value,
    ) -> anyhow::Result<Option<T>> {
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let answer: RpcAnswer<T> = self
            .client
            .post(&self.leader)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("cannot reach the leader at {}", self.leader))?
            .json()
            .await
            .with_context(|| format!("{method}: unreadable answer"))?;
        if let Some(e) = answer.error {
            anyhow::bail!("{method}: {e}");
        }
        Ok(answer.result)
    }

    /// Fails unless the leader's genesis is ours: a follower of another chain would reject
    /// every block.
    pub async fn check_genesis(
        &self,
        genesis: &pipe_primitives::SealedBlock,
    ) -> anyhow::Result<()> {
        let block: serde_json::Value = self
            .rpc("eth_getBlockByNumber", serde_json::json!(["0x0", false]))
            .await?
            .context("the leader has no genesis block")?;
        let hash = block["hash"].as_str().unwrap_or_default();
        anyhow::ensure!(
            hash.eq_ignore_ascii_case(&genesis.hash.to_string()),
            "the leader's genesis is {hash}, ours is {}: start the follower with the leader's chain settings (--dev, --accounts, --chain-id, --genesis)",
            genesis.hash
        );
        Ok(())
    }

    /// Stores the leader's models this node lacks.
    async fn sync_models(&self) -> anyhow::Result<()> {
        let theirs: Vec<pipe_primitives::ModelMeta> = self
            .rpc("pipe_listModels", serde_json::json!([]))
            .await?
            .unwrap_or_default();
        for meta in theirs {
            if self.models.get(&meta.id).is_some() {
                continue;
            }
            let bytes: alloy_primitives::Bytes = self
                .rpc(
                    "pipe_getModelFile",
                    serde_json::json!([meta.id.to_string()]),
                )
                .await?
                .with_context(|| format!("the leader lists model {} but has no file", meta.id))?;
            let options = UploadOptions {
                name: Some(meta.name.clone()),
                decimals: Some(meta.decimals),
                cost_units: Some(meta.cost_units),
            };
            let models = self.models.clone();
            // The id is recomputed from the bytes, so a wrong file cannot pose as the model.
            let (stored, _) = self
                .tasks
                .blocking(move || models.upload(&bytes, &options))
                .await?
                .map_err(|e| anyhow::anyhow!("model {} from the leader: {e}", meta.id))?;
            anyhow::ensure!(
                stored.id == meta.id && stored.cost_units == meta.cost_units,
                "model {} from the leader: stored as {} with {} cost units, the leader says {}",
                meta.id,
                stored.id,
                stored.cost_units,
                meta.cost_units
            );
            info!(target: "pipe::follow", id = %meta.id, name = %meta.name, "model fetched from the leader");
        }
        Ok(())
    }

    /// One round: fetch and import every block the leader has and we do not (up to a bound).
    pub async fn sync_once(&self) -> anyhow::Result<u64> {
        let leader_head: alloy_primitives::U64 = self
            .rpc("eth_blockNumber", serde_json::json!([]))
            .await?
            .context("eth_blockNumber answered nothing")?;
        let leader_head: u64 = leader_head.to();
        self.status.lock().leader_head = leader_head;
        let ours = self.chain.head().number();
        if leader_head <= ours {
            return Ok(0);
        }
        self.sync_models().await?;
        let mut imported = 0;
        for number in ours + 1..=leader_head.min(ours + MAX_BLOCKS_PER_ROUND) {
            let wire: WireBlock = self
                .rpc(
                    "pipe_getBlockWithSidecar",
                    serde_json::json!([format!("{number:#x}")]),
                )
                .await?
                .with_context(|| format!("the leader has no block {number}"))?;
            let block = wire
                .into_block()
                .with_context(|| format!("block {number} from the leader"))?;
            let (chain, now) = (self.chain.clone(), self.clock.now_ms());
            self.tasks
                .blocking(move || chain.import(block, now))
                .await?
                .with_context(|| format!("block {number}"))?;
            imported += 1;
            self.status.lock().imported += 1;
            self.note_block();
        }
        Ok(imported)
    }

    /// Follows until `shutdown` flips, one round every `interval` (on the node's clock).
    pub async fn run(self: Arc<Self>, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.sync_once().await {
                Ok(n) => {
                    if n > 0 {
                        info!(target: "pipe::follow", imported = n, head = self.chain.head().number(), "blocks imported");
                    }
                    self.status.lock().last_error = None;
                }
                Err(e) => {
                    warn!(target: "pipe::follow", error = %format!("{e:#}"), "follow round stopped");
                    self.status.lock().last_error = Some(format!("{e:#}"));
                }
            }
            self.check_stall();
            let wake = self.clock.now_ms() + interval.as_millis() as u64;
            tokio::select! {
                _ = self.clock.sleep_until(wake) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
