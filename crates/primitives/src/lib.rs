//! Types every pipe crate shares: the chain's configuration and genesis, the block and
//! receipt shapes we store and serve, and the [`Clock`] seam.
//!
//! Nothing here executes or stores anything; it is the vocabulary of the node.

pub mod block;
pub mod chain;
pub mod clock;
pub mod edits;
pub mod header;
pub mod inference;
pub mod sidecar;
pub mod status;
pub mod tasks;

pub use block::{BlockTx, SealedBlock, StoredTx};
pub use chain::{CHAIN_HISTORY_CONTRACTS, ChainConfig, system_contracts};
pub use clock::{Clock, ManualClock, SystemClock};
pub use edits::{EditsError, StateEdit, StateEdits};
pub use header::{InferenceFields, InferencePricing};
pub use inference::{LlmSpec, ModelId, ModelKind, ModelMeta};
pub use sidecar::{InferenceResult, Sidecar, SidecarError};
pub use tasks::{TaskError, Tasks};
