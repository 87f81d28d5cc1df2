"""DIG-driven step schedules: spend the few reverse steps where the denoiser recovers the sources.

Dig2DIG observes that the diffusion information gain is unevenly spread over the denoising steps
(Cao et al. 2025, Sec. 3): some intervals recover much of the sources, others little, so steps
with little gain can be skipped. We measure that profile once per task and place a short loop's
steps accordingly:

1. **Profile.** Fuse calibration pairs with a fine schedule (``fine_steps``, DIG refreshed every
   step). Refresh i measures, per pixel and source, the loss the denoiser sheds between t_i and
   t_{i+1}; its mean over pixels, summed over sources and clipped at 0, is the interval's gain.
   Profiles are averaged over the pairs after each is normalised to a total of 1, so every pair
   counts the same.
2. **Schedule.** ``steps`` timesteps, the first the fine schedule's first (999) and the last 0, at
   equal quantiles of a mixture of the cumulative gain and uniform spacing (``mix`` = the gain's
   share; 1 = pure gain quantiles). Where quantiles would collide, neighbours are pushed apart so
   that the timesteps stay strictly descending.

The result is a JSON file (``dig2dig calibrate-steps``) that ``dig2dig fuse --schedule`` and
``Settings(timesteps=...)`` use. The runtime needs nothing of this module but :func:`load_schedule`.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from ..runtime import api, io
from ..runtime.backends.base import Runner
from ..runtime.errors import InputError
from ..runtime.sampler import Settings, Trace, initial_noise, sample
from ..runtime.schedule import Schedule

SCHEDULE_FORMAT = "dig2dig-step-schedule/1"


def dig_profile(runner: Runner, pairs: Sequence[np.ndarray], settings: Settings) -> Tuple[np.ndarray, np.ndarray]:
    """The fine schedule's timesteps (descending) and the mean normalised gain of each interval.

    ``pairs``: model-space sources ``(2, H, W)`` in [-1, 1], each already padded to the model's
    multiple. ``settings.steps`` is the fine schedule; DIG is refreshed at every step.
    """
    fine = replace(settings, guidance="dig", dig_every=1, timesteps=None)
    schedule = Schedule.create(fine.steps, runner.info.schedule)
    profiles = []
    for sources in pairs:
        trace = Trace()
        x_T = initial_noise((runner.info.in_channels,) + sources.shape[1:], fine.seed)
        sample(runner, sources, fine, x_T, trace=trace)
        gains = np.array([max(float(np.asarray(r["gains"], np.float64).mean(axis=(1, 2)).sum()), 0.0)
                          for r in trace.refreshes])
        total = gains.sum()
        profiles.append(gains / total if total > 0 else np.full(len(gains), 1.0 / len(gains)))
    return schedule.timesteps.copy(), np.mean(profiles, axis=0)


def schedule_from_profile(timesteps: Sequence[int], gains: Sequence[float], steps: int, mix: float = 1.0) -> List[int]:
    """``steps`` strictly descending timesteps from ``timesteps[0]`` to ``timesteps[-1]``, placed at equal
    quantiles of ``mix`` x cumulative gain + (1 - mix) x uniform spacing in t.

    ``gains[i]`` is the gain of the interval from ``timesteps[i]`` to ``timesteps[i + 1]``.
    """
    t = np.asarray(timesteps, np.float64)
    g = np.clip(np.asarray(gains, np.float64), 0.0, None)
    if len(t) < 2 or len(g) != len(t) - 1:
        raise ValueError(f"need n >= 2 timesteps and n - 1 interval gains, got {len(t)} and {len(g)}")
    if not 2 <= steps <= int(t[0] - t[-1]) + 1:
        raise ValueError(f"steps must be in [2, {int(t[0] - t[-1]) + 1}], got {steps}")
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    even = (t[0] - t) / (t[0] - t[-1])
    gain_share = np.concatenate([[0.0], np.cumsum(g)]) / g.sum() if g.sum() > 0 else even
    curve = mix * gain_share + (1.0 - mix) * even  # rises from 0 to 1 along the loop
    quantiles = np.linspace(0.0, 1.0, steps)
    chosen = np.rint(np.interp(quantiles, curve, t)).astype(int)
    chosen[0], chosen[-1] = int(t[0]), int(t[-1])
    for i in range(1, steps):  # keep them strictly descending: push each below its predecessor ...
        chosen[i] = min(chosen[i], chosen[i - 1] - 1)
    for i in range(steps - 2, -1, -1):  # ... and above its successor, from the end
        chosen[i] = max(chosen[i], chosen[i + 1] + 1)
    return [int(v) for v in chosen]


def load_schedule(path: str) -> Tuple[int, ...]:
    """The timesteps of a schedule file written by ``dig2dig calibrate-steps``; a clear error otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable schedule file ({error})") from error
    if not isinstance(data, dict) or data.get("format") != SCHEDULE_FORMAT \
            or not isinstance(data.get("timesteps"), list):
        raise InputError(f"{path}: not a dig2dig step schedule (expected format {SCHEDULE_FORMAT!r} with 'timesteps')")
    timesteps = tuple(int(t) for t in data["timesteps"])
    if len(timesteps) < 1 or any(a <= b for a, b in zip(timesteps, timesteps[1:])) or timesteps[-1] < 0:
        raise InputError(f"{path}: timesteps must be strictly descending and >= 0, got {list(timesteps)}")
    return timesteps


def calibrate(chosen: Sequence[Any], task: str, steps: int, fine_steps: int, max_side: int, mix: float,
              runner: Runner) -> Dict[str, Any]:
    """Profile the pairs ``chosen`` (``runtime.eval.Pair``) of ``task`` and return the schedule record
    (what ``dig2dig calibrate-steps`` writes)."""
    sources = []
    for pair in chosen:
        pair_sources = api.prepare_sources([pair.a, pair.b])
        size = io.shrunk_size(*pair_sources[0].luma.shape, max_side)
        if size is not None:  # the size eval's --max-side gives, resampled in memory
            pair_sources = [io.resize_to(s, *size) for s in pair_sources]
        luma = np.stack([s.luma for s in pair_sources])
        sources.append(api.pad_to_multiple(luma * 2.0 - 1.0, runner.info.multiple).astype(np.float32))
    settings = api.default_settings(task, steps=fine_steps)
    fine, gains = dig_profile(runner, sources, settings)
    timesteps = schedule_from_profile(fine, gains, steps, mix)
    return {"format": SCHEDULE_FORMAT, "task": task, "timesteps": timesteps, "steps": steps, "mix": mix,
            "fine_timesteps": [int(t) for t in fine], "interval_gains": [round(float(g), 6) for g in gains],
            "pairs": [f"{p.dataset}/{p.name}" for p in chosen], "max_side": max_side,
            "uniform_timesteps": [int(t) for t in Schedule.create(steps, runner.info.schedule).timesteps]}


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("calibrate-steps",
                              help="a DIG-driven step schedule for a task (JSON for fuse --schedule)")
    p.add_argument("--data", required=True, help="pairs in TASK/DATASET/{a,b}/NAME layout")
    p.add_argument("--task", required=True, choices=list(api.TASKS))
    p.add_argument("--steps", type=int,
                   help=f"steps of the schedule to make (default: the task's, {api.task_default_text('steps')})")
    p.add_argument("--fine-steps", type=int, default=50, help="steps of the profiling runs")
    p.add_argument("--pairs", type=int, default=4, help="calibration pairs (the first ones found)")
    p.add_argument("--max-side", type=int, default=256, help="downscale the pairs to this long side (px)")
    p.add_argument("--mix", type=float, default=0.5,
                   help="share of the gain in step placement (0: even spacing, 1: pure gain quantiles)")
    p.add_argument("--model", help="ONNX model (default: the bundled prior)")
    p.add_argument("-o", "--out", required=True, help="schedule JSON to write")
    p.set_defaults(func=run_command)


def run_command(args: argparse.Namespace) -> int:
    from ..runtime import eval as evaluation

    found = evaluation.find_pairs(args.data, task=args.task)
    if not found:
        raise InputError(f"{args.data}: no {args.task} pairs found")
    runner = api.open_runner(args.model)
    try:
        steps = api.default_settings(args.task).steps if args.steps is None else args.steps
        record = calibrate(found[:args.pairs], args.task, steps, args.fine_steps, args.max_side, args.mix, runner)
    finally:
        runner.close()
    io.write_text(args.out, json.dumps(record, indent=1) + "\n")
    print(f"{args.task}: {record['timesteps']} (uniform: {record['uniform_timesteps']}) -> {args.out}")
    return 0
