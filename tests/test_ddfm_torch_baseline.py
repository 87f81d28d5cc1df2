"""The PyTorch DDFM baseline of benchmarks/fuse_cpu.py runs DDFM's algorithm: its EM step matches
DDFM's own (tests/data/reference/ddfm_em) and its whole loop matches our sampler with static weights."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import em_iterations, pair  # noqa: E402
from dig2dig.export.checkpoint import load_config, load_model  # noqa: E402
from dig2dig.runtime import io  # noqa: E402
from dig2dig.runtime.backends.ort import OrtRunner  # noqa: E402
from dig2dig.runtime.sampler import Settings, initial_noise, sample  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models" / "default"


def _baseline() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ddfm_torch", ROOT / "benchmarks" / "ddfm_torch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ddfm_torch = _baseline()


def test_em_step_matches_ddfm(em_ref):
    f_pre, I, V = (torch.from_numpy(em_ref[key]) for key in ("f_pre", "I", "V"))
    state = ddfm_torch.em_init(*I.shape[-2:])
    for k in range(em_iterations(em_ref)):
        F, state = ddfm_torch.em_step(f_pre, I, V, state, lamb=0.5, rho=0.001)
        np.testing.assert_allclose(F.numpy(), em_ref[f"F_f32_iter{k}"], rtol=0, atol=1e-5)
        assert float(state.tau_a) == pytest.approx(em_ref["tau_a_f32"][k], rel=1e-5)


def test_loop_matches_our_static_sampler():
    crop = (slice(0, 64), slice(0, 64))
    sources = np.stack([io.read_source(str(p)).luma[crop] for p in pair("ivf", "10")]).astype(np.float32) * 2 - 1
    x_T = initial_noise((1, 64, 64), seed=0)
    ddfm = Settings(steps=5, guidance="static", em_window=1, em_power=1.0)
    ours = sample(OrtRunner(str(MODEL_DIR / "model.onnx")), sources, ddfm, x_T)

    net = load_model(MODEL_DIR / "weights.safetensors", load_config(MODEL_DIR / "config.json"))
    I, V = (torch.from_numpy(s)[None, None] for s in (sources[1], sources[0]))
    theirs = ddfm_torch.sample(net, I, V, torch.from_numpy(x_T)[None], steps=5)[0].numpy()
    assert np.abs(ours - x_T).max() > 0.1
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-3)
