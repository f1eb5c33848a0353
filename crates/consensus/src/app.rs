//! The application consensus drives: propose on a parent, verify a leader's block before
//! voting, both through the chain's verbs ([`pipe_chain::Chain`]).
//!
//! Consensus may ask about a block whose ancestors this node has not verified (it missed
//! them, or it restarted and its tree of unfinalized blocks is empty). Both verbs therefore
//! first walk the ancestry back to a block the chain knows (the finalized head or a pending
//! block) and verify what lies between, oldest first.
//!
//! Verification never answers "invalid" for a reason that may pass: a timestamp ahead of the
//! local clock, a result this node cannot compute yet, a storage fault. It waits and asks
//! again, and consensus times the view out if that takes too long. Only what is invalid on
//! every honest node (a replay mismatch, a result outside tolerance) is a `false`.

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use alloy_primitives::{Address, B256};
use commonware_consensus::{
    Application, Heightable,
    marshal::ancestry::Ancestry,
    simplex::{scheme::ed25519::Scheme, types::Context},
};
use commonware_cryptography::{Digested, Digestible, ed25519::PublicKey, keccak256::Digest};
use commonware_runtime::{Clock, Spawner};
use futures::StreamExt;
use pipe_builder::PayloadBuilder;
use pipe_chain::{Chain, ProposeAttributes, VerifyError};
use pipe_primitives::SealedBlock;
use tracing::{debug, info, warn};

use crate::block::Block;

/// The consensus context of a proposal: round, leader, parent.
pub type Ctx = Context<Digest, PublicKey>;

/// Most blocks walked back to find one the chain knows before giving up on a request.
const MAX_UNKNOWN_ANCESTORS: usize = 1024;
/// First and longest wait before asking the chain again about a block it cannot decide yet.
const RETRY_MS: (u64, u64) = (50, 2_000);

/// Milliseconds since the Unix epoch on the runtime's clock.
pub fn now_ms(clock: &impl Clock) -> u64 {
    clock
        .current()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// What verification has cost: blocks verified before a vote (replay and results check,
/// this node's CPU time in the verb, waits excluded) and blocks replayed to catch up.
#[derive(Debug, Default)]
pub struct VerifyStats {
    pub voted: std::sync::atomic::AtomicU64,
    pub voted_us: std::sync::atomic::AtomicU64,
    pub caught_up: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
}

impl VerifyStats {
    /// Prometheus text lines.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let mut out = String::new();
        for (name, help, value) in [
            (
                "pipe_validator_verified_blocks",
                "blocks verified before voting",
                self.voted.load(Relaxed),
            ),
            (
                "pipe_validator_verify_microseconds",
                "time spent verifying blocks before voting",
                self.voted_us.load(Relaxed),
            ),
            (
                "pipe_validator_caught_up_blocks",
                "certified blocks replayed to catch up",
                self.caught_up.load(Relaxed),
            ),
            (
                "pipe_validator_refused_blocks",
                "blocks found invalid",
                self.refused.load(Relaxed),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}.\n# TYPE {name} counter\n{name}_total {value}\n"
            ));
        }
        out
    }
}

/// Verifies blocks into the chain, waiting out what may pass.
#[derive(Clone, Debug)]
pub struct Verifier {
    chain: Arc<Chain>,
    stats: Arc<VerifyStats>,
}

impl Verifier {
    pub fn new(chain: Arc<Chain>) -> Self {
        Self {
            chain,
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> &Arc<VerifyStats> {
        &self.stats
    }

    pub fn chain(&self) -> &Arc<Chain> {
        &self.chain
    }

    /// Whether the chain has `block` (finalized or pending).
    fn known(&self, block: &SealedBlock) -> bool {
        let head = self.chain.head();
        if block.hash == head.hash || self.chain.pending(&block.hash).is_some() {
            return true;
        }
        block.number() < head.number()
            && matches!(self.chain.store().block_number(&block.hash), Ok(Some(_)))
    }

    /// Verifies `block` (its parent known to the chain) until there is a verdict: `true`
    /// once it is in the chain's pending tree, `false` if it is invalid for good. A block a
    /// quorum certified is replayed without the results check (`certified`).
    pub async fn verify_one(
        &self,
        clock: &(impl Clock + Spawner),
        block: &Block,
        certified: bool,
    ) -> bool {
        let mut wait = RETRY_MS.0;
        loop {
            let now = now_ms(clock);
            let sealed = (**block.sealed()).clone();
            let chain = self.chain.clone();
            // Replay is CPU work: on the runtime's blocking pool, so it never holds up the
            // threads consensus messages run on.
            let verified = clock
                .child("verify")
                .shared(true)
                .spawn(move |_| async move {
                    let timer = std::time::Instant::now();
                    let answer = if certified {
                        chain.verify_certified(sealed, now)
                    } else {
                        chain.verify(sealed, now)
                    };
                    (answer, timer.elapsed().as_micros() as u64)
                })
                .await;
            let Ok((answer, spent)) = verified else {
                // The task was stopped (shutdown): no verdict.
                return false;
            };
            use std::sync::atomic::Ordering::Relaxed;
            match answer {
                Ok(_) => {
                    if certified {
                        self.stats.caught_up.fetch_add(1, Relaxed);
                    } else {
                        self.stats.voted.fetch_add(1, Relaxed);
                        self.stats.voted_us.fetch_add(spent, Relaxed);
                    }
                    return true;
                }
                Err(e) if e.is_final() => {
                    self.stats.refused.fetch_add(1, Relaxed);
                    warn!(target: "pipe::consensus", number = block.number(), hash = %block.hash(), error = %e, "block refused");
                    return false;
                }
                Err(VerifyError::Future { wait_ms, .. }) => {
                    debug!(target: "pipe::consensus", number = block.number(), wait_ms, "block from the future: waiting");
                    clock.sleep(Duration::from_millis(wait_ms.max(1))).await;
                }
                Err(e) => {
                    debug!(target: "pipe::consensus", number = block.number(), error = %e, wait, "block not verifiable yet");
                    clock.sleep(Duration::from_millis(wait)).await;
                    wait = (wait * 2).min(RETRY_MS.1);
                }
            }
        }
    }

    /// Makes `first` and its ancestors known to the chain: walks `rest` (its ancestry,
    /// newest first) back to a known block and verifies the unknown ones oldest first.
    /// `false` if one of them is invalid, or the walk reaches a finalized height without
    /// meeting the finalized chain.
    pub async fn make_known(
        &self,
        clock: &(impl Clock + Spawner),
        first: Digested<Block>,
        mut rest: impl Ancestry<Block>,
        certified: bool,
    ) -> bool {
        let mut unknown = Vec::new();
        let mut next = Some(first);
        while let Some(block) = next {
            if self.known(block.inner().sealed()) {
                break;
            }
            if block.height().get() <= self.chain.head().number() {
                warn!(target: "pipe::consensus", number = block.height().get(), "ancestry conflicts with the finalized chain");
                return false;
            }
            if unknown.len() == MAX_UNKNOWN_ANCESTORS {
                warn!(target: "pipe::consensus", "too many unknown ancestors");
                return false;
            }
            unknown.push(block);
            next = rest.next().await;
        }
        // The newest is the one asked about; its ancestors were certified by a quorum, or
        // consensus would not build on them.
        let newest = unknown.first().map(|b| b.digest());
        for block in unknown.iter().rev() {
            let is_asked = Some(block.digest()) == newest;
            if !self
                .verify_one(clock, block.inner(), certified || !is_asked)
                .await
            {
                return false;
            }
        }
        true
    }
}

/// What a validator proposes with and how often.
#[derive(Clone, Copy, Debug)]
pub struct ProposeConfig {
    /// The chain's block time: a proposal waits until its parent is this old.
    pub block_time: Duration,
    /// Share of the block time the payload job may spend executing.
    pub build_share: f64,
    pub beneficiary: Address,
}

/// The application: a verifier, and a payload builder for when this node leads.
#[derive(Clone)]
pub struct App {
    verifier: Verifier,
    builder: Arc<PayloadBuilder>,
    config: ProposeConfig,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").field("config", &self.config).finish()
    }
}

impl App {
    pub fn new(chain: Arc<Chain>, builder: PayloadBuilder, config: ProposeConfig) -> Self {
        Self {
            verifier: Verifier::new(chain),
            builder: Arc::new(builder),
            config,
        }
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Builds a block on `parent` at `timestamp` (seconds), sealed but committed nowhere.
    fn build(&self, parent: B256, timestamp: u64, deadline_ms: u64) -> Option<Block> {
        let chosen = ProposeAttributes {
            timestamp,
            beneficiary: self.config.beneficiary,
        };
        let never = AtomicBool::new(false);
        let chain = self.verifier.chain();
        match chain.propose(&self.builder, parent, chosen, deadline_ms, &never) {
            Ok(proposal) => {
                // A stale result goes back to PIPE to be computed again, whatever becomes of
                // this block. Invalid transactions stay: this block may never be finalized,
                // and the chain event drops what a finalized block made invalid.
                if let Some(gate) = self.builder.gate() {
                    for (tx, call) in &proposal.stale {
                        gate.on_stale(tx, call);
                    }
                }
                info!(target: "pipe::consensus", number = proposal.block.number(), txs = proposal.block.transactions.len(), hash = %proposal.block.hash, "proposing");
                Some(Block::new(proposal.block))
            }
            Err(e) => {
                warn!(target: "pipe::consensus", error = %e, "proposal failed");
                None
            }
        }
    }
}

impl<E> Application<E> for App
where
    E: Clock + Spawner + Send + Sync + 'static,
{
    type SigningScheme = Scheme;
    type Context = Ctx;
    type Block = Block;
    type Input = ();

    async fn propose(
        &mut self,
        (clock, _context): (E, Ctx),
        mut ancestry: impl Ancestry<Block>,
        _input: (),
    ) -> Option<Digested<Block>> {
        let parent = ancestry.next().await?;
        if !self
            .verifier
            .make_known(&clock, parent.clone(), ancestry, true)
            .await
        {
            return None;
        }
        let parent = parent.inner().sealed().clone();
        // Paced to the block time, and never stamped ahead of this node's clock.
        let slot_ms = (parent.header.timestamp * 1000)
            .saturating_add(self.config.block_time.as_millis() as u64);
        let at_ms = slot_ms.max(now_ms(&clock)).div_ceil(1000) * 1000;
        clock
            .sleep_until(SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms))
            .await;
        let budget = (self.config.block_time.as_millis() as f64 * self.config.build_share) as u64;
        let deadline = now_ms(&clock) + budget.max(1);
        let app = self.clone();
        // Execution is CPU work: on the runtime's blocking pool.
        let block = clock
            .child("propose")
            .shared(true)
            .spawn(move |_| async move { app.build(parent.hash, at_ms / 1000, deadline) })
            .await
            .ok()??;
        let digest = block.digest();
        Some(Digested::precomputed(block, digest))
    }

    async fn verify(
        &mut self,
        (clock, _context): (E, Ctx),
        mut ancestry: impl Ancestry<Block>,
    ) -> bool {
        let Some(block) = ancestry.next().await else {
            return false;
        };
        self.verifier
            .make_known(&clock, block, ancestry, false)
            .await
    }
}
