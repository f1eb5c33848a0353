//! The first block: a chain config's genesis as a change set and a block.

use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_primitives::{B256, KECCAK256_EMPTY, U256, keccak256};
use alloy_trie::EMPTY_ROOT_HASH;
use pipe_primitives::{ChainConfig, SealedBlock};
use pipe_storage::{AccountInfoChange, StateChanges, Store, StoreError};

/// Writes `chain`'s genesis into an empty store, or checks that the stored one is it.
pub fn init(store: &Store, chain: &ChainConfig) -> Result<SealedBlock, StoreError> {
    store.init_genesis(&changes(chain), |root| block(chain, root))
}

/// Genesis alloc as a change set.
pub fn changes(chain: &ChainConfig) -> StateChanges {
    let mut changes = StateChanges::default();
    for (address, account) in &chain.genesis.alloc {
        let code_hash = match &account.code {
            Some(code) if !code.is_empty() => {
                let h = keccak256(code);
                changes.code.push((h, code.clone()));
                h
            }
            _ => KECCAK256_EMPTY,
        };
        changes.accounts.push((
            *address,
            Some(AccountInfoChange {
                nonce: account.nonce.unwrap_or_default(),
                balance: account.balance,
                code_hash,
            }),
        ));
        if let Some(storage) = &account.storage {
            changes.storage.push((
                *address,
                storage
                    .iter()
                    .map(|(k, v)| (*k, U256::from_be_bytes(v.0)))
                    .collect(),
            ));
        }
    }
    changes
}

pub fn block(chain: &ChainConfig, state_root: B256) -> SealedBlock {
    let g = &chain.genesis;
    let header = Header {
        parent_hash: B256::ZERO,
        ommers_hash: EMPTY_OMMER_ROOT_HASH,
        beneficiary: g.coinbase,
        state_root,
        transactions_root: EMPTY_ROOT_HASH,
        receipts_root: EMPTY_ROOT_HASH,
        logs_bloom: Default::default(),
        difficulty: g.difficulty,
        number: 0,
        gas_limit: chain.gas_limit,
        gas_used: 0,
        timestamp: g.timestamp,
        extra_data: g.extra_data.clone(),
        mix_hash: g.mix_hash,
        nonce: g.nonce.into(),
        base_fee_per_gas: Some(chain.genesis_base_fee()),
        withdrawals_root: Some(EMPTY_ROOT_HASH),
        blob_gas_used: Some(0),
        excess_blob_gas: Some(0),
        parent_beacon_block_root: Some(B256::ZERO),
        requests_hash: Some(EMPTY_REQUESTS_HASH),
        ..Default::default()
    };
    SealedBlock::new(header, Vec::new(), Vec::new())
}
