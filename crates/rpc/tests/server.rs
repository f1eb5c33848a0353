//! The RPC crate on its own: its server over a test chain and a pool whose store can be made
//! to fail, driven with raw JSON-RPC. Every refusal of `eth_sendRawTransaction` carries the
//! code and text clients match on, and an acknowledgement means the transaction is stored.

use std::{net::SocketAddr, sync::Arc};

use alloy_eips::Encodable2718;
use alloy_primitives::{Address, Bytes, U256};
use pipe_chain::test_utils::TestChain;
use pipe_mempool::{MemoryPoolStore, Pool, PoolConfig};
use pipe_primitives::{ModelId, ModelMeta, Tasks};
use pipe_rpc::{ModelRegistry, NodeHandle, RpcConfig, UploadError, UploadOptions};
use serde_json::{Value, json};

/// A model store with no models that refuses uploads.
struct NoRegistry;

impl ModelRegistry for NoRegistry {
    fn upload(&self, _: &[u8], _: &UploadOptions) -> Result<(ModelMeta, bool), UploadError> {
        Err(UploadError::Invalid("uploads are off in this test".into()))
    }
    fn list(&self) -> Vec<ModelMeta> {
        Vec::new()
    }
    fn get(&self, _: &ModelId) -> Option<ModelMeta> {
        None
    }
    fn file(&self, _: &ModelId) -> Result<Option<Bytes>, UploadError> {
        Ok(None)
    }
}

struct Server {
    url: String,
    chain: TestChain,
    disk: Arc<MemoryPoolStore>,
    handle: jsonrpsee::server::ServerHandle,
}

async fn server() -> Server {
    let chain = TestChain::new(1);
    let disk = Arc::new(MemoryPoolStore::default());
    let pool = Arc::new(
        Pool::with_store(
            PoolConfig::new(chain.config.chain_id, chain.config.gas_limit),
            disk.clone(),
        )
        .unwrap(),
    );
    let (_, head) = tokio::sync::watch::channel(Arc::new(chain.genesis.clone()));
    let node = NodeHandle {
        store: chain.store.clone(),
        pool,
        executor: chain.executor.clone(),
        head,
        accounts: vec![],
        client_version: "pipe/test".into(),
        models: Arc::new(NoRegistry),
        lifecycle: None,
        follows: None,
        tasks: Tasks::new(),
        shutdown: tokio::sync::watch::channel(false).1,
    };
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (bound, handle) = pipe_rpc::start(&RpcConfig::new(addr), node).await.unwrap();
    Server {
        url: format!("http://{bound}"),
        chain,
        disk,
        handle,
    }
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    reqwest::Client::new()
        .post(url)
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn error(answer: &Value) -> (i64, String) {
    (
        answer["error"]["code"]
            .as_i64()
            .unwrap_or_else(|| panic!("no error in {answer}")),
        answer["error"]["message"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn an_acknowledged_transaction_is_stored_and_every_refusal_has_its_code() {
    let s = server().await;
    let mut f = s.chain.factory(0);
    let raw =
        |tx: alloy_consensus::TxEnvelope| alloy_primitives::hex::encode_prefixed(tx.encoded_2718());
    let first = f.transfer(Address::repeat_byte(1), U256::from(1));
    let hash = *first.tx_hash();
    let first = raw(first);
    let ok = rpc(&s.url, "eth_sendRawTransaction", json!([first])).await;
    assert_eq!(ok["result"], json!(hash.to_string()));
    assert!(s.disk.contains(&hash), "acknowledged before it was stored");
    // The pending transaction is served.
    let got = rpc(&s.url, "eth_getTransactionByHash", json!([hash])).await;
    assert_eq!(got["result"]["hash"], json!(hash.to_string()));
    assert!(got["result"]["blockNumber"].is_null());

    // geth's texts and codes, as clients match on them.
    assert_eq!(
        error(&rpc(&s.url, "eth_sendRawTransaction", json!([first])).await),
        (-32000, "already known".into())
    );
    let (code, message) =
        error(&rpc(&s.url, "eth_sendRawTransaction", json!(["0xdeadbeef"])).await);
    assert_eq!(code, -32602);
    assert!(
        message.starts_with("failed to decode signed transaction"),
        "{message}"
    );

    // A disk that cannot take it: not acknowledged, and not pending either.
    s.disk.set_failing(true);
    let second = f.transfer(Address::repeat_byte(1), U256::from(1));
    let second_hash = *second.tx_hash();
    let second = raw(second);
    let (code, message) = error(&rpc(&s.url, "eth_sendRawTransaction", json!([second])).await);
    assert_eq!(code, -32603);
    assert!(message.contains("transaction not accepted"), "{message}");
    assert!(
        rpc(&s.url, "eth_getTransactionByHash", json!([second_hash])).await["result"].is_null()
    );
    // Space is back: the same bytes go through, no restart needed.
    s.disk.set_failing(false);
    let ok = rpc(&s.url, "eth_sendRawTransaction", json!([second])).await;
    assert_eq!(ok["result"], json!(second_hash.to_string()));
    assert_eq!(
        rpc(
            &s.url,
            "eth_getTransactionCount",
            json!([f.address(), "pending"])
        )
        .await["result"],
        json!("0x2")
    );
    s.handle.stop().unwrap();
}

#[tokio::test]
async fn reads_and_unknown_methods() {
    let s = server().await;
    assert_eq!(
        rpc(&s.url, "eth_chainId", json!([])).await["result"],
        json!("0x7a69")
    );
    assert_eq!(
        rpc(&s.url, "eth_blockNumber", json!([])).await["result"],
        json!("0x0")
    );
    let balance = rpc(
        &s.url,
        "eth_getBalance",
        json!([s.chain.factory(0).address(), "latest"]),
    )
    .await;
    assert_eq!(
        balance["result"],
        json!(format!("{:#x}", pipe_chain::test_utils::TEST_BALANCE))
    );
    assert_eq!(
        error(&rpc(&s.url, "eth_noSuchMethod", json!([])).await).0,
        -32601
    );
    s.handle.stop().unwrap();
}
