//! Block assembly on another core while the block executes.
//!
//! One long-lived thread per [`crate::Executor`] takes one job per block, so its memory stays
//! warm from block to block (a fresh thread per block paid page faults on every block).
//!
//! Each kept transaction and its receipt move to an assembler thread, which computes the
//! receipt's logs bloom, encodes both, and feeds the transaction and receipt tries. The
//! builder thread only executes; when the block is finished, the last batch is hashed and the
//! assembled transactions, receipts and roots come back.
//!
//! Both tries are keyed by `rlp(index)`. Sorted as nibbles those keys run 1, 2, …, 127, 0,
//! 128, 129, …, so a `HashBuilder` (which wants sorted keys) can take leaf `i` as soon as
//! transaction `i` arrives; only leaf 0 waits, until index 128 arrives or the block ends.

use std::sync::mpsc;

use alloy_consensus::{
    Eip658Value, Receipt, ReceiptEnvelope, ReceiptWithBloom, TxEnvelope, TxType,
};
use alloy_eips::Encodable2718;
use alloy_evm::{
    Evm,
    eth::receipt_builder::{ReceiptBuilder, ReceiptBuilderCtx},
};
use alloy_primitives::{B256, Bloom, Log};
use alloy_trie::{EMPTY_ROOT_HASH, HashBuilder, Nibbles};
use pipe_primitives::StoredTx;

/// Builds receipts with an empty bloom: the assembler thread computes the real one. Nothing
/// reads a receipt's bloom during execution.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeferredBloomReceipts;

impl ReceiptBuilder for DeferredBloomReceipts {
    type Transaction = TxEnvelope;
    type Receipt = ReceiptEnvelope;

    fn build_receipt<E: Evm>(&self, ctx: ReceiptBuilderCtx<'_, TxType, E>) -> ReceiptEnvelope {
        let receipt = ReceiptWithBloom {
            receipt: Receipt {
                status: Eip658Value::Eip658(ctx.result.is_success()),
                cumulative_gas_used: ctx.cumulative_gas_used,
                logs: ctx.result.into_logs(),
            },
            logs_bloom: Bloom::ZERO,
        };
        match ctx.tx_type {
            TxType::Legacy => ReceiptEnvelope::Legacy(receipt),
            TxType::Eip2930 => ReceiptEnvelope::Eip2930(receipt),
            TxType::Eip1559 => ReceiptEnvelope::Eip1559(receipt),
            TxType::Eip4844 => ReceiptEnvelope::Eip4844(receipt),
            TxType::Eip7702 => ReceiptEnvelope::Eip7702(receipt),
        }
    }
}

/// What the assembler hands back for a block.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub transactions: Vec<StoredTx>,
    /// With their blooms filled in.
    pub receipts: Vec<ReceiptEnvelope>,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
}

/// Leaves handed over at once: one wake-up of the assembler per batch, not per transaction.
/// Small, because the last batch is hashed after the last transaction, while the builder
/// waits (64 left about 0.1 ms of plain transfers' hashing at the end of every block).
const BATCH: usize = 16;

type Batch = Vec<(StoredTx, ReceiptEnvelope)>;

/// One block's work: its batches in, its result out.
type Job = (mpsc::Receiver<Batch>, mpsc::Sender<Assembled>);

/// The assembler thread, shared by every block an executor builds. Blocks are assembled one
/// after another in the order they started; the thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub(crate) struct AssemblerThread {
    jobs: mpsc::Sender<Job>,
}

impl AssemblerThread {
    pub(crate) fn spawn() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("pipe-assemble".into())
            .spawn(move || {
                // Blocks tend to be alike: size the next one's vectors like the last, so they
                // are not regrown (and copied) as a large block's transactions arrive.
                let mut last_len = 0;
                for (batches, result) in rx {
                    let assembled = assemble(batches, last_len);
                    last_len = assembled.transactions.len();
                    // The block may have been abandoned; then nobody waits for the result.
                    let _ = result.send(assembled);
                }
            })
            .expect("spawning the block assembler thread");
        Self { jobs }
    }

    /// Starts assembling a new block.
    pub(crate) fn start(&self) -> Assembler {
        let (tx, rx) = mpsc::channel();
        let (result_tx, result) = mpsc::channel();
        // The thread lives as long as any handle, so this cannot fail while `self` exists.
        let _ = self.jobs.send((rx, result_tx));
        Assembler {
            sender: Some(tx),
            batch: Vec::with_capacity(BATCH),
            result,
        }
    }
}

/// Handle to the assembly of one block.
pub(crate) struct Assembler {
    sender: Option<mpsc::Sender<Batch>>,
    batch: Batch,
    result: mpsc::Receiver<Assembled>,
}

impl Assembler {
    /// Adds the next transaction of the block (in block order) with its receipt.
    pub(crate) fn push(&mut self, tx: StoredTx, receipt: ReceiptEnvelope) {
        self.batch.push((tx, receipt));
        if self.batch.len() >= BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(sender) = &self.sender {
            // The worker only stops when the sender is dropped, so this cannot fail.
            let _ = sender.send(batch);
        }
    }

    /// Waits for the assembled block.
    pub(crate) fn finish(mut self) -> Assembled {
        self.send();
        self.sender.take();
        self.result.recv().expect("block assembler thread stopped")
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        // An abandoned block: close the channel so the worker ends; its result is unused.
        self.sender.take();
    }
}

/// One trie keyed by `rlp(index)`, fed in index order.
struct OrderedTrie {
    builder: HashBuilder,
    /// Leaf 0's value, held until every key below `rlp(0) = 0x80` is in.
    first: Option<Vec<u8>>,
    count: usize,
}

impl OrderedTrie {
    fn new() -> Self {
        Self {
            builder: HashBuilder::default(),
            first: None,
            count: 0,
        }
    }

    fn add(&mut self, value: &[u8]) {
        let index = self.count;
        self.count += 1;
        if index == 0 {
            self.first = Some(value.to_vec());
            return;
        }
        if index == 0x80 {
            self.flush_first();
        }
        self.leaf(index, value);
    }

    fn flush_first(&mut self) {
        if let Some(v) = self.first.take() {
            self.leaf(0, &v);
        }
    }

    fn leaf(&mut self, index: usize, value: &[u8]) {
        let key = alloy_rlp::encode_fixed_size(&index);
        self.builder.add_leaf(Nibbles::unpack(&key), value);
    }

    fn root(mut self) -> B256 {
        if self.count == 0 {
            return EMPTY_ROOT_HASH;
        }
        self.flush_first();
        self.builder.root()
    }
}

fn assemble(rx: mpsc::Receiver<Batch>, capacity: usize) -> Assembled {
    let mut tx_trie = OrderedTrie::new();
    let mut receipt_trie = OrderedTrie::new();
    let mut logs_bloom = Bloom::ZERO;
    let mut transactions = Vec::with_capacity(capacity);
    let mut receipts = Vec::with_capacity(capacity);
    // One encoding buffer for every leaf: the trie copies what it keeps.
    let mut buf = Vec::with_capacity(512);
    for (tx, mut receipt) in rx.into_iter().flatten() {
        let bloom = logs_bloom_of(receipt.logs());
        if let Some(r) = receipt.as_receipt_with_bloom_mut() {
            r.logs_bloom = bloom;
        }
        logs_bloom.accrue_bloom(&bloom);
        buf.clear();
        tx.tx.encode_2718(&mut buf);
        tx_trie.add(&buf);
        buf.clear();
        receipt.encode_2718(&mut buf);
        receipt_trie.add(&buf);
        transactions.push(tx);
        receipts.push(receipt);
    }
    Assembled {
        transactions,
        receipts,
        transactions_root: tx_trie.root(),
        receipts_root: receipt_trie.root(),
        logs_bloom,
    }
}

fn logs_bloom_of(logs: &[Log]) -> Bloom {
    let mut bloom = Bloom::ZERO;
    for log in logs {
        bloom.accrue_log(log);
    }
    bloom
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::{
        SignableTransaction, TxLegacy, TxReceipt,
        proofs::{calculate_receipt_root, calculate_transaction_root},
    };
    use alloy_primitives::{Address, LogData, Signature, TxKind, U256};

    fn tx(i: u64) -> StoredTx {
        let tx: TxEnvelope = TxLegacy {
            nonce: i,
            gas_limit: 21_000 + i,
            to: TxKind::Call(Address::with_last_byte(i as u8)),
            value: U256::from(i),
            ..Default::default()
        }
        .into_signed(Signature::test_signature())
        .into();
        StoredTx {
            hash: *tx.tx_hash(),
            sender: Address::ZERO,
            tx,
        }
    }

    fn receipt(i: u64) -> Receipt {
        let logs = (0..i % 3)
            .map(|j| Log {
                address: Address::with_last_byte(j as u8),
                data: LogData::new_unchecked(
                    vec![B256::with_last_byte(i as u8)],
                    vec![1, 2].into(),
                ),
            })
            .collect();
        Receipt {
            status: i.is_multiple_of(2).into(),
            cumulative_gas_used: 21_000 * (i + 1),
            logs,
        }
    }

    #[test]
    fn assembled_roots_and_blooms_equal_alloys_at_every_boundary() {
        let thread = AssemblerThread::spawn();
        // An abandoned block must not disturb the next one on the same thread.
        let mut abandoned = thread.start();
        abandoned.push(tx(9), ReceiptEnvelope::Legacy(receipt(9).with_bloom()));
        drop(abandoned);
        for n in [0u64, 1, 2, 127, 128, 129, 255, 256, 300] {
            let mut assembler = thread.start();
            let txs: Vec<_> = (0..n).map(tx).collect();
            for (i, t) in txs.iter().enumerate() {
                // As the receipt builder makes them: bloom left empty.
                let r = ReceiptWithBloom {
                    receipt: receipt(i as u64),
                    logs_bloom: Bloom::ZERO,
                };
                assembler.push(t.clone(), ReceiptEnvelope::Legacy(r));
            }
            let out = assembler.finish();
            // What alloy computes from scratch.
            let expected: Vec<ReceiptEnvelope> = (0..n)
                .map(|i| ReceiptEnvelope::Legacy(receipt(i).with_bloom()))
                .collect();
            let envelopes: Vec<_> = txs.iter().map(|t| t.tx.clone()).collect();
            let mut bloom = Bloom::ZERO;
            for r in &expected {
                bloom.accrue_bloom(&r.bloom());
            }
            assert_eq!(out.receipts, expected, "n = {n}");
            assert_eq!(out.transactions, txs, "n = {n}");
            assert_eq!(
                out.transactions_root,
                calculate_transaction_root(&envelopes),
                "n = {n}"
            );
            assert_eq!(
                out.receipts_root,
                calculate_receipt_root(&expected),
                "n = {n}"
            );
            assert_eq!(out.logs_bloom, bloom, "n = {n}");
        }
    }
}
