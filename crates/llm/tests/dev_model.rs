//! The dev chain's language model (`fixtures/models/kjv.gguf`, made by
//! `scripts/make-dev-llm.sh`) decodes in pipe exactly as llama.cpp decodes it: for each prompt
//! in `kjv.reference.json` (written by llama.cpp through `scripts/llm-reference.sh`, which CI
//! runs again with `--check`), the same prompt tokens, the same greedy tokens, the same text;
//! and each of its `texts` tokenizes to the same tokens and decodes back to the same text.
//! `kjv-spm.gguf` is the same check for the SentencePiece vocabularies of Llama 2, TinyLlama
//! and Mistral files.
//!
//! The test kit's tiny random models of each family (`tiny-llama`, `tiny-qwen2`, `tiny-phi3`)
//! check the transformers themselves: their answers are noise, full of near-ties, but the
//! logits after each prompt must be llama.cpp's (the highest eight, within 0.001).

use std::path::PathBuf;

use pipe_llm::{LlmModel, Request, Sampling};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

/// A logit margin under which two engines' rounding may pick different tokens.
const TIE: f64 = 1e-3;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a token list")
        .iter()
        .map(|t| t.as_u64().expect("a token id") as u32)
        .collect()
}

#[test]
fn pipe_decodes_the_dev_model_as_llama_cpp_does() {
    decodes_as_llama_cpp_does("kjv", true);
}

#[test]
fn a_sentencepiece_vocabulary_reads_as_llama_cpp_reads_it() {
    decodes_as_llama_cpp_does("kjv-spm", true);
}

#[test]
fn each_family_computes_llama_cpp_s_logits() {
    use pipe_llm::{
        Architecture,
        test_utils::{TinyShape, tiny_gguf},
    };
    for (name, family) in [
        ("tiny-llama", Architecture::Llama),
        ("tiny-qwen2", Architecture::Qwen2),
        ("tiny-phi3", Architecture::Phi3),
        ("tiny-gemma3", Architecture::Gemma3),
    ] {
        // The committed file is the test kit's model (`pipe-dev-llm tiny`), not an edit.
        let committed = std::fs::read(fixture(&format!("{name}.gguf"))).unwrap();
        assert!(
            committed == tiny_gguf(family, TinyShape::of(family), None),
            "{name}.gguf is not the test kit's"
        );
        decodes_as_llama_cpp_does(name, false);
    }
}

/// Checks `name.gguf` against `name.reference.json`; `trained` models must also give mostly
/// identical answers (a random model's answers part at near-ties all the time).
fn decodes_as_llama_cpp_does(name: &str, trained: bool) {
    let bytes = std::fs::read(fixture(&format!("{name}.gguf"))).unwrap();
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{name}.reference.json"))).unwrap(),
    )
    .unwrap();
    let digest = alloy_primitives::hex::encode(sha256(&bytes));
    assert_eq!(reference["sha256"], digest, "the reference is of this file");
    let model = LlmModel::load(&bytes).unwrap();
    // The same tokens end an answer: the metadata's and those llama.cpp knows by their text.
    assert_eq!(
        model.meta().end_tokens,
        ids(&reference["end_tokens"]),
        "{name}"
    );
    let max_tokens = reference["max_tokens"].as_u64().unwrap() as u32;
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    let (mut identical, mut tied) = (0, vec![]);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            model.tokenize(prompt).unwrap(),
            ids(&case["prompt_tokens"]),
            "{prompt:?}"
        );
        let prompt_tokens = ids(&case["prompt_tokens"]);
        let logits = model.logits(&prompt_tokens).unwrap();
        for pair in case["top_logits"].as_array().unwrap() {
            let (id, theirs) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_f64().unwrap(),
            );
            let ours = f64::from(logits[id]);
            assert!(
                (ours - theirs).abs() < TIE,
                "{name} {prompt:?}: token {id}'s logit is {ours}, llama.cpp's {theirs}"
            );
        }
        let answer = model
            .generate(&Request {
                prompt,
                max_tokens,
                stop: &[],
                sampling: Sampling::Greedy,
            })
            .unwrap();
        let expected = ids(&case["tokens"]);
        let margins: Vec<f64> = case["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        // The same tokens, up to a step where llama.cpp's two best logits tie within float
        // rounding: there two correct engines may choose differently, and the texts part.
        match answer
            .tokens
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
        {
            None => {
                assert_eq!(answer.tokens, expected, "{prompt:?}: {:?}", answer.text);
                assert_eq!(answer.text, case["text"].as_str().unwrap(), "{prompt:?}");
                identical += 1;
            }
            Some(step) => {
                assert!(
                    margins[step] < TIE,
                    "{name} {prompt:?}: step {step} differs with a margin of {} (ours {:?}, llama.cpp {:?})",
                    margins[step],
                    answer.text,
                    case["text"]
                );
                tied.push((prompt.to_string(), step));
            }
        }
    }
    eprintln!(
        "{name}: {identical} of {} answers identical to llama.cpp's; parted at a tie: {tied:?}",
        cases.len()
    );
    assert!(
        !trained || identical * 4 >= cases.len() * 3,
        "{name}: too few identical answers"
    );
    let texts = reference["texts"].as_array().unwrap();
    assert!(texts.len() >= 5);
    let bos = model.meta().bos_token;
    for case in texts {
        let text = case["text"].as_str().unwrap();
        let tokens = model.tokenize(text).unwrap();
        assert_eq!(tokens, ids(&case["tokens"]), "{name}: {text:?}");
        let body = match tokens.first() {
            Some(first) if Some(*first) == bos => &tokens[1..],
            _ => &tokens[..],
        };
        assert_eq!(
            model.detokenize(body).unwrap(),
            case["decoded"].as_str().unwrap(),
            "{name}: {text:?}"
        );
    }
}

/// SHA-256, as `sha256sum` and Python's hashlib print it.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
