"""The Python API: fuse two images with the Dig2DIG sampler. The CLI is a thin layer over this.

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

from . import io
from ..models import DEFAULT_DIR
from .backends.base import Runner
from .checksums import verify
from .errors import InputError, ModelError
from .sampler import Trace, initial_noise, luminance_of_sample, sample
from .settings import Settings, check_task, resolve

PathLike = Union[str, Path]


def default_model() -> Path:
    """The shipped prior, ``dig2dig/models/default/model.onnx``, after checking the shipped checksums."""
    verify(DEFAULT_DIR)
    return DEFAULT_DIR / "model.onnx"


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
    """Fuse source ``a`` and ``b`` (roles per ``task``, see ``settings.TASKS``) into one image.

    ``settings`` defaults to ``settings.resolve(task)``, the task's defaults.

    ``init_noise`` replaces the seeded x_T (shape ``(C, H', W')`` at the padded size);
    ``stretch`` applies DDFM's min-max output stretch (off by default: it changes the brightness).
    """
    check_task(task)
    settings = settings or resolve(task)
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
        if runner.on_device:  # a GPU backend: the whole loop stays on the device
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
