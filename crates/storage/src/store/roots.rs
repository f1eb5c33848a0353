//! State as stored: plain and hashed accounts and storage, the trie branches, and the state
//! roots computed from what a block changed.

use super::*;

/// What a change set did to the stored trie branches and the roots it gave. Computed once, when
/// the block is proposed or verified ([`Store::state_root_after`]), and replayed when it is
/// committed ([`Store::commit_prepared`]), so a block's tries are hashed once, not twice. Valid
/// only on the state it was computed on: the block's parent, which the commit checks.
#[derive(Clone, Debug, Default)]
pub struct TrieUpdates {
    ops: Vec<trie::BranchOp>,
    storage_roots: std::collections::HashMap<Address, B256>,
    root: B256,
}

impl TrieUpdates {
    /// The state root the change set gave.
    pub fn root(&self) -> B256 {
        self.root
    }
}

/// How [`apply_and_root`] treats the tries.
pub(super) enum Tries<'a> {
    /// Hash them from the stored branches.
    Compute,
    /// Hash them and record what that wrote.
    Record(&'a mut TrieUpdates),
    /// Write what an earlier computation on the same state recorded; hash nothing.
    Replay(&'a TrieUpdates),
}

/// Applies `changes` to plain and hashed state and returns the new state root.
pub(super) fn apply_and_root(
    tx: &WriteTransaction,
    changes: &StateChanges,
    timings: &mut CommitTimings,
    mut tries: Tries<'_>,
) -> Result<B256, StoreError> {
    let started = std::time::Instant::now();
    let mut accounts = tx.open_table(ACCOUNTS)?;
    let mut storage = tx.open_table(STORAGE)?;
    let mut hashed_accounts = tx.open_table(HASHED_ACCOUNTS)?;
    let mut hashed_storage = tx.open_table(HASHED_STORAGE)?;
    let mut code = tx.open_table(CODE)?;
    let mut branches = tx.open_table(TRIE_BRANCHES)?;

    for (hash, bytes) in &changes.code {
        code.insert(&hash.0, bytes.as_ref())?;
    }

    // Storage first: account rows need the new storage roots. Per account, the hashed slots
    // written or deleted: what its storage root is recomputed from.
    let mut dirty: BTreeMap<Address, Vec<[u8; 32]>> = BTreeMap::new();
    for address in &changes.wiped_storage {
        let (lo, hi) = storage_range(address);
        storage.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
        hashed_storage.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
        // With no stored branches left, the next root reads every remaining slot.
        match &mut tries {
            Tries::Compute => trie::clear(&mut branches, &trie::storage_trie(&address.0.0), None)?,
            Tries::Record(u) => trie::clear(
                &mut branches,
                &trie::storage_trie(&address.0.0),
                Some(&mut u.ops),
            )?,
            Tries::Replay(_) => {}
        }
        dirty.entry(*address).or_default();
    }
    for (address, slots) in &changes.storage {
        let keys = dirty.entry(*address).or_default();
        for (slot, value) in slots {
            let plain = storage_key(address, slot);
            let hashed_slot = keccak256(slot);
            let hashed = storage_key(address, &hashed_slot);
            if value.is_zero() {
                storage.remove(plain.as_slice())?;
                hashed_storage.remove(hashed.as_slice())?;
            } else {
                storage.insert(plain.as_slice(), &value.to_be_bytes::<32>())?;
                hashed_storage.insert(hashed.as_slice(), alloy_rlp::encode(value).as_slice())?;
            }
            keys.push(hashed_slot.0);
        }
    }

    // New account rows, keeping each one's cached storage root unless its storage changed.
    let mut updated: Vec<(Address, Option<AccountRecord>)> = Vec::new();
    for (address, info) in &changes.accounts {
        let previous = accounts
            .get(&address.0.0)?
            .map(|v| decode_account(v.value()))
            .transpose()?;
        updated.push((
            *address,
            info.map(|i| AccountRecord {
                nonce: i.nonce,
                balance: i.balance,
                code_hash: i.code_hash,
                storage_root: previous.map(|p| p.storage_root).unwrap_or(EMPTY_ROOT_HASH),
            }),
        ));
    }
    for (address, mut keys) in dirty {
        let row = updated.iter().position(|(a, _)| *a == address);
        if row.is_some_and(|i| updated[i].1.is_none()) {
            // Deleted in this block: its storage and storage trie go below.
            continue;
        }
        keys.sort_unstable();
        keys.dedup();
        let leaves = StorageLeaves {
            table: &hashed_storage,
            address,
        };
        let namespace = trie::storage_trie(&address.0.0);
        let root = match &mut tries {
            Tries::Compute => trie::update_root(&mut branches, &namespace, &leaves, &keys, None)?,
            Tries::Record(u) => {
                let root =
                    trie::update_root(&mut branches, &namespace, &leaves, &keys, Some(&mut u.ops))?;
                u.storage_roots.insert(address, root);
                root
            }
            Tries::Replay(u) => *u.storage_roots.get(&address).ok_or_else(|| {
                StoreError::Corrupt(format!("no recorded storage root for {address}"))
            })?,
        };
        match row {
            Some(i) => {
                if let Some(record) = &mut updated[i].1 {
                    record.storage_root = root;
                }
            }
            None => {
                // Storage changed but the account row did not: refresh only its root.
                if let Some(v) = accounts.get(&address.0.0)? {
                    let mut record = decode_account(v.value())?;
                    record.storage_root = root;
                    updated.push((address, Some(record)));
                }
            }
        }
    }

    let mut changed: Vec<[u8; 32]> = Vec::with_capacity(updated.len());
    for (address, record) in updated {
        let hashed = keccak256(address);
        changed.push(hashed.0);
        match record {
            Some(r) => {
                accounts.insert(&address.0.0, encode_account(&r).as_slice())?;
                let trie = TrieAccount {
                    nonce: r.nonce,
                    balance: r.balance,
                    storage_root: r.storage_root,
                    code_hash: r.code_hash,
                };
                hashed_accounts.insert(&hashed.0, alloy_rlp::encode(trie).as_slice())?;
            }
            None => {
                accounts.remove(&address.0.0)?;
                hashed_accounts.remove(&hashed.0)?;
                let (lo, hi) = storage_range(&address);
                storage.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
                hashed_storage.retain_in(lo.as_slice()..=hi.as_slice(), |_, _| false)?;
                let namespace = trie::storage_trie(&address.0.0);
                match &mut tries {
                    Tries::Compute => trie::clear(&mut branches, &namespace, None)?,
                    Tries::Record(u) => trie::clear(&mut branches, &namespace, Some(&mut u.ops))?,
                    Tries::Replay(_) => {}
                }
            }
        }
    }
    changed.sort_unstable();
    changed.dedup();

    timings.state_us = started.elapsed().as_micros() as u64;
    // The account trie, from the stored branches and the accounts this block changed.
    let started = std::time::Instant::now();
    let leaves = AccountLeaves(&hashed_accounts);
    let root = match tries {
        Tries::Compute => {
            trie::update_root(&mut branches, trie::ACCOUNT_TRIE, &leaves, &changed, None)?
        }
        Tries::Record(u) => {
            u.root = trie::update_root(
                &mut branches,
                trie::ACCOUNT_TRIE,
                &leaves,
                &changed,
                Some(&mut u.ops),
            )?;
            u.root
        }
        Tries::Replay(u) => {
            trie::replay(&mut branches, &u.ops)?;
            u.root
        }
    };
    timings.account_trie_us = started.elapsed().as_micros() as u64;
    Ok(root)
}

/// A block number kept in the `meta` table under `key`.
pub(crate) fn meta_number(
    meta: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<u64>, StoreError> {
    meta.get(key)?
        .map(|v| <[u8; 8]>::try_from(v.value()).map(u64::from_be_bytes))
        .transpose()
        .map_err(|_| StoreError::Corrupt(format!("meta {key}")))
}

/// Drops the stored trie branches unless they describe the head the block builds on, so that
/// the next root is computed from the leaves (and the branches stored again).
pub(super) fn trie_branches_current(tx: &WriteTransaction) -> Result<(), StoreError> {
    let (head, described) = {
        let meta = tx.open_table(META)?;
        (
            meta_number(&meta, HEAD_KEY)?,
            meta_number(&meta, TRIE_HEAD_KEY)?,
        )
    };
    if head.is_some() && described != head {
        tracing::warn!(
            target: "pipe::storage",
            ?head,
            ?described,
            "stored trie branches are not for the head: rebuilding them from the state"
        );
        tx.open_table(TRIE_BRANCHES)?.retain(|_, _| false)?;
    }
    Ok(())
}

/// The account trie's leaves: `hashed_accounts` rows.
pub(crate) struct AccountLeaves<'a, T>(pub(crate) &'a T);

impl<T: ReadableTable<&'static [u8; 32], &'static [u8]>> Leaves for AccountLeaves<'_, T> {
    fn each(
        &self,
        range: (Bound<[u8; 32]>, Bound<[u8; 32]>),
        f: &mut dyn FnMut(&[u8; 32], &[u8]),
    ) -> Result<(), StoreError> {
        for row in self
            .0
            .range::<&[u8; 32]>((range.0.as_ref(), range.1.as_ref()))?
        {
            let (k, v) = row?;
            f(k.value(), v.value());
        }
        Ok(())
    }
}

/// One account's storage trie's leaves: its `hashed_storage` rows, keyed by the hashed slot.
pub(crate) struct StorageLeaves<'a, T> {
    table: &'a T,
    address: Address,
}

impl<'a, T> StorageLeaves<'a, T> {
    pub(crate) fn new(table: &'a T, address: Address) -> Self {
        Self { table, address }
    }
}

impl<T: ReadableTable<&'static [u8], &'static [u8]>> Leaves for StorageLeaves<'_, T> {
    fn each(
        &self,
        range: (Bound<[u8; 32]>, Bound<[u8; 32]>),
        f: &mut dyn FnMut(&[u8; 32], &[u8]),
    ) -> Result<(), StoreError> {
        let key = |k: &[u8; 32]| storage_key(&self.address, &B256::from(*k));
        let lo = range.0.as_ref().map(key);
        let hi = range.1.as_ref().map(key);
        let lo = lo.as_ref().map(|k| k.as_slice());
        let hi = hi.as_ref().map(|k| k.as_slice());
        for row in self.table.range::<&[u8]>((lo, hi))? {
            let (k, v) = row?;
            let slot: &[u8; 32] = k.value()[20..]
                .try_into()
                .map_err(|_| StoreError::Corrupt("hashed storage key".into()))?;
            f(slot, v.value());
        }
        Ok(())
    }
}

/// Root of `address`'s storage trie from its rows in hashed order.
pub(super) fn storage_root(
    hashed_storage: &impl ReadableTable<&'static [u8], &'static [u8]>,
    address: &Address,
) -> Result<B256, StoreError> {
    let (lo, hi) = storage_range(address);
    let mut builder = HashBuilder::default();
    let mut any = false;
    for row in hashed_storage.range(lo.as_slice()..=hi.as_slice())? {
        let (k, v) = row?;
        builder.add_leaf(Nibbles::unpack(&k.value()[20..]), v.value());
        any = true;
    }
    Ok(if any { builder.root() } else { EMPTY_ROOT_HASH })
}

/// State root of a state consisting of `alloc` alone (a genesis), computed in memory.
pub fn genesis_state_root(alloc: &StateChanges) -> B256 {
    let mut leaves: Vec<(B256, Vec<u8>)> = Vec::new();
    for (address, info) in &alloc.accounts {
        let Some(info) = info else { continue };
        let mut slots: Vec<(B256, U256)> = alloc
            .storage
            .iter()
            .filter(|(a, _)| a == address)
            .flat_map(|(_, s)| s.iter().copied())
            .filter(|(_, v)| !v.is_zero())
            .map(|(k, v)| (keccak256(k), v))
            .collect();
        slots.sort_unstable_by_key(|(k, _)| *k);
        let storage_root = if slots.is_empty() {
            EMPTY_ROOT_HASH
        } else {
            let mut b = HashBuilder::default();
            for (k, v) in &slots {
                b.add_leaf(Nibbles::unpack(k), &alloy_rlp::encode(v));
            }
            b.root()
        };
        let trie = TrieAccount {
            nonce: info.nonce,
            balance: info.balance,
            storage_root,
            code_hash: info.code_hash,
        };
        leaves.push((keccak256(address), alloy_rlp::encode(trie)));
    }
    leaves.sort_unstable_by_key(|(k, _)| *k);
    let mut b = HashBuilder::default();
    for (k, v) in &leaves {
        b.add_leaf(Nibbles::unpack(k), v);
    }
    b.root()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AccountInfoChange;
    use alloy_primitives::{KECCAK256_EMPTY, address};

    fn alloc() -> StateChanges {
        let a = address!("0x00000000000000000000000000000000000000aa");
        let b = address!("0x00000000000000000000000000000000000000bb");
        let code = Bytes::from_static(&[0x60, 0x00]);
        StateChanges {
            accounts: vec![
                (
                    a,
                    Some(AccountInfoChange {
                        nonce: 1,
                        balance: U256::from(5),
                        code_hash: KECCAK256_EMPTY,
                    }),
                ),
                (
                    b,
                    Some(AccountInfoChange {
                        nonce: 0,
                        balance: U256::ZERO,
                        code_hash: keccak256(&code),
                    }),
                ),
            ],
            wiped_storage: vec![],
            storage: vec![(
                b,
                vec![
                    (B256::with_last_byte(1), U256::from(7)),
                    (B256::with_last_byte(2), U256::from(9)),
                ],
            )],
            code: vec![(keccak256(&code), code)],
        }
    }

    #[test]
    fn committed_root_matches_in_memory_root_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let changes = alloc();
        let expected = genesis_state_root(&changes);
        let store = Store::open(&path).unwrap();
        let block = store
            .commit_block(&changes, |root| {
                assert_eq!(root, expected);
                let header = Header {
                    state_root: root,
                    ..Default::default()
                };
                SealedBlock::new(header, vec![], vec![])
            })
            .unwrap();
        assert_eq!(store.verify_state_root().unwrap(), (expected, expected));
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.block(0).unwrap().unwrap().hash, block.hash);
        // Deleting a slot changes the root; deleting all of b's storage restores the
        // storage-less root of an equal alloc.
        let b = changes.accounts[1].0;
        let wipe = StateChanges {
            wiped_storage: vec![b],
            ..Default::default()
        };
        let mut no_storage = alloc();
        no_storage.storage.clear();
        store
            .commit_block(&wipe, |root| {
                assert_eq!(root, genesis_state_root(&no_storage));
                let header = Header {
                    number: 1,
                    state_root: root,
                    ..Default::default()
                };
                SealedBlock::new(header, vec![], vec![])
            })
            .unwrap();
        let (computed, stored) = store.verify_state_root().unwrap();
        assert_eq!(computed, stored);
    }

    /// Blocks of random account, slot, wipe and delete changes: after every commit the root
    /// the store computed incrementally (stored trie branches) equals the one recomputed from
    /// every row, storage roots included.
    #[test]
    fn incremental_roots_equal_full_recomputation_over_random_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let addresses: Vec<Address> = (0..40u8).map(Address::with_last_byte).collect();
        for number in 0..60u64 {
            // As the executor's change sets are: each account once; storage only beside an
            // account that exists after the block; a wipe with a deletion or a re-creation.
            let mut changes = StateChanges::default();
            let mut picked: Vec<Address> = (0..(1 + rnd() % 12))
                .map(|_| addresses[(rnd() % 40) as usize])
                .collect();
            picked.sort_unstable();
            picked.dedup();
            for address in picked {
                match rnd() % 10 {
                    0 => {
                        changes.wiped_storage.push(address);
                        changes.accounts.push((address, None));
                    }
                    // EIP-161: a touched empty account removed, no wipe.
                    9 => changes.accounts.push((address, None)),
                    roll => {
                        if roll == 1 {
                            changes.wiped_storage.push(address);
                        }
                        changes.accounts.push((
                            address,
                            Some(AccountInfoChange {
                                nonce: rnd() % 5,
                                balance: U256::from(rnd() % 1000 + 1),
                                code_hash: KECCAK256_EMPTY,
                            }),
                        ));
                        let slots = (0..rnd() % 30)
                            .map(|_| {
                                let value = if rnd() % 4 == 0 { 0 } else { rnd() % 100_000 };
                                (B256::with_last_byte((rnd() % 60) as u8), U256::from(value))
                            })
                            .collect();
                        changes.storage.push((address, slots));
                    }
                }
            }
            store
                .commit_block(&changes, |root| {
                    let header = Header {
                        number,
                        state_root: root,
                        ..Default::default()
                    };
                    SealedBlock::new(header, vec![], vec![])
                })
                .unwrap();
            let (computed, stored) = store.verify_state_root().unwrap();
            assert_eq!(computed, stored, "block {number}");
            assert_eq!(store.account_root_from_scratch().unwrap(), stored);
        }
    }

    /// Trie branches that do not describe the head (another writer committed without them) are
    /// dropped and rebuilt, not trusted: here they are garbage and the marker is gone.
    #[test]
    fn branches_for_another_head_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let seal = |number: u64| {
            move |root: B256| {
                let header = Header {
                    number,
                    state_root: root,
                    ..Default::default()
                };
                SealedBlock::new(header, vec![], vec![])
            }
        };
        let account = |i: u8| {
            (
                Address::with_last_byte(i),
                Some(AccountInfoChange {
                    nonce: 1,
                    balance: U256::from(i),
                    code_hash: KECCAK256_EMPTY,
                }),
            )
        };
        let genesis = StateChanges {
            accounts: (0..50).map(account).collect(),
            ..Default::default()
        };
        store.commit_block(&genesis, seal(0)).unwrap();
        {
            let tx = store.db().unwrap().begin_write().unwrap();
            tx.open_table(META).unwrap().remove(TRIE_HEAD_KEY).unwrap();
            let mut branches = tx.open_table(TRIE_BRANCHES).unwrap();
            let junk = [0u8; 6];
            for row in [&[0u8][..], &[0, 1], &[0, 2, 3]] {
                branches.insert(row, junk.as_slice()).unwrap();
            }
            drop(branches);
            tx.commit().unwrap();
        }
        let next = StateChanges {
            accounts: vec![account(60)],
            ..Default::default()
        };
        store.commit_block(&next, seal(1)).unwrap();
        let (computed, stored) = store.verify_state_root().unwrap();
        assert_eq!(computed, stored);
    }
}
