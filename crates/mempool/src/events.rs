//! What the pool tells the rest of the node: every transaction that enters or leaves it, and
//! why it left.

use std::sync::Arc;

use alloy_primitives::B256;

use crate::PoolTx;

/// One change to the pool, delivered in the pool's order.
#[derive(Clone, Debug)]
pub enum PoolEvent {
    /// Accepted (and, on a pool with a journal, durable), possibly replacing a transaction of
    /// the same sender and nonce; the replaced one also gets a [`PoolEvent::Removed`].
    Added {
        tx: Arc<PoolTx>,
        replaced: Option<B256>,
    },
    /// Left the pool.
    Removed { hash: B256, reason: RemovalReason },
}

/// Why a transaction left the pool. Every way out is here: a transaction never just vanishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemovalReason {
    /// Included in finalized block `block`.
    Included { block: u64 },
    /// A transaction with the same sender and nonce, paying more, took its place.
    Replaced { by: B256 },
    /// The pool was full and `by`, paying more, took its place.
    Evicted { by: B256 },
    /// A finalized block used its nonce for another transaction of the sender.
    NonceUsed,
    /// Dropped by a driver or by PIPE (invalid, rejected, expired), with the reason.
    Dropped { reason: String },
    /// An earlier nonce of its sender was dropped, and it cannot be included without it.
    DependsOn { hash: B256 },
}

impl RemovalReason {
    /// A sentence for statuses and logs.
    pub fn describe(&self) -> String {
        match self {
            RemovalReason::Included { block } => format!("included in block {block}"),
            RemovalReason::Replaced { by } => format!("replaced by {by}"),
            RemovalReason::Evicted { by } => {
                format!("evicted from the full pool by {by}, which pays more")
            }
            RemovalReason::NonceUsed => {
                "removed from the pool: its nonce was used by another transaction".into()
            }
            RemovalReason::Dropped { reason } => reason.clone(),
            RemovalReason::DependsOn { hash } => {
                format!("an earlier transaction of the sender ({hash}) was dropped")
            }
        }
    }
}

/// Hears every [`PoolEvent`]. Called under the pool's lock, so events arrive in the pool's
/// order and none is missed between two reads of the pool; an implementation must only queue
/// the event and wake whoever handles it, and must never call back into the pool.
pub trait PoolListener: Send + Sync {
    fn on_event(&self, event: &PoolEvent);

    /// Whether transaction `hash` may be replaced by another of its sender and nonce;
    /// `Err(reason)` refuses the replacement ([`crate::PoolErrorKind::ReplacementRefused`]).
    /// PIPE refuses once inference was requested for it: the work is paid only if the
    /// transaction is included, so swapping it for one that does not use it would leave
    /// the work unpaid. Called under the pool's lock, like `on_event`, with the same rules.
    fn may_replace(&self, _hash: &B256) -> Result<(), String> {
        Ok(())
    }
}
