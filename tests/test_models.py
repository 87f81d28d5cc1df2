"""The shipped default prior: checksums verified on load, metadata complete, it runs."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from dig2dig.models import DEFAULT_DIR
from dig2dig.runtime.api import default_model
from dig2dig.runtime.checksums import verify
from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.errors import ModelError


def test_shipped_checksums_match() -> None:
    verify(DEFAULT_DIR)
    assert default_model().stat().st_size < 50 * 2**20


def test_tampered_model_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "default"
    shutil.copytree(DEFAULT_DIR, copy)
    with open(copy / "model.onnx", "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="checksum mismatch"):
        verify(copy)


def test_default_prior_contract() -> None:
    runner = OrtRunner(str(default_model()))
    assert (runner.info.in_channels, runner.info.out_channels, runner.info.learn_sigma) == (1, 1, False)
    x = np.random.default_rng(0).standard_normal((2, 1, 48, 64)).astype(np.float32)
    y = runner.denoise(x, np.array([10.0, 900.0], np.float32))
    assert y.shape == x.shape and np.isfinite(y).all()
