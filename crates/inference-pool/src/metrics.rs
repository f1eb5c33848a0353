//! PIPE's Prometheus metrics. One registry per node (tests run several nodes in a process);
//! the node serves [`Metrics::render`] on its metrics port.

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(String, String)>;

/// Every metric, by name. Gauges of queue depth are refreshed when scraped.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Tracked transactions by lifecycle state.
    pub transactions: Family<Labels, Gauge>,
    /// Requests waiting for a worker.
    pub requests_queued: Gauge,
    /// Requests on a worker now.
    pub requests_in_flight: Gauge,
    /// The most requests ever on workers at once.
    pub requests_in_flight_peak: Gauge,
    /// Results held in the cache.
    pub cached_results: Gauge,
    /// Dispatch to result, seconds.
    pub dispatch_latency: Histogram,
    /// Per worker: requests running now.
    pub worker_in_flight: Family<Labels, Gauge>,
    /// Per worker: capacity.
    pub worker_capacity: Family<Labels, Gauge>,
    /// Per worker: results returned.
    pub worker_completed: Family<Labels, Counter>,
    /// Per worker: timeouts, errors and disconnects.
    pub worker_failures: Family<Labels, Counter>,
    /// Per worker: results an audit found to differ from a local run (the worker is then
    /// quarantined).
    pub worker_lies: Family<Labels, Counter>,
    /// Results audited by a local run.
    pub audits: Counter,
    /// Requests retried after a worker failure.
    pub retries: Counter,
    /// Discovery simulations run.
    pub simulations: Counter,
    /// Transactions left out of a block because a result went stale.
    pub stale: Counter,
    /// Transactions rejected by PIPE (too many requests or rounds, dropped as invalid).
    pub rejected: Counter,
    /// Requests deduplicated: a transaction asked for a key already queued, running or known.
    pub shared_requests: Counter,
    /// Block build time, seconds.
    pub block_build: Histogram,
    /// Transactions per sealed block.
    pub block_transactions: Histogram,
    /// Transactions that expired (not included within the TTL), with their descendants.
    pub expired: Counter,
    /// Ready transactions a block left out (full, or its deadline reached): carried over.
    pub deferred: Counter,
    /// Expiries per sealed block.
    pub block_expired: Histogram,
    /// Deferrals (carried over, or stale) per sealed block.
    pub block_deferred: Histogram,
    /// Blocks sealed.
    pub blocks: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pipe");
        let m = Self {
            transactions: Family::default(),
            requests_queued: Gauge::default(),
            requests_in_flight: Gauge::default(),
            requests_in_flight_peak: Gauge::default(),
            cached_results: Gauge::default(),
            dispatch_latency: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            worker_in_flight: Family::default(),
            worker_capacity: Family::default(),
            worker_completed: Family::default(),
            worker_failures: Family::default(),
            worker_lies: Family::default(),
            audits: Counter::default(),
            retries: Counter::default(),
            simulations: Counter::default(),
            stale: Counter::default(),
            rejected: Counter::default(),
            shared_requests: Counter::default(),
            block_build: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            block_transactions: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            expired: Counter::default(),
            deferred: Counter::default(),
            block_expired: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            block_deferred: Histogram::new(exponential_buckets(1.0, 2.0, 14)),
            blocks: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "transactions",
            "Tracked transactions by lifecycle state",
            m.transactions.clone(),
        );
        registry.register(
            "requests_queued",
            "Inference requests waiting for a worker",
            m.requests_queued.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Inference requests running on workers",
            m.requests_in_flight.clone(),
        );
        registry.register(
            "requests_in_flight_peak",
            "Most inference requests ever running at once",
            m.requests_in_flight_peak.clone(),
        );
        registry.register(
            "cached_results",
            "Inference results held by key",
            m.cached_results.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "Time from dispatch to a worker's result",
            m.dispatch_latency.clone(),
        );
        registry.register(
            "worker_in_flight",
            "Requests running on a worker",
            m.worker_in_flight.clone(),
        );
        registry.register(
            "worker_capacity",
            "Requests a worker runs at once",
            m.worker_capacity.clone(),
        );
        registry.register(
            "worker_completed",
            "Results a worker returned",
            m.worker_completed.clone(),
        );
        registry.register(
            "worker_failures",
            "Timeouts, errors and disconnects of a worker",
            m.worker_failures.clone(),
        );
        registry.register(
            "worker_lies",
            "Results of a worker that an audit found to differ from a local run",
            m.worker_lies.clone(),
        );
        registry.register(
            "audits",
            "Worker results checked by running the model locally",
            m.audits.clone(),
        );
        registry.register(
            "retries",
            "Requests retried after a worker failed",
            m.retries.clone(),
        );
        registry.register(
            "simulations",
            "Discovery simulations run",
            m.simulations.clone(),
        );
        registry.register(
            "stale_resimulations",
            "Transactions left out of a block because a result went stale",
            m.stale.clone(),
        );
        registry.register(
            "rejected",
            "Transactions rejected by the inference mempool",
            m.rejected.clone(),
        );
        registry.register(
            "shared_requests",
            "Requests served by a computation another transaction already asked for",
            m.shared_requests.clone(),
        );
        registry.register(
            "block_build_seconds",
            "Time to build, commit and publish a block",
            m.block_build.clone(),
        );
        registry.register(
            "block_transactions",
            "Transactions per sealed block",
            m.block_transactions.clone(),
        );
        registry.register(
            "expired",
            "Transactions expired: not included within the TTL (with their sender's later ones)",
            m.expired.clone(),
        );
        registry.register(
            "deferred",
            "Ready transactions a block left out (full or at its deadline), carried over",
            m.deferred.clone(),
        );
        registry.register(
            "block_expired",
            "Transactions expired per sealed block",
            m.block_expired.clone(),
        );
        registry.register(
            "block_deferred",
            "Transactions deferred (carried over or stale) per sealed block",
            m.block_deferred.clone(),
        );
        registry.register("blocks", "Blocks sealed", m.blocks.clone());
        Self { registry, ..m }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One label.
pub(crate) fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}
