"""Diffusion Information Gain (DIG) weights: per-pixel fusion weights from what the denoiser recovers.

For source ``k`` (clean image ``c_k``), ``x0_t_k`` and ``x0_next_k`` are the denoiser's clean
estimates of ``c_k`` noised to level t and to the next, lower level t' with the same noise draw.
The gain ``g_k = (x0_t_k - c_k)**2 - (x0_next_k - c_k)**2`` is the squared-error loss the denoiser
sheds between the two levels: where it is large, source k carries information the generation is
still recovering, so it should steer the fusion there. ``kernels/dig.cu`` is the CUDA twin.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np

MAX_SOURCES = 4  # the CUDA twin keeps the K gains of a pixel in registers
SPREAD_EPS = 1e-12


def box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """``window`` x ``window`` mean over the last two axes (float64), borders reflect-101.

    OpenCV's box filter (``cv2.blur``) on each plane, with ``cv2.BORDER_REFLECT_101``: the mirror
    about the edge pixel without repeating it, as ``reflect101`` in the CUDA twins' ``border.cuh``;
    its running sums make the cost independent of ``window``.
    """
    planes = x.astype(np.float64).reshape((-1,) + x.shape[-2:])
    size = (window, window)
    return np.stack([cv2.blur(plane, size, borderType=cv2.BORDER_REFLECT_101) for plane in planes]).reshape(x.shape)


def check_box_window(what: str, window: int, shape: Tuple[int, ...]) -> None:
    """Raise ValueError unless ``window`` is odd, >= 1 and its radius fits the last two axes of
    ``shape`` (reflect-101 mirrors at most once); ``what`` names the window in the message."""
    if window < 1 or window % 2 == 0 or window // 2 >= min(shape[-2:]):
        raise ValueError(f"{what} window must be odd, >= 1 and < 2*min(H, W), got {window} for {tuple(shape)}")


def check_dig_args(shape: Tuple[int, ...], window: int, tau: float, relative: bool = True,
                   passes: int = 1) -> None:
    """Raise ValueError unless ``(K, H, W)`` inputs, an odd ``window``, ``passes`` and ``tau`` suit both twins."""
    if len(shape) != 3 or not 1 <= shape[0] <= MAX_SOURCES:
        raise ValueError(f"DIG inputs must be (K, H, W) with 1 <= K <= {MAX_SOURCES}, got {shape}")
    check_box_window("DIG", window, shape)
    if passes < 1:
        raise ValueError(f"DIG window passes must be >= 1, got {passes}")
    if not (tau >= 0 if relative else tau > 0):
        raise ValueError(f"DIG tau must be {'>= 0' if relative else '> 0 when absolute'}, got {tau}")


def dig_weights(sources: np.ndarray, x0_t: np.ndarray, x0_next: np.ndarray, window: int,
                tau: float, relative: bool = True, passes: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """Fusion weights ``(K, H, W)`` (summing to 1 over k) and the smoothed gains, both float32.

    ``gains`` is ``g`` smoothed by ``passes`` box means of ``window`` in turn (one box leaves flat
    window-sized plateaus around a strong gain; two make a tent, three nearly a Gaussian of variance
    ``passes * (window**2 - 1) / 12``); ``weights = softmax_k(gains / T)``. With ``relative`` (our
    default) the temperature is ``T = tau * sqrt(mean_{k,pixels} (gains_k - mean_k gains)**2) + 1e-12``,
    ``tau`` times the RMS spread between sources, which makes the weights independent of the gains'
    scale (that shrinks with the noise level): neither uniform nor one-hot on real images. Otherwise
    ``T = tau``; ``tau = 1`` is the paper's softmax of the raw gains as written, nearly uniform
    because gains in model units are small (``benchmarks/dig_scale.py``).
    All inputs are ``(K, H, W)`` float32 in model space.
    """
    check_dig_args(sources.shape, window, tau, relative, passes)
    c = sources.astype(np.float64)
    gains = (x0_t - c) ** 2 - (x0_next - c) ** 2
    for _ in range(passes):
        gains = box_mean(gains, window)
    spread = gains - gains.mean(axis=0)
    temperature = tau * np.sqrt(np.mean(spread * spread)) + SPREAD_EPS if relative else tau
    logits = (gains - gains.max(axis=0)) / temperature
    weights = np.exp(logits)
    weights /= weights.sum(axis=0)
    return weights.astype(np.float32), gains.astype(np.float32)
