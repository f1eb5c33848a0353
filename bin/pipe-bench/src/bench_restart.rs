//! `pipe bench restart`: how long a node with a full pool of inference transactions takes to
//! come back and make blocks again.
//!
//! 1. A node on a one-hour slot (so nothing is included) takes `pending` inference
//!    transactions from many senders and PIPE computes every result: a full pool under
//!    inference load.
//! 2. The node stops. Its pending transactions are in `pending.log`; its results were in
//!    memory only.
//! 3. The same data directory starts again with 1 s slots. Measured from the start: the
//!    phases of the start itself (opening, restoring the pool), RPC answering, the first block
//!    with transactions, every transaction ready again, every transaction included.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use anyhow::Context as _;
use pipe_node::{
    config::{InferenceMode, NodeConfig},
    node::{RunningNode, launch},
};
use pipe_primitives::{InferencePricing, SystemClock, status::Lifecycle};
use serde_json::{Value, json};

/// Workers; slots are spread over them.
const WORKERS: usize = 4;
/// Transactions per sender: under PIPE's per-sender cap.
const PER_SENDER: usize = 40;

/// What to run.
#[derive(Clone, Debug)]
pub struct RestartBench {
    pub pending: usize,
    pub slots: usize,
    pub latency: Duration,
}

fn config(dir: &std::path::Path, b: &RestartBench, block_time: Duration) -> NodeConfig {
    let mut config =
        crate::bench::node_config(dir, InferenceMode::Pipe, WORKERS, b.latency, block_time);
    config.worker_capacity = b.slots.div_ceil(WORKERS);
    config.dev_accounts = u32::try_from(b.pending.div_ceil(PER_SENDER).max(1)).unwrap_or(u32::MAX);
    config.gas_limit = Some(2_000_000_000);
    config.tx_ttl_blocks = 0;
    config.inference_pricing = InferencePricing {
        target_units: u64::MAX / 4,
        ..config.inference_pricing
    };
    config
}

fn pipe(node: &RunningNode) -> anyhow::Result<Arc<pipe_inference_pool::Pipe>> {
    node.pipe.clone().context("PIPE mode")
}

pub async fn run(b: RestartBench) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let limit = Duration::from_secs(900);

    // 1. A full pool, every result computed, nothing included.
    let node = launch(
        config(dir.path(), &b, Duration::from_secs(3600)),
        Arc::new(SystemClock),
    )
    .await?;
    let cid = pipe_rpc::ModelRegistry::list(node.models.as_ref())
        .into_iter()
        .find(|m| m.name == "linreg")
        .map(|m| m.id.to_string())
        .context("linreg example model")?;
    let mut nonces = vec![0u64; node.dev_keys.len()];
    let txs = crate::bench_pipe::inference_load(&node, &cid, &mut nonces, b.pending, 0);
    let hashes: Vec<B256> = txs
        .iter()
        .map(|(h, _)| h.parse())
        .collect::<Result<_, _>>()?;
    let client = reqwest::Client::new();
    let url = node.rpc_url();
    for chunk in txs.chunks(500) {
        let params = chunk.iter().map(|(_, raw)| json!([raw]));
        for a in crate::bench::batch(&client, &url, "eth_sendRawTransaction", params).await? {
            anyhow::ensure!(a.get("error").is_none(), "send failed: {a}");
        }
    }
    let filled = Instant::now();
    let first = pipe(&node)?;
    let ready_before_s =
        crate::bench_scale::until(&first, &hashes, filled, limit, |s| s == Lifecycle::Ready)
            .await?;
    drop(first);
    anyhow::ensure!(
        node.pool.len() == b.pending,
        "the pool holds {}",
        node.pool.len()
    );

    // 2. Stop. 3. Start again, with slots.
    node.shutdown().await;
    let started = Instant::now();
    let node = launch(
        config(dir.path(), &b, Duration::from_secs(1)),
        Arc::new(SystemClock),
    )
    .await?;
    let rpc_s = started.elapsed().as_secs_f64();
    let startup = node.startup;
    let mut first_block_s = None;
    let pipe = pipe(&node)?;
    while first_block_s.is_none() && started.elapsed() < limit {
        let head = node.chain.head();
        if !head.transactions.is_empty() {
            first_block_s = Some(started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_s = crate::bench_scale::until(&pipe, &hashes, started, limit, |s| {
        matches!(s, Lifecycle::Ready | Lifecycle::Included)
    })
    .await?;
    let included_s =
        crate::bench_scale::until(&pipe, &hashes, started, limit, |s| s == Lifecycle::Included)
            .await?;
    let included = hashes
        .iter()
        .filter(|h| {
            pipe.status(h)
                .is_some_and(|s| s.status == Lifecycle::Included)
        })
        .count();
    node.shutdown().await;
    Ok(json!({
        "config": {
            "pending": b.pending,
            "slots": b.slots,
            "model_latency_ms": b.latency.as_millis() as u64,
            "block_time_ms": 1000,
        },
        "before_restart": {"all_ready_s": ready_before_s},
        "restart": {
            "open_ms": startup.open_ms,
            "restore_ms": startup.restore_ms,
            "restored": startup.restored,
            "dropped": startup.dropped,
            "launch_ms": startup.total_ms,
            "rpc_answering_s": rpc_s,
            "first_block_with_txs_s": first_block_s,
            "all_ready_again_s": ready_s,
            "all_included_s": included_s,
            "included": included,
        },
    }))
}
