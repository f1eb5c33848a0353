//! The dev chain's state edits (`anvil_setBalance` & co., `evm_revert`, `anvil_reset`): each is
//! a block that carries the edits, which another chain replays from the block alone to the same
//! state root; a revert is a forward block that puts the archived values back.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, U256};
use pipe_builder::PayloadBuilder;
use pipe_chain::{
    Chain, DevSealer, SealMode,
    test_utils::{STORE_RUNTIME, TestChain, add_to_pool, store_call},
};
use pipe_mempool::Pool;
use pipe_primitives::{Clock, ManualClock, SealedBlock, StateEdit, StateEdits};
use pipe_storage::StateView;

const START_MS: u64 = 1_700_000_000_000;

struct Dev {
    test: TestChain,
    chain: Arc<Chain>,
    pool: Arc<Pool>,
    clock: ManualClock,
    sealer: DevSealer,
}

fn dev() -> Dev {
    let test = TestChain::new(2);
    test.store.set_archive(true).unwrap();
    let pool = test.pool();
    let chain = Arc::new(test.chain().with_pool(pool.clone()));
    let clock = ManualClock::new(START_MS);
    let builder = PayloadBuilder::new(
        pool.clone(),
        test.executor.clone(),
        Arc::new(clock.clone()) as Arc<dyn Clock>,
    );
    let sealer = DevSealer::new(
        chain.clone(),
        builder,
        pool.clone(),
        Arc::new(clock.clone()),
        SealMode::Manual,
    );
    Dev {
        test,
        chain,
        pool,
        clock,
        sealer,
    }
}

impl Dev {
    fn mine(&self) -> Arc<SealedBlock> {
        self.clock.advance(std::time::Duration::from_secs(1));
        self.sealer
            .seal(self.clock.now_ms() + 500)
            .expect("seals")
            .block
    }

    fn edit(&self, edits: Vec<StateEdit>) -> Arc<SealedBlock> {
        self.clock.advance(std::time::Duration::from_secs(1));
        self.sealer
            .edit(StateEdits::new(edits).unwrap())
            .expect("edits")
            .block
    }

    /// Every account but the chain-history contracts (EIP-2935, EIP-4788), which record each
    /// block and so go on through a revert.
    fn user_state(&self) -> Vec<pipe_storage::DumpedAccount> {
        let history = pipe_primitives::CHAIN_HISTORY_CONTRACTS;
        let (_, mut accounts) = self.test.store.dump_state(100_000).unwrap();
        accounts.retain(|a| !history.contains(&a.address));
        accounts
    }

    fn state(&self) -> StateView {
        self.test.store.state().unwrap()
    }

    fn balance(&self, a: Address) -> U256 {
        self.state()
            .account(&a)
            .unwrap()
            .map_or(U256::ZERO, |a| a.balance)
    }

    fn slot(&self, a: Address, slot: u64) -> U256 {
        self.state()
            .storage(&a, &B256::from(U256::from(slot)))
            .unwrap()
    }

    /// Replays this chain's blocks 1.. on a fresh chain with the same genesis: the follower's
    /// and `pipe replay`'s path.
    fn replay_elsewhere(&self) -> TestChain {
        let other = TestChain::new(2);
        let chain = other.chain();
        let head = self.chain.head().number();
        for n in 1..=head {
            let block = self.test.store.block(n).unwrap().unwrap();
            chain
                .import(block, u64::MAX / 2)
                .unwrap_or_else(|e| panic!("block {n} replays: {e}"));
        }
        assert_eq!(other.store.head().unwrap(), Some(head));
        other
    }
}

#[test]
fn edits_are_blocks_that_replay_to_the_same_root() {
    let d = dev();
    let mut sender = d.test.factory(0);
    let (deploy, contract) = sender.deploy(STORE_RUNTIME);
    add_to_pool(&d.pool, &d.test.store, deploy);
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.tx(Some(contract), U256::ZERO, store_call(1, U256::from(5))),
    );
    d.mine();
    assert_eq!(d.slot(contract, 1), U256::from(5));

    let fresh = Address::repeat_byte(0x42);
    let block = d.edit(vec![
        StateEdit::Balance {
            address: fresh,
            balance: U256::from(123),
        },
        StateEdit::Storage {
            address: contract,
            slot: B256::from(U256::from(1)),
            value: U256::from(77),
        },
        StateEdit::Code {
            address: fresh,
            code: Bytes::from_static(STORE_RUNTIME),
        },
        StateEdit::Nonce {
            address: d.test.signers[1].address(),
            nonce: 9,
        },
    ]);
    assert!(block.transactions.is_empty());
    assert_eq!(block.edits.len(), 4);
    // The header commits to the edits.
    let fields = pipe_primitives::InferenceFields::decode(&block.header.extra_data).unwrap();
    assert_eq!(fields.edits_root, block.edits.commitment());
    assert_eq!(d.balance(fresh), U256::from(123));
    assert_eq!(d.slot(contract, 1), U256::from(77));
    let state = d.state();
    let account = state.account(&fresh).unwrap().unwrap();
    assert_eq!(
        state.code(&account.code_hash).unwrap().unwrap().as_ref(),
        STORE_RUNTIME
    );
    assert_eq!(
        state
            .account(&d.test.signers[1].address())
            .unwrap()
            .unwrap()
            .nonce,
        9
    );
    assert_eq!(
        d.test.store.verify_state_root().map(|(a, b)| a == b).ok(),
        Some(true)
    );

    // Code installed by an edit runs, and the stored block reads back with its edits.
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.tx(Some(fresh), U256::ZERO, store_call(3, U256::from(8))),
    );
    d.mine();
    assert_eq!(d.slot(fresh, 3), U256::from(8));
    let stored = d.test.store.block(block.number()).unwrap().unwrap();
    assert_eq!(stored.edits, block.edits);

    let other = d.replay_elsewhere();
    assert_eq!(
        other
            .store
            .header(d.chain.head().number())
            .unwrap()
            .unwrap()
            .state_root,
        d.chain.head().header.state_root
    );

    // A block that lost its edits on the way (the validators' codec carries none) is refused.
    let fresh_chain = TestChain::new(2);
    let verifier = fresh_chain.chain();
    let one = d.test.store.block(1).unwrap().unwrap();
    verifier.import(one, u64::MAX / 2).unwrap();
    let stripped = d
        .test
        .store
        .block(block.number())
        .unwrap()
        .unwrap()
        .with_edits(StateEdits::default());
    let err = verifier.import(stripped, u64::MAX / 2).unwrap_err();
    assert!(err.to_string().contains("state edits hash"), "{err}");
}

#[test]
fn a_nonce_edit_moves_the_pools_count() {
    let d = dev();
    let mut sender = d.test.factory(0);
    let a = sender.transfer(Address::repeat_byte(9), U256::from(1));
    let b = sender.transfer(Address::repeat_byte(9), U256::from(1));
    let ha = add_to_pool(&d.pool, &d.test.store, a);
    let hb = add_to_pool(&d.pool, &d.test.store, b);
    d.edit(vec![StateEdit::Nonce {
        address: sender.address(),
        nonce: 1,
    }]);
    // Nonce 0 can never be included now; nonce 1 is next.
    assert!(d.pool.get(&ha).is_none());
    assert!(d.pool.get(&hb).is_some());
    let block = d.mine();
    assert_eq!(block.transactions.len(), 1);
    assert_eq!(block.transactions[0].hash, hb);
}

#[test]
fn revert_and_reset_put_the_archived_state_back_in_a_forward_block() {
    let d = dev();
    let genesis_state = d.user_state();
    let a0 = d.test.signers[0].address();
    let mut sender = d.test.factory(0);
    let (deploy, contract) = sender.deploy(STORE_RUNTIME);
    add_to_pool(&d.pool, &d.test.store, deploy);
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.tx(Some(contract), U256::ZERO, store_call(1, U256::from(5))),
    );
    d.mine();
    let snap_state = d.user_state();
    let before = d.balance(a0);
    let id = d.sealer.snapshot();
    let later = d.sealer.snapshot();

    // Changes after the snapshot: a slot written, one cleared, a new account, a new
    // contract, nonces and balances moved, an account deleted by an edit.
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.tx(Some(contract), U256::ZERO, store_call(1, U256::ZERO)),
    );
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.tx(Some(contract), U256::ZERO, store_call(2, U256::from(6))),
    );
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.transfer(Address::repeat_byte(7), U256::from(1000)),
    );
    let (deploy2, contract2) = sender.deploy(STORE_RUNTIME);
    add_to_pool(&d.pool, &d.test.store, deploy2);
    d.mine();
    d.edit(vec![StateEdit::Delete {
        address: d.test.signers[1].address(),
    }]);
    assert_ne!(d.user_state(), snap_state);
    assert!(d.state().account(&contract2).unwrap().is_some());

    let head_before = d.chain.head().number();
    let reverted = d
        .sealer
        .revert(id)
        .unwrap()
        .expect("known")
        .expect("a block");
    assert_eq!(
        reverted.block.number(),
        head_before + 1,
        "forward, not a rewind"
    );
    assert_eq!(d.user_state(), snap_state);
    assert_eq!(d.balance(a0), before);
    assert_eq!(d.slot(contract, 1), U256::from(5));
    assert_eq!(d.slot(contract, 2), U256::ZERO);
    assert!(d.state().account(&contract2).unwrap().is_none());
    assert!(
        d.state()
            .account(&Address::repeat_byte(7))
            .unwrap()
            .is_none()
    );
    // That snapshot and later ones are used up.
    assert!(d.sealer.revert(id).unwrap().is_none());
    assert!(d.sealer.revert(later).unwrap().is_none());
    // Transactions from the reverted account go on from its old nonce.
    let mut again = d.test.factory(0);
    again.nonce = 2;
    add_to_pool(
        &d.pool,
        &d.test.store,
        again.transfer(Address::repeat_byte(8), U256::from(1)),
    );
    assert_eq!(d.mine().transactions.len(), 1);

    d.sealer.reset().unwrap().expect("a block");
    assert_eq!(d.user_state(), genesis_state);
    d.replay_elsewhere();
}

#[test]
fn reverting_without_the_archive_says_so() {
    let d = dev();
    d.test.store.set_archive(false).unwrap();
    let mut sender = d.test.factory(0);
    let id = d.sealer.snapshot();
    add_to_pool(
        &d.pool,
        &d.test.store,
        sender.transfer(Address::repeat_byte(9), U256::from(1)),
    );
    d.mine();
    let err = d.sealer.revert(id).unwrap_err();
    assert!(err.to_string().contains("not archived"), "{err}");
}

/// Only a dev chain takes edits: a chain without `dev_controls` (a `--genesis` chain, its
/// followers, `pipe replay` of it) refuses a block that carries them, and a slot written into
/// an empty account (which EIP-161 would remove with it) is refused rather than lost.
#[test]
fn edits_are_refused_off_the_dev_chain_and_never_lost() {
    let d = dev();
    let block = d.edit(vec![StateEdit::Balance {
        address: Address::repeat_byte(0x42),
        balance: U256::from(1),
    }]);
    let mut strict = TestChain::new(2);
    let mut config = (*strict.config).clone();
    config.dev_controls = false;
    strict.executor = pipe_executor::Executor::new(Arc::new(config));
    let err = strict
        .chain()
        .import((*block).clone(), u64::MAX / 2)
        .unwrap_err();
    assert!(err.to_string().contains("only a dev chain"), "{err}");

    let err = d
        .sealer
        .edit(
            StateEdits::new(vec![StateEdit::Storage {
                address: Address::repeat_byte(0x43),
                slot: B256::ZERO,
                value: U256::from(1),
            }])
            .unwrap(),
        )
        .unwrap_err();
    assert!(err.to_string().contains("empty account"), "{err}");
    // With a balance first, the slot stays.
    d.edit(vec![
        StateEdit::Balance {
            address: Address::repeat_byte(0x43),
            balance: U256::from(1),
        },
        StateEdit::Storage {
            address: Address::repeat_byte(0x43),
            slot: B256::ZERO,
            value: U256::from(1),
        },
    ]);
    assert_eq!(d.slot(Address::repeat_byte(0x43), 0), U256::from(1));
}

/// An edit block leaves a timestamp set for the next block (`evm_setNextBlockTimestamp`) to
/// the next mined block, as anvil does with edits that make no block.
#[test]
fn an_edit_leaves_the_next_blocks_timestamp_alone() {
    let d = dev();
    let head = d.chain.head().header.timestamp;
    let chosen = head + 1000;
    d.sealer.set_next_timestamp(chosen).unwrap();
    let edit = d.edit(vec![StateEdit::Balance {
        address: Address::repeat_byte(0x44),
        balance: U256::from(1),
    }]);
    assert_eq!(edit.header.timestamp, head + 1);
    assert_eq!(d.mine().header.timestamp, chosen);
}
