//! The engine: PIPE's state and the tasks that move it, one file per piece of state.
//!
//! - [`tracker`]: what PIPE knows about each transaction (phase, requests, deferrals, caps)
//!   and the finished ones' statuses, under the one `State` lock, with the requests and the
//!   worker table. The lock is never held across a simulation, a model run or an await.
//! - this file: the [`Pipe`] handle, its configuration, the pool's events feeding the tracker,
//!   and the read side (statuses, metrics, per-block congestion).
//! - [`discovery`]: the discovery loop and pass (simulation, requests, rejection, expiry).
//! - [`jobs`]: the dispatch loop and the runs in flight on workers.
//! - [`gate`]: what the builder and the chain see ([`InferenceGate`]).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    sync::Arc,
};

use alloy_primitives::{Address, B256};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use parking_lot::Mutex;
use pipe_builder::{BuildStats, InferenceGate};
use pipe_executor::{Executor, InferenceCall, InferenceProvider, SimOutcome, attest};
use pipe_mempool::{Pool, PoolEvent, PoolListener, PoolTx, RemovalReason};
use pipe_primitives::{
    Clock, InferenceResult, ModelId, SealedBlock, StoredTx, Tasks,
    inference::{InferenceMode, ModelKind},
    status::{Lifecycle, RequestState, RequestStatus, TxStatus},
};
use pipe_storage::{StateView, Store};
use tokio::sync::{Notify, watch};
use tracing::{debug, error, info, warn};

use crate::{
    CachedResults, Metrics, Need, ResultCache, Worker, WorkerError,
    dispatch::{Priority, Requests, Retry, Workers},
    metrics::label,
};

mod discovery;
mod gate;
mod jobs;
mod tracker;
pub mod view;

use jobs::attested_now;
use tracker::*;

/// PIPE's limits and timings.
#[derive(Clone, Debug)]
pub struct PipeConfig {
    /// Most discovery rounds that may stop at one transaction at a request it had not made
    /// before. Simulations in which it ran through, or stopped again at a request still being
    /// computed (re-run on the way to its sender's later nonces, or after another sender's
    /// block), are not its doing and do not count: an honest transaction waiting for capacity
    /// ends only by expiry.
    pub max_simulations: u32,
    /// How long the dispatcher waits for a worker before retrying elsewhere.
    pub worker_timeout_ms: u64,
    /// Failures in a row after which a worker gets no work for `worker_backoff_ms`.
    pub worker_max_failures: u32,
    pub worker_backoff_ms: u64,
    /// Blocks a result stays cached after the last live transaction needing it is gone.
    pub result_ttl_blocks: u64,
    /// Final statuses (included, rejected) remembered for the status RPC.
    pub finished_capacity: usize,
    /// Blocks a transaction may wait for inclusion: one not included in the `tx_ttl_blocks`
    /// blocks after it arrived expires, with its sender's later transactions.
    pub tx_ttl_blocks: u64,
    /// Most live transactions with inference one sender may have (discovered, not yet
    /// included): past it the next one is rejected, so one sender cannot fill the queue.
    pub max_inference_txs_per_sender: usize,
    /// Most cost units of inference one sender's live transactions may have requested.
    pub max_inference_units_per_sender: u64,
    /// One VANILLA result in this many from an audited (remote) worker is checked by running
    /// the request on the node ([`crate::Auditor`]) before it is used; a worker whose result
    /// differs is quarantined and the request runs elsewhere. The sample is keyed by a secret
    /// salt, so a worker cannot tell which results are checked: a worker that forges every
    /// result gets on average `audit_one_in - 1` of them used before it is caught. 1 checks
    /// every result; 0 checks none.
    pub audit_one_in: u64,
    /// The sample's salt; `None` draws one at start (tests fix it to be repeatable).
    pub audit_seed: Option<u64>,
    /// Failed runs (timeouts, errors, unattested or forged results) after which a request is
    /// given up and the transactions waiting for it end, rejected with the reason, instead of
    /// waiting for their TTL. 0: never.
    pub max_attempts: u32,
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            max_simulations: 32,
            worker_timeout_ms: 30_000,
            worker_max_failures: 3,
            worker_backoff_ms: 10_000,
            result_ttl_blocks: 64,
            finished_capacity: 100_000,
            tx_ttl_blocks: 64,
            max_inference_txs_per_sender: 64,
            max_inference_units_per_sender: 1_000_000,
            audit_one_in: 10,
            audit_seed: None,
            max_attempts: 6,
        }
    }
}

/// The inference mempool. Create with [`Pipe::new`], start its tasks with [`Pipe::spawn`],
/// and give it to the builder as its [`InferenceGate`].
pub struct Pipe {
    config: PipeConfig,
    pool: Arc<Pool>,
    store: Arc<Store>,
    executor: Executor,
    cache: Arc<ResultCache>,
    results: Arc<CachedResults>,
    clock: Arc<dyn Clock>,
    head: watch::Receiver<Arc<SealedBlock>>,
    state: Mutex<State>,
    /// Wakes discovery: new transactions, results in, stale transactions.
    discover: Notify,
    /// Wakes dispatch: new requests, failed runs.
    dispatch: Notify,
    /// Signals that a transaction became ready (the on-demand sealer waits on it).
    ready: Notify,
    /// The pool's events, in the pool's order: PIPE follows the pool through them.
    events: Arc<EventQueue>,
    pub metrics: Arc<Metrics>,
    /// Whether any worker signs TEE results (without one, TEE requests are rejected).
    tee_workers: bool,
    /// The kinds of model some worker runs (a request of another kind is rejected: no worker
    /// would ever be sent it). Workers say what they run once, when they connect.
    served_kinds: Vec<ModelKind>,
    /// Checks audited workers' results (see [`PipeConfig::audit_one_in`]).
    auditor: std::sync::OnceLock<Arc<dyn crate::Auditor>>,
    /// The audit sample's salt.
    audit_salt: u64,
    /// Where audits run: PIPE's tasks, known once spawned.
    tasks: std::sync::OnceLock<Tasks>,
    /// Deferrals and expiries of the last [`BLOCK_HISTORY`] blocks, for benchmarks and
    /// operators who want per-block numbers rather than the metrics' histograms.
    blocks: Mutex<VecDeque<BlockCongestion>>,
    /// Discovery passes under way: taken their senders from `dirty`, not yet done.
    discovering: std::sync::atomic::AtomicUsize,
}

/// The pool's events waiting for PIPE. The pool calls [`PoolListener::on_event`] under its
/// lock, so this only queues and wakes; PIPE applies the events at the top of each discovery
/// round and before it handles a finalized block, never calling the pool while it holds this.
///
/// It also holds the transactions PIPE has requested inference for, which the pool may not
/// let be replaced: the work is paid only when the transaction is included (as gas, even if
/// it reverts), so a replacement that does not use it would get it for free. They are
/// forgotten when they leave the pool. A set of its own, so the pool's check under its lock
/// never waits for PIPE's state (PIPE calls the pool while holding that).
#[derive(Default)]
struct EventQueue {
    events: Mutex<Vec<PoolEvent>>,
    wake: Notify,
    pinned: Mutex<HashSet<B256>>,
}

impl PoolListener for EventQueue {
    fn on_event(&self, event: &PoolEvent) {
        if let PoolEvent::Removed { hash, .. } = event {
            self.pinned.lock().remove(hash);
        }
        self.events.lock().push(event.clone());
        self.wake.notify_one();
    }

    fn may_replace(&self, hash: &B256) -> Result<(), String> {
        if self.pinned.lock().contains(hash) {
            return Err(
                "inference was requested for the transaction it would replace; that one ends included (paying for the inference) or expired"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Blocks whose congestion numbers [`Pipe::block_history`] keeps.
pub const BLOCK_HISTORY: usize = 4096;

/// What one block left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockCongestion {
    pub number: u64,
    /// Transactions included.
    pub included: usize,
    /// Ready transactions carried over to a later block, plus stale ones left out.
    pub deferred: u64,
    /// Transactions that expired at this block (with their senders' later ones).
    pub expired: usize,
    /// How long the builder took to build it.
    pub build_ms: u64,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe").finish_non_exhaustive()
    }
}

impl Pipe {
    /// Starts listening to the pool at once, so transactions restored before the tasks run
    /// are tracked too.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: PipeConfig,
        pool: Arc<Pool>,
        store: Arc<Store>,
        executor: Executor,
        models: Arc<dyn InferenceProvider>,
        workers: Vec<Arc<dyn Worker>>,
        clock: Arc<dyn Clock>,
        head: watch::Receiver<Arc<SealedBlock>>,
    ) -> Arc<Self> {
        let cache = Arc::new(ResultCache::default());
        let metrics = Arc::new(Metrics::new());
        for w in &workers {
            metrics
                .worker_capacity
                .get_or_create(&label("worker", w.name()))
                .set(w.capacity() as i64);
        }
        let events = Arc::new(EventQueue::default());
        pool.add_listener(events.clone());
        let tee_workers = workers.iter().any(|w| w.signer().is_some());
        let served_kinds = [ModelKind::Onnx, ModelKind::Llm]
            .into_iter()
            .filter(|k| workers.iter().any(|w| w.runs(*k)))
            .collect();
        Arc::new(Self {
            tee_workers,
            served_kinds,
            auditor: Default::default(),
            audit_salt: config.audit_seed.unwrap_or_else(|| {
                use std::hash::{BuildHasher, Hasher};
                // std seeds this from the OS's randomness, per process.
                std::collections::hash_map::RandomState::new()
                    .build_hasher()
                    .finish()
            }),
            tasks: Default::default(),
            blocks: Mutex::new(VecDeque::new()),
            results: Arc::new(CachedResults::new(cache.clone(), models)),
            cache,
            config,
            pool,
            store,
            executor,
            clock,
            head,
            state: Mutex::new(State {
                workers: Workers::new(workers),
                ..Default::default()
            }),
            discover: Notify::new(),
            dispatch: Notify::new(),
            ready: Notify::new(),
            events,
            metrics,
            discovering: Default::default(),
        })
    }

    /// Spawns discovery and dispatch as tasks of `tasks` (discovery passes run as its
    /// blocking work); both stop when `shutdown` flips.
    pub fn spawn(self: &Arc<Self>, tasks: &Tasks, shutdown: watch::Receiver<bool>) {
        let _ = self.tasks.set(tasks.clone());
        tasks.spawn(self.clone().dispatch_loop(shutdown.clone()));
        tasks.spawn(self.clone().discovery_loop(tasks.clone(), shutdown));
    }

    /// Keeps the result cache in `store` across restarts: loads what it holds now (so the
    /// transactions restored into the pool find their results) and writes through from now
    /// on. Returns how many results were loaded.
    pub fn persist_results(&self, store: Arc<dyn crate::ResultStore>) -> usize {
        self.cache.attach(store, self.head.borrow().number())
    }

    /// Audits results of workers that ask for it with `auditor` (set before [`Pipe::spawn`];
    /// without one, nothing is audited).
    pub fn set_auditor(&self, auditor: Arc<dyn crate::Auditor>) {
        let _ = self.auditor.set(auditor);
    }

    /// Queues `call` on behalf of `waiter` as discovery would. For tests and tools that drive
    /// dispatch without a chain; returns whether the request was already outstanding.
    pub fn enqueue(&self, call: &InferenceCall, waiter: B256, priority: Priority) -> bool {
        let shared = self.state.lock().requests.wait_for(call, waiter, priority);
        self.dispatch.notify_one();
        shared
    }

    /// Requests the workers not benched now can run at once.
    pub fn capacity(&self) -> usize {
        self.state.lock().workers.capacity(self.clock.now_ms())
    }

    pub fn cache(&self) -> &ResultCache {
        &self.cache
    }

    /// Base fee of the next block: what priority (the effective tip) is measured at.
    fn next_base_fee(&self) -> u64 {
        self.executor.next_base_fee(&self.head.borrow().header)
    }

    /// Starts tracking a transaction the pool accepted.
    fn track(&self, st: &mut State, tx: &PoolTx) {
        let priority = Priority::new(tx.effective_tip(self.next_base_fee()), tx.arrival);
        let (hash, sender, nonce) = (tx.hash(), tx.sender(), tx.nonce());
        // A transaction it replaced was ended by the pool's `Replaced` event, queued before
        // this one's `Added`. The same bytes sent again after they ended are live again.
        st.finished.remove(&hash);
        st.txs.insert(
            hash,
            TxEntry {
                sender,
                nonce,
                priority,
                phase: Phase::Pending,
                keys: Vec::new(),
                simulations: 0,
                rounds: 0,
                stale: 0,
                deferred: None,
                arrived_at: self.head.borrow().number(),
                units: 0,
                ready_at: None,
            },
        );
        st.by_sender.entry(sender).or_default().insert(nonce, hash);
        st.dirty.insert(sender);
    }

    /// Applies the pool's queued events: additions are tracked, and a transaction that left
    /// the pool ends here with the pool's reason (included, replaced, its nonce used, dropped
    /// by a driver). PIPE's own endings ([`Pipe::end`]) were recorded when it made them.
    pub fn apply_pool_events(&self) {
        // The state lock first, then the queue: two callers (discovery, a finalized block)
        // apply batches one after the other, never interleaved, so events apply in the
        // pool's order. The pool only ever takes the queue's lock, so this cannot deadlock.
        let mut st = self.state.lock();
        let events = std::mem::take(&mut *self.events.events.lock());
        for event in events {
            match event {
                PoolEvent::Added { tx, .. } => self.track(&mut st, &tx),
                PoolEvent::Removed { hash, reason } => {
                    if !st.txs.contains_key(&hash) {
                        continue;
                    }
                    let (how, block, why) = match &reason {
                        RemovalReason::Included { block } => {
                            (Lifecycle::Included, Some(*block), None)
                        }
                        RemovalReason::Replaced { .. } => {
                            (Lifecycle::Replaced, None, Some(reason.describe()))
                        }
                        RemovalReason::Evicted { .. } => {
                            (Lifecycle::Evicted, None, Some(reason.describe()))
                        }
                        RemovalReason::Dropped { .. } | RemovalReason::DependsOn { .. } => {
                            self.metrics.rejected.inc();
                            (Lifecycle::Rejected, None, Some(reason.describe()))
                        }
                        RemovalReason::NonceUsed => {
                            (Lifecycle::Rejected, None, Some(reason.describe()))
                        }
                    };
                    st.finish(
                        hash,
                        final_status(hash, how, block, why),
                        self.config.finished_capacity,
                    );
                }
            }
        }
    }
}

impl Pipe {
    /// Whether discovery has caught up with the pool: every event applied, no sender
    /// waiting to be simulated, no pass under way. Then each transaction is ready or
    /// waits for inference (or an earlier nonce), and a block built now includes everything
    /// that can be. The dev chain's `evm_mine` waits for this.
    pub fn discovery_settled(&self) -> bool {
        self.apply_pool_events();
        let st = self.state.lock();
        st.dirty.is_empty() && self.discovering.load(std::sync::atomic::Ordering::SeqCst) == 0
    }

    /// Deferrals and expiries per block, oldest first (the last [`BLOCK_HISTORY`] blocks).
    pub fn block_history(&self) -> Vec<BlockCongestion> {
        self.blocks.lock().iter().copied().collect()
    }

    /// The lifecycle of `hash`, if PIPE tracks it or remembers how it ended.
    pub fn status(&self, hash: &B256) -> Option<TxStatus> {
        let st = self.state.lock();
        if let Some(done) = st.finished.get(hash) {
            return Some(done.clone());
        }
        let e = st.txs.get(hash)?;
        let requests: Vec<RequestStatus> = e
            .keys
            .iter()
            .map(|k| RequestStatus {
                key: *k,
                state: if self.cache.contains(k) {
                    RequestState::Done
                } else if st
                    .requests
                    .by_key
                    .get(k)
                    .is_some_and(|r| r.running_on.is_some())
                {
                    RequestState::Running
                } else {
                    RequestState::Queued
                },
            })
            .collect();
        let status = e.lifecycle();
        let ahead = match e.phase {
            Phase::Awaiting(key) => st.requests.queued_desc().position(|k| k == key),
            _ => None,
        };
        // Queued: rounds of the workers' slots before its request runs, times the model's
        // observed run time. Running: that run time less what has run already, so it counts
        // down (to zero when the run takes longer than usual). A guide, not a promise: a
        // better-paying request may still go first.
        let now = self.clock.now_ms();
        let eta_ms = match e.phase {
            Phase::Awaiting(key) => st.requests.by_key.get(&key).and_then(|r| {
                let ms = *st.model_ms.get(&r.call.model.id)?;
                Some(eta_ms(
                    ms,
                    r.started_ms.map(|started| now.saturating_sub(started)),
                    ahead.unwrap_or(0),
                    st.workers.capacity(now),
                ))
            }),
            _ => None,
        };
        Some(TxStatus {
            hash: *hash,
            status,
            block_number: None,
            reason: e.deferred.map(|d| d.reason()),
            ahead,
            outstanding: requests
                .iter()
                .filter(|r| r.state != RequestState::Done)
                .count(),
            requests,
            simulations: e.simulations,
            stale: e.stale,
            ready_at: e.ready_at,
            eta_ms,
        })
    }

    /// Brings the gauges up to date and renders every metric.
    pub fn render_metrics(&self) -> String {
        {
            let st = self.state.lock();
            let mut counts: BTreeMap<&str, i64> = [
                Lifecycle::Pending,
                Lifecycle::Simulating,
                Lifecycle::AwaitingInference,
                Lifecycle::Ready,
                Lifecycle::Deferred,
            ]
            .into_iter()
            .map(|l| (l.as_str(), 0))
            .collect();
            for e in st.txs.values() {
                *counts.entry(e.lifecycle().as_str()).or_default() += 1;
            }
            for (s, n) in counts {
                self.metrics
                    .transactions
                    .get_or_create(&label("state", s))
                    .set(n);
            }
            self.metrics
                .requests_queued
                .set(st.requests.queued() as i64);
            self.metrics
                .requests_in_flight
                .set(st.requests.running() as i64);
        }
        self.metrics.cached_results.set(self.cache.len() as i64);
        self.metrics.render()
    }
}
