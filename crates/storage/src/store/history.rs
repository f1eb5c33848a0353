//! Archive mode: the state as of any block since archiving began, not only the recent
//! snapshots.
//!
//! Each commit records, before it applies a block's changes, the value every changed account
//! and slot had until then: `account_history[address ++ block]` (the account row, empty when
//! the account did not exist) and `storage_history[address ++ slot ++ block]` (the 32-byte
//! value, zero when unset). Reading the state as of block `n` then needs no replay: a key's
//! value is the one recorded at the first block after `n` that changed it (one ordered range
//! read), or the current value when no later block did. A key that changes once costs one row
//! per block that changes it; keys never changed cost nothing.
//!
//! Archiving starts at the block after the head when it is turned on (from genesis on a new
//! store) and is recorded in `meta` (`archive_from`); the state as of blocks before that is
//! not known. Turning it off forgets that point, so turning it on again starts afresh.

use alloy_primitives::{Address, B256, U256};
use redb::{ReadableTable, TableDefinition, WriteTransaction};

use crate::{
    StateChanges, StoreError,
    codec::{storage_key, storage_range},
    store::{ACCOUNTS, META, STORAGE, roots::meta_number},
};

/// `address ++ block` → the account row before that block (empty: no account).
pub(crate) const ACCOUNT_HISTORY: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("account_history");
/// `address ++ slot ++ block` → the slot's value before that block.
pub(crate) const STORAGE_HISTORY: TableDefinition<&[u8], &[u8; 32]> =
    TableDefinition::new("storage_history");
/// The first block whose changes were recorded.
pub(crate) const ARCHIVE_FROM_KEY: &str = "archive_from";

pub(crate) fn account_key(address: &Address, block: u64) -> [u8; 28] {
    let mut k = [0u8; 28];
    k[..20].copy_from_slice(address.as_slice());
    k[20..].copy_from_slice(&block.to_be_bytes());
    k
}

pub(crate) fn slot_key(address: &Address, slot: &B256, block: u64) -> [u8; 60] {
    let mut k = [0u8; 60];
    k[..52].copy_from_slice(&storage_key(address, slot));
    k[52..].copy_from_slice(&block.to_be_bytes());
    k
}

/// The block a history row was recorded for: the last 8 bytes of its key.
pub(crate) fn block_of(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&key[key.len() - 8..]);
    u64::from_be_bytes(b)
}

/// What blocks after some block changed, read off the history: the accounts (those whose
/// slots changed among them) and the slots, by account, each once and in key order.
#[derive(Debug, Default)]
pub(crate) struct ChangedAfter {
    pub(crate) accounts: std::collections::BTreeSet<Address>,
    pub(crate) slots: std::collections::BTreeMap<Address, std::collections::BTreeSet<B256>>,
}

/// Every account and slot a block after `number` changed, from `tx`'s snapshot of the
/// history tables (what undoes the state back to `number`). `check` runs after each row read
/// with the distinct slots found so far: the caller's bound, which stops the scan.
pub(crate) fn changed_after<E: From<StoreError>>(
    tx: &redb::ReadTransaction,
    number: u64,
    mut check: impl FnMut(usize) -> Result<(), E>,
) -> Result<ChangedAfter, E> {
    let mut out = ChangedAfter::default();
    let mut slots = 0usize;
    let accounts = tx.open_table(ACCOUNT_HISTORY).map_err(StoreError::from)?;
    for row in accounts.iter().map_err(StoreError::from)? {
        let (k, _) = row.map_err(StoreError::from)?;
        let k = k.value();
        if block_of(k) > number {
            out.accounts.insert(Address::from_slice(&k[..20]));
        }
        check(slots)?;
    }
    let storage = tx.open_table(STORAGE_HISTORY).map_err(StoreError::from)?;
    for row in storage.iter().map_err(StoreError::from)? {
        let (k, _) = row.map_err(StoreError::from)?;
        let k = k.value();
        if block_of(k) > number {
            let a = Address::from_slice(&k[..20]);
            if out
                .slots
                .entry(a)
                .or_default()
                .insert(B256::from_slice(&k[20..52]))
            {
                slots += 1;
            }
            out.accounts.insert(a);
        }
        check(slots)?;
    }
    Ok(out)
}

/// The first block recorded, if archiving is on for this store.
pub(crate) fn archive_from(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
) -> Result<Option<u64>, StoreError> {
    meta_number(meta, ARCHIVE_FROM_KEY)
}

/// Records what `changes` (block `number`'s) overwrite: every changed account's row and every
/// changed or wiped slot's value, as they are before the block. Called before the changes are
/// applied, in the same write transaction.
pub(super) fn record(
    tx: &WriteTransaction,
    changes: &StateChanges,
    number: u64,
) -> Result<(), StoreError> {
    let accounts = tx.open_table(ACCOUNTS)?;
    let storage = tx.open_table(STORAGE)?;
    let mut account_history = tx.open_table(ACCOUNT_HISTORY)?;
    let mut storage_history = tx.open_table(STORAGE_HISTORY)?;
    // Everything is read from the state before the block (nothing is applied yet), so a key
    // recorded twice (a slot wiped and then written) is recorded with the same value.
    for (address, _) in &changes.accounts {
        let key = account_key(address, number);
        let before = accounts.get(&address.0.0)?.map(|v| v.value().to_vec());
        account_history.insert(key.as_slice(), before.as_deref().unwrap_or_default())?;
    }
    let mut before_slot = |address: &Address, slot: &B256, value: [u8; 32]| {
        storage_history.insert(slot_key(address, slot, number).as_slice(), &value)?;
        Ok::<_, StoreError>(())
    };
    // A deleted account loses its storage whether or not the block wiped it explicitly.
    let deleted = changes
        .accounts
        .iter()
        .filter(|(_, info)| info.is_none())
        .map(|(a, _)| a);
    for address in changes.wiped_storage.iter().chain(deleted) {
        let (lo, hi) = storage_range(address);
        for row in storage.range(lo.as_slice()..=hi.as_slice())? {
            let (k, v) = row?;
            let slot = B256::from_slice(&k.value()[20..52]);
            before_slot(address, &slot, *v.value())?;
        }
    }
    for (address, slots) in &changes.storage {
        for (slot, _) in slots {
            let value = storage
                .get(storage_key(address, slot).as_slice())?
                .map(|v| *v.value())
                .unwrap_or([0u8; 32]);
            before_slot(address, slot, value)?;
        }
    }
    Ok(())
}

/// Starts archiving at the block after the current head (genesis on an empty store) unless
/// it is on already; or, with `on` false, stops and forgets where it started.
pub(super) fn set(tx: &WriteTransaction, head: Option<u64>, on: bool) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    if !on {
        meta.remove(ARCHIVE_FROM_KEY)?;
        return Ok(());
    }
    if archive_from(&meta)?.is_none() {
        let from = head.map_or(0, |h| h + 1);
        meta.insert(ARCHIVE_FROM_KEY, from.to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// The value of a history row as a slot value.
pub(crate) fn slot_value(v: &[u8; 32]) -> U256 {
    U256::from_be_bytes(*v)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use alloy_consensus::Header;
    use alloy_primitives::KECCAK256_EMPTY;
    use pipe_primitives::SealedBlock;

    use super::*;
    use crate::{AccountInfoChange, StateView, Store};

    /// The state a test expects: accounts and slots.
    #[derive(Clone, Default)]
    struct Model {
        accounts: BTreeMap<Address, AccountInfoChange>,
        storage: BTreeMap<(Address, B256), U256>,
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
    }

    fn commit(store: &Store, changes: &StateChanges) {
        let head = store.head().unwrap();
        let parent = head.map(|n| store.block(n).unwrap().unwrap().hash);
        store
            .commit_block(changes, |root| {
                SealedBlock::new(
                    Header {
                        number: head.map_or(0, |h| h + 1),
                        parent_hash: parent.unwrap_or_default(),
                        state_root: root,
                        ..Default::default()
                    },
                    vec![],
                    vec![],
                )
            })
            .unwrap();
    }

    /// Random blocks of account writes and deletions, slot writes and clears, and storage
    /// wipes: the archive view of every earlier block reads exactly that block's state.
    #[test]
    fn every_block_reads_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.set_archive(true).unwrap();
        let addresses: Vec<Address> = (0..12u8).map(Address::repeat_byte).collect();
        let slots: Vec<B256> = (0..6u64).map(|s| B256::from(U256::from(s))).collect();
        let mut rng = Lcg(7);
        let mut model = Model::default();
        let mut states = Vec::new();
        for block in 0..40u64 {
            let mut changes = StateChanges::default();
            let mut touched = std::collections::BTreeSet::new();
            for _ in 0..4 {
                let a = addresses[rng.next(addresses.len() as u64) as usize];
                if !touched.insert(a) {
                    continue;
                }
                match rng.next(10) {
                    // Deleted, storage and all.
                    0 if block > 0 => {
                        changes.accounts.push((a, None));
                        changes.wiped_storage.push(a);
                        model.accounts.remove(&a);
                        model.storage.retain(|(x, _), _| *x != a);
                    }
                    // Storage wiped (re-created), then a slot written.
                    1 => {
                        changes.wiped_storage.push(a);
                        model.storage.retain(|(x, _), _| *x != a);
                        let info = AccountInfoChange {
                            nonce: block,
                            balance: U256::from(block * 7 + 1),
                            code_hash: KECCAK256_EMPTY,
                        };
                        changes.accounts.push((a, Some(info)));
                        model.accounts.insert(a, info);
                        let s = slots[rng.next(slots.len() as u64) as usize];
                        changes
                            .storage
                            .push((a, vec![(s, U256::from(block + 100))]));
                        model.storage.insert((a, s), U256::from(block + 100));
                    }
                    _ => {
                        let info = AccountInfoChange {
                            nonce: block + 1,
                            balance: U256::from(rng.next(1_000) + 1),
                            code_hash: KECCAK256_EMPTY,
                        };
                        changes.accounts.push((a, Some(info)));
                        model.accounts.insert(a, info);
                        let mut writes = Vec::new();
                        for s in &slots {
                            if rng.next(3) == 0 {
                                let v = U256::from(rng.next(3));
                                writes.push((*s, v));
                                if v.is_zero() {
                                    model.storage.remove(&(a, *s));
                                } else {
                                    model.storage.insert((a, *s), v);
                                }
                            }
                        }
                        changes.storage.push((a, writes));
                    }
                }
            }
            commit(&store, &changes);
            states.push(model.clone());
        }
        let head = store.head().unwrap().unwrap();
        for (n, expected) in states.iter().enumerate().take(head as usize) {
            let view = StateView::open_as_of(&store, n as u64)
                .unwrap()
                .unwrap_or_else(|| panic!("block {n} is archived"));
            assert_eq!(view.head, n as u64);
            for a in &addresses {
                assert_eq!(
                    view.account(a).unwrap(),
                    expected.accounts.get(a).copied(),
                    "block {n}, account {a}"
                );
                for s in &slots {
                    assert_eq!(
                        view.storage(a, s).unwrap(),
                        expected.storage.get(&(*a, *s)).copied().unwrap_or_default(),
                        "block {n}, account {a}, slot {s}"
                    );
                }
            }
            assert!(view.block_hash(n as u64 + 1).unwrap().is_none());
        }
        assert!(StateView::open_as_of(&store, head).unwrap().is_none());
    }

    /// Turned on at a later block, the archive reads from there on only; turned off, it
    /// forgets, and on again starts afresh.
    #[test]
    fn the_archive_begins_where_it_was_turned_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let a = Address::repeat_byte(1);
        let set = |balance: u64| StateChanges {
            accounts: vec![(
                a,
                Some(AccountInfoChange {
                    nonce: 0,
                    balance: U256::from(balance),
                    code_hash: KECCAK256_EMPTY,
                }),
            )],
            ..Default::default()
        };
        for b in 0..3 {
            commit(&store, &set(b + 1));
        }
        store.set_archive(true).unwrap();
        assert_eq!(store.archive_from().unwrap(), Some(3));
        for b in 3..6 {
            commit(&store, &set(b + 1));
        }
        assert!(
            StateView::open_as_of(&store, 1).unwrap().is_none(),
            "before the archive"
        );
        for n in 2..5u64 {
            let view = StateView::open_as_of(&store, n).unwrap().unwrap();
            assert_eq!(
                view.account(&a).unwrap().unwrap().balance,
                U256::from(n + 1)
            );
        }
        store.set_archive(false).unwrap();
        assert_eq!(store.archive_from().unwrap(), None);
        assert!(StateView::open_as_of(&store, 4).unwrap().is_none());
    }

    /// An account deleted without an explicit wipe (EIP-161 leaves no wipe) loses its
    /// storage too: the archive keeps the slots it had.
    #[test]
    fn a_deleted_account_keeps_its_old_slots_in_the_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.set_archive(true).unwrap();
        let a = Address::repeat_byte(2);
        let slot = B256::with_last_byte(1);
        commit(
            &store,
            &StateChanges {
                accounts: vec![(
                    a,
                    Some(AccountInfoChange {
                        nonce: 1,
                        balance: U256::ZERO,
                        code_hash: KECCAK256_EMPTY,
                    }),
                )],
                storage: vec![(a, vec![(slot, U256::from(9))])],
                ..Default::default()
            },
        );
        commit(
            &store,
            &StateChanges {
                accounts: vec![(a, None)],
                ..Default::default()
            },
        );
        let before = StateView::open_as_of(&store, 0).unwrap().unwrap();
        assert_eq!(before.storage(&a, &slot).unwrap(), U256::from(9));
        assert_eq!(
            store.state().unwrap().storage(&a, &slot).unwrap(),
            U256::ZERO
        );
    }
}
