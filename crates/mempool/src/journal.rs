//! The pool's persistence: accepted transactions are written durably before they are
//! acknowledged, removed ones are forgotten, and a restart reads them back.
//!
//! # Group commit
//! An fsync costs milliseconds; one per transaction would cap ingestion at a few hundred per
//! second. One thread owns the writes: it takes the first queued operation, then everything
//! queued behind it (up to [`MAX_BATCH`]), writes them in order in one storage transaction
//! with a single fsync, and answers every waiting acknowledgement with the outcome. While one
//! batch is being synced the next one gathers, so the batch grows with the load and the cost
//! per transaction falls.
//!
//! # Faults
//! A failed write (a full disk, say) fails every acknowledgement in its batch: the caller
//! tells the client its transaction was not accepted. Nothing is latched: the next batch tries
//! again, so the node resumes by itself when space returns. Forgetting is not acknowledged to
//! anyone; if it fails the transaction comes back at the next start and is validated again.

use std::{fmt, sync::Arc, thread::JoinHandle};

use alloy_primitives::{B256, Bytes};
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tracing::warn;

/// Most operations written with one fsync.
pub const MAX_BATCH: usize = 4096;

/// Why the pool could not persist a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PersistError(pub String);

/// One write to the persisted pending set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PoolWrite {
    /// A transaction's EIP-2718 bytes under its hash.
    Put(B256, Bytes),
    Delete(B256),
}

/// Where the pool keeps its transactions: the seam between the pool and storage. The node
/// uses its redb store; tests use [`MemoryPoolStore`].
pub trait PoolStore: Send + Sync + fmt::Debug {
    /// Applies `writes` in order, all or nothing; with `durable`, on disk before returning.
    fn write(&self, writes: &[PoolWrite], durable: bool) -> Result<(), PersistError>;
    /// Every persisted transaction's bytes.
    fn load(&self) -> Result<Vec<Bytes>, PersistError>;
}

impl PoolStore for pipe_storage::PendingLog {
    fn write(&self, writes: &[PoolWrite], durable: bool) -> Result<(), PersistError> {
        let ops: Vec<(B256, Option<Bytes>)> = writes
            .iter()
            .map(|w| match w {
                PoolWrite::Put(hash, raw) => (*hash, Some(raw.clone())),
                PoolWrite::Delete(hash) => (*hash, None),
            })
            .collect();
        pipe_storage::PendingLog::write(self, &ops, durable)
            .map_err(|e| PersistError(format!("cannot persist pending transactions: {e}")))
    }

    fn load(&self) -> Result<Vec<Bytes>, PersistError> {
        Ok(pipe_storage::PendingLog::load(self))
    }
}

/// A [`PoolStore`] in memory, for tests: it counts durable writes and can be told to fail,
/// like a full disk.
#[derive(Debug, Default)]
pub struct MemoryPoolStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    txs: std::collections::BTreeMap<B256, Bytes>,
    failing: bool,
    syncs: usize,
}

impl MemoryPoolStore {
    /// Every write fails while `failing` is set.
    pub fn set_failing(&self, failing: bool) {
        self.inner.lock().failing = failing;
    }

    /// Durable writes so far (one per batch).
    pub fn syncs(&self) -> usize {
        self.inner.lock().syncs
    }

    pub fn contains(&self, hash: &B256) -> bool {
        self.inner.lock().txs.contains_key(hash)
    }

    pub fn len(&self) -> usize {
        self.inner.lock().txs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PoolStore for MemoryPoolStore {
    fn write(&self, writes: &[PoolWrite], durable: bool) -> Result<(), PersistError> {
        let mut inner = self.inner.lock();
        if inner.failing {
            return Err(PersistError("no space left on device".into()));
        }
        for w in writes {
            match w {
                PoolWrite::Put(hash, raw) => {
                    inner.txs.insert(*hash, raw.clone());
                }
                PoolWrite::Delete(hash) => {
                    inner.txs.remove(hash);
                }
            }
        }
        if durable {
            inner.syncs += 1;
        }
        Ok(())
    }

    fn load(&self) -> Result<Vec<Bytes>, PersistError> {
        Ok(self.inner.lock().txs.values().cloned().collect())
    }
}

enum Op {
    Put(B256, Bytes, oneshot::Sender<Result<(), PersistError>>),
    Delete(Vec<B256>),
}

/// The writer thread and the queue to it.
pub(crate) struct Journal {
    store: Arc<dyn PoolStore>,
    queue: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("store", &self.store)
            .finish()
    }
}

impl Journal {
    pub(crate) fn start(store: Arc<dyn PoolStore>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = store.clone();
        let thread = std::thread::Builder::new()
            .name("pipe-pool-journal".into())
            .spawn(move || write_loop(writer.as_ref(), rx))?;
        Ok(Self {
            store,
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub(crate) fn store(&self) -> &Arc<dyn PoolStore> {
        &self.store
    }

    /// Resolves once `raw` is durable (or could not be made so).
    pub(crate) async fn put(&self, hash: B256, raw: Bytes) -> Result<(), PersistError> {
        let (tx, rx) = oneshot::channel();
        let queued = match &*self.queue.lock() {
            Some(q) => q.send(Op::Put(hash, raw, tx)).is_ok(),
            None => false,
        };
        if !queued {
            return Err(PersistError("the node is shutting down".into()));
        }
        rx.await
            .unwrap_or_else(|_| Err(PersistError("the pool's journal stopped".into())))
    }

    /// Queues the deletion of `hashes`; nobody waits for it.
    pub(crate) fn delete(&self, hashes: Vec<B256>) {
        if hashes.is_empty() {
            return;
        }
        if let Some(q) = &*self.queue.lock() {
            let _ = q.send(Op::Delete(hashes));
        }
    }

    /// Writes what is queued, then stops the thread and waits for it.
    pub(crate) fn close(&self) {
        drop(self.queue.lock().take());
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(store: &dyn PoolStore, rx: std::sync::mpsc::Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let mut writes = Vec::with_capacity(ops.len());
        let mut waiting = Vec::new();
        for op in ops {
            match op {
                Op::Put(hash, raw, done) => {
                    writes.push(PoolWrite::Put(hash, raw));
                    waiting.push(done);
                }
                Op::Delete(hashes) => writes.extend(hashes.into_iter().map(PoolWrite::Delete)),
            }
        }
        let outcome = store.write(&writes, !waiting.is_empty());
        if let Err(e) = &outcome {
            warn!(target: "pipe::pool", error = %e, writes = writes.len(), "journal write failed");
        }
        for done in waiting {
            let _ = done.send(outcome.clone());
        }
    }
}
