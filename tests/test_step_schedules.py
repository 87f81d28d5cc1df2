"""Step schedules: an explicit schedule in the sampler (``Settings.timesteps``), and the DIG-driven placement
of ``benchmarks/step_schedules.py`` on a vendored pair."""
from __future__ import annotations

import sys
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from dig2dig.runtime import api
from dig2dig.runtime import eval as evaluation
from dig2dig.runtime.sampler import Trace, initial_noise, sample
from dig2dig.runtime.schedule import ADM_LINEAR, Schedule
from dig2dig.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from step_schedules import calibrate, schedule_from_profile  # noqa: E402

FINE = list(range(999, -1, -111))[:9] + [0]  # 999, 888, ..., 111, 0


def test_uniform_gain_and_mix_zero_give_even_spacing() -> None:
    even = schedule_from_profile(FINE, np.ones(len(FINE) - 1), 4)
    assert even == schedule_from_profile(FINE, np.arange(len(FINE) - 1.0), 4, mix=0.0) == [999, 666, 333, 0]


def test_steps_follow_the_gain() -> None:
    gains = np.zeros(len(FINE) - 1)
    gains[0] = 1.0  # everything is recovered between 999 and 888
    chosen = schedule_from_profile(FINE, gains, 5)
    assert chosen[0] == 999 and chosen[-1] == 0
    assert all(888 <= t < 999 for t in chosen[1:-1])
    assert all(a > b for a, b in zip(chosen, chosen[1:]))
    half = schedule_from_profile(FINE, gains, 5, mix=0.5)
    assert half[1] >= chosen[1] - 111 and half[2] < chosen[2]  # the mix pulls steps back toward even spacing


def test_collisions_stay_strictly_descending() -> None:
    chosen = schedule_from_profile([3, 2, 1, 0], [1.0, 0.0, 0.0], 4)
    assert chosen == [3, 2, 1, 0]
    with pytest.raises(ValueError):
        schedule_from_profile([3, 2, 1, 0], [1.0, 0.0, 0.0], 5)
    with pytest.raises(ValueError):
        schedule_from_profile(FINE, [1.0], 4)


def test_explicit_timesteps_equal_the_respaced_schedule() -> None:
    uniform = Schedule.create(10, ADM_LINEAR)
    explicit = Schedule.from_timesteps(list(uniform.timesteps), ADM_LINEAR)
    np.testing.assert_array_equal(explicit.timesteps, uniform.timesteps)
    np.testing.assert_array_equal(explicit.alphas_cumprod, uniform.alphas_cumprod)
    np.testing.assert_array_equal(explicit.alphas_cumprod_prev, uniform.alphas_cumprod_prev)
    for bad in ([], [5, 5, 0], [0, 10], [1000, 0]):
        with pytest.raises(ValueError):
            Schedule.from_timesteps(bad, ADM_LINEAR)


def test_sampler_runs_an_explicit_schedule() -> None:
    runner = api.open_runner()
    rng = np.random.default_rng(3)
    sources = rng.uniform(-1, 1, (2, 32, 32)).astype(np.float32)
    x_T = initial_noise((1, 32, 32), 0)
    uniform = sample(runner, sources, Settings(steps=10), x_T)
    same = sample(runner, sources, Settings(timesteps=tuple(Schedule.create(10, ADM_LINEAR).timesteps)), x_T)
    np.testing.assert_array_equal(same, uniform)
    trace = Trace()
    settings = Settings(timesteps=(999, 950, 800, 300, 0))
    assert settings.steps == 5
    sample(runner, sources, settings, x_T, trace=trace)
    assert [(r["t"], r["t_next"]) for r in trace.refreshes] == [(999, 950), (800, 300)]


def test_calibrate_profiles_a_vendored_pair() -> None:
    [pair] = evaluation.find_pairs(ROOT / "tests" / "data" / "pairs", task="ivf", dataset="TNO", limit_per_dataset=1)
    with closing(api.open_runner()) as runner:
        record = calibrate([pair], "ivf", 4, 8, 48, 0.5, runner)
    assert record["timesteps"][0] == 999 and record["timesteps"][-1] == 0 and len(record["timesteps"]) == 4
    assert record["uniform_timesteps"] == [int(t) for t in Schedule.create(4, ADM_LINEAR).timesteps]
    assert len(record["interval_gains"]) == 7 and sum(record["interval_gains"]) == pytest.approx(1, abs=1e-4)
    assert record["pairs"] == ["TNO/10"]
