//! The chain's clock seam ([`pipe_primitives::Clock`]) over a commonware runtime's clock, so
//! the payload builder's deadlines run on the same time as consensus: virtual time in the
//! deterministic runtime, the system clock in the node.

use std::time::{Duration, UNIX_EPOCH};

use commonware_runtime::{Clock, Supervisor};

/// A commonware runtime context as the chain's clock.
#[derive(Debug)]
pub struct RuntimeClock<E>(pub E);

impl<E: Clock + Supervisor> pipe_primitives::Clock for RuntimeClock<E> {
    fn now_ms(&self) -> u64 {
        crate::app::now_ms(&self.0)
    }

    fn sleep_until(&self, at_ms: u64) -> pipe_primitives::clock::Sleep {
        let clock = self.0.child("sleep");
        Box::pin(async move {
            clock
                .sleep_until(UNIX_EPOCH + Duration::from_millis(at_ms))
                .await
        })
    }
}
