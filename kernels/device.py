"""CUDA plumbing every GPU layer shares: pycuda, the device's primary context, grow-only buffers, array checks.

pycuda is imported on first use (:func:`cuda_driver`, :func:`cuda_gpuarray`): importing this module
never needs it, and using it without pycuda raises :class:`CudaError` with the fix. Every GPU user
(our kernels, the TensorRT runner and builder, the INT8 calibrator) works on the device's *primary*
context (:class:`PrimaryContext`), the one the CUDA runtime and so TensorRT and PyTorch use, so
their memory and streams can be shared.
"""
from __future__ import annotations

import atexit
from typing import Any, Callable, Dict, Sequence, Tuple, Type

import numpy as np

NO_PYCUDA = ("the CUDA path needs pycuda: pip install 'dig2dig[gpu]' (pycuda builds against the local "
             "CUDA driver, with nvcc on PATH)")


class CudaError(RuntimeError):
    """CUDA is unusable here (no pycuda, no device, no nvcc) or a kernel failed to build."""


def cuda_driver() -> Any:
    """``pycuda.driver``, imported and initialised on first use; :class:`CudaError` with the fix without pycuda."""
    try:
        import pycuda.driver as driver
    except ImportError as exc:
        raise CudaError(f"{NO_PYCUDA} ({exc})") from exc
    driver.init()
    return driver


def cuda_gpuarray() -> Any:
    """``pycuda.gpuarray`` (after :func:`cuda_driver`, which reports a missing pycuda)."""
    import pycuda.gpuarray as gpuarray

    return gpuarray


class PrimaryContext:
    """Device ``number``'s retained primary context, pushed until :meth:`pop` (or the end of a ``with`` block).

    :attr:`driver` is ``pycuda.driver`` and :attr:`device` the pycuda ``Device``; :class:`CudaError`
    when there is no such device.
    """

    def __init__(self, number: int = 0) -> None:
        self.driver = cuda_driver()
        count = self.driver.Device.count()
        if count <= number:
            raise CudaError(f"no CUDA device {number} (found {count})")
        self.device = self.driver.Device(number)
        self.context = self.device.retain_primary_context()
        self.context.push()

    def compute_capability(self) -> Tuple[int, int]:
        """``(major, minor)`` of the device."""
        major, minor = self.device.compute_capability()
        return int(major), int(minor)

    def pop(self) -> None:
        """Pop the context pushed by the constructor."""
        self.context.pop()

    def __enter__(self) -> "PrimaryContext":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pop()


class GrowBuffers:
    """Device buffers kept by name, each reallocated only when a larger one is asked for.

    ``allocate(nbytes)`` makes a device allocation (``driver.mem_alloc``); ``synchronize()`` waits
    for the work that may still use a buffer before it is freed for a larger one.
    """

    def __init__(self, allocate: Callable[[int], Any], synchronize: Callable[[], None]) -> None:
        self._allocate, self._synchronize = allocate, synchronize
        self._buffers: Dict[str, Tuple[Any, int]] = {}

    def get(self, name: str, nbytes: int) -> Any:
        """Buffer ``name`` of at least ``nbytes``."""
        buffer, size = self._buffers.get(name, (None, 0))
        if size < nbytes:
            if buffer is not None:
                self._synchronize()
                buffer.free()
            buffer = self._allocate(nbytes)
            self._buffers[name] = (buffer, nbytes)
        return buffer

    def __contains__(self, name: str) -> bool:
        return name in self._buffers

    def free(self) -> None:
        """Free every buffer (the caller has waited for the work using them)."""
        for buffer, _ in self._buffers.values():
            buffer.free()
        self._buffers.clear()


class DeviceOwner:
    """Holds a device's primary context, one stream and grow-only buffers, and releases them once.

    :meth:`open_device` takes them; :meth:`close` (idempotent, also run at exit) waits for the stream,
    frees the buffers, calls :meth:`release` for what a subclass holds on the device, and pops the
    context. Our kernels and the TensorRT runner are device owners.
    """

    context: PrimaryContext
    driver: Any
    stream: Any
    buffers: GrowBuffers
    closed: bool = True

    def open_device(self, context: PrimaryContext, stream: Any = None) -> None:
        """Own ``context`` (pushed), with ``stream`` or a new one, until :meth:`close`."""
        self.context, self.driver = context, context.driver
        self.stream = stream if stream is not None else self.driver.Stream()
        self.buffers = GrowBuffers(self.driver.mem_alloc, self.stream.synchronize)
        self.closed = False
        atexit.register(self.close)

    def release(self) -> None:
        """Free what the subclass holds on the device; called by :meth:`close` before the context pops."""

    def close(self) -> None:
        """Finish queued work, free the buffers and what :meth:`release` frees, pop the context (idempotent)."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        self.stream.synchronize()
        self.buffers.free()
        self.release()
        self.context.pop()


def check_array(name: str, array: Any, shape: Sequence[int], error: Type[Exception] = ValueError) -> None:
    """Raise ``error`` unless ``array`` is a C-contiguous float32 device array of ``shape``."""
    if tuple(array.shape) != tuple(shape) or array.dtype != np.float32 or not array.flags.c_contiguous:
        raise error(f"{name}: expected a C-contiguous float32 GPU array of shape {tuple(shape)}, "
                    f"got {array.dtype} {tuple(array.shape)}")
