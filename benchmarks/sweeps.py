"""The machinery the quality scripts share (``quality_sweep.py``, ``quality_all.py``, ``quality_fullres.py``).

A sweep is a set of runs, one ``dig2dig eval`` folder under ``runs/`` per distinct setting (named by
``folder_name``), and tables whose rows read (run, method) pairs from them. Before fusing, the rows
other folders hold for the same fusion are adopted (``adopt_rows``: equal settings for that task and
method, size and model, compared as data from each ``run.json``) and the time left is estimated.
The tables are spliced into docs/QUALITY.md between a script's markers (``update_doc``).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from dig2dig.runtime import api, io
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.metrics import read_gray
from dig2dig.runtime.sampler import initial_noise, sample
from dig2dig.runtime.settings import TASK_DEFAULTS, TASKS, Settings, resolve, task_default_text
from machine import machine_line

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_T = 500  # the timestep at which one model call is timed for the estimate
Summaries = Dict[Tuple[str, str, str], Dict[str, str]]  # per-task summary rows by (folder, task, method)
REGENERATE = "`bash benchmarks/quality.sh`"


# The studies of docs/QUALITY.md's generated blocks (all pairs, full resolution) vary each knob around the
# full-size reference: DIG at full size, 10 steps, each task's DIG window and temperature as chosen for it.
# It was the defaults of dig2dig fuse until the speed defaults of 2026-12-06 (CHANGELOG.md), which
# benchmarks/quality_guard.py checks against it; ivf's temperature is the one per-task value they moved.
REFERENCE: Dict[str, Dict[str, Any]] = {
    task: {**defaults, "steps": 10, "dig_scale": 1, **({"dig_tau": 0.667} if task == "ivf" else {})}
    for task, defaults in TASK_DEFAULTS.items()}


def reference_text(field: str) -> str:
    """``ivf 0.667, mif 0.25, mef 2, mff 0.5``: a per-task field of the full-size reference, for tables."""
    return ", ".join(f"{task} {values[field]:g}" for task, values in REFERENCE.items())


@dataclass
class Run:
    """One folder of a sweep: a setting, the methods fused with it, and the fields left at each task's value in
    ``REFERENCE``."""

    settings: Settings
    methods: List[str]
    per_task: Tuple[str, ...] = ()

    def task_settings(self) -> Dict[str, Settings]:
        """Each task's settings: ``settings``, but the ``per_task`` fields at that task's ``REFERENCE`` values."""
        given = {k: v for k, v in asdict(self.settings).items() if k not in self.per_task}
        return {task: resolve(task, **given, **{f: REFERENCE[task][f] for f in self.per_task}) for task in TASKS}


@dataclass
class Table:
    """One generated table: a title and rows of (label, folder, method)."""

    title: str
    rows: List[Tuple[str, str, str]]


def folder_name(settings: Settings, per_task: Sequence[str] = ()) -> str:
    """``steps10_every2_window9_tau2``: ``tau-ivf1-mif0.5-mef2-mff0.5`` with each task's tau and
    ``window-ivf61-mif41-mef61-mff41`` with each task's window where ``per_task`` names them (so a change of
    ``REFERENCE`` starts new folders and keeps the old ones), ``_absolute`` for the absolute temperature,
    ``_emN`` for an E-step window N > 1, ``xN`` after the window for N > 1 DIG window passes, ``_px`` for an
    E-step window in pixels (``em_window_side`` 0), ``_sideN`` for one given at another long side than
    256 px and ``_powG`` for an E-step power G < 1."""
    def value(field: str) -> str:
        if field in per_task:
            return "".join(f"-{task}{values[field]:g}" for task, values in REFERENCE.items())
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


def parse_overrides(form: str) -> Dict[str, Any]:
    """``FIELD=VALUE`` words over ``Settings``: ``"dig_scale=2 em_power=1"`` -> ``{"dig_scale": 2, "em_power": 1}``
    (whole numbers as int, other numbers as float, the rest as text)."""
    values: Dict[str, Any] = {}
    for word in form.split():
        name, _, text = word.partition("=")
        try:
            values[name] = int(text)
        except ValueError:
            try:
                values[name] = float(text)
            except ValueError:
                values[name] = text
    return values


def select_pairs(pairs: Sequence[evaluation.Pair], per_task: int) -> List[evaluation.Pair]:
    """``per_task`` pairs of each task, taken in turn from its datasets (manifest order)."""
    chosen = []
    for task in TASKS:
        by_dataset: Dict[str, List[evaluation.Pair]] = {}
        for pair in pairs:
            if pair.task == task:
                by_dataset.setdefault(pair.dataset, []).append(pair)
        queues = list(by_dataset.values())
        turns = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
        chosen += turns[:per_task]
    return chosen


def fingerprint(record: Dict[str, Any], task: str, method: str) -> str:
    """What a ``method`` fusion of a ``task`` pair depends on, from a ``run.json`` record: every setting for
    DIG, all but the DIG fields for static guidance, none for the classical methods; the size and the model."""
    settings = {} if method in evaluation.CLASSICAL_METHODS else record["settings"][task]
    if method == "static":
        settings = {k: v for k, v in settings.items() if not k.startswith("dig_")}
    numbers = {k: float(v) if isinstance(v, (int, float)) else v for k, v in settings.items()}
    return json.dumps([method, numbers, record["max_side"], record["model_sha256"]], sort_keys=True)


def adopt_rows(pairs: Sequence[evaluation.Pair], out: Path, run: Run, max_side: int, model: Optional[str],
               folders: Sequence[Path]) -> int:
    """Copy into ``out`` the rows other ``folders`` hold for the same fusions (equal ``fingerprint``); how many.

    The fusions are deterministic (fixed seed), so a row computed under another folder's name is the one
    ``evaluate`` would compute: a change of one task's default recomputes only what it changes."""
    record = evaluation.run_record(run.task_settings(), max_side, model)
    out.mkdir(parents=True, exist_ok=True)
    evaluation.check_run(out, record)
    rows = evaluation.read_rows(out / evaluation.PER_PAIR)
    done = {(r["task"], r["dataset"], r["name"], r["method"]) for r in rows}
    wanted = {(p.task, p.dataset, p.name, m): fingerprint(record, p.task, m) for p in pairs for m in run.methods}
    wanted = {key: value for key, value in wanted.items() if key not in done}
    adopted = []
    for folder in folders:
        if not wanted or folder.resolve() == out.resolve() or not (folder / evaluation.RUN).is_file():
            continue
        other = evaluation.read_record(folder / evaluation.RUN)
        for row in evaluation.read_rows(folder / evaluation.PER_PAIR):
            key = (row["task"], row["dataset"], row["name"], row["method"])
            if key in wanted and not row.get("error") and wanted[key] == fingerprint(other, row["task"], key[3]):
                adopted.append(row)
                del wanted[key]
    if adopted:
        io.write_text(out / evaluation.PER_PAIR, evaluation.format_csv(rows + adopted, evaluation.PAIR_COLUMNS))
    return len(adopted)


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
    side = 8 * runner.info.multiple  # the counts do not depend on the size
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
    image, _ = evaluation.fuse_pair(small[0], "average", Settings(), None)
    scratch = out / "estimate.png"
    io.write_image(scratch, image)
    start = time.perf_counter()
    evaluation.score(scratch, small[0])
    metric_seconds = (time.perf_counter() - start) / pixels[pairs[0].key]
    scratch.unlink()
    total, count = 0.0, 0
    for name, run in runs.items():
        done = {(r["task"], r["dataset"], r["name"], r["method"])
                for r in evaluation.read_rows(out / name / evaluation.PER_PAIR)}
        for pair in pairs:
            for method in run.methods:
                if (pair.task, pair.dataset, pair.name, method) not in done:
                    model = sum(n * per_call[b] for b, n in calls.get((name, method), Counter()).items())
                    total += pixels[pair.key] * (model / (side * side) + metric_seconds)
                    count += 1
    return total, count


def fuse_all(runner: Runner, runs: Dict[str, Run], pairs: Sequence[evaluation.Pair], out: Path, max_side: int,
             model: Optional[str], estimate_only: bool) -> bool:
    """Adopt what other folders of ``out`` hold, print the estimated time of what ``runs`` still lack
    (downscaled sources shared in ``out/sources``); then, unless ``estimate_only`` (False), fuse it all."""
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    sources = out / "sources"
    folders = sorted(path for path in out.iterdir() if path.is_dir())
    adopted = sum(adopt_rows(pairs, out / name, run, max_side, model, folders) for name, run in runs.items())
    if adopted:
        print(f"{adopted} fusions adopted from folders that hold them under other settings' names", flush=True)
    seconds, count = estimate(runner, runs, pairs, out, sources, max_side)
    print(f"{len(pairs)} pairs x {len(runs)} settings: {count} fusions to do, estimated {seconds / 60:.1f} min "
          f"on this machine ({os.cpu_count()} cores)", flush=True)
    if estimate_only:
        return False
    for i, (name, run) in enumerate(runs.items(), 1):
        print(f"[{i}/{len(runs)}] {name}: {', '.join(run.methods)}", flush=True)
        evaluation.evaluate(pairs, out / name, run.methods, run.task_settings(), max_side, model=model,
                            runner=runner, sources=sources, quiet=True)
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return True


def held(runs: Dict[str, Run], pairs: Sequence[evaluation.Pair], out: Path) -> Summaries:
    """Every run's per-task summary rows of what its folder holds for ``pairs``, by (folder, task, method)."""
    held_rows: Summaries = {}
    for name, run in runs.items():
        rows = evaluation.read_rows(out / name / evaluation.PER_PAIR)
        for row in evaluation.summarise(evaluation.select_rows(rows, pairs, run.methods)):
            if row["dataset"] == evaluation.ALL_DATASETS:
                held_rows[(name, row["task"], row["method"])] = row
    return held_rows


def quality_parser(description: str, out: str, tables: Sequence[str]) -> argparse.ArgumentParser:
    """The options every quality script shares: ``--data``, ``--out`` (default ``runs/OUT``), ``--doc``,
    ``--estimate-only``, ``--tables`` (those whose missing fusions are computed now) and ``--held-only``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"), help="the development data folder")
    parser.add_argument("--out", default=str(ROOT / "runs" / out), help="one eval folder per setting")
    parser.add_argument("--doc", default=str(ROOT / "docs" / "QUALITY.md"), help="where the tables are spliced")
    parser.add_argument("--estimate-only", action="store_true", help="print the time estimate and stop")
    parser.add_argument("--tables", default=",".join(tables), help=f"comma-separated tables to compute now, of "
                        f"{', '.join(tables)}")
    parser.add_argument("--held-only", action="store_true",
                        help="fuse nothing: write the tables from what the folders hold so far (n says how much)")
    return parser


def fuse_tables(parser: argparse.ArgumentParser, args: argparse.Namespace, runs: Dict[str, Run],
                tables: Dict[str, Table], pairs: Sequence[evaluation.Pair], max_side: int,
                runner: Runner, model: Optional[str] = None) -> Optional[Summaries]:
    """Fuse what the runs of ``args.tables`` lack (nothing with ``--held-only``); then what every folder
    holds (``held``). None after ``--estimate-only``, or with ``--held-only`` where no folder exists yet
    (the document is then left as it is)."""
    chosen = [t.strip() for t in args.tables.split(",") if t.strip()]
    unknown = sorted(set(chosen) - set(tables))
    if unknown:
        parser.error(f"unknown table(s) {', '.join(unknown)} (choose from {', '.join(tables)})")
    todo = {name: runs[name] for key in chosen for _, name, _ in tables[key].rows}
    out = Path(args.out)
    if args.held_only and not out.is_dir():
        print(f"{out}: no results held yet; {args.doc} is left as it is")
        return None
    if not args.held_only and not fuse_all(runner, todo, pairs, out, max_side, model, args.estimate_only):
        return None
    return held(runs, pairs, out)


def run_tables(parser: argparse.ArgumentParser, args: argparse.Namespace, runs: Dict[str, Run],
               tables: Dict[str, Table], pairs: Sequence[evaluation.Pair], max_side: int) -> Optional[Summaries]:
    """``fuse_tables`` with the bundled prior on onnxruntime."""
    with closing(api.open_runner()) as runner:
        return fuse_tables(parser, args, runs, tables, pairs, max_side, runner)


def format_tables(tables: Sequence[Table], results: Summaries) -> List[str]:
    """Markdown: per table, one sub-table per task of the mean key metrics and seconds; the rows whose
    folders hold nothing for the task yet are named under it."""
    columns = evaluation.KEY_METRICS + ("seconds",)
    lines = []
    for table in tables:
        lines += [f"### {table.title}", ""]
        for task in TASKS:
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


def results_folder(out: Path) -> str:
    """Where a script's folders are, as the generated text names it (relative to the repository)."""
    return Path(os.path.relpath(out, ROOT)).as_posix()


def draw_plot(table: Table, runs: Dict[str, Run], results: Summaries, metric: str, path: Path) -> None:
    """Save a matplotlib figure to ``path``, one panel per task: ``metric`` against seconds per fusion (log
    scale), from ``table``'s rows; diffusion points are labelled with their number of steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: Dict[str, List[str]] = {}
    for _, folder, method in table.rows:
        series.setdefault(method, []).append(folder)
    figure, axes = plt.subplots(2, 2, figsize=(10, 7.5), constrained_layout=True)
    plotted = False
    for axis, task in zip(axes.flat, TASKS):
        for method, folders in series.items():
            entries = [(runs[folder], entry) for folder in folders
                       for entry in [results.get((folder, task, method))] if entry and entry[f"{metric}_mean"]]
            seconds = [float(entry["seconds_mean"]) for _, entry in entries]
            values = [float(entry[f"{metric}_mean"]) for _, entry in entries]
            axis.plot(seconds, values, marker="o", label=method)
            if method in evaluation.DIFFUSION_METHODS:
                for run, x, y in zip((run for run, _ in entries), seconds, values):
                    axis.annotate(str(run.settings.steps), (x, y), textcoords="offset points", xytext=(5, 5),
                                  fontsize=8)
            plotted = plotted or bool(entries)
        axis.set(xscale="log", title=f"{task}: {metric} vs seconds per fusion", xlabel="seconds (log scale)",
                 ylabel=metric)
        axis.grid(True, which="major", alpha=0.3)
    if not plotted:
        raise SystemExit("no results to plot")
    axes.flat[0].legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_section(plot: Path, table: Table, runs: Dict[str, Run], results: Summaries, metric: str,
                 what: str) -> List[str]:
    """Draw the quality-time plot of ``table`` to ``plot`` and return the generated paragraph that names it
    (``what``: the points drawn); the plot stays out of git, so the text names the command that writes it."""
    draw_plot(table, runs, results, metric, plot)
    return ["### Quality vs time", "", f"{metric} (mean per task) against seconds per fusion, {what}.", "",
            f"The plot (`{plot.name}`) is written under `runs/` by {REGENERATE}.", ""]


def block_header(title: str, script: str, command: str, machine_note: str = "") -> List[str]:
    """The first lines of a generated block: its heading, the command that wrote it and the machine."""
    return [f"## {title} (generated)", "", f"Command: `python benchmarks/{script} {command}`", "",
            f"Machine: {machine_line()}{machine_note}.", ""]


def defaults_text(base: Settings) -> str:
    """The settings every row of a generated table starts from, in words (per-task fields named per task)."""
    return (f"{base.steps} steps for every task (the defaults: {task_default_text('steps')}), DIG refresh every "
            f"{base.dig_every} steps at full size, window per task ({reference_text('dig_window')}) x "
            f"{base.dig_passes} passes, E-step window {base.em_window} at a {base.em_window_side}-px long side "
            f"(scaled to each pair's), E-step power {base.em_power:g}, tau per task ({reference_text('dig_tau')}), lamb "
            f"{base.lamb:g}, rho {base.rho:g}, seed {base.seed}")


def write_block(doc: Path, lines: Sequence[str], begin: str, end: str, plot: Optional[Path] = None) -> None:
    """Splice ``lines`` into ``doc`` between the markers and say what was written."""
    update_doc(doc, lines, begin, end)
    print(f"wrote {doc}" + (f" and {plot}" if plot else ""))


def update_doc(doc: Path, lines: Sequence[str], begin: str, end: str) -> None:
    """Replace the block between the markers ``begin`` and ``end`` of ``doc`` with ``lines`` (each ending in
    a newline, the last one blank)."""
    text = doc.read_text(encoding="utf-8") if doc.is_file() else ""
    if begin not in text or end not in text:
        raise SystemExit(f"{doc}: the markers {begin} and {end} are missing")
    head, rest = text.split(begin, 1)
    io.write_text(doc, head + begin + "\n" + "\n".join(lines) + end + rest.split(end, 1)[1])


def command_line(parser: argparse.ArgumentParser, args: argparse.Namespace, names: Sequence[str]) -> str:
    """The options of ``names`` that differ from their defaults (``--data`` always), as the generated
    text quotes the command; ``--tables`` and ``--held-only`` never change the tables, so they are left out."""
    words = []
    for name in names:
        value, flag = getattr(args, name), "--" + name.replace("_", "-")
        if name == "data" or value != parser.get_default(name):
            words.append(flag if value is True else f"{flag} {value}")
    return " ".join(words)
