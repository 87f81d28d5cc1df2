"""The model on overlapping tiles (runtime/tiling.py): the blend is a partition of unity, one tile is the
untiled path bit for bit, and a tiled fusion has no seams at the tile borders."""
from __future__ import annotations

from typing import List, Tuple

import cv2
import numpy as np
import pytest

from conftest import pair
from dig2dig import Fuser
from dig2dig.runtime import api
from dig2dig.runtime.backends.base import ModelInfo, Runner
from dig2dig.runtime.settings import Limits, resolve
from dig2dig.runtime.tiling import TiledRunner, ramp, tile_origins

INFO = ModelInfo(in_channels=1, out_channels=1, learn_sigma=False, multiple=8, precision="fp32", schedule={})


class Recording(Runner):
    """A model that returns ``f(x)`` and records the shapes it was called on."""

    def __init__(self, f=lambda x: x.copy()) -> None:
        self.info, self.f, self.shapes = INFO, f, []

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.shapes.append(x.shape)
        return self.f(x).astype(np.float32)


@pytest.mark.parametrize("length,tile,overlap", [(64, 64, 16), (200, 64, 16), (1000, 256, 64), (96, 40, 0)])
def test_tiles_cover_the_axis_with_the_overlap_and_the_pooling_grid(length, tile, overlap):
    tile = min(tile, length) // 8 * 8
    origins = tile_origins(length, tile, overlap, 8)
    assert origins[0] == 0 and origins[-1] + tile == length
    assert all(o % 8 == 0 for o in origins)
    assert all(b - a <= tile - overlap and b > a for a, b in zip(origins, origins[1:]))


def test_ramps_are_positive_and_one_at_the_image_borders():
    inner = ramp(300, 100, 128, 32)
    assert inner.min() > 0 and inner.max() == 1 and inner[0] < 0.02 and inner[-1] < 0.02
    assert ramp(300, 0, 128, 32)[0] == 1 and ramp(300, 172, 128, 32)[-1] == 1


def test_blending_is_a_partition_of_unity():
    """A model that changes nothing gives back its input from any tiling: the weights sum to one everywhere."""
    x = np.random.default_rng(0).standard_normal((3, 1, 200, 328)).astype(np.float32)
    model = Recording()
    tiled = TiledRunner(model, 96, 24)
    np.testing.assert_allclose(tiled.denoise(x, np.zeros(3, np.float32)), x, rtol=1e-6, atol=1e-6)
    assert {shape[2:] for shape in model.shapes} == {(96, 96)} and len(model.shapes) == len(tiled.tiles(200, 328))


def test_blend_of_disagreeing_tiles_has_no_step():
    """Tiles that disagree by a constant (the worst a tile's missing context can do) blend into a ramp across
    the overlap: no step larger than the disagreement spread over the overlap."""
    offsets: List[float] = []

    def offset(x: np.ndarray) -> np.ndarray:
        offsets.append(float(len(offsets)))
        return np.full_like(x, offsets[-1])

    tiled = TiledRunner(Recording(offset), 64, 32)
    y = tiled.denoise(np.zeros((1, 1, 64, 256), np.float32), np.zeros(1, np.float32))[0, 0]
    steps = np.abs(np.diff(y, axis=1))
    assert steps.max() <= 1.0 / 32 + 1e-6
    assert y[0, 0] == 0 and y[0, -1] == offsets[-1]


def test_one_tile_is_the_untiled_model_bit_for_bit():
    x = np.random.default_rng(1).standard_normal((2, 1, 64, 96)).astype(np.float32)
    model = Recording(lambda x: np.sin(x))
    assert np.array_equal(TiledRunner(model, 96, 32).denoise(x, np.zeros(2, np.float32)), np.sin(x))
    assert model.shapes == [x.shape]


def smooth_frames(height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Two smooth sources: a diagonal ramp and a wide Gaussian blob."""
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    ramp_image = (rows + cols) / (height + width)
    blob = np.exp(-(((rows - height / 2) / (height / 3)) ** 2 + ((cols - width / 3) / (width / 3)) ** 2))
    return (ramp_image * 200 + 20).astype(np.uint8), (blob * 200 + 30).astype(np.uint8)


@pytest.fixture(scope="module")
def runner():
    with api.open_runner() as opened:
        yield opened


@pytest.mark.parametrize("t", [900.0, 500.0])
def test_tiled_model_output_has_no_seam(runner, t):
    """The bundled prior on 128-px tiles of a noised real image: where tiles meet, the tiled output departs
    from the untiled one no faster than anywhere else (a switch from one tile to the next halfway through
    the overlap, instead of the ramps, gives 13-38x the median rate at the switch)."""
    image = cv2.resize(cv2.imread(str(pair("ivf", "22")[1]), cv2.IMREAD_GRAYSCALE), (320, 192))
    noise = np.random.default_rng(0).standard_normal(image.shape)
    x = (np.sqrt(0.5) * (image / 127.5 - 1) + np.sqrt(0.5) * noise).astype(np.float32)[None, None]
    steps = np.full(1, t, np.float32)
    difference = (TiledRunner(runner, 128, 32).denoise(x, steps) - runner.denoise(x, steps))[0, 0]
    for axis in (0, 1):
        rate = np.abs(np.diff(difference, axis=axis)).mean(axis=1 - axis)[8:-8]
        assert rate.max() <= 4 * np.median(rate), axis


def test_tiled_fusion_is_smooth_across_tile_borders(runner):
    """A smooth pair fused on 128-px tiles: the fused image's second differences at the tile borders are no
    larger than inside the tiles, and it stays within a few grey levels of the untiled fusion (tiles this small
    lose much of the context the UNet sees; the quality of the default tiles is in docs/BENCHMARKS.md)."""
    a, b = smooth_frames(192, 320)
    settings = resolve("ivf", steps=3)
    with Fuser("ivf", settings=settings, runner=runner, limits=Limits(tile=0)) as fuser:
        whole = fuser(a, b).astype(np.float32)
    with Fuser("ivf", settings=settings, runner=runner, limits=Limits(tile=128, tile_overlap=32)) as fuser:
        tiled = fuser(a, b).astype(np.float32)
    tiling = TiledRunner(runner, 128, 32)
    borders = sorted({left + d for _, left, _, cols in tiling.tiles(192, 320) for d in (0, cols) if 0 < left + d < 320}
                     | {left for _, left, _, _ in tiling.tiles(192, 320) if left})
    curvature = np.abs(np.diff(tiled, n=2, axis=1))
    at_borders = curvature[:, [c - 1 for c in borders]].mean()
    assert at_borders <= 1.5 * curvature.mean() + 0.5
    assert np.abs(tiled - whole).mean() < 4.0


def test_a_tile_covering_the_image_fuses_as_untiled(runner):
    a, b = (cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)[:120, :160] for path in pair("ivf", "22"))
    settings = resolve("ivf", steps=2)
    with Fuser("ivf", settings=settings, runner=runner, limits=Limits(tile=0)) as fuser:
        whole = fuser(a, b)
    with Fuser("ivf", settings=settings, runner=runner, limits=Limits(tile=160)) as fuser:
        assert np.array_equal(fuser(a, b), whole)
