//! The dev chain's language model (`fixtures/models/kjv.gguf`, made by
//! `scripts/make-dev-llm.sh`) decodes in pipe exactly as llama.cpp decodes it: for each prompt
//! in `kjv.reference.json` (written by llama.cpp through `scripts/llm-reference.sh`, which CI
//! runs again with `--check`), the same prompt tokens, the same greedy tokens, the same text.

use std::path::PathBuf;

use pipe_llm::{LlmModel, Request, Sampling};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/models")
        .join(name)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("a token list")
        .iter()
        .map(|t| t.as_u64().expect("a token id") as u32)
        .collect()
}

#[test]
fn pipe_decodes_the_dev_model_as_llama_cpp_does() {
    let bytes = std::fs::read(fixture("kjv.gguf")).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("kjv.reference.json")).unwrap())
            .unwrap();
    let digest = alloy_primitives::hex::encode(sha256(&bytes));
    assert_eq!(reference["sha256"], digest, "the reference is of this file");
    let model = LlmModel::load(&bytes).unwrap();
    assert_eq!(
        model.meta().end_tokens,
        vec![reference["eos"].as_u64().unwrap() as u32]
    );
    let max_tokens = reference["max_tokens"].as_u64().unwrap() as u32;
    let cases = reference["cases"].as_array().unwrap();
    assert!(cases.len() >= 5);
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        assert_eq!(
            model.tokenize(prompt).unwrap(),
            ids(&case["prompt_tokens"]),
            "{prompt:?}"
        );
        let answer = model
            .generate(&Request {
                prompt,
                max_tokens,
                stop: &[],
                sampling: Sampling::Greedy,
            })
            .unwrap();
        assert_eq!(
            answer.tokens,
            ids(&case["tokens"]),
            "{prompt:?}: {:?}",
            answer.text
        );
        assert_eq!(answer.text, case["text"].as_str().unwrap(), "{prompt:?}");
    }
}

/// SHA-256, as `sha256sum` and Python's hashlib print it.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
