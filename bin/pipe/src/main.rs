//! The `pipe` command line.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pipe_node::config::{BlockTime, FileConfig, InferenceMode, NodeConfig};
use pipe_primitives::SystemClock;
use tracing_subscriber::EnvFilter;

/// revm allocates per transaction (its state map, journal, memory) and the block assembler per
/// receipt; mimalloc made block execution of plain transfers about 10% faster than glibc's
/// allocator (`pipe bench exec`), for bare revm and the node's executor alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "pipe",
    version,
    about = "An Ethereum node whose contracts call ML models inside the transaction"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Node(NodeArgs),
    /// Models in a running node's store.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Re-execute every block of a data directory from the blocks alone and check each
    /// header, state root and receipt (what a follower does); prints a JSON report.
    Replay(NodeArgs),
    /// Run a remote inference worker; nodes reach it with `--worker-url`.
    Worker(WorkerArgs),
    /// Benchmarks; each prints one JSON object.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Upload an ONNX file; prints its metadata, and its id (the modelCID) alone on the last line.
    Add {
        /// The .onnx file.
        file: PathBuf,
        /// The node's JSON-RPC URL.
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
        /// A label for humans (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Decimals of float outputs, 0..=18 (default 8).
        #[arg(long)]
        decimals: Option<u32>,
        /// Cost units to charge gas for, if above the derived value.
        #[arg(long)]
        cost_units: Option<u64>,
    },
    /// List the stored models.
    List {
        #[arg(long, default_value = "http://127.0.0.1:8545")]
        rpc: String,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Block execution: node executor vs a bare revm loop (transfers, ERC-20), and commit cost.
    Exec {
        #[arg(long, default_value_t = 2000)]
        txs: usize,
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Compiled TestToken artifact (from tools/js/compile.js).
        #[arg(long, default_value = "contracts/out/TestToken.json")]
        token: PathBuf,
    },
    /// Per-inference latency, tract vs onnxruntime, on the fixture models; precompile overhead.
    Inference {
        #[arg(long, default_value = "fixtures/models")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Python with onnxruntime (scripts/fixtures.sh makes tools/py/.venv/bin/python): the
        /// Python baseline, and where the in-process baseline's library is found.
        #[arg(long)]
        python: Option<PathBuf>,
        /// onnxruntime's C library for the in-process baseline (default: the one in
        /// `--python`'s onnxruntime package).
        #[arg(long)]
        onnxruntime_lib: Option<PathBuf>,
    },
    /// PIPE: build time with ready inference transactions (slow vs zero-cost model),
    /// throughput vs the workers' standalone capacity, PIPE vs inline on the same load.
    Pipe {
        /// Transactions per load (throughput, PIPE vs inline).
        #[arg(long, default_value_t = 200)]
        txs: usize,
        /// Ready transactions per timed build.
        #[arg(long, default_value_t = 200)]
        ready: usize,
        /// Timed builds per model latency.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 250)]
        block_time_ms: u64,
    },
    /// How PIPE's cost grows with the work: discovery per transaction, memory per pending
    /// transaction, dispatch throughput against the slots' capacity, block build time, for
    /// each pending count and number of worker slots.
    Scale {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
        pending: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "4,64,256")]
        slots: Vec<usize>,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// Congestion: PIPE, inline and a two-transaction oracle under the same loads, from half to
    /// ten times the inference network's capacity. Writes congestion.json and SVG charts.
    Congestion {
        /// Offered loads, as multiples of the measured capacity.
        #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,5,10")]
        loads: Vec<f64>,
        /// Send window per load, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds at the start of each window left out of goodput.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Block interval (the dev chain's default).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// PIPE's transaction TTL in blocks, and every system's drain after the window.
        #[arg(long, default_value_t = 20)]
        ttl_blocks: u64,
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "pipe,inline,oracle"
        )]
        systems: Vec<pipe_node::bench_congestion::System>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for congestion.json and the charts.
        #[arg(long, default_value = "target/congestion")]
        out: PathBuf,
    },
    /// eth_sendRawTransaction ingestion and end-to-end rates, pipe vs anvil, same load.
    Ingest {
        #[arg(long, default_value_t = 4000)]
        txs: usize,
        /// Slot length for both nodes; 0 seals on demand (pipe --on-demand, anvil automine).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// anvil binary to compare against (e.g. tools/js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil).
        #[arg(long)]
        anvil: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct WorkerArgs {
    /// JSON-RPC URL of the node models are fetched from.
    #[arg(long, default_value = "http://127.0.0.1:8545")]
    node: String,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9100")]
    listen: std::net::SocketAddr,
    /// Requests run at once.
    #[arg(long, default_value_t = 1)]
    capacity: usize,
    /// Name in the node's logs and metrics (default: worker-PORT).
    #[arg(long)]
    name: Option<String>,
    /// Hex private key TEE results are signed with; its address must be registered in the
    /// chain's worker registry.
    #[arg(long, value_name = "HEX", conflicts_with = "dev_key")]
    key: Option<String>,
    /// Sign TEE results with the dev chain's worker key (registered at dev genesis).
    #[arg(long)]
    dev_key: bool,
    /// Artificial extra latency of every model run, in milliseconds.
    #[arg(long, value_name = "MS")]
    model_latency_ms: Option<u64>,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Dev chain: funded dev accounts, dev chain id (31337), blocks every second.
    #[arg(long)]
    dev: bool,
    /// TOML config file; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (default: $HOME/.local/share/pipe/<chain id>).
    #[arg(long, value_name = "DIR")]
    datadir: Option<PathBuf>,
    /// Address the JSON-RPC server listens on.
    #[arg(long = "http.addr", value_name = "ADDR")]
    http_addr: Option<IpAddr>,
    /// Port of the JSON-RPC server (HTTP and WebSocket); 0 picks a free one.
    #[arg(long = "http.port", value_name = "PORT")]
    http_port: Option<u16>,
    /// Seal a block every this many milliseconds.
    #[arg(long, value_name = "MS", conflicts_with = "on_demand")]
    block_time_ms: Option<u64>,
    /// Seal as soon as transactions arrive instead of on a timer.
    #[arg(long)]
    on_demand: bool,
    #[arg(long)]
    chain_id: Option<u64>,
    /// Geth-style genesis JSON (with `alloc`).
    #[arg(long, value_name = "FILE")]
    genesis: Option<PathBuf>,
    /// Block gas limit.
    #[arg(long)]
    gas_limit: Option<u64>,
    /// Number of dev accounts to fund.
    #[arg(long)]
    accounts: Option<u32>,
    /// Balance of each dev account, in ether.
    #[arg(long)]
    balance: Option<u64>,
    /// How long eth_call / eth_estimateGas wait for one model run, in milliseconds.
    #[arg(long, value_name = "MS")]
    inference_timeout_ms: Option<u64>,
    /// Where inference runs: `pipe` (pre-executed by the inference mempool) or `inline`
    /// (inside block execution; the baseline).
    #[arg(long, value_enum)]
    inference: Option<InferenceMode>,
    /// In-process inference workers (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Blocks a transaction may wait for inclusion before it expires, with its sender's later
    /// transactions (0: never).
    #[arg(long, value_name = "N")]
    tx_ttl_blocks: Option<u64>,
    /// Inference cost units per block the inference gas price steers toward (a chain rule).
    #[arg(long, value_name = "UNITS")]
    inference_target_units: Option<u64>,
    /// Inference gas price (gas per model cost unit) of the first block (a chain rule).
    #[arg(long, value_name = "GAS")]
    inference_price: Option<u64>,
    /// Floor of the inference gas price (a chain rule).
    #[arg(long, value_name = "GAS")]
    inference_min_price: Option<u64>,
    /// Most live transactions with inference one sender may have.
    #[arg(long, value_name = "N")]
    max_inference_txs_per_sender: Option<usize>,
    /// Most model cost units one sender's live transactions may request.
    #[arg(long, value_name = "UNITS")]
    max_inference_units_per_sender: Option<u64>,
    /// A remote inference worker (`pipe worker`) to send requests to; repeat for several.
    #[arg(long = "worker-url", value_name = "URL")]
    worker_urls: Vec<String>,
    /// Hex private key the in-process workers sign TEE results with (default: the dev worker
    /// key, registered at dev genesis).
    #[arg(long, value_name = "HEX")]
    worker_key: Option<String>,
    /// Requests each in-process worker runs at once.
    #[arg(long, value_name = "N")]
    worker_capacity: Option<usize>,
    /// Artificial extra latency of every model run, inline or on a worker, in milliseconds (a
    /// stand-in for heavy models).
    #[arg(long, value_name = "MS")]
    model_latency_ms: Option<u64>,
    /// How long the dispatcher waits for a worker before retrying elsewhere, in milliseconds.
    #[arg(long, value_name = "MS")]
    worker_timeout_ms: Option<u64>,
    /// Follow the node at this JSON-RPC URL: import its blocks by replaying each from the
    /// block alone (sidecar, attestations, receipts, state root) instead of building blocks.
    #[arg(long, value_name = "URL")]
    follow: Option<String>,
    /// How often a follower asks its leader for new blocks, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    follow_interval_ms: u64,
    /// Serve Prometheus metrics on this port (0 picks a free one).
    #[arg(long = "metrics.port", value_name = "PORT")]
    metrics_port: Option<u16>,
}

fn default_datadir(chain_id: u64) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pipe").join(chain_id.to_string())
}

fn node_config(args: NodeArgs) -> anyhow::Result<NodeConfig> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    if !args.dev && args.genesis.is_none() && file.genesis.is_none() {
        anyhow::bail!("give --dev for the dev chain, or --genesis FILE for another chain");
    }
    let mut c = NodeConfig::dev(PathBuf::new());
    c.chain_id = args.chain_id.or(file.chain_id).unwrap_or(c.chain_id);
    c.datadir = args
        .datadir
        .or(file.datadir)
        .unwrap_or_else(|| default_datadir(c.chain_id));
    c.http_addr = args.http_addr.or(file.http_addr).unwrap_or(c.http_addr);
    c.http_port = args.http_port.or(file.http_port).unwrap_or(c.http_port);
    c.genesis = args.genesis.or(file.genesis);
    c.gas_limit = args.gas_limit.or(file.gas_limit);
    c.dev_accounts = args
        .accounts
        .or(file.dev_accounts)
        .unwrap_or(c.dev_accounts);
    c.dev_balance_eth = args
        .balance
        .or(file.dev_balance_eth)
        .unwrap_or(c.dev_balance_eth);
    if let Some(ms) = args.inference_timeout_ms {
        c.inference_timeout = Duration::from_millis(ms.max(1));
    }
    c.inference_mode = args
        .inference
        .or(file.inference)
        .unwrap_or(c.inference_mode);
    c.tx_ttl_blocks = args.tx_ttl_blocks.unwrap_or(c.tx_ttl_blocks);
    let pricing = &mut c.inference_pricing;
    pricing.target_units = args
        .inference_target_units
        .unwrap_or(pricing.target_units)
        .max(1);
    pricing.initial_price = args.inference_price.unwrap_or(pricing.initial_price);
    pricing.min_price = args.inference_min_price.unwrap_or(pricing.min_price).max(1);
    c.max_inference_txs_per_sender = args
        .max_inference_txs_per_sender
        .unwrap_or(c.max_inference_txs_per_sender);
    c.max_inference_units_per_sender = args
        .max_inference_units_per_sender
        .unwrap_or(c.max_inference_units_per_sender);
    c.follow = args.follow;
    c.follow_interval = Duration::from_millis(args.follow_interval_ms.max(1));
    c.remote_workers = args.worker_urls;
    if let Some(hex) = &args.worker_key {
        c.worker_key = Some(parse_key(hex)?);
    }
    c.workers = args.workers.or(file.workers).unwrap_or(c.workers);
    anyhow::ensure!(
        c.workers > 0 || !c.remote_workers.is_empty(),
        "--workers 0 needs at least one --worker-url"
    );
    c.worker_capacity = args.worker_capacity.unwrap_or(c.worker_capacity).max(1);
    if let Some(ms) = args.model_latency_ms {
        c.model_latency = Duration::from_millis(ms);
    }
    if let Some(ms) = args.worker_timeout_ms {
        c.worker_timeout = Duration::from_millis(ms.max(1));
    }
    c.metrics_addr = args
        .metrics_port
        .or(file.metrics_port)
        .map(|port| std::net::SocketAddr::new(c.http_addr, port));
    c.block_time =
        if args.on_demand || (args.block_time_ms.is_none() && file.on_demand == Some(true)) {
            BlockTime::OnDemand
        } else {
            let ms = args.block_time_ms.or(file.block_time_ms).unwrap_or(1000);
            anyhow::ensure!(
                ms > 0,
                "block time must be positive (use --on-demand instead)"
            );
            BlockTime::Interval(Duration::from_millis(ms))
        };
    Ok(c)
}

fn parse_key(hex: &str) -> anyhow::Result<alloy_signer_local::PrivateKeySigner> {
    hex.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("not a hex secp256k1 private key: {e}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Node(args) => {
            let config = node_config(args)?;
            let node = pipe_node::node::launch(config, Arc::new(SystemClock))
                .await
                .context("starting node")?;
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = node.stopped() => {}
            }
            tracing::info!(target: "pipe::node", "shutting down");
            node.shutdown().await;
        }
        Command::Worker(args) => {
            let key = match (&args.key, args.dev_key) {
                (Some(hex), _) => Some(parse_key(hex)?),
                (None, true) => Some(pipe_node::dev::dev_worker_signer()),
                (None, false) => None,
            };
            let options = pipe_node::worker_server::WorkerOptions {
                name: args
                    .name
                    .unwrap_or_else(|| format!("worker-{}", args.listen.port())),
                node: args.node,
                listen: args.listen,
                capacity: args.capacity.max(1),
                key,
                latency: Duration::from_millis(args.model_latency_ms.unwrap_or(0)),
            };
            let signer = options.key.as_ref().map(|k| k.address());
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let (addr, server) = pipe_node::worker_server::serve(options, async move {
                let _ = stop_rx.await;
            })
            .await?;
            // Tests and scripts read the address from this line.
            println!("Listening on {addr}");
            if let Some(a) = signer {
                println!("Signing TEE results as {a}");
            }
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            let _ = stop_tx.send(());
            let _ = server.await;
        }
        Command::Replay(args) => {
            let config = node_config(args)?;
            let report =
                tokio::task::spawn_blocking(move || pipe_node::replay::replay(&config)).await??;
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        Command::Model(ModelCommand::Add {
            file,
            rpc,
            name,
            decimals,
            cost_units,
        }) => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = name.or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()));
            let options = pipe_rpc::UploadOptions {
                name,
                decimals,
                cost_units,
            };
            let meta = pipe_node::models::upload(&rpc, &bytes, &options).await?;
            println!("{}", pipe_node::models::describe_meta(&meta));
            println!("{}", meta.id);
        }
        Command::Model(ModelCommand::List { rpc }) => {
            for meta in pipe_node::models::list(&rpc).await? {
                println!("{}\n", pipe_node::models::describe_meta(&meta));
            }
        }
        Command::Bench(BenchCommand::Inference {
            dir,
            iterations,
            warmup,
            python,
            onnxruntime_lib,
        }) => {
            let out = tokio::task::spawn_blocking(move || {
                let baselines = pipe_node::bench_inference::Baselines {
                    python: python.as_deref(),
                    onnxruntime_lib: onnxruntime_lib.as_deref(),
                };
                pipe_node::bench_inference::run(&dir, iterations, warmup, baselines)
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Bench(BenchCommand::Pipe {
            txs,
            ready,
            rounds,
            latency_ms,
            workers,
            block_time_ms,
        }) => {
            let out = pipe_node::bench_pipe::run(pipe_node::bench_pipe::PipeBench {
                txs,
                ready,
                rounds,
                latency: Duration::from_millis(latency_ms),
                workers,
                block_time: Duration::from_millis(block_time_ms.max(1)),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Bench(BenchCommand::Scale {
            pending,
            slots,
            latency_ms,
        }) => {
            let out = pipe_node::bench_scale::run(pipe_node::bench_scale::ScaleBench {
                pending,
                slots,
                latency: Duration::from_millis(latency_ms.max(1)),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Bench(BenchCommand::Congestion {
            loads,
            seconds,
            warmup,
            latency_ms,
            workers,
            block_time_ms,
            ttl_blocks,
            systems,
            seed,
            out,
        }) => {
            anyhow::ensure!(
                loads.iter().all(|l| *l > 0.0) && seconds > warmup && workers > 0,
                "loads must be positive, --seconds above --warmup, --workers at least 1"
            );
            let out =
                pipe_node::bench_congestion::run(pipe_node::bench_congestion::CongestionBench {
                    loads,
                    seconds,
                    warmup,
                    latency: Duration::from_millis(latency_ms),
                    workers,
                    block_time: Duration::from_millis(block_time_ms.max(1)),
                    ttl_blocks,
                    systems,
                    seed,
                    out,
                })
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Bench(BenchCommand::Exec { txs, rounds, token }) => {
            let out =
                tokio::task::spawn_blocking(move || pipe_node::bench::exec(txs, rounds, token))
                    .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Command::Bench(BenchCommand::Ingest {
            txs,
            block_time_ms,
            anvil,
        }) => {
            let out = pipe_node::bench::ingest(txs, block_time_ms, anvil).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
