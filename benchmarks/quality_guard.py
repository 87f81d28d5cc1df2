"""Quality guard for a change of settings: paired differences against the full-size reference, per task.

The reference is ``sweeps.REFERENCE``: DIG at full size, 10 steps, each task's window and temperature as
chosen for it (the defaults of dig2dig fuse until the speed defaults of 2026-12-06, which were chosen with
this guard). Each candidate (``FIELD=VALUE`` words over the reference's settings, e.g. ``dig_scale=2``;
with ``--model``, another ONNX model, ``''`` for the reference's settings) and the reference fuse the same
pairs with DIG through ``dig2dig eval`` (resumable folders under ``--out``): all development pairs at a
256-px long side, or with ``--fullres`` the 16 full-resolution pairs of ``quality_fullres.py`` (4 per
task, up to 640 px). Printed per task: the mean paired difference candidate - reference of Qabf, VIFF and
SSIM with its t-value, and the seconds per fusion. The guard: per task, Qabf may not drop by more than
0.005, VIFF and SSIM by more than 0.01.

    python benchmarks/quality_guard.py --data ../shared/data dig_scale=2 dig_scale=4
    python benchmarks/quality_guard.py --data ../shared/data --fullres dig_scale=2 dig_scale=4
    python benchmarks/quality_guard.py --data ../shared/data --tasks ivf "steps=6 dig_scale=2 dig_tau=0.6"
    python benchmarks/quality_guard.py --data ../shared/data --model runs/int8/model_int8.onnx ""
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.settings import TASKS, check_task, resolve

from machine import machine_line
from sweeps import REFERENCE, ROOT, parse_overrides, select_pairs

GUARD = {"Qabf": -0.005, "VIFF": -0.01, "SSIM": -0.01}
FULLRES_PER_TASK, FULLRES_SIDE, ALL_PAIRS_SIDE = 4, 640, 256


def folder_name(form: str, model: Optional[str] = None) -> str:
    """``reference`` or the candidate's words (``dig_scale2``), then the candidate model's file stem."""
    name = form.replace(" ", "_").replace("=", "") or "reference"
    return name + (f"_{Path(model).stem}" if model else "")


def paired(base: Sequence[float], other: Sequence[float]) -> Tuple[float, float]:
    """Mean of ``other - base`` and its t-value (0 when every difference is equal)."""
    diffs = [o - b for b, o in zip(base, other)]
    mean = sum(diffs) / len(diffs)
    if len(diffs) < 2:
        return mean, 0.0
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
    return mean, mean / (std / math.sqrt(len(diffs))) if std > 0 else 0.0


def rows_by_pair(folder: Path) -> Dict[Tuple[str, str, str], Dict[str, str]]:
    return {(r["task"], r["dataset"], r["name"]): r for r in evaluation.read_rows(folder / evaluation.PER_PAIR)
            if r["method"] == "dig" and not r["error"]}


def report(out: Path, forms: Sequence[str], model: Optional[str] = None) -> List[str]:
    """The markdown table of every candidate against the reference, per task."""
    base = rows_by_pair(out / folder_name(""))
    lines = ["| candidate | task | n | s / fusion (reference) | " + " | ".join(f"Δ{m} (t)" for m in GUARD)
             + " | guard |", "|---|---|---:|---:|" + "---:|" * len(GUARD) + "---|"]
    for form in forms:
        rows = rows_by_pair(out / folder_name(form, model))
        for task in TASKS:
            keys = [key for key in base if key[0] == task and key in rows]
            if not keys:
                continue
            seconds = [sum(float(r[k]["seconds"]) for k in keys) / len(keys) for r in (rows, base)]
            cells, ok = [], True
            for metric, floor in GUARD.items():
                mean, t = paired([float(base[k][metric]) for k in keys], [float(rows[k][metric]) for k in keys])
                cells.append(f"{mean:+.4f} ({t:+.1f})")
                ok = ok and mean >= floor
            label = " ".join(filter(None, [form, Path(model).name if model else ""]))
            lines.append(f"| {label} | {task} | {len(keys)} | {seconds[0]:.2f} ({seconds[1]:.2f}) | "
                         + " | ".join(cells) + f" | {'holds' if ok else 'fails'} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("forms", nargs="+", metavar="FIELD=VALUE",
                        help="a candidate: FIELD=VALUE words, quoted ('' with --model: the reference's settings)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--fullres", action="store_true", help="the 16 full-resolution pairs, up to 640 px")
    parser.add_argument("--out", type=Path, help="result folders (default runs/quality_guard[_fullres])")
    parser.add_argument("--tasks", type=lambda text: text.split(","), default=list(TASKS), metavar="T1,T2",
                        help="only these tasks' pairs (a candidate's values then apply to them alone)")
    parser.add_argument("--model", help="ONNX model of the candidates (default: the shipped prior; the "
                                        "reference always runs the shipped prior)")
    args = parser.parse_args(argv)
    out = args.out or ROOT / "runs" / ("quality_guard_fullres" if args.fullres else "quality_guard")
    pairs = [pair for pair in evaluation.find_pairs(args.data) if pair.task in args.tasks]
    if args.fullres:
        pairs = select_pairs(pairs, FULLRES_PER_TASK)
    side = FULLRES_SIDE if args.fullres else ALL_PAIRS_SIDE
    for task in args.tasks:
        check_task(task)
    runs = [("", None)] + [(form, args.model) for form in args.forms]
    for form, model in runs:
        overrides = parse_overrides(form)
        settings = {task: resolve(task, **{**REFERENCE[task], **overrides}) for task in TASKS}
        evaluation.evaluate(pairs, out / folder_name(form, model), ["dig"], settings, max_side=side,
                            sources=out / "sources", model=model)
    print(f"Quality guard, {len(pairs)} pairs at up to {side} px; {machine_line()}")
    print()
    print("\n".join(report(out, args.forms, args.model)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
