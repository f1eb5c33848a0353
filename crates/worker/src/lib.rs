//! The inference network's worker: how a request is run, the protocol a node speaks to a
//! remote worker, its server (`pipe worker`, or the `pipe-worker` binary) and its client.
//!
//! This crate links no EVM: a worker decodes and checks requests with `pipe-abi` and runs
//! them with `pipe-inference` (tract). The node adapts [`client::WorkerClient`] and
//! [`run::run_call`] to its inference pool's `Worker` seam.
//!
//! - [`run`]: one request on one model, TEE results signed.
//! - [`protocol`]: the wire types.
//! - [`server`]: the HTTP server.
//! - [`client`]: what a node uses to reach a server.
//! - [`cli`]: the command line both binaries share.
//!
//! # Protocol (HTTP/1.1, JSON bodies, hex bytes)
//! - `GET /v1/info` → [`WorkerInfo`]: `{"name", "capacity", "signer", "version", "kinds",
//!   "llmCapacity", "loaded"}`. `signer` is the address TEE results are signed with, or `null`
//!   (the worker serves VANILLA only); `kinds` the kinds of model it runs (`onnx`, `llm`;
//!   both when absent); `llmCapacity` how many of its `capacity` slots may run language models
//!   at once; `loaded` the language models in its memory. The node asks once, at start, and
//!   sends at most `capacity` requests at once, only of those kinds.
//! - `POST /v1/infer` with [`InferRequest`] `{"request": "0x…"}`, the request's canonical
//!   encoding (for a model, `abi.encode(ModelInferenceRequest)`; for a language model, the
//!   function's selector and `abi.encode(request)`; its keccak256 is the request key) →
//!   `200` with the result, `{"key", "status", "payload", "signature"}`
//!   ([`pipe_primitives::InferenceResult`]). A model failing on its inputs is a `200` with
//!   status 1: a failure is a fact about the request and is committed. `400`: the request is
//!   malformed or does not fit the model. `503`: the model cannot be had (the node lacks it,
//!   or its bytes do not hash to its id). The node treats anything but a `200` carrying the
//!   right key as the worker's failure and retries elsewhere.
//!
//! # Models
//! A worker stores nothing. It fetches a model the first time a request names it, from the
//! node given with `--node` (`pipe_getModel` for the metadata, `pipe_getModelFileChunk` for the
//! file, ONNX or GGUF, in chunks of 2 MiB), checks that the bytes hash to the id (the id *is* the content hash), compiles
//! it once and keeps it in memory. Concurrent requests for a model being fetched wait for the
//! one fetch; a failed fetch is not remembered, so the next request tries again. The two
//! language models used last stay loaded; an older one is dropped (a run in progress keeps
//! its copy until it ends). A model of a kind the worker does not run is refused before its
//! file is fetched.
//!
//! # TEE
//! With `--key` (or `--dev-key`), results of TEE requests are signed over
//! [`pipe_primitives::InferenceResult::signing_hash`]; the key's address must be registered in
//! the chain's worker registry for the chain to accept them ((`pipe_executor::attest` on the node)).

pub mod cli;
pub mod client;
mod llm;
pub mod protocol;
pub mod run;
pub mod server;

pub use client::{ClientError, WorkerClient};
pub use protocol::{InferRequest, WorkerInfo};
pub use run::{dev_worker_signer, run_call};
pub use server::{WorkerOptions, serve};
