//! Validators in one process on commonware's deterministic runtime and simulated network:
//! seeded, so every run of a test is the same run.
//!
//! Each validator has its own store, pool, models and chain, as separate nodes would;
//! transactions are put in every pool (as gossip does between nodes).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use alloy_primitives::{Address, B256, U256};
use commonware_consensus::{Application, marshal::ancestry::Ancestry};
use commonware_cryptography::{Digested, Digestible, Signer, ed25519::PrivateKey};
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{Clock, Quota, Runner, Supervisor, deterministic};
use commonware_utils::{NZU32, NZUsize, probability};
use pipe_builder::PayloadBuilder;
use pipe_chain::{
    Chain, CheckPolicy, LocalResult, LocalResults, ResultCheck,
    test_utils::{
        TableGate, TableModels, TestChain, add_to_pool, inference_call, output, test_model,
    },
};
use pipe_consensus::{
    app::{App, Ctx, ProposeConfig, Verifier},
    block::{Block, BlockLimits},
    clock::RuntimeClock,
    validator::{self, Channels, Timeouts, ValidatorConfig, channel},
};
use pipe_executor::{INFERENCE_PRECOMPILE, InferenceCall, InferenceGas};
use pipe_mempool::Pool;
use pipe_primitives::{InferenceResult, SealedBlock};

type Pk = commonware_cryptography::ed25519::PublicKey;
type Ctx0 = deterministic::Context;

const BLOCK_TIME: Duration = Duration::from_secs(1);
const N: usize = 4;

/// The answer honest models give for the test request, and the one a liar commits.
const TRUE_VALUE: f32 = 0.5;
const FABRICATED: f32 = 0.9;

/// How a validator misbehaves, if it does.
#[derive(Clone, Copy, Default)]
struct Behaviour {
    /// Its models answer the test request with [`FABRICATED`].
    lies: bool,
    /// Every block it proposes is altered this way before it is sent.
    tamper: Option<fn(&mut SealedBlock)>,
}

/// One validator's node-side state.
struct Node {
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    test: Arc<TestChain>,
    gate: Arc<TableGate>,
    beneficiary: Address,
    /// How often its result check asked its own models.
    checked: Arc<AtomicUsize>,
}

impl Node {
    fn block(&self, n: u64) -> SealedBlock {
        self.test.store.block(n).unwrap().expect("committed")
    }

    fn head(&self) -> u64 {
        self.chain.head().number()
    }
}

fn link(success: f64) -> Link {
    Link {
        latency: Duration::from_millis(50),
        jitter: Duration::from_millis(10),
        success_rate: commonware_utils::Probability::try_from(success).unwrap_or(probability!(1.0)),
    }
}

fn keys() -> Vec<PrivateKey> {
    (0..N as u64).map(PrivateKey::from_seed).collect()
}

async fn network(ctx: &Ctx0, pks: &[Pk], success: f64) -> Oracle<Pk, Ctx0> {
    let (network, oracle) = Network::new_with_peers(
        ctx.child("network"),
        simulated::Config {
            max_size: validator::max_message_size(pks.len(), &BlockLimits::default()),
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
                oracle
                    .add_link(a.clone(), b.clone(), link(success))
                    .await
                    .unwrap();
            }
        }
    }
    oracle
}

/// Cuts (or restores) every link to and from `who`.
async fn set_links(oracle: &Oracle<Pk, Ctx0>, pks: &[Pk], who: &Pk, up: bool) {
    for other in pks.iter().filter(|p| *p != who) {
        for (a, b) in [(who, other), (other, who)] {
            if up {
                oracle
                    .add_link(a.clone(), b.clone(), link(1.0))
                    .await
                    .unwrap();
            } else {
                let _ = oracle.remove_link(a.clone(), b.clone()).await;
            }
        }
    }
}

/// This node's own results, from its models' table, counting the look-ups.
struct TableLocal(Arc<TableModels>, Arc<AtomicUsize>);

impl LocalResults for TableLocal {
    fn result(&self, call: &InferenceCall) -> LocalResult {
        self.1.fetch_add(1, Ordering::SeqCst);
        match pipe_executor::InferenceProvider::infer(&*self.0, call, pipe_executor::Purpose::Block)
        {
            Some(r) => LocalResult::Computed(r),
            None => LocalResult::Unavailable("not computed".into()),
        }
    }
}

/// A validator that alters its proposals after building them honestly.
#[derive(Clone)]
struct Byzantine {
    inner: App,
    tamper: fn(&mut SealedBlock),
    proposed: Arc<AtomicUsize>,
}

impl Application<Ctx0> for Byzantine {
    type SigningScheme = commonware_consensus::simplex::scheme::ed25519::Scheme;
    type Context = Ctx;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        context: (Ctx0, Ctx),
        ancestry: impl Ancestry<Block>,
        input: (),
    ) -> Option<Digested<Block>> {
        let honest =
            Application::<Ctx0>::propose(&mut self.inner, context, ancestry, input).await?;
        let mut sealed = (**honest.inner().sealed()).clone();
        (self.tamper)(&mut sealed);
        sealed.hash = sealed.header.hash_slow();
        self.proposed.fetch_add(1, Ordering::SeqCst);
        let block = Block::new(Arc::new(sealed));
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(&mut self, context: (Ctx0, Ctx), ancestry: impl Ancestry<Block>) -> bool {
        Application::<Ctx0>::verify(&mut self.inner, context, ancestry).await
    }
}

/// The inference request every test transaction makes, and its key.
fn request() -> (alloy_primitives::Bytes, B256) {
    inference_call(&test_model(), 3)
}

async fn start_validator(
    ctx: &Ctx0,
    oracle: &Oracle<Pk, Ctx0>,
    keys: &[PrivateKey],
    i: usize,
    behaviour: Behaviour,
    byzantine_proposals: &Arc<AtomicUsize>,
) -> Node {
    start_on(
        ctx,
        oracle,
        keys,
        i,
        behaviour,
        byzantine_proposals,
        Arc::new(TestChain::new(4)),
    )
    .await
}

/// Starts validator `i` on the store of `test` (a restart passes the one it had).
async fn start_on(
    ctx: &Ctx0,
    oracle: &Oracle<Pk, Ctx0>,
    keys: &[PrivateKey],
    i: usize,
    behaviour: Behaviour,
    byzantine_proposals: &Arc<AtomicUsize>,
    test: Arc<TestChain>,
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
    let pool = test.pool();
    let model = test_model();
    let models = Arc::new(TableModels::with_model(model.clone()));
    let value = if behaviour.lies {
        FABRICATED
    } else {
        TRUE_VALUE
    };
    models.answer(output(request().1, value, model.decimals));
    let executor = test
        .executor
        .clone()
        .with_inference(models.clone(), InferenceGas::default());
    let checked = Arc::new(AtomicUsize::new(0));
    let mut chain = Chain::new(test.store.clone(), executor.clone(), models.clone())
        .expect("chain opens")
        .with_pool(pool.clone());
    if !behaviour.lies {
        chain = chain.with_result_check(ResultCheck {
            policy: CheckPolicy::All,
            local: Arc::new(TableLocal(models.clone(), checked.clone())),
        });
    }
    let chain = Arc::new(chain);
    let gate = Arc::new(TableGate::new(models.clone()));
    let builder = PayloadBuilder::new(
        pool.clone(),
        executor,
        Arc::new(RuntimeClock(ctx.child("clock"))),
    )
    .with_gate(gate.clone());
    let beneficiary = Address::with_last_byte(i as u8 + 1);
    let app = App::new(
        chain.clone(),
        builder,
        ProposeConfig {
            block_time: BLOCK_TIME,
            build_share: 0.5,
            beneficiary,
        },
    );
    let config = ValidatorConfig {
        key: keys[i].clone(),
        validators: keys.iter().map(|k| k.public_key()).collect(),
        namespace: b"pipe-test".to_vec(),
        partition_prefix: format!("v{i}"),
        limits: BlockLimits::default(),
        genesis: Arc::new(test.genesis.clone()),
        timeouts: Timeouts::for_block_time(BLOCK_TIME),
    };
    let verifier = Verifier::new(chain.clone());
    let context = ctx.child("validator").with_attribute("index", i);
    let started = match behaviour.tamper {
        Some(tamper) => {
            let byz = Byzantine {
                inner: app,
                tamper,
                proposed: byzantine_proposals.clone(),
            };
            validator::start(
                context,
                config,
                byz,
                verifier,
                control,
                oracle.manager(),
                channels,
            )
            .await
        }
        None => {
            validator::start(
                context,
                config,
                app,
                verifier,
                control,
                oracle.manager(),
                channels,
            )
            .await
        }
    };
    started.expect("validator starts");
    Node {
        chain,
        pool,
        test,
        gate,
        beneficiary,
        checked,
    }
}

/// Puts `tx` in every pool, ready to be included (PIPE's gate says so).
fn submit(nodes: &[Node], tx: alloy_consensus::TxEnvelope) -> B256 {
    let mut hash = B256::ZERO;
    for n in nodes {
        hash = add_to_pool(&n.pool, &n.test.store, tx.clone());
        n.gate.make_ready(hash);
    }
    hash
}

async fn wait_heads(ctx: &Ctx0, nodes: &[&Node], height: u64) {
    while nodes.iter().any(|n| n.head() < height) {
        ctx.sleep(Duration::from_millis(250)).await;
    }
}

/// Every node's block at `height` is the same block.
fn same_block(nodes: &[&Node], height: u64) -> B256 {
    let hashes: Vec<B256> = nodes.iter().map(|n| n.block(height).hash).collect();
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "forked at {height}: {hashes:?}"
    );
    hashes[0]
}

fn runner(seed: u64) -> deterministic::Runner {
    deterministic::Runner::new(
        deterministic::Config::new()
            .with_seed(seed)
            .with_timeout(Some(Duration::from_secs(7200))),
    )
}

/// Four honest validators on links that deliver `success` of messages: 20 transfers in,
/// returns every node's hash at height 8 and the runtime's audit of the run.
fn all_online(seed: u64, success: f64) -> (B256, String) {
    runner(seed).start(|ctx| async move {
        let keys = keys();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let oracle = network(&ctx, &pks, success).await;
        let none = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(start_validator(&ctx, &oracle, &keys, i, Behaviour::default(), &none).await);
        }
        let mut factory = nodes[0].test.factory(1);
        for _ in 0..20 {
            submit(
                &nodes,
                factory.transfer(Address::repeat_byte(0xaa), U256::from(1)),
            );
        }
        let all: Vec<&Node> = nodes.iter().collect();
        wait_heads(&ctx, &all, 8).await;
        let hash = same_block(&all, 8);
        for n in &nodes {
            let included: usize = (1..=8).map(|h| n.block(h).transactions.len()).sum();
            assert_eq!(included, 20);
            assert_eq!(n.pool.len(), 0, "included transactions left every pool");
        }
        (hash, ctx.auditor().state())
    })
}

#[test]
fn four_validators_finalize_the_same_chain() {
    all_online(1, 1.0);
}

#[test]
fn the_same_seed_is_the_same_run() {
    let (a, audit_a) = all_online(7, 1.0);
    let (b, audit_b) = all_online(7, 1.0);
    assert_eq!(a, b);
    assert_eq!(audit_a, audit_b);
}

#[test]
fn lossy_links_still_finalize() {
    all_online(3, 0.8);
}

#[test]
fn a_validator_that_starts_late_catches_up_from_its_peers() {
    runner(11).start(|ctx| async move {
        let keys = keys();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let oracle = network(&ctx, &pks, 1.0).await;
        let none = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for i in 0..N - 1 {
            nodes.push(start_validator(&ctx, &oracle, &keys, i, Behaviour::default(), &none).await);
        }
        let mut factory = nodes[0].test.factory(1);
        for _ in 0..5 {
            submit(
                &nodes,
                factory.transfer(Address::repeat_byte(0xaa), U256::from(1)),
            );
        }
        // Three of four are a quorum: the chain moves without the fourth.
        wait_heads(&ctx, &nodes.iter().collect::<Vec<_>>(), 6).await;
        let late = start_validator(&ctx, &oracle, &keys, N - 1, Behaviour::default(), &none).await;
        nodes.push(late);
        let all: Vec<&Node> = nodes.iter().collect();
        wait_heads(&ctx, &all, 10).await;
        for h in 1..=10 {
            same_block(&all, h);
        }
    });
}

#[test]
fn two_of_four_down_halt_finality_until_one_returns() {
    runner(5).start(|ctx| async move {
        let keys = keys();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let oracle = network(&ctx, &pks, 1.0).await;
        let none = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(start_validator(&ctx, &oracle, &keys, i, Behaviour::default(), &none).await);
        }
        let all: Vec<&Node> = nodes.iter().collect();
        wait_heads(&ctx, &all, 4).await;
        set_links(&oracle, &pks, &pks[2], false).await;
        set_links(&oracle, &pks, &pks[3], false).await;
        // What was in flight settles, then nothing more is finalized.
        ctx.sleep(Duration::from_secs(10)).await;
        let stuck = nodes[0].head().max(nodes[1].head());
        ctx.sleep(Duration::from_secs(60)).await;
        assert_eq!(
            nodes[0].head().max(nodes[1].head()),
            stuck,
            "finalized without a quorum"
        );
        // One returns: three of four are a quorum again.
        set_links(&oracle, &pks, &pks[2], true).await;
        let three = [&nodes[0], &nodes[1], &nodes[2]];
        wait_heads(&ctx, &three, stuck + 5).await;
        for h in 1..=stuck + 5 {
            same_block(&three, h);
        }
    });
}

/// Runs four validators, the first of which misbehaves as `byzantine` (its `tamper` must be
/// set: the wrapper counts its proposals); an inference transaction is submitted, ready at
/// the byzantine validator only until it has proposed; `check` gets the nodes once it is
/// finalized everywhere, with how many blocks the byzantine validator proposed.
fn with_a_byzantine_leader(
    seed: u64,
    byzantine: Behaviour,
    check: impl FnOnce(&[Node], usize) + Send + 'static,
) {
    runner(seed).start(|ctx| async move {
        let keys = keys();
        let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
        let oracle = network(&ctx, &pks, 1.0).await;
        let proposed = Arc::new(AtomicUsize::new(0));
        let mut nodes = Vec::new();
        for i in 0..N {
            let b = if i == 0 {
                byzantine
            } else {
                Behaviour::default()
            };
            nodes.push(start_validator(&ctx, &oracle, &keys, i, b, &proposed).await);
        }
        // Only the byzantine validator has the transaction ready at first, so its block is
        // the first to carry it; the honest ones are ready once it has led.
        let mut factory = nodes[0].test.factory(1);
        let tx = factory.tx(Some(INFERENCE_PRECOMPILE), U256::ZERO, request().0);
        let mut hash = B256::ZERO;
        for n in &nodes {
            hash = add_to_pool(&n.pool, &n.test.store, tx.clone());
        }
        nodes[0].gate.make_ready(hash);
        // Until the byzantine validator has led once (with the transaction).
        while proposed.load(Ordering::SeqCst) == 0 {
            ctx.sleep(Duration::from_millis(250)).await;
        }
        for n in &nodes[1..] {
            n.gate.make_ready(hash);
        }
        while nodes.iter().any(|n| !n.pool.is_empty()) {
            ctx.sleep(Duration::from_millis(250)).await;
        }
        let height = nodes.iter().map(Node::head).min().unwrap();
        let all: Vec<&Node> = nodes.iter().collect();
        for h in 1..=height {
            same_block(&all, h);
        }
        check(&nodes, proposed.load(Ordering::SeqCst));
    });
}

/// The block (on node 1) that included the test transaction, and its committed result.
fn included_result(nodes: &[Node]) -> (SealedBlock, InferenceResult) {
    let n = &nodes[1];
    for h in 1..=n.head() {
        let block = n.block(h);
        if let Some(r) = block.sidecar.get(&request().1) {
            return (block.clone(), r.clone());
        }
    }
    panic!("the inference transaction was not included");
}

#[test]
fn a_fabricated_vanilla_result_is_not_finalized() {
    with_a_byzantine_leader(
        21,
        Behaviour {
            lies: true,
            // Proposes what it built, unaltered: the lie is in its models' answer.
            tamper: Some(|_| {}),
        },
        |nodes, _| {
            let (block, result) = included_result(nodes);
            let model = test_model();
            assert_eq!(result, output(request().1, TRUE_VALUE, model.decimals));
            assert_ne!(
                block.header.beneficiary, nodes[0].beneficiary,
                "the liar's block"
            );
            // The honest validators compared the liar's result with their own.
            assert!(
                nodes[1..]
                    .iter()
                    .map(|n| n.checked.load(Ordering::SeqCst))
                    .sum::<usize>()
                    > 0
            );
        },
    );
}

fn no_block_from(nodes: &[Node], proposer: Address) {
    let n = &nodes[1];
    for h in 1..=n.head() {
        assert_ne!(
            n.block(h).header.beneficiary,
            proposer,
            "block {h} is the byzantine one's"
        );
    }
}

/// A leader that alters every block it proposes with `tamper` gets none finalized, and the
/// inference transaction is included by an honest leader.
fn tampered_blocks_are_not_finalized(seed: u64, tamper: fn(&mut SealedBlock)) {
    let byzantine = Behaviour {
        lies: false,
        tamper: Some(tamper),
    };
    with_a_byzantine_leader(seed, byzantine, |nodes, proposed| {
        assert!(proposed > 0);
        no_block_from(nodes, nodes[0].beneficiary);
        included_result(nodes);
    });
}

#[test]
fn a_bad_state_root_is_not_finalized() {
    tampered_blocks_are_not_finalized(22, |b| b.header.state_root = B256::repeat_byte(0x5a));
}

#[test]
fn a_tampered_sidecar_is_not_finalized() {
    with_a_byzantine_leader(
        23,
        Behaviour {
            lies: false,
            tamper: Some(|b| {
                let mut results = b.sidecar.results().to_vec();
                match results.first_mut() {
                    Some(r) => r.payload = alloy_primitives::Bytes::from_static(b"forged"),
                    None => results.push(output(B256::repeat_byte(1), 1.0, 4)),
                }
                b.sidecar = pipe_primitives::Sidecar::new(results);
            }),
        },
        |nodes, proposed| {
            assert!(proposed > 0);
            included_result(nodes);
            let n = &nodes[1];
            for h in 1..=n.head() {
                let b = n.block(h);
                assert_eq!(
                    pipe_primitives::InferenceFields::decode(&b.header.extra_data)
                        .unwrap()
                        .results_root,
                    b.sidecar.commitment()
                );
            }
        },
    );
}

#[test]
fn a_far_future_timestamp_is_not_finalized() {
    tampered_blocks_are_not_finalized(24, |b| b.header.timestamp += 3600);
}

#[test]
fn unclean_restarts_of_every_validator_commit_nothing_twice() {
    const TARGET: u64 = 20;
    let tests: Vec<Arc<TestChain>> = (0..N).map(|_| Arc::new(TestChain::new(4))).collect();
    let mut checkpoint: Option<deterministic::Checkpoint> = None;
    let mut restarts = 0;
    loop {
        let runner = match checkpoint.take() {
            Some(c) => deterministic::Runner::from(c),
            None => runner(31),
        };
        let tests = tests.clone();
        // Ten crashes at random moments, then a run that must reach the target.
        let crash = restarts < 10;
        let (done, next) = runner.start_and_recover(|ctx| async move {
            let keys = keys();
            let pks: Vec<Pk> = keys.iter().map(|k| k.public_key()).collect();
            let oracle = network(&ctx, &pks, 1.0).await;
            let none = Arc::new(AtomicUsize::new(0));
            let mut nodes = Vec::new();
            for (i, test) in tests.into_iter().enumerate() {
                let b = Behaviour::default();
                nodes.push(start_on(&ctx, &oracle, &keys, i, b, &none, test).await);
            }
            // Crash after a random while (the runtime's seeded RNG), or finish.
            let crash_at = now_ms_of(&ctx) + 300 + next_u64(&ctx) % 2_500;
            loop {
                if nodes.iter().all(|n| n.head() >= TARGET) {
                    return true;
                }
                if crash && now_ms_of(&ctx) >= crash_at {
                    return false;
                }
                ctx.sleep(Duration::from_millis(100)).await;
            }
        });
        if done {
            break;
        }
        restarts += 1;
        checkpoint = Some(next);
    }
    assert_eq!(restarts, 10);
    // Every store is one chain, each block on the one before it, the same everywhere.
    for h in 1..=TARGET {
        let hashes: Vec<B256> = tests
            .iter()
            .map(|t| {
                let b = t.store.block(h).unwrap().expect("committed");
                let parent = t.store.block(h - 1).unwrap().expect("committed");
                assert_eq!(b.header.parent_hash, parent.hash, "block {h} on its parent");
                b.hash
            })
            .collect();
        assert!(hashes.windows(2).all(|w| w[0] == w[1]), "forked at {h}");
    }
}

fn now_ms_of(ctx: &Ctx0) -> u64 {
    pipe_consensus::app::now_ms(ctx)
}

fn next_u64(ctx: &Ctx0) -> u64 {
    use rand_core::Rng;
    let mut c = ctx.child("rng");
    c.next_u64()
}
