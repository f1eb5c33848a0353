//! `pipe bench pipe`: PIPE against its baselines, on in-process nodes driven over JSON-RPC.
//!
//! Every model run takes `latency` more than it computes (`--model-latency-ms`), standing in
//! for a heavy model; every transaction calls the precompile directly with its own input, so
//! every request is distinct work.
//!
//! 1. **Build time with N ready inference transactions.** Two PIPE nodes whose sealers never
//!    fire on their own, one whose models take `latency` and one whose models cost nothing,
//!    get the same N transactions at the same moment; once both have all N ready, and after
//!    the same pause, the benchmark calls each producer and times the build (its execution
//!    and commit phases too). Ratio: slow-model build ÷ zero-cost build (goal ≤ 1.10: the
//!    builder never runs models). Built one node at a time instead, the slow-model node built
//!    after seconds of a near-idle machine and the other right after its burst of work (one
//!    run: ratio 2.6); made to wait as long, the zero-cost node's median build went from 15
//!    to 27 ms.
//! 2. **Throughput at saturation.** The workers alone (no chain) run M requests: their
//!    standalone capacity. A PIPE node with the same workers gets M transactions at once:
//!    transactions per second from the first send to the last receipt. Ratio: node ÷ workers.
//! 3. **PIPE vs inline** on that same load: transactions per second and mean block build time.
//!
//! With `--llm N`, every transaction calls `runLLMCompletion` on the dev chain's language
//! model (`kjv`) instead, greedy, with its own prompt and `max_tokens` N: a real model run of
//! some milliseconds per token, plus `latency` on the slow-model node (seconds, as a large
//! model takes), against the same model with nothing added.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::{Bytes, TxKind};
use alloy_sol_types::SolCall;
use anyhow::Context as _;
use futures::{StreamExt, stream::FuturesUnordered};
use pipe_executor::{
    InferenceProvider,
    inference::{
        INFERENCE_PRECOMPILE, LLMCompletionRequest, ModelInferenceRequest, ModelInput,
        MultiDimensionalNumberTensor, Number, decode_request, runLLMCompletionCall,
        runModelInferenceCall,
    },
};
use pipe_inference_pool::Worker;
use pipe_primitives::{SystemClock, status::Lifecycle};
use serde_json::{Value, json};

use pipe_node::{
    config::InferenceMode,
    models::NodeModels,
    node::{RunningNode, launch},
    workers::LocalWorker,
};

const GWEI: u128 = 1_000_000_000;
const SENDERS: u32 = 50;
/// Pause between the last transaction becoming ready and a timed build.
const SETTLE: Duration = Duration::from_millis(500);

/// What each transaction asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// `runModelInference` on the example linear regression, its first input the salt.
    Model,
    /// `runLLMCompletion` on the dev chain's language model, greedy, its prompt naming the
    /// salt.
    Completion { max_tokens: u32 },
}

impl Load {
    /// The example model the load calls.
    pub fn model(&self) -> &'static str {
        match self {
            Load::Model => "linreg",
            Load::Completion { .. } => "kjv",
        }
    }

    /// The calldata of the transaction with `salt`: distinct salts, distinct work.
    pub(crate) fn data(&self, cid: &str, salt: i128) -> Vec<u8> {
        match *self {
            Load::Model => runModelInferenceCall {
                request: request(cid, salt),
            }
            .abi_encode(),
            Load::Completion { max_tokens } => runLLMCompletionCall {
                request: LLMCompletionRequest {
                    mode: 0,
                    modelCID: cid.into(),
                    prompt: format!("And the {salt}th day God said"),
                    max_tokens,
                    stop_sequence: vec![],
                    temperature: 0,
                },
            }
            .abi_encode(),
        }
    }

    /// A gas limit that covers the call at the dev chain's prices.
    fn gas(&self) -> u64 {
        match self {
            Load::Model => 300_000,
            Load::Completion { .. } => 2_000_000,
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct PipeBench {
    /// Transactions per load (throughput and PIPE vs inline).
    pub txs: usize,
    /// Ready transactions per timed build.
    pub ready: usize,
    /// Timed builds per model latency.
    pub rounds: usize,
    pub latency: Duration,
    pub workers: usize,
    pub block_time: Duration,
    pub load: Load,
}

/// A node for one scenario, with its data dir.
struct Bench {
    node: RunningNode,
    nonces: Vec<u64>,
    cid: String,
    load: Load,
    _dir: tempfile::TempDir,
}

async fn start(
    mode: InferenceMode,
    latency: Duration,
    workers: usize,
    block_time: Duration,
    gas_limit: Option<u64>,
    load: Load,
) -> anyhow::Result<Bench> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::bench::node_config(dir.path(), mode, workers, latency, block_time);
    config.dev_accounts = SENDERS;
    config.gas_limit = gas_limit;
    let node = launch(config, Arc::new(SystemClock)).await?;
    let cid = pipe_rpc::ModelRegistry::list(node.models.as_ref())
        .into_iter()
        .find(|m| m.name == load.model())
        .map(|m| m.id.to_string())
        .with_context(|| format!("the {} example model", load.model()))?;
    Ok(Bench {
        nonces: vec![0; node.dev_keys.len()],
        node,
        cid,
        load,
        _dir: dir,
    })
}

/// A linreg request with `salt` as its first input: distinct salts, distinct work.
pub(crate) fn request(cid: &str, salt: i128) -> ModelInferenceRequest {
    ModelInferenceRequest {
        mode: 0,
        modelCID: cid.into(),
        input: ModelInput {
            numbers: vec![MultiDimensionalNumberTensor {
                name: "input".into(),
                values: [salt, 7, -3]
                    .into_iter()
                    .map(|value| Number { value, decimals: 2 })
                    .collect(),
                shape: vec![1, 3],
            }],
            strings: vec![],
        },
    }
}

/// `count` signed calls to the precompile, each with its own request on model `cid` (inputs
/// from `salt` on), spread round-robin over `node`'s dev accounts from their next `nonces`,
/// tips 1-20 gwei; (hash, raw).
pub(crate) fn inference_load(
    node: &RunningNode,
    cid: &str,
    nonces: &mut [u64],
    count: usize,
    salt: i128,
) -> Vec<(String, Bytes)> {
    load_of(Load::Model, node, cid, nonces, count, salt)
}

/// [`inference_load`] of any [`Load`].
fn load_of(
    load: Load,
    node: &RunningNode,
    cid: &str,
    nonces: &mut [u64],
    count: usize,
    salt: i128,
) -> Vec<(String, Bytes)> {
    let chain_id = node.executor.config().chain_id;
    (0..count)
        .map(|i| {
            let s = i % node.dev_keys.len();
            let nonce = nonces[s];
            nonces[s] += 1;
            let data = load.data(cid, salt + i as i128);
            crate::bench::sign_raw(
                &node.dev_keys[s],
                chain_id,
                nonce,
                TxKind::Call(INFERENCE_PRECOMPILE),
                data.into(),
                load.gas(),
                (1 + (i % 20) as u128) * GWEI,
            )
        })
        .collect()
}

impl Bench {
    /// `count` transactions with distinct requests, spread over the senders; (hash, raw).
    fn load(&mut self, count: usize, salt: i128) -> Vec<(String, Bytes)> {
        load_of(
            self.load,
            &self.node,
            &self.cid,
            &mut self.nonces,
            count,
            salt,
        )
    }

    async fn send(&self, txs: &[(String, Bytes)]) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        for chunk in txs.chunks(100) {
            let params = chunk.iter().map(|(_, raw)| json!([raw]));
            let answers = crate::bench::batch(
                &client,
                &self.node.rpc_url(),
                "eth_sendRawTransaction",
                params,
            )
            .await?;
            for a in answers {
                anyhow::ensure!(a.get("error").is_none(), "send failed: {a}");
            }
        }
        Ok(())
    }

    /// Waits until every transaction has a receipt (checked in the store).
    async fn included(&self, txs: &[(String, Bytes)]) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        for (hash, _) in txs {
            let hash = hash.parse()?;
            while self.node.store.transaction_location(&hash)?.is_none() {
                anyhow::ensure!(Instant::now() < deadline, "{hash} not included in time");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    /// Waits until PIPE calls every transaction ready.
    async fn ready(&self, txs: &[(String, Bytes)]) -> anyhow::Result<()> {
        let pipe = self.node.pipe.as_ref().context("PIPE mode")?;
        let deadline = Instant::now() + Duration::from_secs(600);
        for (hash, _) in txs {
            let hash = hash.parse()?;
            while pipe.status(&hash).map(|s| s.status) != Some(Lifecycle::Ready) {
                anyhow::ensure!(Instant::now() < deadline, "{hash} never ready");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Mean build time (ms) and transactions per block over blocks with transactions.
    fn builds(&self) -> (f64, f64, usize) {
        let h: Vec<_> = self
            .node
            .chain
            .history()
            .into_iter()
            .filter(|(_, s)| s.considered > 0)
            .collect();
        let n = h.len().max(1) as f64;
        let ms = h.iter().map(|(_, s)| s.build_ms as f64).sum::<f64>() / n;
        let txs: f64 = h
            .iter()
            .map(|(number, _)| {
                self.node
                    .store
                    .block(*number)
                    .ok()
                    .flatten()
                    .map_or(0, |b| b.transactions.len()) as f64
            })
            .sum::<f64>()
            / n;
        (ms, txs, h.len())
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A PIPE node that only the benchmark builds on: its sealer's first slot is an hour away.
/// Its blocks have room for every ready transaction (the inference gas price rises with each
/// full block, and after some twenty rounds 200 transactions no longer fit in 30 M gas).
async fn builder_node(cfg: &PipeBench, latency: Duration) -> anyhow::Result<Bench> {
    start(
        InferenceMode::Pipe,
        latency,
        cfg.workers,
        Duration::from_secs(3600),
        Some(1_000_000_000),
        cfg.load,
    )
    .await
}

/// One timed build: milliseconds in all, executing (up to the sealed block without its state
/// root) and committing (state root and durable write).
#[derive(Clone, Copy, Debug)]
struct Timed {
    total: f64,
    execute: f64,
    commit: f64,
}

impl Bench {
    /// Times one build of the `ready` transactions the pool holds (execution, sealing and the
    /// commit to redb).
    async fn timed_build(&self, ready: usize) -> anyhow::Result<Timed> {
        let sealer = self
            .node
            .sealer
            .clone()
            .context("a builder node has a sealer")?;
        let (elapsed, included) = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let out = sealer.seal(u64::MAX);
            (t.elapsed(), out)
        })
        .await?;
        let pipe_chain::Sealed { block, stats } = included?;
        anyhow::ensure!(
            block.transactions.len() == ready,
            "built {} of {ready} ready transactions: {stats:?}",
            block.transactions.len(),
        );
        Ok(Timed {
            total: elapsed.as_secs_f64() * 1000.0,
            execute: stats.execute_us as f64 / 1000.0,
            commit: stats.commit_us as f64 / 1000.0,
        })
    }
}

/// Timed builds of `ready` ready transactions on two nodes, one whose models take `latency`
/// and one whose models cost nothing: (slow-model builds, zero-cost builds).
///
/// Each round both nodes get the same transactions at the same moment and build once both
/// have all of them ready, after the same pause: the only difference between the two builds
/// is how long the models took. (Timing each node on its own turn left the slow-model node
/// building after seconds of a near-idle machine and the other right after its burst of work,
/// and this machine is slower after idleness: `docs/pipe.md`.) The order of the two builds
/// alternates round by round.
async fn ready_builds(cfg: &PipeBench) -> anyhow::Result<(Vec<Timed>, Vec<Timed>)> {
    let mut slow = builder_node(cfg, cfg.latency).await?;
    let mut free = builder_node(cfg, Duration::ZERO).await?;
    let (mut slow_runs, mut free_runs) = (Vec::new(), Vec::new());
    for round in 0..=cfg.rounds {
        let salt = 1_000_000 * (round as i128 + 1);
        let (slow_txs, free_txs) = (slow.load(cfg.ready, salt), free.load(cfg.ready, salt));
        futures::try_join!(slow.send(&slow_txs), free.send(&free_txs))?;
        futures::try_join!(slow.ready(&slow_txs), free.ready(&free_txs))?;
        tokio::time::sleep(SETTLE).await;
        let (s, f) = if round % 2 == 0 {
            let s = slow.timed_build(cfg.ready).await?;
            (s, free.timed_build(cfg.ready).await?)
        } else {
            let f = free.timed_build(cfg.ready).await?;
            (slow.timed_build(cfg.ready).await?, f)
        };
        // Round 0 warms caches and is not counted.
        if round > 0 {
            slow_runs.push(s);
            free_runs.push(f);
        }
    }
    slow.node.shutdown().await;
    free.node.shutdown().await;
    Ok((slow_runs, free_runs))
}

/// The workers alone: `count` distinct requests through a pool of `workers` in-process
/// workers whose model runs take `latency` more: the inference network's capacity per second.
pub(crate) async fn standalone(
    workers: usize,
    latency: Duration,
    count: usize,
    load: Load,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(pipe_storage::Store::open(&dir.path().join("m.redb"))?);
    let models = Arc::new(NodeModels::open(store, Duration::from_secs(5))?.with_latency(latency));
    let examples = models.add_examples()?;
    let cid = examples
        .iter()
        .find(|(n, _)| n == load.model())
        .map(|(_, m)| m.id.to_string())
        .context(load.model())?;
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let data = load.data(&cid, 5_000_000 + i as i128);
            decode_request(&data, &|id| models.model(id))
                .map(Arc::new)
                .map_err(|e| anyhow::anyhow!(e))
        })
        .collect::<Result<_, _>>()?;
    let workers = LocalWorker::pool(workers, &models, 1, &pipe_primitives::Tasks::new());
    let t = Instant::now();
    let mut next = 0;
    let mut running = FuturesUnordered::new();
    for (w, worker) in workers.iter().enumerate() {
        if next < calls.len() {
            running.push(tagged(w, worker.clone(), calls[next].clone()));
            next += 1;
        }
    }
    while let Some((w, r)) = running.next().await {
        r.map_err(|e| anyhow::anyhow!("{e}"))?;
        if next < calls.len() {
            running.push(tagged(w, workers[w].clone(), calls[next].clone()));
            next += 1;
        }
    }
    Ok(count as f64 / t.elapsed().as_secs_f64())
}

async fn tagged(
    w: usize,
    worker: Arc<dyn Worker>,
    call: Arc<pipe_executor::InferenceCall>,
) -> (
    usize,
    Result<pipe_primitives::InferenceResult, pipe_inference_pool::WorkerError>,
) {
    (w, worker.run(call).await)
}

/// One load through a node: transactions per second, mean build ms, transactions per block.
async fn throughput(cfg: &PipeBench, mode: InferenceMode) -> anyhow::Result<Value> {
    let mut b = start(
        mode,
        cfg.latency,
        cfg.workers,
        cfg.block_time,
        None,
        cfg.load,
    )
    .await?;
    let txs = b.load(cfg.txs, 9_000_000);
    let t = Instant::now();
    b.send(&txs).await?;
    b.included(&txs).await?;
    let secs = t.elapsed().as_secs_f64();
    let (build_ms, per_block, blocks) = b.builds();
    b.node.shutdown().await;
    Ok(json!({
        "seconds": secs,
        "tps": cfg.txs as f64 / secs,
        "mean_block_build_ms": build_ms,
        "mean_txs_per_block": per_block,
        "blocks_with_txs": blocks,
    }))
}

pub async fn run(cfg: PipeBench) -> anyhow::Result<Value> {
    let (slow, free) = ready_builds(&cfg).await?;
    let phase = |runs: &[Timed], f: fn(&Timed) -> f64| -> (Vec<f64>, f64) {
        let v: Vec<f64> = runs.iter().map(f).collect();
        (v.clone(), median(v))
    };
    let (slow_all, slow_ms) = phase(&slow, |t| t.total);
    let (free_all, free_ms) = phase(&free, |t| t.total);
    let (_, slow_exec) = phase(&slow, |t| t.execute);
    let (_, free_exec) = phase(&free, |t| t.execute);
    let (_, slow_commit) = phase(&slow, |t| t.commit);
    let (_, free_commit) = phase(&free, |t| t.commit);
    let capacity = standalone(cfg.workers, cfg.latency, cfg.txs, cfg.load).await?;
    let pipe = throughput(&cfg, InferenceMode::Pipe).await?;
    let inline = throughput(&cfg, InferenceMode::Inline).await?;
    let pipe_tps = pipe["tps"].as_f64().unwrap_or_default();
    let inline_tps = inline["tps"].as_f64().unwrap_or_default();
    Ok(json!({
        "config": {
            "txs": cfg.txs,
            "ready_per_build": cfg.ready,
            "rounds": cfg.rounds,
            "model_latency_ms": cfg.latency.as_millis() as u64,
            "workers": cfg.workers,
            "block_time_ms": cfg.block_time.as_millis() as u64,
            "model": match cfg.load {
                Load::Model => "linreg (example): runModelInference, one distinct request per transaction".to_string(),
                Load::Completion { max_tokens } => format!("kjv (the dev chain's language model): runLLMCompletion, greedy, max_tokens {max_tokens}, one distinct prompt per transaction"),
            },
        },
        "build_with_ready_txs": {
            "slow_model_ms": slow_all,
            "zero_cost_model_ms": free_all,
            "median_slow_ms": slow_ms,
            "median_zero_cost_ms": free_ms,
            "ratio": slow_ms / free_ms,
            "execute": {
                "median_slow_ms": slow_exec,
                "median_zero_cost_ms": free_exec,
                "ratio": slow_exec / free_exec,
            },
            "commit": {
                "median_slow_ms": slow_commit,
                "median_zero_cost_ms": free_commit,
                "ratio": slow_commit / free_commit,
            },
        },
        "throughput": {
            "workers_standalone_per_s": capacity,
            "pipe_node_tps": pipe_tps,
            "ratio": pipe_tps / capacity,
        },
        "pipe": pipe,
        "inline": inline,
        "pipe_over_inline_tps": pipe_tps / inline_tps,
    }))
}
