//! `pipe bench congestion`: what happens when more inference is asked for than the inference
//! network can compute, for PIPE and two baselines on the same load.
//!
//! # What runs
//! 1. **Capacity.** The in-process workers alone (no chain) run requests back to back: the
//!    inference network's capacity C, in inferences per second. Every model run takes
//!    `--latency-ms` more than it computes, standing in for heavy models.
//! 2. **Load.** For each multiple x of C in `--loads`, a plan of x·C·`--seconds` transactions
//!    with Poisson arrivals, log-normal tips (median 1 gwei, σ = 1) and requests spread over a
//!    mix of the example models. Each transaction has its own sender, so a sender's nonce order
//!    never couples two transactions' fates and the fee deciles are clean.
//! 3. **Three systems, one plan each, each on a fresh in-process node driven over JSON-RPC
//!    (signed raw transactions in, blocks polled out):**
//!    - *PIPE*: transactions call the precompile; the node pre-computes on its workers.
//!    - *inline*: the same transactions; the node runs each model inside block execution.
//!    - *oracle*: the two-transaction pattern. A request transaction calls
//!      `InferenceOracle.request(calldata)` (`contracts/src/bench/InferenceOracle.sol`), which
//!      emits an event; a relayer (this module) reads the events, runs the model on the same
//!      number of workers with the same latency, and sends `fulfill(id, output)` paying the
//!      request's tip. A result counts when its callback is in a block.
//! 4. **Drain.** After the send window every system gets the same `ttl_blocks` block intervals
//!    more. PIPE's transactions end included, expired or rejected by then; what the baselines
//!    still have pending is reported as pending at the end (they have no expiry).
//!
//! # What is reported (JSON on stdout and in `--out`, plus SVG charts there)
//! Per system and load: goodput (results committed per second between `--warmup` and the end
//! of the send window) ÷ C; submit→receipt latency percentiles overall and per fee decile;
//! blocks waited after the results were ready (PIPE: after the head at which the status
//! reported it ready; oracle: after the head when the relayer had the result; inline: after
//! submission); deferrals and expiries per block; mean block build time; transactions per
//! result; the inference gas price at the end.

use std::{
    collections::{HashMap, VecDeque},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_sol_types::{SolCall, SolEvent, SolValue, sol};
use anyhow::Context as _;
use futures::{StreamExt, stream::FuturesUnordered};
use parking_lot::Mutex;
use pipe_executor::inference::{
    INFERENCE_PRECOMPILE, ModelInferenceRequest, ModelInput, MultiDimensionalNumberTensor, Number,
    decode_request, runModelInferenceCall,
};
use pipe_inference_pool::Worker;
use pipe_primitives::{ModelMeta, SystemClock, inference::DType};
use rand::{Rng, SeedableRng, rngs::StdRng};
use rand_distr::{Distribution, Exp, LogNormal};
use serde_json::{Value, json};

use pipe_node::{
    config::InferenceMode,
    node::{RunningNode, launch},
    workers::LocalWorker,
};

use crate::{
    bench::{batch, node_config, quantity, rpc, sign_raw},
    plots::{Chart, Series, line_chart},
};

const GWEI: u128 = 1_000_000_000;
/// Gas limit of every benchmark transaction: room for the inference price to climb.
const TX_GAS: u64 = 2_000_000;
/// Models of the mix: examples whose inputs are all numeric.
const MIX: [&str; 3] = ["linreg", "risk_logreg", "forecast_gbr"];

sol! {
    event InferenceRequested(uint256 indexed id, address indexed requester, bytes request);
    function request(bytes req) returns (uint256 id);
    function fulfill(uint256 id, bytes output);
}

/// The oracle contract's creation code (checked against solc by a test in `tests/tools.rs`).
const ORACLE_CODE: &str = include_str!("inference_oracle.hex");

/// Which system runs the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Pipe,
    Inline,
    Oracle,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Pipe => "pipe",
            System::Inline => "inline",
            System::Oracle => "oracle",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct CongestionBench {
    /// Offered loads, as multiples of the measured capacity.
    pub loads: Vec<f64>,
    /// Send window per load, in seconds.
    pub seconds: f64,
    /// Seconds at the start of the window not counted in goodput (the pipeline filling).
    pub warmup: f64,
    pub latency: Duration,
    pub workers: usize,
    pub block_time: Duration,
    /// PIPE's transaction TTL, in blocks; also every system's drain time after the window.
    pub ttl_blocks: u64,
    pub systems: Vec<System>,
    pub seed: u64,
    /// Where the JSON and the charts go.
    pub out: PathBuf,
}

/// One planned transaction.
#[derive(Clone, Debug)]
struct Planned {
    /// Seconds after the window opens.
    at: f64,
    tip: u128,
    /// Calldata of `runModelInference(request)`.
    call: Bytes,
}

/// What happened to one sent transaction.
#[derive(Clone, Debug, Default)]
struct Fate {
    tip: u128,
    hash: B256,
    submitted: Option<Instant>,
    head_at_submit: u64,
    /// The block with the result (PIPE and inline: the transaction; oracle: its callback).
    included: Option<(u64, Instant)>,
    /// Head when the result was ready for inclusion.
    ready_head: Option<u64>,
    /// Final non-inclusion ("expired", "rejected").
    ended: Option<String>,
}

impl Fate {
    /// Seconds from submission to the block with the result, if it got one.
    fn latency(&self) -> Option<f64> {
        Some((self.included?.1 - self.submitted?).as_secs_f64())
    }

    /// Blocks between the one after the head at which the result was ready and the one that
    /// included it.
    fn blocks_after_ready(&self) -> Option<f64> {
        let (block, _) = self.included?;
        Some(block.saturating_sub(self.ready_head? + 1) as f64)
    }
}

/// The transactions by tip, in ten deciles: the first is the lowest-paying tenth.
fn deciles(fates: &[Fate]) -> Vec<Vec<&Fate>> {
    let mut by_tip: Vec<&Fate> = fates.iter().collect();
    by_tip.sort_by_key(|f| f.tip);
    let n = by_tip.len();
    (0..10)
        .map(|d| by_tip[d * n / 10..(d + 1) * n / 10].to_vec())
        .collect()
}

/// Blocks as the watcher saw them: number → when, and the transactions they carry.
#[derive(Default)]
struct Seen {
    blocks: Vec<(u64, Instant, usize)>,
    txs: HashMap<B256, (u64, Instant)>,
}

/// The example models of the mix, with their metadata.
fn mix(node: &RunningNode) -> anyhow::Result<Vec<ModelMeta>> {
    let all = pipe_rpc::ModelRegistry::list(node.models.as_ref());
    MIX.iter()
        .map(|name| {
            all.iter()
                .find(|m| m.name == *name)
                .filter(|m| m.inputs.iter().all(|i| i.dtype != DType::String))
                .cloned()
                .with_context(|| format!("example model {name} with numeric inputs"))
        })
        .collect()
}

/// A valid request for `model` with values from `rng`: dynamic dimensions are 1.
fn request_for(model: &ModelMeta, rng: &mut StdRng) -> ModelInferenceRequest {
    let numbers = model
        .inputs
        .iter()
        .map(|input| {
            let shape: Vec<u32> = input.shape.iter().map(|d| d.unwrap_or(1) as u32).collect();
            let count: u32 = shape.iter().product();
            let whole = input.dtype == DType::Int64;
            MultiDimensionalNumberTensor {
                name: input.name.clone(),
                values: (0..count)
                    .map(|_| Number {
                        value: rng.random_range(0i128..1000),
                        decimals: if whole { 0 } else { 2 },
                    })
                    .collect(),
                shape,
            }
        })
        .collect();
    ModelInferenceRequest {
        mode: 0,
        modelCID: model.id.to_string(),
        input: ModelInput {
            numbers,
            strings: vec![],
        },
    }
}

/// The load for one point: Poisson arrivals at `rate` per second over `seconds`.
fn plan(models: &[ModelMeta], rate: f64, seconds: f64, rng: &mut StdRng) -> Vec<Planned> {
    let gaps = Exp::new(rate).expect("positive rate");
    let tips = LogNormal::new(0.0, 1.0).expect("valid log-normal");
    let mut at = 0.0;
    let mut out = Vec::new();
    loop {
        at += gaps.sample(rng);
        if at >= seconds {
            return out;
        }
        let model = &models[out.len() % models.len()];
        let tip_gwei: f64 = tips.sample(rng);
        let request = request_for(model, rng);
        out.push(Planned {
            at,
            // Whole wei; at most 100 gwei, under every transaction's 200 gwei fee cap.
            tip: ((tip_gwei.min(100.0)) * GWEI as f64) as u128 + 1,
            call: runModelInferenceCall { request }.abi_encode().into(),
        });
    }
}

/// Polls the node's blocks over JSON-RPC until `stop`, recording when each transaction was
/// first seen in a block and the head number as it moves.
async fn watch_blocks(
    url: String,
    seen: Arc<Mutex<Seen>>,
    head: Arc<AtomicU64>,
    stop: Stop,
) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let mut last = quantity(&rpc(&client, &url, "eth_blockNumber", json!([])).await?);
    head.store(last, Ordering::SeqCst);
    while !stop.is_set() {
        let now_head = quantity(&rpc(&client, &url, "eth_blockNumber", json!([])).await?);
        if now_head > last {
            let blocks = batch(
                &client,
                &url,
                "eth_getBlockByNumber",
                (last + 1..=now_head).map(|n| json!([format!("0x{n:x}"), false])),
            )
            .await?;
            let at = Instant::now();
            let mut s = seen.lock();
            for (n, b) in (last + 1..=now_head).zip(blocks) {
                let txs = b["result"]["transactions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                s.blocks.push((n, at, txs.len()));
                for t in txs {
                    if let Some(h) = t.as_str().and_then(|h| h.parse().ok()) {
                        s.txs.insert(h, (n, at));
                    }
                }
            }
            drop(s);
            last = now_head;
            head.store(last, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// A stop flag shared by the watcher and the relayer.
#[derive(Clone, Debug, Default)]
struct Stop(Arc<AtomicBool>);

impl Stop {
    fn set(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

async fn start_node(
    cfg: &CongestionBench,
    mode: InferenceMode,
    accounts: u32,
    target_units: u64,
) -> anyhow::Result<(RunningNode, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let mut config = node_config(dir.path(), mode, cfg.workers, cfg.latency, cfg.block_time);
    config.dev_accounts = accounts;
    config.tx_ttl_blocks = cfg.ttl_blocks;
    config.inference_pricing.target_units = target_units.max(1);
    let node = launch(config, Arc::new(SystemClock)).await?;
    Ok((node, dir))
}

/// The oracle's relayer: reads request events, runs each request on `workers` (first come,
/// first served), and sends the callback paying the request's tip.
struct Relayer {
    url: String,
    oracle: Address,
    key: alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    node: Arc<pipe_node::models::NodeModels>,
    workers: Vec<Arc<dyn Worker>>,
    /// Request transaction → its tip.
    tips: HashMap<B256, u128>,
    head: Arc<AtomicU64>,
}

/// What the relayer did for one request transaction.
#[derive(Clone, Debug)]
struct Callback {
    hash: B256,
    ready_head: u64,
}

impl Relayer {
    async fn run(self, stop: Stop) -> anyhow::Result<HashMap<B256, Callback>> {
        let client = reqwest::Client::new();
        let mut from = 1u64;
        let mut queue: VecDeque<(B256, U256, Bytes)> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut free: Vec<usize> = (0..self.workers.len()).collect();
        let mut nonce = 1u64; // 0 deployed the oracle.
        let mut done: HashMap<B256, Callback> = HashMap::new();
        while !stop.is_set() {
            let head = self.head.load(Ordering::SeqCst);
            if head >= from {
                let logs = rpc(
                    &client,
                    &self.url,
                    "eth_getLogs",
                    json!([{
                        "fromBlock": format!("0x{from:x}"),
                        "toBlock": format!("0x{head:x}"),
                        "address": self.oracle,
                        "topics": [InferenceRequested::SIGNATURE_HASH],
                    }]),
                )
                .await?;
                for log in logs.as_array().cloned().unwrap_or_default() {
                    let tx: B256 = log["transactionHash"]
                        .as_str()
                        .unwrap_or_default()
                        .parse()?;
                    let id: U256 = log["topics"][1].as_str().unwrap_or_default().parse()?;
                    let data: Bytes = log["data"].as_str().unwrap_or_default().parse()?;
                    // The event's data: (address is indexed) the request bytes.
                    let call = <Bytes as SolValue>::abi_decode(&data)?;
                    queue.push_back((tx, id, call));
                }
                from = head + 1;
            }
            while let (Some(w), Some(_)) = (free.last().copied(), queue.front()) {
                let (tx, id, data) = queue.pop_front().expect("non-empty");
                free.pop();
                let call = decode_request(&data, &|m| {
                    pipe_executor::InferenceProvider::model(self.node.as_ref(), m)
                })
                .map_err(|e| anyhow::anyhow!("relayer decode: {e}"))?;
                let worker = self.workers[w].clone();
                running.push(async move { (w, tx, id, worker.run(Arc::new(call)).await) });
            }
            tokio::select! {
                Some((w, tx, id, result)) = running.next(), if !running.is_empty() => {
                    free.push(w);
                    let result = result.map_err(|e| anyhow::anyhow!("relayer worker: {e}"))?;
                    let output = result.as_result().cloned().unwrap_or_default();
                    let tip = self.tips.get(&tx).copied().unwrap_or(GWEI);
                    let (hash, raw) = sign_raw(
                        &self.key,
                        self.chain_id,
                        nonce,
                        TxKind::Call(self.oracle),
                        fulfillCall { id, output }.abi_encode().into(),
                        TX_GAS,
                        tip,
                    );
                    nonce += 1;
                    rpc(&client, &self.url, "eth_sendRawTransaction", json!([raw])).await?;
                    done.insert(tx, Callback {
                        hash: hash.parse()?,
                        ready_head: self.head.load(Ordering::SeqCst),
                    });
                }
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        Ok(done)
    }
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(sorted[i.min(sorted.len() - 1)])
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// One system under one load.
struct Run {
    fates: Vec<Fate>,
    blocks: Vec<Value>,
    build_ms: f64,
    window: (Instant, Instant),
    included_txs: usize,
    final_price: u64,
}

async fn run_point(
    cfg: &CongestionBench,
    system: System,
    load: &[Planned],
    target_units: u64,
) -> anyhow::Result<Run> {
    let mode = if system == System::Inline {
        InferenceMode::Inline
    } else {
        InferenceMode::Pipe
    };
    // One sender per transaction, plus the relayer.
    let accounts = load.len() as u32 + 1;
    let (node, _dir) = start_node(cfg, mode, accounts, target_units).await?;
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let client = reqwest::Client::new();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let head = Arc::new(AtomicU64::new(0));
    let stop = Stop::default();
    let watcher = tokio::spawn(watch_blocks(
        url.clone(),
        seen.clone(),
        head.clone(),
        stop.clone(),
    ));
    let relayer_key = node.dev_keys[load.len()].clone();

    // The oracle is deployed by the relayer before the window opens.
    let oracle = if system == System::Oracle {
        let mut code = alloy_primitives::hex::decode(ORACLE_CODE.trim())?;
        code.extend(relayer_key.address().abi_encode());
        let (hash, raw) = sign_raw(
            &relayer_key,
            chain_id,
            0,
            TxKind::Create,
            code.into(),
            TX_GAS,
            GWEI,
        );
        rpc(&client, &url, "eth_sendRawTransaction", json!([raw])).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = rpc(&client, &url, "eth_getTransactionReceipt", json!([hash])).await?;
            if let Some(a) = r["contractAddress"].as_str() {
                break Some(a.parse::<Address>()?);
            }
            anyhow::ensure!(Instant::now() < deadline, "oracle not deployed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        None
    };

    // Every transaction signed before the window opens.
    let mut fates: Vec<Fate> = Vec::with_capacity(load.len());
    let mut raws: Vec<Bytes> = Vec::with_capacity(load.len());
    for (i, p) in load.iter().enumerate() {
        let (to, data) = match oracle {
            Some(o) => (
                o,
                requestCall {
                    req: p.call.clone(),
                }
                .abi_encode()
                .into(),
            ),
            None => (INFERENCE_PRECOMPILE, p.call.clone()),
        };
        let (hash, raw) = sign_raw(
            &node.dev_keys[i],
            chain_id,
            0,
            TxKind::Call(to),
            data,
            TX_GAS,
            p.tip,
        );
        fates.push(Fate {
            tip: p.tip,
            hash: hash.parse()?,
            ..Fate::default()
        });
        raws.push(raw);
    }
    let relayer = oracle.map(|oracle| {
        let r = Relayer {
            url: url.clone(),
            oracle,
            key: relayer_key.clone(),
            chain_id,
            node: node.models.clone(),
            workers: LocalWorker::pool(
                cfg.workers,
                &node.models,
                1,
                &pipe_primitives::Tasks::new(),
            ),
            tips: fates.iter().map(|f| (f.hash, f.tip)).collect(),
            head: head.clone(),
        };
        tokio::spawn(r.run(stop.clone()))
    });

    // The send window: every 5 ms, what is due goes out in one batch.
    let start = Instant::now();
    let mut next = 0;
    while next < load.len() {
        let now = start.elapsed().as_secs_f64();
        let due = load[next..].iter().take_while(|p| p.at <= now).count();
        if due > 0 {
            let answers = batch(
                &client,
                &url,
                "eth_sendRawTransaction",
                raws[next..next + due].iter().map(|r| json!([r])),
            )
            .await?;
            let at = Instant::now();
            let h = head.load(Ordering::SeqCst);
            for (f, a) in fates[next..next + due].iter_mut().zip(answers) {
                f.submitted = Some(at);
                f.head_at_submit = h;
                if let Some(e) = a.get("error") {
                    f.ended = Some(format!("rejected at submission: {e}"));
                }
            }
            next += due;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let window_end = start + Duration::from_secs_f64(cfg.seconds);

    // Drain: the same number of block intervals for every system.
    let drain = cfg.block_time * (cfg.ttl_blocks as u32 + 2);
    let drain_end = Instant::now() + drain;
    while Instant::now() < drain_end {
        let done = {
            let s = seen.lock();
            fates
                .iter()
                .all(|f| f.ended.is_some() || s.txs.contains_key(&f.hash))
        };
        if done && system != System::Oracle {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.set();
    watcher.await??;
    let callbacks = match relayer {
        Some(r) => r.await??,
        None => HashMap::new(),
    };

    // Fates: inclusion from the watcher, readiness and endings from the node.
    let blocks_seen = {
        let s = seen.lock();
        for f in &mut fates {
            match system {
                System::Oracle => {
                    if let Some(cb) = callbacks.get(&f.hash) {
                        f.ready_head = Some(cb.ready_head);
                        f.included = s.txs.get(&cb.hash).copied();
                    }
                }
                System::Inline => {
                    f.ready_head = Some(f.head_at_submit);
                    f.included = s.txs.get(&f.hash).copied();
                }
                System::Pipe => f.included = s.txs.get(&f.hash).copied(),
            }
        }
        s.blocks.clone()
    };
    if system == System::Pipe {
        for chunk in fates.chunks_mut(200) {
            let answers = batch(
                &client,
                &url,
                "pipe_getTransactionStatus",
                chunk.iter().map(|f| json!([f.hash])),
            )
            .await?;
            for (f, a) in chunk.iter_mut().zip(answers) {
                let st = &a["result"];
                f.ready_head = st["readyAt"].as_u64();
                let status = st["status"].as_str().unwrap_or_default();
                if matches!(status, "expired" | "rejected" | "replaced" | "evicted")
                    && f.ended.is_none()
                {
                    f.ended = Some(status.to_string());
                }
            }
        }
    }
    let blocks: Vec<Value> = match &node.pipe {
        Some(p) if system == System::Pipe => {
            p.block_history().into_iter().map(|b| json!(b)).collect()
        }
        _ => blocks_seen
            .iter()
            .map(|(n, _, txs)| json!({"number": n, "included": txs, "deferred": 0, "expired": 0}))
            .collect(),
    };
    let history: Vec<_> = node
        .chain
        .history()
        .into_iter()
        .filter(|(_, s)| s.considered > 0)
        .collect();
    let build_ms =
        history.iter().map(|(_, s)| s.build_ms as f64).sum::<f64>() / history.len().max(1) as f64;
    let included_txs = blocks_seen.iter().map(|(_, _, n)| n).sum::<usize>();
    let final_price =
        quantity(&rpc(&client, &url, "pipe_inferenceGasPrice", json!([])).await?["nextPrice"]);
    node.shutdown().await;
    Ok(Run {
        fates,
        blocks,
        build_ms,
        window: (start + Duration::from_secs_f64(cfg.warmup), window_end),
        included_txs,
        final_price,
    })
}

/// The JSON summary of one run.
fn summarize(system: System, load_x: f64, capacity: f64, run: &Run) -> Value {
    let fates = &run.fates;
    let (w0, w1) = run.window;
    let window_s = (w1 - w0).as_secs_f64().max(1e-9);
    let results_in_window = fates
        .iter()
        .filter_map(|f| f.included)
        .filter(|(_, at)| *at >= w0 && *at <= w1)
        .count();
    let goodput = results_in_window as f64 / window_s;
    let all_latency = sorted(fates.iter().filter_map(Fate::latency).collect());
    let decile_rows: Vec<Value> = deciles(fates)
        .iter()
        .enumerate()
        .map(|(d, fs)| {
            let lat = sorted(fs.iter().filter_map(|f| f.latency()).collect());
            let w = sorted(fs.iter().filter_map(|f| f.blocks_after_ready()).collect());
            json!({
                "decile": d + 1,
                "transactions": fs.len(),
                "included": fs.iter().filter(|f| f.included.is_some()).count(),
                "min_tip_gwei": fs.first().map(|f| f.tip as f64 / GWEI as f64),
                "latency_p50_s": percentile(&lat, 0.5),
                "latency_p99_s": percentile(&lat, 0.99),
                "blocks_after_ready_p50": percentile(&w, 0.5),
                "blocks_after_ready_p99": percentile(&w, 0.99),
            })
        })
        .collect();
    let waited_all = sorted(fates.iter().filter_map(Fate::blocks_after_ready).collect());
    let included = fates.iter().filter(|f| f.included.is_some()).count();
    let expired = fates
        .iter()
        .filter(|f| f.included.is_none() && f.ended.as_deref() == Some("expired"))
        .count();
    let rejected = fates
        .iter()
        .filter(|f| f.included.is_none() && f.ended.as_deref().is_some_and(|e| e != "expired"))
        .count();
    let pending = fates.len() - included - expired - rejected;
    let deferrals: u64 = run
        .blocks
        .iter()
        .filter_map(|b| b["deferred"].as_u64())
        .sum();
    let expiries: u64 = run
        .blocks
        .iter()
        .filter_map(|b| b["expired"].as_u64())
        .sum();
    json!({
        "system": system.name(),
        "load_x_capacity": load_x,
        "offered_per_s": load_x * capacity,
        "sent": fates.len(),
        "results_committed": included,
        "expired": expired,
        "rejected": rejected,
        "pending_at_end": pending,
        "goodput_per_s": goodput,
        "goodput_over_capacity": goodput / capacity,
        "latency_s": {
            "p50": percentile(&all_latency, 0.5),
            "p90": percentile(&all_latency, 0.9),
            "p99": percentile(&all_latency, 0.99),
        },
        "blocks_after_ready": {
            "p50": percentile(&waited_all, 0.5),
            "p99": percentile(&waited_all, 0.99),
        },
        "by_fee_decile": decile_rows,
        "deferrals": deferrals,
        "expiries": expiries,
        "mean_block_build_ms": run.build_ms,
        "transactions_per_result": if included == 0 { Value::Null } else { json!(run.included_txs as f64 / included as f64) },
        "inference_gas_price_at_end": run.final_price,
        "blocks": run.blocks,
    })
}

/// Latency CDF points of one decile: (seconds, fraction of the decile included by then).
fn cdf(decile: &[&Fate]) -> Vec<(f64, f64)> {
    let lat = sorted(decile.iter().filter_map(|f| f.latency()).collect());
    let total = decile.len().max(1) as f64;
    lat.iter()
        .enumerate()
        .map(|(i, l)| (*l, (i + 1) as f64 / total))
        .collect()
}

pub async fn run(cfg: CongestionBench) -> anyhow::Result<Value> {
    std::fs::create_dir_all(&cfg.out)?;
    let capacity = crate::bench_pipe::standalone(
        cfg.workers,
        cfg.latency,
        40 * cfg.workers,
        crate::bench_pipe::Load::Model,
    )
    .await?;
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    // The models of the mix and their cost units, read off a throw-away node.
    let (probe, _probe_dir) = start_node(&cfg, InferenceMode::Pipe, 1, 1).await?;
    let models = mix(&probe)?;
    probe.shutdown().await;
    let mean_units = models.iter().map(|m| m.cost_units as f64).sum::<f64>() / models.len() as f64;
    // EIP-1559's elasticity: the price steers toward half of what the network computes.
    let target_units = (capacity * cfg.block_time.as_secs_f64() * mean_units / 2.0).round() as u64;
    let mut points = Vec::new();
    let mut runs: Vec<(System, f64, Run)> = Vec::new();
    for &x in &cfg.loads {
        let load = plan(&models, x * capacity, cfg.seconds, &mut rng);
        for &system in &cfg.systems {
            tracing::info!(target: "pipe::bench", system = system.name(), load = x, txs = load.len(), "congestion point");
            let r = run_point(&cfg, system, &load, target_units).await?;
            points.push(summarize(system, x, capacity, &r));
            runs.push((system, x, r));
        }
    }
    charts(&cfg, &runs, &points)?;
    let out = json!({
        "config": {
            "loads_x_capacity": cfg.loads,
            "seconds": cfg.seconds,
            "warmup_s": cfg.warmup,
            "model_latency_ms": cfg.latency.as_millis() as u64,
            "workers": cfg.workers,
            "block_time_ms": cfg.block_time.as_millis() as u64,
            "ttl_blocks": cfg.ttl_blocks,
            "seed": cfg.seed,
            "models": models.iter().map(|m| json!({"name": m.name, "cost_units": m.cost_units})).collect::<Vec<_>>(),
            "inference_target_units_per_block": target_units,
            "tips": "log-normal, median 1 gwei, sigma 1, capped at 100 gwei",
        },
        "capacity_per_s": capacity,
        "points": points,
    });
    std::fs::write(
        cfg.out.join("congestion.json"),
        serde_json::to_string_pretty(&out)?,
    )?;
    Ok(out)
}

/// The charts of `runs`, whose summaries are `points` (in the same order).
fn charts(
    cfg: &CongestionBench,
    runs: &[(System, f64, Run)],
    points: &[Value],
) -> anyhow::Result<()> {
    let goodput: Vec<Series> = cfg
        .systems
        .iter()
        .map(|s| Series {
            label: s.name().into(),
            points: runs
                .iter()
                .zip(points)
                .filter(|((sys, _, _), _)| sys == s)
                .map(|((_, x, _), v)| (*x, v["goodput_over_capacity"].as_f64().unwrap_or(0.0)))
                .collect(),
        })
        .collect();
    line_chart(
        &cfg.out.join("goodput.svg"),
        &Chart {
            title: "Goodput vs offered load",
            x_label: "offered load (x capacity)",
            y_label: "results committed per second / capacity",
            log_x: true,
            series: &goodput,
        },
    )?;
    // Per system: latency CDF per fee decile at the load nearest 5x.
    let Some(&focus) = cfg
        .loads
        .iter()
        .min_by(|a, b| (*a - 5.0).abs().total_cmp(&(*b - 5.0).abs()))
    else {
        return Ok(());
    };
    for (system, x, r) in runs.iter().filter(|(_, x, _)| *x == focus) {
        let series: Vec<Series> = deciles(&r.fates)
            .iter()
            .enumerate()
            .map(|(d, fates)| Series {
                label: format!("fee decile {}", d + 1),
                points: cdf(fates),
            })
            .collect();
        let title = format!(
            "{}: submit to receipt by fee decile at {x}x capacity",
            system.name()
        );
        line_chart(
            &cfg.out
                .join(format!("latency_cdf_{}_{x}x.svg", system.name())),
            &Chart {
                title: &title,
                x_label: "seconds from submission to receipt",
                y_label: "fraction of the decile included",
                log_x: false,
                series: &series,
            },
        )?;
        if *system == System::Pipe {
            let per_block = |key: &str| -> Vec<(f64, f64)> {
                r.blocks
                    .iter()
                    .filter_map(|b| Some((b["number"].as_f64()?, b[key].as_f64()?)))
                    .collect()
            };
            let series = [
                Series {
                    label: "included".into(),
                    points: per_block("included"),
                },
                Series {
                    label: "deferred (carried over or stale)".into(),
                    points: per_block("deferred"),
                },
                Series {
                    label: "expired".into(),
                    points: per_block("expired"),
                },
            ];
            let title = format!("PIPE per block at {x}x capacity");
            line_chart(
                &cfg.out.join(format!("blocks_pipe_{x}x.svg")),
                &Chart {
                    title: &title,
                    x_label: "block",
                    y_label: "transactions",
                    log_x: false,
                    series: &series,
                },
            )?;
        }
    }
    Ok(())
}
