"""The vendored fixtures in tests/data are the files their SHA256SUMS name, byte for byte."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path
from typing import Dict

import cv2

from conftest import DATA, PAIRS

SUMS = DATA / "SHA256SUMS"
FOLDERS = ("reference", "pairs", "train", "fuzz")


def listed() -> Dict[str, str]:
    """SHA256SUMS as {path relative to tests/data: hex digest}."""
    sums = {}
    for line in SUMS.read_text().splitlines():
        digest, name = line.split("  ", 1)
        sums[name] = digest
    return sums


def test_every_fixture_matches_its_checksum() -> None:
    sums = listed()
    on_disk = {path.relative_to(DATA).as_posix() for folder in FOLDERS for path in (DATA / folder).rglob("*")
               if path.is_file()}
    assert sorted(on_disk) == sorted(sums), "files and SHA256SUMS disagree"
    mismatched = [name for name, digest in sums.items()
                  if hashlib.sha256((DATA / name).read_bytes()).hexdigest() != digest]
    assert mismatched == []


def test_pair_manifest_matches_the_images() -> None:
    """The manifest has the development set's columns, and each row's images exist at its size."""
    with open(PAIRS / "manifest.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == ["task", "dataset", "name", "a_path", "b_path", "height", "width"]
    assert {row["task"] for row in rows} == {"ivf", "mif", "mef", "mff"}
    for row in rows:
        for role in ("a", "b"):
            path = Path(row[f"{role}_path"])
            assert path.as_posix() == f"{row['task']}/{role}/{row['name']}.png"
            image = cv2.imread(str(PAIRS / path), cv2.IMREAD_UNCHANGED)
            assert image is not None and image.shape[:2] == (int(row["height"]), int(row["width"])), path
            assert max(image.shape[:2]) <= 192
