//! `ai.onnx.ml` `SVMRegressor` and `SVMClassifier`, as skl2onnx exports SVR, NuSVR, SVC and
//! NuSVC.
//!
//! Kernels (`kernel_params = [gamma, coef0, degree]`), computed in f32 like onnxruntime:
//! `LINEAR` x·v, `POLY` (γ x·v + c₀)^d, `RBF` exp(−γ‖x − v‖²), `SIGMOID` tanh(γ x·v + c₀).
//!
//! - Regressor: `Σ coefᵢ K(x, svᵢ) + ρ` (or `x·coef + ρ` without support vectors), one column;
//!   `one_class` maps the sign to ±1.
//! - Classifier: one-vs-one. For each class pair (i, j) the score is
//!   `Σ_{v∈i} coef[j−1][v] K(x,v) + Σ_{v∈j} coef[i][v] K(x,v) + ρ_pair`, summed in f64; a positive
//!   score votes for i, otherwise for j; the label is the first class with the most votes. The
//!   score output has one column per pair, or `[−s, s]` for two classes. Probability calibration
//!   (`prob_a`/`prob_b`, sklearn's `probability=True`) is rejected at load for now.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::Array2;
use tract_onnx::tract_hir::internal::*;

use super::{
    ClassLabels, PostTransform, apply_post_transform, class_labels, input_rows, post_transform,
    rows_fact,
};

const MAX_VALUES: usize = 1 << 22;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kernel {
    Linear,
    Poly { gamma: f32, coef0: f32, degree: i32 },
    Rbf { gamma: f32 },
    Sigmoid { gamma: f32, coef0: f32 },
}

impl Kernel {
    fn parse(node: &NodeProto) -> TractResult<Self> {
        let params: Vec<f32> = node.get_attr_opt_vec("kernel_params")?.unwrap_or_default();
        let p = |i: usize| params.get(i).copied().unwrap_or(0.0);
        Ok(
            match node
                .get_attr_opt::<&str>("kernel_type")?
                .unwrap_or("LINEAR")
            {
                "LINEAR" => Kernel::Linear,
                "POLY" => {
                    let degree = p(2);
                    ensure!(
                        (0.0..=32.0).contains(&degree),
                        "polynomial degree {degree} out of range"
                    );
                    Kernel::Poly {
                        gamma: p(0),
                        coef0: p(1),
                        degree: degree as i32,
                    }
                }
                "RBF" => Kernel::Rbf { gamma: p(0) },
                "SIGMOID" => Kernel::Sigmoid {
                    gamma: p(0),
                    coef0: p(1),
                },
                other => bail!("unsupported SVM kernel {other:?}"),
            },
        )
    }

    fn eval(&self, x: &[f32], v: &[f32]) -> f32 {
        let dot = || x.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
        match *self {
            Kernel::Linear => dot(),
            Kernel::Poly {
                gamma,
                coef0,
                degree,
            } => (gamma * dot() + coef0).powi(degree),
            Kernel::Rbf { gamma } => {
                let d: f32 = x.iter().zip(v).map(|(a, b)| (a - b) * (a - b)).sum();
                (-gamma * d).exp()
            }
            Kernel::Sigmoid { gamma, coef0 } => (gamma * dot() + coef0).tanh(),
        }
    }
}

/// Support vectors, `[count, features]` row-major.
#[derive(Clone, Debug, PartialEq)]
struct Vectors {
    data: Vec<f32>,
    count: usize,
    features: usize,
}

impl Vectors {
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.features..(i + 1) * self.features]
    }
}

fn floats(node: &NodeProto, name: &str) -> TractResult<Vec<f32>> {
    let v: Vec<f32> = node.get_attr_opt_vec(name)?.unwrap_or_default();
    ensure!(v.len() <= MAX_VALUES, "{name} too large");
    Ok(v)
}

fn check_width(width: usize, features: usize) -> TractResult<()> {
    ensure!(
        width == features,
        "input has {width} features, the model expects {features}"
    );
    Ok(())
}

// ---------------------------------------------------------------- regressor

#[derive(Clone, Debug, PartialEq)]
pub struct SvmRegressor {
    kernel: Kernel,
    /// `None`: linear mode, `coefficients` are the weights.
    vectors: Option<Vectors>,
    coefficients: Vec<f32>,
    rho: f32,
    one_class: bool,
    post: PostTransform,
}

pub fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let coefficients = floats(node, "coefficients")?;
    ensure!(!coefficients.is_empty(), "SVMRegressor has no coefficients");
    let rho = floats(node, "rho")?;
    ensure!(!rho.is_empty(), "SVMRegressor has no rho");
    let n_supports: i64 = node.get_attr_opt("n_supports")?.unwrap_or(0);
    let vectors = if n_supports > 0 {
        let data = floats(node, "support_vectors")?;
        let count = usize::try_from(n_supports)?;
        ensure!(
            count <= data.len() && data.len() % count == 0,
            "support_vectors do not split into {count} vectors"
        );
        ensure!(
            coefficients.len() >= count,
            "fewer coefficients than support vectors"
        );
        Some(Vectors {
            features: data.len() / count,
            data,
            count,
        })
    } else {
        None
    };
    let op = SvmRegressor {
        kernel: if vectors.is_some() {
            Kernel::parse(node)?
        } else {
            Kernel::Linear
        },
        vectors,
        coefficients,
        rho: rho[0],
        one_class: node.get_attr_opt::<i64>("one_class")?.unwrap_or(0) != 0,
        post: post_transform(node)?,
    };
    Ok((expand(op), vec![]))
}

impl Expansion for SvmRegressor {
    fn name(&self) -> StaticName {
        "SVMRegressor".into()
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
        s.equals(&outputs[0].shape[1], 1.to_dim())?;
        Ok(())
    }

    wire_itself!();
}

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for SvmRegressor {}

impl Op for SvmRegressor {
    fn name(&self) -> StaticName {
        "PipeSVMRegressor".into()
    }
    op_as_typed_op!();
}

impl EvalOp for SvmRegressor {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, rows, width) = input_rows(&*args_1!(inputs))?;
        let mut out = Array2::<f32>::zeros((rows, 1));
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            let mut s = match &self.vectors {
                Some(v) => {
                    check_width(width, v.features)?;
                    (0..v.count)
                        .map(|i| self.coefficients[i] * self.kernel.eval(row, v.row(i)))
                        .sum::<f32>()
                }
                None => {
                    check_width(width, self.coefficients.len())?;
                    Kernel::Linear.eval(row, &self.coefficients)
                }
            } + self.rho;
            if self.one_class {
                s = if s > 0.0 { 1.0 } else { -1.0 };
            }
            out[[r, 0]] = s;
        }
        apply_post_transform(self.post, &mut out);
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for SvmRegressor {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&[rows_fact(inputs[0]), 1.to_dim()])))
    }
    as_op!();
}

// --------------------------------------------------------------- classifier

#[derive(Clone, Debug, PartialEq)]
enum ClassifierMode {
    /// One-vs-one over support vectors.
    Svc {
        vectors: Vectors,
        starts: Vec<usize>,
        per_class: Vec<usize>,
    },
    /// `coefficients` is `[classes, features]`.
    Linear { features: usize },
}

#[derive(Clone, Debug, PartialEq)]
pub struct SvmClassifier {
    kernel: Kernel,
    mode: ClassifierMode,
    coefficients: Vec<f32>,
    rho: Vec<f32>,
    labels: ClassLabels,
    post: PostTransform,
}

impl SvmClassifier {
    fn score_columns(&self) -> usize {
        let c = self.labels.len();
        match self.mode {
            ClassifierMode::Svc { .. } if c > 2 => c * (c - 1) / 2,
            ClassifierMode::Svc { .. } => 2,
            ClassifierMode::Linear { .. } => c,
        }
    }
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = class_labels(node)?;
    let classes = labels.len();
    ensure!(classes >= 2, "SVMClassifier needs at least two classes");
    ensure!(
        floats(node, "prob_a")?.is_empty(),
        "SVMClassifier probability calibration (sklearn probability=True) is not supported"
    );
    let coefficients = floats(node, "coefficients")?;
    let rho = floats(node, "rho")?;
    let per_class: Vec<i64> = node
        .get_attr_opt_vec("vectors_per_class")?
        .unwrap_or_default();
    let mode = if !per_class.is_empty() && per_class.iter().any(|&v| v > 0) {
        ensure!(
            per_class.len() == classes,
            "vectors_per_class has {} entries for {classes} classes",
            per_class.len()
        );
        let per_class: Vec<usize> = per_class
            .iter()
            .map(|&v| usize::try_from(v))
            .collect::<Result<_, _>>()?;
        let count: usize = per_class.iter().sum();
        let data = floats(node, "support_vectors")?;
        ensure!(
            count > 0 && data.len() % count == 0,
            "support_vectors do not split into {count} vectors"
        );
        ensure!(
            coefficients.len() >= (classes - 1) * count,
            "SVMClassifier needs {} coefficients, has {}",
            (classes - 1) * count,
            coefficients.len()
        );
        ensure!(
            rho.len() >= classes * (classes - 1) / 2,
            "SVMClassifier has too few rho values"
        );
        let starts = per_class
            .iter()
            .scan(0, |acc, &n| {
                let s = *acc;
                *acc += n;
                Some(s)
            })
            .collect();
        ClassifierMode::Svc {
            vectors: Vectors {
                features: data.len() / count,
                data,
                count,
            },
            starts,
            per_class,
        }
    } else {
        ensure!(
            !coefficients.is_empty() && coefficients.len() % classes == 0,
            "coefficients do not split into {classes} classes"
        );
        ensure!(!rho.is_empty(), "SVMClassifier has no rho");
        ClassifierMode::Linear {
            features: coefficients.len() / classes,
        }
    };
    let kernel = match mode {
        ClassifierMode::Svc { .. } => Kernel::parse(node)?,
        ClassifierMode::Linear { .. } => Kernel::Linear,
    };
    let post = post_transform(node)?;
    Ok((
        expand(SvmClassifier {
            kernel,
            mode,
            coefficients,
            rho,
            labels,
            post,
        }),
        vec![],
    ))
}

impl Expansion for SvmClassifier {
    fn name(&self) -> StaticName {
        "SVMClassifier".into()
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
impl Eq for SvmClassifier {}

impl Op for SvmClassifier {
    fn name(&self) -> StaticName {
        "PipeSVMClassifier".into()
    }
    op_as_typed_op!();
}

impl EvalOp for SvmClassifier {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (x, rows, width) = input_rows(&*args_1!(inputs))?;
        let classes = self.labels.len();
        let mut scores = Array2::<f32>::zeros((rows, self.score_columns()));
        let mut winners = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            match &self.mode {
                ClassifierMode::Svc {
                    vectors,
                    starts,
                    per_class,
                } => {
                    check_width(width, vectors.features)?;
                    let kernels: Vec<f32> = (0..vectors.count)
                        .map(|v| self.kernel.eval(row, vectors.row(v)))
                        .collect();
                    let mut votes = vec![0u32; classes];
                    let mut pair = 0;
                    for i in 0..classes - 1 {
                        for j in i + 1..classes {
                            // Coefficient row `row` against the support vectors of `class`.
                            let block = |row: usize, class: usize| {
                                let range = starts[class]..starts[class] + per_class[class];
                                let coefs =
                                    &self.coefficients[row * vectors.count..][range.clone()];
                                let k = &kernels[range];
                                coefs
                                    .iter()
                                    .zip(k)
                                    .map(|(c, k)| (c * k) as f64)
                                    .sum::<f64>()
                            };
                            let sum = block(j - 1, i) + block(i, j) + self.rho[pair] as f64;
                            let s = sum as f32;
                            if classes == 2 {
                                scores[[r, 0]] = -s;
                                scores[[r, 1]] = s;
                            } else {
                                scores[[r, pair]] = s;
                            }
                            votes[if sum > 0.0 { i } else { j }] += 1;
                            pair += 1;
                        }
                    }
                    // First class with the most votes.
                    let best = votes
                        .iter()
                        .enumerate()
                        .fold(0, |b, (i, &v)| if v > votes[b] { i } else { b });
                    winners.push(best);
                }
                ClassifierMode::Linear { features } => {
                    check_width(width, *features)?;
                    for c in 0..classes {
                        let w = &self.coefficients[c * features..(c + 1) * features];
                        scores[[r, c]] = Kernel::Linear.eval(row, w) + self.rho[0];
                    }
                    winners.push(super::tree::argmax(scores.row(r).iter().copied()));
                }
            }
        }
        apply_post_transform(self.post, &mut scores);
        Ok(tvec!(
            self.labels.pick(&winners)?.into_tvalue(),
            scores.into_tvalue()
        ))
    }
}

impl TypedOp for SvmClassifier {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = rows_fact(inputs[0]);
        Ok(tvec!(
            self.labels.datum_type().fact(std::slice::from_ref(&rows)),
            f32::fact(&[rows, self.score_columns().to_dim()])
        ))
    }
    as_op!();
}
