"""The model on overlapping tiles, for images whose activations would not fit in memory.

:class:`TiledRunner` is a runner like any other: the loop (``sampler.py``) calls it on the whole image and
it runs the wrapped runner on tiles of ``tile`` x ``tile`` pixels, blending each tile's output into the
image with weights that ramp linearly across the overlap (a partition of unity, so a region seen by one
tile is that tile's output and the blend is a smooth convex mix where tiles meet). Only the UNet is tiled:
the DIG weights, the EM step and the DDIM update run on the whole image, as without tiles, so the guidance
has no seams. The UNet's middle attention, whose memory grows with the square of the pixels, then sees a
tile at a time. An image that one tile covers runs untiled, bit for bit.
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np

from .backends.base import Runner
from .errors import InputError


def tile_origins(length: int, tile: int, overlap: int, multiple: int) -> List[int]:
    """Where the tiles of one axis start: every ``tile - overlap`` px (rounded down to the model's ``multiple``
    so that each tile's pooling grid is the image's), the last one flush with the end; ``[0]`` if one tile
    covers ``length``."""
    if length <= tile:
        return [0]
    stride = max(multiple, (tile - overlap) // multiple * multiple)
    origins = list(range(0, length - tile, stride))
    return origins + [length - tile]


def ramp(length: int, origin: int, size: int, overlap: int) -> np.ndarray:
    """A tile's blending weights along one axis: rising linearly over ``overlap`` px from the tile's start and
    falling over its end, except at the image's borders; always positive."""
    weights = np.ones(size, np.float32)
    rise = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap if overlap else np.ones(0, np.float32)
    if origin > 0:
        weights[:overlap] = rise
    if origin + size < length:
        weights[size - overlap:] = np.minimum(weights[size - overlap:], rise[::-1])
    return weights


class TiledRunner(Runner):
    """``runner`` on ``tile`` x ``tile`` tiles overlapping by ``tile_overlap`` px, outputs blended (module
    docstring). ``tile`` is rounded down to the model's multiple. Host arrays only: with a GPU runner the
    loop runs on the host and each tile's model call on the GPU."""

    def __init__(self, runner: Runner, tile: int, tile_overlap: int) -> None:
        multiple = runner.info.multiple
        self.runner, self.info = runner, runner.info
        self.tile = tile // multiple * multiple
        self.overlap = min(tile_overlap, self.tile - multiple)
        if self.tile < multiple or self.overlap < 0:
            raise InputError(f"tile {tile} is smaller than the model's multiple of {multiple} px")

    def tiles(self, height: int, width: int) -> List[Tuple[int, int, int, int]]:
        """(top, left, height, width) of each tile of an image, row by row."""
        multiple = self.info.multiple
        rows, cols = (tile_origins(n, self.tile, self.overlap, multiple) for n in (height, width))
        return [(top, left, min(self.tile, height), min(self.tile, width)) for top in rows for left in cols]

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        height, width = x.shape[2:]
        tiles = self.tiles(height, width)
        if len(tiles) == 1:
            return self.runner.denoise(x, t)
        out = np.zeros((x.shape[0], self.info.out_channels, height, width), np.float32)
        total = np.zeros((height, width), np.float32)
        for top, left, rows, cols in tiles:
            weight = np.outer(ramp(height, top, rows, self.overlap), ramp(width, left, cols, self.overlap))
            y = self.runner.denoise(x[:, :, top:top + rows, left:left + cols], t)
            out[:, :, top:top + rows, left:left + cols] += y * weight
            total[top:top + rows, left:left + cols] += weight
        out /= total
        return out

    def close(self) -> None:
        """The wrapped runner stays open: its owner closes it."""
