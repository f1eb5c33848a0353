//! Polled filters (`eth_newFilter`, `eth_newBlockFilter`, `eth_newPendingTransactionFilter`,
//! `eth_getFilterChanges`, `eth_getFilterLogs`, `eth_uninstallFilter`) and the pending
//! transactions feed they and `eth_subscribe("newPendingTransactions")` read.
//!
//! ethers' `contract.on(...)` and viem's `watch*` over HTTP install a filter and poll it. As
//! geth does, a filter not polled for [`FILTER_TIMEOUT`] is dropped, and a node holds at most
//! [`MAX_FILTERS`] (the oldest-polled one goes for a newcomer), so forgotten filters cannot
//! grow without bound. A pending-transaction filter buffers at most [`MAX_PENDING_BUFFER`]
//! hashes between polls.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::B256;
use alloy_rpc_types_eth::Filter;
use parking_lot::Mutex;
use pipe_mempool::{PoolEvent, PoolListener};
use tokio::sync::broadcast;

/// A filter nobody polled for this long is dropped (geth's deadline).
pub const FILTER_TIMEOUT: Duration = Duration::from_secs(300);
/// Most filters a node keeps.
pub const MAX_FILTERS: usize = 1024;
/// Most transaction hashes a pending-transaction filter keeps between two polls.
pub const MAX_PENDING_BUFFER: usize = 10_000;

/// What a filter watches, and where its last poll left off.
#[derive(Debug)]
pub(crate) enum Kind {
    /// New blocks after this number.
    Blocks { after: u64 },
    /// Logs matching the filter in blocks after this number.
    Logs { filter: Box<Filter>, after: u64 },
    /// Transactions the pool accepted since the last poll.
    Pending { hashes: VecDeque<B256> },
}

#[derive(Debug)]
struct Installed {
    kind: Kind,
    polled: Instant,
}

/// The installed filters, by id.
#[derive(Debug, Default)]
pub(crate) struct Filters {
    by_id: Mutex<HashMap<String, Installed>>,
    ids: crate::geth::HexIds,
}

impl Filters {
    /// Installs `kind`; returns its id.
    pub(crate) fn install(&self, kind: Kind) -> String {
        use jsonrpsee::core::traits::IdProvider;
        let id = match self.ids.next_id() {
            jsonrpsee::types::SubscriptionId::Str(s) => s.into_owned(),
            jsonrpsee::types::SubscriptionId::Num(n) => format!("{n:#x}"),
        };
        let now = Instant::now();
        let mut by_id = self.by_id.lock();
        by_id.retain(|_, f| now.duration_since(f.polled) < FILTER_TIMEOUT);
        if by_id.len() >= MAX_FILTERS
            && let Some(oldest) = by_id
                .iter()
                .min_by_key(|(_, f)| f.polled)
                .map(|(id, _)| id.clone())
        {
            by_id.remove(&oldest);
        }
        by_id.insert(id.clone(), Installed { kind, polled: now });
        id
    }

    /// Runs `f` on filter `id` as a poll (it stays alive); `None` when there is no such
    /// filter (never installed, uninstalled, or expired).
    pub(crate) fn poll<T>(&self, id: &str, f: impl FnOnce(&mut Kind) -> T) -> Option<T> {
        let now = Instant::now();
        let mut by_id = self.by_id.lock();
        let id = crate::geth::canonical_id(id);
        let installed = by_id.get_mut(&id)?;
        if now.duration_since(installed.polled) >= FILTER_TIMEOUT {
            by_id.remove(&id);
            return None;
        }
        installed.polled = now;
        Some(f(&mut installed.kind))
    }

    pub(crate) fn uninstall(&self, id: &str) -> bool {
        self.by_id
            .lock()
            .remove(&crate::geth::canonical_id(id))
            .is_some()
    }

    /// A transaction entered the pool: every pending-transaction filter hears of it.
    fn pending(&self, hash: B256) {
        for f in self.by_id.lock().values_mut() {
            if let Kind::Pending { hashes } = &mut f.kind {
                if hashes.len() >= MAX_PENDING_BUFFER {
                    hashes.pop_front();
                }
                hashes.push_back(hash);
            }
        }
    }
}

/// Hears the pool's arrivals for the filters and for `newPendingTransactions` subscribers.
/// Called under the pool's lock, it only records and broadcasts.
#[derive(Debug)]
pub(crate) struct PendingFeed {
    pub(crate) filters: Arc<Filters>,
    pub(crate) subscribers: broadcast::Sender<B256>,
}

impl PendingFeed {
    pub(crate) fn new(filters: Arc<Filters>) -> Self {
        Self {
            filters,
            subscribers: broadcast::channel(4096).0,
        }
    }
}

impl PoolListener for PendingFeed {
    fn on_event(&self, event: &PoolEvent) {
        if let PoolEvent::Added { tx, .. } = event {
            self.filters.pending(tx.hash());
            // Nobody subscribed is not an error.
            let _ = self.subscribers.send(tx.hash());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_polled_uninstalled_and_bounded() {
        let filters = Filters::default();
        let id = filters.install(Kind::Blocks { after: 3 });
        assert!(id.starts_with("0x") && id.len() <= 34, "{id}");
        assert_eq!(
            filters.poll(&id, |k| matches!(k, Kind::Blocks { after: 3 })),
            Some(true)
        );
        assert!(filters.uninstall(&id));
        assert!(!filters.uninstall(&id));
        assert!(filters.poll(&id, |_| ()).is_none());
        // Past the bound, the filter polled longest ago makes room.
        let first = filters.install(Kind::Blocks { after: 0 });
        for _ in 0..MAX_FILTERS {
            filters.install(Kind::Blocks { after: 0 });
        }
        assert!(filters.poll(&first, |_| ()).is_none());
        assert_eq!(filters.by_id.lock().len(), MAX_FILTERS);
    }

    #[test]
    fn a_pending_filter_buffers_arrivals_up_to_its_bound() {
        let filters = Filters::default();
        let id = filters.install(Kind::Pending {
            hashes: VecDeque::new(),
        });
        for i in 0..(MAX_PENDING_BUFFER as u64 + 5) {
            filters.pending(B256::from(alloy_primitives::U256::from(i)));
        }
        let (len, first) = filters
            .poll(&id, |k| match k {
                Kind::Pending { hashes } => (hashes.len(), hashes[0]),
                _ => unreachable!(),
            })
            .unwrap();
        assert_eq!(len, MAX_PENDING_BUFFER);
        assert_eq!(first, B256::from(alloy_primitives::U256::from(5u64)));
    }
}
