"""The Python API: fuse two images with the Dig2DIG sampler. The CLI is a thin layer over this.

    from dig2dig.runtime import api
    result = api.fuse("ir.png", "vis.png", task="ivf")          # bundled prior, CPU
    api.save(result, "fused.png")
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import io
from .backends.base import Runner
from .errors import InputError, ModelError
from .sampler import Settings, Trace, initial_noise, luminance_of_sample, sample

TASKS = {
    "ivf": ("infrared", "visible"),
    "mif": ("MRI", "CT/PET/SPECT"),
    "mef": ("under-exposed", "over-exposed"),
    "mff": ("near focus", "far focus"),
}
# Defaults per task, chosen from docs/QUALITY.md (all 160 pairs, the other settings at Settings()): the DIG
# temperature (ivf's raised from 0.5 to 2/3 with the E-step power 0.5, which keeps the sharpness of F's
# weights), the steps, where more of them pay (none now: with E-step power 0.5, mef's Qabf is 0.733 at
# 10 steps and at 25; with power 1 it was 0.696 and 0.720, and mef ran 25), and the DIG window (each of
# Settings.dig_passes box passes): 61 px for ivf and mef, where it beats 41 px on Qabf, VIFF, SSIM and MI
# over all their pairs, 41 px for mif and mff, where 61 px loses a little (nineteenth session).
TASK_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "ivf": {"dig_tau": 0.667, "steps": 10, "dig_window": 61},
    "mif": {"dig_tau": 0.25, "steps": 10, "dig_window": 41},
    "mef": {"dig_tau": 2.0, "steps": 10, "dig_window": 61},
    "mff": {"dig_tau": 0.5, "steps": 10, "dig_window": 41},
}
TASK_FIELDS = tuple(TASK_DEFAULTS["ivf"])  # the Settings fields every task sets: dig_tau, steps, dig_window
# With --dig-norm absolute and no --dig-tau: softmax(DIG), Dig2DIG's formula as written.
PAPER_DIG_TAU = 1.0
PathLike = Union[str, Path]


def check_task(task: str) -> None:
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} (choose one of {', '.join(TASKS)})")


def task_default_text(field: str) -> str:
    """``ivf 0.667, mif 0.25, mef 2, mff 0.5``: a ``TASK_FIELDS`` default of every task, for help and reports."""
    return ", ".join(f"{task} {defaults[field]:g}" for task, defaults in TASK_DEFAULTS.items())


def default_settings(task: str, **overrides: Any) -> Settings:
    """The sampler settings ``dig2dig fuse`` uses for ``task`` unless told otherwise: ``Settings()`` with the
    task's ``TASK_DEFAULTS``, then ``overrides``."""
    check_task(task)
    return Settings(**{**TASK_DEFAULTS[task], **overrides})


def default_model() -> Path:
    """The shipped prior, ``dig2dig/models/default/model.onnx`` (checksums verified on load)."""
    from ..models import default_model_path

    return default_model_path()


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


def prepare_sources(paths: Sequence[PathLike], resize: bool = False) -> List[io.Source]:
    """Read the sources and check they can be fused together."""
    if len(paths) != 2:
        raise InputError(f"dig2dig fuses exactly 2 sources for now, got {len(paths)}: {', '.join(map(str, paths))}")
    sources = [io.read_source(str(p)) for p in paths]
    if resize:
        height, width = sources[1].luma.shape
        sources[0] = io.resize_to(sources[0], height, width)
    io.check_pair(sources[0], sources[1])
    return sources


def fuse(a: PathLike, b: PathLike, task: str = "ivf", model: Optional[PathLike] = None, backend: str = "ort",
         settings: Optional[Settings] = None, init_noise: Optional[np.ndarray] = None, resize: bool = False,
         stretch: bool = False, runner: Optional[Runner] = None,
         progress: Optional[Callable[[int, int], None]] = None) -> FusionResult:
    """Fuse source ``a`` and ``b`` (roles per ``task``, see ``TASKS``) into one image.

    ``settings`` defaults to ``default_settings(task)``.

    ``init_noise`` replaces the seeded x_T (shape ``(C, H', W')`` at the padded size);
    ``stretch`` applies DDFM's min-max output stretch (off by default: it changes the brightness).
    """
    check_task(task)
    settings = settings or default_settings(task)
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    sources = prepare_sources([a, b], resize)
    seconds["io"] = time.perf_counter() - start
    own_runner = runner is None
    runner = runner or open_runner(model, backend)
    try:
        luma = np.stack([s.luma for s in sources]) * 2.0 - 1.0
        height, width = luma.shape[1:]
        padded = pad_to_multiple(luma, runner.info.multiple).astype(np.float32)
        shape = (runner.info.in_channels,) + padded.shape[1:]
        if init_noise is None:
            x_T = initial_noise(shape, settings.seed)
        elif init_noise.shape != shape:
            raise InputError(f"--init-noise: shape {init_noise.shape} does not match the padded image {shape}")
        else:
            x_T = init_noise
        trace = Trace()
        if hasattr(runner, "denoise_device"):  # a GPU backend: the whole loop stays on the device
            from .gpu import gpu_sample

            on_gpu = gpu_sample(runner, padded, settings, x_T, progress=progress, trace=trace)
            raw = on_gpu.sample
            seconds.update(on_gpu.seconds)
        else:
            raw = sample(runner, padded, settings, x_T, progress=progress, trace=trace)
    finally:
        if own_runner:
            runner.close()
    fused = luminance_of_sample(raw)[:height, :width]
    if stretch:
        fused = (fused - fused.min()) / max(float(fused.max() - fused.min()), 1e-12)
    else:
        fused = np.clip((fused + 1.0) / 2.0, 0.0, 1.0)
    fused = fused.astype(np.float32)
    image = io.to_image(fused, io.merge_chroma(sources))
    seconds.update(trace.seconds)
    seconds["total"] = time.perf_counter() - start
    return FusionResult(image=image, luma=fused, raw=raw, trace=trace, sources=sources, seconds=seconds)


def pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    """Reflect-pad ``(K, H, W)`` at the bottom/right to multiples of ``multiple`` (cropped back after)."""
    height, width = images.shape[1:]
    return np.pad(images, ((0, 0), (0, -height % multiple), (0, -width % multiple)), mode="reflect")


def save(result: FusionResult, path: PathLike) -> None:
    """Write the fused image atomically (format from the extension)."""
    io.write_image(str(path), result.image)
