"""Fuzzing the source reader: seed images, mutators and the property, shared by tests/test_fuzz_reader.py
(a short run in CI) and benchmarks/fuzz_reader.py (a long one).

The property: every input, however malformed, ends in a decoded ``Source`` or an ``InputError`` that names
the file, never another exception. The seeds are real 8- and 16-bit PNG, JPEG, TIFF and BMP files encoded
from a vendored pair, and the committed corpus in tests/data/fuzz (the same seeds plus hand-made malformed
files; ``python tests/fuzz_reader_cases.py`` rewrites it).
"""
from __future__ import annotations

import random
import re
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Dict, Tuple

import cv2
import numpy as np

from dig2dig.runtime import io
from dig2dig.runtime.errors import InputError

DATA = Path(__file__).resolve().parent / "data"
CORPUS = DATA / "fuzz"
# The seeds' pixels: a 24x32 crop of a vendored colour image (MSRS 00055D visible).
SEED_IMAGE = DATA / "pairs" / "ivf" / "b" / "00055D.png"
# The property reads with this pixel limit, so that a mutated header cannot make a decode slow.
FUZZ_MAX_PIXELS = 1 << 20
# Sizes a header is rewritten to: edge cases of the fields, and values over FUZZ_MAX_PIXELS and settings.MAX_PIXELS.
SIZES = (0, 1, 2, 3, 255, 256, 1023, 1024, 1025, 4097, 65500, 65535, 60000, 2 ** 31 - 1, 2 ** 32 - 1)
HUGE = (1100, 7072, 10000, 60000, 65535)

Mutator = Callable[[bytes, random.Random], bytes]


def encoded_seeds() -> Dict[str, bytes]:
    """Real files of the seed crop: PNG and TIFF of 8 and 16 bits, JPEG and BMP of 8, grey and colour."""
    bgr = cv2.imread(str(SEED_IMAGE), cv2.IMREAD_COLOR)[30:54, 40:72]
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    pixels = {"rgb8": bgr, "grey8": grey, "rgb16": bgr.astype(np.uint16) * 257, "grey16": grey.astype(np.uint16) * 257}
    formats = {".png": pixels, ".tif": pixels, ".jpg": {k: pixels[k] for k in ("rgb8", "grey8")},
               ".bmp": {k: pixels[k] for k in ("rgb8", "grey8")}}
    seeds = {}
    for extension, images in formats.items():
        for kind, image in images.items():
            ok, encoded = cv2.imencode(extension, image)
            assert ok, (extension, kind)
            seeds[f"seed_{kind}{extension}"] = encoded.tobytes()
    return seeds


def malformed_seeds() -> Dict[str, bytes]:
    """Hand-made malformed files: decompression bombs of each format, truncations, a zero size, text."""
    seeds = encoded_seeds()
    made = {f"bomb_60000x60000{name[-4:]}": set_size(seeds[name], 60000, 60000)
            for name in ("seed_rgb8.png", "seed_rgb8.jpg", "seed_rgb8.bmp", "seed_grey16.tif")}
    made.update({
        "truncated.png": seeds["seed_rgb8.png"][:200],
        "truncated.jpg": seeds["seed_rgb8.jpg"][:300],
        "truncated.tif": seeds["seed_grey16.tif"][:100],
        "zero_width.png": set_size(seeds["seed_grey8.png"], 24, 0),
        "text.png": b"this is not an image\n",
    })
    return made


def corpus() -> Dict[str, bytes]:
    """The committed corpus: file name -> bytes."""
    return {path.name: path.read_bytes() for path in sorted(CORPUS.iterdir())}


def seeds() -> Dict[str, bytes]:
    """The corpus, plus as ``fresh_*`` the seeds encoded here where this OpenCV encodes them otherwise."""
    committed = corpus()
    fresh = {f"fresh_{name}": data for name, data in encoded_seeds().items() if committed.get(name) != data}
    return {**committed, **fresh}


def set_size(data: bytes, height: int, width: int) -> bytes:
    """``data`` with the size its PNG, JPEG, BMP or TIFF header declares rewritten (the PNG CRC kept valid)."""
    if data.startswith(b"\x89PNG") and len(data) >= 33:
        ihdr = b"IHDR" + struct.pack(">II", width % 2 ** 32, height % 2 ** 32) + data[24:29]
        return data[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + data[33:]
    if data.startswith(b"\xff\xd8"):
        frame = data.find(b"\xff\xc0")
        if frame < 0 or frame + 9 > len(data):
            return data
        return data[:frame + 5] + struct.pack(">HH", height % 2 ** 16, width % 2 ** 16) + data[frame + 9:]
    if data.startswith(b"BM") and len(data) >= 26:
        return data[:18] + struct.pack("<ii", width % 2 ** 31, height % 2 ** 31) + data[26:]
    if data.startswith(b"II*\x00"):
        for tag, value in ((b"\x00\x01", width), (b"\x01\x01", height)):
            for entry in re.finditer(re.escape(tag) + b"[\x03\x04]\x00\x01\x00\x00\x00", data):
                field = b"\x04\x00\x01\x00\x00\x00" + struct.pack("<I", value % 2 ** 32)
                data = data[:entry.start() + 2] + field + data[entry.start() + 12:]
    return data


def flip_bits(data: bytes, rng: random.Random) -> bytes:
    """1 to 8 random bits flipped."""
    mutable = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(mutable))
        mutable[at] ^= 1 << rng.randrange(8)
    return bytes(mutable)


def insert_bytes(data: bytes, rng: random.Random) -> bytes:
    """1 to 64 random bytes inserted at a random place."""
    at = rng.randrange(len(data) + 1)
    return data[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))) + data[at:]


def delete_bytes(data: bytes, rng: random.Random) -> bytes:
    """A random span of 1 to 64 bytes deleted."""
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.randint(1, 64):]


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut after a random number of bytes (at least one)."""
    return data[:rng.randint(1, max(1, len(data) - 1))]


def wrong_size(data: bytes, rng: random.Random) -> bytes:
    """The header's size rewritten to edge values or small random ones."""
    def side() -> int:
        return rng.choice(SIZES) if rng.random() < 0.5 else rng.randint(0, 2048)

    return set_size(data, side(), side())


def huge_size(data: bytes, rng: random.Random) -> bytes:
    """The header's size rewritten to more pixels than the limit."""
    return set_size(data, rng.choice(HUGE), rng.choice(HUGE))


MUTATORS: Tuple[Mutator, ...] = (flip_bits, insert_bytes, delete_bytes, truncate, wrong_size, huge_size)


def mutate(data: bytes, rng: random.Random, steps: int) -> bytes:
    """``steps`` random mutators applied in turn (an empty result becomes one byte)."""
    for _ in range(steps):
        data = rng.choice(MUTATORS)(data, rng) or b"\x00"
    return data


def outcome(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` and read it: "decoded" or "refused" (an ``InputError`` naming the file).

    Any other exception propagates: that is a failure of the property.
    """
    path.write_bytes(data)
    try:
        source = io.read_source(path, max_pixels=FUZZ_MAX_PIXELS)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(f"{path}: ") and "\n" not in message, message
        return "refused"
    assert source.luma.dtype == np.float32 and source.height * source.width <= FUZZ_MAX_PIXELS
    assert np.isfinite(source.luma).all() and 0.0 <= source.luma.min() and source.luma.max() <= 1.0
    return "decoded"


def write_corpus(folder: Path = CORPUS) -> None:
    """Write the seeds and the malformed files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**encoded_seeds(), **malformed_seeds()}.items():
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    write_corpus(Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS)
