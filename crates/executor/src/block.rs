//! Executing the transactions of one block and turning the result into a sealed block.

use std::borrow::Cow;

use alloy_consensus::{
    EMPTY_OMMER_ROOT_HASH, Header, ReceiptEnvelope, TxReceipt,
    proofs::{calculate_receipt_root, calculate_transaction_root},
};
use alloy_eips::eip7685::EMPTY_REQUESTS_HASH;
use alloy_evm::{
    EthEvm, Evm, EvmFactory,
    block::{BlockExecutionError, BlockExecutor, BlockValidationError},
    eth::{EthBlockExecutionCtx, EthBlockExecutor, receipt_builder::AlloyReceiptBuilder},
    precompiles::PrecompilesMap,
};
use alloy_primitives::{Address, B256, Bloom, Bytes};
use alloy_trie::EMPTY_ROOT_HASH;
use pipe_primitives::{SealedBlock, StoredTx};
use pipe_storage::{AccountInfoChange, StateChanges, StateView};
use revm::{
    database::{State, WrapDatabaseRef, states::bundle_state::BundleRetention},
    inspector::NoOpInspector,
};

use crate::{ExecError, Executor, PipeSpec, StateDb, TxRejected};

type BlockDb = State<WrapDatabaseRef<StateDb>>;
type BlockEvm = EthEvm<BlockDb, NoOpInspector, PrecompilesMap>;
type Inner = EthBlockExecutor<'static, BlockEvm, PipeSpec, AlloyReceiptBuilder>;

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
    pub extra_data: Bytes,
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
    inner: Inner,
    attrs: BlockAttributes,
    transactions: Vec<StoredTx>,
}

impl std::fmt::Debug for BlockBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockBuilder")
            .field("number", &self.attrs.number)
            .field("transactions", &self.transactions.len())
            .finish()
    }
}

impl Executor {
    /// Starts a block on top of `view` (which must be the parent's state). Runs the
    /// pre-execution system calls (EIP-2935 block hashes, EIP-4788 beacon root).
    pub fn build_block(
        &self,
        view: StateView,
        attrs: BlockAttributes,
    ) -> Result<BlockBuilder, ExecError> {
        let db = State::builder()
            .with_database_ref(StateDb::new(view))
            .with_bundle_update()
            .build();
        let evm = self.factory.create_evm(db, self.evm_env(&attrs));
        let ctx = EthBlockExecutionCtx {
            parent_hash: attrs.parent_hash,
            // No beacon chain: the root is zero, as on dev chains of other clients.
            parent_beacon_block_root: Some(B256::ZERO),
            ommers: &[],
            withdrawals: Some(Cow::Owned(Vec::new())),
            extra_data: attrs.extra_data.clone(),
            tx_count_hint: None,
            slot_number: None,
        };
        let mut inner =
            EthBlockExecutor::new(evm, ctx, self.spec.clone(), AlloyReceiptBuilder::default());
        inner
            .apply_pre_execution_changes()
            .map_err(|e| ExecError::Block(e.to_string()))?;
        Ok(BlockBuilder {
            inner,
            attrs,
            transactions: Vec::new(),
        })
    }
}

impl BlockBuilder {
    pub fn attributes(&self) -> &BlockAttributes {
        &self.attrs
    }

    /// Gas used by the transactions kept so far.
    pub fn gas_used(&self) -> u64 {
        self.inner.cumulative_tx_gas_used
    }

    pub fn transaction_count(&self) -> usize {
        self.transactions.len()
    }

    /// Executes `tx` on top of the block so far and keeps it. A rejected transaction leaves
    /// the block exactly as it was.
    pub fn execute(&mut self, tx: &StoredTx) -> Result<ExecutedTx, TxRejected> {
        let recovered = alloy_consensus::transaction::Recovered::new_unchecked(&tx.tx, tx.sender);
        let output = self
            .inner
            .execute_transaction_without_commit(recovered)
            .map_err(|e| reject(tx.hash, e))?;
        let result = &output.result.result;
        let outcome = if result.is_success() {
            TxOutcome::Success
        } else if result.is_halt() {
            TxOutcome::Halted
        } else {
            TxOutcome::Reverted
        };
        let gas = self.inner.commit_transaction(output);
        self.transactions.push(tx.clone());
        Ok(ExecutedTx {
            gas_used: gas.tx_gas_used(),
            outcome,
        })
    }

    /// Runs the post-execution system calls, and returns the block with everything but its
    /// state root, plus the state changes the store hashes into that root.
    pub fn finish(self) -> Result<ExecutedBlock, ExecError> {
        let BlockBuilder {
            inner,
            attrs,
            transactions,
        } = self;
        let (evm, result) = inner
            .finish()
            .map_err(|e| ExecError::Block(e.to_string()))?;
        let mut db = evm.into_db();
        db.merge_transitions(BundleRetention::PlainState);
        let changes = bundle_to_changes(db.take_bundle());

        let receipts: Vec<ReceiptEnvelope> = result.receipts;
        let mut logs_bloom = Bloom::ZERO;
        for r in &receipts {
            logs_bloom.accrue_bloom(&r.bloom());
        }
        let envelopes: Vec<_> = transactions.iter().map(|t| t.tx.clone()).collect();
        let header = Header {
            parent_hash: attrs.parent_hash,
            ommers_hash: EMPTY_OMMER_ROOT_HASH,
            beneficiary: attrs.beneficiary,
            state_root: B256::ZERO,
            transactions_root: calculate_transaction_root(&envelopes),
            receipts_root: calculate_receipt_root(&receipts),
            logs_bloom,
            difficulty: Default::default(),
            number: attrs.number,
            gas_limit: attrs.gas_limit,
            gas_used: result.gas_used,
            timestamp: attrs.timestamp,
            extra_data: attrs.extra_data,
            mix_hash: attrs.prevrandao,
            nonce: Default::default(),
            base_fee_per_gas: Some(attrs.base_fee),
            withdrawals_root: Some(EMPTY_ROOT_HASH),
            blob_gas_used: Some(0),
            excess_blob_gas: Some(0),
            parent_beacon_block_root: Some(B256::ZERO),
            requests_hash: Some(if result.requests.is_empty() {
                EMPTY_REQUESTS_HASH
            } else {
                result.requests.requests_hash()
            }),
            ..Default::default()
        };
        Ok(ExecutedBlock {
            header,
            transactions,
            receipts,
            changes,
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
}

impl ExecutedBlock {
    /// Seals the block with its state root.
    pub fn seal(self, state_root: B256) -> SealedBlock {
        let mut header = self.header;
        header.state_root = state_root;
        SealedBlock::new(header, self.transactions, self.receipts)
    }
}

fn reject(hash: B256, e: BlockExecutionError) -> TxRejected {
    match e {
        BlockExecutionError::Validation(
            BlockValidationError::TransactionGasLimitMoreThanAvailableBlockGas {
                transaction_gas_limit,
                block_available_gas,
            },
        ) => TxRejected::BlockFull {
            tx_gas: transaction_gas_limit,
            available: block_available_gas,
        },
        BlockExecutionError::Validation(BlockValidationError::InvalidTx { error, .. }) => {
            TxRejected::Invalid {
                hash,
                reason: error.to_string(),
            }
        }
        other @ BlockExecutionError::Validation(_) => TxRejected::Invalid {
            hash,
            reason: other.to_string(),
        },
        BlockExecutionError::Internal(e) => TxRejected::Internal(e.to_string()),
    }
}

/// revm's bundle (what changed, with originals) → the store's change set.
pub(crate) fn bundle_to_changes(bundle: revm::database::BundleState) -> StateChanges {
    let mut changes = StateChanges::default();
    for (hash, code) in bundle.contracts {
        changes.code.push((hash, code.original_bytes()));
    }
    for (address, account) in bundle.state {
        if account.was_destroyed() {
            changes.wiped_storage.push(address);
        }
        if account.was_destroyed() || account.is_info_changed() {
            changes.accounts.push((
                address,
                account.info.as_ref().map(|i| AccountInfoChange {
                    nonce: i.nonce,
                    balance: i.balance,
                    code_hash: i.code_hash,
                }),
            ));
        }
        let slots: Vec<_> = account
            .storage
            .iter()
            .filter(|(_, s)| s.is_changed() || account.was_destroyed())
            .map(|(k, s)| (B256::from(*k), s.present_value))
            .collect();
        if !slots.is_empty() {
            changes.storage.push((address, slots));
        }
    }
    changes
}
