"""The INT8 model against the FP32 prior on CPU: one UNet evaluation's latency and the x0 estimate's PSNR per t.

Writes the INT8 model with ``dig2dig export int8`` (``calibration/ort_int8.py``) from the shipped prior,
calibrated on the prior's training images, unless ``--int8`` names one. Latency: ``OrtRunner`` at
batch 1 and 5 (the CPU runner's default, one image per session run) and 640x480, warm-up calls, then
``--runs`` timed calls alternating between the two models; median and p90 in ms. PSNR: the crops and
noise of ``prior_psnr.py`` for both models. Per-fusion time and memory: ``speed_cpu.py "model=PATH"``.

    python benchmarks/int8_cpu.py --runs 7
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from dig2dig.calibration.ort_int8 import quantize_int8
from dig2dig.runtime import api
from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.bench import summarize

from machine import machine_line
from prior_psnr import evaluate
from sweeps import ROOT

CASES = ((1, 480, 640), (5, 480, 640))
TIMESTEP = 500.0


def latency(models: Dict[str, str], warmup: int, runs: int) -> Dict[str, Dict[tuple, List[float]]]:
    """Seconds per call of each model at each case, the models alternating call by call."""
    runners = {name: OrtRunner(path) for name, path in models.items()}
    seconds: Dict[str, Dict[tuple, List[float]]] = {name: {case: [] for case in CASES} for name in models}
    rng = np.random.default_rng(0)
    for case in CASES:
        n, height, width = case
        x = rng.standard_normal((n, 1, height, width), dtype=np.float32)
        t = np.full(n, TIMESTEP, np.float32)
        for runner in runners.values():
            for _ in range(warmup):
                runner.denoise(x, t)
        for _ in range(runs):
            for name, runner in runners.items():
                start = time.perf_counter()
                runner.denoise(x, t)
                seconds[name][case].append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--int8", type=Path, help="INT8 model (default: written to runs/int8/model_int8.onnx)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    int8 = args.int8 or ROOT / "runs" / "int8" / "model_int8.onnx"
    if args.int8 is None and not int8.is_file():
        print(quantize_int8(api.default_model(), int8, args.data / "train").summary())
    models = {"fp32": str(api.default_model()), "int8": str(int8)}
    print(f"{int8}; {machine_line()}")
    print()
    seconds = latency(models, args.warmup, args.runs)
    print("| input (N, W x H) | FP32 median ms | FP32 p90 ms | INT8 median ms | INT8 p90 ms | FP32 / INT8 |")
    print("|---|---:|---:|---:|---:|---:|")
    for case in CASES:
        stats = {name: summarize(seconds[name][case]) for name in models}
        ms = {name: (1e3 * stats[name]["median"], 1e3 * stats[name]["p90"]) for name in models}
        print(f"| {case[0]}, {case[2]}x{case[1]} | {ms['fp32'][0]:.1f} | {ms['fp32'][1]:.1f} "
              f"| {ms['int8'][0]:.1f} | {ms['int8'][1]:.1f} "
              f"| {stats['fp32']['median'] / stats['int8']['median']:.2f} |")
    print()
    rows = {name: evaluate(path, args.data) for name, path in models.items()}
    print("| t | FP32 x0 PSNR (dB) | INT8 x0 PSNR (dB) | INT8 - FP32 (dB) | best blur (dB) |")
    print("|---|---:|---:|---:|---:|")
    for fp32, quantized in zip(rows["fp32"], rows["int8"]):
        print(f"| {fp32['t']} | {fp32['model_psnr']:.2f} | {quantized['model_psnr']:.2f} | "
              f"{quantized['model_psnr'] - fp32['model_psnr']:+.2f} | {fp32['blur_psnr']:.2f} |")


if __name__ == "__main__":
    main()
