//! The clock seam. Block slots, build deadlines and timeouts read time only through [`Clock`],
//! so tests drive them with a [`ManualClock`] instead of sleeping.

use std::{future::Future, pin::Pin, sync::Arc, time::Duration};

use parking_lot::Mutex;
use tokio::sync::watch;

/// Boxed future returned by [`Clock::sleep_until`].
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Wall time in milliseconds since the Unix epoch, and a way to wait for a moment.
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Resolves once `now_ms() >= at_ms`.
    fn sleep_until(&self, at_ms: u64) -> Sleep;
}

/// The real clock: system time and tokio timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let wait = at_ms.saturating_sub(self.now_ms());
        Box::pin(tokio::time::sleep(Duration::from_millis(wait)))
    }
}

/// A clock that only moves when a test calls [`ManualClock::advance`]. Sleepers wake as soon
/// as time passes their deadline.
#[derive(Clone, Debug)]
pub struct ManualClock {
    now: Arc<Mutex<u64>>,
    tick: watch::Sender<u64>,
}

impl ManualClock {
    pub fn new(start_ms: u64) -> Self {
        let (tick, _) = watch::channel(start_ms);
        Self {
            now: Arc::new(Mutex::new(start_ms)),
            tick,
        }
    }

    /// Moves time forward by `by`, waking every sleeper whose deadline has passed.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by.as_millis() as u64;
        self.tick.send_replace(*now);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        *self.now.lock()
    }

    fn sleep_until(&self, at_ms: u64) -> Sleep {
        let mut rx = self.tick.subscribe();
        Box::pin(async move {
            // `wait_for` checks the current value first, so a deadline already past resolves
            // at once; an error means the clock was dropped, and then nothing will ever wake us.
            if rx.wait_for(|now| *now >= at_ms).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_only_when_advanced_past_deadline() {
        let clock = ManualClock::new(1_000);
        let sleep = clock.sleep_until(1_500);
        let handle = tokio::spawn(sleep);
        clock.advance(Duration::from_millis(499));
        tokio::task::yield_now().await;
        assert!(!handle.is_finished());
        clock.advance(Duration::from_millis(1));
        handle.await.unwrap();
        assert_eq!(clock.now_ms(), 1_500);
        // A deadline in the past resolves immediately.
        clock.sleep_until(10).await;
    }
}
