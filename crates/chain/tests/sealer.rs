//! The dev sealer, a driver, on one thread and controlled time: a slot passes only when the
//! test moves the clock, and everything the sealer does (its loop, its seals as blocking work
//! through `Tasks::inline`) happens on the test's thread between two of the test's steps.

use std::{sync::Arc, time::Duration};

use alloy_primitives::{Address, U256};
use pipe_builder::PayloadBuilder;
use pipe_chain::{
    DevSealer, SealMode,
    test_utils::{TestChain, add_to_pool},
};
use pipe_primitives::{Clock, ManualClock, Tasks};
use tokio::sync::watch;

const START_MS: u64 = 1_700_000_000_000;

/// Lets every task on this thread run until it waits for something the test controls.
async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

struct Driver {
    test: TestChain,
    chain: Arc<pipe_chain::Chain>,
    pool: Arc<pipe_mempool::Pool>,
    clock: ManualClock,
    sealer: Arc<DevSealer>,
    tasks: Tasks,
    stop: watch::Sender<bool>,
}

fn start(mode: SealMode) -> Driver {
    let test = TestChain::new(1);
    let pool = test.pool();
    let chain = Arc::new(test.chain().with_pool(pool.clone()));
    let clock = ManualClock::new(START_MS);
    let builder = PayloadBuilder::new(
        pool.clone(),
        test.executor.clone(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    let sealer = Arc::new(DevSealer::new(
        chain.clone(),
        builder,
        pool.clone(),
        Arc::new(clock.clone()),
        mode,
    ));
    let tasks = Tasks::inline();
    let (stop, stop_rx) = watch::channel(false);
    tasks.spawn(sealer.clone().run(tasks.clone(), stop_rx));
    Driver {
        test,
        chain,
        pool,
        clock,
        sealer,
        tasks,
        stop,
    }
}

impl Driver {
    fn head(&self) -> u64 {
        self.chain.head().number()
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.tasks.wait().await;
    }
}

#[tokio::test(flavor = "current_thread")]
async fn interval_sealer_seals_once_per_slot_of_manual_time() {
    let d = start(SealMode::Interval(Duration::from_secs(2)));
    settle().await;
    // Short of the slot: nothing is sealed.
    d.clock.advance(Duration::from_millis(1_999));
    settle().await;
    assert_eq!(d.head(), 0);
    // Each slot boundary seals exactly one block, stamped with the manual time.
    for n in 1..=3u64 {
        d.clock
            .advance(Duration::from_millis(if n == 1 { 1 } else { 2_000 }));
        settle().await;
        assert_eq!(d.head(), n);
        assert_eq!(d.chain.head().header.timestamp, d.clock.now_ms() / 1000);
        assert_eq!(d.test.store.head().unwrap(), Some(n));
    }
    d.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn on_demand_sealer_seals_when_a_transaction_arrives_and_only_then() {
    let d = start(SealMode::OnDemand {
        min_gap: Duration::ZERO,
    });
    settle().await;
    d.clock.advance(Duration::from_secs(60));
    settle().await;
    assert_eq!(d.head(), 0, "nothing to seal, however long it waits");
    let hash = add_to_pool(
        &d.pool,
        &d.test.store,
        d.test
            .factory(0)
            .transfer(Address::repeat_byte(9), U256::from(1)),
    );
    settle().await;
    assert_eq!(d.head(), 1);
    assert_eq!(d.chain.head().transactions[0].hash, hash);
    assert!(d.pool.is_empty());
    d.stop().await;
}

/// Automine off (`Manual`): nothing is sealed, however long transactions wait, until a seal is
/// asked for; switching modes takes effect at once, and an interval counts from the switch.
#[tokio::test(flavor = "current_thread")]
async fn manual_mode_seals_only_when_asked_and_modes_switch_live() {
    let d = start(SealMode::Manual);
    let mut sender = d.test.factory(0);
    settle().await;
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.transfer(Address::repeat_byte(9), U256::from(1)),
    );
    d.clock.advance(Duration::from_secs(60));
    settle().await;
    assert_eq!(d.head(), 0, "manual: nothing sealed on its own");
    d.sealer.seal(d.clock.now_ms() + 500).unwrap();
    assert_eq!(d.head(), 1);

    d.sealer
        .set_mode(SealMode::Interval(Duration::from_secs(5)));
    settle().await;
    d.clock.advance(Duration::from_millis(4_999));
    settle().await;
    assert_eq!(d.head(), 1, "the interval counts from the switch");
    d.clock.advance(Duration::from_millis(1));
    settle().await;
    assert_eq!(d.head(), 2);

    d.sealer.set_mode(SealMode::OnDemand {
        min_gap: Duration::ZERO,
    });
    settle().await;
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.transfer(Address::repeat_byte(9), U256::from(1)),
    );
    settle().await;
    assert_eq!(d.head(), 3, "automine: sealed on arrival");
    d.stop().await;
}

/// The clock controls: an offset moves every later block's timestamp; a set timestamp is the
/// next block's, later ones go on from it; a timestamp not after the head's is refused.
#[tokio::test(flavor = "current_thread")]
async fn the_clock_moves_forward_by_an_offset_or_to_a_set_time_never_back() {
    let d = start(SealMode::Manual);
    settle().await;
    let now_s = || d.clock.now_ms() / 1000;
    assert_eq!(d.sealer.increase_time(3_600), 3_600);
    d.sealer.seal(d.clock.now_ms() + 500).unwrap();
    assert_eq!(d.chain.head().header.timestamp, now_s() + 3_600);

    let chosen = now_s() + 100_000;
    d.sealer.set_next_timestamp(chosen).unwrap();
    d.sealer.seal(d.clock.now_ms() + 500).unwrap();
    assert_eq!(d.chain.head().header.timestamp, chosen);
    d.clock.advance(Duration::from_secs(10));
    d.sealer.seal(d.clock.now_ms() + 500).unwrap();
    assert_eq!(
        d.chain.head().header.timestamp,
        chosen + 10,
        "goes on from the set time"
    );

    let refused = d.sealer.set_next_timestamp(chosen);
    assert!(refused.is_err_and(|e| e.contains("not after")));
    d.stop().await;
}
