//! The dev chain's unlocked accounts, as anvil serves them: `eth_sendTransaction` (filling
//! nonce, gas and fees), `eth_signTransaction`, `eth_sign`, `personal_sign` and
//! `eth_signTypedData_v4`.
//!
//! `cast send --unlocked`, ethers' `provider.getSigner()`, web3.py's default account and viem's
//! JSON-RPC account all send through these. Only the dev accounts are unlocked, and only on
//! the dev chain ([`crate::NodeHandle::unlocked`] is empty elsewhere): any other `from` is
//! refused with geth's `unknown account`.
//!
//! An address impersonated on the dev chain (`anvil_impersonateAccount`) sends too, without a
//! signature ([`pipe_primitives::edits`]).
//!
//! A transaction built here goes through `eth_sendRawTransaction`'s path, so it is admitted,
//! made durable and tracked exactly as a signed one.

use alloy_eips::{BlockId, Encodable2718};
use alloy_network::TxSignerSync;
use alloy_primitives::{Address, B256, Bytes};
use alloy_rpc_types_eth::TransactionRequest;
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use jsonrpsee::proc_macros::rpc;

use crate::{RpcError, error::RpcResult, eth::Api};

/// Tip a filled-in transaction offers, as `eth_maxPriorityFeePerGas` suggests.
const TIP: u128 = 1_000_000_000;

#[rpc(server, namespace = "eth")]
pub trait AccountsApi {
    /// Fills, signs with the unlocked `from` account, and sends; the transaction's hash.
    #[method(name = "sendTransaction")]
    async fn send_transaction(&self, request: TransactionRequest) -> RpcResult<B256>;
    /// Fills and signs without sending; the raw EIP-2718 bytes.
    #[method(name = "signTransaction")]
    async fn sign_transaction(&self, request: TransactionRequest) -> RpcResult<Bytes>;
    /// EIP-191 signature of `message` by `address` (65 bytes, v = 27 or 28), as geth.
    #[method(name = "sign")]
    fn sign(&self, address: Address, message: Bytes) -> RpcResult<Bytes>;
    /// EIP-712 signature of typed data by `address` (MetaMask's v4, as anvil): the data as a
    /// JSON object, or as a string holding one (ethers sends that). Also served as
    /// `eth_signTypedData` (web3.py sends v4-shaped data there) and `eth_signTypedData_v3`
    /// (v4 without arrays, hashed alike); MetaMask's legacy v1 array form is refused.
    #[method(
        name = "signTypedData_v4",
        aliases = ["eth_signTypedData", "eth_signTypedData_v3"]
    )]
    fn sign_typed_data_v4(&self, address: Address, data: serde_json::Value) -> RpcResult<Bytes>;
}

#[rpc(server, namespace = "personal")]
pub trait PersonalApi {
    /// `eth_sign` with the arguments the other way round (and an ignored password).
    #[method(name = "sign")]
    fn personal_sign(
        &self,
        message: Bytes,
        address: Address,
        password: Option<String>,
    ) -> RpcResult<Bytes>;
}

impl Api {
    /// The unlocked key of `address`, or geth's refusal.
    fn unlocked(&self, address: &Address) -> Result<&PrivateKeySigner, RpcError> {
        self.node
            .unlocked
            .iter()
            .find(|s| s.address() == *address)
            .ok_or_else(|| RpcError::Unsupported("unknown account".into()))
    }

    /// `request` completed as anvil completes it, signed by its `from`: chain id, the sender's
    /// next pending nonce, EIP-1559 fees (twice the next base fee plus a 1 gwei tip) unless a
    /// gas price is given, and the estimated gas unless a limit is given.
    async fn fill_and_sign(&self, mut request: TransactionRequest) -> Result<Bytes, RpcError> {
        let from = request
            .from
            .ok_or_else(|| RpcError::InvalidParams("from is required".into()))?;
        // A dev key signs; an impersonated address (anvil_impersonateAccount) sends unsigned.
        let signer = match self.unlocked(&from) {
            Ok(signer) => Some(signer.clone()),
            Err(_) if self.node.pool.impersonates(&from) => None,
            Err(e) => return Err(e),
        };
        // No `to` is a creation (web3.py's `constructor().transact()` sends none).
        request.to.get_or_insert(alloy_primitives::TxKind::Create);
        request
            .chain_id
            .get_or_insert(self.node.executor.config().chain_id);
        if request.nonce.is_none() {
            let state = self.node.store.account(&from)?.map_or(0, |a| a.nonce);
            request.nonce = Some(self.node.pool.pending_nonce(&from, state));
        }
        if request.gas_price.is_none() {
            let tip = request.max_priority_fee_per_gas.unwrap_or(TIP);
            let cap = request
                .max_fee_per_gas
                .unwrap_or(2 * self.next_base_fee() as u128 + tip);
            request.max_priority_fee_per_gas = Some(tip.min(cap));
            request.max_fee_per_gas = Some(cap);
        }
        if request.gas.is_none() {
            let gas = crate::EthApiServer::estimate_gas(
                self,
                request.clone(),
                Some(BlockId::latest()),
                None,
            )
            .await
            .map_err(|e| RpcError::InvalidParams(e.message().to_string()))?;
            request.gas = Some(gas.to());
        }
        let mut tx = request.build_typed_tx().map_err(|_| {
            RpcError::InvalidParams("the transaction cannot be completed: missing fields".into())
        })?;
        let signature = match signer {
            Some(signer) => signer
                .sign_transaction_sync(&mut tx)
                .map_err(|e| RpcError::Internal(e.to_string()))?,
            None => pipe_primitives::edits::impersonation_signature(from),
        };
        Ok(tx.into_envelope(signature).encoded_2718().into())
    }

    fn sign_message(&self, address: &Address, message: &[u8]) -> Result<Bytes, RpcError> {
        let signature = self
            .unlocked(address)?
            .sign_message_sync(message)
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        Ok(Bytes::copy_from_slice(&signature.as_bytes()))
    }
}

#[jsonrpsee::core::async_trait]
impl AccountsApiServer for Api {
    async fn send_transaction(&self, request: TransactionRequest) -> RpcResult<B256> {
        let raw = self.fill_and_sign(request).await?;
        crate::EthApiServer::send_raw_transaction(self, raw).await
    }

    async fn sign_transaction(&self, request: TransactionRequest) -> RpcResult<Bytes> {
        Ok(self.fill_and_sign(request).await?)
    }

    fn sign(&self, address: Address, message: Bytes) -> RpcResult<Bytes> {
        Ok(self.sign_message(&address, &message)?)
    }

    fn sign_typed_data_v4(&self, address: Address, data: serde_json::Value) -> RpcResult<Bytes> {
        let data = match data {
            serde_json::Value::String(text) => serde_json::from_str(&text),
            other => Ok(other),
        }
        .and_then(serde_json::from_value::<alloy_dyn_abi::TypedData>)
        .map_err(|e| RpcError::InvalidParams(format!("invalid typed data: {e}")))?;
        let hash = data
            .eip712_signing_hash()
            .map_err(|e| RpcError::InvalidParams(format!("invalid typed data: {e}")))?;
        let signature = self
            .unlocked(&address)?
            .sign_hash_sync(&hash)
            .map_err(|e| RpcError::Internal(e.to_string()))?;
        Ok(Bytes::copy_from_slice(&signature.as_bytes()))
    }
}

impl PersonalApiServer for Api {
    fn personal_sign(
        &self,
        message: Bytes,
        address: Address,
        _password: Option<String>,
    ) -> RpcResult<Bytes> {
        Ok(self.sign_message(&address, &message)?)
    }
}
