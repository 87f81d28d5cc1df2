"""Tiled fusion (runtime/tiling.py): memory and time on a 2048x1536 pair, the memory guard's estimate against
measured peaks, and the quality cost of tiles on the full-resolution development pairs.

1. ``memory``: an ivf pair of the development set upscaled (INTER_CUBIC) to 2048x1536, fused at the ivf
   defaults untiled and on 1024-, 512- and 256-px tiles (and the tile the guard picks on this machine), each in a
   fresh process (peak RSS from ``getrusage``; the guard's estimate beside it). Untiled, the estimate is
   far over this machine's memory, so that row reports the guard's refusal instead of a measurement.
2. ``fit``: peak RSS of two-step fusions (the peak is reached by the second step) at square sizes and tiles against ``memory.fusion_bytes`` (the
   constants of runtime/memory.py were fitted to these).
3. ``quality``: ``dig2dig eval`` of the 16 full-resolution pairs (4 per task, up to 640 px, as
   quality_guard.py --fullres) at each task's defaults, untiled and on 256- and 384-px tiles; paired
   differences tiled - untiled of Qabf, VIFF and SSIM with their t-values.

    python benchmarks/tiling.py --data ../shared/data memory fit quality
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional, Sequence

import cv2

from dig2dig.runtime import api, memory
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.sampler import reduced_shape
from dig2dig.runtime.settings import TASKS, Limits, resolve

from machine import machine_line
from quality_guard import FULLRES_PER_TASK, FULLRES_SIDE, GUARD, paired, rows_by_pair
from sweeps import ROOT, select_pairs

SIZE = (1536, 2048)
PAIR = ("ivf", "MSRS", "00004N")
TILES = (256, 384)
# One fusion in a fresh process: prints its seconds, the peak RSS and the RSS before the fusion (bytes; the
# runner open and the sources read), or the guard's refusal.
RUN = """
import json, resource, sys, time
from dig2dig.runtime import api
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.fuser import Fuser
from dig2dig.runtime.settings import Limits, resolve
a, b, task, overrides, tile = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), sys.argv[5]
with Fuser(task, settings=resolve(task, **overrides), limits=Limits(tile=int(tile))) as fuser:
    sources = api.prepare_sources([a, b])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    try:
        fuser.fuse_sources(sources)
    except InputError as exc:
        print(json.dumps({"refused": str(exc)}))
        sys.exit(0)
print(json.dumps({"seconds": time.perf_counter() - start, "before": before,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def fuse_in_process(a: Path, b: Path, task: str, tile: str, **overrides: int) -> dict:
    done = subprocess.run([sys.executable, "-c", RUN, str(a), str(b), task, json.dumps(overrides), tile],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def upscaled_pair(data: Path, folder: Path) -> Sequence[Path]:
    task, dataset, name = PAIR
    paths = []
    for role in "ab":
        image = cv2.imread(str(data / task / dataset / role / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        paths.append(folder / f"{role}.png")
        cv2.imwrite(str(paths[-1]), cv2.resize(image, SIZE[::-1], interpolation=cv2.INTER_CUBIC))
    return paths


def gib(size: float) -> str:
    return f"{size / memory.GIB:.2f}"


def memory_table(data: Path) -> None:
    with api.open_runner() as runner:
        info = runner.info
    padded = reduced_shape(SIZE, 1, info.multiple)  # the size the model sees
    auto = memory.plan(info, padded, 1, Limits(), ["a", "b"], room=memory.budget(Limits()))
    print(f"2048x1536 ivf pair ({'/'.join(PAIR)} upscaled), ivf defaults, {memory.budget(Limits()) / memory.GIB:.1f} "
          f"GiB available: the guard tiles it by {auto} px")
    print("\n| model on | tile | estimate (GiB) | peak RSS (GiB) | of which the fusion (GiB) | seconds |\n"
          "|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        a, b = upscaled_pair(data, Path(folder))
        for label, tile in (("whole image", "0"), ("tiles", "1024"), ("tiles", "512"), ("tiles", "256")):
            side = None if tile == "0" else int(tile)
            result = fuse_in_process(a, b, "ivf", tile)
            estimate = memory.fusion_bytes(info, padded, 1, side)
            measured = ("refused by the guard", "–", "–") if "refused" in result else \
                (gib(result["peak"]), gib(result["peak"] - result["before"]), f"{result['seconds']:.1f}")
            print(f"| {label} | {side or '–'} | {gib(estimate)} | " + " | ".join(measured) + " |")


def fit_table(data: Path) -> None:
    with api.open_runner() as runner:
        info = runner.info
    print("\n| size | tile | estimate (GiB) | peak RSS (GiB) | of which the fusion (GiB) |\n|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        a, b = upscaled_pair(data, Path(folder))
        for side, tile in ((256, "0"), (512, "0"), (768, "0"), (1536, "256"), (1536, "512")):
            small = [Path(folder) / f"{role}_{side}.png" for role in "ab"]
            for source, target in zip((a, b), small):
                cv2.imwrite(str(target), cv2.resize(cv2.imread(str(source), cv2.IMREAD_UNCHANGED), (side, side)))
            result = fuse_in_process(small[0], small[1], "ivf", tile, steps=2)
            estimate = memory.fusion_bytes(info, (side, side), 1, None if tile == "0" else int(tile))
            print(f"| {side}x{side} | {tile if tile != '0' else '–'} | {gib(estimate)} | {gib(result['peak'])} | "
                  f"{gib(result['peak'] - result['before'])} |")


def quality_table(data: Path, out: Path) -> None:
    pairs = select_pairs(evaluation.find_pairs(data), FULLRES_PER_TASK)
    settings = {task: resolve(task) for task in TASKS}
    runs = {"untiled": Limits(tile=0), **{f"tile{tile}": Limits(tile=tile) for tile in TILES}}
    out.mkdir(parents=True, exist_ok=True)
    for name, limits in runs.items():
        evaluation.evaluate(pairs, out / name, ["dig"], settings, max_side=FULLRES_SIDE, sources=out / "sources",
                            limits=limits, quiet=True)
    base = rows_by_pair(out / "untiled")
    print(f"\n{len(pairs)} pairs at up to {FULLRES_SIDE} px, each task's defaults, tiles overlapping by "
          f"{Limits().tile_overlap} px\n")
    print("| tile | task | n | " + " | ".join(f"Δ{m} (t)" for m in GUARD) + " |\n|---:|---|---:|"
          + "---:|" * len(GUARD))
    for tile in TILES:
        rows = rows_by_pair(out / f"tile{tile}")
        for task in TASKS:
            keys = [key for key in base if key[0] == task and key in rows]
            cells = [paired([float(base[k][m]) for k in keys], [float(rows[k][m]) for k in keys]) for m in GUARD]
            print(f"| {tile} | {task} | {len(keys)} | " + " | ".join(f"{d:+.4f} ({t:+.1f})" for d, t in cells) + " |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", choices=["memory", "fit", "quality"])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "tiling", help="the quality runs' folders")
    args = parser.parse_args(argv)
    print(machine_line())
    if "memory" in args.parts:
        memory_table(args.data)
    if "fit" in args.parts:
        fit_table(args.data)
    if "quality" in args.parts:
        quality_table(args.data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
