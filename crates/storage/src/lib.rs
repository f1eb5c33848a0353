//! Durable storage for the node, on redb (an embedded, ACID, copy-on-write B-tree store).
//!
//! # Layout
//! Plain state (`accounts`, `storage`, `code`) serves the EVM's point reads. Beside it, hashed
//! state (`hashed_accounts`, `hashed_storage`) is kept in Merkle-Patricia key order so that the
//! state root is a single ordered scan fed to `alloy_trie::HashBuilder`; each account row caches
//! its storage root, so a block only rehashes the storage of the accounts it touched. The
//! account trie itself is rehashed from the ordered scan every block: cost grows with the number
//! of accounts, not with storage (measured in docs/benchmarks.md).
//!
//! # Atomicity
//! A block is committed by [`Store::commit_block`] in one write transaction: state changes,
//! the roots computed from them, header, body, receipts, transaction index, removal of the
//! included transactions from the pending table, and the head pointer. redb commits are
//! all-or-nothing and `Durability::Immediate` fsyncs before returning, so after a crash the
//! store holds exactly the blocks whose commit returned, never half a block. Pending
//! transactions are written with `Durability::None` (no fsync each): they become durable with
//! the next block commit, and a crash may lose the ones accepted since; a client that was told
//! "accepted" but lost its transaction re-sends it, as with any Ethereum node's mempool.

mod codec;
mod error;
mod models;
mod state;
mod store;

pub use error::StoreError;
pub use state::{AccountInfoChange, AccountRecord, StateChanges, StateView};
pub use store::{STATE_HISTORY, Store, genesis_state_root};
