"""The kernels shipped in kernels/prebuilt/: they match the sources, rebuild to the same bytes, are built
for the architectures they claim, and CudaKernels loads the right one (no GPU needed).

The rebuild needs the toolchain of the test extra (CUDA 11.8's NVRTC and ptxas); it is skipped without
it, or when another version of it is installed than the one that built the shipped files.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from dig2dig.kernels import cuda, prebuilt
from test_kernels_compile import cubin_arch, fake_kernels, module_kernels, nvrtc_build, nvrtc_toolchain

MANIFEST = prebuilt.read_manifest()
SHIPPED = {file: digest for entry in MANIFEST["kernels"].values() for file, digest in entry["binaries"].items()}
MODULES = sorted({module for module, _ in cuda.KERNELS.values()})


def shipped(file: str) -> bytes:
    return (prebuilt.PREBUILT_DIR / file).read_bytes()


def test_manifest_matches_the_sources():
    """Every kernels/*.cu has an entry whose hashes of the .cu and its headers are those of the files now:
    an edited kernel fails here until ``python -m dig2dig.kernels.prebuilt`` rebuilds the binaries."""
    assert sorted(MANIFEST["kernels"]) == prebuilt.kernel_names() == MODULES
    stale = [name for name in MODULES if MANIFEST["kernels"][name]["sources"] != prebuilt.source_hashes(name)]
    assert not stale, f"rebuild the shipped kernels: python -m dig2dig.kernels.prebuilt ({', '.join(stale)} changed)"
    headers = {file for name in MODULES for file in MANIFEST["kernels"][name]["sources"] if file.endswith(".cuh")}
    assert headers == {path.name for path in prebuilt.KERNEL_DIR.glob("*.cuh")}


def test_shipped_files_are_the_manifest_ones():
    """The folder holds exactly the manifest's binaries, each with its recorded SHA-256: per kernel, a cubin
    for each shipped architecture and the compute_72 PTX."""
    for name in MODULES:
        assert sorted(MANIFEST["kernels"][name]["binaries"]) == sorted(
            [f"{name}.{prebuilt.PTX_ARCH}.ptx"] + [f"{name}.{arch}.cubin" for arch in prebuilt.CUBIN_ARCHS])
    on_disk = {path.name for path in prebuilt.PREBUILT_DIR.iterdir()} - {prebuilt.MANIFEST, ".gitignore"}
    assert on_disk == set(SHIPPED)
    wrong = [file for file, digest in SHIPPED.items() if hashlib.sha256(shipped(file)).hexdigest() != digest]
    assert not wrong


def test_shipped_binaries_are_for_their_architectures():
    """Each cubin's ELF header names its architecture, each PTX targets sm_72; every kernel is in each."""
    for name in MODULES:
        ptx = shipped(f"{name}.{prebuilt.PTX_ARCH}.ptx").decode()
        assert "\n.target sm_72\n" in ptx
        for arch in prebuilt.CUBIN_ARCHS:
            cubin = shipped(f"{name}.{arch}.cubin")
            assert cubin_arch(cubin) == int(arch[3:]), (name, arch)
            for kernel in module_kernels(name):
                assert f".entry {kernel}(" in ptx and kernel.encode() + b"\0" in cubin, (name, arch, kernel)


def versions(compilers: Dict[str, Dict[str, Any]]) -> Dict[str, Tuple[str, str]]:
    """Compiler -> (wheel, version) of a manifest's ``compilers``."""
    return {tool: (entry["package"], entry["version"]) for tool, entry in compilers.items()}


def test_rebuild_gives_the_shipped_bytes():
    """The sources, rebuilt with the recorded toolchain and options, give byte-identical binaries."""
    found, recorded = nvrtc_toolchain().describe(), MANIFEST["compilers"]
    if versions(found) != versions(recorded):
        pytest.skip(f"the shipped kernels were built by {versions(recorded)}; this machine has {versions(found)}")
    assert found == recorded
    rebuilt = {file: hashlib.sha256(data).hexdigest() for file, data in nvrtc_build().items()}
    assert rebuilt == SHIPPED


def loads(monkeypatch: pytest.MonkeyPatch, capability: Tuple[int, int]) -> List[Tuple[str, object]]:
    """What CudaKernels on a stand-in device of ``capability`` loads for each kernel module, in MODULES order."""
    ops = fake_kernels(monkeypatch, [], capability)
    for module in MODULES:
        ops.function(module_kernels(module)[0])
    ops.close()
    return ops.driver.loaded


@pytest.mark.parametrize("capability, suffix", [((9, 0), "sm_90.cubin"), ((8, 7), "sm_87.cubin"),
                                                ((7, 2), "sm_72.cubin"), ((10, 0), "compute_72.ptx"),
                                                ((8, 9), "compute_72.ptx")])
def test_the_shipped_build_of_the_device_loads(monkeypatch: pytest.MonkeyPatch, capability: Tuple[int, int],
                                               suffix: str):
    """The cubin of the device's architecture, else the PTX (NUL-terminated for the driver's JIT); no compiler."""
    monkeypatch.delenv(cuda.COMPILE_ENV, raising=False)
    terminator = b"\0" if suffix.endswith(".ptx") else b""
    assert loads(monkeypatch, capability) == [("buffer", shipped(f"{m}.{suffix}") + terminator) for m in MODULES]


def test_older_gpus_and_the_environment_variable_compile(monkeypatch: pytest.MonkeyPatch):
    """GPUs older than the PTX (sm_70) compile from source; so does every device with DIG2DIG_COMPILE_KERNELS=1."""
    monkeypatch.delenv(cuda.COMPILE_ENV, raising=False)
    assert loads(monkeypatch, (7, 0)) == [("file", f"{m}.sm_70.cubin") for m in MODULES]
    monkeypatch.setenv(cuda.COMPILE_ENV, "1")
    assert loads(monkeypatch, (9, 0)) == [("file", f"{m}.sm_90.cubin") for m in MODULES]


def test_an_edited_kernel_compiles_from_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A kernel whose source no longer matches the manifest compiles; the others still load the shipped build."""
    monkeypatch.delenv(cuda.COMPILE_ENV, raising=False)
    copy = tmp_path / "prebuilt"
    shutil.copytree(prebuilt.PREBUILT_DIR, copy)
    contents: Dict[str, Any] = json.loads((copy / prebuilt.MANIFEST).read_text())
    contents["kernels"]["rng"]["sources"]["rng.cu"] = "0" * 64
    (copy / prebuilt.MANIFEST).write_text(json.dumps(contents))
    monkeypatch.setattr(prebuilt, "PREBUILT_DIR", copy)
    assert loads(monkeypatch, (8, 7)) == [("file", "rng.sm_87.cubin") if m == "rng" else
                                          ("buffer", shipped(f"{m}.sm_87.cubin")) for m in MODULES]
