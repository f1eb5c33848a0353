//! PIPE, the Parallelized Inference Pre-Execution Engine: the inference mempool.
//!
//! # The flow
//! 1. **Tracking.** Every transaction the pool accepts is tracked from the pool's listener
//!    ([`pipe_mempool::Pool::listen`]); its sender is marked for discovery.
//! 2. **Discovery.** A pass simulates each marked sender's ready run (its consecutive nonces
//!    from the on-chain one) on the head state, in order, with the precompile answering only
//!    from the [`ResultCache`] ([`pipe_executor::Executor::simulate`]). A transaction that
//!    runs through is *ready*. At the first request without a result the simulation stops,
//!    nothing is kept, and the request is queued; the transaction *awaits inference*. Several
//!    and dependent requests take several rounds. A transaction may stop at most
//!    [`PipeConfig::max_simulations`] times at a request it had not made before, or it is
//!    rejected with the reason (re-runs that others cause do not count against it). Requests
//!    per transaction are bounded by the chain, in the precompile
//!    ([`pipe_executor::MAX_REQUESTS_PER_TX`]): the call past the bound reverts, so such a
//!    transaction is included as a revert that pays for the requests it made.
//! 3. **Dispatch.** Queued requests go to [`Worker`]s in priority order (the best effective
//!    tip among the waiting transactions, then arrival), each to the least loaded worker with
//!    a free slot. Equal keys are one request however many transactions wait for it. A run
//!    that times out (on the [`pipe_primitives::Clock`]), errors or disconnects is retried on
//!    another worker; a worker failing [`PipeConfig::worker_max_failures`] times in a row is
//!    benched for [`PipeConfig::worker_backoff_ms`]. A result wakes the waiting senders'
//!    discovery.
//! 4. **Building.** The builder ([`pipe_builder::PayloadBuilder`]) goes through
//!    [`pipe_builder::InferenceGate`], which [`Pipe`] implements: only ready transactions,
//!    inference answered from the cache, never computed. A transaction asking for a key the
//!    cache lacks (its input changed since it was simulated: *stale*) is left out, deferred
//!    with the reason, and its request dispatched at once. Keys are hashes of the request, so
//!    a result can never be the wrong one for the call that uses it.
//! 5. **After a block.** Included transactions end tracked as included; those the pool dropped
//!    end as rejected with the reason; results no live transaction needs expire after
//!    [`PipeConfig::result_ttl_blocks`].
//!
//! # Concurrency
//! One lock guards the tracker, requests and worker table, never across a simulation, a model
//! run or an await. Discovery runs on the blocking pool, one pass at a time. Dispatch is one
//! task that polls every running job itself (no task per job), so a test drives it completely
//! with a manual clock and scripted workers.

mod cache;
mod dispatch;
mod engine;
mod metrics;
mod worker;

#[cfg(feature = "test-utils")]
pub mod test_utils;

pub use cache::{CachedResults, ResultCache, ResultStore};
pub use dispatch::Priority;
pub use engine::{BLOCK_HISTORY, BlockCongestion, Pipe, PipeConfig, view};
pub use metrics::Metrics;
pub use worker::{Auditor, Need, Worker, WorkerError};
