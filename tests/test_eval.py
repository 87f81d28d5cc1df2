"""``dig2dig eval`` on a tiny folder of real pairs: the tables, the report, resuming, recorded errors."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, List

import numpy as np
import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

from dig2dig.runtime import api  # noqa: E402
from dig2dig.runtime import eval as evaluation  # noqa: E402
from dig2dig.runtime.cli import main  # noqa: E402
from dig2dig.runtime.errors import InputError  # noqa: E402
from dig2dig.runtime.metrics import METRIC_NAMES  # noqa: E402
from dig2dig.runtime.sampler import Settings  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
PAIRS = (("ivf", "TNO", "02"), ("mif", "MRI_CT", "11"))
METHODS = ("dig", "static", "average")
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared data set not found at {DATA}")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """Two real pairs in the TASK/DATASET/{a,b}/NAME.png layout, without a manifest."""
    root = tmp_path / "data"
    for task, dataset, name in PAIRS:
        for role in ("a", "b"):
            target = root / task / dataset / role / f"{name}.png"
            target.parent.mkdir(parents=True)
            shutil.copy(DATA / task / dataset / role / f"{name}.png", target)
    return root


def run_eval(data: Path, out: Path, methods: str = ",".join(METHODS), max_side: int = 64) -> int:
    return main(["eval", "--data", str(data), "--methods", methods, "--steps", "2",
                 "--max-side", str(max_side), "-o", str(out), "-q"])


def read_csv(path: Path) -> List[dict]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert rows and reader.fieldnames is not None
    rows[0]["__columns__"] = list(reader.fieldnames)
    return rows


@needs_data
def test_eval_writes_tables_report_and_resumes(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    real_fuse = api.fuse
    calls = []

    def interrupt_second(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_fuse(*args, **kwargs)

    monkeypatch.setattr(api, "fuse", interrupt_second)
    assert run_eval(data, out) == 130
    assert [(r["name"], r["method"]) for r in read_csv(out / "per_pair.csv")] == [("02", "dig")]

    monkeypatch.setattr(api, "fuse", real_fuse)
    assert run_eval(data, out) == 0
    rows = read_csv(out / "per_pair.csv")
    assert rows[0]["__columns__"] == list(evaluation.PAIR_COLUMNS)
    assert sorted((r["task"], r["dataset"], r["name"], r["method"]) for r in rows) == sorted(
        pair + (method,) for pair in PAIRS for method in METHODS)
    for row in rows:
        assert row["error"] == ""
        assert max(int(row["height"]), int(row["width"])) == 64
        assert float(row["seconds"]) > 0
        assert all(math.isfinite(float(row[name])) for name in METRIC_NAMES)
        assert row["steps"] == ("2" if row["method"] != "average" else "")
        assert (out / "fused" / row["method"] / f"{row['task']}_{row['dataset']}_{row['name']}.png").is_file()

    summary = read_csv(out / "summary.csv")
    assert summary[0]["__columns__"] == list(evaluation.SUMMARY_COLUMNS)
    assert sorted((r["task"], r["dataset"], r["method"]) for r in summary) == sorted(
        (task, group, method) for task, dataset, _ in PAIRS for group in ("all", dataset) for method in METHODS)
    assert {r["n"] for r in summary} == {"1"}
    dig = next(r for r in rows if r["task"] == "ivf" and r["method"] == "dig")
    dig_all = next(r for r in summary if r["task"] == "ivf" and r["dataset"] == "all" and r["method"] == "dig")
    assert float(dig_all["Qabf_mean"]) == pytest.approx(float(dig["Qabf"]))

    report = (out / "report.md").read_text()
    assert "## ivf" in report and "## mif" in report and "at most 64 px" in report
    strips = re.findall(r"\]\((strips/[^)]+\.png)\)", report)
    assert len(strips) == 2 and all((out / strip).is_file() for strip in strips)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a resumed run fused again")

    before = (out / "per_pair.csv").read_bytes()
    monkeypatch.setattr(api, "fuse", refuse)
    monkeypatch.setattr(api, "open_runner", refuse)
    monkeypatch.setitem(evaluation.CLASSICAL, "average", refuse)
    assert run_eval(data, out) == 0
    assert (out / "per_pair.csv").read_bytes() == before


@needs_data
def test_failed_metric_is_recorded_and_the_run_goes_on(data: Path, tmp_path: Path) -> None:
    # At 32 px VIFF's 41-pixel window does not fit: the row names the failure and keeps the rest.
    out = tmp_path / "out"
    assert run_eval(data, out, methods="average", max_side=32) == 0
    rows = read_csv(out / "per_pair.csv")
    assert len(rows) == 2
    for row in rows:
        assert row["VIFF"] == "" and row["error"].startswith("VIFF:")
        assert math.isfinite(float(row["SSIM"]))
    assert "2 of 2 fusions recorded an error" in (out / "report.md").read_text()


@needs_data
def test_other_settings_need_another_folder(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_eval(data, out, methods="average") == 0
    assert main(["eval", "--data", str(data), "--methods", "average", "--steps", "3", "-o", str(out), "-q"]) == 2


def test_later_settings_are_recorded_only_when_set(data: Path, tmp_path: Path) -> None:
    """Folders written before dig_norm/timesteps/em_window/dig_passes/em_window_side/em_power existed still resume;
    setting them needs a new folder."""
    out = tmp_path / "out"
    pairs = evaluation.find_pairs(data)
    before = Settings(steps=2, em_window=1, dig_passes=1, em_window_side=0, em_power=1.0)
    evaluation.evaluate(pairs, out, ["average"], before, max_side=64, quiet=True)
    recorded = json.loads((out / "run.json").read_text())["settings"]
    assert not {"dig_norm", "timesteps", "em_window", "dig_passes", "em_window_side", "em_power"} & set(recorded)
    evaluation.evaluate(pairs, out, ["average"], before, max_side=64, quiet=True)
    for later in (dict(dig_norm="absolute"), dict(em_window=5), dict(dig_passes=2), dict(em_window_side=256),
                  dict(em_power=0.5)):
        with pytest.raises(InputError, match="other settings"):
            evaluation.evaluate(pairs, out, ["average"], replace(before, **later), max_side=64)


def test_eval_dig_norm_absolute_runs_the_plain_softmax(data: Path, tmp_path: Path) -> None:
    """--dig-norm absolute fuses with one temperature for every task (1 unless --dig-tau), as fuse does."""
    out = tmp_path / "out"
    assert main(["eval", "--data", str(data), "--methods", "dig", "--steps", "2", "--dig-norm", "absolute",
                 "--max-side", "64", "-o", str(out), "-q"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["settings"]["dig_norm"] == "absolute" and record["settings"]["dig_tau"] == 1.0
    assert "dig_tau" not in record and len(read_csv(out / "per_pair.csv")) == 2


def test_per_task_defaults_are_used_and_recorded_by_value(data: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --steps/--dig-tau/--dig-window each pair runs its task's defaults; a folder made with them
    refuses to resume once those defaults change."""
    monkeypatch.setitem(api.TASK_DEFAULTS, "ivf", {"dig_tau": 0.5, "steps": 2, "dig_window": 9})
    monkeypatch.setitem(api.TASK_DEFAULTS, "mif", {"dig_tau": 0.25, "steps": 3, "dig_window": 5})
    out = tmp_path / "out"
    assert main(["eval", "--data", str(data), "--methods", "dig", "--max-side", "64", "-o", str(out), "-q"]) == 0
    record = json.loads((out / "run.json").read_text())
    assert record["steps"] == f"per task ({api.task_default_text('steps')})" and "ivf 2, mif 3" in record["steps"]
    assert record["dig_tau"] == f"per task ({api.task_default_text('dig_tau')})"
    assert record["dig_window"] == "per task (ivf 9, mif 5, mef 61, mff 41)"
    assert not {"steps", "dig_tau", "dig_window"} & set(record["settings"])
    assert {row["task"]: row["steps"] for row in read_csv(out / "per_pair.csv")} == {"ivf": "2", "mif": "3"}
    assert "steps per task (ivf 2, mif 3" in (out / "report.md").read_text()
    monkeypatch.setitem(api.TASK_DEFAULTS, "mif", {"dig_tau": 9.0, "steps": 3, "dig_window": 5})
    with pytest.raises(InputError, match="other settings"):
        evaluation.evaluate(evaluation.find_pairs(data), out, ["dig"], Settings(), max_side=64, quiet=True,
                            per_task=("dig_tau", "steps", "dig_window"))
    with pytest.raises(InputError, match="per-task fields"):
        evaluation.evaluate(evaluation.find_pairs(data), out, ["dig"], Settings(), per_task=("lamb",))


def test_adopted_rows_are_the_rows_a_fusion_computes(data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """After one task's default window changes, a new folder adopts from the old one exactly the fusions the
    change leaves the same (that task's static and classical rows, the other task's DIG rows, never the
    strip pairs), and they equal what a fresh folder computes."""
    for task, dataset, name in (("ivf", "TNO", "04"), ("mif", "MRI_CT", "12")):
        for role in ("a", "b"):
            shutil.copy(DATA / task / dataset / role / f"{name}.png", data / task / dataset / role / f"{name}.png")
    pairs, methods, settings = evaluation.find_pairs(data), ["dig", "static", "average"], Settings(steps=2)
    per_task = ("dig_window",)
    monkeypatch.setitem(api.TASK_DEFAULTS, "ivf", {**api.TASK_DEFAULTS["ivf"], "dig_window": 9})
    monkeypatch.setitem(api.TASK_DEFAULTS, "mif", {**api.TASK_DEFAULTS["mif"], "dig_window": 5})
    old, new, fresh = tmp_path / "old", tmp_path / "new", tmp_path / "fresh"
    evaluation.evaluate(pairs, old, methods, settings, max_side=64, quiet=True, per_task=per_task)
    monkeypatch.setitem(api.TASK_DEFAULTS, "ivf", {**api.TASK_DEFAULTS["ivf"], "dig_window": 13})
    assert evaluation.adopt_rows(pairs, new, methods, settings, 64, None, per_task, [old, new, tmp_path]) == 5
    adopted = {(r["task"], r["name"], r["method"]) for r in read_csv(new / "per_pair.csv")}
    assert adopted == {("ivf", "04", "static"), ("ivf", "04", "average")} | {("mif", "12", m) for m in methods}
    assert evaluation.adopt_rows(pairs, new, methods, settings, 64, None, per_task, [old]) == 0
    evaluation.evaluate(pairs, new, methods, settings, max_side=64, quiet=True, per_task=per_task)
    evaluation.evaluate(pairs, fresh, methods, settings, max_side=64, quiet=True, per_task=per_task)
    rows = {name: {(r["task"], r["name"], r["method"]): r for r in read_csv(name / "per_pair.csv")}
            for name in (new, fresh)}
    assert rows[new].keys() == rows[fresh].keys() and len(rows[new]) == 12
    for key, row in rows[new].items():
        assert all(float(row[m]) == pytest.approx(float(rows[fresh][key][m]), rel=1e-9) for m in METRIC_NAMES), key
    assert (new / "strips").is_dir() and len(list((new / "strips").iterdir())) == 2


def test_another_model_needs_another_folder(data: Path, tmp_path: Path) -> None:
    """run.json records the model file's SHA-256: results of a retrained prior never mix with older ones."""
    out, other = tmp_path / "out", tmp_path / "other.onnx"
    pairs = evaluation.find_pairs(data)
    evaluation.evaluate(pairs, out, ["average"], Settings(steps=2), max_side=64, quiet=True)
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "bundled prior" and len(record["model_sha256"]) == 64
    other.write_bytes(b"a different model")
    with pytest.raises(InputError, match="other settings"):
        evaluation.evaluate(pairs, out, ["average"], Settings(steps=2), max_side=64, model=other, quiet=True)


@needs_data
def test_find_pairs_reads_the_manifest_and_filters() -> None:
    mef = evaluation.find_pairs(DATA, task="mef")
    assert len(mef) == 14 and all(p.a.is_file() and p.b.is_file() for p in mef)
    limited = evaluation.find_pairs(DATA, task="mif", limit_per_dataset=2)
    assert [(p.dataset, len([q for q in limited if q.dataset == p.dataset])) for p in limited[::2]] == [
        ("MRI_CT", 2), ("MRI_PET", 2), ("MRI_SPECT", 2)]


def test_classical_anchors() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.random((50, 70), dtype=np.float32), rng.random((50, 70), dtype=np.float32)
    np.testing.assert_allclose(evaluation.laplacian_fusion(a, a), a, atol=1e-5)
    np.testing.assert_allclose(evaluation.average_fusion(a, b), (a + b) / 2)
    # Where one source is flat, the pyramid keeps the other's detail.
    flat = np.full_like(a, 0.5)
    fused = evaluation.laplacian_fusion(a, flat)
    assert np.std(fused) > 0.8 * np.std(a)
