//! The `pipe` command line.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use pipe_node::config::{BlockTime, FileConfig, InferenceMode, NodeConfig};
use pipe_primitives::SystemClock;

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
    Worker(pipe_worker::cli::WorkerArgs),
    /// Validator keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Start a network of validators on this machine (separate processes on loopback); Ctrl-C
    /// stops them all.
    Localnet(LocalnetArgs),
    /// Answer one inference request on this machine, as the precompile would in a block, and
    /// print the ABI-encoded `ModelOutput` (hex). For Solidity tests (`vm.ffi`, see
    /// contracts/src/PipeForge.sol). The dev chain's example models are known; add others with
    /// `--model`.
    Infer {
        /// `runModelInference` calldata as a contract sends it to 0x…F4 (hex), or `-` to read
        /// it from standard input.
        calldata: String,
        /// More model files (.onnx), found by the request's modelCID.
        #[arg(long = "model", value_name = "FILE")]
        models: Vec<PathBuf>,
        /// Decimals the `--model` files are uploaded with (default 8): they set the output's
        /// encoding.
        #[arg(long)]
        decimals: Option<u32>,
    },
    /// Benchmarks; each prints one JSON object (runs `pipe-bench`, built beside `pipe`).
    #[command(disable_help_flag = true)]
    Bench {
        /// `pipe-bench`'s arguments (`pipe bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

#[derive(Subcommand, Debug)]
enum ModelCommand {
    /// Upload an ONNX model or a GGUF language model (large files go in chunks); prints its
    /// metadata, and its id (the modelCID) alone on the last line.
    Add {
        /// The .onnx or .gguf file.
        file: PathBuf,
        /// The node's JSON-RPC URL.
        #[arg(
            long,
            visible_alias = "rpc-url",
            env = "ETH_RPC_URL",
            default_value = "http://127.0.0.1:8545"
        )]
        rpc: String,
        /// A label for humans (default: the file name).
        #[arg(long)]
        name: Option<String>,
        /// Decimals of float outputs, 0..=18 (default 8); ONNX models only.
        #[arg(long)]
        decimals: Option<u32>,
        /// Cost units to charge gas for (per token for a language model), if above the
        /// derived value.
        #[arg(long)]
        cost_units: Option<u64>,
    },
    /// List the stored models, each with its id (the modelCID contracts name).
    List {
        /// The node's JSON-RPC URL.
        #[arg(
            long,
            visible_alias = "rpc-url",
            env = "ETH_RPC_URL",
            default_value = "http://127.0.0.1:8545"
        )]
        rpc: String,
    },
    /// Print the id (modelCID) of model files, without a node: the id is the content's hash.
    Id {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum KeysCommand {
    /// Make a validator key (ed25519): writes the private key to FILE (mode 0600) and prints
    /// the public key for the validator set file.
    Generate {
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Args, Debug)]
struct LocalnetArgs {
    /// How many validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// Keys, the validator set and each validator's data and log (kept: starting again with
    /// the same directory resumes the chain). Default: a new temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Validator i serves JSON-RPC on this port + i.
    #[arg(long = "http.port", default_value_t = 8545)]
    http_port: u16,
    /// Validator i serves metrics on this port + i.
    #[arg(long = "metrics.port", default_value_t = 9100)]
    metrics_port: u16,
    /// Validator i meets its peers on this port + i.
    #[arg(long = "p2p.port", default_value_t = 30400)]
    p2p_port: u16,
    /// Validator i serves its pipeline page on this port + i.
    #[arg(long = "ui.port", default_value_t = DEV_UI_PORT)]
    ui_port: u16,
    /// The chain's block time (whole seconds).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    block_time_ms: u64,
    /// How validators check a leader's VANILLA results: `all`, `1/N` (a sample) or `off`.
    #[arg(long, default_value = "all")]
    result_check: String,
}

#[derive(Args, Debug)]
struct NodeArgs {
    /// Run as a validator of the set in --validators, with the key in --key: blocks are
    /// proposed, verified and finalized by BFT consensus among them.
    #[arg(long, requires = "key")]
    validator: bool,
    /// This validator's key file (`pipe keys generate`).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// The validator set file (JSON: validators' public keys and p2p addresses, block time,
    /// result-check policy); default: the set the --genesis file names in
    /// `config.pipeValidators`.
    #[arg(long, value_name = "FILE")]
    validators: Option<PathBuf>,
    /// Where to accept peers (default: this validator's address in the set file).
    #[arg(long = "p2p.addr", value_name = "ADDR")]
    p2p_addr: Option<std::net::SocketAddr>,
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
    /// Check one VANILLA result in N from remote workers by running it on this node; a worker
    /// whose result differs is quarantined (0: no checks).
    #[arg(long, value_name = "N")]
    audit_one_in: Option<u64>,
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
    /// Serve the live pipeline page on this port (0 picks a free one). The dev chain serves
    /// it on 8580 unless told otherwise; other chains only when given.
    #[arg(long = "ui.port", value_name = "PORT", conflicts_with = "no_ui")]
    ui_port: Option<u16>,
    /// Do not serve the pipeline page.
    #[arg(long)]
    no_ui: bool,
    /// Keep the state as of every block readable (the dev chain's default).
    #[arg(long, conflicts_with = "no_archive")]
    archive: bool,
    /// Keep only the recent blocks' state (128), not an archive (the default with --genesis).
    #[arg(long)]
    no_archive: bool,
    /// Who may store models with pipe_uploadModel: `open` (anyone; the dev chain's default),
    /// `local` (connections from this machine, e.g. `pipe model add`; the default with
    /// --genesis) or `off`.
    #[arg(long, value_enum)]
    model_uploads: Option<UploadsArg>,
    /// Most megabytes of model files the store may hold in all.
    #[arg(long, value_name = "MB")]
    max_model_store_mb: Option<u64>,
    /// Most RPC connections at once; when full, a newcomer takes the place of the connection
    /// idle longest (if idle 5 s or more).
    #[arg(long, value_name = "N")]
    rpc_max_connections: Option<usize>,
    /// Most RPC connections from one IP address.
    #[arg(long, value_name = "N")]
    rpc_max_connections_per_ip: Option<usize>,
    /// RPC connections with no traffic for this long are closed, in seconds.
    #[arg(long, value_name = "S")]
    rpc_idle_timeout_s: Option<u64>,
}

fn default_datadir(chain_id: u64) -> PathBuf {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("pipe").join(chain_id.to_string())
}

/// Where the dev chain serves its pipeline page unless told otherwise.
const DEV_UI_PORT: u16 = 8580;

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
    if args.validator {
        c.validator = Some(pipe_node::validator::ValidatorOptions {
            key: args.key.context("--validator needs --key")?,
            validators: args.validators,
            p2p_listen: args.p2p_addr,
        });
    }
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
    c.audit_one_in = args.audit_one_in.unwrap_or(c.audit_one_in);
    if let Some(ms) = args.worker_timeout_ms {
        c.worker_timeout = Duration::from_millis(ms.max(1));
    }
    c.model_uploads = args.model_uploads.map(|u| match u {
        UploadsArg::Open => pipe_rpc::ModelUploads::Open,
        UploadsArg::Local => pipe_rpc::ModelUploads::Local,
        UploadsArg::Off => pipe_rpc::ModelUploads::Off,
    });
    if let Some(mb) = args.max_model_store_mb {
        c.max_model_store_bytes = mb.saturating_mul(1 << 20);
    }
    let limits = &mut c.rpc_connections;
    limits.max_connections = args
        .rpc_max_connections
        .unwrap_or(limits.max_connections)
        .max(1);
    limits.max_per_ip = args
        .rpc_max_connections_per_ip
        .unwrap_or(limits.max_per_ip)
        .max(1);
    if let Some(s) = args.rpc_idle_timeout_s {
        limits.idle_timeout = Duration::from_secs(s.max(1));
    }
    c.metrics_addr = args
        .metrics_port
        .or(file.metrics_port)
        .map(|port| std::net::SocketAddr::new(c.http_addr, port));
    c.archive = if args.archive {
        true
    } else if args.no_archive {
        false
    } else {
        file.archive.unwrap_or(c.genesis.is_none())
    };
    let dev_ui = (c.genesis.is_none()).then_some(DEV_UI_PORT);
    c.ui_addr = (!args.no_ui)
        .then(|| args.ui_port.or(file.ui_port).or(dev_ui))
        .flatten()
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

use pipe_worker::cli::parse_key;

/// `--model-uploads`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum UploadsArg {
    Open,
    Local,
    Off,
}

/// `pipe bench …` runs `pipe-bench …`, the benchmarks' own binary beside this one, so the node
/// does not link the benchmarks' dependencies. Its exit status becomes ours.
fn forward_to_bench(args: &[std::ffi::OsString]) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("locating the pipe binary")?;
    let bench = me.with_file_name("pipe-bench");
    anyhow::ensure!(
        bench.exists(),
        "{} is not built: cargo build --release -p pipe-bench",
        bench.display()
    );
    let status = std::process::Command::new(&bench)
        .args(args)
        .status()
        .with_context(|| format!("running {}", bench.display()))?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

async fn run_localnet(args: LocalnetArgs) -> anyhow::Result<()> {
    let dir = match args.dir {
        Some(d) => d,
        None => pipe_node::localnet::new_dir()?,
    };
    let config = pipe_node::localnet::LocalnetConfig {
        validators: args.validators,
        dir: dir.clone(),
        http_port: args.http_port,
        metrics_port: args.metrics_port,
        p2p_port: args.p2p_port,
        ui_port: Some(args.ui_port),
        block_time_ms: args.block_time_ms,
        result_check: args.result_check,
        exe: std::env::current_exe().context("locating the pipe binary")?,
        node_args: Vec::new(),
    };
    let mut net = pipe_node::localnet::start(config).await?;
    println!(
        "Validators ({}; data and logs in {}):",
        net.members.len(),
        dir.display()
    );
    for (i, m) in net.members.iter().enumerate() {
        println!("  validator {i}: {} (pid {})", m.rpc_url, m.child.id());
    }
    let signers = pipe_node::dev::dev_signers(10)?;
    println!("{}", pipe_node::dev::banner(&signers, 10_000));
    println!("Ctrl-C stops them all.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    net.stop().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // SAFETY: the first thing main does; no other thread exists yet.
    unsafe { pipe_llm::pin_threads() };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    pipe_worker::cli::init_logging();
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
        Command::Worker(args) => pipe_worker::cli::run(args).await?,
        Command::Keys(KeysCommand::Generate { out }) => {
            println!("{}", pipe_node::validator::generate_key_file(&out)?);
        }
        Command::Localnet(args) => run_localnet(args).await?,
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
        Command::Model(ModelCommand::Id { files }) => {
            for file in files {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                println!("{}", pipe_primitives::inference::ModelId::of(&bytes));
            }
        }
        Command::Infer {
            calldata,
            models,
            decimals,
        } => {
            let text = if calldata == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                calldata
            };
            let data =
                alloy_primitives::hex::decode(text.trim()).context("calldata must be hex (0x…)")?;
            let mut offline = pipe_node::models::offline::OfflineModels::with_examples();
            for file in models {
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                let name = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                offline.add(&name, bytes, decimals, None);
            }
            let output = offline.infer(&data)?;
            println!("{output}");
        }
        Command::Bench { args } => forward_to_bench(&args)?,
    }
    Ok(())
}
