"""Write a Triton Inference Server model repository: ``dig2dig export triton``.

The repository holds two models:

* ``dig2dig_unet``: the prior, with dynamic batching. ``onnxruntime`` (the ONNX file, ``platform:
  onnxruntime_onnx``) and ``tensorrt`` (the engine of a ``dig2dig export trt`` plan) need NVIDIA's server
  images; ``python`` runs the ONNX file with onnxruntime in a Python-backend model of the same name, inputs
  and outputs, so the same repository runs on the ``tritonserver`` that ``nvidia-pytriton`` ships.
* ``dig2dig_fuse``: a Python-backend model that runs the reverse loop and calls ``dig2dig_unet`` through
  Triton's BLS for every denoising batch, so the server batches the UNet calls of concurrent fusions.

The UNet's inputs and outputs are written from the declaration in ``runtime/backends/base.py``, the one
the ONNX export uses; the prior's metadata (``ModelInfo``) and the fusion settings are the fuse model's
config parameters (docs/SERVING.md lists them).
"""
from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..runtime.atomic import atomic_replace
from ..runtime.backends.base import DYNAMIC_AXES, INPUT_T, INPUT_X, OUTPUT_Y, ModelInfo
from ..runtime.client import FUSE_MODEL as FUSE, FUSED_OUTPUT, SOURCE_INPUTS, SOURCE_TYPES, TASK_INPUT
from ..runtime.errors import InputError
from ..runtime.settings import MAX_PIXELS, TASKS, load_config, resolve

UNET = "dig2dig_unet"
UNET_BACKENDS = ("python", "onnxruntime", "tensorrt")
DEFAULT_MAX_BATCH = 8  # a fusion's calls take 1 image (x_t) or 4 to 5 (a DIG refresh: x_t, both sources at two steps)
DEFAULT_FUSE_INSTANCES = 8
# The fuse model's parameters besides the Settings fields and the ModelInfo metadata.
UNET_PARAMETER, MAX_BATCH_PARAMETER, MAX_PIXELS_PARAMETER = "unet_model", "max_batch", "max_pixels"
THREADS_PARAMETER = "threads"  # the python UNet's onnxruntime threads per instance
SOURCES_DIR = Path(__file__).resolve().parent / "triton_models"

PathLike = Union[str, Path]


@dataclass(frozen=True)
class Repository:
    """What ``write_repository`` wrote."""

    path: Path
    unet_backend: str
    info: ModelInfo
    settings: Dict[str, Any]

    def summary(self) -> str:
        """One line: the folder, the UNet backend and the settings it serves."""
        chosen = ", ".join(f"{k} {v}" for k, v in sorted(self.settings.items())) or "each task's defaults"
        return f"wrote {self.path} ({UNET} on {self.unet_backend}, {FUSE}: {chosen})"


def quote(text: str) -> str:
    """``text`` as a protobuf text-format string literal (UTF-8 bytes outside ASCII as octal escapes)."""
    escapes = {ord("\\"): "\\\\", ord('"'): '\\"', ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"}
    out = [escapes.get(byte, chr(byte) if 32 <= byte < 127 else f"\\{byte:03o}") for byte in text.encode("utf-8")]
    return '"' + "".join(out) + '"'


def tensor_dims(info: ModelInfo) -> Dict[str, Tuple[int, ...]]:
    """Each UNet tensor's dimensions after the batch axis, as Triton declares them: -1 where
    ``DYNAMIC_AXES`` leaves an axis free, else the channel count from the model's metadata."""
    channels = {INPUT_X: info.in_channels, OUTPUT_Y: info.out_channels}
    ranks = {INPUT_X: 4, INPUT_T: 1, OUTPUT_Y: 4}
    return {name: tuple(-1 if axis in DYNAMIC_AXES[name] else channels[name] for axis in range(1, rank))
            for name, rank in ranks.items()}


def _tensor(name: str, data_type: str, dims: Sequence[int], extra: str = "") -> str:
    return f"  {{ name: {quote(name)} data_type: {data_type} dims: [ {', '.join(map(str, dims))} ]{extra} }}"


def _parameters(values: Mapping[str, str]) -> str:
    entries = [f"  {{ key: {quote(key)} value: {{ string_value: {quote(value)} }} }}"
               for key, value in sorted(values.items())]
    return "parameters [\n" + ",\n".join(entries) + "\n]\n"


def unet_config(info: ModelInfo, backend: str, max_batch: int, instances: int,
                parameters: Optional[Mapping[str, str]] = None) -> str:
    """``config.pbtxt`` of ``dig2dig_unet``: x, t -> y with the batch axis Triton's, dynamic batching.

    t is ``[N]`` in the model; Triton declares it ``[1]`` per batch item, reshaped to ``[]``.
    """
    dims = tensor_dims(info)
    head = {"python": 'backend: "python"', "onnxruntime": 'platform: "onnxruntime_onnx"',
            "tensorrt": 'platform: "tensorrt_plan"'}[backend]
    inputs = [_tensor(INPUT_X, "TYPE_FP32", dims[INPUT_X]),
              _tensor(INPUT_T, "TYPE_FP32", (1,), " reshape: { shape: [ ] }")]
    kind = " kind: KIND_CPU" if backend == "python" else ""
    text = (f"name: {quote(UNET)}\n{head}\nmax_batch_size: {max_batch}\n"
            "input [\n" + ",\n".join(inputs) + "\n]\n"
            "output [\n" + _tensor(OUTPUT_Y, "TYPE_FP32", dims[OUTPUT_Y]) + "\n]\n"
            "dynamic_batching { }\n"
            f"instance_group [ {{ count: {instances}{kind} }} ]\n")
    return text + (_parameters(parameters) if parameters else "")


def fuse_config(parameters: Mapping[str, str], instances: int) -> str:
    """``config.pbtxt`` of ``dig2dig_fuse``: A and B (or A16 and B16) and TASK in, FUSED out, no batching
    (each request is one pair; the UNet batches across them)."""
    inputs = [_tensor(name, data_type, (-1, -1, -1), " optional: true") for names in SOURCE_INPUTS
              for name, data_type in zip(names, (f"TYPE_{datatype}" for _, datatype in SOURCE_TYPES))]
    inputs.append(_tensor(TASK_INPUT, "TYPE_STRING", (1,)))
    return (f"name: {quote(FUSE)}\n" 'backend: "python"\nmax_batch_size: 0\n'

            "input [\n" + ",\n".join(inputs) + "\n]\n"
            "output [\n" + _tensor(FUSED_OUTPUT, "TYPE_UINT8", (-1, -1, -1)) + "\n]\n"
            f"instance_group [ {{ count: {instances} kind: KIND_CPU }} ]\n" + _parameters(parameters))


def setting_parameter(value: Any) -> str:
    """A setting as a config parameter string: JSON, which the fuse model reads back."""
    return json.dumps(value)


def check_settings(settings: Mapping[str, Any]) -> None:
    """Refuse settings that some task cannot run with (an ``InputError`` naming the field) before writing."""
    for task in TASKS:
        resolve(task, **settings)


def _model_files(model: Path, unet_backend: str, max_batch: int) -> Tuple[ModelInfo, Dict[str, Union[Path, bytes]]]:
    """The prior's metadata and the files of ``dig2dig_unet``'s version folder, by name: a file to copy or
    the bytes to write. A plan's first optimisation profile (the one Triton uses) must take ``max_batch``."""
    if unet_backend == "tensorrt":
        from ..runtime.backends.plan_file import read_plan

        header, engine = read_plan(str(model))
        most = header.profiles[0].max[0]
        if max_batch > most:
            raise InputError(f"{model}: the plan's first profile takes at most {most} images a call; pass "
                             f"--max-batch {most}, or build the plan with --max HxW,{max_batch}")
        return ModelInfo.from_metadata(header.metadata, str(model)), {"model.plan": engine}
    from ..runtime.backends.ort import OrtRunner

    with OrtRunner(str(model), providers=["CPUExecutionProvider"], threads=1) as runner:  # checks the I/O too
        info = runner.info
    files: Dict[str, Union[Path, bytes]] = {"model.onnx": model}
    data = model.with_name(model.name + ".data")
    if data.is_file():  # weights beyond 2 GB, found by this name next to the model
        files[data.name] = data
    return info, files


def write_repository(out: PathLike, model: Optional[PathLike] = None, unet_backend: str = "python",
                     max_batch: int = DEFAULT_MAX_BATCH, instances: int = 1,
                     fuse_instances: int = DEFAULT_FUSE_INSTANCES, settings: Optional[Mapping[str, Any]] = None,
                     threads: Optional[int] = None, max_pixels: int = MAX_PIXELS, force: bool = False) -> Repository:
    """Write the model repository to the folder ``out`` (made whole or not at all).

    ``model``: the ONNX prior (default: the bundled one), or for ``tensorrt`` a ``dig2dig export trt`` plan.
    ``max_batch``: the most images in one UNet call (the dynamic batcher's limit; the fuse model splits larger
    batches). ``instances``/``fuse_instances``: model instances of each (concurrent fusions need a fuse
    instance each). ``settings``: ``Settings`` fields for every task (the rest are each task's defaults).
    ``threads``: onnxruntime threads per python UNet instance. ``force`` replaces an existing repository.
    """
    from ..runtime.api import default_model

    if unet_backend not in UNET_BACKENDS:
        raise InputError(f"unknown UNet backend {unet_backend!r} (choose {', '.join(UNET_BACKENDS)})")
    if unet_backend == "tensorrt" and model is None:
        raise InputError("--unet-backend tensorrt needs --model PLAN, a plan from 'dig2dig export trt'")
    for name, value in (("max_batch", max_batch), ("instances", instances), ("fuse_instances", fuse_instances),
                        ("max_pixels", max_pixels), ("threads", 1 if threads is None else threads)):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    chosen = {key: value for key, value in (settings or {}).items() if value is not None}
    check_settings(chosen)
    target = Path(out)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        if not force:
            raise InputError(f"{target}: exists and is not empty (pass --force to replace it)")
        if not (target / FUSE / "config.pbtxt").is_file():
            raise InputError(f"{target}: --force replaces a dig2dig model repository only, and this is not one")
    info, files = _model_files(Path(model) if model is not None else default_model(), unet_backend, max_batch)
    parameters = {UNET_PARAMETER: UNET, MAX_BATCH_PARAMETER: str(max_batch), MAX_PIXELS_PARAMETER: str(max_pixels),
                  **info.to_metadata(), **{key: setting_parameter(value) for key, value in chosen.items()}}
    unet_parameters = {THREADS_PARAMETER: str(threads)} if threads and unet_backend == "python" else None
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_replace(target) as (staged,):
        for name, config, source in ((UNET, unet_config(info, unet_backend, max_batch, instances, unet_parameters),
                                      "unet.py" if unet_backend == "python" else None),
                                     (FUSE, fuse_config(parameters, fuse_instances), "fuse.py")):
            version = staged / name / "1"
            version.mkdir(parents=True)
            (staged / name / "config.pbtxt").write_text(config)
            if source:
                shutil.copyfile(SOURCES_DIR / source, version / "model.py")
        for name, content in files.items():
            if isinstance(content, bytes):
                (staged / UNET / "1" / name).write_bytes(content)
            else:
                shutil.copyfile(content, staged / UNET / "1" / name)
        if target.exists() and force:
            shutil.rmtree(target)
    return Repository(target, unet_backend, info, chosen)


def add_repository_options(parser: "argparse._ActionsContainer") -> None:
    """The options that shape a repository, shared by ``export triton`` and ``serve`` (which writes one on
    the fly when it is given none)."""
    parser.add_argument("--model", metavar="M", help="the ONNX prior (default: the bundled one); with "
                                                     "--unet-backend tensorrt a plan from 'dig2dig export trt'")
    parser.add_argument("--unet-backend", default="python", choices=UNET_BACKENDS,
                        help="python: onnxruntime in Triton's Python backend (runs on the server from PyPI); "
                             "onnxruntime, tensorrt: Triton's own backends (NVIDIA's server images); default python")
    parser.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, metavar="N",
                        help=f"most images in one UNet call, batched across fusions (default {DEFAULT_MAX_BATCH})")
    parser.add_argument("--instances", type=int, default=1, metavar="K", help="UNet model instances (default 1)")
    parser.add_argument("--fuse-instances", type=int, default=DEFAULT_FUSE_INSTANCES, metavar="F",
                        help=f"fuse model instances: fusions served at once (default {DEFAULT_FUSE_INSTANCES})")
    parser.add_argument("--threads", type=int, metavar="T",
                        help="onnxruntime threads per python UNet instance (default: all cores)")
    parser.add_argument("--steps", type=int, metavar="N", help="DDIM steps for every task (default: each task's)")
    parser.add_argument("--seed", type=int, metavar="K", help="seed of the start noise (default 0)")
    parser.add_argument("--config", metavar="FILE.json",
                        help="saved settings (a JSON object of setting names and values); --steps/--seed win")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS, metavar="N",
                        help=f"refuse a source of more than N pixels (default {MAX_PIXELS})")


def repository_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings that the repository options ask for: ``--config``'s, then ``--steps`` and ``--seed``."""
    chosen: Dict[str, Any] = load_config(args.config) if args.config else {}
    chosen.update({key: getattr(args, key) for key in ("steps", "seed") if getattr(args, key) is not None})
    return chosen


def repository_from_args(args: argparse.Namespace, out: PathLike, force: bool = False) -> Repository:
    """``write_repository`` with the repository options of ``add_repository_options``."""
    return write_repository(out, args.model, args.unet_backend, args.max_batch, args.instances,
                            args.fuse_instances, repository_settings(args), args.threads, args.max_pixels, force)


def add_triton_parser(formats: Any) -> None:
    """Add ``triton`` to the ``export`` formats."""
    parser = formats.add_parser("triton", help="write a Triton Inference Server model repository",
                                description="Write a Triton model repository: dig2dig_unet (the prior, dynamic "
                                            "batching) and dig2dig_fuse (the reverse loop, calling dig2dig_unet "
                                            "through BLS). Serve it with 'dig2dig serve --repo REPO' or on "
                                            "NVIDIA's Triton images (docs/SERVING.md).")
    parser.add_argument("-o", "--output", required=True, metavar="REPO", help="the repository folder to write")
    parser.add_argument("--force", action="store_true", help="replace REPO if it exists")
    add_repository_options(parser)
    parser.set_defaults(func=run_triton)


def run_triton(args: argparse.Namespace) -> int:
    """Run ``export triton`` with parsed arguments; print what was written."""
    print(repository_from_args(args, args.output, args.force).summary())
    return 0
