//! Validators: pipe as a chain of several nodes, ordered by commonware's simplex BFT
//! consensus, where no single node's word makes an inference result final.
//!
//! # The pieces
//! - [`block`]: the block consensus orders, a sealed pipe block in a strict binary encoding,
//!   identified by its Ethereum hash (which commits to transactions and sidecar).
//! - [`app`]: the application simplex drives, through marshal's `Inline` wrapper: *propose*
//!   when this validator leads (the payload job on the parent consensus names, paced to the
//!   block time), *verify* before it votes (replay from the block alone, then the leader's
//!   VANILLA results compared with this node's own, [`pipe_chain::check`]). Both walk back to
//!   a block the chain knows and verify what lies between, so a validator that missed blocks
//!   or restarted takes part at once.
//! - [`finalizer`]: marshal delivers finalized blocks in height order; each is committed by
//!   [`pipe_chain::Chain::finalize`] (the one commit path: pool and PIPE hear of it there)
//!   before it is acknowledged, so a crash in between delivers it again.
//! - [`validator`]: the wiring of simplex, marshal, block broadcast and backfill on five p2p
//!   channels, generic over the runtime: commonware's deterministic runtime and simulated
//!   network in tests, its tokio runtime and authenticated network in a node.
//! - [`node`]: a validator inside a node: commonware's tokio runtime on its own thread, the
//!   authenticated network between the set's validators, and [`gossip`] of transactions;
//!   [`keys`] reads the key and validator set files.
//! - [`clock`]: the chain's clock seam on the runtime's clock, so build deadlines run on
//!   consensus time (virtual time in tests).
//!
//! # What verification decides
//! A validator votes for a block only when it is valid on every honest node: replay gives its
//! header exactly (state root, receipts, gas, sidecar root, TEE signatures by registered
//! workers) and every sampled VANILLA result agrees with the validator's own within the
//! model's tolerance ([`pipe_abi::tolerance`]). What may change with time never makes a block
//! invalid: a timestamp ahead of the local clock, a result not computable yet, a local fault;
//! verification waits, and consensus times the view out and moves to the next leader.
//!
//! # Testing
//! `tests/simulation.rs` runs four validators in one process, seeded: all online (the same
//! seed gives the same run), lossy links, one starting late and catching up from its peers,
//! two of four cut off (finality halts, resumes when one returns), and a byzantine leader
//! whose block carries a fabricated VANILLA result, a bad state root, a tampered sidecar or a
//! far-future timestamp (never finalized; an honest leader's block with the transaction is).

pub mod app;
pub mod block;
pub mod clock;
pub mod finalizer;
pub mod gossip;
pub mod keys;
pub mod node;
pub mod validator;
