//! Tiny models with random weights, written as GGUF files in memory (feature `test-utils`):
//! the real loading and decoding paths of each family on a model small enough for any test.
//! Their answers are noise, but the same noise every time, which is what determinism tests
//! need. The tokenizer is named by its pre-tokenizer (`tokenizer.ggml.pre`: `llama3` for a
//! Llama, `qwen2` for a Qwen 2), as real files name theirs.

use candle_core::{
    DType, Device, Tensor,
    quantized::{GgmlDType, QTensor, gguf_file},
};

/// The shape of the tiny model.
#[derive(Clone, Copy, Debug)]
pub struct TinyShape {
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context: u32,
    /// Seed of the weights.
    pub seed: u64,
}

impl TinyShape {
    /// The test kit's shape for `family`: the default, with six layers for Gemma 3 (its
    /// sixth layer is its first that attends beyond the sliding window).
    pub fn of(family: crate::Architecture) -> Self {
        let mut shape = Self::default();
        if family == crate::Architecture::Gemma3 {
            shape.layers = 6;
        }
        shape
    }
}

impl Default for TinyShape {
    fn default() -> Self {
        Self {
            dim: 32,
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            context: 256,
            seed: 7,
        }
    }
}

/// GPT-2's byte-to-character table: each byte as the printable character byte-level BPE
/// tokenizers write it as.
pub fn byte_chars() -> Vec<char> {
    crate::tokenizer::byte_chars()
}

/// The tiny model's vocabulary and merges: the 256 bytes, a few merged tokens, and
/// `<|endoftext|>` (the end token) last.
pub fn vocabulary() -> (Vec<String>, Vec<String>, u32) {
    let chars = byte_chars();
    let mut tokens: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
    let space = chars[b' ' as usize];
    let merges = vec![
        format!("{space} t"),
        "h e".to_string(),
        format!("{space}t he"),
        "i n".to_string(),
        format!("{space} a"),
    ];
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<|endoftext|>".into());
    let eos = (tokens.len() - 1) as u32;
    (tokens, merges, eos)
}

/// A SentencePiece vocabulary (Llama 2's layout): `<unk> <s> </s>`, the 256 byte tokens, `▁`
/// and the printable ASCII characters, a few joined pieces, and Phi-3's `<|endoftext|>` and
/// `<|end|>`.
/// Tokens, scores (a later piece scores lower), llama.cpp token types, and the end token
/// (`</s>`).
pub fn sentencepiece_vocabulary() -> (Vec<String>, Vec<f32>, Vec<i32>, u32) {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let chars = std::iter::once("\u{2581}".to_string())
        .chain((b'!'..=b'~').map(|b| (b as char).to_string()));
    let joined = [
        "\u{2581}t",
        "he",
        "\u{2581}the",
        "in",
        "\u{2581}a",
        "\u{2581}L",
        "OR",
        "\u{2581}LORD",
    ];
    for t in chars.chain(joined.iter().map(|s| s.to_string())) {
        tokens.push(t);
        types.push(1);
    }
    // Phi-3's specials (llama.cpp looks them up by text in a file named Phi-3).
    for special in ["<|endoftext|>", "<|end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    let scores = (0..tokens.len())
        .map(|i| if types[i] == 1 { -(i as f32) } else { 0.0 })
        .collect();
    (tokens, scores, types, 2)
}

/// Deterministic pseudo-random numbers in [-scale, scale] (xorshift): the same seed gives the
/// same numbers on every machine.
pub fn noise(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The tiny Llama as GGUF bytes, with `chat_template` if given.
pub fn tiny_llama_gguf(shape: TinyShape, chat_template: Option<&str>) -> Vec<u8> {
    tiny_gguf(crate::Architecture::Llama, shape, chat_template)
}

/// A tiny model of `family` as GGUF bytes, with `chat_template` if given.
pub fn tiny_gguf(
    family: crate::Architecture,
    shape: TinyShape,
    chat_template: Option<&str>,
) -> Vec<u8> {
    let arch = family.name();
    // Phi-3 and Gemma files carry a SentencePiece vocabulary, the others byte-level BPE.
    let gemma = family == crate::Architecture::Gemma3;
    let sentencepiece = family == crate::Architecture::Phi3 || gemma;
    let (tokens, merges, eos) = if sentencepiece {
        let (tokens, _, _, eos) = sentencepiece_vocabulary();
        (tokens, vec![], eos)
    } else {
        vocabulary()
    };
    let vocab = tokens.len();
    let head_dim = shape.dim / shape.heads;
    let kv_dim = head_dim * shape.kv_heads;
    let mut seed = shape.seed;
    let mut tensor = |dims: &[usize], scale: f32| {
        seed += 1;
        let n = dims.iter().product();
        let t = Tensor::from_vec(noise(seed, n, scale), dims, &Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .expect("a tensor");
        QTensor::quantize(&t, GgmlDType::F32).expect("f32 needs no quantization")
    };
    let ones = |n: usize| {
        let t = Tensor::ones(n, DType::F32, &Device::Cpu).expect("a tensor");
        QTensor::quantize(&t, GgmlDType::F32).expect("f32")
    };
    let mut named: Vec<(String, QTensor)> = vec![
        // Gemma's embeddings are its output matrix too, scaled up by sqrt(dim) on the way in:
        // small, or every answer repeats its last token.
        (
            "token_embd.weight".into(),
            tensor(&[vocab, shape.dim], if gemma { 0.1 } else { 1.0 }),
        ),
        ("output_norm.weight".into(), ones(shape.dim)),
    ];
    if gemma {
        // Gemma 3: the output matrix is the embeddings (no `output.weight`); norms around one,
        // not exactly one, so a norm applied to the wrong thing shows.
        let mut norm_seed = shape.seed.wrapping_add(10_000);
        let mut norm = |n: usize| {
            norm_seed += 1;
            let t = (Tensor::from_vec(noise(norm_seed, n, 0.2), n, &Device::Cpu)
                .expect("a tensor")
                + 1.0)
                .expect("a tensor");
            QTensor::quantize(&t, GgmlDType::F32).expect("f32")
        };
        let mut blocks = Vec::new();
        for l in 0..shape.layers {
            let p = format!("blk.{l}");
            for n in [
                "attn_norm",
                "post_attention_norm",
                "ffn_norm",
                "post_ffw_norm",
            ] {
                blocks.push((format!("{p}.{n}.weight"), norm(shape.dim)));
            }
            for n in ["attn_q_norm", "attn_k_norm"] {
                blocks.push((format!("{p}.{n}.weight"), norm(head_dim)));
            }
        }
        named.extend(blocks);
        for l in 0..shape.layers {
            let p = format!("blk.{l}");
            for (n, dims) in [
                ("attn_q", [shape.dim, shape.dim]),
                ("attn_k", [kv_dim, shape.dim]),
                ("attn_v", [kv_dim, shape.dim]),
                ("attn_output", [shape.dim, shape.dim]),
                ("ffn_gate", [shape.hidden, shape.dim]),
                ("ffn_up", [shape.hidden, shape.dim]),
                ("ffn_down", [shape.dim, shape.hidden]),
            ] {
                named.push((format!("{p}.{n}.weight"), tensor(&dims, 0.3)));
            }
        }
    } else {
        named.push(("output.weight".into(), tensor(&[vocab, shape.dim], 0.5)));
    }
    // Gemma's layers are written above; the others' here.
    let other_layers = if gemma { 0 } else { shape.layers };
    for l in 0..other_layers {
        let p = format!("blk.{l}");
        named.push((format!("{p}.attn_norm.weight"), ones(shape.dim)));
        named.push((format!("{p}.ffn_norm.weight"), ones(shape.dim)));
        if family == crate::Architecture::Phi3 {
            // Phi-3 keeps query, key and value in one matrix, and gate and up in another.
            named.push((
                format!("{p}.attn_qkv.weight"),
                tensor(&[shape.dim + 2 * kv_dim, shape.dim], 0.3),
            ));
            named.push((
                format!("{p}.attn_output.weight"),
                tensor(&[shape.dim, shape.dim], 0.3),
            ));
            named.push((
                format!("{p}.ffn_up.weight"),
                tensor(&[2 * shape.hidden, shape.dim], 0.3),
            ));
            named.push((
                format!("{p}.ffn_down.weight"),
                tensor(&[shape.dim, shape.hidden], 0.3),
            ));
            continue;
        }
        named.push((
            format!("{p}.attn_q.weight"),
            tensor(&[shape.dim, shape.dim], 0.3),
        ));
        named.push((
            format!("{p}.attn_k.weight"),
            tensor(&[kv_dim, shape.dim], 0.3),
        ));
        named.push((
            format!("{p}.attn_v.weight"),
            tensor(&[kv_dim, shape.dim], 0.3),
        ));
        if family == crate::Architecture::Qwen2 {
            // Qwen 2 has biases on its query, key and value projections.
            named.push((format!("{p}.attn_q.bias"), tensor(&[shape.dim], 0.1)));
            named.push((format!("{p}.attn_k.bias"), tensor(&[kv_dim], 0.1)));
            named.push((format!("{p}.attn_v.bias"), tensor(&[kv_dim], 0.1)));
        }
        named.push((
            format!("{p}.attn_output.weight"),
            tensor(&[shape.dim, shape.dim], 0.3),
        ));
        named.push((
            format!("{p}.ffn_gate.weight"),
            tensor(&[shape.hidden, shape.dim], 0.3),
        ));
        named.push((
            format!("{p}.ffn_up.weight"),
            tensor(&[shape.hidden, shape.dim], 0.3),
        ));
        named.push((
            format!("{p}.ffn_down.weight"),
            tensor(&[shape.dim, shape.hidden], 0.3),
        ));
    }
    use gguf_file::Value;
    let strings = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let mut keys: Vec<(String, Value)> = vec![
        (format!("{arch}.context_length"), Value::U32(shape.context)),
        (
            format!("{arch}.embedding_length"),
            Value::U32(shape.dim as u32),
        ),
        (
            format!("{arch}.feed_forward_length"),
            Value::U32(shape.hidden as u32),
        ),
        (
            format!("{arch}.block_count"),
            Value::U32(shape.layers as u32),
        ),
        (
            format!("{arch}.attention.head_count"),
            Value::U32(shape.heads as u32),
        ),
        (
            format!("{arch}.attention.head_count_kv"),
            Value::U32(shape.kv_heads as u32),
        ),
        (
            format!("{arch}.rope.dimension_count"),
            Value::U32(head_dim as u32),
        ),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-5),
        ),
    ];
    if gemma {
        keys.extend([
            (
                format!("{arch}.attention.key_length"),
                Value::U32(head_dim as u32),
            ),
            (
                format!("{arch}.attention.value_length"),
                Value::U32(head_dim as u32),
            ),
            // Short, so prompts reach past it.
            (format!("{arch}.attention.sliding_window"), Value::U32(8)),
            (format!("{arch}.rope.freq_base"), Value::F32(1_000_000.0)),
            (format!("{arch}.rope.scaling.factor"), Value::F32(8.0)),
        ]);
    }
    let pre = match family {
        crate::Architecture::Qwen2 => "qwen2",
        _ => "llama3",
    };
    let mut metadata: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String(arch.into())),
        (
            "general.name",
            Value::String(format!("pipe tiny test {arch}")),
        ),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.eos_token_id", Value::U32(eos)),
        // Said outright: llama.cpp's default for a `llama3` vocabulary is to add one.
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    if sentencepiece {
        let (_, scores, types, _) = sentencepiece_vocabulary();
        metadata.extend([
            ("tokenizer.ggml.model", Value::String("llama".into())),
            (
                "tokenizer.ggml.scores",
                Value::Array(scores.into_iter().map(Value::F32).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
            // Gemma's SentencePiece does not put a space before the text.
            ("tokenizer.ggml.add_space_prefix", Value::Bool(!gemma)),
        ]);
    } else {
        metadata.extend([
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String(pre.into())),
            ("tokenizer.ggml.merges", strings(&merges)),
        ]);
    }
    if let Some(t) = chat_template {
        metadata.push(("tokenizer.chat_template", Value::String(t.into())));
    }
    metadata.extend(keys.iter().map(|(k, v)| (k.as_str(), v.clone())));
    let metadata: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let tensors: Vec<(&str, &QTensor)> = named.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors).expect("writes to memory");
    out.into_inner()
}

/// ChatML, the way Qwen 2.5's template writes it: tools listed in the system turn as JSON,
/// tool calls and tool answers in tags, Python string methods, `raise_exception`.
pub const CHATML_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
{{ messages[0].content.strip() if messages[0].role == 'system' else 'You are a helpful assistant.' }}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>
For each call, return <tool_call>{"name": <name>, "arguments": <args>}</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content.strip() }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role not in ['system', 'user', 'assistant', 'tool'] %}{{ raise_exception('unknown role ' ~ message.role) }}{% endif %}
{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>{{ message.content }}</tool_response><|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;
