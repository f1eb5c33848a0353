//! Stored blocks, transactions and receipts → alloy's RPC types (geth's JSON shapes).

use alloy_consensus::{BlockBody, Transaction as _, transaction::Recovered};
use alloy_primitives::{Address, U256};
use alloy_rlp::Encodable;
use alloy_rpc_types_eth::{
    Block, BlockTransactions, Header, Log, Transaction, TransactionReceipt, Withdrawals,
};
use pipe_primitives::{SealedBlock, StoredTx};

pub(crate) type RpcReceipt = TransactionReceipt<alloy_consensus::ReceiptEnvelope<Log>>;

pub(crate) fn block(b: &SealedBlock, full: bool) -> Block {
    let transactions = if full {
        BlockTransactions::Full(
            (0..b.transactions.len())
                .map(|i| transaction_in_block(b, i))
                .collect(),
        )
    } else {
        BlockTransactions::Hashes(b.transactions.iter().map(|t| t.hash).collect())
    };
    let body = BlockBody {
        transactions: b
            .transactions
            .iter()
            .map(|t| t.tx.clone())
            .collect::<Vec<_>>(),
        ommers: Vec::new(),
        withdrawals: Some(Default::default()),
    };
    let size = alloy_consensus::Block {
        header: b.header.clone(),
        body,
    }
    .length();
    Block {
        header: Header {
            hash: b.hash,
            inner: b.header.clone(),
            total_difficulty: Some(U256::ZERO),
            size: Some(U256::from(size)),
        },
        uncles: Vec::new(),
        transactions,
        withdrawals: Some(Withdrawals::default()),
    }
}

pub(crate) fn transaction_in_block(b: &SealedBlock, index: usize) -> Transaction {
    let t = &b.transactions[index];
    Transaction {
        inner: Recovered::new_unchecked(t.tx.clone(), t.sender),
        block_hash: Some(b.hash),
        block_number: Some(b.number()),
        transaction_index: Some(index as u64),
        effective_gas_price: Some(t.tx.effective_gas_price(b.header.base_fee_per_gas)),
        block_timestamp: Some(b.header.timestamp),
    }
}

pub(crate) fn pending_transaction(t: &StoredTx) -> Transaction {
    use alloy_consensus::Transaction as _;
    Transaction {
        inner: Recovered::new_unchecked(t.tx.clone(), t.sender),
        block_hash: None,
        block_number: None,
        transaction_index: None,
        // Not mined, so no effective price yet: the fee cap, as geth and anvil report it.
        effective_gas_price: Some(t.tx.max_fee_per_gas()),
        block_timestamp: None,
    }
}

/// Index in the block of the first log of transaction `index`.
fn first_log_index(b: &SealedBlock, index: usize) -> u64 {
    b.receipts[..index]
        .iter()
        .map(|r| r.logs().len() as u64)
        .sum()
}

pub(crate) fn receipt(b: &SealedBlock, index: usize) -> RpcReceipt {
    let t = &b.transactions[index];
    let r = &b.receipts[index];
    let previous = if index == 0 {
        0
    } else {
        b.receipts[index - 1].cumulative_gas_used()
    };
    let mut log_index = first_log_index(b, index);
    let inner = r.clone().map_logs(|log| {
        let l = Log {
            inner: log,
            block_hash: Some(b.hash),
            block_number: Some(b.number()),
            block_timestamp: Some(b.header.timestamp),
            transaction_hash: Some(t.hash),
            transaction_index: Some(index as u64),
            log_index: Some(log_index),
            removed: false,
        };
        log_index += 1;
        l
    });
    let contract_address: Option<Address> =
        t.tx.kind()
            .is_create()
            .then(|| t.sender.create(t.tx.nonce()));
    TransactionReceipt {
        inner,
        transaction_hash: t.hash,
        transaction_index: Some(index as u64),
        block_hash: Some(b.hash),
        block_number: Some(b.number()),
        gas_used: r.cumulative_gas_used() - previous,
        effective_gas_price: t.tx.effective_gas_price(b.header.base_fee_per_gas),
        blob_gas_used: None,
        blob_gas_price: None,
        from: t.sender,
        to: t.tx.to(),
        contract_address,
    }
}

/// Every log of a block with its positions, in block order.
pub(crate) fn block_logs(b: &SealedBlock) -> Vec<Log> {
    let mut out = Vec::new();
    let mut log_index = 0u64;
    for (i, (t, r)) in b.transactions.iter().zip(&b.receipts).enumerate() {
        for log in r.logs() {
            out.push(Log {
                inner: log.clone(),
                block_hash: Some(b.hash),
                block_number: Some(b.number()),
                block_timestamp: Some(b.header.timestamp),
                transaction_hash: Some(t.hash),
                transaction_index: Some(i as u64),
                log_index: Some(log_index),
                removed: false,
            });
            log_index += 1;
        }
    }
    out
}
