//! A transaction's lifecycle in the inference mempool, as `pipe_getTransactionStatus`
//! reports it.
//!
//! `pending → simulating → awaiting_inference → ready → included`, or on the side `deferred`
//! (left out of a block, with the reason, and back to discovery), `expired` and `rejected`
//! (with the reason), `replaced` and `evicted` (with the transaction that took its place).
//! Included, expired, rejected, replaced and evicted are final.

use alloy_primitives::B256;
use serde::{Deserialize, Serialize};

/// Where a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    /// Accepted; waiting for discovery, or for the sender's earlier nonce to be ready.
    Pending,
    /// Being simulated.
    Simulating,
    /// Its simulation stopped at requests whose results are being computed.
    AwaitingInference,
    /// Simulated through with every result known: the builder may include it.
    Ready,
    /// Left out of a block (its result went stale) and back in discovery.
    Deferred,
    Included,
    Expired,
    Rejected,
    /// A transaction with the same sender and nonce, paying more, took its place.
    Replaced,
    /// The pool was full and a transaction paying more took its place.
    Evicted,
}

impl Lifecycle {
    /// Whether the transaction's life is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Lifecycle::Included
                | Lifecycle::Expired
                | Lifecycle::Rejected
                | Lifecycle::Replaced
                | Lifecycle::Evicted
        )
    }

    /// The name the RPC uses (its serde name), for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Pending => "pending",
            Lifecycle::Simulating => "simulating",
            Lifecycle::AwaitingInference => "awaiting_inference",
            Lifecycle::Ready => "ready",
            Lifecycle::Deferred => "deferred",
            Lifecycle::Included => "included",
            Lifecycle::Expired => "expired",
            Lifecycle::Rejected => "rejected",
            Lifecycle::Replaced => "replaced",
            Lifecycle::Evicted => "evicted",
        }
    }
}

/// Where one of a transaction's inference requests is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for a worker.
    Queued,
    /// On a worker.
    Running,
    /// The result is known.
    Done,
}

/// One request of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    pub key: B256,
    pub state: RequestState,
}

/// The answer of `pipe_getTransactionStatus`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TxStatus {
    pub hash: B256,
    pub status: Lifecycle,
    /// The block that included it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub block_number: Option<u64>,
    /// Why it was deferred, expired or rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Requests still being computed.
    pub outstanding: usize,
    /// While it awaits a queued request: queued requests that go to a worker before it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ahead: Option<usize>,
    /// Every request discovered so far.
    pub requests: Vec<RequestStatus>,
    /// Simulations run (discovery rounds, including re-simulations after a stale result).
    pub simulations: u32,
    /// Times it was left out of a block because a result went stale.
    pub stale: u32,
    /// The head block when all its results were first in (it could be in the block after).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ready_at: Option<u64>,
    /// While it awaits inference: the estimated milliseconds until its request's result is in
    /// (requests ahead per round of the workers' slots, times the model's observed run time).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub eta_ms: Option<u64>,
}

impl TxStatus {
    /// `status`, with nothing known of requests or simulations.
    pub fn new(hash: B256, status: Lifecycle) -> Self {
        Self {
            hash,
            status,
            block_number: None,
            reason: None,
            outstanding: 0,
            ahead: None,
            requests: Vec::new(),
            simulations: 0,
            stale: 0,
            ready_at: None,
            eta_ms: None,
        }
    }

    /// A transaction known only from the chain.
    pub fn included(hash: B256, block_number: u64) -> Self {
        Self {
            block_number: Some(block_number),
            ..Self::new(hash, Lifecycle::Included)
        }
    }
}
