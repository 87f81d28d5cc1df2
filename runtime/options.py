"""The DIG and E-step options shared by ``dig2dig fuse``/``bench`` and ``dig2dig eval``: one definition,
so their names, defaults (``Settings()``) and help stay the same in every command."""
from __future__ import annotations

import argparse
from typing import Any, Dict

from .api import task_default_text
from .sampler import Settings

# Settings fields set one to one by an option of the same name (--dig-tau and --dig-window have per-task
# defaults: None unless given).
FIELDS = ("dig_every", "dig_passes", "dig_norm", "em_window", "em_window_side", "em_power")


def add_dig_options(p: argparse.ArgumentParser) -> None:
    """``--dig-every``, ``--dig-window``, ``--dig-passes``, ``--dig-tau``, ``--dig-norm``, ``--em-window``,
    ``--em-window-side``, ``--em-power``."""
    defaults = Settings()
    p.add_argument("--dig-every", type=int, default=defaults.dig_every, help="refresh DIG every S steps")
    p.add_argument("--dig-window", type=int,
                   help=f"odd window (px) of each box pass over the gains (default per task: "
                        f"{task_default_text('dig_window')})")
    p.add_argument("--dig-passes", type=int, default=defaults.dig_passes,
                   help="box means of --dig-window applied in turn: 1 a box, 2 a tent, 3 close to a Gaussian")
    p.add_argument("--dig-tau", type=float,
                   help="softmax temperature relative to the RMS gain spread "
                        f"(default per task: {task_default_text('dig_tau')}); "
                        "with --dig-norm absolute, the temperature itself (default 1)")
    p.add_argument("--dig-norm", default=defaults.dig_norm, choices=["spread", "absolute"],
                   help="spread: temperature scaled by the gains' RMS spread (ours); "
                        "absolute: softmax(gains / tau), with tau = 1 the paper's formula as written")
    p.add_argument("--em-window", type=int, default=defaults.em_window,
                   help="odd window (px) of the geometric mean of DDFM's E-step weights; 1: DDFM's per-pixel weights")
    p.add_argument("--em-window-side", type=int, default=defaults.em_window_side, metavar="PX",
                   help="the long side at which --em-window is given: other sizes scale it by their long side / PX "
                        "(to the nearest odd number); 0: --em-window in pixels")
    p.add_argument("--em-power", type=float, default=defaults.em_power, metavar="GAMMA",
                   help="E-step weights raised to GAMMA in [0, 1]: below 1 the fused image follows the DIG weights "
                        "more closely; 1: DDFM's E-step")


def dig_option_values(args: argparse.Namespace) -> Dict[str, Any]:
    """The ``FIELDS`` of ``Settings`` as parsed by ``add_dig_options``."""
    return {field: getattr(args, field) for field in FIELDS}
