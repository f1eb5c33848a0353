//! The pool's persisted pending transactions, in a redb file of their own (`pending.redb`
//! beside `chain.redb`).
//!
//! Why a second file: redb has one writer per database, and an acknowledgement must wait for
//! its fsync. In the chain's database every acknowledgement would queue behind block commits
//! (and make them wait in turn); measured with `pipe bench ingest`, that cut the send rate to a
//! third. Here a commit is a few small pages and one fsync, shared by a batch of
//! acknowledgements (the pool's journal does the batching). Nothing ties the two files
//! together: an included transaction left here by a crash is found on restart, fails
//! admission (its nonce is used) and is forgotten.

use std::path::Path;

use alloy_primitives::{B256, Bytes};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::StoreError;

const PENDING: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pending");

/// Pending transactions by hash, as EIP-2718 bytes.
#[derive(Debug)]
pub struct PendingStore {
    db: Database,
}

impl PendingStore {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(PENDING)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// Applies `ops` in order in one redb transaction: `Some` puts the bytes under the hash,
    /// `None` deletes. `durable` fsyncs before returning (what an acknowledgement needs);
    /// otherwise the writes become durable with the next durable commit (deletions can wait:
    /// a restart re-validates whatever it finds).
    pub fn write(&self, ops: &[(B256, Option<Bytes>)], durable: bool) -> Result<(), StoreError> {
        let mut tx = self.db.begin_write()?;
        let durability = if durable {
            Durability::Immediate
        } else {
            Durability::None
        };
        tx.set_durability(durability)
            .map_err(|e| StoreError::Corrupt(format!("durability: {e}")))?;
        {
            let mut table = tx.open_table(PENDING)?;
            for (hash, raw) in ops {
                match raw {
                    Some(raw) => {
                        table.insert(&hash.0, raw.as_ref())?;
                    }
                    None => {
                        table.remove(&hash.0)?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every persisted transaction's bytes.
    pub fn load(&self) -> Result<Vec<Bytes>, StoreError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(PENDING)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (_, v) = row?;
            out.push(Bytes::copy_from_slice(v.value()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_apply_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pending.redb");
        let (a, b) = (B256::repeat_byte(1), B256::repeat_byte(2));
        {
            let store = PendingStore::open(&path).unwrap();
            store
                .write(
                    &[
                        (a, Some(Bytes::from_static(b"a"))),
                        (b, Some(Bytes::from_static(b"b"))),
                        (a, None),
                        (a, Some(Bytes::from_static(b"a2"))),
                    ],
                    true,
                )
                .unwrap();
            store.write(&[(b, None)], false).unwrap();
        }
        let store = PendingStore::open(&path).unwrap();
        assert_eq!(store.load().unwrap(), vec![Bytes::from_static(b"a2")]);
    }
}
