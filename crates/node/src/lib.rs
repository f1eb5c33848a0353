//! The `pipe` node: the wiring of storage, execution, the transaction pool, PIPE's inference
//! pool, the chain and JSON-RPC, and the drivers that move the chain.
//!
//! - [`node::launch`] starts everything and returns a [`node::RunningNode`] that the binary
//!   and the tests drive on a loopback port; [`node::RunningNode::shutdown`] stops it.
//! - Drivers: the dev sealer (`pipe_chain::DevSealer`: propose, then finalize), a
//!   [`validator`] (simplex consensus proposes, verifies and finalizes: `pipe_consensus`), the
//!   [`follow::Follower`] (verify a leader's blocks, then finalize) and [`replay`] (verify a
//!   data directory's blocks into a scratch chain).
//! - [`workers`] adapts the in-process and remote workers to the inference pool's `Worker`
//!   seam; the model service is `pipe-models` (re-exported as [`models`]).
//! - [`config`] is what the command line and the TOML file set; [`dev`] the dev chain's
//!   accounts and genesis extras.

pub mod config;
pub mod dev;
pub mod follow;
pub mod localnet;
pub mod metrics_server;
pub mod node;
mod pipeline_page;
pub mod replay;
pub mod validator;
pub mod workers;

pub use pipe_models as models;
