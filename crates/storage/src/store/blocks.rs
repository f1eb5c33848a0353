//! The chain's blocks as stored: headers, bodies, receipts, sidecars and the transaction
//! index, read back and written with each commit.

use super::*;

impl Store {
    /// Header of block `number`.
    pub fn header(&self, number: u64) -> Result<Option<Header>, StoreError> {
        let tx = self.db()?.begin_read()?;
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
        let tx = self.db()?.begin_read()?;
        Ok(tx
            .open_table(HASH_TO_NUMBER)?
            .get(&hash.0)?
            .map(|v| v.value()))
    }

    /// The whole block `number`: header, transactions and receipts.
    pub fn block(&self, number: u64) -> Result<Option<SealedBlock>, StoreError> {
        let tx = self.db()?.begin_read()?;
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
        let edits = match tx.open_table(EDITS)?.get(number)? {
            Some(b) => StateEdits::decode(b.value())
                .map_err(|e| StoreError::Corrupt(format!("state edits {number}: {e}")))?,
            None => StateEdits::default(),
        };
        Ok(Some(SealedBlock {
            hash: keccak256(raw),
            header,
            transactions,
            receipts,
            sidecar,
            edits,
        }))
    }

    /// Overwrites the stored sidecar of block `number` and nothing else. This is what a
    /// tampering peer would serve; replay must reject the block. For tools and tests only.
    pub fn replace_sidecar(&self, number: u64, sidecar: &Sidecar) -> Result<(), StoreError> {
        let tx = self.db()?.begin_write()?;
        tx.open_table(SIDECARS)?
            .insert(number, sidecar.encode().as_slice())?;
        tx.commit()?;
        Ok(())
    }

    /// Where transaction `hash` was included: block number and index.
    pub fn transaction_location(&self, hash: &B256) -> Result<Option<(u64, u32)>, StoreError> {
        let tx = self.db()?.begin_read()?;
        tx.open_table(TX_LOOKUP)?
            .get(&hash.0)?
            .map(|v| decode_tx_location(v.value()))
            .transpose()
    }
}

/// Writes block, receipts and indices, and moves the head.
pub(super) fn write_block(tx: &WriteTransaction, block: &SealedBlock) -> Result<(), StoreError> {
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
    if !block.edits.is_empty() {
        tx.open_table(EDITS)?
            .insert(number, block.edits.encode().as_slice())?;
    }
    let mut lookup = tx.open_table(TX_LOOKUP)?;
    for (i, t) in block.transactions.iter().enumerate() {
        lookup.insert(&t.hash.0, tx_location(number, i as u32).as_slice())?;
    }
    tx.open_table(META)?
        .insert(HEAD_KEY, number.to_be_bytes().as_slice())?;
    Ok(())
}
