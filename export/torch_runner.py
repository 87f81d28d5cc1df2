"""The UNet in PyTorch on a CUDA device, as a ``Runner``: for benchmarks and verification only.

The runtime never imports this module. It lets the GPU loop (``runtime.gpu``) run on our weights
without a TensorRT engine: :meth:`TorchCudaRunner.denoise_device` (``Runner``'s device interface, as
``TrtRunner``'s) works on pycuda GPUArrays without host copies (PyTorch reads them through
``__cuda_array_interface__``). PyTorch's runtime uses the device's primary context, the one
``kernels.cuda.CudaKernels`` retains, so the memory is shared; the model runs on the caller's
stream through ``torch.cuda.ExternalStream``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np
import torch

from ..runtime.backends.base import ModelInfo, Runner
from ..runtime.errors import InputError
from .checkpoint import load_config, load_model
from ..runtime.schedule import ADM_LINEAR
from .unet import UNetModel, resolve_config

PathLike = Union[str, Path]


def model_info(model: UNetModel, config: Mapping[str, Any]) -> ModelInfo:
    """What an ONNX export of ``model`` (float32) would carry, with the schedule the priors are trained on."""
    cfg = resolve_config(dict(config))
    return ModelInfo(in_channels=model.in_channels, out_channels=model.out_channels,
                     learn_sigma=bool(cfg["learn_sigma"]), multiple=model.downsample_factor, precision="fp32",
                     schedule=dict(ADM_LINEAR), config=cfg)


class TorchCudaRunner(Runner):
    """Runs our UNet (``weights`` + create_model ``config``: a JSON path or a dict) on ``cuda:device``.

    ``tf32``: allow TF32 convolutions and matmuls (PyTorch's process-wide switches; off by default,
    so results compare with float32 ONNX Runtime on the CPU). ``stream_handle``: the CUDA stream
    that ``denoise`` runs on (default: PyTorch's current stream); ``denoise_device`` takes its own.
    """

    on_device = True

    def __init__(self, weights: PathLike, config: Union[PathLike, Mapping[str, Any]], device: int = 0,
                 tf32: bool = False, stream_handle: Optional[int] = None) -> None:
        cfg = load_config(config) if isinstance(config, (str, Path)) else resolve_config(dict(config))
        self.device = torch.device("cuda", device)
        torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        self.model = load_model(weights, cfg).to(self.device)
        self.info = model_info(self.model, cfg)
        self.stream_handle = stream_handle
        self._streams: Dict[int, torch.cuda.ExternalStream] = {}

    def _stream(self, handle: Optional[int]) -> torch.cuda.Stream:
        if handle is None:
            return torch.cuda.current_stream(self.device)
        if handle not in self._streams:
            self._streams[handle] = torch.cuda.ExternalStream(handle, device=self.device)
        return self._streams[handle]

    def _check(self, shape: tuple, t_shape: tuple) -> None:
        if len(shape) != 4 or tuple(t_shape) != (shape[0],):
            raise InputError(f"expected x [N, C, H, W] and t [N], got {tuple(shape)} and {tuple(t_shape)}")
        if shape[1] != self.info.in_channels:
            raise InputError(f"model takes {self.info.in_channels} channel(s), got {shape[1]}")
        if shape[2] % self.info.multiple or shape[3] % self.info.multiple:
            raise InputError(f"height and width must be multiples of {self.info.multiple}, got {shape[2]}x{shape[3]}")

    def _run(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(x, t)

    def denoise_device(self, x: Any, t: Any, y: Any, stream_handle: Optional[int] = None) -> None:
        """Queue the model on GPU arrays (``Runner.denoise_device``; anything with
        ``__cuda_array_interface__``, e.g. pycuda GPUArrays; default stream ``self.stream_handle``)."""
        shape = tuple(int(v) for v in x.shape)
        self._check(shape, tuple(t.shape))
        out_shape = (shape[0], self.info.out_channels) + shape[2:]
        if tuple(y.shape) != out_shape:
            raise InputError(f"y: expected shape {out_shape}, got {tuple(y.shape)}")
        handle = self.stream_handle if stream_handle is None else stream_handle
        with torch.cuda.stream(self._stream(handle)):
            out = self._run(torch.as_tensor(x, device=self.device), torch.as_tensor(t, device=self.device))
            torch.as_tensor(y, device=self.device).copy_(out)

    def denoise(self, x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Host arrays in, host array out (synchronous), run on ``self.stream_handle``."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        t = np.ascontiguousarray(t, dtype=np.float32)
        self._check(x.shape, t.shape)
        with torch.cuda.stream(self._stream(self.stream_handle)):
            out = self._run(torch.from_numpy(x).to(self.device), torch.from_numpy(t).to(self.device))
            return out.cpu().numpy()
