//! `ai.onnx.ml` `TreeEnsembleRegressor` and `TreeEnsembleClassifier`, as scikit-learn's
//! random forests and gradient boosting export them.
//!
//! tract ships a `TreeEnsembleClassifier`, but it walks node and leaf indices unchecked, which
//! is undefined behaviour on a hostile model file, and it has no regressor. Both operators here
//! share one [`Forest`] that validates every index when the model loads and bounds every walk,
//! so a bad file is an error at upload and never a crash at inference.
//!
//! Semantics follow onnxruntime: a node compares `x[feature]` with its threshold in `f32`
//! (`BRANCH_LEQ`, `BRANCH_LT`, `BRANCH_GTE`, `BRANCH_GT`, `BRANCH_EQ`, `BRANCH_NEQ`); a NaN
//! input takes the true branch only when `nodes_missing_value_tracks_true` says so; leaf weights
//! accumulate per target in `f32` in tree order; `AVERAGE` divides by the number of trees; base
//! values are added after aggregation; then the post transform. For a classifier, a two-class
//! model whose leaves only ever score one class is the "binary case": its single score `s`
//! becomes the probabilities `[1 - s, s]` (`NONE`) or `[1 - σ(s), σ(s)]` (`LOGISTIC`).

use std::collections::HashMap;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::tract_ndarray::Array2;
use tract_onnx::tract_hir::internal::*;

use super::{
    ClassLabels, PostTransform, apply_post_transform, class_labels, input_rows, post_transform,
    rows_fact,
};

/// Most nodes a single ensemble may have; keeps a hostile file from reserving gigabytes.
const MAX_NODES: usize = 1 << 22;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

fn parse_mode(s: &str) -> TractResult<Mode> {
    Ok(match s {
        "BRANCH_LEQ" => Mode::Leq,
        "BRANCH_LT" => Mode::Lt,
        "BRANCH_GTE" => Mode::Gte,
        "BRANCH_GT" => Mode::Gt,
        "BRANCH_EQ" => Mode::Eq,
        "BRANCH_NEQ" => Mode::Neq,
        "LEAF" => Mode::Leaf,
        other => bail!("unsupported tree node mode {other:?}"),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Clone, Debug, PartialEq)]
struct Node {
    mode: Mode,
    feature: usize,
    threshold: f32,
    /// Indices into `Forest::nodes`, validated to stay inside the node's own tree.
    true_child: usize,
    false_child: usize,
    missing_true: bool,
    /// Range into `Forest::leaf_targets` / `leaf_weights` for a leaf.
    leaves: std::ops::Range<usize>,
}

/// A validated, flattened tree ensemble.
#[derive(Clone, Debug, PartialEq)]
struct Forest {
    nodes: Vec<Node>,
    /// Root node index of each tree, in tree-id order.
    roots: Vec<usize>,
    /// Number of nodes of each tree: a walk longer than that has met a cycle.
    tree_sizes: Vec<usize>,
    leaf_targets: Vec<usize>,
    leaf_weights: Vec<f32>,
    n_targets: usize,
    /// Features must number more than this.
    max_feature: usize,
    aggregate: Aggregate,
    base_values: Option<Vec<f32>>,
}

impl Forest {
    /// Parses the node and leaf attributes (`prefix` is `target` or `class`).
    fn parse(node: &NodeProto, prefix: &str, n_targets: usize) -> TractResult<Self> {
        for attr in [
            "nodes_values_as_tensor",
            "nodes_hitrates_as_tensor",
            "base_values_as_tensor",
        ] {
            if node.attribute.iter().any(|a| a.name == attr) {
                bail!("{attr} (double-precision trees) is not supported");
            }
        }
        let tree_ids: Vec<i64> = node.get_attr_vec("nodes_treeids")?;
        let n = tree_ids.len();
        ensure!(
            n > 0 && n <= MAX_NODES,
            "tree ensemble needs 1..={MAX_NODES} nodes, has {n}"
        );
        let get_i64 = |name: &str| -> TractResult<Vec<i64>> {
            let v: Vec<i64> = node.get_attr_vec(name)?;
            ensure!(v.len() == n, "{name} has {} entries for {n} nodes", v.len());
            Ok(v)
        };
        let node_ids = get_i64("nodes_nodeids")?;
        let features = get_i64("nodes_featureids")?;
        let true_ids = get_i64("nodes_truenodeids")?;
        let false_ids = get_i64("nodes_falsenodeids")?;
        let values: Vec<f32> = node.get_attr_vec("nodes_values")?;
        ensure!(
            values.len() == n,
            "nodes_values has {} entries for {n} nodes",
            values.len()
        );
        let modes: Vec<Mode> = node
            .get_attr_tvec::<&str>("nodes_modes")?
            .iter()
            .map(|s| parse_mode(s))
            .collect::<TractResult<_>>()?;
        ensure!(
            modes.len() == n,
            "nodes_modes has {} entries for {n} nodes",
            modes.len()
        );
        let missing: Vec<i64> = node
            .get_attr_opt_vec("nodes_missing_value_tracks_true")?
            .unwrap_or_else(|| vec![0; n]);
        ensure!(
            missing.len() == n,
            "nodes_missing_value_tracks_true has wrong length"
        );

        let leaf_tree: Vec<i64> = node.get_attr_vec(&format!("{prefix}_treeids"))?;
        let m = leaf_tree.len();
        ensure!(m <= MAX_NODES, "too many leaf weights ({m})");
        let leaf_node: Vec<i64> = node.get_attr_vec(&format!("{prefix}_nodeids"))?;
        let leaf_ids: Vec<i64> = node.get_attr_vec(&format!("{prefix}_ids"))?;
        let leaf_w: Vec<f32> = node.get_attr_vec(&format!("{prefix}_weights"))?;
        ensure!(
            leaf_node.len() == m && leaf_ids.len() == m && leaf_w.len() == m,
            "{prefix}_* attributes differ in length"
        );

        // (tree id, node id) → flat index; trees in ascending id order.
        let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (tree_ids[i], node_ids[i]));
        for (flat, &i) in order.iter().enumerate() {
            if index.insert((tree_ids[i], node_ids[i]), flat).is_some() {
                bail!("duplicate node {} in tree {}", node_ids[i], tree_ids[i]);
            }
        }
        // Leaves grouped by their node.
        let mut leaf_order: Vec<usize> = (0..m).collect();
        leaf_order.sort_by_key(|&j| (leaf_tree[j], leaf_node[j]));
        let mut leaf_targets = Vec::with_capacity(m);
        let mut leaf_weights = Vec::with_capacity(m);
        let mut leaf_ranges: HashMap<usize, std::ops::Range<usize>> = HashMap::new();
        for &j in &leaf_order {
            let flat = *index
                .get(&(leaf_tree[j], leaf_node[j]))
                .ok_or_else(|| format_err!("weight for missing node {}", leaf_node[j]))?;
            let target = usize::try_from(leaf_ids[j])
                .ok()
                .filter(|&t| t < n_targets)
                .ok_or_else(|| format_err!("leaf target {} out of range", leaf_ids[j]))?;
            let start = leaf_targets.len();
            leaf_targets.push(target);
            leaf_weights.push(leaf_w[j]);
            leaf_ranges.entry(flat).or_insert(start..start).end = start + 1;
        }

        let mut nodes = Vec::with_capacity(n);
        let mut roots = Vec::new();
        let mut tree_sizes: Vec<usize> = Vec::new();
        let mut max_feature = 0;
        for (flat, &i) in order.iter().enumerate() {
            let tree = tree_ids[i];
            if flat == 0 || tree_ids[order[flat - 1]] != tree {
                roots.push(flat);
                tree_sizes.push(0);
            }
            *tree_sizes.last_mut().expect("pushed above") += 1;
            let mode = modes[i];
            let (mut true_child, mut false_child, mut feature) = (0, 0, 0);
            if mode != Mode::Leaf {
                let child = |id: i64| {
                    index.get(&(tree, id)).copied().ok_or_else(|| {
                        format_err!("node {} of tree {tree} has no child {id}", node_ids[i])
                    })
                };
                true_child = child(true_ids[i])?;
                false_child = child(false_ids[i])?;
                feature = usize::try_from(features[i])
                    .ok()
                    .filter(|&f| f < MAX_NODES)
                    .ok_or_else(|| format_err!("feature id {} out of range", features[i]))?;
                max_feature = max_feature.max(feature);
            }
            nodes.push(Node {
                mode,
                feature,
                threshold: values[i],
                true_child,
                false_child,
                missing_true: missing[i] != 0,
                leaves: leaf_ranges.remove(&flat).unwrap_or(0..0),
            });
        }
        ensure!(
            leaf_ranges.is_empty(),
            "leaf weights attached to branch nodes"
        );

        let aggregate = match node
            .get_attr_opt::<&str>("aggregate_function")?
            .unwrap_or("SUM")
        {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => bail!("unsupported aggregate_function {other:?}"),
        };
        let base_values: Option<Vec<f32>> = node.get_attr_opt_vec("base_values")?;
        Ok(Self {
            nodes,
            roots,
            tree_sizes,
            leaf_targets,
            leaf_weights,
            n_targets,
            max_feature,
            aggregate,
            base_values,
        })
    }

    /// The leaf a row lands on in one tree.
    fn leaf(&self, tree: usize, row: &[f32]) -> TractResult<&Node> {
        let mut at = self.roots[tree];
        for _ in 0..=self.tree_sizes[tree] {
            let node = &self.nodes[at];
            if node.mode == Mode::Leaf {
                return Ok(node);
            }
            let x = row[node.feature];
            let t = node.threshold;
            let go_true = if x.is_nan() {
                node.missing_true || node.mode == Mode::Neq
            } else {
                match node.mode {
                    Mode::Leq => x <= t,
                    Mode::Lt => x < t,
                    Mode::Gte => x >= t,
                    Mode::Gt => x > t,
                    Mode::Eq => x == t,
                    Mode::Neq => x != t,
                    Mode::Leaf => unreachable!("handled above"),
                }
            };
            at = if go_true {
                node.true_child
            } else {
                node.false_child
            };
        }
        bail!("tree {tree} has a cycle")
    }

    /// Aggregated raw scores (before base values and post transform), `[rows, n_targets]`.
    fn scores(&self, input: &Tensor) -> TractResult<Array2<f32>> {
        let (flat, rows, width) = input_rows(input)?;
        ensure!(
            width > self.max_feature,
            "input has {width} features, the model reads feature #{}",
            self.max_feature
        );
        let mut out = Array2::<f32>::zeros((rows, self.n_targets));
        let mut seen = vec![false; self.n_targets];
        for r in 0..rows {
            let row = &flat[r * width..(r + 1) * width];
            let mut acc = vec![0f32; self.n_targets];
            seen.iter_mut().for_each(|s| *s = false);
            for tree in 0..self.roots.len() {
                let leaf = self.leaf(tree, row)?;
                for k in leaf.leaves.clone() {
                    let (t, w) = (self.leaf_targets[k], self.leaf_weights[k]);
                    acc[t] = match self.aggregate {
                        Aggregate::Sum | Aggregate::Average => acc[t] + w,
                        Aggregate::Min if seen[t] => acc[t].min(w),
                        Aggregate::Max if seen[t] => acc[t].max(w),
                        Aggregate::Min | Aggregate::Max => w,
                    };
                    seen[t] = true;
                }
            }
            if self.aggregate == Aggregate::Average {
                let trees = self.roots.len() as f32;
                acc.iter_mut().for_each(|a| *a /= trees);
            }
            for (t, a) in acc.into_iter().enumerate() {
                out[[r, t]] = a;
            }
        }
        Ok(out)
    }
}

// ---------------------------------------------------------------- regressor

#[derive(Clone, Debug, PartialEq)]
pub struct TreeEnsembleRegressor {
    forest: Forest,
    post: PostTransform,
}

pub fn regressor(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let n_targets: i64 = node.get_attr_opt("n_targets")?.unwrap_or(1);
    let n_targets = usize::try_from(n_targets)
        .ok()
        .filter(|&t| (1..=4096).contains(&t))
        .ok_or_else(|| format_err!("n_targets {n_targets} out of range"))?;
    let forest = Forest::parse(node, "target", n_targets)?;
    if let Some(base) = &forest.base_values {
        ensure!(
            base.len() == n_targets,
            "base_values has {} entries for {n_targets} targets",
            base.len()
        );
    }
    Ok((
        expand(TreeEnsembleRegressor {
            forest,
            post: post_transform(node)?,
        }),
        vec![],
    ))
}

impl Expansion for TreeEnsembleRegressor {
    fn name(&self) -> StaticName {
        "TreeEnsembleRegressor".into()
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
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[0].shape[1], self.forest.n_targets.to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, RegressorOp(self.clone()), inputs)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct RegressorOp(TreeEnsembleRegressor);

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for RegressorOp {}

impl Op for RegressorOp {
    fn name(&self) -> StaticName {
        "PipeTreeEnsembleRegressor".into()
    }
    op_as_typed_op!();
}

impl EvalOp for RegressorOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let forest = &self.0.forest;
        let mut scores = forest.scores(&input)?;
        if let Some(base) = &forest.base_values {
            for mut row in scores.rows_mut() {
                row.iter_mut().zip(base).for_each(|(s, b)| *s += b);
            }
        }
        apply_post_transform(self.0.post, &mut scores);
        Ok(tvec!(scores.into_tvalue()))
    }
}

impl TypedOp for RegressorOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = rows_fact(inputs[0]);
        Ok(tvec!(f32::fact(&[rows, self.0.forest.n_targets.to_dim()])))
    }
    as_op!();
}

// --------------------------------------------------------------- classifier

#[derive(Clone, Debug, PartialEq)]
pub struct TreeEnsembleClassifier {
    forest: Forest,
    labels: ClassLabels,
    post: PostTransform,
    /// Two classes, leaves that only score one of them: see the module docs.
    binary: Option<usize>,
}

pub fn classifier(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let labels = class_labels(node)?;
    let forest = Forest::parse(node, "class", labels.len())?;
    let mut scored: Vec<usize> = forest.leaf_targets.clone();
    scored.sort_unstable();
    scored.dedup();
    let binary = (labels.len() == 2 && scored.len() == 1).then(|| scored[0]);
    if let Some(base) = &forest.base_values {
        let want = if binary.is_some() {
            [1, 2].contains(&base.len())
        } else {
            base.len() == labels.len()
        };
        ensure!(
            want,
            "base_values has {} entries for {} classes",
            base.len(),
            labels.len()
        );
    }
    Ok((
        expand(TreeEnsembleClassifier {
            forest,
            labels,
            post: post_transform(node)?,
            binary,
        }),
        vec![],
    ))
}

impl Expansion for TreeEnsembleClassifier {
    fn name(&self) -> StaticName {
        "TreeEnsembleClassifier".into()
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
        s.equals(&outputs[0].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].datum_type, DatumType::F32)?;
        s.equals(&outputs[1].rank, 2)?;
        s.equals(&outputs[1].shape[0], &inputs[0].shape[0])?;
        s.equals(&outputs[1].shape[1], self.labels.len().to_dim())?;
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, ClassifierOp(self.clone()), inputs)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct ClassifierOp(TreeEnsembleClassifier);

// Floats make PartialEq partial; tract only compares ops to dedup them.
impl Eq for ClassifierOp {}

impl Op for ClassifierOp {
    fn name(&self) -> StaticName {
        "PipeTreeEnsembleClassifier".into()
    }
    op_as_typed_op!();
}

impl EvalOp for ClassifierOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        let op = &self.0;
        let raw = op.forest.scores(&input)?;
        let rows = raw.nrows();
        let (winners, probs) = match op.binary {
            Some(class) => {
                let base = op
                    .forest
                    .base_values
                    .as_ref()
                    .map(|b| b[b.len() - 1])
                    .unwrap_or(0.0);
                let mut probs = Array2::<f32>::zeros((rows, 2));
                let mut winners = Vec::with_capacity(rows);
                for r in 0..rows {
                    let s = raw[[r, class]] + base;
                    let p = match op.post {
                        PostTransform::Logistic => 1.0 / (1.0 + (-s).exp()),
                        _ => s,
                    };
                    // The scored class is "positive": labels[1] when it wins.
                    let positive = match op.post {
                        PostTransform::Logistic => s > 0.0,
                        _ => s > 0.5,
                    };
                    probs[[r, 0]] = 1.0 - p;
                    probs[[r, 1]] = p;
                    winners.push(usize::from(positive));
                }
                (winners, probs)
            }
            None => {
                let mut scores = raw;
                if let Some(base) = &op.forest.base_values {
                    for mut row in scores.rows_mut() {
                        row.iter_mut().zip(base).for_each(|(s, b)| *s += b);
                    }
                }
                let winners = scores
                    .rows()
                    .into_iter()
                    .map(|row| argmax(row.iter().copied()))
                    .collect();
                apply_post_transform(op.post, &mut scores);
                (winners, scores)
            }
        };
        Ok(tvec!(
            op.labels.pick(&winners)?.into_tvalue(),
            probs.into_tvalue()
        ))
    }
}

impl TypedOp for ClassifierOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let rows = rows_fact(inputs[0]);
        Ok(tvec!(
            self.0.labels.datum_type().fact(std::slice::from_ref(&rows)),
            f32::fact(&[rows, self.0.labels.len().to_dim()])
        ))
    }
    as_op!();
}

/// Index of the first maximum (onnxruntime's tie rule).
pub(crate) fn argmax(values: impl Iterator<Item = f32>) -> usize {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if v > best.1 || i == 0 {
            best = (i, v);
        }
    }
    best.0
}
