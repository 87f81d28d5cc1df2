"""Where the test fixtures live (tests/data, see its README.md), the reference arrays, and the markers' skips."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
PAIRS = DATA / "pairs"
TRAIN = DATA / "train"
REFERENCE = DATA / "reference"
ADM = REFERENCE / "adm"
EM_NPZ = REFERENCE / "ddfm_em" / "em_reference.npz"
SAMPLER_NPZ = REFERENCE / "ddfm_sampler" / "sampler_reference.npz"
METRICS = REFERENCE / "metrics"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pair(task: str, name: str) -> Tuple[Path, Path]:
    """Paths (a, b) of a vendored real pair."""
    return PAIRS / task / "a" / f"{name}.png", PAIRS / task / "b" / f"{name}.png"


@lru_cache(maxsize=None)
def reference(path: Path) -> Dict[str, np.ndarray]:
    """Every array of a vendored reference npz, loaded once."""
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def em_iterations(em_ref: Dict[str, np.ndarray]) -> int:
    """How many EM_onestep iterations the EM reference holds."""
    return len(em_ref["tau_a_f64"])


@pytest.fixture(scope="session")
def sampler_ref() -> Dict[str, np.ndarray]:
    """DDFM's whole-sampler reference subset (tests/data/README.md)."""
    return reference(SAMPLER_NPZ)


@pytest.fixture(scope="session")
def em_ref() -> Dict[str, np.ndarray]:
    """DDFM's EM_onestep reference subset (tests/data/README.md)."""
    return reference(EM_NPZ)


@pytest.fixture(scope="session")
def adm_io() -> Dict[str, np.ndarray]:
    """Inputs and float32 outputs of guided-diffusion's small UNet (tests/data/README.md)."""
    return reference(ADM / "small_unet_io.npz")


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


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """Tests marked ``dataset`` skip, saying why, when the development set is not beside the repository."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the development set at {SHARED_DATA}")
    for item in items:
        if item.get_closest_marker("dataset"):
            item.add_marker(skip)
