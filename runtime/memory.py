"""The memory guard: a fusion's peak memory, estimated before any model work, against what the machine has.

The estimate is the model's activations for one image (or one tile), held about twice over by
onnxruntime's CPU arena, plus the loop's full-size arrays per pair. The activations are a term linear in
the pixels and, for the UNet's middle self-attention at 1/``2**(levels-1)`` of the size, a term in the
square of its tokens: a 2048x1536 image asks the bundled prior for about 40 GB in one call, a 512 px tile
for 0.4 GB. The constants were fitted to peak RSS of the bundled prior on a CPU (benchmarks/tiling.py,
docs/BENCHMARKS.md) and scale with the model's width and heads, read from its metadata.

:func:`plan` runs the model untiled when the estimate fits, otherwise on the largest tile that fits
(``runtime.tiling``), and refuses with an ``InputError`` that says what to do when nothing fits or tiling
is off. Only runners whose activations live in host memory (``Runner.on_host``) are checked.
"""
from __future__ import annotations

import os
from typing import Optional, Sequence, Tuple

from . import io
from .backends.base import ModelInfo
from .errors import InputError
from .settings import Limits

GIB = 1 << 30
# Fitted to the bundled prior (16 channels, two heads of 32 in the middle attention), onnxruntime 1.32 on a
# CPU: bytes of activations per pixel per channel of the first level; copies of each head's T x T
# attention matrix held at once; how many times over the CPU arena holds a call's activations; the
# loop's bytes per pixel of one pair (x_t, x0, sources, DIG gains and weights, the EM step's spectra).
BYTES_PER_PIXEL_CHANNEL = 17.5
ATTENTION_COPIES = 2.1
ARENA_FACTOR = 2.1
LOOP_BYTES_PER_PIXEL = 250
# Tiles tried when a fusion does not fit, largest first. Larger tiles see more context but cost more than
# they save: at 2048x1536, 1024-px tiles peaked at 9.6 GiB and took 156 s, 512-px tiles 1.4 GiB and 137 s
# (the attention's work grows with the square of a tile's pixels); 384-px tiles changed no metric by more
# than 0.0007 on the full-resolution pairs (docs/BENCHMARKS.md, section 8).
TILE_SIDES = (512, 384, 256)


def activation_bytes(info: ModelInfo, height: int, width: int) -> int:
    """Bytes of activations of one model call on one ``height`` x ``width`` image."""
    config = info.config
    channels = int(config.get("num_channels", 128))
    mult = [int(m) for m in str(config.get("channel_mult", "1,2,4,4")).split(",") if m.strip()] or [1]
    head_channels = int(config.get("num_head_channels", -1))
    middle = channels * mult[-1]
    heads = middle // head_channels if head_channels > 0 else int(config.get("num_heads", 1))
    tokens = height * width / 4 ** (len(mult) - 1)
    return int(BYTES_PER_PIXEL_CHANNEL * channels * height * width + ATTENTION_COPIES * 4 * heads * tokens ** 2)


def fusion_bytes(info: ModelInfo, size: Tuple[int, int], pairs: int = 1, tile: Optional[int] = None) -> int:
    """The estimated peak bytes a fusion adds: ``pairs`` pairs of the padded ``size``, the model on one image
    at a time, on ``tile`` x ``tile`` tiles when ``tile`` is given."""
    height, width = size if tile is None else (min(size[0], tile), min(size[1], tile))
    return int(ARENA_FACTOR * activation_bytes(info, height, width) + LOOP_BYTES_PER_PIXEL * pairs * size[0] * size[1])


def available_bytes() -> Optional[int]:
    """Memory this process may still take: the kernel's MemAvailable, or a cgroup's remaining limit if lower;
    None where neither can be read (the guard is then off)."""
    found = []
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except OSError:
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as current:
            cap = limit.read().strip()
            if cap != "max":
                found.append(int(cap) - int(current.read()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def resident_bytes() -> int:
    """This process's resident memory now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def budget(limits: Limits) -> Optional[int]:
    """The bytes a fusion may add: what is available, and no more than ``limits.max_memory`` less what the
    process already holds; None when neither is known."""
    free = available_bytes()
    if limits.max_memory is not None:
        room = limits.max_memory - resident_bytes()
        free = room if free is None else min(free, room)
    return free


def plan(info: ModelInfo, size: Tuple[int, int], pairs: int, limits: Limits, names: Sequence[str],
         room: Optional[int] = None) -> Optional[int]:
    """The tile side to run the model on (None: untiled) for ``pairs`` pairs of the padded ``size``, given
    ``room`` bytes (default :func:`budget`); an ``InputError`` naming ``names`` and saying what would fit when
    nothing does."""
    if limits.tile:
        return limits.tile if max(size) > limits.tile else None
    room = budget(limits) if room is None else room
    if room is None or fusion_bytes(info, size, pairs) <= room:
        return None
    tile = _largest_tile(info, size, pairs, room)
    if tile is not None and limits.tile is None:
        return tile
    if tile is not None:
        remedy = f"tile it with --tile {tile}, or shrink the sources with --max-side N"
    else:
        side = next((side for side in SIDES if side < max(size) and _largest_tile(
            info, io.shrunk_size(size[0], size[1], side) or size, pairs, room, untiled=True) is not None), None)
        remedy = (f"shrink the sources with --max-side {side}" if side
                  else "raise --max-memory" if limits.max_memory else "free some memory")
    where = " within --max-memory" if limits.max_memory else ""
    raise InputError(f"{', '.join(names)}: fusing {size[0]}x{size[1]} pixels needs an estimated "
                     f"{_amount(fusion_bytes(info, size, pairs))} of memory, {_amount(room)} is available{where}; "
                     f"{remedy} (tile=, max_side= in Python)")


def _amount(size: int) -> str:
    return f"{size / GIB:.1f} GB" if size >= GIB else f"{max(size, 0) >> 20} MB"


# Long sides :func:`plan` suggests shrinking to, largest first.
SIDES = (8192, 6144, 4096, 3072, 2048, 1536, 1024, 768, 512, 256)


def _largest_tile(info: ModelInfo, size: Tuple[int, int], pairs: int, room: int,
                  untiled: bool = False) -> Optional[int]:
    """The largest of ``TILE_SIDES`` below the long side whose fusion fits in ``room`` (with ``untiled``, the
    size itself counts as a tile)."""
    if untiled and fusion_bytes(info, size, pairs) <= room:
        return max(size)
    return next((side for side in TILE_SIDES
                 if side < max(size) and fusion_bytes(info, size, pairs, side) <= room), None)

