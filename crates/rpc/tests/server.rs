//! The RPC crate on its own: its server over a test chain and a pool whose store can be made
//! to fail, driven with raw JSON-RPC. Every refusal of `eth_sendRawTransaction` carries the
//! code and text clients match on, and an acknowledgement means the transaction is stored.

use std::{net::SocketAddr, sync::Arc, time::Duration};

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
    fn file_range(&self, _: &ModelId, _: u64, _: usize) -> Result<Option<Bytes>, UploadError> {
        Ok(None)
    }
}

struct Server {
    url: String,
    chain: TestChain,
    disk: Arc<MemoryPoolStore>,
    handle: jsonrpsee::server::ServerHandle,
    /// Keeps the head channel open (subscriptions end when it closes).
    _head: tokio::sync::watch::Sender<Arc<pipe_primitives::SealedBlock>>,
    _shutdown: tokio::sync::watch::Sender<bool>,
}

/// A node handle over `chain` with `pool`, and the senders that keep its head and shutdown
/// channels open.
fn node_handle(
    chain: &TestChain,
    pool: Arc<Pool>,
    uploads: pipe_rpc::ModelUploads,
) -> (
    NodeHandle,
    tokio::sync::watch::Sender<Arc<pipe_primitives::SealedBlock>>,
    tokio::sync::watch::Sender<bool>,
) {
    let (head_tx, head) = tokio::sync::watch::channel(Arc::new(chain.genesis.clone()));
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
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
        shutdown: shutdown_rx,
        model_uploads: uploads,
        unlocked: Vec::new(),
        dev: Default::default(),
        metrics: Default::default(),
    };
    (node, head_tx, shutdown_tx)
}

/// `docs/rpc.md` lists exactly the methods the server serves (aliases included).
#[tokio::test]
async fn the_docs_list_every_served_method_and_no_other() {
    let chain = TestChain::new(1);
    let pool = Arc::new(Pool::new(PoolConfig::new(
        chain.config.chain_id,
        chain.config.gas_limit,
    )));
    let (node, _head, _shutdown) = node_handle(&chain, pool, pipe_rpc::ModelUploads::Local);
    let served: std::collections::BTreeSet<String> = pipe_rpc::methods(node)
        .unwrap()
        .method_names()
        .map(String::from)
        .collect();
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rpc.md"),
    )
    .unwrap();
    // The served table's first column: `name` or `name` / `alias` / ...
    let section = doc
        .split("## Served")
        .nth(1)
        .expect("a Served section")
        .split("\n## ")
        .next()
        .unwrap();
    let documented: std::collections::BTreeSet<String> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| {
            l.split('|')
                .nth(1)
                .unwrap()
                .split('/')
                .map(|n| n.trim().trim_matches('`').to_string())
        })
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "served but not in docs/rpc.md: {missing:?}; in docs/rpc.md but not served: {extra:?}"
    );
}

async fn server() -> Server {
    server_with(|_| {}).await
}

async fn server_with(configure: impl FnOnce(&mut RpcConfig)) -> Server {
    server_with_uploads(configure, pipe_rpc::ModelUploads::Local).await
}

async fn server_with_uploads(
    configure: impl FnOnce(&mut RpcConfig),
    uploads: pipe_rpc::ModelUploads,
) -> Server {
    let chain = TestChain::new(1);
    let disk = Arc::new(MemoryPoolStore::default());
    let pool = Arc::new(
        Pool::with_store(
            PoolConfig::new(chain.config.chain_id, chain.config.gas_limit),
            disk.clone(),
        )
        .unwrap(),
    );
    let (node, head_tx, shutdown_tx) = node_handle(&chain, pool, uploads);
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = RpcConfig::new(addr);
    configure(&mut config);
    let (bound, handle) = pipe_rpc::start(&config, node).await.unwrap();
    Server {
        url: format!("http://{bound}"),
        chain,
        disk,
        handle,
        _head: head_tx,
        _shutdown: shutdown_tx,
    }
}

async fn rpc(url: &str, method: &str, params: Value) -> Value {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
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
    // An unknown method gets geth's code and words, alone and inside a batch (ethers falls
    // back to polling only on these words).
    assert_eq!(
        error(&rpc(&s.url, "eth_noSuchMethod", json!([])).await),
        (
            -32601,
            "the method eth_noSuchMethod does not exist/is not available".to_string()
        )
    );
    let batch: Value = reqwest::Client::new()
        .post(&s.url)
        .json(&json!([
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_noSuchFilter", "params": [{}]},
        ]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(batch[0]["result"], json!("0x7a69"), "{batch}");
    assert_eq!(
        batch[1]["error"]["message"],
        json!("the method eth_noSuchFilter does not exist/is not available"),
        "{batch}"
    );
    // Dev-node controls exist, but only a dev chain's driver serves them.
    for method in ["evm_mine", "anvil_mine", "hardhat_mine"] {
        let (code, message) = error(&rpc(&s.url, method, json!([])).await);
        assert_eq!(code, -32000, "{method}");
        assert!(message.contains("dev chain only"), "{method}: {message}");
    }
    s.handle.stop().unwrap();
}

/// A WebSocket upgraded by hand over TCP (raw frames: what the server sends is seen as is).
async fn raw_websocket(addr: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Sends one masked text frame (under 126 bytes) and reads the text frame that answers.
async fn ws_call(s: &mut tokio::net::TcpStream, payload: &[u8]) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    s.write_all(&frame).await.unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x81, "a text frame answers");
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).await.unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => panic!("a huge frame"),
        n => n as usize,
    };
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.unwrap();
    serde_json::from_slice(&body).unwrap()
}

/// A WebSocket that makes one request (`eth_chainId`) and then says nothing more, as an
/// attacker's script would hold it.
async fn idle_websocket(addr: &str) -> tokio::net::TcpStream {
    let mut s = raw_websocket(addr).await;
    let answer = ws_call(
        &mut s,
        br#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#,
    )
    .await;
    assert_eq!(answer["result"], json!("0x7a69"));
    s
}

/// Subscription ids are geth's shape, 16 random bytes as a hex quantity, on the wire (viem drops
/// notifications whose id is a number), and they unsubscribe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_ids_are_hex_strings() {
    let s = server().await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut ws = raw_websocket(&addr).await;
    let answer = ws_call(
        &mut ws,
        br#"{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}"#,
    )
    .await;
    let id = answer["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    // 16 random bytes as a quantity: up to 32 digits, no leading zero.
    assert!(id.len() <= 34 && id.len() > 20, "{id}");
    assert!(id[2..].chars().all(|c| c.is_ascii_hexdigit()) && !id.starts_with("0x0"));
    let request =
        format!(r#"{{"jsonrpc":"2.0","id":2,"method":"eth_unsubscribe","params":["{id}"]}}"#);
    // jsonrpsee (0.26, `PendingSubscriptionSink::accept`) sends the id before it files the
    // subscription, so an unsubscribe sent the instant the id arrives can race it and be
    // answered `false` on a loaded machine. Once filed, it must unsubscribe.
    let mut answer = ws_call(&mut ws, request.as_bytes()).await;
    for _ in 0..50 {
        if answer["result"] == json!(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        answer = ws_call(&mut ws, request.as_bytes()).await;
    }
    assert_eq!(answer["result"], json!(true), "{answer}");
    // And only once: the second time it is gone.
    let again = ws_call(&mut ws, request.as_bytes()).await;
    assert_eq!(again["result"], json!(false), "{again}");
    s.handle.stop().unwrap();
}

/// Idle WebSockets cannot lock a client out: with every connection slot held by sockets that
/// made one request and went quiet, a newcomer is refused only until they have been idle for
/// the eviction threshold; then it takes an idle one's place, and it keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_cannot_lock_out_a_client() {
    // Idleness is measured on a clock the test moves, so how fast this machine opens 32
    // sockets cannot decide the outcome; every wait on the network is bounded.
    let clock = pipe_primitives::ManualClock::new(1_000_000);
    let s = server_with(|c| {
        c.connections = pipe_rpc::ConnLimits {
            max_connections: 32,
            max_per_ip: 32,
            idle_timeout: Duration::from_secs(600),
            evict_idle_after: Duration::from_secs(5),
        };
        c.clock = Arc::new(clock.clone());
    })
    .await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(bounded(idle_websocket(&addr)).await);
    }
    // Every slot is busy (no time has passed): the newcomer is told so (429), not left hanging.
    let refused = bounded(
        reqwest::Client::new()
            .post(&s.url)
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}))
            .send(),
    )
    .await;
    assert!(
        refused.is_err() || refused.unwrap().status() == 429,
        "refused while every connection is fresh"
    );
    // Once they have idled past the threshold, clients get in, again and again.
    clock.advance(Duration::from_secs(6));
    for _ in 0..5 {
        let r = rpc(&s.url, "eth_chainId", json!([])).await;
        assert!(r["result"].is_string(), "{r}");
    }
    // The attacker's sockets that made room were closed by the server.
    use tokio::io::AsyncReadExt;
    let mut closed = 0;
    for sock in &mut held {
        let mut b = [0u8; 64];
        // A closed one ends (perhaps after a close frame); an open one has nothing to say.
        for _ in 0..16 {
            match tokio::time::timeout(Duration::from_millis(100), sock.read(&mut b)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed += 1;
                    break;
                }
                Ok(Ok(_)) => continue,
                Err(_) => break,
            }
        }
    }
    assert!((1..=5).contains(&closed), "{closed} idle sockets closed");
    s.handle.stop().unwrap();
}

/// `f`, or a failure after 30 s: a test that hangs tells nobody what went wrong.
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("no answer within 30 s")
}

/// Storing models is the operator's: `local` lets this machine's connections through to the
/// store (whose own refusal then answers), `off` refuses everyone before the store is asked,
/// and `local` refuses a remote address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_uploads_are_the_operators() {
    let upload = |url: String| async move {
        rpc(&url, "pipe_uploadModel", json!(["0x00", null])).await["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let local = server().await;
    let m = upload(local.url.clone()).await;
    assert!(m.contains("uploads are off in this test"), "{m}");
    local.handle.stop().unwrap();
    let off = server_with_uploads(|_| {}, pipe_rpc::ModelUploads::Off).await;
    let m = upload(off.url.clone()).await;
    assert!(m.contains("model uploads are off on this node"), "{m}");
    off.handle.stop().unwrap();
    let remote: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    assert!(!pipe_rpc::ModelUploads::Local.allows(Some(remote)));
    assert!(!pipe_rpc::ModelUploads::Local.allows(None));
    assert!(pipe_rpc::ModelUploads::Open.allows(Some(remote)));
}
