//! `pipe bench`: benchmarks that print JSON. Ratios are measured in one run (ours ÷ baseline).
//!
//! - `exec`: a block of plain transfers and one of ERC-20 transfers, executed through the
//!   node's executor (its block loop over the redb state: system calls, receipts, roots, the
//!   change set) and
//!   through a bare revm loop (`transact_commit` over a cache of the same redb state). Also
//!   reports the cost of committing the block (state changes + state root) as state grows.
//! - `ingest`: the same pre-signed transfers from the dev accounts sent over JSON-RPC to pipe
//!   and to anvil, reporting send rate and first-send → last-receipt rate.

use std::{path::PathBuf, sync::Arc, time::Instant};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::Encodable2718;
use alloy_evm::FromRecoveredTx;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, Bytes, TxKind, U256, hex};
use alloy_signer_local::PrivateKeySigner;
use anyhow::Context as _;
use pipe_executor::{BlockAttributes, Executor, StateDb};
use pipe_primitives::{ChainConfig, StoredTx};
use pipe_storage::Store;
use revm::{
    Context, ExecuteCommitEvm, MainBuilder, MainContext, context::TxEnv, database::CacheDB,
};
use serde_json::{Value, json};

use pipe_node::config::{BlockTime, InferenceMode, NodeConfig};

const GWEI: u128 = 1_000_000_000;

/// A quiet in-process node for a benchmark in `dir`: a free port, no banner, `mode`, `workers`
/// in-process workers whose model runs take `latency` more, a block every `block_time`.
pub(crate) fn node_config(
    dir: &std::path::Path,
    mode: InferenceMode,
    workers: usize,
    latency: std::time::Duration,
    block_time: std::time::Duration,
) -> NodeConfig {
    let mut config = NodeConfig::dev(dir.to_path_buf());
    config.http_port = 0;
    config.print_banner = false;
    config.inference_mode = mode;
    config.workers = workers;
    config.model_latency = latency;
    config.block_time = BlockTime::Interval(block_time);
    config
}

/// One JSON-RPC call; its `result`, or the node's error as an error.
pub(crate) async fn rpc(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: Value,
) -> anyhow::Result<Value> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let answer: Value = client.post(url).json(&body).send().await?.json().await?;
    if let Some(e) = answer.get("error") {
        anyhow::bail!("{method}: {e}");
    }
    Ok(answer["result"].clone())
}

/// A batch of calls of one method; the answers in order (errors as JSON values).
pub(crate) async fn batch(
    client: &reqwest::Client,
    url: &str,
    method: &str,
    params: impl IntoIterator<Item = Value>,
) -> anyhow::Result<Vec<Value>> {
    let body: Vec<Value> = params
        .into_iter()
        .enumerate()
        .map(|(i, p)| json!({"jsonrpc": "2.0", "id": i, "method": method, "params": p}))
        .collect();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut answers: Vec<Value> = client.post(url).json(&body).send().await?.json().await?;
    answers.sort_by_key(|a| a["id"].as_u64().unwrap_or(u64::MAX));
    Ok(answers)
}

/// A hex quantity as a number (0 when it is not one).
pub(crate) fn quantity(v: &Value) -> u64 {
    v.as_str()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or_default()
}

/// Shared, as the pool's transactions are when a block takes them.
fn sign(key: &PrivateKeySigner, nonce: u64, to: TxKind, input: Bytes, gas: u64) -> Arc<StoredTx> {
    let mut tx = TxEip1559 {
        chain_id: pipe_primitives::chain::DEV_CHAIN_ID,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 100 * GWEI,
        max_priority_fee_per_gas: GWEI,
        to,
        value: if input.is_empty() {
            U256::from(1)
        } else {
            U256::ZERO
        },
        input,
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).expect("signing");
    let env: TxEnvelope = tx.into_signed(sig).into();
    Arc::new(StoredTx {
        hash: *env.tx_hash(),
        sender: key.address(),
        tx: env,
    })
}

/// An EIP-1559 transaction as (hash, raw EIP-2718 bytes), paying `tip` under a 200 gwei cap.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sign_raw(
    key: &PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: TxKind,
    input: Bytes,
    gas: u64,
    tip: u128,
) -> (String, Bytes) {
    let mut tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit: gas,
        max_fee_per_gas: 200 * GWEI,
        max_priority_fee_per_gas: tip,
        to,
        input,
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).expect("signing");
    let env: TxEnvelope = tx.into_signed(sig).into();
    (env.tx_hash().to_string(), env.encoded_2718().into())
}

/// The TestToken contract's creation code, from its compiled artifact.
fn token_code(artifact: &std::path::Path) -> anyhow::Result<Bytes> {
    let artifact: Value =
        serde_json::from_str(&std::fs::read_to_string(artifact).with_context(|| {
            format!("reading {} (run tools/js/compile.js)", artifact.display())
        })?)?;
    Ok(Bytes::from(hex::decode(
        artifact["bytecode"].as_str().context("bytecode")?,
    )?))
}

/// ERC-20 `transfer(to, amount)` calldata.
fn transfer_call(to: Address, amount: u64) -> Bytes {
    let mut data = hex!("a9059cbb").to_vec();
    data.extend_from_slice(&[0u8; 12]);
    data.extend_from_slice(to.as_slice());
    data.extend_from_slice(&U256::from(amount).to_be_bytes::<32>());
    data.into()
}

struct Chain {
    store: Arc<Store>,
    executor: Executor,
    head: Arc<pipe_primitives::SealedBlock>,
    _dir: tempfile::TempDir,
}

impl Chain {
    fn new(funded: &[Address]) -> anyhow::Result<Self> {
        Self::with_archive(funded, false)
    }

    /// A chain whose store keeps an archive ([`Store::set_archive`]) or not.
    fn with_archive(funded: &[Address], archive: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = pipe_node::config::NodeConfig::dev(dir.path().to_path_buf());
        config.dev_accounts = 1;
        let mut chain: ChainConfig = pipe_node::node::chain_config(&config)?;
        let rich = U256::from(10u128.pow(24));
        for a in funded {
            chain.genesis.alloc.insert(
                *a,
                alloy_genesis::GenesisAccount::default().with_balance(rich),
            );
        }
        let chain = Arc::new(chain);
        let store = Arc::new(Store::open(&dir.path().join("chain.redb"))?);
        store.set_archive(archive)?;
        let genesis = store.init_genesis(&pipe_chain::genesis::changes(&chain), |root| {
            pipe_chain::genesis::block(&chain, root)
        })?;
        Ok(Self {
            store,
            executor: Executor::new(chain),
            head: Arc::new(genesis),
            _dir: dir,
        })
    }

    fn attrs(&self) -> BlockAttributes {
        let h = &self.head.header;
        BlockAttributes {
            parent_hash: self.head.hash,
            number: h.number + 1,
            timestamp: h.timestamp + 1,
            beneficiary: Address::ZERO,
            gas_limit: 1_000_000_000,
            base_fee: 1,
            prevrandao: self.head.hash,
            inference_gas_price: pipe_primitives::header::DEFAULT_INFERENCE_GAS_PRICE,
            edits: Default::default(),
        }
    }

    /// Executes `txs` as the next block through the node executor, without committing.
    fn execute(&self, txs: &[Arc<StoredTx>]) -> anyhow::Result<pipe_executor::ExecutedBlock> {
        let mut b = self
            .executor
            .build_block(self.store.state()?, self.attrs())?;
        for tx in txs {
            b.execute(tx.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        Ok(b.finish()?)
    }

    /// Executes and commits `txs` as the next block; returns (execute seconds, commit seconds).
    fn block(&mut self, txs: &[Arc<StoredTx>]) -> anyhow::Result<(f64, f64)> {
        let t = Instant::now();
        let mut executed = self.execute(txs)?;
        let exec = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let changes = std::mem::take(&mut executed.changes);
        let sealed = self
            .store
            .commit_block(&changes, |root| executed.seal(root))?;
        let commit = t.elapsed().as_secs_f64();
        self.head = Arc::new(sealed);
        Ok((exec, commit))
    }

    /// The node executor on `txs` without committing: seconds, gas, and the seconds of its
    /// phases (start with pre-block system calls, the transactions, finish with post-block
    /// system calls, change set and roots).
    fn executor_run(&self, txs: &[Arc<StoredTx>]) -> anyhow::Result<(f64, u64, [f64; 3])> {
        let t = Instant::now();
        let mut b = self
            .executor
            .build_block(self.store.state()?, self.attrs())?;
        let started = t.elapsed().as_secs_f64();
        for tx in txs {
            b.execute(tx.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let executed_txs = t.elapsed().as_secs_f64();
        let executed = b.finish()?;
        let total = t.elapsed().as_secs_f64();
        Ok((
            total,
            executed.header.gas_used,
            [started, executed_txs - started, total - executed_txs],
        ))
    }

    /// A bare revm loop on `txs` over a cache of the same state: seconds and gas.
    fn bare_revm_run(&self, txs: &[Arc<StoredTx>]) -> anyhow::Result<(f64, u64)> {
        let env = self.executor.evm_env(&self.attrs());
        let t = Instant::now();
        let db = CacheDB::new(StateDb::new(self.store.state()?));
        let mut evm = Context::mainnet()
            .with_db(db)
            .with_block(env.block_env)
            .with_cfg(env.cfg_env)
            .build_mainnet();
        let mut gas = 0;
        for tx in txs {
            let r = evm
                .transact_commit(TxEnv::from_recovered_tx(&tx.tx, tx.sender))
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            gas += r.tx_gas_used();
        }
        Ok((t.elapsed().as_secs_f64(), gas))
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Block execution benchmark. `token` is the compiled TestToken artifact (contracts/out).
pub fn exec(
    txs_per_block: usize,
    rounds: usize,
    token: PathBuf,
) -> anyhow::Result<serde_json::Value> {
    let senders: Vec<PrivateKeySigner> = (0..txs_per_block)
        .map(|_| PrivateKeySigner::random())
        .collect();
    let addresses: Vec<Address> = senders.iter().map(|s| s.address()).collect();
    let mut chain = Chain::new(&addresses)?;
    let mut nonces = vec![0u64; senders.len()];
    let next = |i: usize, n: &mut [u64]| {
        let v = n[i];
        n[i] += 1;
        v
    };

    // ERC-20 setup: deploy, then give every sender tokens.
    let code = token_code(&token)?;
    let deployer = &senders[0];
    let deploy = sign(
        deployer,
        next(0, &mut nonces),
        TxKind::Create,
        code,
        3_000_000,
    );
    chain.block(&[deploy])?;
    let token_addr = deployer.address().create(0);
    let funding: Vec<Arc<StoredTx>> = addresses[1..]
        .iter()
        .map(|a| {
            sign(
                deployer,
                next(0, &mut nonces),
                TxKind::Call(token_addr),
                transfer_call(*a, 1_000_000),
                100_000,
            )
        })
        .collect();
    chain.block(&funding)?;

    let mut out = serde_json::Map::new();
    for kind in ["transfer", "erc20"] {
        let txs: Vec<Arc<StoredTx>> = senders
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let to = Address::with_last_byte((i % 200) as u8 + 1);
                if kind == "transfer" {
                    sign(k, nonces[i], TxKind::Call(to), Bytes::new(), 21_000)
                } else {
                    sign(
                        k,
                        nonces[i],
                        TxKind::Call(token_addr),
                        transfer_call(to, 1),
                        100_000,
                    )
                }
            })
            .collect();
        let (mut ours, mut bare) = (Vec::new(), Vec::new());
        let mut phases: [Vec<f64>; 3] = Default::default();
        let mut gas = 0;
        for _ in 0..rounds {
            // Alternate so neither side gets a warmer machine.
            let (t, g, p) = chain.executor_run(&txs)?;
            ours.push(t);
            for (acc, v) in phases.iter_mut().zip(p) {
                acc.push(v);
            }
            let (tb, gb) = chain.bare_revm_run(&txs)?;
            bare.push(tb);
            anyhow::ensure!(g == gb, "gas differs: executor {g}, bare revm {gb}");
            gas = g;
        }
        let (o, b) = (median(ours), median(bare));
        let mgas = |s: f64| gas as f64 / s / 1e6;
        out.insert(
            kind.into(),
            json!({
                "txs": txs.len(),
                "gas": gas,
                "executor_mgas_per_s": mgas(o),
                "bare_revm_mgas_per_s": mgas(b),
                "ratio_executor_over_bare": mgas(o) / mgas(b),
                "executor_ms": o * 1e3,
                "bare_revm_ms": b * 1e3,
                "executor_phase_ms": {
                    "start": median(phases[0].clone()) * 1e3,
                    "transactions": median(phases[1].clone()) * 1e3,
                    "finish": median(phases[2].clone()) * 1e3,
                },
            }),
        );
        for n in nonces.iter_mut() {
            *n += 1;
        }
        // Commit the block so the next kind runs on top of it (nonces advanced).
        chain.block(&txs)?;
    }

    // The state root as state grows: the same block, 100 transfers to new accounts, at state
    // sizes doubling to 128k accounts. The account trie's root as the commit computed it (from
    // its stored branches) beside the same root from every account row, as each block computed
    // it before the branches were stored.
    let mut growth = Vec::new();
    let payer = &senders[0];
    let mut fresh_id = 0u64;
    let mut fresh = |n: u64, nonces: &mut [u64]| -> Vec<Arc<StoredTx>> {
        (0..n)
            .map(|_| {
                fresh_id += 1;
                let to = Address::from_word(alloy_primitives::keccak256(fresh_id.to_be_bytes()));
                sign(
                    payer,
                    next(0, nonces),
                    TxKind::Call(to),
                    Bytes::new(),
                    21_000,
                )
            })
            .collect()
    };
    const MEASURED: u64 = 100;
    for target in [4_000u64, 8_000, 16_000, 32_000, 64_000, 128_000] {
        // Filler blocks up to the target, not measured.
        loop {
            let missing = target.saturating_sub(chain.store.account_count()? + MEASURED);
            if missing == 0 {
                break;
            }
            chain.block(&fresh(missing.min(8000), &mut nonces))?;
        }
        let (_, commit) = chain.block(&fresh(MEASURED, &mut nonces))?;
        let timings = chain.store.last_commit_timings();
        let t = Instant::now();
        let from_scratch = chain.store.account_root_from_scratch()?;
        let full = t.elapsed().as_secs_f64();
        let (computed, stored) = chain.store.verify_state_root()?;
        anyhow::ensure!(
            computed == stored && from_scratch == chain.head.header.state_root,
            "state root {stored}: recomputed {computed}, account trie from scratch {from_scratch}"
        );
        let incremental = timings.account_trie_us as f64 / 1e6;
        growth.push(json!({
            "accounts": chain.store.account_count()?,
            "block_txs": MEASURED,
            "commit_ms": commit * 1e3,
            "commit_phases_ms": {
                "state": timings.state_us as f64 / 1e3,
                "account_trie": incremental * 1e3,
                "block": timings.block_us as f64 / 1e3,
                "sync": timings.sync_us as f64 / 1e3,
            },
            "account_trie_from_scratch_ms": full * 1e3,
            "ratio_incremental_over_from_scratch": incremental / full,
        }));
    }
    out.insert("commit_vs_state_size".into(), json!(growth));
    out.insert("rounds".into(), json!(rounds));
    Ok(serde_json::Value::Object(out))
}

/// A node under test: a child process answering JSON-RPC.
struct Target {
    name: &'static str,
    child: std::process::Child,
    url: String,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    for _ in 0..400 {
        let ok = client
            .post(url)
            .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
            .send()
            .await
            .is_ok();
        if ok {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    anyhow::bail!("{url} did not come up")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Sends `txs` (grouped per sender, nonce order kept per group, groups in parallel) and waits
/// for every receipt. Returns (send seconds, first-send-to-last-receipt seconds).
async fn drive(
    client: &reqwest::Client,
    url: &str,
    groups: &[Vec<(String, String)>],
) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for group in groups {
        let (client, url, group) = (client.clone(), url.to_string(), group.clone());
        tasks.push(tokio::spawn(async move {
            for (_, raw) in &group {
                let r: serde_json::Value = client
                    .post(&url)
                    .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":[raw]}))
                    .send()
                    .await?
                    .json()
                    .await?;
                anyhow::ensure!(r["result"].is_string(), "send rejected: {r}");
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent = start.elapsed().as_secs_f64();
    // Each group's last transaction is included only after all its earlier ones. A node that
    // stops including (anvil's automine stalls under concurrent load) fails the run instead of
    // hanging it.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    for group in groups {
        let (hash, _) = group.last().expect("non-empty group");
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{url}: transaction {hash} not included within 60 s of the first send"
            );
            let r: serde_json::Value = client
                .post(url)
                .json(&json!({"jsonrpc":"2.0","id":1,"method":"eth_getTransactionReceipt","params":[hash]}))
                .send()
                .await?
                .json()
                .await?;
            if r["result"].is_object() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    Ok((sent, start.elapsed().as_secs_f64()))
}

/// Ingestion benchmark against pipe and (if `anvil` is given) anvil, on the same load.
pub async fn ingest(
    total: usize,
    block_time_ms: u64,
    anvil: Option<PathBuf>,
) -> anyhow::Result<serde_json::Value> {
    let keys = pipe_node::dev::dev_signers(10)?;
    let per = total.div_ceil(keys.len());
    let groups: Vec<Vec<(String, String)>> = keys
        .iter()
        .map(|k| {
            (0..per as u64)
                .map(|n| {
                    let t = sign(
                        k,
                        n,
                        TxKind::Call(Address::with_last_byte(0xee)),
                        Bytes::new(),
                        21_000,
                    );
                    (
                        t.hash.to_string(),
                        hex::encode_prefixed(t.tx.encoded_2718()),
                    )
                })
                .collect()
        })
        .collect();
    let client = reqwest::Client::new();
    let mut results = serde_json::Map::new();
    // Declared before the targets, so the nodes are killed before their directory goes.
    let dir = tempfile::tempdir()?;
    let mut targets = Vec::new();
    // The node binary built beside this one (`pipe-bench` lives next to `pipe`).
    let pipe = std::env::current_exe()?.with_file_name("pipe");
    anyhow::ensure!(
        pipe.exists(),
        "{} is not built: cargo build --release -p pipe -p pipe-bench",
        pipe.display()
    );
    let port = free_port()?;
    // 0 = seal on demand: pipe's `--on-demand` against anvil's default automine.
    let pipe_sealing = if block_time_ms == 0 {
        vec!["--on-demand".to_string()]
    } else {
        vec!["--block-time-ms".to_string(), block_time_ms.to_string()]
    };
    targets.push(Target {
        name: "pipe",
        child: std::process::Command::new(&pipe)
            .args(["node", "--dev", "--no-ui", "--http.port", &port.to_string()])
            .args(&pipe_sealing)
            .arg("--datadir")
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
        url: format!("http://127.0.0.1:{port}"),
    });
    // Each node must hold its port before the next free one is picked, or both could be
    // handed the same port.
    wait_ready(&client, &targets[0].url).await?;
    if let Some(anvil) = anvil {
        let port = free_port()?;
        let anvil_sealing = if block_time_ms == 0 {
            vec![]
        } else {
            vec![
                "--block-time".to_string(),
                (block_time_ms as f64 / 1000.0).to_string(),
            ]
        };
        targets.push(Target {
            name: "anvil",
            child: std::process::Command::new(anvil)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--hardfork",
                    "osaka",
                    "--silent",
                ])
                .args(&anvil_sealing)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()?,
            url: format!("http://127.0.0.1:{port}"),
        });
        wait_ready(&client, &targets[1].url).await?;
    }
    for t in &targets {
        let (sent, e2e) = drive(&client, &t.url, &groups).await?;
        let n = (per * keys.len()) as f64;
        results.insert(
            t.name.into(),
            json!({"txs": n, "send_tx_per_s": n / sent, "end_to_end_tx_per_s": n / e2e, "send_s": sent, "end_to_end_s": e2e}),
        );
    }
    if let (Some(p), Some(a)) = (results.get("pipe").cloned(), results.get("anvil").cloned()) {
        results.insert(
            "ratio_pipe_over_anvil".into(),
            json!({
                "send": p["send_tx_per_s"].as_f64().unwrap_or(0.0) / a["send_tx_per_s"].as_f64().unwrap_or(1.0),
                "end_to_end": p["end_to_end_tx_per_s"].as_f64().unwrap_or(0.0) / a["end_to_end_tx_per_s"].as_f64().unwrap_or(1.0),
            }),
        );
    }
    results.insert("block_time_ms".into(), json!(block_time_ms));
    Ok(serde_json::Value::Object(results))
}

/// `archive`: the disk cost of archive mode. The same ERC-20 transfer blocks (`senders`
/// senders, each sending one transfer per block to one of 1000 recipients, so every block
/// changes `2 × senders` token slots and `senders` accounts) are committed to two stores, one
/// keeping an archive; reports the bytes each stores (and allocates), the archive's bytes per
/// block and per changed key, and the commit times.
pub fn archive(blocks: usize, senders: usize, token: PathBuf) -> anyhow::Result<Value> {
    let keys: Vec<PrivateKeySigner> = (0..senders).map(|_| PrivateKeySigner::random()).collect();
    let addresses: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let code = token_code(&token)?;
    let token_addr = keys[0].address().create(0);
    // The blocks, signed once: deployment, funding, then the measured blocks.
    let mut nonces = vec![0u64; senders];
    let mut signed: Vec<Vec<Arc<StoredTx>>> =
        vec![vec![sign(&keys[0], 0, TxKind::Create, code, 3_000_000)]];
    nonces[0] = 1;
    signed.push(
        addresses[1..]
            .iter()
            .map(|a| {
                nonces[0] += 1;
                sign(
                    &keys[0],
                    nonces[0] - 1,
                    TxKind::Call(token_addr),
                    transfer_call(*a, 1_000_000_000),
                    100_000,
                )
            })
            .collect(),
    );
    let setup = signed.len();
    for b in 0..blocks {
        signed.push(
            keys.iter()
                .enumerate()
                .map(|(i, k)| {
                    let to = Address::with_last_byte(1).create((b * senders + i) as u64 % 1000);
                    nonces[i] += 1;
                    sign(
                        k,
                        nonces[i] - 1,
                        TxKind::Call(token_addr),
                        transfer_call(to, 1),
                        100_000,
                    )
                })
                .collect(),
        );
    }
    let mut out = serde_json::Map::new();
    let mut sizes = Vec::new();
    for archive in [false, true] {
        let mut chain = Chain::with_archive(&addresses, archive)?;
        let mut commit_s = 0.0;
        for (i, txs) in signed.iter().enumerate() {
            let (_, commit) = chain.block(txs)?;
            if i >= setup {
                commit_s += commit;
            }
        }
        let (stored, allocated) = chain.store.stored_bytes()?;
        sizes.push(stored);
        out.insert(
            if archive { "archive" } else { "recent_only" }.into(),
            json!({
                "stored_bytes": stored,
                "allocated_bytes": allocated,
                "file_bytes": std::fs::metadata(chain._dir.path().join("chain.redb"))?.len(),
                "commit_ms_per_block": commit_s * 1000.0 / blocks as f64,
            }),
        );
    }
    let extra = sizes[1].saturating_sub(sizes[0]);
    let changed_keys_per_block = 3 * senders;
    out.insert("blocks".into(), json!(blocks));
    out.insert("transfers_per_block".into(), json!(senders));
    out.insert("archive_extra_bytes".into(), json!(extra));
    out.insert(
        "archive_bytes_per_block".into(),
        json!(extra as f64 / (blocks + setup) as f64),
    );
    out.insert(
        "archive_bytes_per_changed_key".into(),
        json!(extra as f64 / (blocks * changed_keys_per_block) as f64),
    );
    out.insert(
        "stored_ratio_archive_over_recent".into(),
        json!(sizes[1] as f64 / sizes[0] as f64),
    );
    Ok(Value::Object(out))
}
