//! The dev sealer on controlled time: a slot passes only when the test moves the clock.

use std::{sync::Arc, time::Duration};

use alloy_consensus::Header;
use alloy_primitives::U256;
use pipe_builder::PayloadBuilder;
use pipe_chain::{Chain, DevSealer, SealMode};
use pipe_executor::{Executor, InferenceProvider};
use pipe_mempool::{Pool, PoolConfig};
use pipe_primitives::{ChainConfig, Clock, ManualClock, SealedBlock};
use pipe_storage::{AccountInfoChange, StateChanges, Store};
use tokio::sync::watch;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_sealer_seals_once_per_slot_of_manual_time() {
    let dir = tempfile::tempdir().unwrap();
    let chain = Arc::new(ChainConfig::dev([], U256::ZERO));
    let store = Arc::new(Store::open(&dir.path().join("db.redb")).unwrap());
    let alloc = StateChanges {
        accounts: vec![(
            alloy_primitives::Address::repeat_byte(1),
            Some(AccountInfoChange {
                nonce: 0,
                balance: U256::from(1),
                code_hash: alloy_primitives::KECCAK256_EMPTY,
            }),
        )],
        ..Default::default()
    };
    store
        .init_genesis(&alloc, |root| {
            let header = Header {
                state_root: root,
                gas_limit: chain.gas_limit,
                base_fee_per_gas: Some(chain.genesis_base_fee()),
                ..Default::default()
            };
            SealedBlock::new(header, vec![], vec![])
        })
        .unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let pool = Arc::new(Pool::new(PoolConfig::new(chain.chain_id, chain.gas_limit)));
    let executor = Executor::new(chain);
    let chain = Arc::new(
        Chain::new(store.clone(), executor.clone(), Arc::new(NoModels))
            .unwrap()
            .with_pool(pool.clone()),
    );
    let mut head = chain.subscribe();
    let builder = PayloadBuilder::new(
        pool.clone(),
        executor,
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    let (stop, stop_rx) = watch::channel(false);
    let sealer = Arc::new(DevSealer::new(
        chain,
        builder,
        pool,
        Arc::new(clock.clone()),
        SealMode::Interval(Duration::from_secs(2)),
    ));
    let task = tokio::spawn(sealer.run(pipe_primitives::Tasks::new(), stop_rx));

    // Short of the slot: nothing is sealed, however long real time passes.
    clock.advance(Duration::from_millis(1_999));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(head.borrow().number(), 0);

    // Each slot boundary seals exactly one block, stamped with the manual time.
    for n in 1..=3u64 {
        clock.advance(Duration::from_millis(if n == 1 { 1 } else { 2_000 }));
        tokio::time::timeout(Duration::from_secs(10), head.changed())
            .await
            .expect("block sealed after the slot")
            .unwrap();
        let block = head.borrow_and_update().clone();
        assert_eq!(block.number(), n);
        assert_eq!(block.header.timestamp, clock.now_ms() / 1000);
        assert_eq!(store.head().unwrap(), Some(n));
    }
    stop.send(true).unwrap();
    task.await.unwrap();
}

/// No models: these blocks make no inference calls.
#[derive(Debug)]
struct NoModels;

impl InferenceProvider for NoModels {
    fn model(&self, _: &pipe_primitives::ModelId) -> Option<pipe_primitives::ModelMeta> {
        None
    }
    fn infer(
        &self,
        _: &pipe_executor::InferenceCall,
        _: pipe_executor::Purpose,
    ) -> Option<pipe_primitives::InferenceResult> {
        None
    }
}
