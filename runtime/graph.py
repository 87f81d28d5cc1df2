"""The whole GPU reverse loop captured once in a CUDA graph and replayed per frame.

A camera stream fuses frames of one size with one setting, so every launch of the loop (the
UNet's, our kernels', the copies and memsets) is the same from frame to frame but for the data.
Capturing them once and replaying the graph removes the host's launch work and the GPU's idle
gaps between launches.

Stream capture belongs to the stream, in the driver: whatever is queued on the ops' pycuda stream
while capturing becomes the graph. pycuda has no graph API, so a *graph* here is a small object
with ``capture(stream)`` (a context manager), ``replay(stream)`` and ``close()``:

- :class:`DriverGraph` calls the driver API (``libcuda``) through ctypes on the stream handle:
  for TensorRT engines and our kernels, which allocate nothing once warmed up.
- ``export.cuda_graph.TorchGraph`` uses ``torch.cuda.graph``, for the PyTorch runner, whose caching
  allocator must take its memory from the graph's own pool while capturing.

:class:`GraphedLoop` runs the loop once eagerly at the frame size (making every pooled and scratch
buffer, uploading the timesteps, letting TensorRT or cuDNN plan), then captures a second run;
nothing may allocate during capture (the driver refuses ``cuMemAlloc`` then, and the loop checks
the pool too). Each replay starts from memsets the loop queued itself (NaN/Inf record, EM state),
so it depends only on the inputs, which :meth:`GraphedLoop.run` copies into the captured buffers.
Its ops are private because the graph holds raw addresses: no other loop may resize their
scratch buffers or take their pooled ones.

TensorRT (unverified: it cannot be run here): a captured ``execute_async_v3`` fixes the execution
context's input shapes and addresses, and TensorRT asks for one uncaptured enqueue after input
shapes change. The loop runs the UNet at batch 1 per step and at the DIG batch at each refresh.
On a plan built with ``--batches 1,5`` (two sources) ``TrtRunner`` runs them on two contexts
whose shapes never change after the warm-up run; on a plan with one profile over both batches
the shape changes inside the capture, which TensorRT may refuse (``ModelError`` then).
"""
from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from .backends.base import Runner
from .sampler import Settings, Trace, raise_if_nonfinite, sample

CU_STREAM_CAPTURE_MODE_GLOBAL = 0  # cuda.h's CUstreamCaptureMode: any unsafe call, any thread, fails
_C_TYPES: Dict[str, Any] = {
    "CUresult": ctypes.c_int, "CUstream": ctypes.c_void_p, "CUgraph": ctypes.c_void_p,
    "CUgraphExec": ctypes.c_void_p, "CUgraph *": ctypes.POINTER(ctypes.c_void_p),
    "CUgraphExec *": ctypes.POINTER(ctypes.c_void_p), "CUstreamCaptureMode": ctypes.c_int,
    "unsigned long long": ctypes.c_ulonglong, "const char **": ctypes.POINTER(ctypes.c_char_p),
    "CUdeviceptr": ctypes.c_uint64, "unsigned int": ctypes.c_uint, "size_t": ctypes.c_size_t,
}
# The driver functions used, with their parameter types as cuda.h declares them (all return
# CUresult); tests/test_cuda_graph.py compiles these prototypes against the CUDA headers.
# cuStreamBeginCapture_v2 and cuGraphInstantiateWithFlags are what cuda.h's cuStreamBeginCapture
# and cuGraphInstantiate name from CUDA 12; both exist since CUDA 11.4 (JetPack 5).
DRIVER_FUNCTIONS: Dict[str, Tuple[str, ...]] = {
    "cuStreamBeginCapture_v2": ("CUstream", "CUstreamCaptureMode"),
    "cuStreamEndCapture": ("CUstream", "CUgraph *"),
    "cuGraphInstantiateWithFlags": ("CUgraphExec *", "CUgraph", "unsigned long long"),
    "cuGraphLaunch": ("CUgraphExec", "CUstream"),
    "cuGraphExecDestroy": ("CUgraphExec",),
    "cuGraphDestroy": ("CUgraph",),
    "cuGetErrorName": ("CUresult", "const char **"),
}
DRIVER_LIBRARY = "nvcuda.dll" if sys.platform == "win32" else "libcuda.so.1"


class CudaDriver:
    """Driver API calls bound with ctypes from ``libcuda``: ``functions`` maps each name to its
    parameter types as spelled in cuda.h (keys of ``_C_TYPES``); cuGetErrorName is always bound."""

    def __init__(self, functions: Mapping[str, Tuple[str, ...]] = DRIVER_FUNCTIONS,
                 library: str = DRIVER_LIBRARY) -> None:
        try:
            self._lib = ctypes.CDLL(library)
        except OSError as exc:
            raise RuntimeError(f"CUDA graphs need the CUDA driver library {library}: {exc}") from exc
        for name, parameters in {**functions, "cuGetErrorName": DRIVER_FUNCTIONS["cuGetErrorName"]}.items():
            function = getattr(self._lib, name)
            function.argtypes = [_C_TYPES[p] for p in parameters]
            function.restype = _C_TYPES["CUresult"]

    def call(self, name: str, *args: Any) -> None:
        """Call driver function ``name``; raise ``RuntimeError`` with the driver's error name on failure."""
        status = getattr(self._lib, name)(*args)
        if status != 0:
            text = ctypes.c_char_p()
            self._lib.cuGetErrorName(status, ctypes.byref(text))
            error = text.value.decode() if text.value else f"CUresult {status}"
            raise RuntimeError(f"{name} failed: {error}")


class DriverGraph:
    """A CUDA graph captured from a pycuda stream through the driver API."""

    def __init__(self, driver: Optional[CudaDriver] = None) -> None:
        self.driver = driver if driver is not None else CudaDriver()
        self._graph = ctypes.c_void_p()
        self._exec = ctypes.c_void_p()

    @contextmanager
    def capture(self, stream: Any) -> Iterator[None]:
        """Capture what the body queues on ``stream`` (nothing runs), then instantiate the graph.

        The capture is ended even when the body raises, so the stream stays usable."""
        if self._exec.value:
            raise RuntimeError("this graph is already captured")
        handle = ctypes.c_void_p(stream.handle)
        self.driver.call("cuStreamBeginCapture_v2", handle, CU_STREAM_CAPTURE_MODE_GLOBAL)
        try:
            yield
        finally:
            self.driver.call("cuStreamEndCapture", handle, ctypes.byref(self._graph))
        self.driver.call("cuGraphInstantiateWithFlags", ctypes.byref(self._exec), self._graph, 0)

    def replay(self, stream: Any) -> None:
        """Queue one launch of the graph on ``stream``."""
        if not self._exec.value:
            raise RuntimeError("replay before capture")
        self.driver.call("cuGraphLaunch", self._exec, ctypes.c_void_p(stream.handle))

    def close(self) -> None:
        """Destroy the executable graph and the graph (the caller waits for replays first)."""
        if self._exec.value:
            self.driver.call("cuGraphExecDestroy", self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph.value:
            self.driver.call("cuGraphDestroy", self._graph)
            self._graph = ctypes.c_void_p()


class GraphedLoop:
    """``runtime.gpu.gpu_sample`` for one frame size and one ``settings``, as a replayed CUDA graph.

    ``runner`` is a GPU runner (``on_device``: ``TrtRunner``, ``TorchCudaRunner``); ``graph`` captures it
    (default :class:`DriverGraph`; the PyTorch runner needs ``export.cuda_graph.TorchGraph``).
    ``sources`` ``(2, H, W)`` and ``x_T`` ``(C, H, W)``: the first frame, used for the warm-up run
    and the capture. :meth:`run` fuses any frame of that shape; :meth:`replay` replays the graph
    on what the input buffers hold. :attr:`trace` holds the last replay's DIG maps (device arrays).
    """

    def __init__(self, runner: Runner, settings: Settings, sources: np.ndarray, x_T: np.ndarray,
                 graph: Any = None, device: int = 0) -> None:
        from ..kernels.cuda import CudaKernels
        from ..kernels.cuda_ops import CudaOps
        from .gpu import DeviceRunner

        self.graph = graph if graph is not None else DriverGraph()
        self.ops = CudaOps(CudaKernels(device), sync_stages=False)
        try:
            self.shape = (tuple(sources.shape), tuple(x_T.shape))
            self.sources = self.ops.buffer("graph_sources", sources.shape)
            self.x_T = self.ops.buffer("graph_x_T", x_T.shape)
            self._upload(sources, x_T)
            model = DeviceRunner(runner, self.ops, timed=False)
            sample(model, self.sources, settings, self.x_T, ops=self.ops)
            allocations = self.ops.pool.allocations
            self.trace = Trace()
            with self.graph.capture(self.ops.stream):
                self.x = sample(model, self.sources, settings, self.x_T, ops=self.ops, trace=self.trace,
                                check_finite=False)
            if self.ops.pool.allocations != allocations:
                raise RuntimeError("the captured loop allocated buffers the warm-up run did not: "
                                   f"{self.ops.pool.allocations - allocations} more")
        except BaseException:
            self.close()
            raise

    def _upload(self, sources: np.ndarray, x_T: np.ndarray) -> None:
        if (tuple(sources.shape), tuple(x_T.shape)) != self.shape:
            raise ValueError(f"the graph was captured for sources {self.shape[0]} and x_T {self.shape[1]}, "
                             f"got {tuple(sources.shape)} and {tuple(x_T.shape)}")
        self.sources.set(np.ascontiguousarray(sources, np.float32))
        self.x_T.set(np.ascontiguousarray(x_T, np.float32))

    def replay(self) -> Any:
        """Queue one replay on the ops' stream (no wait); returns the device array of the sample."""
        self.graph.replay(self.ops.stream)
        return self.x

    def run(self, sources: np.ndarray, x_T: np.ndarray) -> np.ndarray:
        """The final sample ``(C, H, W)`` on the host for one frame, as ``gpu_sample(...).sample``."""
        self._upload(sources, x_T)
        self.replay()
        result = self.ops.to_host(self.x)
        raise_if_nonfinite(self.trace, self.ops)
        return result

    def close(self) -> None:
        """Wait for the stream, free the graph, then the ops' buffers and kernels."""
        self.ops.stream.synchronize()
        self.graph.close()
        self.ops.close()
