"""Do DIG-calibrated step schedules beat even spacing at the same number of steps?

Per task: profile the DIG of ``--fine-steps`` steps on calibration pairs that the evaluation never
sees (the 4th to 6th pairs that the quality sweep's selection would take), make 10-step schedules
from that profile (``calibration/steps.py``: pure gain quantiles, and half gain / half even), and
fuse the quality sweep's evaluation pairs (3 per task, long side ``--max-side``) with each schedule
and with the even (guided-diffusion) spacing, everything else at the task's defaults. Prints one
markdown table: the schedules and the mean key metrics per task.

    python benchmarks/step_schedules.py --data ../shared/data
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Dict, List

import numpy as np

from dig2dig.calibration.steps import calibrate, schedule_from_profile
from dig2dig.runtime import api, io
from dig2dig.runtime import eval as evaluation
from machine import machine_line
from quality_sweep import select_pairs

ROOT = Path(__file__).resolve().parents[1]


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
        for task in api.TASKS:
            calibration_pairs = [p for p in held_out if p.task == task and p not in evaluated]
            record = calibrate(calibration_pairs, task, args.steps, args.fine_steps, args.max_side, 1.0, runner)
            schedules = {"even": record["uniform_timesteps"], "DIG, mix 1": record["timesteps"],
                         "DIG, mix 0.5": schedule_from_profile(record["fine_timesteps"], record["interval_gains"],
                                                              args.steps, 0.5)}
            pairs = [evaluation.downscale_pair(p, scratch, args.max_side) for p in evaluated if p.task == task]
            for name, timesteps in schedules.items():
                settings = api.default_settings(task, timesteps=tuple(timesteps))
                scores: Dict[str, List[float]] = {m: [] for m in metrics}
                for pair in pairs:
                    fused = evaluation.fuse_pair(pair, "dig", settings, runner)
                    path = Path(scratch) / "fused.png"
                    io.write_image(path, fused.image)
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
