//! The payload job on its own: a test chain, a pool, a manual clock and a table-driven gate
//! (PIPE's stand-in). What it includes, what it leaves out and why, and that it stops at its
//! deadline and on cancel, writing nothing either way.

use std::sync::{Arc, atomic::AtomicBool};

use alloy_primitives::{Address, B256, U256};
use pipe_builder::{BuildError, PayloadBuilder};
use pipe_chain::test_utils::{
    TableGate, TableModels, TestChain, add_to_pool, inference_call, output, signer, test_model,
};
use pipe_executor::{BlockAttributes, INFERENCE_PRECOMPILE, InferenceGas};
use pipe_mempool::{Pool, SenderState};
use pipe_primitives::{Clock, ManualClock};

const NOW_MS: u64 = 1_700_000_000_000;

struct Setup {
    chain: TestChain,
    pool: Arc<Pool>,
    clock: ManualClock,
}

fn setup(accounts: usize) -> Setup {
    Setup {
        chain: TestChain::new(accounts),
        pool: Arc::new(Pool::new(pipe_mempool::PoolConfig::new(31337, 30_000_000))),
        clock: ManualClock::new(NOW_MS),
    }
}

impl Setup {
    fn builder(&self) -> PayloadBuilder {
        PayloadBuilder::new(
            self.pool.clone(),
            self.chain.executor.clone(),
            Arc::new(self.clock.clone()) as Arc<dyn Clock>,
        )
    }

    fn attrs(&self) -> BlockAttributes {
        self.chain
            .executor
            .next_attributes(&self.chain.genesis, NOW_MS, Address::ZERO)
    }

    fn build(
        &self,
        builder: &PayloadBuilder,
        deadline_ms: u64,
    ) -> Result<pipe_builder::Payload, BuildError> {
        builder.build(
            self.chain.store.state().unwrap(),
            self.attrs(),
            deadline_ms,
            &AtomicBool::new(false),
        )
    }
}

#[test]
fn ready_transactions_go_in_by_priority_and_nothing_is_written() {
    let s = setup(3);
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut f = s.chain.factory(i);
        for _ in 0..2 {
            hashes.push(add_to_pool(
                &s.pool,
                &s.chain.store,
                f.transfer(Address::repeat_byte(9), U256::from(1)),
            ));
        }
    }
    let payload = s.build(&s.builder(), u64::MAX).unwrap();
    assert_eq!(payload.executed.transactions.len(), 6);
    assert_eq!(payload.stats.considered, 6);
    assert!(payload.invalid.is_empty() && payload.stale.is_empty());
    // Each sender's nonces in order.
    for sender in 0..3 {
        let nonces: Vec<u64> = payload
            .executed
            .transactions
            .iter()
            .filter(|t| t.sender == signer(sender).address())
            .map(|t| alloy_consensus::Transaction::nonce(&t.tx))
            .collect();
        assert_eq!(nonces, vec![0, 1]);
    }
    // A payload is not a block: the store and the pool are as they were.
    assert_eq!(s.chain.store.head().unwrap(), Some(0));
    assert_eq!(s.pool.len(), 6);
}

#[test]
fn a_transaction_invalid_on_the_parent_is_reported_not_dropped() {
    let s = setup(1);
    // Signed by an account with no funds, admitted on a (wrong) claim that it has some.
    let mut poor = pipe_chain::test_utils::TxFactory {
        signer: signer(7),
        chain_id: 31337,
        nonce: 0,
    };
    let tx = poor.transfer(Address::repeat_byte(9), U256::from(1));
    let hash = *tx.tx_hash();
    let sender = s.pool.check_stateless(&tx, 200).unwrap();
    s.pool
        .add(
            tx,
            sender,
            SenderState {
                nonce: 0,
                balance: U256::MAX,
            },
            0,
        )
        .unwrap();
    let good = add_to_pool(
        &s.pool,
        &s.chain.store,
        s.chain
            .factory(0)
            .transfer(Address::repeat_byte(9), U256::from(1)),
    );
    let payload = s.build(&s.builder(), u64::MAX).unwrap();
    assert_eq!(payload.executed.transactions.len(), 1);
    assert_eq!(payload.executed.transactions[0].hash, good);
    assert_eq!(payload.invalid.len(), 1);
    assert_eq!(payload.invalid[0].0, hash);
    assert!(
        payload.invalid[0].1.contains("funds"),
        "{}",
        payload.invalid[0].1
    );
    // The driver decides; the job only reports.
    assert!(s.pool.get(&hash).is_some());
}

#[test]
fn the_deadline_and_cancel_stop_the_job() {
    let s = setup(1);
    let mut f = s.chain.factory(0);
    for _ in 0..3 {
        add_to_pool(
            &s.pool,
            &s.chain.store,
            f.transfer(Address::repeat_byte(9), U256::from(1)),
        );
    }
    // A deadline already reached: nothing goes in, and the job says why.
    let payload = s.build(&s.builder(), NOW_MS).unwrap();
    assert!(payload.executed.transactions.is_empty());
    assert!(payload.stats.hit_deadline);
    // Cancelled: no payload at all.
    let cancelled = s.builder().build(
        s.chain.store.state().unwrap(),
        s.attrs(),
        u64::MAX,
        &AtomicBool::new(true),
    );
    assert!(matches!(cancelled, Err(BuildError::Aborted(_))));
}

#[test]
fn under_the_gate_only_ready_transactions_go_in_and_a_missing_result_is_stale() {
    let s = setup(3);
    let model = test_model();
    let models = Arc::new(TableModels::with_model(model.clone()));
    let executor = s
        .chain
        .executor
        .clone()
        .with_inference(models.clone(), InferenceGas::default());
    let gate = Arc::new(TableGate::new(models.clone()));
    let builder = PayloadBuilder::new(
        s.pool.clone(),
        executor,
        Arc::new(s.clock.clone()) as Arc<dyn Clock>,
    )
    .with_gate(gate.clone());

    let (answered_data, answered_key) = inference_call(&model, 3);
    let (stale_data, stale_key) = inference_call(&model, 4);
    models.answer(output(answered_key, 0.5, model.decimals));
    let answered = add_to_pool(
        &s.pool,
        &s.chain.store,
        s.chain
            .factory(0)
            .tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, answered_data),
    );
    // Ready, but its result is not in the table: it went stale.
    let stale = add_to_pool(
        &s.pool,
        &s.chain.store,
        s.chain
            .factory(1)
            .tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, stale_data),
    );
    // Not ready at all: never executed.
    let waiting = add_to_pool(
        &s.pool,
        &s.chain.store,
        s.chain
            .factory(2)
            .transfer(Address::repeat_byte(9), U256::from(1)),
    );
    gate.make_ready(answered);
    gate.make_ready(stale);

    let payload = s.build(&builder, u64::MAX).unwrap();
    let included: Vec<B256> = payload
        .executed
        .transactions
        .iter()
        .map(|t| t.hash)
        .collect();
    assert_eq!(included, vec![answered]);
    assert_eq!(payload.stats.not_ready, 1);
    assert_eq!(payload.stats.stale, 1);
    assert_eq!(payload.stats.results, 1);
    assert_eq!(payload.stale.len(), 1);
    assert_eq!(payload.stale[0].0.hash(), stale);
    assert_eq!(payload.stale[0].1.key, stale_key);
    // The block carries the result it used, and the builder never asked for the missing
    // one to be computed: only the gate's table answers.
    assert_eq!(payload.executed.sidecar.len(), 1);
    assert!(s.pool.get(&waiting).is_some());
}

#[test]
fn a_fee_cap_below_the_base_fee_waits_instead_of_being_dropped() {
    let s = setup(1);
    // The factory's fee cap is 100 gwei; the base fee rose past it.
    let hash = add_to_pool(
        &s.pool,
        &s.chain.store,
        s.chain
            .factory(0)
            .transfer(Address::repeat_byte(9), U256::from(1)),
    );
    let mut attrs = s.attrs();
    attrs.base_fee = 200_000_000_000;
    let payload = s
        .builder()
        .build(
            s.chain.store.state().unwrap(),
            attrs,
            u64::MAX,
            &AtomicBool::new(false),
        )
        .unwrap();
    assert!(payload.executed.transactions.is_empty());
    assert!(payload.invalid.is_empty(), "{:?}", payload.invalid);
    assert!(s.pool.get(&hash).is_some());
    // The base fee fell back: it goes in.
    let payload = s.build(&s.builder(), u64::MAX).unwrap();
    assert_eq!(payload.executed.transactions[0].hash, hash);
}
