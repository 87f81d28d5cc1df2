"""runtime/graph.py's ctypes bindings of the CUDA driver against cuda.h; needs nvcc only (runs in CI).

The GPU side (a captured loop replayed against the eager loop) is in test_gpu_loop.py.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Tuple

import pytest

from dig2dig.runtime import graph
from test_kernels_compile import nvcc

# The copies test_gpu_loop.py's EchoRunner queues (a runner outside PyTorch, as a TensorRT engine).
ECHO_FUNCTIONS = {"cuMemsetD32Async": ("CUdeviceptr", "unsigned int", "size_t", "CUstream"),
                  "cuMemcpyDtoDAsync_v2": ("CUdeviceptr", "CUdeviceptr", "size_t", "CUstream")}


def check_against_cuda_h(functions: Mapping[str, Tuple[str, ...]], tmp_path: Path) -> None:
    """Compile, with warnings as errors, a C file assigning each function to a pointer of the
    parameter types we bind: a wrong name, arity or type fails to build."""
    lines = ["#include <cuda.h>",
             f"_Static_assert(CU_STREAM_CAPTURE_MODE_GLOBAL == {graph.CU_STREAM_CAPTURE_MODE_GLOBAL}, \"mode\");"]
    for name, parameters in functions.items():
        lines.append(f"CUresult (CUDAAPI *p_{name})({', '.join(parameters)}) = {name};")
    source = tmp_path / "driver_prototypes.c"
    source.write_text("\n".join(lines) + "\n")
    built = subprocess.run([nvcc(), "-c", str(source), "-o", str(tmp_path / "driver_prototypes.o"),
                            "-Xcompiler", "-Werror"], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr + built.stdout


def test_driver_prototypes_match_cuda_h(tmp_path):
    check_against_cuda_h(graph.DRIVER_FUNCTIONS, tmp_path)
    check_against_cuda_h(ECHO_FUNCTIONS, tmp_path)
    assert set(t for p in {**graph.DRIVER_FUNCTIONS, **ECHO_FUNCTIONS}.values() for t in p) <= set(graph._C_TYPES)


def test_a_wrong_prototype_fails_the_check(tmp_path):
    """The check has teeth: one parameter too few, or a wrong type, does not build."""
    for wrong in ({"cuGraphLaunch": ("CUgraphExec",)}, {"cuStreamEndCapture": ("CUstream", "CUgraphExec")}):
        with pytest.raises(AssertionError):
            check_against_cuda_h(wrong, tmp_path)


def test_no_driver_library_is_a_clear_error():
    with pytest.raises(RuntimeError, match="CUDA graphs need the CUDA driver library libcuda-absent.so"):
        graph.CudaDriver(library="libcuda-absent.so")
