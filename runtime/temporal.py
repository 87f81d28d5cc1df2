"""Streams: what a frame takes from the frames before it (DIG weights, the last sample), when it must compute
its own (a key frame), and how steady a fused stream is (the temporal measures of ``benchmarks/stream.py``).

A stream's frames share x_T (the fixed seed). A key frame computes its DIG weights as a still fusion does;
the frames after it reuse them without denoising their sources, until ``refresh_every`` frames have passed
or the sources change more than ``scene_change`` from those of the key frame (a cut, a camera turned away).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import cv2
import numpy as np

# A key frame every 8 frames (as steady as every 4 on a panning camera, docs/BENCHMARKS.md section 5), and at
# once when the sources' thumbnails differ from the key frame's by more than 0.05 (mean absolute difference,
# luminance in [0, 1]). benchmarks/scene_change.py, 15 ivf pairs at 320x240: sensor noise of sigma 1.5 grey
# levels moves it 0.0007, a 16-px pan 0.015 to 0.096 (median 0.041), a cut to the next pair 0.027 to 0.28
# (median 0.16).
STREAM_REFRESH_EVERY = 8
SCENE_CHANGE = 0.05
THUMB_SIDE = 32  # the long side (px) of the thumbnails compared: small enough to average sensor noise away


def thumbnail(lumas: Sequence[np.ndarray]) -> np.ndarray:
    """The sources' luminances ([0, 1], one size) shrunk by area to a ``THUMB_SIDE``-px long side, stacked."""
    height, width = lumas[0].shape
    scale = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.stack([cv2.resize(np.asarray(luma, np.float32), size, interpolation=cv2.INTER_AREA) for luma in lumas])


def scene_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails: how far a frame's sources are from a key frame's."""
    return float(np.mean(np.abs(a - b)))


@dataclass
class StreamState:
    """One camera pair's stream at one frame size: its last key frame and its last sample."""

    weights: Optional[Dict[int, np.ndarray]] = None  # the key frame's DIG weights by refresh step
    key_step: int = 0                                # the step the key frame's loop began at
    thumb: Optional[np.ndarray] = None               # the key frame's thumbnail
    since_key: int = 0                               # frames fused since the key frame
    sample: Optional[np.ndarray] = None              # the last frame's final sample, for a warm start

    def changed(self, thumb: np.ndarray, threshold: float) -> bool:
        """Whether the sources left the key frame's scene (or there is no key frame yet)."""
        return self.thumb is None or scene_distance(self.thumb, thumb) > threshold

    def needs_key(self, changed: bool, start_step: int, refresh_every: int) -> bool:
        """Whether this frame computes its weights: a scene change, ``refresh_every`` frames since the key
        frame, or a loop starting before the key frame's (its weights lack those steps)."""
        return (changed or self.weights is None or self.since_key + 1 >= refresh_every
                or start_step < self.key_step)


def temporal_std(frames: Sequence[np.ndarray]) -> float:
    """Per pixel, the standard deviation over time of a clip of frames of one size; averaged over pixels."""
    return float(np.mean(np.std(np.stack([np.asarray(f, np.float64) for f in frames]), axis=0)))


def flicker_ratio(fused: Sequence[np.ndarray], a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """A still clip's temporal std of the fused frames over that of the sources (the mean of A's and B's):
    1 passes the sensor noise through, below 1 smooths it, above 1 adds flicker of its own."""
    return temporal_std(fused) / ((temporal_std(a) + temporal_std(b)) / 2)


def shifted_difference(frames: Sequence[np.ndarray], shift: Tuple[int, int]) -> float:
    """A clip panning ``shift`` = (dy, dx) px a frame (frame i+1 is frame i moved by -shift): the mean absolute
    difference of consecutive frames over their overlap once the shift is undone."""
    dy, dx = shift
    diffs = []
    for before, after in zip(frames[:-1], frames[1:]):
        height, width = before.shape[:2]
        old = np.asarray(before, np.float64)[dy:height, dx:width]
        new = np.asarray(after, np.float64)[:height - dy, :width - dx]
        diffs.append(np.mean(np.abs(new - old)))
    return float(np.mean(diffs))


def motion_ratio(fused: Sequence[np.ndarray], a: Sequence[np.ndarray], b: Sequence[np.ndarray],
                 shift: Tuple[int, int]) -> float:
    """A panning clip's :func:`shifted_difference` of the fused frames over that of the sources (mean of A's
    and B's)."""
    return shifted_difference(fused, shift) / ((shifted_difference(a, shift) + shifted_difference(b, shift)) / 2)
