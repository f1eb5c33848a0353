//! Four validators in one process on commonware's deterministic runtime and simulated
//! network: seeded, so a run is reproducible.

use std::{sync::Arc, time::Duration};

use alloy_primitives::{Address, B256, U256};
use commonware_cryptography::{Signer, ed25519::PrivateKey};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Quota, Runner, Supervisor, deterministic};
use commonware_utils::{NZU32, NZUsize, probability};
use pipe_builder::PayloadBuilder;
use pipe_chain::{
    Chain,
    test_utils::{TestChain, add_to_pool},
};
use pipe_consensus::{
    app::{App, ProposeConfig},
    block::BlockLimits,
    clock::RuntimeClock,
    validator::{self, Channels, Timeouts, ValidatorConfig, channel},
};
use pipe_mempool::Pool;

type Pk = commonware_cryptography::ed25519::PublicKey;

const BLOCK_TIME: Duration = Duration::from_secs(1);

/// One validator's node-side state.
struct Node {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    test: TestChain,
}

fn link() -> Link {
    Link {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        success_rate: probability!(1.0),
    }
}

async fn network(
    ctx: &deterministic::Context,
    pks: &[Pk],
    limits: &BlockLimits,
) -> Oracle<Pk, deterministic::Context> {
    let (network, oracle) = Network::new_with_peers(
        ctx.child("network"),
        simulated::Config {
            max_size: validator::max_message_size(pks.len(), limits),
            max_peers_per_set: NZUsize!(pks.len()),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        pks.to_vec(),
    )
    .await;
    network.start();
    for a in pks {
        for b in pks {
            if a != b {
                oracle.add_link(a.clone(), b.clone(), link()).await.unwrap();
            }
        }
    }
    oracle
}

async fn start_validator(
    ctx: &deterministic::Context,
    oracle: &Oracle<Pk, deterministic::Context>,
    keys: &[PrivateKey],
    i: usize,
    limits: BlockLimits,
) -> Node {
    let pk = keys[i].public_key();
    let control = oracle.control(pk.clone());
    let quota = Quota::per_second(NZU32!(10_000));
    let mut regs = Vec::new();
    for c in channel::ALL {
        regs.push(control.register(c, quota).await.unwrap());
    }
    let mut regs = regs.into_iter();
    let mut next = || regs.next().unwrap();
    let channels = Channels {
        votes: next(),
        certificates: next(),
        certificate_backfill: next(),
        block_backfill: next(),
        blocks: next(),
    };
    let test = TestChain::new(4);
    let pool = test.pool();
    let chain = Arc::new(test.chain().with_pool(pool.clone()));
    let clock = Arc::new(RuntimeClock(ctx.child("clock")));
    let builder = PayloadBuilder::new(pool.clone(), test.executor.clone(), clock);
    let app = App::new(
        chain.clone(),
        builder,
        ProposeConfig {
            block_time: BLOCK_TIME,
            build_share: 0.5,
            beneficiary: Address::ZERO,
        },
    );
    let config = ValidatorConfig {
        key: keys[i].clone(),
        validators: keys.iter().map(|k| k.public_key()).collect(),
        namespace: b"pipe-test".to_vec(),
        partition_prefix: format!("v{i}"),
        limits,
        genesis: Arc::new(test.genesis.clone()),
        timeouts: Timeouts::for_block_time(BLOCK_TIME),
    };
    validator::start(
        ctx.child("validator").with_attribute("index", i),
        config,
        app,
        control,
        oracle.manager(),
        channels,
    )
    .await
    .expect("validator starts");
    Node { chain, pool, test }
}

/// Runs four validators until every head reaches `height`, submitting `txs` transfers (to
/// every pool, as gossip would); returns each validator's head hash and the auditor state.
fn run(seed: u64, height: u64, txs: usize) -> (Vec<B256>, Vec<usize>, String) {
    let cfg = deterministic::Config::new()
        .with_seed(seed)
        .with_timeout(Some(Duration::from_secs(3600)));
    deterministic::Runner::new(cfg).start(|ctx| async move {
        let keys: Vec<PrivateKey> = (0..4).map(PrivateKey::from_seed).collect();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let limits = BlockLimits::default();
        let oracle = network(&ctx, &pks, &limits).await;
        let mut nodes = Vec::new();
        for i in 0..keys.len() {
            nodes.push(start_validator(&ctx, &oracle, &keys, i, limits).await);
        }
        let mut factory = nodes[0].test.factory(1);
        for _ in 0..txs {
            let tx = factory.transfer(Address::repeat_byte(0xaa), U256::from(1));
            for n in &nodes {
                add_to_pool(&n.pool, &n.test.store, tx.clone());
            }
        }
        while nodes.iter().any(|n| n.chain.head().number() < height) {
            ctx.sleep(Duration::from_millis(250)).await;
        }
        // Every validator has committed up to `height`; compare the block at `height`.
        let hashes = nodes
            .iter()
            .map(|n| {
                n.test
                    .store
                    .block(height)
                    .unwrap()
                    .expect("committed")
                    .hash
            })
            .collect();
        let included = nodes
            .iter()
            .map(|n| {
                (1..=n.chain.head().number())
                    .map(|h| n.test.store.block(h).unwrap().unwrap().transactions.len())
                    .sum()
            })
            .collect();
        (hashes, included, ctx.auditor().state())
    })
}

#[test]
fn four_validators_finalize_the_same_chain() {
    let (hashes, included, _) = run(1, 8, 20);
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    assert!(included.iter().all(|&n| n == 20), "{included:?}");
}
