"""Bad output paths and options fail at once, before any model is loaded or source read, with one line
naming the path; an output folder that is missing is made."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, List, Tuple

import cv2
import numpy as np
import pytest

import conftest
from dig2dig.cli import main
from dig2dig.runtime import api, fuser, preflight
from dig2dig.runtime.errors import InputError, ModelError

PAIRS = Path(__file__).resolve().parent / "data" / "pairs"


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model fails the test: the checks must come first."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a model was loaded before the arguments were checked")

    monkeypatch.setattr(fuser, "open_runner", refuse)
    monkeypatch.setattr(api, "open_runner", refuse)


def one_error_line(capsys: pytest.CaptureFixture, *names: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dig2dig: error: "), err
    for name in names:
        assert name in err
    return err


@pytest.mark.parametrize("output, problem", [("missing/fused.png", "does not exist"),
                                             ("fused.gif", "unknown image extension '.gif'"),
                                             ("fused", "unknown image extension ''")])
def test_long_fusion_with_a_bad_output_fails_at_once(output: str, problem: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """A 100-step fusion of a real 640x480 pair to a bad output path fails in under 2 s and writes nothing."""
    a, b = conftest.pair("ivf", "10")
    out = tmp_path / output
    start = time.perf_counter()
    code = main(["fuse", str(a), str(b), "-o", str(out), "--steps", "100", "-q"])
    elapsed = time.perf_counter() - start
    assert code == 2 and elapsed < 2.0
    one_error_line(capsys, str(out), problem)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, value, problem", [
    ("--save-raw", "missing/raw.npy", "does not exist"),
    ("--save-raw", "raw.bin", "unknown array extension '.bin'"),
    ("--save-dig-maps", "missing/maps", "does not exist"),
    ("--init-noise", "nowhere.npy", "nowhere.npy"),
])
def test_bad_side_outputs_fail_before_the_model(option: str, value: str, problem: str, tmp_path: Path,
                                                no_model: None, capsys: pytest.CaptureFixture) -> None:
    a, b = conftest.pair("ivf", "10")
    code = main(["fuse", str(a), str(b), "-o", str(tmp_path / "fused.png"), option, str(tmp_path / value), "-q"])
    assert code == 2
    one_error_line(capsys, problem)
    assert list(tmp_path.iterdir()) == []


def test_missing_dig_maps_folder_is_made(tmp_path: Path) -> None:
    """--save-dig-maps into a folder that does not exist yet makes it; a bad output next to it fails fast and
    makes nothing."""
    a, b = conftest.pair("ivf", "10")
    maps = tmp_path / "maps"
    start = time.perf_counter()
    assert main(["fuse", str(a), str(b), "-o", str(tmp_path / "none" / "f.png"), "--steps", "100",
                 "--save-dig-maps", str(maps), "-q"]) == 2
    assert time.perf_counter() - start < 2.0 and not maps.exists()
    small = []
    for role, path in zip("ab", (a, b)):
        small.append(tmp_path / f"{role}.png")
        cv2.imwrite(str(small[-1]), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:64, :96])
    assert main(["fuse", *map(str, small), "-o", str(tmp_path / "f.png"), "--steps", "2", "--dig-every", "1",
                 "--save-dig-maps", str(maps), "-q"]) == 0
    assert cv2.imread(str(maps / "dig_weights.png")) is not None


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes in read-only folders")
def test_read_only_folder_is_refused(tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        a, b = conftest.pair("ivf", "10")
        assert main(["fuse", str(a), str(b), "-o", str(locked / "f.png"), "-q"]) == 2
        one_error_line(capsys, "is not writable")
    finally:
        locked.chmod(0o700)


def test_output_folder_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="not a folder"):
        preflight.output_folder(tmp_path / "file")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        preflight.output_image(tmp_path / "dir.png")


def test_video_and_eval_outputs_fail_before_the_model(tmp_path: Path, no_model: None,
                                                      capsys: pytest.CaptureFixture) -> None:
    a, b = conftest.pair("ivf", "10")
    bad_outputs: List[Tuple[List[str], str]] = [
        (["video", str(a), str(b), "-o", str(tmp_path / "missing" / "f.mp4")], "does not exist"),
        (["video", str(a), str(b), "-o", str(tmp_path / "f.gif")], "unknown video extension '.gif'"),
        (["video", str(a), str(b), "-o", str(tmp_path / "missing" / "seq") + "/"], "does not exist"),
        (["eval", "--data", str(PAIRS), "-o", str(tmp_path / "missing" / "out")], "does not exist"),
    ]
    for argv, problem in bad_outputs:
        assert main([*argv, "-q"]) == 2
        one_error_line(capsys, problem)
    assert list(tmp_path.iterdir()) == []


def test_api_checks_the_model_before_the_sources(tmp_path: Path) -> None:
    """A bad backend is reported before a missing source is even looked at; ``api.save`` refuses a bad path."""
    with pytest.raises(ModelError, match="unknown backend"):
        api.fuse(tmp_path / "no_a.png", tmp_path / "no_b.png", backend="nope")
    result = api.FusionResult(image=np.zeros((4, 4), np.uint8), luma=np.zeros((4, 4), np.float32),
                              raw=np.zeros((1, 8, 8), np.float32), trace=api.Trace())
    for bad in ("missing/f.png", "f.gif"):
        with pytest.raises(InputError, match=bad.split("/")[0]):
            api.save(result, tmp_path / bad)
    assert list(tmp_path.iterdir()) == []


def test_init_noise_shape_is_checked_before_any_model_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: List[int] = []
    with api.open_runner() as runner:
        real = runner.denoise
        monkeypatch.setattr(runner, "denoise", lambda *args: calls.append(1) or real(*args))
        a, b = conftest.pair("ivf", "10")
        with pytest.raises(InputError, match="--init-noise: shape"):
            api.fuse(a, b, runner=runner, init_noise=np.zeros((1, 8, 8), np.float32))
    assert calls == []
