"""The Python API: fuse two image files with the Dig2DIG sampler. The CLI is a thin layer over this,
and this over ``runtime.fuser.Fuser``, which fuses frames in memory.

    from dig2dig.runtime import api
    result = api.fuse("ir.png", "vis.png", task="ivf")          # bundled prior, CPU
    api.save(result, "fused.png")
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import io, preflight
from ..models import DEFAULT_DIR, PRECISIONS
from .backends.base import Runner
from .checksums import verify
from .errors import InputError, ModelError
from .sampler import Trace
from .settings import Limits, Settings, check_task

PathLike = Union[str, Path]


def default_model(precision: str = "fp32") -> Path:
    """The shipped prior at ``precision`` (``PRECISIONS``), after checking the shipped checksums."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (choose {' or '.join(PRECISIONS)})")
    verify(DEFAULT_DIR)
    return DEFAULT_DIR / PRECISIONS[precision]


def choose_model(model: Optional[PathLike], precision: str = "fp32") -> Optional[PathLike]:
    """The model to open: ``model`` as given (None: the bundled FP32 prior), or for another ``precision`` the
    bundled prior's file at it; a ``model`` with another precision is an ``InputError`` (a file has one)."""
    if precision == "fp32":
        return model
    if model is not None:
        raise InputError(f"--precision {precision} picks the bundled prior's {precision} model; "
                         f"to run your own {model}, give it with --model alone")
    return default_model(precision)


def open_runner(model: Optional[PathLike] = None, backend: str = "ort") -> Runner:
    """Load a model file with a backend: ``ort`` (onnxruntime) or ``trt`` (TensorRT engine)."""
    path = str(model) if model is not None else str(default_model())
    if backend == "ort":
        from .backends.ort import OrtRunner

        return OrtRunner(path)
    if backend == "trt":
        from .backends.trt import TrtRunner

        return TrtRunner(path)
    raise ModelError(f"unknown backend {backend!r} (choose 'ort' or 'trt')")


@dataclass
class FusionResult:
    """The fused image and what produced it."""

    image: np.ndarray            # uint8 (H, W) grey or (H, W, 3) RGB
    luma: np.ndarray             # float32 (H, W) fused luminance in [0, 1]
    raw: np.ndarray              # float32 (C, H', W') final model-space sample, padded size, before post-processing
    trace: Trace
    sources: List[io.Source] = field(default_factory=list)
    seconds: Dict[str, float] = field(default_factory=dict)


def prepare_sources(paths: Sequence[PathLike], resize: bool = False, max_pixels: int = Limits.max_pixels,
                    max_side: Optional[int] = None) -> List[io.Source]:
    """Read the sources (each of at most ``max_pixels``) and check they can be fused together: with ``resize``,
    A is resampled to B's size; with ``max_side``, both are shrunk (``io.shrunk_size``) to that long side."""
    if len(paths) != 2:
        raise InputError(f"dig2dig fuses exactly 2 sources for now, got {len(paths)}: {', '.join(map(str, paths))}")
    if max_side is not None and max_side < 1:
        raise InputError(f"max_side must be a positive number of pixels, got {max_side}")
    sources = [io.read_source(str(p), max_pixels) for p in paths]
    if resize:
        height, width = sources[1].luma.shape
        sources[0] = io.resize_to(sources[0], height, width)
    io.check_pair(sources[0], sources[1])
    shrunk = None if max_side is None else io.shrunk_size(sources[0].height, sources[0].width, max_side)
    return sources if shrunk is None else [io.resize_to(source, *shrunk) for source in sources]


def fuse(a: PathLike, b: PathLike, task: str = "ivf", model: Optional[PathLike] = None, backend: str = "ort",
         settings: Optional[Settings] = None, init_noise: Optional[np.ndarray] = None, resize: bool = False,
         stretch: bool = False, runner: Optional[Runner] = None,
         progress: Optional[Callable[[int, int], None]] = None, precision: str = "fp32",
         limits: Limits = Limits(), max_side: Optional[int] = None) -> FusionResult:
    """Fuse source ``a`` and ``b`` (roles per ``task``, see ``settings.TASKS``) into one image.

    Fuses them with a :class:`~dig2dig.runtime.fuser.Fuser` on ``runner`` (or one it opens from
    :func:`choose_model` and closes, before reading the files: a bad model fails first). ``settings`` defaults to ``settings.resolve(task)``,
    the task's defaults; ``precision`` ``int8`` runs the bundled INT8 prior.

    ``init_noise`` replaces the seeded x_T (shape ``(C, H', W')`` at the padded size);
    ``stretch`` applies DDFM's min-max output stretch (off by default: it changes the brightness).
    ``limits`` bounds the sources' pixels and the fusion's memory (tiling the model when it must,
    ``Fuser``); ``max_side`` shrinks the sources to that long side first (the result is at that size).
    """
    from .fuser import Fuser

    check_task(task)
    model = choose_model(model, precision)
    start = time.perf_counter()
    with Fuser(task, model, backend, settings, runner, limits=limits) as fuser:  # a bad model fails first
        reading = time.perf_counter()
        sources = prepare_sources([a, b], resize, limits.max_pixels, max_side)
        read = time.perf_counter() - reading
        result = fuser.fuse_sources(sources, init_noise=init_noise, stretch=stretch, progress=progress)
    result.seconds = {"io": read, **result.seconds, "total": time.perf_counter() - start}
    return result


def pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad ``(K, H, W)`` at the bottom/right to multiples of ``multiple`` (cropped back after)."""
    height, width = images.shape[1:]
    return np.pad(images, ((0, 0), (0, -height % multiple), (0, -width % multiple)), mode="reflect")


def save(result: FusionResult, path: PathLike) -> None:
    """Write the fused image atomically (format from the extension); ``preflight.output_image`` checks ``path``
    the same way, to call before a long fusion."""
    io.write_image(preflight.output_image(path), result.image)
