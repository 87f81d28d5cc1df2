"""Do DIG-driven step schedules beat even spacing at the same number of steps? (They do not: even
spacing stays the default, and ``Settings.timesteps`` takes an explicit schedule in the Python API.)

Dig2DIG observes that the diffusion information gain is unevenly spread over the denoising steps
(Cao et al. 2025, Sec. 3), so steps with little gain could be skipped. Per task this script

1. **profiles** the gain on calibration pairs that the evaluation never sees (the 4th to 6th pairs
   that the quality sweep's selection would take): fused with ``--fine-steps`` steps and DIG refreshed
   every step, refresh i measures the loss the denoiser sheds between t_i and t_{i+1}; its mean over
   pixels, summed over sources and clipped at 0, is the interval's gain, normalised per pair to a
   total of 1 and averaged over the pairs;
2. **places** ``--steps`` timesteps from 999 to 0 at equal quantiles of a mixture of the cumulative
   gain and even spacing (``mix`` = the gain's share: 1, and 0.5), pushed apart where they collide;
3. **fuses** the quality sweep's evaluation pairs (3 per task, long side ``--max-side``) with each
   schedule and with the even (guided-diffusion) spacing, everything else at the task's defaults,

and prints one markdown table: the schedules and the mean key metrics per task.

    python benchmarks/step_schedules.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

from dig2dig.runtime import api, io
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.sampler import Trace, initial_noise, sample
from dig2dig.runtime.schedule import Schedule
from dig2dig.runtime.settings import TASKS, Settings, resolve
from machine import machine_line
from sweeps import ROOT, select_pairs


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


def calibrate(chosen: Sequence[evaluation.Pair], task: str, steps: int, fine_steps: int, max_side: int, mix: float,
              runner: Runner) -> Dict[str, Any]:
    """Profile the pairs ``chosen`` of ``task``: the schedule, the profile behind it and the even spacing."""
    sources = []
    for pair in chosen:
        pair_sources = api.prepare_sources([pair.a, pair.b])
        size = io.shrunk_size(*pair_sources[0].luma.shape, max_side)
        if size is not None:  # the size eval's --max-side gives, resampled in memory
            pair_sources = [io.resize_to(s, *size) for s in pair_sources]
        luma = np.stack([s.luma for s in pair_sources])
        sources.append(api.pad_to_multiple(luma * 2.0 - 1.0, runner.info.multiple).astype(np.float32))
    settings = resolve(task, steps=fine_steps)
    fine, gains = dig_profile(runner, sources, settings)
    timesteps = schedule_from_profile(fine, gains, steps, mix)
    return {"task": task, "timesteps": timesteps, "steps": steps, "mix": mix,
            "fine_timesteps": [int(t) for t in fine], "interval_gains": [round(float(g), 6) for g in gains],
            "pairs": [f"{p.dataset}/{p.name}" for p in chosen], "max_side": max_side,
            "uniform_timesteps": [int(t) for t in Schedule.create(steps, runner.info.schedule).timesteps]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--fine-steps", type=int, default=25)
    parser.add_argument("--max-side", type=int, default=256)
    args = parser.parse_args()
    found = evaluation.find_pairs(args.data)
    held_out = select_pairs(found, 6)
    evaluated = select_pairs(found, 3)
    runner = api.open_runner()
    print(f"Machine: {machine_line()}\n")
    metrics = evaluation.KEY_METRICS
    print("| task | schedule | timesteps | " + " | ".join(metrics) + " |")
    print("|---|---|---|" + "---|" * len(metrics))
    with tempfile.TemporaryDirectory() as scratch:
        for task in TASKS:
            calibration_pairs = [p for p in held_out if p.task == task and p not in evaluated]
            record = calibrate(calibration_pairs, task, args.steps, args.fine_steps, args.max_side, 1.0, runner)
            schedules = {"even": record["uniform_timesteps"], "DIG, mix 1": record["timesteps"],
                         "DIG, mix 0.5": schedule_from_profile(record["fine_timesteps"], record["interval_gains"],
                                                              args.steps, 0.5)}
            pairs = [evaluation.downscale_pair(p, scratch, args.max_side) for p in evaluated if p.task == task]
            for name, timesteps in schedules.items():
                settings = resolve(task, timesteps=tuple(timesteps))
                scores: Dict[str, List[float]] = {m: [] for m in metrics}
                for pair in pairs:
                    image, _ = evaluation.fuse_pair(pair, "dig", settings, runner)
                    path = Path(scratch) / "fused.png"
                    io.write_image(path, image)
                    values, _ = evaluation.score(path, pair)
                    for m in metrics:
                        scores[m].append(values[m])
                cells = " | ".join(f"{np.mean(scores[m]):.3f}" for m in metrics)
                print(f"| {task} | {name} | {', '.join(map(str, timesteps))} | {cells} |", flush=True)
            print(f"<!-- {task} calibration pairs: {', '.join(record['pairs'])}; interval gains "
                  f"{', '.join(f'{g:.3f}' for g in record['interval_gains'])} -->", flush=True)
    runner.close()


if __name__ == "__main__":
    main()
