//! `pipe replay`: re-executes every block of a data directory from the blocks alone (each
//! block's sidecar answers its inference) into a scratch store, and checks that every header,
//! state root and receipt comes out the same. This is what a follower or validator does with
//! a block it did not build.

use std::sync::Arc;

use anyhow::Context;
use pipe_builder::replay::replay_block;
use pipe_executor::{Executor, InferenceProvider};
use pipe_primitives::SealedBlock;
use pipe_storage::Store;
use serde::Serialize;

use crate::{
    config::NodeConfig,
    models::NodeModels,
    node::{chain_config, genesis_block, genesis_changes},
};

/// What a replay went through.
#[derive(Debug, Serialize)]
pub struct ReplayReport {
    pub blocks: u64,
    pub transactions: usize,
    pub results: usize,
    pub head_hash: String,
    pub state_root: String,
}

/// Replays the chain in `config.datadir`. Fails at the first block that does not verify.
pub fn replay(config: &NodeConfig) -> anyhow::Result<ReplayReport> {
    let chain = Arc::new(chain_config(config)?);
    let path = config.datadir.join("chain.redb");
    anyhow::ensure!(path.exists(), "no chain at {}", path.display());
    let source =
        Arc::new(Store::open(&path).with_context(|| format!("opening {}", path.display()))?);
    let scratch = tempfile::tempdir()?;
    let target = Store::open(&scratch.path().join("replay.redb"))?;
    let genesis_alloc = genesis_changes(&chain);
    let genesis = target.init_genesis(&genesis_alloc, |root| genesis_block(&chain, root))?;
    let stored = source.block(0)?.context("the data dir has no genesis")?;
    anyhow::ensure!(
        stored.hash == genesis.hash,
        "genesis {} differs from the configured chain's {}",
        stored.hash,
        genesis.hash
    );
    // Model metadata (inputs, decimals, cost units) comes from the data dir's model store;
    // no model is ever run.
    let models = Arc::new(NodeModels::open(source.clone(), config.inference_timeout)?);
    let executor = Executor::new(chain);
    let head = source.head()?.unwrap_or_default();
    let mut parent = genesis;
    let (mut transactions, mut results) = (0, 0);
    for number in 1..=head {
        let block = source
            .block(number)?
            .with_context(|| format!("block {number} missing"))?;
        import_block(&executor, &target, &parent, &block, models.clone())?;
        transactions += block.transactions.len();
        results += block.sidecar.len();
        parent = block;
    }
    Ok(ReplayReport {
        blocks: head,
        transactions,
        results,
        head_hash: parent.hash.to_string(),
        state_root: parent.header.state_root.to_string(),
    })
}

/// Replays `block` on `target`'s state (which must be `parent`'s) and commits it if, and only
/// if, everything verifies: the header replay gives hashes to the block's hash and the state
/// root matches ([`Store::commit_verified`]). What a follower does with each block it fetches.
pub fn import_block(
    executor: &Executor,
    target: &Store,
    parent: &SealedBlock,
    block: &SealedBlock,
    models: Arc<dyn InferenceProvider>,
) -> anyhow::Result<SealedBlock> {
    let number = block.number();
    let mut executed = replay_block(executor, target.state()?, parent, block, models)?;
    let changes = std::mem::take(&mut executed.changes);
    let sealed = executed.seal(block.header.state_root);
    anyhow::ensure!(
        sealed.hash == block.hash,
        "block {number}: replayed header hashes to {}, the block's is {}",
        sealed.hash,
        block.hash
    );
    target
        .commit_verified(&changes, sealed)
        .with_context(|| format!("block {number}"))
}
