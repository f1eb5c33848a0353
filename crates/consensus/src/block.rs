//! The block consensus orders: a sealed pipe block (header, transactions, sidecar) in a
//! canonical binary encoding, identified by its Ethereum hash.
//!
//! # Wire form
//! Three length-prefixed byte strings (commonware's codec): the header's RLP, the list of the
//! transactions' EIP-2718 encodings, the sidecar's encoding. Receipts are not sent: every
//! validator computes them by replay. Decoding is strict, as the consensus layer requires
//! (`encode(decode(b)) == b`): each part must re-encode to exactly its bytes, and every
//! transaction's signature must recover, so a block that decodes is well formed and its
//! senders are known.
//!
//! # Identity
//! The digest consensus votes on is the header hash (keccak256 of its RLP), so a finalized
//! digest is an Ethereum block hash. The header commits to the transactions (root) and to the
//! sidecar (its root in `extra_data`), so the digest commits to the whole block.

use std::sync::Arc;

use alloy_consensus::{Header, TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::{Decodable2718, Encodable2718};
use alloy_primitives::{B256, keccak256};
use alloy_rlp::{Decodable, Encodable};
use bytes::{BufMut, Bytes};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::{Heightable, types::Height};
use commonware_cryptography::{Digestible, keccak256::Digest};
use pipe_primitives::{SealedBlock, Sidecar, StoredTx};

/// Bounds on a block from the network, checked before anything is allocated for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockLimits {
    pub max_txs: usize,
    pub max_tx_bytes: usize,
    pub max_sidecar_bytes: usize,
    /// The whole encoding: what sizes the network's messages.
    pub max_block_bytes: usize,
}

/// A header's RLP is a few hundred bytes; this leaves room for `extra_data`.
const MAX_HEADER_BYTES: usize = 4096;

impl Default for BlockLimits {
    /// Enough for a 30M-gas block of the smallest transactions, and for the sidecar of its
    /// inference results.
    fn default() -> Self {
        Self {
            max_txs: 2_000,
            max_tx_bytes: 128 * 1024,
            max_sidecar_bytes: 8 * 1024 * 1024,
            max_block_bytes: 16 * 1024 * 1024,
        }
    }
}

impl BlockLimits {
    /// The largest encoding a block within these limits can have.
    pub fn max_encoded(&self) -> usize {
        // Each length prefix is a varint of at most 5 bytes.
        let parts = 5
            + MAX_HEADER_BYTES
            + 5
            + self.max_txs.saturating_mul(5 + self.max_tx_bytes)
            + 5
            + self.max_sidecar_bytes;
        parts.min(self.max_block_bytes)
    }
}

/// A block as consensus carries it.
#[derive(Clone, Debug)]
pub struct Block {
    sealed: Arc<SealedBlock>,
    header: Bytes,
    txs: Vec<Bytes>,
    sidecar: Bytes,
}

/// The consensus digest of a block hash.
pub fn digest(hash: B256) -> Digest {
    Digest(hash.0)
}

/// The block hash of a consensus digest.
pub fn hash(digest: &Digest) -> B256 {
    B256::from(digest.0)
}

impl Block {
    /// A sealed block (one this node proposed, or genesis) in its wire form.
    pub fn new(sealed: Arc<SealedBlock>) -> Self {
        let mut header = Vec::with_capacity(sealed.header.length());
        sealed.header.encode(&mut header);
        let txs = sealed
            .transactions
            .iter()
            .map(|t| Bytes::from(t.tx.encoded_2718()))
            .collect();
        let sidecar = Bytes::from(sealed.sidecar.encode());
        Self {
            sealed,
            header: header.into(),
            txs,
            sidecar,
        }
    }

    /// The sealed block (receipts empty unless this node built it).
    pub fn sealed(&self) -> &Arc<SealedBlock> {
        &self.sealed
    }

    pub fn hash(&self) -> B256 {
        self.sealed.hash
    }

    pub fn number(&self) -> u64 {
        self.sealed.number()
    }

    fn decode_parts(header: Bytes, txs: Vec<Bytes>, sidecar: Bytes) -> Result<Self, String> {
        let mut slice = header.as_ref();
        let h = Header::decode(&mut slice).map_err(|e| format!("header: {e}"))?;
        if !slice.is_empty() {
            return Err("header: trailing bytes".into());
        }
        let mut again = Vec::with_capacity(header.len());
        h.encode(&mut again);
        if again != header.as_ref() {
            return Err("header: not canonical RLP".into());
        }
        let hash = keccak256(&header);
        let mut stored = Vec::with_capacity(txs.len());
        for (i, raw) in txs.iter().enumerate() {
            let tx = TxEnvelope::decode_2718_exact(raw).map_err(|e| format!("tx {i}: {e}"))?;
            if tx.encoded_2718() != raw.as_ref() {
                return Err(format!("tx {i}: not canonical"));
            }
            let sender = tx
                .recover_signer()
                .map_err(|e| format!("tx {i}: signature: {e}"))?;
            stored.push(StoredTx {
                hash: *tx.tx_hash(),
                sender,
                tx,
            });
        }
        let side = Sidecar::decode(&sidecar).map_err(|e| format!("sidecar: {e}"))?;
        if side.encode() != sidecar.as_ref() {
            return Err("sidecar: not canonical".into());
        }
        let mut sealed = SealedBlock::new(h, stored, Vec::new()).with_sidecar(side);
        // The hash of exactly the bytes received (equal to hash_slow of the decoded header,
        // since the RLP is canonical).
        sealed.hash = hash;
        Ok(Self {
            sealed: Arc::new(sealed),
            header,
            txs,
            sidecar,
        })
    }
}

impl PartialEq for Block {
    fn eq(&self, other: &Self) -> bool {
        self.sealed.hash == other.sealed.hash
            && self.txs == other.txs
            && self.sidecar == other.sidecar
    }
}

impl Eq for Block {}

impl Write for Block {
    fn write(&self, buf: &mut impl BufMut) {
        self.header.write(buf);
        self.txs.write(buf);
        self.sidecar.write(buf);
    }
}

impl EncodeSize for Block {
    fn encode_size(&self) -> usize {
        self.header.encode_size() + self.txs.encode_size() + self.sidecar.encode_size()
    }
}

impl Read for Block {
    type Cfg = BlockLimits;

    fn read_cfg(buf: &mut impl Buf, limits: &BlockLimits) -> Result<Self, CodecError> {
        let before = buf.remaining();
        let header = Bytes::read_cfg(buf, &RangeCfg::new(..=MAX_HEADER_BYTES))?;
        let txs = Vec::<Bytes>::read_cfg(
            buf,
            &(
                RangeCfg::new(..=limits.max_txs),
                RangeCfg::new(..=limits.max_tx_bytes),
            ),
        )?;
        let sidecar = Bytes::read_cfg(buf, &RangeCfg::new(..=limits.max_sidecar_bytes))?;
        if before - buf.remaining() > limits.max_block_bytes {
            return Err(CodecError::Invalid(
                "pipe block",
                "larger than the block size limit",
            ));
        }
        Self::decode_parts(header, txs, sidecar).map_err(|reason| {
            tracing::debug!(target: "pipe::consensus", %reason, "undecodable block");
            CodecError::Invalid("pipe block", "malformed header, transaction or sidecar")
        })
    }
}

impl Digestible for Block {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        digest(self.sealed.hash)
    }
}

impl Heightable for Block {
    fn height(&self) -> Height {
        Height::new(self.sealed.number())
    }
}

impl commonware_consensus::Block for Block {
    fn parent(&self) -> Digest {
        digest(self.sealed.header.parent_hash)
    }
}

impl commonware_consensus::BoundedBlock for Block {
    fn max_encode_size(limits: &BlockLimits) -> usize {
        limits.max_encoded()
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, U256};
    use commonware_codec::{Decode, Encode};
    use pipe_chain::test_utils::TestChain;

    use super::*;

    fn a_block() -> Block {
        let chain = TestChain::new(2);
        let mut f = chain.factory(0);
        let txs: Vec<StoredTx> = (0..3)
            .map(|_| {
                let tx = f.transfer(Address::repeat_byte(7), U256::from(1));
                StoredTx {
                    hash: *tx.tx_hash(),
                    sender: f.address(),
                    tx,
                }
            })
            .collect();
        let mut header = chain.genesis.header.clone();
        header.number = 1;
        header.parent_hash = chain.genesis.hash;
        Block::new(Arc::new(SealedBlock::new(header, txs, Vec::new())))
    }

    #[test]
    fn a_block_round_trips_with_its_hash_and_senders() {
        let block = a_block();
        let bytes = block.encode();
        let back = Block::decode_cfg(bytes.clone(), &BlockLimits::default()).unwrap();
        assert_eq!(back, block);
        assert_eq!(back.hash(), block.hash());
        assert_eq!(back.sealed().header.hash_slow(), block.hash());
        assert_eq!(back.sealed().transactions, block.sealed().transactions);
        assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn hostile_bytes_are_refused_not_a_panic() {
        let block = a_block();
        let bytes = block.encode().to_vec();
        let limits = BlockLimits::default();
        // Every truncation and a flipped byte at every position decode to an error or to a
        // block that re-encodes to exactly its bytes.
        for cut in 0..bytes.len() {
            assert!(Block::decode_cfg(bytes::Bytes::from(bytes[..cut].to_vec()), &limits).is_err());
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x55;
            if let Ok(decoded) = Block::decode_cfg(bytes::Bytes::from(b.clone()), &limits) {
                assert_eq!(decoded.encode().to_vec(), b, "byte {i}");
            }
        }
        let tight = BlockLimits {
            max_txs: 2,
            ..limits
        };
        assert!(Block::decode_cfg(bytes::Bytes::from(bytes), &tight).is_err());
    }
}
