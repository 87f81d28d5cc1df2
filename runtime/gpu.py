"""The loop on the GPU: the sampler of ``sampler.py`` over ``CudaOps`` and a GPU runner.

There is no second loop: :func:`gpu_sample` uploads the sources and x_T, runs
``sampler.sample`` with :class:`~dig2dig.kernels.cuda_ops.CudaOps` and a :class:`DeviceRunner`,
and downloads only the result. pycuda is needed only when no ``ops`` are given.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .backends.base import Runner
from .sampler import Settings, Trace, raise_if_nonfinite, sample

if TYPE_CHECKING:
    from ..kernels.cuda_ops import CudaOps


class DeviceRunner(Runner):
    """A GPU runner (``on_device``: ``TrtRunner``, ``TorchCudaRunner``) seen by the sampler as a plain
    runner on device arrays.

    ``denoise(x, t)`` takes GPUArrays, queues the model on the ops' stream into a pooled output and
    returns it; with ``timed``, CUDA events around each call give the model's GPU time
    (:meth:`seconds`). A loop captured in a CUDA graph runs untimed: events recorded while capturing
    can be neither waited for nor timed.
    """

    def __init__(self, runner: Runner, ops: "CudaOps", timed: bool = True) -> None:
        self.runner, self.ops, self.info, self.timed = runner, ops, runner.info, timed
        self._events: List[Tuple[Any, Any]] = []

    def denoise(self, x: Any, t: Any) -> Any:
        shape = (int(x.shape[0]), self.info.out_channels) + tuple(int(v) for v in x.shape[2:])
        y = self.ops.buffer("denoise", shape)
        driver, stream = self.ops.kernels.driver, self.ops.stream
        events = (driver.Event(), driver.Event()) if self.timed else None
        if events is not None:
            events[0].record(stream)
        self.runner.denoise_device(x, t, y, stream.handle)
        if events is not None:
            events[1].record(stream)
            self._events.append(events)
        return y

    def seconds(self) -> float:
        """GPU seconds spent in the model so far (waits for the last call)."""
        if not self._events:
            return 0.0
        self._events[-1][1].synchronize()
        return sum(end.time_since(start) for start, end in self._events) / 1000.0


@dataclass
class GpuSample:
    """The final sample on the host and where the time went.

    ``seconds``: ``upload`` and ``download`` (wall, synchronous copies), ``loop`` (GPU time from
    the loop's first to its last queued work, idle gaps included), ``model`` (GPU time inside the
    runner), ``other`` (``loop - model``: the kernels, copies and the host's launch and sync gaps)
    and ``loop_wall``.
    """

    sample: np.ndarray
    seconds: Dict[str, float] = field(default_factory=dict)
    trace: Trace = field(default_factory=Trace)


def gpu_sample(runner: Runner, sources: np.ndarray, settings: Settings, x_T: np.ndarray,
               ops: Optional["CudaOps"] = None, progress: Optional[Callable[[int, int], None]] = None,
               trace: Optional[Trace] = None) -> GpuSample:
    """``sampler.sample`` on the GPU for host ``sources`` ``(2, H, W)`` and ``x_T`` ``(C, H, W)``.

    ``runner`` is a GPU runner (``on_device``); ``ops`` defaults to a new ``CudaOps`` (closed at the end).
    Returns the final sample as ``sampler.sample`` does, on the host; raises ``NumericalError`` after
    the download when a model output held NaN/Inf (the device record is read once, with the rest).
    """
    own_ops = ops is None
    if ops is None:
        from ..kernels.cuda_ops import CudaOps

        ops = CudaOps()
    trace = trace if trace is not None else Trace()
    try:
        driver = ops.kernels.driver
        seconds: Dict[str, float] = {}
        start = time.perf_counter()
        device_sources, device_x = ops.from_host(sources), ops.from_host(x_T)
        seconds["upload"] = time.perf_counter() - start
        device_runner = DeviceRunner(runner, ops)
        begin, end = driver.Event(), driver.Event()
        start = time.perf_counter()
        begin.record(ops.stream)
        x = sample(device_runner, device_sources, settings, device_x, ops=ops, progress=progress, trace=trace,
                   check_finite=False)
        end.record(ops.stream)
        end.synchronize()
        seconds["loop_wall"] = time.perf_counter() - start
        seconds["loop"] = end.time_since(begin) / 1000.0
        seconds["model"] = device_runner.seconds()
        seconds["other"] = seconds["loop"] - seconds["model"]
        start = time.perf_counter()
        result = ops.to_host(x)
        for refresh in trace.refreshes:
            refresh["weights"], refresh["gains"] = ops.to_host(refresh["weights"]), ops.to_host(refresh["gains"])
        trace.nonfinite = ops.to_host(trace.nonfinite)
        seconds["download"] = time.perf_counter() - start
        raise_if_nonfinite(trace)
        return GpuSample(sample=result, seconds=seconds, trace=trace)
    finally:
        if own_ops:
            ops.close()
