"""Fusing frames in memory (runtime/fuser.py): the same images as the file path, one runner, any frame size."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Tuple

import cv2
import numpy as np
import pytest

from conftest import pair
from dig2dig import Fuser
from dig2dig.runtime import api, fuser as fuser_module
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.settings import resolve

STEPS = 2
FileFusion = Callable[[str, str], np.ndarray]


class CountingRunner(Runner):
    """A runner that counts its model calls and closes, passing the calls on."""

    def __init__(self, runner: Runner):
        self.runner, self.info, self.calls, self.closes = runner, runner.info, 0, 0

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.runner.denoise(x, t)

    def close(self) -> None:
        self.closes += 1


def frame(path: Path) -> np.ndarray:
    """A file's pixels as a camera gives them: uint8/uint16, grey (H, W) or BGR (H, W, 3)."""
    pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert pixels is not None
    return pixels


def frames(task: str, name: str) -> Tuple[np.ndarray, np.ndarray]:
    a, b = pair(task, name)
    return frame(a), frame(b)


@pytest.fixture(scope="module")
def runner() -> Iterator[CountingRunner]:
    with api.open_runner() as opened:
        yield CountingRunner(opened)


@pytest.fixture(scope="module")
def file_fusion(runner: Runner) -> FileFusion:
    """``api.fuse`` of a vendored pair's files (RGB output), each pair fused once."""
    fused: Dict[Tuple[str, str], np.ndarray] = {}

    def fuse(task: str, name: str) -> np.ndarray:
        if (task, name) not in fused:
            fused[task, name] = api.fuse(*pair(task, name), task=task, settings=resolve(task, steps=STEPS),
                                         runner=runner).image
        return fused[task, name]

    return fuse


def fuser_for(task: str, runner: Runner) -> Fuser:
    return Fuser(task, settings=resolve(task, steps=STEPS), runner=runner)


@pytest.mark.parametrize("task,name", [("ivf", "10"), ("mif", "11")])
def test_grey_frames_equal_the_file_fusion(task: str, name: str, runner: Runner, file_fusion: FileFusion) -> None:
    fused = fuser_for(task, runner)(*frames(task, name))
    expected = file_fusion(task, name)
    assert fused.dtype == np.uint8 and fused.ndim == 2
    assert np.array_equal(fused, expected)


@pytest.mark.parametrize("task,name", [("ivf", "00055D"), ("mef", "Chair")])
def test_bgr_frames_keep_their_colour_order(task: str, name: str, runner: Runner, file_fusion: FileFusion) -> None:
    fused = fuser_for(task, runner)(*frames(task, name))
    rgb = file_fusion(task, name)
    assert fused.dtype == np.uint8 and fused.shape == rgb.shape and rgb.shape[2] == 3
    assert np.array_equal(fused, bgr_of(rgb))
    assert not np.array_equal(fused, rgb)


def test_bgr_frame_of_identical_channels_is_grey(runner: Runner, file_fusion: FileFusion) -> None:
    a, b = frames("ivf", "10")
    fused = fuser_for("ivf", runner)(cv2.cvtColor(a, cv2.COLOR_GRAY2BGR), b)
    assert np.array_equal(fused, file_fusion("ivf", "10"))


def test_uint16_frames_equal_the_16bit_file(tmp_path: Path, runner: Runner) -> None:
    # Raw thermal look: a real infrared frame squeezed into 20000..22040 of the 16-bit range.
    ir_path, vis_path = pair("ivf", "10")
    raw = (20000 + frame(ir_path).astype(np.uint16) * 8).astype(np.uint16)
    thermal = tmp_path / "thermal.png"
    assert cv2.imwrite(str(thermal), raw)
    settings = resolve("ivf", steps=STEPS)
    expected = api.fuse(thermal, vis_path, settings=settings, runner=runner).image
    fused = fuser_for("ivf", runner)(raw, frame(vis_path))
    assert fused.dtype == np.uint8 and np.array_equal(fused, expected)


def bgr_of(image: np.ndarray) -> np.ndarray:
    """An ``api.fuse`` image in a frame's channel order."""
    return image if image.ndim == 2 else image[..., ::-1]


def test_frame_sizes_change_between_calls(monkeypatch: pytest.MonkeyPatch, runner: Runner,
                                         file_fusion: FileFusion) -> None:
    # Two sizes kept: 10 comes back while kept, 22 after FLIR_00977 took its place.
    monkeypatch.setattr(fuser_module, "CACHED_SIZES", 2)
    fuser = fuser_for("ivf", runner)
    for name in ("10", "22", "10", "FLIR_00977", "22"):
        assert np.array_equal(fuser(*frames("ivf", name)), bgr_of(file_fusion("ivf", name))), name
        assert len(fuser._states) <= 2


GREY = frame(pair("ivf", "10")[0])
BAD_FRAMES = {
    "float64": (GREY.astype(np.float64) / 255.0, GREY, "a: unsupported frame dtype float64"),
    "int32": (GREY, GREY.astype(np.int32), "b: unsupported frame dtype int32"),
    "4 channels": (cv2.cvtColor(GREY, cv2.COLOR_GRAY2BGRA), GREY, "a: unsupported frame shape (96, 128, 4)"),
    "1-D": (GREY, GREY.ravel(), "b: unsupported frame shape (12288,)"),
    "empty": (GREY[:0], GREY, "a: empty frame"),
    "list": (GREY.tolist(), GREY, "a: expected a numpy array, got list"),
    "sizes": (GREY, GREY[:64], "a is 96x128 but b is 64x128"),
}


@pytest.mark.parametrize("case", sorted(BAD_FRAMES))
def test_bad_frames_name_the_argument(case: str, runner: Runner) -> None:
    a, b, words = BAD_FRAMES[case]
    counting = CountingRunner(runner)
    with pytest.raises(InputError) as error:
        fuser_for("ivf", counting)(a, b)
    message = str(error.value)
    assert words in message and "\n" not in message
    assert counting.calls == 0


def test_runner_is_opened_once_and_closed_by_its_opener(monkeypatch: pytest.MonkeyPatch, runner: Runner) -> None:
    opened = []

    def open_counting(*args: Any) -> CountingRunner:
        opened.append(CountingRunner(runner))
        return opened[-1]

    monkeypatch.setattr(fuser_module, "open_runner", open_counting)
    with Fuser("ivf", settings=resolve("ivf", steps=STEPS)) as fuser:
        first = fuser.runner
        fuser(*frames("ivf", "10"))
        fuser(*frames("ivf", "22"))
        assert fuser.runner is first and len(opened) == 1 and first.calls > 0 and first.closes == 0
    assert first.closes == 1
    given = CountingRunner(runner)
    Fuser("ivf", runner=given).close()
    assert given.closes == 0


def test_importing_dig2dig_loads_no_backend() -> None:
    code = ("import sys, dig2dig; from dig2dig import Fuser; "
            "print(Fuser.__module__, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["dig2dig.runtime.fuser", "False"]
