//! The dev chain's "consensus": seal a block every slot, or as soon as transactions arrive.

use std::{sync::Arc, time::Duration};

use pipe_mempool::Pool;
use pipe_primitives::Clock;
use tokio::sync::watch;
use tracing::error;

use crate::{BlockProducer, BuildOutcome, InferenceGate};

/// When the dev chain seals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealMode {
    /// A block every interval, empty or not (like `anvil --block-time`).
    Interval(Duration),
    /// A block as soon as the pool has transactions (like anvil's automine), at most one per
    /// `min_gap` so a stream of transactions batches into blocks.
    OnDemand { min_gap: Duration },
}

/// Drives a [`BlockProducer`] on the dev chain's schedule until shutdown.
pub struct DevSealer {
    producer: Arc<dyn BlockProducer>,
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    mode: SealMode,
    /// Slots count from when the sealer was created, not from when its task first runs, so
    /// slot times do not depend on task scheduling.
    start_ms: u64,
    /// Under PIPE, readiness is the gate's, not the pool's.
    gate: Option<Arc<dyn InferenceGate>>,
}

impl std::fmt::Debug for DevSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevSealer")
            .field("mode", &self.mode)
            .finish()
    }
}

/// How much of a slot the builder may use: it must leave time to commit and publish.
const BUILD_SHARE: f64 = 0.5;

impl DevSealer {
    pub fn new(
        producer: Arc<dyn BlockProducer>,
        pool: Arc<Pool>,
        clock: Arc<dyn Clock>,
        mode: SealMode,
    ) -> Self {
        let start_ms = clock.now_ms();
        Self {
            producer,
            pool,
            clock,
            mode,
            start_ms,
            gate: None,
        }
    }

    /// On demand, seal when the gate has ready transactions.
    pub fn with_gate(mut self, gate: Arc<dyn InferenceGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    fn has_ready(&self) -> bool {
        match &self.gate {
            Some(g) => g.has_ready(),
            None => self.pool.has_ready(),
        }
    }

    /// Resolves when something may have changed readiness: an arrival, or the gate's signal.
    async fn changed(&self) {
        match &self.gate {
            Some(g) => tokio::select! {
                _ = self.pool.subscribe() => {}
                _ = g.ready_changed() => {}
            },
            None => self.pool.subscribe().await,
        }
    }

    /// Runs until `shutdown` flips to true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
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
                        must_wait = false;
                        tokio::select! {
                            _ = self.changed() => {}
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
            let producer = self.producer.clone();
            // Execution is CPU work: keep it off the async workers.
            match tokio::task::spawn_blocking(move || producer.produce(deadline)).await {
                Ok(Ok(BuildOutcome::Sealed { block, .. })) => {
                    last_empty = block.transactions.is_empty();
                }
                Ok(Err(e)) => {
                    error!(target: "pipe::builder", error = %e, "block production failed")
                }
                Err(e) => error!(target: "pipe::builder", error = %e, "block production panicked"),
            }
        }
    }
}
