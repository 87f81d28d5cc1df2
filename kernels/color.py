"""DDFM's colour route for 3-channel priors: RGB <-> YCbCr on data in [-1, 1].

DDFM (``util/pytorch_colors.py``) calls scikit-image's ``rgb2ycbcr`` / ``ycbcr2rgb``, which expect
RGB in [0, 1], directly on the [-1, 1] x0 estimate and divides the result by 255. The luminance it
fuses is therefore ``(16 + 65.481 R + 128.553 G + 24.966 B) / 255``: the +16 offset is not
undone, so it sits 16/255 above the sources. These functions reproduce that route exactly so
that a DDFM-trained setting behaves the same.
"""
from __future__ import annotations

import numpy as np

# ITU-R BT.601 studio-swing matrix and offsets, as in scikit-image's ``ycbcr_from_rgb``.
YCBCR_FROM_RGB = np.array([[65.481, 128.553, 24.966],
                           [-37.797, -74.203, 112.0],
                           [112.0, -93.786, -18.214]])
RGB_FROM_YCBCR = np.linalg.inv(YCBCR_FROM_RGB)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])


def rgb_to_ycbcr(x: np.ndarray) -> np.ndarray:
    """YCbCr / 255 of a ``(3, H, W)`` RGB array, computed in ``x``'s dtype (channel 0 is Y)."""
    dtype = x.dtype
    ycbcr = np.tensordot(YCBCR_FROM_RGB.astype(dtype), x, axes=1)
    ycbcr += YCBCR_OFFSET.astype(dtype)[:, None, None]
    return ycbcr / dtype.type(255)


def ycbcr_to_rgb(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr`: ``(3, H, W)`` YCbCr / 255 back to RGB, no clipping.

    As DDFM, the array is scaled by 255 in its own dtype, converted in float64 and cast back.
    """
    ycbcr = (x * x.dtype.type(255)).astype(np.float64) - YCBCR_OFFSET[:, None, None]
    return np.tensordot(RGB_FROM_YCBCR, ycbcr, axes=1).astype(x.dtype)
