"""Does the DIG window chosen at a 256-px long side hold at the size users fuse? The block "Full
resolution" of docs/QUALITY.md.

The defaults' windows were chosen on sources downscaled to a 256-px long side (``quality_all.py``);
a window in pixels covers less of the scene in a larger image. This fuses a fixed subset of the
development pairs (``--pairs-per-task``, taken in turn from each dataset as ``quality_sweep.py`` does)
at a long side of at most ``--max-side`` px (default 640, a VGA thermal camera; mif pairs stay at
their 256 px). The first table asked whether the windows should scale, at the E-step window of the
time (``WINDOWS_EM``, 5 px at 256): scaled to each pair's long side (``Settings.em_window_side``),
and fixed in pixels: that window, wider DIG windows towards the 640/256 = 2.5 ratio, the E-step
window times 2.5, and both times 2.5; against the defaults (9 px at 256, scaled; the DIG window per
task), static guidance and the classical anchors; its other rows keep the one DIG window of the time
(``Settings.dig_window``, 41 px). A second table varies, around the defaults, what else was chosen at
256 px: one tau for every task against the per-task taus, and 25 steps for every task (an earlier
default of mef, see CHANGELOG.md). ``--tables`` picks the tables whose missing fusions are computed
now, as in ``quality_all.py``. One resumable ``dig2dig eval`` folder under ``--out`` (default
``runs/quality_fullres``) per setting.

    python benchmarks/quality_fullres.py --data ../shared/data
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.sampler import scaled_window
from dig2dig.runtime.settings import TASKS, Settings
from machine import bundled_prior
from quality_all import LABELS, PER_TASK, PER_TASK_BUT
from sweeps import (reference_text, Run, Table, add_run, block_header, command_line, defaults_text, format_tables, quality_parser,
                    run_tables, select_pairs, write_block)

BEGIN, END = "<!-- quality-fullres:begin -->", "<!-- quality-fullres:end -->"
MAX_SIDE = 640
PAIRS_PER_TASK = 4
TABLES = ("windows", "tau")
DIG_WINDOW = (65, 103)
FIXED_TAU = (0.25, 1.0, 2.0)
MORE_STEPS = 25
# the E-step window (px at 256) of the windows table: the default when it was asked (docs/QUALITY.md)
WINDOWS_EM = 5
# the default DIG window and WINDOWS_EM scaled from 256 to 640 px as the loop scales the E-step window: (103, 13)
SCALED = tuple(scaled_window(window, MAX_SIDE, Settings.em_window_side) for window in (Settings.dig_window, WINDOWS_EM))


def plan() -> Tuple[Dict[str, Run], Dict[str, Table]]:
    """The runs, and the tables that read them, by ``TABLES`` key: the windows; tau and steps."""
    base = Settings()
    earlier = replace(base, em_window=WINDOWS_EM)
    pixels = replace(earlier, em_window_side=0)
    runs: Dict[str, Run] = {}

    def add(settings: Settings, method: str, per_task: Sequence[str] = PER_TASK) -> str:
        return add_run(runs, settings, method, per_task)

    def asked(settings: Settings, method: str) -> str:  # the windows table's question, at one DIG window
        return add(settings, method, PER_TASK_BUT["dig_window"])

    dig = f"DIG, window {base.dig_window} x {base.dig_passes}"
    defaults = f"DIG, window per task ({reference_text('dig_window')}) x {base.dig_passes}"
    scaled = f"at {base.em_window_side} px, scaled to each pair's"
    rows = [(f"{dig}, E-step window {WINDOWS_EM} {scaled}", asked(earlier, "dig"), "dig"),
            (f"{dig}, E-step window {WINDOWS_EM}, in pixels", asked(pixels, "dig"), "dig")]
    rows += [(f"DIG, window {window} x {base.dig_passes}, E-step window {WINDOWS_EM}, in pixels",
              asked(replace(pixels, dig_window=window), "dig"), "dig") for window in DIG_WINDOW]
    rows.append((f"{defaults}, E-step window {base.em_window} {scaled} (defaults)", add(base, "dig"), "dig"))
    rows.append((f"{dig}, E-step window {SCALED[1]}, in pixels", asked(replace(pixels, em_window=SCALED[1]), "dig"),
                 "dig"))
    rows.append((f"DIG, window {SCALED[0]} x {base.dig_passes}, E-step window {SCALED[1]}, in pixels",
                 asked(replace(pixels, dig_window=SCALED[0], em_window=SCALED[1]), "dig"), "dig"))
    rows += [(f"{LABELS['static']}, E-step window {WINDOWS_EM} {scaled}", asked(earlier, "static"), "static"),
             (f"{LABELS['static']}, E-step window {WINDOWS_EM} px", asked(pixels, "static"), "static")]
    anchors = [(LABELS[method], add(base, method), method) for method in evaluation.CLASSICAL_METHODS]
    rows += anchors
    windows = Table(f"The DIG and E-step windows at full resolution (asked at E-step window {WINDOWS_EM}), "
                    f"{base.steps} steps", rows)
    rows = [(f"DIG, tau per task, {reference_text('dig_tau')} (defaults)", add(base, "dig"), "dig")]
    rows += [(f"DIG, tau = {tau:g} for every task", add(replace(base, dig_tau=tau), "dig", PER_TASK_BUT["dig_tau"]),
              "dig") for tau in FIXED_TAU]
    rows += [(f"DIG, {MORE_STEPS} steps", add(replace(base, steps=MORE_STEPS), "dig"), "dig"),
             (f"{LABELS['static']}, {base.steps} steps (defaults)", add(base, "static"), "static"),
             (f"{LABELS['static']}, {MORE_STEPS} steps", add(replace(base, steps=MORE_STEPS), "static"), "static")]
    rows += anchors
    return runs, {"windows": windows, "tau": Table(f"DIG temperature and steps at full resolution, {base.steps} "
                                                   "steps unless a row says otherwise", rows)}


def set_up(command: str, pairs: Sequence[evaluation.Pair], per_task: int, max_side: int) -> List[str]:
    """The generated set-up paragraph: command, machine, pairs and their sizes, defaults."""
    listed = "; ".join(f"{task}: " + ", ".join(f"{p.dataset}/{p.name}" for p in pairs if p.task == task)
                       for task in TASKS)
    return block_header("Full resolution", "quality_fullres.py", command) + [
            f"Pairs ({len(pairs)}, the first {per_task} per task taken in turn from each dataset): {listed}. "
            f"Sources larger than {max_side} px on the long side are downscaled with OpenCV INTER_AREA to "
            f"{max_side} px; smaller ones are fused as they are. Model: the bundled prior ({bundled_prior()}).", "",
            "Unless a row says otherwise, the full-size reference (the defaults of `dig2dig fuse` until the "
            f"speed defaults of 2026-12-06, chosen at a 256-px long side): {defaults_text(Settings())}. Each cell is the mean over the task's pairs; seconds: wall time of one "
            "fusion on this machine.", ""]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quality_parser(__doc__.split("\n\n")[0], "quality_fullres", TABLES)
    parser.add_argument("--pairs-per-task", type=int, default=PAIRS_PER_TASK)
    parser.add_argument("--max-side", type=int, default=MAX_SIDE)
    args = parser.parse_args(argv)

    runs, tables = plan()
    pairs = select_pairs(evaluation.find_pairs(args.data), args.pairs_per_task)
    results = run_tables(parser, args, runs, tables, pairs, args.max_side)
    if results is None:
        return 0
    command = command_line(parser, args, ("data", "pairs_per_task", "max_side"))
    write_block(Path(args.doc), set_up(command, pairs, args.pairs_per_task, args.max_side)
                + format_tables(list(tables.values()), results), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
