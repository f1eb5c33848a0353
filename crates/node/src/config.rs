//! Node configuration: command-line flags over an optional TOML file over defaults.

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

/// Everything `launch` needs. Built from flags and the config file by `main`.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub datadir: PathBuf,
    pub http_addr: IpAddr,
    /// 0 picks a free port (tests).
    pub http_port: u16,
    pub chain_id: u64,
    /// Geth-style genesis file; `None` for the dev genesis.
    pub genesis: Option<PathBuf>,
    pub gas_limit: Option<u64>,
    pub block_time: BlockTime,
    /// Dev accounts to derive and fund.
    pub dev_accounts: u32,
    /// Balance of each dev account, in ether.
    pub dev_balance_eth: u64,
    /// Print the banner on start: dev accounts, example models, chain id and address.
    pub print_banner: bool,
    /// How long `eth_call` / `eth_estimateGas` wait for one inference.
    pub inference_timeout: Duration,
    /// PIPE (default) or inline inference.
    pub inference_mode: InferenceMode,
    /// In-process inference workers (PIPE mode).
    pub workers: usize,
    /// Requests each in-process worker runs at once.
    pub worker_capacity: usize,
    /// Extra time every model run takes (inline and on in-process workers): a stand-in for
    /// heavy models in tests and benchmarks.
    pub model_latency: Duration,
    /// How long the dispatcher waits for a worker before retrying elsewhere.
    pub worker_timeout: Duration,
    /// One VANILLA result in this many from a remote worker is checked by running it on the
    /// node (0: none).
    pub audit_one_in: u64,
    /// Where Prometheus metrics are served (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Where the live pipeline page is served (`None`: not served; it needs PIPE).
    pub ui_addr: Option<std::net::SocketAddr>,
    /// Archive mode: the state as of every block stays readable (`eth_call`, balances,
    /// storage and traces at any block), at the disk cost of what each block overwrote.
    pub archive: bool,
    /// Remote inference workers (`pipe worker`) by URL, used beside the in-process ones.
    pub remote_workers: Vec<String>,
    /// What the in-process workers (and inline mode) sign TEE results with; `None`: TEE
    /// requests go to remote workers only.
    pub worker_key: Option<alloy_signer_local::PrivateKeySigner>,
    /// Blocks a transaction may wait for inclusion under PIPE before it expires (0: never).
    pub tx_ttl_blocks: u64,
    /// How the inference gas price moves with load (a chain rule: every node of a chain must
    /// use the same).
    pub inference_pricing: pipe_primitives::InferencePricing,
    /// Most live transactions with inference per sender (PIPE).
    pub max_inference_txs_per_sender: usize,
    /// Most cost units of inference one sender's live transactions may request (PIPE).
    pub max_inference_units_per_sender: u64,
    /// Follow this leader (its JSON-RPC URL) instead of building blocks.
    pub follow: Option<String>,
    /// How often a follower asks its leader for new blocks.
    pub follow_interval: Duration,
    /// Who may store models over RPC; `None`: open on the dev chain, local connections only
    /// on a chain from a genesis file.
    pub model_uploads: Option<pipe_rpc::ModelUploads>,
    /// Most bytes of models the store may hold in all.
    pub max_model_store_bytes: u64,
    /// RPC connection bounds (in all, per address, idle timeout, eviction of idle ones).
    pub rpc_connections: pipe_rpc::ConnLimits,
    /// Run as a validator of a set instead of sealing alone.
    pub validator: Option<crate::validator::ValidatorOptions>,
}

/// Where inference runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InferenceMode {
    /// The inference mempool: pre-executed in parallel, blocks never wait for a model.
    Pipe,
    /// Inside block execution, one call at a time (the baseline).
    Inline,
}

/// How blocks are sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockTime {
    Interval(Duration),
    OnDemand,
}

impl NodeConfig {
    /// The dev chain's defaults (what `pipe node --dev` runs).
    pub fn dev(datadir: PathBuf) -> Self {
        Self {
            datadir,
            http_addr: IpAddr::from([127, 0, 0, 1]),
            http_port: 8545,
            chain_id: pipe_primitives::chain::DEV_CHAIN_ID,
            genesis: None,
            gas_limit: None,
            block_time: BlockTime::Interval(Duration::from_secs(1)),
            dev_accounts: 10,
            dev_balance_eth: 10_000,
            print_banner: true,
            inference_timeout: Duration::from_secs(5),
            inference_mode: InferenceMode::Pipe,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            worker_capacity: 1,
            model_latency: Duration::ZERO,
            worker_timeout: Duration::from_secs(30),
            audit_one_in: 10,
            metrics_addr: None,
            ui_addr: None,
            archive: true,
            remote_workers: Vec::new(),
            worker_key: Some(crate::dev::dev_worker_signer()),
            tx_ttl_blocks: 64,
            inference_pricing: pipe_primitives::InferencePricing::default(),
            max_inference_txs_per_sender: 64,
            max_inference_units_per_sender: 1_000_000,
            follow: None,
            follow_interval: Duration::from_millis(500),
            model_uploads: None,
            max_model_store_bytes: 1 << 30,
            rpc_connections: pipe_rpc::ConnLimits::default(),
            validator: None,
        }
    }
}

/// The TOML config file: every field optional; flags given on the command line win.
///
/// ```toml
/// datadir = "/var/lib/pipe"
/// http_addr = "127.0.0.1"
/// http_port = 8545
/// chain_id = 31337
/// genesis = "genesis.json"
/// gas_limit = 30000000
/// block_time_ms = 1000      # or: on_demand = true
/// dev_accounts = 10
/// dev_balance_eth = 10000
/// inference = "pipe"        # or "inline"
/// workers = 4
/// metrics_port = 9001
/// ```
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub datadir: Option<PathBuf>,
    pub http_addr: Option<IpAddr>,
    pub http_port: Option<u16>,
    pub chain_id: Option<u64>,
    pub genesis: Option<PathBuf>,
    pub gas_limit: Option<u64>,
    pub block_time_ms: Option<u64>,
    pub on_demand: Option<bool>,
    pub dev_accounts: Option<u32>,
    pub dev_balance_eth: Option<u64>,
    pub inference: Option<InferenceMode>,
    pub workers: Option<usize>,
    pub metrics_port: Option<u16>,
    pub ui_port: Option<u16>,
    pub archive: Option<bool>,
}

impl FileConfig {
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }
}
