//! Block assembly on another core while the block executes.
//!
//! One long-lived thread per [`crate::Executor`] takes one job per block, so its memory stays
//! warm from block to block (a fresh thread per block paid page faults on every block).
//!
//! Each kept transaction moves to the assembler thread, shared (no copy), with what its receipt
//! needs: type, status, cumulative gas and logs. The assembler builds the receipt and its logs
//! bloom, encodes both, and feeds the transaction and receipt tries. The builder thread only
//! executes; when the block is finished, the last batch is hashed and the assembled
//! transactions, receipts and roots come back.
//!
//! The executing thread never wakes the assembler while the block runs. A wake-up is an
//! interrupt sent to the other CPU, which under a hypervisor costs the sender microseconds: with
//! an idle assembler woken for every batch, 1000 transfers took 0.9 ms longer to execute. The
//! assembler instead polls for batches, sleeping [`POLL`] between polls, and is woken once,
//! when the block is finished.
//!
//! Both tries are built as the leaves arrive ([`crate::ordered_trie`]).

use std::{
    sync::{Arc, mpsc},
    thread::Thread,
    time::{Duration, Instant},
};

use alloy_consensus::{Eip658Value, Receipt, ReceiptEnvelope, TxType};
use alloy_eips::Encodable2718;
use alloy_primitives::{B256, Bloom, Log};
use pipe_primitives::{BlockTx, StoredTx};

use crate::ordered_trie::OrderedTrie;

/// A kept transaction as the executing thread hands it over. Its receipt (with the 256-byte
/// bloom) is built on the assembler thread, so only these few words cross.
#[derive(Debug)]
pub(crate) struct Kept {
    pub tx: Arc<dyn BlockTx>,
    pub tx_type: TxType,
    pub success: bool,
    pub cumulative_gas_used: u64,
    pub logs: Vec<Log>,
}

impl Kept {
    /// The receipt, bloom included.
    fn receipt(self) -> (Arc<dyn BlockTx>, ReceiptEnvelope) {
        let receipt = Receipt {
            status: Eip658Value::Eip658(self.success),
            cumulative_gas_used: self.cumulative_gas_used,
            logs: self.logs,
        };
        (
            self.tx,
            ReceiptEnvelope::from_typed(self.tx_type, receipt.with_bloom()),
        )
    }
}

/// What the assembler hands back for a block.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub transactions: Vec<StoredTx>,
    pub receipts: Vec<ReceiptEnvelope>,
    pub transactions_root: B256,
    pub receipts_root: B256,
    pub logs_bloom: Bloom,
}

/// Transactions handed over at once. Small, because the last batch is hashed after the last
/// transaction, while the builder waits (64 left about 0.1 ms of plain transfers' hashing at
/// the end of every block).
const BATCH: usize = 16;

/// How long the assembler sleeps when it finds no batch waiting. The kernel's timer slack
/// (50 µs by default) comes on top. Measured against 30 µs and 100 µs, 10 µs left the least
/// to do at the end of the block. It polls only while a block is being built; between blocks
/// it waits for the next one.
const POLL: Duration = Duration::from_micros(10);

/// How long the builder spins for the assembled block before it sleeps (the wait is 0.1 ms
/// or less when the assembler keeps up).
const SPIN: Duration = Duration::from_millis(1);

type Batch = Vec<Kept>;

/// One block's work: its batches in, its result out.
type Job = (mpsc::Receiver<Batch>, mpsc::Sender<Assembled>);

/// The assembler thread, shared by every block an executor builds. Blocks are assembled one
/// after another in the order they started; the thread ends when the last handle is dropped.
#[derive(Clone, Debug)]
pub(crate) struct AssemblerThread {
    jobs: mpsc::Sender<Job>,
    /// To wake the thread when a block is finished (it polls until then).
    thread: Thread,
    /// How long a finishing block spins for its result: [`SPIN`], or nothing on one CPU,
    /// where spinning would only keep the assembler from running. Asked once: the answer
    /// comes from cgroup files, too slow to read per block.
    spin: Duration,
}

impl AssemblerThread {
    pub(crate) fn spawn() -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
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
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            jobs,
            thread: handle.thread().clone(),
            spin: if cpus > 1 { SPIN } else { Duration::ZERO },
        }
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
            thread: self.thread.clone(),
            spin: self.spin,
        }
    }
}

/// Handle to the assembly of one block.
pub(crate) struct Assembler {
    sender: Option<mpsc::Sender<Batch>>,
    batch: Batch,
    result: mpsc::Receiver<Assembled>,
    thread: Thread,
    spin: Duration,
}

impl Assembler {
    /// Adds the next transaction of the block (in block order).
    pub(crate) fn push(&mut self, kept: Kept) {
        self.batch.push(kept);
        if self.batch.len() >= BATCH {
            self.send();
        }
    }

    fn send(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        if let Some(sender) = &self.sender {
            // The worker only stops when the sender is dropped, so this cannot fail.
            let _ = sender.send(batch);
        }
    }

    /// Ends the block's input: the last batch goes over and the assembler is woken to finish
    /// the tries while the caller does the rest of the block's end.
    pub(crate) fn close(&mut self) {
        self.send();
        if self.sender.take().is_some() {
            self.thread.unpark();
        }
    }

    /// Closes the input if it is still open, and waits for the assembled block.
    pub(crate) fn finish(mut self) -> Assembled {
        self.close();
        // The wait is short (the last batch and the roots), and this thread has nothing else
        // to do: spin on the result for a while rather than sleep, so that no wake-up (another
        // cross-CPU interrupt) stands between the result and the caller.
        let spin_until = Instant::now() + self.spin;
        while Instant::now() < spin_until {
            match self.result.try_recv() {
                Ok(assembled) => return assembled,
                Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
                Err(mpsc::TryRecvError::Disconnected) => break,
            }
        }
        self.result.recv().expect("block assembler thread stopped")
    }
}

impl Drop for Assembler {
    fn drop(&mut self) {
        // An abandoned block: close the channel so the worker ends; its result is unused.
        self.batch.clear();
        self.close();
    }
}

/// The next batch of the block, or `None` when the block is finished: polls, sleeping
/// between polls, so that the executing thread never has to wake this one.
fn next_batch(rx: &mpsc::Receiver<Batch>) -> Option<Batch> {
    loop {
        match rx.try_recv() {
            Ok(batch) => return Some(batch),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            // A wake-up from the finish (or left over from an earlier block) ends the sleep
            // early; either way the channel is looked at again.
            Err(mpsc::TryRecvError::Empty) => std::thread::park_timeout(POLL),
        }
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
    for kept in std::iter::from_fn(|| next_batch(&rx)).flatten() {
        let (tx, receipt) = kept.receipt();
        logs_bloom.accrue_bloom(receipt.logs_bloom());
        let stored = tx.stored();
        match tx.encoded_2718() {
            Some(encoded) => {
                debug_assert_eq!(encoded, stored.tx.encoded_2718(), "BlockTx encoding");
                tx_trie.add(encoded)
            }
            None => {
                buf.clear();
                stored.tx.encode_2718(&mut buf);
                tx_trie.add(&buf);
            }
        }
        buf.clear();
        receipt.encode_2718(&mut buf);
        receipt_trie.add(&buf);
        transactions.push(stored.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_consensus::TxEnvelope;
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

    /// A transaction that comes with its encoding, as the pool's do.
    #[derive(Debug)]
    struct Encoded(StoredTx, Vec<u8>);

    impl BlockTx for Encoded {
        fn stored(&self) -> &StoredTx {
            &self.0
        }
        fn encoded_2718(&self) -> Option<&[u8]> {
            Some(&self.1)
        }
    }

    fn kept(t: &StoredTx, i: u64) -> Kept {
        let r = receipt(i);
        // Every other transaction brings its own encoding; the rest are encoded here.
        let tx: Arc<dyn BlockTx> = if i.is_multiple_of(2) {
            Arc::new(Encoded(t.clone(), t.tx.encoded_2718()))
        } else {
            Arc::new(t.clone())
        };
        Kept {
            tx,
            tx_type: TxType::Legacy,
            success: r.status.coerce_status(),
            cumulative_gas_used: r.cumulative_gas_used,
            logs: r.logs,
        }
    }

    #[test]
    fn assembled_roots_and_blooms_equal_alloys_at_every_boundary() {
        let thread = AssemblerThread::spawn();
        // An abandoned block must not disturb the next one on the same thread.
        let mut abandoned = thread.start();
        abandoned.push(kept(&tx(9), 9));
        drop(abandoned);
        for n in [0u64, 1, 2, 15, 16, 17, 127, 128, 129, 255, 256, 300] {
            let mut assembler = thread.start();
            let txs: Vec<_> = (0..n).map(tx).collect();
            for (i, t) in txs.iter().enumerate() {
                assembler.push(kept(t, i as u64));
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
