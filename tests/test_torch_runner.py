"""The PyTorch runner's model description matches the shipped ONNX model's (no GPU needed)."""
from __future__ import annotations

import pytest

from dig2dig.models import DEFAULT_DIR

pytest.importorskip("torch", reason="PyTorch is not installed")
pytest.importorskip("safetensors", reason="safetensors is not installed")


def test_model_info_matches_the_onnx_metadata():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")
    from dig2dig.export.checkpoint import load_config, load_model
    from dig2dig.export.torch_runner import model_info
    from dig2dig.runtime.backends.ort import OrtRunner

    config = load_config(DEFAULT_DIR / "config.json")
    info = model_info(load_model(DEFAULT_DIR / "weights.safetensors", config), config)
    assert info == OrtRunner(str(DEFAULT_DIR / "model.onnx")).info
