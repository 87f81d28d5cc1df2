"""train-prior on two real training images: a few CPU steps, the outputs, resume, and the options."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import TRAIN  # noqa: E402
from dig2dig.export.checkpoint import load_model  # noqa: E402
from dig2dig.export.train_prior import CropSampler, load_luminance_images, main  # noqa: E402

TINY = {"image_size": 64, "num_channels": 8, "num_res_blocks": 1, "channel_mult": "1,2", "learn_sigma": False,
        "attention_resolutions": "", "num_head_channels": 8, "use_scale_shift_norm": True, "resblock_updown": True,
        "in_channels": 1, "norm_groups": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch copy of the two vendored training images (one infrared, one visible)."""
    folder = tmp_path_factory.mktemp("train") / "data"
    shutil.copytree(TRAIN, folder)
    return folder


def train(data: Path, out: Path, steps: int, *extra: str) -> dict:
    config = out.parent / "tiny.json"
    config.write_text(json.dumps(TINY))
    assert main(["--data", str(data), "-o", str(out), "--config", str(config), "--steps", str(steps),
                 "--batch", "2", "--crop", "32", "--device", "cpu", *extra]) == 0
    return json.loads((out / "train_log.json").read_text())


def test_images_are_luminance_in_range(data: Path) -> None:
    images = load_luminance_images(data)
    assert len(images) == 2 and all(im.ndim == 2 and im.dtype == np.float32 for im in images)
    assert all(-1.0 <= im.min() < im.max() <= 1.0 for im in images)
    crops = CropSampler(images, 32, (0.6, 1.6), seed=0).batch(4)
    assert crops.shape == (4, 1, 32, 32) and -1.0 <= crops.min() and crops.max() <= 1.0
    toned = CropSampler(images, 32, (0.6, 1.6), seed=0, gamma=1.0).batch(4)
    assert toned.shape == crops.shape and -1.0 <= toned.min() and toned.max() <= 1.0
    assert not np.allclose(toned, crops)


def test_trains_saves_and_resumes(data: Path, tmp_path: Path) -> None:
    out = tmp_path / "prior"
    log = train(data, out, 3)
    assert log["steps"] == 3 and np.isfinite(log["final_loss_mean_last_500"])
    first = load_model(out / "weights.safetensors", TINY).state_dict()
    log = train(data, out, 5)  # resumes from train_state.pt
    assert log["steps"] == 5
    second = load_model(out / "weights.safetensors", TINY).state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)


def test_high_noise_options_and_init(data: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    train(data, base, 2)
    log = train(data, tmp_path / "tuned", 2, "--init", str(base / "weights.safetensors"), "--high-t", "600",
                "--weight-cap", "100", "--gamma", "1")
    assert log["high_t"] == 600 and log["weight_cap"] == 100.0 and log["init"].endswith("weights.safetensors")
    assert log["gamma"] == 1.0 and log["parameterization"] == "epsilon"
    assert np.isfinite(log["final_loss_mean_last_500"])


def test_v_model_trains_on_the_v_loss(data: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    train(data, base, 2)
    out = tmp_path / "v"
    config = {**TINY, "parameterization": "v"}
    (tmp_path / "v.json").write_text(json.dumps(config))
    args = ["--data", str(data), "-o", str(out), "--config", str(tmp_path / "v.json"), "--steps", "2",
            "--batch", "2", "--crop", "32", "--device", "cpu", "--init", str(base / "weights.safetensors")]
    assert main(args) == 0  # an epsilon network's weights initialise a v network: same keys
    assert json.loads((out / "config.json").read_text())["parameterization"] == "v"
    assert np.isfinite(json.loads((out / "train_log.json").read_text())["final_loss_mean_last_500"])
    with pytest.raises(ValueError, match="v model trains on the plain v loss"):
        main([*args[:3], str(tmp_path / "v2"), *args[4:], "--weight-cap", "10"])
