"""The TensorRT path without TensorRT: type-checked against the API, container format, build helpers.

TensorRT cannot be installed on our machines, so nothing here builds or runs an engine except the
last test, which needs TensorRT, pycuda and a GPU and is skipped otherwise. What is checked:

* mypy (strict about our own definitions) on the TensorRT modules against ``tensorrt-stubs``
  (TensorRT 10.13's Python API): every TensorRT attribute, call and argument type we use exists
  there. 8.x-only names are reached through ``getattr`` and version checks, so they are not. The
  same run checks that ``numpy_ops`` and ``CudaOps`` both implement the sampler's ``Ops`` protocol,
  and types the runtime's public API and commands (settings, options, api, cli, eval).
* the plan container: round trip, truncation, wrong magic, format and TensorRT version mismatch.
* the build helpers that need no TensorRT: shape parsing, the typed/untyped route, which ONNX
  tensors stay FP32, the CLI, and the calibration batches.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List

import numpy as np
import pytest

from dig2dig.runtime.schedule import ADM_LINEAR
from dig2dig.export.trt_build import (add_trt_parser, check_profiles, command_profiles, fp32_tensors, parse_batches,
                                      parse_dims, strongly_typed, tensorrt_version, trt_command)
from dig2dig.runtime.backends.base import ModelInfo
from dig2dig.runtime.backends.plan_file import (MAGIC, PlanHeader, Profile, check_device, check_tensorrt_version,
                                                pack, read_plan, unpack)
from dig2dig.runtime.errors import InputError, ModelError

REPO = Path(__file__).resolve().parents[1]
CHECKED = ("export/trt_build.py", "runtime/backends/trt.py", "calibration/int8.py", "runtime/backends/plan_file.py",
           # the loop's Ops protocol: sampler.py's default is the numpy_ops module, gpu.py passes a CudaOps
           "kernels/ops.py", "runtime/sampler.py", "runtime/gpu.py",
           # the runtime's public API and commands, and the CUDA plumbing they share
           "runtime/settings.py", "runtime/options.py", "runtime/api.py", "runtime/cli.py", "runtime/eval.py",
           "runtime/checksums.py", "runtime/progress.py", "kernels/device.py")
INFO = ModelInfo(in_channels=1, out_channels=1, learn_sigma=False, multiple=16, precision="fp32", schedule=ADM_LINEAR)

# tensorrt-stubs 10.13 is pybind11-stubgen output that mypy cannot read as installed: its tensorrt/
# folder has no py.typed, four plugin methods name a parameter ``in`` (a keyword) and add_scale_nd
# puts a parameter without default after defaulted ones. The test copies the .pyi files and repairs
# exactly these spots; no signature this project uses is touched. The remaining errors inside the
# stubs themselves (e.g. ``bool`` shadowed by tensorrt.bool) are silenced for those modules only.
STUB_REPAIRS = ((re.compile(r"([(,] *)in: "), r"\1in_: "),
                (re.compile(r"(power: Weights = None, channel_axis: int)\)"), r"\1 = ...)"))
# pycuda ships no type information (no stubs package exists): its objects are typed Any. A local stub
# would be our own guess at pycuda's API, checked against nothing, so pycuda is exempted instead; so are
# onnxruntime, scipy and scikit-image, which the runtime modules import where used.
MYPY_INI = """\
[mypy]
mypy_path = {stubs}
python_version = 3.10
disallow_untyped_defs = True
disallow_incomplete_defs = True
warn_unused_ignores = True
cache_dir = {cache}

[mypy-tensorrt.*,tensorrt_bindings.*]
ignore_errors = True

[mypy-pycuda.*]
ignore_missing_imports = True

[mypy-onnxruntime.*,scipy.*,skimage.*]
ignore_missing_imports = True
"""


def _stub_files() -> List[Path]:
    try:
        dist = importlib.metadata.distribution("tensorrt-stubs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("tensorrt-stubs is not installed (pip install --no-deps tensorrt-stubs)")
    files = [Path(str(dist.locate_file(f))) for f in dist.files or () if str(f).endswith(".pyi")]
    if not files:
        pytest.skip("tensorrt-stubs has no .pyi files")
    return files


def test_tensorrt_modules_type_check(tmp_path: Path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed")
    stubs = tmp_path / "stubs"
    for source in _stub_files():
        target = stubs / source.parent.name / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text()
        for pattern, replacement in STUB_REPAIRS:
            text = pattern.sub(replacement, text)
        target.write_text(text)
    # The repository folders are the dig2dig subpackages (setup.py's package_dir): rebuild that tree.
    package = tmp_path / "src" / "dig2dig"
    package.mkdir(parents=True)
    (package / "__init__.py").symlink_to(REPO / "dig2dig" / "__init__.py")
    for folder in ("export", "runtime", "kernels", "calibration", "models"):
        (package / folder).symlink_to(REPO / folder, target_is_directory=True)
    config = tmp_path / "mypy.ini"
    config.write_text(MYPY_INI.format(stubs=stubs, cache=tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config),
                             *(os.path.join("dig2dig", name) for name in CHECKED)],
                            cwd=package.parent, capture_output=True, text=True)
    assert result.returncode == 0 and "Success" in result.stdout, result.stdout + result.stderr


# --- plan container ---------------------------------------------------------------------------

def _header(version: str = "8.5.2.2") -> PlanHeader:
    return PlanHeader(tensorrt=version, profiles=(Profile((1, 256, 256), (1, 480, 640), (5, 768, 1024)),),
                      metadata=INFO.to_metadata(), precision="fp16", gpu_name="Xavier", compute_capability=(7, 2))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def test_container_round_trip(tmp_path: Path) -> None:
    engine = bytes(range(256)) * 10
    header, read_engine = read_plan(_write(tmp_path / "m.plan", pack(_header(), engine)))
    assert read_engine == engine
    assert header == _header()
    assert ModelInfo.from_metadata(header.metadata, "m.plan") == INFO


def test_truncated_engine_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.plan", pack(_header(), b"\x01" * 1000)[:-10])
    with pytest.raises(ModelError, match=r"m\.plan: truncated.*990 bytes.*1000"):
        read_plan(path)


def test_truncated_header_is_reported(tmp_path: Path) -> None:
    path = _write(tmp_path / "m.plan", pack(_header(), b"\x01" * 1000)[:40])
    with pytest.raises(ModelError, match=r"m\.plan: truncated"):
        read_plan(path)


@pytest.mark.parametrize("data", [b"", b"ftrt" + b"\x00" * 100, b"\x00" * 16])
def test_wrong_magic_is_reported(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ModelError, match=r"m\.plan: not a dig2dig TensorRT plan"):
        read_plan(_write(tmp_path / "m.plan", data))


def test_other_container_format_is_reported() -> None:
    data = bytearray(pack(_header(), b"engine"))
    data[len(MAGIC)] = 9
    with pytest.raises(ModelError, match="format 9"):
        unpack(bytes(data), "m.plan")


def test_corrupt_header_is_reported() -> None:
    data = pack(_header(), b"engine").replace(b'"tensorrt"', b'"tensorRT"')
    with pytest.raises(ModelError, match="corrupt plan header"):
        unpack(data, "m.plan")


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="plan file not found"):
        read_plan(str(tmp_path / "none.plan"))


def test_tensorrt_version_mismatch_names_file_and_versions() -> None:
    check_tensorrt_version(_header("8.5.2.2"), "m.plan", "8.5.2.2")
    with pytest.raises(ModelError, match=r"m\.plan: engine built with TensorRT 8\.5\.2\.2, this is TensorRT 10\.3"):
        check_tensorrt_version(_header("8.5.2.2"), "m.plan", "10.3.0.30")


def test_gpu_architecture_mismatch_is_reported() -> None:
    check_device(_header(), "m.plan", (7, 2))
    with pytest.raises(ModelError, match=r"Xavier \(sm_72\), this GPU is sm_87"):
        check_device(_header(), "m.plan", (8, 7))


def test_profile_bounds() -> None:
    profile = Profile((1, 256, 256), (1, 480, 640), (5, 768, 1024))
    assert profile.contains(1, 480, 640) and profile.contains(5, 768, 1024)
    assert not profile.contains(6, 480, 640) and not profile.contains(1, 800, 640) and not profile.contains(1, 240, 640)
    assert profile.describe() == "min 256x256,1, opt 480x640,1, max 768x1024,5"
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile((1, 512, 512), (1, 256, 256), (1, 1024, 1024))


# --- build helpers (no TensorRT needed) ----------------------------------------------------------

def test_parse_dims() -> None:
    assert parse_dims("480x640,2") == (2, 480, 640)
    assert parse_dims(" 480X640 ") == (1, 480, 640)
    for bad in ("480x640,0", "640", "480x640x3", "ax640,1"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_dims(bad)


def test_one_profile_per_batch_size() -> None:
    assert parse_batches("1,5") == (1, 5) and parse_batches(" 3") == (3,)
    for bad in ("1,1", "0,5", "1,", "a", "1;5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_batches(bad)
    low, opt, high = (1, 256, 256), (1, 480, 640), (5, 768, 1024)
    assert command_profiles(low, opt, high, None) == [Profile(low, opt, high)]
    step, dig = command_profiles(low, opt, high, (1, 5))
    assert step == Profile((1, 256, 256), (1, 480, 640), (1, 768, 1024))
    assert dig == Profile((5, 256, 256), (5, 480, 640), (5, 768, 1024))
    assert step.contains(1, 480, 640) and not step.contains(5, 480, 640) and dig.contains(5, 256, 256)


def test_tensorrt_version() -> None:
    assert tensorrt_version("8.5.2.2") == (8, 5)
    assert tensorrt_version("10.13.0.35") == (10, 13)


def test_build_route() -> None:
    # FP32 ONNX with the FP16 builder flag up to 10.11; the FP16 ONNX strongly typed from 10.0.
    assert not strongly_typed((8, 5), "fp32", True, False, "m.onnx")
    assert not strongly_typed((10, 11), "fp32", True, False, "m.onnx")
    assert not strongly_typed((8, 6), "fp16", True, False, "m.onnx")
    assert strongly_typed((10, 3), "fp16", True, False, "m.onnx")
    assert strongly_typed((11, 0), "fp16", True, False, "m.onnx")
    assert not strongly_typed((10, 12), "fp32", False, False, "m.onnx")  # an FP32 engine needs no flag
    with pytest.raises(ModelError, match=r"m\.onnx: TensorRT 10\.12 builds FP16 engines from an FP16 ONNX only"):
        strongly_typed((10, 12), "fp32", True, False, "m.onnx")
    with pytest.raises(ModelError, match="FP32 engine needs the FP32 ONNX"):
        strongly_typed((8, 5), "fp16", False, False, "m.onnx")
    assert not strongly_typed((8, 5), "fp32", True, True, "m.onnx")
    with pytest.raises(ModelError, match="INT8 calibration"):
        strongly_typed((10, 12), "fp32", True, True, "m.onnx")
    with pytest.raises(ModelError, match=r"m\.onnx: this INT8 \(QDQ\) ONNX .* is for onnxruntime"):
        strongly_typed((10, 3), "int8", True, False, "m.onnx")


def test_fp32_tensors_cover_norms_softmax_and_decomposed_norms() -> None:
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("InstanceNormalization", ["c", "s", "b"], ["inorm"]),
        helper.make_node("Softmax", ["inorm"], ["soft"]),
        # A decomposed norm: (x - mean) / sqrt(mean((x - mean)^2) + eps), then affine and a residual.
        helper.make_node("ReduceMean", ["soft"], ["mean"]),
        helper.make_node("Sub", ["soft", "mean"], ["centred"]),
        helper.make_node("Pow", ["centred", "two"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["var"]),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centred", "std"], ["normed"]),
        helper.make_node("Mul", ["normed", "gamma"], ["scaled"]),
        helper.make_node("Add", ["scaled", "c"], ["y"]),
        helper.make_node("Div", ["y", "two"], ["half"]),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    assert fp32_tensors(graph) == {"inorm", "soft", "mean", "centred", "squared", "var", "var_eps", "std", "normed"}


def test_fp32_tensors_of_the_exported_unet(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    onnx = pytest.importorskip("onnx")
    from dig2dig.export.unet import create_model

    model = create_model(image_size=64, num_channels=16, num_res_blocks=1, channel_mult="1,2",
                         attention_resolutions="32", in_channels=1, norm_groups=8).eval()
    path = str(tmp_path / "u.onnx")
    torch.onnx.export(model, (torch.randn(1, 1, 32, 32), torch.tensor([10.0])), path, dynamo=False,
                      opset_version=17, input_names=["x", "t"], output_names=["y"])
    nodes = onnx.load(path).graph.node
    expected = {node.output[0] for node in nodes if node.op_type in ("InstanceNormalization", "Softmax")}
    assert len(expected) > 4  # GroupNorms (exported as InstanceNormalization) and attention
    assert fp32_tensors(onnx.load(path).graph) == expected


def test_profiles_must_sit_on_the_model_multiple() -> None:
    check_profiles([Profile((1, 256, 256), (1, 480, 640), (5, 768, 1024))], INFO, "m.onnx")
    with pytest.raises(ModelError, match=r"m\.onnx: profile shape 250x256,1 .* multiples of 16"):
        check_profiles([Profile((1, 250, 256), (1, 480, 640), (5, 768, 1024))], INFO, "m.onnx")
    with pytest.raises(ModelError, match="at least one"):
        check_profiles([], INFO, "m.onnx")


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_trt_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["trt", "--onnx", "m.onnx", "-o", "m.plan", "--max", "512x512,2", "--workspace", "256"])
    assert (args.onnx, args.output, args.min, args.opt, args.max) == ("m.onnx", "m.plan", (1, 256, 256),
                                                                      (1, 480, 640), (2, 512, 512))
    assert args.workspace == 256 and args.timing_cache is None and args.batches is None and args.func is trt_command
    assert parser.parse_args(["trt", "--onnx", "m.onnx", "-o", "m.plan", "--batches", "1,5"]).batches == (1, 5)
    with pytest.raises(ModelError, match="--int8 needs --calib-dir"):
        trt_command(parser.parse_args(["trt", "--onnx", "m.onnx", "-o", "m.plan", "--int8"]))
    with pytest.raises(ModelError, match="min <= opt <= max"):
        trt_command(parser.parse_args(["trt", "--onnx", "m.onnx", "-o", "m.plan", "--min", "512x512,1"]))


def test_runtime_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    from dig2dig.runtime.backends.trt import TrtRunner, check_tensorrt

    try:
        check_tensorrt()
    except ModelError:
        with pytest.raises(ModelError, match="TensorRT's Python package"):
            TrtRunner(str(tmp_path / "m.plan"))
    else:
        pytest.skip("TensorRT is installed here")


# --- calibration data --------------------------------------------------------------------------

def test_noised_calibration_batches(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    from dig2dig.calibration.int8 import calibration_images, noised_batches
    from dig2dig.runtime.schedule import alphas_cumprod

    with pytest.raises(InputError, match="no calibration images"):
        calibration_images(str(tmp_path))
    rng = np.random.default_rng(1)
    cv2.imwrite(str(tmp_path / "a.png"), rng.integers(0, 256, (40, 50), dtype=np.uint8))   # upscaled
    cv2.imwrite(str(tmp_path / "b.png"), rng.integers(0, 256, (96, 80, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    paths = calibration_images(str(tmp_path))
    assert [Path(p).name for p in paths] == ["a.png", "b.png"]
    batches = list(noised_batches(paths, (3, 3, 64, 48), ADM_LINEAR, count=4, seed=7))
    assert len(batches) == 4
    for x, t in batches:
        assert x.shape == (3, 3, 64, 48) and x.dtype == np.float32 and t.shape == (3,) and t.dtype == np.float32
        assert np.all((t >= 0) & (t < 1000) & (t == np.round(t))) and np.all(np.isfinite(x))
    # Without noise (abar ~ 1) x_t is the crop: luminance in [-1, 1], repeated over the channels.
    quiet = dict(ADM_LINEAR, beta_start=1e-9, beta_end=1e-9)
    x, _ = next(noised_batches(paths, (3, 3, 64, 48), quiet, count=1))
    assert np.abs(x[:, 1:] - x[:, :1]).max() < 1e-2 and np.abs(x).max() <= 1.01 and x.std() > 0.1
    again = list(noised_batches(paths, (3, 3, 64, 48), ADM_LINEAR, count=4, seed=7))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(batches, again))
    abar = alphas_cumprod(ADM_LINEAR)
    assert abar[0] == pytest.approx(1 - 1e-4) and 0 < abar[-1] < 1e-4


# --- on a GPU with TensorRT (never run on our machines) ------------------------------------------

@pytest.mark.gpu
@pytest.mark.trt
def test_engine_matches_onnxruntime(tmp_path: Path) -> None:
    from dig2dig.runtime.backends.trt import TrtRunner, check_tensorrt

    try:
        check_tensorrt()
    except ModelError:
        pytest.skip("TensorRT is not installed")
    pycuda_array = pytest.importorskip("pycuda.gpuarray")
    pytest.importorskip("torch")
    from dig2dig.export.onnx_export import export_onnx
    from dig2dig.export.trt_build import build_engine
    from dig2dig.export.unet import create_model
    from dig2dig.runtime.backends.ort import OrtRunner

    config = {"image_size": 64, "num_channels": 16, "num_res_blocks": 1, "channel_mult": "1,2",
              "attention_resolutions": "32", "in_channels": 1, "norm_groups": 8}
    onnx_path, plan_path = str(tmp_path / "m.onnx"), str(tmp_path / "m.plan")
    export_onnx(create_model(**config), config, onnx_path, verify=False)
    build_engine(onnx_path, plan_path, [Profile((1, 32, 32), (1, 64, 64), (3, 96, 128))], 256,
                 timing_cache=str(tmp_path / "timing.cache"))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 1, 64, 96)).astype(np.float32)
    t = np.array([999.0, 500.0, 10.0], dtype=np.float32)
    expected = OrtRunner(onnx_path).denoise(x, t)
    with TrtRunner(plan_path) as runner:
        assert isinstance(runner, TrtRunner)
        got = runner.denoise(x, t)
        assert np.abs(got - expected).max() <= 2e-2 * np.abs(expected).max()
        y = pycuda_array.empty(expected.shape, np.float32)
        runner.denoise_device(pycuda_array.to_gpu(x), pycuda_array.to_gpu(t), y)
        runner.stream.synchronize()
        np.testing.assert_allclose(y.get(), got, rtol=0, atol=1e-5)
        with pytest.raises(InputError, match="outside the engine's profile"):
            runner.denoise(np.zeros((1, 1, 128, 128), np.float32), t[:1])
    # One profile and context per batch size: each keeps its shape, alternating calls agree.
    build_engine(onnx_path, plan_path, command_profiles((1, 32, 32), (1, 64, 64), (1, 96, 128), (1, 3)), 256,
                 timing_cache=str(tmp_path / "timing.cache"))
    with TrtRunner(plan_path) as runner:
        for _ in range(2):
            np.testing.assert_allclose(runner.denoise(x, t), got, rtol=0, atol=2e-2 * np.abs(expected).max())
            np.testing.assert_allclose(runner.denoise(x[1:2], t[1:2]), got[1:2], rtol=0,
                                       atol=2e-2 * np.abs(expected).max())
