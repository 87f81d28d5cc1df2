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
