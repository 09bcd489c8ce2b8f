#!/usr/bin/env python3
"""The ONNX Runtime peer of `cargo xtask bench-qsimd`.

Builds an ONNX graph from the Q-SIMD engine's own graph export
(GRAPH.graph.json, written by the xtask from the dgms-arch description)
and its decoded f32 weights (GRAPH.weights.safetensors), checks that
onnxruntime's logits on the benchmark input match the exact engine's
(`__input`, `__logits` in the weights file), and times one image (batch 1)
on the CPU provider with `--threads` intra-op threads, one inter-op thread
and all graph optimisations. Prints one JSON line:
{"ort_version", "ort_ms", "max_rel_diff"}.

Each conv of the export carries the engine's fused output stage
act(conv(x) * scale + shift + residual); the graph folds scale into the
conv's weights and shift into its bias (what ORT's own Conv+BatchNorm
fusion does), then Add and Relu / Clip(0, 6).

With --profile DIR, also runs ORT's profiler over the timed runs and
prints the median per-node time (node names are the engine's op names).

Needs numpy, onnx and onnxruntime; not torch.
"""

import argparse
import json
import os
import statistics
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def read_safetensors(path):
    """The F32 tensors of a safetensors file, as numpy arrays."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, expected F32")
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
    return out


def build(graph, w, classes):
    """The ONNX model of the exported graph (batch 1, `classes` logits)."""
    nodes, inits = [], []

    def init(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    for op in graph["ops"]:
        kind, name, x, y = op["op"], op["name"], op["input"], op["output"]
        if kind == "conv":
            weight = w[op["weight"]].astype(np.float32)
            out_c = weight.shape[0]
            scale = w[op["scale"]] if op["scale"] else np.ones(out_c, np.float32)
            shift = w[op["shift"]] if op["shift"] else np.zeros(out_c, np.float32)
            wn = init(name + ".w", weight * scale.reshape(-1, 1, 1, 1))
            bn = init(name + ".b", shift)
            k, p = op["kernel"], op["pad"]
            tail = []
            if op["residual"]:
                tail.append(("Add", [op["residual"]]))
            if op["activation"] == "relu":
                tail.append(("Relu", []))
            elif op["activation"] == "relu6":
                lo, hi = init(name + ".lo", np.array(0.0)), init(name + ".hi", np.array(6.0))
                tail.append(("Clip", [lo, hi]))
            conv_out = y if not tail else name + ".conv"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, wn, bn],
                    [conv_out],
                    name=name,
                    kernel_shape=[k, k],
                    strides=[op["stride"]] * 2,
                    pads=[p] * 4,
                    group=op["groups"],
                )
            )
            prev = conv_out
            for i, (t, extra) in enumerate(tail):
                out = y if i == len(tail) - 1 else f"{name}.{t.lower()}"
                nodes.append(helper.make_node(t, [prev] + extra, [out], name=f"{name}.{t.lower()}"))
                prev = out
        elif kind == "max_pool":
            p = op["pad"]
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [x],
                    [y],
                    name=name,
                    kernel_shape=[op["kernel"]] * 2,
                    strides=[op["stride"]] * 2,
                    pads=[p] * 4,
                )
            )
        elif kind == "global_avg_pool":
            nodes.append(helper.make_node("GlobalAveragePool", [x], [y], name=name))
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [y], name=name, axis=1))
        elif kind == "linear":
            wn, bn = init(name + ".w", w[op["weight"]]), init(name + ".b", w[op["bias"]])
            # The engine's classifier takes features x 1 x 1 (after the
            # global pool): flatten first (a no-op on N x features).
            flat = name + ".flatten"
            nodes.append(helper.make_node("Flatten", [x], [flat], name=flat, axis=1))
            nodes.append(helper.make_node("Gemm", [flat, wn, bn], [y], name=name, transB=1))
        else:
            raise SystemExit(f"no ONNX node for op {kind!r} ({name})")
    c, h, wd = graph["input_shape"]
    g = helper.make_graph(
        nodes,
        graph["arch"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c, h, wd])],
        [helper.make_tensor_value_info(graph["output"], TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(model, threads, profile_dir=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if profile_dir:
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(profile_dir, "ort-profile")
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def time_ms(run):
    """Median wall time in ms: warm-up for about 0.2 s (at least one run),
    then at least 5 and at most 200 timed runs, stopping after about 1 s
    (the policy of the xtask's own timer)."""
    start = time.perf_counter()
    run()
    while time.perf_counter() - start < 0.2:
        run()
    times, start = [], time.perf_counter()
    while len(times) < 5 or (len(times) < 200 and time.perf_counter() - start < 1.0):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def print_profile(path):
    """Median per-node time over the profiled runs, slowest first (stderr)."""
    with open(path) as f:
        events = json.load(f)
    per_node = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"][: -len("_kernel_time")]
            per_node.setdefault(node, []).append(e["dur"] / 1e3)
    rows = [(n, statistics.median(v), len(v)) for n, v in per_node.items()]
    print("node\tmedian_ms\truns", file=sys.stderr)
    for n, ms, runs in rows:
        print(f"{n}\t{ms:.4f}\t{runs}", file=sys.stderr)
    total = sum(ms for _, ms, _ in rows)
    print(f"total\t{total:.4f}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--graph", required=True, help="path without .graph.json / .weights.safetensors")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", metavar="DIR", help="write ORT's profile to DIR and summarise it")
    args = ap.parse_args()
    with open(args.graph + ".graph.json") as f:
        graph = json.load(f)
    weights = read_safetensors(args.graph + ".weights.safetensors")
    model = build(graph, weights, weights["__logits"].shape[1])
    sess = session(model, args.threads, args.profile)
    x = np.ascontiguousarray(weights["__input"])
    (logits,) = sess.run(None, {"input": x})
    ref = weights["__logits"]
    max_rel_diff = float(np.abs(logits - ref).max() / max(np.abs(ref).max(), 1e-30))
    ms = time_ms(lambda: sess.run(None, {"input": x}))
    if args.profile:
        print_profile(sess.end_profiling())
    print(json.dumps({"ort_version": ort.__version__, "ort_ms": ms, "max_rel_diff": max_rel_diff}))


if __name__ == "__main__":
    main()
