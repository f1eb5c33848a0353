//! One validator: simplex (votes and certificates), marshal (blocks by digest, backfill from
//! peers, finalized blocks in order) and the application, over five p2p channels.
//!
//! The wiring is the same in tests (commonware's deterministic runtime and simulated network)
//! and in the node (its tokio runtime and authenticated `lookup` network): [`start`] takes a
//! runtime context and the channels.
//!
//! - Simplex runs with ed25519 keys and round-robin leaders, over one epoch that never ends
//!   (the validator set is fixed by genesis).
//! - Marshal's `Inline` wrapper runs the application's verify *before* this validator votes
//!   to notarize: a block is voted for only once it replayed and its results checked.
//! - Marshal's reporter is the [`crate::finalizer`]: the chain commits each finalized block.

use std::{num::NonZeroUsize, sync::Arc, time::Duration};

use commonware_broadcast::buffered;
use commonware_consensus::{
    Application,
    marshal::{self, Start, core::Actor, resolver::p2p as backfill, standard::Inline},
    simplex::{
        self,
        config::{Floor, ForwardPolicy, SkipBudget, SkipPolicy},
        elector::RoundRobin,
        scheme::ed25519::Scheme,
    },
    types::{Epoch, FixedEpocher, ViewDelta},
};
use commonware_cryptography::{
    Digested, Digestible, Sha256, Signer,
    certificate::{ConstantProvider, Verifier as _},
    ed25519::{PrivateKey, PublicKey},
};
use commonware_p2p::{Blocker, Provider, Receiver, Sender};
use commonware_parallel::Sequential;
use commonware_runtime::{Clock, Handle, Metrics, Spawner, Storage, buffer::paged::CacheRef};
use commonware_storage::archive::immutable;
use commonware_utils::{NZDuration, NZU16, NZU64, NZUsize, TryCollect, ordered::Set};
use pipe_primitives::SealedBlock;
use rand_core::CryptoRng;

use crate::{
    app::{Ctx, Verifier},
    block::{Block, BlockLimits},
    finalizer::{self, Finalizer},
};

/// Timing of consensus.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long to wait for the leader's proposal before voting to skip the view.
    pub leader: Duration,
    /// How long to wait for a notarized block to certify.
    pub certification: Duration,
    /// How often to repeat a skip vote while the view is stuck.
    pub retry: Duration,
    /// How long one fetch of a missing certificate or block may take.
    pub fetch: Duration,
}

impl Timeouts {
    /// For a chain with `block_time`: the leader waits up to a block time for its parent to
    /// age, and then builds for half of one; two more block times and a margin cover the
    /// network.
    pub fn for_block_time(block_time: Duration) -> Self {
        let leader = block_time * 3 + Duration::from_secs(1);
        Self {
            leader,
            certification: leader * 2,
            retry: leader * 2,
            fetch: Duration::from_secs(2),
        }
    }
}

/// Everything a validator needs besides its runtime, channels and application.
#[derive(Clone, Debug)]
pub struct ValidatorConfig {
    pub key: PrivateKey,
    /// The validator set (any order; consensus sorts it).
    pub validators: Vec<PublicKey>,
    /// Separates this chain's signatures from any other's (chain id in it).
    pub namespace: Vec<u8>,
    /// Where this validator's consensus state lives (unique per validator in one runtime).
    pub partition_prefix: String,
    pub limits: BlockLimits,
    /// The chain's genesis: the first block every validator starts from.
    pub genesis: Arc<SealedBlock>,
    pub timeouts: Timeouts,
}

/// The p2p channels of one validator, each a (sender, receiver) pair.
pub struct Channels<S, R> {
    pub votes: (S, R),
    pub certificates: (S, R),
    pub certificate_backfill: (S, R),
    pub block_backfill: (S, R),
    pub blocks: (S, R),
}

/// Channel numbers, the same on every validator.
pub mod channel {
    pub const VOTES: u64 = 0;
    pub const CERTIFICATES: u64 = 1;
    pub const CERTIFICATE_BACKFILL: u64 = 2;
    pub const BLOCK_BACKFILL: u64 = 3;
    pub const BLOCKS: u64 = 4;
    pub const TRANSACTIONS: u64 = 5;
    pub const ALL: [u64; 6] = [
        VOTES,
        CERTIFICATES,
        CERTIFICATE_BACKFILL,
        BLOCK_BACKFILL,
        BLOCKS,
        TRANSACTIONS,
    ];
}

/// The largest message any channel carries for `validators` validators.
pub fn max_message_size(validators: usize, limits: &BlockLimits) -> u32 {
    let n = validators as u32;
    commonware_p2p::max_message_size(&[
        simplex::max_payload_size::<Scheme, commonware_cryptography::keccak256::Digest>(n),
        marshal::max_payload_size::<marshal::standard::Standard<Block>, Scheme>(n, limits),
    ])
}

/// Errors starting a validator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("the validator set is empty or has duplicates")]
    BadSet,
    #[error("this node's key is not in the validator set")]
    NotAValidator,
    #[error("consensus storage: {0}")]
    Storage(String),
}

const PAGE_SIZE: u16 = 4096;
const PAGE_CACHE_PAGES: usize = 1024;
const BUFFER: usize = 1 << 20;

/// Starts a validator with `app` (normally [`crate::app::App`]; a test may wrap it) and the
/// `verifier` its finalizer replays unseen blocks with. The handle ends when its consensus
/// engine does.
pub async fn start<E, A, S, R, B, P>(
    context: E,
    config: ValidatorConfig,
    app: A,
    verifier: Verifier,
    blocker: B,
    peers: P,
    channels: Channels<S, R>,
) -> Result<Handle<()>, StartError>
where
    E: Clock + CryptoRng + Spawner + Storage + Metrics,
    A: Application<E, SigningScheme = Scheme, Context = Ctx, Block = Block, Input = ()>,
    S: Sender<PublicKey = PublicKey>,
    R: Receiver<PublicKey = PublicKey>,
    B: Blocker<PublicKey = PublicKey> + Clone,
    P: Provider<PublicKey = PublicKey> + Clone,
{
    let me = config.key.public_key();
    let set: Set<PublicKey> = config
        .validators
        .iter()
        .cloned()
        .try_collect()
        .map_err(|_| StartError::BadSet)?;
    let scheme = Scheme::signer(&config.namespace, set, config.key.clone())
        .ok_or(StartError::NotAValidator)?;
    let prefix = config.partition_prefix.clone();
    let page_cache = CacheRef::new(NZU16!(PAGE_SIZE), NZUsize!(PAGE_CACHE_PAGES));
    let mailbox = NZUsize!(1024);

    let (backfill_rx, backfill) = backfill::init(
        context.child("block_backfill"),
        backfill::Config {
            public_key: me.clone(),
            peer_provider: peers.clone(),
            blocker: blocker.clone(),
            mailbox_size: mailbox,
            fetch_timeout: NZDuration!(Duration::from_secs(2)),
            fetch_retry_delay: Duration::from_millis(100),
            priority_requests: false,
            priority_responses: false,
        },
        channels.block_backfill,
    );
    let (broadcaster, buffer) = buffered::Engine::new(
        context.child("blocks"),
        buffered::Config {
            public_key: me.clone(),
            mailbox_size: mailbox,
            deque_size: 10,
            priority: false,
            codec_config: config.limits,
            peer_provider: peers.clone(),
            strategy: Sequential,
        },
    );
    broadcaster.start(channels.blocks);

    let finalizations = immutable::Archive::init(
        context.child("finalizations"),
        archive(
            &prefix,
            &page_cache,
            "finalizations",
            Scheme::certificate_codec_config_unbounded(),
        ),
    )
    .await
    .map_err(|e| StartError::Storage(e.to_string()))?;
    let blocks = immutable::Archive::init(
        context.child("finalized_blocks"),
        archive(&prefix, &page_cache, "blocks", config.limits),
    )
    .await
    .map_err(|e| StartError::Storage(e.to_string()))?;

    let genesis = Block::new(config.genesis.clone());
    let genesis_digest = genesis.digest();
    let (actor, marshal_mailbox, _floor) = Actor::init(
        context.child("marshal"),
        finalizations,
        blocks,
        marshal::Config {
            provider: ConstantProvider::<Scheme, Epoch>::new(scheme.clone()),
            epocher: FixedEpocher::new(NZU64!(u64::MAX)),
            start: Start::Genesis(Digested::precomputed(genesis, genesis_digest)),
            partition_prefix: format!("{prefix}-marshal"),
            mailbox_size: mailbox,
            view_retention: ViewDelta::new(64),
            prunable_items_per_section: NZU64!(64),
            page_cache: page_cache.clone(),
            replay_buffer: NZUsize!(BUFFER),
            key_write_buffer: NZUsize!(BUFFER),
            value_write_buffer: NZUsize!(BUFFER),
            block_codec_config: config.limits,
            max_repair: NZUsize!(16),
            max_pending_acks: NonZeroUsize::MIN,
            strategy: Sequential,
        },
    )
    .await;
    let (finalizer, finalized) = Finalizer::new();
    context
        .child("finalizer")
        .spawn(move |ctx| finalizer::run(ctx, verifier, finalized));
    actor.start(finalizer, buffer, (backfill_rx, backfill));

    let inline = Inline::new(
        context.child("application"),
        app,
        marshal_mailbox,
        FixedEpocher::new(NZU64!(u64::MAX)),
    );
    let t = config.timeouts;
    let engine = simplex::Engine::new(
        context.child("simplex"),
        simplex::Config {
            scheme,
            elector: RoundRobin::<Sha256>::default(),
            blocker,
            automaton: inline.clone(),
            relay: inline.clone(),
            reporter: inline,
            strategy: Sequential,
            partition: format!("{prefix}-simplex"),
            mailbox_size: mailbox,
            epoch: Epoch::zero(),
            floor: Floor::Genesis(genesis_digest),
            replay_buffer: NZUsize!(BUFFER),
            write_buffer: NZUsize!(BUFFER),
            page_cache,
            leader_timeout: t.leader,
            certification_timeout: t.certification,
            timeout_retry: t.retry,
            view_retention: ViewDelta::new(64),
            skip: SkipPolicy::Enabled {
                timeout: t.certification + t.retry,
                budget: SkipBudget::Participants,
            },
            fetch_timeout: NZDuration!(t.fetch),
            fetch_retry_delay: Duration::from_millis(100),
            forward: ForwardPolicy::Disabled,
            track_historical_votes: false,
        },
    );
    Ok(engine.start(
        channels.votes,
        channels.certificates,
        channels.certificate_backfill,
    ))
}

/// An archive of finalized data: immutable, by height and digest.
fn archive<C>(
    prefix: &str,
    page_cache: &CacheRef,
    name: &str,
    codec_config: C,
) -> immutable::Config<C> {
    immutable::Config {
        metadata_partition: format!("{prefix}-{name}-metadata"),
        freezer_table_partition: format!("{prefix}-{name}-freezer-table"),
        freezer_table_initial_size: 65_536,
        freezer_table_resize_frequency: 10,
        freezer_table_resize_chunk_size: 1 << 14,
        freezer_key_partition: format!("{prefix}-{name}-freezer-key"),
        freezer_key_page_cache: page_cache.clone(),
        freezer_value_partition: format!("{prefix}-{name}-freezer-value"),
        freezer_value_target_size: 1 << 30,
        freezer_value_compression: None,
        ordinal_partition: format!("{prefix}-{name}-ordinal"),
        items_per_section: NZU64!(262_144),
        codec_config,
        replay_buffer: NZUsize!(BUFFER),
        freezer_key_write_buffer: NZUsize!(BUFFER),
        freezer_value_write_buffer: NZUsize!(BUFFER),
        ordinal_write_buffer: NZUsize!(BUFFER),
    }
}
