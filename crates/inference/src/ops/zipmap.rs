//! `ai.onnx.ml` `ZipMap`: turns a `[rows, classes]` probability tensor into one map per row
//! (class label → probability). skl2onnx appends it to every classifier unless exported with
//! `zipmap=False`.
//!
//! Maps and sequences are not tensors, and a contract can only receive tensors, so the node
//! exposes a ZipMap output as the probability tensor itself, columns in class-label order (the
//! labels are the model's `classlabels_*`, listed in the model's metadata). The operator is
//! therefore an identity on values; what it checks is that the attributes are well formed and
//! that the column count matches the labels.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::class_labels;

#[derive(Clone, Debug)]
pub struct ZipMap {
    classes: usize,
}

pub fn zipmap(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let classes = class_labels(node)?.len();
    Ok((expand(ZipMap { classes }), vec![]))
}

impl Expansion for ZipMap {
    fn name(&self) -> StaticName {
        "ZipMap".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, DatumType::F32)?;
        s.equals(&outputs[0].datum_type, DatumType::F32)?;
        s.equals(&inputs[0].rank, 2)?;
        s.equals(&inputs[0].shape[1], self.classes.to_dim())?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        _prefix: &str,
        _model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        Ok(tvec!(inputs[0]))
    }
}
