//! The payload job: one block from the pool's best transactions.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use alloy_primitives::B256;
use pipe_executor::{BlockAttributes, ExecutedBlock, Executor, InferenceCall, TxRejected};
use pipe_mempool::{Pool, PoolTx};
use pipe_primitives::Clock;
use pipe_storage::StateView;
use tracing::debug;

use crate::InferenceGate;

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
    /// Skipped because an unfinalized ancestor of the block already included them.
    pub already_included: usize,
    /// Distinct inference results the block used.
    pub results: usize,
    /// The deadline stopped the build with transactions still waiting.
    pub hit_deadline: bool,
    /// Milliseconds spent executing, on the builder's clock.
    pub build_ms: u64,
    /// Microseconds from the start to the executed block (transactions, receipts, roots but
    /// the state root), measured on the machine's monotonic clock: where a builder that
    /// waited for inference would show it.
    pub execute_us: u64,
    /// Microseconds from the executed block to its durable commit: the state root (computed
    /// when proposed, without writing) and the commit at finalization. Filled by the chain.
    /// Its cost follows the machine's memory and disk, not the transactions' models.
    pub commit_us: u64,
}

/// What the payload job made of the pool: an executed block (no state root yet, nothing
/// committed), and what it learned about transactions it left out. Nothing here has been
/// acted on: the caller (a driver) decides whether a left-out transaction leaves the pool or
/// goes back to PIPE, so a proposal that is never finalized changes nothing.
#[derive(Debug)]
pub struct Payload {
    pub executed: ExecutedBlock,
    pub stats: BuildStats,
    /// Transactions invalid against the parent state (bad nonce, no funds...), with the reason.
    pub invalid: Vec<(B256, String)>,
    /// Transactions that asked for an inference result the gate did not have (stale), with the
    /// request.
    pub stale: Vec<(Arc<PoolTx>, InferenceCall)>,
}

/// The payload job: executes the pool's best transactions on a parent state. It owns nothing
/// but its seams (pool, executor, clock, PIPE's gate) and writes nowhere.
#[derive(Clone)]
pub struct PayloadBuilder {
    pool: Arc<Pool>,
    executor: Executor,
    clock: Arc<dyn Clock>,
    /// PIPE; `None` runs inference inline.
    gate: Option<Arc<dyn InferenceGate>>,
}

impl std::fmt::Debug for PayloadBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadBuilder").finish_non_exhaustive()
    }
}

impl PayloadBuilder {
    pub fn new(pool: Arc<Pool>, executor: Executor, clock: Arc<dyn Clock>) -> Self {
        Self {
            pool,
            executor,
            clock,
            gate: None,
        }
    }

    /// Builds under PIPE: only ready transactions, inference from the gate's results.
    pub fn with_gate(mut self, gate: Arc<dyn InferenceGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    pub fn gate(&self) -> Option<&Arc<dyn InferenceGate>> {
        self.gate.as_ref()
    }

    /// Executes the best transactions on `parent` (the parent's post-state, finalized or an
    /// overlay of unfinalized blocks) into a block with `attrs`, until the pool runs dry, the
    /// block is full, `deadline_ms` passes on the builder's clock or `cancel` is set. Never
    /// waits for anything but execution.
    pub fn build(
        &self,
        parent: StateView,
        attrs: BlockAttributes,
        deadline_ms: u64,
        cancel: &AtomicBool,
    ) -> Result<Payload, BuildError> {
        let started = self.clock.now_ms();
        // Phase times for metrics and benchmarks only; nothing decides on them.
        let timer = std::time::Instant::now();
        let base_fee = attrs.base_fee;
        let parent = Arc::new(parent);
        // On an unfinalized parent the pool still holds what the parent's ancestors included
        // (it forgets transactions at finalization): those are skipped, not invalid.
        let overlay = parent.head != parent.finalized();
        let mut block = match &self.gate {
            Some(gate) => {
                self.executor
                    .build_block_with(parent.clone(), attrs, Some(gate.results()))?
            }
            None => self.executor.build_block(parent.clone(), attrs)?,
        };
        let mut stats = BuildStats::default();
        let mut invalid = Vec::new();
        let mut stale = Vec::new();
        let mut best = self.pool.best_transactions(base_fee);
        while let Some(tx) = best.next() {
            if cancel.load(Ordering::Relaxed) {
                return Err(BuildError::Aborted("cancelled".into()));
            }
            if self.clock.now_ms() >= deadline_ms {
                stats.hit_deadline = true;
                break;
            }
            if overlay
                && parent
                    .account(&tx.sender())?
                    .is_some_and(|a| tx.nonce() < a.nonce)
            {
                stats.already_included += 1;
                continue;
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
                    stale.push((tx.clone(), *call));
                }
                Err(TxRejected::BlockFull { .. }) => {
                    stats.skipped_full += 1;
                    best.mark_invalid(&tx);
                    if block.gas_used() + 21_000 > block.attributes().gas_limit {
                        break;
                    }
                }
                Err(TxRejected::Invalid { hash, reason }) => {
                    debug!(target: "pipe::builder", %hash, %reason, "invalid transaction left out");
                    stats.invalid += 1;
                    best.mark_invalid(&tx);
                    invalid.push((hash, reason));
                }
                Err(TxRejected::Internal(e)) => return Err(BuildError::Aborted(e)),
            }
        }
        let executed = block.finish()?;
        stats.execute_us = timer.elapsed().as_micros() as u64;
        stats.results = executed.sidecar.len();
        stats.build_ms = self.clock.now_ms().saturating_sub(started);
        Ok(Payload {
            executed,
            stats,
            invalid,
            stale,
        })
    }
}
