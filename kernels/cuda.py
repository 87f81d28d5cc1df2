"""CUDA launcher shared by all kernels: pycuda on the device's primary context, one stream, shipped or compiled kernels.

Context: the device's *primary* context (``Device(n).retain_primary_context()``, pushed for the
lifetime of :class:`CudaKernels`) is the one the CUDA runtime uses, so TensorRT and these kernels
share memory and can share the stream.

Loading: each ``kernels/<name>.cu`` comes from the build shipped in ``kernels/prebuilt/``
(``kernels/prebuilt.py``: cubins for sm_72, sm_87 and sm_90, PTX for newer GPUs), so a device needs
no compiler. It is compiled with nvcc instead when that build no longer matches the source (an edited
kernel), for GPUs older than sm_72, or for every kernel when ``DIG2DIG_COMPILE_KERNELS=1``.

Compilation: ``nvcc -cubin -arch=sm_XY -O3 -std=c++14 --fmad=false -I kernels/``, once per
device architecture (the shipped build uses the same language and floating-point options):

- C++14 so that the CUDA 11.4 of JetPack 5 (Xavier, sm_72) builds the same source;
- ``--fmad=false``: no fused multiply-add contraction, so every float operation rounds as NumPy's
  does: the step kernels are bit-identical to their twins and the others differ only by
  summation order; the kernels are memory-bound, so FMA would save no measurable time;
- no ``--use_fast_math``: it swaps ``expf``/``logf``/``sqrtf`` and float division for approximate
  versions (``__expf``'s error grows with ``|x|``, division and square root are off by up to
  2 ulp) and flushes denormals, loosening the agreement with the twins for no gain. Double
  precision (the RNG) is unaffected by that flag either way.

Cache: compiled cubins live in ``$DIG2DIG_CACHE`` (or ``~/.cache/dig2dig/kernels``) under a name
holding a SHA-256 of the source, the headers it includes, the options, the architecture and the nvcc
version, so an edited kernel or a new toolkit recompiles and nothing stale is ever loaded.

pycuda, the primary context and the work buffers come from ``kernels/device.py``: importing this
module never needs pycuda; using it without pycuda raises :class:`CudaError` with the fix.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .color import RGB_FROM_YCBCR, YCBCR_FROM_RGB, YCBCR_OFFSET
from .device import CudaError, DeviceOwner, PrimaryContext, check_array, cuda_gpuarray
from .dig import check_box_window, check_dig_args
from .em import check_power
from .prebuilt import KERNEL_DIR, shipped_image, source_hashes
from .rng import stream_key

COMPILE_ENV = "DIG2DIG_COMPILE_KERNELS"  # "1": compile every kernel from source, ignoring the shipped build
NVCC_OPTIONS: Tuple[str, ...] = ("-O3", "-std=c++14", "--fmad=false")
BLOCK = 256  # 1-D kernels
HBOX_THREADS = 128  # dig.cu's HBOX_THREADS
TILE = (32, 8, 1)  # dig.cu's (VBOX_X, VBOX_Y), em.cu's (EM_X, EM_Y)
MAX_SHARED_BYTES = 48 * 1024
RNG_MAX_BLOCKS = 4096
Shape = Tuple[int, ...]
ONE_F32_BITS = 0x3F800000  # 1.0f, for memset_d32
EM_SOLVE_ITERATIONS = 20  # Chebyshev iterations: about 2e-6 relative error on H (see em_chebyshev_omegas)


# kernel name -> (source file stem, pycuda argument format: P pointer, i int, I unsigned int,
# f float, d double, Q unsigned 64-bit); tests check these against the .cu signatures.
KERNELS: Dict[str, Tuple[str, str]] = {
    "predict_x0": ("step", "PPPffii"),
    "ddim_update": ("step", "PPPffffi"),
    "q_sample": ("step", "PPPffii"),
    "rgb_to_ycbcr": ("color", "PP" + "f" * 12 + "i"),
    "ycbcr_to_rgb": ("color", "PP" + "d" * 12 + "i"),
    "gaussian": ("rng", "PQQQ"),
    "dig_hbox": ("dig", "PPPPiii"),
    "dig_box_h": ("dig", "PPiii"),
    "dig_box_v": ("dig", "PPiii"),
    "dig_vbox": ("dig", "PPPPPiiiifi"),
    "dig_softmax": ("dig", "PPPii"),
    "em_estep": ("em", "P" * 12 + "ii"),
    "em_log_hbox": ("em", "PPPiii"),
    "em_exp_vbox": ("em", "PPPiii"),
    "em_chebyshev": ("em", "PPPPfii"),
    "em_update": ("em", "P" * 10 + "fffiii"),
    "mark_nonfinite": ("array", "PPIi"),
    "luma_of": ("array", "PPiii"),
    "shrink": ("resample", "PPiiiiii"),
    "enlarge": ("resample", "PPiiiiii"),
}


def find_nvcc() -> str:
    """Path of nvcc: on PATH, else ``$CUDA_HOME/bin``, else ``/usr/local/cuda/bin`` (JetPack's place)."""
    candidates = [shutil.which("nvcc")]
    candidates += [str(Path(root) / "bin" / "nvcc") for root in
                   (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda") if root]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise CudaError("nvcc not found (looked on PATH, in $CUDA_HOME/bin and /usr/local/cuda/bin): "
                    "install the CUDA toolkit or put its bin/ on PATH")


@lru_cache(maxsize=None)
def nvcc_version(nvcc: str) -> str:
    """``nvcc --version`` output (part of the cache key)."""
    return subprocess.run([nvcc, "--version"], capture_output=True, text=True, check=True).stdout


def cache_dir() -> Path:
    """Where compiled cubins are kept: ``$DIG2DIG_CACHE`` or ``~/.cache/dig2dig/kernels``."""
    env = os.environ.get("DIG2DIG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dig2dig" / "kernels"


def nvcc_command(nvcc: str, source: Path, arch: str, output: Path, fmt: str = "cubin",
                 extra: Sequence[str] = ()) -> List[str]:
    """The nvcc command line that builds ``source`` for ``arch`` (``sm_XY``) as ``fmt`` (cubin or ptx)."""
    target = arch if fmt == "cubin" else arch.replace("sm_", "compute_")
    return [nvcc, f"-{fmt}", f"-arch={target}", *NVCC_OPTIONS, "-I", str(KERNEL_DIR), *extra,
            "-o", str(output), str(source)]


def compile_cubin(name: str, arch: str, directory: Optional[Path] = None) -> Path:
    """Compile ``kernels/<name>.cu`` for ``arch`` unless the cache has it; return the cubin's path."""
    nvcc = find_nvcc()
    source = KERNEL_DIR / f"{name}.cu"
    digest = hashlib.sha256()
    for file, file_hash in sorted(source_hashes(name).items()):
        digest.update(f"{file}\0{file_hash}\0".encode())
    digest.update(" ".join((arch, *NVCC_OPTIONS, nvcc_version(nvcc))).encode())
    directory = cache_dir() if directory is None else directory
    cubin = directory / f"{name}-{arch}-{digest.hexdigest()[:20]}.cubin"
    if cubin.is_file():
        return cubin
    directory.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(suffix=".cubin", dir=directory)
    os.close(handle)
    try:
        result = subprocess.run(nvcc_command(nvcc, source, arch, Path(temporary)), capture_output=True, text=True)
        if result.returncode != 0:
            raise CudaError(f"nvcc failed on {source} for {arch}:\n{result.stderr.strip()}")
        os.replace(temporary, cubin)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return cubin


def em_chebyshev_omegas(iterations: int = EM_SOLVE_ITERATIONS) -> List[float]:
    """Chebyshev semi-iteration weights for ``(I + K1^T K1 + K2^T K2) H = rhs``.

    The operator's spectrum is in [1, 9]; Richardson with step 1/5 contracts it by rho = 0.8 and
    the Chebyshev weights ``omega_1 = 1``, ``omega_2 = 1 / (1 - rho^2 / 2)``,
    ``omega_{k+1} = 1 / (1 - rho^2 omega_k / 4)`` accelerate that to about 0.5 per iteration.
    """
    rho2 = 0.8 ** 2
    omegas = [1.0]
    for k in range(1, iterations):
        omegas.append(1.0 / (1.0 - rho2 / 2.0) if k == 1 else 1.0 / (1.0 - rho2 * omegas[-1] / 4.0))
    return omegas


def _blocks(count: int, size: int) -> int:
    return (count + size - 1) // size


def _tile_grid(height: int, width: int) -> Tuple[int, int]:
    """Grid of TILE blocks covering an (H, W) image."""
    return _blocks(width, TILE[0]), _blocks(height, TILE[1])


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _check(name: str, array: Any, shape: Tuple[int, ...]) -> None:
    """Raise ValueError unless ``array`` is a C-contiguous float32 GPUArray of ``shape`` that the kernels can index."""
    check_array(name, array, shape)
    if array.size >= 2 ** 31:
        raise ValueError(f"{name}: {array.size} elements is more than the kernels index")


@dataclass
class CudaEMState:
    """The GPU twin of ``em.EMState``, updated in place by :meth:`CudaKernels.em_step`.

    ``taus`` holds two (tau_a, tau_b) slots, ``slot`` the current one (each step reads one and
    writes the other); ``C``, ``D``, ``rhs``, ``solve`` (three Chebyshev iterates) and
    ``partials`` are work buffers of the step.
    """

    shape: Tuple[int, int]
    taus: Any
    slot: int
    F1: Any
    F2: Any
    C: Any
    D: Any
    rhs: Any
    solve: List[Any]
    partials: Any
    counter: Any

    def tau(self) -> Tuple[float, float]:
        """(tau_a, tau_b) on the host (synchronous)."""
        values = self.taus.get().reshape(2, 2)[self.slot]
        return float(values[0]), float(values[1])


class CudaKernels(DeviceOwner):
    """The kernels on one device; each method is the GPU twin of the NumPy function of the same name.

    Methods take pycuda ``GPUArray`` inputs and write into caller-allocated ``out`` arrays on
    :attr:`stream`, asynchronously; call :meth:`synchronize` before reading results on the host.
    Small work buffers are allocated on first use and reused. Kernels load from the shipped build
    for the device's compute capability unless ``DIG2DIG_COMPILE_KERNELS=1`` is set or the build no
    longer matches its source (see the module docstring); ``directory`` overrides the folder of the
    cubins compiled then (:func:`cache_dir`).
    """

    def __init__(self, device: int = 0, directory: Optional[Path] = None) -> None:
        self.open_device(PrimaryContext(device))
        self.gpuarray, self.device = cuda_gpuarray(), self.context.device
        self.capability = self.context.compute_capability()
        self.arch = "sm_{}{}".format(*self.capability)
        self.directory = directory
        self.compile_from_source = os.environ.get(COMPILE_ENV) == "1"
        self._modules: Dict[str, Any] = {}
        self._functions: Dict[str, Any] = {}

    def function(self, name: str) -> Any:
        """Kernel ``name`` (see :data:`KERNELS`), loaded and prepared on first use."""
        if name not in self._functions:
            module, arg_types = KERNELS[name]
            if module not in self._modules:
                self._modules[module] = self._load_module(module)
            self._functions[name] = self._modules[module].get_function(name).prepare(arg_types)
        return self._functions[name]

    def _load_module(self, name: str) -> Any:
        """``kernels/<name>.cu`` loaded on the device: the shipped build, else compiled with nvcc."""
        image = None if self.compile_from_source else shipped_image(name, self.capability)
        if image is not None:
            return self.driver.module_from_buffer(image)
        return self.driver.module_from_file(str(compile_cubin(name, self.arch, self.directory)))

    def _launch_1d(self, name: str, count: int, *args: Any) -> None:
        self.function(name).prepared_async_call(
            (_blocks(count, BLOCK), 1), (BLOCK, 1, 1), self.stream, *args)

    # -- step.cu ---------------------------------------------------------------------------------

    def predict_x0(self, x: Any, eps: Any, abar: float, clip: bool, out: Any) -> None:
        """out = sqrt(1/abar) x - sqrt(1/abar - 1) eps, clamped to [-1, 1] if ``clip``."""
        for name, array in (("x", x), ("eps", eps), ("out", out)):
            _check(name, array, x.shape)
        self._launch_1d("predict_x0", x.size, x.gpudata, eps.gpudata, out.gpudata,
                        _f32(np.sqrt(1.0 / abar)), _f32(np.sqrt(1.0 / abar - 1.0)), int(bool(clip)), x.size)

    def ddim_update(self, x: Any, x0: Any, abar: float, abar_prev: float, out: Any) -> None:
        """Deterministic DDIM step (eta = 0) from x_t to x_{t-1} given x0 (epsilon recomputed from x0)."""
        for name, array in (("x", x), ("x0", x0), ("out", out)):
            _check(name, array, x.shape)
        self._launch_1d("ddim_update", x.size, x.gpudata, x0.gpudata, out.gpudata,
                        _f32(np.sqrt(1.0 / abar)), _f32(np.sqrt(1.0 / abar - 1.0)),
                        _f32(np.sqrt(abar_prev)), _f32(np.sqrt(1.0 - abar_prev)), x.size)

    def q_sample(self, x0: Any, noise: Any, abar: float, out: Any) -> None:
        """out = sqrt(abar) x0 + sqrt(1 - abar) noise; ``noise`` may match x0's trailing axes only."""
        _check("x0", x0, x0.shape)
        _check("out", out, x0.shape)
        _check("noise", noise, x0.shape[x0.ndim - noise.ndim:])
        self._launch_1d("q_sample", x0.size, x0.gpudata, noise.gpudata, out.gpudata,
                        _f32(np.sqrt(abar)), _f32(np.sqrt(1.0 - abar)), noise.size, x0.size)

    # -- color.cu --------------------------------------------------------------------------------

    def rgb_to_ycbcr(self, x: Any, out: Any) -> None:
        """YCbCr / 255 of a ``(3, H, W)`` RGB array (DDFM's skimage route)."""
        self._color("rgb_to_ycbcr", x, out, [_f32(v) for v in (*YCBCR_FROM_RGB.ravel(), *YCBCR_OFFSET)])

    def ycbcr_to_rgb(self, x: Any, out: Any) -> None:
        """Inverse of :meth:`rgb_to_ycbcr`, no clipping."""
        self._color("ycbcr_to_rgb", x, out, [float(v) for v in (*RGB_FROM_YCBCR.ravel(), *YCBCR_OFFSET)])

    def _color(self, name: str, x: Any, out: Any, constants: List[Any]) -> None:
        """Launch a colour kernel on ``(3, H, W)`` arrays with color.py's matrix and offsets."""
        _check("x", x, (3,) + tuple(x.shape[1:]))
        _check("out", out, x.shape)
        plane = x.size // 3
        self._launch_1d(name, plane, x.gpudata, out.gpudata, *constants, plane)

    # -- rng.cu ----------------------------------------------------------------------------------

    def gaussian(self, seed: int, stream: int, out: Any) -> None:
        """Fill the float32 array ``out`` with the noise ``rng.gaussian(seed, stream, out.shape)``."""
        stream_key(seed, stream)  # validates the range of seed and stream
        _check("out", out, tuple(out.shape))
        count = int(out.size)
        self.function("gaussian").prepared_async_call(
            (max(1, min(_blocks(count, BLOCK), RNG_MAX_BLOCKS)), 1), (BLOCK, 1, 1), self.stream,
            out.gpudata, int(seed), int(stream), count)

    # -- dig.cu ----------------------------------------------------------------------------------

    def dig_weights(self, sources: Any, x0_t: Any, x0_next: Any, window: int, tau: float,
                    out_weights: Any, out_gains: Any, relative: bool = True, passes: int = 1) -> None:
        """DIG weights and gains of ``(K, H, W)`` inputs into ``out_weights`` and ``out_gains``
        (``tau``, ``relative`` and ``passes`` as ``kernels.dig.dig_weights``)."""
        shape = tuple(sources.shape)
        check_dig_args(shape, window, tau, relative, passes)
        for name, array in (("sources", sources), ("x0_t", x0_t), ("x0_next", x0_next),
                            ("out_weights", out_weights), ("out_gains", out_gains)):
            _check(name, array, shape)
        k, height, width = shape
        radius = window // 2
        shared = (HBOX_THREADS + 2 * radius) * 4
        if shared > MAX_SHARED_BYTES:
            raise ValueError(f"DIG window {window} is too large for the CUDA kernel")
        hsum = self.buffers.get("dig_hsum", 4 * k * height * width)
        grid = _tile_grid(height, width)
        partials = self.buffers.get("dig_partials", 4 * grid[0] * grid[1])
        fresh = "dig_state" not in self.buffers
        state = self.buffers.get("dig_state", 8)  # uint32 block counter (0 between launches), float32 tau
        if fresh:
            self.driver.memset_d32_async(state, 0, 2, self.stream)
        temperature = int(state) + 4
        rows = (_blocks(width, HBOX_THREADS), height, k)
        self.function("dig_hbox").prepared_async_call(
            rows, (HBOX_THREADS, 1, 1), self.stream,
            sources.gpudata, x0_t.gpudata, x0_next.gpudata, hsum, height, width, radius, shared_size=shared)
        if passes > 1:
            mean = self.buffers.get("dig_mean", 4 * k * height * width)
            for _ in range(passes - 1):
                self.function("dig_box_v").prepared_async_call(
                    grid + (k,), TILE, self.stream, hsum, mean, height, width, radius)
                self.function("dig_box_h").prepared_async_call(
                    rows, (HBOX_THREADS, 1, 1), self.stream, mean, hsum, height, width, radius, shared_size=shared)
        self.function("dig_vbox").prepared_async_call(
            grid, TILE, self.stream,
            hsum, out_gains.gpudata, partials, state, temperature, k, height, width, radius, _f32(tau),
            int(bool(relative)))
        self._launch_1d("dig_softmax", height * width,
                        out_gains.gpudata, temperature, out_weights.gpudata, k, height * width)

    # -- em.cu -----------------------------------------------------------------------------------

    def em_init(self, shape: Tuple[int, int], take: Optional[Callable[[str, Shape, Any], Any]] = None) -> CudaEMState:
        """EM state for ``(H, W)`` float32 images: tau_a = tau_b = 1, F1 = F2 = 0, work buffers 0.

        ``take(role, shape, dtype)`` gives the buffers (``CudaOps`` passes its pool; default: new
        GPUArrays). The values are set by memsets queued on the stream, so that with pooled buffers
        a loop captured in a CUDA graph resets its state at every replay.
        """
        height, width = shape
        grid = _tile_grid(height, width)

        def new(role: str, size: Shape, dtype: Any) -> Any:
            return take(role, size, dtype) if take is not None else self.gpuarray.empty(size, dtype)

        taus = new("em_taus", (4,), np.float32)
        self.driver.memset_d32_async(taus.gpudata, ONE_F32_BITS, 4, self.stream)

        def zeros(role: str, size: Shape, dtype: Any = np.float32) -> Any:
            array = new(role, size, dtype)
            self.driver.memset_d32_async(array.gpudata, 0, array.size, self.stream)
            return array

        return CudaEMState(shape=(height, width), taus=taus, slot=0, F1=zeros("em_F1", shape),
                           F2=zeros("em_F2", shape), C=zeros("em_C", shape), D=zeros("em_D", shape),
                           rhs=zeros("em_rhs", shape), solve=[zeros(f"em_solve{i}", shape) for i in range(3)],
                           partials=zeros("em_partials", (2 * grid[0] * grid[1],)),
                           counter=zeros("em_counter", (1,), np.uint32))

    def em_step(self, f_pre: Any, a: Any, b: Any, state: CudaEMState, lamb: float, rho: float,
                w_a: Optional[Any], w_b: Optional[Any], out: Any, window: int = 1, power: float = 1.0) -> None:
        """One EM step on ``(H, W)`` arrays: the fused estimate into ``out``, ``state`` updated in place.

        As ``em.em_step`` (sources A and B in that order, mapped to DDFM's ``I = b``, ``V = a`` as
        there; ``window`` > 1: the E-step weights' geometric mean; ``power``) except that the TV
        proximal solve runs :data:`EM_SOLVE_ITERATIONS` Chebyshev iterations (from zero, with the
        FFT's circular differences) instead of an FFT.
        """
        I, V, w_i, w_v = b, a, w_b, w_a  # noqa: E741
        if (w_i is None) != (w_v is None):
            raise ValueError("give both source weights w_a and w_b, or neither")
        shape = state.shape
        check_box_window("EM", window, shape)
        check_power(power)
        arrays = [("f_pre", f_pre), ("a", a), ("b", b), ("out", out)]
        arrays += [] if w_a is None else [("w_a", w_a), ("w_b", w_b)]
        for name, array in arrays:
            _check(name, array, shape)
        height, width = shape
        grid = _tile_grid(height, width)
        taus = int(state.taus.gpudata)
        self.function("em_estep").prepared_async_call(
            grid, TILE, self.stream, f_pre.gpudata, I.gpudata, V.gpudata, state.F1.gpudata, state.F2.gpudata,
            taus + 8 * state.slot, taus + 8 * (1 - state.slot), state.C.gpudata, state.D.gpudata,
            state.rhs.gpudata, state.partials.gpudata, state.counter.gpudata, height, width)
        state.slot = 1 - state.slot
        if window > 1:
            hsum = self.buffers.get("em_hsum", 8 * height * width)
            planes = grid + (2,)
            self.function("em_log_hbox").prepared_async_call(
                planes, TILE, self.stream, state.C.gpudata, state.D.gpudata, hsum, height, width, window // 2)
            self.function("em_exp_vbox").prepared_async_call(
                planes, TILE, self.stream, hsum, state.C.gpudata, state.D.gpudata, height, width, window // 2)
        solve = [array.gpudata for array in state.solve]
        self.driver.memset_d32_async(solve[0], 0, height * width, self.stream)
        chebyshev = self.function("em_chebyshev")
        for k, omega in enumerate(em_chebyshev_omegas()):
            prev = solve[(k - 1) % 3] if k > 0 else solve[0]
            chebyshev.prepared_async_call(grid, TILE, self.stream, state.rhs.gpudata, prev, solve[k % 3],
                                          solve[(k + 1) % 3], _f32(omega), height, width)
        H = solve[EM_SOLVE_ITERATIONS % 3]
        weighted = w_i is not None and w_v is not None
        self.function("em_update").prepared_async_call(
            grid, TILE, self.stream, I.gpudata, V.gpudata, H, state.C.gpudata, state.D.gpudata,
            w_i.gpudata if w_i is not None else 0, w_v.gpudata if w_v is not None else 0, state.F1.gpudata,
            state.F2.gpudata, out.gpudata, _f32(rho), _f32(rho / (2 * lamb + rho)), _f32(power), int(weighted),
            height, width)

    # -- array.cu -------------------------------------------------------------------------------

    def mark_nonfinite(self, x: Any, step: int, record: Any) -> None:
        """``record`` (one uint32) = min(record, step) if any element of ``x`` is NaN or infinite."""
        _check("x", x, tuple(x.shape))
        if tuple(record.shape) != (1,) or record.dtype != np.uint32:
            raise ValueError(f"record: expected one uint32, got {record.dtype} {tuple(record.shape)}")
        self._launch_1d("mark_nonfinite", x.size, x.gpudata, record.gpudata, np.uint32(step), x.size)

    def luma_of(self, images: Any, out: Any) -> None:
        """``(K, C, H, W)`` -> ``(K, H, W)``: the channel mean, as NumPy's float32 mean over axis 1."""
        if len(images.shape) != 4:
            raise ValueError(f"images: expected (K, C, H, W), got {tuple(images.shape)}")
        k, channels, height, width = (int(v) for v in images.shape)
        _check("images", images, (k, channels, height, width))
        _check("out", out, (k, height, width))
        self._launch_1d("luma_of", out.size, images.gpudata, out.gpudata, channels, height * width, out.size)

    # -- resample.cu -----------------------------------------------------------------------------

    def shrink(self, images: Any, factor: int, out: Any) -> None:
        """``(K, H, W)`` -> ``out`` ``(K, h, w)``: block means of ``factor`` x ``factor``, reflect-101 padded
        beyond ``(H / factor, W / factor)`` (``resample.shrink``)."""
        k, height, width = (int(v) for v in images.shape)
        oh, ow = (int(v) for v in out.shape[1:])
        _check("images", images, (k, height, width))
        _check("out", out, (k, oh, ow))
        if height % factor or width % factor or oh < height // factor or ow < width // factor:
            raise ValueError(f"shrink: {height}x{width} by {factor} into {oh}x{ow}")
        self._launch_1d("shrink", out.size, images.gpudata, out.gpudata, height, width, factor, oh, ow, out.size)

    def enlarge(self, images: Any, factor: int, out: Any) -> None:
        """``(K, h, w)`` -> ``out`` ``(K, H, W)``: the top-left ``(H / factor, W / factor)`` part, bilinearly
        enlarged (``resample.enlarge``)."""
        k, ih, iw = (int(v) for v in images.shape)
        height, width = (int(v) for v in out.shape[1:])
        _check("images", images, (k, ih, iw))
        _check("out", out, (k, height, width))
        if ih < height // factor or iw < width // factor:
            raise ValueError(f"enlarge: {ih}x{iw} holds no {height // factor}x{width // factor} part")
        self._launch_1d("enlarge", out.size, images.gpudata, out.gpudata, ih, iw, factor, height, width, out.size)

    # -- lifetime --------------------------------------------------------------------------------

    def synchronize(self) -> None:
        """Wait for everything queued on :attr:`stream`."""
        self.stream.synchronize()

    def release(self) -> None:
        """Drop the loaded modules (``close`` frees the work buffers and pops the context)."""
        self._functions.clear()
        self._modules.clear()
