"""The whole GPU reverse loop captured once in a CUDA graph and replayed per frame: for benchmarks only.

A camera stream fuses frames of one size with one setting, so every launch of the loop (the UNet's,
our kernels', the copies and memsets) is the same from frame to frame but for the data. Capturing
them once and replaying the graph removes the host's launch work and the GPU's idle gaps between
launches (the issue's stretch goal: measure what that saves).

How: ``torch.cuda.graph`` captures the pycuda stream of a private :class:`CudaOps` (wrapped as a
``torch.cuda.ExternalStream``). Stream capture belongs to the stream, in the driver, so the
kernels pycuda launches on it are captured with PyTorch's own work, and PyTorch's allocations
while capturing go to the graph's private pool. One eager run at the same size first makes every
pooled and scratch buffer, uploads the timesteps and plans cuDNN; nothing may allocate during
capture (the driver refuses ``cuMemAlloc`` then, and :class:`GraphedLoop` checks the pool too).
Each replay starts from memsets the loop queued itself (NaN/Inf record, EM state), so it depends
only on the inputs, which :meth:`GraphedLoop.run` copies into the captured input buffers.

The ops are private because the graph holds raw addresses: no other loop may resize their
scratch buffers or take their pooled ones. TensorRT's ``execute_async_v3`` can be captured the
same way (with the driver's ``cuStreamBeginCapture``, as PyTorch is not involved); that path is
not written, since TensorRT cannot be run here.
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np
import torch

from ..kernels.cuda import CudaKernels
from ..kernels.cuda_ops import CudaOps
from ..runtime.gpu import DeviceRunner
from ..runtime.sampler import Settings, Trace, raise_if_nonfinite, sample
from .torch_runner import TorchCudaRunner


class GraphedLoop:
    """``runtime.gpu.gpu_sample`` for one frame size and one ``settings``, as a replayed CUDA graph.

    ``sources`` ``(2, H, W)`` and ``x_T`` ``(C, H, W)``: the first frame, used for the warm-up run and
    the capture. :meth:`run` fuses any frame of that shape; :meth:`replay` replays the graph on what
    the input buffers hold. :attr:`trace` holds the last replay's DIG maps (device arrays).
    """

    def __init__(self, runner: TorchCudaRunner, settings: Settings, sources: np.ndarray, x_T: np.ndarray,
                 device: int = 0) -> None:
        self.runner, self.settings = runner, settings
        self.ops = CudaOps(CudaKernels(device), sync_stages=False)
        self.shape: Tuple[Tuple[int, ...], Tuple[int, ...]] = (tuple(sources.shape), tuple(x_T.shape))
        self.sources = self.ops.buffer("graph_sources", sources.shape)
        self.x_T = self.ops.buffer("graph_x_T", x_T.shape)
        self._upload(sources, x_T)
        model = DeviceRunner(runner, self.ops, timed=False)
        sample(model, self.sources, settings, self.x_T, ops=self.ops)  # buffers, timesteps, cuDNN plans
        self.stream = torch.cuda.ExternalStream(self.ops.stream.handle, device=runner.device)
        allocations = self.ops.pool.allocations
        self.trace = Trace()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=self.stream):
            self.x = sample(model, self.sources, settings, self.x_T, ops=self.ops, trace=self.trace,
                            check_finite=False)
        if self.ops.pool.allocations != allocations:
            raise RuntimeError("the captured loop allocated buffers the warm-up run did not: "
                               f"{self.ops.pool.allocations - allocations} more")

    def _upload(self, sources: np.ndarray, x_T: np.ndarray) -> None:
        if (tuple(sources.shape), tuple(x_T.shape)) != self.shape:
            raise ValueError(f"the graph was captured for sources {self.shape[0]} and x_T {self.shape[1]}, "
                             f"got {tuple(sources.shape)} and {tuple(x_T.shape)}")
        self.sources.set(np.ascontiguousarray(sources, np.float32))
        self.x_T.set(np.ascontiguousarray(x_T, np.float32))

    def replay(self) -> Any:
        """Queue one replay on the ops' stream (no wait); returns the device array of the sample."""
        with torch.cuda.stream(self.stream):
            self.graph.replay()
        return self.x

    def run(self, sources: np.ndarray, x_T: np.ndarray) -> np.ndarray:
        """The final sample ``(C, H, W)`` on the host for one frame, as ``gpu_sample(...).sample``."""
        self._upload(sources, x_T)
        self.replay()
        result = self.ops.to_host(self.x)
        raise_if_nonfinite(self.trace, self.ops)
        return result

    def close(self) -> None:
        """Free the graph, then the ops' buffers and kernels."""
        self.ops.stream.synchronize()
        del self.graph
        self.ops.close()
