"""Counter-based Gaussian noise: the same numbers on the CPU and the GPU (up to a rare last-bit rounding).

The sampler draws x_T and the DIG noise from here, so the NumPy loop and the CUDA loop see the same
noise for the same seed. The algorithm is a contract (``rng.cu`` implements it too); changing it
changes every fused image, so it is spelled out:

1. ``mix(z)`` is the splitmix64 finaliser on unsigned 64-bit integers, all arithmetic modulo 2**64::

       z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
       z = (z ^ (z >> 27)) * 0x94D049BB133111EB
       mix(z) = z ^ (z >> 31)

2. The stream key is ``key = mix(mix(seed + G) + stream)`` with ``G = 0x9E3779B97F4A7C15``.
3. Element ``i`` (C order over ``shape``) takes the splitmix64 outputs number ``2i+1`` and ``2i+2`` of
   the state ``key``: ``a = mix(key + (2i+1)*G)``, ``b = mix(key + (2i+2)*G)``.
4. Uniforms from the top 53 bits: ``u1 = ((a >> 11) + 1) * 2**-53`` in (0, 1] (never 0, so the log is
   finite) and ``u2 = (b >> 11) * 2**-53`` in [0, 1).
5. Box-Muller, cosine branch, in float64: ``z = sqrt(-2 ln u1) * cos(2*pi * u2)`` with
   ``2*pi = 6.283185307179586``; the result is rounded to float32.
"""
from __future__ import annotations

from typing import Sequence, Union

import numpy as np

GOLDEN = 0x9E3779B97F4A7C15
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_TWO_PI = 6.283185307179586
_INV_2_53 = 1.0 / 9007199254740992.0
_MAX64 = 1 << 64

Shape = Union[int, Sequence[int]]


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wraps modulo 2**64)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def stream_key(seed: int, stream: int) -> int:
    """The 64-bit key of ``(seed, stream)``: ``mix(mix(seed + G) + stream)``."""
    for name, value in (("seed", seed), ("stream", stream)):
        if not 0 <= int(value) < _MAX64:
            raise ValueError(f"{name} must be in [0, 2**64), got {value}")
    inner = _mix(np.array([(int(seed) + GOLDEN) % _MAX64], dtype=np.uint64))
    return int(_mix(inner + np.uint64(int(stream)))[0])


def gaussian(seed: int, stream: int, shape: Shape) -> np.ndarray:
    """Standard normal float32 noise of ``shape`` for ``(seed, stream)``; see the module docstring."""
    shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    count = int(np.prod(shape, dtype=np.int64))
    key = np.uint64(stream_key(seed, stream))
    counter = np.arange(count, dtype=np.uint64) * np.uint64(2)
    a = _mix(key + (counter + np.uint64(1)) * np.uint64(GOLDEN))
    b = _mix(key + (counter + np.uint64(2)) * np.uint64(GOLDEN))
    u1 = ((a >> np.uint64(11)) + np.uint64(1)).astype(np.float64) * _INV_2_53
    u2 = (b >> np.uint64(11)).astype(np.float64) * _INV_2_53
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(_TWO_PI * u2)
    return z.astype(np.float32).reshape(shape)
