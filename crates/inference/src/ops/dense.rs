//! Small dense layers, and chains of them, as one direct operator.
//!
//! A PyTorch `nn.Linear` exports as a `Gemm` (or a `MatMul` and an `Add`), and tract
//! declutters it into a matrix product (`EinSum`), a bias `Add` and, after a ReLU, a `Max`
//! with zero. Optimized, each layer still runs as several operators, each allocating its
//! output, and the product packs its input for a kernel sized for large matrices. For the
//! small networks contracts call (an 8 → 16 → 16 → 1 MLP is 400 multiply-adds) that
//! bookkeeping is most of the latency: the MLP fixture ran at up to twice onnxruntime's.
//!
//! Here, once the model is decluttered, a float matrix product of a `[rows, k]` input by a
//! constant matrix, with the bias add and the ReLU that follow it, becomes one [`Layer`], and
//! layers that feed only each other become one [`DirectDense`] operator: one node for the
//! whole MLP. Each output is the sum of its products in input order, then the bias, then the
//! ReLU, without fused multiply-adds, so it gives the same bits on every run and thread count.
//! Larger products ([`MAX_MACS`]), quantized ones, and anything whose shape or constants do not
//! fit the pattern stay tract's.

use std::collections::HashSet;

use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_onnx::tract_hir::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_hir::tract_core::ops::math::{Add, Max};

use super::f32_values;

/// Most multiply-adds per input row one operator may take (all its layers together); above
/// it tract's packed matrix kernels win over the direct loop.
pub const MAX_MACS: usize = 1 << 18;

/// Most values one evaluation may hold in a layer's output (64 MiB of f32): a hostile batch
/// must not allocate without bound.
const MAX_OUTPUTS: usize = 1 << 24;

/// One dense layer: `relu?(x · W + bias)` for each input row `x`.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// `[inputs, outputs]`, row-major: row `k` is what input `k` contributes to each output,
    /// so a row's products are one contiguous multiply-add the compiler vectorizes.
    weights: Vec<f32>,
    inputs: usize,
    outputs: usize,
    /// One value per output.
    bias: Option<Vec<f32>>,
    relu: bool,
}

impl Layer {
    /// Computes one row: `out` (`outputs` values) from `x` (`inputs` values).
    fn row(&self, x: &[f32], out: &mut [f32]) {
        out.fill(0.0);
        for (xk, w) in x.iter().zip(self.weights.chunks_exact(self.outputs)) {
            for (o, w) in out.iter_mut().zip(w) {
                *o += xk * w;
            }
        }
        if let Some(bias) = &self.bias {
            for (o, b) in out.iter_mut().zip(bias) {
                *o += b;
            }
        }
        if self.relu {
            // tract's `Max` with zero, which is what it made of the ReLU.
            for o in out.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
}

/// A chain of dense layers over a float `[rows, k]` input.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectDense {
    layers: Vec<Layer>,
}

impl Eq for DirectDense {}

/// Replaces every chain of small float dense layers of `model` with one [`DirectDense`].
pub fn direct_dense_stacks(mut model: TypedModel) -> TractResult<TypedModel> {
    // Nodes already folded into an operator: the rewrite leaves them in the graph, unused,
    // until it is compacted.
    let mut folded = HashSet::new();
    for id in model.eval_order()? {
        if folded.contains(&id) {
            continue;
        }
        let Some(first) = layer_at(&model, id)? else {
            continue;
        };
        let mut macs = first.layer.inputs * first.layer.outputs;
        let mut end = first.end;
        folded.extend(first.nodes);
        let mut layers = vec![first.layer];
        // Extend the chain while the last layer's only consumer is another layer.
        while let Some(next) = only_consumer(&model, end) {
            // The next layer must read the chain's output as its input, not as its weights.
            if model.nodes[next].inputs.first() != Some(&OutletId::new(end, 0)) {
                break;
            }
            let Some(found) = layer_at(&model, next)? else {
                break;
            };
            let layer_macs = found.layer.inputs * found.layer.outputs;
            if macs + layer_macs > MAX_MACS {
                break;
            }
            macs += layer_macs;
            end = found.end;
            folded.extend(found.nodes);
            layers.push(found.layer);
        }
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(&model, model.nodes[id].inputs[0])?;
        let name = format!("{}.direct_dense", model.nodes[id].name);
        let out = patch.wire_node(name, DirectDense { layers }, &[input])?[0];
        patch.shunt_outside(&model, OutletId::new(end, 0), out)?;
        patch.apply(&mut model)?;
    }
    // Drops the replaced nodes and their weight constants.
    model.into_compact()
}

/// A layer found in the graph: what it computes, the nodes it replaces and the last of them.
struct Found {
    layer: Layer,
    nodes: Vec<usize>,
    end: usize,
}

/// The node reading `node`'s only output, if exactly one does and it is not a model output.
fn only_consumer(model: &TypedModel, node: usize) -> Option<usize> {
    let outlet = OutletId::new(node, 0);
    if model.nodes[node].outputs.len() != 1 || model.outputs.contains(&outlet) {
        return None;
    }
    match model.outlet_successors(outlet) {
        [one] => Some(one.node),
        _ => None,
    }
}

/// The dense layer starting at node `id` (a matrix product by a constant), with the bias
/// add and the ReLU that follow it when they do.
fn layer_at(model: &TypedModel, id: usize) -> TractResult<Option<Found>> {
    let node = &model.nodes[id];
    let Some(einsum) = node.op_as::<EinSum>() else {
        return Ok(None);
    };
    if einsum.q_params.is_some() || einsum.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let [x, w] = node.inputs[..] else {
        return Ok(None);
    };
    let x = model.outlet_fact(x)?;
    let Some(w) = model.outlet_fact(w)?.konst.clone() else {
        return Ok(None);
    };
    if x.datum_type != f32::datum_type() || w.datum_type() != f32::datum_type() || x.rank() != 2 {
        return Ok(None);
    }
    let Ok(inputs) = x.shape[1].to_usize() else {
        return Ok(None);
    };
    // Nothing to sum is tract's to handle (and would leave no row to transpose by).
    if inputs == 0 || w.len() > MAX_MACS {
        return Ok(None);
    }
    let Some(weights) = weights(&einsum.axes, &w, inputs) else {
        return Ok(None);
    };
    let outputs = weights.len() / inputs;
    if outputs == 0 {
        return Ok(None);
    }
    let mut layer = Layer {
        weights,
        inputs,
        outputs,
        bias: None,
        relu: false,
    };
    let mut nodes = vec![id];
    let mut end = id;
    if let Some(next) = only_consumer(model, end)
        && let Some(bias) = constant_operand::<Add>(model, next, end)?
    {
        let bias = match bias.len() {
            1 => Some(vec![bias[0]; outputs]),
            n if n == outputs => Some(bias),
            _ => None,
        };
        if let Some(bias) = bias {
            layer.bias = Some(bias);
            nodes.push(next);
            end = next;
        }
    }
    if let Some(next) = only_consumer(model, end)
        && let Some(zero) = constant_operand::<Max>(model, next, end)?
        // +0 only: with -0 tract's `max` would give -0 where a ReLU of ours gives +0.
        && zero.len() == 1
        && zero[0].to_bits() == 0
    {
        layer.relu = true;
        nodes.push(next);
        end = next;
    }
    Ok(Some(Found { layer, nodes, end }))
}

/// The product's constant as `[inputs, outputs]` row-major, if `axes` is a product of a
/// `[rows, inputs]` input by it: `mk,kn->mn`, `mk,nk->mn` or `mk,k->mn` (one output), in any
/// letters.
fn weights(axes: &AxesMapping, w: &Tensor, inputs: usize) -> Option<Vec<f32>> {
    if axes.input_count() != 2 || axes.output_count() != 1 || axes.rank(InOut::Out(0)) != 2 {
        return None;
    }
    let pos = |v: &TVec<usize>| -> Option<Option<usize>> {
        match v[..] {
            [] => Some(None),
            [p] => Some(Some(p)),
            _ => None,
        }
    };
    // Where the summed axis and the output axis sit in the constant.
    let (mut k_at, mut n_at, mut rows, mut n_out) = (None, None, false, false);
    for axis in axes.iter_all_axes() {
        let (x, w, out) = (
            pos(&axis.inputs[0])?,
            pos(&axis.inputs[1])?,
            pos(&axis.outputs[0])?,
        );
        match (x, w, out) {
            (Some(0), None, Some(0)) => rows = true,
            (Some(1), Some(p), None) => k_at = Some(p),
            (None, p, Some(1)) => {
                n_at = p;
                n_out = true;
            }
            _ => return None,
        }
    }
    let k_at = k_at?;
    if !rows || !n_out {
        return None;
    }
    let values = f32_values(w)?;
    let shape = w.shape();
    match (shape.len(), n_at) {
        // `mk,k->mn`: one output, whose size-1 axis is the output's alone.
        (1, None) if shape[0] == inputs => Some(values),
        (2, Some(n_at)) if n_at != k_at && shape[k_at] == inputs => {
            if k_at == 0 {
                return Some(values);
            }
            // `[outputs, inputs]`: transposed into `[inputs, outputs]`.
            let outputs = shape[0];
            let mut t = vec![0f32; values.len()];
            for (n, row) in values.chunks_exact(inputs).enumerate() {
                for (k, v) in row.iter().enumerate() {
                    t[k * outputs + n] = *v;
                }
            }
            Some(t)
        }
        _ => None,
    }
}

/// The values of the constant `node` (a binary `Op`) combines with `from`'s output, if it is a
/// float one with at most one value per output column: `[n]`, `[1, n]`, or a single value.
fn constant_operand<Op: BinMiniOp>(
    model: &TypedModel,
    node: usize,
    from: usize,
) -> TractResult<Option<Vec<f32>>> {
    let node = &model.nodes[node];
    let Some(bin) = node.op_as::<TypedBinOp>() else {
        return Ok(None);
    };
    if !bin.0.is::<Op>() || bin.1.is_some() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let other = match (node.inputs[0].node == from, node.inputs[1].node == from) {
        (true, false) => node.inputs[1],
        (false, true) => node.inputs[0],
        _ => return Ok(None),
    };
    let Some(c) = model.outlet_fact(other)?.konst.clone() else {
        return Ok(None);
    };
    let shape = c.shape();
    let broadcast_by_row = match shape.len() {
        0 | 1 => true,
        2 => shape[0] == 1,
        _ => false,
    };
    if c.datum_type() != f32::datum_type() || !broadcast_by_row {
        return Ok(None);
    }
    Ok(f32_values(&c))
}

impl Op for DirectDense {
    fn name(&self) -> StaticName {
        "PipeDirectDense".into()
    }
    op_as_typed_op!();
}

impl EvalOp for DirectDense {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let (first, last) = match (self.layers.first(), self.layers.last()) {
            (Some(f), Some(l)) => (f, l),
            _ => bail!("dense operator without layers"),
        };
        let shape = input.shape();
        ensure!(
            shape.len() == 2 && shape[1] == first.inputs,
            "dense layer planned for [N, {}] got {shape:?}",
            first.inputs
        );
        let rows = shape[0];
        let widest = self.layers.iter().map(|l| l.outputs).max().unwrap_or(0);
        ensure!(
            rows.saturating_mul(widest) <= MAX_OUTPUTS,
            "dense output of {rows} rows of {widest} values is too large"
        );
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut out = vec![0f32; rows * last.outputs];
        let (inner, final_layer) = self.layers.split_at(self.layers.len() - 1);
        // A row's values between layers, and the next layer's, swapped after each layer.
        let (mut current, mut next) = (Vec::with_capacity(widest), Vec::with_capacity(widest));
        for (x, y) in x
            .chunks_exact(first.inputs)
            .zip(out.chunks_exact_mut(last.outputs))
        {
            current.clear();
            current.extend_from_slice(x);
            for layer in inner {
                next.resize(layer.outputs, 0.0);
                layer.row(&current, &mut next);
                std::mem::swap(&mut current, &mut next);
            }
            final_layer[0].row(&current, y);
        }
        let out = Tensor::from_shape(&[rows, last.outputs], &out)?;
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for DirectDense {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let (Some(first), Some(last), [x]) = (self.layers.first(), self.layers.last(), inputs)
        else {
            bail!("dense operator takes one input and has at least one layer");
        };
        ensure!(
            x.datum_type == f32::datum_type()
                && x.rank() == 2
                && x.shape[1] == first.inputs.to_dim(),
            "dense layer planned for [N, {}] f32, got {x:?}",
            first.inputs
        );
        Ok(tvec!(f32::fact([
            x.shape[0].clone(),
            last.outputs.to_dim()
        ])))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_util::{op_names, run, values};
    use tract_onnx::tract_hir::tract_core::ops::math::{add, max};

    /// One layer of a test model: the product's formula and constant shape, the bias shape
    /// (`None`: no bias add), and whether a ReLU follows.
    struct Spec {
        formula: &'static str,
        weights: Vec<usize>,
        bias: Option<Vec<usize>>,
        relu: bool,
    }

    fn spec(formula: &'static str, weights: &[usize], bias: Option<&[usize]>, relu: bool) -> Spec {
        Spec {
            formula,
            weights: weights.to_vec(),
            bias: bias.map(<[usize]>::to_vec),
            relu,
        }
    }

    /// tract's decluttered form of the layers in `specs` over a `[rows, k]` input (`rows` the
    /// symbol `N` if `None`), as a PyTorch MLP's export gives it.
    fn model(k: usize, rows: Option<usize>, specs: &[Spec]) -> TypedModel {
        let mut model = TypedModel::default();
        let n = match rows {
            Some(r) => r.to_dim(),
            None => model.symbols.sym("N").to_dim(),
        };
        let mut x = model.add_source("x", f32::fact([n, k.to_dim()])).unwrap();
        for (i, s) in specs.iter().enumerate() {
            let volume = s.weights.iter().product();
            let w = Tensor::from_shape(&s.weights, &values(volume, i as u64)).unwrap();
            let w = model.add_const(format!("w{i}"), w).unwrap();
            let axes: AxesMapping = s.formula.parse().unwrap();
            let op = EinSum::new(axes, f32::datum_type());
            x = model.wire_node(format!("mm{i}"), op, &[x, w]).unwrap()[0];
            if let Some(shape) = &s.bias {
                let volume = shape.iter().product();
                let b = Tensor::from_shape(shape, &values(volume, 100 + i as u64)).unwrap();
                let b = model.add_const(format!("b{i}"), b).unwrap();
                x = model.wire_node(format!("add{i}"), add(), &[x, b]).unwrap()[0];
            }
            if s.relu {
                let zero = model
                    .add_const(
                        format!("zero{i}"),
                        Tensor::from_shape(&[1, 1], &[0f32]).unwrap(),
                    )
                    .unwrap();
                x = model
                    .wire_node(format!("relu{i}"), max(), &[x, zero])
                    .unwrap()[0];
            }
        }
        model.select_output_outlets(&[x]).unwrap();
        model
    }

    /// Every output of `model` on `input`, as f32 values.
    fn outputs(model: TypedModel, input: &Tensor) -> Vec<Vec<f32>> {
        run(model, input)
            .iter()
            .map(|t| f32_values(t).unwrap())
            .collect()
    }

    /// Rewrites `model`, checks the result equals tract's within rounding (the summation
    /// order differs), and returns the rewritten model's operators.
    fn check(model: TypedModel, k: usize, rows: usize) -> Vec<String> {
        let input = Tensor::from_shape(&[rows, k], &values(rows * k, 7)).unwrap();
        let expected = outputs(model.clone(), &input).remove(0);
        let direct = direct_dense_stacks(model).unwrap();
        let got = outputs(direct.clone(), &input).remove(0);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!(
                (g - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{got:?} vs {expected:?}"
            );
        }
        op_names(&direct)
    }

    #[test]
    fn an_mlp_becomes_one_operator_equal_to_tracts_layers() {
        let mlp = || {
            model(
                8,
                None,
                &[
                    spec("mk,nk->mn", &[16, 8], Some(&[1, 16]), true),
                    spec("mk,nk->mn", &[16, 16], Some(&[1, 16]), true),
                    spec("mk,k->mn", &[16], Some(&[1, 1]), false),
                ],
            )
        };
        for rows in [1, 3] {
            assert_eq!(check(mlp(), 8, rows), ["Source", "PipeDirectDense"]);
        }
        // Planned at N = 1 as the model store plans its single-row plan.
        let one = direct_dense_stacks(mlp()).unwrap();
        let n = one.symbols.sym("N");
        let one = one
            .set_symbols(&std::collections::HashMap::from([(n, 1.to_dim())]))
            .unwrap();
        let input = Tensor::from_shape(&[1, 8], &values(8, 7)).unwrap();
        assert_eq!(
            outputs(one, &input),
            outputs(direct_dense_stacks(mlp()).unwrap(), &input)
        );
    }

    #[test]
    fn every_product_layout_bias_shape_and_relu_position() {
        let cases = [
            // `[k, n]` constant, no bias, ReLU straight after the product.
            spec("mk,kn->mn", &[5, 3], None, true),
            // Other letters; one bias value for every column.
            spec("ab,cb->ac", &[4, 5], Some(&[1, 1]), false),
            spec("ij,jk->ik", &[5, 2], Some(&[1, 2]), true),
        ];
        for case in cases {
            let ops = check(model(5, Some(2), &[case]), 5, 2);
            assert_eq!(ops, ["Source", "PipeDirectDense"]);
        }
    }

    #[test]
    fn what_does_not_fit_stays_tracts() {
        // A bias per row, not per column, is not a bias: the add stays tract's.
        let kept = check(
            model(
                4,
                Some(3),
                &[spec("mk,nk->mn", &[2, 4], Some(&[3, 1]), true)],
            ),
            4,
            3,
        );
        assert_eq!(
            kept,
            ["Source", "PipeDirectDense", "Const", "Add", "Const", "Max"]
        );
        // A product summing over the rows, not the columns.
        let kept = check(
            model(4, Some(4), &[spec("km,kn->mn", &[4, 3], None, false)]),
            4,
            4,
        );
        assert!(!kept.contains(&"PipeDirectDense".to_string()), "{kept:?}");
        // An input with no columns: nothing to sum, tract's.
        let empty = model(0, None, &[spec("mk,nk->mn", &[2, 0], Some(&[1, 2]), true)]);
        let direct = direct_dense_stacks(empty).unwrap();
        assert!(!op_names(&direct).contains(&"PipeDirectDense".to_string()));
        // Over the work bound: tract's packed kernels.
        let wide = 1 << 10;
        let big = model(
            wide,
            Some(1),
            &[spec("mk,nk->mn", &[wide, wide], None, false)],
        );
        let direct = direct_dense_stacks(big).unwrap();
        assert!(!op_names(&direct).contains(&"PipeDirectDense".to_string()));
    }

    #[test]
    fn a_layer_read_twice_ends_the_chain() {
        // The first layer's output is the model's output too: the second layer is a chain of
        // its own, and the first keeps its output.
        let mut m = model(
            3,
            Some(2),
            &[
                spec("mk,nk->mn", &[4, 3], Some(&[1, 4]), true),
                spec("mk,nk->mn", &[2, 4], Some(&[1, 2]), false),
            ],
        );
        let relu = m.node_by_name("relu0").unwrap().id;
        let last = m.outputs[0];
        m.select_output_outlets(&[OutletId::new(relu, 0), last])
            .unwrap();
        let input = Tensor::from_shape(&[2, 3], &values(6, 7)).unwrap();
        let expected = outputs(m.clone(), &input);
        let direct = direct_dense_stacks(m).unwrap();
        let dense = op_names(&direct)
            .iter()
            .filter(|o| *o == "PipeDirectDense")
            .count();
        assert_eq!(dense, 2);
        let got = outputs(direct, &input);
        for (g, e) in got.iter().flatten().zip(expected.iter().flatten()) {
            assert!((g - e).abs() <= 1e-5 * e.abs().max(1.0));
        }
    }
}
