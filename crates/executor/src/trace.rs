//! Tracing: `debug_traceTransaction`, `debug_traceCall` and `eth_createAccessList`.
//!
//! The tracers are revm-inspectors' (geth's struct logger, call, prestate, 4byte, mux and flat
//! call tracers, and the access-list collector); this module only runs them where the traced
//! execution happened:
//! - a transaction of a block is re-executed on its parent's state, after the block's system
//!   calls and the transactions ahead of it, with inference answered from the block's sidecar
//!   (the committed results: a trace shows what the block ran, never a new model run);
//! - a call runs as `eth_call` does, on a throw-away overlay.
//!
//! The inference precompile is an ordinary precompile to the tracers, so a call frame to 0x…F4
//! carries the request as its input and the `ModelOutput` as its output.

use std::sync::Arc;

use alloy_eips::eip2930::AccessList;
use alloy_evm::{
    Evm, EvmEnv, EvmFactory, FromRecoveredTx, eth::EthEvmContext, precompiles::PrecompilesMap,
};
use alloy_primitives::B256;
use pipe_primitives::StoredTx;
use pipe_storage::StateView;
use revm::{
    Inspector,
    context::TxEnv,
    context_interface::result::{EVMError, ResultAndState},
};
use revm_inspectors::{
    access_list::AccessListInspector,
    tracing::{DebugInspector, TransactionContext},
};

pub use alloy_rpc_types_trace::geth::{GethDebugTracingOptions, GethTrace};

use crate::{BlockAttributes, CallError, CallRequest, Executor, InferenceProvider, call};

/// Most opcode steps the struct logger records of one transaction with stack snapshots (a
/// step's snapshot is up to 1024 words), and without them; and with memory snapshots. A
/// request's own `limit` may lower these, not raise them: a call with state overrides is free
/// to send and can loop for its whole gas, so what one trace may hold is bounded here.
/// Execution goes on past the limit; only recording stops.
pub const MAX_STEPS_WITH_STACK: u64 = 20_000;
pub const MAX_STEPS: u64 = 100_000;
pub const MAX_STEPS_WITH_MEMORY: u64 = 5_000;

/// `opts` with the struct logger's step limit bounded, shared by `share` transactions.
fn bounded(mut opts: GethDebugTracingOptions, share: usize) -> GethDebugTracingOptions {
    let struct_logger = opts.tracer.as_ref().is_none_or(|t| t.as_str().is_empty());
    if struct_logger {
        let c = &opts.config;
        let cap = if c.is_memory_enabled() {
            MAX_STEPS_WITH_MEMORY
        } else if c.disable_stack.unwrap_or_default() {
            MAX_STEPS
        } else {
            MAX_STEPS_WITH_STACK
        };
        let cap = (cap / share.max(1) as u64).max(1_000);
        let asked = opts.config.limit.filter(|l| *l > 0).unwrap_or(cap);
        opts.config.limit = Some(asked.min(cap));
    }
    opts
}

/// Why a trace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The tracer or its configuration is not one we run.
    #[error("{0}")]
    Tracer(String),
    /// The traced call is invalid or could not run (as for `eth_call`).
    #[error(transparent)]
    Call(#[from] CallError),
    /// A transaction of the block would not run again on its parent: the store disagrees
    /// with the block, which is the node's fault, not the caller's.
    #[error("re-executing the block: {0}")]
    Replay(String),
}

/// A transaction as it ran in its block, for [`Executor::trace_transaction`].
#[derive(Clone, Debug)]
pub struct InBlock<'a> {
    /// The state after the block's parent.
    pub parent_state: Arc<StateView>,
    /// The block's own attributes ([`BlockAttributes::of_header`]).
    pub attrs: BlockAttributes,
    pub block_hash: B256,
    /// The block's transactions; the traced one is `index` (for a single transaction).
    pub transactions: &'a [StoredTx],
    pub index: usize,
    /// Answers the block's inference requests: its sidecar (`None` on a node without the
    /// precompile).
    pub results: Option<Arc<dyn InferenceProvider>>,
}

impl Executor {
    /// Traces transaction `at.index` of its block with the tracer `opts` names.
    pub fn trace_transaction(
        &self,
        at: InBlock<'_>,
        opts: GethDebugTracingOptions,
    ) -> Result<GethTrace, TraceError> {
        let index = at.index;
        let mut traces = self.trace_in_block(at, Some(index), opts)?;
        traces
            .pop()
            .map(|(_, trace)| trace)
            .ok_or_else(|| TraceError::Replay(format!("no transaction {index}")))
    }

    /// Traces every transaction of a block (`at.index` is ignored), in order, with their
    /// hashes.
    pub fn trace_block(
        &self,
        at: InBlock<'_>,
        opts: GethDebugTracingOptions,
    ) -> Result<Vec<(B256, GethTrace)>, TraceError> {
        self.trace_in_block(at, None, opts)
    }

    /// Re-executes the block up to `only` (or all of it), tracing `only` (or every
    /// transaction). A traced transaction runs once under the tracer, without committing, and
    /// once more to advance the block, which keeps tracing out of the block loop.
    fn trace_in_block(
        &self,
        at: InBlock<'_>,
        only: Option<usize>,
        opts: GethDebugTracingOptions,
    ) -> Result<Vec<(B256, GethTrace)>, TraceError> {
        let last = match only {
            Some(i) if i < at.transactions.len() => i,
            Some(i) => return Err(TraceError::Replay(format!("no transaction {i}"))),
            None if at.transactions.is_empty() => return Ok(Vec::new()),
            None => at.transactions.len() - 1,
        };
        let traced = if only.is_some() { 1 } else { last + 1 };
        let template = DebugInspector::new(bounded(opts, traced))
            .map_err(|e| TraceError::Tracer(e.to_string()))?;
        let mut block = self
            .build_block_with(at.parent_state, at.attrs, at.results)
            .map_err(|e| TraceError::Replay(e.to_string()))?;
        let gas = self.inference_gas(block.attributes());
        let mut traces = Vec::new();
        for (index, target) in at.transactions[..=last].iter().enumerate() {
            if only.is_none_or(|i| i == index) {
                let inspector = template
                    .try_clone()
                    .map_err(|e| TraceError::Tracer(e.to_string()))?;
                let dev = block.dev_controls();
                let (db, mut env, recorder) = block.parts();
                env.cfg_env.disable_eip3607 = crate::block::waives_eip3607(target, dev);
                let tx = TxEnv::from_recovered_tx(&target.tx, target.sender);
                let answers = recorder.clone();
                let (result, mut inspector) =
                    inspect(&mut *db, env.clone(), tx.clone(), inspector, |p| {
                        if let Some(recorder) = answers {
                            crate::inference::install(p, recorder, gas, crate::Purpose::Block)
                        }
                    });
                // The traced run's use of the sidecar is not the block's: forget it.
                if let Some(recorder) = &recorder {
                    recorder.take();
                }
                let result = result.map_err(|e| {
                    TraceError::Replay(format!("transaction {} does not run: {e}", target.hash))
                })?;
                let context = TransactionContext {
                    block_hash: Some(at.block_hash),
                    tx_index: Some(index),
                    tx_hash: Some(target.hash),
                };
                let trace = inspector
                    .get_result(Some(context), &tx, &env.block_env, &result, db)
                    .map_err(|e| TraceError::Replay(e.to_string()))?;
                traces.push((target.hash, trace));
            }
            if index < last {
                block
                    .execute(Arc::new(target.clone()))
                    .map_err(|e| TraceError::Replay(e.to_string()))?;
            }
        }
        Ok(traces)
    }

    /// Traces `request` executed as `eth_call` would execute it at `view`.
    pub fn trace_call(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        request: CallRequest,
        opts: GethDebugTracingOptions,
    ) -> Result<GethTrace, TraceError> {
        let inspector =
            DebugInspector::new(bounded(opts, 1)).map_err(|e| TraceError::Tracer(e.to_string()))?;
        let (env, tx, mut db) = self.prepare(view, attrs, request)?;
        let (result, mut inspector) = inspect(&mut db, env.clone(), tx.clone(), inspector, |p| {
            self.install_inference(p, attrs, crate::Purpose::Simulation)
        });
        let result = result.map_err(call::evm_error)?;
        inspector
            .get_result(None, &tx, &env.block_env, &result, &mut db)
            .map_err(|e| TraceError::Call(CallError::Internal(e.to_string())))
    }

    /// The access list `request` touches (sender, recipient and precompiles left out, as
    /// they are warm anyway) and the gas it uses with that list, as `eth_createAccessList`.
    ///
    /// The list is collected until it stops changing: a list makes the call cheaper, which
    /// can change the path it takes (a gas-dependent branch), as geth does.
    pub fn create_access_list(
        &self,
        view: Arc<StateView>,
        attrs: &BlockAttributes,
        request: CallRequest,
    ) -> Result<(AccessList, u64, Option<String>), CallError> {
        let mut request = request;
        let mut list = request.tx.access_list.clone().unwrap_or_default();
        // Each round adds the slots the previous list's run touched; a handful suffices in
        // practice, and the bound keeps a contract that keys on gas from looping us.
        for _ in 0..8 {
            request.tx.access_list = Some(list.clone());
            let (env, tx, mut db) = self.prepare(view.clone(), attrs, request.clone())?;
            let (result, inspector) = inspect(
                &mut db,
                env,
                tx,
                AccessListInspector::new(list.clone()),
                |p| self.install_inference(p, attrs, crate::Purpose::Simulation),
            );
            let result = result.map_err(call::evm_error)?.result;
            let found = inspector.into_access_list();
            if found == list {
                let gas = result.tx_gas_used();
                let error = match call::outcome(result) {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                return Ok((found, gas, error));
            }
            list = found;
        }
        Err(CallError::Invalid(
            "the access list did not settle: the call's path depends on its gas".into(),
        ))
    }
}

type Inspected<I, E> = (Result<ResultAndState, EVMError<E>>, I);

/// Executes `tx` on `db` under `inspector`, with Ethereum's precompiles as `precompiles`
/// leaves them (it adds inference's), committing nothing.
fn inspect<DB, I>(
    db: DB,
    env: EvmEnv,
    tx: TxEnv,
    inspector: I,
    precompiles: impl FnOnce(&mut PrecompilesMap),
) -> Inspected<I, DB::Error>
where
    DB: alloy_evm::Database,
    I: Inspector<EthEvmContext<DB>>,
{
    let mut evm = alloy_evm::EthEvmFactory::default().create_evm_with_inspector(db, env, inspector);
    precompiles(evm.precompiles_mut());
    let result = evm.transact(tx);
    (result, evm.into_inner().inspector)
}
