"""Reading source images (files, or frames in memory), pairing them, and writing results.

The fusion works on luminance only, so a source is read into a luma plane (float32, [0, 1]) plus,
for colour images, its Cb/Cr planes, which are put back around the fused luma at the end.
Colour conversion is full-range BT.601 YCbCr (the JPEG convention, as OpenCV's
``COLOR_RGB2YCrCb`` computes it on float data), the space DDFM-style fusion papers use.
"""
from __future__ import annotations

import codecs
import io
import os
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

from .atomic import atomic_replace
from .errors import InputError, NumericalError
from .settings import MAX_PIXELS

PathLike = Union[str, "os.PathLike[str]"]

# 16-bit and float sources have no fixed white level: raw thermal frames, for instance, fill only
# a narrow band of the 16-bit range. They are stretched so that these percentiles of the pixel
# values map to 0 and 1 (values outside are clipped); the half-percent tails keep a few hot or
# dead pixels from compressing the whole image into a sliver of grey levels.
LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5

# Output formats by file extension, with the deepest sample each can hold.
WRITE_DEPTHS = {".png": 16, ".tif": 16, ".tiff": 16, ".jpg": 8, ".jpeg": 8, ".bmp": 8}


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}


@dataclass(frozen=True)
class Source:
    """One source image: luma (H, W), chroma (2, H, W) Cb/Cr or None for grey, both float32 in [0, 1]."""

    path: str
    luma: np.ndarray
    chroma: Optional[np.ndarray]
    bit_depth: int

    @property
    def height(self) -> int:
        return int(self.luma.shape[0])

    @property
    def width(self) -> int:
        return int(self.luma.shape[1])


def read_source(path: PathLike, max_pixels: int = MAX_PIXELS) -> Source:
    """Read an 8/16-bit or float image (grey, RGB or RGBA; alpha dropped) into a ``Source``.

    An image of more than ``max_pixels`` (``settings.MAX_PIXELS``: a decompression bomb's header declares
    billions) is refused, from its header when the format allows, before decoding. The samples are converted by :func:`source_from_pixels`;
    every problem is an ``InputError`` that names the file.
    """
    name = os.fspath(path)
    return source_from_pixels(name, read_pixels(name, max_pixels))


def read_pixels(path: PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """An image file's samples as decoded, (H, W) grey or (H, W, 3) RGB (alpha dropped), after the checks of
    :func:`read_source`: the file's size in pixels from its header, then the decoded image's."""
    name = os.fspath(path)
    data = _read_bytes(name)
    _check_pixels(name, _header_size(data), max_pixels)
    raw = _decode(name, data)
    _check_pixels(name, raw.shape[:2], max_pixels)
    return _rgb_or_grey(name, raw)


def read_frame(name: str, frame: np.ndarray, max_pixels: int = MAX_PIXELS) -> Source:
    """A frame in memory as OpenCV gives it, uint8 or uint16 (H, W) grey or (H, W, 3) BGR, as a ``Source``.

    Converted by :func:`source_from_pixels`, as a file of the same samples; a frame of more than
    ``max_pixels`` or any other frame is an ``InputError`` naming ``name``.
    """
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{name}: expected a numpy array, got {type(frame).__name__}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise InputError(f"{name}: unsupported frame dtype {frame.dtype} (use uint8, or uint16 for raw thermal)")
    if not (frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 3)):
        raise InputError(f"{name}: unsupported frame shape {frame.shape} (use (H, W) grey or (H, W, 3) BGR)")
    if frame.size == 0:
        raise InputError(f"{name}: empty frame of shape {frame.shape}")
    _check_pixels(name, frame.shape[:2], max_pixels)
    return source_from_pixels(name, frame if frame.ndim == 2 else frame[..., ::-1])


def source_from_pixels(name: str, pixels: np.ndarray) -> Source:
    """A ``Source`` from (H, W) grey or (H, W, 3) RGB samples: the one conversion of files and frames.

    8-bit data is scaled by 1/255 exactly; 16-bit and float data (float only when outside
    [0, 1]) are stretched by the ``LOW_PERCENTILE``/``HIGH_PERCENTILE`` percentiles. RGB whose
    three channels are identical is treated as grey. Problems are ``InputError``s naming ``name``.
    """
    values, bit_depth = _normalise(name, _fold_grey(pixels))
    if values.ndim == 2:
        return Source(name, values, None, bit_depth)
    ycrcb = np.clip(cv2.cvtColor(values, cv2.COLOR_RGB2YCrCb), 0.0, 1.0)
    luma = np.ascontiguousarray(ycrcb[..., 0])
    chroma = np.ascontiguousarray(np.stack([ycrcb[..., 2], ycrcb[..., 1]]))
    return Source(name, luma, chroma, bit_depth)


def _read_bytes(name: str) -> bytes:
    if not os.path.exists(name):
        raise InputError(f"{name}: no such file")
    if os.path.isdir(name):
        raise InputError(f"{name}: is a directory, not an image")
    try:
        with open(name, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InputError(f"{name}: cannot read ({exc.strerror or exc})") from exc
    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    return data


def _check_pixels(name: str, size: Optional[Tuple[int, ...]], limit: int) -> None:
    """Refuse a (height, width) of more than ``limit`` pixels; None (size unknown) passes."""
    if size is not None and size[0] * size[1] > limit:
        raise InputError(f"{name}: {size[0]}x{size[1]} pixels (height x width, {size[0] * size[1] / 1e6:.1f} "
                         f"megapixels) exceed the limit of {limit} pixels; if the image is genuine, raise it "
                         "with --max-pixels N (max_pixels= in Python)")


def _header_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) as a PNG, JPEG, BMP, TIFF, WebP, Netpbm (PBM, PGM, PPM, PAM, PFM), Sun raster or Radiance
    HDR header declares them; None if not found (other formats are checked after decoding)."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            width, height = struct.unpack_from(">II", data, 16)
            return height, width
        if data.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if data.startswith(b"BM"):
            width, height = struct.unpack_from("<HH" if data[14:18] == b"\x0c\0\0\0" else "<ii", data, 18)
            return abs(height), abs(width)
        if data[:2] in (b"II", b"MM"):
            return _tiff_size(data, "<" if data[:2] == b"II" else ">")
        if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
            return _webp_size(data)
        if data[:1] == b"P" and data[1:2] in b"1234567Ff":
            return _netpbm_size(data)
        if data.startswith(b"\x59\xa6\x6a\x95"):  # Sun raster
            width, height = struct.unpack_from(">II", data, 4)
            return height, width
        if data.startswith(b"#?"):  # Radiance HDR: the resolution line follows the header's blank line
            found = re.search(rb"\n\n[-+]Y (\d+) [-+]X (\d+)", data[:4096])
            return (int(found.group(1)), int(found.group(2))) if found else None
    except struct.error:
        pass
    return None


def _webp_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) of a WebP's first chunk: lossy VP8, lossless VP8L or extended VP8X."""
    chunk = data[12:16]
    if chunk == b"VP8 ":
        width, height = struct.unpack_from("<HH", data, 26)
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L":
        (bits,) = struct.unpack_from("<I", data, 21)
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X":
        width, height = (int.from_bytes(data[at:at + 3], "little") + 1 for at in (24, 27))
        return height, width
    return None


def _netpbm_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) of a PBM/PGM/PPM (P1-P6) or PFM header (width, then height, comments skipped), or of
    a PAM's (P7) WIDTH and HEIGHT lines."""
    head = re.sub(rb"#[^\n]*", b" ", data[2:4096])
    if data[1:2] == b"7":
        width, height = (re.search(rb"\b" + key + rb"\s+(\d+)", head) for key in (b"WIDTH", b"HEIGHT"))
        return (int(height.group(1)), int(width.group(1))) if width and height else None
    numbers = re.match(rb"\s+(\d+)\s+(\d+)", head)
    return (int(numbers.group(2)), int(numbers.group(1))) if numbers else None


# JPEG start-of-frame markers (every SOFn but DHT C4, JPG C8 and DAC CC), and those with no length.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_BARE = frozenset(range(0xD0, 0xD8)) | {0x01}


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(height, width) of the first JPEG frame header; bytes between segments that start no marker are
    skipped, as libjpeg skips them."""
    at = 2
    while at + 1 < len(data):
        marker = data[at + 1]
        if data[at] != 0xFF or marker in (0x00, 0xFF):
            at += 1
        elif marker in _JPEG_BARE:
            at += 2
        elif marker in _JPEG_SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return height, width
        elif marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        else:
            at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None


# TIFF (magic 42) and BigTIFF (43): where the first IFD's offset is and its format, the format of the
# IFD's entry count, the size of an entry (tag, type, count, value) and where its value is.
_TIFF_LAYOUTS = {42: (4, "I", "H", 12, 8), 43: (8, "Q", "Q", 20, 12)}
_TIFF_VALUE = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def _tiff_size(data: bytes, order: str) -> Optional[Tuple[int, int]]:
    """(height, width) from the ImageLength and ImageWidth tags of a TIFF's first IFD."""
    (magic,) = struct.unpack_from(order + "H", data, 2)
    if magic not in _TIFF_LAYOUTS:
        return None
    at, offset, count, size, value = _TIFF_LAYOUTS[magic]
    (ifd,) = struct.unpack_from(order + offset, data, at)
    if ifd >= len(data):
        return None
    (entries,) = struct.unpack_from(order + count, data, ifd)
    start = ifd + struct.calcsize(count)
    tags = {}
    for entry in range(start, start + size * min(entries, (len(data) - start) // size), size):
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257) and kind in _TIFF_VALUE:
            tags[tag] = struct.unpack_from(order + _TIFF_VALUE[kind], data, entry + value)[0]
    return (tags[257], tags[256]) if len(tags) == 2 else None


def _decode(name: str, data: bytes) -> np.ndarray:
    """Decode with OpenCV from bytes (one read; also works for non-ASCII paths on Windows)."""
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except (cv2.error, MemoryError) as exc:
        reason = getattr(exc, "err", "") or type(exc).__name__
        raise InputError(f"{name}: {_why_undecodable(data)} (the decoder failed: {reason})") from exc
    if raw is None:
        raise InputError(f"{name}: {_why_undecodable(data)}")
    if raw.size == 0 or raw.shape[0] == 0 or raw.shape[1] == 0:
        raise InputError(f"{name}: image has zero height or width ({raw.shape[0]}x{raw.shape[1]})")
    return raw


def _why_undecodable(data: bytes) -> str:
    for magic, kind in _SIGNATURES.items():
        if data.startswith(magic):
            return f"corrupt or truncated {kind} file"
    head = data[:512]
    if b"\x00" not in head:
        try:
            codecs.getincrementaldecoder("utf-8")().decode(head)
            return "not an image (it looks like a text file)"
        except UnicodeDecodeError:
            pass
    return "not an image in a format OpenCV can read"


def _rgb_or_grey(name: str, raw: np.ndarray) -> np.ndarray:
    """A decoded file's samples as (H, W) grey or (H, W, 3) RGB: drops alpha and reorders BGR."""
    if raw.ndim == 2:
        return raw
    channels = raw.shape[2]
    if channels == 1 or channels == 2:
        return raw[..., 0]
    if channels not in (3, 4):
        raise InputError(f"{name}: unsupported image with {channels} channels")
    return raw[..., 2::-1]


def _fold_grey(pixels: np.ndarray) -> np.ndarray:
    """RGB whose three channels are identical as (H, W) grey; anything else unchanged."""
    if pixels.ndim == 3 and np.array_equal(pixels[..., 0], pixels[..., 1]) and \
            np.array_equal(pixels[..., 0], pixels[..., 2]):
        return pixels[..., 0]
    return pixels


def _normalise(name: str, pixels: np.ndarray) -> Tuple[np.ndarray, int]:
    """Map samples to float32 [0, 1]; returns (array, bit depth of the file)."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels, dtype=np.float32) / np.float32(255.0), 8
    if pixels.dtype == np.uint16:
        return _stretch(pixels.astype(np.float32), 65535.0), 16
    if pixels.dtype in (np.float32, np.float64):
        if np.isnan(pixels).any():
            raise InputError(f"{name}: float image contains NaN values")
        if np.isinf(pixels).any():
            raise InputError(f"{name}: float image contains infinite values")
        values = pixels.astype(np.float32)
        if values.min() >= 0.0 and values.max() <= 1.0:
            return np.ascontiguousarray(values), 32
        return _stretch(values, 1.0), 32
    raise InputError(f"{name}: unsupported sample type {pixels.dtype} "
                     "(use 8- or 16-bit unsigned integers, or float)")


def _stretch(values: np.ndarray, full_scale: float) -> np.ndarray:
    """Percentile stretch to [0, 1]; a flat image is scaled by ``full_scale`` instead."""
    low, high = np.percentile(values, [LOW_PERCENTILE, HIGH_PERCENTILE])
    if high <= low:
        low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.ascontiguousarray(np.clip(values / np.float32(full_scale), 0.0, 1.0))
    scaled = (values - np.float32(low)) / np.float32(high - low)
    return np.ascontiguousarray(np.clip(scaled, 0.0, 1.0), dtype=np.float32)


def check_pair(a: Source, b: Source, remedy: str = "pass --resize to resample them to one size") -> None:
    """Fusion needs registered sources of one size; say which sources differ and how to proceed."""
    if a.luma.shape != b.luma.shape:
        raise InputError(f"{a.path} is {a.height}x{a.width} but {b.path} is {b.height}x{b.width} "
                         f"(height x width): the sources must be the same size ({remedy})")


def shrunk_size(height: int, width: int, max_side: int) -> Optional[Tuple[int, int]]:
    """(height, width) scaled so that the long side is ``max_side``, or None if it is already at most that."""
    scale = max_side / max(height, width)
    if scale >= 1:
        return None
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_to(source: Source, height: int, width: int) -> Source:
    """Resample a source (luma and chroma) to height x width: area when shrinking, cubic otherwise."""
    if height < 1 or width < 1:
        raise InputError(f"{source.path}: cannot resize to {height}x{width}")
    if (height, width) == source.luma.shape:
        return source
    shrinking = height <= source.height and width <= source.width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC

    def plane(values: np.ndarray) -> np.ndarray:
        resized = cv2.resize(values, (width, height), interpolation=interpolation)
        return np.clip(resized, 0.0, 1.0)

    chroma = None if source.chroma is None else np.stack([plane(c) for c in source.chroma])
    return replace(source, luma=plane(source.luma), chroma=chroma)


def merge_chroma(sources: Sequence[Source]) -> Optional[np.ndarray]:
    """The Cb/Cr planes for the fused image, or None when every source is grey.

    One colour source lends its chroma unchanged. Several are fused per pixel by their
    saturation, C = sum(C_i * |C_i - 0.5|) / sum(|C_i - 0.5|) (0.5 where all are neutral), the
    chrominance rule of DeepFuse (Prabhakar et al., ICCV 2017) that U2Fusion and later
    multi-exposure / multi-focus fusion work also use: the more vivid colour wins, so washed-out
    over-exposed or grey regions do not dilute it.
    """
    coloured = [s for s in sources if s.chroma is not None]
    for other in coloured[1:]:
        check_pair(coloured[0], other)
    planes = [s.chroma for s in coloured if s.chroma is not None]
    if not planes:
        return None
    if len(planes) == 1:
        return planes[0].copy()
    numerator = np.zeros_like(planes[0])
    denominator = np.zeros_like(planes[0])
    for chroma in planes:
        weight = np.abs(chroma - np.float32(0.5))
        numerator += chroma * weight
        denominator += weight
    neutral = denominator == 0.0
    fused = numerator / np.where(neutral, np.float32(1.0), denominator)
    fused[neutral] = 0.5
    return fused


def output_bit_depth(path: PathLike, sources: Sequence[Source]) -> int:
    """16 for a .tif/.tiff output when a source had more than 8 bits, else 8 (the default)."""
    extension = os.path.splitext(os.fspath(path))[1].lower()
    deep = any(source.bit_depth > 8 for source in sources)
    return 16 if extension in (".tif", ".tiff") and deep else 8


def to_image(luma: np.ndarray, chroma: Optional[np.ndarray] = None, bit_depth: int = 8) -> np.ndarray:
    """Fused luma (H, W) plus optional Cb/Cr (2, H, W) to a uint8/uint16 (H, W) or (H, W, 3) RGB image."""
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if not np.isfinite(luma).all():
        raise NumericalError("the fused image contains NaN or Inf values")
    luma = np.asarray(luma, dtype=np.float32)
    if chroma is None:
        pixels = np.clip(luma, 0.0, 1.0)
    else:
        ycrcb = np.dstack([luma, chroma[1], chroma[0]]).astype(np.float32)
        pixels = np.clip(cv2.cvtColor(ycrcb, cv2.COLOR_YCrCb2RGB), 0.0, 1.0)
    if bit_depth == 16:
        return np.rint(pixels * 65535.0).astype(np.uint16)
    return np.rint(pixels * 255.0).astype(np.uint8)


def write_image(path: PathLike, image: np.ndarray) -> None:
    """Atomically write a uint8/uint16 grey or RGB image; the extension picks the format."""
    name = os.fspath(path)
    extension = os.path.splitext(name)[1].lower()
    if extension not in WRITE_DEPTHS:
        raise InputError(f"{name}: unknown image extension '{extension}' "
                         f"(use one of {', '.join(sorted(WRITE_DEPTHS))})")
    if image.dtype not in (np.uint8, np.uint16) or not (
            image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected a uint8/uint16 (H, W) or (H, W, 3) image, got {image.dtype} {image.shape}")
    if image.dtype == np.uint16 and WRITE_DEPTHS[extension] < 16:
        raise InputError(f"{name}: {extension} cannot hold 16-bit samples (use .png or .tif)")
    pixels = image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1])
    try:
        ok, encoded = cv2.imencode(extension, pixels)
    except cv2.error as exc:
        raise InputError(f"{name}: cannot encode image ({exc})") from exc
    if not ok:
        raise InputError(f"{name}: cannot encode image as {extension}")
    _write_atomic(name, encoded.tobytes())


def write_npy(path: PathLike, array: np.ndarray) -> None:
    """Atomically write an array as a .npy file (no pickling)."""
    name = os.fspath(path)
    if not name.lower().endswith(".npy"):
        raise InputError(f"{name}: expected a .npy file name")
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    _write_atomic(name, buffer.getvalue())


def read_npy(path: PathLike) -> np.ndarray:
    """A float32 array from a .npy file (no pickles), e.g. ``--init-noise``; NaN/Inf refused."""
    name = os.fspath(path)
    try:
        array = np.load(io.BytesIO(_read_bytes(name)), allow_pickle=False)
    except ValueError as exc:
        raise InputError(f"{name}: not a readable .npy array ({exc})") from exc
    if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
        raise InputError(f"{name}: expected a finite float array, got dtype {array.dtype}")
    return array.astype(np.float32)


def write_text(path: PathLike, text: str) -> None:
    """Atomically write UTF-8 text (CSV tables, reports): readers never see a half-written file."""
    _write_atomic(os.fspath(path), text.encode("utf-8"))


def _write_atomic(name: str, data: bytes) -> None:
    """Write ``data`` to ``name`` through ``atomic_replace`` (old file or complete new one, never partial)."""
    directory = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(directory):
        raise InputError(f"{name}: output directory {directory} does not exist")
    if os.path.isdir(name):
        raise InputError(f"{name}: is a directory")
    try:
        with atomic_replace(Path(name)) as (staged,):
            with open(staged, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
    except OSError as exc:
        raise InputError(f"{name}: cannot write ({exc.strerror or exc})") from exc
