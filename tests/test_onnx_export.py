"""ONNX export of the ADM UNet: validity, metadata, and parity with PyTorch and the reference."""
from __future__ import annotations

import contextlib
import io as io_module
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.slow  # every test but two exports a model

from conftest import ADM  # noqa: E402
from dig2dig.export.checkpoint import load_config, load_model  # noqa: E402
from dig2dig.export.cli import main  # noqa: E402
from dig2dig.export.onnx_export import export_onnx  # noqa: E402
from dig2dig.runtime.schedule import ADM_LINEAR  # noqa: E402
from dig2dig.export.unet import create_model  # noqa: E402
from dig2dig.runtime.backends.base import ModelInfo  # noqa: E402
from dig2dig.runtime.errors import ModelError  # noqa: E402

CONFIG = ADM / "small_unet_config.json"
WEIGHTS = ADM / "small_unet_weights.npz"
# A two-level model: enough to exercise every block type, quick to export.
TINY = {"image_size": 64, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,1,2",
        "attention_resolutions": "16", "num_head_channels": 16, "use_scale_shift_norm": True,
        "resblock_updown": True}


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp32") / "small.onnx"
    report = export_onnx(load_model(WEIGHTS, load_config(CONFIG)), load_config(CONFIG), path)
    return path, report


@pytest.fixture(scope="module")
def fp16_cli(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp16") / "small16.onnx"
    printed = io_module.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["export", "onnx", "--checkpoint", str(WEIGHTS), "--config", str(CONFIG), "-o", str(path),
                     "--fp16"])
    return path, code, printed.getvalue()


def _run(path: Path, x: np.ndarray, t: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["y"], {"x": x, "t": t.astype(np.float32)})[0]


def _metadata(path: Path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def _elem_types(model: onnx.ModelProto) -> dict:
    """Element type of every value in ``model`` after ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types.update({tensor.name: tensor.data_type for tensor in graph.initializer})
    return types


def test_fp32_verification_report(fp32):
    path, report = fp32
    assert report.path == path and report.opset == 17 and not report.external_data and not report.skipped
    assert [c.shape for c in report.checks] == [(2, 3, 64, 64), (2, 3, 64, 96)]
    assert all(c.rel <= 1e-4 for c in report.checks)
    assert "rel err" in report.summary()


def test_fp32_file_is_valid_opset_17(fp32):
    path, _ = fp32
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert [op.version for op in model.opset_import if op.domain in ("", "ai.onnx")] == [17]
    float32 = onnx.TensorProto.FLOAT

    def signature(values):
        return [(v.name, v.type.tensor_type.elem_type,
                 [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]

    assert signature(model.graph.input) == [("x", float32, ["N", 3, "H", "W"]), ("t", float32, ["N"])]
    assert signature(model.graph.output) == [("y", float32, ["N", 6, "H", "W"])]


def test_metadata_round_trip(fp32):
    path, report = fp32
    props = _metadata(path)
    assert sorted(props) == ["dig2dig.model", "dig2dig.schedule"]
    info = ModelInfo.from_metadata(props, str(path))
    assert info == report.info
    assert info == ModelInfo(in_channels=3, out_channels=6, learn_sigma=True, multiple=4, precision="fp32",
                             schedule=ADM_LINEAR, config=load_config(CONFIG))
    assert info.to_metadata() == props


@pytest.mark.parametrize("x_key, out_key", [("x", "out_f32"), ("x_nonsquare", "out_nonsquare_f32")])
def test_fp32_matches_reference_outputs(fp32, adm_io, x_key, out_key):
    out = _run(fp32[0], adm_io[x_key], adm_io["t"])
    assert np.max(np.abs(out - adm_io[out_key])) <= 1e-5


def test_fp16_cli_export(fp16_cli, fp32, adm_io):
    path, code, printed = fp16_cli
    assert code == 0
    lines = printed.splitlines()
    assert lines[0] == f"wrote {path} (fp16, opset 17, multiple 4)"
    assert [line.split(":")[0] for line in lines[1:]] == ["verify 2x3x64x64", "verify 2x3x64x96"]
    assert all("max abs err" in line and "(limit 0.01)" in line for line in lines[1:])
    info = ModelInfo.from_metadata(_metadata(path), str(path))
    assert info.precision == "fp16" and info.config == load_config(CONFIG)
    assert path.stat().st_size < 0.7 * fp32[0].stat().st_size  # weights are float16
    for x_key, out_key in [("x", "out_f32"), ("x_nonsquare", "out_nonsquare_f32")]:
        out = _run(path, adm_io[x_key], adm_io["t"])
        assert out.dtype == np.float32
        assert np.max(np.abs(out - adm_io[out_key])) / np.max(np.abs(adm_io[out_key])) <= 1e-2


def test_fp16_graph_keeps_norm_and_softmax_in_fp32(fp16_cli):
    model = onnx.load(str(fp16_cli[0]))
    types = _elem_types(model)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert [types[v.name] for v in [*model.graph.input, *model.graph.output]] == [float32] * 3

    def input_types(op):
        return {types[node.input[0]] for node in model.graph.node if node.op_type == op}

    # GroupNorm exports as Reshape, InstanceNormalization, Reshape, Mul, Add at opset 17.
    assert input_types("InstanceNormalization") == {float32}
    assert input_types("Softmax") == {float32}
    assert input_types("Conv") == {float16}
    assert input_types("MatMul") == {float16}


def test_cli_reports_checkpoint_for_another_config(tmp_path):
    config = tmp_path / "gray.json"
    config.write_text(json.dumps({**load_config(CONFIG), "in_channels": 1}))
    output = tmp_path / "model.onnx"
    with pytest.raises(ModelError) as error:
        main(["export", "onnx", "--checkpoint", str(WEIGHTS), "--config", str(config), "-o", str(output)])
    assert str(WEIGHTS) in str(error.value) and "input_blocks.0.0.weight" in str(error.value)
    assert not output.exists()


def _tiny(**overrides) -> tuple:
    config = {**TINY, **overrides}
    torch.manual_seed(0)
    model = create_model(**config)
    with torch.no_grad():  # guided-diffusion zero-initialises output layers; make every layer count
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval(), config


def _assert_runs_like_torch(path: Path, model: torch.nn.Module, in_channels: int, out_channels: int) -> None:
    """Batch 3 at a size and timesteps the export's own verification did not use."""
    x = np.random.default_rng(1).standard_normal((3, in_channels, 32, 20), dtype=np.float32)
    t = np.array([0.0, 500.0, 999.0], dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
    out = _run(path, x, t)
    assert out.shape == (3, out_channels, 32, 20)
    assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_gray_model_with_external_data(tmp_path):
    model, config = _tiny(in_channels=1, learn_sigma=True)
    path = tmp_path / "gray.onnx"
    report = export_onnx(model, config, path, external_data=True)
    assert report.external_data and all(c.rel <= 1e-4 for c in report.checks)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gray.onnx", "gray.onnx.data"]
    assert path.stat().st_size < 0.2 * (tmp_path / "gray.onnx.data").stat().st_size
    onnx.checker.check_model(str(path), full_check=True)
    info = ModelInfo.from_metadata(_metadata(path), str(path))
    assert (info.in_channels, info.out_channels, info.learn_sigma, info.multiple) == (1, 2, True, 4)
    _assert_runs_like_torch(path, model, 1, 2)


def test_cli_without_sigma_or_verification(tmp_path, capsys):
    model, config = _tiny(learn_sigma=False)
    checkpoint, config_path, path = tmp_path / "eps.pt", tmp_path / "eps.json", tmp_path / "eps.onnx"
    torch.save(model.state_dict(), checkpoint)
    config_path.write_text(json.dumps({"create_model_kwargs": config}))
    assert main(["export", "onnx", "--checkpoint", str(checkpoint), "--config", str(config_path), "-o", str(path),
                 "--no-verify"]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {path} (fp32, opset 17, multiple 4)"
    info = ModelInfo.from_metadata(_metadata(path), str(path))
    assert (info.in_channels, info.out_channels, info.learn_sigma) == (3, 3, False)
    _assert_runs_like_torch(path, model, 3, 3)


def test_model_must_match_config(tmp_path):
    model, config = _tiny()
    with pytest.raises(ValueError, match="missing key"):
        export_onnx(model, {**config, "num_res_blocks": 2}, tmp_path / "tiny.onnx")


@pytest.mark.parametrize("fp16", [False, True])
def test_v_model_exports_epsilon(tmp_path, fp16):
    """A v-parameterised prior: eps computed in the graph (float32), config in the metadata."""
    model, config = _tiny(in_channels=1, parameterization="v")
    path = tmp_path / "v.onnx"
    report = export_onnx(model, config, path, fp16=fp16)
    assert report.checks and all(c.rel <= (1e-2 if fp16 else 1e-4) for c in report.checks)
    info = ModelInfo.from_metadata(_metadata(path), str(path))
    assert info.config["parameterization"] == "v" and info.schedule == ADM_LINEAR
    if not fp16:
        _assert_runs_like_torch(path, model, 1, 1)
