//! `eth_call` and `eth_estimateGas`: a transaction request executed on a throw-away overlay of
//! a state snapshot. Nothing here ever writes to the store.

use alloy_evm::{Evm, EvmEnv, EvmFactory, overrides::apply_state_overrides, rpc::TryIntoTxEnv};
use alloy_primitives::{Bytes, Log, TxKind};
use alloy_rpc_types_eth::{TransactionRequest, state::StateOverride};
use std::sync::Arc;

use pipe_storage::StateView;
use revm::{
    DatabaseRef,
    context::TxEnv,
    context_interface::Cfg,
    context_interface::result::{EVMError, ExecutionResult, HaltReason, OutOfGasError},
    database::CacheDB,
};

use crate::{BlockAttributes, CallError, Executor, StateDb, db::DbError};

/// Gas of a plain value transfer.
const TRANSFER_GAS: u64 = 21_000;

/// A call as the RPC layer hands it over.
#[derive(Clone, Debug, Default)]
pub struct CallRequest {
    pub tx: TransactionRequest,
    pub overrides: Option<StateOverride>,
}

/// What a successful call returned.
#[derive(Clone, Debug)]
pub struct CallOutcome {
    pub output: Bytes,
    pub gas_used: u64,
    pub logs: Vec<Log>,
}

type CallDb = CacheDB<StateDb>;

impl Executor {
    /// Executes `request` against `view` in a block with `attrs`, as `eth_call` does.
    pub fn call(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        request: CallRequest,
    ) -> Result<CallOutcome, CallError> {
        let (env, tx, db) = self.prepare(view, attrs, request)?;
        let mut evm = self.factory.create_evm(db, env);
        self.install_inference(evm.precompiles_mut(), attrs, crate::Purpose::Simulation);
        outcome(evm.transact(tx).map_err(evm_error)?.result)
    }

    /// The smallest gas limit with which `request` succeeds, as `eth_estimateGas` does.
    pub fn estimate_gas(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        request: CallRequest,
    ) -> Result<u64, CallError> {
        let (env, mut tx, mut db) = self.prepare(view, attrs, request)?;
        // A plain transfer to an account without code costs exactly 21000.
        if let TxKind::Call(to) = tx.kind
            && tx.data.is_empty()
            && db
                .basic_ref(to)
                .map_err(|e| CallError::Internal(e.to_string()))?
                .is_none_or(|a| a.is_empty_code_hash())
        {
            let probe = tx.clone();
            let mut evm = self.factory.create_evm(&mut db, env.clone());
            self.install_inference(evm.precompiles_mut(), attrs, crate::Purpose::Simulation);
            let mut t = probe;
            t.gas_limit = TRANSFER_GAS;
            if evm.transact(t).map_err(evm_error)?.result.is_success() {
                return Ok(TRANSFER_GAS);
            }
        }
        // The caller can only pay for so much gas at its gas price.
        if tx.gas_price > 0 {
            let allowance = alloy_evm::call::caller_gas_allowance(&mut db, &tx)
                .map_err(|e| CallError::Invalid(e.to_string()))?;
            tx.gas_limit = tx.gas_limit.min(allowance);
        }
        let mut hi = tx.gas_limit;
        let mut evm = self.factory.create_evm(db, env);
        self.install_inference(evm.precompiles_mut(), attrs, crate::Purpose::Simulation);
        let first = evm.transact(tx.clone()).map_err(evm_error)?.result;
        let used = match first {
            ExecutionResult::Success { .. } => first.tx_gas_used(),
            ExecutionResult::Halt {
                reason: HaltReason::OutOfGas(_),
                ..
            } => {
                return Err(CallError::Invalid(format!(
                    "gas required exceeds allowance ({hi})"
                )));
            }
            other => return outcome(other).map(|_| unreachable_gas()),
        };
        // Binary search for the exact minimum: gas used is a lower bound minus one (refunds
        // and the 63/64 rule make the limit needed exceed the gas finally used).
        let mut lo = used.saturating_sub(1).max(TRANSFER_GAS - 1);
        // Optimistic first probe: most calls succeed a little above what they used.
        let optimistic = (used + used / 63 + 2_300).min(hi);
        if optimistic < hi && succeeds(&mut evm, &tx, optimistic)? {
            hi = optimistic;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if succeeds(&mut evm, &tx, mid)? {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        Ok(hi)
    }

    /// Environment, transaction and overlay database for a call.
    pub(crate) fn prepare(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        request: CallRequest,
    ) -> Result<(EvmEnv, TxEnv, CallDb), CallError> {
        let mut env = self.evm_env(attrs);
        let mut req = request.tx;
        // Calls are not bound by the sender's nonce, and with no fee given they pay nothing,
        // as in geth and anvil.
        env.cfg_env.disable_nonce_check = true;
        // A call may come from a contract (geth and anvil answer it): EIP-3607 is for
        // transactions.
        env.cfg_env.disable_eip3607 = true;
        let fees_given = req.gas_price.is_some() || req.max_fee_per_gas.is_some();
        if !fees_given {
            env.cfg_env.disable_base_fee = true;
        }
        let cap = env.cfg_env.tx_gas_limit_cap().min(attrs.gas_limit);
        req.gas = Some(req.gas.unwrap_or(cap).min(cap));
        if req.nonce.is_none() {
            req.nonce = Some(
                view.account(&req.from.unwrap_or_default())?
                    .map(|a| a.nonce)
                    .unwrap_or_default(),
            );
        }
        let tx: TxEnv = req
            .try_into_tx_env(&env)
            .map_err(|e| CallError::Invalid(e.to_string()))?;
        let mut db = CacheDB::new(StateDb::new(view));
        if let Some(overrides) = request.overrides {
            apply_state_overrides(overrides, &mut db)
                .map_err(|e| CallError::Invalid(e.to_string()))?;
        }
        Ok((env, tx, db))
    }
}

/// Never used: `outcome` of a non-success result is always an error.
fn unreachable_gas() -> u64 {
    0
}

fn succeeds<E>(evm: &mut E, tx: &TxEnv, gas: u64) -> Result<bool, CallError>
where
    E: Evm<Tx = TxEnv, Error = EVMError<DbError>, HaltReason = HaltReason>,
{
    let mut t = tx.clone();
    t.gas_limit = gas;
    match evm.transact(t) {
        Ok(r) => Ok(r.result.is_success()),
        // Below intrinsic gas and the like: too little gas, not a failure of the request.
        Err(EVMError::Transaction(_)) => Ok(false),
        Err(e) => Err(evm_error(e)),
    }
}

pub(crate) fn outcome(result: ExecutionResult<HaltReason>) -> Result<CallOutcome, CallError> {
    match result {
        ExecutionResult::Success {
            gas, logs, output, ..
        } => Ok(CallOutcome {
            output: output.into_data(),
            gas_used: gas.tx_gas_used(),
            logs,
        }),
        ExecutionResult::Revert { output, .. } => Err(CallError::Reverted {
            reason: revert_reason(&output),
            output,
        }),
        ExecutionResult::Halt { reason, .. } => Err(CallError::Halted(halt_message(&reason))),
    }
}

/// The reason geth puts after "execution reverted: ": the string of `Error(string)`, or the
/// panic description of `Panic(uint256)`. Custom errors and empty data give no reason (the
/// data is returned as the error's `data`).
fn revert_reason(output: &[u8]) -> Option<String> {
    use alloy_sol_types::{Panic, Revert, SolError};
    if let Ok(r) = Revert::abi_decode(output) {
        return Some(r.reason);
    }
    if let Ok(p) = Panic::abi_decode(output) {
        return Some(p.to_string());
    }
    None
}

/// Geth's wording for the common halts, so clients match on it.
fn halt_message(reason: &HaltReason) -> String {
    match reason {
        HaltReason::OutOfGas(OutOfGasError::Basic) | HaltReason::OutOfGas(_) => "out of gas".into(),
        HaltReason::OpcodeNotFound | HaltReason::InvalidFEOpcode => "invalid opcode".into(),
        HaltReason::StackUnderflow => "stack underflow".into(),
        HaltReason::StackOverflow => "stack limit reached".into(),
        HaltReason::InvalidJump => "invalid jump destination".into(),
        HaltReason::CallTooDeep => "max call depth exceeded".into(),
        HaltReason::OutOfFunds => "insufficient balance for transfer".into(),
        HaltReason::NonceOverflow => "nonce uint64 overflow".into(),
        HaltReason::CreateCollision => "contract address collision".into(),
        HaltReason::CreateContractSizeLimit => "max code size exceeded".into(),
        other => format!("{other:?}"),
    }
}

pub(crate) fn evm_error(e: EVMError<DbError>) -> CallError {
    match e {
        EVMError::Transaction(t) => CallError::Invalid(t.to_string()),
        EVMError::Database(d) => CallError::Storage(d.0),
        other => CallError::Internal(other.to_string()),
    }
}
