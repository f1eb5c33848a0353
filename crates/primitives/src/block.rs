//! The block shapes the node seals, stores and serves.

use alloy_consensus::{Header, ReceiptEnvelope, TxEnvelope};
use alloy_primitives::{Address, B256};

use crate::sidecar::Sidecar;

/// A transaction as it sits in a block: the signed envelope, its hash and its recovered sender
/// (kept so serving it never needs another signature recovery).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTx {
    pub hash: B256,
    pub sender: Address,
    pub tx: TxEnvelope,
}

/// A sealed block: header, its hash, the transactions, their receipts (same order), and the
/// inference results the transactions used (committed to by the header's `extra_data`).
#[derive(Clone, Debug)]
pub struct SealedBlock {
    pub hash: B256,
    pub header: Header,
    pub transactions: Vec<StoredTx>,
    pub receipts: Vec<ReceiptEnvelope>,
    pub sidecar: Sidecar,
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
        }
    }

    /// The same block carrying `sidecar` (the header must already commit to it).
    pub fn with_sidecar(mut self, sidecar: Sidecar) -> Self {
        self.sidecar = sidecar;
        self
    }

    pub fn number(&self) -> u64 {
        self.header.number
    }
}
