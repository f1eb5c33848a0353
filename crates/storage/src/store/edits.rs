//! The dev chain's state controls, read off the store: the edits that put the state back as
//! it was after an earlier block (`evm_revert`, `anvil_reset`), and the whole state
//! (`anvil_dumpState`). Both only read; the edits are committed in a block like any other
//! ([`pipe_primitives::edits`]).

use pipe_primitives::{StateEdit, edits::MAX_EDITS};

use super::*;

/// One account of a state dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedAccount {
    pub address: Address,
    pub nonce: u64,
    pub balance: U256,
    pub code: Bytes,
    /// Nonzero slots, in slot order.
    pub storage: Vec<(B256, U256)>,
}

/// Why the state cannot be put back.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The archive does not reach back to that block (archive mode off, or turned on later).
    #[error(
        "the state after block {0} is not archived (archive mode keeps it from when it was turned on)"
    )]
    NotArchived(u64),
    /// More changed since than one block of edits carries.
    #[error("{0} accounts and slots changed since; at most {MAX_EDITS} can be put back at once")]
    TooMany(usize),
    /// More state than a dump answers with.
    #[error("the state has more than {0} accounts and slots; too large to dump")]
    TooLarge(usize),
}

/// redb's own errors, through the store's.
macro_rules! via_store {
    ($($t:ty),*) => {$(
        impl From<$t> for RestoreError {
            fn from(e: $t) -> Self {
                RestoreError::Store(e.into())
            }
        }
    )*};
}
via_store!(redb::TableError, redb::StorageError, redb::TransactionError);

impl Store {
    /// The edits that make the head's state the state after block `number`: every account and
    /// slot a later block changed, put back (an account created since is deleted), but the
    /// accounts in `keep`, whose changes stay. Reads the archive ([`crate::store::history`]);
    /// empty when `number` is the head. The caller must commit them on the head this read
    /// (the dev sealer holds its seal lock throughout).
    pub fn restore_edits(
        &self,
        number: u64,
        keep: &[Address],
    ) -> Result<Vec<StateEdit>, RestoreError> {
        let Some(past) = StateView::open_as_of(self, number)? else {
            return match self.head()? {
                Some(head) if number >= head => Ok(Vec::new()),
                _ => Err(RestoreError::NotArchived(number)),
            };
        };
        // Current values come from the same snapshot the archive view reads.
        let tx = &past.tx;
        let accounts = tx.open_table(ACCOUNTS)?;
        let storage = tx.open_table(STORAGE)?;
        // Every key changed after `number`, each once, in key order.
        let changed = crate::store::history::changed_after(tx, number, |slots| {
            if slots > MAX_EDITS {
                Err(RestoreError::TooMany(slots))
            } else {
                Ok(())
            }
        })?;
        let mut changed_accounts = changed.accounts;
        changed_accounts.retain(|a| !keep.contains(a));
        let changed_slots = changed
            .slots
            .iter()
            .filter(|(a, _)| !keep.contains(a))
            .flat_map(|(a, slots)| slots.iter().map(move |s| (*a, *s)));
        let mut edits = Vec::new();
        for address in &changed_accounts {
            let then = past.account(address)?;
            let now = match accounts.get(&address.0.0)? {
                Some(row) => Some(decode_account(row.value())?),
                None => None,
            };
            let Some(then) = then else {
                if now.is_some() {
                    edits.push(StateEdit::Delete { address: *address });
                }
                continue;
            };
            if now.is_none() {
                // Deleted since: re-created below, with its slots (each was recorded when the
                // account went, so each is in `changed_slots`).
                edits.push(StateEdit::Delete { address: *address });
            }
            if now.as_ref().is_none_or(|n| n.balance != then.balance) {
                edits.push(StateEdit::Balance {
                    address: *address,
                    balance: then.balance,
                });
            }
            if now.as_ref().is_none_or(|n| n.nonce != then.nonce) {
                edits.push(StateEdit::Nonce {
                    address: *address,
                    nonce: then.nonce,
                });
            }
            if now.as_ref().is_none_or(|n| n.code_hash != then.code_hash) {
                let code = if then.code_hash == alloy_primitives::KECCAK256_EMPTY {
                    Bytes::new()
                } else {
                    past.code(&then.code_hash)?.ok_or_else(|| {
                        StoreError::Corrupt(format!("code {} is missing", then.code_hash))
                    })?
                };
                edits.push(StateEdit::Code {
                    address: *address,
                    code,
                });
            }
        }
        for (address, slot) in changed_slots {
            let (address, slot) = (&address, &slot);
            if past.account(address)?.is_none() {
                continue;
            }
            let then = past.storage(address, slot)?;
            let now = storage
                .get(storage_key(address, slot).as_slice())?
                .map(|v| U256::from_be_bytes(*v.value()))
                .unwrap_or_default();
            if then != now {
                edits.push(StateEdit::Storage {
                    address: *address,
                    slot: *slot,
                    value: then,
                });
            }
        }
        if edits.len() > MAX_EDITS {
            return Err(RestoreError::TooMany(edits.len()));
        }
        Ok(edits)
    }

    /// Every account at the head, with its code and nonzero slots, in address order; refused
    /// when accounts and slots together number more than `max`.
    pub fn dump_state(&self, max: usize) -> Result<(u64, Vec<DumpedAccount>), RestoreError> {
        let tx = self.db()?.begin_read()?;
        let head = Self::head_in(&tx)?.ok_or(StoreError::Uninitialised)?;
        let accounts = tx.open_table(ACCOUNTS)?;
        let storage = tx.open_table(STORAGE)?;
        let code = tx.open_table(CODE)?;
        let mut out = Vec::new();
        let mut count = 0usize;
        for row in accounts.iter()? {
            let (k, v) = row?;
            let address = Address::from_slice(k.value());
            let record = decode_account(v.value())?;
            let bytes = if record.code_hash == alloy_primitives::KECCAK256_EMPTY {
                Bytes::new()
            } else {
                code.get(&record.code_hash.0)?
                    .map(|c| Bytes::copy_from_slice(c.value()))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("code {} is missing", record.code_hash))
                    })?
            };
            let (lo, hi) = storage_range(&address);
            let mut slots = Vec::new();
            for row in storage.range(lo.as_slice()..=hi.as_slice())? {
                let (k, v) = row?;
                let value = U256::from_be_bytes(*v.value());
                if !value.is_zero() {
                    slots.push((B256::from_slice(&k.value()[20..52]), value));
                }
            }
            count += 1 + slots.len();
            if count > max {
                return Err(RestoreError::TooLarge(max));
            }
            out.push(DumpedAccount {
                address,
                nonce: record.nonce,
                balance: record.balance,
                code: bytes,
                storage: slots,
            });
        }
        Ok((head, out))
    }
}
