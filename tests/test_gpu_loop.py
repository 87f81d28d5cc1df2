"""The GPU loop against the CPU loop, and CudaOps against numpy_ops op by op (needs pycuda and a GPU).

The loop tests run our shipped prior: in PyTorch on the GPU (``TorchCudaRunner``, TF32 off) for
both loops, so that only the ops differ, and, when onnxruntime is installed, the CPU loop also with
the ONNX model, as the CLI runs it. Goal: final fused luminance within 1/255 in [0, 1].
Per-op thresholds are those of test_kernels_gpu.py.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from dig2dig.kernels import NUMPY_OPS, numpy_ops
from dig2dig.kernels.numpy_ops import NO_STEP
from dig2dig.models import DEFAULT_DIR
from dig2dig.runtime.gpu import gpu_sample
from dig2dig.runtime.sampler import Settings, Trace, initial_noise, luminance_of_sample, sample
from test_cuda_graph import ECHO_FUNCTIONS
from test_kernels_numpy import plausible_estimates, real_sources

pytestmark = pytest.mark.gpu
pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
GOAL = 1.0 / 255.0


@pytest.fixture(scope="module")
def ops(cuda_device):  # type: ignore[no-untyped-def]
    from dig2dig.kernels.cuda_ops import CudaOps

    cuda_ops = CudaOps()
    yield cuda_ops
    cuda_ops.close()


@pytest.fixture(scope="module")
def torch_runner(ops):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    pytest.importorskip("safetensors", reason="safetensors is not installed")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA")
    from dig2dig.export.torch_runner import TorchCudaRunner

    return TorchCudaRunner(DEFAULT_DIR / "weights.safetensors", DEFAULT_DIR / "config.json",
                           stream_handle=ops.stream.handle)


def same(ops, device, expected: np.ndarray, atol: float = 0.0) -> None:
    result = ops.to_host(device)
    assert result.shape == expected.shape and result.dtype == np.float32
    if atol == 0.0:
        np.testing.assert_array_equal(result, expected)
    else:
        assert np.abs(result - expected).max() <= atol


def test_every_numpy_op_exists(ops):
    for name in numpy_ops.__all__ + ["from_host"]:
        assert callable(getattr(ops, name)), name


def test_plumbing_ops(ops):
    generator = np.random.default_rng(1)
    images = generator.normal(size=(2, 3, 33, 47)).astype(np.float32)
    device = ops.from_host(images)
    same(ops, device, images)
    same(ops, ops.repeat_channels(device[:, 1], 3), NUMPY_OPS.repeat_channels(images[:, 1], 3))
    same(ops, ops.concat([device[0][None], device]), NUMPY_OPS.concat([images[0][None], images]))
    same(ops, ops.replace_channel0(device[1], device[0, 2]), NUMPY_OPS.replace_channel0(images[1], images[0, 2]))
    same(ops, ops.luma_of(device), NUMPY_OPS.luma_of(images))
    same(ops, ops.luma_of(device[:, :1]), NUMPY_OPS.luma_of(images[:, :1]))
    same(ops, ops.timesteps([999, 500, 0]), NUMPY_OPS.timesteps([999, 500, 0]))
    same(ops, ops.gaussian(3, 4, (3, 33, 47)), NUMPY_OPS.gaussian(3, 4, (3, 33, 47)), atol=1e-6)


@pytest.mark.parametrize("size", [1, 1000, 5 * 3 * 64 * 64 + 7])
def test_mark_nonfinite(ops, size):
    values = np.random.default_rng(size).normal(size=size).astype(np.float32)
    record = ops.nonfinite_init()
    ops.mark_nonfinite(ops.from_host(values), 0, record)
    assert ops.to_host(record)[0] == NO_STEP
    step = 50
    for position in {0, size // 2, size - 1}:
        for bad in (np.nan, np.inf, -np.inf):
            poisoned = values.copy()
            poisoned[position] = bad
            step -= 1
            ops.mark_nonfinite(ops.from_host(poisoned), step, record)
            assert ops.to_host(record)[0] == step  # the first (smallest) step is kept
    ops.mark_nonfinite(ops.from_host(values), 0, record)
    assert ops.to_host(record)[0] == step


def test_step_and_colour_ops(ops):
    generator = np.random.default_rng(2)
    out = generator.normal(size=(5, 6, 32, 40)).astype(np.float32)  # a learn_sigma output: eps is a strided view
    x, noise = generator.normal(size=(2, 5, 3, 32, 40)).astype(np.float32)
    device_out, device_x = ops.from_host(out), ops.from_host(x)
    x0 = NUMPY_OPS.predict_x0(x, out[:, :3], 0.3)
    same(ops, ops.predict_x0(device_x, device_out[:, :3], 0.3), x0)
    same(ops, ops.predict_x0(device_x[1:3], device_out[1:3, :3], 0.3, False),
         NUMPY_OPS.predict_x0(x[1:3], out[1:3, :3], 0.3, False))
    same(ops, ops.q_sample(device_x, ops.from_host(noise[0]), 0.6), NUMPY_OPS.q_sample(x, noise[0], 0.6))
    same(ops, ops.ddim_update(device_x[0], ops.from_host(x0[0]), 0.3, 0.5),
         NUMPY_OPS.ddim_update(x[0], x0[0], 0.3, 0.5))
    rgb = np.clip(x[0], -1, 1)
    ycc = NUMPY_OPS.rgb_to_ycbcr(rgb)
    same(ops, ops.rgb_to_ycbcr(ops.from_host(rgb)), ycc, atol=1e-6)
    same(ops, ops.ycbcr_to_rgb(ops.from_host(ycc)), NUMPY_OPS.ycbcr_to_rgb(ycc), atol=1e-6)


def test_dig_and_em_ops(ops):
    sources = real_sources()
    x0_t, x0_next = plausible_estimates(sources)
    weights, gains = NUMPY_OPS.dig_weights(sources, x0_t, x0_next, 9, 1.0)
    device = [ops.from_host(a) for a in (sources, x0_t, x0_next)]
    device_weights, device_gains = ops.dig_weights(*device, 9, 1.0)
    same(ops, device_weights, weights, atol=2e-5)
    same(ops, device_gains, gains, atol=2e-6 * np.abs(gains).max())
    f_pre = (0.5 * (sources[0] + sources[1]) + 0.1 * x0_t[0]).astype(np.float32)
    state, device_state = NUMPY_OPS.em_init(f_pre.shape), ops.em_init(f_pre.shape)
    device_f, host_weights = ops.from_host(f_pre), ops.from_host(weights)  # the same weights on both sides
    for _ in range(3):
        F, state = NUMPY_OPS.em_step(f_pre, sources[0], sources[1], state, 0.5, 0.001, weights[0], weights[1])
        device_F, device_state = ops.em_step(device_f, device[0][0], device[0][1], device_state, 0.5, 0.001,
                                             host_weights[0], host_weights[1])
        same(ops, device_F, F, atol=5e-6)


def fused(raw: np.ndarray) -> np.ndarray:
    """The fused luminance in [0, 1], as api.fuse makes it."""
    return np.clip((luminance_of_sample(raw) + 1.0) / 2.0, 0.0, 1.0)


def test_torch_runner_device_and_host_agree(ops, torch_runner):
    generator = np.random.default_rng(4)
    x = generator.normal(size=(5, 1, 64, 96)).astype(np.float32)
    t = np.array([999, 999, 999, 800, 800], np.float32)
    host = torch_runner.denoise(x, t)
    device = ops.buffer("test_denoise", host.shape)
    torch_runner.denoise_device(ops.from_host(x), ops.from_host(t), device, ops.stream.handle)
    np.testing.assert_allclose(ops.to_host(device), host, rtol=0, atol=1e-5 * np.abs(host).max())


def test_gpu_loop_equals_cpu_loop(ops, torch_runner):
    sources = real_sources()[:, :, :128]
    settings = Settings(steps=4, dig_every=2)
    x_T = initial_noise((1, 128, 128), settings.seed)
    cpu_trace = Trace()
    cpu = sample(torch_runner, sources, settings, x_T, trace=cpu_trace)
    gpu = gpu_sample(torch_runner, sources, settings, x_T, ops=ops)
    diff = np.abs(fused(gpu.sample) - fused(cpu)).max()
    weight_diff = max(np.abs(g["weights"] - c["weights"]).max()
                      for g, c in zip(gpu.trace.refreshes, cpu_trace.refreshes))
    print(f"GPU vs CPU loop (same PyTorch model): fused luminance max abs diff {diff:.2e} "
          f"({diff * 255:.3f} / 255), DIG weights {weight_diff:.2e}; seconds {gpu.seconds}")
    assert diff <= GOAL
    assert gpu.seconds["model"] > 0 and gpu.seconds["loop"] >= gpu.seconds["model"]
    allocations = ops.pool.allocations
    again = gpu_sample(torch_runner, sources, settings, x_T, ops=ops)
    assert ops.pool.allocations == allocations
    np.testing.assert_array_equal(again.sample, gpu.sample)


def test_gpu_loop_equals_cpu_loop_with_onnx(ops, torch_runner):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from dig2dig.runtime.backends.ort import OrtRunner

    sources = real_sources()[:, :, :128]
    settings = Settings(steps=4, dig_every=2)
    x_T = initial_noise((1, 128, 128), settings.seed)
    cpu = sample(OrtRunner(str(DEFAULT_DIR / "model.onnx"), providers=["CPUExecutionProvider"]), sources, settings, x_T)
    gpu = gpu_sample(torch_runner, sources, settings, x_T, ops=ops)
    diff = np.abs(fused(gpu.sample) - fused(cpu)).max()
    print(f"GPU loop (PyTorch) vs CPU loop (ONNX Runtime): fused luminance max abs diff {diff:.2e} "
          f"({diff * 255:.3f} / 255)")
    assert diff <= GOAL


def graph_matches_eager(ops, runner, graph) -> None:
    """GraphedLoop's replays equal the eager GPU loop's sample on the captured frame and on another
    frame through the same graph, twice (each replay resets its state); a wrong shape is refused."""
    from dig2dig.runtime.graph import GraphedLoop

    frames = [real_sources()[:, :, :128], real_sources()[:, :, 64:]]
    settings = Settings(steps=4, dig_every=2)
    x_T = initial_noise((runner.info.in_channels, 128, 128), settings.seed)
    graphed = GraphedLoop(runner, settings, frames[0], x_T, graph=graph)
    try:
        for frame in frames + frames:
            eager = gpu_sample(runner, frame, settings, x_T, ops=ops).sample
            replayed = graphed.run(frame, x_T)
            diff = np.abs(replayed - eager).max()
            print(f"CUDA graph replay ({type(graph).__name__}) vs eager GPU loop: max abs diff {diff:.2e}")
            assert diff <= 1e-5
        assert len(graphed.trace.refreshes) == 2
        with pytest.raises(ValueError, match="captured for"):
            graphed.run(frames[0][:, :64], x_T)
    finally:
        graphed.close()


def test_torch_graph_replay_equals_the_eager_loop(ops, torch_runner):
    """The PyTorch UNet and our kernels captured by torch.cuda.graph (export.cuda_graph.TorchGraph)."""
    from dig2dig.export.cuda_graph import TorchGraph

    graph_matches_eager(ops, torch_runner, TorchGraph(torch_runner.device))


class EchoRunner:
    """A runner of driver copies only: eps = x (extra output channels 0), on the stream it is given.
    Stands in for a TensorRT engine, which cannot run here, to capture through the driver API."""

    def __init__(self, info) -> None:  # type: ignore[no-untyped-def]
        from dig2dig.runtime.graph import CudaDriver

        self.info, self.driver = info, CudaDriver(ECHO_FUNCTIONS)

    def denoise_device(self, x, t, y, stream_handle) -> None:  # type: ignore[no-untyped-def]
        n, channels, height, width = (int(v) for v in x.shape)
        plane, stream = channels * height * width * 4, ctypes.c_void_p(stream_handle)
        self.driver.call("cuMemsetD32Async", int(y.gpudata), 0, y.size, stream)
        for i in range(n):
            self.driver.call("cuMemcpyDtoDAsync_v2", int(y.gpudata) + i * y.shape[1] * height * width * 4,
                             int(x.gpudata) + i * plane, plane, stream)


def test_driver_graph_replay_equals_the_eager_loop(ops, torch_runner):
    """Our kernels and a runner outside PyTorch captured through the driver API (runtime.graph.DriverGraph),
    as a TensorRT engine would be; the shipped prior's ModelInfo gives the shapes."""
    from dig2dig.runtime.graph import DriverGraph

    graph_matches_eager(ops, EchoRunner(torch_runner.info), DriverGraph())
    with pytest.raises(RuntimeError, match="replay before capture"):
        DriverGraph().replay(ops.stream)
