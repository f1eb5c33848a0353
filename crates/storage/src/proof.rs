//! Merkle proofs of an account and its storage slots (EIP-1186, `eth_getProof`), from the
//! stored tries of a view's block.
//!
//! A proof is the list of trie nodes from the root down the key's path, each as its RLP. The
//! nodes come from [`crate::trie::prove`], which walks the stored branches as a root
//! computation does, expanding only the paths to the proved keys: the cost grows with the
//! number of keys proved and the trie's depth, not with the state. A key that is absent gets
//! the nodes that show where it would be (an exclusion proof). The root the proof leads to is
//! computed in the same walk and returned beside it, so a caller can check it against the
//! block's header.
//!
//! An archived block's state (archive mode: [`crate::store::history`]) has no stored tries:
//! its proof rebuilds the tries it needs in memory from the archive: the whole account trie,
//! with the storage roots of the accounts whose slots changed since, and the proved account's
//! storage trie, each from the values as of that block. That costs a pass over the accounts
//! and the history, so it is bounded ([`MAX_ARCHIVED_PROOF_KEYS`]) and the RPC runs one at a
//! time; the root it reaches is the block's, which the caller checks against the header.

use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_trie::{EMPTY_ROOT_HASH, Nibbles};

use crate::{
    AccountRecord, StateView, StoreError,
    codec::decode_account,
    store::{
        ACCOUNTS, HASHED_ACCOUNTS, HASHED_STORAGE, TRIE_BRANCHES, branches_describe_head,
        roots::{AccountLeaves, StorageLeaves},
    },
    trie,
};

/// An account, and some of its slots, with their proofs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountProof {
    pub address: Address,
    /// `None`: no such account (the proof shows its absence).
    pub account: Option<AccountRecord>,
    /// The account trie's nodes on the path to `keccak256(address)`, root first.
    pub proof: Vec<Bytes>,
    pub storage: Vec<SlotProof>,
    /// The state root the account proof leads to.
    pub state_root: B256,
}

/// One storage slot with its proof in the account's storage trie.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotProof {
    pub slot: B256,
    pub value: U256,
    /// The storage trie's nodes on the path to `keccak256(slot)`, root first.
    pub proof: Vec<Bytes>,
}

impl StateView {
    /// Whether a proof at this view rebuilds its tries from the archive (a costly one).
    pub fn proves_from_archive(&self) -> bool {
        self.is_historical()
    }

    /// `address` and its `slots` with their proofs, at this view's block.
    pub fn proof(&self, address: &Address, slots: &[B256]) -> Result<AccountProof, StoreError> {
        if self.has_layers() {
            return Err(StoreError::UnfinalizedProof(self.head));
        }
        if self.is_historical() {
            return self.archived_proof(address, slots);
        }
        let tx = &self.tx;
        // Branches written for another head would mislead the walk; without them every leaf
        // is read, which is slower and just as right.
        let current = branches_describe_head(tx)?;
        let branches = tx.open_table(TRIE_BRANCHES)?;
        let branches = current.then_some(&branches);

        let account = tx
            .open_table(ACCOUNTS)?
            .get(&address.0.0)?
            .map(|v| decode_account(v.value()))
            .transpose()?;
        let hashed_address = keccak256(address).0;
        let hashed_accounts = tx.open_table(HASHED_ACCOUNTS)?;
        let (state_root, nodes) = trie::prove(
            branches,
            trie::ACCOUNT_TRIE,
            &AccountLeaves(&hashed_accounts),
            &[hashed_address],
        )?;
        let proof = path_nodes(&nodes, &hashed_address);

        let hashed_storage = tx.open_table(HASHED_STORAGE)?;
        let storage_root = account.map_or(EMPTY_ROOT_HASH, |a| a.storage_root);
        let mut keys: Vec<[u8; 32]> = slots.iter().map(|s| keccak256(s).0).collect();
        keys.sort_unstable();
        keys.dedup();
        let storage_nodes = if storage_root == EMPTY_ROOT_HASH {
            None
        } else {
            let (root, nodes) = trie::prove(
                branches,
                &trie::storage_trie(&address.0.0),
                &StorageLeaves::new(&hashed_storage, *address),
                &keys,
            )?;
            if root != storage_root {
                return Err(StoreError::Corrupt(format!(
                    "storage trie of {address}: root {root} from the leaves, {storage_root} in the account row"
                )));
            }
            Some(nodes)
        };
        let storage = self.slot_proofs(address, slots, storage_nodes.as_ref())?;
        Ok(AccountProof {
            address: *address,
            account,
            proof,
            storage,
            state_root,
        })
    }
}

/// Most accounts and slots (present and historical) an archived block's proof reads.
pub const MAX_ARCHIVED_PROOF_KEYS: usize = 2_000_000;

/// A trie's leaves held in memory, by hashed key: an archived block's, rebuilt.
struct MemLeaves(std::collections::BTreeMap<[u8; 32], Vec<u8>>);

impl trie::Leaves for MemLeaves {
    fn each(
        &self,
        range: (std::ops::Bound<[u8; 32]>, std::ops::Bound<[u8; 32]>),
        f: &mut dyn FnMut(&[u8; 32], &[u8]),
    ) -> Result<(), StoreError> {
        for (k, v) in self.0.range(range) {
            f(k, v);
        }
        Ok(())
    }
}

/// No stored branches: every leaf is read.
type NoBranches = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

impl StateView {
    /// [`StateView::proof`] at an archived block: the tries rebuilt from the archive.
    ///
    /// Every account that existed then is today's or one a later block changed (the account
    /// history says which). An account whose slots no later block changed has today's storage
    /// root; only the others' storage tries are rebuilt, from today's slots and the slot
    /// history. The keys read are bounded by [`MAX_ARCHIVED_PROOF_KEYS`].
    fn archived_proof(
        &self,
        address: &Address,
        slots: &[B256],
    ) -> Result<AccountProof, StoreError> {
        use std::collections::{BTreeMap, BTreeSet};

        use redb::ReadableTable;

        let tx = &self.tx;
        let read = std::cell::Cell::new(0usize);
        let count = || {
            read.set(read.get() + 1);
            if read.get() > MAX_ARCHIVED_PROOF_KEYS {
                Err(StoreError::ArchivedProofTooLarge {
                    block: self.head,
                    limit: MAX_ARCHIVED_PROOF_KEYS,
                })
            } else {
                Ok(())
            }
        };
        // Every account that existed then and every slot a later block changed.
        let crate::store::history::ChangedAfter {
            accounts: mut addresses,
            slots: changed,
        } = crate::store::history::changed_after(tx, self.head, |_| count())?;
        let mut today: BTreeMap<Address, AccountRecord> = BTreeMap::new();
        for row in tx.open_table(ACCOUNTS)?.iter()? {
            let (k, v) = row?;
            count()?;
            let a = Address::from_slice(k.value());
            today.insert(a, decode_account(v.value())?);
            addresses.insert(a);
        }
        let storage = tx.open_table(crate::store::STORAGE)?;
        // An account's storage trie as of the block: today's slots and the changed ones, with
        // their values then.
        let storage_leaves = |a: &Address| -> Result<MemLeaves, StoreError> {
            let mut keys: BTreeSet<B256> = changed.get(a).cloned().unwrap_or_default();
            let (lo, hi) = crate::codec::storage_range(a);
            for row in storage.range(lo.as_slice()..=hi.as_slice())? {
                count()?;
                keys.insert(B256::from_slice(&row?.0.value()[20..52]));
            }
            let mut leaves = BTreeMap::new();
            for slot in &keys {
                let value = self.storage(a, slot)?;
                if !value.is_zero() {
                    leaves.insert(keccak256(slot).0, alloy_rlp::encode(value));
                }
            }
            Ok(MemLeaves(leaves))
        };
        let mut account_leaves = BTreeMap::new();
        let mut proved: Option<AccountRecord> = None;
        let mut proved_leaves = None;
        for a in &addresses {
            let Some(info) = self.account(a)? else {
                continue;
            };
            let rebuilt = if changed.contains_key(a) || a == address {
                let leaves = storage_leaves(a)?;
                let root = trie::prove::<NoBranches>(None, &[], &leaves, &[])?.0;
                Some((root, leaves))
            } else {
                None
            };
            // No slot of it changed since: its storage is today's (an account deleted since had
            // its slots recorded when it went, so it is not here with storage).
            let storage_root = match &rebuilt {
                Some((root, _)) => *root,
                None => today.get(a).map_or(EMPTY_ROOT_HASH, |r| r.storage_root),
            };
            let record = AccountRecord {
                nonce: info.nonce,
                balance: info.balance,
                code_hash: info.code_hash,
                storage_root,
            };
            if a == address {
                proved = Some(record);
                proved_leaves = rebuilt.map(|(_, leaves)| leaves);
            }
            let trie = alloy_trie::TrieAccount {
                nonce: record.nonce,
                balance: record.balance,
                storage_root: record.storage_root,
                code_hash: record.code_hash,
            };
            account_leaves.insert(keccak256(a).0, alloy_rlp::encode(trie));
        }
        let hashed_address = keccak256(address).0;
        let (state_root, nodes) =
            trie::prove::<NoBranches>(None, &[], &MemLeaves(account_leaves), &[hashed_address])?;
        let proof = path_nodes(&nodes, &hashed_address);
        let mut keys: Vec<[u8; 32]> = slots.iter().map(|s| keccak256(s).0).collect();
        keys.sort_unstable();
        keys.dedup();
        let storage_nodes = match (proved, proved_leaves) {
            (Some(r), Some(leaves)) if r.storage_root != EMPTY_ROOT_HASH => {
                Some(trie::prove::<NoBranches>(None, &[], &leaves, &keys)?.1)
            }
            _ => None,
        };
        let storage = self.slot_proofs(address, slots, storage_nodes.as_ref())?;
        Ok(AccountProof {
            address: *address,
            account: proved,
            proof,
            storage,
            state_root,
        })
    }
}

impl StateView {
    /// Each of `slots` with its value at this view and its path in `nodes`, the retained
    /// nodes of the account's storage trie (`None`: the trie is empty).
    fn slot_proofs(
        &self,
        address: &Address,
        slots: &[B256],
        nodes: Option<&alloy_trie::proof::ProofNodes>,
    ) -> Result<Vec<SlotProof>, StoreError> {
        slots
            .iter()
            .map(|slot| {
                Ok(SlotProof {
                    slot: *slot,
                    value: self.storage(address, slot)?,
                    proof: match nodes {
                        Some(nodes) => path_nodes(nodes, &keccak256(slot).0),
                        // An empty trie's only node is the empty string (its hash is the
                        // empty root), as geth's tools and anvil prove it.
                        None => vec![Bytes::from_static(&[alloy_rlp::EMPTY_STRING_CODE])],
                    },
                })
            })
            .collect()
    }
}

/// The retained nodes on the path to `key`, root first.
fn path_nodes(nodes: &alloy_trie::proof::ProofNodes, key: &[u8; 32]) -> Vec<Bytes> {
    nodes
        .matching_nodes_sorted(&Nibbles::unpack(key))
        .into_iter()
        .map(|(_, node)| node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccountInfoChange, StateChanges, Store};
    use alloy_consensus::Header;
    use alloy_primitives::KECCAK256_EMPTY;
    use alloy_trie::{TrieAccount, proof::verify_proof};
    use pipe_primitives::SealedBlock;

    fn account(i: u64) -> Address {
        Address::from_word(keccak256(i.to_be_bytes()))
    }

    /// 300 accounts (a trie a few levels deep, so stored branches are used), one contract
    /// among them with 200 slots.
    fn store() -> (tempfile::TempDir, Store, B256) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut changes = StateChanges::default();
        for i in 0..300u64 {
            changes.accounts.push((
                account(i),
                Some(AccountInfoChange {
                    nonce: i,
                    balance: U256::from(i * 1000 + 1),
                    code_hash: KECCAK256_EMPTY,
                }),
            ));
        }
        changes.storage.push((
            account(7),
            (1..=200u64)
                .map(|s| (B256::from(U256::from(s)), U256::from(s * 3)))
                .collect(),
        ));
        let genesis = store
            .commit_block(&changes, |root| {
                SealedBlock::new(
                    Header {
                        state_root: root,
                        ..Default::default()
                    },
                    vec![],
                    vec![],
                )
            })
            .unwrap();
        // A second block changes a few accounts and slots, so the stored branches were
        // updated incrementally, not only written from scratch.
        let mut more = StateChanges::default();
        more.accounts.push((
            account(3),
            Some(AccountInfoChange {
                nonce: 9,
                balance: U256::from(1),
                code_hash: KECCAK256_EMPTY,
            }),
        ));
        more.storage.push((
            account(7),
            vec![
                (B256::from(U256::from(5)), U256::ZERO),
                (B256::from(U256::from(999)), U256::from(4)),
            ],
        ));
        let block = store
            .commit_block(&more, |root| {
                SealedBlock::new(
                    Header {
                        number: 1,
                        parent_hash: genesis.hash,
                        state_root: root,
                        ..Default::default()
                    },
                    vec![],
                    vec![],
                )
            })
            .unwrap();
        (dir, store, block.header.state_root)
    }

    fn leaf(record: &AccountRecord) -> Vec<u8> {
        alloy_rlp::encode(TrieAccount {
            nonce: record.nonce,
            balance: record.balance,
            storage_root: record.storage_root,
            code_hash: record.code_hash,
        })
    }

    #[test]
    fn proofs_verify_against_the_state_root() {
        let (_dir, store, root) = store();
        let view = store.state().unwrap();
        let slots = [5u64, 6, 999, 12345].map(|s| B256::from(U256::from(s)));
        let p = view.proof(&account(7), &slots).unwrap();
        assert_eq!(p.state_root, root);
        let record = p.account.unwrap();
        verify_proof(
            root,
            Nibbles::unpack(keccak256(account(7))),
            Some(leaf(&record)),
            &p.proof,
        )
        .unwrap();
        let values: Vec<U256> = p.storage.iter().map(|s| s.value).collect();
        assert_eq!(
            values,
            [0u64, 18, 4, 0].map(U256::from).to_vec(),
            "slot 5 was deleted, 999 added, 12345 never written"
        );
        for s in &p.storage {
            let expected = (!s.value.is_zero()).then(|| alloy_rlp::encode(s.value));
            verify_proof(
                record.storage_root,
                Nibbles::unpack(keccak256(s.slot)),
                expected,
                &s.proof,
            )
            .unwrap_or_else(|e| panic!("slot {}: {e:?}", s.slot));
        }

        // An account that does not exist: its absence is proved.
        let absent = Address::repeat_byte(0x42);
        let p = view.proof(&absent, &[B256::ZERO]).unwrap();
        assert!(p.account.is_none());
        assert!(!p.proof.is_empty());
        verify_proof(root, Nibbles::unpack(keccak256(absent)), None, &p.proof).unwrap();
        assert_eq!(p.storage[0].value, U256::ZERO);
        verify_proof(
            EMPTY_ROOT_HASH,
            Nibbles::unpack(keccak256(B256::ZERO)),
            None,
            &p.storage[0].proof,
        )
        .unwrap();

        // A wrong value does not verify.
        let p = view.proof(&account(3), &[]).unwrap();
        let mut forged = p.account.unwrap();
        forged.balance += U256::from(1);
        assert!(
            verify_proof(
                root,
                Nibbles::unpack(keccak256(account(3))),
                Some(leaf(&forged)),
                &p.proof
            )
            .is_err()
        );
    }

    /// A proof at an archived block, from tries rebuilt from the archive, is node for node
    /// the proof taken while that block was the head: across changed, created and deleted
    /// accounts and slots.
    #[test]
    fn archived_proofs_are_the_proofs_taken_at_the_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.set_archive(true).unwrap();
        let info = |n: u64| {
            Some(AccountInfoChange {
                nonce: n,
                balance: U256::from(n + 1),
                code_hash: KECCAK256_EMPTY,
            })
        };
        let slot = |s: u64| B256::from(U256::from(s));
        let mut blocks = Vec::new();
        let mut genesis = StateChanges::default();
        for i in 0..200u64 {
            genesis.accounts.push((account(i), info(i)));
        }
        genesis.storage.push((
            account(7),
            (1..=50).map(|s| (slot(s), U256::from(s))).collect(),
        ));
        genesis
            .storage
            .push((account(8), vec![(slot(1), U256::from(1))]));
        blocks.push(genesis);
        let mut b1 = StateChanges::default();
        b1.accounts.push((account(3), info(33)));
        b1.accounts.push((account(9), None));
        b1.accounts.push((account(500), info(5)));
        b1.storage.push((
            account(7),
            vec![(slot(5), U256::ZERO), (slot(77), U256::from(7))],
        ));
        blocks.push(b1);
        let mut b2 = StateChanges::default();
        b2.accounts.push((account(7), None));
        b2.wiped_storage.push(account(7));
        b2.accounts.push((account(8), info(88)));
        b2.storage
            .push((account(8), vec![(slot(2), U256::from(2))]));
        blocks.push(b2);
        blocks.push(StateChanges::default());

        let who = [account(3), account(7), account(8), account(9), account(500)];
        let slots = [1u64, 2, 5, 6, 77].map(slot);
        let mut parent = B256::ZERO;
        let mut at_the_time = Vec::new();
        for (n, changes) in blocks.iter().enumerate() {
            let block = store
                .commit_block(changes, |root| {
                    SealedBlock::new(
                        Header {
                            number: n as u64,
                            parent_hash: parent,
                            state_root: root,
                            ..Default::default()
                        },
                        vec![],
                        vec![],
                    )
                })
                .unwrap();
            parent = block.hash;
            let view = store.state().unwrap();
            at_the_time.push(
                who.iter()
                    .map(|a| view.proof(a, &slots).unwrap())
                    .collect::<Vec<_>>(),
            );
        }
        for n in 0..blocks.len() as u64 - 1 {
            let past = StateView::open_as_of(&store, n).unwrap().expect("archived");
            for (i, a) in who.iter().enumerate() {
                let p = past.proof(a, &slots).unwrap();
                assert_eq!(p, at_the_time[n as usize][i], "block {n}, account {a}");
            }
        }
    }

    #[test]
    fn proofs_without_stored_branches_are_the_same() {
        let (_dir, store, _) = store();
        let view = store.state().unwrap();
        let slots = [B256::from(U256::from(6))];
        let with = view.proof(&account(7), &slots).unwrap();
        // Read every leaf instead of the branches.
        let tx = &view.tx;
        let hashed_accounts = tx.open_table(HASHED_ACCOUNTS).unwrap();
        let key = keccak256(account(7)).0;
        let (root, nodes) = trie::prove::<redb::ReadOnlyTable<&[u8], &[u8]>>(
            None,
            trie::ACCOUNT_TRIE,
            &AccountLeaves(&hashed_accounts),
            &[key],
        )
        .unwrap();
        assert_eq!(root, with.state_root);
        assert_eq!(path_nodes(&nodes, &key), with.proof);
    }
}
