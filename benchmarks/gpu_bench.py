"""GPU benchmark of the Dig2DIG loop and its agreement with the CPU loop (run on a CUDA machine).

    python3 benchmarks/gpu_bench.py [--out DIR] [--rounds N] [--steps N] [--no-cpu]

Needs pycuda, PyTorch with CUDA and safetensors (the UNet runs through ``export.torch_runner``);
the CPU loop with the ONNX model also needs onnxruntime (without it that comparison is skipped).
Prints markdown tables and writes ``gpu_bench.json`` to ``--out`` (default ``$OUT``, else ``.``).

- kernels: GPU time per call is the median over rounds of CUDA-event time around a batch of calls
  queued behind a spin kernel, so the GPU never waits for the host (device time only); host time
  is the wall time to queue one call (Python and launch overhead). Bytes are the compulsory DRAM
  traffic, compared with a measured device-to-device copy (read + write bytes per second).
- UNet: ``TorchCudaRunner`` (float32, TF32 off) at batch 1 (plain step) and 5 (DIG refresh).
- loop: ``runtime.gpu.gpu_sample`` with default settings: CUDA-event time of the loop, of the
  UNet inside it and of everything else (kernels, copies, launch and sync gaps); per-stage wall
  times from a run whose stages wait for the GPU.
- CUDA graph: the same loop captured once and replayed (``runtime.graph.GraphedLoop`` with
  ``export.cuda_graph.TorchGraph``), against
  the eager loop's times above; its sample against the eager loop's on the captured frame and on
  a second one (the sources mirrored) replayed through the same graph.
- agreement: final fused luminance in [0, 1] of the GPU loop against the CPU loop (NumPy ops) on
  the same PyTorch model (ops only) and with ONNX Runtime on the CPU (as the CLI runs), from the
  same x_T; goal: within 1/255.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from dig2dig.export.torch_runner import TorchCudaRunner
from dig2dig.kernels.cuda import EM_SOLVE_ITERATIONS
from dig2dig.kernels.cuda_ops import CudaOps
from dig2dig.models import DEFAULT_DIR
from dig2dig.runtime.errors import ModelError
from dig2dig.runtime.gpu import gpu_sample
from dig2dig.runtime.sampler import initial_noise, luminance_of_sample, sample, scaled_window
from dig2dig.runtime.settings import Settings

SIZES = ((256, 256), (480, 640))
GOAL = 1.0 / 255.0
# Busy-waits ``ns`` nanoseconds of the GPU's global timer (so that the host can queue work behind it).
SPIN_SOURCE = """
__device__ long long now() { long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t; }
__global__ void spin(long long ns) { const long long start = now(); while (now() - start < ns) { } }
"""
REPO = Path(__file__).resolve().parents[1]


class Timer:
    """CUDA-event timing on the ops' stream, with a spin kernel to queue work ahead of the GPU."""

    def __init__(self, ops: CudaOps) -> None:
        from pycuda.compiler import SourceModule

        self.ops, self.stream, self.driver = ops, ops.stream, ops.kernels.driver
        self._spin = SourceModule(SPIN_SOURCE).get_function("spin")

    def gpu(self, call: Callable[[], Any], batch: int, rounds: int) -> Tuple[float, float]:
        """(GPU seconds, host seconds) per call: medians over rounds of ``batch`` calls queued behind a spin."""
        for _ in range(2):
            call()
        self.stream.synchronize()
        start = time.perf_counter()
        for _ in range(batch):
            call()
        enqueue = time.perf_counter() - start
        self.stream.synchronize()
        gpu_times, host_times = [], []
        for _ in range(rounds):
            begin, end = self.driver.Event(), self.driver.Event()
            self._spin(np.int64(1e9 * (3 * enqueue + 1e-3)), block=(1, 1, 1), grid=(1, 1), stream=self.stream)
            begin.record(self.stream)
            start = time.perf_counter()
            for _ in range(batch):
                call()
            host_times.append((time.perf_counter() - start) / batch)
            end.record(self.stream)
            end.synchronize()
            gpu_times.append(end.time_since(begin) / 1000.0 / batch)
        return statistics.median(gpu_times), statistics.median(host_times)

    def wall(self, call: Callable[[], Any], rounds: int) -> float:
        """Median wall seconds of one call followed by a wait for the stream."""
        call()
        self.stream.synchronize()
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            call()
            self.stream.synchronize()
            times.append(time.perf_counter() - start)
        return statistics.median(times)


def copy_bandwidth(ops: CudaOps, timer: Timer) -> float:
    """Device-to-device copy bandwidth in bytes per second, reads plus writes."""
    nbytes = 256 << 20
    src, dst = ops.buffer("bench_copy", (nbytes // 4,)), ops.buffer("bench_copy", (nbytes // 4,))
    seconds, _ = timer.gpu(lambda: ops.kernels.driver.memcpy_dtod_async(dst.gpudata, src.gpudata, nbytes, ops.stream),
                           batch=5, rounds=5)
    return 2 * nbytes / seconds


def kernel_cases(ops: CudaOps, height: int, width: int) -> List[Tuple[str, int, int, Callable[[], Any]]]:
    """(name, launches, bytes, call) for every kernel of one loop step, on (H, W) images, K = 2 sources."""
    kernels, plane = ops.kernels, height * width * 4
    generator = np.random.default_rng(0)

    def rand(*shape: int, low: float = -1.0) -> Any:
        return ops.from_host(generator.uniform(low, 1.0, shape).astype(np.float32))

    def out(*shape: int, dtype: Any = np.float32) -> Any:
        return ops.buffer("bench", shape, dtype)

    x, x0, eps, noise = rand(1, height, width), rand(1, height, width), rand(1, height, width), rand(1, height, width)
    batch, rgb = rand(2, 1, height, width), rand(3, height, width)
    pair, pair_t, pair_next = rand(2, height, width), rand(2, height, width), rand(2, height, width)
    w_a = rand(height, width, low=0.0)
    w_b = ops.from_host(1.0 - w_a.get())
    y = rand(5, 1, height, width)
    record = out(1, dtype=np.uint32)
    state = kernels.em_init((height, width))
    defaults = Settings()
    em_window = scaled_window(defaults.em_window, max(height, width), defaults.em_window_side)
    outs = {name: out(*shape) for name, shape in
            (("image", (1, height, width)), ("batch", (2, 1, height, width)), ("rgb", (3, height, width)),
             ("pair", (2, height, width)), ("gains", (2, height, width)), ("em", (height, width)),
             ("copy", (5, 1, height, width)))}
    return [
        ("gaussian", 1, plane, lambda: kernels.gaussian(0, 1, outs["image"])),
        ("q_sample (2 sources)", 1, 5 * plane, lambda: kernels.q_sample(batch, noise, 0.5, outs["batch"])),
        ("concat (5 planes)", 3, 10 * plane, lambda: ops.concat([x[None], batch, batch])),
        ("mark_nonfinite (5 planes)", 1, 5 * plane, lambda: kernels.mark_nonfinite(y, 0, record)),
        ("predict_x0", 1, 3 * plane, lambda: kernels.predict_x0(x, eps, 0.5, True, outs["image"])),
        ("predict_x0 (2 sources)", 1, 6 * plane, lambda: kernels.predict_x0(batch, batch, 0.5, True, outs["batch"])),
        ("luma_of (2 sources, 1 channel)", 1, 4 * plane, lambda: kernels.luma_of(batch, outs["pair"])),
        ("dig_weights (window 9)", 3, 16 * plane,
         lambda: kernels.dig_weights(pair, pair_t, pair_next, 9, 1.0, outs["pair"], outs["gains"])),
        # each extra pass: a vertical mean and a horizontal sum, each reading and writing both planes
        ("dig_weights (window 41, 3 passes)", 7, 32 * plane,
         lambda: kernels.dig_weights(pair, pair_t, pair_next, 41, 1.0, outs["pair"], outs["gains"], True, 3)),
        # E-step, memset, the Chebyshev iterations (4 planes each), update
        (f"em_step (weighted, {EM_SOLVE_ITERATIONS} Chebyshev)", EM_SOLVE_ITERATIONS + 3,
         (8 + 1 + 4 * EM_SOLVE_ITERATIONS + 10) * plane,
         lambda: kernels.em_step(x0[0], pair[0], pair[1], state, 0.5, 0.001, w_a, w_b, outs["em"])),
        # the same plus the E-step window's two box passes (C, D read and written twice), at the window
        # the loop uses at this size (5 px at a 256-px long side, scaled)
        (f"em_step (weighted, E-step window {em_window}, {EM_SOLVE_ITERATIONS} Chebyshev)", EM_SOLVE_ITERATIONS + 5,
         (8 + 8 + 1 + 4 * EM_SOLVE_ITERATIONS + 10) * plane,
         lambda: kernels.em_step(x0[0], pair[0], pair[1], state, 0.5, 0.001, w_a, w_b, outs["em"], em_window)),
        ("ddim_update", 1, 3 * plane, lambda: kernels.ddim_update(x, x0, 0.5, 0.6, outs["image"])),
        ("rgb_to_ycbcr (3 channels)", 1, 6 * plane, lambda: kernels.rgb_to_ycbcr(rgb, outs["rgb"])),
        ("ycbcr_to_rgb (3 channels)", 1, 6 * plane, lambda: kernels.ycbcr_to_rgb(rgb, outs["rgb"])),
        ("copy (5 planes)", 1, 10 * plane,
         lambda: kernels.driver.memcpy_dtod_async(outs["copy"].gpudata, y.gpudata, 5 * plane, ops.stream)),
    ]


def unet_timing(ops: CudaOps, runner: TorchCudaRunner, timer: Timer, shape: Tuple[int, int, int, int],
                rounds: int) -> Dict[str, float]:
    """GPU and wall seconds of one UNet call on device arrays of ``shape``."""
    x = ops.from_host(np.random.default_rng(0).normal(size=shape).astype(np.float32))
    t = ops.timesteps([500] * shape[0])
    y = ops.buffer("bench_unet", (shape[0], runner.info.out_channels) + shape[2:])

    def unet() -> None:
        runner.denoise_device(x, t, y, ops.stream.handle)

    gpu_s, _ = timer.gpu(unet, batch=1, rounds=rounds)
    return {"gpu_s": gpu_s, "wall_s": timer.wall(unet, rounds)}


def find_pair(name: str) -> Optional[np.ndarray]:
    """(2, H, W) infrared/visible TNO pair in [-1, 1], from the shared data (or $DIG2DIG_TNO), if found."""
    bases = (REPO.parent / "shared", REPO / "shared", REPO / ".device" / "shared")
    roots = [os.environ.get("DIG2DIG_TNO", "")] + [str(base / "data" / "ivf" / "TNO") for base in bases]
    for root in filter(None, roots):
        paths = [Path(root) / side / f"{name}.png" for side in ("a", "b")]
        images = [image for image in (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in paths)
                  if image is not None]
        if len(images) == 2:
            return np.stack(images).astype(np.float32) / 127.5 - 1.0
    return None


def crop(pair: Optional[np.ndarray], height: int, width: int) -> np.ndarray:
    """A centred crop of the pair, or a smooth synthetic pair when the data is missing (or too small)."""
    if pair is not None and pair.shape[1] >= height and pair.shape[2] >= width:
        top, left = (pair.shape[1] - height) // 2, (pair.shape[2] - width) // 2
        return np.ascontiguousarray(pair[:, top:top + height, left:left + width])
    generator = np.random.default_rng(1)
    noise = generator.normal(size=(2, height, width)).astype(np.float32)
    return np.clip(np.stack([cv2.GaussianBlur(n, (0, 0), 4) * 8 for n in noise]), -1, 1).astype(np.float32)


def fused(raw: np.ndarray) -> np.ndarray:
    """Final fused luminance in [0, 1], as api.fuse makes it."""
    return np.clip((luminance_of_sample(raw) + 1.0) / 2.0, 0.0, 1.0)


def loop_timing(ops: CudaOps, runner: TorchCudaRunner, sources: np.ndarray, settings: Settings,
                rounds: int) -> Dict[str, Any]:
    """Median seconds of the GPU loop (asynchronous stages) and per-stage wall times (waiting stages)."""
    x_T = initial_noise((runner.info.in_channels,) + sources.shape[1:], settings.seed)
    ops.sync_stages = False
    gpu_sample(runner, sources, settings, x_T, ops=ops)  # allocations, cuDNN plans
    runs = [gpu_sample(runner, sources, settings, x_T, ops=ops).seconds for _ in range(rounds)]
    ops.sync_stages = True
    stages = dict(gpu_sample(runner, sources, settings, x_T, ops=ops).trace.seconds)
    ops.sync_stages = False
    return {"seconds": {key: statistics.median(run[key] for run in runs) for key in runs[0]},
            "stage_wall_seconds": stages}


def agreement(ops: CudaOps, runner: TorchCudaRunner, sources: np.ndarray, settings: Settings,
              with_onnx: bool) -> Dict[str, Any]:
    """Max abs differences of the final fused luminance between the GPU and CPU loops."""
    x_T = initial_noise((runner.info.in_channels,) + sources.shape[1:], settings.seed)
    gpu = fused(gpu_sample(runner, sources, settings, x_T, ops=ops).sample)
    cpu_torch = fused(sample(runner, sources, settings, x_T))
    result: Dict[str, Any] = {"gpu_vs_cpu_same_model": float(np.abs(gpu - cpu_torch).max())}
    if not with_onnx:
        return result
    try:
        from dig2dig.runtime.backends.ort import OrtRunner

        onnx_runner = OrtRunner(str(DEFAULT_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    except ModelError as exc:
        result["onnx_skipped"] = str(exc)
        return result
    start = time.perf_counter()
    cpu_onnx = fused(sample(onnx_runner, sources, settings, x_T))
    result["cpu_onnx_loop_seconds"] = time.perf_counter() - start
    result["gpu_vs_cpu_onnx"] = float(np.abs(gpu - cpu_onnx).max())
    result["torch_vs_onnx_cpu_loops"] = float(np.abs(cpu_torch - cpu_onnx).max())
    return result


def graph_timing(ops: CudaOps, runner: TorchCudaRunner, sources: np.ndarray, settings: Settings,
                 rounds: int) -> Dict[str, Any]:
    """The loop replayed as one CUDA graph (``runtime.graph``): median GPU and wall seconds of a
    replay (wall: queue it and wait), and the max abs difference of its sample from the eager loop's
    (``gpu_sample`` on ``ops``) on the captured frame and on a second frame (the sources mirrored)."""
    from dig2dig.export.cuda_graph import TorchGraph
    from dig2dig.runtime.graph import GraphedLoop

    x_T = initial_noise((runner.info.in_channels,) + sources.shape[1:], settings.seed)
    graphed = GraphedLoop(runner, settings, sources, x_T, graph=TorchGraph(runner.device))
    try:
        driver, stream = graphed.ops.kernels.driver, graphed.ops.stream
        graphed.replay()
        stream.synchronize()
        gpu_times, wall_times = [], []
        for _ in range(rounds):
            begin, end = driver.Event(), driver.Event()
            start = time.perf_counter()
            begin.record(stream)
            graphed.replay()
            end.record(stream)
            end.synchronize()
            wall_times.append(time.perf_counter() - start)
            gpu_times.append(end.time_since(begin) / 1000.0)
        differences = {}
        for name, frame in (("captured_frame", sources), ("second_frame", np.ascontiguousarray(sources[:, :, ::-1]))):
            eager = gpu_sample(runner, frame, settings, x_T, ops=ops).sample
            differences[name] = float(np.abs(graphed.run(frame, x_T) - eager).max())
        return {"replay_gpu_s": statistics.median(gpu_times), "replay_wall_s": statistics.median(wall_times),
                "max_abs_diff_vs_eager": differences}
    finally:
        graphed.close()


def table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def report(results: Dict[str, Any]) -> str:
    """The results as markdown tables."""
    bandwidth = results["copy_bandwidth_GBps"]
    parts = [f"## {results['device']}: device-to-device copy {bandwidth:.0f} GB/s (read + write)"]
    parts.append(table(["kernel", "size", "launches", "MB moved", "GPU µs", "host µs", "GB/s", "% of copy"], [
        [k["name"], k["size"], str(k["launches"]), f"{k['bytes'] / 1e6:.2f}", f"{k['gpu_s'] * 1e6:.1f}",
         f"{k['host_s'] * 1e6:.1f}", f"{k['bytes'] / k['gpu_s'] / 1e9:.0f}",
         f"{100 * k['bytes'] / k['gpu_s'] / 1e9 / bandwidth:.0f}"] for k in results["kernels"]]))
    parts.append(table(["UNet", "size", "batch", "GPU ms", "wall ms"], [
        ["PyTorch fp32", u["size"], str(u["batch"]), f"{u['gpu_s'] * 1e3:.2f}", f"{u['wall_s'] * 1e3:.2f}"]
        for u in results["unet"]]))
    rows = []
    for loop in results["loop"]:
        s, steps = loop["seconds"], loop["steps"]
        stages = ", ".join(f"{k} {v / steps * 1e3:.2f}" for k, v in loop["stage_wall_seconds"].items())
        rows.append([loop["size"], str(steps), f"{s['loop_wall'] * 1e3:.1f}", f"{s['loop'] * 1e3:.1f}",
                     f"{s['model'] * 1e3:.1f}", f"{s['other'] * 1e3:.1f}", f"{s['loop'] / steps * 1e3:.2f}",
                     f"{s['other'] / steps * 1e3:.2f}", stages])
    parts.append(table(["loop", "steps", "wall ms", "GPU ms", "UNet ms", "other ms", "ms/step", "other ms/step",
                        "stage wall ms/step (waiting)"], rows))
    rows = []
    for loop, graph in zip(results["loop"], results["graph"]):
        s, steps = loop["seconds"], loop["steps"]
        rows.append([loop["size"], str(steps), f"{s['loop_wall'] * 1e3:.1f}", f"{s['loop'] * 1e3:.1f}",
                     f"{graph['replay_wall_s'] * 1e3:.1f}", f"{graph['replay_gpu_s'] * 1e3:.1f}",
                     f"{(s['loop_wall'] - graph['replay_wall_s']) / steps * 1e3:.2f}",
                     " / ".join(f"{v:.1e}" for v in graph["max_abs_diff_vs_eager"].values())])
    parts.append(table(["CUDA graph of the loop", "steps", "eager wall ms", "eager GPU ms", "replay wall ms",
                        "replay GPU ms", "wall saved ms/step", "max abs diff vs eager (captured / second frame)"],
                       rows))
    rows = []
    for a in results["agreement"]:
        worst = max(v for k, v in a.items() if k.startswith("gpu_vs"))
        rows.append([a["size"], f"{a['gpu_vs_cpu_same_model'] * 255:.4f}",
                     f"{a['gpu_vs_cpu_onnx'] * 255:.4f}" if "gpu_vs_cpu_onnx" in a else "skipped",
                     f"{a['torch_vs_onnx_cpu_loops'] * 255:.4f}" if "torch_vs_onnx_cpu_loops" in a else "skipped",
                     "yes" if worst <= GOAL else "NO"])
    parts.append(table(["agreement (fused luminance, max abs diff × 255)", "GPU vs CPU loop, same PyTorch model",
                        "GPU loop vs CPU loop on ONNX Runtime", "PyTorch vs ONNX Runtime CPU loops",
                        "within 1/255"], rows))
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_bench.json")
    parser.add_argument("--rounds", type=int, default=30, help="timing rounds (medians)")
    parser.add_argument("--steps", type=int, default=Settings().steps, help="sampler steps")
    parser.add_argument("--pair", default="22", help="TNO pair name")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU loop on ONNX Runtime (slow)")
    args = parser.parse_args()
    ops = CudaOps(sync_stages=False)
    runner = TorchCudaRunner(DEFAULT_DIR / "weights.safetensors", DEFAULT_DIR / "config.json",
                             stream_handle=ops.stream.handle)
    timer = Timer(ops)
    settings = Settings(steps=args.steps)
    pair = find_pair(args.pair)
    results: Dict[str, Any] = {"device": ops.kernels.device.name(), "settings": vars(settings),
                               "data": f"TNO {args.pair}" if pair is not None else "synthetic",
                               "copy_bandwidth_GBps": copy_bandwidth(ops, timer) / 1e9,
                               "kernels": [], "unet": [], "loop": [], "graph": [], "agreement": []}
    for height, width in SIZES:
        size = f"{height}x{width}"
        for name, launches, nbytes, call in kernel_cases(ops, height, width):
            gpu_s, host_s = timer.gpu(call, batch=10, rounds=args.rounds)
            results["kernels"].append({"name": name, "size": size, "launches": launches, "bytes": nbytes,
                                       "gpu_s": gpu_s, "host_s": host_s})
        for batch in (1, 5):
            results["unet"].append({"size": size, "batch": batch,
                                    **unet_timing(ops, runner, timer, (batch, 1, height, width), args.rounds)})
        sources = crop(pair, height, width)
        results["loop"].append({"size": size, "steps": settings.steps,
                                **loop_timing(ops, runner, sources, settings, rounds=5)})
        results["graph"].append({"size": size, **graph_timing(ops, runner, sources, settings, rounds=5)})
        results["agreement"].append({"size": size, **agreement(ops, runner, sources, settings, not args.no_cpu)})
        print(f"{size} done", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_bench.json").write_text(json.dumps(results, indent=1))
    print(report(results))
    ops.close()


if __name__ == "__main__":
    main()
