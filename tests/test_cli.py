"""``dig2dig fuse`` end to end: outputs, bad input, atomic writes, and no PyTorch at run time."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Tuple

import cv2
import numpy as np
import pytest

import conftest
from dig2dig.cli import main
from dig2dig.runtime import api, cli, settings
from dig2dig.runtime.errors import InputError
from dig2dig.runtime.options import settings_from_args


@pytest.fixture()
def pair(tmp_path: Path) -> Tuple[str, str]:
    """A real infrared/visible pair (TNO 10), cropped to 64x96 to keep the CLI runs short."""
    paths = []
    for role, source in zip(("a", "b"), conftest.pair("ivf", "10")):
        img = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)[:64, :96]
        path = tmp_path / f"{role}.png"
        cv2.imwrite(str(path), img)
        paths.append(str(path))
    return paths[0], paths[1]


def fuse(args: List[str]) -> int:
    return main(["fuse", *args, "--steps", "2", "-q"])


def test_fuse_writes_outputs(pair: Tuple[str, str], tmp_path: Path) -> None:
    out, raw, maps = tmp_path / "fused.png", tmp_path / "raw.npy", tmp_path / "maps"
    maps.mkdir()
    assert fuse([*pair, "-o", str(out), "--save-raw", str(raw), "--save-dig-maps", str(maps),
                 "--dig-every", "1"]) == 0
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (64, 96)
    assert np.load(raw).shape == (1, 64, 96)
    montage = cv2.imread(str(maps / "dig_weights.png"))
    assert montage is not None and montage.shape[1] == 2 * 256


@pytest.mark.parametrize("task", list(settings.TASKS))
def test_task_defaults_unless_given(task: str, tmp_path: Path) -> None:
    """Without --steps, --dig-tau, --dig-window or --dig-scale a task runs its TASK_DEFAULTS (ivf 6 steps, tau 0.6,
    window 61, DIG at 1/2; mif 10 steps, tau 0.25, window 41); a --config file overrides them, and options given on
    the command line win over both."""
    def parsed(*extra: str) -> settings.Settings:
        return settings_from_args(cli.build_parser({}).parse_args(["fuse", "a.png", "b.png", "-o", "f.png",
                                                                   "--task", task, *extra]))

    chosen = parsed()
    defaults = settings.TASK_DEFAULTS
    assert {field: getattr(chosen, field) for field in settings.TASK_FIELDS} == defaults[task]
    assert chosen == settings.resolve(task)
    assert defaults["ivf"]["dig_tau"] == 0.6 and defaults["mif"]["dig_tau"] == 0.25
    assert (defaults["ivf"]["steps"], defaults["ivf"]["dig_scale"], defaults["mef"]["dig_scale"]) == (6, 2, 1)
    assert defaults["ivf"]["dig_window"] == 61 and defaults["mif"]["dig_window"] == 41
    given = parsed("--steps", "7", "--dig-tau", "3", "--dig-window", "9")
    assert (given.steps, given.dig_tau, given.dig_window) == (7, 3.0, 9)
    config = tmp_path / "saved.json"
    config.write_text(json.dumps({"steps": 4, "em_power": 1, "dig_norm": "absolute"}))
    saved = parsed("--config", str(config), "--steps", "5")
    assert (saved.steps, saved.em_power, saved.dig_tau) == (5, 1.0, settings.PAPER_DIG_TAU)
    assert saved.dig_window == defaults[task]["dig_window"]
    config.write_text(json.dumps({"stepz": 4}))
    with pytest.raises(InputError, match="saved.json: unknown setting"):
        parsed("--config", str(config))


def test_bench_reports_each_stage(pair: Tuple[str, str], capsys: pytest.CaptureFixture) -> None:
    """``dig2dig bench --json`` times every stage of real fusions at the settings it was given."""
    assert main(["bench", *pair, "--steps", "2", "--dig-every", "1", "--runs", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["steps"], report["runs"]) == (2, 2) and report["refreshes"] >= 1
    assert (report["height"], report["width"]) == (64, 96)
    assert report["stages"]["total"]["median"] > 0 and len(report["runs_seconds"]["total"]) == 2
    assert report["table"].startswith("96x64 px, 2 steps")


def test_dig_norm_absolute_is_the_plain_softmax(pair: Tuple[str, str], tmp_path: Path) -> None:
    """--dig-norm absolute (tau 1 by default) runs; a huge absolute tau gives uniform weights, i.e. DDFM."""
    names = ("spread.png", "absolute.png", "huge.png", "static.png")
    for name, extra in zip(names, (["--dig-tau", "1"], ["--dig-norm", "absolute"],
                                   ["--dig-norm", "absolute", "--dig-tau", "1e9"], ["--guidance", "static"])):
        assert fuse([*pair, "-o", str(tmp_path / name), "--dig-every", "1", *extra]) == 0
    spread, absolute, huge, static = (cv2.imread(str(tmp_path / n), 0).astype(int) for n in names)
    assert np.abs(huge - static).max() <= 1 and not np.array_equal(spread, absolute)


def test_em_window_smooths_the_e_step(pair: Tuple[str, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    """--em-window 1 is DDFM's per-pixel E-step, another odd window (in pixels: --em-window-side 0)
    changes the fusion, an even one or a negative --em-window-side is a clear one-line error that
    leaves the output alone."""
    for name, window in (("plain.png", "1"), ("smooth.png", "5")):
        assert fuse([*pair, "-o", str(tmp_path / name), "--em-window", window, "--em-window-side", "0"]) == 0
    plain, smooth = (cv2.imread(str(tmp_path / n), 0).astype(int) for n in ("plain.png", "smooth.png"))
    assert np.abs(plain - smooth).mean() > 0.5
    assert fuse([*pair, "-o", str(tmp_path / "plain.png"), "--em-window", "4"]) == 2
    assert "em_window must be a positive odd number, got 4" in capsys.readouterr().err
    assert fuse([*pair, "-o", str(tmp_path / "plain.png"), "--em-window-side", "-1"]) == 2
    assert "em_window_side must be >= 0" in capsys.readouterr().err
    assert np.array_equal(cv2.imread(str(tmp_path / "plain.png"), 0).astype(int), plain)


def test_em_power_follows_the_dig_weights(pair: Tuple[str, str], tmp_path: Path,
                                          capsys: pytest.CaptureFixture) -> None:
    """--em-power below 1 changes the fusion; one outside [0, 1] is a clear one-line error that leaves the
    output alone."""
    for name, power in (("ddfm.png", "1"), ("half.png", "0.5")):
        assert fuse([*pair, "-o", str(tmp_path / name), "--em-power", power]) == 0
    ddfm, half = (cv2.imread(str(tmp_path / n), 0).astype(int) for n in ("ddfm.png", "half.png"))
    assert np.abs(ddfm - half).mean() > 0.2
    assert fuse([*pair, "-o", str(tmp_path / "ddfm.png"), "--em-power", "1.5"]) == 2
    assert "em_power must be in [0, 1]" in capsys.readouterr().err
    assert np.array_equal(cv2.imread(str(tmp_path / "ddfm.png"), 0).astype(int), ddfm)


def test_dig_passes_smooth_the_weights(pair: Tuple[str, str], tmp_path: Path,
                                      capsys: pytest.CaptureFixture) -> None:
    """--dig-passes 3 changes the saved DIG weights (a smoother window), 0 is a one-line error."""
    maps = {}
    for passes in ("1", "3"):
        folder = tmp_path / passes
        folder.mkdir()
        assert fuse([*pair, "-o", str(folder / "fused.png"), "--dig-window", "9", "--dig-passes", passes,
                     "--save-dig-maps", str(folder)]) == 0
        maps[passes] = cv2.imread(str(folder / "dig_weights.png"), 0).astype(int)
    assert np.abs(maps["1"] - maps["3"]).mean() > 0.5
    assert fuse([*pair, "-o", str(tmp_path / "bad.png"), "--dig-passes", "0"]) == 2
    assert "dig_passes must be >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad.png").exists()


def test_init_noise_replaces_the_seeded_start(pair: Tuple[str, str], tmp_path: Path) -> None:
    noise = np.random.default_rng(5).standard_normal((1, 64, 96)).astype(np.float32)
    np.save(tmp_path / "x.npy", noise)
    for name, seed in (("one.png", "0"), ("two.png", "9")):
        assert fuse([*pair, "-o", str(tmp_path / name), "--init-noise", str(tmp_path / "x.npy"), "--seed", seed,
                     "--guidance", "static"]) == 0
    assert fuse([*pair, "-o", str(tmp_path / "seeded.png"), "--seed", "7", "--guidance", "static"]) == 0
    one, two, seeded = (cv2.imread(str(tmp_path / n), 0) for n in ("one.png", "two.png", "seeded.png"))
    assert np.array_equal(one, two) and not np.array_equal(one, seeded)


@pytest.mark.parametrize("problem", ["missing", "empty", "not_image", "truncated", "size"])
def test_bad_input_is_one_clear_line(problem: str, pair: Tuple[str, str], tmp_path: Path,
                                     capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.png"
    out = tmp_path / "fused.png"
    out.write_bytes(b"previous result")
    if problem == "empty":
        bad.write_bytes(b"")
    elif problem == "not_image":
        bad.write_text("hello, not a picture\n")
    elif problem == "truncated":
        bad.write_bytes(Path(pair[1]).read_bytes()[:200])
    elif problem == "size":
        cv2.imwrite(str(bad), np.zeros((32, 32), np.uint8))
    code = fuse([pair[0], str(bad), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert len(err.splitlines()) == 1 and err.startswith("dig2dig: error:")
    assert "bad.png" in err
    if problem == "size":
        assert "--resize" in err
    assert out.read_bytes() == b"previous result", "a failed run must not touch an existing output"


def test_more_than_two_sources_is_refused(pair: Tuple[str, str]) -> None:
    from dig2dig.runtime import api
    with pytest.raises(InputError, match="exactly 2 sources"):
        api.prepare_sources([pair[0], pair[1], pair[0]])


def test_model_without_metadata_is_rejected(pair: Tuple[str, str], tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(api.default_model()))
    del model.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    assert fuse([*pair, "-o", str(tmp_path / "f.png"), "--model", str(bare)]) != 0
    err = capsys.readouterr().err
    assert "bare.onnx" in err and "metadata" in err
    assert not (tmp_path / "f.png").exists()


def test_fuse_runs_where_torch_cannot_be_imported(pair: Tuple[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('torch is blocked in this test')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "fused.png"
    code = ("import sys, dig2dig.cli as c; r = c.main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules or sys.modules['torch'] is None; sys.exit(r)")
    proc = subprocess.run([sys.executable, "-c", code, "fuse", *pair, "-o", str(out), "--steps", "2", "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert cv2.imread(str(out), 0).shape == (64, 96)
    blocked = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert blocked.returncode != 0 and "blocked" in blocked.stderr
