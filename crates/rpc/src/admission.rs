//! `eth_sendRawTransaction`'s look at inference before the pool acknowledges a transaction.
//!
//! What can be known when a transaction arrives is answered then, as the RPC error: a gas
//! limit that cannot cover a request, an unknown model, a malformed or out-of-bounds request
//! that makes the transaction fail (the executor's `check_admission` says exactly what it
//! checks). A transaction that could not be judged here (it waits behind a nonce gap, its
//! sender has a long backlog, an earlier transaction must be answered first) is acknowledged
//! as usual; discovery judges it later and its status keeps the reason.
//!
//! Plain transfers and calls to accounts without code cannot reach the precompile and cost
//! nothing here beyond decoding.

use alloy_consensus::{Transaction as _, TxEnvelope, transaction::SignerRecoverable};
use alloy_eips::Decodable2718;
use alloy_primitives::TxKind;
use pipe_primitives::StoredTx;

use crate::{RpcError, eth::Api};

/// The longest run of the sender's pending transactions simulated before a new one. Past it
/// the check is left to discovery, so one sender's backlog cannot make admission expensive.
const MAX_RUN: usize = 16;

impl Api {
    /// Refuses `raw` if what is knowable now about its inference stands against it.
    pub(crate) async fn check_inference(&self, raw: &[u8]) -> Result<(), RpcError> {
        // Undecodable or unsigned bytes are the pool's to refuse, with its own reasons.
        let Ok(tx) = TxEnvelope::decode_2718_exact(raw) else {
            return Ok(());
        };
        let store = &self.node.store;
        if let TxKind::Call(to) = tx.kind()
            && to != pipe_executor::INFERENCE_PRECOMPILE
            && store
                .account(&to)?
                .is_none_or(|a| a.code_hash == alloy_primitives::KECCAK256_EMPTY)
        {
            return Ok(());
        }
        let unsigned = pipe_primitives::edits::impersonated_sender(&tx)
            .filter(|claimed| self.node.pool.impersonates(claimed));
        let Some(sender) = unsigned.or_else(|| tx.recover_signer().ok()) else {
            return Ok(());
        };
        let on_chain = store.account(&sender)?.map_or(0, |a| a.nonce);
        let nonce = tx.nonce();
        if nonce < on_chain || (nonce - on_chain) as usize > MAX_RUN {
            return Ok(());
        }
        let mut run: Vec<StoredTx> = self
            .node
            .pool
            .ready_run_of(&sender)
            .into_iter()
            .filter(|t| t.nonce() >= on_chain && t.nonce() < nonce)
            .map(|t| t.stored.clone())
            .collect();
        if run.len() as u64 != nonce - on_chain {
            // Behind a gap: not executable yet, so nothing to judge.
            return Ok(());
        }
        run.push(StoredTx {
            hash: *tx.tx_hash(),
            sender,
            tx,
        });
        let head = self.head();
        let executor = self.node.executor.clone();
        let view = std::sync::Arc::new(store.state()?);
        let refusal = self
            .node
            .tasks
            .blocking(move || {
                let attrs = executor.next_attributes(&head, 0, alloy_primitives::Address::ZERO);
                executor.check_admission(view, &attrs, &run)
            })
            .await
            .map_err(|e| RpcError::Internal(e.to_string()))?
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        refusal.map_err(|r| RpcError::InferenceRefused(r.to_string()))
    }
}
