"""The loop's operations on host arrays: the NumPy twins plus the array plumbing the loop needs.

This module is an :class:`~dig2dig.kernels.ops.Ops` (``runtime.sampler`` calls these by name);
``kernels.cuda_ops.CudaOps`` provides the same names on device arrays, so the loop is written once.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from .color import rgb_to_ycbcr, ycbcr_to_rgb
from .dig import dig_weights
from .em import EMState, em_step
from .em import em_init as _em_init
from .resample import enlarge, shrink
from .rng import gaussian
from .step import ddim_update, predict_x0, q_sample

__all__ = ["gaussian", "predict_x0", "q_sample", "ddim_update", "rgb_to_ycbcr", "ycbcr_to_rgb",
           "em_step", "dig_weights", "em_init", "repeat_channels", "concat", "timesteps", "nonfinite_init",
           "mark_nonfinite", "luma_of", "replace_channel0", "shrink", "enlarge", "to_host", "sync"]


def em_init(shape: Tuple[int, int]) -> EMState:
    """EM state for float32 images of ``shape``."""
    return _em_init(shape, np.float32)


def repeat_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(K, H, W) -> (K, C, H, W): a grey source in a C-channel model's space."""
    return np.ascontiguousarray(np.repeat(images[:, None], channels, axis=1))


def concat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate(arrays, axis=0)


def timesteps(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


NO_STEP = 0xFFFFFFFF  # a nonfinite record's value while every output seen was finite


def nonfinite_init() -> np.ndarray:
    """The loop's NaN/Inf record: one uint32, the first step whose model output was not finite."""
    return np.full(1, NO_STEP, np.uint32)


def mark_nonfinite(array: np.ndarray, step: int, record: np.ndarray) -> None:
    """``record`` = min(record, step) if ``array`` holds NaN or Inf (read once the loop has ended)."""
    if not np.isfinite(array).all():
        record[0] = min(int(record[0]), step)


def luma_of(images: np.ndarray) -> np.ndarray:
    """(K, C, H, W) -> (K, H, W): channel mean (grey sources are replicated, so this is their grey)."""
    return images.mean(axis=1, dtype=np.float32)


def replace_channel0(images: np.ndarray, channel: np.ndarray) -> np.ndarray:
    out = images.copy()
    out[0] = channel
    return out


def to_host(array: np.ndarray) -> np.ndarray:
    return np.asarray(array)


def sync() -> None:
    """Host arrays are always ready."""

