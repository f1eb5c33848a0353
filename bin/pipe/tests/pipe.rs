//! PIPE end to end on a real node: load from many senders with a slow model, a result going
//! stale inside a block, and blocks replayed from their sidecars (and rejected when tampered).

mod common;

use std::{sync::Arc, time::Duration};

use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_sol_types::{SolCall, SolEvent, SolValue, sol};
use pipe_builder::replay::{ReplayError, replay_block};
use pipe_executor::{
    InferenceProvider,
    inference::{
        INFERENCE_PRECOMPILE, ModelInferenceEvent, ModelInferenceRequest, ModelInput,
        MultiDimensionalNumberTensor, Number, runModelInferenceCall,
    },
};
use pipe_node::{config::BlockTime, node::launch};
use pipe_primitives::{Clock, InferenceFields, InferenceResult, ManualClock, Sidecar, SystemClock};
use serde_json::Value;

sol! {
    function score() returns (int256);
    function setFeatures(int128 a, int128 b, int128 c);
    function lastScore() returns (int256);
}

const GWEI: u128 = 1_000_000_000;

async fn status(url: &str, hash: &str) -> Value {
    common::rpc(url, "pipe_getTransactionStatus", serde_json::json!([hash])).await["result"].clone()
}

/// Polls until `hash`'s lifecycle status is one of `want`.
async fn wait_status(url: &str, hash: &str, want: &[&str]) -> Value {
    for _ in 0..3000 {
        let s = status(url, hash).await;
        if want.iter().any(|w| s["status"] == *w) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{hash} never reached {want:?}: {}", status(url, hash).await);
}

/// `block` carrying `results` instead, with a header that commits to them.
fn recommit(
    block: &pipe_primitives::SealedBlock,
    results: Vec<InferenceResult>,
) -> pipe_primitives::SealedBlock {
    let mut b = block.clone();
    b.sidecar = Sidecar::new(results);
    let mut fields = InferenceFields::decode(&b.header.extra_data).unwrap();
    fields.results_root = b.sidecar.commitment();
    b.header.extra_data = fields.encode();
    b
}

/// Alters the first result of block `number`'s stored sidecar in the chain at `datadir` (the
/// node must be stopped); the header still commits to the original.
fn forge_on_disk(datadir: &std::path::Path, number: u64) {
    let store = pipe_storage::Store::open(&datadir.join("chain.redb")).unwrap();
    let mut results = store
        .block(number)
        .unwrap()
        .unwrap()
        .sidecar
        .results()
        .to_vec();
    results[0].payload = Bytes::from_static(b"forged");
    store
        .replace_sidecar(number, &Sidecar::new(results))
        .unwrap();
}

/// Moves the manual clock one slot and waits until block `expect` is sealed.
async fn seal_block(clock: &ManualClock, url: &str, expect: u64) {
    clock.advance(Duration::from_secs(1));
    for _ in 0..3000 {
        let n = common::quantity(
            &common::rpc(url, "eth_blockNumber", serde_json::json!([])).await["result"],
        );
        if n >= expect {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("block {expect} never sealed");
}

/// The creation code of the compiled contract `name` (contracts/out).
fn compiled(name: &str) -> Vec<u8> {
    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join(format!("contracts/out/{name}.json")))
            .expect("contracts compiled (node tools/js/compile.js)"),
    )
    .unwrap();
    alloy_primitives::hex::decode(artifact["bytecode"].as_str().unwrap()).unwrap()
}

/// Deploys the compiled contract `name` (contracts/out) from `key` at nonce 0, seals it into
/// block `block` on `clock`, and returns its address.
async fn deploy(
    clock: &ManualClock,
    url: &str,
    key: &alloy_signer_local::PrivateKeySigner,
    chain_id: u64,
    name: &str,
    block: u64,
) -> Address {
    let code = compiled(name);
    let raw = common::signed_raw(
        key,
        chain_id,
        0,
        TxKind::Create,
        code.into(),
        1_000_000,
        GWEI,
        100 * GWEI,
    );
    let hash = common::send_raw_batch(url, &[raw]).await.remove(0);
    wait_status(url, &hash, &["ready"]).await;
    seal_block(clock, url, block).await;
    common::receipts(url, std::slice::from_ref(&hash)).await[0]
        .as_ref()
        .expect("deployed")["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Prometheus text → (name with labels, value).
fn metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn sum(m: &[(String, f64)], prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// 500 transactions from 50 senders, each calling a model that takes 600 ms more than it
/// computes, on 4 workers: all are included; 100 distinct requests are computed once each;
/// several run at once; no block's build time includes a model's; every block replays from
/// its sidecar, and tampered sidecars are rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_inference_transactions_from_fifty_senders() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_millis(250));
    config.dev_accounts = 50;
    config.workers = 4;
    config.worker_capacity = 1;
    config.model_latency = Duration::from_millis(600);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;

    let mut raws = Vec::new();
    for (i, key) in node.dev_keys.iter().enumerate() {
        for n in 0..10u64 {
            let v = ((i as u64 * 10 + n) % 100) as i128;
            raws.push(common::inference_raw(
                key,
                chain_id,
                n,
                common::linreg_request(&linreg, [v, 1, 2]),
                (i as u128 + 1) * GWEI,
            ));
        }
    }
    let hashes = common::send_raw_batch(&url, &raws).await;
    assert_eq!(hashes.len(), 500);

    let receipts = common::wait_receipts(&url, &hashes, 240, Duration::from_millis(250)).await;
    let missing: Vec<&String> = hashes
        .iter()
        .zip(&receipts)
        .filter(|(_, r)| r.is_none())
        .map(|(h, _)| h)
        .collect();
    if let Some(h) = missing.first() {
        panic!(
            "{} of 500 transactions not included; the first: {}",
            missing.len(),
            status(&url, h).await
        );
    }
    for r in &receipts {
        let r = r.as_ref().unwrap();
        assert_eq!(r["status"], "0x1", "{r}");
        assert!(
            r["logs"].as_array().unwrap().iter().any(|l| l["address"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(&INFERENCE_PRECOMPILE.to_string())),
            "the precompile's event is in the receipt"
        );
    }
    let s = status(&url, &hashes[0]).await;
    assert_eq!(s["status"], "included", "{s}");
    assert!(s["blockNumber"].as_u64().unwrap() > 0);
    assert_eq!(s["requests"].as_array().unwrap().len(), 1, "{s}");

    // An unknown method is answered, and not counted under the name the client chose.
    let unknown = common::rpc(&url, "eth_noSuchMethod", serde_json::json!([])).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    // Metrics, from the metrics port.
    let text = reqwest::get(format!("http://{}/metrics", node.metrics_addr.unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = metrics(&text);
    // The chain's gauges: the head (finalized when sealed on a dev chain) and the next price.
    let head = node.head.borrow().header.number as f64;
    assert!(head > 0.0);
    assert!(sum(&m, "pipe_head_block") >= head, "{text}");
    assert_eq!(sum(&m, "pipe_head_block"), sum(&m, "pipe_finalized_block"));
    assert!(sum(&m, "pipe_next_inference_gas_price") >= 1.0, "{text}");
    // RPC calls by method: the batch's 500 are counted one by one, with their latency.
    assert_eq!(
        sum(
            &m,
            r#"pipe_rpc_calls_total{method="eth_sendRawTransaction",outcome="ok"}"#
        ),
        500.0,
        "{text}"
    );
    assert!(
        sum(
            &m,
            r#"pipe_rpc_call_duration_seconds_count{method="eth_getTransactionReceipt"}"#
        ) >= 500.0,
        "{text}"
    );
    assert!(!text.contains("eth_noSuchMethod"), "{text}");
    assert_eq!(
        sum(&m, "pipe_worker_completed_total"),
        100.0,
        "each distinct request computed once:\n{text}"
    );
    assert!(sum(&m, "pipe_shared_requests_total") >= 400.0, "{text}");
    assert!(
        sum(&m, "pipe_requests_in_flight_peak") > 1.0,
        "with 4 workers more than one inference runs at once:\n{text}"
    );
    // Every block was built in under one model's 600 ms: the largest histogram bucket below
    // 0.6 s holds every build. (A build stops taking transactions at half the 250 ms slot; the
    // margin is for a loaded machine.)
    let builds = sum(&m, "pipe_block_build_seconds_count");
    assert!(builds > 0.0);
    let under = m
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("pipe_block_build_seconds_bucket{le=\"")?
                .trim_end_matches("\"}")
                .parse::<f64>()
                .ok()?;
            (le < 0.6).then_some((le, *v))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    assert_eq!(
        under.1, builds,
        "a block build took longer than {} s:\n{text}",
        under.0
    );

    // Replay in process: the newest block with results, on its parent's state.
    let head = node.store.head().unwrap().unwrap();
    let (block, parent, view) = (1..=head)
        .rev()
        .find_map(|n| {
            let block = node.store.block(n).unwrap()?;
            if block.sidecar.is_empty() {
                return None;
            }
            let view = node.store.state_at(n - 1)?;
            Some((block, node.store.block(n - 1).unwrap()?, view))
        })
        .expect("a recent block with results");
    let models = node.models.clone() as Arc<dyn InferenceProvider>;
    let replay = |b: &pipe_primitives::SealedBlock| {
        replay_block(&node.executor, view.clone(), &parent, b, models.clone())
    };
    let honest = replay(&block).expect("an honest block replays");
    assert_eq!(honest.header.receipts_root, block.header.receipts_root);
    assert_eq!(
        InferenceFields::decode(&honest.header.extra_data)
            .unwrap()
            .results_root,
        Some(block.sidecar.root()),
        "the header commits to the sidecar"
    );

    let recommit = |results: Vec<InferenceResult>| recommit(&block, results);
    let results = block.sidecar.results().to_vec();
    // A result missing from the sidecar (and from the commitment).
    let missing = recommit(results[1..].to_vec());
    match replay(&missing) {
        Err(ReplayError::MissingResult { key, .. }) => assert_eq!(key, results[0].key),
        other => panic!("expected a missing result, got {other:?}"),
    }
    // A tampered output the header does not commit to.
    let mut tampered = block.clone();
    let mut first = results[0].clone();
    let mut out = runModelInferenceCall::abi_decode_returns(&first.payload).unwrap();
    out.numbers[0].values[0].value += 1;
    first.payload = runModelInferenceCall::abi_encode_returns(&out).into();
    tampered.sidecar = Sidecar::new([vec![first.clone()], results[1..].to_vec()].concat());
    assert!(matches!(
        replay(&tampered),
        Err(ReplayError::SidecarRoot { .. })
    ));
    // The same tampered output with a matching commitment: execution diverges.
    let recommitted = recommit([vec![first], results[1..].to_vec()].concat());
    match replay(&recommitted) {
        Err(ReplayError::Mismatch { field, .. }) => assert_eq!(field, "receipts root"),
        other => panic!("expected a receipts mismatch, got {other:?}"),
    }
    // A result no transaction used.
    let padded = recommit(
        [
            results.clone(),
            vec![InferenceResult::failure(B256::repeat_byte(0x42), "unused")],
        ]
        .concat(),
    );
    assert!(matches!(
        replay(&padded),
        Err(ReplayError::UnusedResults { .. })
    ));

    let number = block.number();
    // Everything holding the store goes before the node stops, so the file can be reopened.
    drop((view, models));
    node.shutdown().await;

    // The interval sealer may have sealed more (empty) blocks since `head` was read: the chain
    // the CLI replays is the one on disk now.
    let head = pipe_storage::Store::open(&dir.path().join("chain.redb"))
        .unwrap()
        .head()
        .unwrap()
        .unwrap();

    // `pipe replay` over the data dir re-executes every block bit-exactly.
    let replay_cli = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
            .args(["replay", "--dev", "--accounts", "50", "--datadir"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = replay_cli();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["transactions"], 500, "{report}");
    assert!(report["results"].as_u64().unwrap() >= 100, "{report}");
    assert_eq!(report["blocks"].as_u64().unwrap(), head);

    // A sidecar tampered with on disk is rejected.
    forge_on_disk(dir.path(), number);
    let out = replay_cli();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("block {number}")) && err.contains("sidecar root"),
        "{err}"
    );
}

/// A transaction whose inference input reads a slot that an earlier transaction in the same
/// block changes: left out of that block as stale, dispatched again, and included in the next
/// one with the result for the new input. Blocks are sealed only when the test moves the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_result_is_resimulated_and_included_with_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    config.workers = 2;
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let keys = &node.dev_keys;
    let seal = |expect: u64| seal_block(&clock, &url, expect);

    let artifact: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("contracts/out/StoredFeatureScore.json"))
            .expect("contracts compiled (node tools/js/compile.js)"),
    )
    .unwrap();
    let mut code = alloy_primitives::hex::decode(artifact["bytecode"].as_str().unwrap()).unwrap();
    code.extend((linreg.clone(),).abi_encode_params());
    let deploy = common::signed_raw(
        &keys[0],
        chain_id,
        0,
        TxKind::Create,
        code.into(),
        3_000_000,
        GWEI,
        100 * GWEI,
    );
    let deploy = common::send_raw_batch(&url, &[deploy]).await.remove(0);
    wait_status(&url, &deploy, &["ready"]).await;
    seal(1).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&deploy)).await[0]
        .clone()
        .expect("deployed");
    let contract: Address = receipt["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // `score` is simulated against features (0, 0, 0) and becomes ready with that result.
    let score_tx = common::signed_raw(
        &keys[1],
        chain_id,
        0,
        TxKind::Call(contract),
        scoreCall {}.abi_encode().into(),
        1_000_000,
        GWEI,
        100 * GWEI,
    );
    let score_hash = common::send_raw_batch(&url, &[score_tx]).await.remove(0);
    let s = wait_status(&url, &score_hash, &["ready"]).await;
    assert_eq!(s["requests"].as_array().unwrap().len(), 1, "{s}");
    assert!(s["simulations"].as_u64().unwrap() >= 2, "{s}");

    // A better-paying `setFeatures` goes first in the same block and changes the input.
    let set_tx = common::signed_raw(
        &keys[2],
        chain_id,
        0,
        TxKind::Call(contract),
        setFeaturesCall {
            a: 125,
            b: -50,
            c: 300,
        }
        .abi_encode()
        .into(),
        200_000,
        5 * GWEI,
        100 * GWEI,
    );
    let set_hash = common::send_raw_batch(&url, &[set_tx]).await.remove(0);
    wait_status(&url, &set_hash, &["ready"]).await;
    seal(2).await;
    let r = common::receipts(&url, &[set_hash.clone(), score_hash.clone()]).await;
    assert!(r[0].is_some(), "setFeatures is in block 2");
    assert!(r[1].is_none(), "score was left out of block 2 as stale");
    let s = status(&url, &score_hash).await;
    assert_eq!(s["stale"], 1, "{s}");
    assert_ne!(s["status"], "included", "{s}");

    // Re-dispatched at once; ready again with the result for the new features.
    wait_status(&url, &score_hash, &["ready"]).await;
    seal(3).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&score_hash)).await[0]
        .clone()
        .expect("score included in block 3");
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(common::quantity(&receipt["blockNumber"]), 3);
    let event = receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| {
            l["address"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(&INFERENCE_PRECOMPILE.to_string())
        })
        .expect("inference event");
    let topics: Vec<B256> = event["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    let data: Bytes = event["data"].as_str().unwrap().parse().unwrap();
    let ev = ModelInferenceEvent::decode_raw_log(topics, &data).unwrap();
    let sent: Vec<(i128, i128)> = ev.request.input.numbers[0]
        .values
        .iter()
        .map(|n| (n.value, n.decimals))
        .collect();
    assert_eq!(sent, vec![(125, 2), (-50, 2), (300, 2)], "the new features");
    // The stored score is what the model gives for the new features now.
    let fresh = common::rpc(
        &url,
        "eth_call",
        serde_json::json!([{"to": contract, "data": Bytes::from(scoreCall {}.abi_encode())}, "latest"]),
    )
    .await;
    let stored = common::rpc(
        &url,
        "eth_call",
        serde_json::json!([{"to": contract, "data": Bytes::from(lastScoreCall {}.abi_encode())}, "latest"]),
    )
    .await;
    assert_eq!(fresh["result"], stored["result"], "{fresh} {stored}");
    assert_ne!(
        U256::from_be_slice(
            &alloy_primitives::hex::decode(stored["result"].as_str().unwrap()).unwrap()
        ),
        U256::ZERO
    );
    let s = status(&url, &score_hash).await;
    assert_eq!(s["status"], "included");
    assert_eq!(s["blockNumber"], 3);
    assert_eq!(s["stale"], 1);
    assert_eq!(
        s["requests"].as_array().unwrap().len(),
        2,
        "old and new request: {s}"
    );
    node.shutdown().await;
}

/// The value of the series `name` whose `worker` label starts with `worker`.
fn worker_metric(m: &[(String, f64)], name: &str, worker: &str) -> f64 {
    sum(m, &format!("{name}{{worker=\"{worker}"))
}

async fn scrape(addr: std::net::SocketAddr) -> Vec<(String, f64)> {
    metrics(
        &reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
}

/// A node with no in-process workers, served by two `pipe worker` processes that fetch the
/// model from it. One is SIGKILLed while it runs requests: they are retried on the other,
/// every transaction is included, and each request is computed exactly once. A TEE request,
/// which neither worker can sign, is rejected with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_worker_killed_mid_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (node, a, mut b) = with_two_remote_workers(dir.path(), 21).await;
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let metrics_addr = node.metrics_addr.unwrap();
    let linreg = common::model_id(&url, "linreg").await;

    let tx = |key, nonce, request| common::inference_raw(key, chain_id, nonce, request, GWEI);
    let mut raws = Vec::new();
    for (i, key) in node.dev_keys[..20].iter().enumerate() {
        for n in 0..4u64 {
            raws.push(tx(
                key,
                n,
                common::linreg_request(&linreg, [i as i128, n as i128, 7]),
            ));
        }
    }
    let hashes = common::send_raw_batch(&url, &raws).await;
    assert_eq!(hashes.len(), 80);
    let mut tee_request = common::linreg_request(&linreg, [1, 2, 3]);
    tee_request.mode = 2;
    let tee = common::send_raw_batch(&url, &[tx(&node.dev_keys[20], 0, tee_request)])
        .await
        .remove(0);

    kill_once_it_delivered(metrics_addr, &mut b).await;
    all_succeed(&url, &hashes).await;
    a_took_over(metrics_addr, 80.0).await;

    let s = status(&url, &tee).await;
    assert_eq!(s["status"], "rejected", "{s}");
    assert!(s["reason"].as_str().unwrap().contains("signing key"), "{s}");
    drop(a);
    node.shutdown().await;
}

/// A node (no in-process workers, `accounts` dev accounts, a block every 250 ms) with two
/// `pipe worker` processes, `a` and `b`, of capacity 2 whose runs take 100 ms more.
async fn with_two_remote_workers(
    dir: &std::path::Path,
    accounts: u32,
) -> (
    pipe_node::node::RunningNode,
    common::WorkerProcess,
    common::WorkerProcess,
) {
    let port = common::free_port();
    let node_url = format!("http://127.0.0.1:{port}");
    let worker = |name: &str| {
        common::WorkerProcess::start(
            &node_url,
            &[
                "--capacity",
                "2",
                "--model-latency-ms",
                "100",
                "--name",
                name,
            ],
        )
    };
    let (a, b) = (worker("a"), worker("b"));
    let mut config = common::test_config(dir);
    config.http_port = port;
    config.block_time = BlockTime::Interval(Duration::from_millis(250));
    config.dev_accounts = accounts;
    config.workers = 0;
    config.remote_workers = vec![a.url.clone(), b.url.clone()];
    config.worker_timeout = Duration::from_secs(10);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    (node, a, b)
}

/// Kills worker `b` once it has delivered results and, with the queue still deep, is running
/// more.
async fn kill_once_it_delivered(metrics_addr: std::net::SocketAddr, b: &mut common::WorkerProcess) {
    for _ in 0..2000 {
        if worker_metric(
            &scrape(metrics_addr).await,
            "pipe_worker_completed_total",
            "b@",
        ) >= 2.0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    b.kill();
}

/// After [`kill_once_it_delivered`]: each of the `requests` distinct requests was computed
/// once, `b` failed with work in flight, and `a` did at least half.
async fn a_took_over(metrics_addr: std::net::SocketAddr, requests: f64) {
    let m = scrape(metrics_addr).await;
    assert_eq!(
        sum(&m, "pipe_worker_completed_total"),
        requests,
        "each request computed once: {m:?}"
    );
    assert!(
        worker_metric(&m, "pipe_worker_failures_total", "b@") >= 1.0,
        "b was killed with work in flight: {m:?}"
    );
    assert!(
        worker_metric(&m, "pipe_worker_completed_total", "a@") >= requests / 2.0,
        "{m:?}"
    );
}

/// Waits for every transaction's receipt; each must have succeeded.
async fn all_succeed(url: &str, hashes: &[String]) -> Vec<Value> {
    let receipts = common::wait_receipts(url, hashes, 240, Duration::from_millis(250)).await;
    let mut out = Vec::new();
    for (h, r) in hashes.iter().zip(receipts) {
        let Some(r) = r else {
            panic!("{h} not included: {}", status(url, h).await);
        };
        assert_eq!(r["status"], "0x1", "{r}");
        out.push(r);
    }
    out
}

/// A remote worker on loopback that answers every request with one number, `value` (as a
/// `ModelOutput` of the precompile's encoding), once `gate` is open: a liar (a forged number,
/// the gate open from the start), or a model exactly as slow as a test needs (the gate opened
/// when the test is done waiting; no timing involved). Returns its URL.
async fn scripted_worker(
    name: &str,
    capacity: usize,
    value: f32,
    gate: tokio::sync::watch::Receiver<bool>,
) -> String {
    use axum::{
        Router,
        body::Bytes as Body,
        http::header,
        routing::{get, post},
    };
    let info = serde_json::to_string(&pipe_worker::WorkerInfo {
        name: name.into(),
        capacity,
        signer: None,
        version: "0".into(),
        kinds: vec![pipe_primitives::inference::ModelKind::Onnx],
        llm_capacity: 1,
        loaded: vec![],
    })
    .unwrap();
    let app = Router::new()
        .route(
            "/v1/info",
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], info) }),
        )
        .route(
            "/v1/infer",
            post(move |body: Body| {
                let mut gate = gate.clone();
                async move {
                    // A closed channel counts as open: the test has ended its wait.
                    let _ = gate.wait_for(|open| *open).await;
                    let infer: pipe_worker::InferRequest = serde_json::from_slice(&body).unwrap();
                    let result = pipe_executor::output_result(
                        alloy_primitives::keccak256(&infer.request),
                        &[pipe_primitives::inference::Tensor {
                            name: "variable".into(),
                            shape: vec![1, 1],
                            data: pipe_primitives::inference::TensorData::Float32(vec![value]),
                        }],
                        4,
                    );
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        serde_json::to_vec(&result).unwrap(),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A remote worker that forges its VANILLA results (a valid `ModelOutput`, with 4242.5
/// where the model gives something else). With every result audited (`--audit-one-in 1`) the
/// node runs each on its own runtime first, catches the liar at its first result, quarantines
/// it, and the request runs on the honest `pipe worker`: no forged output reaches a block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_remote_worker_is_caught_and_its_results_never_reach_a_block() {
    const FORGED: f32 = 4242.5;
    let (_open, gate) = tokio::sync::watch::channel(true);
    let liar = scripted_worker("liar", 8, FORGED, gate).await;

    // The liar comes first: among idle workers the dispatcher takes the first, so the liar
    // gets the first request however the simulations interleave (with an in-process worker
    // first, a fast one could take every request and the liar none). The honest worker is a
    // `pipe worker` process.
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let honest = common::WorkerProcess::start(
        &format!("http://127.0.0.1:{port}"),
        &["--capacity", "2", "--name", "honest"],
    );
    let mut config = common::test_config(dir.path());
    config.http_port = port;
    config.block_time = BlockTime::Interval(Duration::from_millis(250));
    config.workers = 0;
    config.remote_workers = vec![liar, honest.url.clone()];
    config.audit_one_in = 1;
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let raws: Vec<Bytes> = (0..12u64)
        .map(|n| {
            common::inference_raw(
                &node.dev_keys[(n % 4) as usize],
                chain_id,
                n / 4,
                common::linreg_request(&linreg, [n as i128, 2, 3]),
                GWEI,
            )
        })
        .collect();
    let hashes = common::send_raw_batch(&url, &raws).await;
    let receipts = common::wait_receipts(&url, &hashes, 240, Duration::from_millis(250)).await;
    // The forged number as the event encodes it: 4242.5 at the result's decimals.
    let forged_word = format!("{:064x}", 42_425_000u64);
    for (h, r) in hashes.iter().zip(&receipts) {
        let r = r.as_ref().unwrap_or_else(|| panic!("{h} not included"));
        assert_eq!(r["status"], "0x1", "{r}");
        let data = r["logs"][0]["data"].as_str().unwrap();
        assert!(
            !data.contains(&forged_word),
            "{h} carries the forged output"
        );
    }
    let metrics = node.pipe.as_ref().unwrap().render_metrics();
    let lies: f64 = metrics
        .lines()
        .find(|l| l.starts_with("pipe_worker_lies_total{worker=\"liar@"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lie recorded:\n{metrics}"));
    // Caught at its first result; the others it was already running (capacity 8) were
    // caught too, and it got no work after that.
    assert!((1.0..=8.0).contains(&lies), "{lies} lies caught");
    drop(honest);
    node.shutdown().await;
}

sol! {
    function registered(address worker) returns (bool);
    function register(address worker);
}

/// TEE mode: in-process workers sign with the dev worker key, which the dev genesis registers
/// in the worker registry. The block carries the signature; replay accepts it, and rejects a
/// result signed by an unregistered key or not signed at all. The registry is an ordinary
/// contract the owner drives with transactions; a key registered later does not make an
/// earlier block valid, because registration is read from the block's parent state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tee_results_are_signed_by_a_registered_worker_and_replay_checks_them() {
    use pipe_executor::attest::{self, AttestError, WORKER_REGISTRY};
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_millis(200));
    config.workers = 2;
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let dev_worker = pipe_node::dev::dev_worker_signer().address();
    let keys = &node.dev_keys;
    let send = |key_index: usize, nonce: u64, to: Address, data: Vec<u8>| {
        let raw = common::signed_raw(
            &keys[key_index],
            chain_id,
            nonce,
            TxKind::Call(to),
            data.into(),
            300_000,
            GWEI,
            100 * GWEI,
        );
        let url = url.clone();
        async move {
            let hash = common::send_raw_batch(&url, &[raw]).await.remove(0);
            let receipt = common::wait_receipts(
                &url,
                std::slice::from_ref(&hash),
                400,
                Duration::from_millis(50),
            )
            .await
            .remove(0);
            match receipt {
                Some(r) => r,
                None => panic!("{hash} not included: {}", status(&url, &hash).await),
            }
        }
    };

    let mut request = common::linreg_request(&linreg, [4, 5, 6]);
    request.mode = 2;
    let receipt = send(
        1,
        0,
        INFERENCE_PRECOMPILE,
        runModelInferenceCall { request }.abi_encode(),
    )
    .await;
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let number = common::quantity(&receipt["blockNumber"]);
    let block = node.store.block(number).unwrap().unwrap();
    let parent = node.store.block(number - 1).unwrap().unwrap();
    let view = node.store.state_at(number - 1).unwrap();
    let result = block.sidecar.results()[0].clone();
    assert_eq!(result.signature.len(), 65);
    assert_eq!(attest::signer(&result).unwrap(), dev_worker);

    let models = node.models.clone() as Arc<dyn InferenceProvider>;
    let replay = |b: &pipe_primitives::SealedBlock| {
        replay_block(&node.executor, view.clone(), &parent, b, models.clone())
    };
    replay(&block).expect("an attested block replays");
    let with = |r: InferenceResult| recommit(&block, vec![r]);
    // Signed by a key nobody registered.
    let rogue = alloy_signer_local::PrivateKeySigner::random();
    let mut forged = result.clone();
    forged.signature = {
        use alloy_signer::SignerSync;
        rogue
            .sign_hash_sync(&forged.signing_hash())
            .unwrap()
            .as_bytes()
            .to_vec()
            .into()
    };
    match replay(&with(forged.clone())) {
        Err(ReplayError::Unattested { reason, .. }) => {
            assert_eq!(reason, AttestError::NotRegistered(rogue.address()))
        }
        other => panic!("expected an unattested result, got {other:?}"),
    }
    // Not signed at all.
    let mut unsigned = result.clone();
    unsigned.signature = Bytes::new();
    assert!(matches!(
        replay(&with(unsigned)),
        Err(ReplayError::Unattested {
            reason: AttestError::Unsigned,
            ..
        })
    ));

    // The registry: readable by anyone, driven by its owner (dev account 0) alone.
    let is_registered = |who: Address| {
        let url = url.clone();
        async move {
            let r = common::rpc(
                &url,
                "eth_call",
                serde_json::json!([{"to": WORKER_REGISTRY, "data": Bytes::from(registeredCall { worker: who }.abi_encode())}, "latest"]),
            )
            .await;
            r["result"].as_str().unwrap().ends_with('1')
        }
    };
    assert!(is_registered(dev_worker).await);
    assert!(!is_registered(rogue.address()).await);
    let register = registerCall {
        worker: rogue.address(),
    }
    .abi_encode();
    let refused = send(2, 0, WORKER_REGISTRY, register.clone()).await;
    assert_eq!(refused["status"], "0x0", "only the owner registers");
    let accepted = send(0, 0, WORKER_REGISTRY, register).await;
    assert_eq!(accepted["status"], "0x1", "{accepted}");
    assert!(is_registered(rogue.address()).await);
    assert!(attest::is_registered(&node.store.state().unwrap(), rogue.address()).unwrap());
    // Registered now, but not in the parent state of the block that used it.
    assert!(matches!(
        replay(&with(forged)),
        Err(ReplayError::Unattested {
            reason: AttestError::NotRegistered(_),
            ..
        })
    ));
    drop(view);
    node.shutdown().await;
}

/// A follower (`--follow`) imports every block of a leader over JSON-RPC by replaying it from
/// the block alone, including a model it fetched from the leader and TEE results, and ends
/// bit-identical: same block hashes, state roots and receipts. It refuses transactions with a
/// pointer to the leader. A fresh follower of a leader whose stored sidecar was tampered with
/// stops at the block before and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_replays_every_block_over_rpc_and_rejects_a_tampered_one() {
    let leader_dir = tempfile::tempdir().unwrap();
    let leader_config = |block_time| {
        let mut c = common::test_config(leader_dir.path());
        c.block_time = block_time;
        c.workers = 2;
        c
    };
    // One block a second: a dev block is at least a second after its parent, so faster
    // blocks run the leader's timestamps ahead of the clock, and the follower rightly stops
    // at blocks more than 15 s in its future.
    let leader = launch(
        leader_config(BlockTime::Interval(Duration::from_secs(1))),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let url = leader.rpc_url();
    let chain_id = leader.executor.config().chain_id;
    let follower_of = |leader_url: String, dir: &std::path::Path| {
        let mut c = common::test_config(dir);
        c.follow = Some(leader_url);
        c.follow_interval = Duration::from_millis(50);
        launch(c, Arc::new(SystemClock))
    };
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follower_of(url.clone(), follower_dir.path()).await.unwrap();

    // A model the follower does not have: uploaded to the leader only.
    let bytes =
        std::fs::read(common::repo_root().join("fixtures/models/normalized_ridge.onnx")).unwrap();
    let meta = common::rpc(
        &url,
        "pipe_uploadModel",
        serde_json::json!([Bytes::from(bytes), {"name": "ridge"}]),
    )
    .await["result"]
        .clone();
    let width = meta["inputs"][0]["shape"][1].as_u64().unwrap() as usize;
    let ridge = ModelInferenceRequest {
        mode: 0,
        modelCID: meta["id"].as_str().unwrap().into(),
        input: ModelInput {
            numbers: vec![MultiDimensionalNumberTensor {
                name: meta["inputs"][0]["name"].as_str().unwrap().into(),
                values: (0..width)
                    .map(|i| Number {
                        value: i as i128 + 1,
                        decimals: 1,
                    })
                    .collect(),
                shape: vec![1, width as u32],
            }],
            strings: vec![],
        },
    };
    let linreg = common::model_id(&url, "linreg").await;
    let mut requests = vec![ridge];
    for i in 0..6 {
        let mut r = common::linreg_request(&linreg, [i, 2 * i, 3]);
        r.mode = if i % 2 == 0 { 2 } else { 0 };
        requests.push(r);
    }
    let raws: Vec<Bytes> = requests
        .into_iter()
        .enumerate()
        .map(|(i, request)| common::inference_raw(&leader.dev_keys[i], chain_id, 0, request, GWEI))
        .collect();
    let refused = common::rpc(
        &follower.rpc_url(),
        "eth_sendRawTransaction",
        serde_json::json!([raws[0]]),
    )
    .await;
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("send transactions to {url}")),
        "{refused}"
    );
    let hashes = common::send_raw_batch(&url, &raws).await;
    let receipts = common::wait_receipts(&url, &hashes, 400, Duration::from_millis(50)).await;
    let last = receipts
        .iter()
        .map(|r| common::quantity(&r.as_ref().expect("included")["blockNumber"]))
        .max()
        .unwrap();
    for r in &receipts {
        assert_eq!(r.as_ref().unwrap()["status"], "0x1", "{r:?}");
    }

    // The follower catches up and agrees on everything.
    let follower_url = follower.rpc_url();
    // Waits on the follower's own count: it is updated just after the block is stored, so a
    // wait on the store's head could read the count one block short.
    let following = follower.follower.as_ref().unwrap();
    for _ in 0..400 {
        if following.status().imported >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = following.status();
    assert!(status.imported >= last, "{status:?}");
    assert!(status.last_error.is_none(), "{status:?}");
    for n in 0..=last {
        let (a, b) = (
            leader.store.block(n).unwrap().unwrap(),
            follower.store.block(n).unwrap().unwrap(),
        );
        assert_eq!(a.hash, b.hash, "block {n}");
        assert_eq!(a.sidecar, b.sidecar, "block {n}");
    }
    assert_eq!(
        common::receipts(&follower_url, &hashes).await,
        receipts,
        "the follower serves the same receipts"
    );
    let tee_block = common::quantity(&receipts[1].as_ref().unwrap()["blockNumber"]);
    follower.shutdown().await;
    leader.shutdown().await;

    // Tamper with the leader's copy of a block with results, then follow it afresh.
    forge_on_disk(leader_dir.path(), tee_block);
    let leader = launch(leader_config(BlockTime::OnDemand), Arc::new(SystemClock))
        .await
        .unwrap();
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = follower_of(leader.rpc_url(), fresh_dir.path())
        .await
        .unwrap();
    let mut status = Default::default();
    for _ in 0..400 {
        status = fresh.follower.as_ref().unwrap().status();
        if status.last_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let err = status.last_error.clone().unwrap_or_default();
    assert!(
        err.contains(&format!("block {tee_block}")) && err.contains("sidecar root"),
        "{status:?}"
    );
    assert_eq!(fresh.store.head().unwrap(), Some(tee_block - 1));
    fresh.shutdown().await;
    leader.shutdown().await;
}

/// Expiry on controlled time (TTL 2 blocks): an inference transaction whose model is still
/// running, the same sender's next transaction, a transaction behind a nonce gap, and one
/// whose request waits in the queue (its status says how many requests are ahead) are not
/// included in blocks 1 and 2, so they expire when block 2 is sealed, each with its reason.
/// They leave the pool, so the sender's pending nonce falls back. A plain transfer sent with
/// them is included in block 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_not_included_within_the_ttl_expire_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    // One worker of one slot whose runs answer only when the test lets them: the running
    // request outlasts the test's two blocks however slowly the test goes.
    let (open, gate) = tokio::sync::watch::channel(false);
    config.workers = 0;
    config.remote_workers = vec![scripted_worker("held", 1, 1.5, gate).await];
    config.audit_one_in = 0;
    config.tx_ttl_blocks = 2;
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let keys = &node.dev_keys;
    let infer = |key: usize, nonce: u64, x: i128| {
        common::inference_raw(
            &keys[key],
            chain_id,
            nonce,
            common::linreg_request(&linreg, [x, x, x]),
            GWEI,
        )
    };
    let transfer = |key: usize, nonce: u64| {
        common::signed_raw(
            &keys[key],
            chain_id,
            nonce,
            TxKind::Call(Address::repeat_byte(0x77)),
            Bytes::new(),
            21_000,
            GWEI,
            100 * GWEI,
        )
    };
    let running = common::send_raw_batch(&url, &[infer(0, 0, 1)])
        .await
        .remove(0);
    wait_status(&url, &running, &["awaiting_inference"]).await;
    let hashes = common::send_raw_batch(
        &url,
        &[
            transfer(0, 1),
            transfer(1, 1),
            transfer(2, 0),
            infer(3, 0, 2),
        ],
    )
    .await;
    let (child, gapped, plain, queued) = (&hashes[0], &hashes[1], &hashes[2], &hashes[3]);
    let s = wait_status(&url, queued, &["awaiting_inference"]).await;
    assert_eq!(
        s["ahead"], 0,
        "first in the queue, behind the running one: {s}"
    );
    wait_status(&url, plain, &["ready"]).await;

    seal_block(&clock, &url, 1).await;
    assert!(common::receipts(&url, std::slice::from_ref(plain)).await[0].is_some());
    seal_block(&clock, &url, 2).await;
    for h in [&running, child, gapped, queued] {
        let s = status(&url, h).await;
        assert_eq!(s["status"], "expired", "{s}");
        let reason = s["reason"].as_str().unwrap();
        if h == child {
            assert!(
                reason.contains(&format!(
                    "earlier transaction of the sender ({running}) expired"
                )),
                "{s}"
            );
        } else {
            assert!(reason.contains("not included within 2 blocks"), "{s}");
        }
        let tx = common::rpc(&url, "eth_getTransactionByHash", serde_json::json!([h])).await;
        assert!(
            tx["result"].is_null(),
            "expired transactions leave the pool: {tx}"
        );
    }
    assert_eq!(common::pending_nonce(&url, keys[0].address()).await, 0);
    let pipe = node.pipe.as_ref().unwrap();
    assert_eq!(pipe.metrics.expired.get(), 4);
    open.send_replace(true);
    node.shutdown().await;
}

/// A flood from one sender does not hold back others: a sender's transactions are discovered
/// in nonce order (each may depend on the one before), so it has one request outstanding at a
/// time however many it sends, and the single worker's slot goes to other senders' requests in
/// between, even though the flooding sender pays a higher tip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_sender_does_not_hold_back_others() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_millis(100));
    config.workers = 1;
    config.model_latency = Duration::from_millis(50);
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let infer = |key: usize, nonce: u64, x: i128, tip: u128| {
        common::inference_raw(
            &node.dev_keys[key],
            chain_id,
            nonce,
            common::linreg_request(&linreg, [x, key as i128, 5]),
            tip * GWEI,
        )
    };
    let flood: Vec<Bytes> = (0..30).map(|n| infer(0, n, n as i128, 10)).collect();
    let flood = common::send_raw_batch(&url, &flood).await;
    let others: Vec<Bytes> = (1..6).map(|k| infer(k, 0, 100, 1)).collect();
    let others = common::send_raw_batch(&url, &others).await;
    let all: Vec<String> = flood.iter().chain(&others).cloned().collect();
    let receipts = common::wait_receipts(&url, &all, 600, Duration::from_millis(50)).await;
    let block = |r: &Option<Value>| common::quantity(&r.as_ref().expect("included")["blockNumber"]);
    let last_other = receipts[30..].iter().map(block).max().unwrap();
    let flood_blocks: Vec<u64> = receipts[..30].iter().map(block).collect();
    assert!(
        last_other < flood_blocks[29],
        "the other senders wait for a few of the flood's requests, not all 30: others by block {last_other}, flood {flood_blocks:?}"
    );
    assert!(
        last_other <= flood_blocks[14],
        "others by block {last_other}, flood {flood_blocks:?}"
    );
    node.shutdown().await;
}

sol! {
    function run(bytes call);
}

/// The inference price, on controlled time. Four blocks each charged three times the target's
/// cost units raise it by an eighth per block; each block's header carries the price its
/// transactions paid and the units they were charged for, receipts' gas moves with it, and
/// `eth_estimateGas` quotes the next block's. Three idle blocks lower it by an eighth each.
/// Then: a transaction whose contract reverts after its inference still pays the inference
/// (its units count toward the price); one whose gas cannot cover the inference is refused
/// by eth_sendRawTransaction before any model runs; a sender over its cap on transactions with inference is rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inference_price_follows_load_and_inference_is_paid_on_revert() {
    use pipe_executor::inference::{INFERENCE_BASE_GAS, INFERENCE_WORD_GAS};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    config.workers = 2;
    config.inference_pricing = pipe_primitives::InferencePricing {
        initial_price: 100,
        min_price: 1,
        target_units: 1_000,
        max_change_denominator: 8,
    };
    config.max_inference_txs_per_sender = 2;
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let units = common::rpc(&url, "pipe_getModel", serde_json::json!([linreg])).await["result"]
        ["costUnits"]
        .as_u64()
        .unwrap();
    let keys = &node.dev_keys;
    let fields = |n: u64| {
        let url = url.clone();
        async move {
            let b = common::rpc(
                &url,
                "eth_getBlockByNumber",
                serde_json::json!([format!("0x{n:x}"), false]),
            )
            .await;
            let extra: Bytes = b["result"]["extraData"].as_str().unwrap().parse().unwrap();
            InferenceFields::decode(&extra).unwrap()
        }
    };
    let next_price = || {
        let url = url.clone();
        async move {
            common::quantity(
                &common::rpc(&url, "pipe_inferenceGasPrice", serde_json::json!([])).await["result"]
                    ["nextPrice"],
            )
        }
    };
    let request = common::linreg_request(&linreg, [1, 2, 3]);
    let calldata = Bytes::from(
        runModelInferenceCall {
            request: request.clone(),
        }
        .abi_encode(),
    );
    let estimate = || {
        let (url, data) = (url.clone(), calldata.clone());
        let from = keys[9].address();
        async move {
            common::quantity(
                &common::rpc(
                    &url,
                    "eth_estimateGas",
                    serde_json::json!([{"from": from, "to": INFERENCE_PRECOMPILE, "data": data}]),
                )
                .await["result"],
            )
        }
    };
    assert_eq!(next_price().await, 100);
    let estimate_at_100 = estimate().await;

    // Sustained load: three uses of one request per block (3 × target units).
    let mut expected = 100u64;
    let mut gas_used = Vec::new();
    for block in 1..=4u64 {
        let raws: Vec<Bytes> = (0..3)
            .map(|s| common::inference_raw(&keys[s], chain_id, block - 1, request.clone(), GWEI))
            .collect();
        let hashes = common::send_raw_batch(&url, &raws).await;
        for h in &hashes {
            wait_status(&url, h, &["ready"]).await;
        }
        seal_block(&clock, &url, block).await;
        let f = fields(block).await;
        assert_eq!(f.gas_price, expected, "block {block}");
        assert_eq!(f.units, 3 * units, "block {block}");
        let receipts = common::receipts(&url, &hashes).await;
        let used: Vec<u64> = receipts
            .iter()
            .map(|r| common::quantity(&r.as_ref().expect("included")["gasUsed"]))
            .collect();
        assert!(used.iter().all(|g| *g == used[0]), "{used:?}");
        gas_used.push((expected, used[0]));
        expected += (expected / 8).max(1);
    }
    assert!(
        gas_used
            .windows(2)
            .all(|w| w[1].1 - w[0].1 == units * (w[1].0 - w[0].0))
    );
    assert_eq!(next_price().await, expected);
    assert_eq!(estimate().await - estimate_at_100, units * (expected - 100));

    // Idle: the price falls an eighth per block.
    for block in 5..=7u64 {
        seal_block(&clock, &url, block).await;
        let f = fields(block).await;
        assert_eq!((f.gas_price, f.units), (expected, 0), "block {block}");
        expected -= expected / 8;
    }

    // A contract that reverts after its inference: the inference is paid and counted.
    let contract = deploy(&clock, &url, &keys[3], chain_id, "RevertAfterInference", 8).await;
    assert_eq!(fields(8).await.gas_price, expected);
    // Block 8 used no inference either.
    expected -= expected / 8;
    let before = common::rpc(
        &url,
        "eth_getBalance",
        serde_json::json!([keys[4].address(), "latest"]),
    )
    .await;
    let reverting = common::signed_raw(
        &keys[4],
        chain_id,
        0,
        TxKind::Call(contract),
        runCall {
            call: calldata.clone(),
        }
        .abi_encode()
        .into(),
        1_000_000,
        GWEI,
        100 * GWEI,
    );
    let reverting = common::send_raw_batch(&url, &[reverting]).await.remove(0);
    wait_status(&url, &reverting, &["ready"]).await;
    seal_block(&clock, &url, 9).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&reverting)).await[0]
        .clone()
        .expect("included");
    assert_eq!(receipt["status"], "0x0", "it reverted: {receipt}");
    let price9 = fields(9).await;
    assert_eq!(price9.gas_price, expected);
    assert_eq!(
        price9.units, units,
        "the reverted transaction's inference counts"
    );
    let inference_gas = INFERENCE_BASE_GAS
        + units * price9.gas_price
        + INFERENCE_WORD_GAS * (calldata.len() as u64).div_ceil(32);
    let used = common::quantity(&receipt["gasUsed"]);
    assert!(
        used > inference_gas,
        "{used} covers the inference's {inference_gas}"
    );
    let after = common::rpc(
        &url,
        "eth_getBalance",
        serde_json::json!([keys[4].address(), "latest"]),
    )
    .await;
    let paid = before["result"].as_str().unwrap().parse::<U256>().unwrap()
        - after["result"].as_str().unwrap().parse::<U256>().unwrap();
    assert_eq!(
        paid,
        U256::from(used)
            * receipt["effectiveGasPrice"]
                .as_str()
                .unwrap()
                .parse::<U256>()
                .unwrap()
    );

    // Gas that cannot cover the inference: rejected up front, no model runs for it.
    let underpaid = common::signed_raw(
        &keys[5],
        chain_id,
        0,
        TxKind::Call(INFERENCE_PRECOMPILE),
        runModelInferenceCall {
            request: common::linreg_request(&linreg, [4, 5, 6]),
        }
        .abi_encode()
        .into(),
        60_000,
        GWEI,
        100 * GWEI,
    );
    // Knowable at admission: eth_sendRawTransaction answers with the reason, and nothing
    // is acknowledged.
    let r = common::rpc(
        &url,
        "eth_sendRawTransaction",
        serde_json::json!([underpaid]),
    )
    .await;
    assert_eq!(r["error"]["code"], -32000, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gas cannot cover inference")),
        "{r}"
    );
    let nonce = common::rpc(
        &url,
        "eth_getTransactionCount",
        serde_json::json!([keys[5].address(), "pending"]),
    )
    .await;
    assert_eq!(nonce["result"], "0x0", "{nonce}");

    // A sender over its cap of two live transactions with inference.
    let raws: Vec<Bytes> = (0..3)
        .map(|n| {
            common::inference_raw(
                &keys[6],
                chain_id,
                n,
                common::linreg_request(&linreg, [7, 8, n as i128]),
                GWEI,
            )
        })
        .collect();
    let hashes = common::send_raw_batch(&url, &raws).await;
    wait_status(&url, &hashes[0], &["ready"]).await;
    wait_status(&url, &hashes[1], &["ready"]).await;
    let s = wait_status(&url, &hashes[2], &["rejected"]).await;
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("2 transactions with inference pending (limit 2)"),
        "{s}"
    );
    node.shutdown().await;
}

/// Carry-over keeps results. Blocks fit one inference transaction (gas limit), three are
/// ready at once: each block includes the best-paying one left, the others stay `ready` with
/// the reason that they were carried over, and each request is computed exactly once.
/// Model runs PIPE's workers have completed.
fn model_runs(pipe: &pipe_inference_pool::Pipe) -> f64 {
    sum(
        &metrics(&pipe.render_metrics()),
        "pipe_worker_completed_total",
    )
}

/// A PIPE node with two workers whose blocks are sealed one per second of `clock`, and three
/// one-inference transactions from three senders (tips 1, 2 and 3 gwei), all ready.
async fn three_ready(
    datadir: &std::path::Path,
    clock: &ManualClock,
    gas_limit: Option<u64>,
) -> (pipe_node::node::RunningNode, Vec<String>) {
    let mut config = common::test_config(datadir);
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    config.workers = 2;
    config.gas_limit = gas_limit;
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let raws: Vec<Bytes> = (0..3)
        .map(|s| {
            common::inference_raw(
                &node.dev_keys[s],
                chain_id,
                0,
                common::linreg_request(&linreg, [s as i128, 1, 2]),
                (s as u128 + 1) * GWEI,
            )
        })
        .collect();
    let hashes = common::send_raw_batch(&url, &raws).await;
    for h in &hashes {
        wait_status(&url, h, &["ready"]).await;
    }
    (node, hashes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_transactions_a_block_leaves_out_keep_their_results_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    // A 300 000-gas transaction fits; after it (about 60 000 used) a second does not.
    let (node, hashes) = three_ready(dir.path(), &clock, Some(330_000)).await;
    let url = node.rpc_url();
    let pipe = node.pipe.clone().unwrap();
    let completed = || model_runs(&pipe);
    assert_eq!(completed(), 3.0);

    // Best tip first, one per block; the others carried over with their results.
    for (block, included) in [(1u64, 2usize), (2, 1), (3, 0)] {
        seal_block(&clock, &url, block).await;
        let receipts = common::receipts(&url, &hashes).await;
        assert!(
            receipts[included].is_some(),
            "block {block}: {included} is in"
        );
        for waiting in 0..included {
            assert!(receipts[waiting].is_none());
            let s = status(&url, &hashes[waiting]).await;
            assert_eq!(s["status"], "ready", "{s}");
            assert!(
                s["reason"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("not in block {block}")),
                "{s}"
            );
            assert_eq!(s["outstanding"], 0, "its result is kept: {s}");
        }
    }
    assert_eq!(completed(), 3.0, "nothing was computed twice");
    let deferred: Vec<u64> = pipe
        .block_history()
        .iter()
        .filter(|b| (1..=3).contains(&b.number))
        .map(|b| b.deferred)
        .collect();
    assert_eq!(deferred, vec![2, 1, 0]);
    node.shutdown().await;
}

/// A block proposed with PIPE's results and never finalized changes nothing: every
/// transaction is still ready with its results, nothing was computed again, the pool and the
/// store are as they were; the block the sealer then finalizes includes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proposal_never_finalized_leaves_pipe_the_pool_and_the_store_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let (node, hashes) = three_ready(dir.path(), &clock, None).await;
    let url = node.rpc_url();
    let pipe = node.pipe.clone().unwrap();
    let completed = || model_runs(&pipe);
    assert_eq!(completed(), 3.0);

    let builder = pipe_builder::PayloadBuilder::new(
        node.pool.clone(),
        node.executor.clone(),
        Arc::new(clock.clone()),
    )
    .with_gate(pipe.clone());
    let chain = node.chain.clone();
    let proposal = tokio::task::spawn_blocking(move || {
        let parent = chain.head();
        let attrs = pipe_chain::ProposeAttributes {
            timestamp: parent.header.timestamp + 1,
            beneficiary: Address::ZERO,
        };
        chain.propose(
            &builder,
            parent.hash,
            attrs,
            u64::MAX,
            &std::sync::atomic::AtomicBool::new(false),
        )
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(proposal.block.transactions.len(), 3);
    assert_eq!(proposal.block.sidecar.len(), 3);
    drop(proposal);

    assert_eq!(node.store.head().unwrap(), Some(0));
    assert_eq!(node.pool.len(), 3);
    for h in &hashes {
        let s = status(&url, h).await;
        assert_eq!(s["status"], "ready", "{s}");
        assert_eq!(s["outstanding"], 0, "{s}");
    }
    assert_eq!(completed(), 3.0);

    // The sealer's block, proposed and finalized, includes them with the same results.
    seal_block(&clock, &url, 1).await;
    let receipts = common::receipts(&url, &hashes).await;
    assert!(receipts.iter().all(|r| r.is_some()));
    assert_eq!(completed(), 3.0, "nothing was computed twice");
    node.shutdown().await;
}

/// A transaction waiting for its result is simulated again on every block while its sender's
/// next nonce waits behind it; those re-runs are not its doing and never reject it: with the
/// worker holding its result for 40 blocks, both transactions are included once it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_slow_result_across_many_blocks_is_not_held_against_a_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    // The worker answers when the test opens the gate, after block 40; its runs may take
    // that long (40 s on the node's clock) without timing out.
    let (open, gate) = tokio::sync::watch::channel(false);
    config.workers = 0;
    config.remote_workers = vec![scripted_worker("held", 1, 1.5, gate).await];
    config.audit_one_in = 0;
    config.worker_timeout = Duration::from_secs(3600);
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let raws: Vec<Bytes> = (0..2)
        .map(|n| {
            common::inference_raw(
                &node.dev_keys[0],
                chain_id,
                n,
                common::linreg_request(&linreg, [n as i128, 2, 3]),
                GWEI,
            )
        })
        .collect();
    let hashes = common::send_raw_batch(&url, &raws).await;
    wait_status(&url, &hashes[0], &["awaiting_inference"]).await;
    // 40 blocks while the model runs, each followed by a discovery pass over the sender (its
    // second transaction is pending), each stopping again at the first one's request.
    let mut seen = status(&url, &hashes[0]).await["simulations"]
        .as_u64()
        .unwrap();
    for block in 1..=40u64 {
        seal_block(&clock, &url, block).await;
        let waiting = |s: &Value| {
            ["awaiting_inference", "simulating", "pending"]
                .iter()
                .any(|w| s["status"] == *w)
        };
        for _ in 0..2000 {
            let s = status(&url, &hashes[0]).await;
            if !waiting(&s) {
                break;
            }
            let n = s["simulations"].as_u64().unwrap();
            if n > seen {
                seen = n;
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let s = status(&url, &hashes[0]).await;
        assert_ne!(s["status"], "rejected", "block {block}: {s}");
        assert!(waiting(&s), "block {block}: {s}");
    }
    assert!(
        seen > 33,
        "the waiting transaction was re-simulated {seen} times"
    );
    open.send_replace(true);
    for h in &hashes {
        wait_status(&url, h, &["ready"]).await;
    }
    seal_block(&clock, &url, 41).await;
    let receipts = common::receipts(&url, &hashes).await;
    assert!(receipts.iter().all(|r| r.is_some()), "{receipts:?}");
    node.shutdown().await;
}

mod many {
    alloy_sol_types::sol! {
        function run(bytes[] calls) external;
    }
}

/// Every model run is paid by the transaction that caused it. A transaction making one
/// request more than the chain allows is included as a revert that paid for the eight that
/// ran (it was rejected unpaid after eight runs before); a transaction whose inference was
/// requested cannot be replaced by one that would not pay for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_past_the_request_bound_is_included_as_a_paid_revert_and_pins_the_transaction() {
    use pipe_executor::inference::{INFERENCE_BASE_GAS, INFERENCE_WORD_GAS, MAX_REQUESTS_PER_TX};

    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let units = common::rpc(&url, "pipe_getModel", serde_json::json!([linreg])).await["result"]
        ["costUnits"]
        .as_u64()
        .unwrap();
    let keys = &node.dev_keys;
    let contract = deploy(&clock, &url, &keys[0], chain_id, "ManyInferences", 1).await;
    let calls: Vec<Bytes> = (0..=MAX_REQUESTS_PER_TX as i128)
        .map(|x| {
            runModelInferenceCall {
                request: common::linreg_request(&linreg, [x, 1, 2]),
            }
            .abi_encode()
            .into()
        })
        .collect();
    let input: Bytes = many::runCall {
        calls: calls.clone(),
    }
    .abi_encode()
    .into();

    // eth_call and eth_estimateGas say why, as the block will.
    for method in ["eth_call", "eth_estimateGas"] {
        let r = common::rpc(
            &url,
            method,
            serde_json::json!([{"from": keys[1].address(), "to": contract, "data": input}]),
        )
        .await;
        assert!(
            r["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("at most 8 distinct inference requests")),
            "{method}: {r}"
        );
    }

    let before = common::rpc(
        &url,
        "eth_getBalance",
        serde_json::json!([keys[1].address(), "latest"]),
    )
    .await;
    let raw = common::signed_raw(
        &keys[1],
        chain_id,
        0,
        TxKind::Call(contract),
        input.clone(),
        2_000_000,
        GWEI,
        100 * GWEI,
    );
    let hash = common::send_raw_batch(&url, &[raw]).await.remove(0);
    let s = wait_status(&url, &hash, &["ready", "rejected"]).await;
    assert_eq!(s["status"], "ready", "{s}");
    assert_eq!(
        s["requests"].as_array().unwrap().len(),
        MAX_REQUESTS_PER_TX,
        "{s}"
    );

    // Its inference was requested: a replacement, even paying more, is refused.
    let replacement = common::signed_raw(
        &keys[1],
        chain_id,
        0,
        TxKind::Call(Address::repeat_byte(9)),
        Bytes::new(),
        21_000,
        10 * GWEI,
        200 * GWEI,
    );
    let r = common::rpc(
        &url,
        "eth_sendRawTransaction",
        serde_json::json!([replacement]),
    )
    .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("replacement transaction refused")),
        "{r}"
    );

    seal_block(&clock, &url, 2).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&hash)).await[0]
        .clone()
        .expect("included");
    assert_eq!(receipt["status"], "0x0", "it reverted: {receipt}");
    let b = common::rpc(
        &url,
        "eth_getBlockByNumber",
        serde_json::json!(["0x2", false]),
    )
    .await;
    let extra: Bytes = b["result"]["extraData"].as_str().unwrap().parse().unwrap();
    let fields = InferenceFields::decode(&extra).unwrap();
    assert_eq!(
        fields.units,
        MAX_REQUESTS_PER_TX as u64 * units,
        "the eight requests that ran are charged"
    );
    let eight = MAX_REQUESTS_PER_TX as u64
        * (INFERENCE_BASE_GAS
            + units * fields.gas_price
            + INFERENCE_WORD_GAS * (calls[0].len() as u64).div_ceil(32));
    let used = common::quantity(&receipt["gasUsed"]);
    assert!(used > eight, "{used} covers the eight runs' {eight}");
    let after = common::rpc(
        &url,
        "eth_getBalance",
        serde_json::json!([keys[1].address(), "latest"]),
    )
    .await;
    let paid = before["result"].as_str().unwrap().parse::<U256>().unwrap()
        - after["result"].as_str().unwrap().parse::<U256>().unwrap();
    assert!(paid >= U256::from(used) * U256::from(GWEI), "paid {paid}");

    // Once it has left the pool, its nonce is used; a new transaction goes in as usual.
    let next = common::signed_raw(
        &keys[1],
        chain_id,
        1,
        TxKind::Call(Address::repeat_byte(9)),
        Bytes::new(),
        21_000,
        GWEI,
        100 * GWEI,
    );
    let r = common::rpc(&url, "eth_sendRawTransaction", serde_json::json!([next])).await;
    assert!(r["result"].is_string(), "{r}");

    // Two requests, gas for the first only: admission cannot know (the first needs its
    // answer before the second is reached), so the transaction is acknowledged; discovery's
    // second round finds the second request underpaid and ends it with the reason, which its
    // status keeps.
    let one: Bytes = many::runCall {
        calls: calls[..1].to_vec(),
    }
    .abi_encode()
    .into();
    let two: Bytes = many::runCall {
        calls: calls[1..3].to_vec(),
    }
    .abi_encode()
    .into();
    let estimate = common::rpc(
        &url,
        "eth_estimateGas",
        serde_json::json!([{"from": keys[2].address(), "to": contract, "data": one}]),
    )
    .await;
    // The estimate for the first alone, plus what the longer calldata costs (4 gas a zero
    // byte, 16 another): far from the second request's base of 25000.
    let calldata = |d: &Bytes| -> u64 { d.iter().map(|b| if *b == 0 { 4 } else { 16 }).sum() };
    let gas = common::quantity(&estimate["result"]) + calldata(&two) - calldata(&one) + 1_000;
    let raw = common::signed_raw(
        &keys[2],
        chain_id,
        0,
        TxKind::Call(contract),
        two,
        gas,
        GWEI,
        100 * GWEI,
    );
    let hash = common::send_raw_batch(&url, &[raw]).await.remove(0);
    let s = wait_status(&url, &hash, &["rejected"]).await;
    assert!(
        s["reason"]
            .as_str()
            .is_some_and(|m| m.contains("gas cannot cover inference")),
        "{s}"
    );
    node.shutdown().await;
}

/// Plain transfers (no data, to an account without code) cannot reach the precompile, so
/// discovery marks them ready without simulating: a backlog of them costs no simulations
/// (each new one used to run its sender's whole backlog again). A call into code is simulated
/// as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_transfers_are_ready_without_a_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let pipe = node.pipe.clone().unwrap();
    let simulations = || sum(&metrics(&pipe.render_metrics()), "pipe_simulations_total");
    let keys = &node.dev_keys;
    let raws: Vec<Bytes> = (0..30)
        .map(|n| {
            common::signed_raw(
                &keys[0],
                chain_id,
                n,
                TxKind::Call(Address::repeat_byte(0x42)),
                Bytes::new(),
                21_000,
                GWEI,
                100 * GWEI,
            )
        })
        .collect();
    let mut hashes = Vec::new();
    for raw in &raws {
        hashes.extend(common::send_raw_batch(&url, std::slice::from_ref(raw)).await);
    }
    for h in &hashes {
        wait_status(&url, h, &["ready"]).await;
    }
    assert_eq!(simulations(), 0.0, "no transfer was simulated");
    seal_block(&clock, &url, 1).await;
    let receipts = common::receipts(&url, &hashes).await;
    assert!(receipts.iter().all(Option::is_some), "all 30 included");
    // Data to the same address is a call: simulated.
    let call = common::signed_raw(
        &keys[0],
        chain_id,
        30,
        TxKind::Call(Address::repeat_byte(0x42)),
        Bytes::from_static(&[1, 2, 3]),
        30_000,
        GWEI,
        100 * GWEI,
    );
    let h = common::send_raw_batch(&url, &[call]).await.remove(0);
    wait_status(&url, &h, &["ready"]).await;
    assert!(simulations() >= 1.0);
    node.shutdown().await;
}

/// A base-fee spike loses nothing. 1000 transfers whose fee cap is 1.3 times the starting
/// base fee, into blocks that hold 50: full blocks raise the base fee past the cap while the
/// backlog drains, the rest wait (they are neither dropped nor rejected), the base fee falls
/// in the blocks they sit out, and every one is included in the end. (Before such transactions
/// were made to wait, a spike like this dropped 38 577 of 50 000 acknowledged transfers, with
/// their senders' later nonces.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_base_fee_spike_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    config.gas_limit = Some(50 * 21_000);
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let base_fee = |n: u64| {
        let url = url.clone();
        async move {
            let b = common::rpc(
                &url,
                "eth_getBlockByNumber",
                serde_json::json!([format!("0x{n:x}"), false]),
            )
            .await;
            common::quantity(&b["result"]["baseFeePerGas"]) as u128
        }
    };
    let start = base_fee(0).await;
    let cap = start * 13 / 10;
    let keys = &node.dev_keys;
    let mut hashes = Vec::new();
    for key in &keys[..10] {
        let raws: Vec<Bytes> = (0..100)
            .map(|n| {
                common::signed_raw(
                    key,
                    chain_id,
                    n,
                    TxKind::Call(Address::repeat_byte(0x61)),
                    Bytes::new(),
                    21_000,
                    1_000,
                    cap,
                )
            })
            .collect();
        hashes.extend(common::send_raw_batch(&url, &raws).await);
    }
    assert_eq!(hashes.len(), 1000);
    let mut highest = 0u128;
    let mut waited_above_cap = false;
    let mut block = 0;
    loop {
        block += 1;
        assert!(block < 200, "not all included after 200 blocks");
        seal_block(&clock, &url, block).await;
        let fee = base_fee(block).await;
        highest = highest.max(fee);
        let receipts = common::receipts(&url, &hashes).await;
        let missing = receipts.iter().filter(|r| r.is_none()).count();
        if fee > cap && missing > 0 {
            waited_above_cap = true;
            // Above the cap, pending ones are still there, waiting.
            let pending = hashes
                .iter()
                .zip(&receipts)
                .find(|(_, r)| r.is_none())
                .map(|(h, _)| h.clone())
                .unwrap();
            let tx = common::rpc(
                &url,
                "eth_getTransactionByHash",
                serde_json::json!([pending]),
            )
            .await;
            assert!(tx["result"].is_object(), "still pending: {tx}");
        }
        if missing == 0 {
            break;
        }
    }
    assert!(
        waited_above_cap,
        "the base fee ({highest}) rose above the cap ({cap}) while transactions waited"
    );
    node.shutdown().await;
}

/// The language-model consumer (contracts/test/OGLanguageConsumer.sol).
mod language {
    alloy_sol_types::sol! {
        function complete(string model, string prompt) returns (string);
        function completeStored(string model) returns (string);
        function setPrompt(string p);
        function converse(string model, string question) returns (string);
        function chat(string model, string question) returns (string);
        function lastFinishReason() returns (string);
    }
}

/// The logs the precompile emitted in a receipt, as (topics, data).
fn precompile_logs(receipt: &Value) -> Vec<(Vec<B256>, Bytes)> {
    receipt["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["address"]
                .as_str()
                .unwrap()
                .eq_ignore_ascii_case(&INFERENCE_PRECOMPILE.to_string())
        })
        .map(|l| {
            let topics = l["topics"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().parse().unwrap())
                .collect();
            (topics, l["data"].as_str().unwrap().parse().unwrap())
        })
        .collect()
}

/// `eth_call` at the head, as a `string` return value (or the error object).
async fn call_string(url: &str, to: Address, data: Vec<u8>) -> Result<String, Value> {
    let r = common::rpc(
        url,
        "eth_call",
        serde_json::json!([{"to": to, "data": Bytes::from(data)}, "latest"]),
    )
    .await;
    match r["result"].as_str() {
        Some(hex) => {
            let bytes = alloy_primitives::hex::decode(hex).unwrap();
            // Any function returning one `string` decodes the same way.
            Ok(language::completeCall::abi_decode_returns(&bytes)
                .unwrap_or_else(|e| panic!("{e}: {r}")))
        }
        None => Err(r["error"].clone()),
    }
}

/// OpenGradient's `runLLMCompletion` and `runLLMChat` through PIPE on a real node, with a GGUF
/// model uploaded over RPC (the test kit's tiny Llama: random weights, the real loading,
/// template and decoding paths). `eth_call` runs the real model and its answer is the one the
/// block commits; a chat's two dependent turns in one transaction; equal requests from two
/// senders computed once; a prompt read from storage that an earlier transaction in the block
/// changes is re-run; the block replays from its sidecar; bad requests revert with reasons.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn language_model_calls_are_pre_executed_committed_and_replayed() {
    use language::*;
    use pipe_executor::inference::{LLMChat, LLMCompletionEvent};
    use pipe_llm::test_utils::{CHATML_TEMPLATE, TinyShape, tiny_llama_gguf};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut config = common::test_config(dir.path());
    config.block_time = BlockTime::Interval(Duration::from_secs(1));
    config.workers = 2;
    let node = launch(config, Arc::new(clock.clone())).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let keys = &node.dev_keys;
    let pipe = node.pipe.clone().unwrap();

    let file = tiny_llama_gguf(
        TinyShape {
            context: 512,
            ..Default::default()
        },
        Some(CHATML_TEMPLATE),
    );
    let up = common::rpc(
        &url,
        "pipe_uploadModel",
        serde_json::json!([alloy_primitives::hex::encode_prefixed(&file), {"name": "tiny-llm"}]),
    )
    .await;
    assert_eq!(up["result"]["kind"], "llm", "{up}");
    assert_eq!(up["result"]["llm"]["contextLength"], 512, "{up}");
    let model = up["result"]["id"].as_str().unwrap().to_string();
    let listed = common::rpc(&url, "pipe_listModels", serde_json::json!([])).await;
    assert!(
        listed["result"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == model.as_str() && m["kind"] == "llm"),
        "{listed}"
    );
    let code = compiled("OGLanguageConsumer");
    let raw = common::signed_raw(
        &keys[0],
        chain_id,
        0,
        TxKind::Create,
        code.into(),
        6_000_000,
        GWEI,
        100 * GWEI,
    );
    let hash = common::send_raw_batch(&url, &[raw]).await.remove(0);
    wait_status(&url, &hash, &["ready"]).await;
    seal_block(&clock, &url, 1).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&hash)).await[0]
        .clone()
        .expect("deployed");
    assert_eq!(receipt["status"], "0x1", "{receipt}");
    let contract: Address = receipt["contractAddress"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // eth_call runs the real model.
    let prompt = "In the beginning";
    let complete = |prompt: &str| {
        completeCall {
            model: model.clone(),
            prompt: prompt.into(),
        }
        .abi_encode()
    };
    let expected = call_string(&url, contract, complete(prompt)).await.unwrap();
    let send = |key: usize, data: Vec<u8>, tip: u128| {
        common::signed_raw(
            &keys[key],
            chain_id,
            0,
            TxKind::Call(contract),
            data.into(),
            3_000_000,
            tip,
            100 * GWEI,
        )
    };
    let converse = converseCall {
        model: model.clone(),
        question: "Who made the world?".into(),
    }
    .abi_encode();
    let chat = chatCall {
        model: model.clone(),
        question: "What is the price of ETH?".into(),
    }
    .abi_encode();
    let raws = vec![
        send(1, complete(prompt), GWEI),
        send(2, complete(prompt), GWEI),
        send(3, converse, GWEI),
        send(4, chat, GWEI),
    ];
    let hashes = common::send_raw_batch(&url, &raws).await;
    for h in &hashes {
        wait_status(&url, h, &["ready"]).await;
    }
    seal_block(&clock, &url, 2).await;
    let receipts: Vec<Value> = common::receipts(&url, &hashes)
        .await
        .into_iter()
        .map(|r| r.expect("included in block 2"))
        .collect();
    for r in &receipts {
        assert_eq!(r["status"], "0x1", "{r}");
        assert_eq!(common::quantity(&r["blockNumber"]), 2);
    }
    // The committed answers are eth_call's, and the two equal requests were computed once.
    let mut keys_seen = Vec::new();
    for r in &receipts[..2] {
        let logs = precompile_logs(r);
        assert_eq!(logs.len(), 1);
        let ev = LLMCompletionEvent::decode_raw_log(logs[0].0.clone(), &logs[0].1).unwrap();
        assert_eq!(ev.response.answer, expected);
        assert_eq!(ev.request.prompt, prompt);
        keys_seen.push(ev.inferenceID);
    }
    assert_eq!(keys_seen[0], keys_seen[1], "equal requests, one key");
    // The second turn quotes the first answer: dependent calls in one transaction.
    let turns: Vec<LLMChat> = precompile_logs(&receipts[2])
        .iter()
        .map(|(t, d)| LLMChat::decode_raw_log(t.clone(), d).unwrap())
        .collect();
    assert_eq!(turns.len(), 2);
    assert_eq!(
        turns[1].request.messages[1].content,
        turns[0].response.message.content
    );
    assert_eq!(turns[1].request.messages[2].content, "And then?");
    // A TEE chat with a tool offered: answered, signed by the registered dev worker.
    let tee = precompile_logs(&receipts[3]);
    let tee = LLMChat::decode_raw_log(tee[0].0.clone(), &tee[0].1).unwrap();
    assert_eq!(tee.request.mode, 1);
    assert_eq!(tee.response.message.role, "assistant");
    assert!(
        ["stop", "length", "tool_calls"].contains(&tee.response.finish_reason.as_str()),
        "{}",
        tee.response.finish_reason
    );
    // complete ×2 (one key), converse (2), chat (1): four distinct requests, each run once.
    assert_eq!(
        model_runs(&pipe),
        4.0,
        "each distinct request computed once"
    );

    // The block replays from its sidecar, on a node that runs no model for it.
    let block = node.store.block(2).unwrap().unwrap();
    assert_eq!(block.sidecar.results().len(), 4);
    let parent = node.store.block(1).unwrap().unwrap();
    let view = node.store.state_at(1).unwrap();
    let replayed = replay_block(
        &node.executor,
        view,
        &parent,
        &block,
        node.models.clone() as Arc<dyn InferenceProvider>,
    )
    .expect("the block replays");
    assert_eq!(replayed.header.receipts_root, block.header.receipts_root);

    // Stale: the prompt is read from storage, and a better-paying transaction in the same
    // block changes it first; the completion is run again on the new prompt.
    let stored = send(
        5,
        completeStoredCall {
            model: model.clone(),
        }
        .abi_encode(),
        GWEI,
    );
    let stored = common::send_raw_batch(&url, &[stored]).await.remove(0);
    wait_status(&url, &stored, &["ready"]).await;
    let set = send(
        6,
        setPromptCall {
            p: "And God said".into(),
        }
        .abi_encode(),
        5 * GWEI,
    );
    let set = common::send_raw_batch(&url, &[set]).await.remove(0);
    wait_status(&url, &set, &["ready"]).await;
    seal_block(&clock, &url, 3).await;
    let r = common::receipts(&url, &[set.clone(), stored.clone()]).await;
    assert!(
        r[0].is_some() && r[1].is_none(),
        "the stale completion waits"
    );
    // Ready again once the new request (for the new prompt) has its result.
    let mut again = Value::Null;
    for _ in 0..3000 {
        again = status(&url, &stored).await;
        if again["status"] == "ready" && again["outstanding"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(again["stale"], 1, "{again}");
    assert_eq!(again["requests"].as_array().unwrap().len(), 2, "{again}");
    seal_block(&clock, &url, 4).await;
    let receipt = common::receipts(&url, std::slice::from_ref(&stored)).await[0]
        .clone()
        .expect("included in block 4");
    let logs = precompile_logs(&receipt);
    let ev = LLMCompletionEvent::decode_raw_log(logs[0].0.clone(), &logs[0].1).unwrap();
    assert_eq!(ev.request.prompt, "And God said");
    assert_eq!(
        ev.response.answer,
        call_string(&url, contract, complete("And God said"))
            .await
            .unwrap()
    );

    // Bad requests revert with their reason (eth_call straight to 0x…F4).
    let onnx = common::model_id(&url, "linreg").await;
    let completion = |edit: &dyn Fn(&mut pipe_executor::inference::LLMCompletionRequest)| {
        let mut request = pipe_executor::inference::LLMCompletionRequest {
            mode: 0,
            modelCID: model.clone(),
            prompt: "hi".into(),
            max_tokens: 4,
            stop_sequence: vec![],
            temperature: 0,
        };
        edit(&mut request);
        pipe_executor::inference::runLLMCompletionCall { request }.abi_encode()
    };
    let linreg_as_llm = completion(&|r| r.modelCID = onnx.clone());
    let over_cap = completion(&|r| r.max_tokens = 513);
    let too_hot = completion(&|r| r.temperature = 101);
    let unknown = completion(&|r| r.modelCID = pipe_primitives::ModelId::of(b"none").to_string());
    let long = completion(&|r| r.prompt = "word ".repeat(600));
    let llm_as_onnx = runModelInferenceCall {
        request: common::linreg_request(&model, [1, 2, 3]),
    }
    .abi_encode();
    for (data, why) in [
        (linreg_as_llm, "is not a language model"),
        (over_cap, "over the model's cap of 512"),
        (too_hot, "temperature 101"),
        (unknown, "unknown model"),
        (long, "over the model's context of 512 tokens"),
        (llm_as_onnx, "is a language model"),
    ] {
        let e = call_string(&url, INFERENCE_PRECOMPILE, data)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{e} should say {why}");
    }
    node.shutdown().await;
}

/// Remote workers serve language models too (they fetch the GGUF file from the node by id, in
/// chunks, and check its hash; `pipe model add` uploaded it in chunks): 40 completions from
/// 20 senders on two `pipe worker` processes, one killed once it has delivered results with
/// the queue still deep. Nothing is lost: every
/// transaction is included, each request computed once, the survivor takes the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_llm_worker_killed_mid_load_loses_nothing() {
    use pipe_executor::inference::{LLMCompletionRequest, runLLMCompletionCall};
    use pipe_llm::test_utils::{TinyShape, tiny_llama_gguf};
    let dir = tempfile::tempdir().unwrap();
    let (node, a, mut b) = with_two_remote_workers(dir.path(), 20).await;
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let metrics_addr = node.metrics_addr.unwrap();
    // A file of several chunks: `pipe model add` uploads it in pieces, and each worker
    // fetches it in pieces.
    let file = tiny_llama_gguf(
        TinyShape {
            dim: 128,
            hidden: 512,
            layers: 3,
            ..Default::default()
        },
        None,
    );
    assert!(file.len() > pipe_rpc::MAX_CHUNK_BYTES, "{}", file.len());
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &file).unwrap();
    let added = std::process::Command::new(env!("CARGO_BIN_EXE_pipe"))
        .args(["model", "add", path.to_str().unwrap(), "--name", "tiny-llm"])
        .env("ETH_RPC_URL", &url)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let printed = String::from_utf8_lossy(&added.stdout);
    assert!(printed.contains("kind:       llm (llama)"), "{printed}");
    let model = printed.lines().last().unwrap().trim().to_string();
    assert_eq!(model, pipe_primitives::ModelId::of(&file).to_string());
    // Chunks out of order, and sessions never opened, are refused with the reason.
    let session = B256::repeat_byte(9);
    let chunk = |offset: &str| {
        common::rpc(
            &url,
            "pipe_uploadModelChunk",
            serde_json::json!([session, offset, "0x0102"]),
        )
    };
    assert!(
        chunk("0x5").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no upload")
    );
    assert_eq!(chunk("0x0").await["result"], "0x2");
    assert!(
        chunk("0x5").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("starts there")
    );
    let finish = |s: B256| {
        common::rpc(
            &url,
            "pipe_finishModelUpload",
            serde_json::json!([s, {"name": "x"}]),
        )
    };
    let not_a_model = finish(session).await;
    assert!(
        not_a_model["error"]["message"]
            .as_str()
            .unwrap()
            .contains("model rejected"),
        "{not_a_model}"
    );
    assert!(
        finish(session).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no upload")
    );

    let mut raws = Vec::new();
    for (i, key) in node.dev_keys.iter().enumerate() {
        for n in 0..2u64 {
            let data = runLLMCompletionCall {
                request: LLMCompletionRequest {
                    mode: 0,
                    modelCID: model.clone(),
                    prompt: format!("sender {i} asks question {n}"),
                    max_tokens: 6,
                    stop_sequence: vec![],
                    temperature: 30,
                },
            }
            .abi_encode();
            raws.push(common::signed_raw(
                key,
                chain_id,
                n,
                TxKind::Call(INFERENCE_PRECOMPILE),
                data.into(),
                1_000_000,
                GWEI,
                100 * GWEI,
            ));
        }
    }
    let hashes = common::send_raw_batch(&url, &raws).await;
    assert_eq!(hashes.len(), 40);
    kill_once_it_delivered(metrics_addr, &mut b).await;
    for r in all_succeed(&url, &hashes).await {
        assert_eq!(precompile_logs(&r).len(), 1, "{r}");
    }
    a_took_over(metrics_addr, 40.0).await;
    drop(a);
    node.shutdown().await;
}

/// Workers say what they run (`--kinds`), and the dispatcher sends each only that: with one
/// worker for ONNX models and one for language models, every model request is answered by the
/// first and every completion (on the dev chain's own language model) by the second, and
/// neither is ever sent a request it would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_are_sent_only_the_kinds_of_model_they_run() {
    use pipe_executor::inference::{LLMCompletionRequest, runLLMCompletionCall};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let node_url = format!("http://127.0.0.1:{port}");
    let worker = |name: &str, kinds: &str| {
        common::WorkerProcess::start(
            &node_url,
            &["--capacity", "2", "--name", name, "--kinds", kinds],
        )
    };
    let (onnx, llm) = (worker("onnx", "onnx"), worker("llm", "llm"));
    let mut config = common::test_config(dir.path());
    config.http_port = port;
    config.block_time = BlockTime::Interval(Duration::from_millis(250));
    config.dev_accounts = 4;
    config.workers = 0;
    config.remote_workers = vec![onnx.url.clone(), llm.url.clone()];
    config.worker_timeout = Duration::from_secs(20);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let metrics_addr = node.metrics_addr.unwrap();
    let linreg = common::model_id(&url, "linreg").await;
    let kjv = common::model_id(&url, "kjv").await;
    let mut raws = Vec::new();
    for (i, key) in node.dev_keys.iter().enumerate() {
        let model = runModelInferenceCall {
            request: common::linreg_request(&linreg, [i as i128, 2, 3]),
        }
        .abi_encode();
        let completion = runLLMCompletionCall {
            request: LLMCompletionRequest {
                mode: 0,
                modelCID: kjv.clone(),
                prompt: format!(
                    "And the LORD said unto {}",
                    ["Moses", "Aaron", "Noah", "Abram"][i]
                ),
                max_tokens: 8,
                stop_sequence: vec![],
                temperature: 0,
            },
        }
        .abi_encode();
        for (nonce, data) in [(0, model), (1, completion)] {
            raws.push(common::signed_raw(
                key,
                chain_id,
                nonce,
                TxKind::Call(INFERENCE_PRECOMPILE),
                data.into(),
                2_000_000,
                GWEI,
                100 * GWEI,
            ));
        }
    }
    let hashes = common::send_raw_batch(&url, &raws).await;
    assert_eq!(hashes.len(), 8);
    for r in all_succeed(&url, &hashes).await {
        assert_eq!(precompile_logs(&r).len(), 1, "{r}");
    }
    let m = scrape(metrics_addr).await;
    assert_eq!(
        worker_metric(&m, "pipe_worker_completed_total", "onnx@"),
        4.0,
        "{m:?}"
    );
    assert_eq!(
        worker_metric(&m, "pipe_worker_completed_total", "llm@"),
        4.0,
        "{m:?}"
    );
    assert_eq!(sum(&m, "pipe_worker_failures_total"), 0.0, "{m:?}");
    drop((onnx, llm));
    node.shutdown().await;
}

/// A node whose only worker runs ONNX models rejects a language-model request with the reason
/// as soon as a simulation reaches it (no worker would ever be sent it), instead of leaving
/// the transaction to expire; model requests are served as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kind_no_worker_runs_is_rejected_with_the_reason() {
    use pipe_executor::inference::{LLMCompletionRequest, runLLMCompletionCall};
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let node_url = format!("http://127.0.0.1:{port}");
    let onnx = common::WorkerProcess::start(
        &node_url,
        &["--capacity", "2", "--name", "onnx", "--kinds", "onnx"],
    );
    let mut config = common::test_config(dir.path());
    config.http_port = port;
    config.block_time = BlockTime::Interval(Duration::from_millis(250));
    config.dev_accounts = 2;
    config.workers = 0;
    config.remote_workers = vec![onnx.url.clone()];
    config.worker_timeout = Duration::from_secs(20);
    let node = launch(config, Arc::new(SystemClock)).await.unwrap();
    let url = node.rpc_url();
    let chain_id = node.executor.config().chain_id;
    let linreg = common::model_id(&url, "linreg").await;
    let kjv = common::model_id(&url, "kjv").await;
    let model = common::inference_raw(
        &node.dev_keys[0],
        chain_id,
        0,
        common::linreg_request(&linreg, [1, 2, 3]),
        GWEI,
    );
    let completion = runLLMCompletionCall {
        request: LLMCompletionRequest {
            mode: 0,
            modelCID: kjv,
            prompt: "In the beginning God".into(),
            max_tokens: 8,
            stop_sequence: vec![],
            temperature: 0,
        },
    }
    .abi_encode();
    let completion = common::signed_raw(
        &node.dev_keys[1],
        chain_id,
        0,
        TxKind::Call(INFERENCE_PRECOMPILE),
        completion.into(),
        2_000_000,
        GWEI,
        100 * GWEI,
    );
    let hashes = common::send_raw_batch(&url, &[model, completion]).await;
    all_succeed(&url, &hashes[..1]).await;
    let mut s = status(&url, &hashes[1]).await;
    for _ in 0..100 {
        if s["status"] == "rejected" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        s = status(&url, &hashes[1]).await;
    }
    assert_eq!(s["status"], "rejected", "{s}");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("no worker of this node runs that kind"),
        "{s}"
    );
    drop(onnx);
    node.shutdown().await;
}
