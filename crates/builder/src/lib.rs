//! Block production.
//!
//! - [`BlockProducer`] is the seam consensus drives: "build and commit the next block by this
//!   deadline". The dev chain drives it from [`DevSealer`] on a slot timer or on demand; a BFT
//!   engine will drive the same trait (propose = produce, then validators replay).
//! - [`PayloadBuilder`] is the producer: it takes the pool's best transactions in priority
//!   order, executes each on top of the block so far, checks the deadline before every
//!   transaction, and returns a [`BuildOutcome`]. It never waits on anything but execution.
//! - Every time source is the [`pipe_primitives::Clock`], so slot timing and deadlines are
//!   tested on a manual clock.

mod payload;
mod sealer;

pub use payload::{BuildError, BuildOutcome, BuildStats, PayloadBuilder};
pub use sealer::{DevSealer, SealMode};

/// Builds and commits the next block. Implementations must return by `deadline_ms` (on the
/// producer's clock), with whatever fitted.
pub trait BlockProducer: Send + Sync + 'static {
    fn produce(&self, deadline_ms: u64) -> Result<BuildOutcome, BuildError>;
}
