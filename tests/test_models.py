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


def test_cpu_runner_runs_one_image_at_a_time_with_the_same_outputs() -> None:
    """On the CPU provider a batch runs one image at a time (bounded memory), bit for bit as one call."""
    split, whole = OrtRunner(str(default_model())), OrtRunner(str(default_model()), max_batch=0)
    assert split.max_batch == 1
    x = np.random.default_rng(1).standard_normal((5, 1, 48, 64)).astype(np.float32)
    t = np.array([999, 999, 999, 888, 888], np.float32)
    np.testing.assert_array_equal(split.denoise(x, t), whole.denoise(x, t))
    assert OrtRunner(str(default_model()), max_batch=2).denoise(x, t).shape == (5, 1, 48, 64)
