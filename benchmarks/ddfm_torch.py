"""DDFM's reverse loop in PyTorch eager: the speed baseline of ``fuse_cpu.py`` (not product code).

DDFM (Zhao et al., ICCV 2023; Zhaozixiang1228/MMIF-DDFM, ``guided_diffusion/gaussian_diffusion.py``
``DDIM.p_sample`` with eta = 0 and ``guided_diffusion/EM_onestep.py``), written from the formulas
in shared/reference/ddfm_sampler/README.md and shared/reference/ddfm_em/README.md. For a
1-channel prior the EM step works on x0 itself, so the RGB <-> YCbCr round trip of DDFM's
3-channel model drops out. Left out: DDIM's noise draw at sigma = 0 (it costs time and changes
nothing), so the baseline is if anything a little faster than DDFM's own code. The respaced
schedule is ``dig2dig.runtime.schedule`` (checked against DDFM's respacing in tests/test_schedule.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import torch

from dig2dig.runtime.schedule import ADM_LINEAR, Schedule

# DDFM's diffusion config: linear betas over 1000 training steps.


@dataclass
class EMState:
    """DDFM's ``HyperP``: tau_a, tau_b, the splitting variables F1, F2 and the difference OTFs."""

    tau_a: torch.Tensor
    tau_b: torch.Tensor
    F1: torch.Tensor
    F2: torch.Tensor
    k1: torch.Tensor
    k2: torch.Tensor


def em_init(height: int, width: int) -> EMState:
    """tau_a = tau_b = 1, F1 = F2 = 0, K1 / K2 = psf2otf of [[1, -1]] / [[1], [-1]] (DDFM's EM_Initial)."""
    k1 = torch.zeros(height, width)
    k1[0, 0], k1[0, -1] = -1.0, 1.0
    k2 = torch.zeros(height, width)
    k2[0, 0], k2[-1, 0] = -1.0, 1.0
    one = torch.tensor(1.0)
    zeros = torch.zeros(height, width)
    return EMState(one, one, zeros, zeros, torch.fft.fft2(k1), torch.fft.fft2(k2))


def em_step(f_pre: torch.Tensor, I: torch.Tensor, V: torch.Tensor, state: EMState, lamb: float = 0.5,
            rho: float = 0.001) -> Tuple[torch.Tensor, EMState]:
    """DDFM's EM_onestep on ``(..., H, W)`` tensors: E-step weights C, D, taus; one FFT M-step pass."""
    Y = I - V
    X = f_pre - V
    D = torch.sqrt(2 / state.tau_b / (X ** 2 + 1e-6))
    C = torch.sqrt(2 / state.tau_a / (Y - X + 1e-6) ** 2)
    D = torch.minimum(D, 2 * C)
    tau_b = torch.mean(1 / (D + 1e-10) + state.tau_b / 2)
    tau_a = torch.mean(1 / (C + 1e-10) + state.tau_a / 2)
    k1, k2 = state.k1, state.k2
    spectrum = torch.fft.fft2(Y - X) + k1.conj() * torch.fft.fft2(state.F1) + k2.conj() * torch.fft.fft2(state.F2)
    H = torch.real(torch.fft.ifft2(spectrum / (1 + k1.conj() * k1 + k2.conj() * k2)))
    a1 = H.clone()
    a1[..., :, :-1] -= H[..., :, 1:]
    a2 = H.clone()
    a2[..., :-1, :] -= H[..., 1:, :]
    shrink = rho / (2 * lamb + rho)
    X = (2 * C * Y + rho * (Y - H)) / (2 * C + 2 * D + rho)
    return I - X, EMState(tau_a, tau_b, shrink * a1, shrink * a2, k1, k2)


def sample(model: torch.nn.Module, I: torch.Tensor, V: torch.Tensor, x_T: torch.Tensor, steps: int = 100,
           lamb: float = 0.5, rho: float = 0.001) -> torch.Tensor:
    """DDFM's DDIM (eta = 0) + EM loop with a 1-channel epsilon prior; tensors ``(1, 1, H, W)``.

    ``I`` and ``V`` are what DDFM's EM calls them (visible and infrared in DDFM's IVF setup).
    Returns the final sample x_0.
    """
    schedule = Schedule.create(steps, ADM_LINEAR)
    state = em_init(*I.shape[-2:])
    x = x_T
    with torch.inference_mode():
        for t, abar, abar_prev in zip(schedule.timesteps, schedule.alphas_cumprod, schedule.alphas_cumprod_prev):
            recip, recipm1 = math.sqrt(1 / abar), math.sqrt(1 / abar - 1)
            eps = model(x, torch.full((x.shape[0],), float(t)))[:, :1]
            x0 = (recip * x - recipm1 * eps).clamp(-1, 1)
            x0, state = em_step(x0, I, V, state, lamb, rho)
            eps = (recip * x - x0) / recipm1
            x = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * eps
    return x
