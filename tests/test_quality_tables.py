"""The quality scripts' table plumbing (benchmarks/quality_fullres.py over benchmarks/sweeps.py) on two
vendored pairs: ``--tables`` fuses only the chosen tables' runs into the run folders, the others name the
rows not yet fused, ``--held-only`` writes the same tables from what the folders hold, and only the
block between the markers of the document changes."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

pytest.importorskip("scipy")
pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]
PAIRS = ROOT / "tests" / "data" / "pairs"
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality_fullres  # noqa: E402

BEGIN, END = quality_fullres.BEGIN, quality_fullres.END


def test_tables_fuse_only_what_is_chosen_and_held_only_rewrites_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for task, dataset, name in (("ivf", "TNO", "10"), ("mif", "MRI_CT", "11")):
        for role in ("a", "b"):
            target = data / task / dataset / role / f"{name}.png"
            target.parent.mkdir(parents=True)
            shutil.copy(PAIRS / task / role / f"{name}.png", target)
    doc, runs = tmp_path / "QUALITY.md", tmp_path / "runs"
    doc.write_text(f"kept above\n{BEGIN}\n{END}\nkept below\n")
    common = ["--data", str(data), "--out", str(runs), "--doc", str(doc), "--pairs-per-task", "1", "--max-side", "48"]

    assert quality_fullres.main(common + ["--tables", "tau"]) == 0
    text = doc.read_text()
    assert text.startswith(f"kept above\n{BEGIN}\n## Full resolution") and text.endswith(f"{END}\nkept below\n")
    assert "](" not in text  # no links: the run folders are not in git
    windows, tau = text.split("### ")[1:3]
    _, tables = quality_fullres.plan()
    for task in ("ivf", "mif"):
        block = tau.split(f"**{task}**")[1].split("**")[0]
        assert "Not fused yet" not in block
        assert all(f"| {label} | 1 " in block for label, _, _ in tables["tau"].rows)
    block = windows.split("**ivf**")[1].split("**")[0]
    fused = {name for _, name, _ in tables["tau"].rows}
    unfused = [label for label, name, method in tables["windows"].rows
               if (name, method) not in {(n, m) for _, n, m in tables["tau"].rows}]
    assert unfused and f"Not fused yet at these settings: {'; '.join(unfused)}." in block
    assert {path.name for path in runs.iterdir() if (path / "per_pair.csv").is_file()} == fused

    assert quality_fullres.main(common + ["--held-only", "--tables", "windows"]) == 0
    assert ([line for line in doc.read_text().splitlines() if not line.startswith("Machine:")]
            == [line for line in text.splitlines() if not line.startswith("Machine:")])
