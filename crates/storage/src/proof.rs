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
    /// `address` and its `slots` with their proofs, at this view's block.
    pub fn proof(&self, address: &Address, slots: &[B256]) -> Result<AccountProof, StoreError> {
        if self.has_layers() {
            return Err(StoreError::UnfinalizedProof(self.head));
        }
        if self.is_historical() {
            return Err(StoreError::ArchiveProof(self.head));
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
        let storage = slots
            .iter()
            .map(|slot| {
                Ok(SlotProof {
                    slot: *slot,
                    value: self.storage(address, slot)?,
                    proof: match &storage_nodes {
                        Some(nodes) => path_nodes(nodes, &keccak256(slot).0),
                        // An empty trie's only node is the empty string (its hash is the
                        // empty root), as geth's tools and anvil prove it.
                        None => vec![Bytes::from_static(&[alloy_rlp::EMPTY_STRING_CODE])],
                    },
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(AccountProof {
            address: *address,
            account,
            proof,
            storage,
            state_root,
        })
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
