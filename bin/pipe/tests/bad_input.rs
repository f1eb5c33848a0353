//! Hostile and malformed input over JSON-RPC: each gets a clear error, nothing accepted is
//! lost, and the node keeps serving.

mod common;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::Encodable2718;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, Bytes, TxKind, U256, hex};
use alloy_signer_local::PrivateKeySigner;
use serde_json::{Value, json};

fn sign(key: &PrivateKeySigner, f: impl FnOnce(&mut TxEip1559)) -> Bytes {
    let mut tx = TxEip1559 {
        chain_id: 31337,
        nonce: 0,
        gas_limit: 21_000,
        max_fee_per_gas: 10_000_000_000,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(Address::repeat_byte(9)),
        value: U256::from(1),
        ..Default::default()
    };
    f(&mut tx);
    let sig = key.sign_transaction_sync(&mut tx).unwrap();
    let env: TxEnvelope = tx.into_signed(sig).into();
    env.encoded_2718().into()
}

async fn send(url: &str, raw: &Bytes) -> Value {
    common::rpc(url, "eth_sendRawTransaction", json!([raw])).await
}

fn error(v: &Value) -> (i64, String) {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("expected an error, got {v}"));
    (
        e["code"].as_i64().unwrap(),
        e["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::dev_node(dir.path()).await;
    let url = node.rpc_url();
    let dev: PrivateKeySigner = common::DEV_KEY_0.parse().unwrap();
    let client = reqwest::Client::new();

    // Junk JSON: parse error.
    let resp: Value = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(error(&resp).0, -32700);
    // Unknown method.
    let (code, _) = error(&common::rpc(&url, "eth_noSuchMethod", json!([])).await);
    assert_eq!(code, -32601);
    // Wrong parameter types.
    let (code, _) = error(&common::rpc(&url, "eth_getBalance", json!(["not an address"])).await);
    assert_eq!(code, -32602);

    // A good transaction is accepted first: nothing below may lose it. Nonce 1 leaves a gap,
    // so it waits in the pool (queued) while the checks below run.
    let good = sign(&dev, |t| t.nonce = 1);
    let accepted = send(&url, &good).await;
    let good_hash = accepted["result"].as_str().expect("accepted").to_string();

    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "malformed rlp",
            Bytes::from(hex!("02deadbeef").to_vec()),
            "failed to decode signed transaction",
        ),
        ("empty", Bytes::new(), "failed to decode signed transaction"),
        (
            "wrong chain id",
            sign(&dev, |t| t.chain_id = 1),
            "invalid chain id",
        ),
        (
            "gas above block limit",
            sign(&dev, |t| t.gas_limit = 30_000_001),
            "exceeds block gas limit",
        ),
        (
            "intrinsic gas",
            sign(&dev, |t| t.gas_limit = 20_999),
            "intrinsic gas too low",
        ),
        (
            "tip above cap",
            sign(&dev, |t| t.max_priority_fee_per_gas = t.max_fee_per_gas + 1),
            "max priority fee per gas higher than max fee per gas",
        ),
        (
            "oversize",
            sign(&dev, |t| {
                t.input = vec![1u8; 200_000].into();
                t.gas_limit = 16_000_000;
            }),
            "oversized data",
        ),
        (
            "no funds",
            sign(&PrivateKeySigner::random(), |_| {}),
            "insufficient funds for gas * price + value",
        ),
        (
            "replacement underpriced",
            sign(&dev, |t| {
                t.nonce = 1;
                t.value = U256::from(2);
            }),
            "replacement transaction underpriced",
        ),
        ("duplicate", good.clone(), "already known"),
    ];
    for (name, raw, want) in cases {
        let (code, msg) = error(&send(&url, &raw).await);
        assert!(
            msg.contains(want),
            "{name}: got {code} {msg:?}, want {want:?}"
        );
        assert!(code == -32000 || code == -32602, "{name}: code {code}");
    }
    // A bad signature: flip a byte of `s`; recovery yields another sender (no funds) or fails.
    let mut tampered = good.to_vec();
    let n = tampered.len();
    tampered[n - 5] ^= 0xff;
    let (_, msg) = error(&send(&url, &Bytes::from(tampered)).await);
    assert!(
        msg.contains("invalid sender")
            || msg.contains("insufficient funds")
            || msg.contains("failed to decode"),
        "{msg}"
    );

    // A batch over the limit is refused as a whole; a normal batch works.
    let big: Vec<Value> = (0..1001)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId","params":[]}))
        .collect();
    let resp = common::raw_rpc(&url, Value::Array(big)).await;
    assert!(resp.get("error").is_some(), "oversized batch accepted");
    let small: Vec<Value> = (0..10)
        .map(|i| json!({"jsonrpc":"2.0","id":i,"method":"eth_chainId","params":[]}))
        .collect();
    let resp = common::raw_rpc(&url, Value::Array(small)).await;
    assert_eq!(resp.as_array().unwrap().len(), 10);
    // A body over the size limit is refused without taking the node down.
    let huge = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"eth_sendRawTransaction","params":["0x{}"]}}"#,
        "ab".repeat(6 * 1024 * 1024)
    );
    // The server answers 413 and may close the connection before the client has written
    // the whole body, so the client sees either the status or a broken pipe.
    match client
        .post(&url)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
    {
        Ok(resp) => assert_eq!(resp.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "unexpected error: {e}"),
    }
    let (_, msg) = error(&common::rpc(&url, "eth_getBalance", json!(["0x00"])).await);
    assert!(
        !msg.is_empty(),
        "node no longer serving after the oversized body"
    );

    // Filling the gap makes both includable; the queued one was not lost.
    let gap = sign(&dev, |t| t.nonce = 0);
    assert!(send(&url, &gap).await["result"].is_string());
    let mut receipt = Value::Null;
    for _ in 0..100 {
        receipt =
            common::rpc(&url, "eth_getTransactionReceipt", json!([good_hash])).await["result"]
                .clone();
        if !receipt.is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(receipt["status"], "0x1");
    let (_, msg) = error(&send(&url, &gap).await);
    assert!(msg.contains("nonce too low"), "{msg}");
    node.shutdown().await;
}
