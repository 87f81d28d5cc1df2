"""Resampling between the image and a smaller copy, for DIG at reduced resolution: the refresh denoises
the sources at 1/``factor`` of the image size and its weights are brought back to full size.

Two NumPy twins of the kernels in ``resample.cu``:

* :func:`shrink`: means of ``factor`` x ``factor`` blocks (the exact area average of OpenCV's
  INTER_AREA at an integer factor), then reflect-101 padding up to the model's multiple;
* :func:`enlarge`: bilinear interpolation with half-pixel centres and clamped edges (OpenCV's
  INTER_LINEAR) of the top-left, unpadded part back to the full size.
"""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np


def shrink(images: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """(K, H, W) -> (K, *shape): block means of ``factor`` x ``factor`` (H, W multiples of ``factor``),
    reflect-101 padded at the bottom and right from (H / factor, W / factor) to ``shape``."""
    k, height, width = images.shape
    small = images.reshape(k, height // factor, factor, width // factor, factor).mean(axis=(2, 4), dtype=np.float32)
    pad = ((0, 0), (0, int(shape[0]) - small.shape[1]), (0, int(shape[1]) - small.shape[2]))
    return np.ascontiguousarray(np.pad(small, pad, mode="reflect"), dtype=np.float32)


def enlarge(images: np.ndarray, factor: int, shape: Sequence[int]) -> np.ndarray:
    """(K, h, w) -> (K, *shape): the top-left (shape / factor) part of each plane, bilinearly enlarged by
    ``factor`` (half-pixel centres, edges clamped)."""
    height, width = int(shape[0]), int(shape[1])
    return np.stack([cv2.resize(plane[:height // factor, :width // factor], (width, height),
                                interpolation=cv2.INTER_LINEAR) for plane in images]).astype(np.float32, copy=False)
