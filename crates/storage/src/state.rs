//! State as the store keeps it, the changes a block makes to it, and a consistent read view.

use alloy_primitives::{Address, B256, Bytes, KECCAK256_EMPTY, U256};
use alloy_trie::EMPTY_ROOT_HASH;
use redb::{ReadOnlyTable, ReadTransaction, ReadableDatabase};

use crate::{
    StoreError,
    codec::{decode_account, storage_key},
    store::{ACCOUNTS, CODE, HEADERS, STORAGE, Store},
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

/// A consistent snapshot of state and headers at the moment it was opened: blocks committed
/// afterwards are invisible to it. Cheap to open (a redb read transaction).
pub struct StateView {
    /// Head block number when the view was opened.
    pub head: u64,
    accounts: ReadOnlyTable<&'static [u8; 20], &'static [u8]>,
    storage: ReadOnlyTable<&'static [u8], &'static [u8; 32]>,
    code: ReadOnlyTable<&'static [u8; 32], &'static [u8]>,
    headers: ReadOnlyTable<u64, &'static [u8]>,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView")
            .field("head", &self.head)
            .finish()
    }
}

impl StateView {
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        let tx: ReadTransaction = store.db().begin_read()?;
        let head = Store::head_in(&tx)?.ok_or(StoreError::Uninitialised)?;
        Ok(Self {
            head,
            accounts: tx.open_table(ACCOUNTS)?,
            storage: tx.open_table(STORAGE)?,
            code: tx.open_table(CODE)?,
            headers: tx.open_table(HEADERS)?,
        })
    }

    pub fn account(&self, address: &Address) -> Result<Option<AccountRecord>, StoreError> {
        match self.accounts.get(&address.0.0)? {
            Some(row) => Ok(Some(decode_account(row.value())?)),
            None => Ok(None),
        }
    }

    pub fn storage(&self, address: &Address, slot: &B256) -> Result<U256, StoreError> {
        Ok(self
            .storage
            .get(storage_key(address, slot).as_slice())?
            .map(|v| U256::from_be_bytes(*v.value()))
            .unwrap_or_default())
    }

    pub fn code(&self, code_hash: &B256) -> Result<Option<Bytes>, StoreError> {
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
        Ok(self
            .headers
            .get(number)?
            .map(|h| alloy_primitives::keccak256(h.value())))
    }
}
