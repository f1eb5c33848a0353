//! pipe's benchmarks, each printing one JSON object: block execution against bare revm
//! ([`bench::exec`]), ingestion against anvil ([`bench::ingest`]), per-inference latency
//! against onnxruntime ([`bench_inference`]), PIPE against inline inference ([`bench_pipe`]),
//! how PIPE's cost grows with the work ([`bench_scale`]), congestion ([`bench_congestion`]) and
//! a restart with a full pool ([`bench_restart`]) and honest latency under free-riding
//! attackers ([`bench_freeride`]), a validator network against the single node
//! ([`bench_validators`]), and the language-model runtime's speed and determinism
//! ([`bench_llm`]).
//!
//! They live in their own crate and binary (`pipe-bench`; `pipe bench …` forwards to it) so
//! the node does not ship their dependencies: plotters, rand and onnxruntime's bindings.

pub mod bench;
pub mod bench_congestion;
pub mod bench_freeride;
pub mod bench_inference;
pub mod bench_llm;
pub mod bench_pipe;
pub mod bench_restart;
pub mod bench_scale;
pub mod bench_validators;
pub mod onnxruntime;
pub mod plots;
