//! Dispatch on controlled time: a worker that hangs is timed out and the request retried on
//! another; requests go out in priority order and equal keys run once; a worker that keeps
//! failing is benched until its backoff has passed. Time only moves when the test advances the
//! manual clock; the workers are scripted.

use std::{sync::Arc, time::Duration};

use alloy_consensus::Header;
use alloy_primitives::{B256, Bytes, U256};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use pipe_executor::{Executor, InferenceCall, InferenceProvider, Purpose};
use pipe_inference_pool::{Pipe, PipeConfig, Priority, Worker, WorkerError};
use pipe_mempool::{Pool, PoolConfig};
use pipe_primitives::{
    ChainConfig, Clock, InferenceResult, ManualClock, ModelId, ModelMeta, SealedBlock,
    inference::InferenceMode,
};
use pipe_storage::Store;
use tokio::sync::watch;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Answer,
    Hang,
    Fail,
}

struct Scripted {
    name: &'static str,
    capacity: usize,
    behaviour: Behaviour,
    runs: Arc<Mutex<Vec<B256>>>,
}

impl Scripted {
    fn spawn(name: &'static str, behaviour: Behaviour) -> (Arc<dyn Worker>, Arc<Mutex<Vec<B256>>>) {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let w = Self {
            name,
            capacity: 1,
            behaviour,
            runs: runs.clone(),
        };
        (Arc::new(w), runs)
    }
}

impl Worker for Scripted {
    fn name(&self) -> &str {
        self.name
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn run(
        &self,
        call: Arc<InferenceCall>,
    ) -> BoxFuture<'static, Result<InferenceResult, WorkerError>> {
        self.runs.lock().push(call.key);
        let behaviour = self.behaviour;
        Box::pin(async move {
            match behaviour {
                Behaviour::Answer => Ok(InferenceResult::output(call.key, Bytes::new())),
                Behaviour::Hang => std::future::pending().await,
                Behaviour::Fail => Err(WorkerError::Unreachable("scripted".into())),
            }
        })
    }
}

#[derive(Debug)]
struct NoModels;
impl InferenceProvider for NoModels {
    fn model(&self, _: &ModelId) -> Option<ModelMeta> {
        None
    }
    fn infer(&self, _: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        None
    }
}

fn call(n: u8) -> InferenceCall {
    InferenceCall {
        key: B256::repeat_byte(n),
        request: Default::default(),
        mode: InferenceMode::Vanilla,
        model: ModelMeta {
            id: ModelId::of(b"m"),
            name: "m".into(),
            size_bytes: 1,
            inputs: vec![],
            outputs: vec![],
            decimals: 0,
            cost_units: 1,
            operators: vec![],
        },
        inputs: vec![],
    }
}

fn tip(tip: u128, arrival: u64) -> Priority {
    Priority { tip, arrival }
}

struct Harness {
    pipe: Arc<Pipe>,
    clock: ManualClock,
    shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

fn harness(workers: Vec<Arc<dyn Worker>>, config: PipeConfig) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("chain.redb")).unwrap());
    let chain = Arc::new(ChainConfig::dev([], U256::ZERO));
    let pool = Arc::new(Pool::new(PoolConfig::new(chain.chain_id, chain.gas_limit)));
    let clock = ManualClock::new(1_000_000);
    let (_, head) = watch::channel(Arc::new(SealedBlock::new(
        Header::default(),
        vec![],
        vec![],
    )));
    let pipe = Pipe::new(
        config,
        pool,
        store,
        Executor::new(chain),
        Arc::new(NoModels),
        workers,
        Arc::new(clock.clone()) as Arc<dyn Clock>,
        head,
    );
    let (shutdown, _) = watch::channel(false);
    Harness {
        pipe,
        clock,
        shutdown,
        _dir: dir,
    }
}

impl Harness {
    fn start(&self) {
        self.pipe.spawn(self.shutdown.subscribe());
    }
}

/// Waits (on real time, briefly) for something the dispatch task does without any clock
/// movement; panics if it never happens.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..2000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("never happened: {what}");
}

fn metric(pipe: &Pipe, line_start: &str) -> f64 {
    let text = pipe.render_metrics();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in\n{text}"))
}

#[tokio::test]
async fn a_hanging_worker_times_out_on_the_clock_and_another_worker_answers() {
    let (a, a_runs) = Scripted::spawn("a", Behaviour::Hang);
    let (b, b_runs) = Scripted::spawn("b", Behaviour::Answer);
    let config = PipeConfig {
        worker_timeout_ms: 1_000,
        ..PipeConfig::default()
    };
    let h = harness(vec![a, b], config);
    h.start();
    let k = call(1);
    h.pipe.enqueue(&k, B256::repeat_byte(0xaa), tip(1, 0));
    eventually("a runs the request", || a_runs.lock().len() == 1).await;
    // Real time passes, the manual clock does not: no timeout yet.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b_runs.lock().is_empty());
    assert!(!h.pipe.cache().contains(&k.key));
    h.clock.advance(Duration::from_millis(999));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(b_runs.lock().is_empty(), "timed out a millisecond early");
    h.clock.advance(Duration::from_millis(1));
    eventually("b answers after a timed out", || {
        h.pipe.cache().contains(&k.key)
    })
    .await;
    assert_eq!(*b_runs.lock(), vec![k.key]);
    assert_eq!(metric(&h.pipe, "pipe_retries_total"), 1.0);
    assert_eq!(
        metric(&h.pipe, "pipe_worker_failures_total{worker=\"a\"}"),
        1.0
    );
    let _ = h.shutdown.send(true);
}

#[tokio::test]
async fn requests_go_out_by_priority_and_equal_keys_run_once() {
    let (w, runs) = Scripted::spawn("w", Behaviour::Answer);
    let h = harness(vec![w], PipeConfig::default());
    let (k1, k2, k3) = (call(1), call(2), call(3));
    assert!(!h.pipe.enqueue(&k1, B256::repeat_byte(0xa1), tip(1, 0)));
    assert!(!h.pipe.enqueue(&k2, B256::repeat_byte(0xa2), tip(5, 1)));
    assert!(!h.pipe.enqueue(&k3, B256::repeat_byte(0xa3), tip(3, 2)));
    // A second transaction asking the same thing as the first, with a better tip: shared,
    // and the request moves up.
    assert!(h.pipe.enqueue(&k1, B256::repeat_byte(0xa4), tip(4, 3)));
    h.start();
    eventually("all three ran", || runs.lock().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(*runs.lock(), vec![k2.key, k1.key, k3.key]);
    let _ = h.shutdown.send(true);
}

#[tokio::test]
async fn a_failing_worker_is_benched_until_its_backoff_passes() {
    let (w, runs) = Scripted::spawn("w", Behaviour::Fail);
    let config = PipeConfig {
        worker_max_failures: 3,
        worker_backoff_ms: 5_000,
        ..PipeConfig::default()
    };
    let h = harness(vec![w], config);
    h.start();
    h.pipe.enqueue(&call(7), B256::repeat_byte(0xbb), tip(1, 0));
    eventually("three failed attempts", || runs.lock().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(runs.lock().len(), 3, "benched: no fourth attempt");
    assert_eq!(h.pipe.capacity(), 0);
    h.clock.advance(Duration::from_millis(4_999));
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(runs.lock().len(), 3);
    h.clock.advance(Duration::from_millis(1));
    eventually("one probe after the backoff", || runs.lock().len() == 4).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(runs.lock().len(), 4, "the failed probe benches it again");
    let _ = h.shutdown.send(true);
}
