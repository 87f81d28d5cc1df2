"""The reverse loop: static mode is DDFM's own sampler; DIG mode does what Dig2DIG describes."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import ADM, pair
from dig2dig.runtime import api
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.errors import NumericalError
from dig2dig.kernels.resample import enlarge, shrink
from dig2dig.runtime.sampler import Settings, Trace, dig_scale_for, reduced_shape, sample, scaled_window
from dig2dig.runtime.settings import resolve


@pytest.fixture(scope="module")
def small_reference_onnx(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The reference's small random ADM UNet (3 channels, learned sigma) exported to ONNX."""
    pytest.importorskip("torch")
    from dig2dig.export.checkpoint import load_model
    from dig2dig.export.onnx_export import export_onnx

    config = json.loads((ADM / "small_unet_config.json").read_text())["create_model_kwargs"]
    model = load_model(ADM / "small_unet_weights.npz", config)
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    export_onnx(model, config, path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("steps", [10, 25])
def test_static_mode_reproduces_ddfm_sampler(small_reference_onnx: str, sampler_ref: dict, steps: int) -> None:
    # DDFM's EM takes I = visible and V = infrared; our sources are (A, B) = (infrared, visible).
    sources = np.stack([sampler_ref["V"][0, 0], sampler_ref["I"][0, 0]]).astype(np.float32)
    runner = OrtRunner(small_reference_onnx)
    ddfm = Settings(steps=steps, guidance="static", em_window=1, em_power=1.0)
    out = sample(runner, sources, ddfm, sampler_ref["x_start"][0])
    expected = sampler_ref[f"r{steps}_final_sample"][0]
    assert out.shape == expected.shape
    assert np.abs(out - expected).max() <= 1e-3


@pytest.mark.parametrize("task,name", [("ivf", "10"), ("mif", "12"), ("mef", "AirBellowsGap"), ("mff", "lytro_01")])
def test_dig_mode_on_real_pairs(task: str, name: str, tmp_path: Path) -> None:
    a, b = crop_pair(*pair(task, name), tmp_path, 80, 112)
    runner = api.open_runner()
    settings = dict(steps=4, dig_every=1, seed=3)
    dig = api.fuse(a, b, task=task, runner=runner, settings=Settings(guidance="dig", **settings))
    static = api.fuse(a, b, task=task, runner=runner, settings=Settings(guidance="static", **settings))

    assert dig.image.shape[:2] == (80, 112) and dig.image.dtype == np.uint8
    assert len(dig.trace.refreshes) == 3  # steps 0, 1, 2 (no next level after the last step)
    for refresh in dig.trace.refreshes:
        weights = refresh["weights"]
        np.testing.assert_allclose(weights.sum(axis=0), 1.0, atol=1e-5)
        assert weights.std() > 0.02, "DIG weights should vary over the image"
    assert static.trace.refreshes == []
    assert np.abs(dig.luma - static.luma).mean() > 1e-3, "DIG and static guidance should differ"
    coloured = [s for s in dig.sources if s.chroma is not None]
    if coloured:
        assert dig.image.ndim == 3
        # Chroma is the source's wherever the fused RGB did not clip at 0 or 255.
        unclipped = ((dig.image > 0) & (dig.image < 255)).all(axis=2)
        assert unclipped.mean() > 0.5
        error = np.abs(rgb_to_chroma(dig.image) - merged_chroma(dig.sources))[:, unclipped]
        assert error.max() < 3 / 255
    else:
        assert dig.image.ndim == 2


@pytest.mark.parametrize("shape", [(37, 53), (6, 9)])
def test_padding_keeps_every_pixel(shape: tuple, tmp_path: Path) -> None:
    """Sizes that are not multiples of the model's downsampling are reflect-padded and cropped back;
    images smaller than the DIG and E-step windows still fuse (the windows shrink to the image)."""
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 255).astype(np.uint8)
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), img)
    cv2.imwrite(str(tmp_path / "b.png"), 255 - img)
    result = api.fuse(tmp_path / "a.png", tmp_path / "b.png",
                      settings=Settings(steps=2, em_window=41, em_window_side=0))
    assert result.image.shape == shape
    multiple = api.open_runner().info.multiple
    assert result.raw.shape[1] % multiple == 0 and result.raw.shape[2] % multiple == 0


def test_trace_records_stages() -> None:
    runner = api.open_runner()
    rng = np.random.default_rng(1)
    sources = rng.uniform(-1, 1, (2, 32, 32)).astype(np.float32)
    trace = Trace()
    sample(runner, sources, Settings(steps=3, dig_every=2), rng.standard_normal((1, 32, 32)).astype(np.float32),
           trace=trace)
    assert set(trace.seconds) == {"backend", "dig", "guidance"}
    assert [r["step"] for r in trace.refreshes] == [0]


def test_e_step_window_scales_with_the_long_side() -> None:
    """The E-step window is given at an ``em_window_side``-px long side: 5 px at 256 is 13 px at 640
    (docs/QUALITY.md, Full resolution); 1 stays DDFM's per-pixel E-step; 0 keeps pixels. The loop
    fuses with the scaled E-step window (equal to that window given in pixels) and the DIG window as
    given."""
    assert [scaled_window(41, side, 256) for side in (256, 255, 640, 96, 1024)] == [41, 41, 103, 15, 165]
    assert scaled_window(5, 640, 256) == 13 and scaled_window(5, 96, 256) == 1
    assert scaled_window(1, 1024, 256) == 1 and scaled_window(41, 640, 0) == 41
    runner = api.open_runner()
    rng = np.random.default_rng(4)
    sources = rng.uniform(-1, 1, (2, 48, 96)).astype(np.float32)
    x_T = rng.standard_normal((1, 48, 96)).astype(np.float32)

    def fused(**windows: int) -> np.ndarray:
        return sample(runner, sources, Settings(steps=3, dig_every=1, **windows), x_T)

    scaled = fused(dig_window=9, em_window=3, em_window_side=48)  # x 2: 7 px
    np.testing.assert_array_equal(scaled, fused(dig_window=9, em_window=7, em_window_side=0))
    assert np.abs(scaled - fused(dig_window=9, em_window=3, em_window_side=0)).max() > 1e-3


class _PoisonedRunner:
    """The shipped prior, except that its output holds a NaN from the ``bad_step``-th call on."""

    def __init__(self, bad_step: int) -> None:
        self.runner, self.bad_step, self.calls = api.open_runner(), bad_step, 0
        self.info = self.runner.info

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        y = self.runner.denoise(x, t)
        self.calls += 1
        if self.calls > self.bad_step:
            y[0, 0, 0, 0] = np.nan
        return y


def test_nonfinite_model_output_names_the_first_bad_timestep() -> None:
    rng = np.random.default_rng(2)
    sources = rng.uniform(-1, 1, (2, 16, 16)).astype(np.float32)
    with pytest.raises(NumericalError, match="at timestep 500"):
        sample(_PoisonedRunner(bad_step=2), sources, Settings(steps=5), np.zeros((1, 16, 16), np.float32))


def crop_pair(a: Path, b: Path, folder: Path, height: int, width: int):  # type: ignore[no-untyped-def]
    """Centre crops of a real pair, written as new PNGs (keeps the test fast on 2 cores)."""
    import cv2

    out = []
    for src, name in ((a, "a.png"), (b, "b.png")):
        img = cv2.imread(str(src), cv2.IMREAD_UNCHANGED)
        y, x = (img.shape[0] - height) // 2, (img.shape[1] - width) // 2
        cv2.imwrite(str(folder / name), img[y:y + height, x:x + width])
        out.append(folder / name)
    return out


def rgb_to_chroma(image: np.ndarray) -> np.ndarray:
    import cv2

    ycrcb = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2YCrCb)
    return np.stack([ycrcb[..., 2], ycrcb[..., 1]])


def merged_chroma(sources):  # type: ignore[no-untyped-def]
    from dig2dig.runtime import io

    return io.merge_chroma(sources)


class RecordingRunner(Runner):
    """The bundled prior, recording the shape and timesteps of every batch it is given."""

    def __init__(self) -> None:
        self.runner = api.open_runner()
        self.info = self.runner.info
        self.calls: list = []

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.calls.append((x.shape, [int(v) for v in t]))
        return self.runner.denoise(x, t)


@pytest.mark.parametrize("scale", [2, 4])
def test_reduced_resolution_dig_on_a_real_pair(scale: int) -> None:
    """With ``dig_scale`` the refresh denoises the sources at 1/scale of the size (padded to the model's
    multiple) in a call of their own; x_t stays full size; the weights come back at full size, sum to 1, and
    at the first refresh, where the estimates are smooth, follow the full-resolution weights."""
    a, b = pair("ivf", "22")  # 128 x 192
    base = resolve("ivf", dig_window=21, steps=10, dig_scale=1)
    full = api.fuse(a, b, task="ivf", settings=base)
    runner = RecordingRunner()
    reduced = api.fuse(a, b, task="ivf", runner=runner, settings=replace(base, dig_scale=scale))
    multiple = runner.info.multiple
    small = tuple(-(-n // scale // multiple) * multiple for n in (128, 192))
    assert [shape for shape, _ in runner.calls if shape[0] == 4] == [(4, 1) + small] * 5
    assert [shape for shape, _ in runner.calls if shape[0] == 1] == [(1, 1, 128, 192)] * 10
    assert len(runner.calls) == 15  # every step's x_t, and the sources at the five refreshes
    for got, want in zip(reduced.trace.refreshes, full.trace.refreshes):
        assert got["weights"].shape == want["weights"].shape == (2, 128, 192)
        np.testing.assert_allclose(got["weights"].sum(axis=0), 1.0, atol=1e-5)
    first = [refreshes[0]["weights"][0].ravel() for refreshes in (reduced.trace.refreshes, full.trace.refreshes)]
    assert np.corrcoef(*first)[0, 1] > 0.9
    assert np.abs(reduced.luma - full.luma).mean() < 0.05


@pytest.mark.parametrize("size, scale, used", [((480, 640), 2, 2), ((480, 640), 8, 8), ((40, 24), 8, 4),
                                               ((16, 64), 4, 2), ((8, 8), 2, 1), ((24, 40), 1, 1)])
def test_dig_scale_halves_until_it_suits_the_padded_size(size: tuple, scale: int, used: int) -> None:
    """The reduction must divide the padded size and leave a reduced image that padding can reflect; a
    small image runs DIG less reduced (or at full size) instead of failing."""
    assert dig_scale_for(size, scale, 8) == used
    sources = np.zeros((2,) + size, np.float32)
    runner = RecordingRunner()
    sample(runner, sources, Settings(steps=2, dig_scale=scale), np.zeros((1,) + size, np.float32))
    shapes = [shape for shape, _ in runner.calls]
    assert shapes == ([(1, 1) + size, (4, 1) + reduced_shape(size, used, 8)] if used > 1 else [(5, 1) + size]) + [
        (1, 1) + size]


def test_reduced_resolution_at_factor_1_is_the_full_resolution_path() -> None:
    """Shrinking and enlarging by 1 give back their input bit for bit, so a factor of 1 is the
    full-resolution DIG (one batch with x_t), not an approximation of it."""
    import cv2

    sources = np.stack([cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
                        for path in pair("ivf", "22")])
    assert np.array_equal(shrink(sources, 1, sources.shape[1:]), sources)
    assert np.array_equal(enlarge(sources, 1, sources.shape[1:]), sources)
    assert reduced_shape(sources.shape[1:], 1, 8) == sources.shape[1:]
