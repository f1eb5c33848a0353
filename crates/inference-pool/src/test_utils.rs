//! Test doubles for PIPE, shared by this crate's tests and anyone testing against it (feature
//! `test-utils`): scripted workers, a harness with a manual clock, and [`settle`] for running
//! everything on one thread.
//!
//! On a current-thread runtime with [`Tasks::inline`], PIPE's loops, its discovery passes
//! and the scripted workers all run on the test's thread: nothing moves unless the test
//! advances the clock or yields, and the same test gives the same order every time.

use std::sync::Arc;

use alloy_consensus::Header;
use alloy_primitives::{B256, Bytes, U256};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use pipe_executor::{Executor, InferenceCall};
use pipe_mempool::{Pool, PoolConfig};
use pipe_primitives::{
    ChainConfig, Clock, InferenceResult, ManualClock, ModelId, ModelMeta, SealedBlock, Tasks,
    inference::InferenceMode,
};
use pipe_storage::Store;
use tokio::sync::watch;

use crate::{Pipe, PipeConfig, Worker, WorkerError};

/// What a [`ScriptedWorker`] does with each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers at once with an empty output.
    Answer,
    /// Never answers (a worker that hangs: only a timeout ends the run).
    Hang,
    /// Fails at once, as an unreachable worker does.
    Fail,
    /// Answers at once with a forged output (the bytes `forged`).
    Lie,
}

/// A worker that does what its script says and records the keys it was asked for.
#[derive(Debug)]
pub struct ScriptedWorker {
    name: String,
    capacity: usize,
    behaviour: Behaviour,
    runs: Arc<Mutex<Vec<B256>>>,
}

impl ScriptedWorker {
    /// A worker with one slot; returns it with the record of its runs.
    pub fn create(name: &str, behaviour: Behaviour) -> (Arc<dyn Worker>, Arc<Mutex<Vec<B256>>>) {
        Self::with_capacity(name, behaviour, 1)
    }

    pub fn with_capacity(
        name: &str,
        behaviour: Behaviour,
        capacity: usize,
    ) -> (Arc<dyn Worker>, Arc<Mutex<Vec<B256>>>) {
        let runs = Arc::new(Mutex::new(Vec::new()));
        let worker = Self {
            name: name.to_string(),
            capacity,
            behaviour,
            runs: runs.clone(),
        };
        (Arc::new(worker), runs)
    }
}

impl Worker for ScriptedWorker {
    fn name(&self) -> &str {
        &self.name
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Scripted workers stand in for remote ones: their word is audited when PIPE has an
    /// auditor.
    fn audited(&self) -> bool {
        true
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
                Behaviour::Lie => Ok(InferenceResult::output(
                    call.key,
                    Bytes::from_static(b"forged"),
                )),
            }
        })
    }
}

/// The node's own run, as honest scripted workers answer: an empty output.
#[derive(Debug, Default)]
pub struct HonestAuditor;

impl crate::Auditor for HonestAuditor {
    fn recompute(&self, call: &InferenceCall) -> Result<InferenceResult, String> {
        Ok(InferenceResult::output(call.key, Bytes::new()))
    }
}

/// A request for key `[n; 32]` on a one-unit model.
pub fn call(n: u8) -> InferenceCall {
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
            kind: pipe_primitives::ModelKind::Onnx,
            llm: None,
        },
        task: pipe_executor::inference::Task::Model {
            request: Default::default(),
            inputs: vec![],
        },
    }
}

/// PIPE over an empty store and pool, on a manual clock.
pub struct Harness {
    pub pipe: Arc<Pipe>,
    pub pool: Arc<Pool>,
    pub clock: ManualClock,
    pub tasks: Tasks,
    pub shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Harness {
    /// `workers` under `config`; PIPE's tasks go to `tasks` once [`Harness::start`]ed.
    pub fn new(workers: Vec<Arc<dyn Worker>>, config: PipeConfig, tasks: Tasks) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Arc::new(Store::open(&dir.path().join("chain.redb")).expect("a store"));
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
            pool.clone(),
            store,
            Executor::new(chain),
            Arc::new(pipe_chain::test_utils::NoModels),
            workers,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            head,
        );
        let (shutdown, _) = watch::channel(false);
        Self {
            pipe,
            pool,
            clock,
            tasks,
            shutdown,
            _dir: dir,
        }
    }

    /// Starts discovery and dispatch.
    pub fn start(&self) {
        self.pipe.spawn(&self.tasks, self.shutdown.subscribe());
    }

    /// Stops PIPE and waits until every task it started has ended.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        self.tasks.wait().await;
    }
}

/// Lets every task on a current-thread runtime run until none can make progress without the
/// clock (or a real wait) moving.
pub async fn settle() {
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}
