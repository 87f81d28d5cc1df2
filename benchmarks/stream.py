"""Streams on the CPU: flicker, quality and time per frame of still-image fusion frame by frame against the
temporal mode (``Fuser(stream=True)``), and the throughput of ``fuse_batch`` for N cameras.

Two clips of one real pair, each frame with its own Gaussian sensor noise (``--noise`` grey levels):
a still scene (the pair, resized to the clip size, repeated) and a moving camera (a clip-size window
panning over the pair ``--shift`` px a frame). Flicker: the still clip's temporal std of the fused frames
over the sources'; motion: the moving clip's consecutive difference after undoing the shift, fused over
sources (``runtime.temporal``). Quality: per frame Qabf / VIFF / SSIM, each mode's mean over both clips
minus that of still fusion with the fixed seed. Time: per frame after the first two, on a still clip of
each size. Throughput: ``fuse_batch`` of N cameras (panning windows) in the temporal mode.

    python benchmarks/stream.py --data ../shared/data
    python benchmarks/stream.py --data ../shared/data --frames 6 --sizes 160x120 --cameras 1,2
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dig2dig import Fuser
from dig2dig.runtime import api, metrics
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.bench import summarize
from dig2dig.runtime.settings import resolve
from dig2dig.runtime.temporal import STREAM_REFRESH_EVERY, flicker_ratio, motion_ratio

from machine import bundled_prior, machine_line

Frames = Tuple[np.ndarray, np.ndarray]
Size = Tuple[int, int]  # (width, height)
SKIPPED = 2  # frames left out of the steady-state times: the warm-up and the first key frame


@dataclass(frozen=True)
class Mode:
    """A way to fuse a clip: ``make`` gives the frame fuser of frame i (a new one, or one kept for the clip)."""

    name: str
    make: Callable[[], Callable[[int], Fuser]]
    timed: bool = True  # in the time table too


@dataclass
class Run:
    """One mode over one clip: the fused frames and the seconds of each."""

    fused: List[np.ndarray]
    seconds: List[float]


def parse_size(text: str) -> Size:
    width, height = text.lower().split("x")
    return int(width), int(height)


def noisy(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """``image`` (uint8) with independent Gaussian noise of ``sigma`` grey levels, rounded back to uint8."""
    return np.clip(np.rint(image + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8)


def still_clip(pair: Frames, size: Size, frames: int, sigma: float, seed: int) -> List[Frames]:
    """The pair resized to ``size``, repeated, each frame with its own noise."""
    rng = np.random.default_rng(seed)
    a, b = (cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in pair)
    return [(noisy(a, sigma, rng), noisy(b, sigma, rng)) for _ in range(frames)]


def panning_clip(pair: Frames, size: Size, frames: int, shift: int, sigma: float, seed: int,
                 offset: int = 0) -> List[Frames]:
    """A ``size`` window moving right ``shift`` px a frame from x = ``offset``, each frame with its own noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    need = offset + width + shift * (frames - 1)
    if need > pair[0].shape[1] or height > pair[0].shape[0]:
        raise SystemExit(f"the pair ({pair[0].shape[1]}x{pair[0].shape[0]}) is too small for a {width}x{height} "
                         f"window panning {shift} px over {frames} frames")
    x = [offset + shift * i for i in range(frames)]
    return [(noisy(pair[0][:height, x0:x0 + width], sigma, rng), noisy(pair[1][:height, x0:x0 + width], sigma, rng))
            for x0 in x]


def modes(runner: Runner, task: str, warm_starts: Sequence[int], refresh_every: Sequence[int]) -> List[Mode]:
    """Still fusion with the fixed seed and with a fresh seed per frame, then the temporal mode (for each
    key-frame interval) and its warm starts (at each step given)."""
    def still() -> Callable[[int], Fuser]:
        fuser = Fuser(task, runner=runner)
        return lambda i: fuser

    def fresh() -> Callable[[int], Fuser]:
        return lambda i: Fuser(task, settings=resolve(task, seed=i + 1), runner=runner)

    def temporal(every: int, warm: int = 0) -> Callable[[], Callable[[int], Fuser]]:
        def make() -> Callable[[int], Fuser]:
            fuser = Fuser(task, runner=runner, stream=True, stream_refresh_every=every, stream_warm_start=warm)
            return lambda i: fuser
        return make

    found = [Mode("still, fixed seed", still), Mode("still, fresh seed per frame", fresh, timed=False)]
    found += [Mode(f"temporal, key every {every}", temporal(every), timed=every == STREAM_REFRESH_EVERY)
              for every in refresh_every]
    found += [Mode(f"temporal + warm start at step {step}", temporal(STREAM_REFRESH_EVERY, step))
              for step in warm_starts]
    return found


def run(mode: Mode, clip: Sequence[Frames]) -> Run:
    """Fuse the clip in order with the mode, timing each frame."""
    fuser_of = mode.make()
    fused, seconds = [], []
    for i, (a, b) in enumerate(clip):
        start = time.perf_counter()
        fused.append(fuser_of(i)(a, b))
        seconds.append(time.perf_counter() - start)
    return Run(fused, seconds)


def quality(run_: Run, clip: Sequence[Frames]) -> np.ndarray:
    """Per frame (Qabf, VIFF, SSIM) of the fused frames against their sources."""
    return np.array([[metric(f, a, b) for metric in (metrics.qabf, metrics.viff, metrics.ssim)]
                     for f, (a, b) in zip(run_.fused, clip)])


def sources(clip: Sequence[Frames], k: int) -> List[np.ndarray]:
    return [frames[k] for frames in clip]


def clip_tables(all_modes: List[Mode], still: List[Frames], moving: List[Frames], shift: int) -> Dict[str, Run]:
    """Print the flicker/motion/quality table; return the still clip's runs (their times serve that size)."""
    print("| mode | still: flicker ratio | moving: motion ratio | ΔQabf | ΔVIFF | ΔSSIM |")
    print("|---|---:|---:|---:|---:|---:|")
    base: Optional[np.ndarray] = None
    kept = {}
    for mode in all_modes:
        runs = run(mode, still), run(mode, moving)
        kept[mode.name] = runs[0]
        scores = np.concatenate([quality(r, c) for r, c in zip(runs, (still, moving))]).mean(axis=0)
        base = scores if base is None else base
        flicker = flicker_ratio(runs[0].fused, sources(still, 0), sources(still, 1))
        motion = motion_ratio(runs[1].fused, sources(moving, 0), sources(moving, 1), (0, shift))
        delta = " | ".join(f"{d:+.4f}" for d in scores - base)
        print(f"| {mode.name} | {flicker:.3f} | {motion:.3f} | {delta} |", flush=True)
    return kept


def time_row(size: Size, name: str, run_: Run) -> str:
    steady = summarize(run_.seconds[SKIPPED:] or run_.seconds)
    return f"| {size[0]}x{size[1]} | {name} | {steady['median']:.2f} | {steady['p90']:.2f} |"


def batch_rate(runner: Runner, task: str, pair: Frames, size: Size, n: int, batches: int, shift: int, sigma: float,
               seed: int) -> float:
    """Pairs/s of ``fuse_batch`` in the temporal mode, N cameras panning over the pair from their own offsets,
    after one warm-up batch."""
    clips = [panning_clip(pair, size, batches + 1, shift, sigma, seed + c, offset=c * shift) for c in range(n)]
    fuser = Fuser(task, runner=runner, stream=True)
    fuser.fuse_batch([clip[0] for clip in clips])
    start = time.perf_counter()
    for i in range(1, batches + 1):
        fuser.fuse_batch([clip[i] for clip in clips])
    return n * batches / (time.perf_counter() - start)


def throughput(runner: Runner, task: str, pair: Frames, size: Size, cameras: Sequence[int], batches: int,
               shift: int, sigma: float, seed: int) -> None:
    """The table of :func:`batch_rate` for each N, after one untimed run of the largest N (the runner's warm-up)."""
    batch_rate(runner, task, pair, size, max(cameras), 1, shift, sigma, seed)
    rates = [batch_rate(runner, task, pair, size, n, batches, shift, sigma, seed) for n in cameras]
    print("| cameras N | pairs/s | relative to N = 1 |")
    print("|---:|---:|---:|")
    for n, rate in zip(cameras, rates):
        print(f"| {n} | {rate:.2f} | {rate / rates[0]:.2f}x |")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the data folder (TASK/DATASET/{a,b}/NAME.png)")
    parser.add_argument("--pair", default="ivf/TNO/10", help="TASK/DATASET/NAME of the pair (default ivf/TNO/10)")
    parser.add_argument("--frames", type=int, default=16, help="frames of each clip")
    parser.add_argument("--clip-size", type=parse_size, default=(320, 240), help="WxH of the two clips")
    parser.add_argument("--sizes", default="320x240,640x480", help="WxH frame sizes timed")
    parser.add_argument("--cameras", default="1,2,4", help="N of fuse_batch's throughput")
    parser.add_argument("--batches", type=int, default=4, help="timed batches of each N")
    parser.add_argument("--shift", type=int, default=2, help="px a frame of the moving camera")
    parser.add_argument("--noise", type=float, default=1.5, help="sensor noise sigma, grey levels")
    parser.add_argument("--seed", type=int, default=0, help="the sensor noise's seed")
    parser.add_argument("--refresh-every", default="4,8,16",
                        help="key-frame intervals of the temporal mode, comma-separated (the default one is timed)")
    parser.add_argument("--warm-start", default="2,4", help="warm-start steps, comma-separated ('' for none)")
    args = parser.parse_args(argv)
    task, dataset, name = args.pair.split("/")
    pair = tuple(cv2.imread(str(args.data / task / dataset / role / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
                 for role in ("a", "b"))
    if any(image is None for image in pair):
        raise SystemExit(f"cannot read {args.pair} under {args.data}")
    every = [int(k) for k in args.refresh_every.split(",")]
    runner = api.open_runner()
    all_modes = modes(runner, task, [int(step) for step in args.warm_start.split(",") if step], every)
    print(f"{args.pair} ({pair[0].shape[1]}x{pair[0].shape[0]}), {task} defaults "
          f"({resolve(task).describe()}); onnxruntime; {bundled_prior()}; {machine_line()}")
    print()
    print(f"Clips of {args.frames} frames at {args.clip_size[0]}x{args.clip_size[1]}, sensor noise "
          f"sigma {args.noise:g}; moving camera {args.shift} px a frame. Δ: the mode's mean per-frame score over "
          "both clips minus still fusion's (fixed seed).")
    print()
    still = still_clip(pair, args.clip_size, args.frames, args.noise, args.seed)
    moving = panning_clip(pair, args.clip_size, args.frames, args.shift, args.noise, args.seed)
    clip_runs = clip_tables(all_modes, still, moving, args.shift)
    print()
    print(f"Seconds per frame after the first {SKIPPED} of a still clip of {args.frames} frames:")
    print()
    print("| size | mode | median s | p90 s |")
    print("|---|---|---:|---:|")
    timed = [m for m in all_modes if m.timed]
    for size in [parse_size(s) for s in args.sizes.split(",")]:
        for mode in timed:
            run_ = clip_runs[mode.name] if size == args.clip_size else run(
                mode, still_clip(pair, size, args.frames, args.noise, args.seed))
            print(time_row(size, mode.name, run_), flush=True)
    print()
    print(f"fuse_batch throughput, temporal mode, {args.clip_size[0]}x{args.clip_size[1]}, {args.batches} batches "
          "after a warm-up:")
    print()
    throughput(runner, task, pair, args.clip_size, [int(n) for n in args.cameras.split(",")], args.batches,
               args.shift, args.noise, args.seed)
    runner.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
