"""The reverse loop: DDIM over the prior, DDFM's EM guidance, Dig2DIG's dynamic weights.

The loop fuses a batch of pairs of one size (:func:`sample_batch`; :func:`sample` is one pair). Read
top to bottom, one step is:

1. denoise x_t of every pair (and, on a DIG refresh, every pair's sources noised to t and to the next
   level t', with one shared noise draw, in the same batched call; with ``dig_scale`` > 1 the sources
   are denoised at 1/``dig_scale`` of the size (less reduced if the image is too small for it,
   :func:`dig_scale_for`), in a call of their own);

then, pair by pair, each with its own weights and EM state:

2. x0 = predict_x0(x_t) (clipped to [-1, 1]);
3. on a refresh: per-pixel information gains of each source between t and t' and their softmax
   weights (Cao et al. 2025, Dig2DIG, Sec. 3), enlarged to full size if computed smaller;
   otherwise reuse the last weights (a stream's non-key frame is given every refresh's weights of an
   earlier frame, and its sources are not denoised at all);
4. guidance: DDFM's EM step pulls the luminance of x0 toward the sources (Zhao et al. 2023),
   each source's data term scaled by its weight; uniform weights, ``em_window = 1`` and
   ``em_power = 1`` give DDFM exactly (``em_window`` > 1 smooths the E-step's per-pixel weights,
   ``em_power`` < 1 weakens its pull toward the source x0 is farther from, ``kernels/em.py``);
5. DDIM update (eta = 0) from the corrected x0.

A warm start (``start_step`` > 0) begins at that step of the schedule from a given clean sample
noised there with x_T, and runs only the remaining steps.

The loop is written once over ``ops``, any :class:`~dig2dig.kernels.ops.Ops`: the NumPy twins
(``kernels.NUMPY_OPS``, the CPU path) or the CUDA kernels of the same names
(``kernels.cuda_ops.CudaOps``), and over any backend ``Runner``.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, DefaultDict, Dict, List, Mapping, Optional, Sequence, Tuple

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
    """What the loop saw of one pair: DIG weights and gains at each refresh (arrays of the loop's ``ops``;
    ``gpu_sample`` brings them to the host after the loop), seconds spent per stage (by the whole batch),
    and the loop's NaN/Inf record (one for the batch) with its timesteps (read by :func:`raise_if_nonfinite`)."""

    refreshes: List[Dict[str, Any]] = field(default_factory=list)
    seconds: DefaultDict[str, float] = field(default_factory=lambda: defaultdict(float))
    nonfinite: Any = None
    timesteps: Tuple[int, ...] = ()


class _Stage:
    """Adds the wall time of a ``with`` block to ``seconds[name]`` of every trace (after ``ops.sync``)."""

    def __init__(self, traces: Sequence[Trace], ops: Ops):
        self.traces, self.ops = traces, ops

    def __call__(self, name: str) -> "_Stage":
        self.name = name
        return self

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.ops.sync()
        elapsed = time.perf_counter() - self.start
        for trace in self.traces:
            trace.seconds[self.name] += elapsed


def initial_noise(shape: Tuple[int, ...], seed: int, ops: Ops = NUMPY_OPS) -> Array:
    """x_T: counter-based Gaussian noise, the same numbers on CPU and GPU for a given seed."""
    return ops.gaussian(seed, NOISE_STREAM_INIT, shape)


def sample(runner: Runner, sources: Array, settings: Settings, x_T: Array, ops: Ops = NUMPY_OPS,
           progress: Optional[Callable[[int, int], None]] = None, trace: Optional[Trace] = None,
           check_finite: bool = True) -> Array:
    """Fuse two sources into a sample of the prior's model space: :func:`sample_batch` of one pair.

    ``sources``: ``(2, H, W)`` luminance in [-1, 1], ordered (A, B) as the CLI's roles (the EM step
    takes them in that order and maps them to DDFM's names, ``kernels/em.py``).
    ``x_T``: ``(C, H, W)`` start noise, C the model's input channels. Returns x_0 ``(C, H, W)``.
    ``check_finite``: raise :class:`NumericalError` if the model returned NaN/Inf (reads the
    device record, so it waits for the GPU); False leaves that to :func:`raise_if_nonfinite`, for
    a loop captured in a CUDA graph, which must not wait while capturing.
    """
    return sample_batch(runner, sources[None], settings, x_T[None], ops, progress,
                        None if trace is None else [trace], check_finite)[0]


@dataclass
class _Pair:
    """One pair's part of the loop: its sources (full size, DIG size, and in the model's space), x_t, EM
    state, last DIG weights and Trace."""

    sources: Array       # (K, H, W)
    dig_sources: Array   # (K, h, w): the sources at the DIG size
    source_input: Array  # (K, C, h, w): those in the model's space
    x: Array             # x_t, (C, H, W)
    em_state: Any
    trace: Trace
    given: Optional[Mapping[int, Array]]  # DIG weights by refresh step, reused instead of computed
    weights: Optional[Array] = None


def _joined(arrays: Sequence[Array], ops: Ops) -> Array:
    """``ops.concat`` of ``arrays``, or the only one itself, uncopied."""
    return arrays[0] if len(arrays) == 1 else ops.concat(arrays)


def sample_batch(runner: Runner, sources: Array, settings: Settings, x_T: Array, ops: Ops = NUMPY_OPS,
                 progress: Optional[Callable[[int, int], None]] = None, traces: Optional[Sequence[Trace]] = None,
                 check_finite: bool = True, weights: Optional[Sequence[Optional[Mapping[int, Array]]]] = None,
                 start_step: int = 0, start_x0: Optional[Array] = None) -> List[Array]:
    """Fuse N pairs of sources of one size, each as :func:`sample` fuses it alone, with one model call per
    step for them all (two on a refresh with ``dig_scale`` > 1).

    ``sources``: ``(N, 2, H, W)``; ``x_T``: ``(N, C, H, W)``; returns the N x_0, ``(C, H, W)`` each.
    ``traces``: one per pair (new ones by default); their stage seconds are the batch's, and their NaN/Inf
    record is one for the batch. Every pair gets the same noise draws as alone, so a pair's result is its
    single fusion's wherever the runner's output for an image does not depend on the rest of its batch
    (the CPU runner's does not: it runs one image at a time). ``check_finite`` as for :func:`sample`.

    ``weights``: per pair, None or its DIG weights ``(K, H, W)`` by refresh step (as an earlier fusion's
    ``Trace.refreshes`` hold them): that pair reuses them and its sources are not denoised, so it costs
    only its x_t evaluations. ``start_step`` > 0 with ``start_x0`` ``(N, C, H, W)``: a warm start, the
    loop begins at that step from ``start_x0`` noised there with ``x_T`` as the noise.
    """
    traces = list(traces) if traces is not None else [Trace() for _ in range(int(sources.shape[0]))]
    stage = _Stage(traces, ops)
    schedule = (Schedule.create(settings.steps, runner.info.schedule) if settings.timesteps is None
                else Schedule.from_timesteps(settings.timesteps, runner.info.schedule))
    channels = runner.info.in_channels
    n, k = int(sources.shape[0]), int(sources.shape[1])
    full = (int(sources.shape[2]), int(sources.shape[3]))
    scale = dig_scale_for(full, settings.dig_scale, runner.info.multiple)
    dig_shape = reduced_shape(full, scale, runner.info.multiple)

    def start(j: int) -> _Pair:
        dig_sources = sources[j] if scale == 1 else ops.shrink(sources[j], scale, dig_shape)
        x = x_T[j] if start_x0 is None else ops.q_sample(start_x0[j], x_T[j],
                                                           float(schedule.alphas_cumprod[start_step]))
        return _Pair(sources[j], dig_sources, ops.repeat_channels(dig_sources, channels), x,
                     ops.em_init(full), traces[j], None if weights is None else weights[j])

    pairs = [start(j) for j in range(n)]
    em_window = min(scaled_window(settings.em_window, max(full), settings.em_window_side), 2 * min(full) - 1)
    dig_window = min(scaled_window(settings.dig_window, max(full) // scale, max(full)), 2 * min(dig_shape) - 1)
    nonfinite = ops.nonfinite_init()  # first step whose model output held NaN/Inf, read after the loop
    steps = len(schedule.timesteps)

    def denoise(batch: Array, times: List[int], step: int) -> Array:
        out = runner.denoise(batch, ops.timesteps(times))
        ops.mark_nonfinite(out, step, nonfinite)
        return out[:, :channels]

    for i in range(start_step, steps):
        t = int(schedule.timesteps[i])
        abar, abar_prev = float(schedule.alphas_cumprod[i]), float(schedule.alphas_cumprod_prev[i])
        refresh = settings.guidance == "dig" and i % settings.dig_every == 0 and i + 1 < steps
        fresh = [j for j, p in enumerate(pairs) if p.given is None] if refresh else []  # pairs computing DIG

        with stage("backend"):
            xs = _joined([p.x[None] for p in pairs], ops)
            if fresh:
                t_next = int(schedule.timesteps[i + 1])
                abar_next = float(schedule.alphas_cumprod[i + 1])
                noise = ops.gaussian(settings.seed, NOISE_STREAM_DIG + i, pairs[0].source_input.shape[1:])
                noised = [ops.concat([ops.q_sample(pairs[j].source_input, noise, abar),
                                      ops.q_sample(pairs[j].source_input, noise, abar_next)]) for j in fresh]
                times = ([t] * k + [t_next] * k) * len(fresh)
                if scale == 1:  # every x_t and the noised sources in one batch
                    eps_all = denoise(ops.concat([xs] + noised), [t] * n + times, i)
                    eps, eps_sources = eps_all[:n], eps_all[n:]
                else:  # the sources at their own size: a call of their own
                    eps, eps_sources = denoise(xs, [t] * n, i), denoise(_joined(noised, ops), times, i)
            else:
                eps = denoise(xs, [t] * n, i)

        for j, p in enumerate(pairs):
            x0 = ops.predict_x0(p.x, eps[j], abar)

            if refresh and p.given is not None:
                p.weights = p.given[i]
            elif refresh:
                with stage("dig"):
                    f = fresh.index(j)
                    eps_pair = eps_sources[2 * k * f:2 * k * (f + 1)]
                    x0_t = ops.luma_of(ops.predict_x0(noised[f][:k], eps_pair[:k], abar))
                    x0_next = ops.luma_of(ops.predict_x0(noised[f][k:], eps_pair[k:], abar_next))
                    p.weights, gains = ops.dig_weights(p.dig_sources, x0_t, x0_next, dig_window,
                                                       settings.dig_tau, settings.dig_norm == "spread",
                                                       settings.dig_passes)
                    if scale > 1:
                        p.weights = ops.enlarge(p.weights, scale, full)
                    p.trace.refreshes.append({"step": i, "t": t, "t_next": t_next, "weights": p.weights,
                                              "gains": gains})

            with stage("guidance"):
                ycc = ops.rgb_to_ycbcr(x0) if channels == 3 else x0
                fused, p.em_state = ops.em_step(ycc[0], p.sources[0], p.sources[1], p.em_state, settings.lamb,
                                                settings.rho, None if p.weights is None else p.weights[0],
                                                None if p.weights is None else p.weights[1], em_window,
                                                settings.em_power)
                x0 = ops.ycbcr_to_rgb(ops.replace_channel0(ycc, fused)) if channels == 3 else fused[None]
                p.x = ops.ddim_update(p.x, x0, abar, abar_prev)
        if progress is not None:
            progress(i + 1, steps)
    for trace in traces:
        trace.nonfinite, trace.timesteps = nonfinite, tuple(int(t) for t in schedule.timesteps)
    if check_finite:
        raise_if_nonfinite(traces[0], ops)  # the batch's one record
    return [p.x for p in pairs]


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
