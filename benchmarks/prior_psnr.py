"""Does the prior denoise? PSNR of its x0 estimate vs the best Gaussian-blur denoiser, per t.

32 fixed 128x128 luminance crops (16 from ``data/ivf``, 16 from ``data/mif``; never training
images) are noised to x_t = sqrt(abar) x0 + sqrt(1 - abar) eps with a fixed seed. The model's
estimate is x0 = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar), clipped to [-1, 1]. The baseline is
blur(x_t) / sqrt(abar), clipped, with the blur width chosen per t to maximise the mean PSNR on these
same crops (an oracle-tuned baseline). PSNR over the [-1, 1] range (peak-to-peak 2).

    python benchmarks/prior_psnr.py --model models/default/model.onnx --data ../shared/data
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List

import cv2
import numpy as np

from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.schedule import alphas_cumprod

TIMESTEPS = (100, 300, 500, 700, 900)
CROP = 128
BLUR_SIGMAS = (0.0, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 48.0, 64.0)


def fixed_crops(data: Path, per_task: int = 16, seed: int = 0) -> np.ndarray:
    """``2 * per_task`` crops in [-1, 1] from ivf and mif pairs (A and B images alternately)."""
    rng = np.random.default_rng(seed)
    with open(data / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    crops = []
    for task in ("ivf", "mif"):
        pairs = [r for r in rows if r["task"] == task]
        for i, row in enumerate(rng.choice(len(pairs), per_task, replace=False)):
            path = data / pairs[row][("a_path", "b_path")[i % 2]]
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 127.5 - 1.0
            y = rng.integers(img.shape[0] - CROP + 1)
            x = rng.integers(img.shape[1] - CROP + 1)
            crops.append(img[y:y + CROP, x:x + CROP])
    return np.stack(crops)[:, None]


def psnr(estimate: np.ndarray, truth: np.ndarray) -> float:
    """Mean over images of the PSNR with peak-to-peak 2 (the [-1, 1] range)."""
    mse = np.mean((estimate - truth) ** 2, axis=(1, 2, 3))
    return float(np.mean(10 * np.log10(4.0 / mse)))


def blur(images: np.ndarray, sigma: float) -> np.ndarray:
    if sigma == 0:
        return images
    return np.stack([cv2.GaussianBlur(im[0], (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[None] for im in images])


def evaluate(model: str, data: Path, batch: int = 8) -> List[Dict[str, float]]:
    runner = OrtRunner(model)
    abar_all = alphas_cumprod(runner.info.schedule)
    x0 = fixed_crops(data)
    rows = []
    for t in TIMESTEPS:
        abar = float(abar_all[t])
        noise = np.random.default_rng(t).standard_normal(x0.shape).astype(np.float32)
        xt = (np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise).astype(np.float32)
        eps = np.concatenate([runner.denoise(xt[i:i + batch], np.full(len(xt[i:i + batch]), t, np.float32))
                              for i in range(0, len(xt), batch)])[:, :1]
        model_x0 = np.clip((xt - np.sqrt(1 - abar) * eps) / np.sqrt(abar), -1, 1)
        blur_scores = {s: psnr(np.clip(blur(xt, s) / np.sqrt(abar), -1, 1), x0) for s in BLUR_SIGMAS}
        best_sigma = max(blur_scores, key=blur_scores.__getitem__)
        rows.append({"t": t, "model_psnr": psnr(model_x0, x0), "blur_psnr": blur_scores[best_sigma],
                     "blur_sigma": best_sigma})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="dig2dig ONNX model")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()
    rows = evaluate(args.model, args.data)
    print("| t | prior x0 PSNR (dB) | best blur PSNR (dB) | blur sigma (px) | margin (dB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['t']} | {r['model_psnr']:.2f} | {r['blur_psnr']:.2f} | {r['blur_sigma']} | "
              f"{r['model_psnr'] - r['blur_psnr']:+.2f} |")


if __name__ == "__main__":
    main()
