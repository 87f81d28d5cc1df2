"""Every development pair at the chosen defaults, and each DIG knob varied from them: the block
"All development pairs" of docs/QUALITY.md.

``quality_sweep.py`` varies the knobs on 12 pairs around the starting point that chose the defaults;
this runs every pair of ``--data`` (long side ``--max-side`` px) around the defaults themselves
(``Settings()``, each task's tau and DIG window): DIG vs static guidance and the classical anchors,
steps (10, 25, and ``--more-steps``, e.g. 50,100), the refresh interval S in {1, 2, 5, 10}, one DIG
window for every task in {9, 21, 41, 61} and one tau in {0.25, 0.5, 1, 2} against the per-task ones,
Dig2DIG's softmax as written (absolute temperature 1), the E-step window in {1 (DDFM), 3, 5, 9, 13}
for DIG and {1, 5, 9} for static, the E-step power in {1 (DDFM), 0.5, 0} for DIG and {1, 0.5} for
static (and at 0.5 each tau of the tau table), and the DIG gain smoothing: a box of window w applied
n times (``DIG_SMOOTHING``). A change of a default starts new folders; fusions that it leaves the
same are adopted from the folders that hold them (``sweeps.adopt_rows``). ``--held-only`` writes
the tables from what the folders hold. One resumable ``dig2dig eval`` folder under ``--out`` (default
``runs/quality_all``) per setting. ``--tables`` picks the tables whose missing fusions are computed now
(a long job can be spread over several runs); the other tables show what their folders already hold,
with the number of pairs in each row. The quality-time plot (``--plot-metric`` vs seconds) goes to
``runs/quality_all_time.png``.

    python benchmarks/quality_all.py --data ../shared/data
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.settings import TASKS, Settings
from machine import bundled_prior
from sweeps import (reference_text, REGENERATE, ROOT, Run, Table, add_run, block_header, command_line, defaults_text, format_tables,
                    plot_section, quality_parser, results_folder, run_tables, write_block)

BEGIN, END = "<!-- quality-all:begin -->", "<!-- quality-all:end -->"
MAX_SIDE = 256
STEPS = (10, 25)
DIG_EVERY = (1, 2, 5, 10)
DIG_WINDOW = (9, 21, 41, 61)
FIXED_TAU = (0.25, 0.5, 1.0, 2.0)
EM_WINDOW = (1, 3, 5, 9, 13)
EM_WINDOW_STATIC = (1, 5, 9)
EM_POWER = (1.0, 0.5, 0.0)
EM_POWER_STATIC = (1.0, 0.5)
POWER_TAU_AT = 0.5  # the power whose tau is varied over FIXED_TAU: tau and the power both set how sharp F's weights are
# (window, passes); the first three have about the same variance, passes * (window**2 - 1) / 12
DIG_SMOOTHING = ((41, 1), (29, 2), (23, 3), (41, 3), (61, 1), (61, 3))
# the fields of TASK_FIELDS at each task's default unless a table varies them; steps is one for all tasks
PER_TASK = ("dig_tau", "dig_window")
PER_TASK_BUT = {field: tuple(f for f in PER_TASK if f != field) for field in PER_TASK}
LABELS = {"dig": "DIG", "static": "static (DDFM)", "average": "average (classical)",
          "laplacian": "Laplacian pyramid (classical)"}
TABLES = ("defaults", "steps", "every", "window", "tau", "norm", "em", "power", "smooth")


def plan(steps_axis: Sequence[int]) -> Tuple[Dict[str, Run], Dict[str, Table]]:
    """The distinct runs (a setting shared by tables is fused once) and the tables, by ``TABLES`` key."""
    base = Settings()
    runs: Dict[str, Run] = {}

    def add(settings: Settings, method: str, per_task: Sequence[str] = PER_TASK) -> str:
        return add_run(runs, settings, method, per_task)

    tables = {"defaults": Table(f"At the defaults, but {base.steps} steps for every task: DIG, static guidance "
                                "(DDFM) and the classical anchors",
                                [(LABELS[method], add(base, method), method) for method in evaluation.METHODS])}
    rows = []
    for steps in steps_axis:
        settings = replace(base, steps=steps)
        rows += [(f"DIG, {steps} steps", add(settings, "dig"), "dig"),
                 (f"static (DDFM), {steps} steps", add(settings, "static"), "static")]
    tables["steps"] = Table("DIG vs static guidance over the number of steps", rows)
    tables["every"] = Table(f"DIG refresh interval S, DIG at {base.steps} steps", [
        (f"dig_every = {every}" + (" (default)" if every == base.dig_every else ""),
         add(replace(base, dig_every=every), "dig"), "dig") for every in DIG_EVERY])
    rows = [(f"per task, {reference_text('dig_window')} (default)", add(base, "dig"), "dig")]
    rows += [(f"dig_window = {window} for every task",
              add(replace(base, dig_window=window), "dig", PER_TASK_BUT["dig_window"]), "dig") for window in DIG_WINDOW]
    tables["window"] = Table(f"DIG smoothing window (px, each of {base.dig_passes} passes), DIG at {base.steps} steps",
                             rows)
    rows = [(f"per task, {reference_text('dig_tau')} (default)", add(base, "dig"), "dig")]
    rows += [(f"tau = {tau:g} for every task", add(replace(base, dig_tau=tau), "dig", PER_TASK_BUT["dig_tau"]), "dig")
             for tau in FIXED_TAU]
    tables["tau"] = Table(f"DIG temperature tau (relative to the gains' RMS spread), DIG at {base.steps} steps", rows)
    tables["norm"] = Table(f"DIG normalisation of the gains, DIG at {base.steps} steps", [
        ("relative to the RMS spread, tau per task (default)", add(base, "dig"), "dig"),
        ("absolute, tau = 1 (Dig2DIG's softmax as written)",
         add(replace(base, dig_norm="absolute", dig_tau=1.0), "dig", PER_TASK_BUT["dig_tau"]), "dig")])
    rows = [(f"{LABELS[method]}, em_window = {window}" + (" (DDFM's E-step)" if window == 1 else "")
             + (" (default)" if window == base.em_window else ""),
             add(replace(base, em_window=window), method), method)
            for method, windows in (("dig", EM_WINDOW), ("static", EM_WINDOW_STATIC)) for window in windows]
    tables["em"] = Table(f"E-step window (geometric mean of DDFM's E-step weights; ours), {base.steps} steps", rows)
    rows = [(f"{LABELS[method]}, em_power = {power:g}" + (" (DDFM's E-step)" if power == 1 else "")
             + (" (default)" if power == base.em_power else ""),
             add(replace(base, em_power=power), method), method)
            for method, powers in (("dig", EM_POWER), ("static", EM_POWER_STATIC)) for power in powers]
    rows += [(f"DIG, em_power = {POWER_TAU_AT:g}, tau = {tau:g} for every task",
              add(replace(base, em_power=POWER_TAU_AT, dig_tau=tau), "dig", PER_TASK_BUT["dig_tau"]), "dig")
             for tau in FIXED_TAU]
    tables["power"] = Table(f"E-step power (DDFM's E-step weights raised to it after the window; ours), "
                            f"{base.steps} steps", rows)
    rows = [(f"w per task ({reference_text('dig_window')}), n = {base.dig_passes} (default)", add(base, "dig"),
             "dig")]
    rows += [(f"w = {window}, n = {passes} for every task, std {((passes * (window * window - 1) / 12) ** 0.5):.1f} px",
              add(replace(base, dig_window=window, dig_passes=passes), "dig", PER_TASK_BUT["dig_window"]), "dig")
             for window, passes in DIG_SMOOTHING]
    tables["smooth"] = Table(f"DIG gain smoothing: a box of window w applied n times, DIG at {base.steps} steps", rows)
    return runs, tables


def set_up(command: str, pairs: Sequence[evaluation.Pair], max_side: int, out: Path) -> List[str]:
    """The generated set-up paragraph: command, machine, pairs, resolution, defaults."""
    counts = ", ".join(f"{task} {sum(p.task == task for p in pairs)}" for task in TASKS)
    return block_header("All development pairs", "quality_all.py", command) + [
            f"Pairs: all {len(pairs)} of the development set ({counts}), sources downscaled with OpenCV "
            f"INTER_AREA so that the long side is at most {max_side} px; every metric and time is at that size. "
            f"Model: the bundled prior ({bundled_prior()}).", "",
            "Unless a table varies it, the full-size reference (the defaults of `dig2dig fuse` until the speed "
            f"defaults of 2026-12-06, In brief): {defaults_text(Settings())}. "
            "Each cell is the mean over the task's pairs; "
            "n is the number of pairs a row holds so far. Per-pair rows, std and the other metrics: one folder "
            f"per setting under `{results_folder(out)}/` (git-ignored), written by {REGENERATE}. Seconds: wall "
            "time of one fusion on this machine.", ""]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quality_parser(__doc__.split("\n\n")[0], "quality_all", TABLES)
    parser.add_argument("--plot", default=str(ROOT / "runs" / "quality_all_time.png"))
    parser.add_argument("--plot-metric", default="Qabf", choices=evaluation.KEY_METRICS)
    parser.add_argument("--max-side", type=int, default=MAX_SIDE)
    parser.add_argument("--more-steps", default="", help="comma-separated steps added to the steps table, e.g. 50,100")
    args = parser.parse_args(argv)

    steps_axis = list(STEPS) + [int(s) for s in args.more_steps.split(",") if s.strip()]
    runs, tables = plan(steps_axis)
    pairs = evaluation.find_pairs(args.data)
    results = run_tables(parser, args, runs, tables, pairs, args.max_side)
    if results is None:
        return 0
    command = command_line(parser, args, ("data", "max_side", "more_steps"))
    anchors = [row for row in tables["defaults"].rows if row[2] in evaluation.CLASSICAL_METHODS]
    lines = set_up(command, pairs, args.max_side, Path(args.out)) + format_tables(list(tables.values()), results)
    lines += plot_section(Path(args.plot), Table("", tables["steps"].rows + anchors), runs, results, args.plot_metric,
                          "DIG and static at each step count of the steps table, and the classical anchors; the "
                          "seconds are as noisy as the tables' column")
    write_block(Path(args.doc), lines, BEGIN, END, Path(args.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
