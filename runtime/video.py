"""Fuse two streams frame by frame: video files, image sequences, cameras or URLs in; a video file or a
numbered image sequence out, all through OpenCV.

    from dig2dig import Fuser
    from dig2dig.runtime.video import fuse_video
    with Fuser("ivf") as fuser:
        print(fuse_video("ir.mp4", "vis.mp4", "fused.mp4", fuser).line())

The output is written beside its final name and moved there at the end, so an error never leaves a
half-written file under it. A camera never ends: Ctrl-C is how such a run stops, and it keeps what was fused.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Tuple, Union

import cv2
import numpy as np

from . import io, preflight
from .errors import InputError, NumericalError

# Containers by extension, with a codec every OpenCV build with FFmpeg writes.
VIDEO_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
# Files a folder input is read as frames from (others, and hidden files, are left out).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
DEFAULT_FPS = 25.0
SEQUENCE_NAME = "%05d.png"  # the frames' names in a folder output
_PRINTF = re.compile(r"%0?\d*d")

FrameFuser = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Frame:
    """One frame of an input: its pixels as OpenCV gives them, or None when it cannot be decoded."""

    pixels: Optional[np.ndarray]
    name: str  # the file, or the input and the frame's number


class FrameInput:
    """The frames of one input in order; ``read`` gives None at the end. Use it as a context manager."""

    name: str
    fps: Optional[float] = None     # frames per second of a video, when it says
    length: Optional[int] = None    # frames in all, when known

    def read(self) -> Optional[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the input holds."""

    def __enter__(self) -> "FrameInput":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CaptureInput(FrameInput):
    """A video file, camera or URL read through ``cv2.VideoCapture``."""

    def __init__(self, name: str, capture: "cv2.VideoCapture"):
        self.name, self.capture, self.count = name, capture, 0
        fps, frames = capture.get(cv2.CAP_PROP_FPS), capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.fps = fps if fps > 0 else None  # cameras and streams may say 0, -1 or NaN
        self.length = int(frames) if frames > 0 else None

    def read(self) -> Optional[Frame]:
        ok, pixels = self.capture.read()
        if not ok:
            return None
        self.count += 1
        return Frame(pixels, f"{self.name} frame {self.count}")

    def close(self) -> None:
        self.capture.release()


class SequenceInput(FrameInput):
    """Image files read in the order given, 8- or 16-bit, grey or colour (alpha dropped)."""

    def __init__(self, name: str, paths: List[str]):
        self.name, self.paths, self.length = name, paths, len(paths)
        self.next = 0

    def read(self) -> Optional[Frame]:
        if self.next == len(self.paths):
            return None
        path = self.paths[self.next]
        self.next += 1
        pixels = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if pixels is not None and pixels.ndim == 3:
            pixels = pixels[..., 0] if pixels.shape[2] < 3 else pixels[..., :3]
        return Frame(pixels, path)


def open_input(spec: str) -> FrameInput:
    """An input from its spec: a camera index ('0'), a URL ('rtsp://...'), a folder of images (sorted by
    name), a glob pattern ('frames/*.png'), or a video file. One that cannot be opened is an ``InputError``."""
    if spec.isdigit():
        return _capture(spec, int(spec), "cannot open camera")
    if "://" in spec:
        return _capture(spec, spec, "cannot open the stream")
    if os.path.isdir(spec):
        names = sorted(n for n in os.listdir(spec) if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
        return _sequence(spec, [os.path.join(spec, n) for n in names], "no image files in the folder")
    if any(c in spec for c in "*?[") and not os.path.exists(spec):
        return _sequence(spec, sorted(p for p in glob.glob(spec) if os.path.isfile(p)), "the pattern matches no files")
    if not os.path.exists(spec):
        raise InputError(f"{spec}: no such file or folder")
    return _capture(spec, spec, "cannot open as a video")


def _capture(spec: str, source: Union[int, str], failure: str) -> CaptureInput:
    """Open ``source`` with OpenCV's own warnings muted: a failure is one ``InputError`` naming ``spec``."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_ERROR)
    try:
        capture = cv2.VideoCapture(source)
    finally:
        logging.setLogLevel(level)
    if not capture.isOpened():
        capture.release()
        raise InputError(f"{spec}: {failure}")
    return CaptureInput(spec, capture)


def _sequence(spec: str, paths: List[str], failure: str) -> SequenceInput:
    if not paths:
        raise InputError(f"{spec}: {failure}")
    return SequenceInput(spec, paths)


@contextmanager
def _opened(given: Union[str, FrameInput]) -> Iterator[FrameInput]:
    """``given`` itself when it is open already (its owner closes it), else the input it names, closed after."""
    if isinstance(given, FrameInput):
        yield given
        return
    with open_input(given) as opened:
        yield opened


def expected_frames(a: FrameInput, b: FrameInput, max_frames: Optional[int] = None) -> Optional[int]:
    """How many pairs a run will fuse at most, when the inputs' lengths or ``max_frames`` say; else None."""
    known = [n for n in (a.length, b.length, max_frames) if n is not None]
    return min(known) if known else None


@dataclass(frozen=True)
class OutputTarget:
    """Where frames go: a video file (``pattern`` None) or ``pattern``-numbered images in the folder ``path``."""

    path: str
    pattern: Optional[str] = None


def output_target(out: str) -> OutputTarget:
    """Check ``out`` before any frame is fused: a folder ('out/' or an existing one; frames ``SEQUENCE_NAME``),
    a printf pattern ('out/%05d.png'), or a video file whose extension picks the codec (``VIDEO_CODECS``)."""
    if out.endswith(("/", os.sep)) or os.path.isdir(out):
        target = OutputTarget(os.path.normpath(out), SEQUENCE_NAME)
    elif _PRINTF.search(os.path.basename(out)):
        pattern = os.path.basename(out)
        try:
            pattern % 0
        except (TypeError, ValueError) as exc:
            raise InputError(f"{out}: not a pattern with one frame number, such as out/%05d.png") from exc
        preflight.check_extension(out, io.WRITE_DEPTHS, "image")
        target = OutputTarget(os.path.dirname(out) or ".", pattern)
    else:
        preflight.output_file(out, VIDEO_CODECS, "video", or_else="a folder/ or a pattern such as out/%05d.png")
        return OutputTarget(out)
    preflight.output_folder(target.path)
    return target


class VideoFile:
    """Frames written as a video at ``staged`` and moved to ``path`` by ``finish``; every frame one size."""

    def __init__(self, path: str, staged: str, fps: float):
        self.path, self.staged, self.fps = path, staged, fps
        self.writer: Optional[cv2.VideoWriter] = None
        self.size: Tuple[int, int] = (0, 0)

    def write(self, frame: np.ndarray) -> None:
        size = (frame.shape[1], frame.shape[0])
        if self.writer is None:
            codec = VIDEO_CODECS[os.path.splitext(self.path)[1].lower()]
            self.writer = cv2.VideoWriter(self.staged, cv2.VideoWriter.fourcc(*codec), self.fps, size, True)
            self.size = size
            if not self.writer.isOpened():
                raise InputError(f"{self.path}: OpenCV cannot write this video (codec {codec})")
        if size != self.size:
            raise InputError(f"{self.path}: a frame is {size[0]}x{size[1]} but the video is "
                             f"{self.size[0]}x{self.size[1]} (write an image sequence for frames of several sizes)")
        self.writer.write(frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))

    def finish(self) -> None:
        if self.writer is not None:
            self.close()
            _move(self.staged, self.path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class ImageSequence:
    """Frames written as numbered images in ``staged`` and moved into the folder ``path`` by ``finish``."""

    def __init__(self, path: str, staged: str, pattern: str):
        self.path, self.staged, self.pattern = path, staged, pattern
        self.names: List[str] = []

    def write(self, frame: np.ndarray) -> None:
        name = self.pattern % len(self.names)
        if not cv2.imwrite(os.path.join(self.staged, name), frame):
            raise InputError(f"{os.path.join(self.path, name)}: cannot write the frame")
        self.names.append(name)

    def finish(self) -> None:
        for name in self.names:
            _move(os.path.join(self.staged, name), os.path.join(self.path, name))

    def close(self) -> None:
        """Nothing is held open between frames."""


Output = Union[VideoFile, ImageSequence]


@contextmanager
def open_output(target: OutputTarget, fps: float) -> Iterator[Output]:
    """The writer of ``target``, staged in a hidden folder beside it (or in it, for a folder that exists): what was
    written is moved into place when the block ends normally, and dropped when it raises."""
    parent, name = os.path.split(os.path.abspath(target.path))
    try:
        scratch = tempfile.mkdtemp(prefix=f".{name}.", dir=target.path if os.path.isdir(target.path) else parent)
    except OSError as exc:
        raise _cannot_write(target.path, exc) from exc
    output: Output
    if target.pattern is None:
        output = VideoFile(target.path, os.path.join(scratch, name), fps)
    else:
        output = ImageSequence(target.path, scratch, target.pattern)
    try:
        yield output
        output.finish()
    finally:
        output.close()
        shutil.rmtree(scratch, ignore_errors=True)


def _move(source: str, destination: str) -> None:
    """Move a finished file into place, making its folder if need be."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(destination)), exist_ok=True)
        os.replace(source, destination)
    except OSError as exc:
        raise _cannot_write(destination, exc) from exc


def _cannot_write(path: str, exc: OSError) -> InputError:
    return InputError(f"{path}: cannot write ({exc.strerror or exc})")


@dataclass
class VideoSummary:
    """What a run did: pairs fused and skipped, in how long, and where they went."""

    output: str
    fused: int = 0
    skipped: int = 0
    dropped: int = 0  # pairs whose fusion gave NaN/Inf
    seconds: float = 0.0
    interrupted: bool = False

    @property
    def fps(self) -> float:
        return self.fused / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """One line: fused 4 frames, skipped 1, 2.0 s, 2.00 frames/s -> out.mp4 (and dropped N (NaN/Inf) after
        the skipped count when there were such pairs)."""
        where = self.output if self.fused else "nothing written"
        stop = " (interrupted)" if self.interrupted else ""
        dropped = f", dropped {self.dropped} (NaN/Inf)" if self.dropped else ""
        return (f"fused {self.fused} frames, skipped {self.skipped}{dropped}, {self.seconds:.1f} s, "
                f"{self.fps:.2f} frames/s -> {where}{stop}")


class UnequalLengths(InputError):
    """One input ran out before the other; ``summary`` says what was fused, kept at the output."""

    def __init__(self, message: str, summary: VideoSummary):
        super().__init__(message)
        self.summary = summary


def fuse_video(a: Union[str, FrameInput], b: Union[str, FrameInput], out: str, fuser: FrameFuser,
               shortest: bool = False, max_frames: Optional[int] = None, fps: Optional[float] = None,
               side_by_side: bool = False, progress: Optional[Callable[[int], None]] = None,
               warn: Optional[Callable[[str], None]] = None) -> VideoSummary:
    """Fuse the frames of ``a`` and ``b`` in pairs, in order, with ``fuser`` (a :class:`Fuser`) into ``out``.

    ``a`` and ``b`` are specs for :func:`open_input` or inputs it opened; ``out`` is read by :func:`output_target`.
    Inputs of unequal length raise :class:`UnequalLengths` once the output is finalised, unless ``shortest``.
    A pair with a frame that cannot be decoded is skipped, and one whose fusion gives NaN/Inf (``NumericalError``)
    is dropped, each counted in the summary and named to ``warn`` (default: stderr); the run goes on. The video
    runs at ``fps``, else A's frame rate, else ``DEFAULT_FPS``. ``side_by_side`` writes A | B | fused.
    ``progress`` gets the count of fused frames. Ctrl-C stops the run as the end of an input would.
    """
    if max_frames is not None and max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    if fps is not None and not fps > 0:
        raise InputError(f"fps must be > 0, got {fps}")
    target = output_target(out)
    note = warn or _warn
    ended: Optional[UnequalLengths] = None
    with _opened(a) as first, _opened(b) as second:
        summary = VideoSummary(out)
        start = time.perf_counter()
        with open_output(target, fps or first.fps or DEFAULT_FPS) as output:
            try:
                for label, pixels_a, pixels_b in _pairs(first, second, summary, shortest, note):
                    try:
                        frame = _output_frame(fuser, label, pixels_a, pixels_b, side_by_side)
                    except NumericalError as exc:
                        note(f"dig2dig: warning: dropped {label}: {exc}")
                        summary.dropped += 1
                        continue
                    output.write(frame)
                    summary.fused += 1
                    if progress is not None:
                        progress(summary.fused)
                    if summary.fused == max_frames:
                        break
            except KeyboardInterrupt:
                summary.interrupted = True
            except UnequalLengths as exc:
                ended = exc
        summary.seconds = time.perf_counter() - start
    if ended is not None:
        raise ended
    return summary


def _pairs(first: FrameInput, second: FrameInput, summary: VideoSummary, shortest: bool,
           warn: Callable[[str], None]) -> Iterator[Tuple[str, np.ndarray, np.ndarray]]:
    """The decodable pairs in order, each with a label naming its frames; a pair with an undecodable frame is
    skipped (counted in ``summary``, named to ``warn``). One input ending first raises ``UnequalLengths``
    unless ``shortest``."""
    number = 0
    while True:
        frame_a, frame_b = first.read(), second.read()
        number += 1
        if frame_a is None or frame_b is None:
            if not shortest and (frame_a is None) != (frame_b is None):
                roles = [f"A ({first.name})", f"B ({second.name})"]
                ended, going = roles if frame_a is None else roles[::-1]
                kept = f"kept the {summary.fused} fused frames in {summary.output}" if summary.fused else \
                    "nothing written"
                raise UnequalLengths(f"{ended} ran out at frame {number} but {going} did not: {kept} "
                                     "(--shortest stops at the shorter input)", summary)
            return
        if frame_a.pixels is None or frame_b.pixels is None:
            undecodable = " and ".join(f.name for f in (frame_a, frame_b) if f.pixels is None)
            warn(f"dig2dig: warning: skipped frame {number}: {undecodable} cannot be decoded")
            summary.skipped += 1
            continue
        yield f"frame {number} ({frame_a.name}, {frame_b.name})", frame_a.pixels, frame_b.pixels


def _output_frame(fuser: FrameFuser, label: str, a: np.ndarray, b: np.ndarray, side_by_side: bool) -> np.ndarray:
    """What to write for one pair: the fused frame, or A | B | fused; a pair the fuser refuses is named."""
    try:
        fused = fuser(a, b)
    except InputError as exc:
        raise InputError(f"{label}: {exc}") from exc
    return np.hstack([_bgr8(a), _bgr8(b), _bgr8(fused)]) if side_by_side else fused


def _bgr8(frame: np.ndarray) -> np.ndarray:
    """A frame as uint8 BGR for viewing: 16-bit samples stretched as the fusion reads them."""
    if frame.dtype != np.uint8:
        source = io.read_frame("frame", frame)
        frame = io.to_image(source.luma, source.chroma)
        frame = frame if frame.ndim == 2 else frame[..., ::-1]
    return frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)


def _warn(text: str) -> None:
    print(text, file=sys.stderr)
