"""The temporal mode for streams (Fuser(stream=True), runtime/temporal.py): steadier than fresh noise per frame,
no source evaluations on a non-key frame, a key frame on a scene change, still fusion unchanged."""
from __future__ import annotations

from typing import Iterator, List

import numpy as np
import pytest

from dig2dig import Fuser
from dig2dig.runtime import api
from dig2dig.runtime.backends.base import Runner
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.settings import resolve
from dig2dig.runtime.temporal import flicker_ratio, motion_ratio, temporal_std
from conftest import pair
from test_fuse_batch import HEIGHT, WIDTH, Frames, RecordingRunner, cropped
from test_fuser import frames

STEPS = 4


@pytest.fixture(scope="module")
def runner() -> Iterator[Runner]:
    with api.open_runner() as opened:
        yield opened


def noisy_clip(frames: Frames, count: int, sigma: float = 1.5, seed: int = 0) -> List[Frames]:
    """``frames`` repeated ``count`` times, each time with its own Gaussian noise (grey levels)."""
    rng = np.random.default_rng(seed)

    def noisy(image: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(image + rng.normal(0.0, sigma, image.shape)), 0, 255).astype(np.uint8)

    return [(noisy(frames[0]), noisy(frames[1])) for _ in range(count)]


def stream_fuser(runner: Runner, **options: int) -> Fuser:
    return Fuser("ivf", settings=resolve("ivf", steps=STEPS), runner=runner, stream=True, **options)


def source_calls(recording: RecordingRunner) -> int:
    """Model calls beyond one x_t batch of one pair at full size a step: the source evaluations."""
    return sum(1 for shape, _ in recording.calls if shape[0] > 1 or shape[2:] != (HEIGHT, WIDTH))


def test_temporal_measures() -> None:
    still = [np.full((4, 6), 7.0)] * 3
    assert temporal_std(still) == 0.0
    ramp = np.tile(np.arange(12.0), (4, 1))
    panned = [ramp[:, 2 * i:2 * i + 6] for i in range(3)]
    noise = [panned[i] + (i % 2) for i in range(3)]
    assert motion_ratio(panned, noise, noise, (0, 2)) == 0.0
    assert flicker_ratio(noise, noise, noise) == pytest.approx(1.0)


def test_temporal_mode_flickers_less_than_fresh_noise(runner: Runner) -> None:
    clip = noisy_clip(cropped("ivf", "10"), 6)
    temporal = stream_fuser(runner)
    steady = [temporal(a, b) for a, b in clip]
    fresh = [Fuser("ivf", settings=resolve("ivf", steps=STEPS, seed=i + 1), runner=runner)(a, b)
             for i, (a, b) in enumerate(clip)]
    sources = [[frames[k] for frames in clip] for k in (0, 1)]
    assert flicker_ratio(steady, *sources) < 0.8 * flicker_ratio(fresh, *sources)


def test_non_key_frames_evaluate_only_x_t_until_the_next_key_frame(runner: Runner) -> None:
    recording = RecordingRunner(runner)
    fuser = stream_fuser(recording, stream_refresh_every=3)
    clip = noisy_clip(cropped("ivf", "10"), 4)
    counts = []
    for a, b in clip:
        recording.calls.clear()
        fuser(a, b)
        counts.append((len(recording.calls), source_calls(recording)))
    assert counts[1] == counts[2] == (STEPS, 0)  # one x_t call a step, no sources
    assert counts[0] == counts[3] and counts[0][1] > 0  # key frames: the first, then every third


def test_a_scene_change_makes_a_key_frame(runner: Runner) -> None:
    recording = RecordingRunner(runner)
    fuser = stream_fuser(recording)
    first, other = cropped("ivf", "10"), cropped("ivf", "22")
    fuser(*first)
    recording.calls.clear()
    fuser(*noisy_clip(first, 1)[0])
    assert source_calls(recording) == 0
    recording.calls.clear()
    fuser(*other)
    assert source_calls(recording) > 0


def test_still_fusion_is_unchanged_and_a_stream_starts_with_it(runner: Runner) -> None:
    settings = resolve("ivf", steps=STEPS)
    still = Fuser("ivf", settings=settings, runner=runner)(*frames("ivf", "10"))
    assert np.array_equal(still, api.fuse(*pair("ivf", "10"), settings=settings, runner=runner).image)
    assert np.array_equal(stream_fuser(runner)(*frames("ivf", "10")), still)  # the first frame is a key frame


def test_cameras_of_a_batch_keep_their_own_streams(runner: Runner) -> None:
    clips = [noisy_clip(cropped("ivf", "10"), 3, seed=1), noisy_clip(cropped("ivf", "00055D"), 3, seed=2)]
    batched = stream_fuser(runner)
    together = [batched.fuse_batch([clip[i] for clip in clips]) for i in range(3)]
    for camera, clip in enumerate(clips):
        alone = stream_fuser(runner)
        for i, (a, b) in enumerate(clip):
            assert np.array_equal(together[i][camera], alone(a, b))


def test_warm_start_runs_only_the_remaining_steps(runner: Runner) -> None:
    recording = RecordingRunner(runner)
    fuser = stream_fuser(recording, stream_warm_start=2)
    clip = noisy_clip(cropped("ivf", "10"), 2)
    fuser(*clip[0])
    recording.calls.clear()
    fused = fuser(*clip[1])
    assert len(recording.calls) == STEPS - 2 and source_calls(recording) == 0
    assert fused.shape == clip[1][0].shape[:2]
    with pytest.raises(InputError, match="stream_warm_start"):
        stream_fuser(runner, stream_warm_start=1)
