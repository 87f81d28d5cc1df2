"""One UNet evaluation of the shipped prior on CPU: onnxruntime vs PyTorch eager, same run.

Shapes: 256x256 and 640x480 at batch 1 (one plain sampler step) and 640x480 at batch 5 (a DIG
refresh: x_t plus both sources noised to t and t'). onnxruntime runs ``OrtRunner`` (all graph
optimisations) and PyTorch the same weights in ``torch.inference_mode()``, both with one intra-op
thread per logical core. Each case gets warm-up calls, then ``--runs`` timed calls; median and
p90 in milliseconds, plus the largest output difference between the two.

    python benchmarks/cpu_latency.py --runs 10
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch

from dig2dig.export.checkpoint import load_config, load_model
from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.bench import summarize

from machine import machine_line

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
# (batch, height, width)
CASES = ((1, 256, 256), (1, 480, 640), (5, 480, 640))
TIMESTEP = 500.0


def time_calls(call: Callable[..., np.ndarray], args: Sequence[Any], warmup: int,
               runs: int) -> Tuple[List[float], np.ndarray]:
    """Seconds of ``runs`` calls ``call(*args)`` after ``warmup`` untimed ones, and the last output."""
    for _ in range(warmup):
        out = call(*args)
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        out = call(*args)
        seconds.append(time.perf_counter() - start)
    return seconds, out


def measure(model_dir: Path, threads: int, warmup: int, runs: int) -> List[Dict[str, float]]:
    """One row per case: ORT and torch median/p90 (ms) and their max |output difference|."""
    runner = OrtRunner(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"], threads=threads)
    torch.set_num_threads(threads)
    net = load_model(model_dir / "weights.safetensors", load_config(model_dir / "config.json"))
    rows = []
    for batch, height, width in CASES:
        x = np.random.default_rng(0).standard_normal((batch, 1, height, width), dtype=np.float32)
        t = np.full(batch, TIMESTEP, np.float32)
        ort_s, ort_out = time_calls(runner.denoise, (x, t), warmup, runs)
        with torch.inference_mode():
            torch_s, torch_out = time_calls(lambda a, b: net(a, b).numpy(), (torch.from_numpy(x), torch.from_numpy(t)),
                                            warmup, runs)
        ort_stats = {k: 1000 * v for k, v in summarize(ort_s).items()}
        torch_stats = {k: 1000 * v for k, v in summarize(torch_s).items()}
        rows.append({"batch": batch, "height": height, "width": width,
                     "ort_median": ort_stats["median"], "ort_p90": ort_stats["p90"],
                     "torch_median": torch_stats["median"], "torch_p90": torch_stats["p90"],
                     "max_diff": float(np.abs(ort_out - torch_out).max())})
    return rows


def format_table(rows: List[Dict[str, float]], threads: int, warmup: int, runs: int) -> str:
    lines = [f"UNet forward, shipped prior; {threads} threads; {warmup} warm-up + {runs} timed calls",
             machine_line(), "",
             "| input (N, W x H) | ORT median ms | ORT p90 ms | torch median ms | torch p90 ms | torch / ORT "
             "| max abs diff |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['batch']}, {r['width']}x{r['height']} | {r['ort_median']:.1f} | {r['ort_p90']:.1f} "
                     f"| {r['torch_median']:.1f} | {r['torch_p90']:.1f} | {r['torch_median'] / r['ort_median']:.2f} "
                     f"| {r['max_diff']:.1e} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=MODEL_DIR,
                        help="folder with model.onnx, weights.safetensors and config.json")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 5:
        parser.error("--runs must be at least 5")
    rows = measure(args.model_dir, args.threads, args.warmup, args.runs)
    print(format_table(rows, args.threads, args.warmup, args.runs))


if __name__ == "__main__":
    main()
