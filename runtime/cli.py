"""``dig2dig`` command line: a thin layer over ``dig2dig.runtime.api`` and friends.

PyTorch-side commands (``export``, ``train-prior``) are imported only when they run, so
``dig2dig fuse`` works where torch is not installed.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional, Sequence

from .api import PAPER_DIG_TAU, default_settings, task_default_text
from .errors import Dig2DigError, InputError
from .options import add_dig_options, dig_option_values
from .sampler import Settings

SETTINGS_DEFAULTS = Settings()
TORCH_COMMANDS = {"export": "export the UNet to ONNX or a TensorRT engine (needs torch)",
                  "train-prior": "train the small default prior (needs torch)"}


def _add_sampler_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", default="ivf", choices=["ivf", "mif", "mef", "mff"],
                   help="ivf: A infrared, B visible; mif: A MRI; mef: A under-exposed; mff: A near focus")
    p.add_argument("--model", help="ONNX model or TensorRT plan (default: the bundled prior)")
    p.add_argument("--backend", default="ort", choices=["ort", "trt"])
    p.add_argument("--steps", type=int, help=f"DDIM steps (default per task: {task_default_text('steps')})")
    p.add_argument("--schedule", help="step schedule JSON from 'dig2dig calibrate-steps' (replaces --steps)")
    p.add_argument("--guidance", default=SETTINGS_DEFAULTS.guidance, choices=["dig", "static"],
                   help="dig: Dig2DIG dynamic weights; static: DDFM (uniform weights)")
    add_dig_options(p)
    p.add_argument("--lamb", type=float, default=SETTINGS_DEFAULTS.lamb)
    p.add_argument("--rho", type=float, default=SETTINGS_DEFAULTS.rho)
    p.add_argument("--seed", type=int, default=SETTINGS_DEFAULTS.seed)
    p.add_argument("--resize", action="store_true", help="resize A to B's size when they differ")


def _settings(args: argparse.Namespace) -> Settings:
    chosen = dict(guidance=args.guidance, lamb=args.lamb, rho=args.rho, seed=args.seed, **dig_option_values(args))
    if args.steps is not None:
        chosen["steps"] = args.steps
    if args.schedule:
        from ..calibration.steps import load_schedule

        chosen["timesteps"] = load_schedule(args.schedule)
    if args.dig_window is not None:
        chosen["dig_window"] = args.dig_window
    if args.dig_tau is not None:
        chosen["dig_tau"] = args.dig_tau
    elif args.dig_norm == "absolute":
        chosen["dig_tau"] = PAPER_DIG_TAU
    try:
        return default_settings(args.task, **chosen)
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _fuse(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from . import api, io

    init_noise = io.read_npy(args.init_noise) if args.init_noise else None
    settings = _settings(args)
    with tqdm(total=settings.steps, desc="fuse", unit="step", disable=args.quiet, delay=0.5) as bar:
        result = api.fuse(args.a, args.b, task=args.task, model=args.model, backend=args.backend,
                          settings=settings, init_noise=init_noise, resize=args.resize,
                          stretch=args.stretch, progress=lambda i, n: bar.update(i - bar.n))
    if args.save_raw:
        io.write_npy(args.save_raw, result.raw)
    if args.save_dig_maps:
        from .dig_maps import save_montages

        save_montages(args.save_dig_maps, result.trace.refreshes, api.TASKS[args.task])
    api.save(result, args.output)
    if not args.quiet:
        print(f"wrote {args.output} ({result.seconds['total']:.2f} s)")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from .bench import run_bench

    report = run_bench(args.a, args.b, task=args.task, model=args.model, backend=args.backend,
                       settings=_settings(args), runs=args.runs, resize=args.resize)
    print(json.dumps(report, indent=1) if args.json else report["table"])
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from . import metrics

    values = metrics.compute_all(metrics.read_gray(args.fused), metrics.read_gray(args.a), metrics.read_gray(args.b))
    print(json.dumps(values, indent=1) if args.json else metrics.format_table(values))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dig2dig", description="Dig2DIG diffusion image fusion")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fuse", help="fuse two source images")
    p.add_argument("a", help="source A (ivf: infrared, mif: MRI, mef: under-exposed, mff: near focus)")
    p.add_argument("b", help="source B (ivf: visible, mif: CT/PET/SPECT, mef: over-exposed, mff: far focus)")
    p.add_argument("-o", "--output", required=True, help="fused image (.png, .tif, .jpg)")
    _add_sampler_options(p)
    p.add_argument("--init-noise", help="x_T as a .npy array (C, H, W) at the padded size")
    p.add_argument("--save-raw", help="write the final model-space sample (.npy) before post-processing")
    p.add_argument("--save-dig-maps", help="folder for a montage PNG of the DIG weight maps at each refresh")
    p.add_argument("--stretch", action="store_true", help="DDFM's min-max output stretch")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_fuse)

    p = sub.add_parser("bench", help="time the stages of a fusion (median/p90 over runs)")
    p.add_argument("a")
    p.add_argument("b")
    _add_sampler_options(p)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bench)

    p = sub.add_parser("metrics", help="standard fusion metrics of a fused image")
    p.add_argument("--fused", required=True)
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_metrics)

    from .eval import add_parser as add_eval_parser

    add_eval_parser(sub)

    from ..calibration.steps import add_parser as add_calibrate_parser

    add_calibrate_parser(sub)

    for name, help_text in TORCH_COMMANDS.items():
        sub.add_parser(name, help=help_text)
    return parser


def _torch_command(name: str, argv: List[str]) -> int:
    """Commands that need PyTorch live in ``dig2dig.export``; torch is imported only here."""
    try:
        from ..export.cli import main as export_main
    except ImportError as exc:
        raise Dig2DigError(f"'dig2dig {name}' needs PyTorch: pip install 'dig2dig[export]' ({exc})") from exc
    return export_main([name] + argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args_list: List[str] = list(sys.argv[1:] if argv is None else argv)
    try:
        if args_list and args_list[0] in TORCH_COMMANDS:
            return _torch_command(args_list[0], args_list[1:])
        args = build_parser().parse_args(args_list)
        return int(args.func(args))
    except Dig2DigError as exc:
        print(f"dig2dig: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

