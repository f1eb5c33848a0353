//! The `ai.onnx.ml` operators scikit-learn exports (through skl2onnx) that tract 0.23 lacks or
//! that we must not take from it, one module each, each checked against onnxruntime's outputs
//! on the fixture models (`fixtures/models/reference.json`, made by `scripts/fixtures.sh`).
//!
//! | operator | module | sklearn source |
//! |---|---|---|
//! | `TreeEnsembleRegressor` | [`tree`] | RandomForestRegressor, GradientBoostingRegressor, DecisionTreeRegressor |
//! | `TreeEnsembleClassifier` | [`tree`] | RandomForestClassifier, GradientBoostingClassifier (replaces tract's: unchecked indices) |
//! | `Scaler` | [`scaler`] | StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler |
//! | `ZipMap` | [`zipmap`] | every classifier exported without `zipmap=False` |
//! | `Imputer` | [`imputer`] | SimpleImputer |
//! | `LabelEncoder` | [`label_encoder`] | LabelEncoder, string categories |
//! | `SVMRegressor`, `SVMClassifier` | [`svm`] | SVR, SVC, NuSVR, NuSVC |
//! | `ArrayFeatureExtractor` | [`array_feature_extractor`] | column picks in classifier and pipeline exports |
//! | `LinearRegressor`, `LinearClassifier` | [`linear`] | LinearRegression, Ridge, Lasso, LogisticRegression (replace tract's expansions: several times faster at batch 1; binary layout as onnxruntime's) |
//! | `Normalizer` | [`normalizer`] | Normalizer (replaces tract's expansion; `MAX` as onnxruntime's) |
//!
//! Two core operators are also replaced, by a rewrite of the decluttered model rather than in
//! the parser: a small float 2-D `Conv` (PyTorch's `nn.Conv2d` in a small CNN) runs as
//! [`conv::DirectConv`] instead of tract's pad, im2col, packed matrix product and reshape,
//! which at that size cost twice onnxruntime's latency. It is checked against tract's own
//! convolution over paddings, strides and dilations, and the CNN fixture against onnxruntime.
//! In the same way, chains of small dense layers (PyTorch's `nn.Linear` and ReLU in an MLP)
//! run as one [`dense::DirectDense`] instead of tract's matrix products, bias adds and `Max`
//! operators, checked against tract's own layers and the MLP fixture against onnxruntime.
//!
//! Every operator validates its attributes when the model loads (lengths, indices, ranges), so
//! a hostile model file fails at upload with a message instead of misbehaving at inference.

/// `Expansion::wire` for an operator that evaluates itself: it goes into the typed model as
/// it is, instead of expanding into tract's core operators.
macro_rules! wire_itself {
    () => {
        fn wire(
            &self,
            prefix: &str,
            model: &mut TypedModel,
            inputs: &[OutletId],
        ) -> TractResult<TVec<OutletId>> {
            model.wire_node(prefix, self.clone(), inputs)
        }
    };
}

pub mod array_feature_extractor;
pub mod conv;
pub mod dense;
pub mod imputer;
pub mod label_encoder;
pub mod linear;
pub mod normalizer;
pub mod scaler;
pub mod svm;
pub mod tree;
pub mod zipmap;

use tract_onnx::model::OnnxOpRegister;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::{Array1, Array2};
use tract_onnx::tract_hir::internal::*;

/// Adds (or overrides) our operators in a tract ONNX op register.
pub fn register(reg: &mut OnnxOpRegister) {
    reg.insert("TreeEnsembleRegressor", tree::regressor);
    reg.insert("TreeEnsembleClassifier", tree::classifier);
    reg.insert("Scaler", scaler::scaler);
    reg.insert("ZipMap", zipmap::zipmap);
    reg.insert("Imputer", imputer::imputer);
    reg.insert("LabelEncoder", label_encoder::label_encoder);
    reg.insert("SVMRegressor", svm::regressor);
    reg.insert("SVMClassifier", svm::classifier);
    reg.insert(
        "ArrayFeatureExtractor",
        array_feature_extractor::array_feature_extractor,
    );
    reg.insert("LinearRegressor", linear::regressor);
    reg.insert("LinearClassifier", linear::classifier);
    reg.insert("Normalizer", normalizer::normalizer);
}

/// The `post_transform` attribute of the ml operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
}

impl PostTransform {
    pub fn parse(s: &str) -> TractResult<Self> {
        Ok(match s {
            "NONE" => Self::None,
            "SOFTMAX" => Self::Softmax,
            "LOGISTIC" => Self::Logistic,
            "SOFTMAX_ZERO" => Self::SoftmaxZero,
            other => bail!("unsupported post_transform {other:?}"),
        })
    }
}

/// The node's `post_transform` attribute (`NONE` when absent).
pub fn post_transform(node: &NodeProto) -> TractResult<PostTransform> {
    PostTransform::parse(
        node.get_attr_opt::<&str>("post_transform")?
            .unwrap_or("NONE"),
    )
}

/// onnxruntime's logistic: symmetric, so large negative inputs do not lose precision.
pub fn logistic(x: f32) -> f32 {
    let v = 1.0 / (1.0 + (-x.abs()).exp());
    if x < 0.0 { 1.0 - v } else { v }
}

/// Applies a post transform to each row of `[rows, classes]` scores in place.
pub fn apply_post_transform(post: PostTransform, scores: &mut Array2<f32>) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => scores.mapv_inplace(logistic),
        PostTransform::Softmax | PostTransform::SoftmaxZero => {
            let zero = post == PostTransform::SoftmaxZero;
            for mut row in scores.rows_mut() {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = if zero && *v == 0.0 {
                        0.0
                    } else {
                        (*v - max).exp()
                    };
                    sum += *v;
                }
                if sum > 0.0 {
                    row.iter_mut().for_each(|v| *v /= sum);
                }
            }
        }
    }
}

/// Class labels of a classifier: integers or strings.
#[derive(Clone, Debug, PartialEq)]
pub enum ClassLabels {
    Int(Vec<i64>),
    Str(Vec<String>),
}

impl ClassLabels {
    pub fn len(&self) -> usize {
        match self {
            Self::Int(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn datum_type(&self) -> DatumType {
        match self {
            Self::Int(_) => i64::datum_type(),
            Self::Str(_) => String::datum_type(),
        }
    }

    /// The labels at these class indices, as a 1-D tensor.
    pub fn pick(&self, winners: &[usize]) -> TractResult<Tensor> {
        let get = |i: usize| {
            if i < self.len() {
                Ok(i)
            } else {
                Err(format_err!("class {i} out of range"))
            }
        };
        Ok(match self {
            Self::Int(v) => Array1::from(
                winners
                    .iter()
                    .map(|&i| get(i).map(|i| v[i]))
                    .collect::<TractResult<Vec<_>>>()?,
            )
            .into_tensor(),
            Self::Str(v) => Array1::from(
                winners
                    .iter()
                    .map(|&i| get(i).map(|i| v[i].clone()))
                    .collect::<TractResult<Vec<_>>>()?,
            )
            .into_tensor(),
        })
    }
}

/// Reads `classlabels_int64s` (`classlabels_ints` in SVMClassifier) or `classlabels_strings`.
pub fn class_labels(node: &NodeProto) -> TractResult<ClassLabels> {
    let ints: Option<Vec<i64>> = match node.get_attr_opt_vec("classlabels_int64s")? {
        Some(v) => Some(v),
        None => node.get_attr_opt_vec("classlabels_ints")?,
    };
    let strs: Option<Vec<String>> = node.get_attr_opt_vec("classlabels_strings")?;
    let labels = match (ints, strs) {
        (Some(i), None) => ClassLabels::Int(i),
        (None, Some(s)) => ClassLabels::Str(s),
        _ => bail!("a classifier needs exactly one of classlabels_int64s and classlabels_strings"),
    };
    ensure!(
        (1..=65536).contains(&labels.len()),
        "classifier has {} classes",
        labels.len()
    );
    Ok(labels)
}

/// The rows and row width of a 1-D or 2-D input (a 1-D input is one row).
pub(crate) fn rows_and_width(shape: &[usize]) -> TractResult<(usize, usize)> {
    match shape {
        [w] => Ok((1, *w)),
        [r, w] => Ok((*r, *w)),
        other => bail!("input must be 1-D or 2-D, got shape {other:?}"),
    }
}

/// A 1-D or 2-D input as f32 values, row-major, with its rows and row width.
pub(crate) fn input_rows(input: &Tensor) -> TractResult<(Vec<f32>, usize, usize)> {
    let x = input.cast_to::<f32>()?;
    let view = x.to_plain_array_view::<f32>()?;
    let (rows, width) = rows_and_width(view.shape())?;
    Ok((view.iter().copied().collect(), rows, width))
}

/// The row count fact of a 1-D or 2-D input.
pub(crate) fn rows_fact(input: &TypedFact) -> TDim {
    if input.rank() == 2 {
        input.shape[0].clone()
    } else {
        1.to_dim()
    }
}

/// A constant's values, if it is a plain f32 tensor. The model rewrites take anything else as
/// "leave this node to tract" rather than an error.
pub(crate) fn f32_values(t: &Tensor) -> Option<Vec<f32>> {
    Some(t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?.to_vec())
}

/// What the rewrite tests (`conv`, `dense`) share: inputs, runs and plan listings.
#[cfg(test)]
pub(crate) mod test_util {
    use tract_onnx::tract_hir::internal::*;

    /// A deterministic pseudo-random sequence in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Every output of `model`, optimized as the model store optimizes it, on `input`.
    pub fn run(model: TypedModel, input: &Tensor) -> TVec<Tensor> {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.clone().into_tvalue()))
            .unwrap()
            .into_iter()
            .map(TValue::into_tensor)
            .collect()
    }

    /// The operator names of `model`'s nodes, in order.
    pub fn op_names(model: &TypedModel) -> Vec<String> {
        model
            .nodes
            .iter()
            .map(|n| n.op.name().to_string())
            .collect()
    }
}
