"""Fusing N pairs of frames together (Fuser.fuse_batch): one model call per step, each pair as if fused alone."""
from __future__ import annotations

from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
import pytest

from dig2dig import Fuser
from dig2dig.runtime import api, gpu
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.fuser import read_pair
from dig2dig.runtime.sampler import Trace, sample
from dig2dig.runtime.schedule import Schedule
from dig2dig.runtime.settings import Settings, resolve
from test_fuser import frames

Frames = Tuple[np.ndarray, np.ndarray]
Call = Tuple[Tuple[int, ...], List[int]]
HEIGHT, WIDTH = 64, 96  # a common crop of the pairs below (keeps the tests fast)


class RecordingRunner(Runner):
    """A runner recording the shape and timesteps of every batch, passing the calls on."""

    def __init__(self, runner: Runner, on_device: bool = False):
        self.runner, self.info, self.on_device = runner, runner.info, on_device
        self.calls: List[Call] = []

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        self.calls.append((x.shape, [int(v) for v in t]))
        return self.runner.denoise(x, t)


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    with api.open_runner() as opened:
        yield opened


def cropped(task: str, name: str) -> Frames:
    a, b = frames(task, name)
    return np.ascontiguousarray(a[:HEIGHT, :WIDTH]), np.ascontiguousarray(b[:HEIGHT, :WIDTH])


# Grey, grey with a colour visible frame, and a larger grey pair cropped to the same size.
PAIRS = [cropped("ivf", "10"), cropped("ivf", "00055D"), cropped("ivf", "22")]


def expected_calls(timesteps: Sequence[int], n: int, scale: int) -> List[Call]:
    """Each step's x_t of the n pairs in one call; on a refresh (steps 0 and 2 of 4) the n pairs' two
    sources noised to t and t' join that call, or make a call of their own at 1/scale of the size."""
    calls: List[Call] = []
    for i, t in enumerate(timesteps):
        x_t = ((n, 1, HEIGHT, WIDTH), [t] * n)
        if i % 2 or i + 1 == len(timesteps):
            calls.append(x_t)
            continue
        sources = ([t] * 2 + [timesteps[i + 1]] * 2) * n
        if scale == 1:
            calls.append(((5 * n, 1, HEIGHT, WIDTH), x_t[1] + sources))
        else:
            calls += [x_t, ((4 * n, 1, HEIGHT // scale, WIDTH // scale), sources)]
    return calls


@pytest.mark.parametrize("dig_scale", [1, 2])
def test_a_batch_is_one_call_a_step_and_equals_its_pairs_fused_alone(dig_scale: int, runner: Runner) -> None:
    settings = resolve("ivf", steps=4, dig_scale=dig_scale)
    assert settings.dig_every == 2
    recording = RecordingRunner(runner)
    fuser = Fuser("ivf", settings=settings, runner=recording)
    fused = fuser.fuse_batch(PAIRS)
    timesteps = [int(t) for t in Schedule.create(4, runner.info.schedule).timesteps]
    assert recording.calls == expected_calls(timesteps, len(PAIRS), dig_scale)
    alone = [fuser(a, b) for a, b in PAIRS]
    assert [image.shape for image in fused] == [(HEIGHT, WIDTH), (HEIGHT, WIDTH, 3), (HEIGHT, WIDTH)]
    for one, batched in zip(alone, fused):
        assert one.dtype == batched.dtype == np.uint8 and np.array_equal(one, batched)


def test_each_pair_keeps_its_own_trace(runner: Runner) -> None:
    fuser = Fuser("ivf", settings=resolve("ivf", steps=2), runner=runner)
    batch = [read_pair("", *pair) for pair in PAIRS[:2]]
    results = fuser.fuse_sources_batch(batch)
    for sources, result in zip(batch, results):
        alone = fuser.fuse_sources(sources)
        assert np.array_equal(result.raw, alone.raw)
        assert [r["step"] for r in result.trace.refreshes] == [r["step"] for r in alone.trace.refreshes] == [0]
        assert np.array_equal(result.trace.refreshes[0]["weights"], alone.trace.refreshes[0]["weights"])
        assert result.trace.timesteps == alone.trace.timesteps and result.seconds["total"] > 0
    assert not np.array_equal(results[0].trace.refreshes[0]["weights"], results[1].trace.refreshes[0]["weights"])


def test_one_pair_equals_call(runner: Runner) -> None:
    fuser = Fuser("ivf", settings=resolve("ivf", steps=2), runner=runner)
    [fused] = fuser.fuse_batch([PAIRS[1]])
    assert np.array_equal(fused, fuser(*PAIRS[1]))
    assert fuser.fuse_batch([]) == []


GREY = PAIRS[0][0]
BAD_BATCHES = {
    "size across pairs": ([PAIRS[0], (GREY[:32], GREY[:32])],
                          "pairs[0] a is 64x96 but pairs[1] a is 32x96"),
    "size in a pair": ([PAIRS[0], (GREY, GREY[:, :48])], "pairs[1] a is 64x96 but pairs[1] b is 64x48"),
    "dtype": ([PAIRS[0], PAIRS[1], (GREY, GREY.astype(np.float32))], "pairs[2] b: unsupported frame dtype float32"),
    "shape": ([(GREY.ravel(), GREY)], "pairs[0] a: unsupported frame shape (6144,)"),
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_bad_batches_name_the_pair(case: str, runner: Runner) -> None:
    pairs, words = BAD_BATCHES[case]
    recording = RecordingRunner(runner)
    with pytest.raises(InputError) as error:
        Fuser("ivf", settings=resolve("ivf", steps=2), runner=recording).fuse_batch(pairs)
    message = str(error.value)
    assert words in message and "\n" not in message
    assert recording.calls == []


def test_a_gpu_runner_fuses_pair_by_pair(monkeypatch: pytest.MonkeyPatch, runner: Runner) -> None:
    """A GPU runner's loop (``gpu_sample``, here the CPU loop standing in for it) takes one pair at a time."""
    fused_pairs: List[Tuple[int, ...]] = []

    def one_pair(device: Runner, sources: np.ndarray, settings: Settings, x_T: np.ndarray,
                 progress: Optional[object] = None, trace: Optional[Trace] = None) -> gpu.GpuSample:
        fused_pairs.append(sources.shape)
        trace = trace if trace is not None else Trace()
        return gpu.GpuSample(sample=sample(device, sources, settings, x_T, trace=trace), trace=trace)

    monkeypatch.setattr(gpu, "gpu_sample", one_pair)
    settings = resolve("ivf", steps=2)
    fused = Fuser("ivf", settings=settings, runner=RecordingRunner(runner, on_device=True)).fuse_batch(PAIRS)
    assert fused_pairs == [(2, HEIGHT, WIDTH)] * len(PAIRS)
    on_host = Fuser("ivf", settings=settings, runner=runner).fuse_batch(PAIRS)
    assert all(np.array_equal(a, b) for a, b in zip(fused, on_host))
