//! `pipe node --validator`: the node's pieces handed to a validator ([`pipe_consensus::node`]).
//!
//! - Results check: the chain compares a leader's VANILLA results with this node's own, from
//!   PIPE's cache or, on a miss, a run on this node bounded by the worker timeout
//!   ([`NodeLocal`]). A model failure is a fact and is compared; a timeout or a missing
//!   model is not, and leaves the block pending.
//! - Gossip: every transaction the pool admits (from RPC, or from a peer for the first time)
//!   goes to the other validators; what they send goes through the same admission as
//!   `eth_sendRawTransaction`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
};

use futures::channel::mpsc;
use pipe_chain::{LocalResult, LocalResults};
use pipe_executor::{Executor, InferenceCall, InferenceFailure, Purpose, failure_result};
use pipe_inference_pool::Pipe;
use pipe_mempool::{Pool, PoolEvent, PoolListener, SenderState};
use pipe_primitives::SealedBlock;
use pipe_storage::Store;
use tokio::sync::watch;
use tracing::debug;

use crate::models::NodeModels;

/// The validator flags.
#[derive(Clone, Debug)]
pub struct ValidatorOptions {
    /// The ed25519 key file (`pipe keys generate`).
    pub key: PathBuf,
    /// The validator set file; `None`: the set the genesis file names
    /// (`config.pipeValidators`).
    pub validators: Option<PathBuf>,
    /// Where to accept peers, if not this validator's address in the set.
    pub p2p_listen: Option<SocketAddr>,
}

/// `pipe keys generate`: a new validator key in `out` (never overwriting one); returns its
/// public key in hex, for the validator set file.
pub fn generate_key_file(out: &std::path::Path) -> anyhow::Result<String> {
    use commonware_cryptography::Signer as _;
    let key = pipe_consensus::keys::generate();
    pipe_consensus::keys::write_key(out, &key)?;
    Ok(pipe_consensus::keys::public_hex(&key.public_key()))
}

/// This node's own results for the check of a leader's.
#[derive(Debug)]
pub struct NodeLocal {
    pub pipe: Option<Arc<Pipe>>,
    pub models: Arc<NodeModels>,
    /// Found in PIPE's cache / run here / not computable.
    pub hits: AtomicU64,
    pub runs: AtomicU64,
    pub unavailable: AtomicU64,
}

impl NodeLocal {
    pub fn new(pipe: Option<Arc<Pipe>>, models: Arc<NodeModels>) -> Self {
        Self {
            pipe,
            models,
            hits: AtomicU64::new(0),
            runs: AtomicU64::new(0),
            unavailable: AtomicU64::new(0),
        }
    }

    /// Prometheus text lines.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (what, value) in [
            ("cache_hits", &self.hits),
            ("local_runs", &self.runs),
            ("unavailable", &self.unavailable),
        ] {
            let name = format!("pipe_validator_result_{what}");
            out.push_str(&format!(
                "# HELP {name} leader results checked against this node's own: {what}.\n# TYPE {name} counter\n{name}_total {}\n",
                value.load(Relaxed)
            ));
        }
        out
    }
}

impl LocalResults for NodeLocal {
    fn result(&self, call: &InferenceCall) -> LocalResult {
        if let Some(pipe) = &self.pipe {
            use pipe_builder::InferenceGate;
            if let Some(cached) = pipe.results().infer(call, Purpose::Block) {
                self.hits.fetch_add(1, Relaxed);
                return LocalResult::Computed(cached);
            }
        }
        self.runs.fetch_add(1, Relaxed);
        match self.models.compute_for_worker(call) {
            Ok(result) => LocalResult::Computed(result),
            Err(e @ (InferenceFailure::Timeout(_) | InferenceFailure::Unavailable(_))) => {
                self.unavailable.fetch_add(1, Relaxed);
                LocalResult::Unavailable(e.to_string())
            }
            Err(failure) => LocalResult::Computed(failure_result(call.key, &failure)),
        }
    }
}

/// Sends what the pool admits to the other validators.
struct Outbound(mpsc::UnboundedSender<Vec<u8>>);

impl PoolListener for Outbound {
    fn on_event(&self, event: &PoolEvent) {
        if let PoolEvent::Added { tx, .. } = event {
            let _ = self.0.unbounded_send(tx.encoded.to_vec());
        }
    }
}

/// A listener for `pool` whose admitted transactions come out of the receiver.
pub fn outbound(pool: &Pool) -> mpsc::UnboundedReceiver<Vec<u8>> {
    let (tx, rx) = mpsc::unbounded();
    pool.add_listener(Arc::new(Outbound(tx)));
    rx
}

/// Admission of transactions from peers, on the node's runtime.
pub fn inbound(
    runtime: tokio::runtime::Handle,
    pool: Arc<Pool>,
    store: Arc<Store>,
    executor: Executor,
    head: watch::Receiver<Arc<SealedBlock>>,
) -> Box<dyn Fn(Vec<u8>) + Send + 'static> {
    Box::new(move |raw| {
        let (pool, store, executor, head) =
            (pool.clone(), store.clone(), executor.clone(), head.clone());
        runtime.spawn(async move {
            let base_fee = executor.next_base_fee(&head.borrow().header);
            let result = pool
                .submit(&raw, base_fee, |sender| {
                    let account = store.account(sender)?.unwrap_or_default();
                    Ok::<_, pipe_storage::StoreError>(SenderState {
                        nonce: account.nonce,
                        balance: account.balance,
                    })
                })
                .await;
            if let Err(e) = result {
                // Usually "already known": it came back from another peer.
                debug!(target: "pipe::consensus", error = %e, "gossiped transaction not admitted");
            }
        });
    })
}
