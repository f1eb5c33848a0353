//! What training computes is what inference computes: a model written by this crate, read back
//! by pipe's runtime (candle's `quantized_llama`), decodes the same greedy tokens as the
//! training forward pass does, and a short training run lowers the loss.

use candle_core::{Device, IndexOp, Tensor};
use pipe_dev_llm::{gguf, model, tokenizer, train};

fn texts() -> Vec<String> {
    [
        "In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void; and darkness was upon the face of the deep.",
        "And God said, Let there be light: and there was light.",
        "And God saw the light, that it was good: and God divided the light from the darkness.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn shape(vocab: usize) -> model::Shape {
    model::Shape {
        vocab,
        dim: 32,
        hidden: 48,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        context: 32,
    }
}

/// Greedy decoding with the training forward pass, recomputing the whole sequence each step.
fn greedy(llama: &model::Llama, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    for _ in 0..n {
        let input = Tensor::new(seq.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let logits = llama.forward(&input).unwrap();
        let last = logits
            .i((0, seq.len() - 1))
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // The highest logit, the lowest id on a tie (pipe's greedy rule).
        let best = (0..last.len())
            .max_by(|a, b| last[*a].total_cmp(&last[*b]).then(b.cmp(a)))
            .unwrap();
        seq.push(best as u32);
    }
    seq[prompt.len()..].to_vec()
}

#[test]
fn the_written_model_decodes_as_it_was_trained() {
    let texts = texts();
    let vocab = tokenizer::train(&texts, 300).unwrap();
    let llama = model::Llama::new(shape(vocab.tokens.len()), 3).unwrap();
    // Weights large enough that the answer is no constant: train a few steps first.
    let stream = vocab.encode_all(&texts).unwrap();
    let schedule = train::Schedule {
        steps: 30,
        batch: 4,
        peak_lr: 1e-2,
        warmup: 3,
        seed: 5,
    };
    let mut losses = Vec::new();
    train::train(&llama, &stream, &schedule, |_, l| losses.push(l)).unwrap();
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.8),
        "training lowers the loss: {losses:?}"
    );
    let bytes = gguf::write(&llama, &vocab, "test").unwrap();
    let loaded = pipe_llm::LlmModel::load(&bytes).unwrap();
    assert_eq!(loaded.meta().context_length, 32);
    assert_eq!(loaded.meta().end_tokens, vec![vocab.eos]);
    let prompt = "And God said";
    let ids = loaded.tokenize(prompt).unwrap();
    let ours = vocab.tokenizer.encode(prompt, false).unwrap();
    assert_eq!(ids, ours.get_ids(), "pipe reads the tokenizer as trained");
    let generated = loaded
        .generate(&pipe_llm::Request {
            prompt,
            max_tokens: 12,
            stop: &[],
            sampling: pipe_llm::Sampling::Greedy,
        })
        .unwrap();
    let expected = greedy(&llama, &ids, generated.tokens.len());
    assert_eq!(generated.tokens, expected, "{:?}", generated.text);
    assert!(!generated.tokens.is_empty());
}

/// The committed SentencePiece variant is what `pipe-dev-llm sentencepiece` writes from the
/// committed model: the fixture is reproducible, not hand-edited.
#[test]
fn the_sentencepiece_fixture_is_the_committed_model_rewritten() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models");
    let kjv = std::fs::read(dir.join("kjv.gguf")).unwrap();
    let committed = std::fs::read(dir.join("kjv-spm.gguf")).unwrap();
    let written = pipe_dev_llm::sentencepiece::rewrite(&kjv).unwrap();
    assert!(
        written == committed,
        "kjv-spm.gguf differs from kjv.gguf rewritten"
    );
    // And pipe's runtime reads it as SentencePiece: a space-prefixed first piece.
    let model = pipe_llm::LlmModel::load(&written).unwrap();
    let tokens = model.tokenize("In").unwrap();
    assert_eq!(model.meta().bos_token, Some(tokens[0]));
    assert_eq!(model.detokenize(&tokens[1..]).unwrap(), " In");
}
