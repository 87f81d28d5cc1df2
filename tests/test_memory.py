"""The memory guard (runtime/memory.py): the estimate, the tile it picks, and the refusal before any model
work, with a message that says what would fit."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import pair
from dig2dig import Fuser
from dig2dig.runtime import api, memory
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.settings import Limits, resolve
from dig2dig.runtime.tiling import TiledRunner

GB = 1 << 30


@pytest.fixture(scope="module")
def runner():
    with api.open_runner() as opened:
        yield opened


def test_estimate_grows_with_the_square_of_the_attention_tokens(runner):
    """The middle attention's matrices dominate large images: 2048x1536 untiled needs tens of GB, on 512-px
    tiles about a gigabyte (docs/BENCHMARKS.md measures both sides of the fit)."""
    info = runner.info
    untiled = memory.fusion_bytes(info, (1536, 2048))
    assert untiled > 40 * GB
    assert memory.fusion_bytes(info, (1536, 2048), tile=512) < 2 * GB
    assert memory.fusion_bytes(info, (480, 640)) < 1.5 * GB
    assert memory.fusion_bytes(info, (480, 640), pairs=4) > memory.fusion_bytes(info, (480, 640))


def test_plan_runs_untiled_when_it_fits_and_tiles_when_it_must(runner):
    info, names = runner.info, ["a.png", "b.png"]
    size = (1536, 2048)
    assert memory.plan(info, size, 1, Limits(), names, room=100 * GB) is None
    tile = memory.plan(info, size, 1, Limits(), names, room=2 * GB)
    assert tile in memory.TILE_SIDES and memory.fusion_bytes(info, size, 1, tile) <= 2 * GB
    assert memory.plan(info, size, 1, Limits(tile=256), names, room=100 * GB) == 256
    assert memory.plan(info, (480, 640), 1, Limits(tile=1024), names, room=100 * GB) is None


def test_plan_refuses_with_what_would_fit(runner):
    info, names = runner.info, ["ir.png", "vis.png"]
    with pytest.raises(InputError, match=r"^ir.png, vis.png: fusing 1536x2048 pixels needs an estimated .* GB of "
                                         r"memory, 2.0 GB is available; tile it with --tile \d+"):
        memory.plan(info, (1536, 2048), 1, Limits(tile=0), names, room=2 * GB)
    with pytest.raises(InputError, match=r"shrink the sources with --max-side \d+"):
        memory.plan(info, (6000, 8000), 1, Limits(), names, room=GB)
    with pytest.raises(InputError, match=r"1 MB is available within --max-memory; raise --max-memory"):
        memory.plan(info, (480, 640), 1, Limits(max_memory=GB), names, room=1 << 20)


def test_budget_is_what_is_available_or_max_memory_less_what_is_held():
    available = memory.available_bytes()
    assert available is None or available > 0
    held = memory.resident_bytes()
    assert held > 0
    assert memory.budget(Limits(max_memory=held + GB)) <= GB


def test_fuser_refuses_before_any_model_call(runner, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "denoise", lambda x, t: calls.append(x.shape))
    monkeypatch.setattr(memory, "budget", lambda limits: 300 << 20)
    frame = np.zeros((480, 640), np.uint8)
    with Fuser("ivf", runner=runner, limits=Limits(tile=0)) as fuser:
        with pytest.raises(InputError, match=r"^a, b: .* 300 MB is available; tile it with --tile 256"):
            fuser(frame, frame)
    with Fuser("ivf", runner=runner) as fuser:
        with pytest.raises(InputError, match="1 MB is available; free some memory"):
            monkeypatch.setattr(memory, "budget", lambda limits: 1 << 20)
            fuser(frame, frame)
    assert calls == []


def test_fuser_tiles_when_the_budget_asks(runner, monkeypatch):
    """With room for 256-px tiles only, the model sees nothing larger; the fusion completes."""
    shapes = []
    denoise = runner.denoise
    monkeypatch.setattr(runner, "denoise", lambda x, t: shapes.append(x.shape[2:]) or denoise(x, t))
    room = memory.fusion_bytes(runner.info, (384, 512), 1, 256)
    monkeypatch.setattr(memory, "budget", lambda limits: room)
    frame = np.full((384, 512), 128, np.uint8)
    with Fuser("ivf", runner=runner, settings=resolve("ivf", steps=1)) as fuser:
        fused = fuser(frame, frame)
    assert fused.shape == (384, 512) and max(max(shape) for shape in shapes) == 256
    assert isinstance(Fuser("ivf", runner=runner, limits=Limits(tile=256))._runner_for((384, 512), [[]]),
                      TiledRunner)


def test_cli_refuses_a_fusion_over_max_memory_in_seconds(tmp_path: Path):
    """A 100-step fusion with a budget of 1 MB: one line naming the sources, no output, before the model runs."""
    a, b = pair("ivf", "22")
    out = tmp_path / "fused.png"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dig2dig.cli", "fuse", str(a), str(b), "-o", str(out),
                           "--steps", "100", "--max-memory", "1M", "--tile", "0"], capture_output=True, text=True)
    assert time.perf_counter() - start < 10
    assert done.returncode != 0 and not out.exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and str(a) in lines[0] and "--max-memory" in lines[0] and "Traceback" not in done.stderr
