//! The chain: blocks are proposed, verified and finalized, and only finalization writes.
//!
//! # The three verbs
//! - [`Chain::propose`]: the payload job ([`pipe_builder::PayloadBuilder`]) executes the
//!   pool's best transactions on a parent that may not be final yet, the state root is
//!   computed without writing, and the sealed block goes into the pending tree. Nothing else
//!   changes: the pool keeps every transaction, PIPE keeps every result, the store is
//!   untouched. What the job learned about transactions it left out (invalid, stale) is handed
//!   back for the driver to act on once it decides to keep the block.
//! - [`Chain::verify`]: a block from elsewhere is replayed from the block alone (its sidecar
//!   answers inference, [`pipe_builder::replay`]) on its parent's state, its state root
//!   computed without writing and compared with the header's, and it goes into the pending
//!   tree. A block from the future (past the allowed drift) or with an unknown parent is
//!   *not yet* verifiable ([`VerifyError::is_final`] is false); a block that fails replay is
//!   invalid for good.
//! - [`Chain::finalize`]: the one path that writes a block. It commits every unfinalized
//!   block from the finalized head up to the given one, each durably and atomically
//!   ([`pipe_storage::Store::commit_prepared`]: the tries are written as the proposal or the
//!   verification computed them, not hashed a second time; the block must extend the stored
//!   head), then
//!   emits the chain event: the pool forgets what the block included (and their senders'
//!   used nonces, removed from the persisted pending set too), listeners (PIPE) hear of it,
//!   and last the new head is published to RPC. Then siblings and their descendants are pruned.
//!
//! The chain event is delivered synchronously, before `finalize` returns, on purpose: the
//! next proposal must never see a pool that still holds what the last block included.
//!
//! # State of unfinalized blocks
//! Every pending block keeps its change set as a [`pipe_storage::ChangeLayer`]. Execution on
//! an unfinalized parent reads a [`pipe_storage::StateView`] of the finalized state with the
//! layers of the parent's unfinalized ancestors stacked on it (block hashes included, for
//! `BLOCKHASH` and EIP-2935); the state root is computed by applying the layers in a redb
//! write transaction that is then aborted ([`pipe_storage::Store::state_root_after`]), which
//! also records what the block's changes wrote to the tries, for its commit.
//!
//! # Drivers
//! Whoever decides which blocks are final drives the verbs: the dev chain's [`DevSealer`]
//! proposes then finalizes at each slot; a follower and `pipe replay` verify then finalize
//! ([`Chain::import`]); a BFT engine will propose when it leads, verify when it votes and
//! finalize what it certifies.

pub mod check;
mod dev;
mod error;
pub mod genesis;
#[cfg(feature = "test-utils")]
pub mod test_utils;
mod tree;

use std::{
    collections::VecDeque,
    sync::{Arc, atomic::AtomicBool},
};

use alloy_primitives::{Address, B256};
use parking_lot::Mutex;
use pipe_builder::{BuildStats, PayloadBuilder, replay::replay_block_calls};
use pipe_executor::{BlockAttributes, Executor, InferenceCall, InferenceProvider};
use pipe_mempool::{Pool, PoolTx};
use pipe_primitives::SealedBlock;
use pipe_storage::{ChangeLayer, StateView, Store, TrieUpdates};
use tokio::sync::watch;
use tracing::{debug, info, warn};

pub use check::{CheckOutcome, CheckPolicy, LocalResult, LocalResults, ResultCheck};
pub use dev::{DevSealer, MAX_DEV_SECONDS, SealAt, SealMode, Sealed};
pub use error::{ChainError, VerifyError};
pub use tree::{MAX_PENDING_BLOCKS, PendingBlock};

/// Hears of every finalized block, in order, before [`Chain::finalize`] returns. It runs under
/// the chain's finalization lock: it must not call back into the [`Chain`].
pub trait ChainListener: Send + Sync + 'static {
    /// `block` is final; `stats` of its build when this node proposed it.
    fn on_finalized(&self, block: &Arc<SealedBlock>, stats: Option<&BuildStats>);
}

/// What the proposer chooses for its block; the rest (number, base fee, gas limit, inference
/// price, prevrandao) follows from the parent by the chain's rules, which verifiers check.
#[derive(Clone, Copy, Debug)]
pub struct ProposeAttributes {
    /// Seconds since the Unix epoch; must be after the parent's.
    pub timestamp: u64,
    /// Fee recipient.
    pub beneficiary: Address,
}

/// A proposed block: sealed, in the pending tree, committed nowhere.
#[derive(Debug)]
pub struct Proposal {
    pub block: Arc<SealedBlock>,
    pub stats: BuildStats,
    /// Left out as invalid on the parent state, with the reason.
    pub invalid: Vec<(B256, String)>,
    /// Left out because a result went stale, with the request.
    pub stale: Vec<(Arc<PoolTx>, InferenceCall)>,
}

/// Blocks whose stats [`Chain::history`] remembers.
const HISTORY: usize = 4096;

/// How far ahead of the local clock a block's timestamp may be before verification waits
/// (geth accepts 15 s).
pub const DEFAULT_MAX_FUTURE_MS: u64 = 15_000;

/// The chain: the store's finalized blocks, the tree of unfinalized ones, and the verbs.
pub struct Chain {
    store: Arc<Store>,
    executor: Executor,
    /// Model metadata for replay (decoding requests, charging gas); never runs a model.
    models: Arc<dyn InferenceProvider>,
    tree: Mutex<BlockTree>,
    /// The finalized head, published after each finalization.
    head: watch::Sender<Arc<SealedBlock>>,
    /// Forgets what finalized blocks included.
    pool: Option<Arc<Pool>>,
    listeners: Vec<Arc<dyn ChainListener>>,
    /// One finalization at a time: each commits on the head the previous one left.
    finalizing: Mutex<()>,
    /// Finalized blocks this node built, with their build stats, newest last.
    history: Mutex<VecDeque<(u64, BuildStats)>>,
    max_future_ms: u64,
    /// A validator's check of the VANILLA results in blocks from elsewhere.
    results: Option<ResultCheck>,
}

use tree::BlockTree;

/// A parent block, the state after it, and its unfinalized ancestry (oldest first, ending
/// with it; empty when it is the finalized head).
type ParentState = (Arc<SealedBlock>, StateView, Vec<Arc<PendingBlock>>);

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("head", &self.head.borrow().number())
            .field("pending", &self.tree.lock().len())
            .finish()
    }
}

impl Chain {
    /// The chain over `store`, whose head is taken as finalized.
    pub fn new(
        store: Arc<Store>,
        executor: Executor,
        models: Arc<dyn InferenceProvider>,
    ) -> Result<Self, ChainError> {
        let number = store
            .head()?
            .ok_or(pipe_storage::StoreError::Uninitialised)?;
        let head = store
            .block(number)?
            .ok_or(pipe_storage::StoreError::Uninitialised)?;
        Ok(Self {
            store,
            executor,
            models,
            tree: Mutex::default(),
            head: watch::channel(Arc::new(head)).0,
            pool: None,
            listeners: Vec::new(),
            finalizing: Mutex::new(()),
            history: Mutex::default(),
            max_future_ms: DEFAULT_MAX_FUTURE_MS,
            results: None,
        })
    }

    /// Finalized blocks' transactions leave `pool` (with their senders' used nonces).
    pub fn with_pool(mut self, pool: Arc<Pool>) -> Self {
        self.pool = Some(pool);
        self
    }

    /// `listener` hears of every finalized block, after the pool and before the head moves.
    pub fn with_listener(mut self, listener: Arc<dyn ChainListener>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// How far ahead of the local clock a verified block's timestamp may be.
    pub fn with_max_future_ms(mut self, ms: u64) -> Self {
        self.max_future_ms = ms;
        self
    }

    /// Blocks from elsewhere are accepted only if their VANILLA results agree with this
    /// node's own ([`check`]).
    pub fn with_result_check(mut self, check: ResultCheck) -> Self {
        self.results = Some(check);
        self
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The finalized head.
    pub fn head(&self) -> Arc<SealedBlock> {
        self.head.borrow().clone()
    }

    /// The finalized head, as it moves.
    pub fn subscribe(&self) -> watch::Receiver<Arc<SealedBlock>> {
        self.head.subscribe()
    }

    /// Unfinalized blocks held.
    pub fn pending_blocks(&self) -> usize {
        self.tree.lock().len()
    }

    /// An unfinalized block by hash.
    pub fn pending(&self, hash: &B256) -> Option<Arc<PendingBlock>> {
        self.tree.lock().get(hash)
    }

    /// Block numbers and build stats of the most recent finalized blocks this node built,
    /// oldest first.
    pub fn history(&self) -> Vec<(u64, BuildStats)> {
        self.history.lock().iter().copied().collect()
    }

    /// The parent block `hash` (the finalized head or an unfinalized block), the state after
    /// it, and the unfinalized blocks from the finalized head up to it.
    fn parent_state(&self, hash: B256) -> Result<ParentState, ChainError> {
        // The view and the head it sits on must agree: finalization commits and publishes
        // under this lock, so inside it they do.
        let (head, view) = {
            let _f = self.finalizing.lock();
            (self.head(), self.store.state()?)
        };
        if view.head != head.number() {
            // Only a finalization that committed and then failed to publish leaves them apart.
            return Err(ChainError::Storage(pipe_storage::StoreError::HeadMoved {
                expected: head.number(),
                head: Some(view.head),
            }));
        }
        if hash == head.hash {
            return Ok((head, view, Vec::new()));
        }
        let path = self
            .tree
            .lock()
            .path(head.hash, hash)
            .ok_or(ChainError::UnknownBlock(hash))?;
        let parent = path.last().expect("non-empty path").block.clone();
        let view = view.with_layers(path.iter().map(|b| b.layer.clone()).collect())?;
        Ok((parent, view, path))
    }

    /// The state after block `hash` (finalized head or unfinalized): what a proposer, a
    /// verifier or a simulation on top of it reads.
    pub fn state_after(&self, hash: B256) -> Result<StateView, ChainError> {
        Ok(self.parent_state(hash)?.1)
    }

    /// The full attributes of a block on `parent` with what the proposer chose.
    pub fn attributes(&self, parent: &SealedBlock, chosen: ProposeAttributes) -> BlockAttributes {
        self.executor.next_attributes(
            parent,
            chosen.timestamp.saturating_mul(1000),
            chosen.beneficiary,
        )
    }

    /// The state root after `changes` on top of `path` (unfinalized ancestors, oldest first),
    /// with what `changes` did to the tries.
    fn root_on(
        &self,
        path: &[Arc<PendingBlock>],
        finalized: u64,
        changes: &pipe_storage::StateChanges,
    ) -> Result<TrieUpdates, ChainError> {
        let mut layers: Vec<&pipe_storage::StateChanges> =
            path.iter().map(|b| b.layer.changes()).collect();
        layers.push(changes);
        Ok(self.store.state_root_after(finalized, &layers)?)
    }

    /// Proposes a block on `parent` (the finalized head or an unfinalized block): executes
    /// the pool's best transactions with `builder` until `deadline_ms` (builder's clock) or
    /// `cancel`, seals it with a state root computed without writing, and keeps it in the
    /// pending tree. Commits nothing and changes neither pool nor PIPE.
    pub fn propose(
        &self,
        builder: &PayloadBuilder,
        parent: B256,
        chosen: ProposeAttributes,
        deadline_ms: u64,
        cancel: &AtomicBool,
    ) -> Result<Proposal, ChainError> {
        let (parent, view, path) = self.proposal_parent(parent, &chosen)?;
        let finalized = view.finalized();
        let attrs = self.attributes(&parent, chosen);
        let payload = builder.build(view, attrs, deadline_ms, cancel)?;
        let (block, stats) =
            self.seal_and_keep(&path, finalized, payload.executed, payload.stats)?;
        Ok(Proposal {
            block,
            stats,
            invalid: payload.invalid,
            stale: payload.stale,
        })
    }

    /// Proposes a dev chain block on `parent` that applies `edits` and includes no
    /// transaction ([`pipe_primitives::edits`]): how `anvil_setBalance` and its kin are
    /// committed. The block replays like any other; validators never propose one.
    pub fn propose_edits(
        &self,
        parent: B256,
        chosen: ProposeAttributes,
        edits: pipe_primitives::StateEdits,
    ) -> Result<Proposal, ChainError> {
        let (parent, view, path) = self.proposal_parent(parent, &chosen)?;
        let finalized = view.finalized();
        let mut attrs = self.attributes(&parent, chosen);
        attrs.edits = edits;
        let timer = std::time::Instant::now();
        // No transactions, so nothing asks for inference: no provider.
        let executed = self
            .executor
            .build_block_with(view, attrs, None)?
            .finish()?;
        let stats = BuildStats {
            execute_us: timer.elapsed().as_micros() as u64,
            ..Default::default()
        };
        let (block, stats) = self.seal_and_keep(&path, finalized, executed, stats)?;
        Ok(Proposal {
            block,
            stats,
            invalid: Vec::new(),
            stale: Vec::new(),
        })
    }

    /// The parent of a proposal, the state after it and its unfinalized ancestry; refused
    /// unless `chosen`'s timestamp is after the parent's.
    fn proposal_parent(
        &self,
        parent: B256,
        chosen: &ProposeAttributes,
    ) -> Result<ParentState, ChainError> {
        let state = self.parent_state(parent)?;
        let parent_time = state.0.header.timestamp;
        if chosen.timestamp <= parent_time {
            return Err(ChainError::Timestamp {
                timestamp: chosen.timestamp,
                parent: parent_time,
            });
        }
        Ok(state)
    }

    /// Computes the state root of `executed` on `path` without writing, seals it and keeps it
    /// in the pending tree.
    fn seal_and_keep(
        &self,
        path: &[Arc<PendingBlock>],
        finalized: u64,
        mut executed: pipe_executor::ExecutedBlock,
        mut stats: BuildStats,
    ) -> Result<(Arc<SealedBlock>, BuildStats), ChainError> {
        let timer = std::time::Instant::now();
        let changes = std::mem::take(&mut executed.changes);
        let tries = self.root_on(path, finalized, &changes)?;
        let block = Arc::new(executed.seal(tries.root()));
        stats.commit_us = timer.elapsed().as_micros() as u64;
        self.keep(PendingBlock {
            layer: Arc::new(ChangeLayer::new(block.number(), block.hash, changes)),
            block: block.clone(),
            tries,
            stats: Some(stats),
        })?;
        debug!(target: "pipe::chain", number = block.number(), hash = %block.hash, txs = block.transactions.len(), edits = block.edits.len(), "proposed");
        Ok((block, stats))
    }

    fn keep(&self, block: PendingBlock) -> Result<(), ChainError> {
        if self.tree.lock().insert(block) {
            Ok(())
        } else {
            Err(ChainError::TreeFull(MAX_PENDING_BLOCKS))
        }
    }

    /// Verifies `block` from elsewhere at local time `now_ms`: its parent must be known, its
    /// timestamp after the parent's and not too far ahead of `now_ms`, and replay from the
    /// block alone must give exactly its header (state root included). A verified block joins
    /// the pending tree; verifying a known block again answers at once.
    pub fn verify(&self, block: SealedBlock, now_ms: u64) -> Result<Arc<SealedBlock>, VerifyError> {
        self.verify_inner(block, now_ms, true)
    }

    /// [`Chain::verify`] for a block a quorum of validators has already certified (a
    /// validator catching up): replayed in full, but its results are not compared with this
    /// node's own (honest members of the quorum did that before they voted), so catching up
    /// never waits for models.
    pub fn verify_certified(
        &self,
        block: SealedBlock,
        now_ms: u64,
    ) -> Result<Arc<SealedBlock>, VerifyError> {
        self.verify_inner(block, now_ms, false)
    }

    fn verify_inner(
        &self,
        block: SealedBlock,
        now_ms: u64,
        check_results: bool,
    ) -> Result<Arc<SealedBlock>, VerifyError> {
        let number = block.number();
        if let Some(known) = self.tree.lock().get(&block.hash) {
            return Ok(known.block.clone());
        }
        let head = self.head();
        if block.hash == head.hash {
            return Ok(head);
        }
        if number <= head.number() {
            // A late copy of a block already final is that block, not a conflict.
            if let Some(n) = self.store.block_number(&block.hash)?
                && let Some(stored) = self.store.block(n)?
            {
                return Ok(Arc::new(stored));
            }
            return Err(VerifyError::Invalid(format!(
                "block {number} conflicts with finalized block {}",
                head.number()
            )));
        }
        let parent_hash = block.header.parent_hash;
        let (parent, view, path) = match self.parent_state(parent_hash) {
            Ok(p) => p,
            Err(ChainError::UnknownBlock(_)) => {
                return Err(VerifyError::UnknownParent {
                    number,
                    parent: parent_hash,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let timestamp = block.header.timestamp;
        if timestamp <= parent.header.timestamp {
            return Err(VerifyError::Invalid(format!(
                "block {number}: timestamp {timestamp} is not after its parent's {}",
                parent.header.timestamp
            )));
        }
        let at_ms = timestamp.saturating_mul(1000);
        if at_ms > now_ms.saturating_add(self.max_future_ms) {
            return Err(VerifyError::Future {
                number,
                ahead_ms: at_ms - now_ms,
                wait_ms: at_ms - now_ms - self.max_future_ms,
            });
        }
        let finalized = view.finalized();
        let (mut executed, calls) =
            replay_block_calls(&self.executor, view, &parent, &block, self.models.clone())?;
        let changes = std::mem::take(&mut executed.changes);
        let tries = self.root_on(&path, finalized, &changes)?;
        let root = tries.root();
        if root != block.header.state_root {
            return Err(VerifyError::Invalid(format!(
                "block {number}: state root {} in the header, {root} by replay",
                block.header.state_root
            )));
        }
        let sealed = executed.seal(root);
        if sealed.hash != block.hash {
            return Err(VerifyError::Invalid(format!(
                "block {number}: replayed header hashes to {}, the block's is {}",
                sealed.hash, block.hash
            )));
        }
        if let Some(check) = self.results.as_ref().filter(|_| check_results) {
            match check.check(&block.hash, &calls, |key| block.sidecar.get(key).cloned()) {
                CheckOutcome::Agree { checked } => {
                    if checked > 0 {
                        debug!(target: "pipe::chain", number, checked, "results agree");
                    }
                }
                CheckOutcome::Disagree { key, reason } => {
                    return Err(VerifyError::Invalid(format!(
                        "block {number}: the result for request {key} is not the model's: {reason}"
                    )));
                }
                CheckOutcome::Unavailable { key, reason } => {
                    return Err(VerifyError::ResultPending {
                        number,
                        key,
                        reason,
                    });
                }
            }
        }
        // The replayed block carries the sidecar it used, which replay checked is the block's.
        let sealed = Arc::new(sealed);
        self.keep(PendingBlock {
            layer: Arc::new(ChangeLayer::new(number, sealed.hash, changes)),
            block: sealed.clone(),
            tries,
            stats: None,
        })?;
        debug!(target: "pipe::chain", number, hash = %sealed.hash, "verified");
        Ok(sealed)
    }

    /// Finalizes block `hash` and every unfinalized ancestor: commits each durably, in order,
    /// then delivers the chain event (pool, head, listeners) for each, then prunes the tree of
    /// everything that does not descend from it. The one path that writes a block.
    pub fn finalize(&self, hash: B256) -> Result<Arc<SealedBlock>, ChainError> {
        let _one = self.finalizing.lock();
        let head = self.head();
        if hash == head.hash {
            return Ok(head);
        }
        let path = self
            .tree
            .lock()
            .path(head.hash, hash)
            .ok_or(ChainError::UnknownBlock(hash))?;
        for pending in &path {
            let timer = std::time::Instant::now();
            let block = Arc::new(self.store.commit_prepared(
                pending.layer.changes(),
                &pending.tries,
                (*pending.block).clone(),
            )?);
            let stats = pending.stats.map(|mut s| {
                s.commit_us += timer.elapsed().as_micros() as u64;
                s
            });
            self.emit(&block, stats.as_ref());
        }
        let head = self.head();
        self.tree.lock().prune(&head);
        Ok(head)
    }

    /// The chain event of one finalized block.
    /// The block is durable by now, so nothing here may stop the event half-way: a failure to
    /// tidy the persisted pending set is logged (a restart re-validates what is left there).
    fn emit(&self, block: &Arc<SealedBlock>, stats: Option<&BuildStats>) {
        if let Some(pool) = &self.pool {
            // Included transactions leave the pool, and later nonces of the block's senders
            // that another transaction used are gone for good (the pool forgets them).
            pool.on_block(block.number(), &block.transactions);
            if !block.edits.is_empty() {
                // A dev state edit moved nonces the pool counts from.
                pool.on_nonce_edits(&block.edits.nonces());
            }
        }
        for l in &self.listeners {
            l.on_finalized(block, stats);
        }
        // The head moves last: whoever sees it (RPC, subscriptions, a driver) sees the pool
        // and PIPE already at this block, never a new head with the previous block's statuses.
        self.head.send_replace(block.clone());
        if let Some(stats) = stats {
            let mut history = self.history.lock();
            history.push_back((block.number(), *stats));
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        if block.transactions.is_empty() {
            debug!(target: "pipe::chain", number = block.number(), "finalized empty block");
        } else {
            info!(
                target: "pipe::chain",
                number = block.number(),
                hash = %block.hash,
                txs = block.transactions.len(),
                gas_used = block.header.gas_used,
                "finalized block"
            );
        }
    }

    /// Verifies then finalizes `block`: what a follower and `pipe replay` do with each block
    /// they did not build.
    pub fn import(&self, block: SealedBlock, now_ms: u64) -> Result<Arc<SealedBlock>, VerifyError> {
        let number = block.number();
        let verified = self.verify(block, now_ms)?;
        let head = self.finalize(verified.hash)?;
        if head.hash != verified.hash {
            warn!(target: "pipe::chain", number, "finalized head is not the imported block");
        }
        Ok(verified)
    }
}
