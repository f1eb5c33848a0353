//! TEE attestation of inference results: who may answer a `mode = TEE` request, and the check
//! every block's execution applies.
//!
//! # The rule
//! A result used for a TEE request must carry a 65-byte secp256k1 signature (`r ‖ s ‖ v`) over
//! [`InferenceResult::signing_hash`] (the request key, the status and the payload's hash) by a
//! worker key that the [`WORKER_REGISTRY`] contract lists in the *parent* state of the block,
//! and that the node's [`EnclaveCheck`] accepts. A VANILLA result carries no signature, so a
//! sidecar's bytes do not depend on which worker computed a VANILLA request.
//!
//! The check runs inside block execution ([`Attested`], installed by
//! [`crate::Executor::build_block_with`]), so the builder and every replaying node apply the
//! same rule to the same state: a builder never commits an unattested result (it treats one
//! like a stale result and asks again), and a follower rejects a block that carries one.
//! Registration read from the parent state means a change to the registry takes effect from
//! the next block, on every node alike.
//!
//! # The registry
//! A plain contract (`contracts/src/WorkerRegistry.sol`) at [`WORKER_REGISTRY`], in the
//! genesis state: `owner` in slot 0, `mapping(address => bool) registered` in slot 1. The
//! owner adds and removes worker keys with ordinary transactions (`cast send … "register(address)"`).
//! Nodes read slot `keccak256(worker ‖ 1)` directly, so reading needs no EVM call.
//!
//! # Trust note
//! The registry is the trust root. Registering a key is the owner's statement that the key
//! lives in an enclave running the expected worker image; pipe does not verify enclave
//! attestation documents itself. [`EnclaveCheck`] is where a deployment plugs such a
//! verification (for example, checking a Nitro or SGX quote that binds the key, fetched when a
//! key is first seen). The default, [`RegistryTrust`], accepts every registered key.

use std::sync::Arc;

use alloy_primitives::{Address, B256, Signature, U256, address, keccak256};
use parking_lot::Mutex;
use pipe_primitives::{InferenceResult, ModelId, ModelMeta, inference::InferenceMode};
use pipe_storage::StateView;

use crate::{InferenceCall, InferenceProvider, Purpose};

/// Where the worker registry contract lives (from genesis).
pub const WORKER_REGISTRY: Address = address!("0x00000000000000000000000000000000000000F6");
/// The registry's runtime code: `contracts/src/WorkerRegistry.sol` compiled by
/// `tools/js/compile.js` (a test checks the two agree).
pub static WORKER_REGISTRY_CODE: std::sync::LazyLock<alloy_primitives::Bytes> =
    std::sync::LazyLock::new(|| {
        include_str!("worker_registry.hex")
            .trim()
            .parse()
            .expect("the committed registry code is hex")
    });
/// Storage slot of `registered` in the registry contract.
const REGISTERED_SLOT: u64 = 1;

/// Why a result is not acceptable for its request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("a TEE result must be signed by a worker; this one is not")]
    Unsigned,
    #[error("a VANILLA result carries no signature; this one does")]
    UnexpectedSignature,
    #[error("malformed worker signature: {0}")]
    BadSignature(String),
    #[error("worker {0} is not registered in the worker registry")]
    NotRegistered(Address),
    #[error("worker {worker} refused by the enclave check: {reason}")]
    Enclave { worker: Address, reason: String },
    #[error("reading the worker registry: {0}")]
    Storage(String),
}

/// The pluggable enclave verification (see the module's trust note).
pub trait EnclaveCheck: Send + Sync + std::fmt::Debug {
    /// `Ok` when `worker`, already registered, is acceptable.
    fn check(&self, worker: Address) -> Result<(), String>;
}

/// Trusts the registry: every registered key is accepted.
#[derive(Debug, Default, Clone, Copy)]
pub struct RegistryTrust;

impl EnclaveCheck for RegistryTrust {
    fn check(&self, _: Address) -> Result<(), String> {
        Ok(())
    }
}

/// The registry's storage slot saying whether `worker` is registered.
pub fn registration_slot(worker: Address) -> B256 {
    let mut buf = [0u8; 64];
    buf[12..32].copy_from_slice(worker.as_slice());
    buf[56..].copy_from_slice(&REGISTERED_SLOT.to_be_bytes());
    keccak256(buf)
}

/// Whether `worker` is registered in `view`.
pub fn is_registered(view: &StateView, worker: Address) -> Result<bool, AttestError> {
    view.storage(&WORKER_REGISTRY, &registration_slot(worker))
        .map(|v| v != U256::ZERO)
        .map_err(|e| AttestError::Storage(e.to_string()))
}

/// The address whose key signed `result`.
pub fn signer(result: &InferenceResult) -> Result<Address, AttestError> {
    if result.signature.is_empty() {
        return Err(AttestError::Unsigned);
    }
    let signature = Signature::from_raw(&result.signature)
        .map_err(|e| AttestError::BadSignature(e.to_string()))?;
    signature
        .recover_address_from_prehash(&result.signing_hash())
        .map_err(|e| AttestError::BadSignature(e.to_string()))
}

/// Checks `result` for a request in `mode` against the registry in `view`; returns the signing
/// worker for TEE requests.
pub fn verify(
    mode: InferenceMode,
    result: &InferenceResult,
    view: &StateView,
    enclave: &dyn EnclaveCheck,
) -> Result<Option<Address>, AttestError> {
    if mode != InferenceMode::Tee {
        return if result.signature.is_empty() {
            Ok(None)
        } else {
            Err(AttestError::UnexpectedSignature)
        };
    }
    let worker = signer(result)?;
    if !is_registered(view, worker)? {
        return Err(AttestError::NotRegistered(worker));
    }
    enclave
        .check(worker)
        .map_err(|reason| AttestError::Enclave { worker, reason })?;
    Ok(Some(worker))
}

/// A source whose answers must pass [`verify`] on the block's parent state. An answer that does
/// not is withheld (execution stops as for a missing result) and its reason kept, so the
/// caller can tell "not carried" from "carried but not attested".
#[derive(Debug)]
pub struct Attested {
    source: Arc<dyn InferenceProvider>,
    view: Arc<StateView>,
    enclave: Arc<dyn EnclaveCheck>,
    refused: Mutex<Vec<(B256, AttestError)>>,
}

impl Attested {
    pub fn new(
        source: Arc<dyn InferenceProvider>,
        view: Arc<StateView>,
        enclave: Arc<dyn EnclaveCheck>,
    ) -> Self {
        Self {
            source,
            view,
            enclave,
            refused: Mutex::default(),
        }
    }

    /// Why the result for `key` was withheld, if it was.
    pub fn refusal(&self, key: &B256) -> Option<AttestError> {
        self.refused
            .lock()
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, e)| e.clone())
    }
}

impl InferenceProvider for Attested {
    fn model(&self, id: &ModelId) -> Option<ModelMeta> {
        self.source.model(id)
    }

    fn infer(&self, call: &InferenceCall, purpose: Purpose) -> Option<InferenceResult> {
        let result = self.source.infer(call, purpose)?;
        match verify(call.mode, &result, &self.view, self.enclave.as_ref()) {
            Ok(_) => Some(result),
            Err(e) => {
                self.refused.lock().push((call.key, e));
                None
            }
        }
    }
}
