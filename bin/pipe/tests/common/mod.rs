//! Shared test harness: start a real node on a loopback port, in-process or as a process.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use alloy_primitives::{Bytes, TxKind};
use alloy_sol_types::SolCall;
use pipe_executor::inference::{
    INFERENCE_PRECOMPILE, ModelInferenceRequest, ModelInput, MultiDimensionalNumberTensor, Number,
    runModelInferenceCall,
};
use pipe_node::{
    config::{BlockTime, NodeConfig},
    node::{RunningNode, launch},
};
use pipe_primitives::SystemClock;

/// Dev account 0's key (the standard test mnemonic's first account).
pub const DEV_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The dev chain's config for a test: a free loopback port, no banner.
pub fn test_config(datadir: &Path) -> NodeConfig {
    let mut config = NodeConfig::dev(datadir.to_path_buf());
    config.http_port = 0;
    config.print_banner = false;
    config
}

/// An in-process dev node sealing on demand, on a free loopback port.
pub async fn dev_node(datadir: &Path) -> RunningNode {
    let mut config = test_config(datadir);
    config.block_time = BlockTime::OnDemand;
    launch(config, Arc::new(SystemClock))
        .await
        .expect("node starts")
}

/// JSON-RPC over raw HTTP, returning the whole response object.
pub async fn raw_rpc(url: &str, body: serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("request sent")
        .json()
        .await
        .expect("json response")
}

pub async fn rpc(url: &str, method: &str, params: serde_json::Value) -> serde_json::Value {
    raw_rpc(
        url,
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}),
    )
    .await
}

/// A JSON-RPC hex quantity ("0x1a") as a number.
pub fn quantity(v: &serde_json::Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a quantity: {v}"));
    u64::from_str_radix(s.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("bad quantity {s}"))
}

/// `eth_getTransactionCount(address, "pending")`.
pub async fn pending_nonce(url: &str, address: alloy_primitives::Address) -> u64 {
    quantity(
        &rpc(
            url,
            "eth_getTransactionCount",
            serde_json::json!([address, "pending"]),
        )
        .await["result"],
    )
}

/// A `pipe node` child process.
pub struct NodeProcess {
    pub child: Child,
    pub url: String,
}

impl NodeProcess {
    /// Starts `pipe node --dev` on `port` with `datadir`, waiting until RPC answers.
    pub async fn start(datadir: &Path, port: u16, extra: &[&str]) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args([
                "node",
                "--dev",
                "--no-ui",
                "--http.port",
                &port.to_string(),
                "--datadir",
            ])
            .arg(datadir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pipe");
        let url = format!("http://127.0.0.1:{port}");
        let mut node = Self { child, url };
        // Up to a minute: after a kill -9 the node restores its pending set first, and a
        // loaded machine is slow at it. A node that exited (its port taken) fails at once.
        for _ in 0..1200 {
            if let Ok(Some(status)) = node.child.try_wait() {
                panic!("pipe exited on port {port} before answering: {status}");
            }
            if reqwest::Client::new()
                .post(&node.url)
                .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}))
                .send()
                .await
                .is_ok()
            {
                return node;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("pipe did not start on port {port}");
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; good enough for tests on one machine).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An EIP-1559 transaction signed by `key`, as raw EIP-2718 bytes.
#[allow(clippy::too_many_arguments)]
pub fn signed_raw(
    key: &alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    to: alloy_primitives::TxKind,
    input: alloy_primitives::Bytes,
    gas_limit: u64,
    tip: u128,
    fee_cap: u128,
) -> alloy_primitives::Bytes {
    use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
    use alloy_eips::Encodable2718;
    use alloy_network::TxSignerSync;
    let mut tx = TxEip1559 {
        chain_id,
        nonce,
        gas_limit,
        max_fee_per_gas: fee_cap,
        max_priority_fee_per_gas: tip,
        to,
        input,
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).expect("signs");
    let env: TxEnvelope = tx.into_signed(sig).into();
    env.encoded_2718().into()
}

/// Calls `method` once per params entry, in JSON-RPC batches of `size`; the results in order
/// (`null` where a call returned an error).
pub async fn batch(
    url: &str,
    method: &str,
    params: Vec<serde_json::Value>,
    size: usize,
) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for chunk in params.chunks(size) {
        let body: Vec<serde_json::Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| serde_json::json!({"jsonrpc": "2.0", "id": i, "method": method, "params": p}))
            .collect();
        let mut answers = raw_rpc(url, serde_json::Value::Array(body))
            .await
            .as_array()
            .expect("batch answer")
            .clone();
        answers.sort_by_key(|a| a["id"].as_u64());
        out.extend(answers.into_iter().map(|a| {
            assert!(
                a.get("error").is_none() || method != "eth_sendRawTransaction",
                "{a}"
            );
            a["result"].clone()
        }));
    }
    out
}

/// Sends raw transactions in batches; returns their hashes in order, panicking on any error.
pub async fn send_raw_batch(url: &str, raws: &[alloy_primitives::Bytes]) -> Vec<String> {
    let params = raws.iter().map(|r| serde_json::json!([r])).collect();
    batch(url, "eth_sendRawTransaction", params, 100)
        .await
        .into_iter()
        .map(|h| h.as_str().expect("a hash").to_string())
        .collect()
}

/// Receipts of `hashes` (None where not mined yet).
pub async fn receipts(url: &str, hashes: &[String]) -> Vec<Option<serde_json::Value>> {
    let params = hashes.iter().map(|h| serde_json::json!([h])).collect();
    batch(url, "eth_getTransactionReceipt", params, 200)
        .await
        .into_iter()
        .map(|r| Some(r).filter(|r| !r.is_null()))
        .collect()
}

/// Polls the receipts of `hashes` up to `tries` times, `every` apart, until all are mined;
/// the last answer (None where not mined).
pub async fn wait_receipts(
    url: &str,
    hashes: &[String],
    tries: usize,
    every: Duration,
) -> Vec<Option<serde_json::Value>> {
    let mut out = Vec::new();
    for _ in 0..tries {
        out = receipts(url, hashes).await;
        if out.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(every).await;
    }
    out
}

/// A `pipe worker` child process.
pub struct WorkerProcess {
    pub child: Child,
    /// Its base URL, from the "Listening on" line it prints.
    pub url: String,
}

impl WorkerProcess {
    /// Starts `pipe worker --node NODE --listen 127.0.0.1:0 EXTRA…` and waits for its address.
    pub fn start(node: &str, extra: &[&str]) -> Self {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["worker", "--node", node, "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn pipe worker");
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("worker prints its address");
        let addr = line
            .trim()
            .strip_prefix("Listening on ")
            .unwrap_or_else(|| panic!("unexpected worker output: {line}"));
        Self {
            url: format!("http://{addr}"),
            child,
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `runModelInference` request on the dev chain's `linreg` example model (id `cid`).
pub fn linreg_request(cid: &str, x: [i128; 3]) -> ModelInferenceRequest {
    ModelInferenceRequest {
        mode: 0,
        modelCID: cid.into(),
        input: ModelInput {
            numbers: vec![MultiDimensionalNumberTensor {
                name: "input".into(),
                values: x
                    .iter()
                    .map(|&value| Number { value, decimals: 0 })
                    .collect(),
                shape: vec![1, 3],
            }],
            strings: vec![],
        },
    }
}

/// The id of the dev chain's example model `name`.
pub async fn model_id(url: &str, name: &str) -> String {
    let list = rpc(url, "pipe_listModels", serde_json::json!([])).await;
    list["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no example model {name}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A signed transaction calling the precompile with `request` (300k gas, 100 gwei fee cap).
pub fn inference_raw(
    key: &alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    nonce: u64,
    request: ModelInferenceRequest,
    tip: u128,
) -> Bytes {
    signed_raw(
        key,
        chain_id,
        nonce,
        TxKind::Call(INFERENCE_PRECOMPILE),
        runModelInferenceCall { request }.abi_encode().into(),
        300_000,
        tip,
        100 * 1_000_000_000,
    )
}

/// A signed EIP-1559 transfer of 1 wei from `key` at `nonce` to `to` (chain 31337, 21 000 gas,
/// 100 gwei cap, 1 gwei tip): its hash and raw hex.
pub fn transfer(
    key: &alloy_signer_local::PrivateKeySigner,
    nonce: u64,
    to: alloy_primitives::Address,
) -> (String, String) {
    use alloy_consensus::SignableTransaction;
    use alloy_eips::Encodable2718;
    use alloy_network::TxSignerSync;
    let mut tx = alloy_consensus::TxEip1559 {
        chain_id: 31337,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: 100_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: alloy_primitives::TxKind::Call(to),
        value: alloy_primitives::U256::from(1),
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).unwrap();
    let env: alloy_consensus::TxEnvelope = tx.into_signed(sig).into();
    (
        env.tx_hash().to_string(),
        alloy_primitives::hex::encode_prefixed(env.encoded_2718()),
    )
}
