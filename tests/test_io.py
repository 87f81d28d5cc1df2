"""Reading, pairing, colour handling and atomic writing of images (runtime/io.py)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import DATA, pair
from dig2dig.runtime import io as imageio
from dig2dig.runtime.errors import InputError, NumericalError
from dig2dig.runtime import api
from dig2dig.runtime.options import add_settings_options, limits_from_args
from dig2dig.runtime.settings import Limits

TNO_IR, TNO_VIS = pair("ivf", "10")
MSRS_IR, MSRS_VIS = pair("ivf", "00055D")
ROAD_VIS = pair("ivf", "FLIR_00977")[1]
MEF_UNDER, MEF_OVER = pair("mef", "Chair")
FUZZ = DATA / "fuzz"


def rgb_of(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def stretched(raw: np.ndarray) -> np.ndarray:
    values = raw.astype(np.float64)
    low, high = np.percentile(values, [imageio.LOW_PERCENTILE, imageio.HIGH_PERCENTILE])
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def assert_names(error: pytest.ExceptionInfo, *paths: Path) -> None:
    message = str(error.value)
    assert "\n" not in message
    for path in paths:
        assert path.name in message, message


def test_gray_pair_reads_exactly_without_stretch():
    ir, vis = imageio.read_source(TNO_IR), imageio.read_source(TNO_VIS)
    raw = cv2.imread(str(TNO_IR), cv2.IMREAD_UNCHANGED)
    assert ir.chroma is None and vis.chroma is None
    assert ir.bit_depth == 8 and ir.luma.dtype == np.float32 and ir.luma.shape == raw.shape
    assert np.array_equal(ir.luma, raw.astype(np.float32) / 255.0)
    imageio.check_pair(ir, vis)


@pytest.mark.parametrize("path", [ROAD_VIS, MSRS_VIS, MEF_UNDER])
def test_rgb_round_trip_within_one_level(path):
    source = imageio.read_source(path)
    rgb = rgb_of(path)
    assert source.chroma is not None and source.chroma.shape == (2,) + rgb.shape[:2]
    assert source.luma.min() >= 0.0 and source.luma.max() <= 1.0
    expected_y = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    assert np.abs(source.luma - expected_y).max() < 1e-4
    back = imageio.to_image(source.luma, source.chroma)
    assert back.dtype == np.uint8 and back.shape == rgb.shape
    assert np.abs(back.astype(int) - rgb.astype(int)).max() <= 1


def test_identical_channels_count_as_gray(tmp_path):
    gray = cv2.imread(str(TNO_VIS), cv2.IMREAD_UNCHANGED)
    path = tmp_path / "gray3.png"
    cv2.imwrite(str(path), cv2.merge([gray, gray, gray]))
    source = imageio.read_source(path)
    assert source.chroma is None
    assert np.array_equal(source.luma, gray.astype(np.float32) / 255.0)


def test_alpha_is_dropped(tmp_path):
    bgr = cv2.imread(str(MSRS_VIS), cv2.IMREAD_UNCHANGED)
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), cv2.merge([*cv2.split(bgr), np.full(bgr.shape[:2], 7, np.uint8)]))
    with_alpha, plain = imageio.read_source(path), imageio.read_source(MSRS_VIS)
    assert np.array_equal(with_alpha.luma, plain.luma)
    assert np.array_equal(with_alpha.chroma, plain.chroma)


@pytest.mark.parametrize("extension", [".png", ".tif"])
def test_narrow_band_16bit_gray_is_percentile_stretched(tmp_path, extension):
    # Raw thermal look: a real infrared frame squeezed into 7000..9040 of the 16-bit range.
    ir8 = cv2.imread(str(MSRS_IR), cv2.IMREAD_UNCHANGED)
    raw = (7000 + ir8.astype(np.uint16) * 8).astype(np.uint16)
    path = tmp_path / f"thermal{extension}"
    cv2.imwrite(str(path), raw)
    source = imageio.read_source(path)
    assert source.bit_depth == 16 and source.chroma is None and source.luma.dtype == np.float32
    assert np.abs(source.luma - stretched(raw)).max() < 1e-5
    assert source.luma.min() == 0.0 and source.luma.max() == 1.0
    order = np.argsort(ir8.ravel(), kind="stable")
    assert np.all(np.diff(source.luma.ravel()[order]) >= 0.0)


def test_16bit_rgb_tiff_stretches_channels_jointly(tmp_path):
    rgb8 = rgb_of(ROAD_VIS)
    raw = (1000 + rgb8.astype(np.uint16) * 16).astype(np.uint16)
    path = tmp_path / "colour16.tiff"
    cv2.imwrite(str(path), cv2.cvtColor(raw, cv2.COLOR_RGB2BGR))
    source = imageio.read_source(path)
    assert source.bit_depth == 16 and source.chroma is not None
    back = imageio.to_image(source.luma, source.chroma, bit_depth=16).astype(np.float64) / 65535.0
    assert np.abs(back - stretched(raw)).max() < 2.0 / 65535.0 + 1e-4


def test_float_tiff_in_unit_range_is_taken_as_is(tmp_path):
    values = np.linspace(0.0, 1.0, 48, dtype=np.float32).reshape(6, 8)
    path = tmp_path / "unit.tif"
    cv2.imwrite(str(path), values)
    source = imageio.read_source(path)
    assert source.bit_depth == 32 and np.array_equal(source.luma, values)


def test_error_missing_file(tmp_path):
    path = tmp_path / "absent.png"
    with pytest.raises(InputError, match="no such file") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_directory(tmp_path):
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(InputError, match="directory") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_text_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    with pytest.raises(InputError, match="text file") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_unknown_binary(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not an image") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_truncated_png(tmp_path):
    data = TNO_IR.read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated PNG") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_signed_samples(tmp_path):
    path = tmp_path / "signed.tif"
    cv2.imwrite(str(path), np.arange(-24, 24, dtype=np.int16).reshape(6, 8))
    with pytest.raises(InputError, match="int16") as error:
        imageio.read_source(path)
    assert_names(error, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_error_non_finite_float(tmp_path, bad):
    values = np.full((6, 8), 0.25, np.float32)
    values[2, 3] = bad
    path = tmp_path / "float.tif"
    cv2.imwrite(str(path), values)
    with pytest.raises(InputError, match="NaN" if np.isnan(bad) else "infinite") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_error_zero_size(tmp_path, monkeypatch):
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), np.zeros((4, 4), np.uint8))
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda data, flags: np.zeros((0, 4), np.uint8))
    with pytest.raises(InputError, match="zero height or width") as error:
        imageio.read_source(path)
    assert_names(error, path)


@pytest.mark.parametrize("extension", [".png", ".jpg", ".bmp", ".tif"])
def test_decompression_bomb_is_refused_from_its_header(extension, monkeypatch):
    """A few KB declaring 60000x60000 pixels: refused before decoding, with the size and the limit."""
    path = FUZZ / f"bomb_60000x60000{extension}"
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda data, flags: pytest.fail("decoded"))
    with pytest.raises(InputError, match=r"60000x60000 pixels .* limit of 50000000 pixels.*--max-pixels") as error:
        imageio.read_source(path)
    assert_names(error, path)


def test_max_pixels_is_a_limit_per_call():
    height, width = cv2.imread(str(TNO_IR), cv2.IMREAD_UNCHANGED).shape[:2]
    assert imageio.read_source(TNO_IR, max_pixels=height * width).height == height
    with pytest.raises(InputError, match=f"{height}x{width} pixels") as error:
        imageio.read_source(TNO_IR, max_pixels=height * width - 1)
    assert_names(error, TNO_IR)
    with pytest.raises(InputError, match="frame 7: .*limit"):
        imageio.read_frame("frame 7", np.zeros((height, width), np.uint8), max_pixels=height * width - 1)
    with pytest.raises(InputError, match=f"{TNO_IR}: .*limit"):
        api.prepare_sources([TNO_IR, TNO_VIS], max_pixels=height * width - 1)


def test_header_sizes_of_every_format():
    for path in sorted(FUZZ.glob("seed_*")):
        assert imageio._header_size(path.read_bytes()) == (24, 32), path.name
    big_endian_tiff = b"MM\0*" + (8).to_bytes(4, "big") + (2).to_bytes(2, "big") + \
        bytes.fromhex("0100 0004 00000001 00012345 0101 0003 00000001 00070000")
    assert imageio._header_size(big_endian_tiff) == (7, 0x12345)
    big_tiff = b"II+\0\x08\0\0\0" + (16).to_bytes(8, "little") + (1).to_bytes(8, "little") + \
        (256).to_bytes(2, "little") + (16).to_bytes(2, "little") + (1).to_bytes(8, "little") + (9).to_bytes(8, "little")
    assert imageio._header_size(big_tiff) is None  # no ImageLength tag
    assert imageio._header_size(b"\xff\xd8\xff\xe0\x00\x10JFIF") is None


@pytest.mark.parametrize("extension", [".webp", ".ppm", ".pgm", ".pbm", ".pfm", ".pam", ".sr", ".hdr"])
def test_header_sizes_of_the_other_formats_opencv_reads(extension):
    """WebP (lossless and lossy), Netpbm, Sun raster and Radiance HDR as OpenCV writes them."""
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    if extension in (".pgm", ".pbm"):
        image = image[..., 0]
    if extension in (".pfm", ".hdr"):
        image = image.astype(np.float32) / 255
    for params in ([], [cv2.IMWRITE_WEBP_QUALITY, 80]) if extension == ".webp" else ([],):
        ok, encoded = cv2.imencode(extension, image, params)
        assert ok and imageio._header_size(encoded.tobytes()) == (24, 32), (extension, params)


@pytest.mark.parametrize("header", [
    b"P6\n# a comment\n60000 60000\n255\n",
    b"RIFF\x1a\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0" + (59999).to_bytes(3, "little") * 2,
], ids=["ppm", "webp"])
def test_other_format_bombs_are_refused_from_their_header(header, tmp_path, monkeypatch):
    path = tmp_path / "bomb.img"
    path.write_bytes(header + bytes(64))
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda data, flags: pytest.fail("decoded"))
    with pytest.raises(InputError, match="60000x60000 pixels"):
        imageio.read_source(path)


def test_decoder_errors_become_input_errors(tmp_path):
    """Past OpenCV's own limit its decoder raises; the reader names the file instead of a traceback."""
    path = tmp_path / "bomb.png"
    path.write_bytes((FUZZ / "bomb_60000x60000.png").read_bytes())
    with pytest.raises(InputError, match="the decoder failed") as error:
        imageio.read_source(path, max_pixels=60000 * 60000)
    assert_names(error, path)


def test_limits_options():
    parser = argparse.ArgumentParser()
    add_settings_options(parser)
    limits = limits_from_args(parser.parse_args(["--max-pixels", "120000000", "--max-memory", "1.5G", "--tile", "512"]))
    assert limits == Limits(max_pixels=120_000_000, max_memory=3 << 29, tile=512)
    assert limits_from_args(parser.parse_args([])) == Limits()
    with pytest.raises(InputError, match="max_pixels must be a positive"):
        limits_from_args(parser.parse_args(["--max-pixels", "0"]))
    with pytest.raises(InputError, match="tile_overlap .* below the tile"):
        limits_from_args(parser.parse_args(["--tile", "64", "--tile-overlap", "64"]))
    with pytest.raises(SystemExit):
        parser.parse_args(["--max-memory", "lots"])


def test_size_mismatch_names_both_files_and_resize_fixes_it():
    tno, msrs = imageio.read_source(TNO_VIS), imageio.read_source(MSRS_VIS)
    road = imageio.read_source(ROAD_VIS)
    with pytest.raises(InputError, match="--resize") as error:
        imageio.check_pair(road, msrs)
    assert_names(error, ROAD_VIS, MSRS_VIS)
    assert "89x128" in str(error.value) and "96x128" in str(error.value)
    smaller = imageio.resize_to(msrs, road.height, road.width)
    larger = imageio.resize_to(road, tno.height, tno.width)
    imageio.check_pair(road, smaller)
    imageio.check_pair(tno, larger)
    for source in (smaller, larger):
        assert source.chroma is not None and source.chroma.shape == (2,) + source.luma.shape
        assert source.luma.dtype == np.float32 and 0.0 <= source.luma.min() <= source.luma.max() <= 1.0


def test_merge_chroma_one_colour_source_lends_its_chroma():
    ir, vis = imageio.read_source(MSRS_IR), imageio.read_source(MSRS_VIS)
    assert np.array_equal(imageio.merge_chroma([ir, vis]), vis.chroma)
    assert imageio.merge_chroma([ir, imageio.read_source(TNO_VIS)]) is None


def test_merge_chroma_weights_by_saturation():
    under, over = imageio.read_source(MEF_UNDER), imageio.read_source(MEF_OVER)
    fused = imageio.merge_chroma([under, over])
    c1, c2 = under.chroma.astype(np.float64), over.chroma.astype(np.float64)
    w1, w2 = np.abs(c1 - 0.5), np.abs(c2 - 0.5)
    total = w1 + w2
    expected = np.where(total > 0, (c1 * w1 + c2 * w2) / np.where(total > 0, total, 1.0), 0.5)
    assert fused.shape == c1.shape and fused.dtype == np.float32
    assert np.abs(fused - expected).max() < 1e-5
    assert np.all(fused >= np.minimum(c1, c2) - 1e-6) and np.all(fused <= np.maximum(c1, c2) + 1e-6)


def test_merge_chroma_neutral_cases():
    def colour(cb: float, cr: float) -> imageio.Source:
        chroma = np.stack([np.full((2, 2), cb, np.float32), np.full((2, 2), cr, np.float32)])
        return imageio.Source("x.png", np.zeros((2, 2), np.float32), chroma, 8)

    fused = imageio.merge_chroma([colour(0.5, 0.5), colour(0.8, 0.5)])
    assert np.allclose(fused[0], 0.8) and np.allclose(fused[1], 0.5)


def test_output_bit_depth():
    deep = imageio.Source("t.png", np.zeros((1, 1), np.float32), None, 16)
    shallow = imageio.Source("v.png", np.zeros((1, 1), np.float32), None, 8)
    assert imageio.output_bit_depth("out.tif", [deep, shallow]) == 16
    assert imageio.output_bit_depth("out.TIFF", [shallow, deep]) == 16
    assert imageio.output_bit_depth("out.png", [deep, shallow]) == 8
    assert imageio.output_bit_depth("out.tif", [shallow, shallow]) == 8


def test_to_image_rejects_nan():
    luma = np.zeros((2, 2), np.float32)
    luma[0, 0] = np.nan
    with pytest.raises(NumericalError):
        imageio.to_image(luma)


@pytest.mark.parametrize("name", ["fused.png", "fused.tif", "fused.bmp"])
def test_write_image_round_trip(tmp_path, name):
    rgb = rgb_of(MSRS_VIS)
    path = tmp_path / name
    imageio.write_image(path, rgb)
    assert np.array_equal(rgb_of(path), rgb)
    assert os.listdir(tmp_path) == [name]


def test_write_image_16bit_tiff(tmp_path):
    image = (np.arange(48, dtype=np.uint16) * 1000).reshape(6, 8)
    path = tmp_path / "deep.tif"
    imageio.write_image(path, image)
    assert np.array_equal(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), image)
    with pytest.raises(InputError, match="16-bit") as error:
        imageio.write_image(tmp_path / "deep.jpg", image)
    assert_names(error, tmp_path / "deep.jpg")


def test_write_npy_round_trip(tmp_path):
    array = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    path = tmp_path / "weights.npy"
    imageio.write_npy(path, array)
    assert np.array_equal(np.load(path), array)
    with pytest.raises(InputError, match=".npy"):
        imageio.write_npy(tmp_path / "weights.bin", array)


def test_write_errors_name_the_path(tmp_path):
    image = np.zeros((4, 4), np.uint8)
    missing = tmp_path / "nowhere" / "out.png"
    with pytest.raises(InputError, match="does not exist") as error:
        imageio.write_image(missing, image)
    assert_names(error, missing)
    with pytest.raises(InputError, match="unknown image extension") as error:
        imageio.write_image(tmp_path / "out.xyz", image)
    assert_names(error, tmp_path / "out.xyz")
    with pytest.raises(InputError, match="does not exist"):
        imageio.write_npy(missing.with_suffix(".npy"), image)


def _assert_failed_write_left_old_file(tmp_path: Path, path: Path, old: bytes) -> None:
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == [path.name]


def test_failed_replace_keeps_existing_output(tmp_path, monkeypatch):
    path = tmp_path / "fused.png"
    old = b"previous result"
    path.write_bytes(old)

    def refuse(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.os, "replace", refuse)
    with pytest.raises(InputError, match="cannot write") as error:
        imageio.write_image(path, np.full((4, 4), 200, np.uint8))
    assert_names(error, path)
    _assert_failed_write_left_old_file(tmp_path, path, old)
    with pytest.raises(InputError):
        imageio.write_npy(tmp_path / "fused.npy", np.zeros(3))
    assert os.listdir(tmp_path) == [path.name]


def test_failed_encode_writes_nothing(tmp_path, monkeypatch):
    path = tmp_path / "fused.png"
    old = b"previous result"
    path.write_bytes(old)
    monkeypatch.setattr(imageio.cv2, "imencode", lambda ext, image: (False, None))
    with pytest.raises(InputError, match="cannot encode") as error:
        imageio.write_image(path, np.zeros((4, 4), np.uint8))
    assert_names(error, path)
    _assert_failed_write_left_old_file(tmp_path, path, old)


def test_interrupted_write_removes_temporary(tmp_path, monkeypatch):
    path = tmp_path / "fused.png"
    old = b"previous result"
    path.write_bytes(old)

    def interrupt(descriptor: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(imageio.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        imageio.write_image(path, np.zeros((4, 4), np.uint8))
    _assert_failed_write_left_old_file(tmp_path, path, old)
