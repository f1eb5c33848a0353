//! `eth_getProof` (EIP-1186): an account and some of its storage slots with Merkle proofs,
//! from the store's tries at a recent block, or rebuilt from the archive at an older one
//! ([`pipe_storage::StateView::proof`]; one of those at a time).

use alloy_consensus::EMPTY_ROOT_HASH;
use alloy_eips::BlockId;
use alloy_primitives::{Address, KECCAK256_EMPTY};
use alloy_rpc_types_eth::{EIP1186AccountProofResponse, EIP1186StorageProof};
use alloy_serde::JsonStorageKey;
use jsonrpsee::{core::async_trait, proc_macros::rpc};

use crate::{
    RpcError,
    error::RpcResult,
    eth::{Api, blocking},
};

/// Most slots one `eth_getProof` may prove (each is a walk down the account's storage trie).
pub const MAX_PROOF_SLOTS: usize = 1024;

#[rpc(server, namespace = "eth")]
pub trait ProofApi {
    #[method(name = "getProof")]
    async fn proof(
        &self,
        address: Address,
        keys: Vec<JsonStorageKey>,
        block: Option<BlockId>,
    ) -> RpcResult<EIP1186AccountProofResponse>;
}

#[async_trait]
impl ProofApiServer for Api {
    async fn proof(
        &self,
        address: Address,
        keys: Vec<JsonStorageKey>,
        block: Option<BlockId>,
    ) -> RpcResult<EIP1186AccountProofResponse> {
        if keys.len() > MAX_PROOF_SLOTS {
            return Err(RpcError::LimitExceeded(format!(
                "eth_getProof proves at most {MAX_PROOF_SLOTS} slots, {} asked",
                keys.len()
            ))
            .into());
        }
        let view = self.state_at(block)?;
        let header = self
            .block(view.head)?
            .ok_or(RpcError::UnknownBlock)?
            .header
            .clone();
        let slots: Vec<_> = keys.iter().map(|k| k.as_b256()).collect();
        // A proof at an archived block rebuilds tries from the archive: one such heavy read
        // at a time, sharing the traces' turn.
        let _turn = if view.proves_from_archive() {
            Some(
                self.traces
                    .acquire()
                    .await
                    .map_err(|e| RpcError::Internal(e.to_string()))?,
            )
        } else {
            None
        };
        let proof = blocking(&self.node.tasks, move || view.proof(&address, &slots)).await?;
        // The proof is only worth something if it leads to the block's root.
        if proof.state_root != header.state_root {
            return Err(RpcError::Internal(format!(
                "the stored trie gives root {} for block {}, whose header says {}",
                proof.state_root, header.number, header.state_root
            ))
            .into());
        }
        let account = proof.account;
        Ok(EIP1186AccountProofResponse {
            address,
            balance: account.map(|a| a.balance).unwrap_or_default(),
            code_hash: account.map_or(KECCAK256_EMPTY, |a| a.code_hash),
            nonce: account.map(|a| a.nonce).unwrap_or_default(),
            storage_hash: account.map_or(EMPTY_ROOT_HASH, |a| a.storage_root),
            account_proof: proof.proof,
            storage_proof: proof
                .storage
                .into_iter()
                .zip(keys)
                .map(|(s, key)| EIP1186StorageProof {
                    key,
                    value: s.value,
                    proof: s.proof,
                })
                .collect(),
        })
    }
}
