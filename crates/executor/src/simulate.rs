//! Discovery's simulation: a sender's pending transactions executed in nonce order on a
//! throw-away overlay of the head state, answering inference only from known results.
//!
//! Each transaction runs on top of the ones before it (the state the builder will see when it
//! includes them in order). At the first request without a result the simulation stops: that
//! transaction and every later one are undecided, nothing is written anywhere, and the caller
//! dispatches the request and simulates again when the result is in.

use std::sync::Arc;

use alloy_evm::{Evm, EvmFactory, FromRecoveredTx};
use alloy_primitives::B256;
use pipe_primitives::StoredTx;
use pipe_storage::StateView;
use revm::{DatabaseCommit, context::TxEnv, database::CacheDB};

use crate::{
    BlockAttributes, ExecError, Executor, InferenceCall, InferenceProvider, Purpose, StateDb,
    recorder::Recorder,
};

/// How the simulation of one transaction ended.
#[derive(Debug)]
pub enum SimOutcome {
    /// Ran through (succeeded or reverted) with every result known: ready for a block.
    Complete {
        /// Keys of the results it used, in call order, without repeats.
        keys: Vec<B256>,
        /// It failed, and the precompile had refused one of its requests (the first
        /// reason): a request it can never make, whatever the state.
        refused: Option<String>,
    },
    /// Stopped at a request without a result.
    Missing(Box<InferenceCall>),
    /// Not executable on this state (nonce, balance, fees): the builder will decide.
    Invalid(String),
    /// Called the precompile with less gas than the request costs at the block's inference
    /// price (`cost`): its fee cannot cover the inference.
    Underpaid {
        call: Box<InferenceCall>,
        cost: u64,
        price: u64,
    },
}

impl Executor {
    /// Simulates `txs` (one sender's, in nonce order) on `view` in a block with `attrs`.
    /// Returns one outcome per transaction up to and including the first that is not
    /// [`SimOutcome::Complete`].
    pub fn simulate(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        txs: &[StoredTx],
        source: Arc<dyn InferenceProvider>,
    ) -> Result<Vec<SimOutcome>, ExecError> {
        let recorder = Arc::new(Recorder::new(source));
        let db = CacheDB::new(StateDb::new(view));
        let mut evm = self.factory.create_evm(db, self.evm_env(attrs));
        crate::inference::install(
            evm.precompiles_mut(),
            recorder.clone(),
            self.inference_gas(attrs),
            Purpose::Block,
        );
        let mut out = Vec::with_capacity(txs.len());
        for tx in txs {
            let env = TxEnv::from_recovered_tx(&tx.tx, tx.sender);
            evm.ctx_mut().cfg.disable_eip3607 =
                crate::block::waives_eip3607(tx, self.config.dev_controls);
            let result = evm.transact(env);
            let record = recorder.take();
            if let Some(call) = record.missing {
                out.push(SimOutcome::Missing(Box::new(call)));
                break;
            }
            if let Some((call, cost)) = record.underpaid {
                out.push(SimOutcome::Underpaid {
                    call: Box::new(call),
                    cost,
                    price: attrs.inference_gas_price,
                });
                break;
            }
            match result {
                Ok(r) => {
                    let refused = record.refused.filter(|_| !r.result.is_success());
                    evm.db_mut().commit(r.state);
                    let mut keys: Vec<B256> = Vec::new();
                    for used in record.used {
                        if !keys.contains(&used.key) {
                            keys.push(used.key);
                        }
                    }
                    out.push(SimOutcome::Complete { keys, refused });
                }
                Err(e) => {
                    out.push(SimOutcome::Invalid(e.to_string()));
                    break;
                }
            }
        }
        Ok(out)
    }
}
