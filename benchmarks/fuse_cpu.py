"""Fuse time of one 640x480 IVF pair on CPU: dig2dig's defaults vs DDFM's algorithm in PyTorch eager.

dig2dig: ``dig2dig.runtime.bench.run_bench`` at ivf's defaults on onnxruntime (stages: UNet,
DIG, guidance, io, other). Baseline, in the same run: DDFM's loop (``ddfm_torch.py``: 100 DDIM
steps, EM guidance with static weights) on the same prior's weights in PyTorch eager, timed from
reading the pair to the uint8 image (DDFM's min-max stretch). Both use one thread per logical
core and get a warm-up first (dig2dig a whole fusion, the baseline one UNet call).

    python benchmarks/fuse_cpu.py --runs 3 --ddfm-runs 1
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from dig2dig.export.checkpoint import load_config, load_model
from dig2dig.runtime import api
from dig2dig.runtime.bench import run_bench, summarize
from dig2dig.runtime.settings import resolve

from ddfm_torch import sample as ddfm_sample
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "default"
PAIR = ROOT.parent / "shared" / "data" / "ivf" / "TNO"


def ddfm_fuse(net: torch.nn.Module, a: Path, b: Path, steps: int, multiple: int, seed: int = 3407) -> np.ndarray:
    """Read the pair, run DDFM's loop, stretch min-max to uint8 (DDFM's sample.py) at the input size."""
    sources = api.prepare_sources([a, b])
    luma = np.stack([s.luma for s in sources]) * 2.0 - 1.0
    height, width = luma.shape[1:]
    padded = torch.from_numpy(api.pad_to_multiple(luma, multiple).astype(np.float32))
    generator = torch.Generator().manual_seed(seed)
    x_T = torch.randn((1, 1) + tuple(padded.shape[1:]), generator=generator)
    fused = ddfm_sample(net, padded[1][None, None], padded[0][None, None], x_T, steps)[0, 0, :height, :width]
    fused = (fused - fused.min()) / (fused.max() - fused.min())
    return np.round(fused.numpy() * 255).astype(np.uint8)


def time_ddfm(a: Path, b: Path, steps: int, runs: int) -> List[float]:
    """Seconds of ``runs`` DDFM fusions after a one-call UNet warm-up."""
    net = load_model(MODEL_DIR / "weights.safetensors", load_config(MODEL_DIR / "config.json"))
    multiple = net.downsample_factor
    height, width = api.prepare_sources([a, b])[0].luma.shape
    with torch.inference_mode():
        net(torch.zeros(1, 1, height + -height % multiple, width + -width % multiple), torch.zeros(1))
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        ddfm_fuse(net, a, b, steps, multiple)
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", type=Path, default=PAIR / "a" / "10.png", help="infrared (default: TNO 10, 640x480)")
    parser.add_argument("--b", type=Path, default=PAIR / "b" / "10.png", help="visible")
    parser.add_argument("--runs", type=int, default=3, help="timed dig2dig fusions")
    parser.add_argument("--ddfm-runs", type=int, default=1, help="timed DDFM fusions")
    parser.add_argument("--ddfm-steps", type=int, default=100)
    args = parser.parse_args()
    if args.runs < 1 or args.ddfm_runs < 1:
        parser.error("--runs and --ddfm-runs must be at least 1")
    torch.set_num_threads(os.cpu_count() or 1)

    ours = run_bench(args.a, args.b, task="ivf", settings=resolve("ivf"), runs=args.runs)
    ddfm: Dict[str, float] = summarize(time_ddfm(args.a, args.b, args.ddfm_steps, args.ddfm_runs))
    total = ours["stages"]["total"]["median"]
    print(f"Fuse time on CPU, {args.a} + {args.b}")
    print(machine_line())
    print()
    print("dig2dig defaults, onnxruntime:")
    print(ours["table"])
    print()
    print(f"DDFM algorithm, PyTorch eager, {args.ddfm_steps} steps, static weights, {args.ddfm_runs} runs "
          f"after a warm-up: median {ddfm['median']:.2f} s, p90 {ddfm['p90']:.2f} s")
    print()
    print(f"**Headline: DDFM-torch {args.ddfm_steps} steps {ddfm['median']:.2f} s / dig2dig defaults {total:.2f} s "
          f"= {ddfm['median'] / total:.1f}x** (medians)")


if __name__ == "__main__":
    main()
