//! The worker's command line, shared by `pipe worker` and the standalone `pipe-worker`.

use std::{net::SocketAddr, time::Duration};

use clap::Args;
use pipe_primitives::inference::ModelKind;

use crate::{WorkerOptions, dev_worker_signer, serve};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// JSON-RPC URL of the node models are fetched from.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    pub node: String,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9100")]
    pub listen: SocketAddr,
    /// Requests run at once.
    #[arg(long, default_value_t = 1)]
    pub capacity: usize,
    /// Name in the node's logs and metrics (default: worker-PORT).
    #[arg(long)]
    pub name: Option<String>,
    /// Hex private key TEE results are signed with; its address must be registered in the
    /// chain's worker registry.
    #[arg(long, value_name = "HEX", conflicts_with = "dev_key")]
    pub key: Option<String>,
    /// Sign TEE results with the dev chain's worker key (registered at dev genesis).
    #[arg(long)]
    pub dev_key: bool,
    /// Artificial extra latency of every model run, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub model_latency_ms: Option<u64>,
    /// A run still going after this long stops and the request fails (the node's client
    /// stops waiting at 10 s and retries elsewhere).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub run_timeout_ms: u64,
    /// The kinds of model it runs: `onnx`, `llm`, or both (the node sends it nothing else).
    #[arg(long, value_delimiter = ',', default_value = "onnx,llm", value_parser = parse_kind)]
    pub kinds: Vec<ModelKind>,
    /// Language-model runs at once, within --capacity (each loaded model answers one run at a
    /// time; more only helps with several models).
    #[arg(long, default_value_t = 1)]
    pub llm_capacity: usize,
}

fn parse_kind(s: &str) -> Result<ModelKind, String> {
    match s.trim() {
        "onnx" => Ok(ModelKind::Onnx),
        "llm" => Ok(ModelKind::Llm),
        other => Err(format!("`{other}`: the kinds are onnx and llm")),
    }
}

/// Logs to stderr at `RUST_LOG`'s levels (`info` when unset): what every pipe binary does
/// first, so stdout stays for output scripts read.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// A hex secp256k1 private key.
pub fn parse_key(hex: &str) -> anyhow::Result<alloy_signer_local::PrivateKeySigner> {
    hex.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("not a hex secp256k1 private key: {e}"))
}

/// Serves until Ctrl-C or SIGTERM, then stops accepting and waits for the server to end.
pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let key = match (&args.key, args.dev_key) {
        (Some(hex), _) => Some(parse_key(hex)?),
        (None, true) => Some(dev_worker_signer()),
        (None, false) => None,
    };
    let options = WorkerOptions {
        name: args
            .name
            .unwrap_or_else(|| format!("worker-{}", args.listen.port())),
        node: args.node,
        listen: args.listen,
        capacity: args.capacity,
        key,
        latency: Duration::from_millis(args.model_latency_ms.unwrap_or(0)),
        run_timeout: Duration::from_millis(args.run_timeout_ms.max(1)),
        kinds: args.kinds,
        llm_capacity: args.llm_capacity,
    };
    let signer = options.key.as_ref().map(|k| k.address());
    let runs = crate::server::kinds_text(&options.kinds);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = serve(options, async move {
        let _ = stop_rx.await;
    })
    .await?;
    // Tests and scripts read the address from this line.
    println!("Listening on {addr}");
    // A log line, not stdout: scripts may stop reading after the address.
    tracing::info!(target: "pipe::worker", "runs {runs}");
    if let Some(a) = signer {
        println!("Signing TEE results as {a}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}
