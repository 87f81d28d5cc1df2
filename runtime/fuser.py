"""Fuse frames in memory with one open backend: the object that ``api.fuse`` and the CLI are thin layers over.

    from dig2dig import Fuser
    with Fuser("ivf") as fuser:               # opens the bundled prior once
        fused = fuser(ir_frame, vis_frame)    # uint8/uint16 (H, W) grey or (H, W, 3) BGR in, uint8 out
        fused = fuser.fuse_batch([(ir_1, vis_1), (ir_2, vis_2)])   # N cameras of one size: one model call a step

    with Fuser("ivf", stream=True) as fuser:  # consecutive frames of a stream: DIG weights carried over
        fused = [fuser(ir, vis) for ir, vis in frames]
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import io, memory
from .api import FusionResult, PathLike, open_runner, pad_to_multiple
from .backends.base import Runner
from .errors import InputError
from .sampler import Trace, initial_noise, luminance_of_sample, sample_batch
from .settings import MAX_PIXELS, Limits, Settings, check_task, resolve
from .temporal import SCENE_CHANGE, STREAM_REFRESH_EVERY, StreamState, thumbnail
from .tiling import TiledRunner

# Frame sizes whose state a Fuser keeps: a stream has one; a few more serve alternating cameras or crops.
CACHED_SIZES = 4


@dataclass(frozen=True)
class SizeState:
    """What fusing one frame size needs that no frame changes."""

    shape: Tuple[int, int, int]  # (C, H', W'): the model's channels at the padded size
    x_T: np.ndarray              # the seeded start noise of that shape, read-only


class Fuser:
    """Fuses pairs of frames (roles per ``task``) with one backend, opened once, and settings resolved once.

    ``settings`` defaults to ``settings.resolve(task)``; ``runner`` is used as given (and left open
    by :meth:`close`), otherwise ``model`` is opened with ``backend`` as :func:`api.open_runner` does.

    ``stream``: the frames are consecutive frames of one camera pair (of N cameras in :meth:`fuse_batch`,
    each by its position in the batch), fused in order (``runtime.temporal``). A key frame computes its DIG
    weights as a still fusion does; the next frames reuse them with no source evaluations, until
    ``stream_refresh_every`` frames have passed or a scene change (the sources' thumbnails farther than
    ``scene_change`` from the key frame's). ``stream_warm_start`` s > 0 (a multiple of ``dig_every``): a frame
    after the first starts from the last fused sample noised to step s and runs only the steps after it (not
    after a scene change). A new frame size starts new streams. A GPU runner fuses stream frames as stills.

    ``limits`` bounds what a fusion takes (:class:`~dig2dig.runtime.settings.Limits`): a frame of more
    pixels is an ``InputError``; a fusion whose estimated peak memory exceeds the budget runs the model on
    tiles (``runtime.tiling``), or is an ``InputError`` before any model work (``runtime.memory``).
    """

    def __init__(self, task: str = "ivf", model: Optional[PathLike] = None, backend: str = "ort",
                 settings: Optional[Settings] = None, runner: Optional[Runner] = None, stream: bool = False,
                 stream_refresh_every: int = STREAM_REFRESH_EVERY, scene_change: float = SCENE_CHANGE,
                 stream_warm_start: int = 0, limits: Limits = Limits()):
        check_task(task)
        self.task, self.limits = task, limits
        self.settings = settings or resolve(task)
        if stream_refresh_every < 1:
            raise InputError(f"stream_refresh_every must be >= 1, got {stream_refresh_every}")
        if stream_warm_start and (stream_warm_start % self.settings.dig_every
                                  or not 0 < stream_warm_start < self.settings.steps):
            raise InputError(f"stream_warm_start must be a multiple of dig_every ({self.settings.dig_every}) "
                             f"below steps ({self.settings.steps}), got {stream_warm_start}")
        self.stream, self.stream_refresh_every, self.scene_change = stream, stream_refresh_every, scene_change
        self.stream_warm_start = stream_warm_start
        self.owns_runner = runner is None
        self.runner = runner or open_runner(model, backend)
        self._states: "OrderedDict[Tuple[int, int], SizeState]" = OrderedDict()
        self._tiles: Dict[Tuple[int, int, int], Optional[int]] = {}
        self._streams: List[StreamState] = []
        self._stream_size: Tuple[int, int] = (0, 0)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The fused uint8 frame: (H, W, 3) BGR if ``a`` or ``b`` is colour, else (H, W) grey.

        Frames are uint8, or uint16 for raw thermal, (H, W) grey or (H, W, 3) BGR as OpenCV gives them,
        converted as files with the same samples are (``io.source_from_pixels``).
        """
        return frame_of(self.fuse_sources(read_pair("", a, b, self.limits.max_pixels)))

    def fuse_batch(self, pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> List[np.ndarray]:
        """The fused frame of each pair (frames as for ``__call__``), every pair the same size: N cameras
        fused together, each frame as ``__call__`` fuses it alone (bit for bit on the CPU runner, which
        runs one image at a time; see :meth:`fuse_sources_batch`). Bad frames and sizes are
        ``InputError``s naming the pair, e.g. ``pairs[2] b: ...``, raised before any model work."""
        batch = [read_pair(f"pairs[{i}] ", *frames, self.limits.max_pixels) for i, frames in enumerate(pairs)]
        return [frame_of(result) for result in self.fuse_sources_batch(batch)]

    def fuse_sources(self, sources: Sequence[io.Source], init_noise: Optional[np.ndarray] = None,
                     stretch: bool = False, progress: Optional[Callable[[int, int], None]] = None) -> FusionResult:
        """Fuse two sources of one size (as ``api.prepare_sources`` gives them) into a ``FusionResult``.

        ``init_noise`` replaces the seeded x_T (shape ``(C, H', W')`` at the padded size);
        ``stretch`` applies DDFM's min-max output stretch (off by default: it changes the brightness).
        """
        return self._fuse([sources], init_noise, stretch, progress)[0]

    def fuse_sources_batch(self, batch: Sequence[Sequence[io.Source]], stretch: bool = False,
                           progress: Optional[Callable[[int, int], None]] = None) -> List[FusionResult]:
        """``fuse_sources`` of each pair of ``batch``, every source the same size (an ``InputError`` otherwise).

        On a host runner the pairs share one model call per step (``sampler.sample_batch``) and each
        result's ``seconds`` are the batch's; a GPU runner fuses them one by one on the device
        (``runtime.gpu``), whose loop takes one pair.
        """
        if not batch:
            return []
        for sources in batch:
            for source in sources:
                io.check_pair(batch[0][0], source, remedy="fuse other sizes in another batch")
        if self.runner.on_device:
            return [self.fuse_sources(sources, stretch=stretch, progress=progress) for sources in batch]
        return self._fuse(batch, None, stretch, progress)

    def _fuse(self, batch: Sequence[Sequence[io.Source]], init_noise: Optional[np.ndarray], stretch: bool,
              progress: Optional[Callable[[int, int], None]]) -> List[FusionResult]:
        """The results of pairs of sources of one size, fused together (one pair on a GPU runner)."""
        start = time.perf_counter()
        height, width = batch[0][0].luma.shape
        multiple = self.runner.info.multiple
        padded = np.stack([pad_to_multiple(np.stack([s.luma for s in sources]) * 2.0 - 1.0, multiple)
                           for sources in batch]).astype(np.float32)
        size = (int(padded.shape[2]), int(padded.shape[3]))
        x_T = self._start(size, init_noise)
        runner = self._runner_for(size, batch)
        traces = [Trace() for _ in batch]
        seconds: Dict[str, float] = {}
        if runner.on_device:  # a GPU backend: the whole loop stays on the device
            from .gpu import gpu_sample

            on_gpu = gpu_sample(runner, padded[0], self.settings, x_T, progress=progress, trace=traces[0])
            raws = [on_gpu.sample]
            seconds.update(on_gpu.seconds)
        elif self.stream:
            raws = self._stream_batch(runner, batch, padded, x_T, progress, traces)
        else:
            x_Ts = np.broadcast_to(x_T, (len(batch),) + x_T.shape)
            raws = sample_batch(runner, padded, self.settings, x_Ts, progress=progress, traces=traces)
        results = []
        for sources, raw, trace in zip(batch, raws, traces):
            fused = fused_luma(raw, height, width, stretch)
            image = io.to_image(fused, io.merge_chroma(sources))
            results.append(FusionResult(image=image, luma=fused, raw=raw, trace=trace, sources=list(sources),
                                        seconds={**seconds, **trace.seconds}))
        total = time.perf_counter() - start
        for result in results:
            result.seconds["total"] = total
        return results

    def _runner_for(self, size: Tuple[int, int], batch: Sequence[Sequence[io.Source]]) -> Runner:
        """The runner for pairs of the padded ``size``: tiled when ``limits.tile`` asks or the memory guard needs
        it (``memory.plan``, which raises when nothing fits), decided on the first batch of that size and batch
        length so that a stream's frames all run alike."""
        key = size + (len(batch),)
        if key not in self._tiles and (self.runner.on_host or self.limits.tile):
            names = [source.path for source in batch[0]]
            self._tiles[key] = memory.plan(self.runner.info, size, len(batch), self.limits, names)
        tile = self._tiles.get(key)
        return self.runner if tile is None else TiledRunner(self.runner, tile, self.limits.tile_overlap)

    def _stream_batch(self, runner: Runner, batch: Sequence[Sequence[io.Source]], padded: np.ndarray, x_T: np.ndarray,
                      progress: Optional[Callable[[int, int], None]], traces: List[Trace]) -> List[np.ndarray]:
        """The final samples of the next frame of each camera's stream: key frames compute their DIG weights,
        the others reuse their key frame's; all warm-start together, or none does."""
        size = batch[0][0].luma.shape
        if size != self._stream_size:
            self._streams, self._stream_size = [], size
        self._streams += [StreamState() for _ in range(len(batch) - len(self._streams))]
        streams = self._streams[:len(batch)]
        thumbs = [thumbnail([s.luma for s in sources]) for sources in batch]
        changed = [state.changed(thumb, self.scene_change) for state, thumb in zip(streams, thumbs)]
        samples = [state.sample for state in streams if state.sample is not None]
        warm = self.stream_warm_start > 0 and not any(changed) and len(samples) == len(streams)
        start_step = self.stream_warm_start if warm else 0
        keys = [state.needs_key(change, start_step, self.stream_refresh_every)
                for state, change in zip(streams, changed)]
        x_Ts = np.broadcast_to(x_T, (len(batch),) + x_T.shape)
        raws = sample_batch(runner, padded, self.settings, x_Ts, progress=progress, traces=traces,
                            weights=[None if key else state.weights for state, key in zip(streams, keys)],
                            start_step=start_step,
                            start_x0=np.stack(samples) if warm else None)
        for state, key, thumb, trace, raw in zip(streams, keys, thumbs, traces, raws):
            if key:
                state.weights = {r["step"]: r["weights"] for r in trace.refreshes}
                state.key_step, state.thumb, state.since_key = start_step, thumb, 0
            else:
                state.since_key += 1
            state.sample = raw
        return raws

    def _start(self, size: Tuple[int, int], init_noise: Optional[np.ndarray]) -> np.ndarray:
        """x_T for a frame padded to ``size``: ``init_noise`` once its shape is checked, else the cached noise."""
        state = self._state(size)
        if init_noise is None:
            return state.x_T
        if init_noise.shape != state.shape:
            raise InputError(f"--init-noise: shape {init_noise.shape} does not match the padded image {state.shape}")
        return init_noise

    def _state(self, size: Tuple[int, int]) -> SizeState:
        """The state of one padded frame size, made on its first frame; the least recently used size goes
        past ``CACHED_SIZES``."""
        if size in self._states:
            self._states.move_to_end(size)
            return self._states[size]
        shape = (self.runner.info.in_channels,) + size
        x_T = initial_noise(shape, self.settings.seed)
        x_T.flags.writeable = False
        self._states[size] = SizeState(shape, x_T)
        if len(self._states) > CACHED_SIZES:
            self._states.popitem(last=False)
        return self._states[size]

    def close(self) -> None:
        """Close the runner if this Fuser opened it (a runner passed in stays open)."""
        if self.owns_runner:
            self.runner.close()
            self.owns_runner = False

    def __enter__(self) -> "Fuser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pair(prefix: str, a: np.ndarray, b: np.ndarray, max_pixels: int = MAX_PIXELS) -> List[io.Source]:
    """Frames ``a`` and ``b`` (of at most ``max_pixels`` each) as sources of one size; errors name them
    ``prefix`` + ``a``/``b``."""
    source_a, source_b = io.read_frame(prefix + "a", a, max_pixels), io.read_frame(prefix + "b", b, max_pixels)
    io.check_pair(source_a, source_b, remedy="resize one frame to the other's size")
    return [source_a, source_b]


def frame_of(result: FusionResult) -> np.ndarray:
    """A result's image in a frame's channel order: BGR if colour."""
    image = result.image
    return image if image.ndim == 2 else np.ascontiguousarray(image[..., ::-1])


def fused_luma(raw: np.ndarray, height: int, width: int, stretch: bool) -> np.ndarray:
    """The fused luminance in [0, 1], float32, cropped to height x width from a final model-space sample."""
    fused = luminance_of_sample(raw)[:height, :width]
    if stretch:
        fused = (fused - fused.min()) / max(float(fused.max() - fused.min()), 1e-12)
    else:
        fused = np.clip((fused + 1.0) / 2.0, 0.0, 1.0)
    return fused.astype(np.float32)
