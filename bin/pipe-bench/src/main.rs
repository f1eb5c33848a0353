//! `pipe-bench`: pipe's benchmarks, each printing one JSON object (`pipe bench …` forwards
//! here).

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

/// The node's allocator, so `bench exec` measures what the node runs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "pipe-bench",
    version,
    about = "pipe's benchmarks; each prints one JSON object"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Block execution: node executor vs a bare revm loop (transfers, ERC-20), and commit cost.
    Exec {
        #[arg(long, default_value_t = 2000)]
        txs: usize,
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Compiled TestToken artifact (from tools/js/compile.js).
        #[arg(long, default_value = "contracts/out/TestToken.json")]
        token: PathBuf,
    },
    /// Archive mode's disk cost: the same ERC-20 blocks committed with and without it.
    Archive {
        #[arg(long, default_value_t = 200)]
        blocks: usize,
        /// Transfers (and senders) per block.
        #[arg(long, default_value_t = 100)]
        senders: usize,
        #[arg(long, default_value = "contracts/out/TestToken.json")]
        token: PathBuf,
    },
    /// The language-model runtime: tokens per second at each thread count, and whether the
    /// answers are bit-identical across thread counts and runs.
    Llm {
        /// A GGUF file (default: the test kit's random Llama, dim 512, 6 layers).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Thread counts to compare.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
        threads: Vec<usize>,
        #[arg(long, default_value_t = 48)]
        max_tokens: u32,
        /// A Python with llama-cpp-python (`scripts/llm-reference.sh` makes
        /// tools/py/.venv-llm): llama.cpp answers the same prompts greedily on the same file
        /// at each thread count, and the speeds are compared.
        #[arg(long, value_name = "PYTHON")]
        llama_cpp: Option<PathBuf>,
        /// Quantize the default model's matrices as users' files are: q8_0 or q4k (Q4_K).
        #[arg(long)]
        quantize: Option<String>,
    },
    /// One run of `llm` at the thread count `RAYON_NUM_THREADS` gives (used by `llm`).
    #[command(hide = true)]
    LlmRun {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        max_tokens: u32,
    },
    /// Per-inference latency, tract vs onnxruntime, on the fixture models; precompile overhead.
    Inference {
        #[arg(long, default_value = "fixtures/models")]
        dir: PathBuf,
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
        #[arg(long, default_value_t = 200)]
        warmup: usize,
        /// Python with onnxruntime (scripts/fixtures.sh makes tools/py/.venv/bin/python): the
        /// Python baseline, and where the in-process baseline's library is found.
        #[arg(long)]
        python: Option<PathBuf>,
        /// onnxruntime's C library for the in-process baseline (default: the one in
        /// `--python`'s onnxruntime package).
        #[arg(long)]
        onnxruntime_lib: Option<PathBuf>,
    },
    /// PIPE: build time with ready inference transactions (slow vs zero-cost model),
    /// throughput vs the workers' standalone capacity, PIPE vs inline on the same load.
    Pipe {
        /// Transactions per load (throughput, PIPE vs inline).
        #[arg(long, default_value_t = 200)]
        txs: usize,
        /// Ready transactions per timed build.
        #[arg(long, default_value_t = 200)]
        ready: usize,
        /// Timed builds per model latency.
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 250)]
        block_time_ms: u64,
        /// Each transaction a completion of the dev chain's language model with this
        /// `max_tokens`, instead of a linear regression.
        #[arg(long, value_name = "MAX_TOKENS")]
        llm: Option<u32>,
    },
    /// How PIPE's cost grows with the work: discovery per transaction, memory per pending
    /// transaction, dispatch throughput against the slots' capacity, block build time, for
    /// each pending count and number of worker slots.
    Scale {
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,50000")]
        pending: Vec<usize>,
        #[arg(long, value_delimiter = ',', default_value = "4,64,256")]
        slots: Vec<usize>,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// Restart with a full pool of inference transactions: where the start goes, and how long
    /// until blocks carry transactions again.
    Restart {
        #[arg(long, default_value_t = 10_000)]
        pending: usize,
        #[arg(long, default_value_t = 64)]
        slots: usize,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 20)]
        latency_ms: u64,
    },
    /// Honest users' latency idle and while attackers send transactions making one inference
    /// request more than allowed (included as paid reverts) from many accounts.
    Freeride {
        #[arg(long, default_value_t = 10)]
        honest: usize,
        /// Each honest sender sends one transaction per interval.
        #[arg(long, default_value_t = 2000)]
        honest_interval_ms: u64,
        #[arg(long, default_value_t = 2)]
        attackers: usize,
        /// Sending accounts per attacker, each keeping one attacking transaction pending.
        #[arg(long, default_value_t = 8)]
        accounts: usize,
        #[arg(long, default_value_t = 9)]
        attack_requests: usize,
        /// Measurement window per phase, in seconds.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        #[arg(long, default_value = "contracts/out/ManyInferences.json")]
        contract: PathBuf,
    },
    /// Validators: a network of validator processes on loopback against the single-node dev
    /// chain (same block time, same load): submit → finalized receipt latency, throughput,
    /// inference per block; the validators' cache hit rate and verification time per
    /// result-check policy.
    Validators {
        #[arg(long, default_value_t = 4)]
        validators: usize,
        #[arg(long, default_value_t = 8)]
        senders: usize,
        /// Each sender sends one transaction per interval.
        #[arg(long, default_value_t = 500)]
        interval_ms: u64,
        /// Every N-th transaction is an inference request (the rest are transfers).
        #[arg(long, default_value_t = 3)]
        inference_every: usize,
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// Result-check policies to run the network with (the load is measured on the first).
        #[arg(long, value_delimiter = ',', default_value = "all,1/4,off")]
        checks: Vec<String>,
        /// The pipe binary (default: beside pipe-bench).
        #[arg(long)]
        pipe: Option<PathBuf>,
    },
    /// Congestion: PIPE, inline and a two-transaction oracle under the same loads, from half to
    /// ten times the inference network's capacity. Writes congestion.json and SVG charts.
    Congestion {
        /// Offered loads, as multiples of the measured capacity.
        #[arg(long, value_delimiter = ',', default_value = "0.5,1,2,5,10")]
        loads: Vec<f64>,
        /// Send window per load, in seconds.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Seconds at the start of each window left out of goodput.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Artificial latency of every model run, in milliseconds.
        #[arg(long, default_value_t = 100)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Block interval (the dev chain's default).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// PIPE's transaction TTL in blocks, and every system's drain after the window.
        #[arg(long, default_value_t = 20)]
        ttl_blocks: u64,
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "pipe,inline,oracle"
        )]
        systems: Vec<pipe_bench::bench_congestion::System>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Directory for congestion.json and the charts.
        #[arg(long, default_value = "target/congestion")]
        out: PathBuf,
    },
    /// eth_sendRawTransaction ingestion and end-to-end rates, pipe vs anvil, same load.
    Ingest {
        #[arg(long, default_value_t = 4000)]
        txs: usize,
        /// Slot length for both nodes; 0 seals on demand (pipe --on-demand, anvil automine).
        #[arg(long, default_value_t = 1000)]
        block_time_ms: u64,
        /// anvil binary to compare against (e.g. tools/js/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil).
        #[arg(long)]
        anvil: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pipe_worker::cli::init_logging();
    match Cli::parse().command {
        BenchCommand::Llm {
            model,
            threads,
            max_tokens,
            llama_cpp,
            quantize,
        } => {
            anyhow::ensure!(!threads.is_empty(), "--threads needs at least one count");
            let out = tokio::task::spawn_blocking(move || {
                pipe_bench::bench_llm::run(
                    model.as_deref(),
                    &threads,
                    max_tokens,
                    llama_cpp.as_deref(),
                    quantize.as_deref(),
                )
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::LlmRun { model, max_tokens } => {
            let out = pipe_bench::bench_llm::child(&model, max_tokens)?;
            println!("{out}");
        }
        BenchCommand::Inference {
            dir,
            iterations,
            warmup,
            python,
            onnxruntime_lib,
        } => {
            let out = tokio::task::spawn_blocking(move || {
                let baselines = pipe_bench::bench_inference::Baselines {
                    python: python.as_deref(),
                    onnxruntime_lib: onnxruntime_lib.as_deref(),
                };
                pipe_bench::bench_inference::run(&dir, iterations, warmup, baselines)
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Pipe {
            txs,
            ready,
            rounds,
            latency_ms,
            workers,
            block_time_ms,
            llm,
        } => {
            let out = pipe_bench::bench_pipe::run(pipe_bench::bench_pipe::PipeBench {
                txs,
                ready,
                rounds,
                latency: Duration::from_millis(latency_ms),
                workers,
                block_time: Duration::from_millis(block_time_ms.max(1)),
                load: match llm {
                    Some(max_tokens) => pipe_bench::bench_pipe::Load::Completion { max_tokens },
                    None => pipe_bench::bench_pipe::Load::Model,
                },
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Scale {
            pending,
            slots,
            latency_ms,
        } => {
            let out = pipe_bench::bench_scale::run(pipe_bench::bench_scale::ScaleBench {
                pending,
                slots,
                latency: Duration::from_millis(latency_ms.max(1)),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Restart {
            pending,
            slots,
            latency_ms,
        } => {
            let out = pipe_bench::bench_restart::run(pipe_bench::bench_restart::RestartBench {
                pending,
                slots,
                latency: Duration::from_millis(latency_ms.max(1)),
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Freeride {
            honest,
            honest_interval_ms,
            attackers,
            accounts,
            attack_requests,
            seconds,
            latency_ms,
            workers,
            block_time_ms,
            contract,
        } => {
            let out = pipe_bench::bench_freeride::run(pipe_bench::bench_freeride::FreerideBench {
                honest,
                honest_interval: Duration::from_millis(honest_interval_ms.max(1)),
                attackers,
                accounts,
                attack_requests,
                seconds,
                latency: Duration::from_millis(latency_ms.max(1)),
                workers,
                block_time: Duration::from_millis(block_time_ms.max(1)),
                contract,
            })
            .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Validators {
            validators,
            senders,
            interval_ms,
            inference_every,
            seconds,
            block_time_ms,
            checks,
            pipe,
        } => {
            let out =
                pipe_bench::bench_validators::run(pipe_bench::bench_validators::ValidatorsBench {
                    validators,
                    senders,
                    interval: Duration::from_millis(interval_ms.max(1)),
                    inference_every,
                    seconds,
                    block_time_ms,
                    checks,
                    pipe,
                })
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Congestion {
            loads,
            seconds,
            warmup,
            latency_ms,
            workers,
            block_time_ms,
            ttl_blocks,
            systems,
            seed,
            out,
        } => {
            anyhow::ensure!(
                loads.iter().all(|l| *l > 0.0) && seconds > warmup && workers > 0,
                "loads must be positive, --seconds above --warmup, --workers at least 1"
            );
            let out =
                pipe_bench::bench_congestion::run(pipe_bench::bench_congestion::CongestionBench {
                    loads,
                    seconds,
                    warmup,
                    latency: Duration::from_millis(latency_ms),
                    workers,
                    block_time: Duration::from_millis(block_time_ms.max(1)),
                    ttl_blocks,
                    systems,
                    seed,
                    out,
                })
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Exec { txs, rounds, token } => {
            let out =
                tokio::task::spawn_blocking(move || pipe_bench::bench::exec(txs, rounds, token))
                    .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Archive {
            blocks,
            senders,
            token,
        } => {
            let out = tokio::task::spawn_blocking(move || {
                pipe_bench::bench::archive(blocks, senders, token)
            })
            .await??;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        BenchCommand::Ingest {
            txs,
            block_time_ms,
            anvil,
        } => {
            let out = pipe_bench::bench::ingest(txs, block_time_ms, anvil).await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(())
}
