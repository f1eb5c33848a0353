//! Gemma 3, written on candle's operators because candle's own `quantized_gemma3` (0.11) is
//! not the model llama.cpp runs from the same file: its feed-forward gate uses SiLU where Gemma
//! 3 uses (tanh) GELU, its sliding window admits one position too many and is not applied to
//! one-token steps at all, it ignores the global layers' rotary scaling, and it allocates
//! rotary tables for 131 072 positions in every layer. As with tract, where the engine lacks
//! a piece we write that piece, on the engine's kernels (quantized matmuls, RMS norm, rotary
//! embedding, softmax), and check it against an independent implementation: the test kit's tiny
//! Gemma 3 against llama.cpp's logits (`tests/dev_model.rs`).
//!
//! The model, as llama.cpp computes it from a GGUF file (whose norm weights already hold
//! Gemma's `1 + w`):
//! - embeddings times `sqrt(dim)`;
//! - each layer: RMS norm, attention, RMS norm, residual; RMS norm, `down(gelu(gate(x)) *
//!   up(x))`, RMS norm, residual;
//! - attention: queries and keys RMS-normed per head, rotated (NeoX halves), queries scaled by
//!   `1/sqrt(head_dim)` (`1/sqrt(dim/heads)` for the 62-layer 27B); grouped key/value heads;
//! - five of every six layers attend to the last `sliding_window` positions only (a position
//!   sees keys fewer than `sliding_window` positions back), with rotary base 10 000; every
//!   sixth attends to everything, with the file's base and its linear scaling factor;
//! - a final RMS norm, and the output matrix (the embeddings, when the file has none).

use candle_core::{
    DType, Device, IndexOp, Module, Tensor,
    quantized::{QMatMul, gguf_file},
};
use candle_nn::{ops, rotary_emb};

/// Of every this many layers, all but the last attend through the sliding window.
const SLIDING_PATTERN: usize = 6;
/// The sliding layers' rotary base.
const SLIDING_ROPE_BASE: f32 = 10_000.0;
/// Gemma 3 27B's layer count: its queries are scaled by the model width per head, not the
/// head size (llama.cpp tells the 27B apart the same way).
const LAYERS_27B: usize = 62;

struct Layer {
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: Tensor,
    k_norm: Tensor,
    attn_norm: Tensor,
    post_attn_norm: Tensor,
    ffn_norm: Tensor,
    post_ffn_norm: Tensor,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    /// Positions a query sees back (itself included), for a sliding layer.
    window: Option<usize>,
    cos: Tensor,
    sin: Tensor,
    /// Keys and values so far: `(1, kv_heads, positions, head_dim)`.
    cache: Option<(Tensor, Tensor)>,
}

/// Gemma 3's weights and attention cache.
pub(crate) struct Gemma3 {
    embed: Tensor,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: Tensor,
    output: QMatMul,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    q_scale: f64,
    eps: f32,
}

/// Cosines and sines of the rotary angles for `positions` positions.
fn rotary(
    head_dim: usize,
    base: f32,
    scale: f32,
    positions: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / base.powf(i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::new(inv.as_slice(), &Device::Cpu)?;
    let angles = (Tensor::arange(0, positions as u32, &Device::Cpu)?.to_dtype(DType::F32)?
        * f64::from(scale))?
    .reshape((positions, 1))?
    .matmul(&inv.reshape((1, head_dim / 2))?)?;
    Ok((angles.cos()?, angles.sin()?))
}

impl Gemma3 {
    /// Reads the weights from `content`, for runs of at most `context` positions.
    pub(crate) fn from_gguf<R: std::io::Read + std::io::Seek>(
        content: &gguf_file::Content,
        reader: &mut R,
        context: usize,
    ) -> candle_core::Result<Self> {
        let dev = &Device::Cpu;
        let md = |key: &str| {
            content
                .metadata
                .get(&format!("gemma3.{key}"))
                .ok_or_else(|| candle_core::Error::Msg(format!("no gemma3.{key}")))
        };
        let int = |key: &str| md(key).and_then(|v| v.to_u32()).map(|n| n as usize);
        let float = |key: &str, default: f32| md(key).and_then(|v| v.to_f32()).unwrap_or(default);
        let dim = int("embedding_length")?;
        let layers = int("block_count")?;
        let heads = int("attention.head_count")?;
        let kv_heads = int("attention.head_count_kv")?;
        let head_dim = int("attention.key_length")?;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 || head_dim % 2 != 0 {
            candle_core::bail!(
                "gemma3: {heads} heads, {kv_heads} key/value heads, head size {head_dim}"
            );
        }
        if int("attention.value_length")? != head_dim {
            candle_core::bail!("gemma3: values and keys of different sizes");
        }
        let window = int("attention.sliding_window")?;
        let eps = float("attention.layer_norm_rms_epsilon", 1e-6);
        let base = float("rope.freq_base", 1_000_000.0);
        let factor = float("rope.scaling.factor", 1.0);
        let scale = if factor > 0.0 { 1.0 / factor } else { 1.0 };
        let (g_cos, g_sin) = rotary(head_dim, base, scale, context)?;
        let (s_cos, s_sin) = rotary(head_dim, SLIDING_ROPE_BASE, 1.0, context)?;

        let mut tensor = |name: &str| content.tensor(reader, name, dev);
        let embed_q = tensor("token_embd.weight")?;
        let embed = embed_q.dequantize(dev)?;
        let output = match tensor("output.weight") {
            Ok(w) => QMatMul::from_qtensor(w)?,
            Err(_) => QMatMul::from_qtensor(embed_q)?,
        };
        let norm = tensor("output_norm.weight")?.dequantize(dev)?;
        let mut blocks = Vec::with_capacity(layers);
        for l in 0..layers {
            let mut w = |n: &str| tensor(&format!("blk.{l}.{n}.weight"));
            let sliding = l % SLIDING_PATTERN < SLIDING_PATTERN - 1;
            let (cos, sin) = if sliding {
                (s_cos.clone(), s_sin.clone())
            } else {
                (g_cos.clone(), g_sin.clone())
            };
            blocks.push(Layer {
                q: QMatMul::from_qtensor(w("attn_q")?)?,
                k: QMatMul::from_qtensor(w("attn_k")?)?,
                v: QMatMul::from_qtensor(w("attn_v")?)?,
                o: QMatMul::from_qtensor(w("attn_output")?)?,
                q_norm: w("attn_q_norm")?.dequantize(dev)?,
                k_norm: w("attn_k_norm")?.dequantize(dev)?,
                attn_norm: w("attn_norm")?.dequantize(dev)?,
                post_attn_norm: w("post_attention_norm")?.dequantize(dev)?,
                ffn_norm: w("ffn_norm")?.dequantize(dev)?,
                post_ffn_norm: w("post_ffw_norm")?.dequantize(dev)?,
                gate: QMatMul::from_qtensor(w("ffn_gate")?)?,
                up: QMatMul::from_qtensor(w("ffn_up")?)?,
                down: QMatMul::from_qtensor(w("ffn_down")?)?,
                window: sliding.then_some(window),
                cos,
                sin,
                cache: None,
            });
        }
        let q_scale = if layers == LAYERS_27B {
            1.0 / ((dim / heads) as f64).sqrt()
        } else {
            1.0 / (head_dim as f64).sqrt()
        };
        Ok(Self {
            embed,
            embed_scale: (dim as f64).sqrt(),
            layers: blocks,
            norm,
            output,
            heads,
            kv_heads,
            head_dim,
            q_scale,
            eps,
        })
    }

    /// Forgets every position: the next run starts at 0.
    pub(crate) fn clear_kv_cache(&mut self) {
        for l in &mut self.layers {
            l.cache = None;
        }
    }

    /// The logits after `tokens` (`(1, n)`), which start at position `index`: `(1, vocab)`.
    pub(crate) fn forward(&mut self, tokens: &Tensor, index: usize) -> candle_core::Result<Tensor> {
        let (b, seq) = tokens.dims2()?;
        let dim = self.embed.dim(1)?;
        let mut h = (self
            .embed
            .index_select(&tokens.flatten_all()?, 0)?
            .reshape((b, seq, dim))?
            * self.embed_scale)?;
        let eps = self.eps;
        let (heads, kv_heads, head_dim, q_scale) =
            (self.heads, self.kv_heads, self.head_dim, self.q_scale);
        for l in &mut self.layers {
            let x = ops::rms_norm(&h, &l.attn_norm, eps)?;
            let x = l.attend(&x, index, heads, kv_heads, head_dim, q_scale, eps)?;
            h = (ops::rms_norm(&x, &l.post_attn_norm, eps)? + h)?;
            let x = ops::rms_norm(&h, &l.ffn_norm, eps)?;
            let x = l
                .down
                .forward(&(l.gate.forward(&x)?.gelu()? * l.up.forward(&x)?)?)?;
            h = (ops::rms_norm(&x, &l.post_ffn_norm, eps)? + h)?;
        }
        let last = h.i((.., seq - 1, ..))?.contiguous()?;
        self.output.forward(&ops::rms_norm(&last, &self.norm, eps)?)
    }
}

impl Layer {
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &mut self,
        x: &Tensor,
        index: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        q_scale: f64,
        eps: f32,
    ) -> candle_core::Result<Tensor> {
        let (b, seq, _) = x.dims3()?;
        let split = |t: Tensor, n: usize| -> candle_core::Result<Tensor> {
            t.reshape((b, seq, n, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split(self.q.forward(x)?, heads)?;
        let k = split(self.k.forward(x)?, kv_heads)?;
        let v = split(self.v.forward(x)?, kv_heads)?;
        let q = ops::rms_norm(&q, &self.q_norm, eps)?;
        let k = ops::rms_norm(&k, &self.k_norm, eps)?;
        let cos = self.cos.narrow(0, index, seq)?;
        let sin = self.sin.narrow(0, index, seq)?;
        let q = (rotary_emb::rope(&q, &cos, &sin)? * q_scale)?;
        let k = rotary_emb::rope(&k, &cos, &sin)?;
        if index == 0 {
            self.cache = None;
        }
        let (k, v) = match self.cache.take() {
            Some((ck, cv)) => (Tensor::cat(&[&ck, &k], 2)?, Tensor::cat(&[&cv, &v], 2)?),
            None => (k, v),
        };
        self.cache = Some((k.clone(), v.clone()));
        let kv_len = k.dim(2)?;
        let k = candle_transformers::utils::repeat_kv(k, heads / kv_heads)?;
        let v = candle_transformers::utils::repeat_kv(v, heads / kv_heads)?;
        let mut scores = q.matmul(&k.t()?)?;
        // Query i (position index + i) sees key j when j <= its position and, in a sliding
        // layer, fewer than `window` positions back.
        let first = kv_len - seq;
        let visible = |i: usize, j: usize| {
            let p = first + i;
            j <= p && self.window.is_none_or(|w| p - j < w)
        };
        if (0..seq).any(|i| (0..kv_len).any(|j| !visible(i, j))) {
            let mask: Vec<f32> = (0..seq)
                .flat_map(|i| {
                    (0..kv_len).map(move |j| {
                        if visible(i, j) {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (seq, kv_len), &Device::Cpu)?;
            scores = scores.broadcast_add(&mask)?;
        }
        let y = ops::softmax_last_dim(&scores)?.matmul(&v)?;
        let y = y.transpose(1, 2)?.reshape((b, seq, heads * head_dim))?;
        self.o.forward(&y)
    }
}
