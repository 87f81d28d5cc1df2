"""Zoomed crops of fused images from several ``dig2dig eval`` folders, side by side: the by-eye
figures of docs/QUALITY.md.

One row per ``--row KEY:X,Y,W,H`` (a pair's key, ``TASK_DATASET_NAME``, and a box in the fused
image's pixels), one column per ``--column FOLDER:METHOD``; each crop is enlarged ``--zoom`` times
with nearest-neighbour sampling, so every fused pixel stays visible as a square.

    python benchmarks/crops.py --runs runs/quality_all --zoom 3 \\
        --column steps10_every2_window41x3_tau0.5_em5:dig --column steps10_every2_window41x3_tau0.25_em5:dig \\
        --row ivf_LLVIP_190002:60,40,80,60 -o docs/figures/ivf_tau.jpg
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from dig2dig.runtime import io

GAP = 6  # px of white between tiles
Box = Tuple[int, int, int, int]


def parse_row(text: str) -> Tuple[str, Box]:
    """``KEY:X,Y,W,H`` -> (key, box)."""
    key, _, box = text.rpartition(":")
    values = [int(v) for v in box.split(",")]
    if not key or len(values) != 4 or min(values[2:]) < 1:
        raise argparse.ArgumentTypeError(f"expected KEY:X,Y,W,H, got {text!r}")
    return key, (values[0], values[1], values[2], values[3])


def parse_column(text: str) -> Tuple[str, str]:
    """``FOLDER:METHOD`` -> (folder, method)."""
    folder, _, method = text.rpartition(":")
    if not folder or not method:
        raise argparse.ArgumentTypeError(f"expected FOLDER:METHOD, got {text!r}")
    return folder, method


def crop(path: Path, box: Box, zoom: int) -> np.ndarray:
    """The box of a fused image (as RGB), enlarged ``zoom`` times; a clear error if it does not fit."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"{path}: not found or not an image (run the eval that writes it first)")
    x, y, w, h = box
    if x < 0 or y < 0 or x + w > image.shape[1] or y + h > image.shape[0]:
        raise SystemExit(f"{path}: box {box} is outside the {image.shape[1]}x{image.shape[0]} image")
    tile = image[y:y + h, x:x + w]
    return cv2.resize(tile, (w * zoom, h * zoom), interpolation=cv2.INTER_NEAREST)


def grid(tiles: List[List[np.ndarray]]) -> np.ndarray:
    """Rows of tiles (one height per row) into one image with white gaps."""
    width = max(sum(t.shape[1] for t in row) + GAP * (len(row) - 1) for row in tiles)
    lines = []
    for row in tiles:
        line = np.full((row[0].shape[0], width, 3), 255, np.uint8)
        x = 0
        for tile in row:
            line[:, x:x + tile.shape[1]] = tile
            x += tile.shape[1] + GAP
        lines += [line, np.full((GAP, width, 3), 255, np.uint8)]
    return np.concatenate(lines[:-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", default="runs/quality_all", help="folder holding the eval folders")
    parser.add_argument("--column", action="append", type=parse_column, required=True, metavar="FOLDER:METHOD")
    parser.add_argument("--row", action="append", type=parse_row, required=True, metavar="KEY:X,Y,W,H")
    parser.add_argument("--zoom", type=int, default=3)
    parser.add_argument("-o", "--output", required=True, help="image file (.png, .jpg)")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    tiles = [[crop(runs / folder / "fused" / method / f"{key}.png", box, args.zoom) for folder, method in args.column]
             for key, box in args.row]
    io.write_image(args.output, cv2.cvtColor(grid(tiles), cv2.COLOR_BGR2RGB))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
