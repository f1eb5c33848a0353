//! `pipe bench validators`: four validators on loopback against the single-node dev chain, at
//! the same block time and the same load.
//!
//! Both are real `pipe` processes on this machine (the validators share its cores). The load:
//! `senders` dev accounts each send a transaction every `interval` for `seconds` (every
//! `inference_every`-th a linreg inference request, the rest transfers), spread round-robin
//! over the validators; each is timed from its send until a node answers its receipt (on the
//! dev chain every block is final; a validator serves only finalized blocks). Then:
//! - submit → finalized receipt p50 and p99, transactions per second, inference transactions
//!   per block (validators ÷ single node: goals p50/p99 ≤ 1.2, tps ≥ 0.9);
//! - from the validators' metrics: how many leader results were found in PIPE's cache versus
//!   run again, and the time a validator spends verifying a block before it votes, with the
//!   VANILLA check on every result (`all`), on a sample (`1/4`) and off.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use alloy_primitives::{Address, Bytes, TxKind};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::SolCall;
use anyhow::Context as _;
use pipe_executor::inference::runModelInferenceCall;
use pipe_node::localnet::{self, LocalnetConfig};
use serde_json::{Value, json};

use crate::bench::{batch, quantity, rpc, sign_raw};

const GWEI: u128 = 1_000_000_000;
/// Blocks both chains make before the load starts.
const WARMUP_BLOCKS: u64 = 3;

/// What to run.
#[derive(Clone, Debug)]
pub struct ValidatorsBench {
    pub validators: usize,
    pub senders: usize,
    pub interval: Duration,
    pub inference_every: usize,
    pub seconds: f64,
    pub block_time_ms: u64,
    /// Result-check policies to measure verification with.
    pub checks: Vec<String>,
    /// The `pipe` binary (default: beside this one).
    pub pipe: Option<PathBuf>,
}

/// One load's outcome.
#[derive(Debug, Default)]
struct LoadResult {
    latencies_s: Vec<f64>,
    sent: usize,
    included: usize,
    inference_included: usize,
    blocks: u64,
    elapsed_s: f64,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(x: f64) -> f64 {
    (x * 1e4).round() / 10.0
}

impl LoadResult {
    fn json(&mut self) -> Value {
        json!({
            "sent": self.sent,
            "included": self.included,
            "p50_ms": ms(percentile(&mut self.latencies_s, 0.5)),
            "p99_ms": ms(percentile(&mut self.latencies_s, 0.99)),
            "tps": (self.included as f64 / self.elapsed_s * 10.0).round() / 10.0,
            "blocks": self.blocks,
            "inference_txs_per_block": if self.blocks == 0 { 0.0 } else {
                (self.inference_included as f64 / self.blocks as f64 * 100.0).round() / 100.0
            },
        })
    }
}

/// Sends the load to `urls` (round-robin) and waits for every receipt on `urls[0]`, once
/// the chain has made `WARMUP_BLOCKS` blocks (validators take a few views to connect).
async fn load(urls: &[String], cid: &str, cfg: &ValidatorsBench) -> anyhow::Result<LoadResult> {
    let client = reqwest::Client::new();
    let warm = Instant::now();
    while quantity(&rpc(&client, &urls[0], "eth_blockNumber", json!([])).await?) < WARMUP_BLOCKS {
        anyhow::ensure!(warm.elapsed() < Duration::from_secs(120), "no blocks");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let keys: Vec<PrivateKeySigner> = pipe_node::dev::dev_signers(10)?
        .into_iter()
        .take(cfg.senders)
        .collect();
    let first_block = quantity(&rpc(&client, &urls[0], "eth_blockNumber", json!([])).await?);
    let mut nonces = vec![0u64; keys.len()];
    let mut pending: Vec<(String, Instant, bool)> = Vec::new();
    let mut out = LoadResult::default();
    let start = Instant::now();
    let mut next_send = start;
    let mut i = 0usize;
    let mut last_poll = start;
    let mut last_included = start;
    while start.elapsed().as_secs_f64() < cfg.seconds || !pending.is_empty() {
        if start.elapsed().as_secs_f64() > cfg.seconds + 120.0 {
            anyhow::bail!(
                "{} transactions not included 120 s after the load",
                pending.len()
            );
        }
        if start.elapsed().as_secs_f64() < cfg.seconds && Instant::now() >= next_send {
            for (s, key) in keys.iter().enumerate() {
                let inference = i.is_multiple_of(cfg.inference_every.max(1));
                let (to, input, gas) = if inference {
                    let request = crate::bench_pipe::request(cid, i as i128);
                    let data: Bytes = runModelInferenceCall { request }.abi_encode().into();
                    (
                        TxKind::Call(pipe_executor::INFERENCE_PRECOMPILE),
                        data,
                        300_000,
                    )
                } else {
                    (
                        TxKind::Call(Address::repeat_byte(0xee)),
                        Bytes::new(),
                        21_000,
                    )
                };
                let (hash, raw) = sign_raw(key, 31337, nonces[s], to, input, gas, GWEI);
                nonces[s] += 1;
                let url = &urls[i % urls.len()];
                let sent = Instant::now();
                rpc(&client, url, "eth_sendRawTransaction", json!([raw]))
                    .await
                    .context("sending")?;
                pending.push((hash, sent, inference));
                out.sent += 1;
                i += 1;
            }
            next_send += cfg.interval;
        }
        if last_poll.elapsed() >= Duration::from_millis(50) && !pending.is_empty() {
            last_poll = Instant::now();
            let answers = batch(
                &client,
                &urls[0],
                "eth_getTransactionReceipt",
                pending.iter().map(|(h, _, _)| json!([h])),
            )
            .await?;
            let now = Instant::now();
            let mut kept = Vec::new();
            for ((hash, sent, inference), a) in pending.drain(..).zip(answers) {
                if a["result"].is_object() {
                    out.latencies_s.push((now - sent).as_secs_f64());
                    out.included += 1;
                    out.inference_included += inference as usize;
                    last_included = now;
                } else {
                    kept.push((hash, sent, inference));
                }
            }
            pending = kept;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let last_block = quantity(&rpc(&client, &urls[0], "eth_blockNumber", json!([])).await?);
    out.blocks = last_block.saturating_sub(first_block);
    out.elapsed_s = (last_included - start).as_secs_f64().max(1e-3);
    Ok(out)
}

async fn wait_rpc(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if rpc(&client, url, "eth_chainId", json!([])).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{url} did not answer")
}

async fn linreg(url: &str) -> anyhow::Result<String> {
    let models = rpc(&reqwest::Client::new(), url, "pipe_listModels", json!([])).await?;
    models
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "linreg"))
        .and_then(|m| m["id"].as_str())
        .map(str::to_string)
        .context("the dev chain's linreg model")
}

fn free_base(n: u16) -> u16 {
    for base in (21_000..60_000).step_by(97) {
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    21_000
}

/// A metric's value from a Prometheus text page.
fn metric(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

struct Single(Child);

impl Drop for Single {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub async fn run(cfg: ValidatorsBench) -> anyhow::Result<Value> {
    let exe = match &cfg.pipe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("pipe"),
    };
    anyhow::ensure!(exe.exists(), "{} is not built", exe.display());

    // The single node.
    let dir = tempfile::tempdir()?;
    let port = free_base(1);
    let single = Single(
        Command::new(&exe)
            .args(["node", "--dev", "--no-ui", "--block-time-ms"])
            .arg(cfg.block_time_ms.to_string())
            .args(["--http.port", &port.to_string(), "--datadir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let url = format!("http://127.0.0.1:{port}");
    wait_rpc(&url).await?;
    let cid = linreg(&url).await?;
    let mut alone = load(std::slice::from_ref(&url), &cid, &cfg).await?;
    drop(single);

    // The validators, once per result-check policy; the load is measured on the first.
    let mut networks = Vec::new();
    let mut verification = serde_json::Map::new();
    for (round, check) in cfg.checks.iter().enumerate() {
        let dir = tempfile::tempdir()?;
        let n = cfg.validators as u16;
        let base = free_base(3 * n);
        let mut net = localnet::start(LocalnetConfig {
            validators: cfg.validators,
            dir: dir.path().to_path_buf(),
            http_port: base,
            metrics_port: base + n,
            p2p_port: base + 2 * n,
            ui_port: None,
            block_time_ms: cfg.block_time_ms,
            result_check: check.clone(),
            exe: exe.clone(),
            node_args: Vec::new(),
        })
        .await?;
        let urls: Vec<String> = net.members.iter().map(|m| m.rpc_url.clone()).collect();
        let cid = linreg(&urls[0]).await?;
        let mut result = load(&urls, &cid, &cfg).await;
        // Metrics of every validator, summed.
        let (mut voted, mut voted_us, mut hits, mut runs) = (0.0, 0.0, 0.0, 0.0);
        for i in 0..cfg.validators {
            let page = reqwest::get(format!("http://127.0.0.1:{}/metrics", base + n + i as u16))
                .await?
                .text()
                .await?;
            voted += metric(&page, "pipe_validator_verified_blocks_total");
            voted_us += metric(&page, "pipe_validator_verify_microseconds_total");
            hits += metric(&page, "pipe_validator_result_cache_hits_total");
            runs += metric(&page, "pipe_validator_result_local_runs_total");
        }
        net.stop().await;
        let result = result.as_mut().map_err(|e| anyhow::anyhow!("{e}"))?;
        verification.insert(
            check.clone(),
            json!({
                "blocks_verified_before_voting": voted,
                "verify_ms_per_block": if voted > 0.0 { (voted_us / voted / 10.0).round() / 100.0 } else { 0.0 },
                "results_checked": hits + runs,
                "cache_hit_rate": if hits + runs > 0.0 { (hits / (hits + runs) * 1000.0).round() / 1000.0 } else { f64::NAN },
            }),
        );
        if round == 0 {
            networks.push(result.json());
        }
    }
    let single = alone.json();
    let validators = networks.pop().unwrap_or(Value::Null);
    let ratio = |k: &str| {
        let (v, s) = (validators[k].as_f64(), single[k].as_f64());
        match (v, s) {
            (Some(v), Some(s)) if s > 0.0 => json!((v / s * 100.0).round() / 100.0),
            _ => Value::Null,
        }
    };
    Ok(json!({
        "validators": cfg.validators,
        "block_time_ms": cfg.block_time_ms,
        "load": {
            "senders": cfg.senders,
            "interval_ms": cfg.interval.as_millis() as u64,
            "inference_every": cfg.inference_every,
            "seconds": cfg.seconds,
        },
        "single_node": single,
        "validator_network": validators,
        "ratios": {
            "p50": ratio("p50_ms"),
            "p99": ratio("p99_ms"),
            "tps": ratio("tps"),
        },
        "verification": verification,
    }))
}
