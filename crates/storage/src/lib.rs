//! Durable storage for the node, on redb (an embedded, ACID, copy-on-write B-tree store).
//!
//! # Layout
//! Plain state (`accounts`, `storage`, `code`) serves the EVM's point reads. Beside it, hashed
//! state (`hashed_accounts`, `hashed_storage`) is kept in Merkle-Patricia key order so that the
//! tries' leaves are ordered scans for `alloy_trie::HashBuilder`. Each account row caches its
//! storage root. The branch nodes of the account trie and of every storage trie are stored too
//! (`trie_branches`), so a block's state root is computed from what the block changed: unchanged
//! subtrees go in as their stored hashes ([`trie`], measured in docs/benchmarks.md).
//!
//! # History
//! The state of the [`STATE_HISTORY`] most recent blocks is read from redb snapshots held
//! open ([`Store::state_at`]). In archive mode ([`Store::set_archive`]) each commit also
//! records what the block overwrote (`account_history`, `storage_history`), so the state as of
//! any block since archiving began is read without replaying anything ([`store`]'s `history`
//! module). Merkle proofs ([`AccountProof`]) come from the tries, which are kept for the head
//! only, so they are served for the recent snapshots.
//!
//! # Unfinalized state
//! The store holds finalized blocks only. Blocks that are executed but not final keep their
//! change sets as [`ChangeLayer`]s, which a [`StateView`] stacks on its snapshot
//! ([`StateView::with_layers`]); their state root is computed by applying the layers in a write
//! transaction that is then aborted ([`Store::state_root_after`]), so a block that is never
//! finalized leaves no trace here.
//!
//! # Atomicity
//! A block is committed by [`Store::commit_prepared`] (the chain's finalization: it refuses a
//! block that does not extend the head or whose root is not the recorded one, and writes the
//! tries as [`Store::state_root_after`] recorded them on the parent instead of hashing them
//! again) or [`Store::commit_block`] (genesis, and tools that seal with the root they compute)
//! in one write transaction: state changes,
//! the roots computed from them, header, body, receipts, transaction index and the head
//! pointer. redb commits are
//! all-or-nothing and `Durability::Immediate` fsyncs before returning, so after a crash the
//! store holds exactly the blocks whose commit returned, never half a block. Pending
//! transactions live in a log of their own ([`PendingLog`]), written by the pool's journal:
//! a batch of acknowledgements per fsync (group commit), so a transaction the node
//! acknowledged survives a crash; deletions ride along without an fsync of their own.

mod codec;
mod error;
mod models;
mod overlay;
mod pending;
mod proof;
mod state;
mod store;
mod trie;

pub use error::StoreError;
pub use overlay::ChangeLayer;
pub use pending::PendingLog;
pub use proof::{AccountProof, SlotProof};
pub use state::{AccountInfoChange, AccountRecord, StateChanges, StateView};
pub use store::{
    CommitTimings, DumpedAccount, RestoreError, STATE_HISTORY, Store, TrieUpdates,
    genesis_state_root,
};
