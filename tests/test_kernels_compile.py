"""Every kernels/*.cu builds for the GPUs users deploy on, and the launcher's argument lists match the
kernels' signatures.

Xavier is sm_72, Orin sm_87, H100 sm_90. Orin and H100 build with the machine's nvcc and the launcher's
options; Xavier, which CUDA 13's nvcc no longer targets, with CUDA 11.8's NVRTC and ptxas (the toolchain
of kernels/prebuilt.py, from the test extra). Needs no GPU and no pycuda; runs in CI.
"""
from __future__ import annotations

import os
import re
import struct
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, FrozenSet, List, Tuple

import numpy as np
import pytest

from dig2dig.kernels import cuda, prebuilt

NVCC_ARCHS = ("sm_87", "sm_90")
EM_CUDA, ELFOSABI_CUDA, ELF_ABI_CUDA_11 = 190, 51, 7
SOURCES = sorted(cuda.KERNEL_DIR.glob("*.cu"))


@lru_cache(maxsize=None)
def nvcc() -> str:
    try:
        return cuda.find_nvcc()
    except cuda.CudaError as exc:
        pytest.skip(f"nvcc is not installed: {exc}")


@lru_cache(maxsize=None)
def supported_archs() -> FrozenSet[str]:
    listed = subprocess.run([nvcc(), "--list-gpu-code"], capture_output=True, text=True)
    return frozenset(listed.stdout.split())


@lru_cache(maxsize=None)
def nvrtc_toolchain() -> prebuilt.Toolchain:
    """CUDA 11.8's NVRTC and ptxas (skip, saying what to install, without them)."""
    try:
        return prebuilt.find_toolchain()
    except cuda.CudaError as exc:
        pytest.skip(str(exc))


@lru_cache(maxsize=None)
def nvrtc_build() -> Dict[str, bytes]:
    """Every kernel built as kernels/prebuilt.py builds the shipped ones (PTX and cubins), once per session."""
    return prebuilt.build(nvrtc_toolchain(), prebuilt.kernel_names())


def cubin_arch(cubin: bytes) -> int:
    """The SM number (72 for sm_72) in the header of a CUDA ELF of the ABI that ptxas 11.8 writes."""
    assert cubin[:4] == b"\x7fELF" and (cubin[7], cubin[8]) == (ELFOSABI_CUDA, ELF_ABI_CUDA_11)
    machine, = struct.unpack_from("<H", cubin, 18)
    flags, = struct.unpack_from("<I", cubin, 48)
    assert machine == EM_CUDA
    return flags & 0xFF


def module_kernels(stem: str) -> List[str]:
    """The names in :data:`cuda.KERNELS` of the kernels of ``kernels/<stem>.cu``."""
    return [name for name, (module, _) in cuda.KERNELS.items() if module == stem]


def build_all(commands: List[List[str]]) -> None:
    """Run the nvcc commands in parallel; fail with each failure's output (ptxas -v resource usage included)."""
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = list(pool.map(lambda command: subprocess.run(command, capture_output=True, text=True), commands))
    failures = [f"$ {' '.join(command)}\n{result.stdout}{result.stderr}"
                for command, result in zip(commands, results) if result.returncode != 0]
    assert not failures, "\n\n".join(failures)


def test_there_are_kernels():
    assert {"color.cu", "dig.cu", "em.cu", "rng.cu", "step.cu"} <= {source.name for source in SOURCES}


@pytest.mark.parametrize("arch", NVCC_ARCHS)
def test_kernels_compile_to_cubin(arch: str, tmp_path: Path):
    if arch not in supported_archs():
        pytest.skip(f"this nvcc cannot target {arch}")
    build_all([cuda.nvcc_command(nvcc(), source, arch, tmp_path / f"{source.stem}.cubin", extra=("-Xptxas", "-v"))
               for source in SOURCES])
    assert all((tmp_path / f"{source.stem}.cubin").stat().st_size > 0 for source in SOURCES)


def test_kernels_compile_for_xavier_with_nvrtc():
    """Every .cu through NVRTC to compute_72 PTX, then ptxas to an sm_72 cubin that holds its kernels."""
    images = nvrtc_build()
    for source in SOURCES:
        cubin = images[f"{source.stem}.sm_72.cubin"]
        assert cubin_arch(cubin) == 72, source.name
        for name in module_kernels(source.stem):
            assert name.encode() + b"\0" in cubin, (source.name, name)


def test_kernels_compile_to_ptx(tmp_path: Path):
    arch = next((arch for arch in NVCC_ARCHS if arch in supported_archs()), None)
    if arch is None:
        pytest.skip(f"this nvcc targets none of {NVCC_ARCHS}")
    build_all([cuda.nvcc_command(nvcc(), source, arch, tmp_path / f"{source.stem}.ptx", fmt="ptx")
               for source in SOURCES])
    for source in SOURCES:
        ptx = (tmp_path / f"{source.stem}.ptx").read_text()
        assert ".entry" in ptx, source.name


def test_compile_cubin_caches_by_content(tmp_path: Path):
    arch = next((arch for arch in NVCC_ARCHS if arch in supported_archs()), None)
    if arch is None:
        pytest.skip(f"this nvcc targets none of {NVCC_ARCHS}")
    first = cuda.compile_cubin("rng", arch, tmp_path)
    stamp = first.stat().st_mtime_ns
    assert cuda.compile_cubin("rng", arch, tmp_path) == first and first.stat().st_mtime_ns == stamp
    assert [path.name for path in tmp_path.iterdir()] == [first.name]
    assert first.name.startswith(f"rng-{arch}-")


C_TYPES = {"float*": "P", "unsignedint*": "P", "int": "i", "unsignedint": "I", "float": "f", "double": "d",
           "unsignedlonglong": "Q"}


def kernel_signatures() -> dict:
    """name -> (source stem, pycuda format) parsed from the extern "C" __global__ declarations."""
    found = {}
    for source in SOURCES:
        text = source.read_text()
        for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', text):
            fmt = ""
            for param in params.split(","):
                words = param.replace("*", " * ").replace("const", "").replace("__restrict__", "").split()
                fmt += C_TYPES["".join(words[:-1])]
            found[name] = (source.stem, fmt)
    return found


def test_launcher_formats_match_kernel_signatures():
    assert kernel_signatures() == cuda.KERNELS


class FakeArray:
    """Stands in for a pycuda GPUArray (and a DeviceAllocation): shape, dtype, flags, a distinct pointer."""

    pointers = iter(range(1 << 20, 1 << 40, 1 << 20))

    def __init__(self, shape: Any, dtype: Any = np.float32) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.dtype, self.ndim = np.dtype(dtype), len(self.shape)
        self.size = int(np.prod(self.shape))
        self.flags = types.SimpleNamespace(c_contiguous=True)
        self.gpudata = next(self.pointers)

    def __index__(self) -> int:
        return self.gpudata

    def free(self) -> None:
        """Device memory is not real here."""


class FakeFunction:
    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def prepare(self, fmt: str) -> "FakeFunction":
        self.fmt = fmt
        return self

    def prepared_async_call(self, grid: tuple, block: tuple, stream: Any, *args: Any, shared_size: int = 0) -> None:
        struct.pack("@" + self.fmt, *args)  # raises on a wrong count or type, as pycuda would
        self.calls.append((self.name, grid, block, args))


def fake_pycuda(calls: list, capability: Tuple[int, int] = (9, 0)) -> types.ModuleType:
    """A pycuda stand-in on one device of ``capability`` that records kernel launches, and in its
    ``loaded`` list each module load: ("file", path) or ("buffer", image)."""
    context = types.SimpleNamespace(push=lambda: None, pop=lambda: None)
    device = types.SimpleNamespace(retain_primary_context=lambda: context, compute_capability=lambda: capability)
    driver = types.ModuleType("pycuda.driver")
    driver.init = lambda: None
    driver.Device = lambda number: device
    driver.Device.count = lambda: 1
    driver.Stream = lambda: types.SimpleNamespace(synchronize=lambda: None)
    driver.loaded = []

    def load(kind: str, source: Any) -> types.SimpleNamespace:
        driver.loaded.append((kind, source))
        return types.SimpleNamespace(get_function=lambda name: FakeFunction(name, calls))

    driver.module_from_file = lambda path: load("file", path)
    driver.module_from_buffer = lambda image: load("buffer", bytes(image))
    driver.mem_alloc = lambda nbytes: FakeArray(nbytes)
    driver.memset_d32_async = lambda *args: calls.append(("memset", args))
    gpuarray = types.ModuleType("pycuda.gpuarray")
    gpuarray.empty = lambda shape, dtype: FakeArray(shape, dtype)
    package = types.ModuleType("pycuda")
    package.driver, package.gpuarray = driver, gpuarray
    return package


def fake_kernels(monkeypatch: pytest.MonkeyPatch, calls: list,
                 capability: Tuple[int, int] = (9, 0)) -> "cuda.CudaKernels":
    """``CudaKernels`` on the recording stand-in for pycuda, with compilation skipped (``compile_cubin``
    gives the path ``<module>.<arch>.cubin``)."""
    package = fake_pycuda(calls, capability)
    for name, module in (("pycuda", package), ("pycuda.driver", package.driver), ("pycuda.gpuarray", package.gpuarray)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(cuda, "compile_cubin", lambda module, arch, directory=None: Path(f"{module}.{arch}.cubin"))
    return cuda.CudaKernels()


def test_launchers_dry_run(monkeypatch):
    """Every launcher on a recording stand-in for pycuda: argument packing, grids, EM buffer rotation."""
    calls: list = []
    ops = fake_kernels(monkeypatch, calls)
    height, width = 37, 70

    def like(shape: tuple) -> FakeArray:
        return FakeArray(shape)

    rgb, batch, pair, image = like((3, height, width)), like((2, 3, height, width)), like((2, height, width)), \
        like((height, width))
    ops.predict_x0(rgb, like(rgb.shape), 0.5, True, like(rgb.shape))
    ops.ddim_update(rgb, like(rgb.shape), 0.5, 0.7, like(rgb.shape))
    ops.q_sample(batch, rgb, 0.5, like(batch.shape))
    ops.rgb_to_ycbcr(rgb, like(rgb.shape))
    ops.ycbcr_to_rgb(rgb, like(rgb.shape))
    ops.gaussian(1, 2, rgb)
    ops.dig_weights(pair, like(pair.shape), like(pair.shape), 9, 1.0, like(pair.shape), like(pair.shape))
    state = ops.em_init((height, width))
    ops.em_step(image, like(image.shape), like(image.shape), state, 0.5, 0.001, like(image.shape),
                like(image.shape), like(image.shape))
    with pytest.raises(ValueError):
        ops.q_sample(batch, like((4, height, width)), 0.5, like(batch.shape))
    ops.close()
    launches = [call for call in calls if call[0] != "memset"]
    names = [call[0] for call in launches]
    assert names == ["predict_x0", "ddim_update", "q_sample", "rgb_to_ycbcr", "ycbcr_to_rgb", "gaussian",
                     "dig_hbox", "dig_vbox", "dig_softmax", "em_estep"] + \
        ["em_chebyshev"] * cuda.EM_SOLVE_ITERATIONS + ["em_update"]
    for name, grid, block, args in launches:
        threads = [g * b for g, b in zip(tuple(grid) + (1,) * (3 - len(grid)), block)]
        if name in ("predict_x0", "ddim_update", "q_sample", "rgb_to_ycbcr", "ycbcr_to_rgb", "dig_softmax"):
            assert threads[0] >= args[-1], name  # the element count is the last argument
        if name.startswith("em_") or name == "dig_vbox":
            assert threads[0] >= width and threads[1] >= height, name
    chebyshev = [call[3] for call in launches if call[0] == "em_chebyshev"]
    for before, after in zip(chebyshev, chebyshev[1:]):
        assert after[1] == before[2] and after[2] == before[3]  # prev <- cur, cur <- next
    assert len({args[3] for args in chebyshev[:3]}) == 3
    assert launches[-1][3][2] == chebyshev[-1][3]  # em_update reads the last iterate as H


def test_em_init_sets_its_state_by_memsets_on_the_stream(monkeypatch):
    """em_init's values come from memsets queued on the stream (replayed by a captured CUDA graph):
    tau_a = tau_b = 1 in both slots, every other buffer 0; ``take`` gives the buffers by role."""
    calls: list = []
    ops = fake_kernels(monkeypatch, calls)
    taken: list = []

    def take(role: str, shape: tuple, dtype: Any) -> FakeArray:
        taken.append(role)
        return FakeArray(shape, dtype)

    state = ops.em_init((37, 70), take)
    memsets = {args[0]: args[1:] for name, args in calls if name == "memset"}
    assert memsets[state.taus.gpudata][:2] == (cuda.ONE_F32_BITS, 4)
    assert np.frombuffer(np.uint32(cuda.ONE_F32_BITS).tobytes(), np.float32)[0] == 1.0
    others = [state.F1, state.F2, state.C, state.D, state.rhs, *state.solve, state.partials, state.counter]
    for array in others:
        assert memsets[array.gpudata][:2] == (0, array.size)
        assert memsets[array.gpudata][2] is ops.stream
    assert len(taken) == len(set(taken)) == len(others) + 1
    assert state.counter.dtype == np.uint32


def test_dig_passes_launches(monkeypatch):
    """Each extra DIG window pass is a vertical mean then a horizontal sum, between dig_hbox and dig_vbox,
    alternating the row sums and the mean buffer; the row sums reach dig_vbox."""
    calls: list = []
    ops = fake_kernels(monkeypatch, calls)
    height, width = 37, 70
    pair = [FakeArray((2, height, width)) for _ in range(5)]
    ops.dig_weights(*pair[:3], 9, 1.0, *pair[3:], passes=3)
    with pytest.raises(ValueError, match="passes"):
        ops.dig_weights(*pair[:3], 9, 1.0, *pair[3:], passes=0)
    ops.close()
    launches = [call for call in calls if call[0] != "memset"]
    assert [call[0] for call in launches] == ["dig_hbox"] + ["dig_box_v", "dig_box_h"] * 2 + ["dig_vbox", "dig_softmax"]
    hsum = launches[0][3][3]
    for name, grid, block, args in launches[1:5]:
        assert args[-3:] == (height, width, 4), name
        assert grid[2] == 2 and grid[0] * block[0] >= width and grid[1] * block[1] >= height, name
        assert (args[0] if name == "dig_box_v" else args[1]) == hsum, name
    assert launches[1][3][1] == launches[2][3][0] != hsum  # the mean feeds the next horizontal sum
    assert launches[5][3][0] == hsum


def test_em_window_launches(monkeypatch):
    """With an E-step window the two box passes run between em_estep and the solve, on both planes."""
    calls: list = []
    ops = fake_kernels(monkeypatch, calls)
    height, width = 37, 70
    image = [FakeArray((height, width)) for _ in range(4)]
    state = ops.em_init((height, width))
    ops.em_step(*image[:3], state, 0.5, 0.001, None, None, image[3], window=5)
    with pytest.raises(ValueError, match="EM window"):
        ops.em_step(*image[:3], state, 0.5, 0.001, None, None, image[3], window=4)
    ops.close()
    launches = [call for call in calls if call[0] != "memset"]
    assert [call[0] for call in launches[:3]] == ["em_estep", "em_log_hbox", "em_exp_vbox"]
    for name, grid, block, args in launches[1:3]:
        assert grid[2] == 2 and grid[0] * block[0] >= width and grid[1] * block[1] >= height, name
        assert args[-3:] == (height, width, 2), name
    hbox, vbox = launches[1][3], launches[2][3]
    assert hbox[:2] == (state.C.gpudata, state.D.gpudata) and vbox[1:3] == hbox[:2] and vbox[0] == hbox[2]
