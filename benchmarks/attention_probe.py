"""Would onnxruntime's fused attention make a UNet evaluation faster on the CPU?

Rewrites the shipped prior's one attention block (the middle block: q^T k, softmax, v w^T as MatMul,
Softmax and MatMul nodes) into onnxruntime's contrib ``com.microsoft.MultiHeadAttention`` on the same
q, k and v (transposed to tokens-first), then times both models at 640x480 and 256x256, batch 1,
alternating call by call after a warm-up, and prints the medians and the largest output difference.
A probe: the rewritten file is written to a temporary folder and not kept (TensorRT would not parse the
contrib operator).

    python benchmarks/attention_probe.py --runs 7
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import List

import numpy as np
import onnx
import onnx.helper as helper
import onnxruntime as ort

from dig2dig.runtime import api
from dig2dig.runtime.backends.base import INPUT_T, INPUT_X, OUTPUT_Y

from machine import machine_line

BLOCK = "/model/middle_block/middle_block.1/"  # the exported attention block's node-name prefix
Q, K, V = (BLOCK + name for name in ("Slice_output_0", "Slice_1_output_0", "Slice_2_output_0"))
FIRST, LAST = BLOCK + "Mul_2_output_0", BLOCK + "MatMul_1_output_0"  # q * scale ... v @ w^T


def fused_attention(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with the nodes from q's scaling to the attention output replaced by MultiHeadAttention."""
    nodes = list(model.graph.node)
    first = next(i for i, node in enumerate(nodes) if node.output[0] == FIRST)
    last = next(i for i, node in enumerate(nodes) if node.output[0] == LAST)
    new = [helper.make_node("Transpose", [name], [name + "_T"], perm=[0, 2, 1]) for name in (Q, K, V)]
    new += [helper.make_node("MultiHeadAttention", [Q + "_T", K + "_T", V + "_T"], [BLOCK + "mha"],
                             domain="com.microsoft", num_heads=1),
            helper.make_node("Transpose", [BLOCK + "mha"], [LAST], perm=[0, 2, 1])]
    del model.graph.node[:]
    model.graph.node.extend(nodes[:first] + new + nodes[last + 1:])
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return model


def session(path: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    shipped = str(api.default_model())
    with tempfile.TemporaryDirectory() as folder:
        rewritten = str(Path(folder) / "fused_attention.onnx")
        onnx.save(fused_attention(onnx.load(shipped)), rewritten)
        sessions = [session(shipped), session(rewritten)]
    print(f"{shipped}; {machine_line()}")
    print()
    print("| input (N, W x H) | MatMul/Softmax median ms | MultiHeadAttention median ms | ratio | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    for height, width in ((480, 640), (256, 256)):
        feed = {INPUT_X: np.random.default_rng(0).standard_normal((1, 1, height, width), dtype=np.float32),
                INPUT_T: np.array([500.0], np.float32)}
        outputs = [s.run([OUTPUT_Y], feed)[0] for s in sessions]
        seconds: List[List[float]] = [[], []]
        for _ in range(args.runs):
            for s, times in zip(sessions, seconds):
                start = time.perf_counter()
                s.run([OUTPUT_Y], feed)
                times.append(time.perf_counter() - start)
        plain, fused = (1e3 * float(np.median(times)) for times in seconds)
        print(f"| 1, {width}x{height} | {plain:.1f} | {fused:.1f} | {plain / fused:.2f} | "
              f"{float(np.abs(outputs[0] - outputs[1]).max()):.1e} |")


if __name__ == "__main__":
    main()
