"""``dig2dig bench``: time the stages of a fusion, median and p90 over repeated runs.

The runner is opened once and one untimed warm-up fusion runs first (session set-up, first-call
allocations), so the numbers are the steady-state cost of ``api.fuse`` on an open runner.
Stages come from ``api.fuse``'s ``seconds``: ``backend`` (UNet calls), ``dig`` (DIG weights),
``guidance`` (EM step and DDIM update), ``io`` (reading the sources); ``other`` is the rest of
``total`` (x0 prediction, padding, noise, post-processing).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import api
from .errors import InputError
from .settings import Limits, Settings, resolve

STAGES = ("backend", "dig", "guidance", "io", "other", "total")


def summarize(values: Sequence[float]) -> Dict[str, float]:
    """Median and 90th percentile (NumPy's linear interpolation) of ``values``."""
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90))}


def stage_seconds(seconds: Dict[str, float]) -> Dict[str, float]:
    """A fusion's ``FusionResult.seconds`` as every stage of ``STAGES``; ``other`` is the rest of ``total``."""
    stages = {name: seconds.get(name, 0.0) for name in STAGES}
    stages["other"] = stages["total"] - sum(stages[name] for name in STAGES[:4])
    return stages


def run_bench(a: api.PathLike, b: api.PathLike, task: str = "ivf", model: Optional[api.PathLike] = None,
              backend: str = "ort", settings: Optional[Settings] = None, runs: int = 3,
              resize: bool = False, limits: Limits = Limits(), max_side: Optional[int] = None) -> Dict[str, Any]:
    """Fuse ``a`` and ``b`` ``runs`` times on one runner (after a warm-up) and report seconds per stage;
    ``resize``, ``limits`` and ``max_side`` as for ``api.fuse``.

    The report holds ``stages`` (stage -> {"median", "p90"} seconds), ``runs_seconds`` (stage ->
    per-run seconds), the image size, sampler settings, backend, providers, model path and
    ``table``, a markdown rendering.
    """
    if runs < 1:
        raise InputError(f"--runs must be at least 1, got {runs}")
    settings = settings or resolve(task)
    path = str(model) if model is not None else str(api.default_model())
    runner = api.open_runner(path, backend)
    try:
        def fuse() -> api.FusionResult:
            return api.fuse(a, b, task=task, settings=settings, resize=resize, runner=runner, limits=limits,
                            max_side=max_side)

        warm = fuse()
        timings = [stage_seconds(fuse().seconds) for _ in range(runs)]
        providers = list(getattr(runner, "providers", [backend]))
    finally:
        runner.close()
    per_run: Dict[str, List[float]] = {name: [t[name] for t in timings] for name in STAGES}
    report: Dict[str, Any] = {
        "stages": {name: summarize(per_run[name]) for name in STAGES},
        "runs_seconds": per_run,
        "runs": runs,
        "height": int(warm.luma.shape[0]),
        "width": int(warm.luma.shape[1]),
        "padded": list(warm.raw.shape[1:]),
        "steps": settings.steps,
        "guidance": settings.guidance,
        "dig_every": settings.dig_every,
        "refreshes": len(warm.trace.refreshes),
        "backend": backend,
        "providers": providers,
        "model": path,
    }
    report["table"] = format_table(report)
    return report


def format_table(report: Dict[str, Any]) -> str:
    """Markdown: one line of context, then stage | median | p90 | share of the median total."""
    total = report["stages"]["total"]["median"]
    lines = [f"{report['width']}x{report['height']} px, {report['steps']} steps, guidance {report['guidance']}, "
             f"dig_every {report['dig_every']} ({report['refreshes']} refreshes), {report['backend']} "
             f"({', '.join(report['providers'])}), {report['runs']} runs after a warm-up, model {report['model']}",
             "",
             "| stage | median s | p90 s | share |",
             "|---|---:|---:|---:|"]
    for name in STAGES:
        stats = report["stages"][name]
        share = stats["median"] / total if total > 0 else 0.0
        lines.append(f"| {name} | {stats['median']:.3f} | {stats['p90']:.3f} | {share:.0%} |")
    return "\n".join(lines)
