"""``dig2dig export onnx|int8|trt|triton`` and ``dig2dig train-prior``: the commands beside the runtime.

``add_export_parser`` registers ``export`` on a top-level CLI without importing torch: ``export
onnx`` imports the PyTorch side when it runs, and ``export trt`` (``trt_build``) never needs it,
so engines can be built on a device without torch.
"""
from __future__ import annotations

import argparse
from typing import Any, List

from ..calibration.ort_int8 import DEFAULT_BATCHES, DEFAULT_CROP, quantize_int8
from ..runtime.errors import Dig2DigError
from .trt_build import add_trt_parser
from .triton import add_triton_parser


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``export`` (formats ``onnx``, ``int8``, ``trt`` and ``triton``) to ``subparsers`` of a top-level parser."""
    parser = subparsers.add_parser("export", help="export a PyTorch checkpoint for the runtime",
                                   description="Export a PyTorch checkpoint for the runtime.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    onnx = formats.add_parser("onnx", help="write an ONNX model file from a PyTorch checkpoint",
                              description="Write an ONNX model file (x, t -> y) with dig2dig metadata, "
                                          "checked and verified against PyTorch in ONNX Runtime (CPU).")
    onnx.add_argument("--checkpoint", required=True, metavar="W",
                      help="state dict: .pt/.pth (guided-diffusion), .npz or .safetensors")
    onnx.add_argument("--config", required=True, metavar="C.json",
                      help="create_model keywords (JSON, plain or under 'create_model_kwargs')")
    onnx.add_argument("-o", "--output", required=True, metavar="model.onnx", help="ONNX file to write")
    onnx.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    onnx.add_argument("--fp16", action="store_true",
                      help="float16 weights and activations; float32 inputs, outputs, GroupNorm and softmax")
    onnx.add_argument("--no-verify", dest="verify", action="store_false",
                      help="skip the ONNX Runtime vs PyTorch comparison")
    onnx.set_defaults(func=run_onnx)
    int8 = formats.add_parser("int8", help="write an INT8 (QDQ) ONNX model for onnxruntime from the FP32 one",
                              description="Quantize the FP32 ONNX model's convolutions to INT8 (static QDQ, "
                                          "per-channel weights), calibrated on noised crops of your images at "
                                          "timesteps spread over the whole schedule.")
    int8.add_argument("--onnx", required=True, metavar="M.onnx", help="FP32 model from 'dig2dig export onnx'")
    int8.add_argument("-o", "--output", required=True, metavar="M_int8.onnx", help="ONNX file to write")
    int8.add_argument("--calib-dir", required=True, metavar="DIR",
                      help="calibration images (searched recursively), e.g. the prior's training images")
    int8.add_argument("--batches", type=int, default=DEFAULT_BATCHES, metavar="N",
                      help=f"calibration crops (default {DEFAULT_BATCHES})")
    int8.add_argument("--crop", type=int, default=DEFAULT_CROP, metavar="PX",
                      help=f"crop side (default {DEFAULT_CROP})")
    int8.add_argument("--seed", type=int, default=0, help="crops, timesteps and noise (default 0)")
    int8.set_defaults(func=run_int8)
    add_trt_parser(formats)
    add_triton_parser(formats)
    return parser


def run_onnx(args: argparse.Namespace) -> int:
    """Run ``export onnx`` with parsed arguments; print what was written and the verification errors."""
    try:  # the PyTorch side, imported only now
        from .checkpoint import load_config, load_model
        from .onnx_export import export_onnx
    except ImportError as exc:
        raise Dig2DigError(f"'dig2dig export onnx' needs PyTorch and ONNX: pip install 'dig2dig[export]' "
                           f"({exc})") from exc
    config = load_config(args.config)
    model = load_model(args.checkpoint, config)
    report = export_onnx(model, config, args.output, opset=args.opset, fp16=args.fp16, verify=args.verify)
    print(report.summary())
    return 0


def run_int8(args: argparse.Namespace) -> int:
    """Run ``export int8`` with parsed arguments; print what was written and how close it stays to FP32."""
    report = quantize_int8(args.onnx, args.output, args.calib_dir, batches=args.batches, crop=args.crop,
                           seed=args.seed)
    print(report.summary())
    return 0


def main(argv: List[str]) -> int:
    """Run ``export ...`` or ``train-prior ...`` (``argv`` without the program name).

    ``Dig2DigError`` propagates: the ``dig2dig`` command (``runtime/cli.py``) reports it.
    """
    if argv[:1] == ["train-prior"]:
        from .train_prior import main as train_prior_main  # imports torch

        return train_prior_main(argv[1:])
    parser = argparse.ArgumentParser(prog="dig2dig")
    add_export_parser(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
