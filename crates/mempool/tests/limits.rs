//! The pool cannot be locked: a fee cap below the base fee waits instead of failing, gapped
//! (future-nonce) transactions are bounded apart and go first, and a full pool makes room for
//! a newcomer that pays more, each departure an event with its reason.

use std::sync::Arc;

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::Encodable2718;
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, B256, TxKind, U256};
use alloy_signer_local::PrivateKeySigner;
use parking_lot::Mutex;
use pipe_mempool::{
    AdmitError, Pool, PoolConfig, PoolErrorKind, PoolEvent, PoolListener, RemovalReason,
    SenderState,
};

const CHAIN: u64 = 31337;

fn raw(key: &PrivateKeySigner, nonce: u64, fee_cap: u128, tip: u128) -> (B256, Vec<u8>) {
    let mut tx = TxEip1559 {
        chain_id: CHAIN,
        nonce,
        gas_limit: 21_000,
        max_fee_per_gas: fee_cap,
        max_priority_fee_per_gas: tip,
        to: TxKind::Call(Address::repeat_byte(7)),
        value: U256::from(1),
        ..Default::default()
    };
    let sig = key.sign_transaction_sync(&mut tx).unwrap();
    let env: TxEnvelope = tx.into_signed(sig).into();
    (*env.tx_hash(), env.encoded_2718())
}

fn at_nonce_zero(_: &Address) -> Result<SenderState, std::convert::Infallible> {
    Ok(SenderState {
        nonce: 0,
        balance: U256::from(10u128.pow(20)),
    })
}

fn admit(pool: &Pool, bytes: &[u8]) -> Result<B256, PoolErrorKind> {
    pool.admit(bytes, 1, at_nonce_zero).map_err(|e| match e {
        AdmitError::Pool(e) => e.kind,
        other => panic!("{other}"),
    })
}

#[derive(Default)]
struct Removals(Mutex<Vec<(B256, RemovalReason)>>);

impl PoolListener for Removals {
    fn on_event(&self, event: &PoolEvent) {
        if let PoolEvent::Removed { hash, reason } = event {
            self.0.lock().push((*hash, reason.clone()));
        }
    }
}

#[test]
fn a_fee_cap_below_the_base_fee_waits_for_the_base_fee_to_fall() {
    let pool = Pool::new(PoolConfig::new(CHAIN, 30_000_000));
    let key = PrivateKeySigner::random();
    let (first, first_raw) = raw(&key, 0, 30, 1);
    let (second, second_raw) = raw(&key, 1, 10, 1);
    admit(&pool, &first_raw).unwrap();
    admit(&pool, &second_raw).unwrap();
    // The base fee rose to 20: the second sits this block out, and stays pending.
    let at_20: Vec<B256> = pool.best_transactions(20).map(|t| t.hash()).collect();
    assert_eq!(at_20, vec![first]);
    let at_40: Vec<B256> = pool.best_transactions(40).map(|t| t.hash()).collect();
    assert!(at_40.is_empty());
    assert_eq!(pool.len(), 2);
    // It fell back: both go.
    let at_5: Vec<B256> = pool.best_transactions(5).map(|t| t.hash()).collect();
    assert_eq!(at_5, vec![first, second]);
}

#[test]
fn gapped_transactions_are_bounded_per_sender_and_in_all_and_go_first() {
    let mut config = PoolConfig::new(CHAIN, 30_000_000);
    config.max_queued_per_sender = 2;
    config.max_queued_total = 3;
    let pool = Pool::new(config);
    let removals = Arc::new(Removals::default());
    pool.add_listener(removals.clone());
    let (a, b, c) = (
        PrivateKeySigner::random(),
        PrivateKeySigner::random(),
        PrivateKeySigner::random(),
    );
    // `a` sends nonces 5 and 6 behind a gap: both wait; a third is refused for `a`.
    admit(&pool, &raw(&a, 5, 100, 1).1).unwrap();
    admit(&pool, &raw(&a, 6, 100, 1).1).unwrap();
    assert_eq!(
        admit(&pool, &raw(&a, 7, 100, 1).1),
        Err(PoolErrorKind::SenderQueueFull {
            queued: 2,
            limit: 2
        })
    );
    // Executable transactions do not count against the bound.
    admit(&pool, &raw(&a, 0, 100, 1).1).unwrap();
    let (b_gapped, b_gapped_raw) = raw(&b, 3, 50, 1);
    admit(&pool, &b_gapped_raw).unwrap();
    // Three gapped in all: a fourth must outbid the cheapest, which goes, with the reason.
    assert_eq!(
        admit(&pool, &raw(&c, 9, 40, 1).1),
        Err(PoolErrorKind::PoolFull)
    );
    let (c_gapped, c_gapped_raw) = raw(&c, 9, 60, 1);
    admit(&pool, &c_gapped_raw).unwrap();
    assert!(pool.get(&b_gapped).is_none());
    assert_eq!(
        *removals.0.lock(),
        vec![(b_gapped, RemovalReason::Evicted { by: c_gapped })]
    );
    // `a` fills its gap: 5 and 6 become executable and stop counting as gapped.
    for nonce in 1..5 {
        admit(&pool, &raw(&a, nonce, 100, 1).1).unwrap();
    }
    admit(&pool, &raw(&b, 3, 10, 1).1).unwrap();
    admit(&pool, &raw(&b, 4, 10, 1).1).unwrap();
    assert_eq!(pool.pending_nonce(&a.address(), 0), 7);
}

#[test]
fn a_full_pool_makes_room_for_a_newcomer_that_pays_more() {
    let mut config = PoolConfig::new(CHAIN, 30_000_000);
    config.max_total = 4;
    let pool = Pool::new(config);
    let removals = Arc::new(Removals::default());
    pool.add_listener(removals.clone());
    let keys: Vec<_> = (0..4).map(|_| PrivateKeySigner::random()).collect();
    let mut cheapest = B256::ZERO;
    for (i, key) in keys.iter().enumerate() {
        let (hash, bytes) = raw(key, 0, 1_000, 10 + i as u128);
        admit(&pool, &bytes).unwrap();
        if i == 0 {
            cheapest = hash;
        }
    }
    // A fresh sender paying no more than the cheapest: refused, as before.
    let fresh = PrivateKeySigner::random();
    assert_eq!(
        admit(&pool, &raw(&fresh, 0, 1_000, 10).1),
        Err(PoolErrorKind::PoolFull)
    );
    // Paying more (500 gwei, say): in, and the cheapest leaves with the reason.
    let (rich, rich_raw) = raw(&fresh, 0, 1_000, 500);
    admit(&pool, &rich_raw).unwrap();
    assert_eq!(pool.len(), 4);
    assert!(pool.get(&cheapest).is_none());
    assert_eq!(
        *removals.0.lock(),
        vec![(cheapest, RemovalReason::Evicted { by: rich })]
    );
    // A gapped newcomer never pushes out an executable transaction.
    assert_eq!(
        admit(&pool, &raw(&PrivateKeySigner::random(), 5, 1_000, 900).1),
        Err(PoolErrorKind::PoolFull)
    );
    // The last of a sender's run goes, never one its later nonces depend on: keys[1] adds
    // nonce 1 (paying the most), so the victim is the cheapest other leaf.
    let (next, next_raw) = raw(&keys[1], 1, 1_000, 800);
    admit(&pool, &next_raw).unwrap();
    let (victim, _) = removals.0.lock().last().cloned().unwrap();
    assert_ne!(victim, next);
    assert!(pool.get(&next).is_some());
    let run: Vec<u64> = pool
        .best_transactions(1)
        .filter(|t| t.sender() == keys[1].address())
        .map(|t| t.nonce())
        .collect();
    assert_eq!(run, vec![0, 1]);
}
