"""onnxruntime runner: the CPU backend (and CUDA, when onnxruntime-gpu is installed)."""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..errors import ModelError
from .base import FLOAT32, INPUT_T, INPUT_X, OUTPUT_Y, ModelInfo, Runner, TensorSpec, check_io, in_batches


def tensor_specs(args: Sequence[Any]) -> Dict[str, TensorSpec]:
    """onnxruntime's ``NodeArg`` list as ``check_io`` takes it (symbolic or unknown dimensions are None)."""
    return {arg.name: (FLOAT32 if arg.type == "tensor(float)" else arg.type,
                       tuple(d if isinstance(d, int) else None for d in arg.shape or ())) for arg in args}


class OrtRunner(Runner):
    """Runs a dig2dig ONNX model with onnxruntime; one session, reused across calls.

    ``max_batch``: the most images per session run (default: 1 on the CPU provider, the whole batch on
    CUDA). The CPU provider runs the same kernels per image whatever the batch, so one image at a time
    gives the same outputs in the same time while holding one image's activations instead of five (a
    640x480 fusion peaks near 1.1 GB instead of 4.8 GB, docs/BENCHMARKS.md).
    """

    def __init__(self, path: str, providers: Optional[Sequence[str]] = None, threads: Optional[int] = None,
                 max_batch: Optional[int] = None):
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise ModelError("the onnxruntime backend needs onnxruntime: pip install 'dig2dig[ort]'") from exc
        if not os.path.isfile(path):
            raise ModelError(f"{path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        chosen: List[str] = [p for p in (providers or ("CUDAExecutionProvider", "CPUExecutionProvider"))
                             if p in available]
        try:
            self.session = ort.InferenceSession(path, options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for corrupt files
            raise ModelError(f"{path}: not a loadable ONNX model ({str(exc).splitlines()[0]})") from exc
        props = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_metadata(props, path)
        check_io(tensor_specs(self.session.get_inputs()), tensor_specs(self.session.get_outputs()), self.info, path)
        self.path = path
        self.providers = self.session.get_providers()
        on_cpu = self.on_host = self.providers[0] == "CPUExecutionProvider"
        self.max_batch = max_batch if max_batch is not None else 1 if on_cpu else 0  # 0: no limit

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = np.ascontiguousarray(t, dtype=np.float32)
        return in_batches(x, t, self.max_batch,
                          lambda xs, ts: self.session.run([OUTPUT_Y], {INPUT_X: xs, INPUT_T: ts})[0])
