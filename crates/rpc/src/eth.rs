//! The method handlers.

use std::sync::Arc;

use alloy_consensus::Transaction as _;
use alloy_eips::{BlockId, BlockNumberOrTag};
use alloy_primitives::{Address, B256, Bytes, U64, U256};
use alloy_rpc_types_eth::{
    Block, FeeHistory, Filter, FilterBlockOption, Log, Transaction, TransactionRequest,
    state::StateOverride,
};
use jsonrpsee::{
    PendingSubscriptionSink, SubscriptionMessage,
    core::{SubscriptionResult, async_trait},
    proc_macros::rpc,
};
use pipe_executor::{BlockAttributes, CallRequest};
use pipe_mempool::{AdmitError, SenderState};
use pipe_primitives::SealedBlock;
use pipe_storage::StateView;

use crate::{
    MAX_FEE_HISTORY, MAX_LOG_RANGE, MAX_LOGS, NodeHandle, RpcError,
    convert::{self, RpcReceipt},
    error::RpcResult,
};

/// Tip suggested by `eth_maxPriorityFeePerGas` and added to the base fee by `eth_gasPrice`.
pub(crate) const SUGGESTED_TIP: u64 = 1_000_000_000;

#[rpc(server, namespace = "eth")]
pub trait EthApi {
    #[method(name = "chainId")]
    fn chain_id(&self) -> RpcResult<U64>;
    #[method(name = "blockNumber")]
    fn block_number(&self) -> RpcResult<U64>;
    #[method(name = "syncing")]
    fn syncing(&self) -> RpcResult<bool>;
    /// The eth wire protocol version, as anvil answers it: the JSON number 1 (pipe speaks no
    /// devp2p, so there is no real version to give).
    #[method(name = "protocolVersion")]
    fn protocol_version(&self) -> RpcResult<u64>;
    #[method(name = "accounts")]
    fn accounts(&self) -> RpcResult<Vec<Address>>;
    #[method(name = "gasPrice")]
    fn gas_price(&self) -> RpcResult<U256>;
    #[method(name = "maxPriorityFeePerGas")]
    fn max_priority_fee_per_gas(&self) -> RpcResult<U256>;
    #[method(name = "feeHistory")]
    fn fee_history(
        &self,
        block_count: U64,
        newest_block: BlockNumberOrTag,
        reward_percentiles: Option<Vec<f64>>,
    ) -> RpcResult<FeeHistory>;
    #[method(name = "getBalance")]
    fn balance(&self, address: Address, block: Option<BlockId>) -> RpcResult<U256>;
    #[method(name = "getTransactionCount")]
    fn transaction_count(&self, address: Address, block: Option<BlockId>) -> RpcResult<U64>;
    #[method(name = "getCode")]
    fn code(&self, address: Address, block: Option<BlockId>) -> RpcResult<Bytes>;
    #[method(name = "getStorageAt")]
    fn storage_at(&self, address: Address, slot: U256, block: Option<BlockId>) -> RpcResult<B256>;
    #[method(name = "call")]
    async fn call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<StateOverride>,
    ) -> RpcResult<Bytes>;
    #[method(name = "estimateGas")]
    async fn estimate_gas(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<StateOverride>,
    ) -> RpcResult<U64>;
    #[method(name = "sendRawTransaction")]
    async fn send_raw_transaction(&self, raw: Bytes) -> RpcResult<B256>;
    #[method(name = "getTransactionByHash")]
    fn transaction_by_hash(&self, hash: B256) -> RpcResult<Option<Transaction>>;
    #[method(name = "getTransactionReceipt")]
    fn transaction_receipt(&self, hash: B256) -> RpcResult<Option<RpcReceipt>>;
    #[method(name = "getBlockByNumber")]
    fn block_by_number(&self, number: BlockNumberOrTag, full: bool) -> RpcResult<Option<Block>>;
    #[method(name = "getBlockByHash")]
    fn block_by_hash(&self, hash: B256, full: bool) -> RpcResult<Option<Block>>;
    #[method(name = "getBlockTransactionCountByNumber")]
    fn block_transaction_count_by_number(&self, number: BlockNumberOrTag)
    -> RpcResult<Option<U64>>;
    #[method(name = "getBlockTransactionCountByHash")]
    fn block_transaction_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>>;
    #[method(name = "getBlockReceipts")]
    fn block_receipts(&self, block: BlockId) -> RpcResult<Option<Vec<RpcReceipt>>>;
    #[method(name = "getTransactionByBlockNumberAndIndex")]
    fn transaction_by_block_number_and_index(
        &self,
        number: BlockNumberOrTag,
        index: alloy_rpc_types_eth::Index,
    ) -> RpcResult<Option<Transaction>>;
    #[method(name = "getTransactionByBlockHashAndIndex")]
    fn transaction_by_block_hash_and_index(
        &self,
        hash: B256,
        index: alloy_rpc_types_eth::Index,
    ) -> RpcResult<Option<Transaction>>;
    /// No uncles on this chain: 0 for a known block, null for an unknown one.
    #[method(name = "getUncleCountByBlockNumber")]
    fn uncle_count_by_block_number(&self, number: BlockNumberOrTag) -> RpcResult<Option<U64>>;
    #[method(name = "getUncleCountByBlockHash")]
    fn uncle_count_by_block_hash(&self, hash: B256) -> RpcResult<Option<U64>>;
    /// The beneficiary of the blocks this node builds.
    #[method(name = "coinbase")]
    fn coinbase(&self) -> RpcResult<Address>;
    /// No blob transactions here: the minimum blob base fee, as for a chain whose blocks
    /// carry no blobs (anvil answers the same).
    #[method(name = "blobBaseFee")]
    fn blob_base_fee(&self) -> RpcResult<U64>;
    #[method(name = "getLogs")]
    fn logs(&self, filter: Filter) -> RpcResult<Vec<Log>>;
    /// Installs a log filter; its id (16 random bytes as a hex quantity, as geth's).
    #[method(name = "newFilter")]
    fn new_filter(&self, filter: Filter) -> RpcResult<String>;
    #[method(name = "newBlockFilter")]
    fn new_block_filter(&self) -> RpcResult<String>;
    #[method(name = "newPendingTransactionFilter")]
    fn new_pending_transaction_filter(&self) -> RpcResult<String>;
    /// What the filter saw since its last poll: block hashes, transaction hashes or logs.
    #[method(name = "getFilterChanges")]
    fn filter_changes(&self, id: String) -> RpcResult<serde_json::Value>;
    /// Every log a log filter matches over its whole range.
    #[method(name = "getFilterLogs")]
    fn filter_logs(&self, id: String) -> RpcResult<Vec<Log>>;
    #[method(name = "uninstallFilter")]
    fn uninstall_filter(&self, id: String) -> RpcResult<bool>;
    /// `eth_subscribe` over WebSocket: `newHeads`, `logs` (with an optional `{address,
    /// topics}` filter) and `newPendingTransactions` (hashes).
    #[subscription(name = "subscribe" => "subscription", unsubscribe = "unsubscribe", item = serde_json::Value)]
    async fn subscribe(
        &self,
        kind: String,
        params: Option<serde_json::Value>,
    ) -> SubscriptionResult;
}

#[rpc(server, namespace = "net")]
pub trait NetApi {
    #[method(name = "version")]
    fn version(&self) -> RpcResult<String>;
    #[method(name = "listening")]
    fn listening(&self) -> RpcResult<bool>;
}

#[rpc(server, namespace = "web3")]
pub trait Web3Api {
    #[method(name = "clientVersion")]
    fn client_version(&self) -> RpcResult<String>;
    #[method(name = "sha3")]
    fn sha3(&self, data: Bytes) -> RpcResult<B256>;
}

/// The handlers' shared state.
#[derive(Clone)]
pub(crate) struct Api {
    pub(crate) node: Arc<NodeHandle>,
    filters: Arc<crate::filters::Filters>,
    feed: Arc<crate::filters::PendingFeed>,
    /// Traces run one at a time: each may hold a bounded but large recording, and a free
    /// `debug_traceCall` must not be multiplied into many at once.
    pub(crate) traces: Arc<tokio::sync::Semaphore>,
}

impl Api {
    /// The handlers over `node`; starts hearing the pool's arrivals (pending filters and
    /// subscriptions).
    pub(crate) fn new(node: NodeHandle) -> Self {
        let filters = Arc::new(crate::filters::Filters::default());
        let feed = Arc::new(crate::filters::PendingFeed::new(filters.clone()));
        node.pool.add_listener(feed.clone());
        Self {
            node: Arc::new(node),
            filters,
            feed,
            traces: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// Logs matching `filter` over the blocks after `after` up to the head (and within the
    /// filter's own range); `None` when there are no such blocks yet.
    fn new_logs(&self, filter: &Filter, after: u64, head: u64) -> Result<Vec<Log>, RpcError> {
        let (from, to) = match &filter.block_option {
            FilterBlockOption::AtBlockHash(_) => return Ok(Vec::new()),
            FilterBlockOption::Range {
                from_block,
                to_block,
            } => {
                let lo = match from_block {
                    Some(BlockNumberOrTag::Number(n)) => (*n).max(after + 1),
                    _ => after + 1,
                };
                let hi = match to_block {
                    Some(BlockNumberOrTag::Number(n)) => (*n).min(head),
                    _ => head,
                };
                (lo, hi)
            }
        };
        if from > to {
            return Ok(Vec::new());
        }
        // At most the last MAX_LOG_RANGE blocks: a filter polled rarely sees the newest.
        let from = from.max(to.saturating_sub(MAX_LOG_RANGE - 1));
        self.logs_matching(&filter.clone().from_block(from).to_block(to))
    }

    pub(crate) fn head(&self) -> Arc<SealedBlock> {
        self.node.head.borrow().clone()
    }

    /// The block number a tag or number names, or `UnknownBlock` past the head.
    fn resolve_number(&self, tag: BlockNumberOrTag) -> Result<u64, RpcError> {
        let head = self.head().number();
        let n = match tag {
            BlockNumberOrTag::Earliest => 0,
            BlockNumberOrTag::Number(n) => n,
            // No consensus finality on the dev chain: everything sealed is final.
            _ => head,
        };
        if n > head {
            return Err(RpcError::UnknownBlock);
        }
        Ok(n)
    }

    pub(crate) fn resolve_id(&self, id: Option<BlockId>) -> Result<u64, RpcError> {
        match id {
            None => Ok(self.head().number()),
            Some(BlockId::Number(tag)) => self.resolve_number(tag),
            Some(BlockId::Hash(h)) => self
                .node
                .store
                .block_number(&h.block_hash)?
                .ok_or(RpcError::UnknownBlock),
        }
    }

    /// State as of block `id`: the head, or one of the recent blocks the store keeps.
    pub(crate) fn state_at(&self, id: Option<BlockId>) -> Result<Arc<StateView>, RpcError> {
        let n = self.resolve_id(id)?;
        let view = self.node.store.state()?;
        if n == view.head {
            return Ok(Arc::new(view));
        }
        self.node
            .store
            .state_at(n)
            .ok_or(RpcError::HistoricalState(n))
    }

    /// Block `number`; the head is served from memory without a copy.
    pub(crate) fn block(&self, number: u64) -> Result<Option<Arc<SealedBlock>>, RpcError> {
        let head = self.head();
        if head.number() == number {
            return Ok(Some(head));
        }
        Ok(self.node.store.block(number)?.map(Arc::new))
    }

    fn block_by_id(&self, id: BlockId) -> Result<Option<Arc<SealedBlock>>, RpcError> {
        match self.resolve_id(Some(id)) {
            Ok(n) => self.block(n),
            Err(RpcError::UnknownBlock) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Block environment for calls at `view`'s head: the head block's own header values, as
    /// geth and anvil use for `eth_call` at "latest"; but inference is charged at the price of
    /// the block after it, the one a transaction sent now pays, so `eth_estimateGas` covers it.
    fn call_attributes(&self, view: &StateView) -> Result<BlockAttributes, RpcError> {
        let head = self.block(view.head)?.ok_or(RpcError::UnknownBlock)?;
        let h = &head.header;
        Ok(BlockAttributes {
            parent_hash: h.parent_hash,
            number: h.number,
            timestamp: h.timestamp,
            beneficiary: h.beneficiary,
            gas_limit: h.gas_limit,
            base_fee: h.base_fee_per_gas.unwrap_or_default(),
            prevrandao: h.mix_hash,
            inference_gas_price: self.node.executor.next_inference_gas_price(h),
            edits: Default::default(),
        })
    }

    pub(crate) fn next_base_fee(&self) -> u64 {
        self.node.executor.next_base_fee(&self.head().header)
    }

    pub(crate) fn call_request(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        overrides: Option<StateOverride>,
    ) -> Result<(Arc<StateView>, BlockAttributes, CallRequest), RpcError> {
        let view = self.state_at(block)?;
        let attrs = self.call_attributes(&view)?;
        Ok((
            view,
            attrs,
            CallRequest {
                tx: request,
                overrides,
            },
        ))
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> RpcError {
    RpcError::Internal(e.to_string())
}

/// Runs EVM work off the async workers (as a task of the node's, so shutdown waits for it)
/// and maps its error at this edge.
pub(crate) async fn blocking<T: Send + 'static, E: Into<RpcError> + Send + 'static>(
    tasks: &pipe_primitives::Tasks,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, RpcError> {
    tasks
        .blocking(f)
        .await
        .map_err(internal)?
        .map_err(Into::into)
}

#[async_trait]
impl EthApiServer for Api {
    fn chain_id(&self) -> RpcResult<U64> {
        Ok(U64::from(self.node.executor.config().chain_id))
    }

    fn block_number(&self) -> RpcResult<U64> {
        Ok(U64::from(self.head().number()))
    }

    fn protocol_version(&self) -> RpcResult<u64> {
        Ok(1)
    }

    fn syncing(&self) -> RpcResult<bool> {
        Ok(false)
    }

    fn accounts(&self) -> RpcResult<Vec<Address>> {
        Ok(self.node.accounts.clone())
    }

    fn gas_price(&self) -> RpcResult<U256> {
        Ok(U256::from(self.next_base_fee()) + U256::from(SUGGESTED_TIP))
    }

    fn max_priority_fee_per_gas(&self) -> RpcResult<U256> {
        Ok(U256::from(SUGGESTED_TIP))
    }

    fn fee_history(
        &self,
        block_count: U64,
        newest_block: BlockNumberOrTag,
        reward_percentiles: Option<Vec<f64>>,
    ) -> RpcResult<FeeHistory> {
        let count = block_count.to::<u64>();
        if count == 0 {
            return Ok(FeeHistory::default());
        }
        if count > MAX_FEE_HISTORY {
            return Err(RpcError::LimitExceeded(format!(
                "block count {count} exceeds the limit of {MAX_FEE_HISTORY}"
            ))
            .into());
        }
        if let Some(p) = &reward_percentiles {
            let sorted = p.windows(2).all(|w| w[0] <= w[1]);
            if !sorted || p.iter().any(|x| !(0.0..=100.0).contains(x)) {
                return Err(RpcError::InvalidParams(
                    "invalid reward percentiles: must be ascending values in [0, 100]".into(),
                )
                .into());
            }
        }
        let newest = self.resolve_number(newest_block)?;
        let oldest = newest.saturating_sub(count - 1);
        let mut history = FeeHistory {
            oldest_block: oldest,
            ..Default::default()
        };
        let mut rewards = Vec::new();
        let mut last = None;
        for n in oldest..=newest {
            let b = self.block(n)?.ok_or(RpcError::UnknownBlock)?;
            let h = &b.header;
            history
                .base_fee_per_gas
                .push(h.base_fee_per_gas.unwrap_or_default() as u128);
            history
                .gas_used_ratio
                .push(h.gas_used as f64 / h.gas_limit.max(1) as f64);
            history.base_fee_per_blob_gas.push(1);
            history.blob_gas_used_ratio.push(0.0);
            if let Some(p) = &reward_percentiles {
                rewards.push(block_rewards(&b, p));
            }
            last = Some(b);
        }
        if let Some(b) = last {
            let next = self.node.executor.next_base_fee(&b.header);
            history.base_fee_per_gas.push(next as u128);
            history.base_fee_per_blob_gas.push(1);
        }
        if reward_percentiles.is_some() {
            history.reward = Some(rewards);
        }
        Ok(history)
    }

    fn balance(&self, address: Address, block: Option<BlockId>) -> RpcResult<U256> {
        let view = self.state_at(block)?;
        Ok(view
            .account(&address)
            .map_err(RpcError::from)?
            .map(|a| a.balance)
            .unwrap_or_default())
    }

    fn transaction_count(&self, address: Address, block: Option<BlockId>) -> RpcResult<U64> {
        let pending = matches!(block, Some(BlockId::Number(BlockNumberOrTag::Pending)));
        let view = self.state_at(block)?;
        let nonce = view
            .account(&address)
            .map_err(RpcError::from)?
            .map(|a| a.nonce)
            .unwrap_or_default();
        Ok(U64::from(if pending {
            self.node.pool.pending_nonce(&address, nonce)
        } else {
            nonce
        }))
    }

    fn code(&self, address: Address, block: Option<BlockId>) -> RpcResult<Bytes> {
        let view = self.state_at(block)?;
        let Some(account) = view.account(&address).map_err(RpcError::from)? else {
            return Ok(Bytes::new());
        };
        Ok(view
            .code(&account.code_hash)
            .map_err(RpcError::from)?
            .unwrap_or_default())
    }

    fn storage_at(&self, address: Address, slot: U256, block: Option<BlockId>) -> RpcResult<B256> {
        let view = self.state_at(block)?;
        let value = view
            .storage(&address, &B256::from(slot))
            .map_err(RpcError::from)?;
        Ok(B256::from(value))
    }

    async fn call(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<StateOverride>,
    ) -> RpcResult<Bytes> {
        let (view, attrs, req) = self.call_request(request, block, state_overrides)?;
        let executor = self.node.executor.clone();
        Ok(
            blocking(&self.node.tasks, move || executor.call(view, &attrs, req))
                .await?
                .output,
        )
    }

    async fn estimate_gas(
        &self,
        request: TransactionRequest,
        block: Option<BlockId>,
        state_overrides: Option<StateOverride>,
    ) -> RpcResult<U64> {
        let (view, attrs, req) = self.call_request(request, block, state_overrides)?;
        let executor = self.node.executor.clone();
        let gas = blocking(&self.node.tasks, move || {
            executor.estimate_gas(view, &attrs, req)
        })
        .await?;
        Ok(U64::from(gas))
    }

    async fn send_raw_transaction(&self, raw: Bytes) -> RpcResult<B256> {
        if let Some(leader) = &self.node.follows {
            return Err(RpcError::Unsupported(format!(
                "this node follows {leader} and builds no blocks: send transactions to {leader}"
            ))
            .into());
        }
        self.check_inference(raw.as_ref()).await?;
        let store = &self.node.store;
        let hash = self
            .node
            .pool
            .submit(raw.as_ref(), self.next_base_fee(), |sender| {
                let account = store.account(sender)?.unwrap_or_default();
                Ok::<_, pipe_storage::StoreError>(SenderState {
                    nonce: account.nonce,
                    balance: account.balance,
                })
            })
            .await
            .map_err(|e| match e {
                AdmitError::Undecodable(e) => {
                    RpcError::InvalidParams(format!("failed to decode signed transaction: {e}"))
                }
                AdmitError::Pool(e) => RpcError::from(e),
                AdmitError::State(e) => RpcError::from(e),
                AdmitError::Persist(e) => {
                    RpcError::Internal(format!("transaction not accepted: {e}"))
                }
            })?;
        Ok(hash)
    }

    fn transaction_by_hash(&self, hash: B256) -> RpcResult<Option<Transaction>> {
        if let Some(tx) = self.node.pool.get(&hash) {
            return Ok(Some(convert::pending_transaction(&tx.stored)));
        }
        let Some((number, index)) = self
            .node
            .store
            .transaction_location(&hash)
            .map_err(RpcError::from)?
        else {
            return Ok(None);
        };
        let b = self.block(number)?.ok_or(RpcError::UnknownBlock)?;
        Ok(Some(convert::transaction_in_block(&b, index as usize)))
    }

    fn transaction_receipt(&self, hash: B256) -> RpcResult<Option<RpcReceipt>> {
        let Some((number, index)) = self
            .node
            .store
            .transaction_location(&hash)
            .map_err(RpcError::from)?
        else {
            return Ok(None);
        };
        let b = self.block(number)?.ok_or(RpcError::UnknownBlock)?;
        Ok(Some(convert::receipt(&b, index as usize)))
    }

    fn block_by_number(&self, number: BlockNumberOrTag, full: bool) -> RpcResult<Option<Block>> {
        Ok(self
            .block_by_id(BlockId::Number(number))?
            .map(|b| convert::block(&b, full)))
    }

    fn block_by_hash(&self, hash: B256, full: bool) -> RpcResult<Option<Block>> {
        Ok(self
            .block_by_id(BlockId::from(hash))?
            .map(|b| convert::block(&b, full)))
    }

    fn block_transaction_count_by_number(
        &self,
        number: BlockNumberOrTag,
    ) -> RpcResult<Option<U64>> {
        Ok(self
            .block_by_id(BlockId::Number(number))?
            .map(|b| U64::from(b.transactions.len())))
    }

    fn block_transaction_count_by_hash(&self, hash: B256) -> RpcResult<Option<U64>> {
        Ok(self
            .block_by_id(BlockId::from(hash))?
            .map(|b| U64::from(b.transactions.len())))
    }

    fn block_receipts(&self, block: BlockId) -> RpcResult<Option<Vec<RpcReceipt>>> {
        Ok(self.block_by_id(block)?.map(|b| {
            (0..b.transactions.len())
                .map(|i| convert::receipt(&b, i))
                .collect()
        }))
    }

    fn transaction_by_block_number_and_index(
        &self,
        number: BlockNumberOrTag,
        index: alloy_rpc_types_eth::Index,
    ) -> RpcResult<Option<Transaction>> {
        Ok(self
            .block_by_id(BlockId::Number(number))?
            .filter(|b| usize::from(index) < b.transactions.len())
            .map(|b| convert::transaction_in_block(&b, index.into())))
    }

    fn transaction_by_block_hash_and_index(
        &self,
        hash: B256,
        index: alloy_rpc_types_eth::Index,
    ) -> RpcResult<Option<Transaction>> {
        Ok(self
            .block_by_id(BlockId::from(hash))?
            .filter(|b| usize::from(index) < b.transactions.len())
            .map(|b| convert::transaction_in_block(&b, index.into())))
    }

    fn uncle_count_by_block_number(&self, number: BlockNumberOrTag) -> RpcResult<Option<U64>> {
        Ok(self
            .block_by_id(BlockId::Number(number))?
            .map(|_| U64::ZERO))
    }

    fn uncle_count_by_block_hash(&self, hash: B256) -> RpcResult<Option<U64>> {
        Ok(self.block_by_id(BlockId::from(hash))?.map(|_| U64::ZERO))
    }

    fn coinbase(&self) -> RpcResult<Address> {
        Ok(self.head().header.beneficiary)
    }

    fn blob_base_fee(&self) -> RpcResult<U64> {
        Ok(U64::from(1))
    }

    fn logs(&self, filter: Filter) -> RpcResult<Vec<Log>> {
        Ok(self.logs_matching(&filter)?)
    }

    fn new_filter(&self, filter: Filter) -> RpcResult<String> {
        let after = self.head().number();
        Ok(self.filters.install(crate::filters::Kind::Logs {
            filter: Box::new(filter),
            after,
        }))
    }

    fn new_block_filter(&self) -> RpcResult<String> {
        let after = self.head().number();
        Ok(self.filters.install(crate::filters::Kind::Blocks { after }))
    }

    fn new_pending_transaction_filter(&self) -> RpcResult<String> {
        Ok(self.filters.install(crate::filters::Kind::Pending {
            hashes: Default::default(),
        }))
    }

    fn filter_changes(&self, id: String) -> RpcResult<serde_json::Value> {
        use crate::filters::Kind;
        let head = self.head().number();
        // Take what the poll needs under the filters' lock; read blocks after it.
        enum Changes {
            Blocks(u64),
            Logs(Box<Filter>, u64),
            Hashes(Vec<B256>),
        }
        let changes = self
            .filters
            .poll(&id, |kind| match kind {
                Kind::Blocks { after } => {
                    let from = *after;
                    *after = head.max(*after);
                    Changes::Blocks(from)
                }
                Kind::Logs { filter, after } => {
                    let from = *after;
                    *after = head.max(*after);
                    Changes::Logs(filter.clone(), from)
                }
                Kind::Pending { hashes } => Changes::Hashes(hashes.drain(..).collect()),
            })
            .ok_or_else(|| RpcError::Unsupported("filter not found".into()))?;
        let value = match changes {
            Changes::Blocks(after) => {
                let from = (after + 1).max(head.saturating_sub(MAX_LOG_RANGE - 1));
                let mut hashes = Vec::new();
                for n in from..=head {
                    if let Some(h) = self.node.store.header(n).map_err(RpcError::from)? {
                        hashes.push(h.hash_slow());
                    }
                }
                serde_json::to_value(hashes)
            }
            Changes::Logs(filter, after) => {
                serde_json::to_value(self.new_logs(&filter, after, head)?)
            }
            Changes::Hashes(hashes) => serde_json::to_value(hashes),
        };
        Ok(value.map_err(|e| RpcError::Internal(e.to_string()))?)
    }

    fn filter_logs(&self, id: String) -> RpcResult<Vec<Log>> {
        let filter = self
            .filters
            .poll(&id, |kind| match kind {
                crate::filters::Kind::Logs { filter, .. } => Some((**filter).clone()),
                _ => None,
            })
            .flatten()
            .ok_or_else(|| RpcError::Unsupported("filter not found".into()))?;
        Ok(self.logs_matching(&filter)?)
    }

    fn uninstall_filter(&self, id: String) -> RpcResult<bool> {
        Ok(self.filters.uninstall(&id))
    }

    async fn subscribe(
        &self,
        pending: PendingSubscriptionSink,
        kind: String,
        params: Option<serde_json::Value>,
    ) -> SubscriptionResult {
        let reject =
            |why: String| jsonrpsee::types::ErrorObjectOwned::owned(-32602, why, None::<()>);
        let logs_filter = match (kind.as_str(), params) {
            ("newHeads" | "newPendingTransactions", None) => None,
            ("logs", None) => Some(Filter::default()),
            ("logs", Some(p)) => match serde_json::from_value::<Filter>(p) {
                Ok(f) => Some(f),
                Err(e) => {
                    pending
                        .reject(reject(format!("invalid logs filter: {e}")))
                        .await;
                    return Ok(());
                }
            },
            ("newHeads" | "newPendingTransactions", Some(_)) => {
                pending
                    .reject(reject(format!("{kind} takes no parameters")))
                    .await;
                return Ok(());
            }
            _ => {
                pending
                    .reject(reject(format!(
                        "unsupported subscription: {kind} (supported: newHeads, logs, newPendingTransactions)"
                    )))
                    .await;
                return Ok(());
            }
        };
        let sink = pending.accept().await?;
        let mut head = self.node.head.clone();
        let mut shutdown = self.node.shutdown.clone();
        head.mark_unchanged();
        if kind == "newPendingTransactions" {
            let mut arrivals = self.feed.subscribers.subscribe();
            self.node.tasks.spawn(async move {
                loop {
                    let hash = tokio::select! {
                        next = arrivals.recv() => match next {
                            Ok(h) => h,
                            // Too slow a reader misses some, as with geth; it goes on.
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                            Err(_) => return,
                        },
                        _ = sink.closed() => return,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    };
                    let Ok(raw) = serde_json::value::to_raw_value(&hash) else {
                        return;
                    };
                    if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                        return;
                    }
                }
            });
            return Ok(());
        }
        let api = self.clone();
        // A task of the node's own, holding only the head and the sink (not the store), so
        // shutdown waits for it and it ends at shutdown even if the client stays connected.
        self.node.tasks.spawn(async move {
            let mut seen = head.borrow().number();
            loop {
                tokio::select! {
                    changed = head.changed() => {
                        if changed.is_err() {
                            return;
                        }
                    }
                    _ = sink.closed() => return,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let block = head.borrow_and_update().clone();
                let messages: Vec<Box<serde_json::value::RawValue>> = match &logs_filter {
                    None => {
                        let header = convert::block(&block, false).header;
                        serde_json::value::to_raw_value(&header)
                            .into_iter()
                            .collect()
                    }
                    // Every log of the blocks since the last one sent, one per notification.
                    Some(filter) => match api.new_logs(filter, seen, block.number()) {
                        Ok(logs) => logs
                            .iter()
                            .filter_map(|l| serde_json::value::to_raw_value(l).ok())
                            .collect(),
                        Err(e) => {
                            tracing::debug!(target: "pipe::rpc", error = %e, "logs subscription");
                            Vec::new()
                        }
                    },
                };
                seen = seen.max(block.number());
                for raw in messages {
                    if sink.send(SubscriptionMessage::from(raw)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(())
    }
}

impl Api {
    /// Logs matching `filter` over its block range (`eth_getLogs`, filters, subscriptions).
    fn logs_matching(&self, filter: &Filter) -> Result<Vec<Log>, RpcError> {
        let (from, to) = match &filter.block_option {
            FilterBlockOption::AtBlockHash(h) => {
                let n = self
                    .node
                    .store
                    .block_number(h)
                    .map_err(RpcError::from)?
                    .ok_or(RpcError::UnknownBlock)?;
                (n, n)
            }
            FilterBlockOption::Range {
                from_block,
                to_block,
            } => {
                let head = self.head().number();
                let resolve = |t: Option<BlockNumberOrTag>| match t {
                    None => Ok(head),
                    // A range may reach past the head: it just finds nothing there.
                    Some(BlockNumberOrTag::Number(n)) => Ok(n.min(head)),
                    Some(t) => self.resolve_number(t),
                };
                (resolve(*from_block)?, resolve(*to_block)?)
            }
        };
        if from > to {
            return Err(RpcError::InvalidParams("invalid block range params".into()));
        }
        if to - from >= MAX_LOG_RANGE {
            return Err(RpcError::LimitExceeded(format!(
                "block range {} exceeds the limit of {MAX_LOG_RANGE} blocks",
                to - from + 1
            )));
        }
        let mut out = Vec::new();
        for n in from..=to {
            let Some(header) = self.node.store.header(n).map_err(RpcError::from)? else {
                break;
            };
            if !filter.matches_bloom(header.logs_bloom) {
                continue;
            }
            let b = self.block(n)?.ok_or(RpcError::UnknownBlock)?;
            out.extend(
                convert::block_logs(&b)
                    .into_iter()
                    .filter(|l| filter.matches(&l.inner)),
            );
            if out.len() > MAX_LOGS {
                return Err(RpcError::LimitExceeded(format!(
                    "query returned more than {MAX_LOGS} results"
                )));
            }
        }
        Ok(out)
    }
}

/// Effective tips at the given gas-weighted percentiles of a block (geth's method).
fn block_rewards(b: &SealedBlock, percentiles: &[f64]) -> Vec<u128> {
    let base_fee = b.header.base_fee_per_gas.unwrap_or_default();
    let mut txs: Vec<(u128, u64)> = Vec::with_capacity(b.transactions.len());
    let mut previous = 0;
    for (t, r) in b.transactions.iter().zip(&b.receipts) {
        let used = r.cumulative_gas_used() - previous;
        previous = r.cumulative_gas_used();
        txs.push((
            t.tx.effective_tip_per_gas(base_fee).unwrap_or_default(),
            used,
        ));
    }
    if txs.is_empty() {
        return vec![0; percentiles.len()];
    }
    txs.sort_unstable_by_key(|(tip, _)| *tip);
    let total: u64 = txs.iter().map(|(_, g)| g).sum();
    percentiles
        .iter()
        .map(|p| {
            let threshold = (total as f64 * p / 100.0) as u64;
            let mut acc = 0;
            for (tip, gas) in &txs {
                acc += gas;
                if acc >= threshold {
                    return *tip;
                }
            }
            txs.last().map(|(t, _)| *t).unwrap_or_default()
        })
        .collect()
}

impl NetApiServer for Api {
    fn version(&self) -> RpcResult<String> {
        Ok(self.node.executor.config().chain_id.to_string())
    }

    fn listening(&self) -> RpcResult<bool> {
        Ok(true)
    }
}

impl Web3ApiServer for Api {
    fn client_version(&self) -> RpcResult<String> {
        Ok(self.node.client_version.clone())
    }

    fn sha3(&self, data: Bytes) -> RpcResult<B256> {
        Ok(alloy_primitives::keccak256(&data))
    }
}

/// The `txpool_` namespace, as geth answers it: what is pending (executable) and queued
/// (behind a nonce gap), by sender and nonce.
#[rpc(server, namespace = "txpool")]
pub trait TxpoolApi {
    /// `{"pending": "0x…", "queued": "0x…"}`.
    #[method(name = "status")]
    fn status(&self) -> RpcResult<serde_json::Value>;
    /// `{"pending": {sender: {nonce: transaction}}, "queued": {…}}`.
    #[method(name = "content")]
    fn content(&self) -> RpcResult<serde_json::Value>;
    /// As `content`, each transaction summarised as geth does:
    /// `"0xTo: 1 wei + 21000 gas × 2000000000 wei"`.
    #[method(name = "inspect")]
    fn inspect(&self) -> RpcResult<serde_json::Value>;
}

/// `{sender: {nonce: f(tx)}}` for `txs`, nonces in decimal. Addresses in lowercase hex, as
/// anvil writes them (geth checksums them; clients accept either).
fn by_sender_and_nonce(
    txs: &[std::sync::Arc<pipe_mempool::PoolTx>],
    f: impl Fn(&pipe_mempool::PoolTx) -> serde_json::Value,
) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for tx in txs {
        let entry = out
            .entry(format!("{:#x}", tx.sender()))
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let serde_json::Value::Object(m) = entry {
            m.insert(tx.nonce().to_string(), f(tx));
        }
    }
    serde_json::Value::Object(out)
}

impl TxpoolApiServer for Api {
    fn status(&self) -> RpcResult<serde_json::Value> {
        let (pending, queued) = self.node.pool.content();
        Ok(serde_json::json!({
            "pending": format!("{:#x}", pending.len()),
            "queued": format!("{:#x}", queued.len()),
        }))
    }

    fn content(&self) -> RpcResult<serde_json::Value> {
        let (pending, queued) = self.node.pool.content();
        let tx = |t: &pipe_mempool::PoolTx| {
            serde_json::to_value(convert::pending_transaction(&t.stored)).unwrap_or_default()
        };
        Ok(serde_json::json!({
            "pending": by_sender_and_nonce(&pending, tx),
            "queued": by_sender_and_nonce(&queued, tx),
        }))
    }

    fn inspect(&self) -> RpcResult<serde_json::Value> {
        use alloy_consensus::Transaction as _;
        let (pending, queued) = self.node.pool.content();
        let summary = |t: &pipe_mempool::PoolTx| {
            let tx = &t.stored.tx;
            let to = match tx.to() {
                Some(to) => format!("{to:#x}"),
                None => "contract creation".to_string(),
            };
            serde_json::Value::String(format!(
                "{to}: {} wei + {} gas × {} wei",
                tx.value(),
                tx.gas_limit(),
                tx.max_fee_per_gas()
            ))
        };
        Ok(serde_json::json!({
            "pending": by_sender_and_nonce(&pending, summary),
            "queued": by_sender_and_nonce(&queued, summary),
        }))
    }
}
