"""CudaOps and the GPU loop without a GPU: the buffer pool, and the whole loop on a stand-in device.

The stand-in (``FakeKernels``) has ``CudaKernels``' methods, each computing its NumPy twin into the
``out`` array, on "device arrays" that are NumPy memory behind pycuda's GPUArray interface (raw
pointers, views that keep their base alive, copies by pointer). The sampler over ``CudaOps`` on it
must then give bit for bit the CPU loop's result: this checks the plumbing (which buffer holds
what, views, copies, the pool's reuse, the runner adapter), not the CUDA kernels, which
test_kernels_gpu.py checks on a GPU. Fresh buffers are filled with NaN, so a result that is never
written shows up.
"""
from __future__ import annotations

import ctypes
import gc
import inspect
import sys
import time
import types
from typing import Any, Optional

import numpy as np
import pytest

from dig2dig.runtime.schedule import ADM_LINEAR
from dig2dig.kernels import NUMPY_OPS, color, dig, em, numpy_ops, resample, rng, step
from dig2dig.kernels import cuda
from dig2dig.kernels.cuda_ops import BufferPool, CudaOps
from dig2dig.kernels.device import CudaError, GrowBuffers, cuda_driver
from dig2dig.runtime.backends.base import ModelInfo, Runner
from dig2dig.runtime.errors import NumericalError
from dig2dig.runtime.gpu import gpu_sample
from dig2dig.runtime.sampler import Settings, Trace, initial_noise, sample
from test_kernels_compile import fake_kernels



class FakeAllocation:
    """Host memory standing in for a device allocation; ``int()`` is its address."""

    def __init__(self, nbytes: int) -> None:
        self.memory = np.full(nbytes, 0xFF, np.uint8)  # float32 NaN everywhere
        self.freed = False

    def __int__(self) -> int:
        return self.memory.ctypes.data

    def free(self) -> None:
        self.freed = True


class FakeGPUArray:
    """The part of pycuda's GPUArray that CudaOps and the sampler use, over host memory."""

    def __init__(self, shape: Any, dtype: Any, gpudata: Any = None, base: Any = None, view: Any = None) -> None:
        if view is None:
            count = int(np.prod(shape))
            view = gpudata.memory.view(np.dtype(dtype))[:count].reshape(shape)
        self.arr, self.base, self.gpudata = view, base, gpudata if base is None else view.ctypes.data
        self.shape, self.dtype, self.size, self.nbytes = view.shape, view.dtype, view.size, view.nbytes
        self.strides = view.strides
        self.flags = types.SimpleNamespace(c_contiguous=view.flags.c_contiguous)

    def __getitem__(self, index: Any) -> "FakeGPUArray":
        return FakeGPUArray(None, None, base=self, view=self.arr[index])

    def set(self, ary: Any, async_: bool = False, stream: Any = None) -> None:
        assert ary.shape == self.shape and ary.dtype == self.dtype
        self.arr[...] = ary.arr if isinstance(ary, FakeGPUArray) else ary

    def get(self) -> np.ndarray:
        return self.arr.copy()


def memcpy_dtod_async(dst: Any, src: Any, nbytes: int, stream: Any = None) -> None:
    ctypes.memmove(int(dst), int(src), nbytes)


def memset_d32_async(dst: Any, value: int, count: int, stream: Any = None) -> None:
    (ctypes.c_uint32 * count).from_address(int(dst))[:] = [value] * count


class FakeEvent:
    def record(self, stream: Any = None) -> None:
        self.time = time.perf_counter()

    def synchronize(self) -> None:
        """Host work is done when it returns."""

    def time_since(self, other: "FakeEvent") -> float:
        return (self.time - other.time) * 1000.0


@pytest.fixture
def fake_driver(monkeypatch):
    driver = types.SimpleNamespace(mem_alloc=FakeAllocation, memcpy_dtod_async=memcpy_dtod_async,
                                   memset_d32_async=memset_d32_async, Event=FakeEvent,
                                   pagelocked_empty=lambda shape, dtype: np.empty(shape, dtype))
    return driver


def dense(name: str, array: FakeGPUArray, shape: Optional[tuple] = None) -> np.ndarray:
    cuda._check(name, array, array.shape if shape is None else shape)
    return array.arr


class FakeEMState:
    def __init__(self, state: em.EMState) -> None:
        self.state = state


class FakeKernels:
    """``CudaKernels`` on host memory: each method writes its NumPy twin's result into ``out``."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver
        self.gpuarray = types.SimpleNamespace(GPUArray=FakeGPUArray)
        self.stream = types.SimpleNamespace(synchronize=lambda: None, handle=0)
        self.closed = False

    def predict_x0(self, x, eps, abar, clip, out):
        out.arr[...] = step.predict_x0(dense("x", x), dense("eps", eps, x.shape), abar, clip)
        dense("out", out, x.shape)

    def ddim_update(self, x, x0, abar, abar_prev, out):
        out.arr[...] = step.ddim_update(dense("x", x), dense("x0", x0, x.shape), abar, abar_prev)
        dense("out", out, x.shape)

    def q_sample(self, x0, noise, abar, out):
        out.arr[...] = step.q_sample(dense("x0", x0), dense("noise", noise), abar)
        dense("out", out, x0.shape)

    def rgb_to_ycbcr(self, x, out):
        out.arr[...] = color.rgb_to_ycbcr(dense("x", x))

    def ycbcr_to_rgb(self, x, out):
        out.arr[...] = color.ycbcr_to_rgb(dense("x", x))

    def gaussian(self, seed, stream, out):
        out.arr[...] = rng.gaussian(seed, stream, out.shape)

    def dig_weights(self, sources, x0_t, x0_next, window, tau, out_weights, out_gains, relative=True, passes=1):
        shape = sources.shape
        weights, gains = dig.dig_weights(dense("sources", sources), dense("x0_t", x0_t, shape),
                                         dense("x0_next", x0_next, shape), window, tau, relative, passes)
        dense("out_weights", out_weights, shape)[...] = weights
        dense("out_gains", out_gains, shape)[...] = gains

    def em_init(self, shape, take=None):
        return FakeEMState(em.em_init(shape, np.float32))

    def em_step(self, f_pre, a, b, state, lamb, rho, w_a, w_b, out, window=1, power=1.0):
        weights = [None if w is None else dense("w", w, a.shape) for w in (w_a, w_b)]
        F, state.state = em.em_step(dense("f_pre", f_pre, a.shape), dense("a", a), dense("b", b, a.shape),
                                    state.state, lamb, rho, *weights, window, power)
        dense("out", out, a.shape)[...] = F

    def mark_nonfinite(self, x, step, record):
        numpy_ops.mark_nonfinite(dense("x", x), step, record.arr)

    def luma_of(self, images, out):
        out.arr[...] = numpy_ops.luma_of(dense("images", images))

    def shrink(self, images, factor, out):
        out.arr[...] = resample.shrink(dense("images", images), factor, out.shape[1:])

    def enlarge(self, images, factor, out):
        out.arr[...] = resample.enlarge(dense("images", images), factor, out.shape[1:])

    def close(self):
        self.closed = True


def test_cuda_ops_has_every_numpy_op():
    for name in numpy_ops.__all__ + ["from_host"]:
        assert callable(getattr(CudaOps, name, None)), name
    numpy_params = inspect.signature(numpy_ops.em_step).parameters
    assert list(inspect.signature(CudaOps.em_step).parameters)[1:] == list(numpy_params)


def test_fake_kernels_have_the_real_signatures():
    def params(function: Any) -> list:
        return [(p.name, p.default) for p in inspect.signature(function).parameters.values()]

    for name, function in vars(FakeKernels).items():
        if not name.startswith("_") and name != "close":
            assert params(function) == params(getattr(cuda.CudaKernels, name)), name


class FakeRunner(Runner):
    """A deterministic stand-in UNet with both the host and the device interface."""

    on_device = True

    def __init__(self, channels: int, learn_sigma: bool = False) -> None:
        self.info = ModelInfo(in_channels=channels, out_channels=channels * (2 if learn_sigma else 1),
                              learn_sigma=learn_sigma, multiple=8, precision="fp32", schedule=ADM_LINEAR)

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        eps = np.tanh(0.9 * x + (t / 1000.0)[:, None, None, None]).astype(np.float32)
        extra = [0.1 * x] if self.info.learn_sigma else []
        return np.concatenate([eps] + extra, axis=1).astype(np.float32)

    def denoise_device(self, x: Any, t: Any, y: Any, stream_handle: Optional[int] = None) -> None:
        dense("y", y)[...] = self.denoise(x.arr, t.arr)


def test_a_host_runner_refuses_device_arrays():
    class HostRunner(Runner):
        def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
            return x

    assert not HostRunner().on_device and FakeRunner(1).on_device
    with pytest.raises(NotImplementedError, match="HostRunner runs on host arrays only"):
        HostRunner().denoise_device(None, None, None)


def sources(height: int = 24, width: int = 40) -> np.ndarray:
    generator = np.random.default_rng(5)
    base = generator.uniform(-1, 1, (1, height, width)).astype(np.float32)
    return np.clip(np.concatenate([base, -0.5 * base + 0.2]) + 0.1 * generator.normal(size=(2, height, width)),
                   -1, 1).astype(np.float32)


@pytest.mark.parametrize("channels, learn_sigma, em_window, dig_passes, em_power, dig_scale",
                         [(1, False, 1, 1, 1.0, 1), (3, False, 1, 1, 1.0, 1), (3, True, 3, 2, 0.5, 1),
                          (1, False, 3, 3, 0.5, 2), (3, True, 1, 1, 1.0, 4)])
def test_gpu_loop_on_fake_device_equals_cpu_loop(fake_driver, channels, learn_sigma, em_window, dig_passes,
                                                 em_power, dig_scale):
    pair = sources()
    runner = FakeRunner(channels, learn_sigma)
    settings = Settings(steps=5, dig_every=2, dig_window=5, em_window=em_window, dig_passes=dig_passes,
                        em_window_side=0, em_power=em_power, dig_scale=dig_scale)
    x_T = initial_noise((channels,) + pair.shape[1:], settings.seed)
    cpu_trace = Trace()
    expected = sample(runner, pair, settings, x_T, trace=cpu_trace)
    ops = CudaOps(FakeKernels(fake_driver))
    result = gpu_sample(runner, pair, settings, x_T, ops=ops)
    np.testing.assert_array_equal(result.sample, expected)
    assert len(result.trace.refreshes) == len(cpu_trace.refreshes) == 2
    for gpu, cpu in zip(result.trace.refreshes, cpu_trace.refreshes):
        np.testing.assert_array_equal(gpu["weights"], cpu["weights"])
        np.testing.assert_array_equal(gpu["gains"], cpu["gains"])
    assert set(result.seconds) == {"upload", "loop", "loop_wall", "model", "other", "download"}
    # The values the sampler still holds plus the new one: at most three buffers per (operation, shape)
    # (luma_of: x0_t and x0_next of the last refresh, then the new x0_t), besides the timesteps, kept
    # one per distinct list of t; a second run allocates nothing.
    assert max(len(slots) for (role, *_), slots in ops.pool._slots.items() if role != "timesteps") == 3
    allocations = ops.pool.allocations
    again = gpu_sample(runner, pair, settings, x_T, ops=ops)
    np.testing.assert_array_equal(again.sample, expected)
    assert ops.pool.allocations == allocations


class NanRunner(FakeRunner):
    """FakeRunner whose output turns NaN from timestep ``bad`` down."""

    def __init__(self, bad: int) -> None:
        super().__init__(1)
        self.bad = bad

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        y = super().denoise(x, t)
        y[:, :, :2, :2] = np.where(t[:, None, None, None] <= self.bad, np.nan, y[:, :, :2, :2])
        return y


def test_gpu_loop_on_fake_device_reports_nan_with_its_timestep(fake_driver):
    pair = sources()
    settings = Settings(steps=5, dig_every=2, dig_window=5, em_window_side=0)
    x_T = initial_noise((1,) + pair.shape[1:], settings.seed)
    trace = Trace()
    with pytest.raises(NumericalError) as cpu_error:
        sample(NanRunner(500), pair, settings, x_T, trace=trace)
    with pytest.raises(NumericalError) as gpu_error:
        gpu_sample(NanRunner(500), pair, settings, x_T, ops=CudaOps(FakeKernels(fake_driver)))
    assert str(gpu_error.value) == str(cpu_error.value)
    assert f"timestep {trace.timesteps[2]}" in str(cpu_error.value) and trace.timesteps[2] <= 500 < trace.timesteps[1]


def test_ops_match_numpy_ops_one_by_one(fake_driver):
    ops = CudaOps(FakeKernels(fake_driver))
    generator = np.random.default_rng(2)
    images = generator.uniform(-1, 1, (2, 3, 8, 12)).astype(np.float32)
    device = ops.from_host(images)
    np.testing.assert_array_equal(ops.to_host(ops.luma_of(device)), NUMPY_OPS.luma_of(images))
    np.testing.assert_array_equal(ops.to_host(ops.repeat_channels(device[:, 0], 3)),
                                  NUMPY_OPS.repeat_channels(images[:, 0], 3))
    np.testing.assert_array_equal(ops.to_host(ops.concat([device[0][None], device, device[1:]])),
                                  NUMPY_OPS.concat([images[0][None], images, images[1:]]))
    np.testing.assert_array_equal(ops.to_host(ops.replace_channel0(device[0], device[1, 2])),
                                  NUMPY_OPS.replace_channel0(images[0], images[1, 2]))
    np.testing.assert_array_equal(ops.to_host(ops.timesteps([999, 10])), NUMPY_OPS.timesteps([999, 10]))
    record = ops.nonfinite_init()
    ops.mark_nonfinite(device, 4, record)
    assert ops.to_host(record)[0] == numpy_ops.NO_STEP
    images[1, 2, 3, 4] = np.inf
    ops.mark_nonfinite(ops.from_host(images), 7, record)
    ops.mark_nonfinite(ops.from_host(images), 9, record)
    assert ops.to_host(record)[0] == 7
    ops.close()
    assert not ops.kernels.closed  # the caller's kernels stay open


def test_ops_close_frees_the_pool_and_own_kernels(fake_driver, monkeypatch):
    kernels = FakeKernels(fake_driver)
    monkeypatch.setattr("dig2dig.kernels.cuda_ops.CudaKernels", lambda: kernels)
    ops = CudaOps()
    allocation = ops.from_host(np.zeros((2, 3), np.float32)).gpudata
    ops.close()
    assert allocation.freed and kernels.closed


class Recorder:
    def __init__(self) -> None:
        self.allocated = []

    def allocate(self, nbytes: int) -> list:
        self.allocated.append(nbytes)
        return [nbytes]


class Wrapped:
    def __init__(self, shape: tuple, dtype: np.dtype, allocation: Any) -> None:
        self.shape, self.dtype, self.allocation = shape, dtype, allocation


def wrap(shape: tuple, dtype: np.dtype, allocation: Any) -> Wrapped:
    return Wrapped(shape, dtype, allocation)


def test_pool_reuses_a_buffer_once_nothing_refers_to_it():
    recorder = Recorder()
    pool = BufferPool(recorder.allocate, wrap)
    a = pool.take("op", (2, 3))
    b = pool.take("op", (2, 3))
    assert a.allocation is not b.allocation and recorder.allocated == [24, 24]
    held = a.allocation
    del a
    gc.collect()
    c = pool.take("op", (2, 3))
    assert c.allocation is held and pool.allocations == 2
    view = Wrapped((6,), c.dtype, c.allocation)  # a view keeps its base alive
    view.base = c
    del c
    assert pool.take("op", (2, 3)).allocation is not held
    del view
    assert pool.take("op", (2, 3)).allocation is held


def test_pool_keys_by_role_shape_and_dtype():
    recorder = Recorder()
    pool = BufferPool(recorder.allocate, wrap)
    kept = [pool.take("a", (4,)), pool.take("b", (4,)), pool.take("a", (2, 2)), pool.take("a", (4,), np.uint32),
            pool.take("a", (0,))]
    assert pool.allocations == 5 and recorder.allocated == [16, 16, 16, 16, 1]
    assert kept[3].dtype == np.uint32


def test_pool_free_frees_every_allocation():
    freed = []
    pool = BufferPool(lambda nbytes: types.SimpleNamespace(free=lambda: freed.append(nbytes)), wrap)
    pool.take("a", (3,))
    pool.take("b", (5,))
    pool.free()
    assert sorted(freed) == [12, 20]


def test_grow_buffers_reallocate_only_to_grow():
    events: list = []
    buffers = GrowBuffers(lambda nbytes: types.SimpleNamespace(nbytes=nbytes, free=lambda: events.append("free")),
                          lambda: events.append("sync"))
    first = buffers.get("a", 16)
    assert buffers.get("a", 8) is first and "a" in buffers and "b" not in buffers
    grown = buffers.get("a", 32)
    assert grown.nbytes == 32 and events == ["sync", "free"]  # queued work may still use the old buffer
    buffers.get("b", 4)
    buffers.free()
    assert events == ["sync", "free", "free", "free"] and "a" not in buffers


def test_missing_pycuda_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)  # import fails as if pycuda were absent
    with pytest.raises(CudaError, match=r"needs pycuda: pip install 'dig2dig\[gpu\]'"):
        cuda_driver()


def test_new_launchers_dry_run(monkeypatch):
    """mark_nonfinite and luma_of on a recording stand-in for pycuda: argument packing and grids."""
    from test_kernels_compile import FakeArray

    calls: list = []
    kernels = fake_kernels(monkeypatch, calls)
    record, x = FakeArray((1,), np.uint32), FakeArray((5, 1, 37, 70))
    kernels.mark_nonfinite(x, 3, record)
    kernels.luma_of(FakeArray((2, 3, 37, 70)), FakeArray((2, 37, 70)))
    with pytest.raises(ValueError):
        kernels.mark_nonfinite(FakeArray((4,)), 0, FakeArray((1,)))  # float32 record
    with pytest.raises(ValueError):
        kernels.luma_of(FakeArray((2, 3, 37, 70)), FakeArray((2, 37, 71)))
    kernels.close()
    launches = calls
    assert [call[0] for call in launches] == ["mark_nonfinite", "luma_of"]
    assert launches[0][3][:3] == (x.gpudata, record.gpudata, 3)
    for name, grid, block, args in launches:
        assert grid[0] * block[0] >= args[-1], name
    assert launches[0][3][-1] == 5 * 37 * 70
    assert launches[1][3][2:] == (3, 37 * 70, 2 * 37 * 70)
