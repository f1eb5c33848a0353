//! Execution: revm over a snapshot of the redb state, with a block loop of our own.
//!
//! - [`StateDb`] adapts a [`pipe_storage::StateView`] to revm's `DatabaseRef`. A block runs on
//!   a plain `CacheDB` over it; at the end of the block the cache is turned into
//!   [`pipe_storage::StateChanges`] for the store to apply and hash. No reverts are kept
//!   (recent history is served from store snapshots), so revm's `State` bookkeeping would buy
//!   nothing.
//! - [`BlockBuilder`] executes transactions one by one against the block being built. Each
//!   transaction is executed without committing first, so the caller decides to keep it or
//!   leave it out (the PIPE builder will leave out a transaction whose inference result went
//!   stale); an invalid transaction never poisons the block. The loop is revm's `transact`
//!   plus gas bookkeeping; the system calls before and after the block are alloy-evm's
//!   `SystemCaller`, as Ethereum runs them. Receipts, blooms and the transaction and receipt
//!   roots are built on another core while the block executes (`assemble`), hashing the
//!   tries' leaves eight at a time where the CPU allows (`keccak8`, `ordered_trie`).
//! - [`Executor::call`] and [`Executor::estimate_gas`] serve `eth_call` / `eth_estimateGas`
//!   on a throw-away overlay.
//! - [`Executor::trace_transaction`], [`Executor::trace_call`] and
//!   [`Executor::create_access_list`] run revm-inspectors' tracers where the traced execution
//!   happened ([`trace`]).
//! - [`Executor::simulate`] is PIPE's discovery: a sender's pending transactions in order, on
//!   an overlay, stopping at the first inference request without a result.
//! - Inference is answered through an [`InferenceProvider`]; blocks and simulations wrap it in
//!   a [`Recorder`], which is how a block collects its sidecar and how a missing result is
//!   told apart from an invalid transaction.
//!
//! The chain runs the Osaka hardfork from genesis (every earlier fork active at block 0).

mod admission;
mod assemble;
pub mod attest;
mod block;
mod call;
mod db;
mod error;
pub mod inference;
mod keccak8;
mod ordered_trie;
mod recorder;
mod simulate;
mod spec;
pub mod trace;

pub use admission::InferenceRefusal;
pub use block::{BlockAttributes, BlockBuilder, ExecutedBlock, ExecutedTx, TxOutcome};
pub use call::{CallOutcome, CallRequest};
pub use db::StateDb;
pub use error::{CallError, ExecError, TxRejected};
pub use inference::{
    INFERENCE_PRECOMPILE, InferenceCall, InferenceFailure, InferenceGas, InferenceProvider,
    Purpose, failure_result, output_result,
};
pub use recorder::{Recorder, TxInference};
pub use simulate::SimOutcome;
pub use spec::{HARDFORK, PipeSpec};

use std::sync::Arc;

use alloy_evm::{EthEvmFactory, EvmEnv};
use pipe_primitives::ChainConfig;
use revm::{
    context::{BlockEnv, CfgEnv},
    context_interface::block::BlobExcessGasAndPrice,
    primitives::hardfork::SpecId,
};

/// Builds EVMs for this chain. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Executor {
    pub(crate) config: Arc<ChainConfig>,
    pub(crate) spec: PipeSpec,
    pub(crate) factory: EthEvmFactory,
    /// Assembles roots and receipts of the blocks this executor builds, on another core.
    pub(crate) assembler: assemble::AssemblerThread,
    /// What answers the inference precompile; without one, 0x…F4 is an empty account.
    pub(crate) inference: Option<Arc<dyn InferenceProvider>>,
    pub(crate) inference_gas: InferenceGas,
    /// The pluggable enclave verification of TEE workers ([`attest::EnclaveCheck`]).
    pub(crate) enclave: Arc<dyn attest::EnclaveCheck>,
}

impl Executor {
    pub fn new(config: Arc<ChainConfig>) -> Self {
        Self {
            config,
            spec: PipeSpec::default(),
            factory: EthEvmFactory::default(),
            assembler: assemble::AssemblerThread::spawn(),
            inference: None,
            inference_gas: InferenceGas::default(),
            enclave: Arc::new(attest::RegistryTrust),
        }
    }

    /// Checks TEE workers with `enclave` on top of the registry.
    pub fn with_enclave_check(mut self, enclave: Arc<dyn attest::EnclaveCheck>) -> Self {
        self.enclave = enclave;
        self
    }

    /// The enclave check TEE results pass.
    pub fn enclave_check(&self) -> &Arc<dyn attest::EnclaveCheck> {
        &self.enclave
    }

    /// Serves the inference precompile from `provider`, charging by `gas` (whose per-unit
    /// price each block replaces with its own: [`BlockAttributes::inference_gas_price`]).
    pub fn with_inference(
        mut self,
        provider: Arc<dyn InferenceProvider>,
        gas: InferenceGas,
    ) -> Self {
        self.inference = Some(provider);
        self.inference_gas = gas;
        self
    }

    /// The precompile's gas schedule in a block with `attrs`.
    pub fn inference_gas(&self, attrs: &BlockAttributes) -> InferenceGas {
        InferenceGas {
            per_unit: attrs.inference_gas_price,
            ..self.inference_gas
        }
    }

    /// Adds the inference precompile to an EVM about to run in a block with `attrs`.
    pub(crate) fn install_inference(
        &self,
        precompiles: &mut alloy_evm::precompiles::PrecompilesMap,
        attrs: &BlockAttributes,
        purpose: Purpose,
    ) {
        if let Some(provider) = &self.inference {
            inference::install(
                precompiles,
                provider.clone(),
                self.inference_gas(attrs),
                purpose,
            );
        }
    }

    /// What answers the inference precompile (model metadata for a sidecar's answers).
    pub fn inference_provider(&self) -> Option<&Arc<dyn InferenceProvider>> {
        self.inference.as_ref()
    }

    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The EVM environment of a block with these attributes.
    pub fn evm_env(&self, attrs: &BlockAttributes) -> EvmEnv {
        let mut cfg = CfgEnv::new_with_spec(SpecId::OSAKA);
        cfg.chain_id = self.config.chain_id;
        let block = BlockEnv {
            number: alloy_primitives::U256::from(attrs.number),
            beneficiary: attrs.beneficiary,
            timestamp: alloy_primitives::U256::from(attrs.timestamp),
            gas_limit: attrs.gas_limit,
            basefee: attrs.base_fee,
            difficulty: alloy_primitives::U256::ZERO,
            prevrandao: Some(attrs.prevrandao),
            // No blob transactions are accepted, so excess blob gas stays zero.
            blob_excess_gas_and_price: Some(BlobExcessGasAndPrice::new(
                0,
                alloy_eips::eip7840::BlobParams::osaka().update_fraction as u64,
            )),
            ..Default::default()
        };
        EvmEnv {
            cfg_env: cfg,
            block_env: block,
        }
    }
}

/// The gas a transaction needs before executing any code: the intrinsic cost, or the EIP-7623
/// calldata floor when that is higher. A transaction with a lower gas limit can never run.
pub fn intrinsic_gas(tx: &alloy_consensus::TxEnvelope, sender: alloy_primitives::Address) -> u64 {
    use alloy_evm::FromRecoveredTx;
    let env = revm::context::TxEnv::from_recovered_tx(tx, sender);
    let gas = revm::context_interface::cfg::gas::calculate_initial_tx_gas_for_tx(
        env,
        SpecId::OSAKA,
        None,
    );
    (gas.initial_regular_gas + gas.initial_state_gas).max(gas.floor_gas)
}

/// Largest gas limit one transaction may have (EIP-7825, active since Osaka).
pub const TX_GAS_LIMIT_CAP: u64 = 1 << 24;
