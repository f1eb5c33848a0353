//! The training loop: AdamW on next-token cross-entropy over random windows of the token
//! stream, the learning rate warming up and then decaying on a cosine. Windows come from a
//! seeded generator, so a run is the same run on every machine with the same thread count.

use candle_core::{Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::model::Llama;

/// How to train.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub steps: usize,
    pub batch: usize,
    pub peak_lr: f64,
    pub warmup: usize,
    pub seed: u64,
}

/// The learning rate at `step`: linear warm-up, then a cosine down to a tenth of the peak.
pub fn learning_rate(s: &Schedule, step: usize) -> f64 {
    if step < s.warmup {
        return s.peak_lr * (step + 1) as f64 / s.warmup as f64;
    }
    let done = (step - s.warmup) as f64 / (s.steps - s.warmup).max(1) as f64;
    let floor = s.peak_lr / 10.0;
    floor + (s.peak_lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * done.min(1.0)).cos())
}

/// Trains `model` on `stream`; `report` hears (step, loss) every few steps.
pub fn train(
    model: &Llama,
    stream: &[u32],
    s: &Schedule,
    mut report: impl FnMut(usize, f32),
) -> anyhow::Result<f32> {
    let t = model.shape.context;
    anyhow::ensure!(
        stream.len() > t + 1,
        "the corpus is shorter than one window"
    );
    let mut opt = AdamW::new(
        model.vars(),
        ParamsAdamW {
            lr: s.peak_lr,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let mut rng = s.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut last = f32::NAN;
    for step in 0..s.steps {
        let mut input = Vec::with_capacity(s.batch * t);
        let mut target = Vec::with_capacity(s.batch * t);
        for _ in 0..s.batch {
            let at = (next() % (stream.len() - t - 1) as u64) as usize;
            input.extend_from_slice(&stream[at..at + t]);
            target.extend_from_slice(&stream[at + 1..at + t + 1]);
        }
        let input = Tensor::from_vec(input, (s.batch, t), &Device::Cpu)?;
        let target = Tensor::from_vec(target, s.batch * t, &Device::Cpu)?;
        let logits = model.forward(&input)?;
        let loss = candle_nn::loss::cross_entropy(
            &logits.reshape((s.batch * t, model.shape.vocab))?,
            &target,
        )?;
        opt.set_learning_rate(learning_rate(s, step));
        opt.backward_step(&loss)?;
        last = loss.to_scalar::<f32>()?;
        report(step, last);
    }
    Ok(last)
}
