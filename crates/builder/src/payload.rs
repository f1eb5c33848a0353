//! The payload job: one block from the pool's best transactions.

use std::sync::Arc;

use alloy_primitives::{Address, B256};
use pipe_executor::{BlockAttributes, Executor, TxRejected};
use pipe_mempool::Pool;
use pipe_primitives::{Clock, SealedBlock};
use pipe_storage::Store;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::{BlockProducer, InferenceGate};

/// Why a block could not be produced at all.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("storage: {0}")]
    Storage(#[from] pipe_storage::StoreError),
    #[error("execution: {0}")]
    Exec(#[from] pipe_executor::ExecError),
    #[error("aborted: {0}")]
    Aborted(String),
}

/// Counters of one build, for logs, metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildStats {
    /// Transactions considered (yielded by the pool).
    pub considered: usize,
    /// Left out because invalid against the state (dropped from the pool).
    pub invalid: usize,
    /// Left out because the block was full.
    pub skipped_full: usize,
    /// Skipped because PIPE has not made them ready (still awaiting inference).
    pub not_ready: usize,
    /// Left out because they asked for a result the block did not have (stale).
    pub stale: usize,
    /// Distinct inference results the block used.
    pub results: usize,
    /// The deadline stopped the build with transactions still waiting.
    pub hit_deadline: bool,
    /// Milliseconds spent executing and committing, on the producer's clock.
    pub build_ms: u64,
    /// Microseconds from the start to the executed block (transactions, receipts, roots but
    /// the state root), measured on the machine's monotonic clock: where a builder that
    /// waited for inference would show it.
    pub execute_us: u64,
    /// Microseconds committing it: applying the state changes, the state root, the durable
    /// write. Its cost follows the machine's memory and disk, not the transactions' models.
    pub commit_us: u64,
}

/// What a build produced.
#[derive(Debug)]
pub enum BuildOutcome {
    /// A block was sealed and committed.
    Sealed {
        block: Arc<SealedBlock>,
        stats: BuildStats,
    },
}

/// Builds blocks on the store's head from the pool.
pub struct PayloadBuilder {
    store: Arc<Store>,
    pool: Arc<Pool>,
    executor: Executor,
    clock: Arc<dyn Clock>,
    /// Fee recipient of produced blocks.
    beneficiary: Address,
    /// Published after every commit, so RPC subscribers and the sealer see the new head.
    head: watch::Sender<Arc<SealedBlock>>,
    /// PIPE; `None` runs inference inline.
    gate: Option<Arc<dyn InferenceGate>>,
    /// The last builds' numbers and stats, newest last, for benchmarks and tools.
    history: parking_lot::Mutex<std::collections::VecDeque<(u64, BuildStats)>>,
}

/// Builds remembered by [`PayloadBuilder::history`].
const HISTORY: usize = 4096;

impl std::fmt::Debug for PayloadBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadBuilder").finish_non_exhaustive()
    }
}

impl PayloadBuilder {
    pub fn new(
        store: Arc<Store>,
        pool: Arc<Pool>,
        executor: Executor,
        clock: Arc<dyn Clock>,
        head: watch::Sender<Arc<SealedBlock>>,
    ) -> Self {
        Self {
            store,
            pool,
            executor,
            clock,
            beneficiary: Address::ZERO,
            head,
            gate: None,
            history: Default::default(),
        }
    }

    /// Block numbers and stats of the most recent builds, oldest first.
    pub fn history(&self) -> Vec<(u64, BuildStats)> {
        self.history.lock().iter().copied().collect()
    }

    /// Builds under PIPE: only ready transactions, inference from the gate's results.
    pub fn with_gate(mut self, gate: Arc<dyn InferenceGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Attributes of the block after `parent`, at the producer's clock.
    pub fn next_attributes(&self, parent: &SealedBlock) -> BlockAttributes {
        self.executor
            .next_attributes(parent, self.clock.now_ms(), self.beneficiary)
    }

    fn build(&self, deadline_ms: u64) -> Result<BuildOutcome, BuildError> {
        let started = self.clock.now_ms();
        // Phase times for metrics and benchmarks only; nothing decides on them.
        let timer = std::time::Instant::now();
        let parent = self.head.borrow().clone();
        let attrs = self.next_attributes(&parent);
        let view = self.store.state()?;
        if view.head != parent.number() {
            return Err(BuildError::Aborted(format!(
                "store head {} is not the published head {}",
                view.head,
                parent.number()
            )));
        }
        let base_fee = attrs.base_fee;
        let mut block = match &self.gate {
            Some(gate) => self
                .executor
                .build_block_with(view, attrs, Some(gate.results()))?,
            None => self.executor.build_block(view, attrs)?,
        };
        let mut stats = BuildStats::default();
        let mut dropped: Vec<B256> = Vec::new();
        let mut best = self.pool.best_transactions(base_fee);
        while let Some(tx) = best.next() {
            if self.clock.now_ms() >= deadline_ms {
                stats.hit_deadline = true;
                break;
            }
            stats.considered += 1;
            if let Some(gate) = &self.gate
                && !gate.is_ready(&tx)
            {
                // Its sender's later transactions cannot go before it.
                stats.not_ready += 1;
                best.mark_invalid(&tx);
                continue;
            }
            match block.execute(tx.clone()) {
                Ok(_) => {}
                // A stale result, or one that failed attestation: both go back to PIPE.
                Err(
                    TxRejected::MissingResult { call, .. } | TxRejected::Unattested { call, .. },
                ) => {
                    stats.stale += 1;
                    best.mark_invalid(&tx);
                    if let Some(gate) = &self.gate {
                        gate.on_stale(&tx, &call);
                    }
                }
                Err(TxRejected::BlockFull { .. }) => {
                    stats.skipped_full += 1;
                    best.mark_invalid(&tx);
                    if block.gas_used() + 21_000 > block.attributes().gas_limit {
                        break;
                    }
                }
                Err(TxRejected::Invalid { hash, reason }) => {
                    warn!(target: "pipe::builder", %hash, %reason, "dropping invalid transaction");
                    stats.invalid += 1;
                    best.mark_invalid(&tx);
                    let removed = self.pool.remove_invalid(&hash);
                    if let Some(gate) = &self.gate {
                        gate.on_dropped(&removed, &reason);
                    }
                    dropped.extend(removed);
                }
                Err(TxRejected::Internal(e)) => return Err(BuildError::Aborted(e)),
            }
        }
        let mut executed = block.finish()?;
        stats.execute_us = timer.elapsed().as_micros() as u64;
        stats.results = executed.sidecar.len();
        let changes = std::mem::take(&mut executed.changes);
        let sealed = self
            .store
            .commit_block(&changes, |root| executed.seal(root))?;
        let sealed = Arc::new(sealed);
        stats.commit_us = (timer.elapsed().as_micros() as u64).saturating_sub(stats.execute_us);
        dropped.extend(self.pool.on_block(&sealed.transactions));
        if !dropped.is_empty() {
            self.store.remove_pending(&dropped)?;
        }
        stats.build_ms = self.clock.now_ms().saturating_sub(started);
        self.head.send_replace(sealed.clone());
        if let Some(gate) = &self.gate {
            gate.on_sealed(&sealed, &stats);
        }
        {
            let mut history = self.history.lock();
            history.push_back((sealed.number(), stats));
            while history.len() > HISTORY {
                history.pop_front();
            }
        }
        if sealed.transactions.is_empty() {
            debug!(target: "pipe::builder", number = sealed.number(), "sealed empty block");
        } else {
            info!(
                target: "pipe::builder",
                number = sealed.number(),
                hash = %sealed.hash,
                txs = sealed.transactions.len(),
                gas_used = sealed.header.gas_used,
                build_ms = stats.build_ms,
                "sealed block"
            );
        }
        Ok(BuildOutcome::Sealed {
            block: sealed,
            stats,
        })
    }
}

impl BlockProducer for PayloadBuilder {
    fn produce(&self, deadline_ms: u64) -> Result<BuildOutcome, BuildError> {
        self.build(deadline_ms)
    }
}
