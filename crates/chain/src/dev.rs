//! The dev chain's driver: at each slot (or as soon as transactions are ready) it proposes a
//! block on the finalized head and finalizes it at once. There is one node, so its word is
//! final; this is the whole of the dev chain's "consensus".

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use alloy_primitives::{Address, B256};
use pipe_builder::{BuildStats, InferenceGate, PayloadBuilder};
use pipe_mempool::Pool;
use pipe_primitives::{Clock, SealedBlock, Tasks};
use tokio::sync::watch;
use tracing::{error, warn};

use crate::{Chain, ChainError, ProposeAttributes};

/// When the dev chain seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    /// A block every interval, empty or not (like `anvil --block-time`).
    Interval(Duration),
    /// A block as soon as the pool has transactions (like anvil's automine), at most one per
    /// `min_gap` so a stream of transactions batches into blocks.
    OnDemand { min_gap: Duration },
}

/// Proposes and finalizes the dev chain's blocks on its schedule until shutdown.
pub struct DevSealer {
    chain: Arc<Chain>,
    builder: PayloadBuilder,
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    mode: SealMode,
    beneficiary: Address,
    /// Slots count from when the sealer was created, not from when its task first runs, so
    /// slot times do not depend on task scheduling.
    start_ms: u64,
    /// One seal at a time (the slot loop and a benchmark may both call [`DevSealer::seal`]):
    /// what a proposal left out is acted on only for the block that is finalized.
    sealing: parking_lot::Mutex<()>,
    /// Inline mode: blocks in a row each transaction was left out of for want of a model
    /// (PIPE handles stale transactions itself).
    inline_stale: parking_lot::Mutex<std::collections::HashMap<B256, u32>>,
}

/// Inline mode: blocks a transaction may be left out of because its model cannot be loaded
/// before it is dropped with the reason.
pub const MAX_INLINE_STALE: u32 = 16;
/// On demand: after a block that included nothing although transactions were ready (their
/// fee cap below the base fee, say), how long to wait before trying again without a new
/// arrival. Each empty block lowers the base fee.
const EMPTY_RETRY_MS: u64 = 1_000;

impl std::fmt::Debug for DevSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSealer")
            .field("mode", &self.mode)
            .finish()
    }
}

/// How much of a slot the builder may use: it must leave time to commit and publish.
const BUILD_SHARE: f64 = 0.5;

/// A block the dev chain sealed.
#[derive(Debug)]
pub struct Sealed {
    pub block: Arc<SealedBlock>,
    pub stats: BuildStats,
}

impl DevSealer {
    /// Seals with `builder` (whose gate, under PIPE, decides readiness) on `chain`.
    pub fn new(
        chain: Arc<Chain>,
        builder: PayloadBuilder,
        pool: Arc<Pool>,
        clock: Arc<dyn Clock>,
        mode: SealMode,
    ) -> Self {
        let start_ms = clock.now_ms();
        Self {
            chain,
            builder,
            pool,
            clock,
            mode,
            beneficiary: Address::ZERO,
            start_ms,
            sealing: parking_lot::Mutex::new(()),
            inline_stale: Default::default(),
        }
    }

    fn gate(&self) -> Option<&Arc<dyn InferenceGate>> {
        self.builder.gate()
    }

    fn has_ready(&self) -> bool {
        match self.gate() {
            Some(g) => g.has_ready(),
            None => self.pool.has_ready(),
        }
    }

    /// Resolves when something may have changed readiness: an arrival, or the gate's signal.
    async fn changed(&self) {
        match self.gate() {
            Some(g) => tokio::select! {
                _ = self.pool.subscribe() => {}
                _ = g.ready_changed() => {}
            },
            None => self.pool.subscribe().await,
        }
    }

    /// One block now: proposed on the finalized head with what is ready by `deadline_ms`,
    /// then finalized. What the payload job left out is acted on once the block is certain to
    /// be kept: stale transactions go back to PIPE, invalid ones leave the pool with their
    /// reason (before the chain event, so PIPE hears the reason rather than "gone").
    pub fn seal(&self, deadline_ms: u64) -> Result<Sealed, ChainError> {
        let _one = self.sealing.lock();
        let parent = self.chain.head();
        let chosen = ProposeAttributes {
            timestamp: (self.clock.now_ms() / 1000).max(parent.header.timestamp + 1),
            beneficiary: self.beneficiary,
        };
        let never = AtomicBool::new(false);
        let proposal =
            self.chain
                .propose(&self.builder, parent.hash, chosen, deadline_ms, &never)?;
        if let Some(gate) = self.gate() {
            for (tx, call) in &proposal.stale {
                gate.on_stale(tx, call);
            }
        } else {
            // Inline: a model that could not be loaded. Tried again next block, for a while.
            let mut counts = self.inline_stale.lock();
            let stale: std::collections::HashSet<B256> =
                proposal.stale.iter().map(|(tx, _)| tx.hash()).collect();
            counts.retain(|h, _| stale.contains(h));
            for (tx, call) in &proposal.stale {
                let n = counts.entry(tx.hash()).or_default();
                *n += 1;
                if *n >= MAX_INLINE_STALE {
                    let reason = format!(
                        "model {} could not be loaded for {MAX_INLINE_STALE} blocks",
                        call.model.id
                    );
                    warn!(target: "pipe::builder", hash = %tx.hash(), %reason, "dropping transaction");
                    self.pool.remove(&tx.hash(), &reason);
                    counts.remove(&tx.hash());
                }
            }
        }
        // The pool tells PIPE (and forgets them) through its events.
        for (hash, reason) in &proposal.invalid {
            warn!(target: "pipe::builder", %hash, %reason, "dropping invalid transaction");
            self.pool.remove(hash, reason);
        }
        let timer = std::time::Instant::now();
        let block = self.chain.finalize(proposal.block.hash)?;
        let mut stats = proposal.stats;
        stats.commit_us += timer.elapsed().as_micros() as u64;
        Ok(Sealed { block, stats })
    }

    /// Runs until `shutdown` flips to true.
    /// Seals on its schedule until `shutdown` flips; each seal runs as blocking work of
    /// `tasks`.
    pub async fn run(self: Arc<Self>, tasks: Tasks, mut shutdown: watch::Receiver<bool>) {
        let mut next_slot = self.start_ms;
        // After a block that included nothing (everything ready was stale or blocked), wait
        // for a change before building again instead of sealing empty blocks in a loop.
        let mut last_empty = false;
        loop {
            let budget_ms = match self.mode {
                SealMode::Interval(every) => {
                    next_slot += every.as_millis() as u64;
                    tokio::select! {
                        _ = self.clock.sleep_until(next_slot) => {}
                        _ = shutdown.changed() => return,
                    }
                    (every.as_millis() as f64 * BUILD_SHARE) as u64
                }
                SealMode::OnDemand { min_gap } => {
                    let mut must_wait = last_empty;
                    while must_wait || !self.has_ready() {
                        // After an empty block, also try again after a while: what was ready
                        // but not includable (a fee cap below the base fee) may be now.
                        let retry = must_wait;
                        must_wait = false;
                        let recheck = self.clock.now_ms() + EMPTY_RETRY_MS;
                        tokio::select! {
                            _ = self.changed() => {}
                            _ = self.clock.sleep_until(recheck), if retry => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                    tokio::select! {
                        _ = self.clock.sleep_until(next_slot) => {}
                        _ = shutdown.changed() => return,
                    }
                    next_slot = self.clock.now_ms() + min_gap.as_millis() as u64;
                    500
                }
            };
            if *shutdown.borrow() {
                return;
            }
            let deadline = self.clock.now_ms() + budget_ms;
            let sealer = self.clone();
            // Execution is CPU work: keep it off the async workers.
            match tasks.blocking(move || sealer.seal(deadline)).await {
                Ok(Ok(sealed)) => last_empty = sealed.block.transactions.is_empty(),
                Ok(Err(e)) => {
                    error!(target: "pipe::builder", error = %e, "block production failed")
                }
                Err(e) => error!(target: "pipe::builder", error = %e, "block production panicked"),
            }
        }
    }
}
