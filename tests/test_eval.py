"""``dig2dig eval`` on the vendored pairs: scores as ``dig2dig metrics`` gives them, the tables, resuming,
refusing a folder of other settings, filtering, and one-line errors."""
from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Dict, List

import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from dig2dig.runtime import api  # noqa: E402
from dig2dig.runtime import eval as evaluation  # noqa: E402
from dig2dig.runtime.cli import main  # noqa: E402
from dig2dig.runtime.metrics import METRIC_NAMES  # noqa: E402
from dig2dig.runtime.settings import TASK_DEFAULTS, resolve  # noqa: E402

PAIRS = Path(__file__).resolve().parent / "data" / "pairs"


def run_eval(out: Path, *options: str) -> int:
    return main(["eval", "--data", str(PAIRS), "-o", str(out), "-q", *options])


def read_csv(path: Path) -> List[Dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def error_line(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dig2dig: error: ")
    return err


def test_scores_match_dig2dig_metrics(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    assert run_eval(out, "--task", "ivf", "--dataset", "TNO", "--methods", "dig,laplacian", "--steps", "2") == 0
    rows = read_csv(out / "per_pair.csv")
    assert [(r["name"], r["method"]) for r in rows] == [("10", "dig"), ("10", "laplacian"), ("22", "dig"),
                                                         ("22", "laplacian")]
    capsys.readouterr()
    for row in rows:
        assert row["error"] == "" and float(row["seconds"]) > 0
        assert row["steps"] == ("2" if row["method"] == "dig" else "")
        fused = out / "fused" / row["method"] / f"ivf_TNO_{row['name']}.png"
        sources = [PAIRS / "ivf" / role / f"{row['name']}.png" for role in ("a", "b")]
        assert main(["metrics", "--fused", str(fused), "--a", str(sources[0]), "--b", str(sources[1]), "--json"]) == 0
        expected = json.loads(capsys.readouterr().out)
        assert {name: float(row[name]) for name in METRIC_NAMES} == pytest.approx(expected, rel=1e-9)

    summary = read_csv(out / "summary.csv")
    assert [(r["dataset"], r["method"], r["n"]) for r in summary] == [
        ("all", "dig", "2"), ("TNO", "dig", "2"), ("all", "laplacian", "2"), ("TNO", "laplacian", "2")]
    dig = [float(r["Qabf"]) for r in rows if r["method"] == "dig"]
    assert float(summary[0]["Qabf_mean"]) == pytest.approx(sum(dig) / 2)
    assert float(summary[0]["Qabf_std"]) == pytest.approx(abs(dig[0] - dig[1]) / math.sqrt(2))
    report = (out / "report.md").read_text()
    assert "## ivf: A infrared, B visible" in report and "| TNO | laplacian | 2 |" in report
    assert resolve("ivf", steps=2).describe() in report


def test_resumes_and_refuses_other_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    options = ("--task", "mif", "--methods", "static,average", "--steps", "2", "--max-side", "64")
    real_fuse, calls = api.fuse, []

    def interrupt_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fuse(*args, **kwargs)

    monkeypatch.setattr(api, "fuse", interrupt_second)
    assert run_eval(out, *options) == 130
    assert [(r["name"], r["method"]) for r in read_csv(out / "per_pair.csv")] == [("11", "static"), ("11", "average")]
    monkeypatch.setattr(api, "fuse", real_fuse)
    assert run_eval(out, *options) == 0
    rows = read_csv(out / "per_pair.csv")
    assert [(r["name"], r["method"]) for r in rows] == [("11", "static"), ("11", "average"), ("12", "static"),
                                                        ("12", "average")]
    assert all(max(int(r["height"]), int(r["width"])) == 64 and r["error"] == "" for r in rows)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a resumed run fused again")

    before = (out / "per_pair.csv").read_bytes()
    monkeypatch.setattr(api, "fuse", refuse)
    monkeypatch.setitem(evaluation.CLASSICAL, "average", refuse)
    assert run_eval(out, *options) == 0
    assert run_eval(out, "--task", "mif", "--dataset", "MRI_PET", "--methods", "average", "--steps", "2",
                    "--max-side", "64") == 0
    assert (out / "per_pair.csv").read_bytes() == before
    capsys.readouterr()

    for other in (("--steps", "3"), ("--steps", "2", "--max-side", "48"), ("--steps", "2", "--em-power", "1")):
        assert run_eval(out, "--task", "mif", "--methods", "average", "--max-side", "64", *other) == 2
        assert "holds results of other settings" in error_line(capsys)
    assert (out / "per_pair.csv").read_bytes() == before

    # A folder written before a setting existed counts as run at its Settings() default, the behaviour before it
    # (full-size DIG), whatever a task's default is now (mif's is 1/2).
    record = json.loads((out / "run.json").read_text())
    for settings in record["settings"].values():
        del settings["dig_scale"]
    (out / "run.json").write_text(json.dumps(record))
    assert run_eval(out, *options, "--dig-scale", "1") == 0
    assert run_eval(out, *options) == 2
    assert "holds results of other settings (dig_scale differ)" in error_line(capsys)
    assert (out / "per_pair.csv").read_bytes() == before


def test_each_task_runs_its_defaults(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(out, "--limit-per-dataset", "1", "--methods", "average") == 0
    rows = read_csv(out / "per_pair.csv")
    assert [(r["task"], r["dataset"], r["name"]) for r in rows] == [
        ("ivf", "TNO", "10"), ("ivf", "MSRS", "00055D"), ("ivf", "RoadScene", "FLIR_00977"), ("mif", "MRI_CT", "11"),
        ("mif", "MRI_PET", "12"), ("mef", "MEFB", "AirBellowsGap"), ("mff", "Lytro", "lytro_01"),
        ("mff", "MFIFB", "stand_01")]
    recorded = json.loads((out / "run.json").read_text())["settings"]
    for task, defaults in TASK_DEFAULTS.items():
        expected = {k: v for k, v in asdict(resolve(task)).items() if k != "guidance"}
        assert recorded[task] == json.loads(json.dumps(expected))
        assert {k: recorded[task][k] for k in defaults} == defaults


def test_walks_task_dataset_folders_and_records_failed_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for role in ("a", "b"):
        (data / "mef" / "MEFB" / role).mkdir(parents=True)
        shutil.copy(PAIRS / "mef" / role / "Chair.png", data / "mef" / "MEFB" / role / "Chair.png")
    (data / "other" / "set" / "a").mkdir(parents=True)
    out = tmp_path / "out"
    # At 32 px VIFF's 41-pixel window does not fit: the row names the failure and keeps the rest.
    assert main(["eval", "--data", str(data), "-o", str(out), "-q", "--methods", "average", "--max-side", "32"]) == 0
    [row] = read_csv(out / "per_pair.csv")
    assert (row["task"], row["dataset"], row["name"]) == ("mef", "MEFB", "Chair")
    assert row["VIFF"] == "" and row["error"].startswith("VIFF:") and math.isfinite(float(row["SSIM"]))
    assert "1 of 1 fusions recorded an error" in (out / "report.md").read_text()


@pytest.mark.parametrize("options, message", [
    (("--data", "{tmp}/missing"), "no such data folder"),
    (("--data", "{tmp}"), "no pairs found"),
    (("--data", str(PAIRS), "--dataset", "nowhere"), "no pairs found (dataset nowhere"),
    (("--data", str(PAIRS), "--methods", "dig,best"), "unknown method(s) best"),
    (("--data", str(PAIRS), "--max-side", "0"), "--max-side must be at least 1"),
])
def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, options: tuple, message: str) -> None:
    args = [option.format(tmp=tmp_path) for option in options]
    assert main(["eval", *args, "-o", str(tmp_path / "out"), "-q"]) == 2
    assert message in error_line(capsys)
