//! `pipe replay`: re-executes every block of a data directory from the blocks alone (each
//! block's sidecar answers its inference) into a scratch store, and checks that every header,
//! state root and receipt comes out the same. This is what a follower or validator does with
//! a block it did not build.

use std::sync::Arc;

use anyhow::Context;
use pipe_chain::Chain;
use pipe_executor::Executor;
use pipe_storage::Store;
use serde::Serialize;

use crate::{config::NodeConfig, models::NodeModels, node::chain_config};

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
    let genesis = pipe_chain::genesis::init(&target, &chain)?;
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
    let chain = Chain::new(Arc::new(target), Executor::new(chain), models)?;
    let head = source.head()?.unwrap_or_default();
    let (mut transactions, mut results) = (0, 0);
    for number in 1..=head {
        let block = source
            .block(number)?
            .with_context(|| format!("block {number} missing"))?;
        transactions += block.transactions.len();
        results += block.sidecar.len();
        // Stored blocks are in the past: no clock bound applies.
        chain
            .import(block, u64::MAX)
            .with_context(|| format!("block {number}"))?;
    }
    let last = chain.head();
    Ok(ReplayReport {
        blocks: head,
        transactions,
        results,
        head_hash: last.hash.to_string(),
        state_root: last.header.state_root.to_string(),
    })
}
