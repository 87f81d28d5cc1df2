"""INT8 entropy calibration of the UNet on the inputs the sampler really gives it.

The UNet never sees clean images: it sees x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise at every
training step t of the schedule. Calibrating on clean crops, or on pure noise, would set the
activation ranges for only one end of the loop. So each calibration batch holds luminance crops of
real images (in [-1, 1], repeated to the model's channels, as the sampler feeds its sources),
noised to timesteps spread evenly over the whole schedule (:func:`spread_timesteps`).

:func:`noised_batches` is the one source of calibration data: onnxruntime's static quantization
reads it through ``calibration/ort_int8.py``, and TensorRT through an ``IInt8EntropyCalibrator2``
whose device buffers come from pycuda (``kernels/device.py``, on the primary context the builder
also uses); TensorRT's calibration cache is read back on later builds so that the images are only
run once.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..kernels.device import GrowBuffers, cuda_driver
from ..runtime.backends.base import INPUT_NAMES
from ..runtime.errors import InputError
from ..runtime.io import read_source
from ..runtime.schedule import alphas_cumprod

if TYPE_CHECKING:
    import tensorrt as trt

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
Batch = Tuple[np.ndarray, np.ndarray]


def calibration_images(directory: str) -> List[str]:
    """Image files inside ``directory`` and its subfolders, sorted; ``InputError`` if there are none."""
    if not os.path.isdir(directory):
        raise InputError(f"{directory}: calibration image folder not found")
    paths = sorted(os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
                   if name.lower().endswith(IMAGE_SUFFIXES))
    if not paths:
        raise InputError(f"{directory}: no calibration images ({', '.join(IMAGE_SUFFIXES)})")
    return paths


def luma_crop(path: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``height`` x ``width`` crop of the image's luminance in [-1, 1] (upscaled if smaller)."""
    import cv2

    luma = read_source(path).luma
    scale = max(height / luma.shape[0], width / luma.shape[1])
    if scale > 1:
        size = (max(width, round(luma.shape[1] * scale)), max(height, round(luma.shape[0] * scale)))
        luma = cv2.resize(luma, size, interpolation=cv2.INTER_LINEAR)
    top = int(rng.integers(0, luma.shape[0] - height + 1))
    left = int(rng.integers(0, luma.shape[1] - width + 1))
    return 2.0 * luma[top:top + height, left:left + width] - 1.0


def spread_timesteps(total: int, num_timesteps: int, rng: np.random.Generator) -> np.ndarray:
    """``total`` training steps in ``[0, num_timesteps)``, spread evenly and in random order: the range is cut
    into ``total`` equal strata and each holds exactly one step, drawn uniformly inside it (int64)."""
    width = num_timesteps / total
    steps = np.floor((np.arange(total) + rng.random(total)) * width).astype(np.int64)
    return rng.permutation(np.minimum(steps, num_timesteps - 1))


def noised_batches(paths: Sequence[str], shape: Tuple[int, int, int, int], schedule: Mapping[str, Any],
                   count: int, seed: int = 0) -> Iterator[Batch]:
    """``count`` batches ``(x_t, t)``: x_t float32 ``shape`` = (N, C, H, W), t float32 ``[N]``.

    The ``count * N`` timesteps of the whole run come from :func:`spread_timesteps`, so every stretch of
    ``num_timesteps / (count * N)`` steps of the schedule is calibrated once; the crops are random
    (``luma_crop``), the same for a given ``seed``.
    """
    n, channels, height, width = shape
    abar = alphas_cumprod(schedule)
    rng = np.random.default_rng(seed)
    timesteps = spread_timesteps(count * n, len(abar), rng)
    for batch in range(count):
        x0 = np.stack([luma_crop(paths[int(i)], height, width, rng) for i in rng.integers(0, len(paths), n)])
        x0 = np.repeat(x0[:, None], channels, axis=1)
        t = timesteps[batch * n:(batch + 1) * n]
        a = abar[t][:, None, None, None]
        x_t = np.sqrt(a) * x0 + np.sqrt(1.0 - a) * rng.standard_normal(x0.shape)
        yield np.ascontiguousarray(x_t, dtype=np.float32), t.astype(np.float32)


def make_calibrator(batches: Iterator[Batch], cache_path: Optional[str]) -> "trt.IInt8EntropyCalibrator2":
    """An entropy calibrator that feeds ``batches`` to TensorRT; caches its result at ``cache_path``.

    Needs a current CUDA context (the builder's): the two input buffers are pycuda allocations.
    """
    import tensorrt as trt

    driver = cuda_driver()

    class UNetCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)  # pybind11 needs the base constructor called
            self.buffers = GrowBuffers(driver.mem_alloc, driver.Context.synchronize)

        def get_batch_size(self) -> int:
            # Explicit-batch network: N is part of the input shape (the calibration profile).
            return 1

        def get_batch(self, names: List[str]) -> List[int]:
            batch = next(batches, None)
            if batch is None:
                return []
            pointers = {}
            for name, array in zip(INPUT_NAMES, batch):
                buffer = self.buffers.get(name, array.nbytes)
                driver.memcpy_htod(buffer, array)
                pointers[name] = int(buffer)
            return [pointers[name] for name in names]

        def read_calibration_cache(self) -> Optional[bytes]:  # None: no cache, calibrate
            if cache_path and os.path.isfile(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache: Any) -> None:
            if cache_path:
                with open(cache_path, "wb") as f:
                    f.write(bytes(cache))

    return UNetCalibrator()
