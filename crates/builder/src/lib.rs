//! The payload job and block replay: the two ways a block is executed.
//!
//! - [`PayloadBuilder`] is the payload job: it takes the pool's best transactions in priority
//!   order and executes each on top of a parent state (finalized, or an overlay of unfinalized
//!   blocks), checking the deadline and a cancel flag before every transaction. It returns a
//!   [`Payload`]: the executed block and what it learned about the transactions it left out.
//!   It commits nothing and changes nothing: the chain (`pipe-chain`) turns a payload into a
//!   proposal, and a driver decides what to finalize and what to do with the left-out ones.
//! - Every time source is the [`pipe_primitives::Clock`], so deadlines are tested on a manual
//!   clock.
//! - [`InferenceGate`] is how PIPE steers the builder: only transactions it calls ready are
//!   built, inference is answered from its results (never computed here, so the builder never
//!   waits for a model), a transaction that asks for a result the gate lacks is reported as
//!   stale, and every finalized block is reported. Without a gate the builder runs inference
//!   inline (the baseline mode).
//! - [`replay`] re-executes a block from the block alone (its sidecar answers inference), as a
//!   validator or follower does before it accepts a block.

mod payload;
pub mod replay;

use std::sync::Arc;

use pipe_executor::{InferenceCall, InferenceProvider};
use pipe_mempool::PoolTx;
use pipe_primitives::SealedBlock;

pub use payload::{BuildError, BuildStats, Payload, PayloadBuilder};

/// PIPE's hold on block building. Implemented by the inference mempool; a test double decides
/// readiness and results from a table.
pub trait InferenceGate: Send + Sync + 'static {
    /// Whether `tx` may go into a block: its simulation ran through with every result known.
    fn is_ready(&self, tx: &PoolTx) -> bool;
    /// What answers the precompile while building: results already computed, nothing else.
    fn results(&self) -> Arc<dyn InferenceProvider>;
    /// `tx` asked for `call`, which has no result: it was left out of a block that is being
    /// kept.
    fn on_stale(&self, tx: &PoolTx, call: &InferenceCall);
    /// A block was finalized (the pool has already dropped its transactions), with the stats
    /// of its build when this node built it (all zero for a block verified from elsewhere).
    fn on_finalized(&self, block: &Arc<SealedBlock>, stats: &BuildStats);
    /// Whether any transaction is ready (the on-demand sealer's trigger).
    fn has_ready(&self) -> bool;
    /// Resolves after a transaction may have become ready.
    fn ready_changed(&self)
    -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}
