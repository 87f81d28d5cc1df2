"""``dig2dig eval``: fuse every pair of a data folder with several methods and tabulate the metrics.

Layout: ``DIR/TASK/DATASET/{a,b}/NAME.*``; ``DIR/manifest.csv`` (task, dataset, name, a_path,
b_path) lists the pairs when present. ``dig`` and ``static`` are the diffusion sampler
(``api.fuse``, one runner shared by all fusions); ``average`` and ``laplacian`` are cheap classical
anchors on luminance. Every output is scored with ``runtime/metrics.py`` (grey 0..255, A then B,
the CDDFuse Evaluator conventions) against the sources it was fused from.

What OUTDIR receives: ``per_pair.csv`` (one row per pair and method, rewritten atomically after
each fusion, so an interrupted run loses at most one fusion and a rerun skips what is there),
``summary.csv`` (mean and std per task/dataset/method and per task/method), ``report.md`` (tables
and picture strips), ``fused/METHOD/TASK_DATASET_NAME.png``, ``weights/`` (DIG weights of the last
refresh), ``strips/``, ``sources/`` (the downscaled copies with ``--max-side``) and ``run.json``
(the settings: one folder never mixes results of different settings).
"""
from __future__ import annotations

import argparse
import csv
import io as text_io
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from tqdm import tqdm

from ..models import sha256
from . import api, io
from .backends.base import Runner
from .dig_maps import LABEL_HEIGHT, TILE_WIDTH, montage
from .errors import InputError
from .metrics import METRIC_NAMES, SINGLE, TRIPLE, read_gray
from .options import add_settings_options, setting_overrides
from .settings import TASK_DEFAULTS, TASK_FIELDS, TASKS, Settings, resolve, task_default_text

PathLike = Union[str, Path]

DIFFUSION_METHODS = ("dig", "static")
CLASSICAL_METHODS = ("average", "laplacian")
METHODS = DIFFUSION_METHODS + CLASSICAL_METHODS
# Settings fields added after run.json existed: recorded only when set, so older folders still resume.
LATER_SETTINGS: Dict[str, Any] = {"timesteps": None, "dig_norm": "spread", "em_window": 1, "dig_passes": 1,
                                  "em_window_side": 0, "em_power": 1.0}
KEY_METRICS = ("EN", "SD", "SF", "AG", "MI", "SCD", "VIFF", "Qabf", "SSIM")
VALUE_COLUMNS = METRIC_NAMES + ("seconds",)
PAIR_COLUMNS = ("task", "dataset", "name", "method", "steps", "height", "width", "seconds") + METRIC_NAMES + ("error",)
SUMMARY_COLUMNS = ("task", "dataset", "method", "steps", "n", "errors") + tuple(
    f"{column}_{stat}" for column in VALUE_COLUMNS for stat in ("mean", "std"))
ALL_DATASETS = "all"
PER_PAIR, SUMMARY, REPORT, RUN = "per_pair.csv", "summary.csv", "report.md", "run.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# The pyramid stops before its coarsest level would be smaller than this many pixels a side.
LAPLACIAN_LEVELS = 5
LAPLACIAN_MIN_SIDE = 8

Row = Dict[str, str]


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
    manifest = root / "manifest.csv"
    pairs = _manifest_pairs(root, manifest) if manifest.is_file() else _walk_pairs(root)
    selected: List[Pair] = []
    counts: Dict[Tuple[str, str], int] = {}
    for pair in pairs:
        if pair.task not in TASKS or task not in (None, pair.task) or dataset not in (None, pair.dataset):
            continue
        group = (pair.task, pair.dataset)
        if limit_per_dataset is not None and counts.get(group, 0) >= limit_per_dataset:
            continue
        counts[group] = counts.get(group, 0) + 1
        selected.append(pair)
    if not selected:
        wanted = ", ".join(f"{k} {v}" for k, v in (("task", task), ("dataset", dataset)) if v) or "any task"
        raise InputError(f"{root}: no pairs found ({wanted}; expected TASK/DATASET/{{a,b}}/NAME.* "
                         f"with TASK one of {', '.join(TASKS)})")
    return selected


def _manifest_pairs(root: Path, manifest: Path) -> List[Pair]:
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"task", "dataset", "name", "a_path", "b_path"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
        return [Pair(r["task"], r["dataset"], r["name"], root / r["a_path"], root / r["b_path"]) for r in reader]


def _walk_pairs(root: Path) -> List[Pair]:
    pairs = []
    for dataset_dir in sorted(root.glob("*/*")):
        a_dir, b_dir = dataset_dir / "a", dataset_dir / "b"
        if not (a_dir.is_dir() and b_dir.is_dir()):
            continue
        b_files = {p.stem: p for p in b_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
        for a_file in sorted(a_dir.iterdir()):
            if a_file.suffix.lower() in IMAGE_SUFFIXES and a_file.stem in b_files:
                pairs.append(Pair(dataset_dir.parent.name, dataset_dir.name, a_file.stem, a_file, b_files[a_file.stem]))
    return pairs


def downscale_pair(pair: Pair, folder: PathLike, max_side: int) -> Pair:
    """The pair with both sources shrunk (OpenCV INTER_AREA) so that the long side is at most ``max_side``.

    The copies are 8-bit PNGs ``folder/TASK_DATASET_NAME_{a,b}.png``, written once and then reused;
    a pair already small enough is returned unchanged.
    """
    sources = api.prepare_sources([pair.a, pair.b])
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


@dataclass
class Fused:
    """One method's output for one pair, its wall time, and the last DIG refresh (dig only)."""

    image: np.ndarray
    seconds: float
    refresh: Optional[Dict[str, Any]]


def fuse_pair(pair: Pair, method: str, settings: Settings, runner: Optional[Runner]) -> Fused:
    """Fuse one pair with one method; seconds run from reading the sources to the fused image."""
    start = time.perf_counter()
    if method in CLASSICAL:
        sources = api.prepare_sources([pair.a, pair.b])
        luma = CLASSICAL[method](sources[0].luma, sources[1].luma)
        image = io.to_image(luma, io.merge_chroma(sources))
        return Fused(image, time.perf_counter() - start, None)
    result = api.fuse(pair.a, pair.b, task=pair.task, settings=replace(settings, guidance=method), runner=runner)
    refreshes = result.trace.refreshes
    return Fused(result.image, time.perf_counter() - start, refreshes[-1] if refreshes else None)


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


def evaluate(pairs: Sequence[Pair], out: PathLike, methods: Sequence[str] = DIFFUSION_METHODS,
             settings: Optional[Settings] = None, max_side: Optional[int] = None,
             model: Optional[PathLike] = None, backend: str = "ort", runner: Optional[Runner] = None,
             sources_dir: Optional[PathLike] = None, strips_per_task: int = 1, quiet: bool = False,
             per_task: Sequence[str] = ()) -> List[Row]:
    """Fuse and score every pair with every method into ``out``; writes the tables and report, returns the summary.

    Pairs and methods already in ``out/per_pair.csv`` are not recomputed. ``runner`` is shared by
    every diffusion fusion (opened here, and closed after, when not given and needed).
    ``sources_dir`` holds the downscaled copies (default ``out/sources``; a sweep shares one).
    ``per_task`` names the fields of ``settings`` (of ``TASK_FIELDS``) replaced by each pair's task
    default (``TASK_DEFAULTS``).
    The summary and report cover the given pairs and methods only.
    """
    settings = settings or Settings()
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise InputError(f"unknown method(s) {', '.join(unknown) or '(none)'} (choose from {', '.join(METHODS)})")
    if set(per_task) - set(TASK_FIELDS):
        raise InputError(f"per-task fields must be of {', '.join(TASK_FIELDS)}, got {', '.join(per_task)}")
    task_settings = {task: replace(settings, **{k: TASK_DEFAULTS[task][k] for k in per_task})
                     for task in TASKS}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_run(out, _run_record(settings, per_task, max_side, model))
    folder = Path(sources_dir) if sources_dir else out / "sources"
    folder = folder / f"max{max_side}"
    rows = read_rows(out / PER_PAIR)
    done = {_row_key(row) for row in rows}
    todo = [(pair, method) for pair in pairs for method in methods
            if (pair.task, pair.dataset, pair.name, method) not in done]
    own_runner = False
    try:
        with tqdm(total=len(todo), desc="eval", unit="fusion", disable=quiet) as bar:
            for pair, method in todo:
                bar.set_postfix_str(f"{pair.key} {method}")
                if method in DIFFUSION_METHODS and runner is None:
                    runner, own_runner = api.open_runner(model, backend), True
                rows.append(_evaluate_one(pair, method, task_settings[pair.task], runner, out, folder, max_side))
                io.write_text(out / PER_PAIR, format_csv(rows, PAIR_COLUMNS))
                bar.update()
    finally:
        if own_runner and runner is not None:
            runner.close()
    selected = select_rows(rows, pairs, methods)
    summary = summarise(selected)
    io.write_text(out / SUMMARY, format_csv(summary, SUMMARY_COLUMNS))
    strips = write_strips(pairs, methods, out, folder, max_side, strips_per_task,
                          {task: task_settings[task].steps for task in TASKS})
    io.write_text(out / REPORT, format_report(summary, selected, pairs, methods, settings, max_side, model, strips,
                                                     per_task))
    return summary


def _evaluate_one(pair: Pair, method: str, settings: Settings, runner: Optional[Runner], out: Path,
                  folder: Path, max_side: Optional[int]) -> Row:
    """One row of per_pair.csv; any failure is recorded in its ``error`` column instead of raised."""
    row = {"task": pair.task, "dataset": pair.dataset, "name": pair.name, "method": method,
           "steps": str(settings.steps) if method in DIFFUSION_METHODS else ""}
    try:
        source_pair = pair if max_side is None else downscale_pair(pair, folder, max_side)
        fused = fuse_pair(source_pair, method, settings, runner)
        path = out / "fused" / method / f"{pair.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_image(path, fused.image)
        if fused.refresh is not None:
            _write_weights(out / "weights" / f"{pair.key}.png", fused.refresh, pair.task, fused.image.shape[:2])
        values, errors = score(path, source_pair)
    except Exception as exc:  # one bad pair must not end a long run: the row says what went wrong
        row["error"] = f"{type(exc).__name__}: {exc}"
        return row
    row.update(height=str(fused.image.shape[0]), width=str(fused.image.shape[1]), seconds=_number(fused.seconds),
               error="; ".join(errors))
    row.update({name: _number(value) for name, value in values.items()})
    return row


def _write_weights(path: Path, refresh: Dict[str, Any], task: str, shape: Tuple[int, ...]) -> None:
    """The last refresh's weight maps (cropped from the padded size) as a ``dig_maps`` montage."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cropped = dict(refresh, weights=refresh["weights"][:, :shape[0], :shape[1]])
    io.write_image(path, montage([cropped], TASKS[task]))


def _model_sha256(model: Optional[PathLike]) -> str:
    """The model file's SHA-256 (the bundled prior's when ``model`` is None): a retrained prior is another run."""
    return sha256(Path(model) if model else api.default_model())


def _run_record(settings: Settings, per_task: Sequence[str], max_side: Optional[int],
                model: Optional[PathLike]) -> Dict[str, Any]:
    """What ``run.json`` holds: the settings but ``guidance``, each ``per_task`` field as its task values."""
    return {"settings": {k: v for k, v in asdict(settings).items()
                         if k != "guidance" and k not in per_task
                         and not (k in LATER_SETTINGS and v == LATER_SETTINGS[k])},
            **{k: f"per task ({task_default_text(k)})" for k in per_task},
            "max_side": max_side, "model": str(model) if model else "bundled prior",
            "model_sha256": _model_sha256(model)}


def _fingerprint(record: Dict[str, Any], task: str, method: str) -> str:
    """The inputs a ``method`` fusion of a ``task`` pair depends on, from a ``run.json`` record: all settings
    for DIG, all but the DIG fields for static guidance (it never computes the gains), none for the
    classical methods; the resolution and the model for every method."""
    settings: Dict[str, Any] = {**LATER_SETTINGS, **record["settings"]}
    for field in TASK_FIELDS:
        if field in record:  # "per task (ivf 0.667, mif 0.25, mef 2, mff 0.5)"
            values = dict(item.split(" ") for item in record[field][len("per task ("):-1].split(", "))
            settings[field] = float(values[task])
    if method in CLASSICAL_METHODS:
        settings = {}
    elif method == "static":
        settings = {k: v for k, v in settings.items() if not k.startswith("dig_")}
    numbers = {k: float(v) if isinstance(v, (int, float)) else v for k, v in settings.items()}
    return json.dumps([method, numbers, record["max_side"], record["model_sha256"]], sort_keys=True)


def adopt_rows(pairs: Sequence[Pair], out: PathLike, methods: Sequence[str], settings: Settings,
               max_side: Optional[int], model: Optional[PathLike], per_task: Sequence[str],
               folders: Sequence[PathLike], strips_per_task: int = 1) -> int:
    """Copy into ``out`` the rows other eval ``folders`` hold for the same fusion (equal ``_fingerprint``:
    the same settings for that pair's task and method, resolution and model); returns how many.

    The fusions are deterministic (fixed seed), so a row computed under another folder's name is the one
    ``evaluate`` would compute; a change of one task's default then recomputes only what it changes.
    The ``strip_pairs`` are left to ``evaluate``, so the strips have images.
    """
    out = Path(out)
    record = _run_record(settings, per_task, max_side, model)
    out.mkdir(parents=True, exist_ok=True)
    _check_run(out, record)
    rows = read_rows(out / PER_PAIR)
    done = {_row_key(row) for row in rows}
    shown = {pair.key for pair in strip_pairs(pairs, strips_per_task)}
    wanted = {(pair.task, pair.dataset, pair.name, method): _fingerprint(record, pair.task, method)
              for pair in pairs if pair.key not in shown for method in methods}
    wanted = {key: value for key, value in wanted.items() if key not in done}
    adopted = []
    for folder in map(Path, folders):
        if not wanted or folder.resolve() == out.resolve() or not (folder / RUN).is_file():
            continue
        other = json.loads((folder / RUN).read_text(encoding="utf-8"))
        for row in read_rows(folder / PER_PAIR):
            key = _row_key(row)
            if key in wanted and not row.get("error") and wanted[key] == _fingerprint(other, row["task"], key[3]):
                adopted.append(row)
                del wanted[key]
    if adopted:
        io.write_text(out / PER_PAIR, format_csv(rows + adopted, PAIR_COLUMNS))
    return len(adopted)


def _check_run(out: Path, record: Dict[str, Any]) -> None:
    """Record the settings in ``run.json``; refuse a folder that holds results of other settings."""
    path = out / RUN
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != record:
            raise InputError(f"{out} holds results of other settings ({json.dumps(previous)}, now "
                             f"{json.dumps(record)}): choose another output folder")
        return
    io.write_text(path, json.dumps(record, indent=1) + "\n")


def select_rows(rows: Sequence[Row], pairs: Sequence[Pair], methods: Sequence[str]) -> List[Row]:
    """The rows of ``pairs`` x ``methods``, in their order (a folder may hold more)."""
    wanted = {(pair.task, pair.dataset, pair.name, method) for pair in pairs for method in methods}
    return [row for row in rows if _row_key(row) in wanted]


def _row_key(row: Row) -> Tuple[str, str, str, str]:
    return row["task"], row["dataset"], row["name"], row["method"]


def _number(value: float) -> str:
    return f"{value:.10g}"


def read_rows(path: PathLike) -> List[Row]:
    """The rows of a CSV written by ``format_csv`` (empty when the file does not exist yet)."""
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
    """Mean and sample std of every metric and the seconds per task/dataset/method, and per task/method
    (dataset ``all``); failed values are left out of the means, ``errors`` counts rows with an error."""
    order: Dict[str, Dict[str, int]] = {"task": {}, "dataset": {ALL_DATASETS: -1}, "method": {}}
    groups: Dict[Tuple[str, str, str], List[Row]] = {}
    for row in rows:
        for field in order:
            order[field].setdefault(row[field], len(order[field]))
        for dataset in (ALL_DATASETS, row["dataset"]):
            groups.setdefault((row["task"], dataset, row["method"]), []).append(row)
    summary = []
    for task, dataset, method in sorted(groups, key=lambda k: (order["task"][k[0]], order["method"][k[2]],
                                                               order["dataset"][k[1]])):
        members = groups[(task, dataset, method)]
        entry = {"task": task, "dataset": dataset, "method": method, "steps": members[0]["steps"],
                 "n": str(len(members)), "errors": str(sum(1 for m in members if m.get("error")))}
        for column in VALUE_COLUMNS:
            values = [float(m[column]) for m in members if m.get(column)]
            entry[f"{column}_mean"] = _number(float(np.mean(values))) if values else ""
            entry[f"{column}_std"] = _number(float(np.std(values, ddof=1))) if len(values) > 1 else ""
        summary.append(entry)
    return summary


def strip_pairs(pairs: Sequence[Pair], per_task: int) -> List[Pair]:
    """The pairs shown as picture strips: the first ``per_task`` of each task, in ``pairs``' order."""
    counts: Dict[str, int] = {}
    shown = []
    for pair in pairs:
        counts[pair.task] = counts.get(pair.task, 0) + 1
        if counts[pair.task] <= per_task:
            shown.append(pair)
    return shown


def write_strips(pairs: Sequence[Pair], methods: Sequence[str], out: PathLike, folder: PathLike,
                 max_side: Optional[int], per_task: int, steps: Dict[str, int]) -> Dict[str, List[str]]:
    """Picture strips (A, B, each method's output, DIG weights of the last refresh) of ``strip_pairs``
    that have outputs, as ``out/strips/KEY.png``; returns their paths relative to ``out``.
    ``steps``: the diffusion methods' steps, by task."""
    out = Path(out)
    strips: Dict[str, List[str]] = {}
    for pair in strip_pairs(pairs, per_task):
        strips.setdefault(pair.task, [])
        outputs = [(m, out / "fused" / m / f"{pair.key}.png") for m in methods]
        outputs = [(m, path) for m, path in outputs if path.is_file()]
        if not outputs:
            continue
        try:
            source_pair = pair if max_side is None else downscale_pair(pair, folder, max_side)
        except InputError:
            continue
        role_a, role_b = TASKS[pair.task]
        tiles = [_tile(_read_rgb(source_pair.a), f"A: {role_a}"), _tile(_read_rgb(source_pair.b), f"B: {role_b}")]
        tiles += [_tile(_read_rgb(path), f"{method}, {steps[pair.task]} steps" if method in DIFFUSION_METHODS
                        else method) for method, path in outputs]
        weights = out / "weights" / f"{pair.key}.png"
        if weights.is_file():
            tiles.append(_read_rgb(weights))
        height = max(tile.shape[0] for tile in tiles)
        strip = np.hstack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles])
        path = out / "strips" / f"{pair.key}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        io.write_image(path, strip)
        strips[pair.task].append(path.relative_to(out).as_posix())
    return strips


def _read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot be read as an image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    """An RGB image scaled to ``TILE_WIDTH`` (nearest neighbour when enlarging) under a text label."""
    height = max(1, round(image.shape[0] * TILE_WIDTH / image.shape[1]))
    enlarging = image.shape[1] < TILE_WIDTH
    body = cv2.resize(image, (TILE_WIDTH, height), interpolation=cv2.INTER_NEAREST if enlarging else cv2.INTER_AREA)
    header = np.full((LABEL_HEIGHT, TILE_WIDTH, 3), 255, np.uint8)
    cv2.putText(header, label, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([header, body])


def format_report(summary: Sequence[Row], rows: Sequence[Row], pairs: Sequence[Pair], methods: Sequence[str],
                  settings: Settings, max_side: Optional[int], model: Optional[PathLike],
                  strips: Dict[str, List[str]], per_task: Sequence[str] = ()) -> str:
    """report.md: what was run, one table per task (key metrics and seconds, mean ± std), the strips."""
    failed = sum(1 for row in rows if row.get("error"))
    value = {k: f"per task ({task_default_text(k)})" if k in per_task else f"{getattr(settings, k):g}"
             for k in TASK_FIELDS}
    lines = ["# dig2dig eval", "",
             f"{len(pairs)} pair{'' if len(pairs) == 1 else 's'}, methods {', '.join(methods)}. "
             + (f"Sources downscaled with OpenCV INTER_AREA so that the long side is at most {max_side} px "
                "(8-bit copies); every metric and time is at that size." if max_side else
                "Sources at their native resolution."),
             "",
             f"Diffusion settings: steps {value['steps']}; DIG refresh every {settings.dig_every} steps, "
             f"window {value['dig_window']}" + (f" x {settings.dig_passes} passes" if settings.dig_passes > 1 else "")
             + f", tau {value['dig_tau']}; E-step window {settings.em_window}"
             + (f" at a {settings.em_window_side}-px long side, scaled to each pair's"
                if settings.em_window_side else " px")
             + (f", E-step power {settings.em_power:g}" if settings.em_power != 1 else "")
             + f"; lamb {settings.lamb:g}, rho {settings.rho:g}, seed {settings.seed}; "
             f"model: {model or 'the bundled prior'}.",
             "",
             "Metrics: `runtime/metrics.py` (CDDFuse Evaluator conventions) on the grey fused image vs the grey "
             "sources, 0..255, A then B; mean ± sample std over pairs (all metrics in `summary.csv`). "
             f"Seconds: wall time of one fusion, reading the sources to the fused image, on this machine "
             f"({os.cpu_count()} CPU cores).",
             ]
    if failed:
        lines += ["", f"**{failed} of {len(rows)} fusions recorded an error** (column `error` of `per_pair.csv`); "
                      "their failed values are left out of the means."]
    columns = KEY_METRICS + ("seconds",)
    for task in dict.fromkeys(row["task"] for row in summary):
        role_a, role_b = TASKS[task]
        lines += ["", f"## {task}: A {role_a}, B {role_b}", "",
                  "| dataset | method | n | " + " | ".join(columns) + " |",
                  "|---|---|---|" + "---|" * len(columns)]
        for entry in (e for e in summary if e["task"] == task):
            cells = [_cell(entry, column) for column in columns]
            lines.append(f"| {entry['dataset']} | {entry['method']} | {entry['n']} | " + " | ".join(cells) + " |")
        for strip in strips.get(task, []):
            lines += ["", f"![{Path(strip).stem}]({strip})"]
    return "\n".join(lines) + "\n"


def _cell(entry: Row, column: str) -> str:
    mean, std = entry[f"{column}_mean"], entry[f"{column}_std"]
    if not mean:
        return "–"
    digits = 2 if column == "seconds" else 3
    return f"{float(mean):.{digits}f}" + (f" ± {float(std):.{digits}f}" if std else "")


def add_parser(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register ``dig2dig eval`` on the CLI's subcommands."""
    p = subparsers.add_parser("eval", help="fuse a folder of pairs with several methods and tabulate the metrics")
    p.add_argument("--data", required=True, help="folder laid out TASK/DATASET/{a,b}/NAME.* (manifest.csv if present)")
    p.add_argument("--dataset")
    p.add_argument("--limit-per-dataset", type=int, metavar="N", help="first N pairs of each dataset")
    p.add_argument("--methods", default="dig,static", help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--max-side", type=int, metavar="PX",
                   help="downscale both sources (INTER_AREA) so that the long side is at most PX")
    p.add_argument("--strips", type=int, default=1, metavar="N", help="picture strips per task in report.md")
    p.add_argument("-o", "--output", required=True, help="output folder; a rerun resumes what it holds")
    p.add_argument("-q", "--quiet", action="store_true")
    add_settings_options(p, task_default=None)
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    """``dig2dig eval``: the CLI layer over ``find_pairs`` and ``evaluate``."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name, value in (("--limit-per-dataset", args.limit_per_dataset), ("--max-side", args.max_side)):
        if value is not None and value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    overrides = setting_overrides(args)
    per_task = [field for field in TASK_FIELDS if field not in overrides
                and not (field == "dig_tau" and overrides.get("dig_norm") == "absolute")]
    settings = resolve(args.task or "ivf", **overrides)
    pairs = find_pairs(args.data, args.task, args.dataset, args.limit_per_dataset)
    summary = evaluate(pairs, args.output, methods, settings, args.max_side, args.model, args.backend,
                       strips_per_task=args.strips, quiet=args.quiet, per_task=per_task)
    failed = sum(int(entry["errors"]) for entry in summary if entry["dataset"] == ALL_DATASETS)
    if failed:
        print(f"dig2dig eval: {failed} fusion(s) recorded an error (see {Path(args.output) / PER_PAIR})",
              file=sys.stderr)
    if not args.quiet:
        print(f"wrote {Path(args.output) / REPORT}")
    return 0
