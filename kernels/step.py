"""Per-step diffusion arithmetic: x0 from epsilon, the DDIM (eta = 0) update, forward noising.

Schedule coefficients are computed in float64 from abar and cast to the array dtype before
use, as DDFM (Zhao et al. ICCV 2023, ``guided_diffusion/gaussian_diffusion.py``) does; the
array arithmetic stays in the input dtype.
"""
from __future__ import annotations

import numpy as np


def _coef(value: float, like: np.ndarray) -> np.generic:
    """A float64 schedule coefficient as a scalar of ``like``'s dtype."""
    return like.dtype.type(value)


def predict_x0(x: np.ndarray, eps: np.ndarray, abar: float, clip: bool = True) -> np.ndarray:
    """Clean-image estimate ``sqrt(1/abar) x - sqrt(1/abar - 1) eps``, clamped to [-1, 1] if ``clip``."""
    x0 = _coef(np.sqrt(1.0 / abar), x) * x - _coef(np.sqrt(1.0 / abar - 1.0), x) * eps
    if clip:
        np.clip(x0, -1, 1, out=x0)
    return x0


def ddim_update(x: np.ndarray, x0: np.ndarray, abar: float, abar_prev: float) -> np.ndarray:
    """Deterministic DDIM step (eta = 0) from x_t to x_{t-1} given a (corrected) x0.

    Epsilon is recomputed from ``x0`` rather than taken from the model, so the guidance applied
    to x0 carries into the noise direction too (DDFM's ``predict_eps_from_x_start``).
    """
    eps = (_coef(np.sqrt(1.0 / abar), x) * x - x0) / _coef(np.sqrt(1.0 / abar - 1.0), x)
    return _coef(np.sqrt(abar_prev), x) * x0 + _coef(np.sqrt(1.0 - abar_prev), x) * eps


def q_sample(x0: np.ndarray, noise: np.ndarray, abar: float) -> np.ndarray:
    """Forward diffusion ``sqrt(abar) x0 + sqrt(1 - abar) noise``."""
    return _coef(np.sqrt(abar), x0) * x0 + _coef(np.sqrt(1.0 - abar), x0) * noise
