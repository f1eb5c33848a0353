//! `ai.onnx.ml` `Normalizer`, as skl2onnx exports sklearn's Normalizer: each row divided by its
//! norm, in f32, as onnxruntime computes it:
//!
//! - `MAX`: the row's largest value (the ONNX definition and onnxruntime 1.32's; sklearn's `max`
//!   takes absolute values, which differs only for rows whose largest magnitude is negative);
//! - `L1`: the sum of absolute values;
//! - `L2`: the square root of the sum of squares.
//!
//! A row whose norm is zero is left as it is. tract wires this from five core operators with a
//! reduction over dynamic-rank arrays, which at the batch of one cost more than the rest of a
//! model; one pass over the row does the same work.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::input_rows;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Norm {
    Max,
    L1,
    L2,
}

impl Norm {
    fn of(self, row: &[f32]) -> f32 {
        match self {
            Self::Max => row.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            Self::L1 => row.iter().map(|v| v.abs()).sum(),
            Self::L2 => row.iter().map(|v| v * v).sum::<f32>().sqrt(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Normalizer {
    norm: Norm,
}

pub fn normalizer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let norm = match node.get_attr_opt::<&str>("norm")?.unwrap_or("MAX") {
        "MAX" => Norm::Max,
        "L1" => Norm::L1,
        "L2" => Norm::L2,
        other => bail!("unsupported Normalizer norm {other:?}"),
    };
    Ok((expand(Normalizer { norm }), vec![]))
}

impl Normalizer {
    /// Divides each `width`-long row of `x` by its norm, in place.
    fn normalize(&self, x: &mut [f32], width: usize) {
        for row in x.chunks_exact_mut(width.max(1)) {
            let norm = self.norm.of(row);
            if norm != 0.0 {
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
    }
}

impl Expansion for Normalizer {
    fn name(&self) -> StaticName {
        "Normalizer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    wire_itself!();
}

impl Op for Normalizer {
    fn name(&self) -> StaticName {
        "PipeNormalizer".into()
    }
    op_as_typed_op!();
}

impl EvalOp for Normalizer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        let (mut x, _, width) = input_rows(&input)?;
        self.normalize(&mut x, width);
        Ok(tvec!(Tensor::from_shape(&shape, &x)?.into_tvalue()))
    }
}

impl TypedOp for Normalizer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(
            (1..=2).contains(&inputs[0].rank()),
            "Normalizer input must be 1-D or 2-D"
        );
        Ok(tvec!(f32::fact(inputs[0].shape.iter())))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(norm: Norm, shape: &[usize], x: &[f32]) -> Vec<f32> {
        let mut x = x.to_vec();
        Normalizer { norm }.normalize(&mut x, *shape.last().unwrap());
        x
    }

    #[test]
    fn each_row_is_divided_by_its_norm_and_zero_rows_stay() {
        assert_eq!(
            run(Norm::L2, &[2, 2], &[3.0, 4.0, 0.0, 0.0]),
            vec![0.6, 0.8, 0.0, 0.0]
        );
        assert_eq!(
            run(Norm::L1, &[1, 3], &[1.0, -2.0, 1.0]),
            vec![0.25, -0.5, 0.25]
        );
        assert_eq!(run(Norm::Max, &[2], &[2.0, 8.0]), vec![0.25, 1.0]);
        // The largest value, not the largest magnitude (onnxruntime's rule).
        assert_eq!(run(Norm::Max, &[1, 2], &[-4.0, 2.0]), vec![-2.0, 1.0]);
    }
}
