//! `ai.onnx.ml` `Scaler`: `y = (x - offset) * scale`, per column (or one value for all columns).
//! StandardScaler, MinMaxScaler, RobustScaler and MaxAbsScaler all export to it.
//!
//! Wired from tract's own element-wise `sub` and `mul` with constant operands, so it gets
//! tract's kernels and fusions; onnxruntime computes the same two f32 operations per element.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_core;

#[derive(Clone, Debug)]
pub struct Scaler {
    offset: Vec<f32>,
    scale: Vec<f32>,
}

pub fn scaler(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let offset: Vec<f32> = node
        .get_attr_opt_vec("offset")?
        .unwrap_or_else(|| vec![0.0]);
    let scale: Vec<f32> = node.get_attr_opt_vec("scale")?.unwrap_or_else(|| vec![1.0]);
    ensure!(
        !offset.is_empty() && !scale.is_empty(),
        "Scaler offset and scale must not be empty"
    );
    Ok((expand(Scaler { offset, scale }), vec![]))
}

impl Expansion for Scaler {
    fn name(&self) -> StaticName {
        "Scaler".into()
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

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let mut x = inputs[0];
        let fact = model.outlet_fact(x)?.clone();
        let width = fact.shape.last().and_then(|d| d.to_usize().ok());
        for (name, v) in [("offset", &self.offset), ("scale", &self.scale)] {
            ensure!(
                v.len() == 1 || Some(v.len()) == width,
                "Scaler {name} has {} values for {width:?} columns",
                v.len()
            );
        }
        if fact.datum_type != f32::datum_type() {
            x = model.wire_node(
                format!("{prefix}.to_f32"),
                tract_core::ops::cast::cast(f32::datum_type()),
                &[x],
            )?[0];
        }
        let rank = fact.rank().max(1);
        let offset = tensor1(&self.offset)
            .broadcast_into_rank(rank)?
            .into_arc_tensor();
        let scale = tensor1(&self.scale)
            .broadcast_into_rank(rank)?
            .into_arc_tensor();
        let offset = model.add_const(format!("{prefix}.offset"), offset)?;
        let scale = model.add_const(format!("{prefix}.scale"), scale)?;
        let centered = model.wire_node(
            format!("{prefix}.sub"),
            tract_core::ops::math::sub(),
            &[x, offset],
        )?;
        model.wire_node(
            format!("{prefix}.mul"),
            tract_core::ops::math::mul(),
            &[centered[0], scale],
        )
    }
}
