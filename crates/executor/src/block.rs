//! Executing the transactions of one block and turning the result into a sealed block.

use std::sync::Arc;

use alloy_consensus::{EMPTY_OMMER_ROOT_HASH, Header, ReceiptEnvelope, Transaction};
use alloy_eips::eip7685::{EMPTY_REQUESTS_HASH, Requests};
use alloy_evm::{
    EthEvm, Evm, EvmEnv, EvmFactory, FromRecoveredTx, block::SystemCaller,
    precompiles::PrecompilesMap,
};
use alloy_primitives::{Address, B256};
use alloy_trie::EMPTY_ROOT_HASH;
use pipe_primitives::{
    BlockTx, InferenceFields, InferenceResult, SealedBlock, Sidecar, StateEdit, StateEdits,
    StoredTx,
};
use pipe_storage::{AccountInfoChange, StateChanges, StateView};
use revm::{
    DatabaseCommit,
    context::{Cfg, TxEnv, result::EVMError},
    context_interface::result::ResultAndState,
    database::{AccountState, Cache, CacheDB},
    inspector::NoOpInspector,
};

use crate::{
    ExecError, Executor, InferenceProvider, PipeSpec, StateDb, TxRejected,
    assemble::{Assembler, Kept},
    attest::Attested,
    recorder::Recorder,
};

type BlockDb = CacheDB<StateDb>;
type BlockEvm = EthEvm<BlockDb, NoOpInspector, PrecompilesMap>;

/// What the block producer decides about the next block before executing anything.
#[derive(Clone, Debug)]
pub struct BlockAttributes {
    pub parent_hash: B256,
    pub number: u64,
    /// Seconds since the Unix epoch.
    pub timestamp: u64,
    pub beneficiary: Address,
    pub gas_limit: u64,
    pub base_fee: u64,
    pub prevrandao: B256,
    /// Gas per model cost unit the precompile charges in this block (a header field:
    /// [`pipe_primitives::header`]).
    pub inference_gas_price: u64,
    /// State edits applied before the transactions (dev chain only: [`StateEdits`]).
    pub edits: StateEdits,
}

impl BlockAttributes {
    /// The attributes a sealed block was built with, read off its header.
    pub fn of_header(header: &Header, hash_of_parent: B256) -> Self {
        Self {
            parent_hash: hash_of_parent,
            number: header.number,
            timestamp: header.timestamp,
            beneficiary: header.beneficiary,
            gas_limit: header.gas_limit,
            base_fee: header.base_fee_per_gas.unwrap_or_default(),
            prevrandao: header.mix_hash,
            inference_gas_price: InferenceFields::decode(&header.extra_data)
                .map(|f| f.gas_price)
                .unwrap_or_default(),
            edits: StateEdits::default(),
        }
    }

    /// The attributes `block` was built with: its header's, and the edits it carries.
    pub fn of_block(block: &SealedBlock) -> Self {
        Self {
            edits: block.edits.clone(),
            ..Self::of_header(&block.header, block.header.parent_hash)
        }
    }
}

/// How a transaction that made it into the block ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxOutcome {
    Success,
    Reverted,
    Halted,
}

/// A transaction executed and kept in the block.
#[derive(Clone, Copy, Debug)]
pub struct ExecutedTx {
    pub gas_used: u64,
    pub outcome: TxOutcome,
}

/// The block being built: transactions executed so far and the state they leave.
pub struct BlockBuilder {
    evm: BlockEvm,
    /// The system contract calls before and after the transactions (EIP-2935, EIP-4788,
    /// EIP-7002, EIP-7251), as Ethereum runs them.
    system: SystemCaller<PipeSpec>,
    attrs: BlockAttributes,
    /// Gas used by the transactions kept so far: the next receipt's cumulative gas.
    gas_used: u64,
    /// Transactions kept so far (they live in the assembler until the block is finished).
    kept: usize,
    /// Blooms, encodes and hashes kept transactions and receipts on another core.
    assembler: Assembler,
    /// Records each transaction's use of the inference precompile.
    recorder: Option<Arc<Recorder>>,
    /// The attestation check under the recorder: says why a result was withheld.
    attested: Option<Arc<Attested>>,
    /// Results used by the transactions kept so far: the block's sidecar.
    results: Vec<InferenceResult>,
    /// Cost units the kept transactions were charged for: the load that sets the next price.
    units: u64,
    /// Kept transactions sent without a signature (the dev chain's impersonation), in block
    /// order: listed in the block after its state edits.
    impersonated: Vec<StateEdit>,
    /// Whether this chain takes them at all ([`pipe_primitives::ChainConfig::dev_controls`]).
    dev_controls: bool,
}

impl std::fmt::Debug for BlockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBuilder")
            .field("number", &self.attrs.number)
            .field("transactions", &self.kept)
            .finish()
    }
}

impl Executor {
    /// Attributes of the block after `parent` if it were built at `now_ms`: timestamps
    /// strictly increase, even when blocks are sealed faster than one a second.
    pub fn next_attributes(
        &self,
        parent: &SealedBlock,
        now_ms: u64,
        beneficiary: Address,
    ) -> BlockAttributes {
        let p = &parent.header;
        let base_fee = self.next_base_fee(p);
        BlockAttributes {
            parent_hash: parent.hash,
            number: p.number + 1,
            timestamp: (now_ms / 1000).max(p.timestamp.saturating_add(1)),
            beneficiary,
            gas_limit: self.config.gas_limit,
            base_fee,
            // No beacon chain: derive the randomness from the parent so it is deterministic.
            prevrandao: alloy_primitives::keccak256(parent.hash),
            inference_gas_price: self.next_inference_gas_price(p),
            edits: StateEdits::default(),
        }
    }

    /// The base fee of the block after `parent` (EIP-1559): what admission, priority and the
    /// block itself use, computed in this one place.
    pub fn next_base_fee(&self, parent: &Header) -> u64 {
        parent
            .next_block_base_fee(self.config.base_fee_params())
            .unwrap_or_else(|| self.config.genesis_base_fee())
    }

    /// The inference gas price of the block after `parent`.
    pub fn next_inference_gas_price(&self, parent: &Header) -> u64 {
        let fields = InferenceFields::decode(&parent.extra_data).ok();
        self.config.inference_pricing.next_price(fields.as_ref())
    }

    /// Starts a block on top of `view` (which must be the parent's state), answering
    /// inference inline from the executor's own provider.
    pub fn build_block(
        &self,
        view: impl Into<Arc<StateView>>,
        attrs: BlockAttributes,
    ) -> Result<BlockBuilder, ExecError> {
        self.build_block_with(view, attrs, self.inference.clone())
    }

    /// Starts a block on top of `view` (which must be the parent's state), answering
    /// inference from `source` (PIPE's results, a sidecar in replay; `None`: no precompile).
    /// Runs the pre-execution system calls (EIP-2935 block hashes, EIP-4788 beacon root).
    pub fn build_block_with(
        &self,
        view: impl Into<Arc<StateView>>,
        attrs: BlockAttributes,
        source: Option<Arc<dyn InferenceProvider>>,
    ) -> Result<BlockBuilder, ExecError> {
        // A plain cache over the snapshot: we keep no reverts (recent history is served from
        // store snapshots), so revm's `State` transition and bundle bookkeeping, most of the
        // executor's overhead over bare revm, buys nothing here. The change set is read off
        // the cache when the block is finished.
        let view = view.into();
        // Every answer passes the TEE rule on the parent state before a transaction sees it.
        let attested =
            source.map(|s| Arc::new(Attested::new(s, view.clone(), self.enclave.clone())));
        let db = CacheDB::new(StateDb::new(view));
        let mut evm = self.factory.create_evm(db, self.evm_env(&attrs));
        let recorder = attested
            .clone()
            .map(|a| Arc::new(Recorder::new(a as Arc<dyn InferenceProvider>)));
        if let Some(r) = &recorder {
            crate::inference::install(
                evm.precompiles_mut(),
                r.clone(),
                self.inference_gas(&attrs),
                crate::Purpose::Block,
            );
        }
        let mut system = SystemCaller::new(self.spec.clone());
        system
            .apply_blockhashes_contract_call(attrs.parent_hash, &mut evm)
            .map_err(|e| ExecError::Block(e.to_string()))?;
        // No beacon chain: the root is zero, as on dev chains of other clients.
        system
            .apply_beacon_root_contract_call(Some(B256::ZERO), &mut evm)
            .map_err(|e| ExecError::Block(e.to_string()))?;
        if !attrs.edits.is_empty() && !self.config.dev_controls {
            return Err(ExecError::Block(
                "state edits are for the dev chain only".into(),
            ));
        }
        apply_edits(evm.db_mut(), &attrs.edits)?;
        Ok(BlockBuilder {
            evm,
            system,
            attrs,
            gas_used: 0,
            kept: 0,
            assembler: self.assembler.start(),
            recorder,
            attested,
            results: Vec::new(),
            units: 0,
            impersonated: Vec::new(),
            dev_controls: self.config.dev_controls,
        })
    }
}

impl BlockBuilder {
    pub fn attributes(&self) -> &BlockAttributes {
        &self.attrs
    }

    /// The state after the transactions kept so far, the block's environment and what
    /// answers its inference requests: what a tracer re-runs the next transaction on.
    /// Whether this chain takes unsigned (impersonated) transactions.
    pub(crate) fn dev_controls(&self) -> bool {
        self.dev_controls
    }

    pub(crate) fn parts(&mut self) -> (&mut BlockDb, EvmEnv, Option<Arc<Recorder>>) {
        let env = EvmEnv {
            cfg_env: self.evm.cfg_env().clone(),
            block_env: self.evm.block().clone(),
        };
        (self.evm.db_mut(), env, self.recorder.clone())
    }

    /// Gas used by the transactions kept so far.
    pub fn gas_used(&self) -> u64 {
        self.gas_used
    }

    pub fn transaction_count(&self) -> usize {
        self.kept
    }

    /// Executes `tx` on top of the block so far and keeps it. A rejected transaction leaves
    /// the block exactly as it was; one that asked for an inference result the source does
    /// not have is rejected as [`TxRejected::MissingResult`].
    ///
    /// The transaction is taken shared: a kept one moves on to the assembler thread with its
    /// logs, and nothing else is copied on this thread.
    pub fn execute(&mut self, tx: Arc<dyn BlockTx>) -> Result<ExecutedTx, TxRejected> {
        let stored = tx.stored();
        let hash = stored.hash;
        let unsigned_sender = (pipe_primitives::edits::impersonated_sender(&stored.tx)
            == Some(stored.sender))
        .then_some(stored.sender);
        if unsigned_sender.is_some() && !waives_eip3607(stored, self.dev_controls) {
            return Err(TxRejected::Invalid {
                hash,
                reason: "an unsigned (impersonated) transaction: the dev chain's only".into(),
            });
        }
        // EIP-7825: a transaction's gas limit above the cap is invalid anyway (revm says so);
        // counting the cap keeps such a transaction from being reported as not fitting.
        let needed = stored
            .tx
            .gas_limit()
            .min(self.evm.cfg_env().tx_gas_limit_cap());
        let available = self.attrs.gas_limit.saturating_sub(self.gas_used);
        if needed > available {
            return Err(TxRejected::BlockFull {
                tx_gas: stored.tx.gas_limit(),
                available,
            });
        }
        let tx_type = stored.tx.tx_type();
        self.evm.ctx_mut().cfg.disable_eip3607 = waives_eip3607(stored, self.dev_controls);
        let executed = self
            .evm
            .transact_raw(TxEnv::from_recovered_tx(&stored.tx, stored.sender));
        let record = self.recorder.as_ref().map(|r| r.take()).unwrap_or_default();
        if let Some(call) = record.missing {
            if let Some(reason) = self.attested.as_ref().and_then(|a| a.refusal(&call.key)) {
                return Err(TxRejected::Unattested {
                    hash,
                    call: Box::new(call),
                    reason,
                });
            }
            return Err(TxRejected::MissingResult {
                hash,
                call: Box::new(call),
            });
        }
        let ResultAndState { result, state } = executed.map_err(|e| reject(hash, e))?;
        self.results.extend(record.used);
        self.units = self.units.saturating_add(record.units);
        let outcome = if result.is_success() {
            TxOutcome::Success
        } else if result.is_halt() {
            TxOutcome::Halted
        } else {
            TxOutcome::Reverted
        };
        let gas_used = result.tx_gas_used();
        self.evm.db_mut().commit(state);
        self.gas_used += gas_used;
        self.assembler.push(Kept {
            tx,
            tx_type,
            success: outcome == TxOutcome::Success,
            cumulative_gas_used: self.gas_used,
            logs: result.into_logs(),
        });
        self.kept += 1;
        if let Some(address) = unsigned_sender {
            self.impersonated
                .push(StateEdit::Impersonated { address, tx: hash });
        }
        Ok(ExecutedTx { gas_used, outcome })
    }

    /// Runs the post-execution system calls, and returns the block with everything but its
    /// state root, plus the state changes the store hashes into that root.
    pub fn finish(self) -> Result<ExecutedBlock, ExecError> {
        let BlockBuilder {
            mut evm,
            mut system,
            attrs,
            gas_used,
            mut assembler,
            results,
            units,
            impersonated,
            ..
        } = self;
        let edits = attrs.edits.with_senders(impersonated);
        // The assembler finishes the tries while this thread finishes the state.
        assembler.close();
        let sidecar = Sidecar::new(results);
        // EIP-7685 requests: the withdrawal and consolidation queues. Deposits would come from
        // the logs of a deposit contract, which this chain does not have ([`PipeSpec`]); and
        // with no withdrawals and no block reward after the merge, no balance changes either.
        let mut requests = Requests::default();
        system
            .append_post_execution_changes(&mut evm, &mut requests)
            .map_err(|e| ExecError::Block(e.to_string()))?;
        let changes = cache_to_changes(&evm.into_db().cache);
        let assembled = assembler.finish();
        let header = Header {
            parent_hash: attrs.parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: attrs.beneficiary,
            state_root: B256::ZERO,
            transactions_root: assembled.transactions_root,
            receipts_root: assembled.receipts_root,
            logs_bloom: assembled.logs_bloom,
            difficulty: Default::default(),
            number: attrs.number,
            gas_limit: attrs.gas_limit,
            gas_used,
            timestamp: attrs.timestamp,
            // The inference price, the load and the results (see `pipe_primitives::header`).
            extra_data: InferenceFields {
                gas_price: attrs.inference_gas_price,
                units,
                results_root: sidecar.commitment(),
                edits_root: edits.commitment(),
            }
            .encode(),
            mix_hash: attrs.prevrandao,
            nonce: Default::default(),
            base_fee_per_gas: Some(attrs.base_fee),
            withdrawals_root: Some(EMPTY_ROOT_HASH),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: Some(if requests.is_empty() {
                EMPTY_REQUESTS_HASH
            } else {
                requests.requests_hash()
            }),
            ..Default::default()
        };
        Ok(ExecutedBlock {
            header,
            transactions: assembled.transactions,
            receipts: assembled.receipts,
            changes,
            sidecar,
            edits,
        })
    }
}

/// A block executed but not yet sealed: the state root comes from the store, which applies
/// `changes` and hashes the result.
#[derive(Debug)]
pub struct ExecutedBlock {
    pub header: Header,
    pub transactions: Vec<StoredTx>,
    pub receipts: Vec<ReceiptEnvelope>,
    pub changes: StateChanges,
    /// The inference results the kept transactions used.
    pub sidecar: Sidecar,
    /// The state edits applied before the transactions.
    pub edits: StateEdits,
}

impl ExecutedBlock {
    /// Seals the block with its state root.
    pub fn seal(self, state_root: B256) -> SealedBlock {
        let mut header = self.header;
        header.state_root = state_root;
        SealedBlock::new(header, self.transactions, self.receipts)
            .with_sidecar(self.sidecar)
            .with_edits(self.edits)
    }
}

/// Whether `tx` is sent unsigned by an impersonated sender on a chain that allows it: then
/// EIP-3607 is waived for it (anvil lets an impersonated contract send), and for it only.
/// Every path that runs block transactions (building, replay, traces, PIPE's simulation) asks
/// this, so none of them disagrees.
pub(crate) fn waives_eip3607(tx: &StoredTx, dev_controls: bool) -> bool {
    dev_controls && pipe_primitives::edits::impersonated_sender(&tx.tx) == Some(tx.sender)
}

/// Applies the dev chain's state edits to the block's state, in order. Each edited account is
/// marked changed (created when it did not exist, storage included), so the block's change
/// set carries it; a deletion leaves it non-existent with no storage, as a self-destruct does.
fn apply_edits(db: &mut BlockDb, edits: &StateEdits) -> Result<(), ExecError> {
    let mut stored_into = Vec::new();
    for edit in edits.edits() {
        if let StateEdit::Storage { address, value, .. } = edit
            && !value.is_zero()
        {
            stored_into.push(*address);
        }
        let address = edit.address();
        if let StateEdit::Code { code, .. } = edit {
            // Edits are checked when made; a malformed EIP-7702 designator from elsewhere is
            // an error here, not revm's panic.
            let bytecode = revm::bytecode::Bytecode::new_raw_checked(code.clone())
                .map_err(|e| ExecError::Block(format!("code for {address}: {e:?}")))?;
            let account = db
                .load_account(address)
                .map_err(|e| ExecError::Storage(e.0))?;
            account.info.code_hash = if code.is_empty() {
                revm::primitives::KECCAK_EMPTY
            } else {
                bytecode.hash_slow()
            };
            account.info.code = Some(bytecode.clone());
            if !code.is_empty() {
                db.cache.contracts.insert(bytecode.hash_slow(), bytecode);
            }
        }
        let account = db
            .load_account(address)
            .map_err(|e| ExecError::Storage(e.0))?;
        match edit {
            StateEdit::Balance { balance, .. } => account.info.balance = *balance,
            StateEdit::Nonce { nonce, .. } => account.info.nonce = *nonce,
            StateEdit::Code { .. } => {}
            StateEdit::Storage { slot, value, .. } => {
                account.storage.insert((*slot).into(), *value);
            }
            // Says who sent a transaction; changes nothing.
            StateEdit::Impersonated { .. } => continue,
            StateEdit::Delete { .. } => {
                account.info = Default::default();
                account.storage.clear();
                account.account_state = AccountState::NotExisting;
                continue;
            }
        }
        account.account_state = match account.account_state {
            // Did not exist (or was deleted by an earlier edit): created, with no old storage.
            AccountState::NotExisting | AccountState::StorageCleared => {
                AccountState::StorageCleared
            }
            AccountState::None | AccountState::Touched => AccountState::Touched,
        };
    }
    // EIP-161 removes an account left empty (no nonce, balance or code) with its storage: a
    // slot written into one would vanish, so such an edit is refused rather than lost.
    for address in stored_into {
        if let Some(account) = db.cache.accounts.get(&address)
            && account.info.is_empty()
        {
            return Err(ExecError::Block(format!(
                "storage set on {address}, an empty account (no nonce, balance or code), would \
                 be removed with it: give it a balance, nonce or code first"
            )));
        }
    }
    Ok(())
}

/// revm's verdict on a transaction → why the block did not take it. A transaction revm finds
/// invalid (nonce, balance, fee, intrinsic gas, ...) is the transaction's fault; anything else
/// (the state could not be read, a broken block environment) is the node's.
fn reject<E: std::fmt::Display>(hash: B256, e: EVMError<E>) -> TxRejected {
    match e {
        EVMError::Transaction(error) => TxRejected::Invalid {
            hash,
            reason: error.to_string(),
        },
        other => TxRejected::Internal(other.to_string()),
    }
}

/// The block's cache → the store's change set: every account the block modified, with its
/// present values. The cache keeps no originals, so a modified account's slots that were only
/// read are written again with the value they had, which the store treats as a no-op.
pub(crate) fn cache_to_changes(cache: &Cache) -> StateChanges {
    let mut changes = StateChanges::default();
    for (address, account) in &cache.accounts {
        let info = &account.info;
        match account.account_state {
            // Only read.
            AccountState::None => continue,
            // Self-destructed (or read and found missing, where deleting changes nothing).
            AccountState::NotExisting => {
                changes.wiped_storage.push(*address);
                changes.accounts.push((*address, None));
                continue;
            }
            // Created (or re-created) in this block: nothing of its old storage survives.
            AccountState::StorageCleared => changes.wiped_storage.push(*address),
            AccountState::Touched => {}
        }
        if info.is_empty() {
            // EIP-161: a touched account left empty is removed from the state.
            changes.accounts.push((*address, None));
            continue;
        }
        changes.accounts.push((
            *address,
            Some(AccountInfoChange {
                nonce: info.nonce,
                balance: info.balance,
                code_hash: info.code_hash,
            }),
        ));
        if !info.is_empty_code_hash()
            && let Some(code) = cache.contracts.get(&info.code_hash)
        {
            changes.code.push((info.code_hash, code.original_bytes()));
        }
        if !account.storage.is_empty() {
            changes.storage.push((
                *address,
                account
                    .storage
                    .iter()
                    .map(|(k, v)| (B256::from(*k), *v))
                    .collect(),
            ));
        }
    }
    changes
}
