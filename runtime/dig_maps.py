"""A picture of the DIG weight maps: one row per refresh, one column per source."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Sequence

import cv2
import numpy as np

from . import io, preflight

TILE_WIDTH = 256
LABEL_HEIGHT = 22


def montage(refreshes: List[Dict[str, Any]], names: Sequence[str]) -> np.ndarray:
    """RGB uint8 montage of the weights (colormap 0 -> blue, 1 -> red), labelled with source and t."""
    rows = []
    for refresh in refreshes:
        tiles = []
        for name, weight in zip(names, refresh["weights"]):
            height = max(1, round(weight.shape[0] * TILE_WIDTH / weight.shape[1]))
            tile = cv2.resize(np.clip(weight, 0, 1), (TILE_WIDTH, height), interpolation=cv2.INTER_AREA)
            tile = cv2.applyColorMap((tile * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
            label = np.full((LABEL_HEIGHT, TILE_WIDTH, 3), 255, np.uint8)
            cv2.putText(label, f"{name}  t={refresh['t']}->{refresh['t_next']}", (4, 16),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
            tiles.append(np.vstack([label, tile]))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


def save_montages(folder: str, refreshes: List[Dict[str, Any]], names: Sequence[str]) -> str:
    """Write ``folder/dig_weights.png`` (nothing when DIG never ran), making ``folder`` if missing in a folder
    that exists (``preflight.output_folder``); returns its path."""
    preflight.output_folder(folder)
    path = os.path.join(folder, "dig_weights.png")
    if refreshes:
        os.makedirs(folder, exist_ok=True)
        io.write_image(path, montage(refreshes, names))
    return path
