"""The quality sweep behind docs/QUALITY.md: DIG vs static (DDFM) guidance over steps, and the DIG knobs.

Fuses a small fixed subset of the development pairs (``--pairs-per-task`` per task, taken in turn
from each of the task's datasets, manifest order) at ``--max-side`` px with the machinery of
``dig2dig eval``: one sub-folder of ``--out`` per distinct setting, each resumable (after an
interruption, rerun the same command). Then it writes the generated part of ``docs/QUALITY.md``
(between ``<!-- quality-sweep:begin -->`` and ``<!-- quality-sweep:end -->``; the rest of the file,
the lead's Findings included, is kept as it is) and the quality-time plot ``docs/quality_time.png``.

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
import math
import os
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dig2dig.runtime import api, io
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.metrics import read_gray
from dig2dig.runtime.sampler import Settings, initial_noise, sample
from machine import bundled_prior, machine_line

ROOT = Path(__file__).resolve().parents[1]
STEPS = (10, 25, 50)
DIG_EVERY = (1, 5, 10)
DIG_TAU = (0.5, 1.0, 2.0)
DIG_WINDOW = (1, 9, 21)
ABSOLUTE_TAU = (1.0, 0.01)
JOINT_WINDOW = (9, 21, 41)
BEGIN, END = "<!-- quality-sweep:begin -->", "<!-- quality-sweep:end -->"
FINDINGS = ("## Findings\n\n"
            "<!-- FINDINGS: for the lead to write from the numbers above. Nothing in this section is generated, "
            "and the sweep never rewrites it. -->\n\n"
            "_To be written._\n")
CALIBRATION_T = 500
# The sweep's starting point: the defaults before this sweep chose them (one 9-px box, tau 2, DDFM's
# per-pixel E-step). The knobs vary around it one at a time; the chosen defaults are checked
# jointly in the Findings. The E-step window is varied on all pairs (quality_all.py).
BASE = Settings(dig_window=9, dig_passes=1, dig_tau=2.0, em_window=1, em_power=1.0)


@dataclass
class Run:
    """One sub-folder of the sweep: a setting and the methods fused with it."""

    settings: Settings
    methods: List[str]
    per_task: Tuple[str, ...] = ()  # fields of api.TASK_FIELDS set to each task's default


@dataclass
class Table:
    """One generated table: a title and rows of (label, sub-folder, method)."""

    title: str
    rows: List[Tuple[str, str, str]]


def folder_name(settings: Settings, per_task: Sequence[str] = ()) -> str:
    """``steps10_every2_window9_tau2``: ``tau-ivf1-mif0.5-mef2-mff0.5`` with each task's tau and
    ``window-ivf61-mif41-mef61-mff41`` with each task's window where ``per_task`` names them (the current
    ``api.TASK_DEFAULTS``, so a change of those defaults starts new folders and keeps the old ones),
    ``_absolute`` for the absolute temperature, ``_emN`` for an E-step window N > 1, ``xN`` after the
    window for N > 1 DIG window passes, ``_px`` for an E-step window in pixels (``em_window_side`` 0),
    ``_sideN`` for one given at another long side than 256 px and ``_powG`` for an E-step power G < 1."""
    def value(field: str) -> str:
        if field in per_task:
            return "".join(f"-{task}{defaults[field]:g}" for task, defaults in api.TASK_DEFAULTS.items())
        return f"{getattr(settings, field):g}"

    passes = f"x{settings.dig_passes}" if settings.dig_passes > 1 else ""
    name = f"steps{settings.steps}_every{settings.dig_every}_window{value('dig_window')}{passes}_tau{value('dig_tau')}"
    side = {256: "", 0: "_px"}.get(settings.em_window_side, f"_side{settings.em_window_side}")
    return (name + ("_absolute" if settings.dig_norm == "absolute" else "")
            + (f"_em{settings.em_window}" if settings.em_window > 1 else "") + side
            + (f"_pow{settings.em_power:g}" if settings.em_power != 1 else ""))


def add_run(runs: Dict[str, Run], settings: Settings, method: str, per_task: Sequence[str] = ()) -> str:
    """Register ``method`` at ``settings`` in ``runs`` (one folder per distinct setting); its folder name."""
    name = folder_name(settings, per_task)
    run = runs.setdefault(name, Run(settings, [], tuple(per_task)))
    if method not in run.methods:
        run.methods.append(method)
    return name


def plan(steps_axis: Sequence[int], ablation_steps: int) -> Tuple[Dict[str, Run], List[Table]]:
    """The distinct runs (settings shared between tables are fused once) and the tables that read them."""
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
    tables = [Table("DIG vs static guidance over the number of steps", steps_rows)]
    for title, field, values in (("DIG refresh interval S", "dig_every", DIG_EVERY),
                                 ("DIG temperature tau (relative)", "dig_tau", DIG_TAU),
                                 ("DIG smoothing window (px)", "dig_window", DIG_WINDOW)):
        default = getattr(base, field)
        rows = []
        for value in sorted(set(values) | {default}):
            settings = replace(base, steps=ablation_steps, **{field: value})
            label = f"{field} = {value:g}" + (" (default)" if value == default else "")
            rows.append((label, add(settings, "dig"), "dig"))
        tables.append(Table(f"{title}, DIG at {ablation_steps} steps", rows))
    ablation = replace(base, steps=ablation_steps)
    rows = [(f"relative to the RMS spread, tau = {base.dig_tau:g} (default)", add(ablation, "dig"), "dig")]
    rows += [(f"absolute, tau = {tau:g}" + (" (Dig2DIG's softmax as written)" if tau == 1 else ""),
              add(replace(ablation, dig_norm="absolute", dig_tau=tau), "dig"), "dig") for tau in ABSOLUTE_TAU]
    tables.append(Table(f"DIG normalisation of the gains, DIG at {ablation_steps} steps", rows))
    rows = [(f"tau = {tau:g}, window = {window}", add(replace(ablation, dig_tau=tau, dig_window=window), "dig"), "dig")
            for tau in DIG_TAU for window in JOINT_WINDOW]
    tables.append(Table(f"DIG temperature x window, jointly, DIG at {ablation_steps} steps", rows))
    return runs, tables


def select_pairs(pairs: Sequence[evaluation.Pair], per_task: int) -> List[evaluation.Pair]:
    """``per_task`` pairs of each task, taken in turn from its datasets (manifest order)."""
    chosen = []
    for task in api.TASKS:
        by_dataset: Dict[str, List[evaluation.Pair]] = {}
        for pair in pairs:
            if pair.task == task:
                by_dataset.setdefault(pair.dataset, []).append(pair)
        queues = list(by_dataset.values())
        turns = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
        chosen += turns[:per_task]
    return chosen


class CountingRunner(Runner):
    """Stands in for the model (zero noise prediction) to count the sampler's calls by batch size."""

    def __init__(self, runner: Runner):
        self.info = runner.info
        self.calls: Counter = Counter()

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.calls[x.shape[0]] += 1
        return np.zeros((x.shape[0], self.info.out_channels) + x.shape[2:], np.float32)


def model_calls(runner: Runner, settings: Settings) -> Counter:
    """Model calls by batch size of one fusion with ``settings`` (the real loop, a stand-in model)."""
    counter = CountingRunner(runner)
    side = 32 * runner.info.multiple
    sources = np.zeros((2, side, side), np.float32)
    sample(counter, sources, settings, initial_noise((runner.info.in_channels, side, side), settings.seed))
    return counter.calls


def call_seconds(runner: Runner, batch_sizes: Sequence[int], height: int, width: int) -> Dict[int, float]:
    """Best of three timed model calls per batch size at ``height`` x ``width`` (after one warm-up)."""
    seconds = {}
    for batch in batch_sizes:
        x = np.zeros((batch, runner.info.in_channels, height, width), np.float32)
        t = np.full(batch, CALIBRATION_T, np.float32)
        runner.denoise(x, t)
        times = []
        for _ in range(3):
            start = time.perf_counter()
            runner.denoise(x, t)
            times.append(time.perf_counter() - start)
        seconds[batch] = min(times)
    return seconds


def estimate(runner: Runner, runs: Dict[str, Run], pairs: Sequence[evaluation.Pair],
             out: Path, sources: Path, max_side: int) -> Tuple[float, int]:
    """Seconds and number of the fusions still to do: counted model calls priced by timed ones, plus
    the metrics of one pair, scaled by each pair's pixel count."""
    small = [evaluation.downscale_pair(pair, sources / f"max{max_side}", max_side) for pair in pairs]
    pixels = {pair.key: read_gray(s.a).size for pair, s in zip(pairs, small)}
    calls = {(name, method): model_calls(runner, replace(run.settings, guidance=method))
             for name, run in runs.items() for method in run.methods if method in evaluation.DIFFUSION_METHODS}
    multiple = runner.info.multiple
    side = -(-max_side // multiple) * multiple
    per_call = call_seconds(runner, sorted({b for c in calls.values() for b in c}), side, side)
    reference = evaluation.fuse_pair(small[0], "average", Settings(), None)
    scratch = out / "estimate.png"
    io.write_image(scratch, reference.image)
    start = time.perf_counter()
    evaluation.score(scratch, small[0])
    metric_seconds = (time.perf_counter() - start) / pixels[pairs[0].key]
    scratch.unlink()
    total, count = 0.0, 0
    for name, run in runs.items():
        rows = evaluation.read_rows(out / name / evaluation.PER_PAIR)
        done = {(r["task"], r["dataset"], r["name"], r["method"]) for r in rows}
        for pair in pairs:
            for method in run.methods:
                if (pair.task, pair.dataset, pair.name, method) in done:
                    continue
                model = sum(n * per_call[b] for b, n in calls.get((name, method), Counter()).items())
                total += pixels[pair.key] * (model / (side * side) + metric_seconds)
                count += 1
    return total, count


def summaries(runner: Runner, runs: Dict[str, Run], pairs: Sequence[evaluation.Pair], out: Path,
              sources: Path, max_side: int, model: Optional[str]) -> Dict[Tuple[str, str, str], Dict[str, str]]:
    """Run (or resume) every sub-folder; the per-task summary rows keyed by (folder, task, method)."""
    table = {}
    for i, (name, run) in enumerate(runs.items(), 1):
        print(f"[{i}/{len(runs)}] {name}: {', '.join(run.methods)}", flush=True)
        rows = evaluation.evaluate(pairs, out / name, run.methods, run.settings, max_side, runner=runner,
                                   model=model, sources_dir=sources, per_task=run.per_task)
        table.update({(name, r["task"], r["method"]): r for r in rows if r["dataset"] == evaluation.ALL_DATASETS})
    return table


def quality_parser(description: str, out: str) -> argparse.ArgumentParser:
    """The options every quality script shares: ``--data``, ``--out`` (default ``runs/OUT``), ``--doc``
    and ``--estimate-only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the development data folder")
    parser.add_argument("--out", default=str(ROOT / "runs" / out), help="sub-folders of eval results")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "QUALITY.md"))
    parser.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    return parser


def fuse_all(runner: Runner, runs: Dict[str, Run], pairs: Sequence[evaluation.Pair], out: Path, max_side: int,
             model: Optional[str], estimate_only: bool) -> Optional[Dict[Tuple[str, str, str], Dict[str, str]]]:
    """Adopt the rows other folders of ``out`` hold for the same fusions (``evaluation.adopt_rows``), print the
    estimated time of the fusions ``runs`` still lack (downscaled sources shared in ``out/sources``); then,
    unless ``estimate_only`` (None), run them all (``summaries``) and print the time."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sources = out / "sources"
    folders = sorted(path for path in out.iterdir() if path.is_dir())
    adopted = sum(evaluation.adopt_rows(pairs, out / name, run.methods, run.settings, max_side, model, run.per_task,
                                        folders) for name, run in runs.items())
    if adopted:
        print(f"{adopted} fusions adopted from folders that hold them under other settings' names", flush=True)
    seconds, count = estimate(runner, runs, pairs, out, sources, max_side)
    print(f"{len(pairs)} pairs x {len(runs)} settings: {count} fusions to do, estimated {seconds / 60:.1f} min "
          f"on this machine ({os.cpu_count()} cores)", flush=True)
    if estimate_only:
        return None
    results = summaries(runner, runs, pairs, out, sources, max_side, model)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return results


def format_tables(tables: Sequence[Table], results: Dict[Tuple[str, str, str], Dict[str, str]]) -> List[str]:
    """Markdown: per table, one sub-table per task of the mean key metrics and seconds; the rows whose
    folders hold nothing for the task yet are named under it."""
    columns = evaluation.KEY_METRICS + ("seconds",)
    lines = []
    for table in tables:
        lines += [f"### {table.title}", ""]
        for task in api.TASKS:
            lines += [f"**{task}**", "", "| setting | n | " + " | ".join(columns) + " |",
                      "|---|---|" + "---|" * len(columns)]
            missing = []
            for label, folder, method in table.rows:
                entry = results.get((folder, task, method))
                if entry is None:
                    missing.append(label)
                    continue
                n = entry["n"] + (f" ({entry['errors']} with errors)" if entry["errors"] != "0" else "")
                cells = [_mean(entry, column) for column in columns]
                lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
            if missing:
                lines += [f"Not fused yet at these settings: {'; '.join(missing)}.", ""]
    return lines


def _mean(entry: Dict[str, str], column: str) -> str:
    value = entry[f"{column}_mean"]
    return "–" if not value else f"{float(value):.{2 if column == 'seconds' else 3}f}"


def draw_plot(tables: Sequence[Table], runs: Dict[str, Run], results: Dict[Tuple[str, str, str], Dict[str, str]],
              metric: str) -> np.ndarray:
    """RGB plot, one panel per task: ``metric`` against seconds per fusion (log scale), from the steps table;
    diffusion points are labelled with their number of steps."""
    series: Dict[str, List[Tuple[str, str, str]]] = {}
    for label, folder, method in tables[0].rows:
        series.setdefault(method, []).append((label, folder, method))
    colours = {"dig": (31, 119, 180), "static": (255, 127, 14), "average": (44, 160, 44), "laplacian": (148, 103, 189)}
    points = {task: {method: [(float(e["seconds_mean"]), float(e[f"{metric}_mean"]),
                               str(runs[folder].settings.steps) if m in evaluation.DIFFUSION_METHODS else "")
                              for _, folder, m in rows
                              for e in [results.get((folder, task, m))] if e and e[f"{metric}_mean"]]
                     for method, rows in series.items()} for task in api.TASKS}
    seconds = [max(p[0], 1e-4) for task in points.values() for pts in task.values() for p in pts]
    if not seconds:
        raise SystemExit("no results to plot")
    x_low, x_high = math.floor(math.log10(min(seconds))), math.ceil(math.log10(max(seconds)))
    x_high = max(x_high, x_low + 1)
    panels = [_panel(task, points[task], colours, metric, (x_low, x_high)) for task in api.TASKS]
    legend = np.full((34, panels[0].shape[1] * 2, 3), 255, np.uint8)
    x = 20
    for method, colour in colours.items():
        if method in series:
            cv2.circle(legend, (x, 17), 6, colour, -1, cv2.LINE_AA)
            cv2.putText(legend, method, (x + 12, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
            x += 140
    return np.vstack([np.hstack(panels[:2]), np.hstack(panels[2:]), legend])


def _panel(task: str, points: Dict[str, List[Tuple[float, float, str]]], colours: Dict[str, Tuple[int, int, int]],
           metric: str, x_range: Tuple[int, int]) -> np.ndarray:
    width, height, left, right, top, bottom = 520, 380, 70, 20, 34, 46
    image = np.full((height, width, 3), 255, np.uint8)
    values = [p[1] for pts in points.values() for p in pts] or [0.0, 1.0]
    y_low, y_high = min(values), max(values)
    pad = (y_high - y_low) * 0.08 or 0.05 * max(abs(y_high), 1.0)
    y_low, y_high = y_low - pad, y_high + pad

    def xy(seconds: float, value: float) -> Tuple[int, int]:
        fx = (math.log10(max(seconds, 1e-4)) - x_range[0]) / (x_range[1] - x_range[0])
        fy = (value - y_low) / (y_high - y_low)
        return int(left + fx * (width - left - right)), int(height - bottom - fy * (height - top - bottom))

    black, grey = (0, 0, 0), (200, 200, 200)
    for decade in range(x_range[0], x_range[1] + 1):
        px, _ = xy(10.0 ** decade, y_low)
        cv2.line(image, (px, top), (px, height - bottom), grey, 1)
        cv2.putText(image, f"{10.0 ** decade:g}", (px - 14, height - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    black, 1, cv2.LINE_AA)
    for i in range(5):
        value = y_low + (y_high - y_low) * i / 4
        _, py = xy(10.0 ** x_range[0], value)
        cv2.line(image, (left, py), (width - right, py), grey, 1)
        cv2.putText(image, f"{value:.3g}", (6, py + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.42, black, 1, cv2.LINE_AA)
    cv2.rectangle(image, (left, top), (width - right, height - bottom), black, 1)
    cv2.putText(image, f"{task}: {metric} vs seconds per fusion", (left, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, black, 1,
                cv2.LINE_AA)
    cv2.putText(image, "seconds (log scale)", (width // 2 - 60, height - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.45, black, 1,
                cv2.LINE_AA)
    for method, pts in points.items():
        corners = [xy(s, v) for s, v, _ in pts]
        for start, end in zip(corners, corners[1:]):
            cv2.line(image, start, end, colours[method], 2, cv2.LINE_AA)
        for (px, py), (_, _, label) in zip(corners, pts):
            cv2.circle(image, (px, py), 5, colours[method], -1, cv2.LINE_AA)
            cv2.putText(image, label, (px + 6, py - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colours[method], 1,
                        cv2.LINE_AA)
    return image


def plot_section(plot: Path, doc: Path, metric: str, what: str) -> List[str]:
    """The generated "Quality vs time" paragraph that shows ``plot`` (``what``: the points drawn)."""
    return ["### Quality vs time", "", f"{metric} (mean per task) against seconds per fusion, {what}.", "",
            f"![{metric} vs seconds]({os.path.relpath(plot, doc.parent)})", ""]


def update_doc(doc: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the block between ``begin`` and ``end`` in ``doc`` (append it when absent; create the file,
    with an empty Findings section, if needed)."""
    generated = f"{begin}\n{block}{end}"
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + generated + rest.split(end, 1)[1]
    elif text:
        text = text.rstrip("\n") + "\n\n" + generated + "\n"
    else:
        text = ("# Quality: DIG vs static guidance, and the DIG settings\n\n"
                "Generated by `benchmarks/quality_sweep.py` between the markers below; the Findings section "
                "is written by hand.\n\n" + generated + "\n\n" + FINDINGS)
    io.write_text(doc, text)


def set_up(args: argparse.Namespace, pairs: Sequence[evaluation.Pair], providers: Sequence[str]) -> List[str]:
    """The generated set-up paragraph: command, machine, model, pairs, resolution."""
    listed = "; ".join(f"{task}: " + ", ".join(f"{p.dataset}/{p.name}" for p in pairs if p.task == task)
                       for task in api.TASKS)
    base = BASE
    e_step = f"E-step window {base.em_window}" + (" (DDFM's)" if base.em_window == 1 else "")
    return ["## Sweep set-up (generated)", "",
            f"Command: `python benchmarks/quality_sweep.py {' '.join(sys.argv[1:])}`", "",
            f"Machine: {machine_line()}; backend {args.backend} ({', '.join(providers)}).", "",
            f"Model: {args.model or f'the bundled prior ({bundled_prior()})'}.", "",
            f"Pairs ({len(pairs)}, the first {args.pairs_per_task} per task taken in turn from each dataset of "
            f"the development set): {listed}.", "",
            f"Sources downscaled with OpenCV INTER_AREA so that the long side is at most {args.max_side} px; "
            "every metric and time is at that size.", "",
            f"Unless a table varies it: DIG refresh every {base.dig_every} steps, window {base.dig_window}, "
            f"tau {base.dig_tau:g}, {e_step}, lamb {base.lamb:g}, rho {base.rho:g}, seed {base.seed}. Metrics: "
            "`runtime/metrics.py` (CDDFuse Evaluator conventions), grey 0..255, A then B; each cell is the mean "
            "over the task's pairs (per-pair rows, std and the other metrics in each sub-folder's `per_pair.csv` "
            "and `summary.csv`). Seconds: wall time of one fusion on this machine.", ""]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = quality_parser(__doc__.split("\n\n")[0], "quality_sweep")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "quality_time.png"))
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
    doc, plot = Path(args.doc), Path(args.plot)
    with closing(api.open_runner(args.model, args.backend)) as runner:
        providers = list(getattr(runner, "providers", []))
        results = fuse_all(runner, runs, pairs, Path(args.out), args.max_side, args.model, args.estimate_only)
    if results is None:
        return 0
    io.write_image(plot, draw_plot(tables, runs, results, args.plot_metric))
    lines = set_up(args, pairs, providers) + format_tables(tables, results) + plot_section(
        plot, doc, args.plot_metric, "DIG and static at each step count of the first table, and the classical anchors")
    update_doc(doc, "\n".join(lines))
    print(f"wrote {doc} and {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
