//! Dispatch bookkeeping: outstanding requests in priority order, and the worker table that
//! decides where each goes. Pure data structures, driven by the engine's dispatch loop and by
//! tests on a manual clock.

use std::{
    cmp::Ordering,
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use alloy_primitives::B256;
use pipe_executor::InferenceCall;
use pipe_primitives::inference::{ModelId, ModelKind};

use crate::{Need, Worker};

/// Language models a worker is taken to hold loaded: the last ones it ran (a hint for where a
/// request is answered soonest, never a promise).
const WARM_LLMS: usize = pipe_primitives::inference::LOADED_LLMS;

/// How urgent a request is: the best priority among the transactions waiting for it.
/// Higher is better: a higher effective tip; at equal tips, the transaction that has had less
/// inference computed for it so far; then an earlier arrival.
///
/// The middle term is the fairness rule. A transaction's requests run one after another (its
/// simulation stops at the first one missing), and by arrival alone an early transaction
/// making many requests would keep the head of the queue for all of them, ahead of every
/// single-request transaction that came later. Ordering by work already done interleaves
/// them: what a transaction has used so far is what it waits behind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Priority {
    pub tip: u128,
    /// Cost units of the transaction's requests computed before this one.
    pub consumed: u64,
    pub arrival: u64,
}

impl Priority {
    /// A transaction's first request: nothing computed for it yet.
    pub fn new(tip: u128, arrival: u64) -> Self {
        Self {
            tip,
            consumed: 0,
            arrival,
        }
    }
}

impl Ord for Priority {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tip
            .cmp(&other.tip)
            .then_with(|| other.consumed.cmp(&self.consumed))
            .then_with(|| other.arrival.cmp(&self.arrival))
    }
}

impl PartialOrd for Priority {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A request some transaction is waiting for.
#[derive(Debug)]
pub struct Request {
    pub call: Arc<InferenceCall>,
    /// Transactions waiting for it.
    pub waiters: BTreeSet<B256>,
    pub priority: Priority,
    /// The worker running it, if it is running.
    pub running_on: Option<usize>,
    /// When its current run started (ms on the engine's clock): what the status's `etaMs`
    /// counts down from.
    pub started_ms: Option<u64>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The worker that failed it last: the retry goes elsewhere when it can.
    pub avoid: Option<usize>,
}

/// Outstanding requests: queued ones in priority order, plus the ones running.
/// What became of a request whose run failed.
#[derive(Debug)]
pub enum Retry {
    /// Back in the queue.
    Queued,
    /// Nobody waits for it any more: not run again.
    Dropped,
    /// It failed too often; the request is out, its waiters are to be ended.
    GaveUp(Request),
}

#[derive(Debug, Default)]
pub struct Requests {
    pub by_key: HashMap<B256, Request>,
    queue: BTreeSet<(Priority, B256)>,
}

impl Requests {
    /// Adds `waiter` to the request for `call`, creating and queueing it if new. Returns
    /// whether the request already existed (the work is shared).
    pub fn wait_for(&mut self, call: &InferenceCall, waiter: B256, priority: Priority) -> bool {
        if let Some(r) = self.by_key.get_mut(&call.key) {
            r.waiters.insert(waiter);
            if priority > r.priority {
                if r.running_on.is_none() {
                    self.queue.remove(&(r.priority, call.key));
                    self.queue.insert((priority, call.key));
                }
                r.priority = priority;
            }
            return true;
        }
        self.by_key.insert(
            call.key,
            Request {
                call: Arc::new(call.clone()),
                waiters: BTreeSet::from([waiter]),
                priority,
                running_on: None,
                started_ms: None,
                attempts: 0,
                avoid: None,
            },
        );
        self.queue.insert((priority, call.key));
        false
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn running(&self) -> usize {
        self.by_key.len() - self.queue.len()
    }

    /// Queued requests, best first.
    pub fn queued_desc(&self) -> impl Iterator<Item = B256> + '_ {
        self.queue.iter().rev().map(|(_, k)| *k)
    }

    /// Marks the best queued request as running on `worker` from `now_ms`.
    pub fn start(&mut self, key: &B256, worker: usize, now_ms: u64) -> Option<Arc<InferenceCall>> {
        let r = self.by_key.get_mut(key)?;
        self.queue.remove(&(r.priority, *key));
        r.running_on = Some(worker);
        r.started_ms = Some(now_ms);
        Some(r.call.clone())
    }

    /// A run failed: back to the queue, avoiding `worker` next time.
    /// A run on `worker` failed. The request goes back in the queue (avoiding that worker
    /// next), unless nobody waits for it any more (dropped: no work for nobody), or it has
    /// failed `max_attempts` times (given up: its waiters end, with the reason).
    pub fn requeue(&mut self, key: &B256, worker: usize, max_attempts: u32) -> Retry {
        let Some(r) = self.by_key.get_mut(key) else {
            return Retry::Dropped;
        };
        r.running_on = None;
        r.started_ms = None;
        r.attempts += 1;
        r.avoid = Some(worker);
        if r.waiters.is_empty() {
            self.by_key.remove(key);
            return Retry::Dropped;
        }
        if max_attempts > 0 && r.attempts >= max_attempts {
            let r = self.by_key.remove(key).expect("present");
            return Retry::GaveUp(r);
        }
        self.queue.insert((r.priority, *key));
        Retry::Queued
    }

    /// The result is in: the request is done. Returns its waiters.
    pub fn finish(&mut self, key: &B256) -> Option<Request> {
        let r = self.by_key.remove(key)?;
        if r.running_on.is_none() {
            self.queue.remove(&(r.priority, *key));
        }
        Some(r)
    }

    /// A waiter is gone (included, rejected): a queued request nobody waits for is dropped.
    pub fn forget_waiter(&mut self, key: &B256, waiter: &B256) {
        let Some(r) = self.by_key.get_mut(key) else {
            return;
        };
        r.waiters.remove(waiter);
        if r.waiters.is_empty() && r.running_on.is_none() {
            self.queue.remove(&(r.priority, *key));
            self.by_key.remove(key);
        }
    }
}

/// One worker and what the dispatcher knows of it.
pub struct WorkerSlot {
    pub worker: Arc<dyn Worker>,
    pub in_flight: usize,
    /// Of `in_flight`, language-model runs (bounded by [`Worker::llm_capacity`]).
    pub llm_in_flight: usize,
    /// The language models it ran last, the most recent last: probably still loaded.
    pub warm: Vec<ModelId>,
    /// Consecutive failures; reset by a success.
    pub failures_in_row: u32,
    /// No new work before this time (ms): it kept failing.
    pub benched_until: u64,
    pub completed: u64,
    pub failed: u64,
    /// Caught lying by an audit: never given work again.
    pub quarantined: bool,
    /// Moving average of its successful runs, dispatch to result (ms); `None` before one.
    pub latency_ms: Option<f64>,
}

impl std::fmt::Debug for WorkerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerSlot")
            .field("name", &self.worker.name())
            .field("in_flight", &self.in_flight)
            .field("failures_in_row", &self.failures_in_row)
            .finish()
    }
}

/// The worker table.
#[derive(Debug, Default)]
pub struct Workers {
    pub slots: Vec<WorkerSlot>,
}

impl Workers {
    pub fn new(workers: Vec<Arc<dyn Worker>>) -> Self {
        Self {
            slots: workers
                .into_iter()
                .map(|worker| WorkerSlot {
                    worker,
                    in_flight: 0,
                    llm_in_flight: 0,
                    warm: Vec::new(),
                    failures_in_row: 0,
                    benched_until: 0,
                    quarantined: false,
                    completed: 0,
                    failed: 0,
                    latency_ms: None,
                })
                .collect(),
        }
    }

    /// Total capacity of the workers not benched at `now`.
    pub fn capacity(&self, now: u64) -> usize {
        self.slots
            .iter()
            .filter(|s| s.benched_until <= now && !s.quarantined)
            .map(|s| s.worker.capacity())
            .sum()
    }

    /// Whether any worker in service has a free slot at `now` (for some request).
    pub fn any_free(&self, now: u64) -> bool {
        self.slots
            .iter()
            .any(|s| s.benched_until <= now && !s.quarantined && s.in_flight < s.worker.capacity())
    }

    /// The worker for a request that needs `need`: among those in service that run its kind
    /// of model, have a free slot (and a free language-model slot for a language model) and,
    /// for a TEE request, a signing key; preferring any other than `avoid`, then one that ran
    /// the same language model last (loading one takes seconds), then the least loaded
    /// relative to its capacity.
    pub fn pick(&self, now: u64, avoid: Option<usize>, need: &Need) -> Option<usize> {
        let llm = need.kind == ModelKind::Llm;
        let free = |i: &usize| {
            let s = &self.slots[*i];
            s.benched_until <= now
                && !s.quarantined
                && s.in_flight < s.worker.capacity()
                && s.worker.runs(need.kind)
                && (!llm || s.llm_in_flight < s.worker.llm_capacity())
                && (!need.tee || s.worker.signer().is_some())
        };
        let cold = |i: &usize| llm && !self.slots[*i].warm.contains(&need.model);
        let load = |i: &usize| {
            let s = &self.slots[*i];
            (s.in_flight as u128 * 1_000_000) / s.worker.capacity().max(1) as u128
        };
        let candidates: Vec<usize> = (0..self.slots.len()).filter(free).collect();
        let preferred: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|i| Some(*i) != avoid)
            .collect();
        let pool = if preferred.is_empty() {
            candidates
        } else {
            preferred
        };
        pool.into_iter().min_by_key(|i| (cold(i), load(i), *i))
    }

    /// A run of a request that needs `need` starts on worker `i`.
    pub fn start(&mut self, i: usize, need: &Need) {
        let s = &mut self.slots[i];
        s.in_flight += 1;
        if need.kind == ModelKind::Llm {
            s.llm_in_flight += 1;
            s.warm.retain(|m| *m != need.model);
            s.warm.push(need.model);
            if s.warm.len() > WARM_LLMS {
                s.warm.remove(0);
            }
        }
    }

    /// A run ended. A failure counts against the worker; `max_failures` in a row bench it
    /// for `backoff_ms`, after which it gets one probe (one more failure benches it again).
    pub fn record(
        &mut self,
        i: usize,
        kind: ModelKind,
        ok: bool,
        now: u64,
        max_failures: u32,
        backoff_ms: u64,
    ) {
        let s = &mut self.slots[i];
        s.in_flight = s.in_flight.saturating_sub(1);
        if kind == ModelKind::Llm {
            s.llm_in_flight = s.llm_in_flight.saturating_sub(1);
        }
        if ok {
            s.completed += 1;
            s.failures_in_row = 0;
        } else {
            s.failed += 1;
            s.failures_in_row += 1;
            if s.failures_in_row >= max_failures {
                s.benched_until = now + backoff_ms;
                s.failures_in_row = max_failures.saturating_sub(1);
            }
        }
    }

    /// Takes worker `i` out of service for good (an audit caught it lying).
    pub fn quarantine(&mut self, i: usize) {
        self.slots[i].quarantined = true;
    }

    /// The earliest time a benched worker comes back, if any is benched.
    pub fn next_return(&self, now: u64) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| !s.quarantined)
            .map(|s| s.benched_until)
            .filter(|&t| t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use pipe_primitives::InferenceResult;

    use crate::WorkerError;

    fn need(tee: bool, kind: ModelKind, model: u8) -> Need {
        Need {
            tee,
            kind,
            model: ModelId([model; 32]),
        }
    }

    fn plain() -> Need {
        need(false, ModelKind::Onnx, 1)
    }

    fn tee() -> Need {
        need(true, ModelKind::Onnx, 1)
    }

    /// A worker double: its capacity, whether it signs TEE results, the kinds it runs and
    /// its own bound on language-model runs.
    struct Kinds {
        capacity: usize,
        signs: bool,
        llm_capacity: usize,
        onnx: bool,
        llm: bool,
    }
    impl Worker for Kinds {
        fn name(&self) -> &str {
            "double"
        }
        fn capacity(&self) -> usize {
            self.capacity
        }
        fn signer(&self) -> Option<alloy_primitives::Address> {
            self.signs
                .then_some(alloy_primitives::Address::repeat_byte(7))
        }
        fn runs(&self, kind: ModelKind) -> bool {
            match kind {
                ModelKind::Onnx => self.onnx,
                ModelKind::Llm => self.llm,
            }
        }
        fn llm_capacity(&self) -> usize {
            self.llm_capacity
        }
        fn run(
            &self,
            _: Arc<InferenceCall>,
        ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
            Box::pin(async { Err(WorkerError::Failed("unused".into())) })
        }
    }

    /// Runs every kind; `signs` TEE results or not.
    fn runs_all(capacity: usize, signs: bool) -> Kinds {
        Kinds {
            capacity,
            signs,
            llm_capacity: capacity,
            onnx: true,
            llm: true,
        }
    }

    #[test]
    fn priority_is_tip_then_work_done_then_arrival() {
        let p = Priority::new;
        assert!(p(2, 9) > p(1, 0));
        assert!(p(1, 0) > p(1, 1));
        // An early transaction's eighth request waits behind a later one's first...
        let eighth = Priority {
            consumed: 7,
            ..p(1, 0)
        };
        assert!(p(1, 5) > eighth);
        // ...unless it pays a higher tip.
        assert!(Priority { tip: 2, ..eighth } > p(1, 5));
    }

    #[test]
    fn picks_least_loaded_and_avoids_the_failed_one_and_benches_repeat_failures() {
        let mut w = Workers::new(vec![
            Arc::new(runs_all(2, false)),
            Arc::new(runs_all(4, false)),
        ]);
        assert_eq!(w.pick(0, None, &plain()), Some(0));
        w.slots[0].in_flight = 1; // a at 1/2, b at 0/4
        assert_eq!(w.pick(0, None, &plain()), Some(1));
        assert_eq!(w.pick(0, Some(1), &plain()), Some(0));
        w.slots[0].in_flight = 2; // a full: the avoided one is still better than nothing
        assert_eq!(w.pick(0, Some(1), &plain()), Some(1));
        for _ in 0..3 {
            w.slots[1].in_flight += 1;
            w.record(1, ModelKind::Onnx, false, 100, 3, 1_000);
        }
        assert_eq!(w.slots[1].benched_until, 1_100);
        assert_eq!(w.pick(500, None, &plain()), None, "a is full, b is benched");
        assert_eq!(w.next_return(500), Some(1_100));
        assert_eq!(w.capacity(500), 2);
        assert_eq!(
            w.pick(1_100, None, &plain()),
            Some(1),
            "back after the backoff"
        );
        w.slots[1].in_flight += 1;
        w.record(1, ModelKind::Onnx, false, 1_100, 3, 1_000);
        assert_eq!(
            w.slots[1].benched_until, 2_100,
            "one failed probe benches again"
        );
    }

    #[test]
    fn tee_requests_go_only_to_signing_workers() {
        let mut w = Workers::new(vec![
            Arc::new(runs_all(1, false)),
            Arc::new(runs_all(1, true)),
        ]);
        assert_eq!(w.pick(0, None, &tee()), Some(1));
        assert_eq!(w.pick(0, Some(1), &tee()), Some(1), "no other can sign");
        w.slots[1].in_flight = 1;
        assert_eq!(w.pick(0, None, &tee()), None, "the signer is busy");
        assert_eq!(
            w.pick(0, None, &plain()),
            Some(0),
            "VANILLA work still goes out"
        );
    }

    #[test]
    fn language_model_work_goes_where_it_runs_is_bounded_and_follows_the_loaded_model() {
        let kinds = |capacity, llm_capacity, onnx, llm| -> Arc<dyn Worker> {
            Arc::new(Kinds {
                capacity,
                signs: false,
                llm_capacity,
                onnx,
                llm,
            })
        };
        let mut w = Workers::new(vec![
            kinds(4, 0, true, false), // ONNX only
            kinds(4, 1, true, true),  // both, one LLM run at a time
            kinds(2, 2, false, true), // LLMs only
        ]);
        let llm = |model| need(false, ModelKind::Llm, model);
        // Never to a worker that does not run it.
        assert_eq!(w.pick(0, None, &llm(7)), Some(1));
        w.start(1, &llm(7));
        // Worker 1's one LLM slot is taken: the next LLM request goes to 2, an ONNX request
        // still to the least loaded ONNX worker.
        assert_eq!(w.pick(0, None, &llm(7)), Some(2));
        assert_eq!(w.pick(0, None, &plain()), Some(0));
        w.start(2, &llm(8));
        // 1 finishes. Model 7 goes back to 1, which ran it last; model 8 to 2, which has it
        // loaded, although 2 is half full and 1 is empty.
        w.record(1, ModelKind::Llm, true, 0, 3, 1_000);
        assert_eq!(w.pick(0, None, &llm(7)), Some(1));
        assert_eq!(w.pick(0, None, &llm(8)), Some(2));
        // A worker remembers the last two models it ran.
        w.start(1, &llm(9));
        w.record(1, ModelKind::Llm, true, 0, 3, 1_000);
        w.start(1, &llm(10));
        w.record(1, ModelKind::Llm, true, 0, 3, 1_000);
        assert_eq!(w.slots[1].warm, vec![ModelId([9; 32]), ModelId([10; 32])]);
        assert_eq!(w.slots[1].llm_in_flight, 0);
        assert_eq!(w.slots[1].in_flight, 0);
        // ONNX work never counts against the LLM bound.
        w.start(1, &plain());
        w.start(1, &plain());
        assert_eq!(w.pick(0, None, &llm(10)), Some(1));
        // With no worker that runs a kind, nothing is picked (the request waits).
        let onnx_only = Workers::new(vec![kinds(4, 4, true, false)]);
        assert_eq!(onnx_only.pick(0, None, &llm(7)), None);
        assert!(onnx_only.any_free(0));
    }

    #[test]
    fn a_failed_request_is_retried_given_up_or_dropped() {
        let mut r = Requests::default();
        let p = Priority::new(1, 0);
        let (k, waiter) = (B256::repeat_byte(1), B256::repeat_byte(0xaa));
        r.wait_for(&crate::test_utils::call(1), waiter, p);
        // Two failures of three allowed: back in the queue each time, avoiding the worker.
        for attempt in 1..=2 {
            r.start(&k, 0, 0).unwrap();
            assert!(matches!(r.requeue(&k, 0, 3), Retry::Queued));
            assert_eq!(r.by_key[&k].attempts, attempt);
            assert_eq!(r.by_key[&k].avoid, Some(0));
            assert_eq!(r.queued(), 1);
        }
        // The third: given up, with its waiters, and gone from the queue.
        r.start(&k, 1, 0).unwrap();
        match r.requeue(&k, 1, 3) {
            Retry::GaveUp(req) => {
                assert_eq!(req.waiters.into_iter().collect::<Vec<_>>(), vec![waiter])
            }
            other => panic!("{other:?}"),
        }
        assert_eq!((r.queued(), r.running()), (0, 0));

        // Nobody waits any more (its transaction ended while it ran): not run again.
        let k2 = B256::repeat_byte(2);
        r.wait_for(&crate::test_utils::call(2), waiter, p);
        r.start(&k2, 0, 0).unwrap();
        r.forget_waiter(&k2, &waiter);
        assert!(matches!(r.requeue(&k2, 0, 3), Retry::Dropped));
        assert_eq!((r.queued(), r.running()), (0, 0));
    }
}
