"""DDFM's EM step: pull the luminance of x0 toward the two sources (one E-step, one M-step pass).

DDFM (Zhao et al., ICCV 2023, Sec. 3.3; ``guided_diffusion/EM_onestep.py`` of
Zhaozixiang1228/MMIF-DDFM) models the sources through ``X = f - V`` and ``Y = I - V``, f the
luminance estimate, with Laplacian (L1) data terms and a total-variation prior in a
hierarchical-Bayes form. The E-step turns the L1 terms into per-pixel Gaussian weights
C = sqrt(2 / tau_a) / |Y - X| (from ``|I - f|``) and D = sqrt(2 / tau_b) / |X| (from ``|f - V|``)
and updates the scalar hyper-parameters tau_a, tau_b; the M-step solves the TV part with one FFT
proximal pass (H, with splitting variables F1, F2) and updates X in closed form.
DDFM returns ``F = I - X`` rather than ``X + V``, which mirrors the estimate between the sources:
in the returned F, the term weighted by C pulls toward V and the term weighted by D toward I.
With rho far below C and D, F is the per-pixel blend (D I + C V) / (C + D) of the sources, so the
step moves F away from whichever source f_pre is near (``benchmarks/em_mirror.py`` measures what
that does to Dig2DIG's weights).

Dig2DIG (Cao et al. 2025, arXiv 2503.18627) weights each source per pixel. Here the weights
``w_i``, ``w_v`` of I and V (``em_step``'s ``w_b``, ``w_a``; summing to 1 per pixel) scale, in
the X update only, the data term that pulls the returned F toward that source: D -> 2 w_i D and
C -> 2 w_v C (K w with K = 2 sources). Uniform weights reproduce DDFM exactly; the E-step and the
tau updates stay DDFM's.

Our first change to DDFM, off by default in this function (``window = 1``; the sampler's default
is 9, ``Settings.em_window``): C and D are set per pixel by ``|I - f|`` and ``|f - V|``, so where
the sources differ little they swing by orders of magnitude between neighbouring pixels, and F
flips from one source to the other pixel by pixel: the speckle of docs/QUALITY.md ("E-step
window"). ``window`` > 1 replaces C and D by their ``window`` x ``window``
geometric means (``exp(box_mean(log))``, reflect-101 borders) after the clamp and the tau updates,
before the source weights scale them: a weight's scale, not its per-pixel noise, decides which
source a pixel follows.

Our second change, also off by default here (``power = 1``; ``Settings.em_power``): ``power`` γ
raises C and D to γ after the window. For f_pre = a I + (1 - a) V, F's odds of I over V are then
(w_i / w_v) ((1 - a) / a)^γ, so γ weakens the mirror's pull toward the source f_pre is farther
from: γ = 1 is DDFM, whose fixed point a / (1 - a) = sqrt(w_i / w_v) softens the weights; γ = 0
blends the sources by the weights alone; in between the fixed point is (w_i / w_v)^(1 / (1 + γ)).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional, Tuple

import numpy as np
from numpy.typing import DTypeLike

from .dig import box_mean, check_box_window


@dataclass(frozen=True)
class EMState:
    """What carries over between EM steps, plus the cached OTF terms of the TV proximal solve.

    ``conj_k1`` / ``conj_k2`` are the conjugate OTFs of the horizontal / vertical difference
    kernels; ``denom`` is ``1 + |K1|^2 + |K2|^2`` (real). All three hold the ``W // 2 + 1`` columns
    of a real input's spectrum (``np.fft.rfft2``): the rest is their Hermitian mirror.
    """

    tau_a: np.generic
    tau_b: np.generic
    F1: np.ndarray
    F2: np.ndarray
    conj_k1: np.ndarray
    conj_k2: np.ndarray
    denom: np.ndarray


def em_init(shape: Tuple[int, int], dtype: DTypeLike = np.float32) -> EMState:
    """Initial state for ``(H, W)`` images: tau_a = tau_b = 1, F1 = F2 = 0.

    The OTFs are MATLAB's ``psf2otf`` of ``[[1, -1]]`` and ``[[1], [-1]]`` in closed form: the
    centred kernel places -1 at index 0 and +1 at index n-1, whose DFT is ``exp(2 pi i k / n) - 1``
    (so ``|K|^2 = 4 sin^2(pi k / n)``), kept for the ``rfft2`` columns k < W // 2 + 1. Complex64 for
    float32, complex128 for float64.
    """
    dtype = np.dtype(dtype)
    complex_dtype = np.result_type(dtype, np.complex64)
    height, width = shape
    half = (height, width // 2 + 1)
    phase_w = 2 * np.pi * np.arange(half[1]) / width
    phase_h = 2 * np.pi * np.arange(height) / height
    conj_k1 = np.broadcast_to(np.exp(-1j * phase_w) - 1, half).astype(complex_dtype)
    conj_k2 = np.broadcast_to((np.exp(-1j * phase_h) - 1)[:, None], half).astype(complex_dtype)
    denom = 1 + 4 * np.sin(phase_w / 2) ** 2 + 4 * np.sin(phase_h / 2)[:, None] ** 2
    zeros = np.zeros(shape, dtype)
    return EMState(tau_a=dtype.type(1), tau_b=dtype.type(1), F1=zeros, F2=zeros,
                   conj_k1=conj_k1, conj_k2=conj_k2, denom=denom.astype(dtype))


def check_power(power: float) -> None:
    """Raise ValueError unless the E-step power is in [0, 1]."""
    if not 0 <= power <= 1:
        raise ValueError(f"em_power must be in [0, 1] (1: DDFM's E-step), got {power}")


def em_step(f_pre: np.ndarray, a: np.ndarray, b: np.ndarray, state: EMState, lamb: float = 0.5,
            rho: float = 0.001, w_a: Optional[np.ndarray] = None,
            w_b: Optional[np.ndarray] = None, window: int = 1,
            power: float = 1.0) -> Tuple[np.ndarray, EMState]:
    """One EM step on ``(H, W)`` arrays: the fused estimate F and the state for the next step.

    ``f_pre`` is the current luminance estimate, ``a`` and ``b`` the sources A and B in the CLI's
    order, ``w_a`` / ``w_b`` their optional per-pixel weights (both or neither; see the module
    docstring), None meaning DDFM's uniform 0.5 / 0.5. DDFM's ``EM_onestep(f_pre, I, V, ...)`` calls
    B its ``I`` and A its ``V`` (visible and infrared in DDFM's IVF setup): the step maps ``I = b``,
    ``V = a``, ``w_i = w_b``, ``w_v = w_a`` on entry and uses DDFM's names from there on (so does
    its CUDA twin, ``CudaKernels.em_step``). ``lamb`` weighs the TV term and ``rho`` is the splitting penalty (DDFM's
    sampler passes 0.5 and 0.001). ``window`` smooths the E-step weights and ``power`` in [0, 1]
    weakens them (module docstring); window = 1 and power = 1 are DDFM.
    """
    I, V, w_i, w_v = b, a, w_b, w_a  # noqa: E741
    if (w_i is None) != (w_v is None):
        raise ValueError("give both source weights w_a and w_b, or neither")
    check_box_window("EM", window, f_pre.shape)
    check_power(power)
    two = f_pre.dtype.type(2)
    Y = I - V
    X = f_pre - V
    D = np.sqrt(two / state.tau_b / (X ** 2 + 1e-6))
    C = np.sqrt(two / state.tau_a / (Y - X + 1e-6) ** 2)
    D = np.minimum(D, 2 * C)
    tau_b = np.mean(1 / (D + 1e-10) + state.tau_b / two)
    tau_a = np.mean(1 / (C + 1e-10) + state.tau_a / two)
    if window > 1:
        C, D = np.exp(box_mean(np.log(np.stack([C, D])), window)).astype(f_pre.dtype)
    if power != 1:
        C, D = C ** f_pre.dtype.type(power), D ** f_pre.dtype.type(power)

    # DDFM's real(ifft2(...)) of full spectra; the inputs are real, so one rfft2 / irfft2 pair does it.
    spectra = np.fft.rfft2(np.stack([Y - X, state.F1, state.F2]))
    spectrum = (spectra[0] + state.conj_k1 * spectra[1] + state.conj_k2 * spectra[2]) / state.denom
    H = np.fft.irfft2(spectrum, s=f_pre.shape).astype(f_pre.dtype, copy=False)
    # Differences H[j] - H[j + 1] with the last row / column kept as is (not circular).
    diff_w = H.copy()
    diff_w[:, :-1] -= H[:, 1:]
    diff_h = H.copy()
    diff_h[:-1] -= H[1:]
    shrink = rho / (2 * lamb + rho)
    F1 = shrink * diff_w
    F2 = shrink * diff_h

    if w_i is not None:
        D = D * (2 * np.asarray(w_i, D.dtype))
        C = C * (2 * np.asarray(w_v, C.dtype))
    X = (2 * C * Y + rho * (Y - H)) / (2 * C + 2 * D + rho)
    return I - X, replace(state, tau_a=tau_a, tau_b=tau_b, F1=F1, F2=F2)
