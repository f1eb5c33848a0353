//! `ai.onnx.ml` `LabelEncoder` (opsets 1–3): maps each element through a key → value table,
//! with a default for unknown keys. Supports the combinations sklearn pipelines produce:
//! string → int64, int64 → string, int64 → int64, string → string, and float keys or values.
//! Float keys match by exact value, as onnxruntime does.

use std::collections::HashMap;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::ArrayD;
use tract_onnx::tract_hir::internal::*;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Int(i64),
    Str(String),
    /// Bits of an f32 key (NaN keys never match, like onnxruntime).
    Float(u32),
}

#[derive(Clone, Debug, PartialEq)]
enum Val {
    Int(i64),
    Str(String),
    Float(f32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct LabelEncoder {
    table: HashMap<Key, Val>,
    key_type: DatumType,
    out_type: DatumType,
    default: Val,
}

const MAX_ENTRIES: usize = 1 << 20;

pub fn label_encoder(
    ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let _ = ctx;
    // Opset 1 spells the attributes classes_strings / default_*; later opsets keys_* / values_*.
    let keys_s: Option<Vec<String>> = node
        .get_attr_opt_vec("keys_strings")?
        .or(node.get_attr_opt_vec("classes_strings")?);
    let keys_i: Option<Vec<i64>> = node.get_attr_opt_vec("keys_int64s")?;
    let keys_f: Option<Vec<f32>> = node.get_attr_opt_vec("keys_floats")?;
    let (keys, key_type): (Vec<Key>, DatumType) = match (keys_s, keys_i, keys_f) {
        (Some(k), None, None) => (k.into_iter().map(Key::Str).collect(), String::datum_type()),
        (None, Some(k), None) => (k.into_iter().map(Key::Int).collect(), i64::datum_type()),
        (None, None, Some(k)) => (
            k.into_iter().map(|f| Key::Float(f.to_bits())).collect(),
            f32::datum_type(),
        ),
        _ => bail!("LabelEncoder needs exactly one of keys_strings, keys_int64s, keys_floats"),
    };
    let vals_s: Option<Vec<String>> = node.get_attr_opt_vec("values_strings")?;
    let vals_i: Option<Vec<i64>> = node.get_attr_opt_vec("values_int64s")?;
    let vals_f: Option<Vec<f32>> = node.get_attr_opt_vec("values_floats")?;
    let (vals, out_type, default): (Vec<Val>, DatumType, Val) = match (vals_s, vals_i, vals_f) {
        (Some(v), None, None) => (
            v.into_iter().map(Val::Str).collect(),
            String::datum_type(),
            Val::Str(
                node.get_attr_opt::<String>("default_string")?
                    .unwrap_or_else(|| "_Unused".into()),
            ),
        ),
        (None, Some(v), None) => (
            v.into_iter().map(Val::Int).collect(),
            i64::datum_type(),
            Val::Int(node.get_attr_opt("default_int64")?.unwrap_or(-1)),
        ),
        (None, None, Some(v)) => (
            v.into_iter().map(Val::Float).collect(),
            f32::datum_type(),
            Val::Float(node.get_attr_opt("default_float")?.unwrap_or(-0.0)),
        ),
        (None, None, None) if key_type == String::datum_type() => {
            // Opset 1 string → int: the value is the key's position.
            let n = keys.len() as i64;
            (
                (0..n).map(Val::Int).collect(),
                i64::datum_type(),
                Val::Int(node.get_attr_opt("default_int64")?.unwrap_or(-1)),
            )
        }
        _ => {
            bail!("LabelEncoder needs exactly one of values_strings, values_int64s, values_floats")
        }
    };
    ensure!(
        keys.len() == vals.len(),
        "LabelEncoder has {} keys and {} values",
        keys.len(),
        vals.len()
    );
    ensure!(keys.len() <= MAX_ENTRIES, "LabelEncoder table too large");
    let mut table = HashMap::with_capacity(keys.len());
    for (k, v) in keys.into_iter().zip(vals) {
        // onnxruntime keeps the first of duplicate keys.
        table.entry(k).or_insert(v);
    }
    Ok((
        expand(LabelEncoder {
            table,
            key_type,
            out_type,
            default,
        }),
        vec![],
    ))
}

impl Expansion for LabelEncoder {
    fn name(&self) -> StaticName {
        "LabelEncoder".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 1)?;
        s.equals(&outputs[0].datum_type, self.out_type)?;
        s.equals(&outputs[0].shape, &inputs[0].shape)?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let fact = model.outlet_fact(inputs[0])?;
        ensure!(
            fact.datum_type == self.key_type
                || (self.key_type == i64::datum_type() && fact.datum_type.is_integer()),
            "LabelEncoder keys are {:?}, input is {:?}",
            self.key_type,
            fact.datum_type
        );
        model.wire_node(prefix, self.clone(), inputs)
    }
}

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for LabelEncoder {}

impl Op for LabelEncoder {
    fn name(&self) -> StaticName {
        "PipeLabelEncoder".into()
    }
    op_as_typed_op!();
}

impl LabelEncoder {
    fn lookup(&self, key: Key) -> &Val {
        self.table.get(&key).unwrap_or(&self.default)
    }
}

impl EvalOp for LabelEncoder {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let shape = input.shape().to_vec();
        let keys: Vec<Key> = if self.key_type == String::datum_type() {
            input
                .to_plain_array_view::<String>()?
                .iter()
                .map(|s| Key::Str(s.clone()))
                .collect()
        } else if self.key_type == f32::datum_type() {
            input
                .to_plain_array_view::<f32>()?
                .iter()
                .map(|f| Key::Float(f.to_bits()))
                .collect()
        } else {
            let x = input.cast_to::<i64>()?;
            x.to_plain_array_view::<i64>()?
                .iter()
                .map(|&i| Key::Int(i))
                .collect()
        };
        let vals: Vec<&Val> = keys.into_iter().map(|k| self.lookup(k)).collect();
        let out = if self.out_type == String::datum_type() {
            let v: Vec<String> = vals
                .iter()
                .map(|v| {
                    if let Val::Str(s) = v {
                        s.clone()
                    } else {
                        String::new()
                    }
                })
                .collect();
            ArrayD::from_shape_vec(shape, v)?.into_tensor()
        } else if self.out_type == f32::datum_type() {
            let v: Vec<f32> = vals
                .iter()
                .map(|v| if let Val::Float(f) = v { *f } else { 0.0 })
                .collect();
            ArrayD::from_shape_vec(shape, v)?.into_tensor()
        } else {
            let v: Vec<i64> = vals
                .iter()
                .map(|v| if let Val::Int(i) = v { *i } else { 0 })
                .collect();
            ArrayD::from_shape_vec(shape, v)?.into_tensor()
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for LabelEncoder {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(self.out_type.fact(inputs[0].shape.clone())))
    }
    as_op!();
}
