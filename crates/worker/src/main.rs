//! `pipe-worker`: a remote inference worker on its own, without the node (and without an EVM
//! in its build). Same flags as `pipe worker`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "pipe-worker",
    version,
    about = "A remote inference worker for pipe nodes"
)]
struct Cli {
    #[command(flatten)]
    args: pipe_worker::cli::WorkerArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    pipe_worker::cli::run(Cli::parse().args).await
}
