"""Build a TensorRT plan from the exported ONNX model: ``dig2dig export trt``.

Two routes, chosen by the TensorRT version and the ONNX model's precision:

* weakly typed (TensorRT 8.5 to 10.11, FP32 ONNX): the builder's FP16 flag lets TensorRT pick
  FP16 kernels, while the normalisation layers (GroupNorm as the parser imports it: the
  InstanceNormalization_TRT plugin on 8.5/8.6, INormalizationLayer from 8.6 with the native flag,
  or the ReduceMean/Sub/Pow/Sqrt/Div steps of a decomposed norm) and the attention softmax are
  pinned to FP32 with ``layer.precision`` under OBEY_PRECISION_CONSTRAINTS: in FP16 their sums of
  squares overflow and the diffusion output degrades.
* strongly typed (TensorRT >= 10.0 with an FP16 ONNX, required from 10.12, where the FP16 and
  precision-constraint builder flags are deprecated, and in 11, where they are gone): the FP16
  ONNX already computes its norms and softmax in FP32 (explicit casts), and TensorRT follows the
  model's types exactly.

The plan is written in dig2dig's container (``runtime/backends/plan_file.py``) so the runtime knows
the model, the profiles and the TensorRT version without a side file. Build on the device that will
run it: an engine is specific to one TensorRT version and one GPU architecture.

Only numpy, onnx (graph and metadata, weights not loaded), tensorrt and pycuda are imported, the
last three when a build starts, so the command works on a Jetson without torch.
"""
from __future__ import annotations

import argparse
import os
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Tuple

from ..runtime.backends.base import INPUT_T, INPUT_X, ModelInfo
from ..runtime.backends.plan_file import PlanHeader, Profile, Shape3, describe_shape, pack
from ..runtime.backends.trt import check_tensorrt, primary_context
from ..runtime.errors import ModelError
from ..runtime.atomic import atomic_replace

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

DEFAULT_MIN = "256x256,1"
DEFAULT_OPT = "480x640,1"
# The sampler batches x_t with both sources noised to t and t' on a DIG refresh: N = 1 + 2 * 2.
DEFAULT_MAX = "768x1024,5"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_CALIB_BATCHES = 32

STRONG_TYPING_FROM = (10, 0)   # NetworkDefinitionCreationFlag.STRONGLY_TYPED, stable from 10.0
WEAK_FP16_UNTIL = (10, 12)     # BuilderFlag.FP16 / INT8 / *_PRECISION_CONSTRAINTS deprecated from 10.12

# ONNX ops computed in FP32 whatever their position; Sub/Add/Div join them inside a decomposed norm.
FP32_OPS = {"InstanceNormalization", "GroupNormalization", "LayerNormalization", "Softmax",
            "ReduceMean", "Pow", "Sqrt"}


def parse_dims(text: str) -> Shape3:
    """``HxW,N`` (or ``HxW`` for N = 1) to ``(N, H, W)``; argparse type for --min/--opt/--max."""
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*(?:,\s*(\d+))?\s*", text)
    if not match or min(int(v) for v in match.groups("1")) < 1:
        raise argparse.ArgumentTypeError(f"expected HxW,N with positive integers (e.g. 480x640,1), got {text!r}")
    height, width, n = (int(v) for v in match.groups("1"))
    return n, height, width


def parse_batches(text: str) -> Tuple[int, ...]:
    """``N[,N...]`` to distinct positive batch sizes in the given order; argparse type for --batches."""
    parts = text.split(",")
    if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive batch sizes separated by commas (e.g. 1,5), got {text!r}")
    batches = tuple(int(part) for part in parts)
    if len(set(batches)) != len(batches):
        raise argparse.ArgumentTypeError(f"batch sizes must differ, got {text!r}")
    return batches


def command_profiles(low: Shape3, opt: Shape3, high: Shape3, batches: Optional[Sequence[int]]) -> List[Profile]:
    """The CLI's profiles: one over ``low..high``, or one per batch size with its HxW range and N fixed.

    One profile per batch size gives each its own execution context in ``TrtRunner``, whose shape
    then never changes in the loop (CUDA graphs need that) and whose kernels are tuned for that N.
    """
    if not batches:
        return [Profile(low, opt, high)]
    return [Profile((n,) + low[1:], (n,) + opt[1:], (n,) + high[1:]) for n in batches]


def tensorrt_version(version: str) -> Tuple[int, int]:
    """``(major, minor)`` of a TensorRT version string such as ``8.5.2.2``."""
    major, minor = (int(part) for part in version.split(".")[:2])
    return major, minor


def strongly_typed(version: Tuple[int, int], onnx_precision: str, fp16: bool, int8: bool, source: str) -> bool:
    """Which route builds this model on this TensorRT (see the module docstring); errors name ``source``."""
    if onnx_precision == "int8":
        raise ModelError(f"{source}: this INT8 (QDQ) ONNX from 'dig2dig export int8' is for onnxruntime; build "
                         "TensorRT engines from the FP32 or FP16 export")
    if onnx_precision == "fp16" and not fp16:
        raise ModelError(f"{source}: an FP32 engine needs the FP32 ONNX export, this one is FP16")
    if int8:
        if version >= WEAK_FP16_UNTIL:
            raise ModelError(f"{source}: INT8 calibration (implicit quantization) is deprecated from "
                             f"TensorRT {WEAK_FP16_UNTIL[0]}.{WEAK_FP16_UNTIL[1]}; build an FP16 engine")
        return False
    if onnx_precision == "fp16" and version >= STRONG_TYPING_FROM:
        return True
    if fp16 and version >= WEAK_FP16_UNTIL:
        raise ModelError(f"{source}: TensorRT {version[0]}.{version[1]} builds FP16 engines from an FP16 "
                         "ONNX only (its FP16 builder flag is deprecated): export with 'dig2dig export onnx --fp16'")
    return False


def read_onnx(path: str) -> "onnx.ModelProto":
    """The ONNX graph and metadata of ``path`` (external weights are left on disk)."""
    try:
        import onnx
    except ImportError as exc:
        raise ModelError(f"building a TensorRT plan reads the ONNX model with the onnx package: "
                         f"pip install onnx ({exc})") from exc
    if not os.path.isfile(path):
        raise ModelError(f"{path}: ONNX model not found")
    try:
        return onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError for a corrupt file
        raise ModelError(f"{path}: not a readable ONNX model ({exc})") from exc


def dig2dig_metadata(model: "onnx.ModelProto") -> Dict[str, str]:
    """The model's ``dig2dig.*`` metadata_props, copied into the plan."""
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("dig2dig.")}


def fp32_tensors(graph: "onnx.GraphProto") -> Set[str]:
    """Output names of the ONNX nodes that must compute in FP32: norms, softmax, decomposed-norm steps.

    Sub and Add count when they take a ReduceMean output (x - mean, var + eps), Div when it takes
    a Sqrt output ((x - mean) / std). TensorRT names each node's final layer output after it.
    """
    producer = {name: node.op_type for node in graph.node for name in node.output}
    keep: Set[str] = set()
    for node in graph.node:
        inputs = {producer.get(name) for name in node.input}
        if (node.op_type in FP32_OPS or (node.op_type in ("Sub", "Add") and "ReduceMean" in inputs)
                or (node.op_type == "Div" and "Sqrt" in inputs)):
            keep.update(node.output)
    return keep


def keep_fp32(network: "trt.INetworkDefinition", tensors: Set[str]) -> int:
    """Pin normalisation and softmax layers (and the layers producing ``tensors``) to FP32; return the count."""
    import tensorrt as trt

    # PLUGIN_V2: the only plugin the ONNX parser adds for this UNet is InstanceNormalization_TRT (8.5/8.6).
    pinned_types = {trt.LayerType.SOFTMAX, trt.LayerType.REDUCE, trt.LayerType.PLUGIN_V2}
    normalization = getattr(trt.LayerType, "NORMALIZATION", None)  # TensorRT >= 8.6
    if normalization is not None:
        pinned_types.add(normalization)
    floating = (trt.float32, trt.float16)
    count = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        outputs = [layer.get_output(k) for k in range(layer.num_outputs)]
        if layer.type not in pinned_types and not any(o.name in tensors for o in outputs):
            continue
        if not all(o.dtype in floating for o in outputs):  # leave shape arithmetic alone
            continue
        layer.precision = trt.float32
        for k in range(layer.num_outputs):
            layer.set_output_type(k, trt.float32)
        count += 1
    return count


def check_profiles(profiles: Sequence[Profile], info: ModelInfo, source: str) -> None:
    """Profiles must exist and keep H and W on the model's ``multiple``."""
    if not profiles:
        raise ModelError(f"{source}: at least one optimisation profile is needed")
    for profile in profiles:
        for shape in (profile.min, profile.opt, profile.max):
            if shape[1] % info.multiple or shape[2] % info.multiple:
                raise ModelError(f"{source}: profile shape {describe_shape(shape)} (HxW,N): height and width "
                                 f"must be multiples of {info.multiple} for this model")


def _optimization_profile(builder: "trt.Builder", profile: Profile, channels: int) -> "trt.IOptimizationProfile":
    import tensorrt as trt

    shapes = [(n, channels, h, w) for n, h, w in (profile.min, profile.opt, profile.max)]
    result = builder.create_optimization_profile()
    result.set_shape(INPUT_X, *(trt.Dims(list(s)) for s in shapes))
    result.set_shape(INPUT_T, *(trt.Dims([s[0]]) for s in shapes))
    return result


def _network_flags(version: Tuple[int, int], strong: bool) -> int:
    import tensorrt as trt

    flags = 0
    if version < (10, 0):  # implicit batch was the default before 10.0; the flag is ignored from 10.0
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if strong:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return flags


def _attach_timing_cache(config: "trt.IBuilderConfig", path: Optional[str]) -> "trt.ITimingCache":
    """Start from the cache at ``path`` when it fits this TensorRT and GPU, else from an empty one.

    The caller keeps the returned cache alive until the engine is built (TensorRT requires it).
    """
    data = Path(path).read_bytes() if path and os.path.isfile(path) else b""
    cache = config.create_timing_cache(data)
    if not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def build_engine(onnx_path: str, plan_path: str, profiles: Sequence[Profile], workspace_mb: int,
                 timing_cache: Optional[str] = None, fp16: bool = True, calib_dir: Optional[str] = None,
                 calib_cache: Optional[str] = None, calib_batches: int = DEFAULT_CALIB_BATCHES,
                 device: int = 0) -> PlanHeader:
    """Build ``onnx_path`` into a dig2dig plan at ``plan_path`` (written atomically); return its header.

    ``calib_dir`` turns on INT8 (with FP16 fallback), calibrated on noised crops of its images
    at the first profile's opt shape; ``calib_cache`` keeps that calibration for the next build.
    ``timing_cache`` is read if present and rewritten after the build (faster rebuilds).
    """
    check_tensorrt()
    import tensorrt as trt

    model = read_onnx(onnx_path)
    metadata = dig2dig_metadata(model)
    info = ModelInfo.from_metadata(metadata, onnx_path)
    check_profiles(profiles, info, onnx_path)
    version = tensorrt_version(trt.__version__)
    int8 = calib_dir is not None
    strong = strongly_typed(version, info.precision, fp16, int8, onnx_path)

    cuda = primary_context(device, onnx_path)  # the runtime API's context, shared with the builder
    try:
        logger = trt.Logger(trt.Logger.WARNING)
        trt.init_libnvinfer_plugins(logger, "")
        builder = trt.Builder(logger)
        network = builder.create_network(_network_flags(version, strong))
        parser = trt.OnnxParser(network, logger)
        native_norm = getattr(getattr(trt, "OnnxParserFlag", None), "NATIVE_INSTANCENORM", None)  # >= 8.6
        if native_norm is not None:
            parser.set_flag(native_norm)
        if not parser.parse_from_file(onnx_path):
            errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 5)))
            raise ModelError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
        config = builder.create_builder_config()
        # set_memory_pool_limit exists from 8.4; max_workspace_size (its predecessor) is gone in 10.
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
        if not strong and (fp16 or int8):
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            if not keep_fp32(network, fp32_tensors(model.graph)):
                warnings.warn(f"{onnx_path}: no normalisation or softmax layer found to keep in FP32; "
                              "the FP16 engine may lose accuracy", stacklevel=2)
        for profile in profiles:
            if config.add_optimization_profile(_optimization_profile(builder, profile, info.in_channels)) < 0:
                raise ModelError(f"{onnx_path}: TensorRT rejected the profile {profile.describe()}")
        if int8:
            from ..calibration.int8 import calibration_images, make_calibrator, noised_batches

            n, height, width = profiles[0].opt
            batches = noised_batches(calibration_images(str(calib_dir)), (n, info.in_channels, height, width),
                                     info.schedule, calib_batches)
            config.set_flag(trt.BuilderFlag.INT8)
            calibrator = make_calibrator(batches, calib_cache)  # referenced here until the build ends
            config.int8_calibrator = calibrator
            opt = profiles[0].opt
            config.set_calibration_profile(_optimization_profile(builder, Profile(opt, opt, opt), info.in_channels))
        cache = _attach_timing_cache(config, timing_cache)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ModelError(f"{onnx_path}: TensorRT could not build the engine (see its log above)")
        header = PlanHeader(tensorrt=trt.__version__, profiles=tuple(profiles), metadata=metadata,
                            precision="int8" if int8 else ("fp16" if fp16 else "fp32"),
                            gpu_name=str(cuda.device.name()), compute_capability=cuda.compute_capability())
        with atomic_replace(Path(plan_path)) as (staged,):
            staged.write_bytes(pack(header, bytes(serialized)))
        if timing_cache:
            with atomic_replace(Path(timing_cache)) as (staged,):
                staged.write_bytes(bytes(cache.serialize()))
    finally:
        cuda.pop()
    return header


def add_trt_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``trt`` to the ``dig2dig export`` subcommands; it runs :func:`trt_command`."""
    p = subparsers.add_parser(
        "trt", help="build a TensorRT plan from an exported ONNX model (on the target device)",
        description="Build a TensorRT engine from the ONNX model, in FP16 with FP32 normalisation. "
                    "Engines are tied to the TensorRT version and the GPU: build on the device that runs them.")
    p.add_argument("--onnx", required=True, help="ONNX model from 'dig2dig export onnx'")
    p.add_argument("-o", "--output", required=True, help="plan file to write")
    p.add_argument("--min", type=parse_dims, default=parse_dims(DEFAULT_MIN), metavar="HxW,N",
                   help=f"smallest input (default {DEFAULT_MIN})")
    p.add_argument("--opt", type=parse_dims, default=parse_dims(DEFAULT_OPT), metavar="HxW,N",
                   help=f"input TensorRT tunes for (default {DEFAULT_OPT})")
    p.add_argument("--max", type=parse_dims, default=parse_dims(DEFAULT_MAX), metavar="HxW,N",
                   help=f"largest input; sets the engine's memory (default {DEFAULT_MAX}: N = 5 covers DIG refreshes)")
    p.add_argument("--batches", type=parse_batches, metavar="N[,N...]",
                   help="one profile per batch size, each with the HxW ranges of --min/--opt/--max and its own N "
                        "(their N is then unused); 1,5 lets the two-source loop run as a CUDA graph, at the cost "
                        "of one context's activation memory per batch size")
    p.add_argument("--workspace", type=int, default=DEFAULT_WORKSPACE_MB, metavar="MB",
                   help=f"builder scratch memory limit (default {DEFAULT_WORKSPACE_MB})")
    p.add_argument("--timing-cache", metavar="F", help="TensorRT timing cache to reuse and update")
    p.add_argument("--fp32", action="store_true", help="FP32 engine (reference; slower)")
    p.add_argument("--int8", action="store_true", help="INT8 engine calibrated on --calib-dir (TensorRT < 10.12)")
    p.add_argument("--calib-dir", metavar="DIR", help="folder of real images for INT8 calibration")
    p.add_argument("--calib-cache", metavar="F", help="calibration cache to reuse and write (default: OUTPUT.calib)")
    p.add_argument("--calib-batches", type=int, default=DEFAULT_CALIB_BATCHES, metavar="K",
                   help=f"calibration batches at the --opt shape (default {DEFAULT_CALIB_BATCHES})")
    p.set_defaults(func=trt_command)
    return p


def trt_command(args: argparse.Namespace) -> int:
    """Run ``dig2dig export trt`` from parsed arguments."""
    if args.int8 and not args.calib_dir:
        raise ModelError("--int8 needs --calib-dir DIR (a folder of real images)")
    if args.calib_dir and not args.int8:
        raise ModelError("--calib-dir is only used with --int8")
    try:
        profiles = command_profiles(args.min, args.opt, args.max, args.batches)
    except ValueError as exc:
        raise ModelError(f"{args.onnx}: {exc}") from exc
    header = build_engine(args.onnx, args.output, profiles, args.workspace, timing_cache=args.timing_cache,
                          fp16=not args.fp32, calib_dir=args.calib_dir if args.int8 else None,
                          calib_cache=args.calib_cache or (args.output + ".calib" if args.int8 else None),
                          calib_batches=args.calib_batches)
    print(f"wrote {args.output} (TensorRT {header.tensorrt}, {header.precision}, {header.gpu_name}; "
          f"profiles: {'; '.join(profile.describe() for profile in profiles)})")
    return 0
