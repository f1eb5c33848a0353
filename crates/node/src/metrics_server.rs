//! The Prometheus endpoint: `GET /metrics` on its own port, in the text exposition format.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use pipe_inference_pool::Pipe;
use tokio::sync::watch;

/// Serves until `shutdown` flips; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    pipe: Arc<Pipe>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let pipe = pipe.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    pipe.render_metrics(),
                )
                    .into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    });
    Ok((bound, handle))
}
