"""DIG-driven step schedules: placement, the explicit schedule in the sampler, the file and the CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dig2dig.calibration.steps import SCHEDULE_FORMAT, load_schedule, schedule_from_profile
from dig2dig.runtime import api, cli
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.sampler import Settings, Trace, initial_noise, sample
from dig2dig.runtime.schedule import ADM_LINEAR, Schedule
from test_sampler import crop_pair

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


def test_schedule_file_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"format": SCHEDULE_FORMAT, "timesteps": [999, 500, 0]}))
    assert load_schedule(str(good)) == (999, 500, 0)
    for name, text in (("missing.json", None), ("garbage.json", "{not json"),
                       ("other.json", json.dumps({"timesteps": [999, 0]})),
                       ("ascending.json", json.dumps({"format": SCHEDULE_FORMAT, "timesteps": [0, 999]}))):
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(InputError, match=name):
            load_schedule(str(path))


def test_calibrate_then_fuse_with_the_schedule(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"development data not found at {data}")
    schedule = tmp_path / "ivf.json"
    assert cli.main(["calibrate-steps", "--data", str(data), "--task", "ivf", "--steps", "4", "--fine-steps", "8",
                     "--pairs", "1", "--max-side", "64", "-o", str(schedule)]) == 0
    record = json.loads(schedule.read_text())
    assert record["timesteps"][0] == 999 and record["timesteps"][-1] == 0 and len(record["timesteps"]) == 4
    assert len(record["interval_gains"]) == 7 and abs(sum(record["interval_gains"]) - 1) < 1e-4
    a = sorted((data / "ivf").glob("*/a/*.png"))[0]
    crops = crop_pair(a, a.parent.parent / "b" / a.name, tmp_path, 64, 80)
    out = tmp_path / "fused.png"
    assert cli.main(["fuse", *map(str, crops), "-o", str(out), "--schedule", str(schedule), "-q"]) == 0
    assert out.is_file()
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    assert cli.main(["fuse", *map(str, crops), "-o", str(tmp_path / "x.png"), "--schedule", str(bad), "-q"]) == 2
    assert "bad.json" in capsys.readouterr().err and not (tmp_path / "x.png").exists()


def test_calibrate_defaults_to_the_task_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --steps the schedule has the task's default step count (api.TASK_DEFAULTS)."""
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not data.is_dir():
        pytest.skip(f"development data not found at {data}")
    monkeypatch.setitem(api.TASK_DEFAULTS, "mef", {**api.TASK_DEFAULTS["mef"], "steps": 3})
    schedule = tmp_path / "mef.json"
    assert cli.main(["calibrate-steps", "--data", str(data), "--task", "mef", "--fine-steps", "6", "--pairs", "1",
                     "--max-side", "48", "-o", str(schedule)]) == 0
    record = json.loads(schedule.read_text())
    assert record["steps"] == 3 and len(record["timesteps"]) == 3
