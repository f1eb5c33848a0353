//! `pipe bench freeride`: honest users' latency while attackers try to make them wait.
//!
//! The attack (issue 18): a contract call that makes one inference request more than a
//! transaction may. Before the request bound became the precompile's, PIPE ran eight requests
//! and then rejected such a transaction, so its sender paid nothing; two attackers sending
//! them raised honest users' median latency from 0.61 s to 5.21 s. Now the ninth call reverts
//! in the EVM, the transaction is included as a revert that pays for the eight runs, and at
//! equal tips a transaction's later requests queue behind other transactions' first ones.
//!
//! One in-process PIPE node (workers whose runs take `latency` more, real block time):
//! 1. **Idle.** `honest` senders each send one single-inference transaction every
//!    `honest_interval`, for `seconds`: latency from send to inclusion.
//! 2. **Under attack.** The same honest load while `attackers` × `accounts` senders each keep
//!    one transaction of `attack_requests` requests (through the ManyInferences test
//!    contract) in the pool at all times, sending the next as soon as the last ends.
//!
//! Ratio: median honest latency under attack ÷ idle (goal ≤ 1.5). Also what the attackers'
//! transactions became and what they paid.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_sol_types::SolCall;
use anyhow::Context as _;
use pipe_executor::inference::{MAX_REQUESTS_PER_TX, runModelInferenceCall};
use pipe_node::{
    config::InferenceMode,
    node::{RunningNode, launch},
};
use pipe_primitives::SystemClock;
use serde_json::{Value, json};

const GWEI: u128 = 1_000_000_000;

mod many {
    alloy_sol_types::sol! {
        function run(bytes[] calls) external;
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct FreerideBench {
    pub honest: usize,
    pub honest_interval: Duration,
    pub attackers: usize,
    /// Sending accounts per attacker.
    pub accounts: usize,
    /// Requests per attacking transaction (one past the bound by default).
    pub attack_requests: usize,
    pub seconds: f64,
    pub latency: Duration,
    pub workers: usize,
    pub block_time: Duration,
    /// The ManyInferences artifact (tools/js/compile.js).
    pub contract: PathBuf,
}

struct Node {
    node: RunningNode,
    cid: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Node {
    fn url(&self) -> String {
        self.node.rpc_url()
    }

    async fn send(&self, raw: &Bytes) -> anyhow::Result<()> {
        crate::bench::rpc(
            &self.client,
            &self.url(),
            "eth_sendRawTransaction",
            json!([raw]),
        )
        .await
        .map(|_| ())
    }

    /// The block that included `hash`, if any.
    fn included(&self, hash: &B256) -> anyhow::Result<bool> {
        Ok(self.node.store.transaction_location(hash)?.is_some())
    }

    /// The receipt of `hash`, once included.
    async fn receipt(&self, hash: &B256) -> anyhow::Result<Option<Value>> {
        let r = crate::bench::rpc(
            &self.client,
            &self.url(),
            "eth_getTransactionReceipt",
            json!([hash]),
        )
        .await?;
        Ok((!r.is_null()).then_some(r))
    }

    async fn balance(&self, who: Address) -> anyhow::Result<U256> {
        let v = crate::bench::rpc(
            &self.client,
            &self.url(),
            "eth_getBalance",
            json!([who, "latest"]),
        )
        .await?;
        Ok(v.as_str().context("balance")?.parse()?)
    }
}

/// A linreg request, distinct per `salt`.
fn inference(cid: &str, salt: i128) -> Bytes {
    runModelInferenceCall {
        request: crate::bench_pipe::request(cid, salt),
    }
    .abi_encode()
    .into()
}

/// Latencies (s) of honest transactions sent by `honest` senders (dev accounts `0..honest`,
/// nonces from `nonces`) every `interval` for `seconds`, each waited for until included.
async fn honest_load(
    n: &Node,
    cfg: &FreerideBench,
    nonces: &mut [u64],
    salt: &mut i128,
) -> anyhow::Result<Vec<f64>> {
    let chain_id = n.node.executor.config().chain_id;
    let start = Instant::now();
    let mut pending: Vec<(B256, Instant)> = Vec::new();
    let mut latencies = Vec::new();
    let mut next_send = start;
    while start.elapsed().as_secs_f64() < cfg.seconds || !pending.is_empty() {
        anyhow::ensure!(
            start.elapsed().as_secs_f64() < cfg.seconds + 120.0,
            "honest transactions not included within 120 s of the window"
        );
        if start.elapsed().as_secs_f64() < cfg.seconds && Instant::now() >= next_send {
            for (s, nonce) in nonces.iter_mut().enumerate().take(cfg.honest) {
                *salt += 1;
                let (hash, raw) = crate::bench::sign_raw(
                    &n.node.dev_keys[s],
                    chain_id,
                    *nonce,
                    TxKind::Call(pipe_executor::INFERENCE_PRECOMPILE),
                    inference(&n.cid, *salt),
                    300_000,
                    GWEI,
                );
                *nonce += 1;
                n.send(&raw).await?;
                pending.push((hash.parse()?, Instant::now()));
            }
            next_send += cfg.honest_interval;
        }
        let mut still = Vec::new();
        for (hash, sent) in pending {
            if n.included(&hash)? {
                latencies.push(sent.elapsed().as_secs_f64());
            } else {
                still.push((hash, sent));
            }
        }
        pending = still;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(latencies)
}

/// What the attackers' transactions became.
#[derive(Default, Debug)]
struct AttackTally {
    sent: u64,
    included_reverted: u64,
    included_ok: u64,
    refused: u64,
    ended_otherwise: u64,
}

/// Keeps one attacking transaction per account in the pool until `stop` is set.
async fn attack(
    n: Arc<Node>,
    accounts: Vec<usize>,
    contract: Address,
    requests: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
    salt_base: i128,
) -> anyhow::Result<AttackTally> {
    let chain_id = n.node.executor.config().chain_id;
    let mut tally = AttackTally::default();
    let mut nonces: HashMap<usize, u64> = accounts.iter().map(|a| (*a, 0)).collect();
    let mut live: HashMap<usize, B256> = HashMap::new();
    let mut salt = salt_base;
    let pipe = n.node.pipe.clone().context("PIPE mode")?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for &a in &accounts {
            if let Some(hash) = live.get(&a) {
                if let Some(r) = n.receipt(hash).await? {
                    if r["status"] == "0x1" {
                        tally.included_ok += 1;
                    } else {
                        tally.included_reverted += 1;
                    }
                    live.remove(&a);
                } else if pipe.status(hash).is_some_and(|s| s.status.is_final()) {
                    tally.ended_otherwise += 1;
                    live.remove(&a);
                    // Its nonce was not used: the next transaction reuses it.
                    *nonces.get_mut(&a).expect("account") -= 1;
                } else {
                    continue;
                }
            }
            let calls: Vec<Bytes> = (0..requests)
                .map(|_| {
                    salt += 1;
                    inference(&n.cid, salt)
                })
                .collect();
            let nonce = nonces[&a];
            let (hash, raw) = crate::bench::sign_raw(
                &n.node.dev_keys[a],
                chain_id,
                nonce,
                TxKind::Call(contract),
                many::runCall { calls }.abi_encode().into(),
                2_000_000,
                GWEI,
            );
            tally.sent += 1;
            match n.send(&raw).await {
                Ok(()) => {
                    *nonces.get_mut(&a).expect("account") += 1;
                    live.insert(a, hash.parse()?);
                }
                Err(_) => tally.refused += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tally)
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(cfg: FreerideBench) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let mut config = crate::bench::node_config(
        dir.path(),
        InferenceMode::Pipe,
        cfg.workers,
        cfg.latency,
        cfg.block_time,
    );
    let attacking = cfg.attackers * cfg.accounts;
    config.dev_accounts = (cfg.honest + attacking + 1) as u32;
    let node = launch(config, Arc::new(SystemClock)).await?;
    let cid = pipe_rpc::ModelRegistry::list(node.models.as_ref())
        .into_iter()
        .find(|m| m.name == "linreg")
        .map(|m| m.id.to_string())
        .context("linreg example model")?;
    let n = Arc::new(Node {
        node,
        cid,
        client: reqwest::Client::new(),
        _dir: dir,
    });
    let chain_id = n.node.executor.config().chain_id;

    // The attackers' contract, deployed by the last account.
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(&cfg.contract)
            .with_context(|| format!("{} (node tools/js/compile.js)", cfg.contract.display()))?,
    )?;
    let code = alloy_primitives::hex::decode(
        artifact["bytecode"]
            .as_str()
            .context("bytecode in the artifact")?,
    )?;
    let deployer = cfg.honest + attacking;
    let (deploy, raw) = crate::bench::sign_raw(
        &n.node.dev_keys[deployer],
        chain_id,
        0,
        TxKind::Create,
        code.into(),
        2_000_000,
        GWEI,
    );
    n.send(&raw).await?;
    let deploy: B256 = deploy.parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let contract = loop {
        if let Some(r) = n.receipt(&deploy).await? {
            break r["contractAddress"]
                .as_str()
                .context("contract address")?
                .parse::<Address>()?;
        }
        anyhow::ensure!(Instant::now() < deadline, "deployment not included");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut nonces = vec![0u64; cfg.honest];
    let mut salt = 0i128;
    let mut idle = honest_load(&n, &cfg, &mut nonces, &mut salt).await?;

    let attackers: Vec<Address> = (cfg.honest..cfg.honest + attacking)
        .map(|a| n.node.dev_keys[a].address())
        .collect();
    let mut before = U256::ZERO;
    for a in &attackers {
        before += n.balance(*a).await?;
    }
    let runs_before = model_runs(&n.node);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..cfg.attackers {
        let accounts: Vec<usize> =
            (cfg.honest + k * cfg.accounts..cfg.honest + (k + 1) * cfg.accounts).collect();
        tasks.push(tokio::spawn(attack(
            n.clone(),
            accounts,
            contract,
            cfg.attack_requests,
            stop.clone(),
            1_000_000_000 * (k as i128 + 1),
        )));
    }
    // Let the attack fill the queue before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut attacked = honest_load(&n, &cfg, &mut nonces, &mut salt).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut tally = AttackTally::default();
    for t in tasks {
        let t = t.await??;
        tally.sent += t.sent;
        tally.included_reverted += t.included_reverted;
        tally.included_ok += t.included_ok;
        tally.refused += t.refused;
        tally.ended_otherwise += t.ended_otherwise;
    }
    let mut after = U256::ZERO;
    for a in &attackers {
        after += n.balance(*a).await?;
    }
    let runs = model_runs(&n.node) - runs_before;
    let paid_gwei = (before.saturating_sub(after) / U256::from(GWEI)).to::<u128>();
    let idle_p50 = percentile(&mut idle, 0.5);
    let attacked_p50 = percentile(&mut attacked, 0.5);
    let out = json!({
        "config": {
            "honest_senders": cfg.honest,
            "honest_interval_ms": cfg.honest_interval.as_millis() as u64,
            "attackers": cfg.attackers,
            "accounts_per_attacker": cfg.accounts,
            "requests_per_attack_tx": cfg.attack_requests,
            "request_bound": MAX_REQUESTS_PER_TX,
            "window_s": cfg.seconds,
            "model_latency_ms": cfg.latency.as_millis() as u64,
            "workers": cfg.workers,
            "block_time_ms": cfg.block_time.as_millis() as u64,
        },
        "idle": {
            "honest_txs": idle.len(),
            "p50_s": idle_p50,
            "p90_s": percentile(&mut idle, 0.9),
        },
        "under_attack": {
            "honest_txs": attacked.len(),
            "p50_s": attacked_p50,
            "p90_s": percentile(&mut attacked, 0.9),
        },
        "attack": {
            "sent": tally.sent,
            "included_reverted": tally.included_reverted,
            "included_ok": tally.included_ok,
            "refused_at_rpc": tally.refused,
            "ended_off_chain": tally.ended_otherwise,
            "model_runs_during_attack": runs,
            "attackers_paid_gwei": paid_gwei.to_string(),
        },
        "ratio_p50_attacked_over_idle": attacked_p50 / idle_p50,
    });
    Arc::try_unwrap(n)
        .map_err(|_| anyhow::anyhow!("node still shared"))?
        .node
        .shutdown()
        .await;
    Ok(out)
}

/// Model runs PIPE's workers have completed.
fn model_runs(node: &RunningNode) -> f64 {
    let Some(pipe) = &node.pipe else { return 0.0 };
    pipe.render_metrics()
        .lines()
        .filter(|l| l.starts_with("pipe_worker_completed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
