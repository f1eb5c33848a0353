//! A validator network of real `pipe node --validator` processes on loopback
//! (`pipe_node::localnet`, what `pipe localnet` runs): transactions sent to any validator are
//! gossiped and finalized by all, Foundry works against a validator, and kill -9 of one then
//! two validators loses nothing acknowledged. Bounded in time and count; loopback only.

mod common;

use std::{process::Command, time::Duration};

use alloy_primitives::{Address, TxKind};
use alloy_signer_local::PrivateKeySigner;
use pipe_node::localnet::{self, Localnet, LocalnetConfig};

const N: usize = 4;

/// A base port with `n` free consecutive ports above it, never one handed out before in this
/// process (the tests run at once). Below 32768, where Linux hands out ephemeral ports: a
/// validator restarted after kill -9 binds its ports again, and an outgoing connection of
/// another test must not hold one by then.
fn free_range(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    for _ in 0..200 {
        let offset = NEXT.fetch_add(n, Ordering::SeqCst);
        let base = 20_000 + (std::process::id() % 600) as u16 * 20 + offset;
        let held: Vec<_> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no free port range");
}

async fn head(url: &str) -> u64 {
    common::quantity(&common::rpc(url, "eth_blockNumber", serde_json::json!([])).await["result"])
}

/// `member`'s head once it has stopped moving (unchanged for 2 s): after a quorum is lost,
/// blocks already certified may still be applied for a while (a member behind fetches and
/// replays them), so a single read could be taken before the last of them.
async fn settled_head(net: &Localnet, member: usize) -> u64 {
    let mut last = head(&net.members[member].rpc_url).await;
    let mut same = 0;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = head(&net.members[member].rpc_url).await;
        same = if now == last { same + 1 } else { 0 };
        if same == 4 {
            return now;
        }
        last = now;
    }
    panic!("the head of validator {member} never settled");
}

async fn block_hash(url: &str, number: u64) -> String {
    let b = common::rpc(
        url,
        "eth_getBlockByNumber",
        serde_json::json!([format!("0x{number:x}"), false]),
    )
    .await;
    b["result"]["hash"].as_str().unwrap_or_default().to_string()
}

/// Dev accounts and their next nonces.
struct Senders(Vec<(PrivateKeySigner, u64)>);

impl Senders {
    fn new() -> Self {
        Self(
            pipe_node::dev::dev_signers(10)
                .unwrap()
                .into_iter()
                .skip(5)
                .map(|k| (k, 0))
                .collect(),
        )
    }

    /// The next transaction of sender `i % len`: a transfer, or every third a linreg
    /// inference request (`cid`).
    fn next(&mut self, i: usize, cid: &str) -> alloy_primitives::Bytes {
        let n = self.0.len();
        let (key, nonce) = &mut self.0[i % n];
        let raw = if i % 3 == 2 {
            common::inference_raw(
                key,
                31337,
                *nonce,
                common::linreg_request(cid, [i as i128, 2, 3]),
                1_000_000_000,
            )
        } else {
            common::signed_raw(
                key,
                31337,
                *nonce,
                TxKind::Call(Address::repeat_byte(0xee)),
                Default::default(),
                21_000,
                1_000_000_000,
                100_000_000_000,
            )
        };
        *nonce += 1;
        raw
    }
}

/// Sends `count` transactions round-robin to the validators in `to`; their hashes.
async fn stream(
    net: &Localnet,
    to: &[usize],
    senders: &mut Senders,
    start: usize,
    count: usize,
    cid: &str,
) -> Vec<String> {
    let mut hashes = Vec::new();
    for i in start..start + count {
        let url = &net.members[to[i % to.len()]].rpc_url;
        let raw = senders.next(i, cid);
        hashes.extend(common::send_raw_batch(url, &[raw]).await);
    }
    hashes
}

/// Every hash has a successful receipt on validator `at`, and every validator in `all`
/// has the same block at each receipt's height.
async fn all_included(net: &Localnet, at: usize, all: &[usize], hashes: &[String]) {
    let url = &net.members[at].rpc_url;
    let receipts = common::wait_receipts(url, hashes, 600, Duration::from_millis(200)).await;
    let missing = receipts.iter().filter(|r| r.is_none()).count();
    assert_eq!(missing, 0, "{missing} of {} not included", hashes.len());
    let top = receipts
        .iter()
        .map(|r| common::quantity(&r.as_ref().unwrap()["blockNumber"]))
        .max()
        .unwrap();
    for &v in all {
        let u = &net.members[v].rpc_url;
        for _ in 0..300 {
            if head(u).await >= top {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for r in receipts.iter().flatten() {
        assert_eq!(r["status"], "0x1", "{r}");
        let n = common::quantity(&r["blockNumber"]);
        for &v in all {
            assert_eq!(
                block_hash(&net.members[v].rpc_url, n).await,
                r["blockHash"].as_str().unwrap(),
                "validator {v} at block {n}"
            );
        }
    }
}

fn cast(args: &[&str]) -> String {
    let bin =
        common::repo_root().join("tools/js/node_modules/@foundry-rs/cast-linux-amd64/bin/cast");
    let out = Command::new(bin).args(args).output().expect("cast runs");
    assert!(
        out.status.success(),
        "cast {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_validator_processes_finalize_gossip_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_range(3 * N as u16);
    let config = LocalnetConfig {
        validators: N,
        dir: dir.path().to_path_buf(),
        http_port: base,
        metrics_port: base + N as u16,
        p2p_port: base + 2 * N as u16,
        ui_port: None,
        block_time_ms: 1000,
        result_check: "all".into(),
        exe: env!("CARGO_BIN_EXE_pipe").into(),
        node_args: vec!["--workers".into(), "1".into()],
    };
    let mut net = localnet::start(config).await.expect("localnet starts");
    let cid = common::model_id(&net.members[0].rpc_url, "linreg").await;
    let mut senders = Senders::new();
    let all: Vec<usize> = (0..N).collect();

    // Every validator takes transactions; each is finalized everywhere.
    let hashes = stream(&net, &all, &mut senders, 0, 24, &cid).await;
    all_included(&net, 3, &all, &hashes).await;
    for tag in ["finalized", "safe", "latest"] {
        let b = common::rpc(
            &net.members[1].rpc_url,
            "eth_getBlockByNumber",
            serde_json::json!([tag, false]),
        )
        .await;
        assert!(b["result"]["hash"].is_string(), "{tag}: {b}");
    }

    // Foundry against a validator.
    let url = net.members[2].rpc_url.clone();
    let (key, nonce) = &mut senders.0[0];
    let key_hex = alloy_primitives::hex::encode_prefixed(key.to_bytes());
    let sent = tokio::task::spawn_blocking({
        let url = url.clone();
        move || {
            cast(&[
                "send",
                "--rpc-url",
                &url,
                "--private-key",
                &key_hex,
                "--json",
                "0x000000000000000000000000000000000000dEaD",
                "--value",
                "7",
            ])
        }
    })
    .await
    .unwrap();
    *nonce += 1;
    let receipt: serde_json::Value = serde_json::from_str(&sent).expect("cast send --json");
    assert_eq!(receipt["status"], "0x1");
    let tx = receipt["transactionHash"].as_str().unwrap().to_string();
    let url0 = net.members[0].rpc_url.clone();
    let again = tokio::task::spawn_blocking(move || {
        (
            cast(&["receipt", "--rpc-url", &url0, &tx, "status"]),
            cast(&[
                "block",
                "finalized",
                "--rpc-url",
                &url0,
                "--field",
                "number",
            ]),
        )
    })
    .await
    .unwrap();
    // cast prints a receipt's status field as `true` (or `1 (success)` in full).
    assert!(
        matches!(again.0.trim(), "true" | "1" | "1 (success)"),
        "{}",
        again.0
    );
    assert!(!again.1.trim().is_empty());

    // kill -9 one validator: the other three go on; it restarts, catches up and agrees.
    net.members[3].child.kill().unwrap();
    net.members[3].child.wait().unwrap();
    let three = [0, 1, 2];
    let hashes = stream(&net, &three, &mut senders, 100, 12, &cid).await;
    all_included(&net, 0, &three, &hashes).await;
    let set = dir.path().join("validators.json");
    net.members[3] = localnet::start_member(net.config(), &set, 3).unwrap();
    net.wait_ready(3, Duration::from_secs(120)).await.unwrap();
    all_included(&net, 0, &all, &hashes).await;

    // kill -9 two: finality halts; a transaction is still acknowledged, and is included
    // once one of them returns.
    for v in [2, 3] {
        net.members[v].child.kill().unwrap();
        net.members[v].child.wait().unwrap();
    }
    let stuck = settled_head(&net, 0).await;
    let waiting = stream(&net, &[0, 1], &mut senders, 200, 4, &cid).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        head(&net.members[0].rpc_url).await,
        stuck,
        "finalized without a quorum"
    );
    net.members[2] = localnet::start_member(net.config(), &set, 2).unwrap();
    net.wait_ready(2, Duration::from_secs(120)).await.unwrap();
    all_included(&net, 0, &[0, 1, 2], &waiting).await;

    net.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genesis_file_names_the_validator_set() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_pipe");
    let key = dir.path().join("key.hex");
    let out = Command::new(exe)
        .args(["keys", "generate", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let base = free_range(2);
    let funded = pipe_node::dev::dev_signers(1).unwrap().remove(0);
    let genesis = serde_json::json!({
        "config": {
            "chainId": 7000,
            "pipeValidators": {
                "blockTimeMs": 1000,
                "validators": [{"publicKey": public, "address": format!("127.0.0.1:{}", base + 1)}],
            },
        },
        "alloc": { funded.address().to_string(): {"balance": "0x3635c9adc5dea00000"} },
        "gasLimit": "0x1c9c380",
        "difficulty": "0x0",
        "timestamp": "0x0",
        "extraData": "0x",
        "nonce": "0x0",
        "mixHash": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "coinbase": "0x0000000000000000000000000000000000000000",
    });
    let genesis_path = dir.path().join("genesis.json");
    std::fs::write(&genesis_path, genesis.to_string()).unwrap();
    let mut child = Command::new(exe)
        .args(["node", "--genesis"])
        .arg(&genesis_path)
        .args(["--validator", "--key"])
        .arg(&key)
        .arg("--datadir")
        .arg(dir.path().join("data"))
        .args(["--http.port", &base.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{base}");
    let mut up = false;
    for _ in 0..600 {
        if reqwest::Client::new()
            .post(&url)
            .json(&serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}))
            .send()
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the validator serves RPC");
    let chain_id = common::rpc(&url, "eth_chainId", serde_json::json!([])).await;
    assert_eq!(chain_id["result"], "0x1b58");
    // One validator is its own quorum: the chain moves and includes a transfer.
    let raw = common::signed_raw(
        &funded,
        7000,
        0,
        TxKind::Call(Address::repeat_byte(0xee)),
        Default::default(),
        21_000,
        1_000_000_000,
        100_000_000_000,
    );
    let hashes = common::send_raw_batch(&url, &[raw]).await;
    let receipts = common::wait_receipts(&url, &hashes, 300, Duration::from_millis(100)).await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(receipts[0].as_ref().expect("included")["status"], "0x1");
}
