//! A validator inside a pipe node: commonware's tokio runtime on a thread of its own, the
//! authenticated `lookup` network between the validators of the set, the consensus engine
//! ([`crate::validator::start`]) and transaction gossip ([`crate::gossip`]).
//!
//! commonware's tokio runner owns its runtime (it calls `block_on`), so it cannot run inside
//! the node's; it gets a thread, and the two talk through channels and the shared chain and
//! pool (both thread-safe). Its storage (consensus journals and archives) lives under the
//! node's data directory. [`Running::stop`] ends the runtime and joins the thread.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use commonware_cryptography::{ChaCha20Poly1305, Signer, ed25519::PrivateKey};
use commonware_p2p::{Address, AddressableManager, authenticated::lookup};
use commonware_runtime::{Quota, Runner as _, Spawner, Supervisor, tokio as cw_tokio};
use commonware_stream::{
    cups::{self, Cups},
    sake::{self, Sake},
};
use commonware_utils::{NZU32, NZUsize, ordered::Map};
use futures::channel::{mpsc, oneshot};
use pipe_primitives::SealedBlock;
use tracing::{error, info};

use crate::{
    app::{App, Verifier},
    block::BlockLimits,
    gossip,
    keys::ValidatorSet,
    validator::{self, Channels, Timeouts, ValidatorConfig, channel},
};

/// What a node passes to run as a validator.
pub struct NodeValidator {
    pub key: PrivateKey,
    pub set: ValidatorSet,
    /// Where to accept peers (default: this validator's address in the set).
    pub listen: Option<SocketAddr>,
    /// The consensus storage directory.
    pub storage: PathBuf,
    pub genesis: Arc<SealedBlock>,
    pub chain_id: u64,
    pub app: App,
    /// Raw transactions this node admitted, to send to the other validators.
    pub outbound: mpsc::UnboundedReceiver<Vec<u8>>,
    /// Raw transactions from the other validators, for this node's admission.
    pub inbound: Box<dyn Fn(Vec<u8>) + Send + 'static>,
}

/// A running validator.
pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops consensus and waits for its runtime to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Errors starting a validator.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("this node's key is not in the validator set")]
    NotAValidator,
    #[error("starting the consensus thread: {0}")]
    Thread(std::io::Error),
}

/// The signing namespace of chain `chain_id`: votes for one chain are worthless on another.
pub fn namespace(chain_id: u64) -> Vec<u8> {
    format!("pipe-{chain_id}").into_bytes()
}

/// Starts the validator on a thread of its own.
pub fn spawn(v: NodeValidator) -> Result<Running, NodeError> {
    let listen = v
        .listen
        .or_else(|| v.set.address_of(&v.key))
        .ok_or(NodeError::NotAValidator)?;
    if v.set.address_of(&v.key).is_none() {
        return Err(NodeError::NotAValidator);
    }
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("consensus".into())
        .spawn(move || run(v, listen, stop_rx))
        .map_err(NodeError::Thread)?;
    Ok(Running {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

fn run(v: NodeValidator, listen: SocketAddr, stop: oneshot::Receiver<()>) {
    let config = cw_tokio::Config::new()
        .with_worker_threads(2)
        .with_storage_directory(v.storage.clone());
    cw_tokio::Runner::new(config).start(|ctx| async move {
        let limits = BlockLimits::default();
        let me = v.key.public_key();
        let keys: Vec<_> = v.set.validators.iter().map(|(k, _)| k.clone()).collect();
        let namespace = namespace(v.chain_id);
        let handshake = Cups::<_, ChaCha20Poly1305>::new(
            Sake {
                signer: v.key.clone(),
                synchrony_bound: Duration::from_secs(5),
                max_handshake_age: Duration::from_secs(10),
                version: sake::Version::V1,
            },
            cups::Version::V1,
        );
        let mut p2p = lookup::Config::local(
            handshake,
            &namespace,
            listen,
            commonware_p2p::authenticated::peer_set_limit(keys.iter(), &me),
            validator::max_message_size(keys.len(), &limits),
            NZUsize!(1024),
        );
        p2p.allow_private_ips = true;
        let (mut network, mut oracle) = lookup::Network::new(ctx.child("network"), p2p);
        let peers: Map<_, Address> = match v
            .set
            .validators
            .iter()
            .map(|(k, a)| (k.clone(), Address::from(*a)))
            .collect::<Vec<_>>()
            .try_into()
        {
            Ok(map) => map,
            Err(_) => {
                error!(target: "pipe::consensus", "the validator set lists a key twice");
                return;
            }
        };
        let _ = oracle.track(0, peers);
        let quota = Quota::per_second(NZU32!(10_000));
        let mut register = |c| network.register(c, quota);
        let channels = Channels {
            votes: register(channel::VOTES),
            certificates: register(channel::CERTIFICATES),
            certificate_backfill: register(channel::CERTIFICATE_BACKFILL),
            block_backfill: register(channel::BLOCK_BACKFILL),
            blocks: register(channel::BLOCKS),
        };
        let (tx_sender, tx_receiver) = register(channel::TRANSACTIONS);
        network.start();

        let config = ValidatorConfig {
            key: v.key.clone(),
            validators: keys,
            namespace,
            partition_prefix: "pipe".into(),
            limits,
            genesis: v.genesis.clone(),
            timeouts: Timeouts::for_block_time(v.set.block_time),
        };
        let verifier: Verifier = v.app.verifier().clone();
        let engine = validator::start(
            ctx.child("validator"),
            config,
            v.app,
            verifier,
            oracle.clone(),
            oracle.clone(),
            channels,
        )
        .await;
        if let Err(e) = engine {
            error!(target: "pipe::consensus", error = %e, "validator did not start");
            return;
        }
        let inbound = v.inbound;
        let outbound = v.outbound;
        ctx.child("gossip").spawn(move |_| {
            gossip::run(tx_sender, tx_receiver, outbound, move |_, raw| inbound(raw))
        });
        info!(target: "pipe::consensus", %listen, validators = v.set.validators.len(), "validator started");
        // Returning ends every task of the runtime.
        let _ = stop.await;
        info!(target: "pipe::consensus", "validator stopping");
    });
}
