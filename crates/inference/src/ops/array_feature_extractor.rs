//! `ai.onnx.ml` `ArrayFeatureExtractor`: selects columns of the last axis, `y = x[..., idx]`.
//! skl2onnx uses it to pick decision columns (SVC's one-vs-rest scores) and single targets.
//! As in onnxruntime, a 1-D input gives a `[1, k]` output and an index out of range is an
//! error, never a wrap.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::{ArrayD, Axis, IxDyn};
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayFeatureExtractor;

pub fn array_feature_extractor(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(ArrayFeatureExtractor), vec![]))
}

impl Expansion for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "ArrayFeatureExtractor".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 2)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, &inputs[0].datum_type)?;
        s.given(&inputs[0].rank, move |s, rank| {
            s.equals(&outputs[0].rank, rank.max(2))?;
            for i in 0..(rank as usize).saturating_sub(1) {
                s.equals(&outputs[0].shape[i], &inputs[0].shape[i])?;
            }
            Ok(())
        })?;
        Ok(())
    }

    wire_itself!();
}

impl Op for ArrayFeatureExtractor {
    fn name(&self) -> StaticName {
        "PipeArrayFeatureExtractor".into()
    }
    op_as_typed_op!();
}

fn gather<T: Datum + Clone>(x: &Tensor, idx: &[usize]) -> TractResult<Tensor> {
    let view = x.to_plain_array_view::<T>()?;
    let view = if view.ndim() == 1 {
        view.insert_axis(Axis(0))
    } else {
        view
    };
    let last = view.ndim() - 1;
    let mut shape = view.shape().to_vec();
    shape[last] = idx.len();
    let rows: Vec<T> = view
        .lanes(Axis(last))
        .into_iter()
        .flat_map(|lane| {
            idx.iter()
                .map(move |&i| lane[i].clone())
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(ArrayD::from_shape_vec(IxDyn(&shape), rows)?.into_tensor())
}

impl EvalOp for ArrayFeatureExtractor {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, y) = args_2!(inputs);
        let width = *x
            .shape()
            .last()
            .ok_or_else(|| format_err!("ArrayFeatureExtractor input is a scalar"))?;
        let y = y.cast_to::<i64>()?;
        let idx: Vec<usize> = y
            .to_plain_array_view::<i64>()?
            .iter()
            .map(|&i| usize::try_from(i).ok().filter(|&i| i < width))
            .collect::<Option<_>>()
            .ok_or_else(|| {
                format_err!("ArrayFeatureExtractor index out of range for width {width}")
            })?;
        ensure!(
            !idx.is_empty(),
            "ArrayFeatureExtractor needs at least one index"
        );
        let dt = x.datum_type();
        let out = if dt == f32::datum_type() {
            gather::<f32>(&x, &idx)?
        } else if dt == f64::datum_type() {
            gather::<f64>(&x, &idx)?
        } else if dt == i64::datum_type() {
            gather::<i64>(&x, &idx)?
        } else if dt == i32::datum_type() {
            gather::<i32>(&x, &idx)?
        } else if dt == String::datum_type() {
            gather::<String>(&x, &idx)?
        } else {
            bail!("ArrayFeatureExtractor does not support {dt:?}")
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for ArrayFeatureExtractor {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs[0];
        let k: TDim = inputs[1].shape.iter().product();
        let mut shape: TVec<TDim> = if x.rank() <= 1 {
            tvec!(1.to_dim())
        } else {
            x.shape.iter().take(x.rank() - 1).cloned().collect()
        };
        shape.push(k);
        Ok(tvec!(x.datum_type.fact(shape)))
    }
    as_op!();
}
