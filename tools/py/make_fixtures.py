#!/usr/bin/env python3
"""Generate the ONNX model fixtures and their onnxruntime reference outputs.

Usage:
    make_fixtures.py [--out DIR]        write every <name>.onnx and reference.json to DIR
                                        (default: fixtures/models under the repo root)
    make_fixtures.py --check [--out DIR]
                                        regenerate into a temporary directory, then verify the
                                        committed fixtures in DIR (see check() below)

Everything is deterministic: every data set, case input and weight comes from a
numpy RandomState with a fixed seed.  The scikit-learn models are converted with
skl2onnx; `mlp` and `cnn` are built with onnx.helper in the graph shape that
torch.onnx.export (opset 17, dynamic_axes on the batch) produces, because torch
wheels are too large to install in CI.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import sklearn
import skl2onnx
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
from sklearn.ensemble import (
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, Normalizer, StandardScaler
from sklearn.svm import SVC, SVR

# scikit-learn 1.9 deprecates SVC(probability=...) and probA_/probB_, which skl2onnx still reads.
warnings.filterwarnings("ignore", category=FutureWarning)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "fixtures" / "models"

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
# IR version torch.onnx.export writes for opset 17 (and the one skl2onnx picks for it).
TORCH_IR_VERSION = 8
MAX_MODEL_BYTES = 200 * 1024

# Check tolerances.
COMMITTED_TOL = 1e-5  # committed .onnx + committed inputs -> committed outputs (hard failure)
RETRAIN_TOL = 1e-4  # freshly retrained models vs committed outputs (warning only)

N_CASES_B1 = 3  # three batch-1 cases ...
BATCH_LAST = 3  # ... and one batch-3 case


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def float_initial(n_features: int):
    return [("input", FloatTensorType([None, n_features]))]


def dedupe_opsets(onx):
    """skl2onnx can list the same domain twice in opset_import (e.g. for pipelines); keep
    one entry per domain, at the highest version, in a stable order."""
    best = {}
    for o in onx.opset_import:
        best[o.domain] = max(best.get(o.domain, 0), o.version)
    del onx.opset_import[:]
    for domain, version in sorted(best.items()):
        onx.opset_import.append(helper.make_opsetid(domain, version))
    return onx


def rename_output(onx, old, new):
    """Rename a graph output (and every node port that produces or reads it). If `new` is
    already an intermediate name, that one is first renamed to `new`_raw."""
    used = {n for node in onx.graph.node for n in list(node.input) + list(node.output)}
    if new in used:
        rename_output(onx, new, new + "_raw")
    for node in onx.graph.node:
        for port in (node.input, node.output):
            for i, name in enumerate(port):
                if name == old:
                    port[i] = new
    for vi in onx.graph.output:
        if vi.name == old:
            vi.name = new
    return onx


def to_onnx(model, n_features: int, options=None, initial_types=None, final_types=None):
    onx = convert_sklearn(
        model,
        initial_types=initial_types or float_initial(n_features),
        final_types=final_types,
        target_opset=TARGET_OPSET,
        options=options,
    )
    return dedupe_opsets(onx)


def no_zipmap(clf):
    return {id(clf): {"zipmap": False}}


def make_cases(rng: np.random.RandomState, sample):
    """sample(rng, n) -> dict input name -> ndarray with leading batch dim n."""
    cases = [sample(rng, 1) for _ in range(N_CASES_B1)]
    cases.append(sample(rng, BATCH_LAST))
    return cases


def f32(x):
    return np.asarray(x, dtype=np.float32)


# ---------------------------------------------------------------------------
# Models. Each builder returns (onnx.ModelProto, description, list of case input dicts).
# ---------------------------------------------------------------------------


def risk_features(rng, n):
    collateral_ratio = rng.uniform(0.8, 3.0, n)
    debt_utilization = rng.uniform(0.0, 1.0, n)
    volatility = rng.uniform(0.0, 1.0, n)
    days_since_last_payment = rng.uniform(0.0, 90.0, n)
    return np.column_stack(
        [collateral_ratio, debt_utilization, volatility, days_since_last_payment]
    )


_RISK_PIPE = None


def fitted_risk_pipeline():
    """Shared by risk_logreg and risk_logreg_zipmap: the same fitted pipeline."""
    global _RISK_PIPE
    if _RISK_PIPE is None:
        rng = np.random.RandomState(1001)
        X = risk_features(rng, 600)
        score = (
            -2.0 * (X[:, 0] - 1.6)
            + 2.5 * (X[:, 1] - 0.5)
            + 2.0 * (X[:, 2] - 0.5)
            + 0.02 * (X[:, 3] - 45.0)
            + rng.normal(0.0, 0.5, len(X))
        )
        y = (score > 0).astype(np.int64)
        pipe = Pipeline(
            [("scaler", StandardScaler()), ("clf", LogisticRegression(max_iter=1000))]
        )
        pipe.fit(f32(X), y)
        _RISK_PIPE = pipe
    return _RISK_PIPE


def risk_case_sample(rng, n):
    return {"input": f32(risk_features(rng, n))}


RISK_DESC = (
    "Pipeline(StandardScaler, LogisticRegression) binary loan-risk classifier. Features: "
    "[collateral_ratio (0.8..3.0), debt_utilization (0..1), volatility (0..1), "
    "days_since_last_payment (0..90)]; label 1 = risky."
)


def build_risk_logreg():
    pipe = fitted_risk_pipeline()
    onx = to_onnx(pipe, 4, options=no_zipmap(pipe.named_steps["clf"]))
    cases = make_cases(np.random.RandomState(2001), risk_case_sample)
    return onx, RISK_DESC + " Outputs label int64 [N] and probabilities float [N,2].", cases


def build_risk_logreg_zipmap():
    pipe = fitted_risk_pipeline()
    onx = to_onnx(pipe, 4)
    # skl2onnx names the ZipMap variant's label output "output_label"; expose it as "label"
    # like every other classifier here.
    onx = rename_output(onx, "output_label", "label")
    # Same case inputs as risk_logreg, so the two exports can be compared directly.
    cases = make_cases(np.random.RandomState(2001), risk_case_sample)
    return (
        onx,
        RISK_DESC
        + " Same fitted pipeline as risk_logreg, exported with the default ZipMap: outputs "
        "label int64 [N] and output_probability (sequence of maps, stored here as the "
        "float [N,2] probability tensor ordered by class label). Its cases have the same inputs "
        "as risk_logreg's.",
        cases,
    )


def price_windows(rng, n_series, length, window=8):
    """Random walks around 100 with a per-series trend; returns (X windows, y next)."""
    X, y = [], []
    for _ in range(n_series):
        trend = rng.uniform(-0.3, 0.3)
        p = 100.0 + rng.normal(0.0, 2.0)
        series = []
        for _ in range(length):
            # Drift with the trend, mean-revert gently towards 100, plus noise.
            p = p + trend + 0.05 * (100.0 - p) + rng.normal(0.0, 0.8)
            series.append(p)
        series = np.asarray(series)
        for t in range(window, length):
            X.append(series[t - window : t])
            y.append(series[t])
    return np.asarray(X), np.asarray(y)


def build_forecast_gbr():
    rng = np.random.RandomState(1003)
    X, y = price_windows(rng, 40, 40)
    model = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0)
    model.fit(f32(X), y)
    onx = to_onnx(model, 8)

    def sample(rng, n):
        Xc, _ = price_windows(rng, n, 9)
        # One window (the last 8 prices before the final point) per series.
        return {"input": f32(Xc.reshape(n, -1, 8)[:, -1, :])}

    cases = make_cases(np.random.RandomState(2003), sample)
    return (
        onx,
        "GradientBoostingRegressor(n_estimators=50, max_depth=3) forecasting the next price of "
        "a synthetic random walk around 100 with trend from the previous 8 prices "
        "(oldest first). Output variable float [N,1].",
        cases,
    )


def build_rf_regressor():
    rng = np.random.RandomState(1004)
    X = rng.uniform(0.0, 1.0, (300, 5))
    y = (
        3.0 * X[:, 0]
        + 2.0 * np.sin(3.0 * X[:, 1])
        - 1.5 * X[:, 2] * X[:, 3]
        + 0.5 * X[:, 4]
        + rng.normal(0.0, 0.1, len(X))
    )
    model = RandomForestRegressor(n_estimators=10, max_depth=5, random_state=0)
    model.fit(f32(X), y)
    onx = to_onnx(model, 5)
    cases = make_cases(
        np.random.RandomState(2004), lambda r, n: {"input": f32(r.uniform(0.0, 1.0, (n, 5)))}
    )
    return (
        onx,
        "RandomForestRegressor(n_estimators=10, max_depth=5) on 5 features in 0..1 "
        "(TreeEnsembleRegressor, AVERAGE aggregate). Output variable float [N,1].",
        cases,
    )


def wallet_features(rng, n):
    account_age_years = rng.uniform(0.0, 5.0, n)  # account_age_days / 365
    tx_count_hundreds = rng.uniform(0.0, 10.0, n)  # tx_count / 100
    failed_ratio = rng.beta(1.5, 6.0, n)  # mostly small, 0..1
    return np.column_stack([account_age_years, tx_count_hundreds, failed_ratio])


def build_rf_classifier():
    rng = np.random.RandomState(1005)
    X = wallet_features(rng, 450)
    risk = (
        6.0 * X[:, 2] - 0.4 * X[:, 0] - 0.15 * X[:, 1] + rng.normal(0.0, 0.25, len(X))
    )
    lo, hi = np.quantile(risk, [1.0 / 3.0, 2.0 / 3.0])
    y = np.where(risk < lo, 0, np.where(risk < hi, 1, 2)).astype(np.int64)
    model = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
    model.fit(f32(X), y)
    onx = to_onnx(model, 3, options=no_zipmap(model))
    cases = make_cases(
        np.random.RandomState(2005), lambda r, n: {"input": f32(wallet_features(r, n))}
    )
    return (
        onx,
        "RandomForestClassifier(n_estimators=10, max_depth=4) classifying a wallet as "
        "allow=0 / review=1 / deny=2 from [account_age_days/365, tx_count/100, failed_ratio]. "
        "Outputs label int64 [N] and probabilities float [N,3].",
        cases,
    )


def build_gb_classifier():
    rng = np.random.RandomState(1006)
    X = rng.normal(0.0, 1.0, (400, 4))
    y = (
        X[:, 0] * X[:, 1] + X[:, 2] - 0.5 * X[:, 3] + rng.normal(0.0, 0.3, len(X)) > 0
    ).astype(np.int64)
    model = GradientBoostingClassifier(n_estimators=20, max_depth=2, random_state=0)
    model.fit(f32(X), y)
    onx = to_onnx(model, 4, options=no_zipmap(model))
    cases = make_cases(
        # Seed chosen so that the cases cover both classes.
        np.random.RandomState(2024), lambda r, n: {"input": f32(r.normal(0.0, 1.0, (n, 4)))}
    )
    return (
        onx,
        "GradientBoostingClassifier(n_estimators=20, max_depth=2) binary classifier on 4 "
        "standard-normal features. Outputs label int64 [N] and probabilities float [N,2].",
        cases,
    )


def build_linreg():
    rng = np.random.RandomState(1007)
    X = rng.uniform(-5.0, 5.0, (200, 3))
    y = 1.5 * X[:, 0] - 2.0 * X[:, 1] + 0.5 * X[:, 2] + 3.0 + rng.normal(0.0, 0.2, len(X))
    model = LinearRegression()
    model.fit(f32(X), y)
    onx = to_onnx(model, 3)
    cases = make_cases(
        np.random.RandomState(2007), lambda r, n: {"input": f32(r.uniform(-5.0, 5.0, (n, 3)))}
    )
    return (
        onx,
        "LinearRegression on 3 features in -5..5 (ai.onnx.ml LinearRegressor). "
        "Output variable float [N,1].",
        cases,
    )


def build_normalized_ridge():
    rng = np.random.RandomState(1008)
    X = rng.uniform(0.0, 10.0, (250, 4))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    y = 4.0 * Xn[:, 0] - 2.0 * Xn[:, 1] + 1.0 * Xn[:, 2] + 3.0 * Xn[:, 3] + rng.normal(
        0.0, 0.05, len(X)
    )
    model = Pipeline([("norm", Normalizer(norm="l2")), ("ridge", Ridge(alpha=0.1))])
    model.fit(f32(X), y)
    onx = to_onnx(model, 4)
    cases = make_cases(
        np.random.RandomState(2008), lambda r, n: {"input": f32(r.uniform(0.0, 10.0, (n, 4)))}
    )
    return (
        onx,
        "Pipeline(Normalizer('l2'), Ridge(alpha=0.1)) on 4 features in 0..10. "
        "Output variable float [N,1].",
        cases,
    )


def build_imputer_linreg():
    rng = np.random.RandomState(1009)
    X = rng.uniform(0.0, 10.0, (200, 3))
    y = 2.0 * X[:, 0] + 1.0 * X[:, 1] - 0.5 * X[:, 2] + 1.0 + rng.normal(0.0, 0.3, len(X))
    Xm = X.copy()
    Xm[rng.uniform(size=Xm.shape) < 0.1] = np.nan
    model = Pipeline(
        [("impute", SimpleImputer(strategy="mean")), ("linreg", LinearRegression())]
    )
    model.fit(f32(Xm), y)
    onx = to_onnx(model, 3)

    case_rng = np.random.RandomState(2009)
    cases = [{"input": f32(case_rng.uniform(0.0, 10.0, (1, 3)))} for _ in range(N_CASES_B1)]
    cases.append({"input": f32(case_rng.uniform(0.0, 10.0, (BATCH_LAST, 3)))})
    # Missing values in two of the cases: one batch-1 case, and the batch-3 case.
    cases[1]["input"][0, 1] = np.nan
    cases[3]["input"][0, 0] = np.nan
    cases[3]["input"][2, 1] = np.nan
    cases[3]["input"][2, 2] = np.nan
    return (
        onx,
        "Pipeline(SimpleImputer(strategy='mean'), LinearRegression) on 3 features in 0..10; "
        "NaN inputs are replaced by the training means (cases 1 and 3 contain NaN). "
        "Output variable float [N,1].",
        cases,
    )


def build_svr_rbf():
    rng = np.random.RandomState(1010)
    X = rng.uniform(-2.0, 2.0, (60, 3))
    y = np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2] + rng.normal(0.0, 0.1, len(X))
    model = SVR(kernel="rbf", C=1.0, gamma="scale")
    model.fit(f32(X), y)
    onx = to_onnx(model, 3)
    cases = make_cases(
        np.random.RandomState(2010), lambda r, n: {"input": f32(r.uniform(-2.0, 2.0, (n, 3)))}
    )
    return (
        onx,
        "SVR(kernel='rbf', C=1.0, gamma='scale') on 3 features in -2..2, 60 training points "
        "(ai.onnx.ml SVMRegressor). Output variable float [N,1].",
        cases,
    )


SVC_CENTERS = np.array([[-2.0, -1.0], [2.0, -1.0], [0.0, 2.0]])


def build_svc_linear():
    rng = np.random.RandomState(1011)
    X = np.concatenate([c + rng.normal(0.0, 0.9, (20, 2)) for c in SVC_CENTERS])
    y = np.repeat(np.arange(3), 20).astype(np.int64)
    model = SVC(kernel="linear", probability=False)
    model.fit(f32(X), y)
    onx = to_onnx(model, 2, options=no_zipmap(model))

    def sample(r, n):
        centers = SVC_CENTERS[r.randint(0, 3, n)]
        return {"input": f32(centers + r.normal(0.0, 1.2, (n, 2)))}

    cases = make_cases(np.random.RandomState(2011), sample)
    return (
        onx,
        "SVC(kernel='linear', probability=False), 3 classes on 2 features, 60 training points "
        "around 3 blob centres (ai.onnx.ml SVMClassifier). Outputs label int64 [N] and "
        "probabilities float [N,3] (the decision-function scores, as skl2onnx exports them).",
        cases,
    )


def build_label_encoder():
    enc = LabelEncoder()
    enc.fit(["high", "low", "medium"])
    try:
        onx = convert_sklearn(
            enc,
            initial_types=[("input", StringTensorType([None]))],
            final_types=[("label", Int64TensorType([None]))],
            target_opset=TARGET_OPSET,
        )
        onx = dedupe_opsets(onx)
        how = "converted with skl2onnx"
    except Exception as exc:  # pragma: no cover - fallback path
        print(f"label_encoder: skl2onnx failed ({exc!r}); building with onnx.helper",
              file=sys.stderr)
        onx = label_encoder_by_hand(list(enc.classes_))
        how = "built with onnx.helper (skl2onnx could not convert it)"
    cases = [
        {"input": np.array(["high"], dtype=object)},
        {"input": np.array(["medium"], dtype=object)},
        {"input": np.array(["critical"], dtype=object)},  # unknown -> -1
        {"input": np.array(["low", "high", "medium"], dtype=object)},
    ]
    return (
        onx,
        "sklearn LabelEncoder fitted on ['high', 'low', 'medium'], " + how + ": string [N] -> "
        "int64 [N] (high=0, low=1, medium=2, unknown=-1; case 2 is an unknown string).",
        cases,
    )


def label_encoder_by_hand(classes):
    node = helper.make_node(
        "LabelEncoder",
        ["input"],
        ["label"],
        domain="ai.onnx.ml",
        name="LabelEncoder",
        keys_strings=classes,
        values_int64s=list(range(len(classes))),
        default_int64=-1,
    )
    graph = helper.make_graph(
        [node],
        "label_encoder",
        [helper.make_tensor_value_info("input", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("label", TensorProto.INT64, [None])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
        producer_name="pipe-fixtures",
    )
    model.ir_version = TORCH_IR_VERSION
    return model


def torch_uniform(rng, fan_in, shape):
    """torch's default Linear/Conv init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape).astype(np.float32)


def torch_style_model(nodes, initializers, in_shape, out_shape, graph_name):
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(a, name) for name, a in initializers],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pipe-fixtures"
    )
    model.ir_version = TORCH_IR_VERSION
    return model


def gemm(name, inputs, output):
    return helper.make_node(
        "Gemm", inputs, [output], name=name, alpha=1.0, beta=1.0, transB=1
    )


def build_mlp():
    rng = np.random.RandomState(7)
    inits = []
    for layer, (fan_in, fan_out) in (("fc1", (8, 16)), ("fc2", (16, 16)), ("fc3", (16, 1))):
        inits.append((f"{layer}.weight", torch_uniform(rng, fan_in, (fan_out, fan_in))))
        inits.append((f"{layer}.bias", torch_uniform(rng, fan_in, (fan_out,))))
    nodes = [
        gemm("/fc1/Gemm", ["input", "fc1.weight", "fc1.bias"], "/fc1/Gemm_output_0"),
        helper.make_node("Relu", ["/fc1/Gemm_output_0"], ["/relu1/Relu_output_0"],
                         name="/relu1/Relu"),
        gemm("/fc2/Gemm", ["/relu1/Relu_output_0", "fc2.weight", "fc2.bias"],
             "/fc2/Gemm_output_0"),
        helper.make_node("Relu", ["/fc2/Gemm_output_0"], ["/relu2/Relu_output_0"],
                         name="/relu2/Relu"),
        gemm("/fc3/Gemm", ["/relu2/Relu_output_0", "fc3.weight", "fc3.bias"], "output"),
    ]
    onx = torch_style_model(nodes, inits, ["batch", 8], ["batch", 1], "main_graph")
    cases = make_cases(
        np.random.RandomState(2012), lambda r, n: {"input": f32(r.normal(0.0, 1.0, (n, 8)))}
    )
    return (
        onx,
        "PyTorch-style MLP 8 -> 16 -> 16 -> 1 (Gemm transB=1 + Relu), torch default init from "
        "RandomState(7); built with onnx.helper in the shape torch.onnx.export writes "
        "(opset 17, dynamic batch dim 'batch'). Output output float [N,1].",
        cases,
    )


def build_cnn():
    rng = np.random.RandomState(8)
    inits = [
        ("conv1.weight", torch_uniform(rng, 1 * 3 * 3, (4, 1, 3, 3))),
        ("conv1.bias", torch_uniform(rng, 1 * 3 * 3, (4,))),
        ("fc.weight", torch_uniform(rng, 64, (3, 64))),
        ("fc.bias", torch_uniform(rng, 64, (3,))),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "conv1.weight", "conv1.bias"],
            ["/conv1/Conv_output_0"],
            name="/conv1/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["/conv1/Conv_output_0"], ["/relu/Relu_output_0"],
                         name="/relu/Relu"),
        helper.make_node(
            "MaxPool",
            ["/relu/Relu_output_0"],
            ["/pool/MaxPool_output_0"],
            name="/pool/MaxPool",
            ceil_mode=0,
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        ),
        helper.make_node("Flatten", ["/pool/MaxPool_output_0"], ["/flatten/Flatten_output_0"],
                         name="/flatten/Flatten", axis=1),
        gemm("/fc/Gemm", ["/flatten/Flatten_output_0", "fc.weight", "fc.bias"],
             "/fc/Gemm_output_0"),
        helper.make_node("Softmax", ["/fc/Gemm_output_0"], ["output"], name="/softmax/Softmax",
                         axis=1),
    ]
    onx = torch_style_model(nodes, inits, ["batch", 1, 8, 8], ["batch", 3], "main_graph")
    cases = make_cases(
        np.random.RandomState(2013),
        lambda r, n: {"input": f32(r.uniform(0.0, 1.0, (n, 1, 8, 8)))},
    )
    return (
        onx,
        "PyTorch-style CNN: Conv(1->4, 3x3, pads 1) -> Relu -> MaxPool(2x2, stride 2) -> "
        "Flatten -> Gemm(64->3, transB=1) -> Softmax(axis=1) on a [N,1,8,8] input in 0..1, "
        "seeded torch default init; built with onnx.helper in the shape torch.onnx.export "
        "writes (opset 17, dynamic batch dim 'batch'). Output output float [N,3].",
        cases,
    )


MODELS = [
    ("risk_logreg", build_risk_logreg),
    ("risk_logreg_zipmap", build_risk_logreg_zipmap),
    ("forecast_gbr", build_forecast_gbr),
    ("rf_regressor", build_rf_regressor),
    ("rf_classifier", build_rf_classifier),
    ("gb_classifier", build_gb_classifier),
    ("linreg", build_linreg),
    ("normalized_ridge", build_normalized_ridge),
    ("imputer_linreg", build_imputer_linreg),
    ("svr_rbf", build_svr_rbf),
    ("svc_linear", build_svc_linear),
    ("label_encoder", build_label_encoder),
    ("mlp", build_mlp),
    ("cnn", build_cnn),
]


# ---------------------------------------------------------------------------
# Reference computation and (de)serialisation
# ---------------------------------------------------------------------------

ELEM_DTYPE = {
    TensorProto.FLOAT: "float32",
    TensorProto.INT64: "int64",
    TensorProto.STRING: "string",
}
NP_DTYPE = {"float32": np.float32, "int64": np.int64, "string": object}


def dims(shape_proto):
    out = []
    for d in shape_proto.dim:
        out.append(d.dim_value if d.HasField("dim_value") else None)
    return out


def zipmap_nodes(model):
    """Graph output name -> ordered class labels, for outputs produced by ZipMap."""
    out = {}
    for node in model.graph.node:
        if node.op_type == "ZipMap" and node.domain == "ai.onnx.ml":
            labels = None
            for a in node.attribute:
                if a.name == "classlabels_int64s":
                    labels = list(a.ints)
                elif a.name == "classlabels_strings":
                    labels = [s.decode() for s in a.strings]
            out[node.output[0]] = labels
    return out


def io_spec(model):
    zm = zipmap_nodes(model)
    inputs, outputs = [], []
    init_names = {i.name for i in model.graph.initializer}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        tt = vi.type.tensor_type
        inputs.append({"name": vi.name, "dtype": ELEM_DTYPE[tt.elem_type], "shape": dims(tt.shape)})
    for vi in model.graph.output:
        if vi.name in zm:
            outputs.append({"name": vi.name, "dtype": "float32", "shape": [None, len(zm[vi.name])]})
            continue
        tt = vi.type.tensor_type
        outputs.append({"name": vi.name, "dtype": ELEM_DTYPE[tt.elem_type], "shape": dims(tt.shape)})
    return inputs, outputs


def make_session(path_or_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def run_model(sess, model, feeds):
    """Run and return {output name: ndarray}, ZipMap outputs as float32 [N, n_classes]."""
    zm = zipmap_nodes(model)
    names = [o.name for o in sess.get_outputs()]
    results = sess.run(names, feeds)
    out = {}
    for name, value in zip(names, results):
        if name in zm:
            labels = zm[name]
            value = np.array([[row[c] for c in labels] for row in value], dtype=np.float32)
        out[name] = np.asarray(value)
    return out


def encode_values(arr, dtype):
    flat = np.asarray(arr).reshape(-1)
    if dtype == "float32":
        vals = []
        for v in flat.astype(np.float32):
            v = float(v)
            vals.append("nan" if math.isnan(v) else v)
        return vals
    if dtype == "int64":
        return [int(v) for v in flat]
    if dtype == "string":
        return [str(v) for v in flat]
    raise ValueError(dtype)


def decode_values(values, shape, dtype):
    if dtype == "float32":
        vals = [float("nan") if v == "nan" else v for v in values]
        return np.asarray(vals, dtype=np.float32).reshape(shape)
    if dtype == "int64":
        return np.asarray(values, dtype=np.int64).reshape(shape)
    if dtype == "string":
        return np.asarray(values, dtype=object).reshape(shape)
    raise ValueError(dtype)


def ops_of(model):
    return sorted({(n.domain or "ai.onnx", n.op_type) for n in model.graph.node})


def generate(out_dir: Path, quiet=False):
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = {}
    for name, build in MODELS:
        onx, description, cases = build()
        if onx.producer_name == "skl2onnx":
            # skl2onnx names the graph with a random uuid; use the model name so that
            # regenerating gives byte-identical files.
            onx.graph.name = name
        onnx.checker.check_model(onx, full_check=True)
        path = out_dir / f"{name}.onnx"
        data = onx.SerializeToString()
        path.write_bytes(data)
        if len(data) > MAX_MODEL_BYTES:
            raise SystemExit(f"{name}.onnx is {len(data)} bytes, over the {MAX_MODEL_BYTES} limit")

        sess = make_session(str(path))
        inputs, outputs = io_spec(onx)
        in_dtype = {i["name"]: i["dtype"] for i in inputs}
        out_dtype = {o["name"]: o["dtype"] for o in outputs}
        ref_cases = []
        for feeds in cases:
            result = run_model(sess, onx, feeds)
            ref_cases.append(
                {
                    "inputs": {
                        k: {"shape": list(v.shape), "values": encode_values(v, in_dtype[k])}
                        for k, v in feeds.items()
                    },
                    "outputs": {
                        o["name"]: {
                            "shape": list(result[o["name"]].shape),
                            "values": encode_values(result[o["name"]], out_dtype[o["name"]]),
                        }
                        for o in outputs
                    },
                }
            )
        reference[name] = {
            "file": f"{name}.onnx",
            "description": description,
            "inputs": inputs,
            "outputs": outputs,
            "cases": ref_cases,
        }
        if not quiet:
            ops = " ".join(op if d == "ai.onnx" else f"{d}:{op}" for d, op in ops_of(onx))
            print(f"{name:20s} {len(data):7d} bytes  [{ops}]")
    with open(out_dir / "reference.json", "w") as f:
        json.dump(reference, f, indent=1, allow_nan=False)
        f.write("\n")
    return reference


# ---------------------------------------------------------------------------
# --check
# ---------------------------------------------------------------------------


def compare(got, want, dtype, tol):
    """None if equal within tolerance, else a short description of the mismatch."""
    if got.shape != want.shape:
        return f"shape {list(got.shape)} != {list(want.shape)}"
    if dtype == "float32":
        g = got.astype(np.float64)
        w = want.astype(np.float64)
        ok = np.isclose(g, w, rtol=tol, atol=tol, equal_nan=True)
        if not ok.all():
            i = int(np.argmin(ok.reshape(-1)))
            return (f"value[{i}] {float(g.reshape(-1)[i])!r} != {float(w.reshape(-1)[i])!r} "
                    f"(max abs diff {np.nanmax(np.abs(g - w)):.3g}, tol {tol})")
        return None
    if not np.array_equal(got, want):
        return f"{got.reshape(-1).tolist()} != {want.reshape(-1).tolist()}"
    return None


def check_committed(committed_dir: Path):
    """(b) The committed .onnx files + committed inputs reproduce the committed outputs."""
    errors = []
    ref_path = committed_dir / "reference.json"
    if not ref_path.exists():
        return [f"{ref_path} is missing"]
    with open(ref_path) as f:
        reference = json.load(f)
    expected_names = [n for n, _ in MODELS]
    missing = [n for n in expected_names if n not in reference]
    if missing:
        errors.append(f"reference.json lacks models: {missing}")
    for name, entry in reference.items():
        path = committed_dir / entry["file"]
        try:
            model = onnx.load(str(path))
            onnx.checker.check_model(model, full_check=True)
            sess = make_session(str(path))
        except Exception as exc:
            errors.append(f"{name}: {entry['file']} does not load: {exc}")
            continue
        if path.stat().st_size > MAX_MODEL_BYTES:
            errors.append(f"{name}: {entry['file']} is larger than {MAX_MODEL_BYTES} bytes")
        inputs, outputs = io_spec(model)
        if inputs != entry["inputs"] or outputs != entry["outputs"]:
            errors.append(f"{name}: graph inputs/outputs differ from reference.json")
        in_dtype = {i["name"]: i["dtype"] for i in entry["inputs"]}
        out_dtype = {o["name"]: o["dtype"] for o in entry["outputs"]}
        if len(entry["cases"]) != N_CASES_B1 + 1:
            errors.append(f"{name}: expected {N_CASES_B1 + 1} cases, found {len(entry['cases'])}")
        for ci, case in enumerate(entry["cases"]):
            feeds = {
                k: decode_values(v["values"], v["shape"], in_dtype[k])
                for k, v in case["inputs"].items()
            }
            result = run_model(sess, model, feeds)
            for oname, want in case["outputs"].items():
                w = decode_values(want["values"], want["shape"], out_dtype[oname])
                msg = compare(result[oname], w, out_dtype[oname], COMMITTED_TOL)
                if msg:
                    errors.append(f"{name} case {ci} output {oname}: {msg}")
    return errors


def check_retrained(fresh, committed_dir: Path):
    """(a) Freshly trained models' outputs vs committed reference.json (warnings only)."""
    warnings = []
    with open(committed_dir / "reference.json") as f:
        committed = json.load(f)
    for name, entry in fresh.items():
        if name not in committed:
            warnings.append(f"{name}: not in committed reference.json")
            continue
        old = committed[name]
        if len(old["cases"]) != len(entry["cases"]):
            warnings.append(f"{name}: case count differs")
            continue
        in_dtype = {i["name"]: i["dtype"] for i in entry["inputs"]}
        out_dtype = {o["name"]: o["dtype"] for o in entry["outputs"]}
        for ci, (new_case, old_case) in enumerate(zip(entry["cases"], old["cases"])):
            for k, v in new_case["inputs"].items():
                if k not in old_case["inputs"]:
                    warnings.append(f"{name} case {ci}: input {k} missing from committed")
                    continue
                o = old_case["inputs"][k]
                msg = compare(decode_values(v["values"], v["shape"], in_dtype[k]),
                              decode_values(o["values"], o["shape"], in_dtype[k]),
                              in_dtype[k], 0.0)
                if msg:
                    warnings.append(f"{name} case {ci} input {k}: {msg}")
            for k, v in new_case["outputs"].items():
                if k not in old_case["outputs"]:
                    warnings.append(f"{name} case {ci}: output {k} missing from committed")
                    continue
                o = old_case["outputs"][k]
                msg = compare(decode_values(v["values"], v["shape"], out_dtype[k]),
                              decode_values(o["values"], o["shape"], out_dtype[k]),
                              out_dtype[k], RETRAIN_TOL)
                if msg:
                    warnings.append(f"{name} case {ci} output {k}: {msg}")
    return warnings


def check(committed_dir: Path) -> int:
    print(f"versions: numpy {np.__version__}, scikit-learn {sklearn.__version__}, "
          f"skl2onnx {skl2onnx.__version__}, onnx {onnx.__version__}, "
          f"onnxruntime {ort.__version__}")
    tmp = Path(tempfile.mkdtemp(prefix="pipe-fixtures-"))
    try:
        print(f"regenerating into {tmp}")
        fresh = generate(tmp, quiet=True)
        if (committed_dir / "reference.json").exists():
            warnings = check_retrained(fresh, committed_dir)
            for w in warnings:
                print(f"WARNING (retrained model differs; not fatal): {w}", file=sys.stderr)
            if not warnings:
                print(f"ok: retrained models match the committed reference "
                      f"(tol {RETRAIN_TOL})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    errors = check_committed(committed_dir)
    if errors:
        print("FIXTURE CHECK FAILED: committed models do not reproduce reference.json:",
              file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        print("Regenerate with scripts/fixtures.sh and commit the result.", file=sys.stderr)
        return 1
    print(f"ok: all {len(MODELS)} committed models load in onnxruntime {ort.__version__} and "
          f"reproduce reference.json (tol {COMMITTED_TOL})")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help="fixture directory (default: fixtures/models)")
    ap.add_argument("--check", action="store_true",
                    help="verify the committed fixtures in --out instead of writing them")
    args = ap.parse_args(argv)
    if args.check:
        return check(args.out)
    generate(args.out)
    print(f"wrote {len(MODELS)} models and reference.json to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
