"""Why DIG needs a normalisation: the size of the gains, and the weights each normalisation makes.

Dig2DIG writes the fusion weights as a plain softmax of the gains, w_k = exp(DIG_k) / sum_j exp(DIG_j)
(Cao et al. 2025, Sec. 3). Our gains are squared errors in model units ([-1, 1] images), so their
size decides how far such weights get from uniform. This script fuses the quality sweep's pairs
(``--pairs-per-task`` per task, long side ``--max-side``) with the per-task defaults, keeps every
DIG refresh, and prints per task:

* the gains' scale: the median over refreshes of the RMS spread between sources (what our
  temperature divides by) and the largest absolute gain seen;
* for three normalisations of the same gains, how far the weights of source A get from uniform
  (mean and 99th percentile of |w_A - 1/2| over pixels and refreshes):
  ``literal`` — softmax of the raw gains (temperature 1, the paper's formula as written);
  ``spread`` — ours: temperature = tau x the RMS spread (``kernels/dig.py``), tau per task;
  ``per-pixel`` — softmax of the gains divided by the pixel's own sum of |gains| (scale-free per
  pixel; an alternative we considered).

    python benchmarks/dig_scale.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from dig2dig.runtime import api
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.settings import TASKS, resolve
from machine import machine_line
from sweeps import select_pairs

ROOT = Path(__file__).resolve().parents[1]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over axis 0 (the sources), in float64."""
    z = np.exp(logits - logits.max(axis=0))
    return z / z.sum(axis=0)


def deviations(refresh: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """|w_A - 1/2| per pixel for each normalisation of one refresh's gains ``(2, H, W)``; "spread" are
    the weights the sampler used."""
    g = np.asarray(refresh["gains"], np.float64)
    per_pixel = np.abs(g).sum(axis=0) + 1e-12
    weights = {"literal": softmax(g), "spread": np.asarray(refresh["weights"], np.float64),
               "per-pixel": softmax(g / per_pixel)}
    return {name: np.abs(w[0] - 0.5).ravel() for name, w in weights.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pairs-per-task", type=int, default=3)
    parser.add_argument("--max-side", type=int, default=256)
    args = parser.parse_args()
    pairs = select_pairs(evaluation.find_pairs(args.data), args.pairs_per_task)
    runner = api.open_runner()
    print(f"Machine: {machine_line()}\n")
    print("| task | pairs | refreshes | RMS spread of gains (median) | max abs gain | "
          "literal: mean / p99 abs(w_A - 1/2) | spread (ours): mean / p99 | per-pixel: mean / p99 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for task in TASKS:
            chosen = [evaluation.downscale_pair(p, scratch, args.max_side) for p in pairs if p.task == task]
            settings = resolve(task)
            spreads: List[float] = []
            peak = 0.0
            devs: Dict[str, List[np.ndarray]] = {"literal": [], "spread": [], "per-pixel": []}
            for pair in chosen:
                result = api.fuse(pair.a, pair.b, task=task, settings=settings, runner=runner)
                for refresh in result.trace.refreshes:
                    gains = np.asarray(refresh["gains"], np.float64)
                    spreads.append(float(np.sqrt(np.mean((gains - gains.mean(axis=0)) ** 2))))
                    peak = max(peak, float(np.abs(gains).max()))
                    for name, dev in deviations(refresh).items():
                        devs[name].append(dev)
            cells = [f"{np.mean(np.concatenate(d)):.2e} / {np.percentile(np.concatenate(d), 99):.2e}"
                     for d in devs.values()]
            print(f"| {task} | {len(chosen)} | {len(spreads)} | {np.median(spreads):.2e} | {peak:.2e} | "
                  + " | ".join(cells) + " |", flush=True)
    runner.close()


if __name__ == "__main__":
    main()
