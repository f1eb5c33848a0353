//! The result cache: computed results by request key, shared by every transaction that asks
//! the same thing, kept while a live transaction needs them and for a number of blocks after.
//!
//! With a [`ResultStore`] the cache is written through to disk (without an fsync: it is a
//! cache, and a lost entry is only recomputed), so a restart does not run every pending
//! transaction's requests again. Every result in it passed the checks a fresh one passes
//! (key, attestation, audit) when it was computed, and a worker caught lying loses its
//! results from the store too.

use std::{collections::HashMap, sync::Arc};

use alloy_primitives::B256;
use parking_lot::RwLock;
use pipe_executor::{InferenceCall, InferenceProvider, Purpose};
use pipe_primitives::{InferenceResult, ModelId, ModelMeta};

#[derive(Debug)]
struct Cached {
    result: InferenceResult,
    /// The last block at which a live transaction still needed it.
    needed_at: u64,
    /// The worker (its index in the dispatcher's table) that computed it, if one did.
    from: Option<usize>,
}

/// Where cached results are kept across restarts.
pub trait ResultStore: Send + Sync + std::fmt::Debug {
    fn put(&self, result: &InferenceResult);
    fn delete(&self, keys: &[B256]);
    fn load(&self) -> Vec<InferenceResult>;
}

/// The node's store for results: a keyed log of their JSON.
impl ResultStore for pipe_storage::PendingLog {
    fn put(&self, result: &InferenceResult) {
        match serde_json::to_vec(result) {
            Ok(bytes) => {
                if let Err(e) = self.write(&[(result.key, Some(bytes.into()))], false) {
                    tracing::debug!(target: "pipe::cache", error = %e, "result not persisted");
                }
            }
            Err(e) => tracing::debug!(target: "pipe::cache", error = %e, "result not encoded"),
        }
    }

    fn delete(&self, keys: &[B256]) {
        if keys.is_empty() {
            return;
        }
        let ops: Vec<_> = keys.iter().map(|k| (*k, None)).collect();
        if let Err(e) = self.write(&ops, false) {
            tracing::debug!(target: "pipe::cache", error = %e, "results not forgotten");
        }
    }

    fn load(&self) -> Vec<InferenceResult> {
        pipe_storage::PendingLog::load(self)
            .iter()
            .filter_map(|bytes| serde_json::from_slice(bytes).ok())
            .collect()
    }
}

/// Results by key.
#[derive(Debug, Default)]
pub struct ResultCache {
    entries: RwLock<HashMap<B256, Cached>>,
    /// Written through when set ([`ResultCache::attach`]).
    store: std::sync::OnceLock<Arc<dyn ResultStore>>,
}

impl ResultCache {
    pub fn get(&self, key: &B256) -> Option<InferenceResult> {
        self.entries.read().get(key).map(|c| c.result.clone())
    }

    pub fn contains(&self, key: &B256) -> bool {
        self.entries.read().contains_key(key)
    }

    pub fn insert(&self, result: InferenceResult, block: u64) {
        self.insert_from(result, block, None);
    }

    /// Caches `result`, computed by worker `from`.
    pub fn insert_from(&self, result: InferenceResult, block: u64, from: Option<usize>) {
        if let Some(store) = self.store.get() {
            store.put(&result);
        }
        self.entries.write().insert(
            result.key,
            Cached {
                result,
                needed_at: block,
                from,
            },
        );
    }

    /// Drops every result worker `worker` computed (it was caught lying: none of its word
    /// stands). Returns their keys; transactions that used them go stale and run again.
    pub fn evict_from(&self, worker: usize) -> Vec<B256> {
        let mut entries = self.entries.write();
        let keys: Vec<B256> = entries
            .iter()
            .filter(|(_, c)| c.from == Some(worker))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            entries.remove(k);
        }
        if let Some(store) = self.store.get() {
            store.delete(&keys);
        }
        keys
    }

    /// Takes the results `store` holds (as needed at `block`) and writes through to it from
    /// now on. Returns how many were loaded.
    pub fn attach(&self, store: Arc<dyn ResultStore>, block: u64) -> usize {
        let loaded = store.load();
        let count = loaded.len();
        {
            let mut entries = self.entries.write();
            for result in loaded {
                entries.entry(result.key).or_insert(Cached {
                    result,
                    needed_at: block,
                    from: None,
                });
            }
        }
        let _ = self.store.set(store);
        count
    }

    pub fn remove(&self, key: &B256) -> Option<InferenceResult> {
        if let Some(store) = self.store.get() {
            store.delete(&[*key]);
        }
        self.entries.write().remove(key).map(|c| c.result)
    }

    pub fn len(&self) -> usize {
        self.entries.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After block `block`: refreshes the keys live transactions still need, and drops results
    /// nobody has needed for more than `ttl` blocks. Returns how many were dropped.
    pub fn expire(&self, live: &[B256], block: u64, ttl: u64) -> usize {
        let mut entries = self.entries.write();
        for key in live {
            if let Some(c) = entries.get_mut(key) {
                c.needed_at = block;
            }
        }
        let gone: Vec<B256> = entries
            .iter()
            .filter(|(_, c)| block.saturating_sub(c.needed_at) > ttl)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            entries.remove(k);
        }
        drop(entries);
        if let Some(store) = self.store.get() {
            store.delete(&gone);
        }
        gone.len()
    }
}

/// The precompile's answers under PIPE: what the cache holds, nothing else. Used by discovery
/// (a miss is a request to dispatch) and by the builder (a miss is a stale transaction).
#[derive(Debug)]
pub struct CachedResults {
    cache: Arc<ResultCache>,
    models: Arc<dyn InferenceProvider>,
}

impl CachedResults {
    pub fn new(cache: Arc<ResultCache>, models: Arc<dyn InferenceProvider>) -> Self {
        Self { cache, models }
    }
}

impl InferenceProvider for CachedResults {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.models.model(id)
    }

    fn infer(&self, call: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        self.cache.get(&call.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_results_stay_and_unneeded_ones_expire() {
        let cache = ResultCache::default();
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        cache.insert(InferenceResult::failure(a, "x"), 10);
        cache.insert(InferenceResult::failure(b, "y"), 10);
        assert_eq!(cache.expire(&[a], 20, 5), 1);
        assert!(cache.contains(&a) && !cache.contains(&b));
        assert_eq!(cache.expire(&[], 25, 5), 0);
        assert_eq!(cache.expire(&[], 26, 5), 1);
        assert!(cache.is_empty());
    }

    #[test]
    fn an_attached_store_keeps_results_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.log");
        let (a, b, c) = (
            B256::repeat_byte(1),
            B256::repeat_byte(2),
            B256::repeat_byte(3),
        );
        {
            let cache = ResultCache::default();
            let log = Arc::new(pipe_storage::PendingLog::open(&path).unwrap());
            assert_eq!(cache.attach(log, 1), 0);
            cache.insert(InferenceResult::failure(a, "kept"), 1);
            cache.insert(InferenceResult::failure(b, "removed"), 1);
            cache.insert_from(InferenceResult::failure(c, "a liar's"), 1, Some(4));
            cache.remove(&b);
            assert_eq!(cache.evict_from(4), vec![c]);
        }
        let cache = ResultCache::default();
        let log = Arc::new(pipe_storage::PendingLog::open(&path).unwrap());
        assert_eq!(cache.attach(log, 9), 1);
        assert_eq!(cache.get(&a), Some(InferenceResult::failure(a, "kept")));
        // Loaded as needed at the block given: it expires on the usual schedule.
        assert_eq!(cache.expire(&[], 9 + 64, 64), 0);
        assert_eq!(cache.expire(&[], 9 + 65, 64), 1);
        drop(cache);
        let cache = ResultCache::default();
        let log = Arc::new(pipe_storage::PendingLog::open(&path).unwrap());
        assert_eq!(
            cache.attach(log, 0),
            0,
            "expired results are gone from the store too"
        );
    }
}
