"""Shared fixtures: the reference outputs of the public implementations in ../shared/reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
SAMPLER_NPZ = SHARED / "reference" / "ddfm_sampler" / "sampler_reference.npz"


@pytest.fixture(scope="session")
def sampler_ref():  # type: ignore[no-untyped-def]
    """DDFM's whole-sampler reference (see shared/reference/ddfm_sampler/README.md)."""
    if not SAMPLER_NPZ.exists():
        pytest.skip(f"shared DDFM sampler reference not found at {SAMPLER_NPZ}")
    return np.load(SAMPLER_NPZ)


@pytest.fixture(scope="session")
def cuda_device() -> None:
    """Skip unless pycuda is installed and sees a CUDA device (GPU tests only)."""
    driver = pytest.importorskip("pycuda.driver", reason="pycuda is not installed")
    try:
        driver.init()
        if driver.Device.count() == 0:
            pytest.skip("no CUDA device")
    except driver.Error as exc:
        pytest.skip(f"CUDA driver unusable: {exc}")
