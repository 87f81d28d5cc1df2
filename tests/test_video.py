"""``dig2dig video`` and ``runtime.video``: streams of real pair frames in (videos, folders, globs), videos and
image sequences out, unequal lengths, undecodable frames, interruptions and failures that leave no partial output."""
from __future__ import annotations

import io as text_io
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

import cv2
import numpy as np
import pytest

from conftest import pair
from dig2dig.cli import main
from dig2dig.runtime import api, video
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.errors import InputError, ModelError
from dig2dig.runtime.fuser import Fuser
from dig2dig.runtime.progress import Progress
from dig2dig.runtime.settings import resolve

HEIGHT, WIDTH = 48, 64
Clip = List[np.ndarray]


@pytest.fixture(scope="module")
def clips() -> Tuple[Clip, Clip]:
    """Four frames of a real infrared (grey) / visible (colour) pair: 48x64 crops moving diagonally across the scene."""
    a, b = (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) for path in pair("ivf", "00055D"))
    crops = [(slice(8 * i, 8 * i + HEIGHT), slice(8 * i, 8 * i + WIDTH)) for i in range(4)]
    return [a[crop] for crop in crops], [b[crop] for crop in crops]


@pytest.fixture(scope="module")
def fuser() -> Iterator[Fuser]:
    with Fuser("ivf", settings=resolve("ivf", steps=2), runner=api.open_runner()) as opened:
        yield opened


def write_clip(path: Path, frames: Sequence[np.ndarray], fps: float = 12.0) -> str:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (WIDTH, HEIGHT), True)
    for frame in frames:
        writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return str(path)


def write_folder(folder: Path, frames: Sequence[np.ndarray]) -> str:
    folder.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i:02d}.png"), frame)
    return str(folder)


def read_clip(path: Path) -> Tuple[Clip, float]:
    capture = cv2.VideoCapture(str(path))
    fps, frames = capture.get(cv2.CAP_PROP_FPS), []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def read_sequence(folder: Path) -> Clip:
    return [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.iterdir())]


def run(*args: str) -> int:
    return main(["video", *args, "--steps", "2"])


def leftovers(folder: Path) -> List[str]:
    """Hidden scratch files or folders left beside the output."""
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_avi_round_trip(clips: Tuple[Clip, Clip], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_clip(tmp_path / "b.avi", clips[1])
    out = tmp_path / "fused.avi"
    assert run(a, b, "-o", str(out)) == 0
    frames, fps = read_clip(out)
    assert len(frames) == 4 and fps == 12.0
    assert all(frame.shape == (HEIGHT, WIDTH, 3) for frame in frames)
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("fused 4 frames, skipped 0,") and summary.endswith(f"-> {out}")
    assert not leftovers(tmp_path)


def test_folder_and_glob_in_numbered_images_out(clips: Tuple[Clip, Clip], fuser: Fuser, tmp_path: Path) -> None:
    """A folder and a glob read in name order, written as a lossless sequence equal to fusing each pair."""
    a = write_folder(tmp_path / "ir", clips[0])
    b = str(Path(write_folder(tmp_path / "vis", clips[1])) / "*.png")
    assert run(a, b, "-o", str(tmp_path / "out" / "%03d.png"), "-q") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["000.png", "001.png", "002.png", "003.png"]
    written = read_sequence(tmp_path / "out")
    assert all(np.array_equal(w, fuser(x, y)) for w, x, y in zip(written, *clips))
    summary = video.fuse_video(a, b, str(tmp_path / "folder") + "/", fuser, max_frames=2)
    assert (summary.fused, summary.skipped) == (2, 0)
    assert [f.shape for f in read_sequence(tmp_path / "folder")] == [(HEIGHT, WIDTH, 3)] * 2


def test_unequal_lengths_stop_unless_shortest(clips: Tuple[Clip, Clip], tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_folder(tmp_path / "b", clips[1][:3])
    out = tmp_path / "fused.avi"
    assert run(a, b, "-o", str(out)) == 2
    captured = capsys.readouterr()
    assert f"B ({b}) ran out at frame 4" in captured.err and len(captured.err.splitlines()) == 1
    assert captured.out.startswith("fused 3 frames")
    assert len(read_clip(out)[0]) == 3, "what was fused before the end is kept"
    out.unlink()
    assert run(a, b, "-o", str(out), "--shortest", "-q") == 0
    assert len(read_clip(out)[0]) == 3


def test_undecodable_frame_is_skipped_in_step(clips: Tuple[Clip, Clip], fuser: Fuser, tmp_path: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    a, b = write_folder(tmp_path / "a", clips[0]), write_folder(tmp_path / "b", clips[1])
    broken = Path(a) / "f01.png"
    broken.write_bytes(broken.read_bytes()[:100])
    (tmp_path / "out").mkdir()
    assert run(a, b, "-o", str(tmp_path / "out")) == 0
    captured = capsys.readouterr()
    assert f"skipped frame 2: {broken} cannot be decoded" in captured.err
    assert captured.out.startswith("fused 3 frames, skipped 1,")
    written = read_sequence(tmp_path / "out")
    assert len(written) == 3 and np.array_equal(written[1], fuser(clips[0][2], clips[1][2]))


def test_unopenable_camera_is_one_clear_line(clips: Tuple[Clip, Clip], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    b = write_clip(tmp_path / "b.avi", clips[1])
    assert run("99", b, "-o", str(tmp_path / "out.mp4")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "dig2dig: error: 99: cannot open camera"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.avi"]
    with pytest.raises(InputError, match="missing.avi: no such file"):
        video.open_input(str(tmp_path / "missing.avi"))
    with pytest.raises(InputError, match="unknown video extension '.gif'"):
        video.output_target(str(tmp_path / "out.gif"))


def test_side_by_side_and_max_frames(clips: Tuple[Clip, Clip], tmp_path: Path) -> None:
    """A | B | fused, a 16-bit A shown stretched to 8 bits; --max-frames stops early."""
    deep = [frame.astype(np.uint16) * 257 + 40 for frame in clips[0]]
    a, b = write_folder(tmp_path / "a", deep), write_clip(tmp_path / "b.avi", clips[1])
    out = tmp_path / "wide.mp4"
    assert run(a, b, "-o", str(out), "--side-by-side", "--max-frames", "2", "--fps", "5", "-q") == 0
    frames, fps = read_clip(out)
    assert len(frames) == 2 and fps == 5.0
    assert frames[0].shape == (HEIGHT, 3 * WIDTH, 3)
    shown_a = frames[0][:, :WIDTH, 0].astype(int)
    assert shown_a.max() - shown_a.min() > 200, "the 16-bit source is stretched, not shown as its top byte"


def raise_on_call(monkeypatch: pytest.MonkeyPatch, number: int, error: BaseException) -> List[int]:
    """Make the ``number``-th frame a Fuser is given raise ``error``; the others fuse. Returns the calls so far
    (clear it to count again)."""
    original = Fuser.__call__
    calls: List[int] = []

    def failing(self: Fuser, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        calls.append(1)
        if len(calls) == number:
            raise error
        return original(self, a, b)

    monkeypatch.setattr(Fuser, "__call__", failing)
    return calls


def test_failure_midway_leaves_no_partial_output(clips: Tuple[Clip, Clip], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    calls = raise_on_call(monkeypatch, 2, ModelError("model.onnx: the backend failed"))
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_clip(tmp_path / "b.avi", clips[1])
    previous = tmp_path / "fused.avi"
    previous.write_bytes(b"previous result")
    for out in (previous, tmp_path / "seq" / "%02d.png"):
        calls.clear()
        assert run(a, b, "-o", str(out)) == 2
        assert "the backend failed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.avi", "b.avi", "fused.avi"]
    assert previous.read_bytes() == b"previous result"


def test_interrupt_keeps_what_was_fused(clips: Tuple[Clip, Clip], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture) -> None:
    raise_on_call(monkeypatch, 3, KeyboardInterrupt())
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_clip(tmp_path / "b.avi", clips[1])
    out = tmp_path / "fused.mp4"
    assert run(a, b, "-o", str(out)) == 130
    summary = capsys.readouterr().out.strip()
    assert summary.startswith("fused 2 frames, skipped 0,") and summary.endswith(f"-> {out} (interrupted)")
    assert len(read_clip(out)[0]) == 2 and not leftovers(tmp_path)


def test_progress_shows_the_rate_and_notes_on_their_own_line() -> None:
    class Terminal(text_io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    with Progress("video", None, delay=0.0, stream=stream, unit="frames") as bar:
        bar.update(2)
        bar.note("dig2dig: warning: skipped")
        bar.update(3)
    lines = stream.getvalue().split("\n")
    assert lines[0].startswith("\rvideo 2 (") and "frames/s)" in lines[0]
    assert lines[1] == "dig2dig: warning: skipped" and lines[2].startswith("\rvideo 3 (") and lines[3] == ""


def test_warm_start_option(clips: Tuple[Clip, Clip], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--warm-start STEP starts the frames after a key frame at that step; a step that does not suit is one
    clear line before any frame is read, and nothing is written."""
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_clip(tmp_path / "b.avi", clips[1])
    out = tmp_path / "fused.avi"
    assert main(["video", str(a), str(b), "-o", str(out), "--steps", "4", "--warm-start", "2", "-q"]) == 0
    assert len(read_clip(out)[0]) == 4
    bad = tmp_path / "bad.avi"
    assert main(["video", str(a), str(b), "-o", str(bad), "--steps", "4", "--warm-start", "3"]) == 2
    assert "stream_warm_start must be a multiple of dig_every (2) below steps (4), got 3" in capsys.readouterr().err
    assert not bad.exists() and not leftovers(tmp_path)


class NaNRunner(Runner):
    """A real runner whose outputs turn to NaN while ``poisoned``."""

    def __init__(self, runner: Runner):
        self.runner, self.info, self.poisoned = runner, runner.info, False

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        y = self.runner.denoise(x, t)
        return np.full_like(y, np.nan) if self.poisoned else y


@pytest.mark.parametrize("stream", [False, True])
def test_frame_with_nan_is_dropped_and_the_run_goes_on(stream: bool, clips: Tuple[Clip, Clip],
                                                       tmp_path: Path) -> None:
    """The model giving NaN on the second frame drops that frame with a warning naming it; the others are fused."""
    a, b = write_clip(tmp_path / "a.avi", clips[0]), write_clip(tmp_path / "b.avi", clips[1])
    out, notes, count = tmp_path / "fused.avi", [], [0]
    with api.open_runner() as real:
        runner = NaNRunner(real)
        with Fuser("ivf", settings=resolve("ivf", steps=2), runner=runner, stream=stream) as fuser:
            def second_poisoned(x: np.ndarray, y: np.ndarray) -> np.ndarray:
                count[0] += 1
                runner.poisoned = count[0] == 2
                return fuser(x, y)

            summary = video.fuse_video(a, b, str(out), second_poisoned, warn=notes.append)
    assert (summary.fused, summary.dropped) == (3, 1)
    assert len(notes) == 1 and notes[0].startswith("dig2dig: warning: dropped frame 2 (") and "NaN" in notes[0]
    assert "dropped 1 (NaN/Inf)" in summary.line()
    assert len(read_clip(out)[0]) == 3 and not leftovers(tmp_path)
