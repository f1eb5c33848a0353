//! The `pipe` node: wiring of storage, executor, mempool, builder and RPC, and the dev chain.
//!
//! The binary (`main.rs`) parses the command line; [`node::launch`] starts everything and
//! returns a [`node::RunningNode`] that tests drive on a loopback port.

pub mod bench;
pub mod bench_congestion;
pub mod bench_inference;
pub mod bench_pipe;
pub mod bench_scale;
pub mod config;
pub mod dev;
pub mod follow;
pub mod metrics_server;
pub mod models;
pub mod node;
pub mod onnxruntime;
pub mod plots;
pub mod replay;
pub mod worker_server;
pub mod workers;
