//! State as the store keeps it, the changes a block makes to it, and a consistent read view.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, U256};
use alloy_trie::EMPTY_ROOT_HASH;
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};

use crate::{
    StoreError,
    codec::{decode_account, storage_key},
    overlay::{ChangeLayer, Layered},
    store::{ACCOUNTS, CODE, HEADERS, STORAGE, Store, history},
};

/// An account as stored: what the EVM sees plus its cached storage root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountRecord {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
    /// Root of this account's storage trie, kept current by every block commit.
    pub storage_root: B256,
}

impl Default for AccountRecord {
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: KECCAK256_EMPTY,
            storage_root: EMPTY_ROOT_HASH,
        }
    }
}

/// What one block (or genesis) changes. Produced by the executor from revm's bundle state.
#[derive(Clone, Debug, Default)]
pub struct StateChanges {
    /// New account values; `None` deletes the account (self-destruct, or EIP-161 clearing).
    pub accounts: Vec<(Address, Option<AccountInfoChange>)>,
    /// Accounts whose whole storage is wiped before `storage` is applied (self-destruct and
    /// re-creation).
    pub wiped_storage: Vec<Address>,
    /// Slot writes; a zero value deletes the slot.
    pub storage: Vec<(Address, Vec<(B256, U256)>)>,
    /// New contract code by hash.
    pub code: Vec<(B256, Bytes)>,
}

/// The EVM-visible part of an account; the storage root is the store's to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountInfoChange {
    pub nonce: u64,
    pub balance: U256,
    pub code_hash: B256,
}

/// A consistent snapshot of state and headers: the finalized state at the moment it was opened
/// (blocks committed afterwards are invisible to it), optionally with the change sets of
/// unfinalized blocks stacked on top ([`StateView::with_layers`]). Cheap to open (a redb read
/// transaction).
pub struct StateView {
    /// The block whose post-state this view reads: the finalized head when the view was opened,
    /// or the newest unfinalized layer.
    pub head: u64,
    /// The finalized head the snapshot was taken at.
    finalized: u64,
    /// Unfinalized blocks on top of the snapshot, oldest first, numbered `finalized + 1 ..`.
    layers: Vec<Arc<ChangeLayer>>,
    accounts: ReadOnlyTable<&'static [u8; 20], &'static [u8]>,
    storage: ReadOnlyTable<&'static [u8], &'static [u8; 32]>,
    code: ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    headers: ReadOnlyTable<u64, &'static [u8]>,
    /// The snapshot itself, for reads beyond the EVM's (the tries, for proofs).
    pub(crate) tx: ReadTransaction,
    /// A view of an older block (archive mode): the history that undoes later blocks.
    history: Option<History>,
}

/// What an archive view reads before the current state.
struct History {
    accounts: ReadOnlyTable<&'static [u8], &'static [u8]>,
    storage: ReadOnlyTable<&'static [u8], &'static [u8; 32]>,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("head", &self.head)
            .field("finalized", &self.finalized)
            .finish()
    }
}

impl StateView {
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        let tx: ReadTransaction = store.db()?.begin_read()?;
        let head = Store::head_in(&tx)?.ok_or(StoreError::Uninitialised)?;
        Ok(Self {
            head,
            finalized: head,
            layers: Vec::new(),
            accounts: tx.open_table(ACCOUNTS)?,
            storage: tx.open_table(STORAGE)?,
            code: tx.open_table(CODE)?,
            headers: tx.open_table(HEADERS)?,
            tx,
            history: None,
        })
    }

    /// The state as of block `number` from the archive ([`crate::store::history`]): `None`
    /// when the number is the head's or later, or before archiving began.
    pub(crate) fn open_as_of(store: &Store, number: u64) -> Result<Option<Self>, StoreError> {
        let mut view = Self::open(store)?;
        if number >= view.head {
            return Ok(None);
        }
        let from = history::archive_from(&view.tx.open_table(crate::store::META)?)?;
        // The state after `number` is undone by the records of blocks `number + 1 ..`.
        if from.is_none_or(|from| number + 1 < from) {
            return Ok(None);
        }
        view.history = Some(History {
            accounts: view.tx.open_table(history::ACCOUNT_HISTORY)?,
            storage: view.tx.open_table(history::STORAGE_HISTORY)?,
        });
        view.head = number;
        view.finalized = number;
        Ok(Some(view))
    }

    /// Whether this is an archive view of an older block.
    pub(crate) fn is_historical(&self) -> bool {
        self.history.is_some()
    }

    /// This view with `layers` (unfinalized blocks, oldest first) on top: the state after the
    /// newest of them. The first must be the block after this view's head and each the block
    /// after the one before; anything else is refused, since it would read a state no chain
    /// has.
    pub fn with_layers(mut self, layers: Vec<Arc<ChangeLayer>>) -> Result<Self, StoreError> {
        for (i, layer) in layers.iter().enumerate() {
            let expected = self.head + 1 + i as u64;
            if layer.number() != expected {
                return Err(StoreError::Corrupt(format!(
                    "unfinalized layer {} stacked where block {expected} belongs",
                    layer.number()
                )));
            }
        }
        self.head += layers.len() as u64;
        self.layers.extend(layers);
        Ok(self)
    }

    /// Whether unfinalized layers are stacked on the snapshot.
    pub(crate) fn has_layers(&self) -> bool {
        !self.layers.is_empty()
    }

    /// The finalized head under any unfinalized layers.
    pub fn finalized(&self) -> u64 {
        self.finalized
    }

    /// An account's EVM-visible fields (its storage root is the store's business).
    pub fn account(&self, address: &Address) -> Result<Option<AccountInfoChange>, StoreError> {
        for layer in self.layers.iter().rev() {
            if let Layered::Known(a) = layer.account(address) {
                return Ok(a);
            }
        }
        if let Some(h) = &self.history {
            let lo = history::account_key(address, self.head + 1);
            let hi = history::account_key(address, u64::MAX);
            if let Some(row) = h.accounts.range(lo.as_slice()..=hi.as_slice())?.next() {
                let (_, before) = row?;
                if before.value().is_empty() {
                    return Ok(None);
                }
                let r = decode_account(before.value())?;
                return Ok(Some(AccountInfoChange {
                    nonce: r.nonce,
                    balance: r.balance,
                    code_hash: r.code_hash,
                }));
            }
        }
        match self.accounts.get(&address.0.0)? {
            Some(row) => {
                let r = decode_account(row.value())?;
                Ok(Some(AccountInfoChange {
                    nonce: r.nonce,
                    balance: r.balance,
                    code_hash: r.code_hash,
                }))
            }
            None => Ok(None),
        }
    }

    pub fn storage(&self, address: &Address, slot: &B256) -> Result<U256, StoreError> {
        for layer in self.layers.iter().rev() {
            if let Layered::Known(v) = layer.storage(address, slot) {
                return Ok(v);
            }
        }
        if let Some(h) = &self.history {
            let lo = history::slot_key(address, slot, self.head + 1);
            let hi = history::slot_key(address, slot, u64::MAX);
            if let Some(row) = h.storage.range(lo.as_slice()..=hi.as_slice())?.next() {
                return Ok(history::slot_value(row?.1.value()));
            }
        }
        Ok(self
            .storage
            .get(storage_key(address, slot).as_slice())?
            .map(|v| U256::from_be_bytes(*v.value()))
            .unwrap_or_default())
    }

    pub fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StoreError> {
        // Code is content-addressed: any layer that has it has the same bytes.
        if let Some(code) = self.layers.iter().rev().find_map(|l| l.code(code_hash)) {
            return Ok(Some(code.clone()));
        }
        Ok(self
            .code
            .get(&code_hash.0)?
            .map(|v| Bytes::copy_from_slice(v.value())))
    }

    /// Hash of block `number`, if it is at or below this view's head.
    pub fn block_hash(&self, number: u64) -> Result<Option<B256>, StoreError> {
        if number > self.head {
            return Ok(None);
        }
        if number > self.finalized {
            return Ok(Some(
                self.layers[(number - self.finalized - 1) as usize].hash(),
            ));
        }
        Ok(self
            .headers
            .get(number)?
            .map(|h| alloy_primitives::keccak256(h.value())))
    }
}

impl Default for AccountInfoChange {
    /// An account that does not exist yet.
    fn default() -> Self {
        Self {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: KECCAK256_EMPTY,
        }
    }
}
