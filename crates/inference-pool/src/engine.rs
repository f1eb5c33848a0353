//! The engine: the transaction tracker, the discovery pass, the dispatch loop, and the gate the
//! builder goes through. One lock (`State`) guards the tracker, the requests and the worker
//! table; it is never held across a simulation, a model run or an await.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
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
    inference::InferenceMode,
    status::{Lifecycle, RequestState, RequestStatus, TxStatus},
};
use pipe_storage::Store;
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use crate::{
    CachedResults, Metrics, ResultCache, Worker, WorkerError,
    dispatch::{Priority, Requests, Workers},
    metrics::label,
};

/// PIPE's limits and timings.
#[derive(Clone, Debug)]
pub struct PipeConfig {
    /// Most distinct inference requests one transaction may make.
    pub max_requests_per_tx: usize,
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
}

impl Default for PipeConfig {
    fn default() -> Self {
        Self {
            max_requests_per_tx: 8,
            max_simulations: 32,
            worker_timeout_ms: 30_000,
            worker_max_failures: 3,
            worker_backoff_ms: 10_000,
            result_ttl_blocks: 64,
            finished_capacity: 100_000,
            tx_ttl_blocks: 64,
            max_inference_txs_per_sender: 64,
            max_inference_units_per_sender: 1_000_000,
        }
    }
}

/// Where a tracked transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for discovery, or for the sender's earlier nonce.
    Pending,
    Simulating,
    /// Its simulation stopped at this request.
    Awaiting(B256),
    Ready,
}

#[derive(Debug)]
struct TxEntry {
    sender: Address,
    nonce: u64,
    priority: Priority,
    phase: Phase,
    /// Distinct requests discovered, in discovery order.
    keys: Vec<B256>,
    /// Simulations it took part in (shown by the status RPC).
    simulations: u32,
    /// Simulations that stopped at it at a request it had not made before: what
    /// `max_simulations` bounds.
    rounds: u32,
    stale: u32,
    /// Why it was last left out of a block, until it is ready again (stale) or included
    /// (carried over while ready).
    deferred: Option<Deferral>,
    /// The head when it arrived: it expires if not included by `arrived_at + tx_ttl_blocks`.
    arrived_at: u64,
    /// Cost units of the distinct requests discovered (the sender's cap counts them).
    units: u64,
    /// The head when it first became ready (every result in): blocks it then waits are the
    /// builder's doing, not the inference network's.
    ready_at: Option<u64>,
}

/// A model's run time after observing `sample`: weight 1/5 on the newest run, so it follows
/// a slower worker within a few runs without one outlier moving it far.
fn moving_average(previous: f64, sample: f64) -> f64 {
    0.8 * previous + 0.2 * sample
}

/// Milliseconds until a queued request's result is in: the rounds of `slots` worker slots
/// needed for the `ahead` requests before it and itself, each taking `model_ms`.
fn eta_ms(model_ms: f64, ahead: usize, slots: usize) -> u64 {
    let rounds = (ahead / slots.max(1)) as f64 + 1.0;
    (model_ms * rounds).round() as u64
}

/// One sender's live inference, checked against its caps as discovery finds requests.
#[derive(Debug, Default)]
struct SenderLoad {
    /// Live transactions that requested inference.
    txs: usize,
    /// Cost units they requested.
    units: u64,
}

impl SenderLoad {
    fn of(txs: &HashMap<B256, TxEntry>, nonces: Option<&BTreeMap<u64, B256>>) -> Self {
        let mut load = Self::default();
        for e in nonces
            .into_iter()
            .flat_map(|m| m.values())
            .filter_map(|h| txs.get(h))
        {
            if !e.keys.is_empty() {
                load.txs += 1;
                load.units = load.units.saturating_add(e.units);
            }
        }
        load
    }

    /// Counts `call`, new for `e`, or says which cap it breaks.
    fn admit(
        &mut self,
        e: &mut TxEntry,
        call: &InferenceCall,
        config: &PipeConfig,
    ) -> Result<(), String> {
        if e.keys.contains(&call.key) {
            return Ok(());
        }
        let first = e.keys.is_empty();
        if first && self.txs >= config.max_inference_txs_per_sender {
            return Err(format!(
                "sender has {} transactions with inference pending (limit {})",
                self.txs, config.max_inference_txs_per_sender
            ));
        }
        let units = self.units.saturating_add(call.model.cost_units);
        if units > config.max_inference_units_per_sender {
            return Err(format!(
                "sender's pending inference would cost {units} cost units (limit {})",
                config.max_inference_units_per_sender
            ));
        }
        self.txs += usize::from(first);
        self.units = units;
        e.units = e.units.saturating_add(call.model.cost_units);
        Ok(())
    }
}

/// Why a block left a transaction out. The status text is made from it when asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deferral {
    /// It asked for request `key`, which the block had no result for.
    Stale { block: u64, key: B256 },
    /// It was ready, but the block was full or reached its deadline.
    CarriedOver { block: u64 },
}

impl Deferral {
    fn reason(&self) -> String {
        match self {
            Deferral::Stale { block, key } => format!(
                "left out of block {block}: it asked for request {key}, which was not computed (its inputs changed since simulation)"
            ),
            Deferral::CarriedOver { block } => format!(
                "ready, but not in block {block} (the block was full or reached its deadline): carried over to the next block with its results"
            ),
        }
    }
}

impl TxEntry {
    /// Where the status RPC and the metrics say it is.
    fn lifecycle(&self) -> Lifecycle {
        match self.phase {
            // A ready transaction a block left out stays `ready` (its reason says it was
            // carried over): it needs nothing more to be included.
            Phase::Ready => Lifecycle::Ready,
            _ if self.deferred.is_some() => Lifecycle::Deferred,
            Phase::Pending => Lifecycle::Pending,
            Phase::Simulating => Lifecycle::Simulating,
            Phase::Awaiting(_) => Lifecycle::AwaitingInference,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    txs: HashMap<B256, TxEntry>,
    by_sender: HashMap<Address, BTreeMap<u64, B256>>,
    /// Senders whose pending run must be simulated (again).
    dirty: BTreeSet<Address>,
    requests: Requests,
    workers: Workers,
    finished: HashMap<B256, TxStatus>,
    finished_order: VecDeque<B256>,
    /// Each model's observed run time, a moving average (ms, on the dispatcher's clock): how
    /// long a queued request should take, for the status's estimate.
    model_ms: HashMap<ModelId, f64>,
}

impl State {
    /// Ends a transaction's tracking with a final status, keeping what is known of its
    /// simulations and (when included) the requests it used.
    fn finish(&mut self, hash: B256, mut status: TxStatus, capacity: usize) {
        if let Some(e) = self.txs.remove(&hash) {
            status.simulations = e.simulations;
            status.stale = e.stale;
            status.ready_at = e.ready_at;
            if status.status == Lifecycle::Included {
                status.requests = e
                    .keys
                    .iter()
                    .map(|k| RequestStatus {
                        key: *k,
                        state: RequestState::Done,
                    })
                    .collect();
            }
            if let Some(m) = self.by_sender.get_mut(&e.sender) {
                if m.get(&e.nonce) == Some(&hash) {
                    m.remove(&e.nonce);
                }
                if m.is_empty() {
                    self.by_sender.remove(&e.sender);
                }
            }
            for key in &e.keys {
                self.requests.forget_waiter(key, &hash);
            }
        }
        if self.finished.insert(hash, status).is_none() {
            self.finished_order.push_back(hash);
        }
        while self.finished_order.len() > capacity {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }
}

fn final_status(
    hash: B256,
    status: Lifecycle,
    block: Option<u64>,
    reason: Option<String>,
) -> TxStatus {
    TxStatus {
        block_number: block,
        reason,
        ..TxStatus::new(hash, status)
    }
}

/// [`attest::verify`] on the head state; a VANILLA result without a signature needs no read.
fn attested_now(
    store: &Store,
    enclave: &dyn attest::EnclaveCheck,
    mode: InferenceMode,
    result: &InferenceResult,
) -> Result<(), String> {
    if mode != InferenceMode::Tee && result.signature.is_empty() {
        return Ok(());
    }
    let view = store
        .state()
        .map_err(|e| format!("reading the registry: {e}"))?;
    attest::verify(mode, result, &view, enclave)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

type JobDone = (usize, B256, Result<InferenceResult, WorkerError>, u64);

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
    /// Deferrals and expiries of the last [`BLOCK_HISTORY`] blocks, for benchmarks and
    /// operators who want per-block numbers rather than the metrics' histograms.
    blocks: Mutex<VecDeque<BlockCongestion>>,
}

/// The pool's events waiting for PIPE. The pool calls [`PoolListener::on_event`] under its
/// lock, so this only queues and wakes; PIPE applies the events at the top of each discovery
/// round and before it handles a finalized block, never calling the pool while it holds this.
#[derive(Default)]
struct EventQueue {
    events: Mutex<Vec<PoolEvent>>,
    wake: Notify,
}

impl PoolListener for EventQueue {
    fn on_event(&self, event: &PoolEvent) {
        self.events.lock().push(event.clone());
        self.wake.notify_one();
    }
}

/// Blocks whose congestion numbers [`Pipe::block_history`] keeps.
pub const BLOCK_HISTORY: usize = 4096;

/// What one block left behind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct BlockCongestion {
    pub number: u64,
    /// Transactions included.
    pub included: usize,
    /// Ready transactions carried over to a later block, plus stale ones left out.
    pub deferred: u64,
    /// Transactions that expired at this block (with their senders' later ones).
    pub expired: usize,
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
        Arc::new(Self {
            tee_workers,
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
        })
    }

    /// Spawns discovery and dispatch as tasks of `tasks` (discovery passes run as its
    /// blocking work); both stop when `shutdown` flips.
    pub fn spawn(self: &Arc<Self>, tasks: &Tasks, shutdown: watch::Receiver<bool>) {
        tasks.spawn(self.clone().dispatch_loop(shutdown.clone()));
        tasks.spawn(self.clone().discovery_loop(tasks.clone(), shutdown));
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
        let head = self.head.borrow();
        head.header
            .next_block_base_fee(self.executor.config().base_fee_params())
            .unwrap_or_default()
    }

    /// Starts tracking a transaction the pool accepted.
    fn track(&self, tx: &PoolTx) {
        let priority = Priority {
            tip: tx.effective_tip(self.next_base_fee()),
            arrival: tx.arrival,
        };
        let (hash, sender, nonce) = (tx.hash(), tx.sender(), tx.nonce());
        // A transaction it replaced was ended by the pool's `Replaced` event, queued before
        // this one's `Added`.
        let mut st = self.state.lock();
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
        let events = std::mem::take(&mut *self.events.events.lock());
        if events.is_empty() {
            return;
        }
        for event in events {
            match event {
                PoolEvent::Added { tx, .. } => self.track(&tx),
                PoolEvent::Removed { hash, reason } => {
                    let mut st = self.state.lock();
                    if !st.txs.contains_key(&hash) {
                        continue;
                    }
                    let status = match &reason {
                        RemovalReason::Included { block } => {
                            final_status(hash, Lifecycle::Included, Some(*block), None)
                        }
                        other => {
                            if matches!(
                                other,
                                RemovalReason::Dropped { .. } | RemovalReason::DependsOn { .. }
                            ) {
                                self.metrics.rejected.inc();
                            }
                            final_status(hash, Lifecycle::Rejected, None, Some(other.describe()))
                        }
                    };
                    st.finish(hash, status, self.config.finished_capacity);
                }
            }
        }
    }

    async fn discovery_loop(self: Arc<Self>, tasks: Tasks, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.events.wake.notified() => {}
                _ = self.discover.notified() => {}
                _ = shutdown.changed() => return,
            }
            self.apply_pool_events();
            let this = self.clone();
            // Simulation is CPU work: off the async workers.
            if let Err(e) = tasks.blocking(move || this.discovery_pass()).await {
                warn!(target: "pipe::discovery", error = %e, "discovery pass panicked");
            }
        }
    }

    /// Simulates every dirty sender's pending run once.
    pub fn discovery_pass(&self) {
        let dirty: Vec<Address> = std::mem::take(&mut self.state.lock().dirty)
            .into_iter()
            .collect();
        if dirty.is_empty() {
            return;
        }
        let head = self.head.borrow().clone();
        let view = match self.store.state() {
            Ok(v) => Arc::new(v),
            Err(e) => {
                warn!(target: "pipe::discovery", error = %e, "cannot read state; will retry");
                self.state.lock().dirty.extend(dirty);
                return;
            }
        };
        // The view may already be past `head` if a block just committed; the builder checks
        // every result again, so a simulation on a slightly different state costs at most a
        // re-simulation.
        let attrs = self
            .executor
            .next_attributes(&head, self.clock.now_ms(), Address::ZERO);
        let mut rejected: Vec<(B256, String)> = Vec::new();
        let mut new_requests = false;
        let mut became_ready = false;
        for sender in dirty {
            // The view may be ahead of the pool (a block committed, the pool not yet told):
            // transactions the view already executed are not simulated again.
            let on_chain = view.account(&sender).ok().flatten().map_or(0, |a| a.nonce);
            let run: Vec<_> = self
                .pool
                .ready_run_of(&sender)
                .into_iter()
                .filter(|t| t.nonce() >= on_chain)
                .collect();
            if run.is_empty() {
                continue;
            }
            {
                let mut st = self.state.lock();
                for tx in &run {
                    if let Some(e) = st.txs.get_mut(&tx.hash())
                        && e.phase != Phase::Ready
                    {
                        e.phase = Phase::Simulating;
                    }
                }
            }
            let stored: Vec<StoredTx> = run.iter().map(|t| t.stored.clone()).collect();
            let outcomes = self.executor.simulate(
                view.clone(),
                &attrs,
                &stored,
                self.results.clone() as Arc<dyn InferenceProvider>,
            );
            self.metrics.simulations.inc();
            let mut st = self.state.lock();
            let State {
                txs,
                requests,
                dirty,
                by_sender,
                ..
            } = &mut *st;
            // The sender's live inference so far, for its caps.
            let mut load = SenderLoad::of(txs, by_sender.get(&sender));
            let outcomes = match outcomes {
                Ok(o) => o,
                Err(e) => {
                    warn!(target: "pipe::discovery", %sender, error = %e, "simulation failed; will retry");
                    dirty.insert(sender);
                    self.discover.notify_one();
                    continue;
                }
            };
            for (i, tx) in run.iter().enumerate() {
                let hash = tx.hash();
                let Some(entry) = txs.get_mut(&hash) else {
                    continue;
                };
                let Some(outcome) = outcomes.get(i) else {
                    // Waits for an earlier nonce of its sender.
                    if entry.phase != Phase::Ready {
                        entry.phase = Phase::Pending;
                    }
                    continue;
                };
                entry.simulations += 1;
                match outcome {
                    SimOutcome::Complete { keys } => {
                        for k in keys {
                            if !entry.keys.contains(k) {
                                entry.keys.push(*k);
                            }
                        }
                        entry.phase = Phase::Ready;
                        entry.deferred = None;
                        entry.ready_at.get_or_insert(head.number());
                        became_ready = true;
                    }
                    // Not executable here (funds, nonce): the builder decides, with a reason.
                    SimOutcome::Invalid(_) => {
                        entry.phase = Phase::Ready;
                        became_ready = true;
                    }
                    SimOutcome::Underpaid { call, cost, price } => {
                        rejected.push((
                            hash,
                            format!(
                                "gas cannot cover inference: request {} on model {} costs {cost} gas at inference gas price {price} ({} cost units); raise the gas limit (eth_estimateGas includes it)",
                                call.key, call.model.id, call.model.cost_units
                            ),
                        ));
                    }
                    SimOutcome::Missing(call) => {
                        // Stopping again at a request it already made is the network's pace,
                        // not its doing (its sender's later nonces, another sender's block,
                        // re-ran the simulation): only a new request counts.
                        if !entry.keys.contains(&call.key) {
                            entry.rounds += 1;
                        }
                        if let Err(reason) = load.admit(entry, call, &self.config) {
                            rejected.push((hash, reason));
                            continue;
                        }
                        match self.stopped_at(
                            hash,
                            entry,
                            call,
                            Some(self.config.max_simulations),
                            requests,
                            dirty,
                        ) {
                            Ok(queued) => new_requests |= queued,
                            Err(reason) => rejected.push((hash, reason)),
                        }
                    }
                }
            }
        }
        for (hash, reason) in rejected {
            self.reject(hash, &reason);
        }
        if new_requests {
            self.dispatch.notify_one();
        }
        if became_ready {
            self.ready.notify_one();
        }
    }

    /// `e` (transaction `hash`) stopped at `call`, which has no result. Records the key and
    /// queues the request, or sends the sender back to discovery if the result is already in.
    /// `Ok(true)` when a request was queued (dispatch must wake); `Err` is the reason the
    /// transaction is now over its bounds: too many requests, or, when given, simulations.
    fn stopped_at(
        &self,
        hash: B256,
        e: &mut TxEntry,
        call: &InferenceCall,
        max_simulations: Option<u32>,
        requests: &mut Requests,
        dirty: &mut BTreeSet<Address>,
    ) -> Result<bool, String> {
        if !e.keys.contains(&call.key) {
            e.keys.push(call.key);
        }
        if e.keys.len() > self.config.max_requests_per_tx {
            return Err(format!(
                "transaction makes more than {} inference requests",
                self.config.max_requests_per_tx
            ));
        }
        if let Some(max) = max_simulations
            && e.rounds > max
        {
            return Err(format!(
                "transaction stopped at a missing inference result more than {max} times"
            ));
        }
        if call.mode == InferenceMode::Tee && !self.tee_workers {
            return Err(
                "TEE inference requested, but no worker of this node has a signing key".into(),
            );
        }
        if self.cache.contains(&call.key) {
            // The result arrived while this simulation ran.
            e.phase = Phase::Pending;
            dirty.insert(e.sender);
            return Ok(false);
        }
        e.phase = Phase::Awaiting(call.key);
        if requests.wait_for(call, hash, e.priority) {
            self.metrics.shared_requests.inc();
        }
        Ok(true)
    }

    /// Rejects `hash` for good, with its sender's later transactions (they depend on it).
    fn reject(&self, hash: B256, reason: &str) {
        self.end(hash, Lifecycle::Rejected, reason);
    }

    /// Ends `hash` for good (`Rejected` or `Expired`) with its sender's later transactions,
    /// which cannot be included without it: all leave the pool and the store's pending set,
    /// so the sender's pending nonce falls back and it can send again from there.
    /// Returns how many transactions ended.
    fn end(&self, hash: B256, how: Lifecycle, reason: &str) -> usize {
        info!(target: "pipe::discovery", %hash, reason, status = how.as_str(), "transaction ended");
        // The pool forgets them and tells its listeners; PIPE records its own reasons below
        // (its queued copies of these events find nothing left to end).
        let removed = self.pool.remove(&hash, reason);
        let verb = if how == Lifecycle::Expired {
            "expired"
        } else {
            "was rejected"
        };
        let mut st = self.state.lock();
        let mut ended = 0;
        for h in std::iter::once(hash).chain(removed.into_iter().filter(|h| *h != hash)) {
            ended += 1;
            let why = if h == hash {
                reason.to_string()
            } else {
                format!("an earlier transaction of the sender ({hash}) {verb}: {reason}")
            };
            if how == Lifecycle::Expired {
                self.metrics.expired.inc();
            } else {
                self.metrics.rejected.inc();
            }
            st.finish(
                h,
                final_status(h, how, None, Some(why)),
                self.config.finished_capacity,
            );
        }
        ended
    }

    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut running: FuturesUnordered<BoxFuture<'static, JobDone>> = FuturesUnordered::new();
        loop {
            let now = self.clock.now_ms();
            for job in self.assign(now) {
                running.push(job);
            }
            let wake_at = {
                let st = self.state.lock();
                if st.requests.queued() > 0 {
                    st.workers.next_return(now)
                } else {
                    None
                }
            };
            let benched = async {
                match wake_at {
                    Some(t) => self.clock.sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.dispatch.notified() => {}
                Some(done) = running.next(), if !running.is_empty() => self.on_result(done),
                _ = benched => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Fills free worker slots with the best queued requests.
    fn assign(&self, now: u64) -> Vec<BoxFuture<'static, JobDone>> {
        let mut jobs = Vec::new();
        let mut st = self.state.lock();
        let State {
            requests, workers, ..
        } = &mut *st;
        // Best first. A TEE request no free signing worker can take is stepped over, so it
        // does not hold back the requests behind it; `skipped` counts those left queued.
        let mut skipped = 0;
        while workers.pick(now, None, false).is_some() {
            let Some(key) = requests.queued_desc().nth(skipped) else {
                break;
            };
            let Some(r) = requests.by_key.get(&key) else {
                break;
            };
            let tee = r.call.mode == InferenceMode::Tee;
            let Some(w) = workers.pick(now, r.avoid, tee) else {
                skipped += 1;
                continue;
            };
            let Some(call) = requests.start(&key, w) else {
                break;
            };
            let slot = &mut workers.slots[w];
            slot.in_flight += 1;
            let worker = slot.worker.clone();
            self.metrics
                .worker_in_flight
                .get_or_create(&label("worker", worker.name()))
                .set(slot.in_flight as i64);
            debug!(target: "pipe::dispatch", %key, worker = worker.name(), "dispatched");
            jobs.push(self.job(w, key, call, worker));
        }
        let running = requests.running() as i64;
        self.metrics.requests_in_flight.set(running);
        if running > self.metrics.requests_in_flight_peak.get() {
            self.metrics.requests_in_flight_peak.set(running);
        }
        jobs
    }

    fn job(
        &self,
        w: usize,
        key: B256,
        call: Arc<InferenceCall>,
        worker: Arc<dyn Worker>,
    ) -> BoxFuture<'static, JobDone> {
        let clock = self.clock.clone();
        let timeout = self.config.worker_timeout_ms;
        let store = self.store.clone();
        let enclave = self.executor.enclave_check().clone();
        async move {
            let started = clock.now_ms();
            let mode = call.mode;
            let run = worker.run(call);
            let result = tokio::select! {
                r = run => r,
                _ = clock.sleep_until(started + timeout) => Err(WorkerError::Timeout(timeout)),
            };
            let result = result.and_then(|r| {
                if r.key == key {
                    Ok(r)
                } else {
                    Err(WorkerError::WrongKey {
                        want: key,
                        got: r.key,
                    })
                }
            });
            // Only attested results are cached: the builder would refuse the others.
            let result = result.and_then(|r| {
                attested_now(&store, enclave.as_ref(), mode, &r)
                    .map_err(WorkerError::Unattested)?;
                Ok(r)
            });
            (w, key, result, started)
        }
        .boxed()
    }

    fn on_result(&self, (w, key, result, started): JobDone) {
        let now = self.clock.now_ms();
        let block = self.head.borrow().number();
        let mut st = self.state.lock();
        let State {
            txs,
            requests,
            workers,
            dirty,
            model_ms,
            ..
        } = &mut *st;
        let name = workers.slots[w].worker.name().to_string();
        let ok = result.is_ok();
        workers.record(
            w,
            ok,
            now,
            self.config.worker_max_failures,
            self.config.worker_backoff_ms,
        );
        self.metrics
            .worker_in_flight
            .get_or_create(&label("worker", &name))
            .set(workers.slots[w].in_flight as i64);
        match result {
            Ok(r) => {
                self.metrics
                    .dispatch_latency
                    .observe(now.saturating_sub(started) as f64 / 1000.0);
                self.metrics
                    .worker_completed
                    .get_or_create(&label("worker", &name))
                    .inc();
                self.cache.insert(r, block);
                let elapsed = now.saturating_sub(started) as f64;
                if let Some(req) = requests.finish(&key) {
                    let ms = model_ms.entry(req.call.model.id).or_insert(elapsed);
                    *ms = moving_average(*ms, elapsed);
                    for waiter in req.waiters {
                        if let Some(e) = txs.get_mut(&waiter)
                            && e.phase == Phase::Awaiting(key)
                        {
                            e.phase = Phase::Pending;
                            dirty.insert(e.sender);
                        }
                    }
                }
                self.discover.notify_one();
            }
            Err(e) => {
                warn!(target: "pipe::dispatch", %key, worker = %name, error = %e, "worker failed; retrying elsewhere");
                self.metrics
                    .worker_failures
                    .get_or_create(&label("worker", &name))
                    .inc();
                self.metrics.retries.inc();
                requests.requeue(&key, w);
            }
        }
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
        // Rounds of the workers' slots before its request runs, times the model's observed
        // run time. A guide, not a promise: a better-paying request may still go first.
        let eta_ms = match e.phase {
            Phase::Awaiting(key) => st.requests.by_key.get(&key).and_then(|r| {
                let ms = *st.model_ms.get(&r.call.model.id)?;
                let slots = st.workers.capacity(self.clock.now_ms());
                Some(eta_ms(ms, ahead.unwrap_or(0), slots))
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

impl InferenceGate for Pipe {
    fn is_ready(&self, tx: &PoolTx) -> bool {
        self.state
            .lock()
            .txs
            .get(&tx.hash())
            .is_some_and(|e| e.phase == Phase::Ready)
    }

    fn results(&self) -> Arc<dyn InferenceProvider> {
        self.results.clone()
    }

    fn on_stale(&self, tx: &PoolTx, call: &InferenceCall) {
        self.metrics.stale.inc();
        let number = self.head.borrow().number() + 1;
        let hash = tx.hash();
        let mut rejection = None;
        {
            let mut st = self.state.lock();
            let State {
                txs,
                requests,
                dirty,
                ..
            } = &mut *st;
            let Some(e) = txs.get_mut(&hash) else {
                return;
            };
            debug!(target: "pipe::builder", %hash, key = %call.key, "stale result: back to discovery");
            // A key the cache holds was refused by the builder: its result no longer passes
            // attestation (the worker left the registry). Computed again, by another worker.
            if let Some(cached) = self.cache.get(&call.key)
                && attested_now(
                    &self.store,
                    self.executor.enclave_check().as_ref(),
                    call.mode,
                    &cached,
                )
                .is_err()
            {
                self.cache.remove(&call.key);
            }
            e.stale += 1;
            e.deferred = Some(Deferral::Stale {
                block: number,
                key: call.key,
            });
            match self.stopped_at(hash, e, call, None, requests, dirty) {
                // The builder already knows the request: it is dispatched without another round.
                Ok(true) => self.dispatch.notify_one(),
                Ok(false) => {}
                Err(reason) => rejection = Some(reason),
            }
            dirty.insert(e.sender);
        }
        if let Some(reason) = rejection {
            self.reject(hash, &reason);
        }
        self.discover.notify_one();
    }

    fn on_finalized(&self, block: &Arc<SealedBlock>, stats: &BuildStats) {
        self.metrics.blocks.inc();
        self.metrics
            .block_build
            .observe(stats.build_ms as f64 / 1000.0);
        self.metrics
            .block_transactions
            .observe(block.transactions.len() as f64);
        // The pool has already handled the block: its events end the included transactions
        // and those whose nonce the block used, before anything else here looks at them.
        self.apply_pool_events();
        let number = block.number();
        let expired: Vec<(B256, u64)>;
        let mut deferred = 0u64;
        let live: Vec<B256> = {
            let mut st = self.state.lock();
            // Expiry: not included in the `tx_ttl_blocks` blocks since it arrived. Per
            // sender only the lowest such nonce is ended; its later ones go with it.
            let ttl = self.config.tx_ttl_blocks;
            expired = if ttl == 0 {
                Vec::new()
            } else {
                st.by_sender
                    .values()
                    .filter_map(|nonces| {
                        nonces.values().find_map(|h| {
                            let e = st.txs.get(h)?;
                            (number >= e.arrived_at + ttl).then_some((*h, e.arrived_at))
                        })
                    })
                    .collect()
            };
            // Carry-over: ready, yet not in this block (full, at its deadline, or ready too
            // late for it). It keeps its results and goes into a later block.
            let State { txs, dirty, .. } = &mut *st;
            for e in txs.values_mut().filter(|e| e.phase == Phase::Ready) {
                deferred += 1;
                e.deferred = Some(Deferral::CarriedOver { block: number });
            }
            // Senders with transactions still waiting for discovery get another pass on the
            // new state: an earlier transaction that was not executable in simulation (its
            // nonce just used, funds arriving in this block) stops nothing for good.
            let before = dirty.len();
            dirty.extend(
                txs.values()
                    .filter(|e| e.phase == Phase::Pending)
                    .map(|e| e.sender),
            );
            if dirty.len() > before {
                self.discover.notify_one();
            }
            txs.values().flat_map(|e| e.keys.iter().copied()).collect()
        };
        let mut ended = 0;
        for (hash, arrived_at) in expired {
            ended += self.end(
                hash,
                Lifecycle::Expired,
                &format!(
                    "not included within {} blocks (arrived at block {arrived_at}, expired at block {number})",
                    self.config.tx_ttl_blocks
                ),
            );
        }
        self.metrics.deferred.inc_by(deferred);
        self.metrics
            .block_deferred
            .observe((deferred + stats.stale as u64) as f64);
        self.metrics.block_expired.observe(ended as f64);
        let mut blocks = self.blocks.lock();
        if blocks.len() == BLOCK_HISTORY {
            blocks.pop_front();
        }
        blocks.push_back(BlockCongestion {
            number,
            included: block.transactions.len(),
            deferred: deferred + stats.stale as u64,
            expired: ended,
        });
        drop(blocks);
        self.cache
            .expire(&live, number, self.config.result_ttl_blocks);
    }

    fn has_ready(&self) -> bool {
        self.state
            .lock()
            .txs
            .values()
            .any(|e| e.phase == Phase::Ready)
    }

    fn ready_changed(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.ready.notified())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipe_primitives::{ModelId, ModelMeta, inference::InferenceMode};

    fn call(key: u8, units: u64) -> InferenceCall {
        InferenceCall {
            key: B256::repeat_byte(key),
            request: Default::default(),
            mode: InferenceMode::Vanilla,
            model: ModelMeta {
                id: ModelId::of(b"m"),
                name: "m".into(),
                size_bytes: 1,
                inputs: Vec::new(),
                outputs: Vec::new(),
                decimals: 0,
                cost_units: units,
                operators: Vec::new(),
            },
            inputs: Vec::new(),
        }
    }

    fn entry() -> TxEntry {
        TxEntry {
            sender: Address::ZERO,
            nonce: 0,
            priority: Priority { tip: 0, arrival: 0 },
            phase: Phase::Pending,
            keys: Vec::new(),
            simulations: 0,
            rounds: 0,
            stale: 0,
            deferred: None,
            arrived_at: 0,
            units: 0,
            ready_at: None,
        }
    }

    #[test]
    fn a_sender_is_capped_by_transactions_and_by_cost_units() {
        let config = PipeConfig {
            max_inference_txs_per_sender: 2,
            max_inference_units_per_sender: 2_500,
            ..PipeConfig::default()
        };
        let mut load = SenderLoad::default();
        let (mut a, mut b, mut c) = (entry(), entry(), entry());
        load.admit(&mut a, &call(1, 1_000), &config).unwrap();
        a.keys.push(B256::repeat_byte(1));
        // A request the transaction already made is not counted again.
        load.admit(&mut a, &call(1, 1_000), &config).unwrap();
        assert_eq!((load.txs, load.units, a.units), (1, 1_000, 1_000));
        // A second request of the same transaction counts units, not transactions.
        load.admit(&mut a, &call(2, 1_000), &config).unwrap();
        a.keys.push(B256::repeat_byte(2));
        assert_eq!((load.txs, load.units), (1, 2_000));
        // Over the units cap.
        let e = load.admit(&mut b, &call(3, 1_000), &config).unwrap_err();
        assert!(e.contains("3000 cost units (limit 2500)"), "{e}");
        load.admit(&mut b, &call(3, 400), &config).unwrap();
        b.keys.push(B256::repeat_byte(3));
        // Over the transactions cap, though units would fit.
        let e = load.admit(&mut c, &call(4, 1), &config).unwrap_err();
        assert!(
            e.contains("2 transactions with inference pending (limit 2)"),
            "{e}"
        );
        assert_eq!((load.txs, load.units, c.units), (2, 2_400, 0));
    }

    #[test]
    fn the_estimate_follows_observed_run_times_and_the_queue_ahead() {
        let mut ms = 100.0;
        for _ in 0..20 {
            ms = moving_average(ms, 300.0);
        }
        assert!((ms - 300.0).abs() < 5.0, "follows a slower model: {ms}");
        assert_eq!(
            moving_average(100.0, 600.0),
            200.0,
            "one outlier moves it a fifth"
        );
        // 4 slots: the first 3 queued requests run with it in the first round.
        assert_eq!(eta_ms(100.0, 0, 4), 100);
        assert_eq!(eta_ms(100.0, 3, 4), 100);
        assert_eq!(eta_ms(100.0, 4, 4), 200);
        assert_eq!(eta_ms(100.0, 9, 4), 300);
        assert_eq!(eta_ms(100.0, 9, 0), 1_000, "all benched: one slot assumed");
    }

    #[test]
    fn the_load_counts_only_live_transactions_that_requested_inference() {
        let mut txs = HashMap::new();
        let mut nonces = BTreeMap::new();
        for (n, units) in [(0u64, 700u64), (1, 0), (2, 300)] {
            let hash = B256::with_last_byte(n as u8);
            let mut e = entry();
            e.units = units;
            if units > 0 {
                e.keys.push(hash);
            }
            txs.insert(hash, e);
            nonces.insert(n, hash);
        }
        // A nonce whose transaction already ended is skipped.
        nonces.insert(3, B256::repeat_byte(0xee));
        let load = SenderLoad::of(&txs, Some(&nonces));
        assert_eq!((load.txs, load.units), (2, 1_000));
    }
}
