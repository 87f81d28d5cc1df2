"""The ADM UNet against openai/guided-diffusion's reference (tests/data/reference/adm)."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ADM, reference  # noqa: E402
from dig2dig.export.unet import create_model  # noqa: E402
from dig2dig.runtime.schedule import ADM_LINEAR, alphas_cumprod  # noqa: E402

CONFIG = ADM / "small_unet_config.json"
WEIGHTS = ADM / "small_unet_weights.npz"


@pytest.fixture(scope="module")
def small_model():
    model = create_model(**json.loads(CONFIG.read_text())["create_model_kwargs"])
    model.load_state_dict({key: torch.from_numpy(value) for key, value in reference(WEIGHTS).items()}, strict=True)
    return model.eval()


def test_256_uncond_state_dict_layout():
    layout = json.loads((ADM / "unet_256_uncond_keys.json").read_text())
    with torch.device("meta"):
        model = create_model(**layout["create_model_kwargs"])
    state = model.state_dict()
    assert [(key, list(value.shape)) for key, value in state.items()] == \
        [(entry["key"], entry["shape"]) for entry in layout["keys"]]
    assert all(value.dtype == torch.float32 for value in state.values())
    assert sum(p.numel() for p in model.parameters()) == layout["total_parameters"] == 552_814_086
    assert (model.in_channels, model.out_channels, model.downsample_factor) == (3, 6, 32)


def test_small_state_dict_order_matches_weights_file(small_model):
    with np.load(WEIGHTS) as weights:
        assert list(small_model.state_dict()) == weights.files


@pytest.mark.slow
@pytest.mark.parametrize("x_key, out_key", [("x", "out_f32"), ("x_nonsquare", "out_nonsquare_f32")])
def test_small_matches_reference_outputs(small_model, adm_io, x_key, out_key):
    x = torch.from_numpy(adm_io[x_key])
    with torch.no_grad():
        integer_t = small_model(x, torch.from_numpy(adm_io["t"])).numpy()
        float_t = small_model(x, torch.from_numpy(adm_io["t"].astype(np.float32))).numpy()
    assert integer_t.shape == adm_io[out_key].shape
    assert np.max(np.abs(integer_t - adm_io[out_key])) <= 1e-5
    np.testing.assert_array_equal(float_t, integer_t)  # the ONNX contract passes t as float32


@pytest.mark.slow
def test_v_parameterization_outputs_epsilon(small_model, adm_io):
    """Same weights and keys; forward turns the body's v into eps with the training schedule."""
    config = json.loads(CONFIG.read_text())["create_model_kwargs"]
    v_model = create_model(**config, parameterization="v").eval()
    assert [(k, v.shape) for k, v in v_model.state_dict().items()] == \
        [(k, v.shape) for k, v in small_model.state_dict().items()]
    v_model.load_state_dict(small_model.state_dict())
    x, t = torch.from_numpy(adm_io["x"]), torch.from_numpy(adm_io["t"].astype(np.float32))
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
