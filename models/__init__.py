"""Models shipped with dig2dig. ``default/`` holds our small prior (see its MODEL_CARD.md)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from ..runtime.errors import ModelError

DEFAULT_DIR = Path(__file__).resolve().parent / "default"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(folder: Path = DEFAULT_DIR) -> None:
    """Check every file listed in ``folder/SHA256SUMS``; a mismatch is a ``ModelError``."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        raise ModelError(f"{sums}: checksum list missing")
    for line in sums.read_text().splitlines():
        expected, name = line.split()
        path = folder / name.lstrip("*")
        if not path.is_file():
            raise ModelError(f"{path}: shipped model file missing")
        if sha256(path) != expected:
            raise ModelError(f"{path}: checksum mismatch (file corrupt or modified)")


def default_model_path() -> Path:
    """The shipped prior's ONNX file, after checking the shipped checksums."""
    verify(DEFAULT_DIR)
    return DEFAULT_DIR / "model.onnx"
