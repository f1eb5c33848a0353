//! The root of a trie keyed by `rlp(index)` (a block's transactions or receipts), built as
//! leaves arrive in index order, with the leaves hashed eight at a time ([`crate::keccak8`]).
//!
//! Keys `rlp(i)` sorted as nibbles run 1, 2, …, 127, 0, 128, 129, …, so alloy's `HashBuilder`
//! (which wants sorted keys) can take leaf `i` as soon as it arrives; only leaf 0 (key `0x80`)
//! waits, until index 128 arrives or the block ends.
//!
//! The leaves are hashed here rather than by the `HashBuilder`, so that they can be hashed
//! together. A leaf node's hash depends on the part of its key below its parent branch, and
//! that is known early: keys `i ≥ 1` that differ only in their last nibble are the indices
//! with the same `i / 16` (every key-length boundary, 128, 256, 65 536, is a multiple of 16).
//! When two or more such keys exist, they hang off one branch, each with an empty rest of key,
//! so a leaf node is `[0x20, value]` and its hash goes to the builder as a finished node
//! (`add_branch`). Leaves are therefore held per group of sixteen, which is complete when the
//! next group starts. Only the last group can end with one member; that leaf, and leaf 0 when
//! no key shares its first nibble (`8`, i.e. fewer than 129 leaves), go in as plain leaves and
//! the builder works out their key. A parent refers to a leaf node of 32 bytes or more by its
//! hash, and embeds a shorter one whole; receipts are always longer (their bloom alone is 256
//! bytes), but a transaction with a tiny signature can be shorter, so a short leaf node also
//! goes in as a plain leaf.

use alloy_primitives::B256;
use alloy_rlp::Encodable;
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles, nodes::LeafNodeRef};

use crate::keccak8::keccak256_many;

/// Leaves whose keys differ only in the last nibble.
const GROUP: usize = 16;

pub(crate) struct OrderedTrie {
    builder: HashBuilder,
    /// Leaves added so far; the next leaf's index.
    count: usize,
    /// Leaf 0's value, until it is known whether it shares a branch (index 128 arrived).
    first: Vec<u8>,
    /// The current group's leaf nodes with an empty rest of key, back to back.
    nodes: Vec<u8>,
    /// Per held leaf: its index, where its node starts in `nodes`, where its value starts.
    held: Vec<(usize, usize, usize)>,
    hashes: [B256; GROUP],
}

impl OrderedTrie {
    pub(crate) fn new() -> Self {
        Self {
            builder: HashBuilder::default(),
            count: 0,
            first: Vec::new(),
            nodes: Vec::with_capacity(GROUP * 512),
            held: Vec::with_capacity(GROUP),
            hashes: [B256::ZERO; GROUP],
        }
    }

    /// Adds the value of the next leaf.
    pub(crate) fn add(&mut self, value: &[u8]) {
        let index = self.count;
        self.count += 1;
        if index == 0 {
            self.first.clear();
            self.first.extend_from_slice(value);
            return;
        }
        if index.is_multiple_of(GROUP) {
            // The held group is complete; it has at least two members (a group holds 16,
            // group 0 holds 1..=15), so its leaves have an empty rest of key.
            self.flush_group();
        }
        if index == 0x80 {
            // Keys 0x81… now share the nibble 8 with leaf 0, so leaf 0 hangs off that branch.
            self.add_first_hashed();
        }
        let start = self.nodes.len();
        LeafNodeRef::new(&Nibbles::default(), value).encode(&mut self.nodes);
        let value_start = self.nodes.len() - value.len();
        self.held.push((index, start, value_start));
    }

    /// The root over every leaf added.
    pub(crate) fn root(mut self) -> B256 {
        match self.count {
            0 => return EMPTY_ROOT_HASH,
            1 => {
                let first = std::mem::take(&mut self.first);
                self.builder.add_leaf(key(0), &first);
                return self.builder.root();
            }
            _ => {}
        }
        if self.held.len() == 1 {
            // The last group has one member: the builder places it and works out its key.
            let (index, _, value_start) = self.held[0];
            let key = key(index);
            self.builder.add_leaf(key, &self.nodes[value_start..]);
            self.held.clear();
        } else {
            self.flush_group();
        }
        if self.count <= 0x80 {
            // No key shares leaf 0's first nibble: it is a leaf right under the root.
            let first = std::mem::take(&mut self.first);
            self.builder.add_leaf(key(0), &first);
        }
        self.builder.root()
    }

    /// Hashes the held group's leaf nodes together and hands them to the builder in order.
    fn flush_group(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut msgs: [&[u8]; GROUP] = [&[]; GROUP];
        for (i, &(_, start, _)) in self.held.iter().enumerate() {
            let end = self.held.get(i + 1).map_or(self.nodes.len(), |h| h.1);
            msgs[i] = &self.nodes[start..end];
        }
        let n = self.held.len();
        keccak256_many(&msgs[..n], &mut self.hashes[..n]);
        for (i, &(index, start, value_start)) in self.held.iter().enumerate() {
            if msgs[i].len() < 32 {
                // Embedded in its parent, not hashed: the builder encodes it.
                self.builder
                    .add_leaf(key(index), &msgs[i][value_start - start..]);
            } else {
                self.builder.add_branch(key(index), self.hashes[i], false);
            }
        }
        self.held.clear();
        self.nodes.clear();
    }

    fn add_first_hashed(&mut self) {
        let mut node = Vec::with_capacity(self.first.len() + 8);
        LeafNodeRef::new(&Nibbles::default(), &self.first).encode(&mut node);
        if node.len() < 32 {
            // Embedded in its parent, not hashed (see the module doc).
            self.builder.add_leaf(key(0), &self.first);
            return;
        }
        let mut hash = [B256::ZERO];
        keccak256_many(&[&node], &mut hash);
        self.builder.add_branch(key(0), hash[0], false);
    }
}

fn key(index: usize) -> Nibbles {
    Nibbles::unpack(alloy_rlp::encode_fixed_size(&index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_trie::root::ordered_trie_root_encoded;

    /// Values of 40 to 439 bytes, as transactions and receipts mostly are.
    fn long(i: usize) -> Vec<u8> {
        let len = 40 + (i * 37) % 400;
        (0..len).map(|j| (i * 7 + j) as u8).collect()
    }

    /// Values of 1 to 40 bytes: leaf nodes on both sides of 32 bytes, where a parent stops
    /// hashing its child and embeds it (a transaction with a tiny signature is this short).
    fn short(i: usize) -> Vec<u8> {
        let len = 1 + (i * 13) % 40;
        (0..len).map(|j| (i * 5 + j) as u8).collect()
    }

    fn check(n: usize, value: fn(usize) -> Vec<u8>) {
        let values: Vec<Vec<u8>> = (0..n).map(value).collect();
        let mut trie = OrderedTrie::new();
        for v in &values {
            trie.add(v);
        }
        let expected = ordered_trie_root_encoded(&values);
        assert_eq!(trie.root(), expected, "{n} leaves");
    }

    #[test]
    fn root_equals_alloys_for_every_size_to_300() {
        // Every shape of the last group (one member or more), leaf 0 alone or on a branch,
        // and the 1-byte / 2-byte key boundary at 128 and the 2-byte / 3-byte one at 256.
        for n in 0..=300 {
            check(n, long);
            check(n, short);
        }
    }

    #[test]
    fn short_leaves_in_every_position_of_a_group_and_as_leaf_zero() {
        // One short value among long ones, at each index of the first groups and as leaf 0 of
        // a block with a branch at nibble 8 (more than 128 leaves).
        for at in 0..40 {
            for n in [20, 40, 130, 200] {
                let values: Vec<Vec<u8>> = (0..n)
                    .map(|i| if i == at { vec![i as u8; 3] } else { long(i) })
                    .collect();
                let mut trie = OrderedTrie::new();
                for v in &values {
                    trie.add(v);
                }
                assert_eq!(
                    trie.root(),
                    ordered_trie_root_encoded(&values),
                    "short at {at} of {n}"
                );
            }
        }
    }

    #[test]
    fn root_equals_alloys_across_the_three_byte_key_boundary() {
        for n in [1000, 65_535, 65_536, 65_537, 65_536 + 16, 65_536 + 17] {
            check(n, long);
        }
    }
}
