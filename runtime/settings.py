"""Fusion settings, their defaults per task, and how overrides apply: the one home of every knob.

    from dig2dig.runtime.settings import resolve
    settings = resolve("ivf", steps=25)           # the task's defaults, then the overrides
    print(settings.describe())                     # one line, for logs and reports

The defaults were chosen from the sweeps in docs/QUALITY.md; CHANGELOG.md dates each change.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from ..kernels.em import check_power
from .errors import InputError

# Roles of sources A and B per task (as in the development data).
TASKS: Dict[str, Tuple[str, str]] = {
    "ivf": ("infrared", "visible"),
    "mif": ("MRI", "CT/PET/SPECT"),
    "mef": ("under-exposed", "over-exposed"),
    "mff": ("near focus", "far focus"),
}
# Per task, over all 160 development pairs (docs/QUALITY.md): the DIG temperature, relative to the gains'
# spread; the steps; the DIG window of each box pass (61 px beats 41 px on ivf and mef; mif and mff lose a
# little); and the reduction of the refreshes' source images. Each was chosen by its paired differences
# against the previous defaults at a 256-px long side and at full resolution (the quality guard): ivf runs
# 6 steps with DIG at 1/2 size and tau 0.6, mif and mff DIG at 1/2 size, mef stays at full size (1/2 lost
# SSIM there at full resolution).
TASK_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ivf": {"dig_tau": 0.6, "steps": 6, "dig_window": 61, "dig_scale": 2},
    "mif": {"dig_tau": 0.25, "steps": 10, "dig_window": 41, "dig_scale": 2},
    "mef": {"dig_tau": 2.0, "steps": 10, "dig_window": 61, "dig_scale": 1},
    "mff": {"dig_tau": 0.5, "steps": 10, "dig_window": 41, "dig_scale": 2},
}
TASK_FIELDS = tuple(TASK_DEFAULTS["ivf"])
# With dig_norm "absolute" and no dig_tau: softmax(DIG), Dig2DIG's formula as written.
PAPER_DIG_TAU = 1.0


@dataclass
class Settings:
    """The reverse loop's settings. ``Settings()`` holds the task-independent defaults; use
    :func:`resolve` for a task's."""

    steps: int = 10
    timesteps: Optional[Tuple[int, ...]] = None  # explicit descending schedule (overrides steps)
    guidance: str = "dig"  # "dig": Dig2DIG's dynamic weights; "static": uniform weights (DDFM)
    dig_every: int = 2  # refresh the DIG weights every S steps
    dig_window: int = 41  # odd box (px) of each pass over the gains
    dig_passes: int = 3  # box passes in turn: 3 is near a Gaussian, std 20 px at 41
    dig_tau: float = 1.0  # softmax temperature (relative to the gains' RMS spread with dig_norm "spread")
    dig_norm: str = "spread"  # "spread": tau x RMS gain spread (ours); "absolute": tau itself (the paper)
    dig_scale: int = 1  # the refresh denoises the sources at 1/dig_scale of the image size (1, 2, 4 or 8; halved
    # until it suits a small image, sampler.dig_scale_for)
    em_window: int = 9  # E-step weights: geometric mean over em_window x em_window; 1 = DDFM
    em_window_side: int = 256  # the long side (px) em_window is given at, scaled to the sources'; 0: pixels
    em_power: float = 0.5  # E-step weights raised to this power after the window; 1 = DDFM
    lamb: float = 0.5  # DDFM's TV weight
    rho: float = 0.001  # DDFM's proximal step
    seed: int = 0  # x_T and the DIG noise draws

    def __post_init__(self) -> None:
        if self.guidance not in ("dig", "static"):
            raise ValueError(f"guidance must be 'dig' or 'static', got {self.guidance!r}")
        if self.dig_norm not in ("spread", "absolute"):
            raise ValueError(f"dig_norm must be 'spread' or 'absolute', got {self.dig_norm!r}")
        if self.timesteps is not None:
            self.timesteps = tuple(int(t) for t in self.timesteps)
            self.steps = len(self.timesteps)
        if self.steps < 1 or self.dig_every < 1:
            raise ValueError("steps and dig_every must be >= 1")
        if self.dig_scale not in (1, 2, 4, 8):
            raise ValueError(f"dig_scale must be 1, 2, 4 or 8, got {self.dig_scale}")
        if self.dig_passes < 1:
            raise ValueError(f"dig_passes must be >= 1, got {self.dig_passes}")
        for name in ("dig_window", "em_window"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ValueError(f"{name} must be a positive odd number, got {getattr(self, name)}")
        check_power(self.em_power)
        if self.em_window_side < 0:
            raise ValueError(f"em_window_side must be >= 0 (0: em_window in pixels), got {self.em_window_side}")

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``6 steps, dig every 2 at 1/2, window 61x3, tau 0.6 (spread),
        E-step 9 px at 256, power 0.5, lamb 0.5, rho 0.001, seed 0``."""
        steps = f"{self.steps} steps" if self.timesteps is None else f"timesteps {','.join(map(str, self.timesteps))}"
        guidance = (f"dig every {self.dig_every}" + (f" at 1/{self.dig_scale}" if self.dig_scale > 1 else "")
                    + f", window {self.dig_window}x{self.dig_passes}, tau {self.dig_tau:g} ({self.dig_norm})"
                    if self.guidance == "dig" else "static")
        side = f" at {self.em_window_side}" if self.em_window_side else ""
        return (f"{steps}, {guidance}, E-step {self.em_window} px{side}, power {self.em_power:g}, "
                f"lamb {self.lamb:g}, rho {self.rho:g}, seed {self.seed}")


FIELD_NAMES = tuple(f.name for f in fields(Settings))


def check_task(task: str) -> None:
    """Raise :class:`InputError` unless ``task`` is one of ``TASKS``."""
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} (choose one of {', '.join(TASKS)})")


def task_default_text(name: str) -> str:
    """``ivf 0.6, mif 0.25, mef 2, mff 0.5``: a ``TASK_FIELDS`` default of every task, for help and reports."""
    return ", ".join(f"{task} {defaults[name]:g}" for task, defaults in TASK_DEFAULTS.items())


def resolve(task: str, **overrides: Any) -> Settings:
    """The settings for ``task``: ``Settings()``, then the task's ``TASK_DEFAULTS``, then ``overrides``.

    An override of ``None`` means "the default" (so unset command-line options pass straight through);
    ``dig_norm="absolute"`` without ``dig_tau`` takes the paper's temperature, ``PAPER_DIG_TAU``.
    A bad value is an :class:`InputError` naming the field.
    """
    check_task(task)
    chosen = {name: value for name, value in overrides.items() if value is not None}
    unknown = sorted(set(chosen) - set(FIELD_NAMES))
    if unknown:
        raise InputError(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(FIELD_NAMES)})")
    if chosen.get("dig_norm") == "absolute" and "dig_tau" not in chosen:
        chosen["dig_tau"] = PAPER_DIG_TAU
    try:
        return Settings(**{**TASK_DEFAULTS[task], **chosen})
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc)) from exc


# Pixels a source may have. Reading a 50-megapixel colour image peaks near 2 GB (its float32 planes and
# their colour conversion), the memory of a small Jetson; 48 MP phone sensors and 8K frames (33 MP)
# still fit. A header can declare far more in a few hundred bytes (a decompression bomb), so the size a
# PNG, JPEG, BMP or TIFF header declares is checked before anything is decoded (``io.read_source``).
MAX_PIXELS = 50_000_000
# Overlap (px) of neighbouring tiles when the model runs on tiles (``runtime.tiling``): the outputs are
# blended across it. 64 px is 8 cells of the model's coarsest grid at the bundled prior's 1/8.
TILE_OVERLAP = 64


@dataclass(frozen=True)
class Limits:
    """What a fusion may take of the machine, checked before any model work (``runtime.memory``).

    ``max_pixels``: the most pixels of a source, else an ``InputError``. ``max_memory``: the bytes a fusion
    may use at its peak (None: what the machine has available when it starts). ``tile``: the side (px) of
    the tiles the model runs on; None tiles only when the estimated peak exceeds ``max_memory`` (with the
    largest tile that fits), 0 never (a fusion over the budget is then an ``InputError``).
    """

    max_pixels: int = MAX_PIXELS
    max_memory: Optional[int] = None
    tile: Optional[int] = None
    tile_overlap: int = TILE_OVERLAP

    def __post_init__(self) -> None:
        if self.max_pixels < 1:
            raise InputError(f"max_pixels must be a positive number of pixels, got {self.max_pixels}")
        if self.max_memory is not None and self.max_memory < 1:
            raise InputError(f"max_memory must be a positive number of bytes, got {self.max_memory}")
        if self.tile is not None and self.tile < 0:
            raise InputError(f"tile must be 0 (never tile), or a side in pixels, got {self.tile}")
        if self.tile_overlap < 0 or (self.tile and self.tile_overlap >= self.tile):
            raise InputError(f"tile_overlap must be >= 0 and below the tile ({self.tile}), got {self.tile_overlap}")


def load_config(path: Union[str, Path]) -> Dict[str, Any]:
    """A saved set of settings: a JSON object of ``Settings`` fields (``{"steps": 25, "em_power": 1}``), checked
    for unknown fields; pass it to :func:`resolve` with the task."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read the settings file ({exc.strerror})") from exc
    except ValueError as exc:
        raise InputError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(values, dict):
        raise InputError(f"{path}: a settings file holds one JSON object of setting names and values")
    unknown = sorted(set(values) - set(FIELD_NAMES))
    if unknown:
        raise InputError(f"{path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(FIELD_NAMES)})")
    return values

