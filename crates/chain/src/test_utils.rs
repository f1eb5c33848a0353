//! The shared test kit (feature `test-utils`): a chain on a temporary store with genesis and
//! funded signers, a signed-transaction factory, model providers (one that knows no models, one
//! answering from a table), a table-driven gate standing in for PIPE, and inference calldata.
//! Other crates' tests take it as a dev-dependency with the feature on.

use std::{path::PathBuf, sync::Arc};

use alloy_consensus::{SignableTransaction, TxEip1559, TxEnvelope};
use alloy_eips::Encodable2718;
use alloy_primitives::{Address, B256, Bytes, TxKind, U256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use pipe_executor::{Executor, InferenceCall, InferenceProvider, Purpose};
use pipe_mempool::{Pool, PoolConfig, SenderState};
use pipe_primitives::{ChainConfig, InferenceResult, ModelId, ModelMeta, SealedBlock};
use pipe_storage::Store;

use crate::Chain;

/// Each test signer's balance: 1000 ETH.
pub const TEST_BALANCE: u128 = 1_000 * 10u128.pow(18);

/// A dev chain on a store in a temporary directory, with `signers` funded at genesis.
pub struct TestChain {
    pub dir: tempfile::TempDir,
    pub config: Arc<ChainConfig>,
    pub store: Arc<Store>,
    pub executor: Executor,
    pub signers: Vec<PrivateKeySigner>,
    pub genesis: SealedBlock,
}

/// Test signer `i`: a fixed key, so two test chains fund the same accounts.
pub fn signer(i: usize) -> PrivateKeySigner {
    PrivateKeySigner::from_bytes(&B256::from(U256::from(i as u64 + 1))).expect("valid key")
}

impl TestChain {
    /// A fresh chain with `accounts` funded signers. Two chains made with the same number of
    /// accounts have the same genesis.
    pub fn new(accounts: usize) -> Self {
        let signers: Vec<_> = (0..accounts).map(signer).collect();
        let config = Arc::new(ChainConfig::dev(
            signers.iter().map(|s| s.address()),
            U256::from(TEST_BALANCE),
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(Store::open(&Self::db_path(&dir)).expect("store opens"));
        let genesis = crate::genesis::init(&store, &config).expect("genesis");
        Self {
            dir,
            executor: Executor::new(config.clone()),
            config,
            store,
            signers,
            genesis,
        }
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("chain.redb")
    }

    /// The chain over this store (the store's head taken as finalized), without a pool.
    pub fn chain(&self) -> Chain {
        Chain::new(
            self.store.clone(),
            self.executor.clone(),
            Arc::new(NoModels),
        )
        .expect("chain opens")
    }

    /// Drops this process's handle on the store and opens it again, as a restart after a
    /// crash would: whatever was only in memory is gone. Every other holder of the old
    /// handle (a [`Chain`] made from it) must have been dropped first.
    pub fn reopen(&mut self) {
        let path = Self::db_path(&self.dir);
        let old = std::mem::replace(
            &mut self.store,
            Arc::new(Store::open(&self.dir.path().join("scratch.redb")).expect("scratch")),
        );
        assert_eq!(
            Arc::strong_count(&old),
            1,
            "the store is still held elsewhere"
        );
        drop(old);
        self.store = Arc::new(Store::open(&path).expect("store reopens"));
    }

    /// A pool for this chain.
    pub fn pool(&self) -> Arc<Pool> {
        Arc::new(Pool::new(PoolConfig::new(
            self.config.chain_id,
            self.config.gas_limit,
        )))
    }

    /// A transaction factory for signer `i`, starting at nonce 0.
    pub fn factory(&self, i: usize) -> TxFactory {
        TxFactory {
            signer: self.signers[i].clone(),
            chain_id: self.config.chain_id,
            nonce: 0,
        }
    }
}

/// Adds `tx` to `pool`, validated against the finalized state in `store`.
pub fn add_to_pool(pool: &Pool, store: &Store, tx: TxEnvelope) -> B256 {
    let raw = tx.encoded_2718();
    let sender = pool
        .check_stateless(&tx, raw.len())
        .expect("stateless checks pass");
    let account = store
        .account(&sender)
        .expect("account read")
        .unwrap_or_default();
    let state = SenderState {
        nonce: account.nonce,
        balance: account.balance,
    };
    let hash = *tx.tx_hash();
    // The factory's fee cap (100 gwei) is far above any base fee these tests reach.
    pool.add(tx, sender, state, 0).expect("the pool accepts it");
    hash
}

/// Signs EIP-1559 transactions for one signer, counting nonces.
#[derive(Clone, Debug)]
pub struct TxFactory {
    pub signer: PrivateKeySigner,
    pub chain_id: u64,
    pub nonce: u64,
}

/// Gas limit of the factory's transactions: enough for a small deployment.
pub const TX_GAS: u64 = 300_000;

impl TxFactory {
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// A transaction to `to` (a creation when `None`) with `value` and `input`, at the next
    /// nonce.
    pub fn tx(&mut self, to: Option<Address>, value: U256, input: Bytes) -> TxEnvelope {
        self.tx_with_gas(to, value, input, TX_GAS)
    }

    /// As [`TxFactory::tx`], with gas limit `gas_limit`.
    pub fn tx_with_gas(
        &mut self,
        to: Option<Address>,
        value: U256,
        input: Bytes,
        gas_limit: u64,
    ) -> TxEnvelope {
        let tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce: self.nonce,
            gas_limit,
            max_fee_per_gas: 100_000_000_000,
            max_priority_fee_per_gas: 1_000_000_000,
            to: to.map_or(TxKind::Create, TxKind::Call),
            value,
            access_list: Default::default(),
            input,
        };
        self.nonce += 1;
        let sig = self
            .signer
            .sign_hash_sync(&tx.signature_hash())
            .expect("signs");
        TxEnvelope::Eip1559(tx.into_signed(sig))
    }

    pub fn transfer(&mut self, to: Address, value: U256) -> TxEnvelope {
        self.tx(Some(to), value, Bytes::new())
    }

    /// Deploys `runtime` with a minimal constructor that returns it; also returns the new
    /// contract's address.
    pub fn deploy(&mut self, runtime: &[u8]) -> (TxEnvelope, Address) {
        let address = self.address().create(self.nonce);
        (self.tx(None, U256::ZERO, init_code(runtime)), address)
    }
}

/// A constructor that returns `runtime` as the contract's code.
pub fn init_code(runtime: &[u8]) -> Bytes {
    let len = u8::try_from(runtime.len()).expect("runtime under 256 bytes");
    // PUSH1 len PUSH1 12 PUSH1 0 CODECOPY PUSH1 len PUSH1 0 RETURN, then the runtime.
    let mut code = vec![
        0x60, len, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, len, 0x60, 0x00, 0xf3,
    ];
    code.extend_from_slice(runtime);
    code.into()
}

/// Runtime of a contract that stores calldata word 1 at the slot in calldata word 0 (zero
/// deletes the slot).
pub const STORE_RUNTIME: &[u8] = &[0x60, 0x20, 0x35, 0x60, 0x00, 0x35, 0x55, 0x00];

/// Runtime of a contract that stores `blockhash(number - 1)` in slot 0: what makes a block's
/// state depend on its parent's hash.
pub const BLOCKHASH_RUNTIME: &[u8] = &[0x43, 0x60, 0x01, 0x90, 0x03, 0x40, 0x60, 0x00, 0x55, 0x00];

/// Init code that self-destructs to the caller: with a value, an account created and deleted
/// in one transaction (EIP-6780).
pub const SELFDESTRUCT_INIT: &[u8] = &[0x33, 0xff];

/// Calldata for [`STORE_RUNTIME`]: write `value` at `slot`.
pub fn store_call(slot: u64, value: U256) -> Bytes {
    let mut data = B256::from(U256::from(slot)).to_vec();
    data.extend_from_slice(B256::from(value).as_slice());
    data.into()
}

/// Knows no models: for chains whose blocks make no inference calls.
#[derive(Debug)]
pub struct NoModels;

impl InferenceProvider for NoModels {
    fn model(&self, _: &ModelId) -> Option<ModelMeta> {
        None
    }

    fn infer(&self, _: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        None
    }
}

/// A model for inference tests: one float input `x` of shape `[1, 1]`, 4 decimals, 10 cost
/// units. Only its metadata exists; answers come from a [`TableModels`].
pub fn test_model() -> ModelMeta {
    use pipe_primitives::inference::{DType, IoSpec};
    ModelMeta {
        id: ModelId::of(b"pipe test model"),
        name: "test".into(),
        size_bytes: 15,
        inputs: vec![IoSpec {
            name: "x".into(),
            dtype: DType::Float32,
            shape: vec![Some(1), Some(1)],
        }],
        outputs: vec![],
        decimals: 4,
        cost_units: 10,
        operators: vec![],
        kind: pipe_primitives::ModelKind::Onnx,
        llm: None,
    }
}

/// Calldata of `runModelInference` on `model` with input `x` (a whole number), and the
/// request's key: send it to the precompile, directly or from a contract.
pub fn inference_call(model: &ModelMeta, x: i128) -> (Bytes, B256) {
    use alloy_sol_types::{SolCall, SolValue};
    use pipe_executor::inference::{
        ModelInferenceRequest, ModelInput, MultiDimensionalNumberTensor, Number,
        runModelInferenceCall,
    };
    let request = ModelInferenceRequest {
        mode: 0,
        modelCID: model.id.to_string(),
        input: ModelInput {
            numbers: vec![MultiDimensionalNumberTensor {
                name: "x".into(),
                values: vec![Number {
                    value: x,
                    decimals: 0,
                }],
                shape: vec![1, 1],
            }],
            strings: vec![],
        },
    };
    let key = alloy_primitives::keccak256(request.abi_encode());
    (runModelInferenceCall { request }.abi_encode().into(), key)
}

/// The committed result for `key`: an output with one float tensor `y` holding `value`.
pub fn output(key: B256, value: f32, decimals: u32) -> InferenceResult {
    use pipe_primitives::inference::{Tensor, TensorData};
    pipe_executor::output_result(
        key,
        &[Tensor {
            name: "y".into(),
            shape: vec![1],
            data: TensorData::Float32(vec![value]),
        }],
        decimals,
    )
}

/// Inference from a table: the models it knows, the results it holds. It records what it was
/// asked for and could not answer, and the calls that came with too little gas.
#[derive(Debug, Default)]
pub struct TableModels {
    models: parking_lot::Mutex<std::collections::HashMap<ModelId, ModelMeta>>,
    results: parking_lot::Mutex<std::collections::HashMap<B256, InferenceResult>>,
    pub missing: parking_lot::Mutex<Vec<B256>>,
    pub underpaid: parking_lot::Mutex<Vec<(B256, u64)>>,
}

impl TableModels {
    pub fn with_model(meta: ModelMeta) -> Self {
        let table = Self::default();
        table.models.lock().insert(meta.id, meta);
        table
    }

    /// From now on `key` is answered with `result`.
    pub fn answer(&self, result: InferenceResult) {
        self.results.lock().insert(result.key, result);
    }
}

impl InferenceProvider for TableModels {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.models.lock().get(id).cloned()
    }

    fn infer(&self, call: &InferenceCall, _: Purpose) -> Option<InferenceResult> {
        let found = self.results.lock().get(&call.key).cloned();
        if found.is_none() {
            self.missing.lock().push(call.key);
        }
        found
    }

    fn underpaid(&self, call: &InferenceCall, cost: u64) {
        self.underpaid.lock().push((call.key, cost));
    }
}

/// PIPE's hold on the builder, as a table: which transactions are ready, what answers
/// inference ([`TableModels`]), and a record of what the builder reported back.
#[derive(Debug)]
pub struct TableGate {
    pub ready: parking_lot::Mutex<std::collections::HashSet<B256>>,
    pub models: Arc<TableModels>,
    /// (transaction, key) of every stale report.
    pub stale: parking_lot::Mutex<Vec<(B256, B256)>>,
    /// Numbers of the finalized blocks reported.
    pub finalized: parking_lot::Mutex<Vec<u64>>,
    changed: tokio::sync::Notify,
}

impl TableGate {
    pub fn new(models: Arc<TableModels>) -> Self {
        Self {
            ready: Default::default(),
            models,
            stale: Default::default(),
            finalized: Default::default(),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Marks `hash` ready.
    pub fn make_ready(&self, hash: B256) {
        self.ready.lock().insert(hash);
        self.changed.notify_waiters();
    }
}

impl pipe_builder::InferenceGate for TableGate {
    fn is_ready(&self, tx: &pipe_mempool::PoolTx) -> bool {
        self.ready.lock().contains(&tx.hash())
    }

    fn results(&self) -> Arc<dyn InferenceProvider> {
        self.models.clone()
    }

    fn on_stale(&self, tx: &pipe_mempool::PoolTx, call: &InferenceCall) {
        self.ready.lock().remove(&tx.hash());
        self.stale.lock().push((tx.hash(), call.key));
    }

    fn on_finalized(&self, block: &Arc<SealedBlock>, _: &pipe_builder::BuildStats) {
        self.finalized.lock().push(block.number());
    }

    fn has_ready(&self) -> bool {
        !self.ready.lock().is_empty()
    }

    fn ready_changed(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(self.changed.notified())
    }
}
