//! Incremental Merkle-Patricia roots: the state root at a cost that grows with what a block
//! changes, not with the whole state.
//!
//! Leaves live in ordered tables (`hashed_accounts`, `hashed_storage`). Beside them, the
//! `trie_branches` table keeps every branch node of each trie as alloy's `HashBuilder` reports
//! it (its children, and the hashes of the children that are themselves branches), keyed by
//! the trie (`namespace`) and the node's path, one byte per nibble.
//!
//! A new root is computed by walking the stored branches from the top, guided by the sorted
//! keys the block changed, and feeding the builder in key order:
//! - a child with no changed key under it that is itself a branch goes in as its stored hash
//!   (`add_branch`): the builder never looks below it;
//! - any other unchanged child (a leaf, or an extension over a deeper branch) is read as its
//!   one leaf, or walked down to that deeper branch;
//! - under a changed child the walk goes on into the stored branch below it, and the leaves
//!   that lie outside every stored branch (new keys) are read from the leaf table.
//!
//! A branch below a changed key's path is rebuilt by the builder, which reports it again; the
//! stored branches the walk went through are dropped first, so one that disappeared (its keys
//! deleted) does not linger. Everything is written in the block's write transaction, so the
//! branches always describe the committed leaves. A namespace with no stored branches (a new
//! trie, or a store written before this table existed) is walked as one region: every leaf is
//! read and every branch is stored, which is also how the table is first filled.
//!
//! Why this is correct: the builder is given, in key order, every leaf outside the subtrees it
//! receives as hashes, and each hash it receives is the unchanged hash of a branch at its own
//! path. Where a branch's parent changed shape, the builder adds the extension above it.

use std::ops::Bound;

use alloy_primitives::B256;
use alloy_trie::{BranchNodeCompact, HashBuilder, Nibbles, TrieMask};
use redb::{ReadableTable, Table};

use crate::StoreError;

/// Where a trie's leaves live: rows keyed by 32-byte trie keys, in key order.
pub(crate) trait Leaves {
    /// Calls `f` on each leaf with a key in `range`, in key order.
    fn each(
        &self,
        range: (Bound<[u8; 32]>, Bound<[u8; 32]>),
        f: &mut dyn FnMut(&[u8; 32], &[u8]),
    ) -> Result<(), StoreError>;
}

/// A stored branch as the builder reports it: which children exist (`state_mask`), which have
/// stored branches below them (`tree_mask`), which are branches themselves (`hash_mask`), and
/// those branches' hashes. The tree mask is a hint, used only for unchanged children (so no row
/// below one can go stale): a clear bit lets the walk read the child's leaf without looking for
/// a branch below it; both ways give the same root.
fn encode_branch(node: &BranchNodeCompact) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + 32 * node.hashes.len());
    out.extend_from_slice(&node.state_mask.get().to_be_bytes());
    out.extend_from_slice(&node.tree_mask.get().to_be_bytes());
    out.extend_from_slice(&node.hash_mask.get().to_be_bytes());
    for h in node.hashes.iter() {
        out.extend_from_slice(h.as_slice());
    }
    out
}

fn decode_branch(b: &[u8]) -> Result<BranchNodeCompact, StoreError> {
    let bad = || StoreError::Corrupt(format!("trie branch row of {} bytes", b.len()));
    if b.len() < 6 || !(b.len() - 6).is_multiple_of(32) {
        return Err(bad());
    }
    let mask = |i: usize| TrieMask::new(u16::from_be_bytes([b[i], b[i + 1]]));
    let (state_mask, tree_mask, hash_mask) = (mask(0), mask(2), mask(4));
    let hashes: Vec<B256> = b[6..].chunks_exact(32).map(B256::from_slice).collect();
    // `BranchNodeCompact::new` asserts these; a corrupt row is an error, not a panic.
    if hashes.len() != hash_mask.count_ones() as usize
        || !hash_mask.is_subset_of(state_mask)
        || !tree_mask.is_subset_of(state_mask)
    {
        return Err(bad());
    }
    Ok(BranchNodeCompact::new(
        state_mask, tree_mask, hash_mask, hashes, None,
    ))
}

/// The namespace of the account trie in `trie_branches`.
pub(crate) const ACCOUNT_TRIE: &[u8] = &[0];

/// The namespace of `address`'s storage trie in `trie_branches`.
pub(crate) fn storage_trie(address: &[u8; 20]) -> [u8; 21] {
    let mut ns = [1u8; 21];
    ns[1..].copy_from_slice(address);
    ns
}

/// One write to `trie_branches`, as recorded to be replayed in a later transaction on the same
/// state ([`crate::TrieUpdates`]).
#[derive(Clone, Debug)]
pub(crate) enum BranchOp {
    Put(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    /// Every branch of a namespace ([`clear`]).
    Clear(Vec<u8>),
}

/// Applies recorded writes, in order.
pub(crate) fn replay(
    branches: &mut Table<&'static [u8], &'static [u8]>,
    ops: &[BranchOp],
) -> Result<(), StoreError> {
    for op in ops {
        match op {
            BranchOp::Put(k, v) => {
                branches.insert(k.as_slice(), v.as_slice())?;
            }
            BranchOp::Remove(k) => {
                branches.remove(k.as_slice())?;
            }
            BranchOp::Clear(ns) => clear(branches, ns, None)?,
        }
    }
    Ok(())
}

/// Computes the root of the trie `namespace` whose leaves are `leaves`, after a block changed
/// (wrote or removed) the leaves at `changed` (sorted, without duplicates), and brings its
/// stored branches up to date in `branches`, appending each write to `log` if given.
pub(crate) fn update_root(
    branches: &mut Table<&'static [u8], &'static [u8]>,
    namespace: &[u8],
    leaves: &impl Leaves,
    changed: &[[u8; 32]],
    mut log: Option<&mut Vec<BranchOp>>,
) -> Result<B256, StoreError> {
    debug_assert!(changed.is_sorted(), "changed keys must be sorted");
    let mut walk = Walk {
        branches: &*branches,
        namespace,
        leaves,
        changed,
        builder: HashBuilder::default()
            .with_updates(true)
            .with_all_branch_nodes(true),
        visited: Vec::new(),
    };
    walk.region(&[])?;
    let Walk {
        mut builder,
        visited,
        ..
    } = walk;
    let root = builder.root();
    let (_, updates) = builder.split();
    for key in &visited {
        // A branch rebuilt at the same path is overwritten below.
        let path = Nibbles::from_nibbles_unchecked(&key[namespace.len()..]);
        if !updates.contains_key(&path) {
            branches.remove(key.as_slice())?;
            if let Some(log) = log.as_deref_mut() {
                log.push(BranchOp::Remove(key.clone()));
            }
        }
    }
    let mut key = Vec::with_capacity(namespace.len() + 64);
    for (path, node) in updates {
        key.clear();
        key.extend_from_slice(namespace);
        key.extend(path.iter());
        let encoded = encode_branch(&node);
        branches.insert(key.as_slice(), encoded.as_slice())?;
        if let Some(log) = log.as_deref_mut() {
            log.push(BranchOp::Put(key.clone(), encoded));
        }
    }
    Ok(root)
}

/// The root of the trie `namespace` whose leaves are `leaves`, and the nodes on the paths to
/// `targets` (sorted hashed keys, present or not): what Merkle proofs are made of. The walk is
/// the root computation's with the targets as the changed keys, so only the subtrees on their
/// paths are expanded to their leaves and the rest go in as their stored hashes; nothing is
/// written. `branches` is `None` when the stored branches do not describe these leaves: every
/// leaf is then read.
pub(crate) fn prove<B>(
    branches: Option<&B>,
    namespace: &[u8],
    leaves: &impl Leaves,
    targets: &[[u8; 32]],
) -> Result<(B256, alloy_trie::proof::ProofNodes), StoreError>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
{
    debug_assert!(targets.is_sorted(), "targets must be sorted");
    let retainer =
        alloy_trie::proof::ProofRetainer::new(targets.iter().map(|k| Nibbles::unpack(k)).collect());
    let builder = HashBuilder::default().with_proof_retainer(retainer);
    let mut builder = match branches {
        Some(branches) => {
            let mut walk = Walk {
                branches,
                namespace,
                leaves,
                changed: targets,
                builder,
                visited: Vec::new(),
            };
            walk.region(&[])?;
            walk.builder
        }
        None => {
            let mut builder = builder;
            // The whole key space, bounded: a storage trie's leaves share a table with others'.
            let all = (Bound::Included([0u8; 32]), Bound::Included([0xffu8; 32]));
            leaves.each(all, &mut |key, value| {
                builder.add_leaf(Nibbles::unpack(key), value)
            })?;
            builder
        }
    };
    let root = builder.root();
    Ok((root, builder.take_proof_nodes()))
}

/// Drops every stored branch of the trie `namespace` (its leaves were all deleted), appending
/// the write to `log` if given.
pub(crate) fn clear(
    branches: &mut Table<&'static [u8], &'static [u8]>,
    namespace: &[u8],
    log: Option<&mut Vec<BranchOp>>,
) -> Result<(), StoreError> {
    if let Some(log) = log {
        log.push(BranchOp::Clear(namespace.to_vec()));
    }
    let mut end = namespace.to_vec();
    // Paths are nibbles (0..=15), so every key of the namespace sorts below `namespace ++ 16`.
    end.push(16);
    branches.retain_in(namespace..end.as_slice(), |_, _| false)?;
    Ok(())
}

struct Walk<'a, B, L> {
    branches: &'a B,
    namespace: &'a [u8],
    leaves: &'a L,
    changed: &'a [[u8; 32]],
    builder: HashBuilder,
    /// Stored branches on changed paths: rebuilt (and reported again) or gone.
    visited: Vec<Vec<u8>>,
}

impl<B, L> Walk<'_, B, L>
where
    B: ReadableTable<&'static [u8], &'static [u8]>,
    L: Leaves,
{
    /// Feeds the builder everything under `path`.
    fn region(&mut self, path: &[u8]) -> Result<(), StoreError> {
        let (lo, hi) = bounds(path);
        let Some((top, branch)) = self.first_branch_under(path)? else {
            // No stored branch: at most one old leaf here, plus any new ones.
            return self.leaves_in((Bound::Included(lo), Bound::Included(hi)));
        };
        if !self.changed_under(path) {
            return self.branch(&top, &branch, false);
        }
        // Every old leaf under `path` is under `top` (two old leaves outside it would have
        // had a stored branch above it), so what lies beside `top` is new.
        let (top_lo, top_hi) = bounds(&top);
        self.leaves_in((Bound::Included(lo), Bound::Excluded(top_lo)))?;
        self.branch(&top, &branch, true)?;
        self.leaves_in((Bound::Excluded(top_hi), Bound::Included(hi)))
    }

    /// Feeds the builder the children of the stored branch at `path`.
    fn branch(
        &mut self,
        path: &[u8],
        branch: &BranchNodeCompact,
        changed: bool,
    ) -> Result<(), StoreError> {
        if changed {
            let mut key = self.namespace.to_vec();
            key.extend_from_slice(path);
            self.visited.push(key);
        }
        let mut child = path.to_vec();
        child.push(0);
        for nibble in 0..16u8 {
            *child.last_mut().expect("pushed above") = nibble;
            let child_changed = changed && self.changed_under(&child);
            if !child_changed {
                if !branch.state_mask.is_bit_set(nibble) {
                    continue;
                }
                if branch.hash_mask.is_bit_set(nibble) {
                    let hash = branch.hash_for_nibble(nibble);
                    self.builder
                        .add_branch(Nibbles::from_nibbles_unchecked(&child), hash, true);
                    continue;
                }
                if !branch.tree_mask.is_bit_set(nibble) {
                    // No stored branch below: an unchanged leaf.
                    let (lo, hi) = bounds(&child);
                    self.leaves_in((Bound::Included(lo), Bound::Included(hi)))?;
                    continue;
                }
            }
            self.region(&child)?;
        }
        Ok(())
    }

    fn leaves_in(&mut self, range: (Bound<[u8; 32]>, Bound<[u8; 32]>)) -> Result<(), StoreError> {
        if is_empty(&range) {
            return Ok(());
        }
        let builder = &mut self.builder;
        self.leaves.each(range, &mut |key, value| {
            builder.add_leaf(Nibbles::unpack(key), value);
        })
    }

    /// The first stored branch at or below `path` in key order: the top of the subtree that
    /// holds every leaf under `path`, when there are two or more.
    fn first_branch_under(
        &self,
        path: &[u8],
    ) -> Result<Option<(Vec<u8>, BranchNodeCompact)>, StoreError> {
        let mut start = self.namespace.to_vec();
        start.extend_from_slice(path);
        let Some(row) = self.branches.range(start.as_slice()..)?.next() else {
            return Ok(None);
        };
        let (k, v) = row?;
        let k = k.value();
        if !k.starts_with(&start) {
            return Ok(None);
        }
        Ok(Some((
            k[self.namespace.len()..].to_vec(),
            decode_branch(v.value())?,
        )))
    }

    fn changed_under(&self, path: &[u8]) -> bool {
        let (lo, hi) = bounds(path);
        let i = self.changed.partition_point(|k| *k < lo);
        i < self.changed.len() && self.changed[i] <= hi
    }
}

/// Whether no key lies in `range` (a range store iterators would reject as inverted).
fn is_empty(range: &(Bound<[u8; 32]>, Bound<[u8; 32]>)) -> bool {
    match range {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

/// The smallest and largest 32-byte keys under a nibble path.
fn bounds(path: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut lo = [0u8; 32];
    let mut hi = [0xffu8; 32];
    for (i, &n) in path.iter().enumerate() {
        let byte = i / 2;
        if i % 2 == 0 {
            lo[byte] = n << 4;
            hi[byte] = (n << 4) | 0x0f;
        } else {
            lo[byte] |= n;
            hi[byte] = (hi[byte] & 0xf0) | n;
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;
    use redb::{Database, ReadableDatabase, TableDefinition};

    const LEAVES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("leaves");
    const BRANCHES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("branches");

    /// The leaf table, counting the leaves read.
    struct Rows<'a>(
        &'a Table<'a, &'static [u8; 32], &'static [u8]>,
        std::cell::Cell<usize>,
    );

    impl<'a> Rows<'a> {
        fn new(t: &'a Table<'a, &'static [u8; 32], &'static [u8]>) -> Self {
            Self(t, Default::default())
        }
    }

    impl Leaves for Rows<'_> {
        fn each(
            &self,
            range: (Bound<[u8; 32]>, Bound<[u8; 32]>),
            f: &mut dyn FnMut(&[u8; 32], &[u8]),
        ) -> Result<(), StoreError> {
            let (lo, hi) = range;
            for row in self.0.range::<&[u8; 32]>((lo.as_ref(), hi.as_ref()))? {
                let (k, v) = row?;
                self.1.set(self.1.get() + 1);
                f(k.value(), v.value());
            }
            Ok(())
        }
    }

    /// The root from every leaf, as the store computed it before this module.
    fn full_root(leaves: &Table<&'static [u8; 32], &'static [u8]>) -> B256 {
        let mut b = HashBuilder::default();
        for row in leaves.iter().unwrap() {
            let (k, v) = row.unwrap();
            b.add_leaf(Nibbles::unpack(k.value()), v.value());
        }
        b.root()
    }

    /// A small deterministic generator, so a failing case can be replayed.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    /// Blocks of random writes and deletes, each root checked against the full computation;
    /// `universe` keys, so keys come and go and share long prefixes at small sizes.
    fn run(
        seed: u64,
        universe: u64,
        blocks: usize,
        per_block: u64,
        short_values: bool,
        key_of: fn(u64) -> [u8; 32],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let mut rng = Rng(seed);
        for block in 0..blocks {
            let tx = db.begin_write().unwrap();
            {
                let mut leaves = tx.open_table(LEAVES).unwrap();
                let mut branches = tx.open_table(BRANCHES).unwrap();
                let mut changed = Vec::new();
                let n = 1 + rng.next() % per_block;
                for _ in 0..n {
                    let id = rng.next() % universe;
                    let key = key_of(id);
                    if rng.next().is_multiple_of(4) {
                        leaves.remove(&key).unwrap();
                    } else {
                        let len = if short_values {
                            1 + rng.next() % 40
                        } else {
                            60 + rng.next() % 60
                        };
                        let value: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                        leaves.insert(&key, value.as_slice()).unwrap();
                    }
                    changed.push(key);
                }
                changed.sort_unstable();
                changed.dedup();
                let root = update_root(
                    &mut branches,
                    ACCOUNT_TRIE,
                    &Rows::new(&leaves),
                    &changed,
                    None,
                )
                .unwrap();
                assert_eq!(root, full_root(&leaves), "seed {seed}, block {block}");
            }
            tx.commit().unwrap();
        }
        // The stored branches are exactly the ones a rebuild from nothing stores.
        let tx = db.begin_write().unwrap();
        {
            let leaves = tx.open_table(LEAVES).unwrap();
            let branches = tx.open_table(BRANCHES).unwrap();
            let kept = rows_of(&branches);
            drop(branches);
            tx.delete_table(BRANCHES).unwrap();
            let mut fresh = tx.open_table(BRANCHES).unwrap();
            update_root(&mut fresh, ACCOUNT_TRIE, &Rows::new(&leaves), &[], None).unwrap();
            assert_eq!(
                kept,
                rows_of(&fresh),
                "seed {seed}: stored branches drifted"
            );
        }
        tx.commit().unwrap();
        let _ = db.begin_read().unwrap();
    }

    fn rows_of(t: &Table<&'static [u8], &'static [u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
        t.iter()
            .unwrap()
            .map(|r| {
                let (k, v) = r.unwrap();
                (k.value().to_vec(), v.value().to_vec())
            })
            .collect()
    }

    /// Keys as the tries have them: hashes, spread evenly.
    fn hashed(id: u64) -> [u8; 32] {
        keccak256(id.to_be_bytes()).0
    }

    /// Keys sharing 56 leading zero nibbles: long extensions, deep branches.
    fn plain(id: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[24..].copy_from_slice(&id.to_be_bytes());
        k
    }

    #[test]
    fn roots_match_a_full_rebuild_from_empty_through_growth_and_deletes() {
        // Tiny tries: 0, 1, 2 leaves, a root that turns from branch to leaf and back.
        for seed in 1..=20 {
            run(seed, 4, 30, 3, false, hashed);
        }
        // Hundreds of keys with shared prefixes, blocks of up to 40 changes.
        for seed in 21..=24 {
            run(seed, 600, 40, 40, false, hashed);
        }
    }

    #[test]
    fn roots_match_with_long_extensions_and_embedded_nodes() {
        // Keys that share 56 nibbles, with 1-40 byte values: leaf nodes near the bottom are
        // shorter than a hash and embedded in their parent branch, and so are some branches.
        for seed in 31..=38 {
            run(seed, 300, 30, 30, true, plain);
            run(seed, 20, 30, 5, true, plain);
        }
        for seed in 41..=44 {
            run(seed, 300, 30, 30, false, plain);
            run(seed, 300, 30, 30, true, hashed);
        }
    }

    #[test]
    fn a_small_change_to_a_large_trie_reads_few_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        let mut leaves = tx.open_table(LEAVES).unwrap();
        let mut branches = tx.open_table(BRANCHES).unwrap();
        let key = |i: u64| keccak256(i.to_be_bytes()).0;
        for i in 0..20_000u64 {
            leaves.insert(&key(i), [i as u8; 70].as_slice()).unwrap();
        }
        // The first root reads everything and stores the branches.
        let rows = Rows::new(&leaves);
        let root = update_root(&mut branches, ACCOUNT_TRIE, &rows, &[], None).unwrap();
        assert_eq!(rows.1.get(), 20_000);
        assert_eq!(root, full_root(&leaves));
        let mut rng = Rng(7);
        for round in 0..20 {
            // Change, add and delete a few keys.
            let mut changed = Vec::new();
            for j in 0..3 {
                let k = key(rng.next() % 20_000);
                leaves.insert(&k, [round as u8; 80].as_slice()).unwrap();
                changed.push(k);
                let gone = key(rng.next() % 20_000);
                leaves.remove(&gone).unwrap();
                changed.push(gone);
                let new = key(1_000_000 + round * 10 + j);
                leaves.insert(&new, [1; 75].as_slice()).unwrap();
                changed.push(new);
            }
            changed.sort_unstable();
            changed.dedup();
            let rows = Rows::new(&leaves);
            let root = update_root(&mut branches, ACCOUNT_TRIE, &rows, &changed, None).unwrap();
            assert_eq!(root, full_root(&leaves), "round {round}");
            // Per changed key, the leaves beside it under its lowest branch (about
            // 20 000 / 16^3 ≈ 5), not the 20 000 of a full scan.
            assert!(
                rows.1.get() <= 20 * changed.len(),
                "read {} leaves",
                rows.1.get()
            );
        }
    }

    #[test]
    fn bounds_cover_exactly_the_keys_under_a_path() {
        assert_eq!(bounds(&[]), ([0; 32], [0xff; 32]));
        let (lo, hi) = bounds(&[0xa, 0xb, 0xc]);
        assert_eq!(&lo[..3], &[0xab, 0xc0, 0]);
        assert_eq!(&hi[..3], &[0xab, 0xcf, 0xff]);
    }
}
