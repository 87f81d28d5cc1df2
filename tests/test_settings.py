"""One home for the settings: defaults per task, overrides, a saved set, a one-line description."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from dig2dig.runtime.errors import InputError
from dig2dig.runtime.settings import (PAPER_DIG_TAU, TASK_DEFAULTS, TASKS, Settings, load_config, resolve)


@pytest.mark.parametrize("task", list(TASKS))
def test_resolve_applies_task_defaults_then_overrides(task: str) -> None:
    assert asdict(resolve(task)) == asdict(Settings(**TASK_DEFAULTS[task]))
    chosen = resolve(task, steps=25, dig_tau=None, em_power=1.0)  # None: the task's default
    assert (chosen.steps, chosen.dig_tau, chosen.em_power) == (25, TASK_DEFAULTS[task]["dig_tau"], 1.0)
    assert resolve(task, dig_norm="absolute").dig_tau == PAPER_DIG_TAU
    assert resolve(task, dig_norm="absolute", dig_tau=0.3).dig_tau == 0.3


def test_bad_values_and_names_are_input_errors_naming_them() -> None:
    with pytest.raises(InputError, match="unknown task 'xyz'"):
        resolve("xyz")
    with pytest.raises(InputError, match="dig_window must be a positive odd number, got 40"):
        resolve("ivf", dig_window=40)
    with pytest.raises(InputError, match="em_power must be in"):
        resolve("ivf", em_power=1.5)
    with pytest.raises(InputError, match="unknown setting.*stpes"):
        resolve("ivf", stpes=3)


def test_describe_is_one_line_of_what_runs() -> None:
    text = resolve("ivf").describe()
    assert "\n" not in text
    assert text.startswith("6 steps, dig every 2 at 1/2, window 61x3, tau 0.6 (spread), E-step 9 px at 256, power 0.5")
    assert resolve("mif", guidance="static").describe().startswith("10 steps, static, E-step 9 px at 256")
    assert resolve("mff", timesteps=(999, 500, 0)).describe().startswith("timesteps 999,500,0,")


def test_saved_settings_round_trip_and_bad_files(tmp_path: Path) -> None:
    saved = tmp_path / "mine.json"
    chosen = resolve("mef", steps=4, em_window=1)
    saved.write_text(json.dumps(asdict(chosen)))
    assert resolve("mef", **load_config(saved)) == chosen
    for text, problem in (("{", "not valid JSON"), ("[1, 2]", "a settings file holds one JSON object"), ('{"tau": 1}', "unknown setting")):
        saved.write_text(text)
        with pytest.raises(InputError, match=f"mine.json: {problem}"):
            load_config(saved)
    with pytest.raises(InputError, match="missing.json: cannot read"):
        load_config(tmp_path / "missing.json")
