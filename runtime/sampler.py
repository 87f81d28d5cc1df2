"""The reverse loop: DDIM over the prior, DDFM's EM guidance, Dig2DIG's dynamic weights.

Read top to bottom, one step is:

1. denoise x_t (and, on a DIG refresh, every source noised to t and to the next level t', with
   one shared noise draw, in the same batched call; with ``dig_scale`` > 1 the sources are
   denoised at 1/``dig_scale`` of the size (less reduced if the image is too small for it,
   :func:`dig_scale_for`), in a call of their own);
2. x0 = predict_x0(x_t) (clipped to [-1, 1]);
3. on a refresh: per-pixel information gains of each source between t and t' and their softmax
   weights (Cao et al. 2025, Dig2DIG, Sec. 3), enlarged to full size if computed smaller;
   otherwise reuse the last weights;
4. guidance: DDFM's EM step pulls the luminance of x0 toward the sources (Zhao et al. 2023),
   each source's data term scaled by its weight; uniform weights, ``em_window = 1`` and
   ``em_power = 1`` give DDFM exactly (``em_window`` > 1 smooths the E-step's per-pixel weights,
   ``em_power`` < 1 weakens its pull toward the source x0 is farther from, ``kernels/em.py``);
5. DDIM update (eta = 0) from the corrected x0.

The loop is written once over ``ops``, any :class:`~dig2dig.kernels.ops.Ops`: the NumPy twins
(``kernels.NUMPY_OPS``, the CPU path) or the CUDA kernels of the same names
(``kernels.cuda_ops.CudaOps``), and over any backend ``Runner``.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, DefaultDict, Dict, List, Optional, Tuple

import numpy as np

from ..kernels import NUMPY_OPS
from ..kernels.ops import Array, Ops
from .backends.base import Runner
from .errors import NumericalError
from .schedule import Schedule
from .settings import Settings

NOISE_STREAM_INIT = 0
NOISE_STREAM_DIG = 1


def scaled_window(window: int, long_side: int, window_side: int) -> int:
    """``window`` (px at a ``window_side``-px long side) for sources whose long side is ``long_side``: the
    nearest odd number to ``window * long_side / window_side`` (ties up), so that the window covers the same
    part of the scene at any resolution. 1 (DDFM's per-pixel E-step) and ``window_side`` 0 keep ``window``.
    The loop scales the E-step window; the DIG window stays in pixels, as small hot targets need
    (docs/QUALITY.md, Full resolution)."""
    if window == 1 or window_side == 0:
        return window
    return 2 * int(window * long_side / window_side // 2) + 1


def reduced_shape(size: Tuple[int, int], scale: int, multiple: int) -> Tuple[int, int]:
    """``size`` / ``scale``, padded up to the model's ``multiple``: the DIG images' shape."""
    return (-(-size[0] // scale // multiple) * multiple, -(-size[1] // scale // multiple) * multiple)


def dig_scale_for(size: Tuple[int, int], scale: int, multiple: int) -> int:
    """The largest of ``scale``, ``scale / 2``, ..., 1 that suits the padded image ``size``: it divides it, and
    the reduced image is at least half the padding it gets (reflect padding mirrors it at most once), so that
    small images run DIG at a smaller reduction, or at full size, instead of failing."""
    while scale > 1 and (size[0] % scale or size[1] % scale or any(
            d - n // scale >= n // scale for d, n in zip(reduced_shape(size, scale, multiple), size))):
        scale //= 2
    return scale


@dataclass
class Trace:
    """What the loop saw: DIG weights and gains at each refresh (arrays of the loop's ``ops``;
    ``gpu_sample`` brings them to the host after the loop), seconds spent per stage, and the loop's
    NaN/Inf record with its timesteps (read by :func:`raise_if_nonfinite`)."""

    refreshes: List[Dict[str, Any]] = field(default_factory=list)
    seconds: DefaultDict[str, float] = field(default_factory=lambda: defaultdict(float))
    nonfinite: Any = None
    timesteps: Tuple[int, ...] = ()


class _Stage:
    """Adds the wall time of a ``with`` block to ``trace.seconds[name]`` (after ``ops.sync``)."""

    def __init__(self, trace: Trace, ops: Ops):
        self.trace, self.ops = trace, ops

    def __call__(self, name: str) -> "_Stage":
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.ops.sync()
        self.trace.seconds[self.name] += time.perf_counter() - self.start


def initial_noise(shape: Tuple[int, ...], seed: int, ops: Ops = NUMPY_OPS) -> Array:
    """x_T: counter-based Gaussian noise, the same numbers on CPU and GPU for a given seed."""
    return ops.gaussian(seed, NOISE_STREAM_INIT, shape)


def sample(runner: Runner, sources: Array, settings: Settings, x_T: Array, ops: Ops = NUMPY_OPS,
           progress: Optional[Callable[[int, int], None]] = None, trace: Optional[Trace] = None,
           check_finite: bool = True) -> Array:
    """Fuse two sources into a sample of the prior's model space.

    ``sources``: ``(2, H, W)`` luminance in [-1, 1], ordered (A, B) as the CLI's roles (the EM step
    takes them in that order and maps them to DDFM's names, ``kernels/em.py``).
    ``x_T``: ``(C, H, W)`` start noise, C the model's input channels. Returns x_0 ``(C, H, W)``.
    ``check_finite``: raise :class:`NumericalError` if the model returned NaN/Inf (reads the
    device record, so it waits for the GPU); False leaves that to :func:`raise_if_nonfinite`, for
    a loop captured in a CUDA graph, which must not wait while capturing.
    """
    trace = trace if trace is not None else Trace()
    stage = _Stage(trace, ops)
    schedule = (Schedule.create(settings.steps, runner.info.schedule) if settings.timesteps is None
                else Schedule.from_timesteps(settings.timesteps, runner.info.schedule))
    channels = runner.info.in_channels
    k = sources.shape[0]
    full = (int(sources.shape[1]), int(sources.shape[2]))
    scale = dig_scale_for(full, settings.dig_scale, runner.info.multiple)
    dig_shape = reduced_shape(full, scale, runner.info.multiple)
    dig_sources = sources if scale == 1 else ops.shrink(sources, scale, dig_shape)
    source_input = ops.repeat_channels(dig_sources, channels)  # (K, C, h, w) in the model's space
    x = x_T
    weights = None
    em_state = ops.em_init(full)
    em_window = min(scaled_window(settings.em_window, max(full), settings.em_window_side), 2 * min(full) - 1)
    dig_window = min(scaled_window(settings.dig_window, max(full) // scale, max(full)), 2 * min(dig_shape) - 1)
    nonfinite = ops.nonfinite_init()  # first step whose model output held NaN/Inf, read after the loop
    steps = len(schedule.timesteps)

    def denoise(batch: Array, times: List[int], step: int) -> Array:
        out = runner.denoise(batch, ops.timesteps(times))
        ops.mark_nonfinite(out, step, nonfinite)
        return out[:, :channels]

    for i in range(steps):
        t = int(schedule.timesteps[i])
        abar, abar_prev = float(schedule.alphas_cumprod[i]), float(schedule.alphas_cumprod_prev[i])
        refresh = settings.guidance == "dig" and i % settings.dig_every == 0 and i + 1 < steps

        with stage("backend"):
            if refresh:
                t_next = int(schedule.timesteps[i + 1])
                abar_next = float(schedule.alphas_cumprod[i + 1])
                noise = ops.gaussian(settings.seed, NOISE_STREAM_DIG + i, source_input.shape[1:])
                noised = ops.concat([ops.q_sample(source_input, noise, abar),
                                     ops.q_sample(source_input, noise, abar_next)])
                times = [t] * k + [t_next] * k
                if scale == 1:  # x_t and the noised sources in one batch
                    eps_all = denoise(ops.concat([x[None], noised]), [t] + times, i)
                    eps, eps_sources = eps_all[:1], eps_all[1:]
                else:  # the sources at their own size: a call of their own
                    eps, eps_sources = denoise(x[None], [t], i), denoise(noised, times, i)
            else:
                eps = denoise(x[None], [t], i)

        x0 = ops.predict_x0(x, eps[0], abar)

        if refresh:
            with stage("dig"):
                x0_t = ops.luma_of(ops.predict_x0(noised[:k], eps_sources[:k], abar))
                x0_next = ops.luma_of(ops.predict_x0(noised[k:], eps_sources[k:], abar_next))
                weights, gains = ops.dig_weights(dig_sources, x0_t, x0_next, dig_window, settings.dig_tau,
                                                 settings.dig_norm == "spread", settings.dig_passes)
                if scale > 1:
                    weights = ops.enlarge(weights, scale, full)
                trace.refreshes.append({"step": i, "t": t, "t_next": t_next, "weights": weights, "gains": gains})

        with stage("guidance"):
            ycc = ops.rgb_to_ycbcr(x0) if channels == 3 else x0
            fused, em_state = ops.em_step(ycc[0], sources[0], sources[1], em_state, settings.lamb, settings.rho,
                                          None if weights is None else weights[0],
                                          None if weights is None else weights[1], em_window, settings.em_power)
            x0 = ops.ycbcr_to_rgb(ops.replace_channel0(ycc, fused)) if channels == 3 else fused[None]
            x = ops.ddim_update(x, x0, abar, abar_prev)
        if progress is not None:
            progress(i + 1, steps)
    trace.nonfinite, trace.timesteps = nonfinite, tuple(int(t) for t in schedule.timesteps)
    if check_finite:
        raise_if_nonfinite(trace, ops)
    return x


def raise_if_nonfinite(trace: Trace, ops: Ops = NUMPY_OPS) -> None:
    """Raise :class:`NumericalError` if the loop that filled ``trace`` saw NaN/Inf in a model output."""
    bad = int(ops.to_host(trace.nonfinite)[0])
    if bad < len(trace.timesteps):
        raise NumericalError(f"the model returned NaN/Inf at timestep {trace.timesteps[bad]}")


def luminance_of_sample(x: np.ndarray) -> np.ndarray:
    """The fused luminance of a final sample: the channel itself, or Y of RGB (as DDFM's sample.py)."""
    if x.shape[0] == 1:
        return x[0]
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
