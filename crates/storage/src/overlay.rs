//! State of blocks that are executed but not finalized: their change sets as layers over the
//! store's finalized snapshot.
//!
//! A BFT proposer builds on a parent that is certified but not final, and validators verify
//! there; nothing may be written to the store before finalization (a proposal that is never
//! finalized must change nothing). So each unfinalized block keeps the [`StateChanges`] its
//! execution produced, indexed for point reads, and a [`crate::StateView`] can stack those
//! layers (oldest first) on the finalized state. A read looks at the newest layer first and
//! falls through to older ones and finally to the store, applying each layer's rules the way
//! [`crate::Store`] applies a change set when it commits (a wipe empties an account's storage
//! before that layer's writes; a deleted account has no storage at all).

use std::collections::{HashMap, HashSet};

use alloy_primitives::{Address, B256, Bytes, U256};

use crate::{AccountInfoChange, StateChanges};

/// One unfinalized block's changes, as a read layer.
#[derive(Debug)]
pub struct ChangeLayer {
    number: u64,
    hash: B256,
    changes: StateChanges,
    accounts: HashMap<Address, Option<AccountInfoChange>>,
    wiped: HashSet<Address>,
    storage: HashMap<(Address, B256), U256>,
    code: HashMap<B256, Bytes>,
}

/// What a layer says about a read: the value, or nothing (ask the layer below).
pub(crate) enum Layered<T> {
    Known(T),
    Below,
}

impl ChangeLayer {
    /// The layer of block `number` (hash `hash`) whose execution produced `changes`.
    pub fn new(number: u64, hash: B256, changes: StateChanges) -> Self {
        let accounts = changes.accounts.iter().copied().collect();
        let wiped = changes.wiped_storage.iter().copied().collect();
        let storage = changes
            .storage
            .iter()
            .flat_map(|(a, slots)| slots.iter().map(move |(k, v)| ((*a, *k), *v)))
            .collect();
        let code = changes.code.iter().cloned().collect();
        Self {
            number,
            hash,
            changes,
            accounts,
            wiped,
            storage,
            code,
        }
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn hash(&self) -> B256 {
        self.hash
    }

    /// The change set, as the store commits it.
    pub fn changes(&self) -> &StateChanges {
        &self.changes
    }

    pub(crate) fn account(&self, address: &Address) -> Layered<Option<AccountInfoChange>> {
        match self.accounts.get(address) {
            Some(a) => Layered::Known(*a),
            None => Layered::Below,
        }
    }

    pub(crate) fn storage(&self, address: &Address, slot: &B256) -> Layered<U256> {
        // As the store applies a change set: a deleted account's storage goes whatever else
        // the block wrote; otherwise the block's writes land after its wipe.
        if matches!(self.accounts.get(address), Some(None)) {
            return Layered::Known(U256::ZERO);
        }
        if let Some(v) = self.storage.get(&(*address, *slot)) {
            return Layered::Known(*v);
        }
        if self.wiped.contains(address) {
            return Layered::Known(U256::ZERO);
        }
        Layered::Below
    }

    pub(crate) fn code(&self, code_hash: &B256) -> Option<&Bytes> {
        self.code.get(code_hash)
    }
}
