//! `pipe-worker`: a remote inference worker on its own, without the node (and without an EVM
//! in its build). Same flags as `pipe worker`.

use clap::Parser;

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

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing main does; no other thread exists yet.
    unsafe { pipe_llm::pin_threads() };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async {
            pipe_worker::cli::init_logging();
            pipe_worker::cli::run(Cli::parse().args).await
        })
}
