//! Traces (`debug_traceTransaction`, `debug_traceCall`, `debug_traceBlockByNumber` /
//! `ByHash`) and `eth_createAccessList`, with geth's tracers as revm-inspectors implements
//! them ([`pipe_executor::trace`]).
//!
//! A transaction of a block is traced on its parent's state with the block's own inference
//! results (its sidecar), so the trace is what the block ran, including the precompile
//! call's input (the request) and output (the `ModelOutput`). Like every historical read it
//! needs the parent's state: the recent blocks', or any block's in archive mode.

use std::sync::Arc;

use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{B256, U256};
use alloy_rpc_types_eth::{AccessListResult, TransactionRequest};
use alloy_rpc_types_trace::geth::{
    GethDebugTracingCallOptions, GethDebugTracingOptions, GethTrace, TraceResult,
};
use jsonrpsee::{core::async_trait, proc_macros::rpc};
use pipe_builder::replay::SidecarResults;
use pipe_executor::{
    BlockAttributes, InferenceProvider,
    trace::{InBlock, TraceError},
};
use pipe_primitives::SealedBlock;

use crate::{
    RpcError,
    error::RpcResult,
    eth::{Api, blocking, internal},
};

#[rpc(server, namespace = "debug")]
pub trait DebugApi {
    /// The trace of a mined transaction; the struct logger unless `opts` names a tracer.
    #[method(name = "traceTransaction")]
    async fn trace_transaction(
        &self,
        hash: B256,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<GethTrace>;
    /// The trace of a call executed as `eth_call` executes it.
    #[method(name = "traceCall")]
    async fn trace_call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        opts: Option<GethDebugTracingCallOptions>,
    ) -> RpcResult<GethTrace>;
    #[method(name = "traceBlockByNumber")]
    async fn trace_block_by_number(
        &self,
        number: BlockNumberOrTag,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<Vec<TraceResult>>;
    #[method(name = "traceBlockByHash")]
    async fn trace_block_by_hash(
        &self,
        hash: B256,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<Vec<TraceResult>>;
}

#[rpc(server, namespace = "eth")]
pub trait AccessListApi {
    /// The storage a call touches and the gas it uses with that list (EIP-2930).
    #[method(name = "createAccessList")]
    async fn create_access_list(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
    ) -> RpcResult<AccessListResult>;
}

impl From<TraceError> for RpcError {
    fn from(e: TraceError) -> Self {
        match e {
            TraceError::Tracer(m) => RpcError::InvalidParams(m),
            TraceError::Call(c) => RpcError::Call(c),
            TraceError::Replay(m) => RpcError::Internal(m),
        }
    }
}

impl Api {
    /// Traces block `number` (one transaction of it, or all) on its parent's state.
    async fn trace_mined(
        &self,
        number: u64,
        index: Option<usize>,
        opts: GethDebugTracingOptions,
    ) -> Result<Vec<(B256, GethTrace)>, RpcError> {
        if number == 0 {
            return Ok(Vec::new());
        }
        let block = self.block(number)?.ok_or(RpcError::UnknownBlock)?;
        let parent_state = self.state_at(Some(BlockId::number(number - 1)))?;
        let models = self.node.executor.inference_provider().cloned();
        let executor = self.node.executor.clone();
        let _turn = self.traces.acquire().await.map_err(internal)?;
        blocking(&self.node.tasks, move || {
            let block: Arc<SealedBlock> = block;
            let results = models.map(|m| {
                Arc::new(SidecarResults::new(block.sidecar.clone(), m))
                    as Arc<dyn InferenceProvider>
            });
            let at = InBlock {
                parent_state,
                attrs: BlockAttributes::of_block(&block),
                block_hash: block.hash,
                transactions: &block.transactions,
                index: index.unwrap_or_default(),
                results,
            };
            match index {
                Some(i) => {
                    let hash = block
                        .transactions
                        .get(i)
                        .map(|t| t.hash)
                        .unwrap_or_default();
                    executor
                        .trace_transaction(at, opts)
                        .map(|t| vec![(hash, t)])
                }
                None => executor.trace_block(at, opts),
            }
        })
        .await
    }

    async fn trace_block_at(
        &self,
        id: BlockId,
        opts: Option<GethDebugTracingOptions>,
    ) -> Result<Vec<TraceResult>, RpcError> {
        let number = self.resolve_id(Some(id))?;
        let traces = self
            .trace_mined(number, None, opts.unwrap_or_default())
            .await?;
        Ok(traces
            .into_iter()
            .map(|(hash, result)| TraceResult::Success {
                result,
                tx_hash: Some(hash),
            })
            .collect())
    }
}

#[async_trait]
impl DebugApiServer for Api {
    async fn trace_transaction(
        &self,
        hash: B256,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<GethTrace> {
        let (number, index) = self
            .node
            .store
            .transaction_location(&hash)
            .map_err(RpcError::from)?
            .ok_or_else(|| RpcError::InvalidParams(format!("transaction {hash} not found")))?;
        let mut traces = self
            .trace_mined(number, Some(index as usize), opts.unwrap_or_default())
            .await?;
        Ok(traces
            .pop()
            .map(|(_, t)| t)
            .ok_or_else(|| RpcError::Internal(format!("transaction {hash} was not traced")))?)
    }

    async fn trace_call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        opts: Option<GethDebugTracingCallOptions>,
    ) -> RpcResult<GethTrace> {
        let opts = opts.unwrap_or_default();
        if opts.block_overrides.is_some() {
            return Err(RpcError::InvalidParams(
                "block overrides are not supported by debug_traceCall here".into(),
            )
            .into());
        }
        let (view, attrs, req) = self.call_request(request, block, opts.state_overrides)?;
        let executor = self.node.executor.clone();
        let tracing = opts.tracing_options;
        let _turn = self.traces.acquire().await.map_err(internal)?;
        Ok(blocking(&self.node.tasks, move || {
            executor.trace_call(view, &attrs, req, tracing)
        })
        .await?)
    }

    async fn trace_block_by_number(
        &self,
        number: BlockNumberOrTag,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<Vec<TraceResult>> {
        Ok(self.trace_block_at(BlockId::Number(number), opts).await?)
    }

    async fn trace_block_by_hash(
        &self,
        hash: B256,
        opts: Option<GethDebugTracingOptions>,
    ) -> RpcResult<Vec<TraceResult>> {
        Ok(self.trace_block_at(BlockId::hash(hash), opts).await?)
    }
}

#[async_trait]
impl AccessListApiServer for Api {
    async fn create_access_list(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
    ) -> RpcResult<AccessListResult> {
        let (view, attrs, req) = self.call_request(request, block, None)?;
        let executor = self.node.executor.clone();
        let (access_list, gas, error) = blocking(&self.node.tasks, move || {
            executor.create_access_list(view, &attrs, req)
        })
        .await?;
        Ok(AccessListResult {
            access_list,
            gas_used: U256::from(gas),
            error,
        })
    }
}
