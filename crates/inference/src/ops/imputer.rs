//! `ai.onnx.ml` `Imputer`: replaces a sentinel (NaN for SimpleImputer's default) with a value per
//! column. Float inputs use `imputed_value_floats` / `replaced_value_float`, integer inputs the
//! `int64s` / `int64` attributes, as onnxruntime does.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::ArrayD;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Debug, PartialEq)]
enum Values {
    Float { imputed: Vec<f32>, replaced: f32 },
    Int { imputed: Vec<i64>, replaced: i64 },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Imputer {
    values: Values,
}

pub fn imputer(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let floats: Option<Vec<f32>> = node.get_attr_opt_vec("imputed_value_floats")?;
    let ints: Option<Vec<i64>> = node.get_attr_opt_vec("imputed_value_int64s")?;
    let values = match (floats, ints) {
        (Some(imputed), None) => Values::Float {
            imputed,
            replaced: node.get_attr_opt("replaced_value_float")?.unwrap_or(0.0),
        },
        (None, Some(imputed)) => Values::Int {
            imputed,
            replaced: node.get_attr_opt("replaced_value_int64")?.unwrap_or(0),
        },
        _ => bail!("Imputer needs exactly one of imputed_value_floats and imputed_value_int64s"),
    };
    let n = match &values {
        Values::Float { imputed, .. } => imputed.len(),
        Values::Int { imputed, .. } => imputed.len(),
    };
    ensure!(n > 0, "Imputer has no imputed values");
    Ok((expand(Imputer { values }), vec![]))
}

impl Imputer {
    fn dt(&self) -> DatumType {
        match self.values {
            Values::Float { .. } => f32::datum_type(),
            Values::Int { .. } => i64::datum_type(),
        }
    }
}

impl Expansion for Imputer {
    fn name(&self) -> StaticName {
        "Imputer".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.dt())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    wire_itself!();
}

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for Imputer {}

impl Op for Imputer {
    fn name(&self) -> StaticName {
        "PipeImputer".into()
    }
    op_as_typed_op!();
}

/// Column `j` of a row of width `w`: one imputed value for all columns, or one per column.
fn column_value<T: Copy>(values: &[T], j: usize, w: usize) -> TractResult<T> {
    match values.len() {
        1 => Ok(values[0]),
        n if n == w => Ok(values[j]),
        n => bail!("Imputer has {n} imputed values for {w} columns"),
    }
}

impl EvalOp for Imputer {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        let w = shape.last().copied().unwrap_or(1).max(1);
        let out = match &self.values {
            Values::Float { imputed, replaced } => {
                let x = input.cast_to::<f32>()?;
                let view = x.to_plain_array_view::<f32>()?;
                let mut out = Vec::with_capacity(view.len());
                for (i, &v) in view.iter().enumerate() {
                    let missing = if replaced.is_nan() {
                        v.is_nan()
                    } else {
                        v == *replaced
                    };
                    out.push(if missing {
                        column_value(imputed, i % w, w)?
                    } else {
                        v
                    });
                }
                ArrayD::from_shape_vec(shape, out)?.into_tensor()
            }
            Values::Int { imputed, replaced } => {
                let x = input.cast_to::<i64>()?;
                let view = x.to_plain_array_view::<i64>()?;
                let mut out = Vec::with_capacity(view.len());
                for (i, &v) in view.iter().enumerate() {
                    out.push(if v == *replaced {
                        column_value(imputed, i % w, w)?
                    } else {
                        v
                    });
                }
                ArrayD::from_shape_vec(shape, out)?.into_tensor()
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for Imputer {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.dt().fact(inputs[0].shape.clone())))
    }
    as_op!();
}
