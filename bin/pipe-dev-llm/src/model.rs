//! The Llama being trained: candle tensors with gradients, shaped and named as GGUF's `llama`
//! architecture, and a forward pass over whole sequences (training needs every position's
//! logits; candle's inference model returns only the last one's).
//!
//! The forward pass computes what llama.cpp and candle's `quantized_llama` compute at
//! inference, so what the weights learn here is what they say there: RMS norm before
//! attention and before the feed-forward, rotary positions on interleaved pairs (llama.cpp's
//! "normal" rope, the layout GGUF's `llama` stores) with base 10 000, grouped-query attention
//! where head `h` reads key/value head `h / (heads / kv_heads)`, a SwiGLU feed-forward, and an
//! untied output matrix. Only differentiable candle operations are used (candle's fused
//! kernels for softmax, norms and rope have no backward pass).

use candle_core::{D, DType, Device, Result, Tensor, Var};

/// The shape of the model.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub vocab: usize,
    pub dim: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// The longest sequence trained on and declared as the context length.
    pub context: usize,
}

pub const RMS_EPS: f64 = 1e-5;
pub const ROPE_BASE: f32 = 10_000.0;

impl Shape {
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads
    }
}

/// One weight: its GGUF name and its variable.
pub struct Named {
    pub name: String,
    pub var: Var,
}

/// The weights, by GGUF name.
pub struct Llama {
    pub shape: Shape,
    pub weights: Vec<Named>,
}

impl Llama {
    /// Fresh weights: uniform with a standard deviation of 0.02, the projections back into
    /// the residual stream scaled down by `sqrt(2 * layers)` (GPT-2's rule), norms at one.
    pub fn new(shape: Shape, seed: u64) -> Result<Self> {
        let mut weights = Vec::new();
        let mut n = 0u64;
        let std_to_scale = 3f32.sqrt();
        let mut add = |name: String, dims: &[usize], std: Option<f32>| -> Result<()> {
            n += 1;
            let count = dims.iter().product();
            let t = match std {
                Some(std) => Tensor::from_vec(
                    pipe_llm::test_utils::noise(seed ^ n, count, std * std_to_scale),
                    dims,
                    &Device::Cpu,
                )?,
                None => Tensor::ones(dims, DType::F32, &Device::Cpu)?,
            };
            weights.push(Named {
                name,
                var: Var::from_tensor(&t)?,
            });
            Ok(())
        };
        let (d, h, kv) = (shape.dim, shape.hidden, shape.kv_heads * shape.head_dim());
        let residual = 0.02 / (2.0 * shape.layers as f32).sqrt();
        add("token_embd.weight".into(), &[shape.vocab, d], Some(0.02))?;
        for l in 0..shape.layers {
            let p = format!("blk.{l}");
            add(format!("{p}.attn_norm.weight"), &[d], None)?;
            add(format!("{p}.attn_q.weight"), &[d, d], Some(0.02))?;
            add(format!("{p}.attn_k.weight"), &[kv, d], Some(0.02))?;
            add(format!("{p}.attn_v.weight"), &[kv, d], Some(0.02))?;
            add(format!("{p}.attn_output.weight"), &[d, d], Some(residual))?;
            add(format!("{p}.ffn_norm.weight"), &[d], None)?;
            add(format!("{p}.ffn_gate.weight"), &[h, d], Some(0.02))?;
            add(format!("{p}.ffn_up.weight"), &[h, d], Some(0.02))?;
            add(format!("{p}.ffn_down.weight"), &[d, h], Some(residual))?;
        }
        add("output_norm.weight".into(), &[d], None)?;
        add("output.weight".into(), &[shape.vocab, d], Some(0.02))?;
        Ok(Self { shape, weights })
    }

    pub fn vars(&self) -> Vec<Var> {
        self.weights.iter().map(|w| w.var.clone()).collect()
    }

    fn w(&self, name: &str) -> &Tensor {
        self.weights
            .iter()
            .find(|w| w.name == name)
            .map(|w| w.var.as_tensor())
            .expect("every name is created in new")
    }

    /// Logits for every position of `tokens` (batch, time): (batch, time, vocab).
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let (b, t) = tokens.dims2()?;
        let s = self.shape;
        let (hd, nh, nkv) = (s.head_dim(), s.heads, s.kv_heads);
        let (cos, sin) = rope_tables(hd, t)?;
        let mask = causal_mask(t)?;
        let mut x = self
            .w("token_embd.weight")
            .embedding(&tokens.flatten_all()?)?
            .reshape((b, t, s.dim))?;
        for l in 0..s.layers {
            let p = |n: &str| format!("blk.{l}.{n}.weight");
            let h = rms_norm(&x, self.w(&p("attn_norm")))?;
            let heads = |w: &str, n: usize| -> Result<Tensor> {
                linear(&h, self.w(&p(w)))?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let q = rope(&heads("attn_q", nh)?, &cos, &sin)?;
            let k = repeat_kv(&rope(&heads("attn_k", nkv)?, &cos, &sin)?, nh / nkv)?;
            let v = repeat_kv(&heads("attn_v", nkv)?, nh / nkv)?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let attn = candle_nn::ops::softmax(&scores, D::Minus1)?
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, s.dim))?;
            x = (x + linear(&attn, self.w(&p("attn_output")))?)?;
            let h = rms_norm(&x, self.w(&p("ffn_norm")))?;
            let gate = linear(&h, self.w(&p("ffn_gate")))?;
            let silu = (&gate * (gate.neg()?.exp()? + 1.0)?.recip()?)?;
            let up = linear(&h, self.w(&p("ffn_up")))?;
            x = (x + linear(&(silu * up)?, self.w(&p("ffn_down")))?)?;
        }
        let x = rms_norm(&x, self.w("output_norm.weight"))?;
        linear(&x, self.w("output.weight"))
    }
}

/// `x @ w^T` for x of any batch shape.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.broadcast_matmul(&w.t()?)
}

fn rms_norm(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(ms + RMS_EPS)?.sqrt()?)?.broadcast_mul(w)
}

/// cos and sin of each position's angle for each pair: (time, head_dim / 2).
fn rope_tables(head_dim: usize, t: usize) -> Result<(Tensor, Tensor)> {
    let freqs: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1.0 / ROPE_BASE.powf(i as f32 / head_dim as f32))
        .collect();
    let freqs = Tensor::from_vec(freqs, (1, head_dim / 2), &Device::Cpu)?;
    let pos = Tensor::arange(0u32, t as u32, &Device::Cpu)?
        .to_dtype(DType::F32)?
        .reshape((t, 1))?;
    let angles = pos.broadcast_mul(&freqs)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Rotates interleaved pairs `(x[2i], x[2i+1])` of (batch, heads, time, head_dim).
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let pairs = x.reshape((b, h, t, d / 2, 2))?;
    let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
    let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
    let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    Tensor::stack(&[r0, r1], 4)?.reshape((b, h, t, d))
}

/// Each key/value head repeated `n` times in a row: head `h` reads head `h / n`.
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?
        .expand((b, kv, n, t, d))?
        .reshape((b, kv * n, t, d))
}

/// 0 on and below the diagonal, a large negative number above it: (time, time).
fn causal_mask(t: usize) -> Result<Tensor> {
    let m: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { -1e9 } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (t, t), &Device::Cpu)
}
