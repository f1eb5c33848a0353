//! RPC metrics: calls and their latency by method, for the node's Prometheus endpoint.
//!
//! The layer sits behind [`crate::geth::GethErrors`], so only methods the server serves reach
//! it: a method label is always one of a fixed set of names, never a string a client chose
//! (a hostile client could otherwise grow the label set without bound). Calls inside a batch
//! are counted one by one, as they pass through the same `call`.

use std::{sync::Arc, time::Instant};

use jsonrpsee::{
    core::{
        middleware::{Batch, Notification, RpcServiceT},
        server::MethodResponse,
    },
    types::Request,
};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// Calls by method and outcome, and their latency by method.
#[derive(Debug)]
pub struct RpcMetrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    latency: Histograms,
}

impl Default for RpcMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pipe_rpc");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "calls",
            "JSON-RPC calls by method and outcome (ok or error)",
            calls.clone(),
        );
        // 0.1 ms to about 6.5 s: a point read to a slow trace.
        let latency: Histograms =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0001, 2.0, 17)));
        registry.register(
            "call_duration_seconds",
            "Time from a call's arrival to its answer, by method",
            latency.clone(),
        );
        Self {
            registry,
            calls,
            latency,
        }
    }
}

impl RpcMetrics {
    fn observe(&self, method: &str, ok: bool, seconds: f64) {
        let outcome = if ok { "ok" } else { "error" };
        self.calls
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("outcome", outcome.to_string()),
            ])
            .inc();
        self.latency
            .get_or_create(&vec![("method", method.to_string())])
            .observe(seconds);
    }

    /// The metrics in the text format, without the closing `# EOF` (the node's endpoint
    /// appends them to its own).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            return String::new();
        }
        text.strip_suffix("# EOF\n").unwrap_or(&text).to_string()
    }
}

/// Puts [`Metered`] in front of the methods.
#[derive(Clone, Debug)]
pub struct MeteredLayer(pub Arc<RpcMetrics>);

impl<S> tower::Layer<S> for MeteredLayer {
    type Service = Metered<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.0.clone(),
        }
    }
}

/// Times each call and counts it by method and outcome.
#[derive(Clone, Debug)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S> RpcServiceT for Metered<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = MethodResponse;
    type NotificationResponse = MethodResponse;
    type BatchResponse = MethodResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let inner = self.inner.clone();
        let metrics = self.metrics.clone();
        async move {
            let method = request.method_name().to_string();
            let started = Instant::now();
            let response = inner.call(request).await;
            metrics.observe(
                &method,
                response.is_success(),
                started.elapsed().as_secs_f64(),
            );
            response
        }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        self.inner.notification(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_outcome() {
        let m = RpcMetrics::default();
        m.observe("eth_call", true, 0.002);
        m.observe("eth_call", false, 0.004);
        m.observe("eth_chainId", true, 0.0001);
        let text = m.render();
        assert!(
            text.contains(r#"pipe_rpc_calls_total{method="eth_call",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"pipe_rpc_calls_total{method="eth_call",outcome="error"} 1"#));
        assert!(text.contains(r#"pipe_rpc_call_duration_seconds_count{method="eth_call"} 2"#));
        assert!(!text.contains("# EOF"));
    }
}
