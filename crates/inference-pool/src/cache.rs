//! The result cache: computed results by request key, shared by every transaction that asks
//! the same thing, kept while a live transaction needs them and for a number of blocks after.

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

/// Results by key.
#[derive(Debug, Default)]
pub struct ResultCache {
    entries: RwLock<HashMap<B256, Cached>>,
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
        keys
    }

    pub fn remove(&self, key: &B256) -> Option<InferenceResult> {
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
        let before = entries.len();
        entries.retain(|_, c| block.saturating_sub(c.needed_at) <= ttl);
        before - entries.len()
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
}
