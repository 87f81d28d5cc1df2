"""How far the temporal mode's scene-change distance moves under sensor noise, a pan and a cut.

For the first ``--pairs`` ivf pairs of the development set whose images are at least 336 px wide, the
distance ``runtime.temporal.scene_distance`` between the 32-px thumbnails of two 320x240 frames:
the same window with independent sensor noise (sigma 1.5 grey levels), the window moved 16 px to the right,
and a cut to the next pair. Prints min / median / max of each, against the threshold ``SCENE_CHANGE``.

    python benchmarks/scene_change.py --data ../shared/data
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.temporal import SCENE_CHANGE, scene_distance, thumbnail

from machine import machine_line
from stream import noisy

WIDTH, HEIGHT, PAN, SIGMA = 320, 240, 16, 1.5


def window(pair: evaluation.Pair, x: int) -> List[np.ndarray]:
    """The pair's grey images, the 320x240 window at column ``x`` (uint8)."""
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[:HEIGHT, x:x + WIDTH] for path in (pair.a, pair.b)]


def large_enough(pair: evaluation.Pair) -> bool:
    """Whether the pair holds a 320x240 window panned 16 px."""
    height, width = cv2.imread(str(pair.a), cv2.IMREAD_GRAYSCALE).shape
    return height >= HEIGHT and width >= WIDTH + PAN


def thumb(images: List[np.ndarray]) -> np.ndarray:
    return thumbnail([image.astype(np.float32) / 255 for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=15)
    args = parser.parse_args()
    pairs = [p for p in evaluation.find_pairs(args.data, task="ivf") if large_enough(p)][:args.pairs + 1]
    rng = np.random.default_rng(0)
    distances: Dict[str, List[float]] = {"sensor noise": [], f"{PAN}-px pan": [], "cut to the next pair": []}
    for pair, following in zip(pairs[:-1], pairs[1:]):
        base = window(pair, 0)
        key = thumb([noisy(image, SIGMA, rng) for image in base])
        distances["sensor noise"].append(scene_distance(key, thumb([noisy(image, SIGMA, rng) for image in base])))
        distances[f"{PAN}-px pan"].append(scene_distance(key, thumb(window(pair, PAN))))
        distances["cut to the next pair"].append(scene_distance(key, thumb(window(following, 0))))
    print(f"{len(pairs) - 1} ivf pairs, {WIDTH}x{HEIGHT} frames, threshold {SCENE_CHANGE}; {machine_line()}")
    print()
    print("| change | min | median | max |")
    print("|---|---:|---:|---:|")
    for name, values in distances.items():
        print(f"| {name} | {min(values):.4f} | {float(np.median(values)):.4f} | {max(values):.4f} |")


if __name__ == "__main__":
    main()
