//! The pipeline as a person watching it sees it: every live transaction with its state, the
//! request queue, the workers, the recent blocks and the transactions that just ended. One
//! consistent read under the state lock, bounded in size whatever the load, for the node's
//! live page ([`Pipe::pipeline`]).

use alloy_primitives::{Address, B256};
use pipe_primitives::status::{Lifecycle, RequestState};
use serde::Serialize;

use super::{BlockCongestion, Pipe};

/// Most live transactions listed (the oldest first); the counts cover all of them.
pub const VIEW_TRANSACTIONS: usize = 200;
/// Most requests listed (running ones, then the queue in priority order).
pub const VIEW_REQUESTS: usize = 100;
/// Ended transactions listed, the newest first.
pub const VIEW_ENDED: usize = 50;
/// Recent blocks listed, the newest last.
pub const VIEW_BLOCKS: usize = 64;

/// A snapshot of the pipeline.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PipelineView {
    /// Live transactions by state (`pending`, `awaitingInference`, `ready`, `deferred`, …).
    pub counts: std::collections::BTreeMap<&'static str, usize>,
    pub transactions: Vec<LiveTx>,
    pub ended: Vec<EndedTx>,
    pub queued: usize,
    pub running: usize,
    pub requests: Vec<RequestView>,
    pub workers: Vec<WorkerView>,
    pub blocks: Vec<BlockCongestion>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LiveTx {
    pub hash: B256,
    pub sender: Address,
    pub nonce: u64,
    pub status: Lifecycle,
    /// Requests discovered and those not computed yet.
    pub requests: usize,
    pub outstanding: usize,
    /// Why it was deferred (left out of a block, or carried over).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub arrived_at: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndedTx {
    pub hash: B256,
    pub status: Lifecycle,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestView {
    pub key: B256,
    pub model: String,
    pub state: RequestState,
    /// Transactions waiting for it.
    pub waiters: usize,
    pub attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub name: String,
    pub capacity: usize,
    pub in_flight: usize,
    pub completed: u64,
    pub failed: u64,
    /// Moving average of its successful runs, dispatch to result.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Out of service for a while after failures in a row.
    pub benched: bool,
    /// Caught lying by an audit: never used again.
    pub quarantined: bool,
}

impl Pipe {
    /// The pipeline now.
    pub fn pipeline(&self) -> PipelineView {
        self.apply_pool_events();
        let now = self.clock.now_ms();
        let st = self.state.lock();
        let mut counts = std::collections::BTreeMap::new();
        let mut live: Vec<LiveTx> = st
            .txs
            .iter()
            .map(|(hash, e)| {
                let status = e.lifecycle();
                *counts.entry(status.as_str()).or_insert(0) += 1;
                LiveTx {
                    hash: *hash,
                    sender: e.sender,
                    nonce: e.nonce,
                    status,
                    requests: e.keys.len(),
                    outstanding: e.keys.iter().filter(|k| !self.cache.contains(k)).count(),
                    reason: e.deferred.map(|d| d.reason()),
                    arrived_at: e.arrived_at,
                }
            })
            .collect();
        // The oldest ones, without sorting a pool of any size under the lock.
        let order = |t: &LiveTx| (t.arrived_at, t.sender, t.nonce);
        if live.len() > VIEW_TRANSACTIONS {
            live.select_nth_unstable_by_key(VIEW_TRANSACTIONS, order);
            live.truncate(VIEW_TRANSACTIONS);
        }
        live.sort_by_key(order);
        let ended = st
            .finished_order
            .iter()
            .rev()
            .filter_map(|h| st.finished.get(h))
            .take(VIEW_ENDED)
            .map(|s| EndedTx {
                hash: s.hash,
                status: s.status,
                block_number: s.block_number,
                reason: s.reason.clone(),
            })
            .collect();
        let worker_name = |i: usize| st.workers.slots.get(i).map(|s| s.worker.name().to_string());
        let running = st
            .requests
            .by_key
            .iter()
            .filter(|(_, r)| r.running_on.is_some());
        let queued = st
            .requests
            .queued_desc()
            .filter_map(|k| st.requests.by_key.get_key_value(&k));
        let requests = running
            .chain(queued)
            .take(VIEW_REQUESTS)
            .map(|(key, r)| RequestView {
                key: *key,
                model: r.call.model.name.clone(),
                state: if r.running_on.is_some() {
                    RequestState::Running
                } else {
                    RequestState::Queued
                },
                waiters: r.waiters.len(),
                attempts: r.attempts,
                worker: r.running_on.and_then(worker_name),
            })
            .collect();
        let workers = st
            .workers
            .slots
            .iter()
            .map(|s| WorkerView {
                name: s.worker.name().to_string(),
                capacity: s.worker.capacity(),
                in_flight: s.in_flight,
                completed: s.completed,
                failed: s.failed,
                latency_ms: s.latency_ms.map(|ms| ms.round() as u64),
                benched: s.benched_until > now,
                quarantined: s.quarantined,
            })
            .collect();
        let view = PipelineView {
            counts,
            transactions: live,
            ended,
            queued: st.requests.queued(),
            running: st.requests.running(),
            requests,
            workers,
            blocks: Vec::new(),
        };
        drop(st);
        let blocks = {
            let history = self.blocks.lock();
            let skip = history.len().saturating_sub(VIEW_BLOCKS);
            history.iter().skip(skip).copied().collect()
        };
        PipelineView { blocks, ..view }
    }
}
