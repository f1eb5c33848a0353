//! The store: opening, genesis, block commits, and the head; one file per piece of state:
//! [`blocks`] (headers, bodies, receipts, sidecars, the transaction index) and [`roots`]
//! (plain and hashed state, the trie branches, state roots).

use std::{collections::BTreeMap, ops::Bound, path::Path};

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable};
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles, TrieAccount};
use pipe_primitives::{SealedBlock, Sidecar, StateEdits};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use crate::{
    StoreError,
    codec::{
        decode_account, decode_body, decode_receipts, decode_tx_location, encode_account,
        encode_body, encode_receipts, storage_key, storage_range, tx_location,
    },
    state::{AccountRecord, StateChanges, StateView},
    trie::{self, Leaves},
};

mod blocks;
mod edits;
pub(crate) mod history;
pub(crate) mod roots;

use blocks::write_block;
pub use edits::{DumpedAccount, RestoreError};
use roots::*;
pub use roots::{TrieUpdates, genesis_state_root};

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const HASH_TO_NUMBER: TableDefinition<&[u8; 32], u64> = TableDefinition::new("hash_to_number");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
/// Inference sidecars (RLP), only for blocks that used results.
const SIDECARS: TableDefinition<u64, &[u8]> = TableDefinition::new("sidecars");
/// The dev chain's state edits (RLP), only for blocks that carry any.
const EDITS: TableDefinition<u64, &[u8]> = TableDefinition::new("state_edits");
const TX_LOOKUP: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tx_lookup");
pub(crate) const ACCOUNTS: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("accounts");
pub(crate) const STORAGE: TableDefinition<&[u8], &[u8; 32]> = TableDefinition::new("storage");
pub(crate) const CODE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("code");
/// keccak(address) -> RLP(trie account), in account-trie order.
pub(crate) const HASHED_ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("hashed_accounts");
/// address || keccak(slot) -> RLP(value), in storage-trie order within each address.
pub(crate) const HASHED_STORAGE: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("hashed_storage");
/// namespace || nibble path -> a branch node of the account trie or a storage trie
/// ([`crate::trie`]): what lets a block's root be computed from what it changed.
pub(crate) const TRIE_BRANCHES: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("trie_branches");
/// Pending transactions by hash: their EIP-2718 bytes.
/// Pending transactions, as versions before `PendingLog` kept them; read once and emptied.
const POOL: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("pool");

const HEAD_KEY: &str = "head";
/// The head block `trie_branches` describes, written with it. A store another writer
/// committed to without updating the branches (an older binary, say) has a different head;
/// its branches are then dropped and rebuilt from the leaves.
const TRIE_HEAD_KEY: &str = "trie_branches_head";

/// Handle to the node's database. Cheap to share behind an `Arc`; redb serialises writers and
/// lets readers run beside them on snapshots.
pub struct Store {
    /// `None` only while it is being reopened after an I/O failure ([`Store::reopen`]).
    db: parking_lot::RwLock<Option<std::sync::Arc<Database>>>,
    path: std::path::PathBuf,
    /// redb reported an I/O failure (a full disk, say). From then on it refuses every
    /// transaction until the database is closed and opened again, so the next use reopens
    /// it: once the disk has room again the node goes on without a restart.
    failed: std::sync::atomic::AtomicBool,
    /// Read snapshots of the most recent blocks' state, newest last. redb's MVCC keeps a
    /// snapshot's pages alive while it is held, so state at recent blocks costs no extra
    /// writes: this is how `eth_call` at "the block number I just read" keeps working after
    /// the head moved. Older state is not kept (no archive).
    recent: parking_lot::Mutex<std::collections::VecDeque<std::sync::Arc<StateView>>>,
    /// Where the last block commit spent its time, for benchmarks and metrics.
    last_commit: parking_lot::Mutex<CommitTimings>,
}

/// Where one block commit spent its time (microseconds).
#[derive(Clone, Copy, Debug, Default)]
pub struct CommitTimings {
    /// Writing the state changes, plain and hashed, with the storage roots they change.
    pub state_us: u64,
    /// The account trie's root (from its stored branches and the accounts that changed).
    pub account_trie_us: u64,
    /// Header, body, receipts and indices.
    pub block_us: u64,
    /// The durable commit (page writes and fsync).
    pub sync_us: u64,
}

/// Whether the stored trie branches in `tx`'s snapshot describe its head (they are dropped and
/// rebuilt at the next commit otherwise: [`roots::trie_branches_current`]).
pub(crate) fn branches_describe_head(tx: &redb::ReadTransaction) -> Result<bool, StoreError> {
    let meta = tx.open_table(META)?;
    Ok(roots::meta_number(&meta, HEAD_KEY)? == roots::meta_number(&meta, TRIE_HEAD_KEY)?)
}

/// How many recent blocks' state stays readable.
pub const STATE_HISTORY: usize = 128;

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        // Create every table up front so read transactions can always open them.
        tx.open_table(META)?;
        tx.open_table(HEADERS)?;
        tx.open_table(HASH_TO_NUMBER)?;
        tx.open_table(BODIES)?;
        tx.open_table(RECEIPTS)?;
        tx.open_table(SIDECARS)?;
        tx.open_table(EDITS)?;
        tx.open_table(TX_LOOKUP)?;
        tx.open_table(ACCOUNTS)?;
        tx.open_table(STORAGE)?;
        tx.open_table(CODE)?;
        tx.open_table(HASHED_ACCOUNTS)?;
        tx.open_table(HASHED_STORAGE)?;
        tx.open_table(TRIE_BRANCHES)?;
        tx.open_table(POOL)?;
        tx.open_table(history::ACCOUNT_HISTORY)?;
        tx.open_table(history::STORAGE_HISTORY)?;
        tx.open_table(crate::models::MODEL_BYTES)?;
        tx.open_table(crate::models::MODEL_META)?;
        tx.commit()?;
        let store = Self {
            db: parking_lot::RwLock::new(Some(std::sync::Arc::new(db))),
            path: path.to_path_buf(),
            failed: Default::default(),
            recent: Default::default(),
            last_commit: Default::default(),
        };
        if store.head()?.is_some() {
            store.remember_state()?;
        }
        Ok(store)
    }

    /// The database, reopened first if an I/O failure poisoned it.
    pub(crate) fn db(&self) -> Result<std::sync::Arc<Database>, StoreError> {
        if self.failed.load(std::sync::atomic::Ordering::Acquire) {
            self.reopen()?;
        }
        self.db
            .read()
            .clone()
            .ok_or_else(|| StoreError::Io("the database is being reopened".into()))
    }

    /// Passes `r` on, noting an I/O failure: redb refuses all work after one until reopened.
    pub(crate) fn seen<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::Db(redb::Error::PreviousIo | redb::Error::Io(_))) = &r
            && !self.failed.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::warn!(target: "pipe::storage", "the database hit an I/O error; it is reopened on next use");
        }
        r
    }

    /// Closes and opens the database again after an I/O failure. redb recovers the file to
    /// its last committed transaction. Our recent-state snapshots are let go first; a reader
    /// still holding an old one keeps the file locked, so opening is retried for a while, and
    /// again on the next use if it still cannot be opened (the disk still full, say).
    fn reopen(&self) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        {
            let mut slot = self.db.write();
            if !self.failed.load(Ordering::Acquire) {
                return Ok(());
            }
            self.recent.lock().clear();
            *slot = None;
            let mut tries = 0;
            let db = loop {
                match Database::create(&self.path) {
                    Ok(db) => break db,
                    Err(redb::DatabaseError::DatabaseAlreadyOpen) if tries < 40 => {
                        tries += 1;
                        std::thread::sleep(std::time::Duration::from_millis(25));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            *slot = Some(std::sync::Arc::new(db));
            self.failed.store(false, Ordering::Release);
        }
        tracing::info!(target: "pipe::storage", "database reopened after an I/O error");
        if self.head()?.is_some() {
            self.remember_state()?;
        }
        Ok(())
    }

    pub(crate) fn head_in(tx: &ReadTransaction) -> Result<Option<u64>, StoreError> {
        meta_number(&tx.open_table(META)?, HEAD_KEY)
    }

    /// Number of the newest committed block, `None` before genesis.
    pub fn head(&self) -> Result<Option<u64>, StoreError> {
        let r = self.db().and_then(|db| Self::head_in(&db.begin_read()?));
        self.seen(r)
    }

    /// A consistent read view of the state at the current head.
    pub fn state(&self) -> Result<StateView, StoreError> {
        let r = StateView::open(self);
        self.seen(r)
    }

    /// One account at the head: a single-table read, for paths (transaction admission) that
    /// need no consistent view across several reads.
    pub fn account(&self, address: &Address) -> Result<Option<AccountRecord>, StoreError> {
        let tx = self.db()?.begin_read()?;
        tx.open_table(ACCOUNTS)?
            .get(&address.0.0)?
            .map(|v| decode_account(v.value()))
            .transpose()
    }

    /// The state as of block `number`: one of the [`STATE_HISTORY`] most recent snapshots,
    /// or, in archive mode, any block since archiving began.
    pub fn state_at(&self, number: u64) -> Option<std::sync::Arc<StateView>> {
        let recent = self
            .recent
            .lock()
            .iter()
            .rev()
            .find(|v| v.head == number)
            .cloned();
        recent.or_else(|| {
            let r = StateView::open_as_of(self, number);
            match self.seen(r) {
                Ok(view) => view.map(std::sync::Arc::new),
                Err(e) => {
                    tracing::warn!(target: "pipe::storage", number, error = %e, "reading archived state");
                    None
                }
            }
        })
    }

    /// Turns archive mode on (from the block after the head; from genesis on a new store) or
    /// off ([`history`]).
    pub fn set_archive(&self, on: bool) -> Result<(), StoreError> {
        let r = (|| {
            let tx = self.db()?.begin_write()?;
            let head = meta_number(&tx.open_table(META)?, HEAD_KEY)?;
            history::set(&tx, head, on)?;
            tx.commit()?;
            Ok(())
        })();
        self.seen(r)
    }

    /// Bytes of data the database holds (keys, values and their B-tree pages), and bytes the
    /// file has allocated: what a disk-cost measurement reads (the file itself grows in large
    /// steps and keeps freed pages for reuse).
    pub fn stored_bytes(&self) -> Result<(u64, u64), StoreError> {
        let r = (|| {
            let tx = self.db()?.begin_write()?;
            let stats = tx
                .stats()
                .map_err(|e| StoreError::Corrupt(format!("stats: {e}")))?;
            let out = (
                stats.stored_bytes() + stats.metadata_bytes(),
                stats.allocated_pages() * stats.page_size() as u64,
            );
            tx.abort()?;
            Ok(out)
        })();
        self.seen(r)
    }

    /// The first block archive mode recorded; `None` when it is off.
    pub fn archive_from(&self) -> Result<Option<u64>, StoreError> {
        let r = self
            .db()
            .and_then(|db| history::archive_from(&db.begin_read()?.open_table(META)?));
        self.seen(r)
    }

    fn remember_state(&self) -> Result<(), StoreError> {
        let view = std::sync::Arc::new(StateView::open(self)?);
        let mut recent = self.recent.lock();
        recent.push_back(view);
        while recent.len() > STATE_HISTORY {
            recent.pop_front();
        }
        Ok(())
    }

    /// Writes the genesis state and block if the store is empty; otherwise checks that the
    /// stored genesis is the one `build` makes. Returns the genesis block.
    pub fn init_genesis(
        &self,
        alloc: &StateChanges,
        build: impl FnOnce(B256) -> SealedBlock,
    ) -> Result<SealedBlock, StoreError> {
        if self.head()?.is_some() {
            let stored = self.block(0)?.ok_or(StoreError::Uninitialised)?;
            // What the config would give, computed in memory, to catch a changed config.
            let given = build(genesis_state_root(alloc));
            if given.hash != stored.hash {
                return Err(StoreError::GenesisMismatch {
                    stored: stored.hash,
                    given: given.hash,
                });
            }
            return Ok(stored);
        }
        self.commit_block(alloc, build)
    }

    /// Applies `changes`, computes the state root, lets `build` seal the block with it, and
    /// stores block, receipts and indices, all in one durable transaction.
    pub fn commit_block(
        &self,
        changes: &StateChanges,
        build: impl FnOnce(B256) -> SealedBlock,
    ) -> Result<SealedBlock, StoreError> {
        self.commit_with(changes, None, Tries::Compute, |root| Ok(build(root)))
    }

    /// The state root after applying `layers` in order (the change sets of unfinalized blocks,
    /// oldest first) on the finalized state at block `finalized`, with what the last layer did
    /// to the tries (for [`Store::commit_prepared`]). Computed inside a write transaction that
    /// is then dropped, so nothing is written: this is how a proposal or a block under
    /// verification gets its root before anyone has decided to keep it. Fails if the
    /// finalized head is no longer `finalized` (the layers would land on the wrong state).
    pub fn state_root_after(
        &self,
        finalized: u64,
        layers: &[&StateChanges],
    ) -> Result<TrieUpdates, StoreError> {
        let r = self.root_after(finalized, layers);
        self.seen(r)
    }

    fn root_after(
        &self,
        finalized: u64,
        layers: &[&StateChanges],
    ) -> Result<TrieUpdates, StoreError> {
        let Some((last, earlier)) = layers.split_last() else {
            return Err(StoreError::Corrupt("state root of no change set".into()));
        };
        let tx = self.db()?.begin_write()?;
        let head = meta_number(&tx.open_table(META)?, HEAD_KEY)?;
        if head != Some(finalized) {
            return Err(StoreError::HeadMoved {
                expected: finalized,
                head,
            });
        }
        trie_branches_current(&tx)?;
        let mut timings = CommitTimings::default();
        for changes in earlier {
            apply_and_root(&tx, changes, &mut timings, Tries::Compute)?;
        }
        let mut updates = TrieUpdates::default();
        apply_and_root(&tx, last, &mut timings, Tries::Record(&mut updates))?;
        // Dropping the transaction aborts it: not a page of the above reaches the file.
        tx.abort()?;
        Ok(updates)
    }

    /// Commits `block` with `changes`, writing the tries as `updates` (recorded by
    /// [`Store::state_root_after`] on the block's parent) says instead of hashing them again.
    /// The block must extend the stored head and its header must carry the recorded root.
    pub fn commit_prepared(
        &self,
        changes: &StateChanges,
        updates: &TrieUpdates,
        block: SealedBlock,
    ) -> Result<SealedBlock, StoreError> {
        let linked = Some((block.number(), block.header.parent_hash));
        self.commit_with(changes, linked, Tries::Replay(updates), |root| {
            if root == block.header.state_root {
                Ok(block)
            } else {
                Err(StoreError::StateRootMismatch {
                    header: block.header.state_root,
                    computed: root,
                })
            }
        })
    }

    /// One durable write transaction: apply `changes`, hand the root to `seal`, store what it
    /// returns. When `seal` fails the transaction is dropped, which aborts it.
    /// With `linked` (a number and parent hash), the block must be the child of the stored
    /// head; checked before anything is applied.
    fn commit_with(
        &self,
        changes: &StateChanges,
        linked: Option<(u64, B256)>,
        tries: Tries<'_>,
        seal: impl FnOnce(B256) -> Result<SealedBlock, StoreError>,
    ) -> Result<SealedBlock, StoreError> {
        let r = self.commit_inner(changes, linked, tries, seal);
        self.seen(r)
    }

    fn commit_inner(
        &self,
        changes: &StateChanges,
        linked: Option<(u64, B256)>,
        tries: Tries<'_>,
        seal: impl FnOnce(B256) -> Result<SealedBlock, StoreError>,
    ) -> Result<SealedBlock, StoreError> {
        let mut tx = self.db()?.begin_write()?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Corrupt(format!("durability: {e}")))?;
        if let Some((number, parent)) = linked {
            check_parent(&tx, number, parent)?;
        }
        let mut timings = CommitTimings::default();
        trie_branches_current(&tx)?;
        // Decided in this transaction, so archiving turned on or off concurrently can never
        // leave a block of the archive unrecorded.
        let recorded = {
            let meta = tx.open_table(META)?;
            history::archive_from(&meta)?
                .is_some()
                .then(|| meta_number(&meta, HEAD_KEY))
                .transpose()?
                // The block extends the head (or is genesis): its number follows from it.
                .map(|head| head.map_or(0, |h| h + 1))
        };
        if let Some(number) = recorded {
            history::record(&tx, changes, number)?;
        }
        let root = apply_and_root(&tx, changes, &mut timings, tries)?;
        let started = std::time::Instant::now();
        let block = seal(root)?;
        if let Some(number) = recorded
            && block.number() != number
        {
            return Err(StoreError::Corrupt(format!(
                "block {} committed on head {}: history recorded for block {number}",
                block.number(),
                number.saturating_sub(1)
            )));
        }
        write_block(&tx, &block)?;
        tx.open_table(META)?
            .insert(TRIE_HEAD_KEY, block.number().to_be_bytes().as_slice())?;
        timings.block_us = started.elapsed().as_micros() as u64;
        let started = std::time::Instant::now();
        tx.commit()?;
        timings.sync_us = started.elapsed().as_micros() as u64;
        *self.last_commit.lock() = timings;
        // The block is durable: failing to keep a snapshot of it only costs `eth_call` at it.
        if let Err(e) = self.remember_state() {
            tracing::warn!(target: "pipe::storage", error = %e, "keeping the new state's snapshot");
        }
        Ok(block)
    }

    /// Where the last block commit spent its time.
    pub fn last_commit_timings(&self) -> CommitTimings {
        *self.last_commit.lock()
    }

    /// The account trie's root from every account row, as each block computed it before the
    /// trie's branches were stored: the baseline the benchmark compares the incremental root
    /// with. Reads the head state; writes nothing.
    pub fn account_root_from_scratch(&self) -> Result<B256, StoreError> {
        let tx = self.db()?.begin_read()?;
        let mut builder = HashBuilder::default();
        for row in tx.open_table(HASHED_ACCOUNTS)?.iter()? {
            let (k, v) = row?;
            builder.add_leaf(Nibbles::unpack(k.value()), v.value());
        }
        Ok(builder.root())
    }

    /// The pending transactions an older version kept in this database (they now live in
    /// [`crate::PendingLog`]).
    pub fn legacy_pending(&self) -> Result<Vec<Bytes>, StoreError> {
        let tx = self.db()?.begin_read()?;
        let pool = tx.open_table(POOL)?;
        let mut out = Vec::new();
        for row in pool.iter()? {
            let (_, v) = row?;
            out.push(Bytes::copy_from_slice(v.value()));
        }
        Ok(out)
    }

    /// Empties the old pending table, once its rows are safe elsewhere.
    pub fn clear_legacy_pending(&self) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        tx.open_table(POOL)?.retain(|_, _| false)?;
        tx.commit()?;
        Ok(())
    }

    /// Recomputes the state root from the hashed state alone, re-deriving every storage root
    /// instead of trusting the cached ones, and returns it with the head header's root. The
    /// two differ only if the store is inconsistent. O(state): for checks and tests.
    pub fn verify_state_root(&self) -> Result<(B256, B256), StoreError> {
        let tx = self.db()?.begin_read()?;
        let head = Self::head_in(&tx)?.ok_or(StoreError::Uninitialised)?;
        let header = tx
            .open_table(HEADERS)?
            .get(head)?
            .map(|v| Header::decode(&mut v.value()))
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("head header: {e}")))?
            .ok_or(StoreError::Uninitialised)?;
        let accounts = tx.open_table(ACCOUNTS)?;
        let hashed_storage = tx.open_table(HASHED_STORAGE)?;
        let mut leaves = Vec::new();
        for row in accounts.iter()? {
            let (k, v) = row?;
            let address = Address::from(*k.value());
            let record = decode_account(v.value())?;
            let trie = TrieAccount {
                nonce: record.nonce,
                balance: record.balance,
                storage_root: storage_root(&hashed_storage, &address)?,
                code_hash: record.code_hash,
            };
            leaves.push((keccak256(address), alloy_rlp::encode(trie)));
        }
        leaves.sort_unstable_by_key(|(k, _)| *k);
        let mut builder = HashBuilder::default();
        for (k, v) in &leaves {
            builder.add_leaf(Nibbles::unpack(k), v);
        }
        Ok((builder.root(), header.state_root))
    }

    /// Number of accounts in state (for benchmarks and metrics).
    pub fn account_count(&self) -> Result<u64, StoreError> {
        let tx = self.db()?.begin_read()?;
        Ok(tx.open_table(ACCOUNTS)?.len()?)
    }
}

/// Fails unless block `number` with `parent_hash` is the child of the head `tx` sees: a block
/// written anywhere else would overwrite a number or break the chain's links.
fn check_parent(tx: &WriteTransaction, number: u64, parent_hash: B256) -> Result<(), StoreError> {
    let head = meta_number(&tx.open_table(META)?, HEAD_KEY)?;
    let parent = match head {
        Some(n) => tx
            .open_table(HEADERS)?
            .get(n)?
            .map(|h| (n, keccak256(h.value()))),
        None => None,
    };
    match parent {
        Some((n, hash)) if number == n + 1 && parent_hash == hash => Ok(()),
        _ => Err(StoreError::NotChild {
            number,
            parent: parent_hash,
            head,
        }),
    }
}
