//! `ai.onnx.ml` `LinearRegressor` and `LinearClassifier`, as skl2onnx exports LinearRegression,
//! Ridge, Lasso, LogisticRegression and the linear SVMs' decision functions.
//!
//! tract parses both into a graph of its core operators (matmul with packing, bias add,
//! sigmoid or softmax, and for the classifier an argmax, an axis removal, a cast and a lookup).
//! At the batch of one a contract sends, that interpretation costs several times the few
//! dozen multiply-adds of the model, so these run as one operator each, computed as
//! onnxruntime computes them:
//!
//! - scores `s = x·Wᵀ + b`, one column per target (regressor) or per coefficient row
//!   (classifier), summed in f32 in feature order;
//! - `post_transform` on the scores: `LOGISTIC` element-wise, `SOFTMAX` (and `SOFTMAX_ZERO`)
//!   over a row; the classifier's label is the first maximum;
//! - the classifier's *binary layout* (two labels, one coefficient row, `multi_class = 0`):
//!   with `t = σ(s)` under `LOGISTIC` and `t = s` otherwise (onnxruntime applies no softmax
//!   here), the scores are `[1 − t, t]` and the label is the second class when `s > 0`. tract's
//!   own expansion scored `[−s, s]` and applied the softmax; the unit tests below pin
//!   onnxruntime 1.32's answers.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::Array2;
use tract_onnx::tract_hir::internal::*;

use super::{
    ClassLabels, PostTransform, apply_post_transform, class_labels, input_rows, logistic,
    post_transform, rows_fact,
};

/// Most scores one evaluation may produce (16 MiB of f32).
const MAX_SCORES: usize = 1 << 22;

/// `[outputs, features]` weights and one intercept per output.
#[derive(Clone, Debug, PartialEq)]
struct Weights {
    coefficients: Vec<f32>,
    intercepts: Vec<f32>,
    features: usize,
}

impl Weights {
    /// `coefficients` split into `outputs` rows; intercepts default to zero.
    fn new(
        coefficients: Vec<f32>,
        intercepts: Option<Vec<f32>>,
        outputs: usize,
    ) -> TractResult<Self> {
        ensure!(!coefficients.is_empty(), "no coefficients");
        ensure!(
            outputs >= 1 && coefficients.len().is_multiple_of(outputs),
            "{} coefficients do not split into {outputs} rows",
            coefficients.len()
        );
        let intercepts = intercepts.unwrap_or_else(|| vec![0.0; outputs]);
        ensure!(
            intercepts.len() == outputs,
            "{} intercepts for {outputs} outputs",
            intercepts.len()
        );
        Ok(Self {
            features: coefficients.len() / outputs,
            coefficients,
            intercepts,
        })
    }

    fn outputs(&self) -> usize {
        self.intercepts.len()
    }

    /// The raw scores of every row of `x` (`rows × width`, row-major).
    fn scores(&self, x: &[f32], rows: usize, width: usize) -> TractResult<Array2<f32>> {
        ensure!(
            width == self.features,
            "input has {width} features, the model expects {}",
            self.features
        );
        // A hostile file may declare 65 536 outputs and a request send thousands of rows.
        ensure!(
            rows.saturating_mul(self.outputs()) <= MAX_SCORES,
            "{rows} rows × {} outputs is more than {MAX_SCORES} scores",
            self.outputs()
        );
        let mut out = Array2::<f32>::zeros((rows, self.outputs()));
        // `width` is `features`, at least 1: `new` refused empty coefficients.
        for (r, row) in x.chunks_exact(width).enumerate() {
            for (o, w) in self.coefficients.chunks_exact(self.features).enumerate() {
                let dot = row.iter().zip(w).fold(0f32, |acc, (a, b)| acc + a * b);
                out[[r, o]] = dot + self.intercepts[o];
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- regressor

#[derive(Clone, Debug, PartialEq)]
pub struct LinearRegressor {
    weights: Weights,
    post: PostTransform,
}

pub fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let targets: i64 = node.get_attr_opt("targets")?.unwrap_or(1);
    ensure!(
        (1..=65536).contains(&targets),
        "LinearRegressor targets {targets} out of range"
    );
    let weights = Weights::new(
        node.get_attr_vec("coefficients")?,
        node.get_attr_opt_vec("intercepts")?,
        targets as usize,
    )
    .map_err(|e| format_err!("LinearRegressor: {e}"))?;
    let op = LinearRegressor {
        weights,
        post: post_transform(node)?,
    };
    Ok((expand(op), vec![]))
}

impl Expansion for LinearRegressor {
    fn name(&self) -> StaticName {
        "LinearRegressor".into()
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
        s.equals(&outputs[0].rank, 2)?;
        s.equals(&outputs[0].shape[1], self.weights.outputs().to_dim())?;
        Ok(())
    }

    wire_itself!();
}

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for LinearRegressor {}

impl Op for LinearRegressor {
    fn name(&self) -> StaticName {
        "PipeLinearRegressor".into()
    }
    op_as_typed_op!();
}

impl EvalOp for LinearRegressor {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, rows, width) = input_rows(&*args_1!(inputs))?;
        let mut y = self.weights.scores(&x, rows, width)?;
        apply_post_transform(self.post, &mut y);
        Ok(tvec!(y.into_tvalue()))
    }
}

impl TypedOp for LinearRegressor {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&[
            rows_fact(inputs[0]),
            self.weights.outputs().to_dim()
        ])))
    }
    as_op!();
}

// --------------------------------------------------------------- classifier

#[derive(Clone, Debug, PartialEq)]
pub struct LinearClassifier {
    weights: Weights,
    labels: ClassLabels,
    post: PostTransform,
    /// Two labels scored by one coefficient row: scores `[1 − t, t]` (module docs).
    binary: bool,
}

impl LinearClassifier {
    fn score_columns(&self) -> usize {
        if self.binary {
            2
        } else {
            self.weights.outputs()
        }
    }

    /// Scores (after the post transform) and the winning class of each row of `x`.
    fn classify(
        &self,
        x: &[f32],
        rows: usize,
        width: usize,
    ) -> TractResult<(Array2<f32>, Vec<usize>)> {
        let raw = self.weights.scores(x, rows, width)?;
        let (scores, winners) = if self.binary {
            let mut two = Array2::<f32>::zeros((rows, 2));
            let mut winners = Vec::with_capacity(rows);
            for r in 0..rows {
                let s = raw[[r, 0]];
                let t = match self.post {
                    PostTransform::Logistic => logistic(s),
                    _ => s,
                };
                two[[r, 0]] = 1.0 - t;
                two[[r, 1]] = t;
                winners.push(usize::from(s > 0.0));
            }
            (two, winners)
        } else {
            let mut scores = raw;
            apply_post_transform(self.post, &mut scores);
            let winners = scores
                .rows()
                .into_iter()
                .map(|row| super::tree::argmax(row.iter().copied()))
                .collect();
            (scores, winners)
        };
        Ok((scores, winners))
    }
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = class_labels(node)?;
    let classes = labels.len();
    let multi_class: i64 = node.get_attr_opt("multi_class")?.unwrap_or(0);
    let coefficients: Vec<f32> = node.get_attr_vec("coefficients")?;
    // onnxruntime refuses a classifier without intercepts, and so do we (tract accepted one
    // and then asserted at run time: a fuzzer find, `tests/data/fuzz-linear-no-intercepts.onnx`).
    let intercepts: Vec<f32> = node
        .get_attr_opt_vec("intercepts")?
        .filter(|v: &Vec<f32>| !v.is_empty())
        .ok_or_else(|| format_err!("LinearClassifier: intercepts must not be empty"))?;
    let rows = intercepts.len();
    let binary = classes == 2 && rows == 1 && multi_class == 0;
    ensure!(
        binary || rows == classes,
        "LinearClassifier has {rows} coefficient rows for {classes} classes"
    );
    let weights = Weights::new(coefficients, Some(intercepts), rows)
        .map_err(|e| format_err!("LinearClassifier: {e}"))?;
    let op = LinearClassifier {
        weights,
        labels,
        post: post_transform(node)?,
        binary,
    };
    Ok((expand(op), vec![]))
}

impl Expansion for LinearClassifier {
    fn name(&self) -> StaticName {
        "LinearClassifier".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&outputs[0].datum_type, self.labels.datum_type())?;
        s.equals(&outputs[0].rank, 1)?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[1].shape[1], self.score_columns().to_dim())?;
        Ok(())
    }

    wire_itself!();
}

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for LinearClassifier {}

impl Op for LinearClassifier {
    fn name(&self) -> StaticName {
        "PipeLinearClassifier".into()
    }
    op_as_typed_op!();
}

impl EvalOp for LinearClassifier {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, rows, width) = input_rows(&*args_1!(inputs))?;
        let (scores, winners) = self.classify(&x, rows, width)?;
        Ok(tvec!(
            self.labels.pick(&winners)?.into_tvalue(),
            scores.into_tvalue()
        ))
    }
}

impl TypedOp for LinearClassifier {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = rows_fact(inputs[0]);
        Ok(tvec!(
            self.labels.datum_type().fact(std::slice::from_ref(&rows)),
            f32::fact(&[rows, self.score_columns().to_dim()])
        ))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights(c: &[f32], b: &[f32]) -> Weights {
        Weights::new(c.to_vec(), Some(b.to_vec()), b.len()).unwrap()
    }

    fn classify(op: &LinearClassifier, x: &[f32]) -> (Tensor, Array2<f32>) {
        let (scores, winners) = op.classify(x, 1, x.len()).unwrap();
        (op.labels.pick(&winners).unwrap(), scores)
    }

    #[test]
    fn scores_are_the_dot_product_plus_intercept_per_output() {
        let w = weights(&[1.0, 2.0, -1.0, 0.5], &[0.25, -1.0]);
        let s = w.scores(&[3.0, 4.0, 1.0, 0.0], 2, 2).unwrap();
        assert_eq!(s.into_raw_vec_and_offset().0, vec![11.25, -2.0, 1.25, -2.0]);
        assert!(w.scores(&[1.0, 2.0, 3.0], 1, 3).is_err(), "width checked");
        assert!(Weights::new(vec![1.0, 2.0, 3.0], None, 2).is_err());
        assert!(Weights::new(vec![1.0, 2.0], Some(vec![0.0]), 2).is_err());
        assert!(Weights::new(vec![], None, 1).is_err());
        let wide = Weights::new(vec![1.0; 65536], None, 65536).unwrap();
        assert!(
            wide.scores(&[1.0; 128], 128, 1).is_err(),
            "output size capped"
        );
    }

    /// Expected values are onnxruntime 1.32's for the same node.
    #[test]
    fn binary_layout_scores_both_classes_from_one_row_as_onnxruntime_does() {
        let op = |post| LinearClassifier {
            weights: weights(&[1.0, -1.0], &[0.5]),
            labels: ClassLabels::Int(vec![7, 9]),
            post,
            binary: true,
        };
        // s = 2 - 4 + 0.5 = -1.5: the first label.
        for post in [PostTransform::None, PostTransform::Softmax] {
            let (label, scores) = classify(&op(post), &[2.0, 4.0]);
            assert_eq!(label, tensor1(&[7i64]));
            assert_eq!(scores.row(0).to_vec(), vec![2.5, -1.5]);
        }
        let (label, scores) = classify(&op(PostTransform::Logistic), &[2.0, 4.0]);
        assert_eq!(label, tensor1(&[7i64]));
        let want = [0.817_574_4, 0.182_425_56];
        for (got, want) in scores.row(0).iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        let (label, _) = classify(&op(PostTransform::Logistic), &[4.0, 2.0]);
        assert_eq!(label, tensor1(&[9i64]));
        // s = 0 is not positive: the first label, scores [1, 0].
        let zero = LinearClassifier {
            weights: weights(&[1.0, -1.0], &[0.0]),
            ..op(PostTransform::None)
        };
        let (label, scores) = classify(&zero, &[2.0, 2.0]);
        assert_eq!(label, tensor1(&[7i64]));
        assert_eq!(scores.row(0).to_vec(), vec![1.0, 0.0]);
    }

    #[test]
    fn one_row_per_class_takes_the_first_best() {
        let op = LinearClassifier {
            weights: weights(&[1.0, 0.0, 0.0, 1.0, 1.0, 0.0], &[0.0, 0.0, 0.0]),
            labels: ClassLabels::Str(vec!["a".into(), "b".into(), "c".into()]),
            post: PostTransform::Softmax,
            binary: false,
        };
        // Classes 0 and 2 tie: the first wins. onnxruntime: [0.42231882, 0.15536241, 0.42231882].
        let (label, scores) = classify(&op, &[2.0, 1.0]);
        assert_eq!(label, tensor1(&["a".to_string()]));
        assert_eq!(scores[[0, 0]], scores[[0, 2]]);
        assert!((scores[[0, 1]] - 0.155_362_41).abs() < 1e-6);
    }
}
