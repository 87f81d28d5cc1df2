"""Command-line options for the fusion settings, defined once for every command that fuses (``fuse``,
``bench``, ``eval``): the everyday ones first, the tuning knobs in an "advanced" group. Every option
defaults to ``None`` — "the task's default" — so :func:`settings.resolve` alone applies defaults."""
from __future__ import annotations

import argparse
from typing import Any, Dict, Optional, Tuple

from ..models import PRECISIONS
from .settings import (MAX_PIXELS, TASK_FIELDS, TASKS, TILE_OVERLAP, Limits, Settings, load_config, resolve,
                       task_default_text)

_DEFAULTS = Settings()
# (field, type, choices, help) of the tuning knobs; each is --FIELD-NAME on the command line.
ADVANCED: Tuple[Tuple[str, Any, Optional[Tuple[str, ...]], str], ...] = (
    ("guidance", str, ("dig", "static"), "dig: Dig2DIG's dynamic weights; static: uniform weights (DDFM)"),
    ("dig_every", int, None, "refresh the DIG weights every S steps"),
    ("dig_scale", int, None, f"denoise the sources for DIG at 1/N of the size: 1, 2, 4 or 8, less on tiny images "
                             f"({task_default_text('dig_scale')})"),
    ("dig_window", int, None, f"odd box (px) of each pass over the gains ({task_default_text('dig_window')})"),
    ("dig_passes", int, None, "box passes over the gains: 1 a box, 2 a tent, 3 near a Gaussian"),
    ("dig_tau", float, None, f"softmax temperature ({task_default_text('dig_tau')}; 1 with --dig-norm absolute)"),
    ("dig_norm", str, ("spread", "absolute"), "spread: tau x the gains' RMS spread; absolute: tau itself (the paper)"),
    ("em_window", int, None, "odd window (px) of the E-step weights' geometric mean; 1: DDFM's per-pixel E-step"),
    ("em_window_side", int, None, "long side (px) --em-window is given at, scaled to the image's; 0: pixels"),
    ("em_power", float, None, "E-step weights raised to this power in [0, 1]; 1: DDFM's E-step"),
    ("lamb", float, None, "DDFM's TV weight"),
    ("rho", float, None, "DDFM's proximal step"),
)
OPTION_FIELDS = ("steps", "seed") + tuple(field for field, *_ in ADVANCED)


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def parse_bytes(text: str) -> int:
    """``--max-memory``'s value: bytes, or a number with K, M, G or T (powers of 1024), e.g. ``6G``."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    scale = units.get(text[-1:].upper(), 1)
    try:
        value = float(text[:-1] if scale > 1 else text) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected bytes such as 6G or 512M, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive amount of memory, got {text!r}")
    return int(value)


def add_settings_options(p: argparse.ArgumentParser, task_default: Optional[str] = "ivf") -> "argparse._ArgumentGroup":
    """``--task``, ``--model``, ``--backend``, ``--precision``, ``--steps``, ``--seed``, ``--config``, the
    "limits" group (``--max-pixels``, ``--max-memory``, ``--tile``, ``--tile-overlap``) and, in an "advanced" group, one option per tuning knob of :class:`Settings` (its default
    in the help). Returns the "advanced" group, for a command's own rarely used options."""
    p.add_argument("--task", default=task_default, choices=list(TASKS), metavar="TASK",
                   help=f"{', '.join(TASKS)}: the roles of A and B and the defaults"
                        + (f" (default {task_default})" if task_default else " (default: each pair's)"))
    p.add_argument("--model", metavar="M", help="ONNX model or TensorRT plan (default: the bundled prior)")
    p.add_argument("--backend", default="ort", choices=["ort", "trt"], help="onnxruntime or TensorRT (default ort)")
    p.add_argument("--precision", default="fp32", choices=list(PRECISIONS),
                   help="the bundled prior's precision: int8 is ~1.2x faster on a CPU, with half the memory and "
                        "the same quality (docs/BENCHMARKS.md, INT8); default fp32")
    p.add_argument("--steps", type=int, metavar="N", help=f"DDIM steps (default {task_default_text('steps')})")
    p.add_argument("--seed", type=int, metavar="K", help=f"seed of the start noise (default {_DEFAULTS.seed})")
    p.add_argument("--config", metavar="FILE.json",
                   help="saved settings: a JSON object of setting names and values; options given here win")
    limits = p.add_argument_group("limits", "what a fusion may take; each is checked before any model work")
    limits.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse a source of more than N pixels, read from its header (default {MAX_PIXELS})")
    limits.add_argument("--max-memory", type=parse_bytes, metavar="BYTES",
                        help="peak memory a fusion may use, e.g. 6G (default: what the machine has available); "
                             "a fusion estimated above it runs the model on tiles, or is refused")
    limits.add_argument("--tile", type=int, metavar="PX",
                        help="run the model on PX x PX tiles (0: never tile; default: only when memory needs it)")
    limits.add_argument("--tile-overlap", type=int, default=TILE_OVERLAP, metavar="PX",
                        help=f"overlap of neighbouring tiles, blended (default {TILE_OVERLAP})")
    advanced = p.add_argument_group("advanced", "tuning knobs; the defaults are justified in docs/QUALITY.md")
    for field, kind, choices, text in ADVANCED:
        default = getattr(_DEFAULTS, field)
        shown = "" if field in TASK_FIELDS else f" (default {default})"  # per-task defaults are in the text
        advanced.add_argument(_flag(field), type=kind, choices=choices, metavar=None if choices else "X",
                              help=text + shown)
    return advanced


def setting_overrides(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings asked for: the ``--config`` file's, then every option given (unset ones are left out)."""
    chosen: Dict[str, Any] = load_config(args.config) if args.config else {}
    chosen.update({field: getattr(args, field) for field in OPTION_FIELDS if getattr(args, field) is not None})
    return chosen


def model_from_args(args: argparse.Namespace) -> Optional[str]:
    """The model file ``--model`` and ``--precision`` ask for (None: the bundled FP32 prior), checked before
    anything is loaded (``api.choose_model``)."""
    from .api import choose_model

    model = choose_model(args.model, args.precision)
    return None if model is None else str(model)


def settings_from_args(args: argparse.Namespace, task: Optional[str] = None) -> Settings:
    """:func:`settings.resolve` for ``task`` (default ``args.task``) with :func:`setting_overrides`."""
    return resolve(task or args.task, **setting_overrides(args))


def limits_from_args(args: argparse.Namespace) -> Limits:
    """The :class:`Limits` of the "limits" options (an ``InputError`` for a bad value)."""
    return Limits(max_pixels=args.max_pixels, max_memory=args.max_memory, tile=args.tile,
                  tile_overlap=args.tile_overlap)
