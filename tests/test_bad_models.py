"""Bad model files are refused when the runner opens, with one line naming the file and the problem."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import cv2
import pytest

import conftest
from dig2dig.cli import main
from dig2dig.runtime import api, fuser
from dig2dig.runtime.backends.base import MODEL_KEY
from dig2dig.runtime.backends.ort import OrtRunner
from dig2dig.runtime.backends.plan_file import PlanHeader, Profile, check_device, check_tensorrt_version, pack, read_plan
from dig2dig.runtime.errors import ModelError

onnx = pytest.importorskip("onnx")
helper = onnx.helper


def _rename(model: Any, old: str, new: str) -> None:
    """Rename tensor ``old`` wherever the graph's nodes, inputs and outputs use it."""
    graph = model.graph
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def _feed_through(model: Any, name: str, node_type: str, **attributes: Any) -> Any:
    """Put a ``node_type`` node between graph input ``name`` and its users; return that input to edit."""
    inner = f"{name}_inner"
    for node in model.graph.node:
        node.input[:] = [inner if value == name else value for value in node.input]
    model.graph.node.insert(0, helper.make_node(node_type, [name], [inner], **attributes))
    return next(value for value in model.graph.input if value.name == name)


def _set_channels(model: Any, channels: int) -> None:
    """Rewrite the dig2dig metadata to declare ``channels`` input channels."""
    props = {p.key: p.value for p in model.metadata_props}
    meta = json.loads(props[MODEL_KEY])
    meta["in_channels"] = channels
    props[MODEL_KEY] = json.dumps(meta)
    helper.set_model_props(model, props)


def _int64_t(model: Any) -> None:
    _feed_through(model, "t", "Cast", to=onnx.TensorProto.FLOAT).type.tensor_type.elem_type = onnx.TensorProto.INT64


def _three_channel_graph(model: Any) -> None:
    """A graph that takes 3 channels (averaged into the prior's one), its metadata still saying 1."""
    x = _feed_through(model, "x", "ReduceMean", axes=[1], keepdims=1)
    x.type.tensor_type.shape.dim[1].dim_value = 3


def _fixed_height(model: Any) -> None:
    """Declare x's height static (256), as an export without dynamic axes would."""
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_value = 256


EDITS: Dict[str, Tuple[Callable[[Any], None], str]] = {
    "renamed_input": (lambda m: _rename(m, "x", "input"), "model inputs are input, t, dig2dig models have inputs x, t"),
    "int64_t": (_int64_t, "model tensor t is tensor(int64), dig2dig models take and return float32"),
    "renamed_output": (lambda m: _rename(m, "y", "out"), "model outputs are out, dig2dig models have outputs y"),
    "metadata_3_graph_1": (lambda m: _set_channels(m, 3), "model tensor x has 1 channel(s), the model metadata says 3"),
    "metadata_1_graph_3": (_three_channel_graph, "model tensor x has 3 channel(s), the model metadata says 1"),
    "fixed_height": (_fixed_height, "model tensor x has a fixed H of 256, dig2dig models take any H"),
    "no_metadata": (lambda m: m.ClearField("metadata_props"), "model metadata 'dig2dig.model' is missing"),
}


def bad_model(tmp_path: Path, case: str) -> Tuple[Path, str]:
    """A copy of the bundled prior broken as ``case`` says, and the problem its error must state."""
    path = tmp_path / f"{case}.onnx"
    if case == "truncated":
        data = api.default_model().read_bytes()
        path.write_bytes(data[:len(data) // 2])
        return path, "not a loadable ONNX model"
    edit, problem = EDITS[case]
    model = onnx.load(str(api.default_model()))
    edit(model)
    onnx.save(model, str(path))
    return path, problem


CASES = ["truncated", *EDITS]


@pytest.mark.parametrize("case", CASES)
def test_runner_refuses_bad_model(case: str, tmp_path: Path) -> None:
    path, problem = bad_model(tmp_path, case)
    with pytest.raises(ModelError) as caught:
        OrtRunner(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message


def test_edited_graphs_are_otherwise_loadable(tmp_path: Path) -> None:
    """The int64 t and 3-channel graphs load in onnxruntime: check_io, not the loader, refuses them."""
    ort = pytest.importorskip("onnxruntime")
    for case in ("int64_t", "metadata_1_graph_3"):
        ort.InferenceSession(str(bad_model(tmp_path, case)[0]), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("case", ["truncated", "renamed_input", "metadata_3_graph_1"])
def test_cli_fails_fast_on_bad_model(case: str, tmp_path: Path, capsys: pytest.CaptureFixture,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    def no_fusion(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("fusion started with a bad model")

    monkeypatch.setattr(fuser.Fuser, "fuse_sources", no_fusion)
    sources = []
    for role, source in zip(("a", "b"), conftest.pair("ivf", "10")):
        sources.append(str(tmp_path / f"{role}.png"))
        cv2.imwrite(sources[-1], cv2.imread(str(source), cv2.IMREAD_UNCHANGED)[:64, :96])
    path, problem = bad_model(tmp_path, case)
    out = tmp_path / "out.png"
    assert main(["fuse", *sources, "-o", str(out), "--model", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dig2dig: error: {path}: ") and problem in err
    assert not out.exists()


def _plan(tmp_path: Path, tensorrt: str, gpu: str, capability: Tuple[int, int]) -> str:
    """A plan container file as ``dig2dig export trt`` writes it, built by ``tensorrt`` on ``gpu``."""
    profile = Profile((1, 256, 256), (1, 480, 640), (5, 768, 1024))
    header = PlanHeader(tensorrt=tensorrt, profiles=(profile,), metadata={}, precision="fp16", gpu_name=gpu,
                        compute_capability=capability)
    path = tmp_path / "m.plan"
    path.write_bytes(pack(header, b"engine"))
    return str(path)


def test_plan_from_another_tensorrt_is_refused(tmp_path: Path) -> None:
    path = _plan(tmp_path, "8.6.1.6", "NVIDIA H100", (9, 0))
    header, _ = read_plan(path)
    check_tensorrt_version(header, path, "8.6.1.6")
    with pytest.raises(ModelError, match=rf"^{re.escape(path)}: engine built with TensorRT 8\.6\.1\.6, this is TensorRT 10\.3"):
        check_tensorrt_version(header, path, "10.3.0.30")


def test_plan_from_another_gpu_is_refused(tmp_path: Path) -> None:
    path = _plan(tmp_path, "10.3.0.30", "Orin", (8, 7))
    header, _ = read_plan(path)
    check_device(header, path, (8, 7))
    with pytest.raises(ModelError, match=rf"^{re.escape(path)}: engine built for Orin \(sm_87\), this GPU is sm_90"):
        check_device(header, path, (9, 0))
