"""The INT8 model: its calibration data, ``dig2dig export int8``, and fusing with the result."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import PAIRS, pair
from dig2dig.calibration.int8 import calibration_images, noised_batches, spread_timesteps
from dig2dig.runtime import api
from dig2dig.runtime.errors import InputError, ModelError
from dig2dig.runtime.schedule import ADM_LINEAR
from dig2dig.runtime.settings import resolve


def test_calibration_timesteps_cover_the_schedule_once_per_stratum() -> None:
    paths = calibration_images(str(PAIRS))  # searched recursively
    assert len(paths) == 20 and all(p.endswith(".png") for p in paths)
    batches = list(noised_batches(paths, (4, 1, 16, 16), ADM_LINEAR, count=25, seed=3))
    t = np.concatenate([b[1] for b in batches]).astype(np.int64)
    assert len(t) == 100 and t.min() >= 0 and t.max() < 1000
    # 100 steps over 1000 timesteps: exactly one in each stretch of 10, in shuffled order.
    assert np.array_equal(np.sort(t // 10), np.arange(100))
    assert not np.array_equal(t, np.sort(t))
    rng = np.random.default_rng(0)
    assert np.array_equal(np.sort(spread_timesteps(1000, 1000, rng)), np.arange(1000))
    assert len(set(spread_timesteps(3, 1000, rng) // 334)) == 3


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime.quantization")
    from dig2dig.calibration.ort_int8 import quantize_int8

    out = tmp_path_factory.mktemp("int8") / "model_int8.onnx"
    report = quantize_int8(api.default_model(), out, PAIRS / "ivf", batches=4, crop=64)
    assert report.quantized == 52 and len(report.kept) == 2 and report.crop == 64
    # Close to FP32 at every noise level, even from four calibration crops.
    assert all(psnr > 30 for _, psnr in report.x0_psnr), report.summary()
    return out


def test_int8_model_loads_through_the_normal_runner_and_fuses(int8_model: Path) -> None:
    from dig2dig.runtime.backends.ort import OrtRunner

    with OrtRunner(str(int8_model)) as runner:
        assert runner.info.precision == "int8" and runner.info.in_channels == 1
        a, b = pair("ivf", "10")
        settings = resolve("ivf", steps=4)
        int8 = api.fuse(a, b, task="ivf", settings=settings, runner=runner)
    fp32 = api.fuse(a, b, task="ivf", settings=settings)
    assert int8.image.shape == fp32.image.shape == (96, 128)
    difference = np.abs(int8.luma - fp32.luma)
    assert np.all(np.isfinite(int8.luma)) and difference.mean() < 0.005, difference.mean()


def test_int8_export_refuses_bad_input_before_any_work(tmp_path: Path, int8_model: Path) -> None:
    from dig2dig.calibration.ort_int8 import quantize_int8

    with pytest.raises(InputError, match="calibration image folder not found"):
        quantize_int8(api.default_model(), tmp_path / "m.onnx", tmp_path / "missing")
    with pytest.raises(ModelError, match="starts from the FP32 export, this one is int8"):
        quantize_int8(int8_model, tmp_path / "m.onnx", PAIRS)
    with pytest.raises(ModelError, match="model file not found"):
        quantize_int8(tmp_path / "none.onnx", tmp_path / "m.onnx", PAIRS)
    assert not (tmp_path / "m.onnx").exists()


def test_bundled_int8_prior_is_chosen_by_precision() -> None:
    path = api.default_model("int8")
    assert path.name == "model_int8.onnx" and api.choose_model(None, "int8") == path
    assert api.choose_model(None) is None and api.choose_model("m.onnx") == "m.onnx"
    a, b = pair("mif", "11")
    settings = resolve("mif", steps=4)
    int8 = api.fuse(a, b, task="mif", settings=settings, precision="int8")
    fp32 = api.fuse(a, b, task="mif", settings=settings)
    assert np.abs(int8.luma - fp32.luma).mean() < 0.005
    with pytest.raises(InputError, match="--precision int8 picks the bundled prior's int8 model"):
        api.fuse(a, b, model="mine.onnx", precision="int8")
    with pytest.raises(InputError, match="unknown precision 'fp16'"):
        api.default_model("fp16")


def test_cli_precision_runs_the_bundled_int8_prior(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from dig2dig.runtime.cli import main

    a, b = pair("ivf", "10")
    out = tmp_path / "fused.png"
    assert main(["fuse", str(a), str(b), "-o", str(out), "--steps", "2", "--precision", "int8", "-q"]) == 0
    assert out.is_file()
    assert main(["fuse", str(a), str(b), "-o", str(tmp_path / "x.png"), "--precision", "int8",
                 "--model", "mine.onnx"]) == 2
    assert "--precision int8 picks the bundled prior's int8 model" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
