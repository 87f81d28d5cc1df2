"""Checkpoint formats, loading into the UNet, configs, and the errors for bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ADM  # noqa: E402
from dig2dig.export.checkpoint import FORMATS, load_config, load_model, load_state_dict, save_state_dict  # noqa: E402
from dig2dig.export.unet import resolve_config  # noqa: E402
from dig2dig.runtime.errors import InputError, ModelError  # noqa: E402

CONFIG = ADM / "small_unet_config.json"
WEIGHTS = ADM / "small_unet_weights.npz"
KEYS_256 = ADM / "unet_256_uncond_keys.json"
# DDFM's configs/model_config_imagenet.yaml written as JSON (MMIF-DDFM@589f5cb).
DDFM_256 = {"image_size": 256, "num_channels": 256, "num_res_blocks": 2, "channel_mult": "", "learn_sigma": True,
            "class_cond": False, "use_checkpoint": False, "attention_resolutions": "32,16,8", "num_heads": 4,
            "num_head_channels": 64, "num_heads_upsample": -1, "use_scale_shift_norm": True, "dropout": 0.0,
            "resblock_updown": True, "use_fp16": False, "use_new_attention_order": False,
            "model_path": "models/256x256_diffusion_uncond.pt"}

UNPICKLED = []


class Payload:
    """An object whose unpickling would run code: ``weights_only`` loading must refuse it."""

    def __reduce__(self):
        return UNPICKLED.append, ("ran",)


@pytest.fixture(scope="module")
def config():
    return json.loads(CONFIG.read_text())["create_model_kwargs"]


@pytest.fixture(scope="module")
def state(config):
    with np.load(WEIGHTS) as weights:
        return {key: torch.from_numpy(weights[key]) for key in weights.files}


@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path, state, suffix):
    path = tmp_path / f"weights{suffix}"
    save_state_dict(state, path)
    loaded = load_state_dict(path)
    assert list(loaded) == (sorted(state) if suffix == ".safetensors" else list(state))
    assert all(torch.equal(loaded[key], value) for key, value in state.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no scratch files left


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_model_reproduces_reference(tmp_path, config, state, adm_io, suffix):
    path = tmp_path / f"weights{suffix}"
    save_state_dict(state, path)
    model = load_model(path, config)
    assert not model.training
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        out = model(torch.from_numpy(adm_io["x_nonsquare"]), torch.from_numpy(adm_io["t"])).numpy()
    assert np.max(np.abs(out - adm_io["out_nonsquare_f32"])) <= 1e-5


def test_load_model_from_reference_npz(config, adm_io):
    model = load_model(WEIGHTS, config)
    with torch.no_grad():
        out = model(torch.from_numpy(adm_io["x"]), torch.from_numpy(adm_io["t"].astype(np.float32))).numpy()
    assert np.max(np.abs(out - adm_io["out_f32"])) <= 1e-5


def _edited(state, edit):
    state = dict(state)
    if edit == "missing":
        del state["out.2.weight"]
    elif edit == "unexpected":
        state["label_emb.weight"] = torch.zeros(1000, 128)
    else:
        state["input_blocks.0.0.weight"] = torch.zeros(32, 1, 3, 3)
    return state


@pytest.mark.parametrize("edit, message", [
    ("missing", "missing key 'out.2.weight'"),
    ("unexpected", "unexpected key 'label_emb.weight'"),
    ("misshaped", "key 'input_blocks.0.0.weight' has shape (32, 1, 3, 3), the config expects (32, 3, 3, 3)"),
])
def test_mismatched_checkpoint_names_key_and_file(tmp_path, config, state, edit, message):
    path = tmp_path / "weights.safetensors"
    save_state_dict(_edited(state, edit), path)
    with pytest.raises(ModelError) as error:
        load_model(path, config)
    assert str(path) in str(error.value) and message in str(error.value)


def test_checkpoint_for_another_config_is_refused(config):
    with pytest.raises(ModelError, match="input_blocks.0.0.weight"):
        load_model(WEIGHTS, {**config, "in_channels": 1})


@pytest.mark.parametrize("suffix", FORMATS)
def test_truncated_file_names_file(tmp_path, state, suffix):
    path = tmp_path / f"weights{suffix}"
    save_state_dict(state, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelError, match="truncated or corrupt") as error:
        load_state_dict(path)
    assert str(path) in str(error.value)


def test_pickled_object_is_refused_not_run(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2), "payload": Payload()}, path)
    with pytest.raises(ModelError, match="refusing to unpickle") as error:
        load_state_dict(path)
    assert str(path) in str(error.value)
    assert UNPICKLED == []


def test_nested_checkpoint_is_refused(tmp_path, state):
    path = tmp_path / "trainer.pt"
    torch.save({"ema": state, "step": torch.tensor(10)}, path)
    with pytest.raises(ModelError, match="entry 'ema' is a dict, not a tensor"):
        load_state_dict(path)


def test_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(ModelError, match="unsupported checkpoint format '.ckpt'"):
        load_state_dict(tmp_path / "weights.ckpt")
    with pytest.raises(ModelError, match="checkpoint not found"):
        load_state_dict(tmp_path / "absent.pt")


def test_failed_save_leaves_previous_file(tmp_path, state):
    path = tmp_path / "weights.npz"
    save_state_dict(state, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):  # numpy has no bfloat16
        save_state_dict({"w": torch.ones(2, dtype=torch.bfloat16)}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_config_forms(tmp_path, config):
    assert load_config(CONFIG) == resolve_config(config)
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps(config))
    assert load_config(plain) == resolve_config(config)


def test_ddfm_256_config(tmp_path):
    expected = resolve_config(json.loads(KEYS_256.read_text())["create_model_kwargs"])
    assert load_config(KEYS_256) == expected
    ddfm = tmp_path / "model_config_imagenet.json"
    ddfm.write_text(json.dumps(DDFM_256))
    assert load_config(ddfm) == expected
    ddfm.write_text(json.dumps({**DDFM_256, "attention_resolutions": [32, 16, 8]}))
    assert load_config(ddfm) == expected


def test_bad_config_names_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"image_size": 64, "num_chanels": 32}))
    with pytest.raises(InputError, match="num_chanels") as error:
        load_config(path)
    assert str(path) in str(error.value)
    path.write_text("{not json")
    with pytest.raises(InputError, match="cannot read model config"):
        load_config(path)
