//! The runtime on a real GGUF file (a tiny Llama with random weights, from the test kit):
//! loading, tokenizing, and decoding that repeats exactly, stops where asked, and refuses
//! what does not fit; hostile files are errors, not crashes.

use alloy_primitives::B256;
use pipe_llm::test_utils::CHATML_TEMPLATE as CHATML;
use pipe_llm::{
    Architecture, Finish, LlmError, LlmModel, Request, Sampling,
    test_utils::{TinyShape, tiny_llama_gguf},
};

fn model() -> LlmModel {
    LlmModel::load(&tiny_llama_gguf(TinyShape::default(), None)).expect("loads")
}

fn ask(
    m: &LlmModel,
    prompt: &str,
    max_tokens: u32,
    stop: &[String],
    sampling: Sampling,
) -> pipe_llm::Generation {
    m.generate(&Request {
        prompt,
        max_tokens,
        stop,
        sampling,
    })
    .expect("answers")
}

#[test]
fn a_gguf_file_loads_with_its_tokenizer() {
    let m = model();
    let meta = m.meta();
    assert_eq!(meta.architecture, Architecture::Llama);
    assert_eq!(meta.context_length, 256);
    assert_eq!(meta.end_tokens, vec![meta.vocab_size as u32 - 1]);
    assert_eq!(meta.name.as_deref(), Some("pipe tiny test llama"));
    // Byte-level BPE: every byte string tokenizes, merges apply, and the tokens decode back.
    let ids = m.tokenize(" the cat").unwrap();
    assert!(ids.len() < " the cat".len(), "merges apply: {ids:?}");
    assert_eq!(m.tokenize("").unwrap(), Vec::<u32>::new());
}

#[test]
fn greedy_decoding_repeats_exactly_and_stops_at_max_tokens() {
    let m = model();
    let a = ask(&m, "Once upon a time", 24, &[], Sampling::Greedy);
    let b = ask(&m, "Once upon a time", 24, &[], Sampling::Greedy);
    assert_eq!(a, b);
    // A fresh load answers the same: nothing carries over between runs or instances.
    assert_eq!(
        ask(&model(), "Once upon a time", 24, &[], Sampling::Greedy),
        a
    );
    if a.finish == Finish::Length {
        assert_eq!(a.tokens.len(), 24);
    }
    assert!(a.tokens.len() <= 24);
    assert_eq!(
        a.prompt_tokens,
        m.tokenize("Once upon a time").unwrap().len()
    );
    let none = ask(&m, "Once upon a time", 0, &[], Sampling::Greedy);
    assert_eq!((none.text.as_str(), none.finish), ("", Finish::Length));
    // The first tokens of a longer run are the shorter run's.
    let longer = ask(&m, "Once upon a time", 40, &[], Sampling::Greedy);
    assert_eq!(&longer.tokens[..a.tokens.len()], &a.tokens[..]);
}

#[test]
fn sampling_is_seeded_by_the_request_key() {
    let m = model();
    let at = |seed: u8| {
        ask(
            &m,
            "Hello",
            32,
            &[],
            Sampling::new(90, B256::repeat_byte(seed)),
        )
    };
    assert_eq!(at(1), at(1), "same key, same answer");
    let others: Vec<_> = (2..6).map(at).collect();
    assert!(
        others.iter().any(|g| g.tokens != at(1).tokens),
        "other keys, other answers"
    );
}

#[test]
fn a_stop_sequence_ends_the_answer_before_it() {
    let m = model();
    let free = ask(&m, "Once upon a time", 40, &[], Sampling::Greedy);
    assert!(free.text.chars().count() >= 4, "{free:?}");
    // Stop at a piece of what the model writes anyway: the answer is what came before it.
    let piece: String = free.text.chars().skip(2).take(2).collect();
    let cut = free.text.find(&piece).unwrap();
    let stopped = ask(
        &m,
        "Once upon a time",
        40,
        &[String::new(), piece.clone()],
        Sampling::Greedy,
    );
    assert_eq!(stopped.finish, Finish::Stop);
    assert_eq!(stopped.text, free.text[..cut], "stop {piece:?}");
    assert!(!stopped.text.contains(&piece));
}

#[test]
fn a_prompt_and_answer_over_the_context_are_refused() {
    let m = model();
    let long = "a ".repeat(200);
    let err = m
        .generate(&Request {
            prompt: &long,
            max_tokens: 100,
            stop: &[],
            sampling: Sampling::Greedy,
        })
        .unwrap_err();
    assert!(
        matches!(
            err,
            LlmError::Context {
                context: 256,
                max_tokens: 100,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn hostile_files_are_errors() {
    let good = tiny_llama_gguf(TinyShape::default(), None);
    for bytes in [
        Vec::new(),
        b"GGUF".to_vec(),
        good[..good.len() / 2].to_vec(),
        good[..100].to_vec(),
        {
            let mut flipped = good.clone();
            for b in flipped.iter_mut().skip(8).take(64) {
                *b ^= 0xff;
            }
            flipped
        },
    ] {
        assert!(LlmModel::load(&bytes).is_err(), "{} bytes", bytes.len());
    }
}

#[test]
fn chats_render_with_the_models_template_and_answer() {
    use pipe_llm::{Message, Tool, ToolCall};
    let shape = TinyShape {
        context: 1024,
        ..Default::default()
    };
    let m = LlmModel::load(&tiny_llama_gguf(shape, Some(CHATML))).unwrap();
    let msg = |role: &str, content: &str| Message {
        role: role.into(),
        content: content.into(),
        ..Default::default()
    };
    let tools = [Tool {
        name: "price".into(),
        description: "The price of an asset".into(),
        parameters: r#"{"type":"object","properties":{"asset":{"type":"string"}}}"#.into(),
    }];
    let mut called = msg("assistant", "");
    called.tool_calls = vec![ToolCall {
        id: "call_0".into(),
        name: "price".into(),
        arguments: r#"{"asset":"ETH"}"#.into(),
    }];
    let mut answered = msg("tool", "3000");
    answered.tool_call_id = "call_0".into();
    let chat = [
        msg("system", "  Be brief.  "),
        msg("user", "ETH price?"),
        called,
        answered,
    ];
    let prompt = m.render_chat(&chat, &tools).unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nBe brief.\n\n# Tools"),
        "{prompt}"
    );
    assert!(prompt.contains(r#""name":"price""#), "{prompt}");
    assert!(
        prompt
            .contains(r#"<tool_call>{"name": "price", "arguments": {"asset":"ETH"}}</tool_call>"#),
        "{prompt}"
    );
    assert!(
        prompt.contains("<tool_response>3000</tool_response>"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|im_start|>assistant\n"), "{prompt}");
    // Without tools the template takes its other branch.
    let plain = m.render_chat(&chat[..2], &[]).unwrap();
    assert_eq!(
        plain,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nETH price?<|im_end|>\n<|im_start|>assistant\n"
    );
    // The template's own refusals are errors.
    let err = m.render_chat(&[msg("wizard", "hi")], &[]).unwrap_err();
    assert!(err.to_string().contains("unknown role wizard"), "{err}");
    // And the rendered prompt is answered like any other, the same way twice.
    let a = ask(&m, &prompt, 16, &[], Sampling::Greedy);
    assert_eq!(a, ask(&m, &prompt, 16, &[], Sampling::Greedy));
    // A model without a template cannot chat.
    assert!(matches!(
        model().render_chat(&chat, &[]),
        Err(LlmError::Unsupported(_))
    ));
}

/// A Qwen 2 file (its biases, its `qwen2.*` keys and pre-tokenizer) loads and decodes the
/// same way.
#[test]
fn a_qwen2_file_loads_and_decodes_deterministically() {
    let bytes = pipe_llm::test_utils::tiny_gguf(Architecture::Qwen2, TinyShape::default(), None);
    let m = LlmModel::load(&bytes).unwrap();
    assert_eq!(m.meta().architecture, Architecture::Qwen2);
    assert_eq!(m.meta().context_length, 256);
    let a = ask(&m, "Once upon a time", 16, &[], Sampling::Greedy);
    let again = LlmModel::load(&bytes).unwrap();
    assert_eq!(
        a,
        ask(&again, "Once upon a time", 16, &[], Sampling::Greedy)
    );
    assert!(!a.tokens.is_empty());
}

/// A Phi-3 file (fused projections, a SentencePiece vocabulary) loads and decodes the same way;
/// the Phi-3 files candle would answer differently from the model's definition are refused.
#[test]
fn a_phi3_file_loads_and_its_unlike_siblings_are_refused() {
    let bytes = pipe_llm::test_utils::tiny_gguf(Architecture::Phi3, TinyShape::default(), None);
    let m = LlmModel::load(&bytes).unwrap();
    assert_eq!(m.meta().architecture, Architecture::Phi3);
    assert_eq!(m.meta().context_length, 256);
    let a = ask(&m, "Once upon a time", 16, &[], Sampling::Greedy);
    assert_eq!(a, ask(&m, "Once upon a time", 16, &[], Sampling::Greedy));
    assert!(!a.tokens.is_empty());

    use candle_core::quantized::gguf_file::{self, Value};
    // The same file with `extra` metadata and tensors.
    let edited = |key: &str, value: Value, tensor: Option<&str>| -> Vec<u8> {
        let mut r = std::io::Cursor::new(&bytes);
        let c = gguf_file::Content::read(&mut r).unwrap();
        let mut names: Vec<String> = c.tensor_infos.keys().cloned().collect();
        names.sort();
        let mut tensors: Vec<(String, _)> = names
            .iter()
            .map(|n| {
                (
                    n.clone(),
                    c.tensor(&mut r, n, &candle_core::Device::Cpu).unwrap(),
                )
            })
            .collect();
        if let Some(t) = tensor {
            let norm = c.tensor(&mut r, "output_norm.weight", &candle_core::Device::Cpu);
            tensors.push((t.to_string(), norm.unwrap()));
        }
        let mut md: Vec<(String, Value)> = c.metadata.clone().into_iter().collect();
        md.push((key.to_string(), value));
        let md: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let ts: Vec<(&str, _)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut out = std::io::Cursor::new(Vec::new());
        gguf_file::write(&mut out, &md, &ts).unwrap();
        out.into_inner()
    };
    let refused = |b: &[u8]| match LlmModel::load(b) {
        Err(LlmError::Unsupported(why)) => why,
        other => panic!("{other:?}"),
    };
    let long = edited(
        "general.note",
        Value::String("128k".into()),
        Some("rope_factors_long.weight"),
    );
    assert!(refused(&long).contains("long-context"));
    let base = edited("phi3.rope.freq_base", Value::F32(250_000.0), None);
    assert!(refused(&base).contains("rotary base 250000"));
    // A sliding window bounds the context served (windowed and full attention then agree).
    let window = edited("phi3.attention.sliding_window", Value::U32(64), None);
    assert_eq!(LlmModel::load(&window).unwrap().meta().context_length, 64);
}

/// A Gemma 3 file (pipe's model on candle's operators) loads and decodes the same way twice,
/// past its sliding window (8 positions in the test kit's) and across runs that share nothing.
#[test]
fn a_gemma3_file_loads_and_decodes_deterministically() {
    let bytes = pipe_llm::test_utils::tiny_gguf(
        Architecture::Gemma3,
        TinyShape::of(Architecture::Gemma3),
        None,
    );
    let m = LlmModel::load(&bytes).unwrap();
    assert_eq!(m.meta().architecture, Architecture::Gemma3);
    assert_eq!(m.meta().context_length, 256);
    let long = "And it came to pass in those days, that there went out a decree";
    let a = ask(&m, long, 24, &[], Sampling::Greedy);
    let _ = ask(&m, "Love is", 8, &[], Sampling::Greedy);
    assert_eq!(a, ask(&m, long, 24, &[], Sampling::Greedy));
    assert!(a.prompt_tokens > 8 && !a.tokens.is_empty());
}

/// A run stopped from outside ends with `Cancelled` (no answer), and the model answers the
/// next request as if nothing had happened.
#[test]
fn a_stopped_run_is_no_answer() {
    let m = LlmModel::load(&tiny_llama_gguf(TinyShape::default(), None)).unwrap();
    let request = Request {
        prompt: "hello world",
        max_tokens: 8,
        stop: &[],
        sampling: Sampling::Greedy,
    };
    let stop = || true;
    assert_eq!(
        m.generate_until(&request, Some(&stop)).unwrap_err(),
        pipe_llm::LlmError::Cancelled
    );
    let once = m.generate(&request).unwrap();
    assert_eq!(m.generate(&request).unwrap(), once);
    // Its metadata counts its weights, which the cost per token follows.
    assert!(m.meta().parameters > 10_000, "{}", m.meta().parameters);
    let (_, meta) =
        pipe_llm::describe(&tiny_llama_gguf(TinyShape::default(), None), "t", None).unwrap();
    assert_eq!(meta.kind, pipe_primitives::ModelKind::Llm);
    assert_eq!(meta.cost_units, 1);
    assert_eq!(meta.llm.unwrap().max_tokens, 256);
}
