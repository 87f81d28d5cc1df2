"""Fusion metrics vs the CDDFuse Evaluator's values (tests/data/reference/metrics), and degenerate inputs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from conftest import METRICS  # noqa: E402
from dig2dig.runtime import metrics  # noqa: E402
from dig2dig.runtime.errors import InputError  # noqa: E402

REF_JSON = METRICS / "metrics_reference.json"
TOLERANCE = {"metrics_float64": (np.float64, 1e-6), "metrics_float32": (np.float32, 1e-4)}


def _cases():
    ref = json.loads(REF_JSON.read_text())
    return [pytest.param(res, method, id=f"{res['pair']}-{method}")
            for res in ref["results"] for method in res["fused"]]


@pytest.fixture(scope="module")
def images():
    cache = {}

    def read(name):
        if name not in cache:
            cache[name] = metrics.read_gray(METRICS / name)
        return cache[name]
    return read


@pytest.mark.parametrize("result, method", _cases())
@pytest.mark.parametrize("key", sorted(TOLERANCE))
def test_matches_reference(images, result, method, key):
    dtype, rtol = TOLERANCE[key]
    fused = result["fused"][method]
    f, a, b = (images(name).astype(dtype) for name in (fused["png"], result["ir_png"], result["vi_png"]))
    values = metrics.compute_all(f, a, b)
    assert tuple(values) == metrics.METRIC_NAMES
    expected = fused[key]
    assert set(expected) == set(metrics.METRIC_NAMES)
    for name in metrics.METRIC_NAMES:
        assert values[name] == pytest.approx(expected[name], rel=rtol), name


def test_read_gray_convention(images):
    img = images("TNO_20_ir.png")
    assert img.dtype == np.float32 and img.shape == (270, 360)
    assert np.array_equal(img, np.round(img)) and 0 <= img.min() and img.max() <= 255


def test_read_gray_errors(tmp_path):
    with pytest.raises(InputError, match="missing.png"):
        metrics.read_gray(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(InputError, match="bad.png"):
        metrics.read_gray(bad)


def test_read_gray_colour_png(tmp_path):
    cv2 = pytest.importorskip("cv2")
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[..., 2] = 255  # pure red: grey = round(0.299 * 255) = 76
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), bgr)
    assert np.all(metrics.read_gray(path) == 76)


def _random(seed, shape=(48, 56)):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.float64)


def _all_or_error(f, a, b):
    out = {}
    for name in metrics.METRIC_NAMES:
        try:
            out[name] = metrics.SINGLE[name](f) if name in metrics.SINGLE else metrics.TRIPLE[name](f, a, b)
        except ValueError:
            out[name] = None
    return out


DEGENERATE = {
    "constant fused": (np.full((48, 56), 100.0), _random(1), _random(2)),
    "constant sources": (_random(1), np.full((48, 56), 100.0), np.full((48, 56), 100.0)),
    "identical sources": (_random(3), _random(1), _random(1)),
    "fused equals A": (_random(1), _random(1), _random(2)),
    "all equal": (_random(1), _random(1), _random(1)),
    "all zero": (np.zeros((48, 56)), np.zeros((48, 56)), np.zeros((48, 56))),
}
RAISES = {"all equal": {"PSNR"}, "all zero": {"PSNR", "Qabf"}}


@pytest.mark.parametrize("case", sorted(DEGENERATE))
def test_degenerate_inputs_finite_or_value_error(case):
    with np.errstate(divide="raise", invalid="raise", over="raise", under="ignore"):
        values = _all_or_error(*DEGENERATE[case])
    assert {name for name, v in values.items() if v is None} == RAISES.get(case, set())
    assert all(math.isfinite(v) for v in values.values() if v is not None)


def test_documented_degenerate_values():
    a, b, flat = _random(1), _random(2), np.full((48, 56), 100.0)
    assert metrics.cc(flat, a, b) == 0.0
    assert metrics.en(flat) == 0.0 and metrics.sd(flat) == 0.0
    assert metrics.viff(a, flat, flat) == 2.0
    assert metrics.scd(a, a, b) == pytest.approx(np.corrcoef(a.ravel(), (a - b).ravel())[0, 1])


def test_mi_general_values_match_grey_levels():
    a, b, f = _random(1), _random(2), _random(3)
    assert metrics.mi(f / 7.0, a + 0.5, b) == pytest.approx(metrics.mi(f, a, b), rel=1e-12)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4, 3)), "2-D"),
    (np.full((48, 56), np.nan), "NaN"),
    (np.zeros((40, 40)), "shape"),
])
def test_bad_input_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        metrics.compute_all(bad, _random(1), _random(2))


def test_too_small_for_viff():
    with pytest.raises(ValueError, match="VIFF"):
        metrics.viff(_random(1, (40, 40)), _random(2, (40, 40)), _random(3, (40, 40)))
    assert math.isfinite(metrics.viff(*(_random(s, (41, 41)) for s in range(3))))


def test_en_range():
    with pytest.raises(ValueError, match="0..255"):
        metrics.en(np.full((8, 8), 300.0))


def test_format_table():
    table = metrics.format_table({"EN": 7.0, "PSNR": 15.84086})
    assert table.splitlines() == [f"EN    {7.0:12.4f}", f"PSNR  {15.84086:12.4f}"]
