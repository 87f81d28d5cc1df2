"""The quality sweep behind docs/QUALITY.md: DIG vs static (DDFM) guidance over steps, and the DIG knobs.

Fuses a small fixed subset of the development pairs (``--pairs-per-task`` per task, taken in turn
from each of the task's datasets, manifest order) at ``--max-side`` px with ``dig2dig eval``: one
folder under ``--out`` (default ``runs/quality_sweep``) per distinct setting, each resumable (rerun
the same command after an interruption). Then it splices the tables into docs/QUALITY.md between
``<!-- quality-sweep:begin -->`` and ``<!-- quality-sweep:end -->`` (the rest of the file is kept)
and draws the quality-time plot ``runs/quality_time.png``.

    python benchmarks/quality_sweep.py --data ../shared/data

Axes, everything else at ``BASE`` (the defaults before the sweep: S 2, window 9, tau 2): steps 10,
25, 50 (``--with-100`` adds 100) for DIG and static guidance plus the classical anchors (average,
Laplacian pyramid); and, at ``--ablation-steps`` (default: the default steps), the DIG refresh
interval S in {1, 5, 10}, the relative temperature tau in {0.5, 1, 2}, the smoothing window in
{1, 9, 21}, the normalisation of the gains (ours, relative to their RMS spread, vs an absolute
temperature: tau = 1 is Dig2DIG's softmax as written) and tau x window jointly ({0.5, 1, 2} x
{9, 21, 41}). Before fusing, it prints an estimate of the remaining time (model calls counted per
setting by running the sampler with a stand-in model, each call priced by timing the real model once
per batch size); ``--estimate-only`` stops there.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dig2dig.runtime import api
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.settings import TASKS, Settings
from machine import bundled_prior
from sweeps import (ROOT, Run, Table, add_run, block_header, command_line, format_tables, fuse_tables, plot_section,
                    quality_parser, select_pairs, write_block)

STEPS = (10, 25, 50)
DIG_EVERY = (1, 5, 10)
DIG_TAU = (0.5, 1.0, 2.0)
DIG_WINDOW = (1, 9, 21)
ABSOLUTE_TAU = (1.0, 0.01)
JOINT_WINDOW = (9, 21, 41)
BEGIN, END = "<!-- quality-sweep:begin -->", "<!-- quality-sweep:end -->"
TABLES = ("steps", "dig_every", "dig_tau", "dig_window", "norm", "joint")
# The sweep's starting point: the defaults before this sweep chose them (one 9-px box, tau 2, DDFM's
# per-pixel E-step). The knobs vary around it one at a time; the chosen defaults are checked
# jointly in the Findings. The E-step window is varied on all pairs (quality_all.py).
BASE = Settings(dig_window=9, dig_passes=1, dig_tau=2.0, em_window=1, em_power=1.0)


def plan(steps_axis: Sequence[int], ablation_steps: int) -> Tuple[Dict[str, Run], Dict[str, Table]]:
    """The distinct runs (settings shared between tables are fused once) and the tables, by ``TABLES`` key."""
    base = BASE
    runs: Dict[str, Run] = {}

    def add(settings: Settings, method: str) -> str:
        return add_run(runs, settings, method)

    steps_rows = []
    for steps in steps_axis:
        settings = replace(base, steps=steps)
        steps_rows += [(f"DIG, {steps} steps", add(settings, "dig"), "dig"),
                       (f"static (DDFM), {steps} steps", add(settings, "static"), "static")]
    steps_rows += [(f"{method} (classical)", add(replace(base, steps=steps_axis[0]), method), method)
                   for method in evaluation.CLASSICAL_METHODS]
    tables = {"steps": Table("DIG vs static guidance over the number of steps", steps_rows)}
    for title, field, values in (("DIG refresh interval S", "dig_every", DIG_EVERY),
                                 ("DIG temperature tau (relative)", "dig_tau", DIG_TAU),
                                 ("DIG smoothing window (px)", "dig_window", DIG_WINDOW)):
        default = getattr(base, field)
        rows = []
        for value in sorted(set(values) | {default}):
            settings = replace(base, steps=ablation_steps, **{field: value})
            label = f"{field} = {value:g}" + (" (default)" if value == default else "")
            rows.append((label, add(settings, "dig"), "dig"))
        tables[field] = Table(f"{title}, DIG at {ablation_steps} steps", rows)
    ablation = replace(base, steps=ablation_steps)
    rows = [(f"relative to the RMS spread, tau = {base.dig_tau:g} (default)", add(ablation, "dig"), "dig")]
    rows += [(f"absolute, tau = {tau:g}" + (" (Dig2DIG's softmax as written)" if tau == 1 else ""),
              add(replace(ablation, dig_norm="absolute", dig_tau=tau), "dig"), "dig") for tau in ABSOLUTE_TAU]
    tables["norm"] = Table(f"DIG normalisation of the gains, DIG at {ablation_steps} steps", rows)
    rows = [(f"tau = {tau:g}, window = {window}", add(replace(ablation, dig_tau=tau, dig_window=window), "dig"), "dig")
            for tau in DIG_TAU for window in JOINT_WINDOW]
    tables["joint"] = Table(f"DIG temperature x window, jointly, DIG at {ablation_steps} steps", rows)
    return runs, tables


def set_up(command: str, args: argparse.Namespace, pairs: Sequence[evaluation.Pair],
           providers: Sequence[str]) -> List[str]:
    """The generated set-up paragraph: command, machine, model, pairs, resolution."""
    listed = "; ".join(f"{task}: " + ", ".join(f"{p.dataset}/{p.name}" for p in pairs if p.task == task)
                       for task in TASKS)
    base = BASE
    e_step = f"E-step window {base.em_window}" + (" (DDFM's)" if base.em_window == 1 else "")
    return block_header("Sweep set-up", "quality_sweep.py", command,
                        f"; backend {args.backend} ({', '.join(providers)})") + [
            f"Model: {args.model or f'the bundled prior ({bundled_prior()})'}.", "",
            f"Pairs ({len(pairs)}, the first {args.pairs_per_task} per task taken in turn from each dataset of "
            f"the development set): {listed}.", "",
            f"Sources downscaled with OpenCV INTER_AREA so that the long side is at most {args.max_side} px; "
            "every metric and time is at that size.", "",
            f"Unless a table varies it: DIG refresh every {base.dig_every} steps, window {base.dig_window}, "
            f"tau {base.dig_tau:g}, {e_step}, lamb {base.lamb:g}, rho {base.rho:g}, seed {base.seed}. Metrics: "
            "`runtime/metrics.py` (CDDFuse Evaluator conventions), grey 0..255, A then B; each cell is the mean "
            "over the task's pairs (per-pair rows, std and the other metrics in each folder's `per_pair.csv` "
            "and `summary.csv`, written by `bash benchmarks/quality.sh`). Seconds: wall time of one fusion on this "
            "machine.", ""]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quality_parser(__doc__.split("\n\n")[0], "quality_sweep", TABLES)
    parser.add_argument("--plot", default=str(ROOT / "runs" / "quality_time.png"))
    parser.add_argument("--plot-metric", default="Qabf", choices=evaluation.KEY_METRICS)
    parser.add_argument("--pairs-per-task", type=int, default=3)
    parser.add_argument("--max-side", type=int, default=256)
    parser.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated steps axis")
    parser.add_argument("--with-100", action="store_true", help="add 100 steps to the steps axis")
    parser.add_argument("--ablation-steps", type=int, default=Settings().steps, help="steps of the DIG knob tables")
    parser.add_argument("--model", help="ONNX model (default: the bundled prior)")
    parser.add_argument("--backend", default="ort", choices=["ort", "trt"])
    args = parser.parse_args(argv)

    steps_axis = [int(s) for s in args.steps.split(",")] + ([100] if args.with_100 else [])
    runs, tables = plan(steps_axis, args.ablation_steps)
    pairs = select_pairs(evaluation.find_pairs(args.data), args.pairs_per_task)
    with closing(api.open_runner(args.model, args.backend)) as runner:
        providers = list(getattr(runner, "providers", []))
        results = fuse_tables(parser, args, runs, tables, pairs, args.max_side, runner, args.model)
    if results is None:
        return 0
    command = command_line(parser, args, ("data", "pairs_per_task", "max_side", "steps", "with_100",
                                          "ablation_steps", "model", "backend"))
    lines = set_up(command, args, pairs, providers) + format_tables(list(tables.values()), results) + plot_section(
        Path(args.plot), tables["steps"], runs, results, args.plot_metric,
        "DIG and static at each step count of the first table, and the classical anchors")
    write_block(Path(args.doc), lines, BEGIN, END, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
