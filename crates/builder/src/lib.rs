//! Block production.
//!
//! - [`BlockProducer`] is the seam consensus drives: "build and commit the next block by this
//!   deadline". The dev chain drives it from [`DevSealer`] on a slot timer or on demand; a BFT
//!   engine will drive the same trait (propose = produce, then validators replay).
//! - [`PayloadBuilder`] is the producer: it takes the pool's best transactions in priority
//!   order, executes each on top of the block so far, checks the deadline before every
//!   transaction, and returns a [`BuildOutcome`]. It never waits on anything but execution.
//! - Every time source is the [`pipe_primitives::Clock`], so slot timing and deadlines are
//!   tested on a manual clock.
//! - [`InferenceGate`] is how PIPE steers the builder: only transactions it calls ready are
//!   built, inference is answered from its results (never computed here, so the builder never
//!   waits for a model), a transaction that asks for a result the gate lacks is left out as
//!   stale and handed back, and every sealed block is reported. Without a gate the builder
//!   runs inference inline (the baseline mode).
//! - [`replay`] re-executes a block from the block alone (its sidecar answers inference), as a
//!   follower or validator does.

mod payload;
pub mod replay;
mod sealer;

use std::sync::Arc;

use alloy_primitives::B256;
use pipe_executor::{InferenceCall, InferenceProvider};
use pipe_mempool::PoolTx;
use pipe_primitives::SealedBlock;

pub use payload::{BuildError, BuildOutcome, BuildStats, PayloadBuilder};
pub use sealer::{DevSealer, SealMode};

/// Builds and commits the next block. Implementations must return by `deadline_ms` (on the
/// producer's clock), with whatever fitted.
pub trait BlockProducer: Send + Sync + 'static {
    fn produce(&self, deadline_ms: u64) -> Result<BuildOutcome, BuildError>;
}

/// PIPE's hold on block building. Implemented by the inference mempool; a test double decides
/// readiness and results from a table.
pub trait InferenceGate: Send + Sync + 'static {
    /// Whether `tx` may go into a block: its simulation ran through with every result known.
    fn is_ready(&self, tx: &PoolTx) -> bool;
    /// What answers the precompile while building: results already computed, nothing else.
    fn results(&self) -> Arc<dyn InferenceProvider>;
    /// `tx` asked for `call`, which has no result: it was left out of the block.
    fn on_stale(&self, tx: &PoolTx, call: &InferenceCall);
    /// A block was sealed and committed (the pool has already dropped its transactions).
    fn on_sealed(&self, block: &Arc<SealedBlock>, stats: &BuildStats);
    /// Transactions the builder dropped from the pool as invalid.
    fn on_dropped(&self, hashes: &[B256], reason: &str);
    /// Whether any transaction is ready (the on-demand sealer's trigger).
    fn has_ready(&self) -> bool;
    /// Resolves after a transaction may have become ready.
    fn ready_changed(&self)
    -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}
