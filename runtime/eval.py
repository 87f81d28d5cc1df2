"""``dig2dig eval``: fuse and score every pair of a folder with several methods.

Pairs are laid out ``DATA/TASK/DATASET/{a,b}/NAME.*``, or listed by ``DATA/manifest.csv`` (columns
task, dataset, name, a_path, b_path; paths relative to DATA). Methods: ``dig`` and ``static`` (the
diffusion sampler, one runner shared by all fusions) and the classical anchors ``average`` and
``laplacian`` on luminance. Every output is scored with ``runtime/metrics.py`` against its sources.

OUTDIR receives ``per_pair.csv`` (one row per pair and method, rewritten after each fusion, so a
rerun resumes where a run stopped), ``summary.csv`` (mean and std per task/dataset/method; dataset
``all`` per task/method), ``report.md``, ``fused/METHOD/TASK_DATASET_NAME.png`` and ``run.json``
(the settings of each task, the size and the model: a folder never mixes results of other settings).
"""
from __future__ import annotations

import argparse
import csv
import io as text_io
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from . import api, io, preflight
from .backends.base import Runner
from .checksums import sha256
from .errors import InputError
from .metrics import METRIC_NAMES, SINGLE, TRIPLE, read_gray
from .options import add_settings_options, limits_from_args, model_from_args, setting_overrides
from .progress import Progress
from .settings import TASKS, Limits, Settings, resolve

PathLike = Union[str, Path]
Row = Dict[str, str]

DIFFUSION_METHODS = ("dig", "static")
CLASSICAL_METHODS = ("average", "laplacian")
METHODS = DIFFUSION_METHODS + CLASSICAL_METHODS
KEY_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIFF", "Qabf", "SSIM")
VALUE_COLUMNS = METRIC_NAMES + ("seconds",)
PAIR_COLUMNS = ("task", "dataset", "name", "method", "steps", "height", "width", "seconds") + METRIC_NAMES + ("error",)
SUMMARY_COLUMNS = ("task", "dataset", "method", "steps", "n", "errors") + tuple(
    f"{column}_{stat}" for column in VALUE_COLUMNS for stat in ("mean", "std"))
ALL_DATASETS = "all"
PER_PAIR, SUMMARY, REPORT, RUN = "per_pair.csv", "summary.csv", "report.md", "run.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
LAPLACIAN_LEVELS = 5
LAPLACIAN_MIN_SIDE = 8  # px: the pyramid's coarsest level stays at least this large


@dataclass(frozen=True)
class Pair:
    """One registered source pair of a task (A and B in the roles of ``TASKS``)."""

    task: str
    dataset: str
    name: str
    a: Path
    b: Path

    @property
    def key(self) -> str:
        """``TASK_DATASET_NAME``: the file name stem of everything written for this pair."""
        return f"{self.task}_{self.dataset}_{self.name}"


def find_pairs(data: PathLike, task: Optional[str] = None, dataset: Optional[str] = None,
               limit_per_dataset: Optional[int] = None) -> List[Pair]:
    """The pairs under ``data`` (manifest order, else sorted), filtered; tasks outside ``TASKS`` are ignored."""
    root = Path(data)
    if not root.is_dir():
        raise InputError(f"{root}: no such data folder")
    counts: Dict[Tuple[str, str], int] = {}
    selected = []
    for pair in _manifest_pairs(root) if (root / "manifest.csv").is_file() else _walk_pairs(root):
        group = (pair.task, pair.dataset)
        if pair.task in TASKS and task in (None, pair.task) and dataset in (None, pair.dataset) and (
                limit_per_dataset is None or counts.get(group, 0) < limit_per_dataset):
            counts[group] = counts.get(group, 0) + 1
            selected.append(pair)
    if not selected:
        wanted = ", ".join(f"{k} {v}" for k, v in (("task", task), ("dataset", dataset)) if v) or "any task"
        raise InputError(f"{root}: no pairs found ({wanted}; expected TASK/DATASET/{{a,b}}/NAME.* "
                         f"with TASK one of {', '.join(TASKS)}, or manifest.csv)")
    return selected


def _manifest_pairs(root: Path) -> List[Pair]:
    manifest = root / "manifest.csv"
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"task", "dataset", "name", "a_path", "b_path"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        return [Pair(r["task"], r["dataset"], r["name"], root / r["a_path"], root / r["b_path"]) for r in reader]


def _walk_pairs(root: Path) -> List[Pair]:
    pairs = []
    for folder in sorted(root.glob("*/*")):
        if not ((folder / "a").is_dir() and (folder / "b").is_dir()):
            continue
        b_files = {p.stem: p for p in (folder / "b").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        pairs += [Pair(folder.parent.name, folder.name, a.stem, a, b_files[a.stem])
                  for a in sorted((folder / "a").iterdir()) if a.suffix.lower() in IMAGE_SUFFIXES and a.stem in b_files]
    return pairs


def downscale_pair(pair: Pair, folder: PathLike, max_side: int, max_pixels: int = Limits.max_pixels) -> Pair:
    """The pair shrunk (OpenCV INTER_AREA) to a long side of at most ``max_side``, as 8-bit PNG copies
    ``folder/TASK_DATASET_NAME_{a,b}.png`` written once and then reused; unchanged when small enough."""
    sources = api.prepare_sources([pair.a, pair.b], max_pixels=max_pixels)
    height, width = sources[0].luma.shape
    size = io.shrunk_size(height, width, max_side)
    if size is None:
        return pair
    paths = [Path(folder) / f"{pair.key}_{role}.png" for role in ("a", "b")]
    if not all(path.is_file() for path in paths):
        Path(folder).mkdir(parents=True, exist_ok=True)
        for source, path in zip(sources, paths):
            small = io.resize_to(source, *size)
            io.write_image(path, io.to_image(small.luma, small.chroma))
    return replace(pair, a=paths[0], b=paths[1])


def average_fusion(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean of the two luminances: the plainest anchor (keeps everything, halves the contrast)."""
    return ((a + b) * 0.5).astype(np.float32)


def laplacian_fusion(a: np.ndarray, b: np.ndarray, levels: int = LAPLACIAN_LEVELS) -> np.ndarray:
    """Laplacian-pyramid fusion (Burt & Adelson): per level the detail of larger magnitude, mean of the base."""
    depth = int(np.clip(int(math.log2(max(min(a.shape), 1) / LAPLACIAN_MIN_SIDE)), 0, levels))
    pyramid_a, pyramid_b = _laplacian_pyramid(a, depth), _laplacian_pyramid(b, depth)
    image = (pyramid_a[-1] + pyramid_b[-1]) * 0.5
    for detail_a, detail_b in zip(pyramid_a[-2::-1], pyramid_b[-2::-1]):
        detail = np.where(np.abs(detail_a) >= np.abs(detail_b), detail_a, detail_b)
        image = cv2.pyrUp(image, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return np.clip(image, 0.0, 1.0).astype(np.float32)


def _laplacian_pyramid(x: np.ndarray, depth: int) -> List[np.ndarray]:
    """``depth`` detail levels, finest first, then the coarse base (OpenCV pyrDown/pyrUp)."""
    levels: List[np.ndarray] = []
    current: np.ndarray = x.astype(np.float32)
    for _ in range(depth):
        smaller = cv2.pyrDown(current)
        levels.append(current - cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0])))
        current = smaller
    return levels + [current]


CLASSICAL: Dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "average": average_fusion, "laplacian": laplacian_fusion}


def fuse_pair(pair: Pair, method: str, settings: Settings, runner: Optional[Runner],
              limits: Limits = Limits()) -> Tuple[np.ndarray, float]:
    """One pair fused with one method within ``limits``, and the seconds from reading the sources to the fused
    image."""
    start = time.perf_counter()
    if method in CLASSICAL:
        sources = api.prepare_sources([pair.a, pair.b], max_pixels=limits.max_pixels)
        image = io.to_image(CLASSICAL[method](sources[0].luma, sources[1].luma), io.merge_chroma(sources))
    else:
        guided = replace(settings, guidance=method)
        image = api.fuse(pair.a, pair.b, task=pair.task, settings=guided, runner=runner, limits=limits).image
    return image, time.perf_counter() - start


def score(fused: PathLike, pair: Pair) -> Tuple[Dict[str, float], List[str]]:
    """Every metric of a fused image file vs the pair's sources; a metric that fails is reported, not fatal."""
    f, a, b = read_gray(fused), read_gray(pair.a), read_gray(pair.b)
    values: Dict[str, float] = {}
    errors: List[str] = []
    for name in METRIC_NAMES:
        try:
            values[name] = SINGLE[name](f) if name in SINGLE else TRIPLE[name](f, a, b)
        except ValueError as exc:
            errors.append(f"{name}: {exc}")
    return values, errors


def run_record(settings: Mapping[str, Settings], max_side: Optional[int], model: Optional[PathLike]) -> Dict[str, Any]:
    """What ``run.json`` holds: each task's settings (the methods set the guidance), the size limit, the model."""
    path = Path(model) if model else api.default_model()
    tasks = {task: {k: v for k, v in asdict(s).items() if k != "guidance"} for task, s in settings.items()}
    record = {"settings": tasks, "max_side": max_side, "model_sha256": sha256(path)}
    return json.loads(json.dumps(record))


def read_record(path: Path) -> Dict[str, Any]:
    """A ``run.json`` as :func:`run_record` writes it today: a setting it lacks (one added to dig2dig since it
    was written) is given its default, which keeps the earlier behaviour."""
    record = json.loads(path.read_text(encoding="utf-8"))
    defaults = json.loads(json.dumps({k: v for k, v in asdict(Settings()).items() if k != "guidance"}))
    record["settings"] = {task: {**defaults, **values} for task, values in record.get("settings", {}).items()}
    return record


def check_run(out: Path, record: Dict[str, Any]) -> None:
    """Write ``run.json``, or refuse a folder whose ``run.json`` records other settings (:func:`read_record`)."""
    path = out / RUN
    if not path.is_file():
        io.write_text(path, json.dumps(record, indent=1) + "\n")
        return
    old, new = _flat(read_record(path)), _flat(record)
    changed = sorted({key.split(".")[-1] for key in set(old) | set(new) if old.get(key) != new.get(key)})
    if changed:
        raise InputError(f"{out} holds results of other settings ({', '.join(changed)} differ): "
                         "choose another output folder")


def _flat(record: Dict[str, Any]) -> Dict[str, Any]:
    settings = record.get("settings", {})
    return {**{f"{task}.{k}": v for task in settings for k, v in settings[task].items()},
            **{k: v for k, v in record.items() if k != "settings"}}


def evaluate(pairs: Sequence[Pair], out: PathLike, methods: Sequence[str], settings: Mapping[str, Settings],
             max_side: Optional[int] = None, model: Optional[PathLike] = None, backend: str = "ort",
             runner: Optional[Runner] = None, sources: Optional[PathLike] = None, quiet: bool = False,
             limits: Limits = Limits()) -> List[Row]:
    """Fuse and score ``pairs`` x ``methods`` into ``out`` with each task's ``settings``, skipping what
    ``per_pair.csv`` holds; writes the summary and report of these pairs and methods and returns the summary.

    ``runner`` serves every diffusion fusion (opened from ``model``/``backend`` when needed and not given);
    ``sources`` holds the downscaled copies (default ``out/sources``); ``limits`` bounds each fusion."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none)'} (choose from {', '.join(METHODS)})")
    out = Path(preflight.output_folder(out))
    out.mkdir(exist_ok=True)
    check_run(out, run_record(settings, max_side, model))
    folder = Path(sources or out / "sources") / f"max{max_side}"
    rows = read_rows(out / PER_PAIR)
    done = {_row_key(row) for row in rows}
    todo = [(pair, m) for pair in pairs for m in methods if (pair.task, pair.dataset, pair.name, m) not in done]
    own = runner is None and any(method in DIFFUSION_METHODS for _, method in todo)
    runner = api.open_runner(model, backend) if own else runner
    try:
        with Progress("eval", len(todo), quiet=quiet) as bar:
            for count, (pair, method) in enumerate(todo, 1):
                rows.append(_evaluate_one(pair, method, settings[pair.task], runner, out, folder, max_side, limits))
                io.write_text(out / PER_PAIR, format_csv(rows, PAIR_COLUMNS))
                bar.update(count)
    finally:
        if own and runner is not None:
            runner.close()
    selected = select_rows(rows, pairs, methods)
    summary = summarise(selected)
    io.write_text(out / SUMMARY, format_csv(summary, SUMMARY_COLUMNS))
    io.write_text(out / REPORT, format_report(summary, selected, settings, max_side))
    return summary


def _evaluate_one(pair: Pair, method: str, settings: Settings, runner: Optional[Runner], out: Path,
                  folder: Path, max_side: Optional[int], limits: Limits) -> Row:
    """One row of per_pair.csv; a failure is recorded in its ``error`` column, so one bad pair ends no run."""
    row = {"task": pair.task, "dataset": pair.dataset, "name": pair.name, "method": method,
           "steps": str(settings.steps) if method in DIFFUSION_METHODS else ""}
    try:
        source_pair = pair if max_side is None else downscale_pair(pair, folder, max_side, limits.max_pixels)
        image, seconds = fuse_pair(source_pair, method, settings, runner, limits)
        path = out / "fused" / method / f"{pair.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_image(path, image)
        values, errors = score(path, source_pair)
    except Exception as exc:  # noqa: BLE001 - recorded in the row instead
        return {**row, "error": f"{type(exc).__name__}: {exc}"}
    row.update(height=str(image.shape[0]), width=str(image.shape[1]), seconds=_number(seconds), error="; ".join(errors))
    return {**row, **{name: _number(value) for name, value in values.items()}}


def _row_key(row: Row) -> Tuple[str, str, str, str]:
    return row["task"], row["dataset"], row["name"], row["method"]


def _number(value: float) -> str:
    return f"{value:.10g}"


def select_rows(rows: Sequence[Row], pairs: Sequence[Pair], methods: Sequence[str]) -> List[Row]:
    """The rows of ``pairs`` x ``methods``, in their order (a folder may hold more)."""
    wanted = {(pair.task, pair.dataset, pair.name, method) for pair in pairs for method in methods}
    return [row for row in rows if _row_key(row) in wanted]


def read_rows(path: PathLike) -> List[Row]:
    """The rows of a table written by ``format_csv`` (none when the file does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"task", "dataset", "name", "method"} <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: not a per-pair table of 'dig2dig eval' (columns {reader.fieldnames})")
        return [dict(row) for row in reader]


def format_csv(rows: Sequence[Row], columns: Sequence[str]) -> str:
    """CSV text with the given columns (missing values empty)."""
    buffer = text_io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def summarise(rows: Sequence[Row]) -> List[Row]:
    """Mean and sample std of every metric and the seconds per task/dataset/method and per task/method
    (dataset ``all``), in first-seen order; failed values are left out, ``errors`` counts rows with an error."""
    groups: Dict[Tuple[str, str, str], List[Row]] = {}
    for row in rows:
        for dataset in (ALL_DATASETS, row["dataset"]):
            groups.setdefault((row["task"], dataset, row["method"]), []).append(row)
    first = {field: list(dict.fromkeys([ALL_DATASETS] * (field == "dataset") + [row[field] for row in rows]))
             for field in ("task", "dataset", "method")}
    summary = []
    for task, dataset, method in sorted(groups, key=lambda k: (first["task"].index(k[0]), first["method"].index(k[2]),
                                                               first["dataset"].index(k[1]))):
        members = groups[(task, dataset, method)]
        entry = {"task": task, "dataset": dataset, "method": method, "steps": members[0]["steps"],
                 "n": str(len(members)), "errors": str(sum(1 for m in members if m.get("error")))}
        for column in VALUE_COLUMNS:
            values = [float(m[column]) for m in members if m.get(column)]
            entry[f"{column}_mean"] = _number(float(np.mean(values))) if values else ""
            entry[f"{column}_std"] = _number(float(np.std(values, ddof=1))) if len(values) > 1 else ""
        summary.append(entry)
    return summary


def format_report(summary: Sequence[Row], rows: Sequence[Row], settings: Mapping[str, Settings],
                  max_side: Optional[int]) -> str:
    """report.md: the size and settings, then per task the key metrics and seconds (mean ± std)."""
    size = (f"Sources downscaled (OpenCV INTER_AREA) to a long side of at most {max_side} px; every metric and "
            "time is at that size." if max_side else "Sources at their native size.")
    lines = ["# dig2dig eval", "", f"{len(rows)} fusions. {size} Metrics: `dig2dig metrics` on the grey fused "
             "image vs the grey sources (0..255, A then B); all of them in `summary.csv`. Seconds: wall time of "
             "one fusion, reading the sources to the fused image."]
    failed = sum(1 for row in rows if row.get("error"))
    if failed:
        lines += ["", f"**{failed} of {len(rows)} fusions recorded an error** (column `error` of `per_pair.csv`); "
                      "their failed values are left out of the means."]
    columns = KEY_METRICS + ("seconds",)
    for task in dict.fromkeys(row["task"] for row in summary):
        lines += ["", f"## {task}: A {TASKS[task][0]}, B {TASKS[task][1]}", "",
                  f"Diffusion settings: {settings[task].describe()}.", "",
                  "| dataset | method | n | " + " | ".join(columns) + " |", "|---|---|---|" + "---|" * len(columns)]
        lines += [f"| {e['dataset']} | {e['method']} | {e['n']} | " + " | ".join(_cell(e, c) for c in columns) + " |"
                  for e in summary if e["task"] == task]
    return "\n".join(lines) + "\n"


def _cell(entry: Row, column: str) -> str:
    mean, std = entry[f"{column}_mean"], entry[f"{column}_std"]
    digits = 2 if column == "seconds" else 3
    return "–" if not mean else f"{float(mean):.{digits}f}" + (f" ± {float(std):.{digits}f}" if std else "")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``dig2dig eval`` on the CLI's subcommands."""
    p = subparsers.add_parser("eval", help="fuse and score a folder of pairs with several methods",
                              usage="%(prog)s --data DATA -o OUTDIR [options]",
                              description="Fuse and score every pair of a folder with several methods: "
                                          "per_pair.csv, summary.csv and report.md in OUTDIR.")
    p.add_argument("--data", required=True, help="folder laid out TASK/DATASET/{a,b}/NAME.*, or with manifest.csv")
    p.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder, made if missing in a folder that exists; a rerun resumes it")
    p.add_argument("--methods", default="dig,static", help=f"comma-separated, of {', '.join(METHODS)} "
                                                          "(default dig,static)")
    p.add_argument("--dataset", help="only this dataset's pairs")
    p.add_argument("--limit-per-dataset", type=int, metavar="N", help="the first N pairs of each dataset")
    p.add_argument("--max-side", type=int, metavar="PX", help="downscale the sources (INTER_AREA) to this long side")
    p.add_argument("-q", "--quiet", action="store_true")
    add_settings_options(p, task_default=None)
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``dig2dig eval``: each task at its defaults and the options given, then ``evaluate``."""
    for name, value in (("--limit-per-dataset", args.limit_per_dataset), ("--max-side", args.max_side)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    overrides = setting_overrides(args)
    settings = {task: resolve(task, **overrides) for task in TASKS}
    limits = limits_from_args(args)
    pairs = find_pairs(args.data, args.task, args.dataset, args.limit_per_dataset)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    summary = evaluate(pairs, args.output, methods, settings, args.max_side, model_from_args(args), args.backend,
                       quiet=args.quiet, limits=limits)
    failed = sum(int(entry["errors"]) for entry in summary if entry["dataset"] == ALL_DATASETS)
    if failed:
        print(f"dig2dig eval: {failed} fusion(s) recorded an error (see {Path(args.output) / PER_PAIR})",
              file=sys.stderr)
    if not args.quiet:
        print(f"wrote {Path(args.output) / REPORT}")
    return 0
