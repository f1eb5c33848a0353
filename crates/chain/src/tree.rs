//! The pending tree: blocks executed (proposed here or verified) but not finalized.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use alloy_primitives::B256;
use pipe_builder::BuildStats;
use pipe_primitives::SealedBlock;
use pipe_storage::{ChangeLayer, TrieUpdates};

/// One unfinalized block: the sealed block and the state changes it makes to its parent.
#[derive(Debug)]
pub struct PendingBlock {
    pub block: Arc<SealedBlock>,
    pub layer: Arc<ChangeLayer>,
    /// What its changes did to the tries on its parent's state: its commit writes them
    /// instead of hashing again.
    pub tries: TrieUpdates,
    /// How it was built, when this node proposed it.
    pub stats: Option<BuildStats>,
}

/// Unfinalized blocks keyed by hash. Each links to its parent by the header's parent hash; a
/// chain of them ends at the finalized head (blocks hanging below anything else are pruned at
/// finalization). Bounded: a byzantine leader cannot grow it without end.
#[derive(Debug, Default)]
pub(crate) struct BlockTree {
    blocks: HashMap<B256, Arc<PendingBlock>>,
}

/// Most unfinalized blocks kept. A BFT chain finalizes within a few views; past this something
/// is wrong, and new blocks are refused rather than memory spent.
pub const MAX_PENDING_BLOCKS: usize = 1024;

impl BlockTree {
    pub(crate) fn get(&self, hash: &B256) -> Option<Arc<PendingBlock>> {
        self.blocks.get(hash).cloned()
    }

    pub(crate) fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Adds `block`; false when the tree is full.
    pub(crate) fn insert(&mut self, block: PendingBlock) -> bool {
        if self.blocks.len() >= MAX_PENDING_BLOCKS && !self.blocks.contains_key(&block.block.hash) {
            return false;
        }
        self.blocks.insert(block.block.hash, Arc::new(block));
        true
    }

    /// The unfinalized blocks from just above the finalized head up to `hash`, oldest first;
    /// `None` if `hash` is not in the tree or its ancestry does not reach `finalized`.
    pub(crate) fn path(&self, finalized: B256, hash: B256) -> Option<Vec<Arc<PendingBlock>>> {
        let mut path = Vec::new();
        let mut at = hash;
        while at != finalized {
            let b = self.blocks.get(&at)?;
            at = b.block.header.parent_hash;
            path.push(b.clone());
        }
        path.reverse();
        Some(path)
    }

    /// After `head` became final: drops every block at or below its height, and every block
    /// that does not descend from it (siblings and their children).
    pub(crate) fn prune(&mut self, head: &SealedBlock) {
        let number = head.number();
        self.blocks.retain(|_, b| b.block.number() > number);
        let keep: HashSet<B256> = self
            .blocks
            .keys()
            .filter(|h| self.path(head.hash, **h).is_some())
            .copied()
            .collect();
        self.blocks.retain(|h, _| keep.contains(h));
    }
}
