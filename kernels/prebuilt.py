"""The kernels built ahead of time and shipped in ``kernels/prebuilt/``, so that a device needs no compiler.

Layout, per ``kernels/<name>.cu``: ``<name>.sm_72.cubin``, ``<name>.sm_87.cubin``, ``<name>.sm_90.cubin``
(Xavier, Orin, H100) and ``<name>.compute_72.ptx``, which the driver JIT-compiles for any other GPU of
compute capability 7.2 or newer; ``manifest.json`` records the SHA-256 of each ``.cu`` and of every
``.cuh`` it includes, the compilers with their versions and options, and the SHA-256 of each binary.
Separate cubins and PTX rather than one fatbin per kernel: the toolchain below has no fatbinary tool,
each file is hashed and checked on its own, and the loader's choice (:func:`shipped_image`) is explicit.

Toolchain: CUDA 11.8's NVRTC (``compute_72`` PTX) and ptxas (that PTX to each cubin), both from PyPI
wheels pinned in the ``test`` extra (:data:`INSTALL`), for every binary:

- CUDA 11.8 is the oldest CUDA that targets sm_90 (and it still targets sm_72), so its output asks
  the least of the driver: its PTX (ISA 7.8) JIT-compiles under any driver of CUDA 11.8 or newer, and
  its cubins are of ELF ABI version 7. nvcc 13 has no sm_72 and writes PTX ISA 9.0 and cubins of ELF
  ABI version 8, both newer than the drivers of JetPack 5 and 6;
- pinned wheels rebuild the same bytes on any machine, so the tests check the shipped files against
  the sources (NVRTC, see :func:`nvrtc_ptx`, and ptxas are deterministic).

Options: NVRTC's spelling of ``cuda.NVCC_OPTIONS`` (C++14, ``--fmad=false``, no fast maths), plus the
kernels folder as include path. With ``--fmad=false`` every float operation in the PTX carries its
rounding (``add.rn``, ``mul.rn``), which neither ptxas nor the driver's JIT contracts into an FMA.

Rebuild after editing a kernel: ``python -m dig2dig.kernels.prebuilt`` (needs :data:`INSTALL`).
"""
from __future__ import annotations

import argparse
import ctypes
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .device import CudaError

KERNEL_DIR = Path(__file__).resolve().parent
PREBUILT_DIR = KERNEL_DIR / "prebuilt"
MANIFEST = "manifest.json"
CUBIN_ARCHS: Tuple[str, ...] = ("sm_72", "sm_87", "sm_90")
PTX_ARCH = "compute_72"
PTX_CAPABILITY = (7, 2)  # the oldest GPU that the shipped PTX runs on
NVRTC_OPTIONS: Tuple[str, ...] = (f"--gpu-architecture={PTX_ARCH}", "-std=c++14", "--fmad=false")
TOOLCHAIN_VERSION = "11.8.89"
NVRTC_WHEEL, PTXAS_WHEEL = "nvidia-cuda-nvrtc-cu11", "nvidia-cuda-nvcc-cu11"
INSTALL = f"pip install {NVRTC_WHEEL}=={TOOLCHAIN_VERSION} {PTXAS_WHEEL}=={TOOLCHAIN_VERSION}"
INCLUDE = re.compile(r'^\s*#\s*include\s*"([^"]+)"', re.MULTILINE)
CALL_NUMBER = re.compile(rb"(// callseq) \d+")


def kernel_names() -> List[str]:
    """Stems of the ``kernels/*.cu`` files, sorted."""
    return sorted(source.stem for source in KERNEL_DIR.glob("*.cu"))


def source_files(name: str) -> List[Path]:
    """``kernels/<name>.cu`` and every header it includes, directly or not, in include order."""
    files = [KERNEL_DIR / f"{name}.cu"]
    for path in files:
        for header in INCLUDE.findall(path.read_text()):
            if KERNEL_DIR / header not in files:
                files.append(KERNEL_DIR / header)
    return files


def source_hashes(name: str) -> Dict[str, str]:
    """File name -> SHA-256 of ``kernels/<name>.cu`` and of each header it includes."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in source_files(name)}


def read_manifest(directory: Optional[Path] = None) -> Dict[str, Any]:
    """The manifest of the binaries in ``directory`` (default :data:`PREBUILT_DIR`); empty when there is none."""
    path = (PREBUILT_DIR if directory is None else directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def shipped_image(name: str, capability: Tuple[int, int], directory: Optional[Path] = None) -> Optional[bytes]:
    """The shipped build of ``kernels/<name>.cu`` for a device of ``capability`` (major, minor), for
    ``driver.module_from_buffer``: the cubin of its architecture, else the PTX (NUL-terminated, as the
    driver reads it) on GPUs newer than :data:`PTX_CAPABILITY`. None when the build must come from the
    source: no build of it is shipped, the source or a header differs from the built one, or the GPU is older.
    """
    directory = PREBUILT_DIR if directory is None else directory
    entry = read_manifest(directory).get("kernels", {}).get(name)
    if entry is None or entry["sources"] != source_hashes(name):
        return None
    cubin = f"{name}.sm_{capability[0]}{capability[1]}.cubin"
    if cubin in entry["binaries"]:
        return (directory / cubin).read_bytes()
    if capability >= PTX_CAPABILITY:
        return (directory / f"{name}.{PTX_ARCH}.ptx").read_bytes() + b"\0"
    return None


@dataclass(frozen=True)
class Toolchain:
    """CUDA 11.8's NVRTC library and ptxas, from their PyPI wheels."""

    nvrtc: Path
    ptxas: Path
    nvrtc_package: str
    ptxas_package: str

    def describe(self) -> Dict[str, Dict[str, Any]]:
        """Each compiler's wheel, version and options, as the manifest records them."""
        major, minor = ctypes.c_int(), ctypes.c_int()
        load_nvrtc(self.nvrtc).nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
        ptxas = subprocess.run([str(self.ptxas), "--version"], capture_output=True, text=True, check=True).stdout
        release = next((line for line in ptxas.splitlines() if "release" in line), ptxas.strip())
        return {
            "nvrtc": {"package": self.nvrtc_package, "version": f"NVRTC {major.value}.{minor.value}",
                      "options": [*NVRTC_OPTIONS, "--include-path=<kernels folder>"]},
            "ptxas": {"package": self.ptxas_package, "version": release,
                      "options": ["-arch=<cubin architecture>"]},
        }


def wheel_file(package: str, prefix: str) -> Tuple[Path, str]:
    """The installed file of wheel ``package`` whose name starts with ``prefix``, and ``package==version``."""
    try:
        distribution = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError as exc:
        raise CudaError(f"{package} is not installed; CUDA 11.8's NVRTC and ptxas build the kernels: "
                        f"{INSTALL}") from exc
    for file in distribution.files or ():
        if file.name.startswith(prefix):
            return Path(str(distribution.locate_file(file))), f"{package}=={distribution.version}"
    raise CudaError(f"{package} has no {prefix}*; reinstall it: {INSTALL}")


def find_toolchain() -> Toolchain:
    """NVRTC and ptxas from their wheels; :class:`CudaError` saying :data:`INSTALL` without them."""
    nvrtc, nvrtc_package = wheel_file(NVRTC_WHEEL, "libnvrtc.so.")
    ptxas, ptxas_package = wheel_file(PTXAS_WHEEL, "ptxas")
    return Toolchain(nvrtc, ptxas, nvrtc_package, ptxas_package)


@lru_cache(maxsize=None)
def load_nvrtc(path: Path) -> Any:
    """The NVRTC library at ``path``, with the return type of ``nvrtcGetErrorString`` declared."""
    library = ctypes.CDLL(str(path))
    library.nvrtcGetErrorString.restype = ctypes.c_char_p
    return library


def nvrtc_ptx(name: str, nvrtc: Path) -> bytes:
    """PTX of ``kernels/<name>.cu`` from NVRTC with :data:`NVRTC_OPTIONS`; :class:`CudaError` with its log.

    NVRTC leaves the thread that calls it in the "C" locale (ASCII text I/O for Python), so it runs in
    a thread of its own. NVVM numbers its ``// callseq N`` comments across all the compilations of the
    process; the numbers are dropped, so that the PTX depends on the source alone.
    """
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(_compile_ptx, name, nvrtc).result()


def _compile_ptx(name: str, nvrtc: Path) -> bytes:
    """:func:`nvrtc_ptx`'s work, in the calling thread."""
    library = load_nvrtc(nvrtc)
    source = KERNEL_DIR / f"{name}.cu"
    program = ctypes.c_void_p()

    def call(function: str, *args: Any) -> None:
        result = getattr(library, function)(*args)
        if result != 0:
            size = ctypes.c_size_t()
            library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            library.nvrtcGetProgramLog(program, log)
            raise CudaError(f"NVRTC failed on {source}: {library.nvrtcGetErrorString(result).decode()}\n"
                            f"{log.value.decode(errors='replace').strip()}")

    call("nvrtcCreateProgram", ctypes.byref(program), source.read_bytes(), source.name.encode(), 0, None, None)
    try:
        options = [option.encode() for option in (*NVRTC_OPTIONS, f"--include-path={KERNEL_DIR}")]
        call("nvrtcCompileProgram", program, len(options), (ctypes.c_char_p * len(options))(*options))
        size = ctypes.c_size_t()
        call("nvrtcGetPTXSize", program, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        call("nvrtcGetPTX", program, ptx)
        return CALL_NUMBER.sub(rb"\1", ptx.value)
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def ptxas_cubin(ptx: bytes, arch: str, ptxas: Path) -> bytes:
    """The cubin that ``ptxas -arch=<arch>`` assembles from ``ptx``; :class:`CudaError` with its output."""
    with tempfile.TemporaryDirectory() as work:
        source, cubin = Path(work) / "kernel.ptx", Path(work) / "kernel.cubin"
        source.write_bytes(ptx)
        result = subprocess.run([str(ptxas), f"-arch={arch}", "-o", str(cubin), str(source)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise CudaError(f"ptxas -arch={arch} failed:\n{result.stdout}{result.stderr}".strip())
        return cubin.read_bytes()


def build(toolchain: Toolchain, names: Sequence[str]) -> Dict[str, bytes]:
    """File name -> contents of the PTX and the cubins of each kernel in ``names``.

    NVRTC compiles the files one after the other; each file's ptxas runs start, in parallel, as soon
    as its PTX is ready.
    """
    images: Dict[str, bytes] = {}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        cubins = {}
        for name in names:
            ptx = images[f"{name}.{PTX_ARCH}.ptx"] = nvrtc_ptx(name, toolchain.nvrtc)
            for arch in CUBIN_ARCHS:
                cubins[f"{name}.{arch}.cubin"] = pool.submit(ptxas_cubin, ptx, arch, toolchain.ptxas)
        images.update({file: cubin.result() for file, cubin in cubins.items()})
    return images


def manifest(toolchain: Toolchain, images: Dict[str, bytes]) -> Dict[str, Any]:
    """The manifest of ``images`` (from :func:`build`) built from the current sources."""
    names = sorted({file.split(".")[0] for file in images})
    return {
        "compilers": toolchain.describe(),
        "kernels": {name: {"sources": source_hashes(name),
                           "binaries": {file: hashlib.sha256(images[file]).hexdigest()
                                        for file in sorted(images) if file.split(".")[0] == name}}
                    for name in names},
    }


def write(directory: Path, images: Dict[str, bytes], contents: Dict[str, Any]) -> None:
    """Replace the binaries and the manifest in ``directory`` by ``images`` and ``contents``."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in (*directory.glob("*.cubin"), *directory.glob("*.ptx")):
        stale.unlink()
    for file, data in images.items():
        (directory / file).write_bytes(data)
    (directory / MANIFEST).write_text(json.dumps(contents, indent=1, sort_keys=True) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Build every kernel with the pinned toolchain into ``kernels/prebuilt/`` (or ``--out``)."""
    parser = argparse.ArgumentParser(prog="python -m dig2dig.kernels.prebuilt", description=main.__doc__)
    parser.add_argument("--out", type=Path, default=PREBUILT_DIR, help="where to write (default: %(default)s)")
    args = parser.parse_args(argv)
    toolchain = find_toolchain()
    images = build(toolchain, kernel_names())
    write(args.out, images, manifest(toolchain, images))
    for file in sorted(images):
        print(f"{len(images[file]):8d}  {args.out / file}")
    print(f"{sum(map(len, images.values())):8d}  bytes in {len(images)} files")


if __name__ == "__main__":
    main()
