//! Crash safety: SIGKILL the node at random moments while transactions stream in (every other
//! one an inference call through PIPE), restart it,
//! and check that every block and receipt a client was given survived, every transaction the
//! node acknowledged is in a block or in the persisted pending set (and is included after the
//! restarts), the chain links up, the state root recomputed from scratch matches the head,
//! and blocks keep coming.
//!
//! Rounds: `PIPE_CRASH_ROUNDS` (default 12).

mod common;

use std::{collections::HashMap, time::Duration};

use alloy_primitives::Address;
use alloy_signer_local::PrivateKeySigner;
use pipe_storage::Store;
use rand::Rng;
use serde_json::{Value, json};

/// A 1 wei transfer to this test's sink address.
fn transfer(key: &PrivateKeySigner, nonce: u64) -> (String, String) {
    common::transfer(key, nonce, Address::repeat_byte(0x77))
}

/// What a client was told: receipt block hash by transaction, block hash by number.
#[derive(Default)]
struct Seen {
    receipts: HashMap<String, (u64, String)>,
    blocks: HashMap<u64, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("PIPE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let key: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let mut seen = Seen::default();
    let mut rng = rand::rng();
    // Acknowledged, without a receipt seen yet: carried across crashes.
    let mut pending: Vec<String> = Vec::new();
    let mut acknowledged = 0usize;

    for round in 0..rounds {
        let port = common::free_port();
        // Fast slots so several blocks commit within a round.
        let node = common::NodeProcess::start(dir.path(), port, &["--block-time-ms", "100"]).await;
        let url = node.url.clone();
        let linreg = common::model_id(&url, "linreg").await;

        // Everything told before the crash must still be there after the restart.
        for (hash, (number, block_hash)) in &seen.receipts {
            let r = common::rpc(&url, "eth_getTransactionReceipt", json!([hash])).await;
            assert_eq!(
                r["result"]["blockHash"].as_str(),
                Some(block_hash.as_str()),
                "round {round}: receipt {hash} lost or changed"
            );
            assert_eq!(r["result"]["blockNumber"], json!(format!("{number:#x}")));
        }
        for (number, hash) in &seen.blocks {
            let b = common::rpc(
                &url,
                "eth_getBlockByNumber",
                json!([format!("{number:#x}"), false]),
            )
            .await;
            assert_eq!(
                b["result"]["hash"].as_str(),
                Some(hash.as_str()),
                "round {round}: block {number} lost or changed"
            );
        }

        // Stream transactions for a random while, recording what the node acknowledges.
        let run_for = Duration::from_millis(rng.random_range(300..1500));
        let started = std::time::Instant::now();
        while started.elapsed() < run_for {
            let nonce = common::pending_nonce(&url, key.address()).await;
            // Every other transaction runs a model: PIPE discovers, dispatches and builds it.
            let (hash, raw) = if nonce % 2 == 0 {
                transfer(&key, nonce)
            } else {
                let raw = common::inference_raw(
                    &key,
                    31337,
                    nonce,
                    common::linreg_request(&linreg, [(nonce % 100) as i128, 1, 2]),
                    1_000_000_000,
                );
                (
                    alloy_primitives::keccak256(&raw).to_string(),
                    alloy_primitives::hex::encode_prefixed(&raw),
                )
            };
            let r = common::rpc(&url, "eth_sendRawTransaction", json!([raw])).await;
            if r["result"].is_string() {
                pending.push(hash);
                acknowledged += 1;
            }
            // Collect receipts given so far.
            let mut still = Vec::new();
            for h in pending.drain(..) {
                let r = common::rpc(&url, "eth_getTransactionReceipt", json!([h])).await;
                match r["result"].as_object() {
                    Some(o) => {
                        let n = common::quantity(&o["blockNumber"]);
                        seen.receipts
                            .insert(h, (n, o["blockHash"].as_str().unwrap().to_string()));
                    }
                    None => still.push(h),
                }
            }
            pending = still;
            let head: Value =
                common::rpc(&url, "eth_getBlockByNumber", json!(["latest", false])).await;
            let n = common::quantity(&head["result"]["number"]);
            seen.blocks
                .insert(n, head["result"]["hash"].as_str().unwrap().to_string());
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
        }
        node.kill();

        // With the process dead, open the store directly: links and state root must hold.
        let store =
            Store::open(&dir.path().join("chain.redb")).expect("store reopens after SIGKILL");
        let head = store.head().unwrap().expect("has head");
        let mut parent = store.block(0).unwrap().unwrap().hash;
        for n in 1..=head {
            let b = store
                .block(n)
                .unwrap()
                .unwrap_or_else(|| panic!("block {n} missing"));
            assert_eq!(
                b.header.parent_hash, parent,
                "round {round}: block {n} does not link"
            );
            assert_eq!(b.transactions.len(), b.receipts.len());
            parent = b.hash;
        }
        // Acknowledged means durable: in a block, or in the persisted pending set.
        let persisted: std::collections::HashSet<alloy_primitives::B256> =
            pipe_storage::PendingLog::open(&dir.path().join("pending.log"))
                .expect("the pending set reopens after SIGKILL")
                .load()
                .iter()
                .map(alloy_primitives::keccak256)
                .collect();
        for h in &pending {
            let hash: alloy_primitives::B256 = h.parse().unwrap();
            assert!(
                persisted.contains(&hash) || store.transaction_location(&hash).unwrap().is_some(),
                "round {round}: acknowledged transaction {h} lost"
            );
        }
        let (computed, in_header) = store.verify_state_root().unwrap();
        assert_eq!(
            computed, in_header,
            "round {round}: state root inconsistent after crash"
        );
    }

    // After all the crashes the node still produces blocks and includes transactions.
    let port = common::free_port();
    let node = common::NodeProcess::start(dir.path(), port, &["--block-time-ms", "100"]).await;
    let nonce = common::pending_nonce(&node.url, key.address()).await;
    let (hash, raw) = transfer(&key, nonce);
    assert!(
        common::rpc(&node.url, "eth_sendRawTransaction", json!([raw])).await["result"].is_string()
    );
    pending.push(hash);
    // Every acknowledged transaction, restored from the pending set where a crash caught it,
    // ends included.
    for _ in 0..200 {
        let mut still = Vec::new();
        for h in pending.drain(..) {
            if !common::rpc(&node.url, "eth_getTransactionReceipt", json!([h])).await["result"]
                .is_object()
            {
                still.push(h);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pending.is_empty(),
        "acknowledged transactions never included after the crash rounds: {pending:?}"
    );
    eprintln!("{acknowledged} transactions acknowledged across {rounds} crashes, none lost");
    assert!(
        seen.receipts.len() > rounds,
        "too few receipts observed to mean anything: {}",
        seen.receipts.len()
    );
    node.kill();
}
