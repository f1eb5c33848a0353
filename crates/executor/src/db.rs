//! revm's view of the store.

use std::sync::Arc;

use alloy_primitives::{Address, B256, KECCAK256_EMPTY, U256};
use pipe_storage::{StateView, StoreError};
use revm::{
    bytecode::Bytecode,
    database_interface::{DBErrorMarker, DatabaseRef},
    state::AccountInfo,
};

/// Error type revm sees from the database.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DbError(#[from] pub StoreError);

impl DBErrorMarker for DbError {}

/// A read-only, consistent snapshot of the state, as revm's `DatabaseRef`.
#[derive(Debug)]
pub struct StateDb {
    view: Arc<StateView>,
}

impl StateDb {
    pub fn new(view: impl Into<Arc<StateView>>) -> Self {
        Self { view: view.into() }
    }

    pub fn view(&self) -> &StateView {
        &self.view
    }
}

impl DatabaseRef for StateDb {
    type Error = DbError;

    fn basic_ref(&self, address: Address) -> Result<Option<AccountInfo>, DbError> {
        let Some(account) = self.view.account(&address)? else {
            return Ok(None);
        };
        let code = if account.code_hash == KECCAK256_EMPTY {
            Some(Bytecode::default())
        } else {
            None // loaded lazily through code_by_hash_ref
        };
        Ok(Some(AccountInfo {
            balance: account.balance,
            nonce: account.nonce,
            code_hash: account.code_hash,
            code,
            ..Default::default()
        }))
    }

    fn code_by_hash_ref(&self, code_hash: B256) -> Result<Bytecode, DbError> {
        if code_hash == KECCAK256_EMPTY {
            return Ok(Bytecode::default());
        }
        let raw = self
            .view
            .code(&code_hash)?
            .ok_or_else(|| DbError(StoreError::Corrupt(format!("missing code {code_hash}"))))?;
        Ok(Bytecode::new_raw(raw))
    }

    fn storage_ref(&self, address: Address, index: U256) -> Result<U256, DbError> {
        Ok(self.view.storage(&address, &B256::from(index))?)
    }

    fn block_hash_ref(&self, number: u64) -> Result<B256, DbError> {
        Ok(self.view.block_hash(number)?.unwrap_or_default())
    }
}
