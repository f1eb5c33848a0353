//! The block shapes the node seals, stores and serves.

use alloy_consensus::{Header, ReceiptEnvelope, TxEnvelope};
use alloy_primitives::{Address, B256};

use crate::{edits::StateEdits, sidecar::Sidecar};

/// A transaction as it sits in a block: the signed envelope, its hash and its recovered sender
/// (kept so serving it never needs another signature recovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTx {
    pub hash: B256,
    pub sender: Address,
    pub tx: TxEnvelope,
}

/// A transaction handed to a block being built. The block builder passes it, shared, to the
/// thread that assembles the block's tries, so nothing is copied on the executing thread; the
/// pool's entries implement it, and so does a bare [`StoredTx`].
pub trait BlockTx: Send + Sync + std::fmt::Debug + 'static {
    fn stored(&self) -> &StoredTx;

    /// The transaction's canonical EIP-2718 encoding (`stored().tx.encoded_2718()`), when the
    /// holder already has it (the pool re-encodes each transaction once, on admission);
    /// `None` has the assembler encode it. It becomes the transactions-trie leaf, so it must
    /// be exactly that encoding.
    fn encoded_2718(&self) -> Option<&[u8]> {
        None
    }
}

impl BlockTx for StoredTx {
    fn stored(&self) -> &StoredTx {
        self
    }
}

/// A sealed block: header, its hash, the transactions, their receipts (same order), the
/// inference results the transactions used, and on the dev chain the state edits applied
/// before them (both committed to by the header's `extra_data`).
#[derive(Clone, Debug)]
pub struct SealedBlock {
    pub hash: B256,
    pub header: Header,
    pub transactions: Vec<StoredTx>,
    pub receipts: Vec<ReceiptEnvelope>,
    pub sidecar: Sidecar,
    /// Applied after the system calls, before the transactions; empty but on the dev chain.
    pub edits: StateEdits,
}

impl SealedBlock {
    /// Seals `header`: its hash is computed here, so it always matches the header.
    pub fn new(
        header: Header,
        transactions: Vec<StoredTx>,
        receipts: Vec<ReceiptEnvelope>,
    ) -> Self {
        Self {
            hash: header.hash_slow(),
            header,
            transactions,
            receipts,
            sidecar: Sidecar::default(),
            edits: StateEdits::default(),
        }
    }

    /// The same block carrying `sidecar` (the header must already commit to it).
    pub fn with_sidecar(mut self, sidecar: Sidecar) -> Self {
        self.sidecar = sidecar;
        self
    }

    /// The same block carrying `edits` (the header must already commit to them).
    pub fn with_edits(mut self, edits: StateEdits) -> Self {
        self.edits = edits;
        self
    }

    pub fn number(&self) -> u64 {
        self.header.number
    }
}
