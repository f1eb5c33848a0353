#!/usr/bin/env python3
"""Per-inference latency of onnxruntime on the fixture models, as a baseline for pipe's runtime.

For every model in fixtures/models/reference.json: one CPU session with one intra-op and one
inter-op thread and sequential execution, fed the model's first batch-1 reference case;
`--warmup` untimed runs, then `--iterations` runs each timed with time.perf_counter_ns.
Prints one JSON object:

    {"onnxruntime_version": "...", "iterations": N, "warmup": W,
     "models": {"<name>": {"median_us": ..., "p90_us": ...}},
     "identity_baseline": {"median_us": ..., "p90_us": ...}}

`identity_baseline` times a one-node Identity model on a [1, 1] tensor the same way: it is the
cost of a Python `sess.run` call that does no work, which a caller from Rust or C would not pay.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = REPO_ROOT / "fixtures" / "models"
NP_DTYPE = {"float32": np.float32, "int64": np.int64, "string": object}


def decode(spec, dtype):
    values = spec["values"]
    if dtype == "float32":
        values = [float("nan") if v == "nan" else v for v in values]
    return np.asarray(values, dtype=NP_DTYPE[dtype]).reshape(spec["shape"])


def first_batch1_case(entry):
    for case in entry["cases"]:
        if all(v["shape"] and v["shape"][0] == 1 for v in case["inputs"].values()):
            return case
    return entry["cases"][0]


def identity_model_bytes():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def bench(path, feeds, iterations, warmup):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    source = path if isinstance(path, bytes) else str(path)
    sess = ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    for _ in range(warmup):
        sess.run(names, feeds)
    samples = np.empty(iterations, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        t0 = clock()
        sess.run(names, feeds)
        samples[i] = clock() - t0
    us = samples / 1000.0
    return {
        "median_us": round(float(np.percentile(us, 50)), 3),
        "p90_us": round(float(np.percentile(us, 90)), 3),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="fixture directory")
    ap.add_argument("-n", "--iterations", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("models", nargs="*", help="only these models (default: all)")
    args = ap.parse_args(argv)

    with open(args.dir / "reference.json") as f:
        reference = json.load(f)
    names = args.models or list(reference)
    result = {
        "onnxruntime_version": ort.__version__,
        "iterations": args.iterations,
        "warmup": args.warmup,
        "models": {},
    }
    for name in names:
        entry = reference[name]
        dtypes = {i["name"]: i["dtype"] for i in entry["inputs"]}
        case = first_batch1_case(entry)
        feeds = {k: decode(v, dtypes[k]) for k, v in case["inputs"].items()}
        result["models"][name] = bench(args.dir / entry["file"], feeds, args.iterations,
                                       args.warmup)
    result["identity_baseline"] = bench(identity_model_bytes(),
                                        {"x": np.zeros((1, 1), dtype=np.float32)},
                                        args.iterations, args.warmup)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
