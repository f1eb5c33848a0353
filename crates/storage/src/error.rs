use thiserror::Error;

/// Why a storage operation failed.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    /// A file outside redb (the pending log) could not be read or written.
    #[error("i/o: {0}")]
    Io(String),
    /// Bytes in the store do not decode: the file was damaged or written by another version.
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// The store holds no genesis block yet.
    #[error("store is not initialised with a genesis block")]
    Uninitialised,
    /// The store was initialised with a different genesis than the one given.
    #[error("genesis mismatch: store has {stored}, config gives {given}")]
    GenesisMismatch {
        stored: alloy_primitives::B256,
        given: alloy_primitives::B256,
    },
    /// A block's state root is not the one its changes give.
    #[error("state root mismatch: header {header}, computed {computed}")]
    StateRootMismatch {
        header: alloy_primitives::B256,
        computed: alloy_primitives::B256,
    },
    /// A block given to be committed does not extend the stored head.
    #[error("block {number} (parent {parent}) does not extend the stored head {head:?}")]
    NotChild {
        number: u64,
        parent: alloy_primitives::B256,
        head: Option<u64>,
    },
    /// A Merkle proof of state that is not committed (an unfinalized block's layers): there is
    /// no stored trie to prove it from.
    #[error("no proof of unfinalized state (block {0}): ask at a finalized block")]
    UnfinalizedProof(u64),
    /// A Merkle proof of an archived block's state would read more than the bound.
    #[error(
        "no proof of block {block}'s state: rebuilding its tries from the archive would read over {limit} accounts and slots"
    )]
    ArchivedProofTooLarge { block: u64, limit: usize },
    /// The finalized head moved while an unfinalized state was being computed on it.
    #[error("finalized head is {head:?}, not the expected {expected}")]
    HeadMoved { expected: u64, head: Option<u64> },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
