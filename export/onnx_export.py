"""Export a ``UNetModel`` to the ONNX model file the runtime reads (contract in docs/DESIGN.md).

The graph maps ``x`` float32 [N, C, H, W] and ``t`` float32 [N] to ``y`` float32 [N, C_out, H, W]
with N, H, W dynamic; ``metadata_props`` carry ``ModelInfo`` so writer and reader share one
definition. Tracing uses torch's TorchScript exporter (``dynamo=False``): at opset 17 the dynamo
exporter writes an invalid ``Split``. The written file is checked with the ONNX checker and, by
default, run in ONNX Runtime (CPU) against PyTorch before it replaces ``out_path``.
"""
from __future__ import annotations

import copy
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as OrtNotImplemented
from torch import nn

from ..runtime.backends.base import DYNAMIC_AXES, INPUT_NAMES, INPUT_T, INPUT_X, OUTPUT_NAMES, OUTPUT_Y, ModelInfo
from ..runtime.errors import ModelError
from ..runtime.schedule import ADM_LINEAR
from ..runtime.atomic import atomic_replace
from .checkpoint import state_dict_mismatch
from .unet import UNetModel, create_model, resolve_config

# Largest accepted max|onnx - torch| / max|torch|; float16 is compared with float32 PyTorch.
TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
# Protobuf refuses messages of 2 GiB; keep weights beyond this (less room for the graph) outside.
EXTERNAL_DATA_BYTES = 2 ** 31 - 2 ** 27
# A high-noise and a low-noise training step, as in the reference outputs.
VERIFY_TIMESTEPS = (999.0, 10.0)


@dataclass(frozen=True)
class Check:
    """ONNX Runtime (CPU) against PyTorch eager float32 on one random input."""

    shape: Tuple[int, ...]
    max_abs: float
    rel: float  # max|onnx - torch| / max|torch|


@dataclass(frozen=True)
class ExportReport:
    """What ``export_onnx`` wrote and how well the written file matched PyTorch."""

    path: Path
    info: ModelInfo
    opset: int
    external_data: bool
    checks: Tuple[Check, ...] = ()
    skipped: str = ""  # why verification did not run, when it was asked for and could not

    def summary(self) -> str:
        """Human-readable lines: the file, then one line per verification input."""
        extra = f", weights in {self.path.name}.data" if self.external_data else ""
        lines = [f"wrote {self.path} ({self.info.precision}, opset {self.opset}, multiple {self.info.multiple}{extra})"]
        limit = TOLERANCE[self.info.precision]
        lines += [f"verify {'x'.join(map(str, c.shape))}: max abs err {c.max_abs:.3g}, rel err {c.rel:.3g} "
                  f"(limit {limit:g})" for c in self.checks]
        if self.skipped:
            lines.append(f"verification skipped: {self.skipped}")
        return "\n".join(lines)


class BoundaryFloat32(nn.Module):
    """The exported function: ``model(x, t)`` returned as float32 whatever the model's dtype."""

    def __init__(self, model: UNetModel):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t).float()


def half_precision(model: UNetModel) -> UNetModel:
    """A copy with float16 convolutions, so the activations between them are float16 too.

    This is guided-diffusion's ``use_fp16`` layout (``convert_module_to_f16``), applied to the
    output convolution as well: the timestep MLPs and GroupNorm affine parameters stay float32,
    GroupNorm and the attention softmax compute in float32 (``GroupNorm32``, ``AttentionBlock``).
    """
    half = copy.deepcopy(model)
    for module in half.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            module.half()
    return half


def verification_shapes(channels: int, multiple: int) -> Tuple[Tuple[int, int, int, int], ...]:
    """Batch-2 inputs: a square of side >= 64 and a 3:2 non-square one, sides on ``multiple``."""
    side = multiple * max(2, math.ceil(64 / multiple))
    wide = multiple * math.ceil(1.5 * side / multiple)
    return (2, channels, side, side), (2, channels, side, wide)


def _trace(graph: nn.Module, shape: Tuple[int, ...], opset: int, folder: Path) -> onnx.ModelProto:
    """Trace ``graph`` on an input of ``shape`` into ``folder``; load the result, weights included.

    The exporter writes weights beyond 2 GB as external data next to the traced file, which is
    why it traces to a folder rather than to memory.
    """
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(VERIFY_TIMESTEPS)
    folder.mkdir()
    traced = folder / "traced.onnx"
    with warnings.catch_warnings():
        # Attention's scale is a Python float of a traced shape: constant per layer, as intended.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript", DeprecationWarning)
        torch.onnx.export(graph, (x, t), str(traced), dynamo=False, opset_version=opset,
                          input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES)
    proto = onnx.load(str(traced))
    shutil.rmtree(folder)
    return proto


def _move_weights_to(proto: onnx.ModelProto, location: str) -> None:
    """Mark initializers of 1 KiB or more to be written to ``location`` by ``onnx.save_model``.

    ``onnx.save_model(save_as_external_data=True)`` refuses when a file named ``location`` exists
    relative to the working directory rather than to the model, hence marking them here.
    """
    for tensor in proto.graph.initializer:
        if len(tensor.raw_data) >= 1024:
            onnx.external_data_helper.set_external_data(tensor, location)


def _verify(path: Path, model: UNetModel, shapes: Tuple[Tuple[int, ...], ...], precision: str,
            name: Path) -> Tuple[Tuple[Check, ...], str]:
    """Run ``path`` in ONNX Runtime (CPU) and ``model`` in PyTorch; raise if they differ."""
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except OrtNotImplemented as exc:
        if precision == "fp32":
            raise
        return (), f"this ONNX Runtime cannot run the float16 graph on CPU ({str(exc).splitlines()[0]})"
    rng = np.random.default_rng(0)
    checks = []
    for shape in shapes:
        x = rng.standard_normal(shape, dtype=np.float32)
        t = np.array(VERIFY_TIMESTEPS, dtype=np.float32)
        with torch.no_grad():
            ref = model(torch.from_numpy(x), torch.from_numpy(t)).numpy()
        out = session.run([OUTPUT_Y], {INPUT_X: x, INPUT_T: t})[0]
        if out.shape != ref.shape:
            raise ModelError(f"{name}: ONNX output shape {out.shape} differs from PyTorch {ref.shape}")
        max_abs = float(np.max(np.abs(out - ref)))
        checks.append(Check(tuple(shape), max_abs, max_abs / max(float(np.max(np.abs(ref))), 1e-30)))
    worst = max(checks, key=lambda c: c.rel)
    if not worst.rel <= TOLERANCE[precision]:  # also catches NaN
        raise ModelError(f"{name}: ONNX Runtime output differs from PyTorch at input {worst.shape}: "
                         f"max abs err {worst.max_abs:.3g}, rel err {worst.rel:.3g} > {TOLERANCE[precision]:g}; "
                         "file not written")
    return tuple(checks), ""


def export_onnx(model: UNetModel, config: Mapping[str, Any], out_path: Union[str, Path], opset: int = 17,
                fp16: bool = False, verify: bool = True, external_data: Optional[bool] = None) -> ExportReport:
    """Write ``model`` (built from create_model keywords ``config``) as an ONNX model file.

    ``fp16`` stores float16 weights and runs float16 activations inside a float32 interface (see
    ``half_precision``). ``external_data`` keeps the weights in ``<out_path>.data``; by default
    only when they would not fit in one protobuf message (> 2 GB, e.g. the float32 256x256 ADM).
    ``verify`` runs the written file in ONNX Runtime (CPU) against PyTorch at two sizes and raises
    ``ModelError`` when the relative error exceeds ``TOLERANCE``. The file replaces ``out_path``
    only after the checker and the verification pass. The model is put in eval mode.
    """
    out_path = Path(out_path)
    cfg = resolve_config(dict(config))
    with torch.device("meta"):
        problem = state_dict_mismatch(model.state_dict(), create_model(**cfg))
    if problem:
        raise ValueError(f"model does not match its config: {problem}")
    model.eval()
    precision = "fp16" if fp16 else "fp32"
    info = ModelInfo(in_channels=model.in_channels, out_channels=model.out_channels,
                     learn_sigma=bool(cfg["learn_sigma"]), multiple=model.downsample_factor,
                     precision=precision, schedule=dict(ADM_LINEAR), config=cfg)
    graph = BoundaryFloat32(half_precision(model) if fp16 else model)
    if external_data is None:
        external_data = sum(p.numel() * p.element_size() for p in graph.parameters()) > EXTERNAL_DATA_BYTES
    data_path = out_path.with_name(out_path.name + ".data")
    shapes = verification_shapes(model.in_channels, model.downsample_factor)
    checks: Tuple[Check, ...] = ()
    skipped = ""
    with atomic_replace(*((data_path, out_path) if external_data else (out_path,))) as staged:
        # Tracing runs the model once: the smallest batch-2 non-square input keeps that cheap (float16
        # convolutions are slow in PyTorch on CPU) and gives the tracer no equal sizes to bake in.
        trace_shape = (2, model.in_channels, 2 * model.downsample_factor, 3 * model.downsample_factor)
        proto = _trace(graph, trace_shape, opset, staged[-1].parent / "trace")
        onnx.helper.set_model_props(proto, info.to_metadata())
        if external_data:
            _move_weights_to(proto, data_path.name)
        onnx.save_model(proto, str(staged[-1]))
        del proto  # the float32 256x256 model holds 2.2 GB of weights; free them before verifying
        if external_data:  # onnx creates the data file private; give it the model file's mode
            shutil.copymode(staged[-1], staged[0])
        onnx.checker.check_model(str(staged[-1]), full_check=True)
        if verify:
            checks, skipped = _verify(staged[-1], model, shapes, precision, out_path)
    return ExportReport(out_path, info, opset, external_data, checks, skipped)

