//! `pipe localnet --validators N`: a validator network on this machine in one command.
//!
//! Each validator is a separate `pipe node --dev --validator` process with its own data
//! directory, RPC port, metrics port and p2p port, all on loopback. Keys and the validator set
//! file are made on first start and kept in the network's directory, so starting again with
//! the same directory resumes the same chain. Every validator serves the dev chain's RPC (its
//! funded, unlocked accounts and example models); a transaction sent to any is gossiped to
//! the others.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context;
use pipe_consensus::keys::{self, ValidatorEntry, ValidatorSetFile};
use tracing::{info, warn};

/// How to lay the network out.
#[derive(Clone, Debug)]
pub struct LocalnetConfig {
    pub validators: usize,
    /// Keys, the set file and each validator's data and log.
    pub dir: PathBuf,
    /// Validator `i` serves RPC on `http_port + i`, metrics on `metrics_port + i` and meets
    /// its peers on `p2p_port + i`.
    pub http_port: u16,
    pub metrics_port: u16,
    pub p2p_port: u16,
    /// Validator `i` serves its pipeline page on `ui_port + i`; `None`: no pages.
    pub ui_port: Option<u16>,
    pub block_time_ms: u64,
    /// The validators' check of a leader's VANILLA results: `all`, `1/N` or `off`.
    pub result_check: String,
    /// The `pipe` binary to run.
    pub exe: PathBuf,
    /// More `pipe node` flags for every validator.
    pub node_args: Vec<String>,
}

/// One running validator process.
#[derive(Debug)]
pub struct Member {
    pub rpc_url: String,
    pub dir: PathBuf,
    pub child: Child,
}

/// The running network.
#[derive(Debug)]
pub struct Localnet {
    pub members: Vec<Member>,
    config: LocalnetConfig,
}

/// A new directory for a network, kept after the run (its logs are what an operator reads).
pub fn new_dir() -> anyhow::Result<PathBuf> {
    Ok(tempfile::Builder::new()
        .prefix("pipe-localnet-")
        .tempdir()?
        .keep())
}

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn member_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("validator-{i}"))
}

/// Makes the keys and the set file if the directory has none; returns the set file's path.
pub fn prepare(config: &LocalnetConfig) -> anyhow::Result<PathBuf> {
    let set_path = config.dir.join("validators.json");
    if set_path.exists() {
        return Ok(set_path);
    }
    std::fs::create_dir_all(&config.dir)
        .with_context(|| format!("creating {}", config.dir.display()))?;
    let mut validators = Vec::new();
    for i in 0..config.validators {
        let dir = member_dir(&config.dir, i);
        std::fs::create_dir_all(&dir)?;
        let key = keys::generate();
        keys::write_key(&dir.join("key"), &key)?;
        use commonware_cryptography::Signer as _;
        validators.push(ValidatorEntry {
            public_key: keys::public_hex(&key.public_key()),
            address: SocketAddr::new(LOOPBACK, config.p2p_port + i as u16),
        });
    }
    let file = ValidatorSetFile {
        block_time_ms: config.block_time_ms,
        result_check: config.result_check.clone(),
        validators,
    };
    std::fs::write(&set_path, serde_json::to_string_pretty(&file)?)?;
    Ok(set_path)
}

/// The `pipe node` arguments of validator `i`.
pub fn node_args(config: &LocalnetConfig, set: &Path, i: usize) -> Vec<String> {
    let dir = member_dir(&config.dir, i);
    let mut args: Vec<String> = vec![
        "node".into(),
        "--dev".into(),
        "--validator".into(),
        "--key".into(),
        dir.join("key").display().to_string(),
        "--validators".into(),
        set.display().to_string(),
        "--datadir".into(),
        dir.join("data").display().to_string(),
        "--http.port".into(),
        (config.http_port + i as u16).to_string(),
        "--metrics.port".into(),
        (config.metrics_port + i as u16).to_string(),
    ];
    match config.ui_port {
        Some(port) => args.extend(["--ui.port".into(), (port + i as u16).to_string()]),
        None => args.push("--no-ui".into()),
    }
    args.extend(config.node_args.iter().cloned());
    args
}

/// Starts validator `i` of a prepared network; its output goes to `node.log` in its directory.
pub fn start_member(config: &LocalnetConfig, set: &Path, i: usize) -> anyhow::Result<Member> {
    let dir = member_dir(&config.dir, i);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("node.log"))?;
    let child = Command::new(&config.exe)
        .args(node_args(config, set, i))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", config.exe.display()))?;
    Ok(Member {
        rpc_url: format!("http://{LOOPBACK}:{}", config.http_port + i as u16),
        dir,
        child,
    })
}

/// Starts every validator and waits until each answers RPC.
pub async fn start(config: LocalnetConfig) -> anyhow::Result<Localnet> {
    anyhow::ensure!(config.validators >= 1, "at least one validator");
    let set = prepare(&config)?;
    let mut members = Vec::new();
    for i in 0..config.validators {
        members.push(start_member(&config, &set, i)?);
    }
    let mut net = Localnet { members, config };
    for i in 0..net.members.len() {
        if let Err(e) = net.wait_ready(i, Duration::from_secs(120)).await {
            net.stop().await;
            return Err(e);
        }
    }
    info!(target: "pipe::localnet", validators = net.members.len(), "localnet up");
    Ok(net)
}

impl Localnet {
    pub fn config(&self) -> &LocalnetConfig {
        &self.config
    }

    /// Waits until validator `i` answers `eth_chainId`.
    pub async fn wait_ready(&mut self, i: usize, within: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let started = Instant::now();
        let member = &mut self.members[i];
        loop {
            if let Some(status) = member.child.try_wait()? {
                anyhow::bail!(
                    "validator {i} exited ({status}); see {}",
                    member.dir.join("node.log").display()
                );
            }
            let answer = client
                .post(&member.rpc_url)
                .json(
                    &serde_json::json!({"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}),
                )
                .send()
                .await;
            if matches!(answer, Ok(r) if r.status().is_success()) {
                return Ok(());
            }
            if started.elapsed() > within {
                anyhow::bail!("validator {i} did not answer at {}", member.rpc_url);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops every validator (SIGTERM, then SIGKILL after 20 s) and waits for them.
    pub async fn stop(&mut self) {
        for m in &mut self.members {
            terminate(&mut m.child);
        }
        for (i, m) in self.members.iter_mut().enumerate() {
            let started = Instant::now();
            loop {
                match m.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > Duration::from_secs(20) => {
                        warn!(target: "pipe::localnet", validator = i, "did not stop: killing");
                        let _ = m.child.kill();
                        let _ = m.child.wait();
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        }
    }
}

/// Asks a child to stop as Ctrl-C would.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}
