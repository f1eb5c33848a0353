//! `pipe bench scale`: how PIPE's cost grows with the work, on in-process nodes driven over
//! JSON-RPC.
//!
//! For each pending count (default 1k, 10k, 50k inference transactions, spread over at least
//! 512 senders and at most 40 per sender) and each number of worker slots (default 4, 64, 256: four workers of
//! 1, 16 and 64 slots, every model run made `latency` slower, standing in for a large
//! inference network), a fresh PIPE node gets the whole load as fast as RPC takes it. Blocks
//! are sealed every second with room for every ready transaction, TTL and the inference price
//! held still (neither is what is measured). Reported per run:
//! - **discovery per transaction**: from the first send until every transaction is past
//!   discovery (awaiting inference, ready or included), divided by the count;
//! - **memory per pending transaction**: the process's resident memory when all are past
//!   discovery, less before the first send, divided by the count;
//! - **dispatch throughput ÷ capacity**: results per second until every transaction is ready,
//!   divided by what the slots can do (`slots / latency`), and the peak of requests in flight
//!   against the slots: whether the pool and the dispatcher keep the workers busy;
//! - **block build**: mean and worst execute and commit time of the blocks with transactions,
//!   and the most transactions in one block.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use anyhow::Context as _;
use pipe_primitives::{InferencePricing, SystemClock, status::Lifecycle};
use serde_json::{Value, json};

use pipe_node::{config::InferenceMode, node::launch};

/// Most transactions per sender: under PIPE's per-sender cap (64 live inference transactions).
const PER_SENDER: usize = 40;
/// Fewest senders. A sender's next transaction is simulated on top of the one before, so it is
/// discovered only once that one's results are in: one sender keeps at most one request in
/// flight, and a load from fewer senders than slots could not fill the slots whatever the
/// dispatcher did.
const MIN_SENDERS: usize = 512;
/// Workers; slots are spread over them.
const WORKERS: usize = 4;

/// What to run.
#[derive(Clone, Debug)]
pub struct ScaleBench {
    pub pending: Vec<usize>,
    pub slots: Vec<usize>,
    pub latency: Duration,
}

/// Resident memory of this process, in bytes (0 where /proc is not there).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Sum of a Prometheus text metric's samples.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Waits until every hash has reached `done` or ended without inclusion (rejected, expired),
/// which counts as arrived: the load is measured as it fares. Seconds since `since`.
pub(crate) async fn until(
    pipe: &pipe_inference_pool::Pipe,
    hashes: &[B256],
    since: Instant,
    limit: Duration,
    done: impl Fn(Lifecycle) -> bool,
) -> anyhow::Result<f64> {
    let mut left: Vec<B256> = hashes.to_vec();
    loop {
        left.retain(|h| {
            !pipe.status(h).is_some_and(|s| {
                done(s.status) || (s.status.is_final() && s.status != Lifecycle::Included)
            })
        });
        if left.is_empty() {
            return Ok(since.elapsed().as_secs_f64());
        }
        if since.elapsed() > limit {
            let sample = pipe.status(&left[0]);
            anyhow::bail!(
                "{} transactions not there in time, e.g. {sample:?}",
                left.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Transactions that ended without inclusion, and the reasons given (each once, with a count).
fn not_included(pipe: &pipe_inference_pool::Pipe, hashes: &[B256]) -> (usize, Value) {
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    let mut count = 0;
    for h in hashes {
        if let Some(s) = pipe.status(h)
            && s.status != Lifecycle::Included
        {
            count += 1;
            *reasons
                .entry(format!(
                    "{}: {}",
                    s.status.as_str(),
                    s.reason.unwrap_or_default()
                ))
                .or_default() += 1;
        }
    }
    (count, json!(reasons))
}

async fn one(pending: usize, slots: usize, latency: Duration) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let senders = pending
        .div_ceil(PER_SENDER)
        .max(MIN_SENDERS)
        .min(pending)
        .max(1);
    let mut config = crate::bench::node_config(
        dir.path(),
        InferenceMode::Pipe,
        WORKERS,
        latency,
        Duration::from_secs(1),
    );
    config.worker_capacity = slots.div_ceil(WORKERS);
    config.dev_accounts = u32::try_from(senders)?;
    // Room for every ready transaction in a block; nothing expires; the price stays put.
    config.gas_limit = Some(2_000_000_000);
    config.tx_ttl_blocks = 0;
    config.inference_pricing = InferencePricing {
        target_units: u64::MAX / 4,
        ..config.inference_pricing
    };
    let node = launch(config, Arc::new(SystemClock)).await?;
    let pipe = node.pipe.clone().context("PIPE mode")?;
    let cid = pipe_rpc::ModelRegistry::list(node.models.as_ref())
        .into_iter()
        .find(|m| m.name == "linreg")
        .map(|m| m.id.to_string())
        .context("linreg example model")?;
    let mut nonces = vec![0u64; node.dev_keys.len()];
    let txs = crate::bench_pipe::inference_load(&node, &cid, &mut nonces, pending, 0);
    let hashes: Vec<B256> = txs
        .iter()
        .map(|(h, _)| h.parse())
        .collect::<Result<_, _>>()?;
    let rss_before = rss_bytes();
    let client = reqwest::Client::new();
    let url = node.rpc_url();
    let started = Instant::now();
    for chunk in txs.chunks(500) {
        let params = chunk.iter().map(|(_, raw)| json!([raw]));
        for a in crate::bench::batch(&client, &url, "eth_sendRawTransaction", params).await? {
            anyhow::ensure!(a.get("error").is_none(), "send failed: {a}");
        }
    }
    let ingest_s = started.elapsed().as_secs_f64();
    let limit = Duration::from_secs(900);
    let discovered_s = until(&pipe, &hashes, started, limit, |s| {
        !matches!(s, Lifecycle::Pending | Lifecycle::Simulating)
    })
    .await?;
    let rss_after = rss_bytes();
    let ready_s = until(&pipe, &hashes, started, limit, |s| {
        matches!(s, Lifecycle::Ready | Lifecycle::Included)
    })
    .await?;
    let included_s = until(&pipe, &hashes, started, limit, |s| s == Lifecycle::Included).await?;
    let (failed, reasons) = not_included(&pipe, &hashes);
    let text = pipe.render_metrics();
    let completed = metric(&text, "pipe_worker_completed_total");
    let peak = metric(&text, "pipe_requests_in_flight_peak");
    let capacity_per_s = slots as f64 / latency.as_secs_f64();
    let builds: Vec<_> = node
        .chain
        .history()
        .into_iter()
        .filter(|(_, s)| s.considered > 0)
        .collect();
    let blocks = builds.len().max(1) as f64;
    let mean = |f: &dyn Fn(&pipe_builder::BuildStats) -> f64| {
        builds.iter().map(|(_, s)| f(s)).sum::<f64>() / blocks
    };
    let worst = |f: &dyn Fn(&pipe_builder::BuildStats) -> f64| {
        builds.iter().map(|(_, s)| f(s)).fold(0.0, f64::max)
    };
    let most_txs = builds
        .iter()
        .filter_map(|(n, _)| node.store.block(*n).ok().flatten())
        .map(|b| b.transactions.len())
        .max()
        .unwrap_or_default();
    let out = json!({
        "pending": pending,
        "senders": senders,
        "slots": slots,
        "ingest_s": ingest_s,
        "discovered_s": discovered_s,
        "discovery_us_per_tx": discovered_s * 1e6 / pending as f64,
        "memory_bytes_per_pending_tx": rss_after.saturating_sub(rss_before) as f64 / pending as f64,
        "ready_s": ready_s,
        "included_s": included_s,
        "not_included": failed,
        "not_included_reasons": reasons,
        "model_runs": completed,
        "simulations": metric(&text, "pipe_simulations_total"),
        "dispatch_per_s": completed / ready_s,
        "capacity_per_s": capacity_per_s,
        "dispatch_over_capacity": completed / ready_s / capacity_per_s,
        "in_flight_peak": peak,
        "blocks_with_txs": builds.len(),
        "most_txs_in_a_block": most_txs,
        "build_execute_ms": {
            "mean": mean(&|s| s.execute_us as f64 / 1000.0),
            "max": worst(&|s| s.execute_us as f64 / 1000.0),
        },
        "build_commit_ms": {
            "mean": mean(&|s| s.commit_us as f64 / 1000.0),
            "max": worst(&|s| s.commit_us as f64 / 1000.0),
        },
    });
    // The node's shutdown waits for every holder of its store to let go.
    drop(pipe);
    node.shutdown().await;
    Ok(out)
}

/// Every (pending, slots) pair, one fresh node each.
pub async fn run(cfg: ScaleBench) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for &slots in &cfg.slots {
        for &pending in &cfg.pending {
            let r = one(pending, slots, cfg.latency)
                .await
                .with_context(|| format!("{pending} pending, {slots} slots"))?;
            eprintln!("{r}");
            runs.push(r);
        }
    }
    Ok(json!({
        "config": {
            "latency_ms": cfg.latency.as_millis() as u64,
            "workers": WORKERS,
            "max_per_sender": PER_SENDER,
            "min_senders": MIN_SENDERS,
            "model": "linreg (example), one distinct request per transaction",
        },
        "runs": runs,
    }))
}
