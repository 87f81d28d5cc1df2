"""The ADM UNet against openai/guided-diffusion's reference (shared/reference/adm)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dig2dig.export.unet import create_model
from dig2dig.runtime.schedule import ADM_LINEAR, alphas_cumprod

SHARED = Path(__file__).resolve().parents[2] / "shared"
ADM = SHARED / "reference" / "adm"


def _reference(name: str) -> Path:
    path = ADM / name
    if not path.exists():
        pytest.skip(f"shared ADM reference not found at {path}")
    return path


@pytest.fixture(scope="module")
def small_model():
    config = json.loads(_reference("small_unet_config.json").read_text())["create_model_kwargs"]
    model = create_model(**config)
    with np.load(_reference("small_unet_weights.npz")) as weights:
        model.load_state_dict({key: torch.from_numpy(weights[key]) for key in weights.files}, strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def io():
    with np.load(_reference("small_unet_io.npz")) as data:
        return dict(data)


def test_256_uncond_state_dict_layout():
    reference = json.loads(_reference("unet_256_uncond_keys.json").read_text())
    with torch.device("meta"):
        model = create_model(**reference["create_model_kwargs"])
    state = model.state_dict()
    assert [(key, list(value.shape)) for key, value in state.items()] == \
        [(entry["key"], entry["shape"]) for entry in reference["keys"]]
    assert all(value.dtype == torch.float32 for value in state.values())
    assert sum(p.numel() for p in model.parameters()) == reference["total_parameters"] == 552_814_086
    assert (model.in_channels, model.out_channels, model.downsample_factor) == (3, 6, 32)


def test_small_state_dict_order_matches_weights_file(small_model):
    with np.load(_reference("small_unet_weights.npz")) as weights:
        assert list(small_model.state_dict()) == weights.files


@pytest.mark.parametrize("x_key, out_key", [("x", "out_f32"), ("x_nonsquare", "out_nonsquare_f32")])
def test_small_matches_reference_outputs(small_model, io, x_key, out_key):
    x = torch.from_numpy(io[x_key])
    with torch.no_grad():
        integer_t = small_model(x, torch.from_numpy(io["t"])).numpy()
        float_t = small_model(x, torch.from_numpy(io["t"].astype(np.float32))).numpy()
    assert integer_t.shape == io[out_key].shape
    assert np.max(np.abs(integer_t - io[out_key])) <= 1e-5
    np.testing.assert_array_equal(float_t, integer_t)  # the ONNX contract passes t as float32


def test_v_parameterization_outputs_epsilon(small_model, io):
    """Same weights and keys; forward turns the body's v into eps with the training schedule."""
    config = json.loads(_reference("small_unet_config.json").read_text())["create_model_kwargs"]
    v_model = create_model(**config, parameterization="v").eval()
    assert [(k, v.shape) for k, v in v_model.state_dict().items()] == \
        [(k, v.shape) for k, v in small_model.state_dict().items()]
    v_model.load_state_dict(small_model.state_dict())
    x, t = torch.from_numpy(io["x"]), torch.from_numpy(io["t"].astype(np.float32))
    with torch.no_grad():
        body, out = small_model(x, t).double(), v_model(x, t).double()
    abar = torch.tensor(alphas_cumprod(ADM_LINEAR))[t.long()][:, None, None, None]
    c = small_model.in_channels
    torch.testing.assert_close(out[:, :c], abar.sqrt() * body[:, :c] + (1 - abar).sqrt() * x.double(),
                               rtol=0, atol=1e-5)
    torch.testing.assert_close(out[:, c:], body[:, c:], rtol=0, atol=0)  # learned sigma passes through
    x0 = (x.double() - (1 - abar).sqrt() * out[:, :c]) / abar.sqrt()  # the runtime's x0 estimate
    torch.testing.assert_close(x0, abar.sqrt() * x.double() - (1 - abar).sqrt() * body[:, :c], rtol=0, atol=1e-3)


def test_unknown_parameterization_is_refused():
    with pytest.raises(ValueError, match="parameterization must be one of epsilon, v"):
        create_model(parameterization="x0")
