//! Why a verb failed.

use alloy_primitives::B256;

/// Why a block could not be proposed or finalized.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    #[error("storage: {0}")]
    Storage(#[from] pipe_storage::StoreError),
    #[error("build: {0}")]
    Build(#[from] pipe_builder::BuildError),
    #[error("execution: {0}")]
    Exec(#[from] pipe_executor::ExecError),
    /// The block (or parent) is neither the finalized head nor an unfinalized block this
    /// node knows.
    #[error("unknown block {0}")]
    UnknownBlock(B256),
    /// A proposal's timestamp does not follow its parent's.
    #[error("timestamp {timestamp} is not after the parent's {parent}")]
    Timestamp { timestamp: u64, parent: u64 },
    /// The dev chain cannot put the state back (not archived, too much changed).
    #[error(transparent)]
    Restore(#[from] pipe_storage::RestoreError),
    /// The tree of unfinalized blocks is full.
    #[error("{0} unfinalized blocks already: finalize before proposing or verifying more")]
    TreeFull(usize),
}

/// Why a block did not verify. [`VerifyError::is_final`] tells the answers that hold forever
/// (the block is invalid) from those that may change (not yet: a missing parent, a timestamp
/// ahead of the local clock): a validator must not reject a block for good on the latter.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The block is invalid and always will be.
    #[error("invalid block: {0}")]
    Invalid(String),
    /// Replay found the block invalid.
    #[error("invalid block: {0}")]
    Replay(#[from] pipe_builder::replay::ReplayError),
    /// Its timestamp is ahead of the local clock by more than the allowed drift: ask again
    /// in `wait_ms`.
    #[error("block {number} is {ahead_ms} ms in the future; verifiable in {wait_ms} ms")]
    Future {
        number: u64,
        ahead_ms: u64,
        wait_ms: u64,
    },
    /// This node cannot compute one of its VANILLA results yet to compare it.
    #[error("block {number}: the result for request {key} cannot be checked yet: {reason}")]
    ResultPending {
        number: u64,
        key: B256,
        reason: String,
    },
    /// Its parent is not known yet.
    #[error("parent {parent} of block {number} is unknown")]
    UnknownParent { number: u64, parent: B256 },
    /// Verification could not run (storage, a full tree); says nothing about the block.
    #[error(transparent)]
    Chain(#[from] ChainError),
}

impl VerifyError {
    /// Whether this answer is final: the block is invalid on every honest node, forever.
    pub fn is_final(&self) -> bool {
        match self {
            Self::Invalid(_) => true,
            // A local fault while replaying says nothing about the block.
            Self::Replay(e) => e.is_final(),
            _ => false,
        }
    }
}

impl From<pipe_storage::StoreError> for VerifyError {
    fn from(e: pipe_storage::StoreError) -> Self {
        Self::Chain(ChainError::Storage(e))
    }
}
