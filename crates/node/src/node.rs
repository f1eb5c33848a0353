//! Starting and stopping a node.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use alloy_primitives::{B256, U256};
use anyhow::Context;
use jsonrpsee::server::ServerHandle;
use pipe_builder::{BuildStats, InferenceGate, PayloadBuilder};
use pipe_chain::{Chain, ChainListener, DevSealer, SealMode};
use pipe_executor::Executor;
use pipe_mempool::{Pool, PoolConfig, SenderState};
use pipe_primitives::Tasks;
use pipe_primitives::{ChainConfig, Clock, SealedBlock};
use pipe_rpc::{NodeHandle, RpcConfig};
use pipe_storage::{PendingLog, Store};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    config::{BlockTime, InferenceMode, NodeConfig},
    dev,
    follow::Follower,
    models::NodeModels,
    workers::{LocalWorker, RemoteWorker},
};
use pipe_inference_pool::{Pipe, PipeConfig, Worker};
use pipe_primitives::status::TxStatus;

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub rpc_addr: SocketAddr,
    /// Where the start spent its time.
    pub startup: Startup,
    pub store: Arc<Store>,
    pub pool: Arc<Pool>,
    pub executor: Executor,
    pub models: Arc<NodeModels>,
    /// The chain: propose / verify / finalize, the one writer of blocks.
    pub chain: Arc<Chain>,
    /// The dev chain's driver; `None` on a follower.
    pub sealer: Option<Arc<DevSealer>>,
    pub head: watch::Receiver<Arc<SealedBlock>>,
    pub dev_keys: Vec<alloy_signer_local::PrivateKeySigner>,
    /// The inference mempool; `None` in inline mode.
    pub pipe: Option<Arc<Pipe>>,
    /// Where Prometheus metrics are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the live pipeline page is served, if it is.
    pub ui_addr: Option<SocketAddr>,
    /// The follower, when the node follows a leader (`--follow`).
    pub follower: Option<Arc<Follower>>,
    /// Consensus, when the node is a validator (`--validator`).
    validator: Option<pipe_consensus::node::Running>,
    shutdown: watch::Sender<bool>,
    rpc: ServerHandle,
    tasks: Tasks,
}

impl RunningNode {
    /// URL of the HTTP (and WebSocket) endpoint.
    pub fn rpc_url(&self) -> String {
        format!("http://{}", self.rpc_addr)
    }

    /// Stops sealing, PIPE, the follower, RPC and persistence, and returns once every task
    /// the node started has ended and the store is closed: the data directory is free for a
    /// restart in the same process, or a tool, the moment this returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        // Consensus first: nothing finalizes once the rest starts stopping.
        if let Some(v) = self.validator.take() {
            let _ = tokio::task::spawn_blocking(move || v.stop()).await;
        }
        let _ = self.rpc.stop();
        self.rpc.clone().stopped().await;
        // Every loop has seen the stop signal or will at its next await; blocking work in
        // flight (a seal, a model run, a discovery pass, an RPC read) runs to its end.
        self.tasks.wait().await;
        // Nothing can submit any more: the journal writes what is queued and stops.
        let pool = self.pool.clone();
        let _ = tokio::task::spawn_blocking(move || pool.close()).await;
        let store = self.store.clone();
        drop(self);
        match Arc::try_unwrap(store) {
            Ok(store) => drop(store),
            // A bug: something outside the node's tasks kept the store.
            Err(store) => warn!(
                target: "pipe::node",
                holders = Arc::strong_count(&store) - 1,
                "shut down with the store still held"
            ),
        }
    }

    /// Resolves when a stop was requested from outside (Ctrl-C handled by `main`).
    pub async fn stopped(&self) {
        self.rpc.clone().stopped().await
    }
}

/// The chain configuration a node config describes.
pub fn chain_config(config: &NodeConfig) -> anyhow::Result<ChainConfig> {
    let mut chain = match &config.genesis {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading genesis {}", path.display()))?;
            let genesis: alloy_genesis::Genesis = serde_json::from_str(&text)
                .with_context(|| format!("parsing genesis {}", path.display()))?;
            let chain_id = if genesis.config.chain_id != 1 {
                genesis.config.chain_id
            } else {
                config.chain_id
            };
            ChainConfig::from_genesis(chain_id, genesis)
        }
        None => {
            let signers = dev::dev_signers(config.dev_accounts)?;
            let balance = U256::from(config.dev_balance_eth) * U256::from(10u128.pow(18));
            let mut c = ChainConfig::dev(dev::addresses(&signers), balance);
            c.chain_id = config.chain_id;
            // The worker registry, owned by the first dev account (the operator), with the
            // dev worker key registered so TEE requests work out of the box.
            let owner = dev::dev_signers(1)?[0].address();
            c.genesis.alloc.insert(
                pipe_executor::attest::WORKER_REGISTRY,
                dev::registry_account(owner, &[dev::dev_worker_signer().address()]),
            );
            c
        }
    };
    if let Some(limit) = config.gas_limit {
        chain.gas_limit = limit;
        chain.genesis.gas_limit = limit;
    }
    chain.inference_pricing = config.inference_pricing;
    Ok(chain)
}

/// Opens the store (creating genesis on first start), restores pending transactions, starts
/// RPC, persistence and the sealer.
pub async fn launch(config: NodeConfig, clock: Arc<dyn Clock>) -> anyhow::Result<RunningNode> {
    let launched = std::time::Instant::now();
    let mut startup = Startup::default();
    if config.validator.is_some() && config.follow.is_some() {
        anyhow::bail!("a validator does not follow a leader: drop --follow");
    }
    let validator_files = match &config.validator {
        Some(v) => {
            let key = pipe_consensus::keys::read_key(&v.key)?;
            let set = match (&v.validators, &config.genesis) {
                (Some(file), _) => pipe_consensus::keys::ValidatorSet::load(file)?,
                (None, Some(genesis)) => pipe_consensus::keys::ValidatorSet::from_genesis(genesis)?,
                (None, None) => anyhow::bail!(
                    "a validator needs the validator set: --validators FILE, or a --genesis file that names it"
                ),
            };
            Some((v.clone(), key, set))
        }
        None => None,
    };
    let chain = Arc::new(chain_config(&config)?);
    std::fs::create_dir_all(&config.datadir)
        .with_context(|| format!("creating data dir {}", config.datadir.display()))?;
    let db_path = config.datadir.join("chain.redb");
    let store =
        Arc::new(Store::open(&db_path).with_context(|| format!("opening {}", db_path.display()))?);
    store
        .set_archive(config.archive)
        .context("setting archive mode")?;
    let genesis = pipe_chain::genesis::init(&store, &chain).context("initialising genesis")?;
    info!(target: "pipe::node", genesis = %genesis.hash, head = store.head()?.unwrap_or_default(), "chain opened");

    let models = Arc::new(
        NodeModels::open(store.clone(), config.inference_timeout)?
            .with_latency(config.model_latency)
            .with_run_timeout(config.worker_timeout)
            .with_store_limit(config.max_model_store_bytes)
            .with_signer(config.worker_key.clone()),
    );
    // The dev chain comes with the example models, so the README's contracts work at once.
    let examples = if config.genesis.is_none() {
        models.add_examples()?
    } else {
        Vec::new()
    };
    let pipe_config = PipeConfig {
        worker_timeout_ms: config.worker_timeout.as_millis() as u64,
        tx_ttl_blocks: config.tx_ttl_blocks,
        max_inference_txs_per_sender: config.max_inference_txs_per_sender,
        max_inference_units_per_sender: config.max_inference_units_per_sender,
        audit_one_in: config.audit_one_in,
        ..PipeConfig::default()
    };
    let executor = Executor::new(chain.clone())
        .with_inference(models.clone(), pipe_executor::InferenceGas::default());
    // The pool owns the persisted pending set: acknowledged means durable.
    let pending_path = config.datadir.join("pending.log");
    let pending = Arc::new(
        PendingLog::open(&pending_path)
            .with_context(|| format!("opening {}", pending_path.display()))?,
    );
    migrate_legacy_pending(&store, &pending)?;
    let mut pool_config = PoolConfig::new(chain.chain_id, chain.gas_limit);
    // Only the dev chain takes impersonated (unsigned) transactions, as its controls do.
    pool_config.dev_impersonation =
        config.genesis.is_none() && config.follow.is_none() && validator_files.is_none();
    let pool = Arc::new(Pool::with_store(pool_config, pending)?);
    startup.open_ms = launched.elapsed().as_millis() as u64;
    let mut ledger = Chain::new(
        store.clone(),
        executor.clone(),
        models.clone() as Arc<dyn pipe_executor::InferenceProvider>,
    )?
    .with_pool(pool.clone());
    let head_rx = ledger.subscribe();
    // Every task the node starts, so shutdown knows when they have all ended.
    let tasks = Tasks::new();
    let mut workers = LocalWorker::pool(config.workers, &models, config.worker_capacity, &tasks);
    for url in &config.remote_workers {
        let remote = RemoteWorker::connect(url).await?;
        info!(target: "pipe::node", worker = remote.name(), capacity = remote.capacity(), signer = ?remote.signer(), "remote inference worker");
        workers.push(Arc::new(remote));
    }
    // PIPE listens to the pool before pending transactions are restored, so it tracks them.
    let pipe = match config.inference_mode {
        // A follower builds nothing, so it pre-executes nothing.
        _ if config.follow.is_some() => None,
        InferenceMode::Pipe => Some(Pipe::new(
            pipe_config,
            pool.clone(),
            store.clone(),
            executor.clone(),
            models.clone(),
            workers,
            clock.clone(),
            head_rx.clone(),
        )),
        InferenceMode::Inline => None,
    };
    if let Some(p) = &pipe {
        ledger = ledger.with_listener(Arc::new(PipeListener(p.clone())));
        p.set_auditor(Arc::new(crate::workers::LocalAuditor(models.clone())));
        // Results survive a restart, so restored transactions do not run their requests
        // again.
        // A cache, not a record: a node that cannot open it (a full disk) runs without it
        // and recomputes what a restart loses.
        let results_path = config.datadir.join("results.log");
        match PendingLog::open(&results_path) {
            Ok(results) => {
                let loaded = p.persist_results(Arc::new(results));
                if loaded > 0 {
                    info!(target: "pipe::node", loaded, "inference results restored");
                }
            }
            Err(e) => {
                tracing::warn!(target: "pipe::node", path = %results_path.display(), error = %e, "inference results will not survive a restart");
            }
        }
    }
    let mut node_local = None;
    if let Some((_, _, set)) = &validator_files {
        let local = Arc::new(crate::validator::NodeLocal::new(
            pipe.clone(),
            models.clone(),
        ));
        node_local = Some(local.clone());
        ledger = ledger.with_result_check(pipe_chain::ResultCheck {
            policy: set.result_check,
            local,
        });
    }
    let ledger = Arc::new(ledger);
    let follower = match &config.follow {
        Some(leader) => {
            let f = Arc::new(Follower::new(
                leader.clone(),
                ledger.clone(),
                models.clone(),
                clock.clone(),
                tasks.clone(),
            )?);
            f.check_genesis(&genesis).await?;
            Some(f)
        }
        None => {
            let started = std::time::Instant::now();
            let report = restore_pending(&store, &pool)?;
            startup.restored = report.restored;
            startup.dropped = report.dropped;
            startup.restore_ms = started.elapsed().as_millis() as u64;
            None
        }
    };

    let mut builder = PayloadBuilder::new(pool.clone(), executor.clone(), clock.clone());
    if let Some(p) = &pipe {
        builder = builder.with_gate(p.clone());
    }

    let signers = dev::dev_signers(if config.genesis.is_none() {
        config.dev_accounts
    } else {
        0
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let dev_controls: Arc<std::sync::OnceLock<Arc<dyn pipe_rpc::dev::DevControls>>> =
        Arc::default();
    let rpc_metrics: Arc<pipe_rpc::metrics::RpcMetrics> = Arc::default();
    let node = NodeHandle {
        metrics: rpc_metrics.clone(),
        dev: dev_controls.clone(),
        store: store.clone(),
        pool: pool.clone(),
        executor: executor.clone(),
        head: head_rx.clone(),
        accounts: dev::addresses(&signers),
        client_version: format!(
            "pipe/v{}/{}",
            env!("CARGO_PKG_VERSION"),
            pipe_executor::HARDFORK
        ),
        models: models.clone(),
        lifecycle: pipe
            .clone()
            .map(|p| Arc::new(Lifecycle(p)) as Arc<dyn pipe_rpc::TxLifecycle>),
        follows: config.follow.clone(),
        tasks: tasks.clone(),
        shutdown: shutdown_rx.clone(),
        model_uploads: config.model_uploads.unwrap_or(if config.genesis.is_none() {
            pipe_rpc::ModelUploads::Open
        } else {
            pipe_rpc::ModelUploads::Local
        }),
        // The dev accounts are unlocked on the dev chain only, as anvil's are.
        unlocked: if config.genesis.is_none() {
            signers.clone()
        } else {
            Vec::new()
        },
    };
    let mut rpc_config = RpcConfig::new(SocketAddr::new(config.http_addr, config.http_port));
    rpc_config.connections = config.rpc_connections;
    let (rpc_addr, rpc) = pipe_rpc::start(&rpc_config, node)
        .await
        .with_context(|| format!("starting RPC on {}", rpc_config.addr))?;

    let mode = match config.block_time {
        BlockTime::Interval(d) => SealMode::Interval(d),
        BlockTime::OnDemand => SealMode::OnDemand {
            min_gap: Duration::from_millis(0),
        },
    };
    // A validator proposes with the same payload job the dev sealer would use.
    let sealer_builder = builder.clone();
    let clock_for_mining = clock.clone();
    let sealer = Arc::new(DevSealer::new(
        ledger.clone(),
        builder,
        pool.clone(),
        clock,
        mode,
    ));
    // A validator proposes with the payload job, and verifies with the chain.
    let validator_app = validator_files.as_ref().map(|(_, key, set)| {
        use commonware_cryptography::Signer as _;
        let beneficiary = pipe_consensus::keys::beneficiary(&key.public_key());
        let app = pipe_consensus::app::App::new(
            ledger.clone(),
            sealer_builder,
            pipe_consensus::app::ProposeConfig {
                block_time: set.block_time,
                build_share: 0.5,
                beneficiary,
            },
        );
        (app, beneficiary)
    });
    let chain_gauges = crate::metrics_server::chain_gauges(head_rx.clone(), executor.clone());
    let chain_gauges: crate::metrics_server::Extra =
        Arc::new(move || format!("{}{}", chain_gauges(), rpc_metrics.render()));
    let extra: crate::metrics_server::Extra = match (&validator_app, &node_local) {
        (Some((app, _)), Some(local)) => {
            let (stats, local) = (app.verifier().stats().clone(), local.clone());
            Arc::new(move || format!("{}{}{}", chain_gauges(), stats.render(), local.render()))
        }
        _ => chain_gauges,
    };
    let mut metrics_addr = None;
    if let Some(p) = &pipe {
        p.spawn(&tasks, shutdown_rx.clone());
        if let Some(addr) = config.metrics_addr {
            let bound = crate::metrics_server::serve(
                addr,
                p.clone(),
                Some(extra),
                &tasks,
                shutdown_rx.clone(),
            )
            .await
            .with_context(|| format!("serving metrics on {addr}"))?;
            info!(target: "pipe::node", %bound, "metrics served");
            metrics_addr = Some(bound);
        }
    }
    let mut ui_addr = None;
    if let Some(addr) = config.ui_addr {
        match &pipe {
            Some(p) => {
                let sources = crate::pipeline_page::Sources {
                    pipe: p.clone(),
                    store: store.clone(),
                    head: head_rx.clone(),
                    models: models.clone(),
                };
                // The page is for people watching: a port taken (a second dev node on the
                // default one) costs the page, not the node.
                match crate::pipeline_page::serve(addr, sources, &tasks, shutdown_rx.clone()).await
                {
                    Ok(bound) => {
                        info!(target: "pipe::node", url = %format!("http://{bound}/"), "pipeline page served");
                        ui_addr = Some(bound);
                    }
                    Err(e) => {
                        tracing::warn!(target: "pipe::node", %addr, error = %e, "no pipeline page: its port cannot be used (give another with --ui.port)")
                    }
                }
            }
            None => {
                tracing::warn!(target: "pipe::node", "no pipeline page: this node runs no PIPE (inline inference, or it follows another node)")
            }
        }
    }
    let mut validator = None;
    let sealer = match (&follower, validator_files) {
        (Some(f), _) => {
            tasks.spawn(f.clone().run(config.follow_interval, shutdown_rx));
            None
        }
        (None, Some((options, key, set))) => {
            let (app, beneficiary) = validator_app.expect("made with the validator files");
            let running = pipe_consensus::node::spawn(pipe_consensus::node::NodeValidator {
                key,
                set,
                listen: options.p2p_listen,
                storage: config.datadir.join("consensus"),
                genesis: Arc::new(genesis.clone()),
                chain_id: chain.chain_id,
                app,
                outbound: crate::validator::outbound(&pool),
                inbound: crate::validator::inbound(
                    tokio::runtime::Handle::current(),
                    pool.clone(),
                    store.clone(),
                    executor.clone(),
                    head_rx.clone(),
                ),
            })?;
            info!(target: "pipe::node", %beneficiary, "validator started");
            validator = Some(running);
            None
        }
        (None, None) => {
            tasks.spawn(sealer.clone().run(tasks.clone(), shutdown_rx));
            if config.genesis.is_none() {
                let _ = dev_controls.set(Arc::new(DevMiner {
                    sealer: sealer.clone(),
                    clock: clock_for_mining.clone(),
                    pipe: pipe.clone(),
                }));
            }
            Some(sealer)
        }
    };

    if config.print_banner && !signers.is_empty() {
        println!("{}", dev::banner(&signers, config.dev_balance_eth));
    }
    if config.print_banner && !examples.is_empty() {
        println!("{}", dev::models_banner(&examples));
    }
    // In-process nodes (tests, benchmarks whose stdout is their JSON) print nothing.
    if config.print_banner {
        println!("Chain ID: {}", chain.chain_id);
        println!("Listening on {rpc_addr}");
    }
    info!(
        target: "pipe::node",
        %rpc_addr,
        mode = ?config.block_time,
        inference = ?config.inference_mode,
        workers = config.workers,
        "node started"
    );

    startup.total_ms = launched.elapsed().as_millis() as u64;
    Ok(RunningNode {
        startup,
        rpc_addr,
        store,
        pool,
        executor,
        models,
        chain: ledger,
        sealer,
        head: head_rx,
        dev_keys: signers,
        pipe,
        metrics_addr,
        ui_addr,
        shutdown,
        rpc,
        follower,
        validator,
        tasks,
    })
}

/// Moves pending transactions an older version kept in `chain.redb` into `pending.log`.
fn migrate_legacy_pending(store: &Store, pending: &PendingLog) -> anyhow::Result<()> {
    let legacy = store.legacy_pending()?;
    if !legacy.is_empty() {
        let ops: Vec<_> = legacy
            .into_iter()
            .map(|raw| (alloy_primitives::keccak256(&raw), Some(raw)))
            .collect();
        // Durable in the new file before the old copies go.
        pending.write(&ops, true)?;
        store.clear_legacy_pending()?;
        info!(target: "pipe::node", moved = ops.len(), "pending transactions moved to pending.log");
    }
    Ok(())
}

/// Puts the pool's persisted transactions back, against the head state.
fn restore_pending(store: &Store, pool: &Pool) -> anyhow::Result<pipe_mempool::Restored> {
    // A transaction waiting for the base fee to fall was acknowledged and waits again:
    // restore does not apply admission's fee-cap check.
    let state = store.state()?;
    let report = pool.restore(0, |sender| {
        let account = state.account(sender)?.unwrap_or_default();
        Ok::<_, pipe_storage::StoreError>(SenderState {
            nonce: account.nonce,
            balance: account.balance,
        })
    })?;
    if report.restored > 0 || report.dropped > 0 {
        info!(target: "pipe::node", restored = report.restored, dropped = report.dropped, "pending transactions restored");
    }
    Ok(report)
}

/// Where a start spent its time, for operators and `bench restart`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Startup {
    /// Opening the store and the pending log, genesis, models.
    pub open_ms: u64,
    /// Putting the persisted pending transactions back (admission of each).
    pub restore_ms: u64,
    pub restored: usize,
    pub dropped: usize,
    /// From the start of `launch` to RPC answering.
    pub total_ms: u64,
}

/// PIPE's lifecycle as the RPC sees it.
struct Lifecycle(Arc<Pipe>);

impl pipe_rpc::TxLifecycle for Lifecycle {
    fn status(&self, hash: &B256) -> Option<TxStatus> {
        self.0.status(hash)
    }
}

/// PIPE hears of finalized blocks.
struct PipeListener(Arc<Pipe>);

impl ChainListener for PipeListener {
    fn on_finalized(&self, block: &Arc<SealedBlock>, stats: Option<&BuildStats>) {
        self.0
            .on_finalized(block, &stats.copied().unwrap_or_default());
    }
}

/// `evm_mine` and its kin on the dev chain: one block now, sealed as the slot loop seals
/// (the sealer takes one seal at a time), with what is ready by then.
struct DevMiner {
    sealer: Arc<DevSealer>,
    clock: Arc<dyn pipe_primitives::Clock>,
    pipe: Option<Arc<pipe_inference_pool::Pipe>>,
}

/// How long `evm_mine` waits for PIPE's discovery to judge what just arrived (as anvil
/// includes a transaction sent just before `evm_mine`). Inference is not waited for.
const MINE_SETTLE: Duration = Duration::from_secs(2);

impl pipe_rpc::dev::DevControls for DevMiner {
    fn mine(&self, at: pipe_rpc::dev::MineAt) -> Result<u64, String> {
        if let Some(pipe) = &self.pipe {
            let until = std::time::Instant::now() + MINE_SETTLE;
            while !pipe.discovery_settled() && std::time::Instant::now() < until {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        // The build's time budget, as the on-demand sealer gives it: it stops earlier when the
        // pool runs dry.
        let at = match at {
            pipe_rpc::dev::MineAt::Clock => pipe_chain::SealAt::Clock,
            pipe_rpc::dev::MineAt::Exactly(t) => pipe_chain::SealAt::Exactly(t),
            pipe_rpc::dev::MineAt::AfterParent(s) => pipe_chain::SealAt::AfterParent(s),
        };
        self.sealer
            .seal_at(self.clock.now_ms() + 500, at)
            .map(|sealed| sealed.block.header.number)
            .map_err(|e| e.to_string())
    }

    fn increase_time(&self, seconds: u64) -> i64 {
        self.sealer.increase_time(seconds)
    }

    fn set_next_timestamp(&self, timestamp: u64) -> Result<(), String> {
        self.sealer.set_next_timestamp(timestamp)
    }

    fn head_timestamp(&self) -> u64 {
        self.sealer.head_timestamp()
    }

    fn mining(&self) -> pipe_rpc::dev::Mining {
        match self.sealer.mode() {
            SealMode::OnDemand { .. } => pipe_rpc::dev::Mining::Auto,
            SealMode::Interval(every) => pipe_rpc::dev::Mining::Interval(every.as_secs()),
            SealMode::Manual => pipe_rpc::dev::Mining::Manual,
        }
    }

    fn set_mining(&self, mining: pipe_rpc::dev::Mining) {
        self.sealer.set_mode(match mining {
            pipe_rpc::dev::Mining::Auto => SealMode::OnDemand {
                min_gap: Duration::ZERO,
            },
            pipe_rpc::dev::Mining::Interval(s) => SealMode::Interval(Duration::from_secs(s)),
            pipe_rpc::dev::Mining::Manual => SealMode::Manual,
        })
    }

    fn edit(&self, edits: pipe_primitives::StateEdits) -> Result<u64, String> {
        self.sealer
            .edit(edits)
            .map(|sealed| sealed.block.header.number)
            .map_err(|e| e.to_string())
    }

    fn snapshot(&self) -> u64 {
        self.sealer.snapshot()
    }

    fn revert(&self, id: u64) -> Result<bool, String> {
        self.sealer
            .revert(id)
            .map(|reverted| reverted.is_some())
            .map_err(|e| e.to_string())
    }

    fn reset(&self) -> Result<(), String> {
        self.sealer.reset().map(|_| ()).map_err(|e| e.to_string())
    }
}
