"""The loop's operations on the GPU: the device twin of ``numpy_ops``, over :class:`CudaKernels`.

``runtime.sampler.sample(..., ops=CudaOps())`` runs the same loop as the CPU path on pycuda
GPUArrays: every function of ``numpy_ops`` exists here under the same name and with the same
meaning, returning device arrays, all work queued on the one stream of :class:`CudaKernels`.

Buffers: each result lives in a buffer of a :class:`BufferPool`, kept by (operation, shape) and
handed out again only once no array (nor any view of one) refers to it any more, so results are
ordinary values, as in NumPy. Each (operation, shape) gets as many buffers as the loop holds its
values at once: those of the previous step still bound to the sampler's variables plus the new one
(three at most: ``luma_of``'s x0_t and x0_next of the last refresh and the next x0_t), and the DIG
maps of every refresh, which the sampler's trace keeps until ``runtime.gpu.gpu_sample`` downloads
them after the loop. Only the first run at a size allocates; a later run at the same size allocates
nothing. Reuse needs no synchronisation: every reader and writer of device memory is on the one
stream, which blocks with the legacy default stream that the synchronous host copies of
``from_host`` and ``to_host`` use. ``timesteps`` arrays are kept per distinct list until
:meth:`close`.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cuda import CudaEMState, CudaKernels
from .numpy_ops import NO_STEP

Shape = Tuple[int, ...]


@dataclass
class _Slot:
    allocation: Any
    array: Optional["weakref.ReferenceType[Any]"] = None

    def free(self) -> bool:
        return self.array is None or self.array() is None


class BufferPool:
    """Device buffers kept by (role, shape, dtype), each handed out again once nothing refers to it.

    ``allocate(nbytes)`` makes a device allocation, ``wrap(shape, dtype, allocation)`` an array
    over it. An array is "referred to" while it or any view of it is alive (views keep their base
    alive), which CPython tracks exactly through reference counts.
    """

    def __init__(self, allocate: Callable[[int], Any], wrap: Callable[[Shape, np.dtype, Any], Any]) -> None:
        self._allocate, self._wrap = allocate, wrap
        self._slots: Dict[Tuple[str, Shape, str], List[_Slot]] = {}
        self.allocations = 0

    def take(self, role: str, shape: Sequence[int], dtype: Any = np.float32) -> Any:
        """An array of ``shape`` over a buffer of ``role`` that no live array uses; allocate one if none is free."""
        dtype = np.dtype(dtype)
        shape = tuple(int(v) for v in shape)
        slots = self._slots.setdefault((role, shape, dtype.str), [])
        slot = next((s for s in slots if s.free()), None)
        if slot is None:
            slot = _Slot(self._allocate(max(1, int(np.prod(shape)) * dtype.itemsize)))
            slots.append(slot)
            self.allocations += 1
        array = self._wrap(shape, dtype, slot.allocation)
        slot.array = weakref.ref(array)
        return array

    def free(self) -> None:
        """Free every buffer; arrays handed out before become invalid."""
        for slots in self._slots.values():
            for slot in slots:
                slot.allocation.free()
        self._slots.clear()


class CudaOps:
    """``numpy_ops`` on the device, an :class:`~dig2dig.kernels.ops.Ops`: same names, same meaning,
    pycuda GPUArrays in and out.

    ``kernels``: the launcher to use (default: a new :class:`CudaKernels` on device 0, closed by
    :meth:`close`). ``sync_stages``: :meth:`sync` waits for the stream, so that the sampler's
    per-stage wall times are right; with False it returns at once and the loop never waits for the
    GPU (results come back by :meth:`to_host`).
    """

    def __init__(self, kernels: Optional[CudaKernels] = None, sync_stages: bool = True) -> None:
        self._own_kernels = kernels is None
        self.kernels = CudaKernels() if kernels is None else kernels
        self.stream = self.kernels.stream
        self.sync_stages = sync_stages
        self._driver = self.kernels.driver
        self._gpuarray = self.kernels.gpuarray
        self.pool = BufferPool(self._driver.mem_alloc, self._wrap)
        self._timesteps: Dict[Tuple[int, ...], Tuple[np.ndarray, Any]] = {}

    def _wrap(self, shape: Shape, dtype: np.dtype, allocation: Any) -> Any:
        return self._gpuarray.GPUArray(shape, dtype, gpudata=allocation)

    def buffer(self, role: str, shape: Sequence[int], dtype: Any = np.float32) -> Any:
        """An uninitialised pooled device array (for outputs written by others, e.g. the UNet)."""
        return self.pool.take(role, shape, dtype)

    def _copy(self, dst: Any, src: Any) -> None:
        """Queue a device-to-device copy between two C-contiguous arrays of the same size."""
        if dst.nbytes != src.nbytes or not (dst.flags.c_contiguous and src.flags.c_contiguous):
            raise ValueError(f"copy: {tuple(src.shape)} -> {tuple(dst.shape)} needs two contiguous arrays of one size")
        self._driver.memcpy_dtod_async(dst.gpudata, src.gpudata, src.nbytes, self.stream)

    def _contiguous(self, array: Any) -> Any:
        """``array`` itself if C-contiguous, else a contiguous copy (e.g. epsilon of a learn_sigma output)."""
        if array.flags.c_contiguous:
            return array
        out = self.pool.take("contiguous", array.shape)
        out.set(array, async_=True, stream=self.stream)
        return out

    # -- host transfers --------------------------------------------------------------------------

    def from_host(self, array: np.ndarray) -> Any:
        """A float32 device copy of a host array (synchronous)."""
        host = np.ascontiguousarray(array, dtype=np.float32)
        out = self.pool.take("from_host", host.shape)
        out.set(host)
        return out

    def to_host(self, array: Any) -> np.ndarray:
        """The array on the host (waits for the stream); the sampler calls it once, after its loop,
        for the NaN/Inf record."""
        self.stream.synchronize()
        return array.get()

    def timesteps(self, values: Sequence[int]) -> Any:
        """The model's ``t`` input: N floats, uploaded once per distinct list on the stream from pinned
        memory (no wait) and kept, so a loop run again at the same schedule uploads nothing."""
        key = tuple(int(v) for v in values)
        if key not in self._timesteps:
            host = self._driver.pagelocked_empty((len(key),), np.float32)
            host[:] = key
            out = self.pool.take("timesteps", host.shape)
            out.set(host, async_=True, stream=self.stream)
            self._timesteps[key] = (host, out)
        return self._timesteps[key][1]

    def nonfinite_init(self) -> Any:
        """The loop's NaN/Inf record on the device: one uint32 set to ``NO_STEP``."""
        record = self.pool.take("nonfinite", (1,), np.uint32)
        self._driver.memset_d32_async(record.gpudata, NO_STEP, 1, self.stream)
        return record

    def mark_nonfinite(self, array: Any, step: int, record: Any) -> None:
        """``record`` = min(record, step) if ``array`` holds NaN or Inf, on the device (no wait)."""
        self.kernels.mark_nonfinite(self._contiguous(array), step, record)

    def sync(self) -> None:
        """Wait for the stream (unless ``sync_stages`` is False)."""
        if self.sync_stages:
            self.stream.synchronize()

    # -- array plumbing --------------------------------------------------------------------------

    def repeat_channels(self, images: Any, channels: int) -> Any:
        """(K, H, W) -> (K, C, H, W): a grey source in a C-channel model's space."""
        k, height, width = (int(v) for v in images.shape)
        images = self._contiguous(images)
        out = self.pool.take("repeat_channels", (k, channels, height, width))
        for i in range(k):
            for c in range(channels):
                self._copy(out[i, c], images[i])
        return out

    def concat(self, arrays: Sequence[Any]) -> Any:
        """Concatenation along the first axis."""
        rows = sum(int(a.shape[0]) for a in arrays)
        out = self.pool.take("concat", (rows,) + tuple(arrays[0].shape[1:]))
        start = 0
        for array in arrays:
            stop = start + int(array.shape[0])
            self._copy(out[start:stop], self._contiguous(array))
            start = stop
        return out

    def luma_of(self, images: Any) -> Any:
        """(K, C, H, W) -> (K, H, W): channel mean."""
        k, _, height, width = (int(v) for v in images.shape)
        out = self.pool.take("luma_of", (k, height, width))
        self.kernels.luma_of(self._contiguous(images), out)
        return out

    def replace_channel0(self, images: Any, channel: Any) -> Any:
        """A copy of ``images`` whose first channel is ``channel``."""
        out = self.pool.take("replace_channel0", images.shape)
        self._copy(out, self._contiguous(images))
        self._copy(out[0], self._contiguous(channel))
        return out

    # -- the kernels -----------------------------------------------------------------------------

    def shrink(self, images: Any, factor: int, shape: Sequence[int]) -> Any:
        out = self.pool.take("shrink", (int(images.shape[0]),) + tuple(int(v) for v in shape))
        self.kernels.shrink(self._contiguous(images), factor, out)
        return out

    def enlarge(self, images: Any, factor: int, shape: Sequence[int]) -> Any:
        out = self.pool.take("enlarge", (int(images.shape[0]),) + tuple(int(v) for v in shape))
        self.kernels.enlarge(self._contiguous(images), factor, out)
        return out

    def gaussian(self, seed: int, stream: int, shape: Sequence[int]) -> Any:
        out = self.pool.take("gaussian", shape)
        self.kernels.gaussian(seed, stream, out)
        return out

    def predict_x0(self, x: Any, eps: Any, abar: float, clip: bool = True) -> Any:
        out = self.pool.take("predict_x0", x.shape)
        self.kernels.predict_x0(self._contiguous(x), self._contiguous(eps), abar, clip, out)
        return out

    def q_sample(self, x0: Any, noise: Any, abar: float) -> Any:
        out = self.pool.take("q_sample", x0.shape)
        self.kernels.q_sample(self._contiguous(x0), self._contiguous(noise), abar, out)
        return out

    def ddim_update(self, x: Any, x0: Any, abar: float, abar_prev: float) -> Any:
        out = self.pool.take("ddim_update", x.shape)
        self.kernels.ddim_update(self._contiguous(x), self._contiguous(x0), abar, abar_prev, out)
        return out

    def rgb_to_ycbcr(self, x: Any) -> Any:
        out = self.pool.take("rgb_to_ycbcr", x.shape)
        self.kernels.rgb_to_ycbcr(self._contiguous(x), out)
        return out

    def ycbcr_to_rgb(self, x: Any) -> Any:
        out = self.pool.take("ycbcr_to_rgb", x.shape)
        self.kernels.ycbcr_to_rgb(self._contiguous(x), out)
        return out

    def dig_weights(self, sources: Any, x0_t: Any, x0_next: Any, window: int, tau: float,
                    relative: bool = True, passes: int = 1) -> Tuple[Any, Any]:
        weights = self.pool.take("dig_weights", sources.shape)
        gains = self.pool.take("dig_gains", sources.shape)
        dense = self._contiguous
        self.kernels.dig_weights(dense(sources), dense(x0_t), dense(x0_next), window, tau, weights, gains, relative,
                                 passes)
        return weights, gains

    def em_init(self, shape: Tuple[int, int]) -> CudaEMState:
        return self.kernels.em_init(shape, self.pool.take)

    def em_step(self, f_pre: Any, a: Any, b: Any, state: CudaEMState, lamb: float, rho: float,
                w_a: Optional[Any] = None, w_b: Optional[Any] = None, window: int = 1,
                power: float = 1.0) -> Tuple[Any, CudaEMState]:
        """``(F, state)`` as ``em.em_step``; the returned state is ``state``, updated in place."""
        out = self.pool.take("em_step", a.shape)
        dense = self._contiguous
        self.kernels.em_step(dense(f_pre), dense(a), dense(b), state, lamb, rho, None if w_a is None else dense(w_a),
                             None if w_b is None else dense(w_b), out, window, power)
        return out, state

    # -- lifetime --------------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for the stream and free the pooled buffers (arrays from this object become invalid);
        close the kernels too if this object created them."""
        self.stream.synchronize()
        self._timesteps.clear()
        self.pool.free()
        if self._own_kernels:
            self.kernels.close()
