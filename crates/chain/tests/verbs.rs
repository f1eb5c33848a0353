//! propose / verify / finalize: unfinalized parents, dropped proposals, competing children,
//! a crash before finalization, and timestamps.

use std::sync::{Arc, atomic::AtomicBool};

use alloy_consensus::TxEnvelope;
use alloy_primitives::{Address, B256, Bytes, U256};
use pipe_builder::PayloadBuilder;
use pipe_chain::{
    Chain, ChainError, Proposal, ProposeAttributes, VerifyError,
    test_utils::{
        BLOCKHASH_RUNTIME, SELFDESTRUCT_INIT, STORE_RUNTIME, TestChain, add_to_pool, store_call,
    },
};
use pipe_mempool::Pool;
use pipe_primitives::{ManualClock, SealedBlock};

static NEVER: AtomicBool = AtomicBool::new(false);

fn builder(t: &TestChain, pool: &Arc<Pool>) -> PayloadBuilder {
    PayloadBuilder::new(
        pool.clone(),
        t.executor.clone(),
        Arc::new(ManualClock::new(0)),
    )
}

/// Proposes on `parent` at `timestamp` with everything `pool` has ready, with no deadline.
fn propose(
    chain: &Chain,
    t: &TestChain,
    pool: &Arc<Pool>,
    parent: B256,
    timestamp: u64,
) -> Proposal {
    chain
        .propose(&builder(t, pool), parent, at(timestamp), u64::MAX, &NEVER)
        .unwrap()
}

fn at(timestamp: u64) -> ProposeAttributes {
    ProposeAttributes {
        timestamp,
        beneficiary: Address::ZERO,
    }
}

/// A small deterministic generator (xorshift), so each seed is one reproducible history.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random blocks of transactions: transfers (to existing and fresh accounts, zero-value ones
/// included), slot writes and deletions on a storage contract, contract creations, accounts
/// created and self-destructed in one transaction, and a contract reading its block's parent
/// hash.
fn random_blocks(t: &TestChain, seed: u64, blocks: usize) -> Vec<Vec<TxEnvelope>> {
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut factories: Vec<_> = (0..t.signers.len()).map(|i| t.factory(i)).collect();
    let (deploy_store, store) = factories[0].deploy(STORE_RUNTIME);
    let (deploy_hash, reader) = factories[1].deploy(BLOCKHASH_RUNTIME);
    let mut out = vec![vec![deploy_store, deploy_hash]];
    let mut contracts = vec![store];
    for b in 0..blocks {
        let block = if b == 0 {
            &mut out[0]
        } else {
            out.push(Vec::new());
            out.last_mut().unwrap()
        };
        block.push(factories[1].tx(Some(reader), U256::ZERO, Bytes::new()));
        for _ in 0..12 {
            let f = &mut factories[rng.below(t.signers.len() as u64) as usize];
            let tx = match rng.below(6) {
                0 => f.transfer(
                    Address::from_word(B256::from(U256::from(rng.next()))),
                    U256::from(rng.below(3)),
                ),
                1 => {
                    let to = t.signers[rng.below(t.signers.len() as u64) as usize].address();
                    f.transfer(to, U256::from(rng.below(1_000_000)))
                }
                2 | 3 => {
                    let c = contracts[rng.below(contracts.len() as u64) as usize];
                    // A third of the writes delete the slot.
                    let value = if rng.below(3) == 0 {
                        U256::ZERO
                    } else {
                        U256::from(rng.next())
                    };
                    f.tx(Some(c), U256::ZERO, store_call(rng.below(6), value))
                }
                4 => {
                    let (tx, address) = f.deploy(STORE_RUNTIME);
                    contracts.push(address);
                    tx
                }
                _ => f.tx(
                    None,
                    U256::from(1 + rng.below(1000)),
                    SELFDESTRUCT_INIT.to_vec().into(),
                ),
            };
            block.push(tx);
        }
    }
    out
}

#[test]
fn executing_on_unfinalized_parents_equals_committing_them_first() {
    for seed in 1..=4u64 {
        // Chain A proposes every block on its unfinalized parent; chain B finalizes each
        // before proposing the next. Same genesis, same transactions, same timestamps.
        let (a, b) = (TestChain::new(5), TestChain::new(5));
        let blocks = random_blocks(&a, seed, 4);
        let (pool_a, pool_b) = (a.pool(), b.pool());
        let chain_a = a.chain();
        let chain_b = b.chain().with_pool(pool_b.clone());
        let (builder_a, builder_b) = (builder(&a, &pool_a), builder(&b, &pool_b));
        let mut tip_a = a.genesis.hash;
        for (i, txs) in blocks.iter().enumerate() {
            for tx in txs {
                add_to_pool(&pool_a, &a.store, tx.clone());
                add_to_pool(&pool_b, &b.store, tx.clone());
            }
            let ts = a.genesis.header.timestamp + 1 + i as u64;
            let pa = chain_a
                .propose(&builder_a, tip_a, at(ts), u64::MAX, &NEVER)
                .unwrap();
            let pb = chain_b
                .propose(&builder_b, chain_b.head().hash, at(ts), u64::MAX, &NEVER)
                .unwrap();
            assert!(
                pa.invalid.is_empty(),
                "seed {seed} block {i}: {:?}",
                pa.invalid
            );
            assert_eq!(
                pa.block.transactions.len(),
                txs.len(),
                "seed {seed} block {i}"
            );
            // What the unfinalized ancestors included is still in A's pool, and skipped.
            let earlier: usize = blocks[..i].iter().map(Vec::len).sum();
            assert_eq!(pa.stats.already_included, earlier, "seed {seed} block {i}");
            // Equal hashes: equal state, transactions and receipts roots, bloom, gas.
            assert_eq!(pa.block.hash, pb.block.hash, "seed {seed} block {i}");
            assert_eq!(pa.block.receipts, pb.block.receipts);
            chain_b.finalize(pb.block.hash).unwrap();
            // B's commits write the tries as the proposal recorded them; each next root is
            // computed from those stored branches, and must still be the from-scratch root.
            let (computed, stored) = b.store.verify_state_root().unwrap();
            assert_eq!(computed, stored, "seed {seed} block {i}");
            tip_a = pa.block.hash;
            // Nothing of A's proposals reached its store.
            assert_eq!(a.store.head().unwrap(), Some(0));
        }
        assert_eq!(chain_a.pending_blocks(), blocks.len());
        // Finalizing the tip commits the whole branch, each block checked again.
        let head = chain_a.finalize(tip_a).unwrap();
        assert_eq!(head.hash, chain_b.head().hash);
        assert_eq!(chain_a.pending_blocks(), 0);
        let (computed, stored) = a.store.verify_state_root().unwrap();
        assert_eq!(computed, stored);
        assert_eq!(stored, head.header.state_root);
        for n in 1..=head.number() {
            assert_eq!(
                a.store.block(n).unwrap().unwrap().hash,
                b.store.block(n).unwrap().unwrap().hash
            );
        }
    }
}

#[test]
fn the_overlay_reads_what_a_commit_would_have_written() {
    let t = TestChain::new(2);
    let pool = t.pool();
    let chain = t.chain();
    let mut f = t.factory(0);
    let (deploy, contract) = f.deploy(STORE_RUNTIME);
    add_to_pool(&pool, &t.store, deploy);
    add_to_pool(
        &pool,
        &t.store,
        f.tx(Some(contract), U256::ZERO, store_call(1, U256::from(7))),
    );
    let b1 = propose(
        &chain,
        &t,
        &pool,
        t.genesis.hash,
        t.genesis.header.timestamp + 1,
    );
    add_to_pool(
        &pool,
        &t.store,
        f.tx(Some(contract), U256::ZERO, store_call(1, U256::ZERO)),
    );
    add_to_pool(
        &pool,
        &t.store,
        f.tx(Some(contract), U256::ZERO, store_call(2, U256::from(9))),
    );
    let b2 = propose(
        &chain,
        &t,
        &pool,
        b1.block.hash,
        t.genesis.header.timestamp + 2,
    );
    assert_eq!(b2.block.transactions.len(), 2, "{:?}", b2.stats);
    assert_eq!(b2.stats.already_included, 2);

    let after1 = chain.state_after(b1.block.hash).unwrap();
    assert_eq!(after1.head, 1);
    assert_eq!(after1.finalized(), 0);
    assert_eq!(
        after1
            .storage(&contract, &B256::from(U256::from(1)))
            .unwrap(),
        U256::from(7)
    );
    assert_eq!(after1.block_hash(1).unwrap(), Some(b1.block.hash));
    assert_eq!(after1.block_hash(2).unwrap(), None);
    let after2 = chain.state_after(b2.block.hash).unwrap();
    assert_eq!(
        after2
            .storage(&contract, &B256::from(U256::from(1)))
            .unwrap(),
        U256::ZERO
    );
    assert_eq!(
        after2
            .storage(&contract, &B256::from(U256::from(2)))
            .unwrap(),
        U256::from(9)
    );
    assert_eq!(after2.account(&f.address()).unwrap().unwrap().nonce, 4);
    assert_eq!(
        after2
            .code(&after2.account(&contract).unwrap().unwrap().code_hash)
            .unwrap()
            .unwrap()
            .as_ref(),
        STORE_RUNTIME
    );
    // The finalized state is untouched.
    let finalized = t.store.state().unwrap();
    assert_eq!(finalized.account(&contract).unwrap(), None);
    assert_eq!(finalized.account(&f.address()).unwrap().unwrap().nonce, 0);
}

#[test]
fn a_proposal_never_finalized_changes_nothing() {
    let t = TestChain::new(3);
    let pool = t.pool();
    let chain = t.chain().with_pool(pool.clone());
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut f = t.factory(i);
        for _ in 0..3 {
            hashes.push(add_to_pool(
                &pool,
                &t.store,
                f.transfer(Address::repeat_byte(9), U256::from(1)),
            ));
        }
    }
    let ts = t.genesis.header.timestamp + 1;
    let first = propose(&chain, &t, &pool, t.genesis.hash, ts);
    assert_eq!(first.block.transactions.len(), 9);
    drop(first);
    // The pool still holds every transaction, the store is at genesis, and the same proposal
    // made again is the same block: nothing it saw had moved.
    assert_eq!(pool.len(), 9);
    assert!(hashes.iter().all(|h| pool.get(h).is_some()));
    assert_eq!(t.store.head().unwrap(), Some(0));
    assert_eq!(chain.head().hash, t.genesis.hash);
    let again = propose(&chain, &t, &pool, t.genesis.hash, ts);
    assert_eq!(again.block.transactions.len(), 9);
    assert_eq!(chain.pending_blocks(), 1, "the same block is kept once");
}

#[test]
fn of_two_competing_children_the_finalized_one_stays_and_the_other_is_pruned() {
    let t = TestChain::new(2);
    let pool = t.pool();
    let chain = t.chain().with_pool(pool.clone());
    let mut f0 = t.factory(0);
    let mut f1 = t.factory(1);
    let x = add_to_pool(
        &pool,
        &t.store,
        f0.transfer(Address::repeat_byte(1), U256::from(5)),
    );
    let ts = t.genesis.header.timestamp + 1;
    let left = propose(&chain, &t, &pool, t.genesis.hash, ts);
    // A transaction arrives; a competing proposal at the same height includes it too.
    let y = add_to_pool(
        &pool,
        &t.store,
        f1.transfer(Address::repeat_byte(2), U256::from(6)),
    );
    let right = propose(&chain, &t, &pool, t.genesis.hash, ts + 1);
    let right_child = propose(&chain, &t, &pool, right.block.hash, ts + 2);
    assert_ne!(left.block.hash, right.block.hash);
    assert_eq!(left.block.transactions.len(), 1);
    assert_eq!(right.block.transactions.len(), 2);
    assert_eq!(chain.pending_blocks(), 3);

    chain.finalize(left.block.hash).unwrap();
    assert_eq!(chain.head().hash, left.block.hash);
    assert_eq!(t.store.head().unwrap(), Some(1));
    assert_eq!(t.store.block(1).unwrap().unwrap().hash, left.block.hash);
    // The other branch is gone, and what only it included is still pending.
    assert_eq!(chain.pending_blocks(), 0);
    assert!(chain.pending(&right.block.hash).is_none());
    assert!(chain.pending(&right_child.block.hash).is_none());
    assert!(pool.get(&x).is_none());
    assert!(pool.get(&y).is_some());
    assert!(matches!(
        chain.finalize(right.block.hash),
        Err(ChainError::UnknownBlock(_))
    ));
    // And the next block picks it up.
    let next = propose(&chain, &t, &pool, left.block.hash, ts + 3);
    assert_eq!(next.block.transactions.len(), 1);
    assert_eq!(next.block.transactions[0].hash, y);
}

/// Two finalized blocks from a proposer, for a verifier to import.
fn proposed_chain(t: &TestChain, blocks: usize) -> Vec<SealedBlock> {
    let pool = t.pool();
    let chain = t.chain().with_pool(pool.clone());
    let mut f = t.factory(0);
    let (deploy, contract) = f.deploy(STORE_RUNTIME);
    add_to_pool(&pool, &t.store, deploy);
    let mut out = Vec::new();
    for i in 0..blocks {
        add_to_pool(
            &pool,
            &t.store,
            f.tx(
                Some(contract),
                U256::ZERO,
                store_call(i as u64, U256::from(i + 1)),
            ),
        );
        add_to_pool(
            &pool,
            &t.store,
            f.transfer(Address::repeat_byte(7), U256::from(i)),
        );
        let p = propose(
            &chain,
            t,
            &pool,
            chain.head().hash,
            t.genesis.header.timestamp + 10 * (i as u64 + 1),
        );
        out.push((*chain.finalize(p.block.hash).unwrap()).clone());
    }
    out
}

#[test]
fn a_crash_between_verify_and_finalize_loses_nothing_finalized_and_recovers() {
    let proposer = TestChain::new(1);
    let blocks = proposed_chain(&proposer, 3);
    let mut verifier = TestChain::new(1);
    {
        let chain = verifier.chain();
        chain.import(blocks[0].clone(), u64::MAX).unwrap();
        chain.verify(blocks[1].clone(), u64::MAX).unwrap();
        chain.verify(blocks[2].clone(), u64::MAX).unwrap();
        assert_eq!(chain.pending_blocks(), 2);
        // The process dies here: verified, not finalized.
    }
    verifier.reopen();
    let chain = verifier.chain();
    assert_eq!(
        chain.head().hash,
        blocks[0].hash,
        "what was finalized survived"
    );
    assert_eq!(chain.pending_blocks(), 0, "what was not is gone");
    // Verifying again from the finalized head recovers.
    chain.verify(blocks[1].clone(), u64::MAX).unwrap();
    chain.verify(blocks[2].clone(), u64::MAX).unwrap();
    chain.finalize(blocks[2].hash).unwrap();
    assert_eq!(chain.head().hash, blocks[2].hash);
    let (computed, stored) = verifier.store.verify_state_root().unwrap();
    assert_eq!(
        (computed, stored),
        (blocks[2].header.state_root, blocks[2].header.state_root)
    );
}

#[test]
fn blocks_from_the_future_wait_and_blocks_before_their_parent_are_invalid() {
    let proposer = TestChain::new(1);
    let blocks = proposed_chain(&proposer, 1);
    let block = blocks[0].clone();
    let verifier = TestChain::new(1);
    let chain = verifier.chain().with_max_future_ms(2_000);
    let stamped_ms = block.header.timestamp * 1000;

    // 5 s ahead of our clock with 2 s allowed: not yet, and not for good.
    let early = chain.verify(block.clone(), stamped_ms - 5_000).unwrap_err();
    assert!(
        matches!(early, VerifyError::Future { wait_ms: 3_000, .. }),
        "{early}"
    );
    assert!(!early.is_final());
    assert_eq!(chain.pending_blocks(), 0);
    // Within the drift it verifies.
    chain.verify(block.clone(), stamped_ms - 2_000).unwrap();

    // A block stamped at its parent's time is invalid whatever the clock says.
    let mut header = block.header.clone();
    header.timestamp = verifier.genesis.header.timestamp;
    let stale = SealedBlock::new(header, block.transactions.clone(), block.receipts.clone());
    let err = chain.verify(stale, u64::MAX).unwrap_err();
    assert!(err.is_final(), "{err}");

    // A proposal may not be stamped at or before its parent either.
    let pool = verifier.pool();
    assert!(matches!(
        chain.propose(
            &builder(&verifier, &pool),
            verifier.genesis.hash,
            at(verifier.genesis.header.timestamp),
            u64::MAX,
            &NEVER
        ),
        Err(ChainError::Timestamp { .. })
    ));
}

#[test]
fn verification_refuses_bad_roots_and_waits_for_unknown_parents() {
    let proposer = TestChain::new(1);
    let blocks = proposed_chain(&proposer, 2);
    let verifier = TestChain::new(1);
    let chain = verifier.chain();

    // The second block before the first: its parent is unknown, which may change.
    let err = chain.verify(blocks[1].clone(), u64::MAX).unwrap_err();
    assert!(matches!(err, VerifyError::UnknownParent { .. }), "{err}");
    assert!(!err.is_final());

    // A state root that replay does not reach.
    let mut header = blocks[0].header.clone();
    header.state_root = B256::repeat_byte(0xab);
    let forged = SealedBlock::new(
        header,
        blocks[0].transactions.clone(),
        blocks[0].receipts.clone(),
    );
    let err = chain.verify(forged, u64::MAX).unwrap_err();
    assert!(err.is_final(), "{err}");
    assert_eq!(chain.pending_blocks(), 0);
    assert_eq!(verifier.store.head().unwrap(), Some(0));

    // The real blocks verify, the second on the first while it is not final yet.
    chain.verify(blocks[0].clone(), u64::MAX).unwrap();
    chain.verify(blocks[1].clone(), u64::MAX).unwrap();
    assert_eq!(chain.finalize(blocks[1].hash).unwrap().hash, blocks[1].hash);
}

#[test]
fn a_cancelled_proposal_keeps_nothing() {
    let t = TestChain::new(1);
    let pool = t.pool();
    let chain = t.chain().with_pool(pool.clone());
    add_to_pool(
        &pool,
        &t.store,
        t.factory(0)
            .transfer(Address::repeat_byte(3), U256::from(1)),
    );
    let cancel = AtomicBool::new(true);
    let err = chain
        .propose(
            &builder(&t, &pool),
            t.genesis.hash,
            at(t.genesis.header.timestamp + 1),
            u64::MAX,
            &cancel,
        )
        .unwrap_err();
    assert!(matches!(err, ChainError::Build(_)), "{err}");
    assert_eq!(chain.pending_blocks(), 0);
    assert_eq!(pool.len(), 1);
}

#[test]
fn a_late_copy_of_a_final_block_is_that_block_and_the_store_refuses_a_non_child() {
    let proposer = TestChain::new(1);
    let blocks = proposed_chain(&proposer, 2);
    let verifier = TestChain::new(1);
    let chain = verifier.chain();
    chain.import(blocks[0].clone(), u64::MAX).unwrap();
    chain.import(blocks[1].clone(), u64::MAX).unwrap();
    // Block 1 again, after block 2 is final: the same block, not a conflict.
    assert_eq!(
        chain.verify(blocks[0].clone(), u64::MAX).unwrap().hash,
        blocks[0].hash
    );
    // A block that does not extend the stored head is never written, whatever its root.
    let err = verifier
        .store
        .commit_prepared(&Default::default(), &Default::default(), blocks[0].clone())
        .unwrap_err();
    assert!(
        matches!(err, pipe_storage::StoreError::NotChild { .. }),
        "{err}"
    );
    assert_eq!(verifier.store.head().unwrap(), Some(2));
}
