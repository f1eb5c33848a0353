//! Small 2-D convolutions as one direct operator.
//!
//! tract plans an ONNX `Conv` as a pad, a lazy im2col, a packed matrix product and a reshape:
//! four operators, each allocating its output, before the arithmetic. For the small
//! convolutional networks contracts call (a few channels over an 8×8 or 28×28 input) that
//! bookkeeping costs more than the few thousand multiply-adds themselves: a one-layer CNN ran
//! at twice onnxruntime's latency. Here a float 2-D convolution whose work is small
//! ([`MAX_MACS`] multiply-adds per image) is replaced, once the model is decluttered, by
//! [`DirectConv`]: one operator that gathers the image's patches and adds each kernel tap's
//! weight times its patch row into the output plane, every sum in a fixed order (bias, then
//! input channel, kernel row, kernel column) and without fused multiply-adds, so it gives the
//! same bits on every run and thread count. Larger, grouped, quantized or non-constant-kernel
//! convolutions stay tract's.

use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::cnn::{Conv, KernelFormat, PoolSpec};

use super::f32_values;
use tract_onnx::tract_hir::tract_core::ops::nn::DataFormat;

/// Most multiply-adds per image a convolution may take to run directly; above it tract's
/// packed matrix kernels win over the direct loop.
pub const MAX_MACS: usize = 1 << 18;

/// Most values one evaluation may produce (64 MiB of f32): a batch of small images with a
/// hostile padding must not allocate without bound.
const MAX_OUTPUTS: usize = 1 << 24;

/// A float NCHW 2-D convolution with a constant OIHW kernel, one group, planned for one
/// image size.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectConv {
    /// For the output fact (a symbolic batch included).
    pool_spec: PoolSpec,
    /// `[out channels, in channels, kernel rows, kernel columns]`, row-major.
    kernel: Vec<f32>,
    kernel_shape: [usize; 4],
    /// One value per output channel.
    bias: Vec<f32>,
    /// The image `(rows, columns)` the model declares: the geometry below is computed for it
    /// once, and its work was bounded by [`MAX_MACS`] when the operator was chosen.
    image: (usize, usize),
    geometry: Geometry,
}

impl Eq for DirectConv {}

/// Replaces every small float 2-D convolution of `model` with a [`DirectConv`].
pub fn direct_small_convs(mut model: TypedModel) -> TractResult<TypedModel> {
    for id in model.eval_order()? {
        let node = &model.nodes[id];
        let Some(conv) = node.op_as::<Conv>() else {
            continue;
        };
        let Some(op) = direct(&model, node, conv)? else {
            continue;
        };
        let patch = TypedModelPatch::replace_single_op(&model, node, &node.inputs[..1], op)?;
        patch.apply(&mut model)?;
    }
    // Drops the replaced convolutions' kernel and bias constants.
    model.into_compact()
}

/// The direct form of `conv`, if it qualifies.
fn direct(model: &TypedModel, node: &TypedNode, conv: &Conv) -> TractResult<Option<DirectConv>> {
    let spec = &conv.pool_spec;
    if conv.group != 1
        || conv.q_params.is_some()
        || conv.kernel_fmt != KernelFormat::OIHW
        || spec.data_format != DataFormat::NCHW
        || spec.kernel_shape.len() != 2
        || node.inputs.len() != 3
    {
        return Ok(None);
    }
    let input = model.outlet_fact(node.inputs[0])?;
    let (Some(kernel), Some(bias)) = (
        model.outlet_fact(node.inputs[1])?.konst.clone(),
        model.outlet_fact(node.inputs[2])?.konst.clone(),
    ) else {
        return Ok(None);
    };
    if input.datum_type != f32::datum_type()
        || kernel.datum_type() != f32::datum_type()
        || bias.datum_type() != f32::datum_type()
        || input.rank() != 4
    {
        return Ok(None);
    }
    let (co, ci) = (spec.output_channels, spec.input_channels);
    let (kh, kw) = (spec.kernel_shape[0], spec.kernel_shape[1]);
    if kernel.shape() != [co, ci, kh, kw] {
        return Ok(None);
    }
    // The image size must be known to bound the work (the batch may stay symbolic).
    let (Ok(h), Ok(w)) = (input.shape[2].to_usize(), input.shape[3].to_usize()) else {
        return Ok(None);
    };
    // An empty image padded into a non-empty output is tract's to handle.
    if h == 0 || w == 0 {
        return Ok(None);
    }
    let positive = |v: &Option<TVec<usize>>| v.as_ref().is_none_or(|v| v.iter().all(|x| *x > 0));
    if !positive(&spec.strides) || !positive(&spec.dilations) {
        return Ok(None);
    }
    let padded = spec.computed_padding(&[h, w]);
    let fits = padded[0]
        .convoluted
        .checked_mul(padded[1].convoluted)
        .and_then(|outputs| outputs.checked_mul(co * ci * kh * kw))
        .is_some_and(|macs| macs > 0 && macs <= MAX_MACS);
    if !fits {
        return Ok(None);
    }
    // Anything unexpected leaves the convolution to tract rather than failing the model.
    let (Some(kernel), Some(bias)) = (f32_values(&kernel), f32_values(&bias)) else {
        return Ok(None);
    };
    let bias = match bias.len() {
        1 => vec![bias[0]; co],
        n if n == co => bias,
        _ => return Ok(None),
    };
    let axis = |i: usize| Axis {
        out: padded[i].convoluted,
        stride: spec.strides.as_ref().map_or(1, |s| s[i]),
        dilation: spec.dilations.as_ref().map_or(1, |d| d[i]),
        pad_before: padded[i].pad_before,
    };
    Ok(Some(DirectConv {
        pool_spec: spec.clone(),
        kernel,
        kernel_shape: [co, ci, kh, kw],
        bias,
        image: (h, w),
        geometry: Geometry {
            rows: axis(0),
            cols: axis(1),
        },
    }))
}

impl DirectConv {
    /// Convolves one `[ci, h, w]` image into `out`, `[co, oh, ow]`, with `patches` (`taps ×
    /// oh·ow` values) as scratch.
    ///
    /// First the image's patches: row `t = (c, ky, kx)` holds, for every output position, the
    /// input value kernel tap `t` reads there (zero in the padding). Then each output plane is
    /// its bias plus, tap by tap, the tap's weight times its patch row: long contiguous
    /// multiply-adds that the compiler vectorizes, summed in tap order.
    fn convolve(&self, x: &[f32], out: &mut [f32], patches: &mut [f32]) {
        let [_, ci, kh, kw] = self.kernel_shape;
        let (h, w) = self.image;
        let geo = &self.geometry;
        let ow = geo.cols.out;
        let plane = geo.rows.out * ow;
        let taps = ci * kh * kw;
        // Positions in the padding are never written, so they keep the zeros `patches` was
        // made with; the others are overwritten for every image.
        for (t, patch) in patches.chunks_exact_mut(plane).enumerate() {
            let (c, ky, kx) = (t / (kh * kw), t / kw % kh, t % kw);
            let (rows, cols) = (geo.rows.valid(ky, h), geo.cols.valid(kx, w));
            if rows.is_empty() || cols.is_empty() {
                continue;
            }
            let image = &x[c * h * w..(c + 1) * h * w];
            for oy in rows {
                let line = &image[geo.rows.input(oy, ky) * w..][..w];
                let dst = &mut patch[oy * ow..(oy + 1) * ow];
                if geo.cols.stride == 1 {
                    let start = geo.cols.input(cols.start, kx);
                    dst[cols.clone()].copy_from_slice(&line[start..start + cols.len()]);
                } else {
                    for ox in cols.clone() {
                        dst[ox] = line[geo.cols.input(ox, kx)];
                    }
                }
            }
        }
        for ((plane_out, weights), bias) in out
            .chunks_exact_mut(plane)
            .zip(self.kernel.chunks_exact(taps))
            .zip(&self.bias)
        {
            plane_out.fill(*bias);
            for (tap, patch) in weights.iter().zip(patches.chunks_exact(plane)) {
                for (d, s) in plane_out.iter_mut().zip(patch) {
                    *d += tap * s;
                }
            }
        }
    }
}

/// How output positions along one axis map to input positions.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Axis {
    out: usize,
    stride: usize,
    dilation: usize,
    pad_before: usize,
}

impl Axis {
    /// The input position output `o` reads through kernel tap `k` (in range: see `valid`).
    fn input(&self, o: usize, k: usize) -> usize {
        o * self.stride + k * self.dilation - self.pad_before
    }

    /// The outputs whose tap `k` lands inside an input of length `len` (not in the padding).
    fn valid(&self, k: usize, len: usize) -> std::ops::Range<usize> {
        let offset = k * self.dilation;
        // o * stride + offset >= pad_before
        let first = self.pad_before.saturating_sub(offset).div_ceil(self.stride);
        // o * stride + offset - pad_before < len
        let end = (len + self.pad_before)
            .checked_sub(offset)
            .map_or(0, |room| room.div_ceil(self.stride));
        first.min(self.out)..end.min(self.out).max(first.min(self.out))
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Geometry {
    rows: Axis,
    cols: Axis,
}

impl Op for DirectConv {
    fn name(&self) -> StaticName {
        "PipeDirectConv".into()
    }
    op_as_typed_op!();
}

impl EvalOp for DirectConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape();
        ensure!(
            shape.len() == 4,
            "convolution input must be NCHW, got {shape:?}"
        );
        let [co, ci, kh, kw] = self.kernel_shape;
        let (h, w) = self.image;
        // The geometry and the work bound hold for the declared image only.
        ensure!(
            shape[1..] == [ci, h, w],
            "convolution planned for [N, {ci}, {h}, {w}] got {shape:?}"
        );
        let n = shape[0];
        let (oh, ow) = (self.geometry.rows.out, self.geometry.cols.out);
        let plane = oh * ow;
        let len = n.saturating_mul(co * plane);
        ensure!(
            len <= MAX_OUTPUTS,
            "convolution output of {len} values is too large"
        );
        let mut out = vec![0f32; len];
        let mut patches = vec![0f32; ci * kh * kw * plane];
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        for (image, dst) in x
            .chunks_exact(ci * h * w)
            .zip(out.chunks_exact_mut(co * plane))
        {
            self.convolve(image, dst, &mut patches);
        }
        let out = Tensor::from_shape(&[n, co, oh, ow], &out)?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DirectConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        self.pool_spec.output_facts(inputs)
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{op_names, run, values};
    use tract_onnx::tract_hir::tract_core::ops::cnn::PaddingSpec;

    struct Case {
        input: [usize; 4],
        out_channels: usize,
        kernel: [usize; 2],
        padding: PaddingSpec,
        strides: Option<TVec<usize>>,
        dilations: Option<TVec<usize>>,
        vector_bias: bool,
    }

    /// A model of one tract convolution of `case`; its batch is the symbol `N` if `symbolic`.
    fn conv_model(case: &Case, seed: u64, symbolic: bool) -> TypedModel {
        let [n, c, h, w] = case.input;
        let [kh, kw] = case.kernel;
        let co = case.out_channels;
        let mut model = TypedModel::default();
        let n = if symbolic {
            model.symbols.sym("N").to_dim()
        } else {
            n.to_dim()
        };
        let fact = f32::fact(&[n, c.to_dim(), h.to_dim(), w.to_dim()]);
        let x = model.add_source("x", fact).unwrap();
        let kernel = Tensor::from_shape(&[co, c, kh, kw], &values(co * c * kh * kw, seed)).unwrap();
        let k = model.add_const("k", kernel).unwrap();
        let bias = if case.vector_bias {
            Tensor::from_shape(&[co], &values(co, seed + 1)).unwrap()
        } else {
            tensor0(0.25f32)
        };
        let b = model.add_const("b", bias).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: DataFormat::NCHW,
                kernel_shape: tvec!(kh, kw),
                padding: case.padding.clone(),
                dilations: case.dilations.clone(),
                strides: case.strides.clone(),
                input_channels: c,
                output_channels: co,
            },
            kernel_fmt: KernelFormat::OIHW,
            group: 1,
            q_params: None,
        };
        let y = model.wire_node("conv", conv, &[x, k, b]).unwrap();
        model.select_output_outlets(&y).unwrap();
        model
    }

    fn input(case: &Case, n: usize, seed: u64) -> Tensor {
        let [_, c, h, w] = case.input;
        Tensor::from_shape(&[n, c, h, w], &values(n * c * h * w, seed + 2)).unwrap()
    }

    /// tract's own convolution of `case` and ours, on the same input: (tract, direct, op names
    /// of the direct model).
    fn both(case: &Case, seed: u64) -> (Tensor, Tensor, Vec<String>) {
        let model = conv_model(case, seed, false);
        let direct = direct_small_convs(model.clone()).unwrap();
        let names = op_names(&direct);
        let x = input(case, case.input[0], seed);
        (run(model, &x).remove(0), run(direct, &x).remove(0), names)
    }

    fn assert_close(a: &Tensor, b: &Tensor) {
        assert_eq!(a.shape(), b.shape());
        let (a, b) = (
            a.to_plain_array_view::<f32>().unwrap(),
            b.to_plain_array_view::<f32>().unwrap(),
        );
        for (x, y) in a.iter().zip(b.iter()) {
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn matches_tracts_convolution_over_paddings_strides_and_dilations() {
        let explicit = |b: [usize; 2], a: [usize; 2]| {
            PaddingSpec::Explicit(tvec!(b[0], b[1]), tvec!(a[0], a[1]))
        };
        let cases = [
            // The fixture CNN's layer.
            (
                [1, 1, 8, 8],
                4,
                [3, 3],
                explicit([1, 1], [1, 1]),
                None,
                None,
                true,
            ),
            (
                [2, 3, 7, 9],
                5,
                [3, 2],
                PaddingSpec::Valid,
                None,
                None,
                false,
            ),
            (
                [1, 2, 9, 8],
                3,
                [3, 3],
                explicit([2, 0], [1, 3]),
                Some(tvec!(2, 3)),
                None,
                true,
            ),
            (
                [1, 2, 10, 10],
                2,
                [3, 3],
                explicit([1, 2], [2, 1]),
                Some(tvec!(1, 2)),
                Some(tvec!(2, 1)),
                true,
            ),
            (
                [1, 1, 5, 5],
                2,
                [3, 3],
                PaddingSpec::SameUpper,
                None,
                None,
                true,
            ),
            // Padding wider than the kernel reaches: whole output rows of bias only.
            (
                [1, 1, 2, 2],
                1,
                [1, 1],
                explicit([2, 2], [2, 2]),
                None,
                None,
                true,
            ),
        ];
        for (i, (input, co, kernel, padding, strides, dilations, vector_bias)) in
            cases.into_iter().enumerate()
        {
            let case = Case {
                input,
                out_channels: co,
                kernel,
                padding,
                strides,
                dilations,
                vector_bias,
            };
            let (tract, direct, ops) = both(&case, i as u64);
            assert!(
                ops.iter().any(|o| o == "PipeDirectConv"),
                "case {i}: {ops:?}"
            );
            assert!(!ops.iter().any(|o| o == "Conv"), "case {i}: {ops:?}");
            assert_close(&tract, &direct);
        }
    }

    #[test]
    fn large_empty_and_zero_padded_convolutions_stay_tracts() {
        let case = |input, padding| Case {
            input,
            out_channels: 16,
            kernel: [3, 3],
            padding,
            strides: None,
            dilations: None,
            vector_bias: true,
        };
        let pad = |p| PaddingSpec::Explicit(tvec!(p, p), tvec!(p, p));
        for (input, padding) in [
            // 16·16·9 · 62·62 multiply-adds: over MAX_MACS.
            ([1, 16, 64, 64], PaddingSpec::Valid),
            // An empty image padded into a 2×2 output of bias only.
            ([1, 16, 0, 0], pad(2)),
        ] {
            let model = conv_model(&case(input, padding), 9, false);
            let ops = op_names(&direct_small_convs(model).unwrap());
            assert!(
                !ops.iter().any(|o| o == "PipeDirectConv"),
                "{input:?}: {ops:?}"
            );
        }
    }

    #[test]
    fn a_symbolic_batch_runs_at_every_size_and_at_one() {
        let case = Case {
            input: [0, 2, 8, 8],
            out_channels: 3,
            kernel: [3, 3],
            padding: PaddingSpec::Explicit(tvec!(1, 1), tvec!(1, 1)),
            strides: None,
            dilations: None,
            vector_bias: true,
        };
        let model = conv_model(&case, 4, true);
        let direct = direct_small_convs(model.clone()).unwrap();
        assert!(op_names(&direct).iter().any(|o| o == "PipeDirectConv"));
        for batch in [3, 1] {
            let x = input(&case, batch, 4);
            assert_close(&run(model.clone(), &x)[0], &run(direct.clone(), &x)[0]);
        }
        // As the model store plans the batch of one: the symbol set to 1.
        let n = direct.symbols.sym("N");
        let one: std::collections::HashMap<_, _> = [(n, 1.to_dim())].into();
        let single = direct.set_symbols(&one).unwrap();
        let out = single
            .output_fact(0)
            .unwrap()
            .shape
            .as_concrete()
            .map(|s| s.to_vec());
        assert_eq!(out, Some(vec![1, 3, 8, 8]));
        let x = input(&case, 1, 4);
        assert_close(&run(model, &x)[0], &run(single, &x)[0]);
    }
}
