//! The store: opening, genesis, block commits and block/receipt/transaction reads.

use std::{collections::BTreeMap, ops::Bound, path::Path};

use alloy_consensus::Header;
use alloy_primitives::{Address, B256, Bytes, U256, keccak256};
use alloy_rlp::{Decodable, Encodable};
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles, TrieAccount};
use pipe_primitives::{SealedBlock, Sidecar};
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

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const HEADERS: TableDefinition<u64, &[u8]> = TableDefinition::new("headers");
const HASH_TO_NUMBER: TableDefinition<&[u8; 32], u64> = TableDefinition::new("hash_to_number");
const BODIES: TableDefinition<u64, &[u8]> = TableDefinition::new("bodies");
const RECEIPTS: TableDefinition<u64, &[u8]> = TableDefinition::new("receipts");
/// Inference sidecars (RLP), only for blocks that used results.
const SIDECARS: TableDefinition<u64, &[u8]> = TableDefinition::new("sidecars");
const TX_LOOKUP: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("tx_lookup");
pub(crate) const ACCOUNTS: TableDefinition<&[u8; 20], &[u8]> = TableDefinition::new("accounts");
pub(crate) const STORAGE: TableDefinition<&[u8], &[u8; 32]> = TableDefinition::new("storage");
pub(crate) const CODE: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("code");
/// keccak(address) -> RLP(trie account), in account-trie order.
const HASHED_ACCOUNTS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("hashed_accounts");
/// address || keccak(slot) -> RLP(value), in storage-trie order within each address.
const HASHED_STORAGE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("hashed_storage");
/// namespace || nibble path -> a branch node of the account trie or a storage trie
/// ([`crate::trie`]): what lets a block's root be computed from what it changed.
const TRIE_BRANCHES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("trie_branches");
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
    db: Database,
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
        tx.open_table(TX_LOOKUP)?;
        tx.open_table(ACCOUNTS)?;
        tx.open_table(STORAGE)?;
        tx.open_table(CODE)?;
        tx.open_table(HASHED_ACCOUNTS)?;
        tx.open_table(HASHED_STORAGE)?;
        tx.open_table(TRIE_BRANCHES)?;
        tx.open_table(POOL)?;
        tx.open_table(crate::models::MODEL_BYTES)?;
        tx.open_table(crate::models::MODEL_META)?;
        tx.commit()?;
        let store = Self {
            db,
            recent: Default::default(),
            last_commit: Default::default(),
        };
        if store.head()?.is_some() {
            store.remember_state()?;
        }
        Ok(store)
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }

    pub(crate) fn head_in(tx: &ReadTransaction) -> Result<Option<u64>, StoreError> {
        meta_number(&tx.open_table(META)?, HEAD_KEY)
    }

    /// Number of the newest committed block, `None` before genesis.
    pub fn head(&self) -> Result<Option<u64>, StoreError> {
        Self::head_in(&self.db.begin_read()?)
    }

    /// A consistent read view of the state at the current head.
    pub fn state(&self) -> Result<StateView, StoreError> {
        StateView::open(self)
    }

    /// One account at the head: a single-table read, for paths (transaction admission) that
    /// need no consistent view across several reads.
    pub fn account(&self, address: &Address) -> Result<Option<AccountRecord>, StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(ACCOUNTS)?
            .get(&address.0.0)?
            .map(|v| decode_account(v.value()))
            .transpose()
    }

    /// The state as of block `number`, if it is among the [`STATE_HISTORY`] most recent.
    pub fn state_at(&self, number: u64) -> Option<std::sync::Arc<StateView>> {
        self.recent
            .lock()
            .iter()
            .rev()
            .find(|v| v.head == number)
            .cloned()
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
        let Some((last, earlier)) = layers.split_last() else {
            return Err(StoreError::Corrupt("state root of no change set".into()));
        };
        let tx = self.db.begin_write()?;
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
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| StoreError::Corrupt(format!("durability: {e}")))?;
        if let Some((number, parent)) = linked {
            check_parent(&tx, number, parent)?;
        }
        let mut timings = CommitTimings::default();
        trie_branches_current(&tx)?;
        let root = apply_and_root(&tx, changes, &mut timings, tries)?;
        let started = std::time::Instant::now();
        let block = seal(root)?;
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
        let tx = self.db.begin_read()?;
        let mut builder = HashBuilder::default();
        for row in tx.open_table(HASHED_ACCOUNTS)?.iter()? {
            let (k, v) = row?;
            builder.add_leaf(Nibbles::unpack(k.value()), v.value());
        }
        Ok(builder.root())
    }

    /// Header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>, StoreError> {
        let tx = self.db.begin_read()?;
        let headers = tx.open_table(HEADERS)?;
        headers
            .get(number)?
            .map(|v| {
                Header::decode(&mut v.value())
                    .map_err(|e| StoreError::Corrupt(format!("header {number}: {e}")))
            })
            .transpose()
    }

    pub fn block_number(&self, hash: &B256) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx
            .open_table(HASH_TO_NUMBER)?
            .get(&hash.0)?
            .map(|v| v.value()))
    }

    /// The whole block `number`: header, transactions and receipts.
    pub fn block(&self, number: u64) -> Result<Option<SealedBlock>, StoreError> {
        let tx = self.db.begin_read()?;
        let headers = tx.open_table(HEADERS)?;
        let Some(raw) = headers.get(number)? else {
            return Ok(None);
        };
        let raw = raw.value();
        let header = Header::decode(&mut &raw[..])
            .map_err(|e| StoreError::Corrupt(format!("header {number}: {e}")))?;
        let transactions = match tx.open_table(BODIES)?.get(number)? {
            Some(b) => decode_body(b.value())?,
            None => Vec::new(),
        };
        let receipts = match tx.open_table(RECEIPTS)?.get(number)? {
            Some(b) => decode_receipts(b.value())?,
            None => Vec::new(),
        };
        let sidecar = match tx.open_table(SIDECARS)?.get(number)? {
            Some(b) => Sidecar::decode(b.value())
                .map_err(|e| StoreError::Corrupt(format!("sidecar {number}: {e}")))?,
            None => Sidecar::default(),
        };
        Ok(Some(SealedBlock {
            hash: keccak256(raw),
            header,
            transactions,
            receipts,
            sidecar,
        }))
    }

    /// Overwrites the stored sidecar of block `number` and nothing else. This is what a
    /// tampering peer would serve; replay must reject the block. For tools and tests only.
    pub fn replace_sidecar(&self, number: u64, sidecar: &Sidecar) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        tx.open_table(SIDECARS)?
            .insert(number, sidecar.encode().as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Where transaction `hash` was included: block number and index.
    pub fn transaction_location(&self, hash: &B256) -> Result<Option<(u64, u32)>, StoreError> {
        let tx = self.db.begin_read()?;
        tx.open_table(TX_LOOKUP)?
            .get(&hash.0)?
            .map(|v| decode_tx_location(v.value()))
            .transpose()
    }

    /// The pending transactions an older version kept in this database (they now live in
    /// [`crate::PendingLog`]).
    pub fn legacy_pending(&self) -> Result<Vec<Bytes>, StoreError> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_write()?;
        tx.open_table(POOL)?.retain(|_, _| false)?;
        tx.commit()?;
        Ok(())
    }

    /// Recomputes the state root from the hashed state alone, re-deriving every storage root
    /// instead of trusting the cached ones, and returns it with the head header's root. The
    /// two differ only if the store is inconsistent. O(state): for checks and tests.
    pub fn verify_state_root(&self) -> Result<(B256, B256), StoreError> {
        let tx = self.db.begin_read()?;
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
        let tx = self.db.begin_read()?;
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

/// Writes block, receipts and indices, and moves the head.
fn write_block(tx: &WriteTransaction, block: &SealedBlock) -> Result<(), StoreError> {
    let number = block.number();
    let mut header = Vec::with_capacity(600);
    block.header.encode(&mut header);
    tx.open_table(HEADERS)?.insert(number, header.as_slice())?;
    tx.open_table(HASH_TO_NUMBER)?
        .insert(&block.hash.0, number)?;
    tx.open_table(BODIES)?
        .insert(number, encode_body(&block.transactions).as_slice())?;
    tx.open_table(RECEIPTS)?
        .insert(number, encode_receipts(&block.receipts).as_slice())?;
    if !block.sidecar.is_empty() {
        tx.open_table(SIDECARS)?
            .insert(number, block.sidecar.encode().as_slice())?;
    }
    let mut lookup = tx.open_table(TX_LOOKUP)?;
    for (i, t) in block.transactions.iter().enumerate() {
        lookup.insert(&t.hash.0, tx_location(number, i as u32).as_slice())?;
    }
    tx.open_table(META)?
        .insert(HEAD_KEY, number.to_be_bytes().as_slice())?;
    Ok(())
}

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
enum Tries<'a> {
    /// Hash them from the stored branches.
    Compute,
    /// Hash them and record what that wrote.
    Record(&'a mut TrieUpdates),
    /// Write what an earlier computation on the same state recorded; hash nothing.
    Replay(&'a TrieUpdates),
}

/// Applies `changes` to plain and hashed state and returns the new state root.
fn apply_and_root(
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
fn meta_number(
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
fn trie_branches_current(tx: &WriteTransaction) -> Result<(), StoreError> {
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
struct AccountLeaves<'a, T>(&'a T);

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
struct StorageLeaves<'a, T> {
    table: &'a T,
    address: Address,
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
fn storage_root(
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
            let tx = store.db.begin_write().unwrap();
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
