//! The Prometheus endpoint: `GET /metrics` on its own port, in the text exposition format.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use pipe_inference_pool::Pipe;
use pipe_primitives::Tasks;
use tokio::sync::watch;

/// More metrics in the text format, rendered at each scrape (a validator's).
pub type Extra = Arc<dyn Fn() -> String + Send + Sync>;

/// The chain's own gauges, rendered from the head at each scrape: the head block, the
/// finalized one (the same block here: a node stores and serves finalized blocks only, and a
/// dev chain's blocks are final when sealed), and the inference gas price of the next block.
pub fn chain_gauges(
    head: watch::Receiver<Arc<pipe_primitives::SealedBlock>>,
    executor: pipe_executor::Executor,
) -> Extra {
    Arc::new(move || {
        let head = head.borrow().clone();
        let number = head.header.number;
        let price = executor.next_inference_gas_price(&head.header);
        let mut text = String::new();
        for (name, help, value) in [
            ("pipe_head_block", "Number of the newest block.", number),
            (
                "pipe_finalized_block",
                "Number of the newest finalized block.",
                number,
            ),
            (
                "pipe_next_inference_gas_price",
                "Inference gas price (gas per cost unit) of the next block.",
                price,
            ),
        ] {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        text
    })
}

/// Serves, as a task of `tasks`, until `shutdown` flips; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    pipe: Arc<Pipe>,
    extra: Option<Extra>,
    tasks: &Tasks,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let pipe = pipe.clone();
            let extra = extra.clone();
            async move {
                let mut text = pipe.render_metrics();
                if let Some(extra) = extra {
                    // OpenMetrics ends with `# EOF`: what we add goes before it.
                    let body = text.strip_suffix("# EOF\n").unwrap_or(&text).to_string();
                    text = format!("{body}{}# EOF\n", extra());
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    text,
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    spawn_http(listener, app, tasks, shutdown);
    Ok(bound)
}

/// Serves `app` on `listener` as a task of `tasks` until `shutdown` flips (the node's small
/// HTTP endpoints: metrics, the pipeline page).
pub(crate) fn spawn_http(
    listener: tokio::net::TcpListener,
    app: Router,
    tasks: &Tasks,
    mut shutdown: watch::Receiver<bool>,
) {
    tasks.spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    });
}
