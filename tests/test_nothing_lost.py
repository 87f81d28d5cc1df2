"""Nothing is lost to concurrent or killed processes: two ``dig2dig fuse`` runs writing one output leave one
complete image, a writer killed mid-write leaves the previous file, and ``dig2dig eval`` killed mid-run resumes
with every row once."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Set, Tuple

import cv2
import numpy as np
import pytest

import conftest
from dig2dig.runtime import atomic, io

CLI = "import sys, dig2dig.cli as c; sys.exit(c.main(sys.argv[1:]))"
PAIRS = Path(__file__).resolve().parent / "data" / "pairs"


def cli(*args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen([sys.executable, "-c", CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_two_fusions_to_one_output_leave_one_complete_image(tmp_path: Path) -> None:
    sources = []
    for role, path in zip("ab", conftest.pair("ivf", "10")):
        sources.append(str(tmp_path / f"{role}.png"))
        cv2.imwrite(sources[-1], cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:64, :96])
    out = tmp_path / "fused.png"
    runs = [cli("fuse", *sources, "-o", str(out), "--steps", "2", "-q") for _ in range(2)]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused is not None and fused.shape == (64, 96)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "fused.png"]


# Writes the old image, then starts the new one with the final flush stalled, so the kill lands mid-write.
KILLED_WRITER = """
import os, sys, time
import numpy as np
from dig2dig.runtime import io
path = sys.argv[1]
io.write_image(path, np.full((64, 96), 7, np.uint8))
def stall(fd):
    print("writing", flush=True)
    time.sleep(60)
os.fsync = stall
io.write_image(path, np.random.default_rng(0).integers(0, 255, (2048, 2048), dtype=np.uint8))
"""


def test_writer_killed_mid_write_leaves_the_previous_file(tmp_path: Path) -> None:
    out = tmp_path / "fused.png"
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "writing\n"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    previous = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert previous is not None and previous.shape == (64, 96) and (previous == 7).all()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["fused.png"]
    left, = (p for p in tmp_path.iterdir() if p.name.startswith(".fused.png."))
    busy = Path(tempfile.mkdtemp(prefix=".fused.png.", dir=tmp_path))  # a writer at work now
    old = time.time() - atomic.STALE_SECONDS - 1
    os.utime(left, (old, old))
    io.write_image(out, np.zeros((8, 8), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["fused.png", busy.name])


def rows(path: Path) -> List[Tuple[str, str, str, str]]:
    with open(path, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert all(row["error"] == "" and row["seconds"] for row in table), "a row is incomplete"
    return [(row["task"], row["dataset"], row["name"], row["method"]) for row in table]


def expected_rows(methods: List[str]) -> Set[Tuple[str, str, str, str]]:
    with open(PAIRS / "manifest.csv", newline="") as handle:
        return {(p["task"], p["dataset"], p["name"], m) for p in csv.DictReader(handle) for m in methods}


def test_eval_killed_mid_run_resumes_every_row_once(tmp_path: Path) -> None:
    pytest.importorskip("scipy")
    pytest.importorskip("skimage")
    out, methods = tmp_path / "out", ["static", "average", "laplacian"]
    args = ("eval", "--data", str(PAIRS), "-o", str(out), "--methods", ",".join(methods), "--steps", "2",
            "--max-side", "64", "-q")
    table = out / "per_pair.csv"
    run = cli(*args)
    deadline = time.monotonic() + 300
    while not (table.is_file() and len(rows(table)) >= 2) and time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()[1]
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait(timeout=30)
    killed = rows(table)
    assert 2 <= len(killed) < len(expected_rows(methods)), "the run was not killed mid-way"
    assert len(set(killed)) == len(killed)

    rerun = cli(*args)
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    final = rows(table)
    assert len(final) == len(set(final)) and set(final) == expected_rows(methods)
    assert final[:len(killed)] == killed
