"""What the sampler's loop needs from its arrays, declared once: the :class:`Ops` protocol.

``runtime.sampler`` is written once over an ``Ops``: ``numpy_ops`` (the module itself; host NumPy
arrays, the CPU path and the reference) or ``cuda_ops.CudaOps`` (device arrays, one CUDA stream).
Both give each operation the same name and meaning; arrays are whatever the implementation holds,
so they are typed :data:`Array` here.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, Tuple

import numpy as np

Array = Any  # a host ndarray or a device array, as the implementation holds them
EMState = Any  # the implementation's EM state (``em.EMState`` or ``cuda.CudaEMState``)


class Ops(Protocol):
    """The operations of one step of the reverse loop, on one kind of array."""

    def gaussian(self, seed: int, stream: int, shape: Sequence[int]) -> Array:
        """Counter-based standard normal noise, the same numbers for (seed, stream) on every implementation."""

    def repeat_channels(self, images: Array, channels: int) -> Array:
        """(K, H, W) -> (K, C, H, W): a grey source in a C-channel model's space."""

    def concat(self, arrays: Sequence[Array]) -> Array:
        """Concatenation along the first axis."""

    def timesteps(self, values: Sequence[int]) -> Array:
        """The model's ``t`` input: float32 [N]."""

    def q_sample(self, x0: Array, noise: Array, abar: float) -> Array:
        """x0 noised to the level ``abar``: sqrt(abar) x0 + sqrt(1 - abar) noise."""

    def predict_x0(self, x: Array, eps: Array, abar: float, clip: bool = True) -> Array:
        """The clean estimate from x_t and epsilon, clipped to [-1, 1] if ``clip``."""

    def ddim_update(self, x: Array, x0: Array, abar: float, abar_prev: float) -> Array:
        """Deterministic DDIM step (eta = 0) from x_t to the next level, given x0."""

    def luma_of(self, images: Array) -> Array:
        """(K, C, H, W) -> (K, H, W): the channel mean."""

    def rgb_to_ycbcr(self, x: Array) -> Array:
        """YCbCr / 255 of a (3, H, W) RGB image in [-1, 1] (DDFM's route)."""

    def ycbcr_to_rgb(self, x: Array) -> Array:
        """Inverse of :meth:`rgb_to_ycbcr`."""

    def replace_channel0(self, images: Array, channel: Array) -> Array:
        """A copy of ``images`` whose first channel is ``channel``."""

    def dig_weights(self, sources: Array, x0_t: Array, x0_next: Array, window: int, tau: float,
                    relative: bool, passes: int) -> Tuple[Array, Array]:
        """DIG fusion weights and smoothed gains, both (K, H, W) (``kernels.dig.dig_weights``)."""

    def shrink(self, images: Array, factor: int, shape: Sequence[int]) -> Array:
        """(K, H, W) -> (K, *shape): block means, reflect-padded to ``shape`` (``kernels.resample.shrink``)."""

    def enlarge(self, images: Array, factor: int, shape: Sequence[int]) -> Array:
        """(K, h, w) -> (K, *shape): bilinear, of the unpadded part (``kernels.resample.enlarge``)."""

    def em_init(self, shape: Tuple[int, int]) -> EMState:
        """EM state for (H, W) float32 images."""

    def em_step(self, f_pre: Array, a: Array, b: Array, state: EMState, lamb: float, rho: float,
                w_a: Optional[Array], w_b: Optional[Array], window: int,
                power: float) -> Tuple[Array, EMState]:
        """DDFM's EM step toward sources A and B with their weights: ``(F, state)`` (``kernels.em.em_step``)."""

    def nonfinite_init(self) -> Array:
        """The loop's NaN/Inf record: one uint32, no step yet."""

    def mark_nonfinite(self, array: Array, step: int, record: Array) -> None:
        """``record`` = min(record, step) if ``array`` holds NaN or Inf."""

    def to_host(self, array: Array) -> np.ndarray:
        """The array as a host NumPy array (waits for pending work)."""

    def sync(self) -> None:
        """Wait for queued work, where there is any (per-stage timing)."""
