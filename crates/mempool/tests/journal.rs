//! The pool as the one owner of pending transactions: what it acknowledges is durable first
//! (one fsync per batch), a store that cannot write refuses acknowledgements until it can
//! again, a restart restores what is still valid, and every way in and out is an event.

use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::Encodable2718;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_signer_local::PrivateKeySigner;
use parking_lot::Mutex;
use pipe_mempool::{
    AdmitError, MemoryPoolStore, Pool, PoolConfig, PoolEvent, PoolListener, RemovalReason,
    SenderState,
};

const CHAIN: u64 = 31337;

fn raw(key: &PrivateKeySigner, nonce: u64, fee_cap: u128) -> (B256, Vec<u8>) {
    let mut tx = TxEip1559 {
        chain_id: CHAIN,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: fee_cap,
        max_priority_fee_per_gas: 1,
        to: TxKind::Call(Address::repeat_byte(7)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).unwrap();
    let env: TxEnvelope = tx.into_signed(sig).into();
    (*env.tx_hash(), env.encoded_2718())
}

fn rich(nonce: u64) -> impl Fn(&Address) -> Result<SenderState, std::convert::Infallible> {
    move |_| {
        Ok(SenderState {
            nonce,
            balance: U256::from(10u128.pow(20)),
        })
    }
}

fn durable_pool() -> (Arc<Pool>, Arc<MemoryPoolStore>) {
    let store = Arc::new(MemoryPoolStore::default());
    let pool = Pool::with_store(PoolConfig::new(CHAIN, 30_000_000), store.clone()).unwrap();
    (Arc::new(pool), store)
}

#[derive(Default)]
struct Recorder(Mutex<Vec<PoolEvent>>);

impl PoolListener for Recorder {
    fn on_event(&self, event: &PoolEvent) {
        self.0.lock().push(event.clone());
    }
}

impl Recorder {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock())
            .into_iter()
            .map(|e| match e {
                PoolEvent::Added { tx, replaced } => format!("added {} {replaced:?}", tx.nonce()),
                PoolEvent::Removed { hash, reason } => format!("removed {hash} {reason:?}"),
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_transaction_is_durable_and_acknowledgements_share_fsyncs() {
    let (pool, store) = durable_pool();
    let keys: Vec<_> = (0..50).map(|_| PrivateKeySigner::random()).collect();
    let mut submissions = Vec::new();
    for key in &keys {
        for nonce in 0..20 {
            let (hash, bytes) = raw(key, nonce, 10);
            let pool = pool.clone();
            submissions.push(tokio::spawn(async move {
                // Nonces of one sender may arrive out of order: gaps are allowed.
                let got = pool.submit(&bytes, 1, rich(0)).await.unwrap();
                assert_eq!(got, hash);
                hash
            }));
        }
    }
    for s in submissions {
        let hash = s.await.unwrap();
        // Acknowledged, so already in the store.
        assert!(store.contains(&hash));
    }
    assert_eq!(pool.len(), 1000);
    assert_eq!(store.len(), 1000);
    assert!(
        store.syncs() < 1000,
        "group commit: {} fsyncs for 1000 acknowledgements",
        store.syncs()
    );
    pool.close();
}

#[tokio::test]
async fn a_store_that_cannot_write_refuses_acknowledgements_and_recovers_by_itself() {
    let (pool, store) = durable_pool();
    let key = PrivateKeySigner::random();
    store.set_failing(true);
    let (hash, bytes) = raw(&key, 0, 10);
    match pool.submit(&bytes, 1, rich(0)).await {
        Err(AdmitError::Persist(e)) => assert!(e.to_string().contains("no space"), "{e}"),
        other => panic!("expected a persistence error, got {other:?}"),
    }
    // Not acknowledged, so not pending either: nothing builds on what is not durable.
    assert!(pool.get(&hash).is_none());
    store.set_failing(false);
    assert_eq!(pool.submit(&bytes, 1, rich(0)).await.unwrap(), hash);
    assert!(store.contains(&hash));
    pool.close();
    // After close nothing more is acknowledged.
    let (_, next) = raw(&key, 1, 10);
    assert!(matches!(
        pool.submit(&next, 1, rich(0)).await,
        Err(AdmitError::Persist(_))
    ));
}

#[tokio::test]
async fn invalid_transactions_cost_no_write() {
    let (pool, store) = durable_pool();
    let key = PrivateKeySigner::random();
    let (_, bytes) = raw(&key, 0, 10);
    // Nonce too low against the sender's state.
    assert!(matches!(
        pool.submit(&bytes, 1, rich(5)).await,
        Err(AdmitError::Pool(_))
    ));
    assert!(matches!(
        pool.submit(&[0xde, 0xad], 1, rich(0)).await,
        Err(AdmitError::Undecodable(_))
    ));
    assert_eq!((store.len(), store.syncs()), (0, 0));
    pool.close();
}

#[tokio::test]
async fn every_way_in_and_out_is_an_event_and_the_store_follows() {
    let (pool, store) = durable_pool();
    let events = Arc::new(Recorder::default());
    pool.add_listener(events.clone());
    let (a, b) = (PrivateKeySigner::random(), PrivateKeySigner::random());
    let (a0, a0_raw) = raw(&a, 0, 10);
    let (a1, a1_raw) = raw(&a, 1, 10);
    let (a1_more, a1_more_raw) = raw(&a, 1, 20);
    let (b0, b0_raw) = raw(&b, 0, 10);
    let (b1, b1_raw) = raw(&b, 1, 10);
    for r in [&a0_raw, &a1_raw, &b0_raw, &b1_raw] {
        pool.submit(r, 1, rich(0)).await.unwrap();
    }
    assert_eq!(events.take().len(), 4);
    // A replacement: the old one leaves first, with who replaced it.
    pool.submit(&a1_more_raw, 1, rich(0)).await.unwrap();
    assert_eq!(
        events.take(),
        vec![
            format!("removed {a1} {:?}", RemovalReason::Replaced { by: a1_more }),
            format!("added 1 Some({a1})"),
        ]
    );
    // A driver drops b0: b1 depends on it and goes too.
    assert_eq!(pool.remove(&b0, "invalid: nonce too low"), vec![b0, b1]);
    assert_eq!(
        events.take(),
        vec![
            format!(
                "removed {b0} {:?}",
                RemovalReason::Dropped {
                    reason: "invalid: nonce too low".into()
                }
            ),
            format!("removed {b1} {:?}", RemovalReason::DependsOn { hash: b0 }),
        ]
    );
    // A block includes a0 and another transaction of `a` with nonce 1: a1_more lost its nonce.
    let (other1, other1_raw) = raw(&a, 1, 30);
    let other1_tx = pipe_primitives::StoredTx {
        hash: other1,
        sender: a.address(),
        tx: alloy_eips::Decodable2718::decode_2718_exact(other1_raw.as_slice()).unwrap(),
    };
    let a0_tx = pipe_primitives::StoredTx {
        hash: a0,
        sender: a.address(),
        tx: alloy_eips::Decodable2718::decode_2718_exact(a0_raw.as_slice()).unwrap(),
    };
    assert_eq!(pool.on_block(7, &[a0_tx, other1_tx]), vec![a1_more]);
    assert_eq!(
        events.take(),
        vec![
            format!("removed {a0} {:?}", RemovalReason::Included { block: 7 }),
            format!(
                "removed {other1} {:?}",
                RemovalReason::Included { block: 7 }
            ),
            format!("removed {a1_more} {:?}", RemovalReason::NonceUsed),
        ]
    );
    assert!(pool.is_empty());
    // The journal forgot everything that left, included ones too, once it has written what
    // is queued.
    pool.close();
    for h in [a0, a1, a1_more, b0, b1] {
        assert!(!store.contains(&h), "{h} still persisted");
    }
}

#[tokio::test]
async fn a_restart_restores_what_is_still_valid_in_nonce_order_and_forgets_the_rest() {
    let store = Arc::new(MemoryPoolStore::default());
    let key = PrivateKeySigner::random();
    let mut hashes = Vec::new();
    {
        let pool = Pool::with_store(PoolConfig::new(CHAIN, 30_000_000), store.clone()).unwrap();
        // Submitted out of order, so the store does not hold them by nonce.
        for nonce in [3, 0, 2, 1, 4] {
            let (hash, bytes) = raw(&key, nonce, 10);
            pool.submit(&bytes, 1, rich(0)).await.unwrap();
            hashes.push((nonce, hash));
        }
        pool.close();
    }
    hashes.sort();
    // Meanwhile a block used nonces 0 and 1.
    let pool = Pool::with_store(PoolConfig::new(CHAIN, 30_000_000), store.clone()).unwrap();
    let report = pool.restore(1, rich(2)).unwrap();
    assert_eq!((report.restored, report.dropped), (3, 2));
    assert_eq!(pool.pending_nonce(&key.address(), 2), 5);
    pool.close();
    assert!(!store.contains(&hashes[0].1) && !store.contains(&hashes[1].1));
    assert!(store.contains(&hashes[4].1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bytes_sent_twice_at_once_share_one_outcome() {
    let (pool, store) = durable_pool();
    let key = PrivateKeySigner::random();
    let (hash, bytes) = raw(&key, 0, 10);
    let twice = |pool: Arc<Pool>, bytes: Vec<u8>| async move {
        let (a, b) = tokio::join!(
            pool.submit(&bytes, 1, rich(0)),
            pool.submit(&bytes, 1, rich(0))
        );
        (a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string()))
    };
    // The store fails: neither is told "already known" while the other's write fails.
    store.set_failing(true);
    let (a, b) = twice(pool.clone(), bytes.clone()).await;
    assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    assert!(!b.unwrap_err().contains("already known"));
    // It works: the first is acknowledged; the second is too, or (if it came after the first
    // was done) told "already known" as geth would, which clients take as accepted.
    store.set_failing(false);
    let (a, b) = twice(pool.clone(), bytes).await;
    assert_eq!(a, Ok(hash));
    assert!(b == Ok(hash) || b == Err("already known".into()), "{b:?}");
    assert!(store.contains(&hash));
    assert_eq!(pool.len(), 1);
    pool.close();
}
