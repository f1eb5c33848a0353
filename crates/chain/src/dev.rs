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
    /// Only when asked ([`DevSealer::seal`]: `evm_mine`), like anvil with automine off.
    Manual,
}

/// The timestamp a block sealed on request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealAt {
    /// The dev clock (the node's clock plus the offset, or a set next timestamp).
    Clock,
    /// This one (`evm_mine(timestamp)`); later blocks go on from it.
    Exactly(u64),
    /// This many seconds after the parent's (`anvil_mine`'s interval); later blocks go on
    /// from it.
    AfterParent(u64),
}

/// Largest timestamp or time step the controls take (about 8 900 years in seconds): far past
/// any use, and small enough that no arithmetic on it, in seconds or milliseconds, overflows.
pub const MAX_DEV_SECONDS: u64 = 1 << 38;

/// The dev chain's clock as `evm_increaseTime` and `evm_setNextBlockTimestamp` leave it. A
/// block's timestamp is a header field that replay only checks to be after its parent's, so
/// moving it keeps the chain replayable; it never goes back.
#[derive(Clone, Copy, Debug, Default)]
struct DevTime {
    /// Seconds added to the node's clock.
    offset_s: i64,
    /// The next block's timestamp, once; later blocks go on from it.
    next: Option<u64>,
}

/// Proposes and finalizes the dev chain's blocks on its schedule until shutdown.
pub struct DevSealer {
    chain: Arc<Chain>,
    builder: PayloadBuilder,
    pool: Arc<Pool>,
    clock: Arc<dyn Clock>,
    mode: parking_lot::Mutex<SealMode>,
    /// Wakes the slot loop when the mode changes.
    mode_changed: tokio::sync::Notify,
    time: parking_lot::Mutex<DevTime>,
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
    /// `evm_snapshot`s: id and the head block when taken, oldest first; and the next id.
    snapshots: parking_lot::Mutex<(Vec<(u64, u64)>, u64)>,
}

/// Most snapshots kept (the oldest go first): each is two numbers, but a test suite that
/// never reverts should not grow the node without bound.
pub const MAX_SNAPSHOTS: usize = 10_000;

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
            .field("mode", &self.mode())
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
            mode: parking_lot::Mutex::new(mode),
            mode_changed: tokio::sync::Notify::new(),
            time: Default::default(),
            beneficiary: Address::ZERO,
            start_ms,
            sealing: parking_lot::Mutex::new(()),
            inline_stale: Default::default(),
            snapshots: Default::default(),
        }
    }

    /// When it seals now.
    pub fn mode(&self) -> SealMode {
        *self.mode.lock()
    }

    /// Seals by `mode` from now on (`anvil_setAutomine`, `anvil_setIntervalMining`). Taken
    /// under the seal lock: when this returns, a seal under the old mode has ended and none
    /// starts under it any more, so a transaction sent after switching automine off is not
    /// mined by the loop.
    pub fn set_mode(&self, mode: SealMode) {
        let _one = self.sealing.lock();
        *self.mode.lock() = mode;
        self.mode_changed.notify_one();
    }

    /// Moves the chain's clock forward by `seconds` (`evm_increaseTime`, at most
    /// [`MAX_DEV_SECONDS`] a call); the total offset.
    pub fn increase_time(&self, seconds: u64) -> i64 {
        let mut time = self.time.lock();
        time.offset_s = time
            .offset_s
            .saturating_add(seconds.min(MAX_DEV_SECONDS) as i64);
        time.offset_s
    }

    /// The head block's timestamp.
    pub fn head_timestamp(&self) -> u64 {
        self.chain.head().header.timestamp
    }

    /// The next block's timestamp (`evm_setNextBlockTimestamp`); refused unless it is after
    /// the head's, since timestamps only go forward.
    pub fn set_next_timestamp(&self, timestamp: u64) -> Result<(), String> {
        if timestamp > MAX_DEV_SECONDS {
            return Err(format!("timestamp {timestamp} is past {MAX_DEV_SECONDS}"));
        }
        let head = self.chain.head().header.timestamp;
        if timestamp <= head {
            return Err(format!(
                "timestamp {timestamp} is not after the head block's timestamp {head}"
            ));
        }
        self.time.lock().next = Some(timestamp);
        Ok(())
    }

    /// The timestamp of a block sealed now on `parent`: the set one if any (and the clock
    /// moved so later blocks go on from it), else the clock plus the offset; always after the
    /// parent's.
    fn next_timestamp(&self, parent: u64, at: SealAt) -> u64 {
        let now_s = (self.clock.now_ms() / 1000) as i64;
        let mut time = self.time.lock();
        let chosen = match at {
            SealAt::Exactly(t) => Some(t.min(MAX_DEV_SECONDS)),
            SealAt::AfterParent(step) => Some(parent.saturating_add(step.min(MAX_DEV_SECONDS))),
            SealAt::Clock => time.next.take(),
        };
        let t = match chosen {
            Some(t) => {
                time.offset_s = t as i64 - now_s;
                t
            }
            None => now_s.saturating_add(time.offset_s).max(0) as u64,
        };
        t.max(parent + 1)
    }

    /// An edit block's timestamp: the dev clock (never before one second after the parent),
    /// or, when a timestamp is set for the next block (`evm_setNextBlockTimestamp`), the
    /// earliest the chain allows, leaving the set one to the next mined block.
    fn edit_timestamp(&self, parent: u64) -> u64 {
        let time = self.time.lock();
        let earliest = parent.saturating_add(1);
        if time.next.is_some() {
            return earliest;
        }
        let now_s = (self.clock.now_ms() / 1000) as i64;
        (now_s.saturating_add(time.offset_s).max(0) as u64).max(earliest)
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
        self.seal_at(deadline_ms, SealAt::Clock)
    }

    /// [`DevSealer::seal`] with the block's timestamp chosen by `at` (under the seal lock, so
    /// no other seal takes the chosen time).
    pub fn seal_at(&self, deadline_ms: u64, at: SealAt) -> Result<Sealed, ChainError> {
        let _one = self.sealing.lock();
        self.seal_locked(deadline_ms, at)
    }

    /// Seals a block that applies `edits` and includes no transaction, whatever the mode:
    /// an edit takes effect when the call returns, as anvil's do, and is committed like any
    /// block (see [`pipe_primitives::edits`]).
    pub fn edit(&self, edits: pipe_primitives::StateEdits) -> Result<Sealed, ChainError> {
        let _one = self.sealing.lock();
        self.edit_locked(edits)
    }

    /// `evm_snapshot`: remembers the head; its id.
    pub fn snapshot(&self) -> u64 {
        let _one = self.sealing.lock();
        let head = self.chain.head().number();
        let mut s = self.snapshots.lock();
        let id = s.1;
        s.1 += 1;
        s.0.push((id, head));
        if s.0.len() > MAX_SNAPSHOTS {
            s.0.remove(0);
        }
        id
    }

    /// `evm_revert`: puts the state back as it was when snapshot `id` was taken, by sealing a
    /// block of edits ([`pipe_storage::Store::restore_edits`]; the chain only grows, so it
    /// stays replayable). The system contracts that record the chain's history (EIP-2935,
    /// EIP-4788) are not put back: the blocks they record are still in the chain. That snapshot and later ones are used up, as on anvil. `None`: no
    /// such snapshot; `Some(None)`: nothing had changed.
    pub fn revert(&self, id: u64) -> Result<Option<Option<Sealed>>, ChainError> {
        let _one = self.sealing.lock();
        let block = {
            let mut s = self.snapshots.lock();
            let Some(i) = s.0.iter().position(|(sid, _)| *sid == id) else {
                return Ok(None);
            };
            let block = s.0[i].1;
            s.0.truncate(i);
            block
        };
        self.restore_locked(block).map(Some)
    }

    /// `anvil_reset`: the state of genesis again (needs the archive from genesis, the dev
    /// chain's default), every snapshot forgotten.
    pub fn reset(&self) -> Result<Option<Sealed>, ChainError> {
        let _one = self.sealing.lock();
        self.snapshots.lock().0.clear();
        self.restore_locked(0)
    }

    fn restore_locked(&self, block: u64) -> Result<Option<Sealed>, ChainError> {
        // The chain's own history (EIP-2935 block hashes, EIP-4788 roots) goes on: the blocks
        // it records still exist.
        let edits = self
            .chain
            .store()
            .restore_edits(block, &pipe_primitives::CHAIN_HISTORY_CONTRACTS)?;
        if edits.is_empty() {
            return Ok(None);
        }
        let edits = pipe_primitives::StateEdits::new(edits)
            .map_err(|e| ChainError::Exec(pipe_executor::ExecError::Block(e.to_string())))?;
        self.edit_locked(edits).map(Some)
    }

    fn edit_locked(&self, edits: pipe_primitives::StateEdits) -> Result<Sealed, ChainError> {
        let parent = self.chain.head();
        let chosen = ProposeAttributes {
            timestamp: self.edit_timestamp(parent.header.timestamp),
            beneficiary: self.beneficiary,
        };
        let proposal = self.chain.propose_edits(parent.hash, chosen, edits)?;
        let block = self.chain.finalize(proposal.block.hash)?;
        Ok(Sealed {
            block,
            stats: proposal.stats,
        })
    }

    /// The slot loop's seal: only if the mode is still `expected` (checked under the seal
    /// lock, which [`DevSealer::set_mode`] takes too).
    fn seal_scheduled(
        &self,
        deadline_ms: u64,
        expected: SealMode,
    ) -> Option<Result<Sealed, ChainError>> {
        let _one = self.sealing.lock();
        (self.mode() == expected).then(|| self.seal_locked(deadline_ms, SealAt::Clock))
    }

    fn seal_locked(&self, deadline_ms: u64, at: SealAt) -> Result<Sealed, ChainError> {
        let parent = self.chain.head();
        let chosen = ProposeAttributes {
            timestamp: self.next_timestamp(parent.header.timestamp, at),
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
        let mut mode = self.mode();
        // After a block that included nothing (everything ready was stale or blocked), wait
        // for a change before building again instead of sealing empty blocks in a loop.
        let mut last_empty = false;
        loop {
            let now_mode = self.mode();
            if now_mode != mode {
                // A new schedule counts from now.
                mode = now_mode;
                next_slot = self.clock.now_ms();
            }
            let budget_ms = match mode {
                SealMode::Manual => {
                    tokio::select! {
                        biased;
                        _ = self.mode_changed.notified() => continue,
                        _ = shutdown.changed() => return,
                    }
                }
                SealMode::Interval(every) => {
                    next_slot = next_slot.saturating_add(every.as_millis() as u64);
                    tokio::select! {
                        biased;
                        _ = self.mode_changed.notified() => {
                            // This slot did not come: the loop counts it again (or anew,
                            // under a new mode).
                            next_slot = next_slot.saturating_sub(every.as_millis() as u64);
                            continue;
                        }
                        _ = self.clock.sleep_until(next_slot) => {}
                        _ = shutdown.changed() => return,
                    }
                    (every.as_millis() as f64 * BUILD_SHARE) as u64
                }
                SealMode::OnDemand { min_gap } => {
                    let mut must_wait = last_empty;
                    let mut changed = false;
                    while must_wait || !self.has_ready() {
                        // After an empty block, also try again after a while: what was ready
                        // but not includable (a fee cap below the base fee) may be now.
                        let retry = must_wait;
                        must_wait = false;
                        let recheck = self.clock.now_ms() + EMPTY_RETRY_MS;
                        tokio::select! {
                            biased;
                            _ = self.mode_changed.notified() => { changed = true; break }
                            _ = self.changed() => {}
                            _ = self.clock.sleep_until(recheck), if retry => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                    if changed {
                        continue;
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
            match tasks
                .blocking(move || sealer.seal_scheduled(deadline, mode))
                .await
            {
                // The mode changed meanwhile: the next round follows the new one.
                Ok(None) => {}
                Ok(Some(Ok(sealed))) => last_empty = sealed.block.transactions.is_empty(),
                Ok(Some(Err(e))) => {
                    error!(target: "pipe::builder", error = %e, "block production failed")
                }
                Err(e) => error!(target: "pipe::builder", error = %e, "block production panicked"),
            }
        }
    }
}
