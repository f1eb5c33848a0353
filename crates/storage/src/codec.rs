//! Byte encodings of keys and rows. Keys are big-endian so redb's byte order is numeric order.

use alloy_consensus::{ReceiptEnvelope, TxEnvelope};
use alloy_eips::{Decodable2718, Encodable2718};
use alloy_primitives::{Address, B256, U256};
use pipe_primitives::StoredTx;

use crate::{StoreError, state::AccountRecord};

pub(crate) const ACCOUNT_LEN: usize = 8 + 32 + 32 + 32;

pub(crate) fn encode_account(a: &AccountRecord) -> [u8; ACCOUNT_LEN] {
    let mut out = [0u8; ACCOUNT_LEN];
    out[..8].copy_from_slice(&a.nonce.to_be_bytes());
    out[8..40].copy_from_slice(&a.balance.to_be_bytes::<32>());
    out[40..72].copy_from_slice(a.code_hash.as_slice());
    out[72..].copy_from_slice(a.storage_root.as_slice());
    out
}

pub(crate) fn decode_account(b: &[u8]) -> Result<AccountRecord, StoreError> {
    if b.len() != ACCOUNT_LEN {
        return Err(StoreError::Corrupt(format!(
            "account row of {} bytes",
            b.len()
        )));
    }
    Ok(AccountRecord {
        nonce: u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
        balance: U256::from_be_slice(&b[8..40]),
        code_hash: B256::from_slice(&b[40..72]),
        storage_root: B256::from_slice(&b[72..]),
    })
}

pub(crate) fn storage_key(address: &Address, slot: &B256) -> [u8; 52] {
    let mut k = [0u8; 52];
    k[..20].copy_from_slice(address.as_slice());
    k[20..].copy_from_slice(slot.as_slice());
    k
}

/// The key range holding every slot of `address` in a table keyed by [`storage_key`].
pub(crate) fn storage_range(address: &Address) -> ([u8; 52], [u8; 52]) {
    let mut lo = [0u8; 52];
    lo[..20].copy_from_slice(address.as_slice());
    let mut hi = [0xffu8; 52];
    hi[..20].copy_from_slice(address.as_slice());
    (lo, hi)
}

pub(crate) fn tx_location(block: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&block.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

pub(crate) fn decode_tx_location(b: &[u8]) -> Result<(u64, u32), StoreError> {
    if b.len() != 12 {
        return Err(StoreError::Corrupt("tx location".into()));
    }
    Ok((
        u64::from_be_bytes(b[..8].try_into().expect("8 bytes")),
        u32::from_be_bytes(b[8..].try_into().expect("4 bytes")),
    ))
}

/// A list of byte strings, each prefixed by its u32 big-endian length.
fn encode_list<'a>(items: impl Iterator<Item = Vec<u8>> + 'a) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        out.extend_from_slice(&(item.len() as u32).to_be_bytes());
        out.extend_from_slice(&item);
    }
    out
}

fn decode_list(mut b: &[u8]) -> Result<Vec<&[u8]>, StoreError> {
    let mut items = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return Err(StoreError::Corrupt("list length prefix".into()));
        }
        let len = u32::from_be_bytes(b[..4].try_into().expect("4 bytes")) as usize;
        b = &b[4..];
        if b.len() < len {
            return Err(StoreError::Corrupt("list item".into()));
        }
        items.push(&b[..len]);
        b = &b[len..];
    }
    Ok(items)
}

/// Body row: each transaction as `sender (20 bytes) || EIP-2718 encoding`.
pub(crate) fn encode_body(txs: &[StoredTx]) -> Vec<u8> {
    encode_list(txs.iter().map(|t| {
        let mut v = t.sender.to_vec();
        t.tx.encode_2718(&mut v);
        v
    }))
}

pub(crate) fn decode_body(b: &[u8]) -> Result<Vec<StoredTx>, StoreError> {
    decode_list(b)?
        .into_iter()
        .map(|item| {
            if item.len() < 20 {
                return Err(StoreError::Corrupt("body item".into()));
            }
            let sender = Address::from_slice(&item[..20]);
            let tx = TxEnvelope::decode_2718_exact(&item[20..])
                .map_err(|e| StoreError::Corrupt(format!("stored tx: {e}")))?;
            Ok(StoredTx {
                hash: *tx.tx_hash(),
                sender,
                tx,
            })
        })
        .collect()
}

pub(crate) fn encode_receipts(receipts: &[ReceiptEnvelope]) -> Vec<u8> {
    encode_list(receipts.iter().map(|r| r.encoded_2718()))
}

pub(crate) fn decode_receipts(b: &[u8]) -> Result<Vec<ReceiptEnvelope>, StoreError> {
    decode_list(b)?
        .into_iter()
        .map(|item| {
            ReceiptEnvelope::decode_2718_exact(item)
                .map_err(|e| StoreError::Corrupt(format!("stored receipt: {e}")))
        })
        .collect()
}
