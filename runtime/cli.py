"""The runtime's commands (``fuse``, ``video``, ``bench``, ``metrics``, ``eval``): a thin layer over
``dig2dig.runtime.api`` and ``dig2dig.runtime.video``.

The ``dig2dig`` program (``dig2dig.cli``) adds the PyTorch-side commands, which the runtime never imports.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

from .errors import Dig2DigError
from .options import add_settings_options, limits_from_args, model_from_args, settings_from_args
from .progress import Progress
from .settings import TASKS

# Commands served outside the runtime, by name: (help, handler of the raw arguments after the name).
External = Mapping[str, Tuple[str, Callable[[List[str]], int]]]


def _fuse(args: argparse.Namespace) -> int:
    if args.server:
        from .client import run_fuse_command

        return run_fuse_command(args)
    from . import api, io, preflight

    settings, limits = settings_from_args(args), limits_from_args(args)
    preflight.fuse_outputs(args.output, args.save_raw, args.save_dig_maps)
    init_noise = preflight.init_noise(args.init_noise)
    with Progress("fuse", settings.steps, quiet=args.quiet) as bar:
        result = api.fuse(args.a, args.b, task=args.task, model=model_from_args(args), backend=args.backend,
                          settings=settings, init_noise=init_noise, resize=args.resize,
                          stretch=args.stretch, progress=lambda i, n: bar.update(i), limits=limits,
                          max_side=args.max_side)
    if args.save_raw:
        io.write_npy(args.save_raw, result.raw)
    if args.save_dig_maps:
        from .dig_maps import save_montages

        save_montages(args.save_dig_maps, result.trace.refreshes, TASKS[args.task])
    api.save(result, args.output)
    if not args.quiet:
        print(f"wrote {args.output} ({result.seconds['total']:.2f} s; {args.task}, {settings.describe()})")
    return 0


def _video(args: argparse.Namespace) -> int:
    from . import video
    from .fuser import Fuser

    settings, limits = settings_from_args(args), limits_from_args(args)
    video.output_target(args.output)
    ended: Optional[video.UnequalLengths] = None
    with video.open_input(args.a) as first, video.open_input(args.b) as second, \
            Fuser(args.task, model_from_args(args), args.backend, settings, stream=args.stream,
                  stream_warm_start=args.warm_start, limits=limits) as fuser, \
            Progress("video", video.expected_frames(first, second, args.max_frames), quiet=args.quiet,
                     unit="frames") as bar:
        try:
            summary = video.fuse_video(first, second, args.output, fuser, shortest=args.shortest,
                                       max_frames=args.max_frames, fps=args.fps, side_by_side=args.side_by_side,
                                       progress=bar.update, warn=bar.note)
        except video.UnequalLengths as exc:  # what was fused is kept: summarised, then the error
            summary, ended = exc.summary, exc
    if not args.quiet:
        print(summary.line())
    if ended is not None:
        raise ended
    return 130 if summary.interrupted else 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    report = run_bench(args.a, args.b, task=args.task, model=model_from_args(args), backend=args.backend,
                       settings=settings_from_args(args), runs=args.runs, resize=args.resize,
                       limits=limits_from_args(args), max_side=args.max_side)
    print(json.dumps(report, indent=1) if args.json else report["table"])
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from . import metrics

    values = metrics.compute_all(metrics.read_gray(args.fused), metrics.read_gray(args.a), metrics.read_gray(args.b))
    print(json.dumps(values, indent=1) if args.json else metrics.format_table(values))
    return 0


def build_parser(external: External) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dig2dig", description="Dig2DIG diffusion image fusion")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fuse", help="fuse two source images", usage="%(prog)s A B -o OUT [options]",
                       description="Fuse two source images into one.")
    p.add_argument("a", help="source A (ivf: infrared, mif: MRI, mef: under-exposed, mff: near focus)")
    p.add_argument("b", help="source B (ivf: visible, mif: CT/PET/SPECT, mef: over-exposed, mff: far focus)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="fused image (.png, .tif, .jpg)")
    p.add_argument("--resize", action="store_true", help="resize A to B's size when they differ")
    p.add_argument("--max-side", type=int, metavar="PX", help="shrink the sources (INTER_AREA) to this long side")
    p.add_argument("--stretch", action="store_true", help="DDFM's min-max output stretch (changes brightness)")
    p.add_argument("--server", metavar="URL", help="fuse on a Triton server (http://HOST:PORT, 'dig2dig serve') "
                                                   "with its settings, instead of here")
    p.add_argument("-q", "--quiet", action="store_true")
    advanced = add_settings_options(p)
    advanced.add_argument("--init-noise", metavar="F.npy", help="x_T (C, H, W) at the padded size")
    advanced.add_argument("--save-raw", metavar="F.npy", help="the final model-space sample, before post-processing")
    advanced.add_argument("--save-dig-maps", metavar="DIR", help="a PNG of the DIG weights at each refresh (the folder is made if missing)")
    p.set_defaults(func=_fuse)

    p = sub.add_parser("video", help="fuse two videos, image sequences or cameras frame by frame",
                       usage="%(prog)s A B -o OUT [options]",
                       description="Fuse two streams frame by frame; Ctrl-C stops and keeps what was fused.")
    p.add_argument("a", help="source A: a video file, a folder of images, a glob ('ir/*.png'), a camera index "
                             "or a URL")
    p.add_argument("b", help="source B, as A")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="a video (.mp4, .avi, .mkv) or an image sequence: a folder/ or a pattern such as out/%%05d.png")
    p.add_argument("--shortest", action="store_true", help="stop at the shorter input (default: unequal is an error)")
    p.add_argument("--max-frames", type=int, metavar="N", help="stop after N fused frames")
    p.add_argument("--fps", type=float, metavar="F", help="the video's frame rate (default: A's, else 25)")
    p.add_argument("--side-by-side", action="store_true", help="write A | B | fused side by side, for inspection")
    p.add_argument("--no-stream", dest="stream", action="store_false",
                   help="fuse every frame as a still image (default: the temporal mode, DIG weights carried "
                        "from key frames)")
    p.add_argument("--warm-start", type=int, default=0, metavar="STEP",
                   help="temporal mode: start each frame after a key frame at this step from the last fused one "
                        "(a multiple of --dig-every below --steps; 4 at ivf's 6 steps: 1.6 s per 640x480 frame "
                        "instead of 4.6 on a 2-core CPU, docs/BENCHMARKS.md section 5; default 0: off)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress or summary (warnings still show)")
    add_settings_options(p)
    p.set_defaults(func=_video)

    p = sub.add_parser("bench", help="time the stages of a fusion (median/p90 over runs)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.add_argument("--resize", action="store_true", help="resize A to B's size when they differ")
    p.add_argument("--max-side", type=int, metavar="PX", help="shrink the sources (INTER_AREA) to this long side")
    add_settings_options(p)
    p.set_defaults(func=_bench)

    p = sub.add_parser("metrics", help="standard fusion metrics of a fused image")
    p.add_argument("--fused", required=True)
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_metrics)

    from .eval import add_parser as add_eval_parser

    add_eval_parser(sub)

    for name, (help_text, _) in external.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None, external: Optional[External] = None) -> int:
    """Run one ``dig2dig`` command; ``external`` adds commands served elsewhere (``dig2dig.cli``)."""
    external = external or {}
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in external:
            return external[args_list[0]][1](args_list[1:])
        args = build_parser(external).parse_args(args_list)
        return int(args.func(args))
    except Dig2DigError as exc:
        print(f"dig2dig: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
