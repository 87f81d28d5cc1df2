"""What DDFM's EM step does to DIG's weights: the fused image is a per-pixel blend of the sources, and
DDFM's EM step pulls that blend toward the middle.

DDFM's ``EM_onestep`` (Zhao et al. 2023; ``kernels/em.py``) writes the estimate as X = f - V and
solves X = (2 C Y + rho (Y - H)) / (2 C + 2 D + rho), Y = I - V, with C ~ 1 / |I - f| and
D ~ 1 / |f - V| from the E-step. With rho (0.001) far below C and D, F = I - X is
(D I + C V) / (C + D): a convex blend of the sources in which each source's pull grows with f's
distance from it, so wherever x0 nears one source the step moves F toward the other. The estimate
that the definition X = f - V gives back, f = X + V = (C I + D V) / (C + D), pulls each source harder
as f nears it (iteratively reweighted least squares for |f - I| + |f - V|). ``I - X`` mirrors it between
the sources. With DIG's weights w_I, w_V on the pulls and a the fraction of I in x0, DDFM's step
returns the fraction w_I (1 - a) / (w_I (1 - a) + w_V a) (exactly 1/2 when a = w_I), the unmirrored
one w_I a / (w_I a + w_V (1 - a)) (fixed points 0 and 1 only: it locks onto a source), both up to
the ratio of the two E-step taus and DDFM's clamp D <= 2 C. This script fuses pairs with DIG both
ways and prints, per task (luminance, 0..255):

* Qabf / VIFF / SSIM of DIG with DDFM's step (``ddfm``: I - X at the task's defaults, which include our
  E-step window and power; ``em_power=1`` is the step analysed above), with the unmirrored estimate
  (``X + V``), with DDFM's step at other settings (a form of ``FIELD=VALUE`` words over ``Settings``, e.g.
  ``em_power=0.5 dig_tau=1``; ``em_power=0`` is the ``w blend`` image), of the plain blend of the
  sources by DIG's last weights (``w blend``) and of the Laplacian pyramid;
* how the ``ddfm`` output sits between the sources where they differ (|B - A| > 0.1): the share of
  pixels whose blend fraction a = (F - A) / (B - A) lies in [0, 1] (within 0.02), the mean a and the
  mean weight w_B of the last DIG refresh, and the mean |a - w_B|.

The unmirrored step needs no copy of ``em_step``: with the weights swapped it computes the same X,
so its F is I + V - F_ddfm(w_v, w_i) (the tau and TV state do not depend on the weights).

    python benchmarks/em_mirror.py --data ../shared/data --pairs-per-task 12
    python benchmarks/em_mirror.py --pairs-per-task 0 --forms "em_power=1,ddfm" --figure F.png \
        --figure-pairs ivf_TNO_16,mef_MEFB_ICCV_11
"""
from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple
from unittest import mock

import numpy as np

from dig2dig.kernels import em, numpy_ops
from dig2dig.runtime import api, io, metrics
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.settings import TASKS, resolve
from machine import machine_line
from sweeps import parse_overrides, select_pairs

ROOT = Path(__file__).resolve().parents[1]
DIFFER = 0.1  # |B - A| in [0, 1] luminance above which a pixel's blend fraction is measured


def em_step_unmirrored(f_pre: np.ndarray, a: np.ndarray, b: np.ndarray, state: em.EMState,
                       lamb: float = 0.5, rho: float = 0.001, w_a: Optional[np.ndarray] = None,
                       w_b: Optional[np.ndarray] = None, window: int = 1,
                       power: float = 1.0) -> Tuple[np.ndarray, em.EMState]:
    """DDFM's EM step returning X + V instead of I - X, each source's weight on its own pull."""
    fused, state = em.em_step(f_pre, a, b, state, lamb, rho, w_b, w_a, window, power)
    return a + b - fused, state


def scores(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> Tuple[float, float, float]:
    """Qabf, VIFF, SSIM of luminances in [0, 1], scored at 0..255."""
    f, a, b = fused * 255.0, a * 255.0, b * 255.0
    return metrics.qabf(f, a, b), metrics.viff(f, a, b), metrics.ssim(f, a, b)


def blend_stats(fused: np.ndarray, a: np.ndarray, b: np.ndarray, w_b: np.ndarray) -> Tuple[float, ...]:
    """Share of differing pixels blended within [0, 1], mean blend fraction of B, mean w_B, mean |a - w_B|."""
    mask = np.abs(b - a) > DIFFER
    alpha = (fused - a)[mask] / (b - a)[mask]
    inside = np.mean((alpha > -0.02) & (alpha < 1.02))
    return float(inside), float(alpha.mean()), float(w_b[mask].mean()), float(np.abs(alpha - w_b[mask]).mean())


def fuse_pair(pair: evaluation.Pair, runner: Any, form: str) -> api.FusionResult:
    """DIG at the task's defaults; ``X + V`` swaps in the unmirrored estimate, ``FIELD=VALUE`` words override them."""
    unmirrored = form == "X + V"
    swap = mock.patch.object(numpy_ops, "em_step", em_step_unmirrored) if unmirrored else contextlib.nullcontext()
    overrides = {} if form in ("ddfm", "X + V") else parse_overrides(form)
    with swap:
        return api.fuse(pair.a, pair.b, task=pair.task, runner=runner,
                        settings=resolve(pair.task, **overrides))


def measure(pair: evaluation.Pair, runner: Any, forms: List[str]) -> Dict[str, Any]:
    """Scores of each form, the weighted blend and the pyramid, and the ddfm form's blend statistics."""
    sources = api.prepare_sources([pair.a, pair.b])
    a, b = sources[0].luma, sources[1].luma
    pyramid = evaluation.laplacian_fusion(a, b)
    row: Dict[str, Any] = {"pyramid": scores(pyramid, a, b), "images": {"A": a, "B": b, "pyramid": pyramid}}
    for form in forms:
        result = fuse_pair(pair, runner, form)
        row[form] = scores(result.luma, a, b)
        row["images"][form] = result.luma
        if form == "ddfm":
            weights = np.asarray(result.trace.refreshes[-1]["weights"])[:, :a.shape[0], :a.shape[1]]
            blend = weights[0] * a + weights[1] * b
            row["w blend"] = scores(blend, a, b)
            row["images"]["w blend"] = blend
            row["blend"] = blend_stats(result.luma, a, b, weights[1])
    return row


def figure(rows: List[Dict[str, Any]], forms: List[str], path: Path) -> None:
    """One row per pair: A, B, each form, the weighted blend (with ddfm), the pyramid (luminance, 2-px gaps)."""
    lines = []
    for row in rows:
        tiles = [row["images"][k] for k in ["A", "B"] + forms + ["w blend", "pyramid"] if k in row["images"]]
        lines.append(np.concatenate([np.pad(t, 2, constant_values=1.0) for t in tiles], axis=1))
    width = max(line.shape[1] for line in lines)
    image = np.concatenate([np.pad(line, ((0, 0), (0, width - line.shape[1]))) for line in lines])
    io.write_image(path, np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--pairs-per-task", type=int, default=12)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--forms", default="ddfm,X + V",
                        help="comma-separated: ddfm (DDFM's I - X at the defaults), X + V, "
                             "or FIELD=VALUE words (Settings)")
    parser.add_argument("--figure", type=Path, help="write A | B | forms | w blend | pyramid for --figure-pairs here")
    parser.add_argument("--figure-pairs", default="", help="comma-separated TASK_DATASET_NAME keys")
    args = parser.parse_args()
    forms = args.forms.split(",")
    tasks = args.tasks.split(",")
    pairs = [p for p in select_pairs(evaluation.find_pairs(args.data), args.pairs_per_task) if p.task in tasks]
    keys = [k for k in args.figure_pairs.split(",") if k]
    runner = api.open_runner()
    print(f"Machine: {machine_line()}\n")
    methods = forms + (["w blend"] if "ddfm" in forms else []) + ["pyramid"]
    print(f"DIG at each task's defaults, long side {args.max_side} px. Qabf / VIFF / SSIM:\n")
    print("| task | pairs | " + " | ".join(methods) + " | in [0, 1] | mean a | mean w_B | mean abs(a - w_B) |")
    print("|---|---|" + "---|" * (len(methods) + 4))
    shown: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        def run(pair: evaluation.Pair) -> Dict[str, Any]:
            row = measure(evaluation.downscale_pair(pair, scratch, args.max_side), runner, forms)
            if pair.key in keys:
                shown[pair.key] = row
            return row

        for task in tasks:
            rows = [run(pair) for pair in pairs if pair.task == task]
            if not rows:
                continue
            cells = [" / ".join(f"{v:.3f}" for v in np.mean([r[m] for r in rows], axis=0)) for m in methods]
            stats = (" | ".join(f"{v:.3f}" for v in np.mean([r["blend"] for r in rows], axis=0))
                     if "ddfm" in forms else "– | – | – | –")
            print(f"| {task} | {len(rows)} | " + " | ".join(cells) + f" | {stats} |", flush=True)
        for pair in evaluation.find_pairs(args.data):
            if pair.key in keys and pair.key not in shown:
                run(pair)
    if args.figure and shown:
        figure([shown[k] for k in keys if k in shown], forms, args.figure)


if __name__ == "__main__":
    main()
