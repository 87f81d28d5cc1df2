"""Where one UNet evaluation spends its time in onnxruntime on the CPU: kernel time per operator type.

Runs the model (default: the shipped prior) on one random input with onnxruntime's profiler on and sums
the kernel times of the calls (the first, a warm-up, included) by operator type (the graph as onnxruntime
optimised it: fused and layout-converted nodes count under their own names). The profiler's own cost
inflates some operators (a few long kernels less than many short ones); use it for shares, and
``cpu_latency.py`` for wall time.

    python benchmarks/ort_profile.py --size 640x480 --runs 4
    python benchmarks/ort_profile.py --model runs/int8/model_int8.onnx
"""
from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from dig2dig.runtime import api
from dig2dig.runtime.backends.base import INPUT_T, INPUT_X

from machine import machine_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="ONNX model (default: the shipped prior)")
    parser.add_argument("--size", default="640x480", help="W x H of the input (default 640x480)")
    parser.add_argument("--runs", type=int, default=4, help="profiled calls")
    parser.add_argument("--timestep", type=float, default=500.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    model = str(args.model or api.default_model())
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.enable_profiling = True
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    channels = session.get_inputs()[0].shape[1]
    feed = {INPUT_X: np.random.default_rng(0).standard_normal((1, channels, height, width), dtype=np.float32),
            INPUT_T: np.array([args.timestep], np.float32)}
    for _ in range(args.runs):
        session.run(None, feed)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    micros: collections.Counter = collections.Counter()
    nodes: collections.Counter = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            micros[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    calls = args.runs
    total = sum(micros.values())
    print(f"{model}, 1x{channels}x{height}x{width}, {calls} profiled calls; {machine_line()}")
    print()
    print("| operator | nodes | ms per call | share |")
    print("|---|---:|---:|---:|")
    for name, value in micros.most_common():
        if value / total >= 0.005:
            print(f"| {name} | {nodes[name] // calls} | {value / calls / 1e3:.1f} | {100 * value / total:.1f}% |")
    print(f"| all | {sum(nodes.values()) // calls} | {total / calls / 1e3:.1f} | 100% |")


if __name__ == "__main__":
    main()
